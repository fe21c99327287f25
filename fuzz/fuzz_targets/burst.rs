//! Differential: `Worker::process_burst` (the DPDK runtime's path, with the express path)
//! against `Worker::process` (frame by frame, never express) on the same frames, as
//! `tests/burst.rs` does on generated traffic: the same outcome, bytes out, fragments and
//! counters, and no panic.
//!
//! The input picks a pipeline (the shipped ones and `tests/data/guarded.yaml`, with the
//! new-flow guards) and whether it routes (`system.mode: router`) and has a small MTU,
//! then holds bursts: `[size, clock step]` and that many frames, each `[len (u16, little
//! endian)]` and its bytes. Both workers start empty with a 64-flow table, so eviction,
//! expiry, rate limits and connection limits are reached within one input.
//! `fuzz/seeds.py` makes a starting corpus from captures.
#![no_main]

use flowgate::action::{FrameBuf, PacketBuf};
use flowgate::config::{Forwarding, Pipeline};
use flowgate::pipeline::{Outcome, Tables, Worker};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::{Arc, OnceLock};

const PIPELINES: [(&str, &str); 7] = [
    ("guarded.yaml", include_str!("../../tests/data/guarded.yaml")),
    ("web-farm.yaml", include_str!("../../pipelines/web-farm.yaml")),
    ("ftp.yaml", include_str!("../../pipelines/ftp.yaml")),
    ("vpn.yaml", include_str!("../../pipelines/vpn.yaml")),
    ("qos-mpls.yaml", include_str!("../../pipelines/qos-mpls.yaml")),
    ("veth-demo.yaml", include_str!("../../pipelines/veth-demo.yaml")),
    ("pass-through.yaml", include_str!("../../pipelines/pass-through.yaml")),
];

/// Per pipeline, four variants: bit 0 router mode, bit 1 an MTU of 600.
fn tables() -> &'static [Arc<Tables>] {
    static T: OnceLock<Vec<Arc<Tables>>> = OnceLock::new();
    T.get_or_init(|| {
        let mut v = Vec::new();
        for (name, text) in PIPELINES {
            for variant in 0..4u8 {
                let mut p = Pipeline::from_str(text, Path::new(name)).expect("pipeline");
                p.flow_table.capacity = 64;
                if variant & 1 != 0 {
                    p.forwarding = Forwarding::Router;
                }
                if variant & 2 != 0 {
                    p.mtu = Some(600);
                }
                v.push(Arc::new(Tables::build(p, 1)));
            }
        }
        v
    })
}

fn load(f: &[u8]) -> FrameBuf {
    let mut b = FrameBuf::new(f.len().max(64) + 64);
    assert!(b.load(f));
    b
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, mut d)) = data.split_first() else {
        return;
    };
    let all = tables();
    let t = &all[usize::from(sel) % all.len()];
    let mut one = Worker::new(Arc::clone(t));
    let mut burst = Worker::new(Arc::clone(t));
    let mut now = 1_000_000_000u64;
    let mut frames: Vec<Vec<u8>> = Vec::new();
    while let [size, step, rest @ ..] = d {
        d = rest;
        // Up to 40 frames (bursts over 32 are split in chunks), up to 2.55 s apart.
        let n = 1 + usize::from(*size) % 40;
        now += u64::from(*step) * 10_000_000;
        frames.clear();
        while frames.len() < n {
            let [l0, l1, rest @ ..] = d else { break };
            let len = usize::from(u16::from_le_bytes([*l0, *l1])).min(rest.len());
            frames.push(rest[..len].to_vec());
            d = &rest[len..];
        }
        if frames.is_empty() {
            break;
        }
        one.expire(now, 64);
        burst.expire(now, 64);
        let mut bufs: Vec<FrameBuf> = frames.iter().map(|f| load(f)).collect();
        let mut outs = vec![Outcome::default(); bufs.len()];
        burst.process_burst(&mut bufs, 0, now, &mut outs);
        let extra: Vec<(usize, Vec<u8>)> =
            burst.extra_frames().map(|(k, f)| (k, f.to_vec())).collect();
        for (k, f) in frames.iter().enumerate() {
            let mut b = load(f);
            let o = one.process(&mut b, 0, now);
            assert_eq!(o, outs[k], "frame {k}: outcome");
            assert!(o.route.is_some() != o.drop.is_some(), "frame {k}: {o:?}");
            if o.drop.is_none() {
                assert_eq!(b.data(), bufs[k].data(), "frame {k}: bytes out");
            }
            let mine: Vec<&[u8]> = one.extra_frames().map(|(_, f)| f).collect();
            let theirs: Vec<&[u8]> = (extra.iter())
                .filter(|(j, _)| *j == k)
                .map(|(_, f)| &f[..])
                .collect();
            assert_eq!(mine, theirs, "frame {k}: fragments");
        }
    }
    assert_eq!(format!("{:?}", one.stats), format!("{:?}", burst.stats));
    assert_eq!(one.flow_count(), burst.flow_count());
    let s = &one.stats;
    assert_eq!(s.packets_in, s.packets_out + s.dropped());
});
