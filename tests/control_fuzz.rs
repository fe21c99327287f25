//! Property tests standing in for the cargo-fuzz targets (`fuzz/`) so stable CI runs
//! them: arbitrary bytes through the decoder and the supervisor never panic, refused
//! datagrams change nothing, encode/decode round-trips, and random valid request
//! sequences never produce overlapping grants.

use flowgate::control::ana::PoolConf;
use flowgate::control::proto::*;
use flowgate::control::store::MemStore;
use flowgate::control::supervisor::{Supervisor, SupervisorConfig};
use proptest::prelude::*;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

fn key() -> Key {
    Key::new(&[9u8; 32]).unwrap()
}

fn sup(now: Instant) -> Supervisor {
    Supervisor::new(
        SupervisorConfig {
            name: "sup".into(),
            advert_interval: Duration::from_millis(100),
            dead_interval: Duration::from_millis(400),
            relay: true,
            drain_timeout: Duration::from_secs(1),
            pools: vec![PoolConf {
                name: "p".into(),
                first: Some(0),
                last: Some(99),
                prefix: None,
                block: 10,
                lease_ms: 300,
            }],
        },
        key(),
        SeqGen::new(1),
        now,
        Box::new(MemStore::default()),
    )
    .unwrap()
}

fn from() -> SocketAddr {
    "127.0.0.1:9".parse().unwrap()
}

fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9é]{0,20}"
}

fn service() -> impl Strategy<Value = Service> {
    (
        name(),
        addr(),
        any::<u8>(),
        proptest::collection::vec((0u16..1000, 1000u16..), 0..4),
        any::<(u32, u32, u32, u16, u32)>(),
    )
        .prop_map(|(name, vip, proto, ports, (c, w, l, g, r))| Service {
            name,
            vip,
            proto,
            ports,
            capacity: c,
            weight: w,
            load: l,
            congestion: g,
            response_time_us: r,
        })
}

fn qos() -> impl Strategy<Value = Qos> {
    prop_oneof![
        (0u8..64).prop_map(Qos::Dscp),
        (0u8..8).prop_map(Qos::Pcp),
        (0u16..4096, 0u8..8, any::<u16>()).prop_map(|(vid, pcp, tpid)| Qos::PushVlan {
            vid,
            pcp,
            tpid
        }),
        Just(Qos::PopVlan),
        (0u16..4096).prop_map(|vid| Qos::SetVlan { vid }),
        (0u32..(1 << 20), 0u8..8, any::<u8>()).prop_map(|(label, tc, ttl)| Qos::PushMpls {
            label,
            tc,
            ttl
        }),
        Just(Qos::PopMpls),
        (0u32..(1 << 20)).prop_map(|label| Qos::SwapMpls { label }),
    ]
}

