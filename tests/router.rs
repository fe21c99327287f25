//! `system.mode: router`: every forwarded IP packet leaves with its TTL or hop limit one
//! lower (IPv4 header checksum still good), and one that arrives with 1 or 0 is answered
//! with an ICMP Time Exceeded from the system's address instead of being forwarded,
//! within `system.icmp_rate`; `mode: switch` (the default) leaves TTLs alone. In both
//! modes, pings to the system's own addresses and its VIPs are answered (and what no
//! service takes to them is dropped, not sent back to the gateway), a packet over
//! `system.mtu` is answered with ICMP Fragmentation Needed or Packet Too Big, and a new
//! flow of a `no_server: reject` service with no server left with port unreachable.
//!
//! Frames are built by scapy, run through `flowgate replay` (the CLI a user runs), and
//! read back by tshark, the independent oracle for TTLs, checksums, ICMP types and the
//! quoted packet.

mod common;

fn pipeline(mode: &str) -> String {
    format!(
        r#"system:
  mac: "02:00:00:00:00:01"
  addresses: [203.0.113.1, "2001:db8::1"]
  gateway: "02:00:00:00:00:fe"
  mode: {mode}
  icmp_rate: 10
qos: {{ gold: {{ dscp: af41 }} }}
services:
  - name: web
    vip: 203.0.113.10
    proto: tcp
    ports: [80]
    qos: gold
    servers: [{{ name: s1, mac: "02:00:00:00:01:01" }}]
  - name: web6
    vip: "2001:db8::10"
    proto: tcp
    ports: [80]
    servers: [{{ name: s1, mac: "02:00:00:00:01:01" }}]
default: gateway
"#
    )
}

/// The input: nine frames at t = 1 s (see `expect` below for each), then 30 TCP ACKs with
/// TTL 1 at t = 10 s and 30 more at t = 11 s (the rate limit).
const INPUT: &str = r#"
from scapy.contrib.mpls import MPLS
conf.verb = 0
GW, SYS, S1 = "02:00:00:00:00:fe", "02:00:00:00:00:01", "02:00:00:00:01:01"
C, V, C6, V6 = "198.51.100.7", "203.0.113.10", "2001:db8:1::7", "2001:db8::10"
def E(): return Ether(src=GW, dst=SYS)
# A host beside the servers: what it sends no service takes leaves to the gateway (from
# the gateway itself it would go back where it came from: dropped as reflected).
def H(): return Ether(src="02:00:00:00:00:aa", dst=SYS)
fs = [
  E()/IP(src=C, dst=V, ttl=64, id=1)/TCP(sport=40000, dport=80, flags="S"),
  Ether(src=S1, dst=SYS)/IP(src=V, dst=C, ttl=64, id=2)/TCP(sport=80, dport=40000, flags="SA"),
  E()/IP(src=C, dst=V, ttl=1, id=3)/TCP(sport=40000, dport=80, flags="A"),
  E()/IP(src=C, dst=V, ttl=0, id=4)/TCP(sport=40000, dport=80, flags="A"),
  E()/IP(src=C, dst=V, ttl=1, id=5)/ICMP(type=3, code=3)/IPerror(src=V, dst=C)/UDPerror(sport=53, dport=9),
  E()/IPv6(src=C6, dst=V6, hlim=64)/TCP(sport=40001, dport=80, flags="S"),
  E()/IPv6(src=C6, dst=V6, hlim=1)/TCP(sport=40001, dport=80, flags="A"),
  H()/IP(src=C, dst="192.0.2.99", ttl=2, id=8)/UDP(sport=5000, dport=5001)/Raw(b"ok"),
  H()/MPLS(label=100, s=1, ttl=9)/IP(src=C, dst="192.0.2.99", ttl=1, id=9)/UDP(sport=5000, dport=5001),
]
for p in fs: p.time = 1.0
for t in (10.0, 11.0):
  for i in range(30):
    p = E()/IP(src=C, dst=V, ttl=1, id=100 + i)/TCP(sport=40000, dport=80, flags="A")
    p.time = t
    fs.append(p)
wrpcap(OUT, fs)
"#;

