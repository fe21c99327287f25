//! The whole per-packet path — parse, flow-table hit, classify on miss, rewrite — on
//! in-memory frames, with 1M live flows.
//!
//! `cargo bench --bench pipeline`. Throughput is reported in elements (packets) per
//! second on one core. Frames stay cache-resident (as DDIO would leave them); before each
//! packet its source address and port are set to one of 1M established flows, visited
//! in a random order, so flow lookups miss the caches as they would under real load.
//! `flow_hit_rewrite_1M_flows_burst32_ipv6` is the burst case over IPv6 (an IPv6 VIP with
//! the same QoS and servers, 1M flows of its own in a second worker), `..._vlan` over
//! IPv4 frames with one 802.1Q tag (a third worker).
//! `FLOWGATE_BENCH_FLOWS=1000 cargo bench --bench pipeline` runs the same path with every
//! flow in cache: the difference is what the flow table's memory accesses cost.
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time:
//! on a shared machine the wall clock also counts the time other processes hold the core,
//! which says nothing about packets per second per core.

/// Criterion measurement: CPU time of the calling thread, in nanoseconds.
struct ThreadCpu;

impl Measurement for ThreadCpu {
    type Intermediate = cpu_time::ThreadTime;
    type Value = u64;
    fn start(&self) -> Self::Intermediate {
        cpu_time::ThreadTime::now()
    }
    fn end(&self, i: Self::Intermediate) -> u64 {
        i.elapsed().as_nanos() as u64
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WallTime.formatter()
    }
}

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use flowgate::action::{FrameBuf, PacketBuf};
use flowgate::config::Pipeline;
use flowgate::pipeline::{Tables, Worker};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

/// Live flows: 1M, or `FLOWGATE_BENCH_FLOWS` (e.g. 1000 to see the cost of the path
/// with every flow in cache, for comparison).
fn flows() -> usize {
    std::env::var("FLOWGATE_BENCH_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}
const BURST: usize = 32;

/// One IPv4 and one IPv6 service over the same three servers, with the same QoS.
fn pipeline() -> Pipeline {
    let servers = r#"
    qos: gold
    servers:
      - { name: web1, mac: "02:00:00:00:01:01", weight: 100 }
      - { name: web2, mac: "02:00:00:00:01:02", weight: 100 }
      - { name: web3, mac: "02:00:00:00:01:03", weight: 200 }"#;
    let yaml = format!(
        r#"
system: {{ mac: "02:00:00:00:00:01", addresses: [203.0.113.1], gateway: "02:00:00:00:00:fe" }}
qos: {{ gold: {{ dscp: af41 }} }}
services:
  - name: http
    vip: 203.0.113.10
    proto: tcp
    ports: [80]{servers}
  - name: http6
    vip: "2001:db8::10"
    proto: tcp
    ports: [80]{servers}
flow_table: {{ capacity: 2000000 }}
"#
    );
    Pipeline::from_str(&yaml, Path::new("bench.yaml")).expect("pipeline")
}

/// The frames of a case: IPv4 or IPv6, untagged or with one 802.1Q tag.
#[derive(Clone, Copy)]
struct Shape {
    v6: bool,
    vlan: bool,
}

/// An Ethernet/IPv4/TCP frame (64 bytes) from a client to the IPv4 VIP, or with `v6` an
/// Ethernet/IPv6/TCP frame (74 bytes) to the IPv6 VIP; with `vlan` a tag (VID 7) after the
/// MAC addresses.
fn frame(flags: u8, Shape { v6, vlan }: Shape) -> Vec<u8> {
    let (l3, et) = if v6 { (40, 0x86dd_u16) } else { (20, 0x0800) };
    let mut f = vec![0u8; (14 + l3 + 20).max(64)];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xfe]);
    f[12..14].copy_from_slice(&et.to_be_bytes());
    let ip = &mut f[14..14 + l3];
    if v6 {
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&20u16.to_be_bytes());
        ip[6] = 6;
        ip[7] = 64;
        ip[24..40].copy_from_slice(
            &"2001:db8::10"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
    } else {
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&40u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[16..20].copy_from_slice(&[203, 0, 113, 10]);
        let ck = flowgate::wire::checksum::checksum(ip);
        ip[10..12].copy_from_slice(&ck.to_be_bytes());
    }
    let tcp = &mut f[14 + l3..14 + l3 + 20];
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    if vlan {
        f.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
    }
    f
}

/// Client address and port of flow `i` written into a frame: 198.18.0.0/15, or in an
/// IPv6 frame 2001:db8:c612::/96.
#[inline]
fn set_client(f: &mut [u8], i: u32, Shape { v6, vlan }: Shape) {
    let a = 0xc612_0000u32.wrapping_add(i >> 4);
    let t = if vlan { 4 } else { 0 };
    let (addr, port) = if v6 {
        (t + 34, t + 54)
    } else {
        (t + 26, t + 34)
    };
    f[addr..addr + 4].copy_from_slice(&a.to_be_bytes());
    if v6 {
        f[t + 22..t + 26].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    }
    f[port..port + 2].copy_from_slice(&(1024 + (i & 0xf) as u16 * 1000).to_be_bytes());
}

