//! Running closures on worker lcores (`rte_eal_remote_launch`), scoped like
//! `std::thread::scope`.
//!
//! Layer: `port::dpdk`. Workers must run on EAL lcores: a thread EAL did not launch has no
//! lcore id and therefore no mempool cache. [`Eal::scope`] lets closures borrow from the
//! caller's stack (queues, counters, stop flags) and waits for every launched lcore before
//! it returns, also when the caller's closure panics. A panic inside a worker is caught
//! at the FFI boundary (unwinding into C is undefined behaviour) and reported as
//! [`DpdkError::WorkerPanicked`]. Waiting sleeps in 200 µs steps rather than spinning.

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::{DpdkError, Eal, check, ffi};

type Job<'scope> = Box<dyn FnOnce() + Send + 'scope>;

/// Return code of a worker whose closure panicked.
const PANICKED: c_int = -0x7061; // arbitrary, distinct from -errno values

/// A launch scope; see [`Eal::scope`].
pub struct Scope<'scope, 'env: 'scope> {
    launched: RefCell<Vec<u32>>,
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

unsafe extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the Box<Job> leaked by `Scope::launch` for this launch only.
    let job: Box<Job<'static>> = unsafe { Box::from_raw(arg.cast::<Job<'static>>()) };
    match catch_unwind(AssertUnwindSafe(move || (*job)())) {
        Ok(()) => 0,
        Err(_) => PANICKED,
    }
}

impl<'scope> Scope<'scope, '_> {
    /// Runs `f` on worker `lcore` (not the main lcore; it must be idle).
    ///
    /// # Errors
    /// [`DpdkError::Call`] when DPDK refuses (lcore busy, not enabled, or the main lcore);
    /// `f` is then dropped without running.
    pub fn launch<F>(&'scope self, lcore: u32, f: F) -> Result<(), DpdkError>
    where
        F: FnOnce() + Send + 'scope,
    {
        let job: Box<Job<'scope>> = Box::new(Box::new(f));
        let raw = Box::into_raw(job);
        // SAFETY: the trampoline takes ownership of `raw` when the launch succeeds; the
        // scope waits for the lcore before 'scope ends, so borrows inside `f` stay valid
        // while it runs (the 'static in the trampoline's type is never relied upon).
        let rc = unsafe { ffi::rte_eal_remote_launch(trampoline, raw.cast::<c_void>(), lcore) };
        if rc != 0 {
            // SAFETY: the launch failed, so the trampoline never saw `raw`; reclaim it.
            drop(unsafe { Box::from_raw(raw) });
            return check("rte_eal_remote_launch", rc);
        }
        self.launched.borrow_mut().push(lcore);
        Ok(())
    }

    fn wait_all(&self) -> Result<(), DpdkError> {
        let lcores = std::mem::take(&mut *self.launched.borrow_mut());
        let mut result = Ok(());
        for lcore in lcores {
            // rte_eal_wait_lcore spins; sleep-poll first so that the main lcore leaves its
            // CPU to others (on a shared machine the spinning pushed load onto the workers).
            // SAFETY: reads the state of an lcore we launched.
            while unsafe { ffi::rte_eal_get_lcore_state(lcore) } != 0 {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            // SAFETY: waits for (and collects the result of) a lcore we launched; called on
            // the main lcore.
            let rc = unsafe { ffi::rte_eal_wait_lcore(lcore) };
            if rc == PANICKED && result.is_ok() {
                result = Err(DpdkError::WorkerPanicked { lcore });
            }
        }
        result
    }
}

struct WaitOnDrop<'a, 'scope, 'env>(&'a Scope<'scope, 'env>);

impl Drop for WaitOnDrop<'_, '_, '_> {
    fn drop(&mut self) {
        let _ = self.0.wait_all();
    }
}

impl Eal {
    /// Calls `f` with a [`Scope`] on which closures are launched on worker lcores, then
    /// waits for all of them (`rte_eal_wait_lcore`) and returns `f`'s value.
    ///
    /// # Errors
    /// [`DpdkError::WorkerPanicked`] when a worker's closure panicked.
    pub fn scope<'env, F, T>(&'env self, f: F) -> Result<T, DpdkError>
    where
        F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> T,
    {
        let scope = Scope {
            launched: RefCell::new(Vec::new()),
            _scope: PhantomData,
            _env: PhantomData,
        };
        let guard = WaitOnDrop(&scope);
        let out = f(&scope);
        std::mem::forget(guard);
        scope.wait_all()?;
        Ok(out)
    }
}