/// The tshark fields [`replay`] reads in the TTL and ping tests: eth.dst, ip.ttl,
/// ipv6.hlim, ip.checksum.status, icmp.type, icmp.checksum.status, icmpv6.type,
/// icmpv6.checksum.status, ip.src, ipv6.src, ip.dsfield.dscp, ip.id (fields that occur
/// twice, outer then quoted, are comma-separated).
const TTL_FIELDS: &[&str] = &[
    "eth.dst",
    "ip.ttl",
    "ipv6.hlim",
    "ip.checksum.status",
    "icmp.type",
    "icmp.checksum.status",
    "icmpv6.type",
    "icmpv6.checksum.status",
    "ip.src",
    "ipv6.src",
    "ip.dsfield.dscp",
    "ip.id",
];

/// Replays the frames the scapy program `input` writes to `OUT` through the pipeline
/// `yaml`; returns tshark's rows of the output (`fields` of each frame) and the stats
/// JSON.
fn replay(yaml: &str, input: &str, fields: &[&str]) -> (Vec<Vec<String>>, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let (p, inp, out) = (
        dir.path().join("router.yaml"),
        dir.path().join("in.pcap"),
        dir.path().join("out.pcap"),
    );
    std::fs::write(&p, yaml).unwrap();
    common::scapy(&format!(
        "from scapy.all import *\nOUT = {:?}\n{input}",
        inp.to_str().unwrap()
    ));
    let j = common::replay_stats(&p, &inp, &out);
    let mut args = vec!["-o", "ip.check_checksum:TRUE", "-T", "fields"];
    for f in fields {
        args.extend(["-e", f]);
    }
    args.extend(["-E", "separator=;"]);
    let rows = common::tshark(&out, &args)
        .into_iter()
        .map(|l| l.split(';').map(str::to_string).collect())
        .collect();
    (rows, j)
}

const GW: &str = "02:00:00:00:00:fe";
const S1: &str = "02:00:00:00:01:01";
/// A host beside the servers (the inputs' `H()`), not the gateway.
const HOST: &str = "02:00:00:00:00:aa";

#[test]
fn router_mode_lowers_ttls_and_answers_expired_packets() {
    if !common::have_oracles() {
        return;
    }
    let (rows, j) = replay(&pipeline("router"), INPUT, TTL_FIELDS);
    let row = |i: usize| rows[i].join(";");
    // eth.dst; ip.ttl; ipv6.hlim; ip ck; icmp type; icmp ck; icmpv6 type; icmpv6 ck;
    // ip.src; ipv6.src; dscp; ip.id (see `TTL_FIELDS`): one output frame per input
    // frame that was not dropped; checksum statuses are tshark's (1: good).
    let expect = [
        // SYN to the VIP: to s1, TTL 63, header checksum good, the service's DSCP.
        format!("{S1};63;;1;;;;;198.51.100.7;;34;0x0001"),
        // The server's SYN-ACK: to the gateway, TTL 63.
        format!("{GW};63;;1;;;;;203.0.113.10;;0;0x0002"),
        // ACK with TTL 1, then 0: answered with Time Exceeded (type 11, checksum good)
        // from the system's address, quoting the packet as it came (TTL 1, id 3; its
        // header checksum good too).
        format!("{GW};64,1;;1,1;11;1;;;203.0.113.1,198.51.100.7;;48,0;0x0000,0x0003"),
        format!("{GW};64,0;;1,1;11;1;;;203.0.113.1,198.51.100.7;;48,0;0x0000,0x0004"),
        // (An ICMP error with TTL 1 is dropped: no error about an error.)
        // IPv6 SYN: hop limit 63.
        format!("{S1};;63;;;;;;;2001:db8:1::7;;"),
        // IPv6 ACK with hop limit 1: ICMPv6 Time Exceeded (type 3) from 2001:db8::1.
        format!("{GW};;64,1;;;;3;1;;2001:db8::1,2001:db8:1::7;;"),
        // Unmatched, to the default gateway: TTL 2 leaves as 1.
        format!("{GW};1;;1;;;;;198.51.100.7;;0;0x0008"),
        // Inside MPLS: forwarded as it is (the label's TTL is the LSR's business).
        format!("{GW};1;;1;;;;;198.51.100.7;;0;0x0009"),
    ];
    for (i, e) in expect.iter().enumerate() {
        assert_eq!(&row(i), e, "output frame {}", i + 1);
    }
    // The rate limit, 10 a second: 10 of each 30 expired ACKs at t = 10 s and 11 s are
    // answered.
    assert_eq!(rows.len(), expect.len() + 20, "{rows:?}");
    for (i, r) in rows.iter().enumerate().skip(expect.len()) {
        assert_eq!(
            (r[4].as_str(), r[5].as_str()),
            ("11", "1"),
            "output frame {}",
            i + 1
        );
    }
    assert_eq!(j["icmp_errors"], 2 + 1 + 20);
    assert_eq!(j["drops"]["ttl_exceeded"], 1 + 20 + 20);
    assert_eq!(
        j["packets_in"].as_u64().unwrap(),
        j["packets_out"].as_u64().unwrap() + 41
    );
}

