//! Service `affinity: source`: every new flow of one client (or one client network)
//! reaches one server, across the services that share those servers, and moves as a
//! whole when its server goes down. Frames are built by scapy (the independent oracle
//! for what is on the wire) and run through a `Worker`; the server a frame went to is
//! read from its destination MAC.

mod common;

use flowgate::action::{FrameBuf, PacketBuf};
use flowgate::config::{Pipeline, ServerState};
use flowgate::pipeline::{Tables, Worker};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const SERVERS: &str = r#"
      - { name: s1, mac: "02:00:00:00:01:01" }
      - { name: s2, mac: "02:00:00:00:01:02" }
      - { name: s3, mac: "02:00:00:00:01:03" }
      - { name: s4, mac: "02:00:00:00:01:04" }"#;

fn pipeline() -> Pipeline {
    let yaml = format!(
        r#"system: {{ mac: "02:00:00:00:00:01", addresses: [203.0.113.1], gateway: "02:00:00:00:00:fe" }}
services:
  - name: ike
    vip: 203.0.113.20
    proto: udp
    ports: [500, 4500]
    affinity: source
    servers:{SERVERS}
  - name: web
    vip: 203.0.113.20
    proto: tcp
    ports: [80, 443]
    affinity: source
    servers:{SERVERS}
  - name: lan
    vip: 203.0.113.21
    proto: tcp
    ports: [80]
    affinity: {{ by: source, ipv4_prefix: 24 }}
    servers:{SERVERS}
  - name: plain
    vip: 203.0.113.22
    proto: tcp
    ports: [80]
    servers:{SERVERS}
  - name: web6
    vip: "2001:db8:100::20"
    proto: tcp
    ports: [80]
    affinity: source
    servers:{SERVERS}
"#
    );
    Pipeline::from_str(&yaml, std::path::Path::new("affinity.yaml")).expect("valid pipeline")
}

const PRELUDE: &str = r#"
conf.verb = 0
GW = "02:00:00:00:00:fe"
SYS = "02:00:00:00:00:01"
def E(): return Ether(src=GW, dst=SYS)
def syn(c, v, sp, dp): return E()/IP(src=c, dst=v)/TCP(sport=sp, dport=dp, flags="S")
def ack(c, v, sp, dp): return E()/IP(src=c, dst=v)/TCP(sport=sp, dport=dp, flags="A")
def synack(srv, v, c, sp, dp): return Ether(src=srv, dst=SYS)/IP(src=v, dst=c)/TCP(sport=sp, dport=dp, flags="SA")
def udp(c, v, sp, dp): return E()/IP(src=c, dst=v)/UDP(sport=sp, dport=dp)/Raw(b"ike")
def syn6(c, v, sp, dp): return E()/IPv6(src=c, dst=v)/TCP(sport=sp, dport=dp, flags="S")
"#;

/// One crafted frame and what it stands for.
struct Probe {
    service: &'static str,
    /// The client (address as written) and the flow (client port, service port).
    client: String,
    flow: (u16, u16),
    expr: String,
}

fn probe(service: &'static str, client: &str, sp: u16, dp: u16, expr: String) -> Probe {
    Probe {
        service,
        client: client.to_string(),
        flow: (sp, dp),
        expr,
    }
}

/// The server a forwarded frame went to (by destination MAC), `None` when it went
/// elsewhere or nowhere.
fn server_of(p: &Pipeline, out: &[u8]) -> Option<String> {
    let mac: [u8; 6] = out.get(..6)?.try_into().ok()?;
    p.servers
        .iter()
        .find(|s| s.mac == mac)
        .map(|s| s.name.clone())
}

/// Runs `frames` through `w` from `t0` on; the server each went to.
fn run(w: &mut Worker, p: &Pipeline, frames: &[Vec<u8>], t0: u64) -> Vec<Option<String>> {
    let mut b = FrameBuf::new(2048);
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            assert!(b.load(f), "frame fits");
            let o = w.process(&mut b, 0, t0 + i as u64 * 1_000);
            assert!(o.drop.is_none(), "frame {i} dropped: {o:?}");
            o.route.and_then(|_| server_of(p, b.data()))
        })
        .collect()
}

