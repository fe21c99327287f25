//! What a table publication costs the management core: `Tables::build` against
//! `Tables::build_after` (which takes from the tables in use what did not change) for
//! 200 services of 20 servers each over 500 servers (Maglev tables of 65537 slots), when
//! one server's state changes, as a control-plane publication does.
//! `cargo bench --bench tables`.

use criterion::{Criterion, criterion_group, criterion_main};
use flowgate::config::{Pipeline, ServerState};
use flowgate::pipeline::Tables;
use std::hint::black_box;
use std::path::Path;

/// 200 services (`svc0`…), each on 20 of the servers `s0`…`s499`.
fn pipeline() -> Pipeline {
    let mut y = String::from(
        "system: { mac: \"02:00:00:00:00:01\", addresses: [203.0.113.1], gateway: \"02:00:00:00:00:fe\" }\nservices:\n",
    );
    for s in 0..200u32 {
        y += &format!(
            "  - name: svc{s}\n    vip: 10.1.{}.{}\n    proto: tcp\n    ports: [80]\n    servers:\n",
            s >> 8,
            s & 255
        );
        for j in 0..20u32 {
            let k = (s * 7 + j) % 500;
            y += &format!(
                "      - {{ name: s{k}, mac: \"02:00:00:00:{:02x}:{:02x}\" }}\n",
                k >> 8,
                k & 255
            );
        }
    }
    Pipeline::from_str(&y, Path::new("bench.yaml")).expect("pipeline")
}

fn bench(c: &mut Criterion) {
    let p = pipeline();
    let prev = Tables::build(p.clone(), 1);
    // `s0` goes down: a member of the few services whose servers include it.
    let mut q = p.clone();
    let s0 = usize::from(q.server_index("s0").expect("s0"));
    q.servers[s0].state = ServerState::Down;
    let mut g = c.benchmark_group("tables_200_services");
    g.sample_size(10);
    g.bench_function("build", |b| {
        b.iter(|| black_box(Tables::build(black_box(q.clone()), 2)))
    });
    g.bench_function("build_after_one_server_down", |b| {
        b.iter(|| black_box(Tables::build_after(black_box(q.clone()), 2, &prev)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
