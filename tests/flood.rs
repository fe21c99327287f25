//! A flood of spoofed new flows against a full flow table: the open connections stay.
//!
//! A flow is *assured* once its creator has spoken again after an answer (the ACK that
//! completes a TCP handshake, a second datagram after a reply); a full table evicts the
//! unassured flow idle the longest before any assured one. The servers answer a flood
//! from spoofed sources (SYN-ACKs, DNS responses) but the spoofed clients never speak
//! again, so the flood only replaces its own flows: every established connection and
//! assured datagram flow keeps its flow, a client that connects in the middle of the
//! flood gets through, and `flows_evicted_assured` stays 0.
//!
//! Frames are built by scapy, run through `flowgate replay` (what a user runs), and read
//! back by tshark, the independent oracle for where each frame went.

mod common;

use std::collections::HashMap;

const PIPELINE: &str = r#"system:
  mac: "02:00:00:00:00:01"
  gateway: "02:00:00:00:00:fe"
services:
  - name: web
    vip: 203.0.113.10
    proto: tcp
    ports: [80]
    policy: least-load
    servers:
      - { name: s1, mac: "02:00:00:00:01:01" }
      - { name: s2, mac: "02:00:00:00:01:02" }
      - { name: s3, mac: "02:00:00:00:01:03" }
  - name: dns
    vip: 203.0.113.53
    proto: udp
    ports: [53]
    servers:
      - { name: d1, mac: "02:00:00:00:02:01" }
      - { name: d2, mac: "02:00:00:00:02:02" }
flow_table: { capacity: 512 }
default: gateway
"#;

/// Established clients, assured DNS clients, and flood frames.
const TCP_CLIENTS: usize = 200;
const DNS_CLIENTS: usize = 50;
const FLOOD: usize = 5000;

/// The input, in time order (all within the 10 s SYN timeout, so nothing expires):
/// - t = 1 s: 200 TCP handshakes (client SYN, server SYN-ACK, client ACK) and 50 DNS
///   clients' two queries, each answered;
/// - t = 2 s to 4 s: 5000 flood frames from spoofed sources, four SYNs to the web VIP
///   for every query to the DNS VIP, each answered at once by its server; at the
///   2000th a new client (198.51.100.250) sends a SYN, its SYN-ACK comes back 20 flood
///   frames later and its ACK 20 after that;
/// - t = 5 s: one data segment from each TCP client and the late one, one more query
///   from each DNS client.
///
/// Every reply comes from the server the pipeline sent the client's first frame to
/// (`ANSWER["src:port"]`, learnt by a first replay; `S1` until then), so the replies
/// take the flow's reverse direction as they would on a real network.
const INPUT: &str = r#"
import random
conf.verb = 0
random.seed(7)
GW, SYS, S1 = "02:00:00:00:00:fe", "02:00:00:00:00:01", "02:00:00:00:01:01"
V, D = "203.0.113.10", "203.0.113.53"
fs = []
def at(p, t):
  p.time = t
  fs.append(p)
def srv(c, port): return ANSWER.get("%s:%d" % (c, port), S1)
def tcp(c, sport, flags, t, back=False, data=b""):
  if back:
    at(Ether(src=srv(c, sport), dst=SYS)/IP(src=V, dst=c)/TCP(sport=80, dport=sport, flags=flags), t)
  else:
    at(Ether(src=GW, dst=SYS)/IP(src=c, dst=V)/TCP(sport=sport, dport=80, flags=flags)/Raw(data), t)
def udp(c, sport, t, back=False):
  if back:
    at(Ether(src=srv(c, sport), dst=SYS)/IP(src=D, dst=c)/UDP(sport=53, dport=sport)/Raw(b"r"), t)
  else:
    at(Ether(src=GW, dst=SYS)/IP(src=c, dst=D)/UDP(sport=sport, dport=53)/Raw(b"q"), t)
