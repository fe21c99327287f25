//! Packet I/O: where frames enter and leave the pipeline.
//!
//! Layer: `port`, above [`crate::wire`] and below [`crate::pipeline`]. Every backend hands
//! the pipeline plain Ethernet frames, whatever the medium stores:
//!
//! - [`pcap`]: capture files (classic pcap and pcapng) read with [`pcap::PcapReader`] and
//!   written with [`pcap::PcapWriter`]. Used by `flowgate replay` and `flowgate gen`.
//!
//! - `dpdk` (feature `dpdk`): DPDK 22.11 poll-mode ports, mempools and mbufs; the only
//!   module allowed to opt out of `#![deny(unsafe_code)]`.
//!
//! Invariants: reading and writing do not allocate per packet (each reader/writer owns one
//! buffer, reused), and malformed input is a typed error, never a panic.

pub mod pcap;

#[cfg(feature = "dpdk")]
#[allow(unsafe_code)]
pub mod dpdk;
