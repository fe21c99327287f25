//! The Environment Abstraction Layer: one per process, owned by [`Eal`].
//!
//! Layer: `port::dpdk`. Invariants: `rte_eal_init` runs at most once per process (DPDK
//! cannot re-initialise, even after `rte_eal_cleanup`), on the thread that then owns the
//! [`Eal`] and becomes the main lcore; [`Eal`] is neither `Send` nor `Sync`, so its `Drop`
//! (`rte_eal_cleanup`) runs on that thread, after every object borrowing it is gone.

use std::ffi::{CStr, CString, c_char, c_int};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{DpdkError, ffi};

static EAL_TAKEN: AtomicBool = AtomicBool::new(false);

/// The initialised EAL. Every DPDK object borrows it, so they are all dropped before
/// `rte_eal_cleanup` runs.
#[derive(Debug)]
pub struct Eal {
    main_lcore: u32,
    // Not Send, not Sync: cleanup and remote launches happen on the main lcore.
    _main_thread: PhantomData<*mut ()>,
}

impl Eal {
    /// Runs `rte_eal_init` with `args` (EAL options only; `argv[0]` is supplied here),
    /// e.g. `["-l", "0,1", "--no-huge", "-m", "512", "--no-pci", "--file-prefix", "x",
    /// "--vdev", "net_null0"]`. The calling thread becomes the main lcore.
    ///
    /// # Errors
    /// [`DpdkError::EalAlreadyInitialised`] on any second call in the process (even after
    /// the first [`Eal`] was dropped, and even if the first call failed), [`DpdkError::EalInit`]
    /// when DPDK refuses the arguments, [`DpdkError::Abi`] when the shim was built against
    /// different struct layouts.
    pub fn init(args: &[String]) -> Result<Eal, DpdkError> {
        if EAL_TAKEN.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::EalAlreadyInitialised);
        }
        if !ffi::check_abi() {
            return Err(DpdkError::Abi);
        }
        let mut owned = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("flowgate").map_err(|_| DpdkError::InvalidArg("argv0".into()))?);
        for a in args {
            owned.push(
                CString::new(a.as_str())
                    .map_err(|_| DpdkError::InvalidArg(format!("NUL in EAL argument {a:?}")))?,
            );
        }
        // EAL may keep pointers into argv (device arguments, prefixes): the strings live
        // for the rest of the process. This happens once per process.
        let mut argv: Vec<*mut c_char> = owned.into_iter().map(CString::into_raw).collect();
        let argc = c_int::try_from(argv.len())
            .map_err(|_| DpdkError::InvalidArg("too many EAL args".into()))?;
        argv.push(std::ptr::null_mut());
        let argv = argv.leak();
        // SAFETY: argv is a NULL-terminated array of argc valid, NUL-terminated, leaked
        // (hence 'static and mutable) C strings, as rte_eal_init expects; it is called once.
        let rc = unsafe { ffi::rte_eal_init(argc, argv.as_mut_ptr()) };
        if rc < 0 {
            return Err(DpdkError::EalInit(last_error_string()));
        }
        // SAFETY: the EAL is initialised.
        let main_lcore = unsafe { ffi::rte_get_main_lcore() };
        Ok(Eal {
            main_lcore,
            _main_thread: PhantomData,
        })
    }

    /// The main lcore (the thread that called [`Eal::init`]).
    pub fn main_lcore(&self) -> u32 {
        self.main_lcore
    }

    /// Number of enabled lcores, main included.
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: the EAL is initialised.
        unsafe { ffi::rte_lcore_count() }
    }

    /// Enabled worker lcores (all enabled lcores but the main one), ascending.
    pub fn worker_lcores(&self) -> Vec<u32> {
        // SAFETY: returns a compile-time constant.
        let max = unsafe { ffi::fg_max_lcore() };
        let mut out = Vec::new();
        let mut i = u32::MAX; // rte_get_next_lcore(-1, ...) starts at 0
        loop {
            // SAFETY: the EAL is initialised; the call only reads the lcore config and
            // returns RTE_MAX_LCORE after the last enabled lcore.
            i = unsafe { ffi::rte_get_next_lcore(i, 1, 0) };
            if i >= max {
                break;
            }
            out.push(i);
        }
        out
    }

    /// NUMA socket of `lcore`.
    pub fn lcore_socket(&self, lcore: u32) -> u32 {
        // SAFETY: the EAL is initialised; out-of-range lcores yield 0 in DPDK.
        unsafe { ffi::rte_lcore_to_socket_id(lcore) }
    }

    /// NUMA socket of the calling thread.
    pub fn socket_id(&self) -> u32 {
        // SAFETY: the EAL is initialised.
        unsafe { ffi::rte_socket_id() }
    }

    /// Whether EAL runs on hugepages (false with `--no-huge`).
    pub fn has_hugepages(&self) -> bool {
        // SAFETY: the EAL is initialised.
        unsafe { ffi::fg_has_hugepages() != 0 }
    }

    /// Whether IO addresses are virtual addresses (`RTE_IOVA_VA`).
    pub fn iova_is_va(&self) -> bool {
        // SAFETY: the EAL is initialised.
        unsafe { ffi::fg_iova_is_va() != 0 }
    }

    /// EAL's IO address of `p` (`rte_mem_virt2iova`); `u64::MAX` (`RTE_BAD_IOVA`) when EAL
    /// cannot tell.
    pub fn virt2iova(&self, p: *const u8) -> u64 {
        // SAFETY: the EAL is initialised; the call only looks `p` up in EAL's memory map
        // (or the process's page map), it never dereferences it.
        unsafe { ffi::fg_virt2iova(p.cast()) }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: all DPDK objects borrow `self`, so none is alive; remote launches are
        // scoped (see `lcore`), so every worker lcore is idle; we are on the main lcore
        // because `Eal` is not `Send`.
        unsafe {
            ffi::rte_eal_cleanup();
        }
    }
}

/// The lcore id of the calling thread, or `None` for a thread EAL did not launch (such a
/// thread has no mempool cache).
pub fn current_lcore() -> Option<u32> {
    // SAFETY: reads a thread-local; valid before and after EAL init.
    let id = unsafe { ffi::fg_lcore_id() };
    (id != u32::MAX).then_some(id)
}

/// `rte_strerror(rte_errno)` for the calling thread.
pub(crate) fn last_error_string() -> String {
    // SAFETY: reads a thread-local.
    let e = unsafe { ffi::fg_errno() };
    strerror(e)
}

/// DPDK's text for error number `e` (positive errno or DPDK-specific).
pub(crate) fn strerror(e: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated
    // string, valid until the next call on this thread; copied at once.
    unsafe {
        let p = ffi::rte_strerror(e.abs());
        if p.is_null() {
            format!("error {e}")
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}