/// A worker with `flows` established connections (SYN, then ACK) of the IPv4 or the IPv6
/// service in frames of that shape, and a burst of buffers holding their ACK frame.
fn open(flows: usize, shape: Shape) -> (Worker, Vec<FrameBuf>) {
    let mut w = Worker::new(Arc::new(Tables::build(pipeline(), 1)));
    let syn = frame(0x02, shape);
    let ack = frame(0x10, shape);
    let mut buf = FrameBuf::new(2048);
    for (tmpl, t) in [(&syn, 1u64), (&ack, 2)] {
        for i in 0..flows as u32 {
            buf.load(tmpl);
            set_client(buf.data_mut(), i, shape);
            w.process(&mut buf, 0, t);
        }
    }
    assert_eq!(w.flow_count(), flows);
    let bufs = (0..BURST)
        .map(|_| {
            let mut b = FrameBuf::new(2048);
            b.load(&ack);
            b
        })
        .collect();
    (w, bufs)
}

const V4: Shape = Shape {
    v6: false,
    vlan: false,
};

fn bench(c: &mut Criterion<ThreadCpu>) {
    let flows = flows();
    let (mut w, mut bufs) = open(flows, V4);
    // A random visiting order (xorshift), so consecutive packets hit unrelated flows.
    let mut order: Vec<u32> = (0..flows as u32).collect();
    flowgate::r#gen::ack::shuffle(&mut order, 0x2545_f491_4f6c_dd1d);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BURST as u64));
    let mut pos = 0usize;
    let mut outs = [flowgate::pipeline::Outcome::default(); BURST];
    // The clock advances 100 ns per packet (a 10 Mpps pace), and expiry runs once per
    // burst as in the data path.
    let mut now = 1_000_000_000u64;
    // Readies a burst: the next 32 flows of `order` in its frames, the clock on, expiry.
    let burst = |w: &mut Worker, bufs: &mut [FrameBuf], pos: &mut usize, now: &mut u64, sh| {
        for fb in bufs.iter_mut() {
            set_client(fb.data_mut(), order[*pos], sh);
            *pos = (*pos + 1) % flows;
        }
        *now += 100 * BURST as u64;
        w.expire(*now, 64);
    };
    g.bench_function("flow_hit_rewrite_1M_flows_burst32", |b| {
        b.iter(|| {
            burst(&mut w, &mut bufs, &mut pos, &mut now, V4);
            w.process_burst(&mut bufs, 0, now, &mut outs);
            black_box(&outs);
        })
    });
    // The same with IPv6 (the same QoS, the same servers), and with IPv4 frames that carry
    // an 802.1Q tag: each its own worker and flows.
    for (name, shape) in [
        (
            "ipv6",
            Shape {
                v6: true,
                vlan: false,
            },
        ),
        (
            "vlan",
            Shape {
                v6: false,
                vlan: true,
            },
        ),
    ] {
        let (mut w, mut bufs) = open(flows, shape);
        let mut pos = 0usize;
        g.bench_function(format!("flow_hit_rewrite_1M_flows_burst32_{name}"), |b| {
            b.iter(|| {
                burst(&mut w, &mut bufs, &mut pos, &mut now, shape);
                w.process_burst(&mut bufs, 0, now, &mut outs);
                black_box(&outs);
            })
        });
        assert_eq!(w.stats.dropped(), 0, "{name} bench traffic was dropped");
        assert_eq!(w.stats.packets_out, w.stats.packets_in);
    }
    g.bench_function("flow_hit_rewrite_1M_flows_one_by_one", |b| {
        b.iter(|| {
            now += 100 * BURST as u64;
            w.expire(now, 64);
            for fb in bufs.iter_mut() {
                set_client(fb.data_mut(), order[pos], V4);
                pos = (pos + 1) % flows;
                black_box(w.process(fb, 0, now));
            }
        })
    });
    let before = w.stats.flows_created;
    // `parse_into` a reused `Meta`, as the burst path does (`parse` returns the whole
    // `Meta` by value, and timing that mostly timed the copy).
    let mut meta = flowgate::pipeline::meta::Meta::default();
    g.bench_function("parse_only", |b| {
        b.iter(|| {
            for fb in bufs.iter() {
                let r = flowgate::pipeline::parse::parse_into(black_box(fb.data()), &mut meta);
                black_box((&r, &meta));
            }
        })
    });
    g.bench_function("new_flow_classify_maglev", |b| {
        let mut i = flows as u32;
        b.iter_batched(
            || (),
            |_| {
                for fb in bufs.iter_mut() {
                    set_client(fb.data_mut(), i, V4);
                    i = i.wrapping_add(1);
                    black_box(w.process(fb, 0, now));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
    // Only meaningful when the new-flow bench ran (a name filter may skip it).
    assert!(w.stats.flows_created >= before);
    assert_eq!(w.stats.dropped(), 0, "bench traffic was dropped");
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = bench
}
criterion_main!(benches);