#[test]
fn switch_mode_keeps_ttls() {
    if !common::have_oracles() {
        return;
    }
    let (rows, j) = replay(&pipeline("switch"), INPUT, TTL_FIELDS);
    assert_eq!(j["icmp_errors"], 0);
    assert_eq!(
        j["drops"].get("ttl_exceeded"),
        None,
        "only reasons that occurred"
    );
    // SYN, SYN-ACK, the two expired ACKs: forwarded with their TTLs as they came.
    let ttls: Vec<&str> = rows[..4].iter().map(|r| r[1].as_str()).collect();
    assert_eq!(ttls, ["64", "64", "1", "0"]);
    let dst: Vec<&str> = rows[..4].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(dst, [S1, GW, S1, S1]);
    // Every one of the 60 expired ACKs of the rate-limit phase goes to the server.
    assert_eq!(
        rows.iter()
            .filter(|r| r[0] == S1
                && r[1] == "1"
                && u32::from_str_radix(r[11].trim_start_matches("0x"), 16)
                    .is_ok_and(|id| id >= 100))
            .count(),
        60
    );
}

/// Pings: to the system's addresses (IPv4 with TTL 1, and IPv6), to a VIP, one with a
/// bad checksum to the system, and one to the system inside MPLS; then what no service
/// takes to the system's addresses: a SYN to a VIP's port no service listens on, a
/// datagram to a system address, an echo reply to a VIP, an IPv6 SYN to a VIP's port; and
/// a ping of the IPv6 VIP.
const PINGS: &str = r#"
from scapy.contrib.mpls import MPLS
conf.verb = 0
def E(): return Ether(src="02:00:00:00:00:fe", dst="02:00:00:00:00:01")
fs = [
  E()/IP(src="198.51.100.7", dst="203.0.113.1", ttl=1, id=1)/ICMP(type=8, id=7, seq=1)/Raw(b"a"*56),
  E()/IPv6(src="2001:db8:1::7", dst="2001:db8::1")/ICMPv6EchoRequest(id=7, seq=2, data=b"b"*56),
  E()/IP(src="198.51.100.7", dst="203.0.113.10", id=3)/ICMP(type=8, id=7, seq=3),
  E()/IP(src="198.51.100.7", dst="203.0.113.1", id=4)/ICMP(type=8, id=7, seq=4, chksum=0x1234),
  Ether(src="02:00:00:00:00:aa", dst="02:00:00:00:00:01")/MPLS(label=100, s=1, ttl=9)/IP(src="198.51.100.7", dst="203.0.113.1", id=5)/ICMP(type=8, id=7, seq=5),
  E()/IP(src="198.51.100.7", dst="203.0.113.10", id=6)/TCP(sport=40000, dport=22, flags="S"),
  E()/IP(src="198.51.100.7", dst="203.0.113.1", id=7)/UDP(sport=40000, dport=53),
  E()/IP(src="198.51.100.7", dst="203.0.113.10", id=8)/ICMP(type=0, id=7, seq=8),
  E()/IPv6(src="2001:db8:1::7", dst="2001:db8::10")/TCP(sport=40000, dport=443, flags="S"),
  E()/IPv6(src="2001:db8:1::7", dst="2001:db8::10")/ICMPv6EchoRequest(id=7, seq=10),
]
wrpcap(OUT, fs)
"#;

