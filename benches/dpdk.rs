//! Benchmarks of the DPDK binding (feature `dpdk`, run as root):
//!
//! - `rte_acl/*`: lookups through [`AclClassifier`] on ClassBench acl1_10K and its trace
//!   (97,000 keys per iteration, bursts of 256), per classify algorithm.
//! - `macswap/net_null`: a worker lcore receives 64-byte frames from `net_null0`, swaps
//!   the MAC addresses and sends them to `net_null1` through `RxQueue`/`TxQueue`; one
//!   element = one forwarded frame.
//!
//! `cargo bench --features dpdk --bench dpdk`. One EAL per process, so a custom `main`.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use flowgate::classify::{Classifier, Decision, Key, Range, Rule, prefix_range, v4_mapped};
use flowgate::port::dpdk::{AclAlg, AclClassifier, Eal, MbufBatch, Mempool, Port, PortConf};

fn prefix(s: &str) -> Range<u128> {
    let (a, l) = s.split_once('/').expect("prefix");
    let mut b = [0u8; 4];
    for (o, x) in b.iter_mut().zip(a.split('.')) {
        *o = x.parse().expect("octet");
    }
    prefix_range(v4_mapped(b), 96 + l.parse::<u8>().expect("len"))
}

fn rules(text: &str) -> Vec<Rule> {
    let mut out = Vec::new();
    for line in text.lines().filter_map(|l| l.strip_prefix('@')) {
        let t: Vec<&str> = line.split_whitespace().collect();
        let mut r = Rule::any(Decision::FlowRule(out.len() as u32));
        r.src = prefix(t[0]);
        r.dst = prefix(t[1]);
        r.src_port = Range::new(t[2].parse().expect("port"), t[4].parse().expect("port"));
        r.dst_port = Range::new(t[5].parse().expect("port"), t[7].parse().expect("port"));
        let (v, m) = t[8].split_once('/').expect("proto");
        let hex = |s: &str| {
            u8::from_str_radix(s.trim_start_matches("0x").trim_start_matches("0X"), 16)
                .expect("hex")
        };
        if hex(m) == 0xff {
            r.proto = Range::exact(hex(v));
        }
        out.push(r);
    }
    out
}

fn trace(text: &str) -> Vec<Key> {
    text.lines()
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .map(|x| x.parse().expect("num"))
                .collect();
            Key {
                src: v4_mapped((v[0] as u32).to_be_bytes()),
                dst: v4_mapped((v[1] as u32).to_be_bytes()),
                src_port: v[2] as u16,
                dst_port: v[3] as u16,
                proto: v[4] as u8,
                ethertype: 0x0800,
                ..Key::default()
            }
        })
        .collect()
}

fn bench_acl(c: &mut Criterion, eal: &Eal) {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/classbench"));
    let (Ok(r), Ok(t)) = (
        std::fs::read_to_string(dir.join("rules/acl1_10K")),
        std::fs::read_to_string(dir.join("traces/acl1_10K_trace")),
    ) else {
        eprintln!("note: classbench data missing, rte_acl bench skipped");
        return;
    };
    let rules = rules(&r);
    let keys = trace(&t);
    let mut g = c.benchmark_group("rte_acl");
    g.throughput(Throughput::Elements(keys.len() as u64));
    for alg in [
        AclAlg::Avx512x32,
        AclAlg::Avx512x16,
        AclAlg::Avx2,
        AclAlg::Sse,
        AclAlg::Scalar,
    ] {
        let t0 = Instant::now();
        let Ok(acl) = AclClassifier::with_algs(eal, &rules, &[alg]) else {
            continue;
        };
        eprintln!(
            "acl1_10K {alg:?}: build {:?}, {} bytes",
            t0.elapsed(),
            acl.bytes()
        );
        let mut out = vec![Decision::NoMatch; keys.len()];
        g.bench_function(format!("acl1_10K/{alg:?}"), |b| {
            b.iter(|| {
                acl.classify_batch(std::hint::black_box(&keys), &mut out);
                std::hint::black_box(&out);
            })
        });
    }
    g.finish();
}

fn bench_macswap(c: &mut Criterion, eal: &Eal) {
    let pool = Mempool::new(eal, "bench_pool", 8191, 256, 2176, None).expect("pool");
    let mut p0 = Port::by_name(eal, "net_null0").expect("net_null0");
    let mut p1 = Port::by_name(eal, "net_null1").expect("net_null1");
    p0.start(&PortConf::default(), &pool).expect("start");
    p1.start(&PortConf::default(), &pool).expect("start");
    let (mut rx, _t0) = p0.queues().expect("q");
    let (_r1, mut tx) = p1.queues().expect("q");
    let (rx, tx) = (&mut rx[0], &mut tx[0]);
    let worker = eal.worker_lcores()[0];
    let mut g = c.benchmark_group("macswap");
    g.throughput(Throughput::Elements(1));
    g.bench_function("net_null", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            eal.scope(|s| {
                s.launch(worker, || {
                    let mut batch = MbufBatch::new();
                    let mut n = 0u64;
                    let t0 = Instant::now();
                    while n < iters {
                        if rx.rx_burst(&mut batch) == 0 {
                            continue;
                        }
                        for m in batch.iter_mut() {
                            let d = m.data_mut();
                            if d.len() >= 12 {
                                let (a, b) = d.split_at_mut(6);
                                a.swap_with_slice(&mut b[..6]);
                            }
                        }
                        n += tx.tx_burst(&mut batch) as u64;
                    }
                    took = t0.elapsed();
                })
                .expect("launch");
            })
            .expect("scope");
            took
        })
    });
    g.finish();
}

fn main() {
    let args: Vec<String> = [
        "-l",
        "0,1",
        "--no-huge",
        "-m",
        "1024",
        "--no-pci",
        "--no-telemetry",
        "--file-prefix",
        "fg_bench",
        "--force-max-simd-bitwidth=512",
        "--log-level",
        "lib.eal:error",
        "--vdev",
        "net_null0",
        "--vdev",
        "net_null1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let eal = Eal::init(&args).expect("EAL init (run as root)");
    let mut c = Criterion::default().configure_from_args();
    bench_acl(&mut c, &eal);
    bench_macswap(&mut c, &eal);
    c.final_summary();
}
