//! `flowgate run` and `flowgate bench`: the DPDK poll-mode runtime over the same pipeline
//! as `replay`.
//!
//! Layer: `runtime`, the top of the data plane, above `pipeline` and `port::dpdk`. The
//! run configuration ([`conf`]) builds without DPDK; everything that touches DPDK is
//! behind the `dpdk` feature (`run()`, `bench()`).
//!
//! Shape of a run (see `docs/RUNNING.md`):
//! - The main thread is the management lcore: it initialises the EAL, the mempool and the
//!   ports, launches one worker per worker lcore with `rte_eal_remote_launch`, then
//!   publishes tables (SIGHUP reloads the pipeline when it keeps or grows the running
//!   one, [`crate::config::Pipeline::regrow`], with the conf's live settings,
//!   [`conf::RunConf::reload_from`], and once a second what a reload removed
//!   and no flow uses any more is freed, [`crate::config::Pipeline::reclaim`]; with
//!   `control:`, the end systems' advertisements change server states and loads), sums the
//!   per-worker counters into a one-line rate summary, and stops on SIGINT/SIGTERM or after
//!   `stop.idle_ms` without a packet.
//! - Worker `i` owns queue `i` of every port and its own [`crate::pipeline::Worker`] (flow
//!   table, counters): nothing is shared on the packet path. Several workers need either
//!   RSS (symmetric key, both directions of a flow reach the same worker) or, on ports
//!   without it, the software dispatcher: worker 0 polls the port's RX queues (one, or
//!   every queue of a PMD without RSS, such as `net_af_packet` with `qpairs=N`, which
//!   spreads frames over all of them) and hands each frame to the worker chosen by a
//!   symmetric hash of its IP addresses, through a bounded lock-free queue (a full queue
//!   drops and counts the frame).
//! - Worker 0 also announces the system's addresses on every port (gratuitous ARP,
//!   unsolicited neighbour advertisement), at the start and for addresses a reload
//!   brings, as `announce` in the conf says ([`crate::pipeline::reply::Announcer`]).
//! - Frames are processed in the mbuf (no copy) and sent on the output port's queue of
//!   the worker. Pipeline port indices (`port:` names in the pipeline, first-seen order)
//!   are mapped to the conf's ports by name ([`conf::map_ports`]).
//! - Guarantees at exit: workers joined, ports stopped and closed, the pool's in-use count
//!   reported (0 when nothing leaked), `rte_eal_cleanup` called (by `Eal`'s drop), the
//!   stats JSON written (same shape as `replay`'s, plus a `runtime` object). While the run
//!   goes on, the management lcore rewrites that file every `stats.interval_ms`
//!   (`runtime.running` true; written beside it and renamed, so a reader never sees half
//!   a file), and hands the same snapshot to the Prometheus exporter when
//!   `stats.prometheus` is set ([`crate::cmd::prom::Exporter`]), whose `GET /healthz`
//!   says whether that snapshot was healthy and recent, and whose `GET /flows` lists
//!   the workers' live flows ([`lister`]).
//! - The clock is monotonic time since start, read once per poll loop (not per packet):
//!   flow timeouts are in wall time, unlike `replay` which uses capture timestamps.
//!
//! # Tested (`tests/dpdk_run.rs`, `tests/dpdk_veth.rs`, as root)
//! `run` on `net_pcap` emits the frames of `replay`, byte for byte and in order (the
//! shipped sample, a `gen` capture, three third-party VLAN/MPLS captures under the
//! QoS/MPLS pipeline), with equal counters; two workers behind the software dispatcher
//! emit the same multiset with each worker's output in replay order; `--in-memory`
//! hugepage mode when free hugepages exist; SIGHUP reload and SIGTERM stop with exit code
//! 0, stats JSON and `mempool_in_use == 0` (two workers, RSS on `net_null`); the stats
//! file read while running counts every frame and always parses; a vdev that
//! fails to probe is named in the error; curl in one namespace gets answers from both
//! `python3 -m http.server` namespaces through the VIP on `net_af_packet` veths, over
//! IPv4 (ARP answered on both sides) and IPv6 (neighbour discovery, a 1 MB download
//! intact); `flowgate flows` lists a real client's open connections with the servers
//! that answered them; frames chained over several mbufs are dropped as `segmented`; a
//! client kernel's stale entries for flowgate's addresses take its MAC from the
//! announcements.
//!
//! With a `control:` section in the conf the management core also runs the control
//! plane ([`control`]): tables follow what the end systems' agents advertise
//! (`tests/control_run.rs` against real processes; `tests/dpdk_veth.rs` end to end with
//! curl, a supervisor and two agents).
//!
//! Throughput (`flowgate bench`) and what limits it: README.md and `docs/RUNNING.md`.

pub mod conf;
pub mod control;

#[cfg(feature = "dpdk")]
mod bench;
pub mod eject;
pub mod lister;
pub mod ramp;
#[cfg(feature = "dpdk")]
mod worker;

#[cfg(feature = "dpdk")]
pub use bench::{BenchOpts, BenchResult, bench};
#[cfg(feature = "dpdk")]
pub use worker::{RunOpts, RunResult, run};

use crate::pipeline::stats::Stats;

