//! Advertised flows move the connections already in the flow table: `Worker::set_tables`
//! with a changed rule that claims existing flows (the reserved slots of advertised
//! flows), then `Worker::sweep` in small steps, as `flowgate run`'s workers do.
//!
//! Three servers behind one TCP service, 200 connections balanced over them, 4 more
//! held by an operator's pattern rule. Checked with packets: which server a connection's
//! next packet goes to, and its DSCP. A property test runs random sequences of adverts
//! set and cleared in four slots, connections opened and sweeps interrupted anywhere
//! (it fails without the restart of a sweep on a change, with the slots' priority
//! reversed, and without the let-go).

mod common;

use common::sweep_to_end;
use flowgate::action::{FrameBuf, PacketBuf};
use flowgate::classify::{Decision, Range, Rule, prefix_range, v4_mapped};
use flowgate::config::{Pipeline, QosActions, ServerState, Target};
use flowgate::control::overlay::{first_slot, reserve_flow_slots};
use flowgate::r#gen::ack::{Template, frame, handshake};
use flowgate::pipeline::{Tables, Worker};
use std::path::Path;
use std::sync::Arc;

const P: &str = "system: { mac: \"02:00:00:00:00:01\", gateway: \"02:00:00:00:00:fe\" }\n\
services:\n  - name: web\n    vip: 192.0.2.10\n    proto: tcp\n    ports: [80]\n    servers:\n      \
- { name: a, mac: \"02:00:00:00:01:01\" }\n      \
- { name: b, mac: \"02:00:00:00:01:02\" }\n      \
- { name: c, mac: \"02:00:00:00:01:03\" }\n\
flows:\n  - name: pinned\n    match: { src: 100.64.9.0/24, proto: tcp }\n    to: a\n";

/// Connection `k`'s client is 100.64.0.0 + k (see `gen::ack::frame`).
const PINNED: [u32; 4] = [9 * 256 + 1, 9 * 256 + 2, 9 * 256 + 3, 9 * 256 + 4];

struct Rig {
    w: Worker,
    p: Pipeline,
    tpl: Template,
    g: u64,
    now: u64,
    slot0: usize,
}

impl Rig {
    fn new() -> Rig {
        let mut p = Pipeline::from_str(P, Path::new("p.yaml")).unwrap();
        reserve_flow_slots(&mut p, 4);
        let slot0 = first_slot(&p);
        let tpl = Template::for_pipeline(&p).unwrap();
        let w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
        Rig {
            w,
            p,
            tpl,
            g: 1,
            now: 1_000_000,
            slot0,
        }
    }

    /// Opens connection `k` (SYN, SYN-ACK, ACK); the server it went to.
    fn open(&mut self, k: u32) -> u16 {
        let mut server = u16::MAX;
        handshake(k, self.tpl, |f, rev| {
            let (out, _) = self.forward(f);
            if !rev {
                server = out;
            }
        });
        server
    }

    /// One packet of connection `k` (`rev`: the server's); see [`Rig::forward`].
    fn send(&mut self, k: u32, flags: u8, rev: bool) -> (u16, u8) {
        let mut f = [0u8; 60];
        frame(&mut f, k, self.tpl, flags, rev);
        self.forward(&f)
    }

    /// Frame `f` through the worker: the server it went to (`u16::MAX` when not to a
    /// server) and its DSCP as sent.
    fn forward(&mut self, f: &[u8]) -> (u16, u8) {
        let mut b = FrameBuf::new(256);
        b.load(f);
        let out = self.w.process(&mut b, 0, self.now);
        let r = out.route.expect("forwarded");
        assert!(out.drop.is_none());
        // Untagged IPv4: the ToS byte is the 16th.
        (r.server, b.data()[15] >> 2)
    }

    fn ack(&mut self, k: u32) -> (u16, u8) {
        self.send(k, 0x10, false)
    }

    /// Advertised flow in reserved slot `slot`: clients `src` to the VIP port 80, to
    /// server `to` with DSCP `dscp`; `None` empties the slot.
    fn advert(&mut self, slot: usize, adv: Option<(&str, u16, u8)>) {
        let i = self.slot0 + slot;
        let d = Decision::FlowRule(i as u32);
        let fr = &mut self.p.flow_rules[i];
        match adv {
            Some((src, to, dscp)) => {
                let (net, len) = src.split_once('/').unwrap();
                let a: std::net::Ipv4Addr = net.parse().unwrap();
                let mut r = Rule::any(d);
                r.proto = Range::exact(6);
                r.src = prefix_range(v4_mapped(a.octets()), 96 + len.parse::<u8>().unwrap());
                r.dst = prefix_range(v4_mapped([192, 0, 2, 10]), 128);
                r.dst_port = Range::exact(80);
                fr.rule = r;
                fr.target = Target::Server(to);
                fr.qos = QosActions {
                    dscp: Some(dscp),
                    ..QosActions::default()
                };
            }
            None => {
                let mut r = Rule::any(d);
                r.proto = Range { lo: 1, hi: 0 };
                fr.rule = r;
                fr.target = Target::Drop;
                fr.qos = QosActions::default();
            }
        }
    }

