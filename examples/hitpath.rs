//! `flowgate bench`'s loop without DPDK, for profiling the hit path with `perf` or
//! `valgrind --tool=callgrind` (EAL and PMDs get in their way): the shipped web-farm
//! pipeline (or the one given), `FLOWS` established flows visited in a fixed random order,
//! each packet the bench's stamped ACK (`flowgate::gen::ack`, the same code) loaded into a
//! reused `FrameBuf`, bursts of 32 through `Worker::process_burst`, the clock advancing
//! 100 ns a packet.
//!
//! `cargo run --release --example hitpath [FLOWS [BURSTS [PIPELINE]]]` (default 1000
//! flows, 1M bursts) prints ns and Mpps per packet; `CAP=n` overrides the flow-table
//! capacity (by default the pipeline's, grown to the flow count, as in the bench).
//! Asserts that every packet was forwarded.
use flowgate::action::{FrameBuf, PacketBuf};
use flowgate::config::Pipeline;
use flowgate::r#gen::ack::{AckStamp, Template, handshake, shuffle};
use flowgate::pipeline::{Outcome, Tables, Worker};
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let arg = |i: usize| std::env::args().nth(i);
    let flows: u32 = arg(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let iters: usize = arg(2).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let pipe = arg(3).unwrap_or("pipelines/web-farm.yaml".into());
    let mut p = Pipeline::load(std::path::Path::new(&pipe)).expect("pipeline");
    p.flow_table.capacity = std::env::var("CAP")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(p.flow_table.capacity.max(flows as usize));
    let tpl = Template::for_pipeline(&p).expect("an IPv4 TCP service");
    let mut w = Worker::new(Arc::new(Tables::build(p, 1)));
    // Open every flow: SYN, SYN-ACK, ACK (as the bench does).
    let mut b = FrameBuf::new(2048);
    for k in 0..flows {
        handshake(k, tpl, |f, _| {
            b.load(f);
            w.process(&mut b, 0, 0);
        });
    }
    let mut order: Vec<u32> = (0..flows).collect();
    shuffle(&mut order, 0x2545_f491_4f6c_dd1d);
    let stamp = AckStamp::new(tpl);
    let mut f = [0u8; 60];
    let mut bufs: Vec<FrameBuf> = (0..32).map(|_| FrameBuf::new(2048)).collect();
    let mut outs = [Outcome::default(); 32];
    let before = w.stats.packets_out;
    let mut j = 0;
    let mut now = 1_000_000u64;
    let t0 = Instant::now();
    for _ in 0..iters {
        for bb in bufs.iter_mut() {
            stamp.write(&mut f, order[j]);
            j += 1;
            if j == order.len() {
                j = 0;
            }
            bb.load(&f);
        }
        now += 3200; // 100 ns a packet
        w.process_burst(&mut bufs, 0, now, &mut outs);
        std::hint::black_box(&outs);
    }
    let dt = t0.elapsed().as_secs_f64();
    let n = (iters * 32) as f64;
    assert_eq!(w.stats.packets_out - before, n as u64);
    assert_eq!(w.stats.dropped(), 0);
    println!(
        "{:.1} ns/pkt  {:.2} Mpps  len {}",
        dt * 1e9 / n,
        n / dt / 1e6,
        bufs[0].data().len()
    );
}