/// Copies `src` into `dst`, without allocating unless `src` grew (a reload). Every
/// field is named here (a new counter does not compile until it is copied).
pub fn copy_stats(dst: &mut Stats, src: &Stats) {
    let Stats {
        packets_in,
        packets_out,
        drops,
        flows_created,
        flows_evicted,
        flows_evicted_assured,
        flows_expired,
        flows_moved,
        arp_replies,
        nd_replies,
        icmp_errors,
        echo_replies,
        announcements,
        fragments_out,
        fragments_unsent,
        svc_flows,
        svc_packets,
        svc_server_packets,
        rule_flows,
        rule_packets,
        server_flows,
        server_overflows,
        server_fails,
        svc_open,
        rule_open,
        svc_limited,
        svc_denied,
        svc_revoked,
        svc_conn_limited,
        flows_row: _,
    } = src;
    dst.packets_in = *packets_in;
    dst.packets_out = *packets_out;
    dst.drops = *drops;
    dst.flows_created = *flows_created;
    dst.flows_evicted = *flows_evicted;
    dst.flows_evicted_assured = *flows_evicted_assured;
    dst.flows_expired = *flows_expired;
    dst.flows_moved = *flows_moved;
    dst.arp_replies = *arp_replies;
    dst.nd_replies = *nd_replies;
    dst.icmp_errors = *icmp_errors;
    dst.echo_replies = *echo_replies;
    dst.announcements = *announcements;
    dst.fragments_out = *fragments_out;
    dst.fragments_unsent = *fragments_unsent;
    let cp = |d: &mut Vec<u64>, s: &Vec<u64>| {
        if d.len() == s.len() {
            d.copy_from_slice(s);
        } else {
            d.clone_from(s);
        }
    };
    cp(&mut dst.svc_flows, svc_flows);
    cp(&mut dst.svc_packets, svc_packets);
    cp(&mut dst.rule_flows, rule_flows);
    cp(&mut dst.rule_packets, rule_packets);
    cp(&mut dst.server_flows, server_flows);
    cp(&mut dst.server_overflows, server_overflows);
    cp(&mut dst.server_fails, server_fails);
    cp(&mut dst.svc_open, svc_open);
    cp(&mut dst.rule_open, rule_open);
    cp(&mut dst.svc_limited, svc_limited);
    cp(&mut dst.svc_denied, svc_denied);
    cp(&mut dst.svc_revoked, svc_revoked);
    cp(&mut dst.svc_conn_limited, svc_conn_limited);
    if dst.svc_server_packets.len() == svc_server_packets.len() {
        for (d, s) in dst.svc_server_packets.iter_mut().zip(svc_server_packets) {
            cp(d, s);
        }
    } else {
        dst.svc_server_packets.clone_from(svc_server_packets);
    }
}

/// A symmetric hash of a frame's IP addresses (and protocol), for the software
/// dispatcher: both directions of a flow, its fragments and the ICMP errors quoting it
/// land on the same worker. `None` for frames without an IP tuple (ARP...).
pub fn dispatch_hash(frame: &[u8]) -> Option<u64> {
    let m = crate::pipeline::parse::parse(frame).ok()?;
    if !matches!(
        m.l3,
        crate::pipeline::meta::L3::Ipv4 | crate::pipeline::meta::L3::Ipv6
    ) {
        return None;
    }
    let t = m.quoted.unwrap_or(m.tuple);
    let a = u128::from_be_bytes(t.src);
    let b = u128::from_be_bytes(t.dst);
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(t.proto);
    for w in [lo as u64, (lo >> 64) as u64, hi as u64, (hi >> 64) as u64] {
        h = (h ^ w).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&28u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        let c = crate::wire::checksum::checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f[34..36].copy_from_slice(&sp.to_be_bytes());
        f[36..38].copy_from_slice(&dp.to_be_bytes());
        f[38..40].copy_from_slice(&8u16.to_be_bytes());
        f
    }

    #[test]
    fn dispatch_hash_is_symmetric_and_spreads() {
        let a = frame([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80);
        let b = frame([10, 0, 0, 2], [10, 0, 0, 1], 80, 1234);
        let ha = dispatch_hash(&a).expect("ip");
        assert_eq!(Some(ha), dispatch_hash(&b));
        // Ports do not matter (fragments carry none).
        assert_eq!(
            Some(ha),
            dispatch_hash(&frame([10, 0, 0, 1], [10, 0, 0, 2], 9, 9))
        );
        // Many client addresses spread over 4 workers roughly evenly.
        let mut n = [0u32; 4];
        for i in 0..4000u32 {
            let c = i.to_be_bytes();
            let h = dispatch_hash(&frame([10, c[1], c[2], c[3]], [203, 0, 113, 10], 1, 80))
                .expect("ip");
            n[(h % 4) as usize] += 1;
        }
        assert!(n.iter().all(|&k| (800..1200).contains(&k)), "{n:?}");
        assert_eq!(dispatch_hash(&[0u8; 10]), None);
    }

    #[test]
    fn copy_stats_copies_everything() {
        let p = crate::config::Pipeline::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/pipelines/web-farm.yaml"
        )))
        .expect("pipeline");
        let mut a = Stats::new(&p);
        a.packets_in = 5;
        a.drops[1] = 2;
        a.svc_server_packets[0][2] = 7;
        a.svc_flows[1] = 3;
        a.server_flows[1] = 4;
        a.server_overflows[2] = 6;
        a.server_fails[0] = 9;
        a.svc_open[0] = 8;
        a.svc_limited[0] = 10;
        a.svc_denied[1] = 11;
        a.svc_revoked[0] = 12;
        a.svc_conn_limited[1] = 13;
        let mut b = Stats::new(&p);
        copy_stats(&mut b, &a);
        assert_eq!(b.to_json(&p), a.to_json(&p));
        assert_eq!(
            (
                &b.svc_limited,
                &b.svc_denied,
                &b.svc_revoked,
                &b.svc_conn_limited
            ),
            (
                &a.svc_limited,
                &a.svc_denied,
                &a.svc_revoked,
                &a.svc_conn_limited
            ),
            "not in the JSON of a service without a limit or an allow list"
        );
    }
}