    fn publish(&mut self) {
        self.g += 1;
        self.w
            .set_tables(Arc::new(Tables::build(self.p.clone(), self.g)))
            .expect("same shape");
        self.now += 1_000_000;
    }
}

#[test]
fn an_advertised_flow_takes_existing_connections_and_lets_them_go() {
    let mut r = Rig::new();
    let mut on = Vec::new();
    for k in 0..200 {
        on.push(r.open(k));
    }
    assert!((0..3).all(|s| on.contains(&s)), "balanced: {on:?}");
    for k in PINNED {
        assert_eq!(r.open(k), 0, "the operator's rule pins {k} to a");
    }

    // Clients 100.64.0.0/28 (k 0..16) go to c with DSCP 46, and 100.64.9.0/24 to b (the
    // operator's rule holds those).
    r.advert(0, Some(("100.64.0.0/28", 2, 46)));
    r.advert(1, Some(("100.64.9.0/24", 1, 10)));
    r.publish();
    assert!(r.w.sweep_due());
    assert_eq!(r.ack(20).0, on[20], "k 20 is not matched");
    assert_eq!(
        sweep_to_end(&mut r.w, 7),
        16,
        "every connection of the advert is taken"
    );
    for k in 0..16 {
        assert_eq!(
            r.ack(k),
            (2, 46),
            "connection {k} (was on {}) moved",
            on[k as usize]
        );
        assert_eq!(r.send(k, 0x10, true).0, u16::MAX, "its responses go out");
    }
    for k in 16..200 {
        assert_eq!(r.ack(k), (on[k as usize], 0), "connection {k} stays");
    }
    for k in PINNED {
        assert_eq!(r.ack(k), (0, 0), "the operator's rule keeps {k}");
    }
    assert_eq!(r.w.stats.flows_moved, 16);
    assert!(!r.w.sweep_due());
    assert_eq!(r.w.sweep(100), 0, "nothing left to do");

    // Withdrawn: the connections stay on c, back under the service, without the DSCP.
    r.advert(0, None);
    r.publish();
    assert_eq!(sweep_to_end(&mut r.w, 64), 16);
    for k in 0..16 {
        assert_eq!(r.ack(k), (2, 0), "connection {k} stays on c");
    }
    // Under the service again, they leave c when it goes down.
    let c = r.p.server_index("c").unwrap() as usize;
    r.p.servers[c].state = ServerState::Down;
    r.publish();
    assert!(!r.w.sweep_due(), "a server state is not an advert");
    for k in 0..16 {
        let (s, _) = r.ack(k);
        assert!(
            s == 0 || s == 1,
            "connection {k} moved off the down server, to {s}"
        );
    }
}

#[test]
fn a_change_during_a_sweep_is_swept_too() {
    let mut r = Rig::new();
    let on: Vec<u16> = (0..64).map(|k| r.open(k)).collect();
    r.advert(0, Some(("100.64.0.32/28", 1, 12)));
    r.publish();
    // The first step visits the slots of connections 0..8 (flows fill slots in order).
    let first = r.w.sweep(8);
    assert!(r.w.sweep_due());
    // A second advert arrives before the sweep is done, for connections the sweep has
    // passed: it starts again from the first slot and covers both adverts.
    r.advert(1, Some(("100.64.0.0/29", 2, 46)));
    r.publish();
    let rest = sweep_to_end(&mut r.w, 8);
    assert_eq!(first + rest, 24);
    for k in 0..64u32 {
        let want = match k {
            0..8 => (2, 46),
            32..48 => (1, 12),
            _ => (on[k as usize], 0),
        };
        assert_eq!(r.ack(k), want, "connection {k}");
    }
    // Changing an operator's rule starts no sweep: it steers new flows only.
    let op =
        r.p.flow_rules
            .iter()
            .position(|f| f.name == "pinned")
            .unwrap();
    r.p.flow_rules[op].target = Target::Server(2);
    r.publish();
    assert!(!r.w.sweep_due());
}

