//! A flood of spoofed new flows against a full flow table: the open connections stay.
//!
//! A flow is *answered* once a packet has come back against its creating direction; a
//! full table evicts the unanswered flow idle the longest before any answered one. So a
//! SYN or datagram flood, which nobody answers, only replaces its own flows: every
//! established connection and answered datagram flow keeps its server, a client that
//! connects in the middle of the flood gets through, and `flows_evicted_answered` stays 0.
//!
//! Frames are built by scapy, run through `flowgate replay` (what a user runs), and read
//! back by tshark, the independent oracle for where each frame went.

mod common;

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

/// Established clients, answered DNS clients, and flood frames.
const TCP_CLIENTS: usize = 200;
const DNS_CLIENTS: usize = 50;
const FLOOD: usize = 5000;

/// The input, in time order (all within the 10 s SYN timeout, so nothing expires):
/// - t = 1 s: 200 TCP handshakes (client SYN, the server's SYN-ACK from whichever server
///   `SERVERS` lists first — the pipeline's own choice is read from the output — and
///   the client's ACK) and 50 DNS query/response pairs;
/// - t = 2 s to 4 s: 5000 flood frames from spoofed sources, four SYNs to the web VIP
///   for every datagram to the DNS VIP; after the 2000th, a new client (198.51.100.250)
///   sends a SYN, after 100 more its SYN-ACK comes back, and after the flood its ACK;
/// - t = 5 s: one data segment from each TCP client and one more query from each DNS
///   client.
///
/// A server's reply is sent from the VIP to the client by the server that got the
/// request (its MAC is `ANSWER[i]`, filled in below from a first replay), so the replies
/// take the flow's reverse direction as they would on a real network.
const INPUT: &str = r#"
import random
conf.verb = 0
random.seed(7)
GW, SYS = "02:00:00:00:00:fe", "02:00:00:00:00:01"
V, D = "203.0.113.10", "203.0.113.53"
fs = []
def at(p, t):
  p.time = t
  fs.append(p)
