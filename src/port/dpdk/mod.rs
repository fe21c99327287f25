//! DPDK 22.11 binding (feature `dpdk`): the only module of flowgate with `unsafe`.
//!
//! Layer: `port`, the bottom of the data plane. `shim.c` wraps DPDK's static-inline calls
//! (rx/tx burst, mbuf alloc/free/mtod/prepend/adj/append/trim, `rte_lcore_id`, `rte_errno`)
//! and fills DPDK's big configuration structs; [`ffi`] declares the shim and the exported
//! DPDK functions by hand (no bindgen); DPDK objects are opaque pointers that never leave
//! this module. The safe API:
//!
//! - [`Eal`]: `rte_eal_init` once per process (enforced), `rte_eal_cleanup` on drop; not
//!   `Send`, so it stays on the main lcore. [`Eal::scope`] + [`Scope::launch`] run closures
//!   on worker lcores with `rte_eal_remote_launch` and wait for them ([`lcore`]).
//! - [`Mempool`] (borrows the `Eal`), [`Mbuf`] (owns one buffer, frees on drop, lends
//!   `&[u8]`, pushes/pops headers in place), [`MbufBatch`] (32 inline slots, no allocation).
//! - [`Port`]: found by name, started with a [`PortConf`] (queues, symmetric RSS key),
//!   split once into [`RxQueue`]/[`TxQueue`] that borrow it; stats, link, MAC.
//! - [`AclClassifier`]: `rte_acl` behind [`crate::classify::Classifier`].
//!
//! Lifetimes do the resource ordering: mbufs borrow their pool (or the port queue they came
//! from), queues borrow their port, pools/ports/ACL contexts borrow the [`Eal`], so
//! everything is released before `rte_eal_cleanup`. The one gap the borrow checker cannot
//! see, mbufs still sitting in a TX ring of another port, is closed by [`Mempool`]'s drop,
//! which leaks a pool that still has mbufs in use rather than free it.
//!
//! # What works (tested in `tests/dpdk_*.rs`, as root, `--no-huge`)
//! - `net_ring` TX→RX loopback byte for byte; TX refusal freed and counted; the pool is
//!   full again afterwards; headers pushed/popped in the headroom.
//! - `net_pcap` `rx_pcap=`→`tx_pcap=` copies frames byte for byte; a vdev that fails to
//!   probe is a [`DpdkError::NoSuchPort`].
//! - `net_null` → `net_null` MAC swap on a worker lcore; `rte_acl` equal to the ClassBench
//!   trace and to `Linear` on acl1_1K.
//!
//! # Pitfalls met here
//! - The headers need pkg-config's non-`-I` cflags (`-include rte_config.h`, `-march`):
//!   `build.rs` passes them to `cc`.
//! - A vdev that fails to probe (bad `rx_pcap=` path...) leaves `rte_eal_init` successful
//!   with no port: look ports up by name, never by index.
//! - `rte_eal_init` works once per process, even after `rte_eal_cleanup`; so one EAL test
//!   per test binary. It pins the calling thread to the first lcore of `-l`.
//! - `net_pcap` never signals end of file: stop after an idle period. Its `tx_pcap` file is
//!   complete only after the port is closed.
//! - `--no-huge` and `--in-memory` are refused together; in `--no-huge`, `-m` caps the pools.
//! - Threads not launched by EAL have no lcore id, hence no mempool cache: run workers
//!   through [`Eal::scope`].
//! - Vdevs (`net_null`, `net_ring`, `net_pcap`) offer no RSS: [`Port::start`] returns the
//!   hash functions in effect (0), and the runtime must dispatch in software.
//! - AVX-512 `rte_acl` needs `--force-max-simd-bitwidth=512` in the EAL arguments;
//!   `rte_acl_build` refuses an empty rule set (handled: everything misses).
//! - `rte_acl` expects rules in host order and keys in network order.

mod acl;
mod eal;
mod ethdev;
mod ffi;
mod lcore;
mod mbuf;
mod mempool;

pub use acl::{ACL_BURST, AclAlg, AclClassifier};
pub use eal::{Eal, current_lcore};
pub use ethdev::{
    Link, Port, PortConf, PortInfo, PortStats, RxQueue, SYMMETRIC_RSS_KEY, TxQueue, toeplitz_v4,
};
pub use lcore::Scope;
pub use mbuf::{BURST, Mbuf, MbufBatch};
pub use mempool::{Mempool, leaked_pools};

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
