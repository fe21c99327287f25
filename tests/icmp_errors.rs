//! ICMP errors go to the sender of the packet they quote, through the flow of that
//! packet: a path MTU error from a router outside, quoting a server's response, reaches
//! that server (or the server's kernel never learns the path MTU and its large responses
//! vanish: a black hole); a server's port unreachable, quoting a client's datagram, goes
//! back out to the client. (Both went the wrong way before: each followed the quoted
//! packet's own direction.) Frames built by scapy, `flowgate replay`'s output read by
//! tshark.

mod common;

use common::{have_oracles, replay_stats, scapy, tshark_fields};
use std::path::Path;

const PIPELINE: &str = r#"system: { mac: "02:00:00:00:00:01", addresses: [203.0.113.1, "2001:db8::1"], gateway: "02:00:00:00:00:fe" }
services:
  - name: web
    vip: 203.0.113.10
    proto: tcp
    ports: [80]
    servers:
      - { name: s1, mac: "02:00:00:00:01:01" }
  - name: web6
    vip: "2001:db8:10::10"
    proto: tcp
    ports: [80]
    servers:
      - { name: s1, mac: "02:00:00:00:01:01" }
  - name: dns
    vip: 203.0.113.10
    proto: udp
    ports: [53]
    servers:
      - { name: s1, mac: "02:00:00:00:01:01" }
"#;

/// Each frame of the output: (destination MAC, ICMP or ICMPv6 type, or "" for other).
fn frames(out: &Path) -> Vec<(String, String)> {
    (tshark_fields(out, "", &["eth.dst", "icmp.type", "icmpv6.type"]).into_iter())
        .map(|f| {
            let ty = if f[1].is_empty() { &f[2] } else { &f[1] };
            (f[0].clone(), ty.clone())
        })
        .collect()
}

#[test]
fn icmp_errors_reach_the_sender_of_the_packet_they_quote() {
    if !have_oracles() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = d.join("p.yaml");
    std::fs::write(&p, PIPELINE).unwrap();
    let cap = d.join("in.pcap");
    scapy(&format!(
        r#"
from scapy.all import *
GW, SYS, S1 = "02:00:00:00:00:fe", "02:00:00:00:00:01", "02:00:00:00:01:01"
c4, v4, c6, v6 = "198.51.100.7", "203.0.113.10", "2001:db8:1::7", "2001:db8:10::10"
syn = IP(src=c4, dst=v4)/TCP(sport=40000, dport=80, flags="S")
resp = IP(src=v4, dst=c4, flags="DF")/TCP(sport=80, dport=40000, flags="A")/Raw(b"r" * 1400)
syn6 = IPv6(src=c6, dst=v6)/TCP(sport=40001, dport=80, flags="S")
resp6 = IPv6(src=v6, dst=c6)/TCP(sport=80, dport=40001, flags="A")/Raw(b"r" * 1400)
query = IP(src=c4, dst=v4)/UDP(sport=5353, dport=53)/Raw(b"q")
pk = [
    Ether(src=GW, dst=SYS)/syn,
    Ether(src=S1, dst=SYS)/resp,
    # A router outside: the response is too big for its next hop.
    Ether(src=GW, dst=SYS)/IP(src="192.0.2.99", dst=v4)/ICMP(type=3, code=4, nexthopmtu=1280)/bytes(resp)[:548],
    Ether(src=GW, dst=SYS)/syn6,
    Ether(src=S1, dst=SYS)/resp6,
    Ether(src=GW, dst=SYS)/IPv6(src="2001:db8:99::1", dst=v6)/ICMPv6PacketTooBig(mtu=1280)/bytes(resp6)[:1232],
    Ether(src=GW, dst=SYS)/query,
    # The server: nothing listens on its port 53.
    Ether(src=S1, dst=SYS)/IP(src=v4, dst=c4)/ICMP(type=3, code=3)/bytes(query),
]
for i, f in enumerate(pk):
    f.time = 1 + i / 100
wrpcap("{}", pk)
"#,
        cap.display()
    ));
    let out = d.join("out.pcap");
    let j = replay_stats(&p, &cap, &out);
    let got = frames(&out);
    let (gw, s1) = ("02:00:00:00:00:fe", "02:00:00:00:01:01");
    assert_eq!(
        got,
        [
            (s1, ""),
            (gw, ""),
            (s1, "3"),
            (s1, ""),
            (gw, ""),
            (s1, "2"),
            (s1, ""),
            (gw, "3"),
        ]
        .map(|(m, t)| (m.to_string(), t.to_string())),
        "{j}"
    );
    assert_eq!(j["packets_out"], 8, "{j}");
}
