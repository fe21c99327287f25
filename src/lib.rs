//! flowgate: a poll-mode packet processor that turns a layer-2 network of ordinary
//! servers into one load-balanced, QoS-aware service.
//!
//! Layers, dependencies pointing down (see `docs/ARCHITECTURE.md`):
//!
//! - [`config`]: pipeline YAML into typed, validated config.
//! - [`pipeline`]: per-burst worker: parse → flow → classify → act.
//! - [`classify`], [`flow`], [`balance`], [`action`]: rule matching, flow table,
//!   server choice, header rewrites.
//! - [`port`]: packet I/O (pcap files; DPDK behind the `dpdk` feature).
//! - [`wire`]: zero-copy header views and checksums; depends on nothing.
//!
//! Unsafe code is forbidden everywhere except the DPDK binding module.
#![deny(unsafe_code)]

/// `eprintln!` for the long-running processes (`run`, `supervisor`, `agent`): a stderr
/// that cannot be written (a log pipe or terminal that went away) drops the line instead
/// of panicking, which in `flowgate run`'s management loop would leave the workers
/// polling with nobody to stop them.
#[macro_export]
macro_rules! logln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
    }};
}

pub mod action;
pub mod balance;
pub mod classify;
pub mod cmd;
pub mod config;
pub mod control;
pub mod flow;
pub mod r#gen;
pub mod pipeline;
pub mod port;
pub mod runtime;
pub mod wire;
