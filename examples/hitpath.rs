//! `flowgate bench`'s loop without DPDK, for profiling the hit path with `perf` or
//! `valgrind --tool=callgrind` (EAL and PMDs get in their way): the shipped web-farm
//! pipeline (or the one given), `FLOWS` established flows visited in a fixed random order,
//! each packet stamped as the bench stamps it into a reused `FrameBuf`, bursts of 32
//! through `Worker::process_burst`, the clock advancing 100 ns a packet.
//!
//! `cargo run --release --example hitpath [FLOWS [BURSTS [PIPELINE]]]` (default 1000
//! flows, 1M bursts) prints ns and Mpps per packet; `CAP=n` overrides the flow-table
//! capacity. Asserts that every packet was forwarded.
use flowgate::action::{FrameBuf, PacketBuf};
use flowgate::config::Pipeline;
use flowgate::pipeline::{Outcome, Tables, Worker};
use std::sync::Arc;
use std::time::Instant;

fn frame(out: &mut [u8; 60], k: u32, vip: [u8; 4], flags: u8, rev: bool) {
    out.fill(0);
    let client = (0x6440_0000u32 | (k & 0x3f_ffff)).to_be_bytes();
    let cport = 1024 + (k >> 22) as u16;
    let (src, dst, sp, dp) = if rev {
        (vip, client, 80, cport)
    } else {
        (client, vip, cport, 80)
    };
    out[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    out[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xfe]);
    out[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut out[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = flowgate::wire::checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let tcp = &mut out[34..54];
    tcp[0..2].copy_from_slice(&sp.to_be_bytes());
    tcp[2..4].copy_from_slice(&dp.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
}

fn main() {
    let flows: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let iters: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let pipe = std::env::args()
        .nth(3)
        .unwrap_or("pipelines/web-farm.yaml".into());
    let mut p = Pipeline::load(std::path::Path::new(&pipe)).unwrap();
    p.flow_table.capacity = std::env::var("CAP")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(p.flow_table.capacity.max(flows as usize * 5 / 4));
    let vip = [203, 0, 113, 10];
    let mut w = Worker::new(Arc::new(Tables::build(p, 1)));
    let mut f = [0u8; 60];
    let mut b = FrameBuf::new(2048);
    for k in 0..flows {
        for (fl, rev) in [(0x02, false), (0x12, true), (0x10, false)] {
            frame(&mut f, k, vip, fl, rev);
            b.load(&f);
            w.process(&mut b, 0, 0);
        }
    }
    let mut order: Vec<u32> = (0..flows).collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for a in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(a, (x % (a as u64 + 1)) as usize);
    }
    let mut bufs: Vec<FrameBuf> = (0..32).map(|_| FrameBuf::new(2048)).collect();
    let mut outs = [Outcome::default(); 32];
    let mut base = [0u8; 60];
    frame(&mut base, 0, vip, 0x10, false);
    base[26..30].fill(0);
    base[34..36].fill(0);
    let sum: u32 = (14..34)
        .step_by(2)
        .filter(|&i| i != 24)
        .map(|i| u32::from(u16::from_be_bytes([base[i], base[i + 1]])))
        .sum();
    let before = w.stats.packets_out;
    let mut j = 0;
    let mut now = 1_000_000u64;
    let t0 = Instant::now();
    for _ in 0..iters {
        for bb in bufs.iter_mut() {
            let k = order[j];
            j += 1;
            if j == order.len() {
                j = 0;
            }
            bb.load(&base);
            let d = bb.data_mut();
            let client = 0x6440_0000u32 | (k & 0x3f_ffff);
            d[26..30].copy_from_slice(&client.to_be_bytes());
            d[34..36].copy_from_slice(&(1024 + (k >> 22) as u16).to_be_bytes());
            let mut s = sum + (client >> 16) + (client & 0xffff);
            s = (s & 0xffff) + (s >> 16);
            s = (s & 0xffff) + (s >> 16);
            d[24..26].copy_from_slice(&(!(s as u16)).to_be_bytes());
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
