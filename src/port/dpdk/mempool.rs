//! Packet-buffer pools (`rte_pktmbuf_pool_create`, or packed; see [`PoolLayout`]).
//!
//! Layer: `port::dpdk`. A [`Mempool`] borrows the [`Eal`]; every [`Mbuf`] borrows its pool,
//! so the borrow checker frees mbufs before their pool. One case escapes it: mbufs handed
//! to a port's TX ring stay there until the PMD frees them. Dropping a pool whose
//! `in_use_count` is not zero therefore *leaks* it (and counts the leak) instead of freeing
//! memory that the ring still points into.
//!
//! Get/put are multi-producer/multi-consumer safe, so a pool is `Send + Sync`. Only threads
//! launched by EAL (see [`super::lcore`]) use the per-lcore cache; others hit the ring.

use std::ffi::CString;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use super::mbuf::{BURST, Mbuf, MbufBatch};
use super::{DpdkError, Eal, eal, ffi};

static LEAKED_POOLS: AtomicU64 = AtomicU64::new(0);

/// Where a pool's mbufs lie in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolLayout {
    /// `rte_pktmbuf_pool_create`'s own layout (chosen with hugepages).
    Default,
    /// Back to back in one IOVA-contiguous memzone (chosen without hugepages). DPDK's
    /// default then keeps each mbuf inside one 4 KB page, one mbuf a page, so every mbuf
    /// header and every frame start sit at the same page offset, hence in the same L1
    /// set: `flowgate bench --io-only` on `net_null` polled and sent 56–57 Mpps that way
    /// and 98–103 Mpps packed (docs/RUNNING.md).
    Packed,
}

/// An mbuf pool.
#[derive(Debug)]
pub struct Mempool<'e> {
    ptr: NonNull<ffi::RteMempool>,
    size: u32,
    layout: PoolLayout,
    _eal: PhantomData<&'e Eal>,
}

// SAFETY: the default mempool ops are MP/MC-safe rings; the pointer is never freed while
// shared (Drop needs ownership).
unsafe impl Send for Mempool<'_> {}
// SAFETY: as above; every `&self` method is an MT-safe DPDK call.
unsafe impl Sync for Mempool<'_> {}

impl<'e> Mempool<'e> {
    /// `rte_pktmbuf_pool_create(name, n_mbufs, cache, 0, data_room, socket)`, or the same
    /// pool packed when EAL runs without hugepages ([`PoolLayout::Packed`]; if the packed
    /// pool cannot be made, e.g. no IOVA-contiguous zone that large, the default one is).
    /// `data_room` includes the headroom (`RTE_PKTMBUF_HEADROOM`, 128 bytes); 2176 is
    /// DPDK's default. `socket: None` means any socket. In `--no-huge` mode the EAL `-m`
    /// cap bounds `n_mbufs * (data_room + ~200)`.
    ///
    /// # Errors
    /// [`DpdkError::Call`] with DPDK's reason (name taken, no memory, bad cache size).
    pub fn new(
        eal: &'e Eal,
        name: &str,
        n_mbufs: u32,
        cache: u32,
        data_room: u16,
        socket: Option<u32>,
    ) -> Result<Self, DpdkError> {
        let cname =
            CString::new(name).map_err(|_| DpdkError::InvalidArg(format!("pool name {name:?}")))?;
        let socket = match socket {
            None => ffi::SOCKET_ID_ANY,
            Some(s) => {
                i32::try_from(s).map_err(|_| DpdkError::InvalidArg(format!("socket {s}")))?
            }
        };
        let packed = if !eal.has_hugepages() {
            // SAFETY: the EAL is initialised (we hold &Eal); cname outlives the call (DPDK
            // copies it). On failure the shim has freed whatever it made, so the name is
            // free again for the fallback below.
            unsafe {
                ffi::fg_pktmbuf_pool_create_packed(
                    cname.as_ptr(),
                    n_mbufs,
                    cache,
                    data_room,
                    socket,
                )
            }
        } else {
            std::ptr::null_mut()
        };
        let (p, layout) = match NonNull::new(packed) {
            Some(p) => (p.as_ptr(), PoolLayout::Packed),
            // SAFETY: the EAL is initialised; cname outlives the call (DPDK copies it).
            None => (
                unsafe {
                    ffi::rte_pktmbuf_pool_create(
                        cname.as_ptr(),
                        n_mbufs,
                        cache,
                        0,
                        data_room,
                        socket,
                    )
                },
                PoolLayout::Default,
            ),
        };
        match NonNull::new(p) {
            Some(ptr) => Ok(Mempool {
                ptr,
                size: n_mbufs,
                layout,
                _eal: PhantomData,
            }),
            None => Err(DpdkError::Call {
                what: "rte_pktmbuf_pool_create",
                code: 0,
                msg: eal::last_error_string(),
            }),
        }
    }

    /// How the mbufs lie in memory.
    pub fn layout(&self) -> PoolLayout {
        self.layout
    }

    /// Number of mbufs the pool was created with.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Free mbufs (ring plus per-lcore caches).
    pub fn avail_count(&self) -> u32 {
        // SAFETY: ptr is a live pool.
        unsafe { ffi::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    /// Mbufs currently allocated (held by us, by a PMD's rings, or in flight).
    pub fn in_use_count(&self) -> u32 {
        // SAFETY: ptr is a live pool.
        unsafe { ffi::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }

    /// One mbuf, reset (`data_len == 0`, default headroom), or `None` when exhausted.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf<'_>> {
        // SAFETY: ptr is a live pkt pool; the returned mbuf (if any) is owned by the caller.
        let m = unsafe { ffi::fg_pktmbuf_alloc(self.ptr.as_ptr()) };
        // SAFETY: m is a fresh mbuf from this pool, owned by nobody else.
        NonNull::new(m).map(|m| unsafe { Mbuf::from_raw(m) })
    }

    /// Appends `n` fresh mbufs to `batch` all at once, or none (returns false) when the pool
    /// cannot supply them or the batch lacks room.
    pub fn alloc_bulk<'p>(&'p self, batch: &mut MbufBatch<'p>, n: usize) -> bool {
        if n > BURST - batch.len() {
            return false;
        }
        let Ok(n32) = u32::try_from(n) else {
            return false;
        };
        // SAFETY: the spare tail of the batch has room for n pointers; on success the PMD
        // wrote n valid mbuf pointers there, which the batch then owns.
        unsafe {
            let dst = batch.spare_ptr();
            if ffi::fg_pktmbuf_alloc_bulk(self.ptr.as_ptr(), dst, n32) != 0 {
                return false;
            }
            batch.assume_filled(n);
        }
        true
    }

    pub(crate) fn as_ptr(&self) -> *mut ffi::RteMempool {
        self.ptr.as_ptr()
    }
}

impl Drop for Mempool<'_> {
    fn drop(&mut self) {
        if self.in_use_count() != 0 {
            // Mbufs still sit in some PMD ring: keep the memory valid.
            LEAKED_POOLS.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // SAFETY: no mbuf of this pool is in use and no borrow of the pool remains.
        unsafe { ffi::rte_mempool_free(self.ptr.as_ptr()) }
    }
}

/// Pools that were dropped while mbufs were still in use, and therefore leaked.
pub fn leaked_pools() -> u64 {
    LEAKED_POOLS.load(Ordering::Relaxed)
}