fn body() -> impl Strategy<Value = Body> {
    let info = (
        any::<u64>(),
        name(),
        any::<[u8; 6]>(),
        proptest::collection::vec(addr(), 0..3),
        any::<bool>(),
    )
        .prop_map(|(id, name, mac, addrs, d)| SystemInfo {
            id,
            kind: SystemKind::End,
            name,
            mac,
            addrs,
            state: if d { SysState::Draining } else { SysState::Up },
        });
    prop_oneof![
        (
            name(),
            any::<[u8; 6]>(),
            proptest::collection::vec(addr(), 0..4),
            any::<(u32, u32)>()
        )
            .prop_map(|(name, mac, addrs, (c, l))| Body::Register(Register {
                kind: SystemKind::Intermediate,
                name,
                mac,
                addrs,
                capabilities: c,
                lease_ms: l
            })),
        (
            info,
            any::<u32>(),
            proptest::collection::vec(service(), 0..4)
        )
            .prop_map(
                |(origin, age_ms, services)| Body::ServiceAdvert(ServiceAdvert {
                    origin,
                    age_ms,
                    services
                })
            ),
        (
            any::<(u64, u64, u64)>(),
            any::<[u8; 4]>(),
            0u8..=32,
            any::<[u8; 4]>(),
            proptest::collection::vec(qos(), 0..5),
            any::<u32>(),
            any::<Option<(u32, u32)>>()
        )
            .prop_map(
                |((o, f, t), s, sp, d, qos, life, spi)| Body::FlowAdd(FlowAdvert {
                    origin: o,
                    flow_id: f,
                    target: t,
                    // With an SPI range (the FlowAdd extension): ESP, any ports.
                    matcher: FlowMatch {
                        proto: if spi.is_some() { 50 } else { 6 },
                        src: IpAddr::from(s),
                        src_plen: sp,
                        dst: IpAddr::from(d),
                        dst_plen: 32,
                        sport: if spi.is_some() { (0, 65535) } else { (1, 2) },
                        dport: if spi.is_some() { (0, 65535) } else { (3, 3) },
                        spi: spi.map(|(a, b)| (a.min(b), a.max(b))),
                    },
                    qos,
                    lifetime_ms: life
                })
            ),
        (
            any::<(u64, u64, u8, u64)>(),
            name(),
            any::<(u64, u32, u32)>()
        )
            .prop_map(
                |((a, b, c, d), pool, (e, f, g))| Body::NumberGrant(NumberGrant {
                    in_reply_to: a,
                    request_id: b,
                    status: c,
                    grant_id: d,
                    pool,
                    first: e,
                    count: f,
                    lease_ms: g
                })
            ),
        (any::<(u8, u32)>(), name())
            .prop_map(|((op, value), arg)| Body::MgmtRequest(MgmtRequest { op, arg, value })),
        (any::<u64>(), ".{0,50}").prop_map(|(r, json)| Body::MgmtReply(MgmtReply {
            in_reply_to: r,
            status: 0,
            json
        })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn decode_any_bytes(t in any::<u8>(), data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Body::decode(t, &data);
        let _ = key().open(&data);
    }

    #[test]
    fn roundtrip(b in body(), sender in any::<u64>(), seq in 1u64..) {
        let k = key();
        let bytes = k.seal(sender, seq, &b);
        let m = k.open(&bytes).unwrap();
        prop_assert_eq!(m.sender, sender);
        prop_assert_eq!(m.seq, seq);
        prop_assert_eq!(m.body, b);
        // Any single-bit flip is refused.
        let mut bad = bytes.clone();
        let i = (seq as usize) % bad.len();
        bad[i] ^= 1 << (sender % 8);
        prop_assert!(k.open(&bad).is_err());
    }

    /// Authenticated garbage bodies reach the decoder; the supervisor never panics
    /// and a refused datagram changes nothing but a counter.
    #[test]
    fn supervisor_survives_signed_garbage(
        msgs in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..200)), 1..20)
    ) {
        let now = Instant::now();
        let mut s = sup(now);
        for (seq, (t, body)) in (2u64..).zip(msgs) {
            // Hand-frame: header + arbitrary body + valid tag.
            let mut d = b"FG\x01".to_vec();
            d.push(t);
            d.extend_from_slice(&42u64.to_be_bytes());
            d.extend_from_slice(&seq.to_be_bytes());
            d.extend_from_slice(&(body.len() as u16).to_be_bytes());
            d.extend_from_slice(&[0, 0]);
            d.extend_from_slice(&body);
            d.extend_from_slice(&hmac_tag(&d));
            let before = (s.systems().count(), s.grants().count(), s.stats.rx_malformed);
            s.handle(now, from(), &d);
            if Body::decode(t, &body).is_err() {
                prop_assert_eq!(s.stats.rx_malformed, before.2 + 1);
                prop_assert_eq!((s.systems().count(), s.grants().count()), (before.0, before.1));
            }
            while s.poll_transmit(now).is_some() {}
        }
    }

    /// Random valid requests from several systems over time: grants never overlap,
    /// nobody holds a grant while unregistered.
    #[test]
    fn supervisor_random_requests(
        ops in proptest::collection::vec((0u8..6, 0u64..5, 0u64..200), 1..200)
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut s = sup(now);
        let k = key();
        let mut seq = 1u64;
        for (op, who, dt) in ops {
            now += Duration::from_millis(dt);
            let sender = 1000 + who;
            let body = match op {
                0 => Body::Register(Register { kind: SystemKind::End, name: format!("s{who}"), mac: [0; 6], addrs: vec![], capabilities: 0, lease_ms: 0 }),
                1 => Body::NumberRequest(NumberRequest { request_id: dt % 3, pool: "p".into(), lease_ms: 0 }),
                2 => Body::NumberRelease(NumberRelease { grant_id: dt % 12 }),
                3 => Body::NumberRenew(NumberRenew { grant_id: dt % 12, lease_ms: 0 }),
                4 => Body::Leave(Leave { origin: sender, reason: 0 }),
                _ => Body::Keepalive(Keepalive { state: 0 }),
            };
            seq += 1;
            s.handle(now, from(), &k.seal(sender, seq, &body));
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
            while s.poll_transmit(now).is_some() {}
            let g: Vec<(u64, u64, u64)> = s.grants().map(|g| (g.first, g.first + g.count as u64, g.holder)).collect();
            let live: Vec<u64> = s.systems().map(|x| x.id).collect();
            for (i, a) in g.iter().enumerate() {
                prop_assert!(live.contains(&a.2), "grant held by unregistered {}", a.2);
                for b in &g[i + 1..] {
                    prop_assert!(a.1 <= b.0 || b.1 <= a.0);
                }
            }
        }
    }
}

