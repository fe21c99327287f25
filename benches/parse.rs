//! Parse-stage throughput: one burst of 32 frames of mixed encapsulations.
//!
//! Frames are scapy-built vectors from `src/pipeline/parse.rs` tests. Run with
//! `cargo bench --bench parse`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowgate::pipeline::parse::parse;
use std::hint::black_box;

const FRAMES: &[(&str, &str)] = &[
    (
        "tcp4",
        "00112233445566778899aabb080045b800280001000040068de0c0000201c633640204d200500000000000000000500220009e890000",
    ),
    (
        "vlan3",
        "00112233445566778899aabb88a8600a8100201408004500001c0001000040118e99c0000201c6336402003514e90008fe88",
    ),
    (
        "mpls3",
        "00112233445566778899aabb884700064040000c80400012c1404528001c0001000040118e71c0000201c63364020007000900081397",
    ),
    (
        "v6ext",
        "00112233445566778899aabb86dd60000000005c004020010db800000000000000000000000120010db80000000000000000000000022b000104000000003c0200010000000020010db800000000000000000000000933000104000000002c040000000010000000000100000000000000000000000006000001deadbeef0001000200000000000000005002200034640000",
    ),
    (
        "icmp4err_tcp",
        "00112233445566778899aabb0800450000440001000040017cadcb007109c00002010b00e1510000000045000028000100000106cd98c0000201c633640280e801bb00000000000000005002200021080000",
    ),
    (
        "icmp6err_udp",
        "00112233445566778899aabb86dd6000000000403a4020010db80000000000000000000000fe20010db80000000000000000000000010300f1d8000000006000000000103c4020010db800000000000000000000000120010db800000000000000000000000211000104000000009c41007b000807ad",
    ),
    (
        "ipopt",
        "00112233445566778899aabb08004800002c0001000040116c6ec0000201c6336402070b0401020304050607080000010002000c3ad964617461",
    ),
    (
        "esp4",
        "00112233445566778899aabb08004500002c0001000040328e68c0000201c6336402cafe00010000002a00000000000000000000000000000000",
    ),
];

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn bench(c: &mut Criterion) {
    let frames: Vec<(&str, Vec<u8>)> = FRAMES.iter().map(|(n, h)| (*n, hex(h))).collect();
    let burst: Vec<&[u8]> = (0..32).map(|i| &frames[i % frames.len()].1[..]).collect();
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(burst.len() as u64));
    g.bench_function("mixed_burst_32", |b| {
        b.iter(|| {
            let mut ok = 0u32;
            for f in &burst {
                ok += u32::from(parse(black_box(f)).is_ok());
            }
            ok
        })
    });
    g.throughput(Throughput::Elements(1));
    for (name, f) in &frames {
        g.bench_function(*name, |b| b.iter(|| parse(black_box(f))));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