#[test]
fn pings_to_the_systems_addresses_are_answered_in_both_modes() {
    if !common::have_oracles() {
        return;
    }
    for mode in ["router", "switch"] {
        let (rows, j) = replay(&pipeline(mode), PINGS, TTL_FIELDS);
        let row = |i: usize| rows[i].join(";");
        assert_eq!(rows.len(), 5, "{mode}: {rows:?}");
        // The echo replies, back to the sender (checksums good, TTL 64, from the
        // address asked, a VIP too: forwarded to the default gateway as before
        // 2026-12-07, a ping of a VIP came back to flowgate, round and round).
        assert_eq!(
            row(0),
            format!("{GW};64;;1;0;1;;;203.0.113.1;;0;0x0001"),
            "{mode}"
        );
        assert_eq!(
            row(1),
            format!("{GW};;64;;;;129;1;;2001:db8::1;;"),
            "{mode}"
        );
        assert_eq!(
            row(2),
            format!("{GW};64;;1;0;1;;;203.0.113.10;;0;0x0003"),
            "{mode}"
        );
        // Inside MPLS: forwarded by its label, untouched.
        assert_eq!(
            row(3),
            format!("{GW};64;;1;8;1;;;198.51.100.7;;0;0x0005"),
            "{mode}"
        );
        assert_eq!(
            row(4),
            format!("{GW};;64;;;;129;1;;2001:db8::10;;"),
            "{mode}"
        );
        assert_eq!(j["echo_replies"], 4, "{mode}");
        assert_eq!(j["drops"]["not_for_us"], 1, "{mode}: the bad checksum");
        // Nothing takes the last four: dropped, not sent back to the gateway.
        assert_eq!(j["drops"]["unserved"], 4, "{mode}");
        assert_eq!(j["packets_in"], 10, "{mode}");
    }
}

/// What no service or rule takes and `default: gateway` would send back where it came
/// from: the gateway's own VRRP advertisement, router advertisement, DHCP broadcast and
/// STP BPDU, and a datagram it routed here; IEEE 802.1 link-local frames (LLDP, STP) of
/// a host beside the servers and of a server; and that host's mDNS multicast, which
/// leaves to the gateway.
const NOT_BACK: &str = r#"
from scapy.layers.vrrp import VRRP
conf.verb = 0
SYS = "02:00:00:00:00:01"
def E(): return Ether(src="02:00:00:00:00:fe", dst=SYS)
def H(dst=SYS): return Ether(src="02:00:00:00:00:aa", dst=dst)
lldp = Raw(b"\x02\x07\x04\x02\x00\x00\x00\x00\xaa\x00\x00")
fs = [
  Ether(src="02:00:00:00:00:fe", dst="01:00:5e:00:00:12")/IP(src="198.51.100.254", dst="224.0.0.18", ttl=255, proto=112)/VRRP(vrid=1, priority=100, addrlist=["198.51.100.1"]),
  Ether(src="02:00:00:00:00:fe", dst="33:33:00:00:00:01")/IPv6(src="fe80::fe", dst="ff02::1", hlim=255)/ICMPv6ND_RA(),
  Ether(src="02:00:00:00:00:fe", dst="ff:ff:ff:ff:ff:ff")/IP(src="0.0.0.0", dst="255.255.255.255")/UDP(sport=68, dport=67)/Raw(b"d"*20),
  Ether(src="02:00:00:00:00:fe", dst="01:80:c2:00:00:00")/LLC()/STP(),
  E()/IP(src="198.51.100.7", dst="192.0.2.99", ttl=9)/UDP(sport=5000, dport=5001),
  Ether(src="02:00:00:00:00:aa", dst="01:80:c2:00:00:0e", type=0x88cc)/lldp,
  H("01:80:c2:00:00:00")/LLC()/STP(),
  Ether(src="02:00:00:00:01:01", dst="01:80:c2:00:00:0e", type=0x88cc)/lldp,
  H("01:00:5e:00:00:fb")/IP(src="10.0.0.50", dst="224.0.0.251", ttl=255)/UDP(sport=5353, dport=5353)/Raw(b"m"),
]
wrpcap(OUT, fs)
"#;

#[test]
fn frames_are_not_sent_back_where_they_came_from_nor_802_1_link_local_ones_on() {
    if !common::have_oracles() {
        return;
    }
    for mode in ["router", "switch"] {
        let (rows, j) = replay(&pipeline(mode), NOT_BACK, &["eth.dst", "ip.dst", "ip.ttl"]);
        let ttl = if mode == "router" { "254" } else { "255" };
        assert_eq!(
            rows,
            [[GW, "224.0.0.251", ttl]],
            "{mode}: only the host's mDNS"
        );
        assert_eq!(j["drops"]["reflected"], 5, "{mode}: {j}");
        assert_eq!(j["drops"]["link_local"], 3, "{mode}: {j}");
        assert_eq!(j["packets_in"], 9, "{mode}: {j}");
    }
}

