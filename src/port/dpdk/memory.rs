//! Transparent huge pages for big per-worker tables.
//!
//! Layer: `port::dpdk`, with the rest of the crate's `unsafe`. A worker's flow table
//! spreads every lookup over tens of megabytes (1M flows: an 8 MB index and a 64 MB slab
//! of hot entries); with 4 KB pages nearly every lookup also misses the TLB and adds a
//! page walk to its cache miss. On the development VM advising huge pages made no
//! measurable difference to the bench: its host maps the guest with 4 KB pages, which
//! `flowgate bench`'s page-walk probe shows (README). DPDK applications allocate such
//! tables from the EAL's hugepage heap; flowgate's tables are ordinary Rust allocations
//! (they must work without DPDK too), so the runtime asks the kernel to back them with
//! transparent huge pages instead (`madvise(MADV_HUGEPAGE)`), which works in `--no-huge` mode as well. It
//! only changes how the kernel backs the pages, never their contents; with THP disabled
//! (`/sys/kernel/mm/transparent_hugepage/enabled` = `never`) it does nothing.

use std::ffi::{c_int, c_void};

const PAGE: usize = 4096;
const MADV_HUGEPAGE: c_int = 14;

unsafe extern "C" {
    fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int;
}

/// Advises huge pages for each `(start, bytes)` region (the whole pages inside it; memory
/// the caller owns, e.g. from [`crate::pipeline::Worker::memory`]). Returns the bytes
/// advised; regions the kernel refuses are skipped (the advice is only a hint).
pub fn advise_huge_pages(regions: &[(*const u8, usize)]) -> usize {
    let mut advised = 0;
    for &(p, len) in regions {
        let start = (p as usize).next_multiple_of(PAGE);
        let end = (p as usize).saturating_add(len) / PAGE * PAGE;
        if end <= start {
            continue;
        }
        // SAFETY: [start, end) is a page-aligned range inside a live allocation the caller
        // owns; MADV_HUGEPAGE changes only how the kernel backs those pages (their
        // contents stay as they are), so no Rust value is affected.
        let rc = unsafe { madvise(start as *mut c_void, end - start, MADV_HUGEPAGE) };
        if rc == 0 {
            advised += end - start;
        }
    }
    advised
}
