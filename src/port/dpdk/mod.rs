//! DPDK 22.11 binding (feature `dpdk`): the only module of flowgate with `unsafe`.
//!
//! Layer: `port`, the bottom of the data plane. `shim.c` wraps DPDK's static-inline calls
//! (rx/tx burst, mbuf alloc/free/mtod/prepend/adj/append/trim, `rte_lcore_id`, `rte_errno`)
//! and fills DPDK's big configuration structs; `ffi` declares the shim and the exported
//! DPDK functions by hand (no bindgen); DPDK objects are opaque pointers that never leave
//! this module. The safe API:
//!
//! - [`Eal`]: `rte_eal_init` once per process (enforced), `rte_eal_cleanup` on drop; not
//!   `Send`, so it stays on the main lcore. [`Eal::scope`] + [`Scope::launch`] run closures
//!   on worker lcores with `rte_eal_remote_launch` and wait for them (module `lcore`).
//! - [`Mempool`] (borrows the `Eal`), [`Mbuf`] (owns one buffer, frees on drop, lends
//!   `&[u8]`, pushes/pops headers in place; implements [`crate::action::PacketBuf`], so
//!   `Worker::process` runs on the mbuf without a copy), [`MbufBatch`] (32 inline slots,
//!   no allocation; `drain_each` hands them out in order).
//! - [`Port`]: found by name, started with a [`PortConf`] (queues, symmetric RSS key),
//!   split once into [`RxQueue`]/[`TxQueue`] that borrow it; stats, link, MAC.
//! - [`AclClassifier`]: `rte_acl` behind [`crate::classify::Classifier`].
//! - [`advise_huge_pages`]: transparent huge pages for the workers' flow tables (module
//!   `memory`).
//!
//! Lifetimes do the resource ordering: mbufs borrow their pool (or the port queue they came
//! from), queues borrow their port, pools/ports/ACL contexts borrow the [`Eal`], so
//! everything is released before `rte_eal_cleanup`. The one gap the borrow checker cannot
//! see, mbufs still sitting in a TX ring of another port, is closed by [`Mempool`]'s drop,
//! which leaks a pool that still has mbufs in use rather than free it.
//!
//! # What works (tested in `tests/dpdk_*.rs`, as root, `--no-huge`)
//! - `dpdk_ring`: `net_ring` TX→RX loopback byte for byte and in order; TX refusal freed
//!   and counted (`TxQueue::refused`; net_ring itself does not count it in `oerrors`); the
//!   pool is full again afterwards; VLAN push/pop in the headroom; `net_null` →
//!   `net_null` MAC swap on worker lcore 1 through [`Eal::scope`]; a panicking worker is
//!   reported; RSS on `net_null` with 2 queues and the symmetric key read back from the
//!   PMD; [`toeplitz_v4`] symmetry; a second [`Eal::init`] is refused.
//! - `dpdk_pcap`: `net_pcap` `rx_pcap=`→`tx_pcap=` copies 100 frames byte for byte
//!   (checked by the test's reader and by scapy); a vdev that fails to probe is
//!   [`DpdkError::NoSuchPort`].
//! - `dpdk_af_packet`: `net_af_packet` on a veth pair delivers frames byte for byte.
//! - `dpdk_acl`: [`AclClassifier`] on ClassBench acl1_1K, every algorithm (AVX512X32,
//!   X16, AVX2, SSE, scalar): zero mismatches against the trace's expected rule and
//!   against `Linear`; IPv6 / odd-ethertype keys go through the fallback scan; rules it
//!   cannot express are refused.
//!
//! # Measured here (2 vCPU shared with ~5 builders, load average 6-10: very noisy)
//! `cargo bench --features dpdk --bench dpdk` (criterion, `--no-huge`, release):
//! - `rte_acl` on acl1_10K (97,000-key trace, bursts of 256): AVX512X32 6.2-15 M
//!   lookups/s over four runs, AVX512X16 7-8 M, AVX2 5.5-6.2 M, SSE 5.3-7.9 M, scalar
//!   1.9-3.2 M; build 0.5-0.8 s; `bytes()` 17.7 MB (DPDK's log says 16.0 MB of runtime
//!   tries; the rest is the context and its rule copy). `dpdk-test-acl` (same set,
//!   avx512x32) in the same minutes: 6.5-10.4 M/s; on a quiet machine 37.8 M/s
//!   (shared/classbench/DPDK_BASELINE.md). `perf`: the binding's own work (packing keys,
//!   mapping results) is about 15 % of the time spent in `librte_acl`.
//! - MAC swap `net_null0` → `net_null1`, 64-byte frames, one worker lcore: 14-21.5 Mpps;
//!   `dpdk-testpmd --forward-mode=macswap --nb-cores=1` on the same two vdevs in the same
//!   minutes: 15.9-16.3 Mpps (sum of both directions). Before the main lcore stopped
//!   spinning in `rte_eal_wait_lcore` the binding did only 6.5-7.8 Mpps against testpmd's
//!   10.4-12 Mpps.

