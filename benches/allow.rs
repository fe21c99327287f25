//! A service's `allow` list looked up for a new flow's client: `AllowList::contains`
//! (a binary search over the networks merged into sorted ranges) against a scan of the
//! networks as written (what it replaced), for 10, 1000 and 10000 networks (random
//! IPv4 /24s) and random client addresses, most of them outside every network.
//! `cargo bench --bench allow`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use flowgate::classify::Range;
use flowgate::config::AllowList;
use std::hint::black_box;

/// `n` IPv4 /24s (IPv4-mapped), from a fixed xorshift sequence.
fn networks(n: usize) -> Vec<Range<u128>> {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let base = (0xffff_u128 << 32) | u128::from((x as u32) & 0xffff_ff00);
            Range::new(base, base | 0xff)
        })
        .collect()
}

/// 1024 client addresses (IPv4-mapped), from another xorshift sequence.
fn clients() -> Vec<u128> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    (0..1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (0xffff_u128 << 32) | u128::from(x as u32)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("allow_1024_clients");
    let who = clients();
    for n in [10usize, 1000, 10000] {
        let nets = networks(n);
        let list = AllowList::new(nets.clone());
        // The two agree on every client (the unit tests check it on random lists too).
        for &a in &who {
            assert_eq!(list.contains(a), nets.iter().any(|r| r.contains(a)));
        }
        g.bench_with_input(BenchmarkId::new("binary_search", n), &n, |b, _| {
            b.iter(|| who.iter().filter(|&&a| list.contains(black_box(a))).count())
        });
        g.bench_with_input(BenchmarkId::new("scan", n), &n, |b, _| {
            b.iter(|| {
                who.iter()
                    .filter(|&&a| nets.iter().any(|r| r.contains(black_box(a))))
                    .count()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