/// `system.mtu: 1400`, and a flow rule that pushes an MPLS label (4 bytes that count
/// against the MTU, where a VLAN tag does not).
fn mtu_pipeline(mode: &str) -> String {
    format!(
        r#"system:
  mac: "02:00:00:00:00:01"
  addresses: [203.0.113.1, "2001:db8::1"]
  gateway: "02:00:00:00:00:fe"
  mode: {mode}
  mtu: 1400
qos: {{ lsp: {{ push_mpls: {{ label: 1000, tc: 0, ttl: 64 }} }} }}
services:
  - name: web
    vip: 203.0.113.10
    proto: tcp
    ports: [80]
    servers: [{{ name: s1, mac: "02:00:00:00:01:01" }}]
  - name: web6
    vip: "2001:db8::10"
    proto: tcp
    ports: [80]
    servers: [{{ name: s1, mac: "02:00:00:00:01:01" }}]
flows:
  - name: backup
    match: {{ proto: tcp, dst_port: 873 }}
    to: gateway
    qos: lsp
default: gateway
"#
    )
}

/// Packets around the MTU; `L` is each one's IP length (see `expect` in the test).
const AROUND_THE_MTU: &str = r#"
conf.verb = 0
def E(): return Ether(src="02:00:00:00:00:fe", dst="02:00:00:00:00:01")
C, V, C6, V6 = "198.51.100.7", "203.0.113.10", "2001:db8:1::7", "2001:db8::10"
def v4(L, dport=80, flags="A"):
  return IP(src=C, dst=V, flags="DF")/TCP(sport=40000, dport=dport, flags=flags)/Raw(b"x"*(L-40))
def v6(L, dst=V6, flags="A"):
  return IPv6(src=C6, dst=dst)/TCP(sport=40001, dport=80, flags=flags)/Raw(b"y"*(L-60))
fs = [
  E()/v4(40, flags="S"),
  E()/v4(1400),
  E()/v4(1401),
  E()/Dot1Q(vlan=7)/v4(1400),
  E()/v4(1396, dport=873),
  E()/v4(1397, dport=873),
  E()/v6(60, flags="S"),
  E()/v6(1401),
  Ether(src="02:00:00:00:00:aa", dst="02:00:00:00:00:01")/IPv6(src=C6, dst="ff0e::1")/UDP(sport=5000, dport=5001)/Raw(b"z"*1452),
  E()/v6(1400),
]
wrpcap(OUT, fs)
"#;

#[test]
fn packets_over_the_mtu_are_answered_with_fragmentation_needed_or_packet_too_big() {
    if !common::have_oracles() {
        return;
    }
    let fields = [
        "eth.dst",
        "vlan.id",
        "mpls.label",
        "ip.len",
        "ipv6.plen",
        "ip.src",
        "ipv6.src",
        "icmp.type",
        "icmp.code",
        "icmp.mtu",
        "icmp.checksum.status",
        "icmpv6.type",
        "icmpv6.mtu",
        "icmpv6.checksum.status",
    ];
    // eth.dst; vlan; label; ip.len; ipv6.plen; ip.src; ipv6.src; icmp type; code; mtu;
    // checksum status; icmpv6 type; mtu; checksum status. Quoted headers' fields follow
    // the outer ones, comma-separated.
    let expect = [
        // SYN, then an ACK of exactly 1400 bytes: to the server.
        format!("{S1};;;40;;198.51.100.7;;;;;;;;"),
        format!("{S1};;;1400;;198.51.100.7;;;;;;;;"),
        // 1401 bytes with DF: Fragmentation Needed (3/4) from the system, next-hop MTU
        // 1400, quoting 548 bytes of the packet (576 in all), checksums good.
        format!("{GW};;;576,1401;;203.0.113.1,198.51.100.7;;3;4;1400;1;;;"),
        // Tagged, 1400 bytes: the tag does not count.
        format!("{S1};7;;1400;;198.51.100.7;;;;;;;;"),
        // Into the LSP: 1396 bytes and a label fit; 1397 do not, and the MTU named is
        // 1396.
        format!("{GW};;1000;1396;;198.51.100.7;;;;;;;;"),
        format!("{GW};;;576,1397;;203.0.113.1,198.51.100.7;;3;4;1396;1;;;"),
        // IPv6: SYN forwarded; 1401 bytes answered with Packet Too Big (type 2, MTU
        // 1400) from 2001:db8::1, quoting 1232 bytes; so is a multicast packet (RFC
        // 4443 §2.4 (e.3); from the host beside the servers, back to it); 1400 bytes go
        // through.
        format!("{S1};;;;20;;2001:db8:1::7;;;;;;;"),
        format!("{GW};;;;1240,1361;;2001:db8::1,2001:db8:1::7;;;;;2;1400;1"),
        format!("{HOST};;;;1240,1460;;2001:db8::1,2001:db8:1::7;;;;;2;1400;1"),
        format!("{S1};;;;1360;;2001:db8:1::7;;;;;;;"),
    ];
    for mode in ["switch", "router"] {
        let (rows, j) = replay(&mtu_pipeline(mode), AROUND_THE_MTU, &fields);
        let got: Vec<String> = rows.iter().map(|r| r.join(";")).collect();
        assert_eq!(got, expect, "{mode}");
        assert_eq!(j["icmp_errors"], 4, "{mode}");
        assert_eq!(j["drops"], serde_json::json!({}), "{mode}");
    }
}