/// IPv4 clients: four /24 networks of twelve hosts.
fn v4_clients() -> Vec<String> {
    let mut v = Vec::new();
    for net in ["198.51.100", "198.51.101", "192.0.2", "100.64.7"] {
        for h in 1..=12 {
            v.push(format!("{net}.{}", h * 17));
        }
    }
    v
}

fn net24(c: &str) -> &str {
    c.rsplit_once('.').expect("dotted quad").0
}

#[test]
fn a_clients_flows_stay_together_and_move_together() {
    if !common::have_scapy() {
        assert!(!common::in_ci(), "scapy is required in CI");
        eprintln!("skipped: no scapy");
        return;
    }
    let p = pipeline();
    let mut probes = Vec::new();
    for (ci, c) in v4_clients().iter().enumerate() {
        let c = c.as_str();
        let v = "203.0.113.20";
        // IKE: port 500, then 4500 (NAT-T), and 4500 from a NAT-mapped port.
        for (sp, dp) in [(500, 500), (4500, 4500), (20_000 + ci as u16, 4500)] {
            probes.push(probe(
                "ike",
                c,
                sp,
                dp,
                format!("udp('{c}','{v}',{sp},{dp})"),
            ));
        }
        for k in 0..4u16 {
            let (sp, dp) = (40_000 + k, if k % 2 == 0 { 80 } else { 443 });
            probes.push(probe(
                "web",
                c,
                sp,
                dp,
                format!("syn('{c}','{v}',{sp},{dp})"),
            ));
        }
        for k in 0..2u16 {
            let sp = 41_000 + k;
            let e = format!("syn('{c}','203.0.113.21',{sp},80)");
            probes.push(probe("lan", c, sp, 80, e));
        }
        for k in 0..8u16 {
            let sp = 42_000 + k;
            let e = format!("syn('{c}','203.0.113.22',{sp},80)");
            probes.push(probe("plain", c, sp, 80, e));
        }
    }
    // IPv6: eight /64s, four hosts (interface identifiers) in each.
    for n in 0..8 {
        for h in [1u32, 0x99, 0xabcd, 0x1234_5678] {
            let c = format!("2001:db8:{n:x}:77:{:x}:{:x}::1", h >> 16, h & 0xffff);
            for k in 0..3u16 {
                let sp = 43_000 + k;
                let e = format!("syn6('{c}','2001:db8:100::20',{sp},80)");
                probes.push(probe("web6", &c, sp, 80, e));
            }
        }
    }
    let exprs: Vec<&str> = probes.iter().map(|p| p.expr.as_str()).collect();
    let frames = common::craft(PRELUDE, &exprs);
    let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
    let got = run(&mut w, &p, &frames, 1_000_000_000);

    // Servers per (service, client), per client over `ike` and `web`, per /24 for `lan`,
    // per /64 for `web6`.
    let mut by: BTreeMap<(&str, String), BTreeSet<String>> = BTreeMap::new();
    let mut flow_server: BTreeMap<(&str, String, (u16, u16)), String> = BTreeMap::new();
    for (pr, s) in probes.iter().zip(&got) {
        let s = s
            .clone()
            .unwrap_or_else(|| panic!("{} went to no server", pr.expr));
        let group = match pr.service {
            "ike" | "web" => ("vpn+web", pr.client.clone()),
            "lan" => ("lan", net24(&pr.client).to_string()),
            "web6" => ("web6", pr.client.split(":77:").next().unwrap().to_string()),
            other => (other, pr.client.clone()),
        };
        by.entry(group).or_default().insert(s.clone());
        flow_server.insert((pr.service, pr.client.clone(), pr.flow), s);
    }
    let groups = |kind: &str| {
        by.iter()
            .filter(move |((k, _), _)| *k == kind)
            .map(|((_, g), s)| (g.clone(), s.clone()))
            .collect::<Vec<_>>()
    };
    // One server per client across both services, all four servers used.
    let vpn = groups("vpn+web");
    assert_eq!(vpn.len(), 48);
    for (c, s) in &vpn {
        assert_eq!(s.len(), 1, "client {c}: its IKE and web flows on {s:?}");
    }
    let used: BTreeSet<_> = vpn.iter().flat_map(|(_, s)| s.iter().cloned()).collect();
    assert_eq!(used.len(), 4, "clients spread over all servers: {used:?}");
    // At /32 the hosts of one /24 spread; at /24 (`lan`) each network is on one server.
    let nets_spread = v4_clients()
        .chunks(12)
        .filter(|hosts| {
            let s: BTreeSet<_> = hosts
                .iter()
                .map(|h| flow_server[&("web", h.clone(), (40_000, 80))].clone())
                .collect();
            s.len() > 1
        })
        .count();
    assert_eq!(nets_spread, 4, "a /24's hosts spread at /32");
    let lan = groups("lan");
    assert_eq!(lan.len(), 4);
    for (n, s) in &lan {
        assert_eq!(s.len(), 1, "network {n}.0/24 on {s:?}");
    }
    // IPv6 at /64: each network on one server, whatever the interface identifier.
    let v6 = groups("web6");
    assert_eq!(v6.len(), 8);
    for (n, s) in &v6 {
        assert_eq!(s.len(), 1, "{n}::/64 on {s:?}");
    }
    let v6_used: BTreeSet<_> = v6.iter().flat_map(|(_, s)| s.iter().cloned()).collect();
    assert!(v6_used.len() > 1, "eight /64s on one server: {v6_used:?}");
    // Without affinity one client's connections spread.
    let plain = groups("plain");
    let spread = plain.iter().filter(|(_, s)| s.len() > 1).count();
    assert!(
        spread >= 40,
        "only {spread} of 48 clients spread without affinity"
    );

    // The busiest server goes down. Each of its clients' flows moves, all to one server,
    // the one a new flow of that client now goes to, also when the first packet after
    // the change is a response (server to client) of one of its flows.
    let mut load: BTreeMap<&String, usize> = BTreeMap::new();
    for (_, s) in &vpn {
        *load.entry(s.iter().next().unwrap()).or_default() += 1;
    }
    let (down, _) = load.iter().max_by_key(|(_, n)| **n).unwrap();
    let down = (*down).clone();
    let mut p2 = p.clone();
    let di = p2.server_index(&down).unwrap() as usize;
    p2.servers[di].state = ServerState::Down;
    let down_mac = p.servers[di].mac;
    let mac_str = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    w.set_tables(Arc::new(Tables::build(p2.clone(), 2)))
        .expect("same shape");
    let moved: Vec<&String> = vpn
        .iter()
        .filter(|(_, s)| s.contains(&down))
        .map(|(c, _)| c)
        .collect();
    assert!(!moved.is_empty());
    let stay: Vec<(&String, &String)> = vpn
        .iter()
        .filter(|(_, s)| !s.contains(&down))
        .map(|(c, s)| (c, s.iter().next().unwrap()))
        .collect();
    // Per moved client: a response of web flow 40000/80, then that flow's next packet,
    // its other web flows and its IKE flows, then a new web connection. Per other
    // client: one packet of an existing flow.
    let mut after = Vec::new();
    let mut exprs = Vec::new();
    for c in &moved {
        let v = "203.0.113.20";
        exprs.push(format!(
            "synack('{}','{v}','{c}',80,40000)",
            mac_str(down_mac)
        ));
        after.push((*c, "response"));
        exprs.push(format!("ack('{c}','{v}',40000,80)"));
        after.push((*c, "flow"));
        for (sp, dp) in [(40_001, 443), (40_002, 80)] {
            exprs.push(format!("ack('{c}','{v}',{sp},{dp})"));
            after.push((*c, "flow"));
        }
        exprs.push(format!("udp('{c}','{v}',4500,4500)"));
        after.push((*c, "flow"));
        exprs.push(format!("syn('{c}','{v}',45000,443)"));
        after.push((*c, "new"));
    }
    for (c, _) in &stay {
        exprs.push(format!("ack('{c}','203.0.113.20',40003,443)"));
        after.push((*c, "stay"));
    }
    let refs: Vec<&str> = exprs.iter().map(String::as_str).collect();
    let frames = common::craft(PRELUDE, &refs);
    let got = run(&mut w, &p2, &frames, 2_000_000_000);
    let mut now_on: BTreeMap<&String, BTreeSet<String>> = BTreeMap::new();
    for ((c, what), s) in after.iter().zip(&got) {
        match *what {
            "response" => assert_eq!(s, &None, "a response goes to the gateway"),
            "stay" => {
                let was = stay.iter().find(|(x, _)| x == c).unwrap().1;
                assert_eq!(s.as_ref(), Some(was), "client {c} kept its server");
            }
            _ => {
                let s = s
                    .clone()
                    .unwrap_or_else(|| panic!("client {c}: {what} to no server"));
                assert_ne!(s, down, "client {c}: {what} still on the down server");
                now_on.entry(*c).or_default().insert(s);
            }
        }
    }
    assert_eq!(now_on.len(), moved.len());
    for (c, s) in &now_on {
        assert_eq!(s.len(), 1, "client {c}: moved flows and a new one on {s:?}");
    }
}