def tc(i): return "192.0.%d.%d" % (2 + i // 250, i % 250)
def dc(i): return "192.0.99.%d" % i
for i in range(NT):
  tcp(tc(i), 40000 + i, "S", 1.0)
  tcp(tc(i), 40000 + i, "SA", 1.0, back=True)
  tcp(tc(i), 40000 + i, "A", 1.0)
for i in range(ND):
  for _ in range(2):
    udp(dc(i), 30000 + i, 1.0)
    udp(dc(i), 30000 + i, 1.0, back=True)
N = "198.51.100.250"
for k in range(NF):
  t = 2.0 + 2.0 * k / NF
  s = "10.%d.%d.%d" % (random.randrange(256), random.randrange(256), random.randrange(1, 255))
  port = random.randrange(1024, 65536)
  if k % 5 == 4:
    udp(s, port, t)
    udp(s, port, t, back=True)
  else:
    tcp(s, port, "S", t)
    tcp(s, port, "SA", t, back=True)
  if k == 2000:
    tcp(N, 45000, "S", t)
  if k == 2020:
    tcp(N, 45000, "SA", t, back=True)
  if k == 2040:
    tcp(N, 45000, "A", t)
for i in range(NT):
  tcp(tc(i), 40000 + i, "PA", 5.0, data=b"GET / HTTP/1.0\r\n\r\n")
tcp(N, 45000, "PA", 5.0, data=b"GET / HTTP/1.0\r\n\r\n")
for i in range(ND):
  udp(dc(i), 30000 + i, 5.0)
wrpcap(OUT, fs)
"#;

/// One output frame as tshark reads it.
struct Row {
    eth_dst: String,
    src: String,
    dst: String,
    /// TCP or UDP source port.
    sport: String,
}

/// Replays the frames [`INPUT`] writes (with `answer` as `ANSWER`) through
/// [`PIPELINE`]; returns tshark's reading of the output and the stats JSON.
fn replay(answer: &HashMap<String, String>) -> (Vec<Row>, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let (p, inp, out) = (
        dir.path().join("flood.yaml"),
        dir.path().join("in.pcap"),
        dir.path().join("out.pcap"),
    );
    std::fs::write(&p, PIPELINE).unwrap();
    let answers = dir.path().join("answer.json");
    std::fs::write(&answers, serde_json::to_string(answer).unwrap()).unwrap();
    common::scapy(&format!(
        "from scapy.all import *\nimport json\nOUT = {:?}\nANSWER = json.load(open({:?}))\n\
         NT, ND, NF = {TCP_CLIENTS}, {DNS_CLIENTS}, {FLOOD}\n{INPUT}",
        inp.to_str().unwrap(),
        answers.to_str().unwrap()
    ));
    let j = common::replay_stats(&p, &inp, &out);
    let mut args = vec!["-T", "fields"];
    for f in ["eth.dst", "ip.src", "ip.dst", "tcp.srcport", "udp.srcport"] {
        args.extend(["-e", f]);
    }
    args.extend(["-E", "separator=;"]);
    let rows = common::tshark(&out, &args)
        .into_iter()
        .map(|l| {
            let f: Vec<&str> = l.split(';').collect();
            Row {
                eth_dst: f[0].to_string(),
                src: f[1].to_string(),
                dst: f[2].to_string(),
                sport: format!("{}{}", f[3], f[4]),
            }
        })
        .collect();
    (rows, j)
}

/// Where each client's frames to a VIP went: `"src:port"` → the servers' MACs, in order.
fn servers_of(rows: &[Row]) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for r in rows {
        if r.dst == "203.0.113.10" || r.dst == "203.0.113.53" {
            m.entry(format!("{}:{}", r.src, r.sport))
                .or_default()
                .push(r.eth_dst.clone());
        }
    }
    m
}

#[test]
fn a_flood_of_new_flows_leaves_open_connections_alone() {
    if !common::have_oracles() {
        return;
    }
    // First pass: learn which server the pipeline sends each client's first frame to,
    // so that the second pass answers from that server. (The flow table does not care
    // who answers; this keeps the capture true to a real network.)
    let (rows, _) = replay(&HashMap::new());
    let answer: HashMap<String, String> = servers_of(&rows)
        .into_iter()
        .map(|(k, v)| (k, v[0].clone()))
        .collect();

    let (rows, j) = replay(&answer);
    // Every frame forwarded: the flood too (each spoofed SYN is a new flow to a server).
    let frames = 3 * TCP_CLIENTS + 4 * DNS_CLIENTS + 2 * FLOOD + 3 + TCP_CLIENTS + 1 + DNS_CLIENTS;
    assert_eq!(j["packets_in"], frames as u64);
    assert_eq!(j["packets_out"], frames as u64, "{j}");
    assert_eq!(rows.len(), frames);
    // One flow per client and per flood frame, none more: no frame of an open
    // connection found its flow gone (it would have been picked up as a new one).
    let flows = TCP_CLIENTS + DNS_CLIENTS + FLOOD + 1;
    assert_eq!(j["flows_created"], flows as u64, "{j}");
    assert_eq!(j["flows_evicted"], (flows - 512) as u64, "{j}");
    assert_eq!(j["flows_evicted_assured"], 0, "{j}");
    assert_eq!(j["flows_expired"], 0, "{j}");
    // Each client's frames all went to one server (tshark reads the output).
    let to = servers_of(&rows);
    let check = |client: &str, n: usize| {
        let v = &to[client];
        assert_eq!(v.len(), n, "{client}: {v:?}");
        assert!(v.iter().all(|m| *m == v[0]), "{client}: {v:?}");
    };
    for i in 0..TCP_CLIENTS {
        check(
            &format!("192.0.{}.{}:{}", 2 + i / 250, i % 250, 40000 + i),
            3,
        );
    }
    for i in 0..DNS_CLIENTS {
        check(&format!("192.0.99.{i}:{}", 30000 + i), 3);
    }
    check("198.51.100.250:45000", 3);
    // The servers' replies went out to the gateway.
    let replies: Vec<&Row> = rows
        .iter()
        .filter(|r| r.src == "203.0.113.10" || r.src == "203.0.113.53")
        .collect();
    assert_eq!(replies.len(), TCP_CLIENTS + 2 * DNS_CLIENTS + FLOOD + 1);
    assert!(replies.iter().all(|r| r.eth_dst == "02:00:00:00:00:fe"));
}