/// Services whose only server is down: two that reject (IPv4 and IPv6), one that drops.
const NO_SERVER: &str = r#"system:
  mac: "02:00:00:00:00:01"
  addresses: [203.0.113.1, "2001:db8::1"]
  gateway: "02:00:00:00:00:fe"
services:
  - name: closed
    vip: 203.0.113.10
    proto: tcp
    ports: [80]
    no_server: reject
    servers: [{ name: s1, mac: "02:00:00:00:01:01", state: down }]
  - name: closed6
    vip: "2001:db8::10"
    proto: tcp
    ports: [80]
    no_server: reject
    servers: [{ name: s1, mac: "02:00:00:00:01:01", state: down }]
  - name: dark
    vip: 203.0.113.10
    proto: udp
    ports: [53]
    servers: [{ name: s1, mac: "02:00:00:00:01:01", state: down }]
default: gateway
"#;

const TO_NO_SERVER: &str = r#"
conf.verb = 0
def E(): return Ether(src="02:00:00:00:00:fe", dst="02:00:00:00:00:01")
fs = [
  E()/IP(src="198.51.100.7", dst="203.0.113.10")/TCP(sport=40000, dport=80, flags="S"),
  E()/IPv6(src="2001:db8:1::7", dst="2001:db8::10")/TCP(sport=40001, dport=80, flags="S"),
  E()/IP(src="198.51.100.7", dst="203.0.113.10")/UDP(sport=5000, dport=53)/Raw(b"q"),
  E()/Dot1Q(vlan=7)/IP(src="198.51.100.7", dst="203.0.113.10")/TCP(sport=40002, dport=80, flags="S"),
]
wrpcap(OUT, fs)
"#;

#[test]
fn a_service_with_no_server_rejects_new_flows_when_told_to() {
    if !common::have_oracles() {
        return;
    }
    let fields = [
        "eth.dst",
        "vlan.id",
        "ip.src",
        "ipv6.src",
        "icmp.type",
        "icmp.code",
        "icmp.checksum.status",
        "icmpv6.type",
        "icmpv6.code",
        "icmpv6.checksum.status",
        "tcp.dstport",
    ];
    let (rows, j) = replay(NO_SERVER, TO_NO_SERVER, &fields);
    let got: Vec<String> = rows.iter().map(|r| r.join(";")).collect();
    // eth.dst; vlan; ip.src; ipv6.src; icmp type; code; checksum; icmpv6 type; code;
    // checksum; the quoted TCP header's port: port unreachable from the VIP, back to
    // the client (with its tag); the UDP datagram to `dark` (no_server: drop) is dropped.
    assert_eq!(
        got,
        [
            format!("{GW};;203.0.113.10,198.51.100.7;;3;3;1;;;;80"),
            format!("{GW};;;2001:db8::10,2001:db8:1::7;;;;1;4;1;80"),
            format!("{GW};7;203.0.113.10,198.51.100.7;;3;3;1;;;;80"),
        ]
    );
    assert_eq!(j["icmp_errors"], 3);
    assert_eq!(j["drops"]["no_server"], 1, "{j}");
    assert_eq!(j["services"]["closed"]["flows"], 0, "no flow created: {j}");
}

/// IPv4 packets without DF over the MTU (`mtu_pipeline`, 1400): `L` is each one's IP
/// length (see `expect` in the test).
const WITHOUT_DF: &str = r#"
conf.verb = 0
def E(): return Ether(src="02:00:00:00:00:fe", dst="02:00:00:00:00:01")
C, V = "198.51.100.7", "203.0.113.10"
def tcp(L, dport=80, flags="A"):
  return IP(src=C, dst=V, id=7)/TCP(sport=40000, dport=dport, flags=flags)/Raw(b"x"*(L-40))
