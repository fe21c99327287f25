//! Criterion benchmarks of the compiled classifier on generated ClassBench-like sets
//! (`flowgate::classify::synth`, seed 1) of 1K, 10K and 100K rules: batched lookups in
//! bursts of 32 (as the data path calls them), build time, and one insert+remove on the
//! updatable classifier. Reproduce with `cargo bench --bench classify`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flowgate::classify::compiled::Compiled;
use flowgate::classify::synth::{Profile, rules, trace};
use flowgate::classify::update::Updatable;
use flowgate::classify::{Classifier, Decision, Key, Range, Rule, v4_mapped};
use std::hint::black_box;
use std::time::Duration;

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const PROFILES: [(Profile, &str); 3] = [
    (Profile::Acl, "acl"),
    (Profile::Fw, "fw"),
    (Profile::Ipc, "ipc"),
];

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify_batch32");
    g.measurement_time(Duration::from_secs(3)).sample_size(20);
    for (p, name) in PROFILES {
        for n in SIZES {
            let rs = rules(p, n, 1);
            let keys: Vec<Key> = trace(&rs, 32 * 1024, 2);
            let engine = Compiled::build(&rs);
            let mut out = [Decision::NoMatch; 32];
            g.throughput(Throughput::Elements(keys.len() as u64));
            g.bench_with_input(BenchmarkId::new(name, n), &keys, |b, keys| {
                b.iter(|| {
                    for kc in keys.chunks(32) {
                        engine.classify_batch(black_box(kc), &mut out);
                    }
                    black_box(out[0])
                })
            });
        }
    }
    g.finish();
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("build");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for (p, name) in PROFILES {
        for n in SIZES {
            let rs = rules(p, n, 1);
            g.bench_with_input(BenchmarkId::new(name, n), &rs, |b, rs| {
                b.iter(|| Compiled::build(black_box(rs)).bytes())
            });
        }
    }
    g.finish();
}

fn update(c: &mut Criterion) {
    let rs = rules(Profile::Acl, 10_000, 1);
    let mut u = Updatable::new(&rs);
    let mut r = Rule::any(Decision::Service(1));
    r.dst = Range::exact(v4_mapped([203, 0, 113, 9]));
    let key = Key {
        dst: v4_mapped([203, 0, 113, 9]),
        ..Key::default()
    };
    c.bench_function("update/insert_lookup_remove_10k", |b| {
        b.iter(|| {
            let id = u.insert(r, 5_000).ok();
            let hit = u.lookup(black_box(&key));
            if let Some(id) = id {
                let _ = u.remove(id);
            }
            hit
        })
    });
}

criterion_group!(benches, lookups, build, update);
criterion_main!(benches);