#[test]
fn a_sweep_waits_for_a_resize_to_move_the_flows() {
    let mut r = Rig::new();
    let on: Vec<u16> = (0..64).map(|k| r.open(k)).collect();
    r.advert(0, Some(("100.64.0.32/28", 1, 12)));
    r.publish();
    // The sweep has passed connections 0..16 when a new flow-table size comes.
    r.w.sweep(16);
    r.p.flow_table.capacity = 4096;
    r.publish();
    assert!(r.w.sweep_due() && r.w.moves_due());
    // Packets of connections 40..48 move them into the new table first, ahead of the
    // others: still on their servers (the sweep has not reached them).
    for k in 40..48u32 {
        assert_eq!(r.ack(k), (on[k as usize], 0), "connection {k}");
    }
    // The sweep waits while flows move into the new table (they could pass behind
    // it), then goes over the new table from its start.
    assert_eq!(r.w.sweep(8), 0);
    while r.w.moves_due() {
        r.w.move_flows(256);
    }
    assert!(r.w.sweep_due());
    sweep_to_end(&mut r.w, 8);
    assert_eq!(r.w.flow_count(), 64);
    for k in 0..64u32 {
        let want = match k {
            32..48 => (1, 12),
            _ => (on[k as usize], 0),
        };
        assert_eq!(r.ack(k), want, "connection {k}");
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Slot, client prefix (connection `base` with the given length), target, DSCP.
    Set(usize, u32, u8, u16),
    Clear(usize),
    Step(usize),
    Open(u32),
    /// A new flow-table size (room for every flow), and steps of the move into it.
    Resize(usize),
    Move(usize),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        (0usize..4, 0u32..64, 26u8..=32, 0u16..3).prop_map(|(s, b, l, t)| Op::Set(s, b, l, t)),
        (0usize..4).prop_map(Op::Clear),
        (1usize..40).prop_map(Op::Step),
        (0u32..64).prop_map(Op::Open),
        (80usize..400).prop_map(Op::Resize),
        (1usize..300).prop_map(Op::Move),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Whatever adverts come and go, with sweeps interrupted anywhere and the flow table
    /// resized under them (moves interrupted anywhere too): once the sweep is done, every open connection that an advert matches goes to the first such
    /// advert's server with its DSCP, every other one carries no advert's DSCP, and the
    /// operator's connections stay where its rule put them.
    #[test]
    fn after_a_sweep_every_open_flow_follows_the_first_matching_advert(
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let mut r = Rig::new();
        let mut open = std::collections::BTreeSet::new();
        for k in PINNED {
            r.open(k);
        }
        // Per slot: (prefix base, length, target), as applied.
        let mut slots: [Option<(u32, u8, u16)>; 4] = [None; 4];
        for o in ops {
            match o {
                Op::Set(s, base, len, to) => {
                    let a = std::net::Ipv4Addr::from(0x6440_0000 | base);
                    r.advert(s, Some((&format!("{a}/{len}"), to, 10 + s as u8)));
                    r.publish();
                    slots[s] = Some((0x6440_0000 | base, len, to));
                }
                Op::Clear(s) => {
                    r.advert(s, None);
                    r.publish();
                    slots[s] = None;
                }
                Op::Step(n) => {
                    r.w.sweep(n);
                }
                Op::Open(k) => {
                    if open.insert(k) {
                        r.open(k);
                    }
                }
                Op::Resize(cap) => {
                    r.p.flow_table.capacity = cap;
                    r.publish();
                }
                Op::Move(n) => {
                    r.w.move_flows(n);
                }
            }
        }
        while r.w.moves_due() {
            r.w.move_flows(16);
            r.w.sweep(16);
        }
        sweep_to_end(&mut r.w, 16);
        // Where every flow goes now, per server: what the live-flow gauge must say.
        let mut on = vec![0u64; 3];
        for &k in open.iter().chain(PINNED.iter()) {
            on[r.ack(k).0 as usize] += 1;
        }
        proptest::prop_assert_eq!(&r.w.stats.server_flows, &on, "live flows per server");
        for &k in &open {
            let client = 0x6440_0000 | k;
            let first = slots.iter().enumerate().find_map(|(s, a)| {
                a.filter(|&(base, len, _)| (client ^ base) >> (32 - len as u32) == 0)
                    .map(|(_, _, to)| (s, to))
            });
            let (server, dscp) = r.ack(k);
            match first {
                Some((s, to)) => proptest::prop_assert_eq!(
                    (server, dscp),
                    (to, 10 + s as u8),
                    "connection {} under slot {}", k, s
                ),
                None => proptest::prop_assert_eq!(dscp, 0, "connection {} has no advert", k),
            }
        }
        for k in PINNED {
            proptest::prop_assert_eq!(r.ack(k), (0, 0), "the operator's rule keeps {}", k);
        }
    }
}