rr = IP(src=C, dst=V, id=8, options=[IPOption_RR()])/TCP(sport=40000, dport=80, flags="A")
fs = [
  E()/tcp(40, flags="S"),
  E()/tcp(1401),
  E()/Dot1Q(vlan=7)/tcp(1401),
  Ether(src="02:00:00:00:00:aa", dst="02:00:00:00:00:01")/IP(src=C, dst="192.0.2.99", id=9)/UDP(sport=5000, dport=5001)/Raw(b"u"*2972),
  E()/tcp(1500, dport=873),
  E()/rr/Raw(b"o"*(1500-len(rr))),
]
wrpcap(OUT, fs)
"#;

#[test]
fn ipv4_packets_without_df_are_cut_into_fragments() {
    if !common::have_oracles() {
        return;
    }
    let fields = [
        "eth.dst",
        "vlan.id",
        "mpls.label",
        "ip.len",
        "ip.flags.mf",
        "ip.frag_offset",
        "ip.checksum.status",
        "ip.reassembled.length",
    ];
    // eth.dst; vlan; label; ip.len; MF; offset (8-byte units); checksum status; the length
    // tshark reassembled, on the last fragment. Payload per fragment: (1400 - 20) cut
    // to a multiple of 8, 1376; 4 bytes less under the LSP's label: 1376 again.
    let expect = [
        format!("{S1};;;40;0;0;1;"),
        // 1401 bytes: 1396 + 25.
        format!("{S1};;;1396;1;0;1;"),
        format!("{S1};;;25;0;172;1;1381"),
        // Tagged: each fragment keeps the tag.
        format!("{S1};7;;1396;1;0;1;"),
        format!("{S1};7;;25;0;172;1;1381"),
        // 3000 bytes of UDP to the gateway: 1396 + 1396 + 248.
        format!("{GW};;;1396;1;0;1;"),
        format!("{GW};;;1396;1;172;1;"),
        format!("{GW};;;248;0;344;1;2980"),
        // Into the LSP: each fragment under the label, 1396 + 124 (1400 with it).
        format!("{GW};;1000;1396;1;0;1;"),
        format!("{GW};;1000;124;0;172;1;1480"),
        // With Record Route (a 24-byte header): 1400 + 124, see the next test.
        format!("{S1};;;1400;1;0;1;"),
        format!("{S1};;;124;0;172;1;1476"),
    ];
    for mode in ["switch", "router"] {
        let (rows, j) = replay(&mtu_pipeline(mode), WITHOUT_DF, &fields);
        let got: Vec<String> = rows.iter().map(|r| r.join(";")).collect();
        assert_eq!(got, expect, "{mode}");
        assert_eq!(j["fragments_out"], 6, "{mode}");
        assert_eq!(j["drops"].get("mtu_exceeded"), None, "{mode}");
        assert_eq!(j["icmp_errors"], 0, "{mode}");
    }
}

/// IPv4 packets with options, without DF, over the MTU (`mtu_pipeline`, 1400): one with
/// Record Route (not copied into later fragments) and Router Alert (copied), a 28-byte
/// header; and one whose Timestamp option claims more bytes than the header has.
const WITH_OPTIONS: &str = r#"
conf.verb = 0
def E(): return Ether(src="02:00:00:00:00:fe", dst="02:00:00:00:00:01")
C, V = "198.51.100.7", "203.0.113.10"
rr = IP(src=C, dst=V, id=8, options=[IPOption_RR(), IPOption_Router_Alert()])/TCP(sport=40000, dport=80, flags="A")
b = bytearray(bytes(IP(src=C, dst=V, id=10, options=[IPOption_NOP()]*4)/TCP(sport=40001, dport=80, flags="A")/Raw(b"q"*1500)))
b[20:24] = bytes([0x44, 0x09, 0x05, 0x00])
bad = IP(bytes(b))
del bad.chksum
wrpcap(OUT, [E()/rr/Raw(b"o"*(1500-len(rr))), E()/bad])
"#;