/// HMAC-SHA256 computed independently of the crate (RFC 2104 over sha2).
fn hmac_tag(data: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let k = [9u8; 32];
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for i in 0..32 {
        ipad[i] ^= k[i];
        opad[i] ^= k[i];
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(data)
        .finalize();
    let out = Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize();
    let mut t = [0u8; 32];
    t.copy_from_slice(&out);
    t
}

/// A FlowAdd copy delayed past its FlowDel (UDP reorders; the requester retransmitted
/// it before withdrawing the flow) does not bring the flow back at the supervisor; the
/// same flow id is usable again by a FlowAdd sent after the FlowDel, and once its
/// origin registers anew (a restarted agent counts from 1).
#[test]
fn a_late_flow_add_does_not_undo_its_flow_del() {
    let now = Instant::now();
    let mut s = sup(now);
    let k = key();
    let sender = 77;
    let send_as = |s: &mut Supervisor, seq: u64, body: &Body| {
        s.handle(now, from(), &k.seal(sender, seq, body));
        while s.poll_transmit(now).is_some() {}
    };
    let mut seq = 10u64;
    let mut send = |s: &mut Supervisor, body: &Body| {
        seq += 1;
        send_as(s, seq, body);
    };
    let reg = Body::Register(Register {
        kind: SystemKind::End,
        name: "a".into(),
        mac: [2, 0, 0, 0, 0, 7],
        addrs: vec![],
        capabilities: 0,
        lease_ms: 0,
    });
    let add = Body::FlowAdd(FlowAdvert {
        origin: sender,
        flow_id: 1,
        target: sender,
        matcher: FlowMatch {
            proto: 17,
            src: "0.0.0.0".parse().unwrap(),
            src_plen: 0,
            dst: "10.9.9.1".parse().unwrap(),
            dst_plen: 32,
            sport: (0, 65535),
            dport: (100, 199),
            spi: None,
        },
        qos: vec![],
        lifetime_ms: 0,
    });
    let del = Body::FlowDel(FlowWithdraw {
        origin: sender,
        flow_id: 1,
    });
    send(&mut s, &reg); // 11
    send(&mut s, &add); // 12; its retransmission, 13, is on its way
    assert_eq!(s.flows().count(), 1);
    send(&mut s, &del); // 14
    send_as(&mut s, 13, &add); // the late copy
    assert_eq!(s.flows().count(), 0, "a withdrawn flow stays withdrawn");
    send(&mut s, &add); // 15: advertised again
    assert_eq!(s.flows().count(), 1, "a FlowAdd sent after the FlowDel");
    send(&mut s, &del); // 16
    send(&mut s, &reg); // 17
    send(&mut s, &add); // 18
    assert_eq!(
        s.flows().count(),
        1,
        "after a new registration the id is new"
    );
}