for i in range(NT):
  c = "192.0.%d.%d" % (2 + i // 250, i % 250)
  at(Ether(src=GW, dst=SYS)/IP(src=c, dst=V)/TCP(sport=40000 + i, dport=80, flags="S", seq=1000), 1.0)
  at(Ether(src=ANSWER[i], dst=SYS)/IP(src=V, dst=c)/TCP(sport=80, dport=40000 + i, flags="SA", seq=5000, ack=1001), 1.0)
  at(Ether(src=GW, dst=SYS)/IP(src=c, dst=V)/TCP(sport=40000 + i, dport=80, flags="A", seq=1001, ack=5001), 1.0)
for i in range(ND):
  c = "192.0.99.%d" % i
  at(Ether(src=GW, dst=SYS)/IP(src=c, dst=D)/UDP(sport=30000 + i, dport=53)/Raw(b"q"), 1.0)
  at(Ether(src=ANSWER[NT + i], dst=SYS)/IP(src=D, dst=c)/UDP(sport=53, dport=30000 + i)/Raw(b"r"), 1.0)
N = "198.51.100.250"
for k in range(NF):
  t = 2.0 + 2.0 * k / NF
  s = "10.%d.%d.%d" % (random.randrange(256), random.randrange(256), random.randrange(1, 255))
  if k % 5 == 4:
    at(Ether(src=GW, dst=SYS)/IP(src=s, dst=D)/UDP(sport=random.randrange(1024, 65536), dport=53)/Raw(b"f"), t)
  else:
    at(Ether(src=GW, dst=SYS)/IP(src=s, dst=V)/TCP(sport=random.randrange(1024, 65536), dport=80, flags="S"), t)
  if k == 2000:
    at(Ether(src=GW, dst=SYS)/IP(src=N, dst=V)/TCP(sport=45000, dport=80, flags="S", seq=7000), t)
  if k == 2100:
    at(Ether(src=ANSWER[NT + ND], dst=SYS)/IP(src=V, dst=N)/TCP(sport=80, dport=45000, flags="SA", seq=9000, ack=7001), t)
at(Ether(src=GW, dst=SYS)/IP(src=N, dst=V)/TCP(sport=45000, dport=80, flags="A", seq=7001, ack=9001), 4.5)
for i in range(NT):
  c = "192.0.%d.%d" % (2 + i // 250, i % 250)
  at(Ether(src=GW, dst=SYS)/IP(src=c, dst=V)/TCP(sport=40000 + i, dport=80, flags="PA", seq=1001, ack=5001)/Raw(b"GET / HTTP/1.0\r\n\r\n"), 5.0)
for i in range(ND):
  at(Ether(src=GW, dst=SYS)/IP(src="192.0.99.%d" % i, dst=D)/UDP(sport=30000 + i, dport=53)/Raw(b"q2"), 5.0)
wrpcap(OUT, fs)
"#;

/// Replays `input` (a scapy program writing `OUT`, given `ANSWER`, `NT`, `ND`, `NF`)
/// through [`PIPELINE`]; returns tshark's `eth.dst;ip.src;ip.dst;tcp.flags;udp.srcport`
/// of every output frame and the stats JSON.
fn replay(answer: &[String]) -> (Vec<Vec<String>>, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let (p, inp, out, stats) = (
        dir.path().join("flood.yaml"),
        dir.path().join("in.pcap"),
        dir.path().join("out.pcap"),
        dir.path().join("stats.json"),
    );
    std::fs::write(&p, PIPELINE).unwrap();
    common::scapy(&format!(
        "from scapy.all import *\nOUT = {:?}\nANSWER = {answer:?}\nNT, ND, NF = {TCP_CLIENTS}, {DNS_CLIENTS}, {FLOOD}\n{INPUT}",
        inp.to_str().unwrap()
    ));
    let st = common::flowgate()
        .args(["replay", "--quiet", "--pipeline"])
        .arg(&p)
        .arg("--input")
        .arg(&inp)
        .arg("--output")
        .arg(&out)
        .arg("--stats-json")
        .arg(&stats)
        .status()
        .unwrap();
    assert!(st.success(), "replay failed");
    let j = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    let rows = common::tshark(
        &out,
        &[
            "-T",
            "fields",
            "-e",
            "eth.dst",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "tcp.flags",
            "-e",
            "udp.srcport",
            "-E",
            "separator=;",
        ],
    )
    .into_iter()
    .map(|l| l.split(';').map(str::to_string).collect())
    .collect();
    (rows, j)
}

#[test]
fn a_flood_of_new_flows_leaves_open_connections_alone() {
    let ok = common::have_scapy() && common::have_tshark();
    assert!(ok || !common::in_ci(), "CI must have scapy and tshark");
    if !ok {
        return;
    }
    // First pass: learn which server the pipeline sends each client's first frame to,
    // so that the second pass can answer from that server. (Any server answering works
    // for the flow table; this keeps the capture true to a real network.)
    let n = TCP_CLIENTS + DNS_CLIENTS + 1;
    let guess: Vec<String> = vec!["02:00:00:00:01:01".into(); n];
    let (rows, _) = replay(&guess);
    let first_to = |rows: &[Vec<String>], src: &str, dst: &str| -> String {
        rows.iter()
            .find(|r| r[1] == src && r[2] == dst)
            .unwrap_or_else(|| panic!("no frame from {src} to {dst}"))[0]
            .clone()
    };
    let tcp_client = |i: usize| format!("192.0.{}.{}", 2 + i / 250, i % 250);
    let dns_client = |i: usize| format!("192.0.99.{i}");
    let mut answer: Vec<String> = (0..TCP_CLIENTS)
        .map(|i| first_to(&rows, &tcp_client(i), "203.0.113.10"))
        .chain((0..DNS_CLIENTS).map(|i| first_to(&rows, &dns_client(i), "203.0.113.53")))
        .collect();
    answer.push(first_to(&rows, "198.51.100.250", "203.0.113.10"));

    let (rows, j) = replay(&answer);
    // Every frame forwarded: the flood too (each spoofed SYN is a new flow to a server).
    let frames = 3 * TCP_CLIENTS + 2 * DNS_CLIENTS + FLOOD + 3 + TCP_CLIENTS + DNS_CLIENTS;
    assert_eq!(j["packets_in"], frames as u64);
    assert_eq!(j["packets_out"], frames as u64, "{j}");
    assert_eq!(rows.len(), frames);
    // One flow per client and per flood frame, none more: no frame of an open
    // connection found its flow gone (it would have been picked up as a new one).
    let flows = TCP_CLIENTS + DNS_CLIENTS + FLOOD + 1;
    assert_eq!(j["flows_created"], flows as u64, "{j}");
    assert_eq!(j["flows_evicted"], (flows - 512) as u64, "{j}");
    assert_eq!(j["flows_evicted_answered"], 0, "{j}");
    assert_eq!(j["flows_expired"], 0, "{j}");
    // Each client's frames all went to the one server (tshark reads the output).
    let all_to = |src: &str, dst: &str| -> Vec<String> {
        rows.iter()
            .filter(|r| r[1] == src && r[2] == dst)
            .map(|r| r[0].clone())
            .collect()
    };
    for (i, server) in answer.iter().enumerate().take(TCP_CLIENTS) {
        let to = all_to(&tcp_client(i), "203.0.113.10");
        assert_eq!(to.len(), 3, "client {i}: SYN, ACK, data");
        assert!(to.iter().all(|m| m == server), "client {i}: {to:?}");
    }
    for i in 0..DNS_CLIENTS {
        let to = all_to(&dns_client(i), "203.0.113.53");
        assert_eq!(to.len(), 2, "DNS client {i}: two queries");
        assert!(
            to.iter().all(|m| *m == answer[TCP_CLIENTS + i]),
            "DNS client {i}: {to:?}"
        );
    }
    let late = all_to("198.51.100.250", "203.0.113.10");
    assert_eq!(late.len(), 2, "the late client's SYN and ACK");
    assert!(late.iter().all(|m| *m == answer[n - 1]), "{late:?}");
    // The servers' replies went out to the gateway.
    let replies = rows
        .iter()
        .filter(|r| r[1] == "203.0.113.10" || r[1] == "203.0.113.53")
        .collect::<Vec<_>>();
    assert_eq!(replies.len(), TCP_CLIENTS + DNS_CLIENTS + 1);
    assert!(replies.iter().all(|r| r[0] == "02:00:00:00:00:fe"));
}