#[test]
fn ipv4_packets_with_options_are_cut_with_copied_options_in_every_fragment() {
    if !common::have_oracles() {
        return;
    }
    let fields = [
        "ip.hdr_len",
        "ip.len",
        "ip.flags.mf",
        "ip.frag_offset",
        "ip.checksum.status",
        "ip.opt.type",
        "ip.reassembled.length",
        "tcp.payload",
    ];
    let payload = "6f".repeat(1500 - 48);
    // Header 28 bytes: payload per fragment (1400 - 28) cut to a multiple of 8, 1368;
    // 1472 bytes of payload: 1368 + 104. The first fragment has both options; the
    // second Router Alert (type 148) after three no-operations where Record Route was;
    // (type 0 is the end of the list) tshark reassembles the TCP segment whole. The
    // malformed one is dropped.
    let expect = [
        "28;1396;1;0;1;7,148,0;;".to_string(),
        format!("28;132;0;171;1;1,1,1,148,0;1472;{payload}"),
    ];
    for mode in ["switch", "router"] {
        let (rows, j) = replay(&mtu_pipeline(mode), WITH_OPTIONS, &fields);
        let got: Vec<String> = rows.iter().map(|r| r.join(";")).collect();
        assert_eq!(got, expect, "{mode}");
        assert_eq!(j["fragments_out"], 1, "{mode}");
        assert_eq!(j["drops"]["mtu_exceeded"], 1, "{mode}: malformed options");
    }
}

/// `system.mtu` by port: jumbo frames inside (9000, where the server is), 1500 outside
/// (where the gateway is).
const PER_PORT_MTU: &str = r#"system:
  mac: "02:00:00:00:00:01"
  addresses: [203.0.113.1]
  gateway: { mac: "02:00:00:00:00:fe", port: outside }
  mtu: { outside: 1500, inside: 9000 }
services:
  - name: web
    vip: 203.0.113.10
    proto: tcp
    ports: [80]
    servers: [{ name: s1, mac: "02:00:00:00:01:01", port: inside }]
default: gateway
"#;

const ACROSS_THE_PORTS: &str = r#"
conf.verb = 0
GW, SYS, S1 = "02:00:00:00:00:fe", "02:00:00:00:00:01", "02:00:00:00:01:01"
C, V = "198.51.100.7", "203.0.113.10"
def c2s(L, flags="A", df="DF"):
  return Ether(src=GW, dst=SYS)/IP(src=C, dst=V, flags=df)/TCP(sport=40000, dport=80, flags=flags)/Raw(b"x"*(L-40))
def s2c(L, flags="A", df="DF"):
  return Ether(src=S1, dst=SYS)/IP(src=V, dst=C, flags=df)/TCP(sport=80, dport=40000, flags=flags)/Raw(b"y"*(L-40))
fs = [c2s(40, "S"), s2c(40, "SA"), c2s(4000), c2s(9000), c2s(9001), s2c(1500), s2c(4000), s2c(4000, df="")]
wrpcap(OUT, fs)
"#;

#[test]
fn each_port_has_its_own_mtu() {
    if !common::have_oracles() {
        return;
    }
    let fields = [
        "eth.dst",
        "ip.len",
        "ip.src",
        "ip.flags.mf",
        "ip.frag_offset",
        "icmp.type",
        "icmp.code",
        "icmp.mtu",
    ];
    let (rows, j) = replay(PER_PORT_MTU, ACROSS_THE_PORTS, &fields);
    let got: Vec<String> = rows.iter().map(|r| r.join(";")).collect();
    let c = "198.51.100.7";
    let expect = [
        // The handshake.
        format!("{S1};40;{c};0;0;;;"),
        format!("{GW};40;203.0.113.10;0;0;;;"),
        // To the server, inside: up to 9000 bytes whole; 9001 answered (to the client,
        // from the system) naming 9000.
        format!("{S1};4000;{c};0;0;;;"),
        format!("{S1};9000;{c};0;0;;;"),
        format!("{GW};576,9001;203.0.113.1,{c};0,0;0,0;3;4;9000"),
        // To the client, outside: 1500 bytes whole; 4000 with DF answered (to the
        // server) naming 1500; without DF cut into 1500-byte fragments (offsets in
        // 8-byte units, as tshark's field gives them).
        format!("{GW};1500;203.0.113.10;0;0;;;"),
        format!("{S1};576,4000;203.0.113.1,203.0.113.10;0,0;0,0;3;4;1500"),
        format!("{GW};1500;203.0.113.10;1;0;;;"),
        format!("{GW};1500;203.0.113.10;1;185;;;"),
        format!("{GW};1040;203.0.113.10;0;370;;;"),
    ];
    assert_eq!(got, expect);
    assert_eq!(j["icmp_errors"], 2);
    assert_eq!(j["fragments_out"], 2);
    assert_eq!(j["drops"], serde_json::json!({}));
}