/// `pipelines/vpn.yaml` as shipped: a client's IKE (UDP 500, then 4500 from its own or a
/// NAT-mapped port) and its ESP security associations (no ports, one flow per SPI) reach
/// one gateway; clients spread over all three.
#[test]
fn shipped_vpn_pipeline_keeps_ike_nat_t_and_esp_together() {
    if !common::have_scapy() {
        assert!(!common::in_ci(), "scapy is required in CI");
        eprintln!("skipped: no scapy");
        return;
    }
    let p = Pipeline::load(&common::root().join("pipelines/vpn.yaml")).expect("vpn.yaml");
    let prelude = format!(
        "{PRELUDE}\ndef esp(c, v, spi): return E()/IP(src=c, dst=v)/ESP(spi=spi, seq=1, data=b'x'*24)\n"
    );
    let v = "203.0.113.30";
    let mut probes = Vec::new();
    for i in 1..=30u32 {
        let c = format!("198.18.{}.{}", i / 7, 10 + i);
        let c = c.as_str();
        for (sp, dp) in [(500, 500), (4500, 4500), (31_000 + i as u16, 4500)] {
            probes.push(probe(
                "ike",
                c,
                sp,
                dp,
                format!("udp('{c}','{v}',{sp},{dp})"),
            ));
        }
        for spi in [0x1000 + i, 0x2000 + i] {
            probes.push(probe("esp", c, 0, 0, format!("esp('{c}','{v}',{spi})")));
        }
    }
    let exprs: Vec<&str> = probes.iter().map(|p| p.expr.as_str()).collect();
    let frames = common::craft(&prelude, &exprs);
    let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
    let got = run(&mut w, &p, &frames, 1_000_000_000);
    let mut by_client: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (pr, s) in probes.iter().zip(&got) {
        let s = s
            .clone()
            .unwrap_or_else(|| panic!("{} went to no gateway", pr.expr));
        by_client.entry(pr.client.as_str()).or_default().insert(s);
    }
    assert_eq!(by_client.len(), 30);
    for (c, s) in &by_client {
        assert_eq!(s.len(), 1, "client {c}: IKE, NAT-T and ESP on {s:?}");
    }
    let used: BTreeSet<_> = by_client.values().flatten().collect();
    assert_eq!(used.len(), 3, "clients on every gateway: {used:?}");
    // Every frame made a flow of its own: each SA is one (keyed by its SPI).
    assert_eq!(w.stats.flows_created, probes.len() as u64);
}
