//! Generator and pcap I/O throughput.
//!
//! `cargo bench --bench gen` reports packets/s for: building frames only (`frames`),
//! building and pcap-encoding into a sink (`to_sink`), writing a real file with
//! `flowgate::gen::run` (`to_file`), and reading that file back (`read`).

use std::hint::black_box;
use std::io::{BufWriter, sink};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowgate::r#gen::{GenArgs, GenSpec, Generator, Scenario, run};
use flowgate::port::pcap::{LinkType, PcapReader, PcapWriter};

const PACKETS: u64 = 200_000;

fn args(sc: Scenario, out: &std::path::Path) -> GenArgs {
    let mut a = GenArgs::new(sc, u64::MAX, out);
    a.packets = Some(PACKETS);
    a.concurrency = 1024;
    a
}

fn bench(c: &mut Criterion) {
    let spec = GenSpec::default();
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("bench.pcap");
    let mut grp = c.benchmark_group("gen");
    grp.throughput(Throughput::Elements(PACKETS));
    grp.sample_size(10);
    for sc in [Scenario::Web, Scenario::Mix] {
        grp.bench_function(format!("frames/{sc:?}"), |b| {
            b.iter(|| {
                let mut g = Generator::new(&args(sc, &file), &spec).expect("gen");
                let mut n = 0usize;
                while let Some((ts, f)) = g.next_frame() {
                    n += f.len() + (ts as usize & 1);
                }
                black_box(n)
            })
        });
        grp.bench_function(format!("to_sink/{sc:?}"), |b| {
            b.iter(|| {
                let mut g = Generator::new(&args(sc, &file), &spec).expect("gen");
                let mut w = PcapWriter::new(
                    BufWriter::with_capacity(1 << 20, sink()),
                    LinkType::Ethernet,
                )
                .expect("w");
                g.write_all(&mut w).expect("write");
                black_box(w.packets())
            })
        });
    }
    grp.bench_function("to_file/Mix", |b| {
        b.iter(|| {
            black_box(
                run(&args(Scenario::Mix, &file), &spec)
                    .expect("run")
                    .packets,
            )
        })
    });
    grp.bench_function("read/Mix", |b| {
        b.iter(|| {
            let mut r = PcapReader::open(&file).expect("open");
            let mut n = 0u64;
            while let Some(p) = r.next_packet().expect("read") {
                n += p.data.len() as u64;
            }
            black_box(n)
        })
    });
    grp.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
