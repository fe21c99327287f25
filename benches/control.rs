//! Supervisor throughput on authenticated service advertisements (one core).
//! `cargo bench --bench control`. Each datagram is HMAC-verified, replay-checked,
//! decoded, applied, and answered with a signed Ack (and relayed when intermediate
//! systems are registered). Datagrams are sealed outside the timed region.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowgate::control::proto::*;
use flowgate::control::store::MemStore;
use flowgate::control::supervisor::{Supervisor, SupervisorConfig};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const SYSTEMS: u64 = 100;

fn setup(listeners: u64) -> (Supervisor, Key, Instant) {
    let key = Key::new(&[5u8; 32]).unwrap();
    let now = Instant::now();
    let mut s = Supervisor::new(
        SupervisorConfig {
            name: "bench".into(),
            advert_interval: Duration::from_secs(1),
            dead_interval: Duration::from_secs(3600),
            relay: true,
            drain_timeout: Duration::from_secs(1),
            pools: vec![],
        },
        key.clone(),
        SeqGen::new(1),
        now,
        Box::new(MemStore::default()),
    )
    .unwrap();
    let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for id in 0..SYSTEMS + listeners {
        let kind = if id < SYSTEMS {
            SystemKind::End
        } else {
            SystemKind::Intermediate
        };
        let b = Body::Register(Register {
            kind,
            name: format!("sys{id}"),
            mac: [2, 0, 0, 0, 0, id as u8],
            addrs: vec!["10.0.0.1".parse().unwrap()],
            capabilities: 1,
            lease_ms: 0,
        });
        s.handle(now, from, &key.seal(id, 1, &b));
    }
    while s.poll_transmit(now).is_some() {}
    (s, key, now)
}

fn advert(id: u64) -> Body {
    Body::ServiceAdvert(ServiceAdvert {
        origin: SystemInfo {
            id,
            kind: SystemKind::End,
            name: format!("sys{id}"),
            mac: [2, 0, 0, 0, 0, id as u8],
            addrs: vec!["10.0.0.1".parse().unwrap()],
            state: SysState::Up,
        },
        age_ms: 0,
        services: vec![Service {
            name: "web".into(),
            vip: "10.0.0.100".parse().unwrap(),
            proto: 6,
            ports: vec![(80, 80), (443, 443)],
            capacity: 1000,
            weight: 100,
            load: 250,
            congestion: 10,
            response_time_us: 1500,
        }],
    })
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("supervisor_advert");
    g.throughput(Throughput::Elements(1));
    for listeners in [0u64, 2] {
        g.bench_function(format!("relay_to_{listeners}"), |b| {
            let (mut s, key, now) = setup(listeners);
            let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
            let bodies: Vec<Body> = (0..SYSTEMS).map(advert).collect();
            let mut seq = 10u64;
            b.iter_custom(|iters| {
                let msgs: Vec<Vec<u8>> = (0..iters)
                    .map(|i| {
                        seq += 1;
                        let id = i % SYSTEMS;
                        key.seal(id, seq, &bodies[id as usize])
                    })
                    .collect();
                let start = Instant::now();
                for m in &msgs {
                    s.handle(now, from, black_box(m));
                    while let Some(t) = s.poll_transmit(now) {
                        black_box(t);
                    }
                }
                start.elapsed()
            });
            assert_eq!(
                s.stats.rx_replayed + s.stats.rx_bad_mac + s.stats.rx_malformed,
                0
            );
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