//! # Pitfalls met here
//! - The headers need pkg-config's non-`-I` cflags (`-include rte_config.h`, `-march`):
//!   `build.rs` passes them to `cc`.
//! - A vdev that fails to probe (bad `rx_pcap=` path...) leaves `rte_eal_init` successful
//!   with no port: look ports up by name, never by index.
//! - `rte_eal_init` works once per process, even after `rte_eal_cleanup`; so one EAL test
//!   per test binary. It pins the calling thread to the first lcore of `-l`.
//! - `net_pcap` never signals end of file: stop after an idle period. Its `tx_pcap` file is
//!   complete once the port is closed.
//! - In `--no-huge` mode `rte_pktmbuf_pool_create` gives every mbuf its own 4 KB page (an
//!   object may not cross a page), so all mbufs alias in one L1 set and `net_null` I/O
//!   runs at about half speed: [`Mempool::new`] packs the pool there ([`PoolLayout`]).
//! - `--no-huge` and `--in-memory` are refused together; in `--no-huge`, `-m` caps the
//!   pools (testpmd's default pool needs more than `-m 512`: `--total-num-mbufs=16384`).
//! - Threads not launched by EAL have no lcore id, hence no mempool cache: run workers
//!   through [`Eal::scope`]. `rte_eal_wait_lcore` busy-waits on the main lcore.
//! - `net_null` offers RSS but ignores the key passed to `rte_eth_dev_configure`:
//!   [`Port::start`] sets it again with `rte_eth_dev_rss_hash_update`. `net_ring` and
//!   `net_pcap` have no RSS ([`Port::start`] returns 0): dispatch in software.
//! - AVX-512 `rte_acl` needs `--force-max-simd-bitwidth=512` in the EAL arguments;
//!   `rte_acl_build` refuses an empty rule set (handled: everything misses); rules are
//!   given in host order, keys in network order.
//! - `rte_pktmbuf_mtod`/`data_len`/`pkt_len` are read inline from the `rte_mbuf` header at
//!   offsets that `Eal::init` checks against the C headers (a shim call per packet cost
//!   measurably); a DPDK with another mbuf layout fails init with [`DpdkError::Abi`].

mod acl;
mod eal;
mod ethdev;
mod ffi;
mod lcore;
mod mbuf;
mod memory;
mod mempool;

pub use acl::{ACL_BURST, AclAlg, AclClassifier};
pub use eal::{Eal, current_lcore};
pub use ethdev::{
    Link, Port, PortConf, PortInfo, PortStats, RxQueue, SYMMETRIC_RSS_KEY, TxQueue, toeplitz_v4,
};
pub use lcore::Scope;
pub use mbuf::{BURST, Mbuf, MbufBatch};
pub use memory::advise_huge_pages;
pub use mempool::{Mempool, PoolLayout, leaked_pools};

/// Errors of the DPDK binding.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    #[error("the EAL can be initialised only once per process")]
    EalAlreadyInitialised,
    #[error("rte_eal_init failed: {0}")]
    EalInit(String),
    #[error("the C shim and the Rust declarations disagree on struct layouts")]
    Abi,
    #[error("invalid argument: {0}")]
    InvalidArg(String),
    #[error("{what} failed: {msg} ({code})")]
    Call {
        what: &'static str,
        code: i32,
        msg: String,
    },
    #[error("no DPDK port named {0:?} (not given to the EAL, or its driver failed to probe it)")]
    NoSuchPort(String),
    #[error("rule {index} cannot be expressed in rte_acl: {reason}")]
    UnsupportedRule { index: usize, reason: String },
    #[error("the closure running on lcore {lcore} panicked")]
    WorkerPanicked { lcore: u32 },
}

/// Maps a DPDK return code (0 or `-errno`) to a result.
pub(crate) fn check(what: &'static str, rc: i32) -> Result<(), DpdkError> {
    if rc >= 0 {
        Ok(())
    } else {
        Err(DpdkError::Call {
            what,
            code: rc,
            msg: eal::strerror(rc),
        })
    }
}
