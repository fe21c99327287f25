//! QoS rewrites, MAC rewrites, the reply direction and ARP/ND answers, end to end through
//! `Worker::process`, checked by two independent oracles.
//!
//! Input frames are crafted by scapy. Each goes through a fresh worker over a pipeline
//! whose catch-all rule applies the QoS attributes under test (or a shipped pipeline for
//! the service, ARP and ND cases). Every forwarded frame is written to a pcap and then
//! - re-dissected by scapy: the header stack (tags with TPID/VID/PCP/DEI, MPLS entries
//!   with label/TC/BOS/TTL, DSCP/ECN, MACs) is rendered and compared with the expected
//!   stack written by hand below; scapy recomputes the IPv4/TCP/UDP/ICMP(v6) checksums and
//!   they must equal the ones in our output; the L4 payload and IP addresses must be the
//!   input's, unchanged;
//! - dissected by tshark: the same stack (without TPIDs, which tshark only names as
//!   `vlan`/`ieee8021ad`) is rebuilt from its fields and compared, and every checksum
//!   tshark verifies must be Good.
//!
//! Failures (nothing to pop) must be counted drops `rewrite_failed`, never a panic.

mod common;

use flowgate::action::{FrameBuf, PacketBuf};
use flowgate::config::Pipeline;
use flowgate::pipeline::meta::DropReason;
use flowgate::pipeline::{Kind, Tables, Worker};
use flowgate::port::pcap::{LinkType, PcapWriter};
use std::path::Path;
use std::sync::Arc;

const SYS: &str = "02:00:00:00:00:01";
const GW: &str = "02:00:00:00:00:fe";
const CLIENT: &str = "02:00:00:00:aa:01";

/// Python prelude shared by the crafting and the checking scripts.
const PRELUDE: &str = r#"
import sys, json
from scapy.all import *
from scapy.contrib.mpls import MPLS
conf.verb = 0
for l in (Dot1Q, Dot1AD):
    bind_layers(l, MPLS, type=0x8847)
CL = "02:00:00:00:aa:01"
SYSMAC = "02:00:00:00:00:01"
def E(): return Ether(src=CL, dst=SYSMAC)
def U4(tos=0x01, **kw): return IP(src="198.51.100.7", dst="203.0.113.99", tos=tos, **kw)/UDP(sport=4000, dport=5000)/Raw(b"payload-udp-4")
def T6(tc=0x03): return IPv6(src="2001:db8::7", dst="2001:db8::99", tc=tc)/TCP(sport=4000, dport=80, flags="S", seq=12345)/Raw(b"payload-tcp-6")
def ck_zero(tos_for_zero):
    # The IP ID that makes the header checksum 0x0000 when the TOS is `tos_for_zero`:
    # with ID 0 the checksum is ~S, and ID = ~S brings the sum to 0xffff.
    i = IP(bytes(U4(tos=tos_for_zero, id=0))).chksum
    if IP(bytes(U4(tos=tos_for_zero, id=i))).chksum != 0:
        raise Exception("no zero checksum")
    return i
def NS(tgt, vlan=None):
    ma = in6_getnsma(inet_pton(socket.AF_INET6, tgt))
    e = Ether(src=CL, dst=in6_getnsmac(ma))
    if vlan is not None:
        e = e/Dot1Q(vlan=vlan)
    return e/IPv6(src="2001:db8:100::99", dst=inet_ntop(socket.AF_INET6, ma), hlim=255)/ICMPv6ND_NS(tgt=tgt)/ICMPv6NDOptSrcLLAddr(lladdr=CL)
def ARPQ(tgt, vlan=None):
    e = Ether(src=CL, dst="ff:ff:ff:ff:ff:ff")
    if vlan is not None:
        e = e/Dot1Q(vlan=vlan, prio=3)
    return e/ARP(op=1, hwsrc=CL, psrc="203.0.113.99", pdst=tgt)
"#;

/// Crafts each scapy expression (with [`PRELUDE`]); returns the frames.
fn craft(exprs: &[&str]) -> Vec<Vec<u8>> {
    common::craft(PRELUDE, exprs)
}

/// scapy's view of each output frame (JSON per line): the rendered stack, the layers
/// whose stored checksum differs from scapy's recomputation, and whether the L4 payload
/// and addresses equal the input's.
const CHECK: &str = r#"
# Dissection only (binding 0x9100 before crafting would make it scapy's default TPID).
bind_layers(Ether, Dot1Q, type=0x9100)
bind_layers(Dot1Q, Dot1Q, type=0x9100)
ins = rdpcap(sys.argv[1]); outs = rdpcap(sys.argv[2])
def render(p):
    parts = []; prev = None; l = p
    while l is not None and not isinstance(l, NoPayload):
        if isinstance(l, Ether):
            parts.append("eth(%s,%s)" % (l.dst, l.src))
        elif isinstance(l, (Dot1Q, Dot1AD)):
            parts.append("vlan(%04x,%d,%d,%d)" % (prev.type, l.vlan, l.prio, l.id))
        elif isinstance(l, MPLS):
            parts.append("mpls(%d,%d,%d,%d)" % (l.label, l.cos, l.s, l.ttl))
        elif isinstance(l, IP):
            parts.append("ip4(%d,%d)" % (l.tos >> 2, l.tos & 3))
        elif isinstance(l, IPv6):
            parts.append("ip6(%d,%d)" % (l.tc >> 2, l.tc & 3))
        elif isinstance(l, ARP):
            parts.append("arp(%d,%s,%s,%s,%s)" % (l.op, l.hwsrc, l.psrc, l.hwdst, l.pdst)); break
        elif isinstance(l, ICMPv6ND_NA):
            o = l.getlayer(ICMPv6NDOptDstLLAddr)
            ip6 = p[IPv6]
            parts.append("na(%s,%s,%d,%d,%d,%d,%s,%s)" % (ip6.src, ip6.dst, ip6.hlim, l.R, l.S, l.O, l.tgt, o.lladdr if o else "-")); break
        elif isinstance(l, (TCP, UDP)):
            parts.append(l.name.lower()); break
        else:
            parts.append("?" + l.name); break
        prev = l; l = l.payload
    return " ".join(parts)
def bad_cks(p):
    bad = []
    for cls, f in ((IP, "chksum"), (TCP, "chksum"), (UDP, "chksum"), (ICMP, "chksum"), (ICMPv6ND_NA, "cksum")):
        if cls in p:
            stored = getattr(p[cls], f)
            q = p.copy(); delattr(q[cls], f)
            again = getattr(Ether(bytes(q))[cls], f)
            if stored != again:
                bad.append("%s stored %04x scapy %04x" % (cls.__name__, stored, again))
    return bad
def inner_ip(p):
    for cls in (IP, IPv6):
        if cls in p: return p[cls]
    return None
for i, o in zip(ins, outs):
    a, b = inner_ip(i), inner_ip(o)
    same = True
    if a is not None and b is not None and ARP not in i and ICMPv6ND_NS not in i:
        same = bytes(a.payload) == bytes(b.payload) and a.src == b.src and a.dst == b.dst
        if isinstance(a, IP):
            same = same and (a.ttl, a.id, a.len, a.frag, a.flags, a.options) == (b.ttl, b.id, b.len, b.frag, b.flags, b.options)
        else:
            same = same and (a.hlim, a.fl, a.plen) == (b.hlim, b.fl, b.plen)
    print(json.dumps({"stack": render(o), "bad": bad_cks(o), "same": same}))
"#;

#[derive(serde::Deserialize)]
struct ScapyView {
    stack: String,
    bad: Vec<String>,
    same: bool,
}

fn scapy_views(inp: &Path, out: &Path) -> Vec<ScapyView> {
    let mut code = String::from(PRELUDE);
    code.push_str(CHECK);
    let o = std::process::Command::new(common::SCAPY_PY)
        .arg("-c")
        .arg(&code)
        .arg(inp)
        .arg(out)
        .output()
        .expect("run python");
    assert!(
        o.status.success(),
        "check failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

const TSHARK_FIELDS: &[&str] = &[
    "frame.protocols",
    "eth.dst",
    "eth.src",
    "eth.type",
    "ieee8021ad.id",
    "ieee8021ad.priority",
    "ieee8021ad.dei",
    "vlan.id",
    "vlan.priority",
    "vlan.dei",
    "mpls.label",
    "mpls.exp",
    "mpls.bottom",
    "mpls.ttl",
    "ip.dsfield.dscp",
    "ip.dsfield.ecn",
    "ipv6.tclass.dscp",
    "ipv6.tclass.ecn",
    "arp.opcode",
    "arp.src.hw_mac",
    "arp.src.proto_ipv4",
    "arp.dst.hw_mac",
    "arp.dst.proto_ipv4",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.hlim",
    "icmpv6.nd.na.flag.r",
    "icmpv6.nd.na.flag.s",
    "icmpv6.nd.na.flag.o",
    "icmpv6.nd.na.target_address",
    "icmpv6.opt.linkaddr",
];

/// tshark's view of each frame: (rendered stack, eth.type, checksum statuses).
fn tshark_views(out: &Path) -> Vec<(String, String)> {
    let mut args: Vec<&str> = vec!["-T", "fields", "-E", "separator=;"];
    for f in TSHARK_FIELDS {
        args.push("-e");
        args.push(f);
    }
    common::tshark(out, &args)
        .into_iter()
        .map(|line| {
            let f: Vec<&str> = line.split(';').collect();
            let col = |name: &str| -> Vec<String> {
                let i = TSHARK_FIELDS.iter().position(|x| *x == name).unwrap();
                f.get(i)
                    .map(|v| v.split(',').map(str::to_string).collect())
                    .unwrap_or_default()
            };
            let mut n_ad = 0;
            let mut n_q = 0;
            let mut n_mpls = 0;
            let mut parts = vec![format!("eth({},{})", col("eth.dst")[0], col("eth.src")[0])];
            let flag = |v: &str| if v == "1" || v == "True" { "1" } else { "0" }.to_string();
            for proto in f[0].split(':') {
                match proto {
                    "ieee8021ad" => {
                        parts.push(format!(
                            "tag({},{},{})",
                            col("ieee8021ad.id")[n_ad],
                            col("ieee8021ad.priority")[n_ad],
                            col("ieee8021ad.dei")[n_ad]
                        ));
                        n_ad += 1;
                    }
                    "vlan" => {
                        parts.push(format!(
                            "tag({},{},{})",
                            col("vlan.id")[n_q],
                            col("vlan.priority")[n_q],
                            col("vlan.dei")[n_q]
                        ));
                        n_q += 1;
                    }
                    "mpls" => {
                        // tshark shows a whole label stack as one `mpls` layer.
                        while n_mpls < col("mpls.label").len() {
                            parts.push(format!(
                                "mpls({},{},{},{})",
                                col("mpls.label")[n_mpls],
                                col("mpls.exp")[n_mpls],
                                col("mpls.bottom")[n_mpls],
                                col("mpls.ttl")[n_mpls]
                            ));
                            n_mpls += 1;
                        }
                    }
                    "ip" => parts.push(format!(
                        "ip4({},{})",
                        col("ip.dsfield.dscp")[0],
                        col("ip.dsfield.ecn")[0]
                    )),
                    "ipv6" if !f[0].contains("icmpv6") => parts.push(format!(
                        "ip6({},{})",
                        col("ipv6.tclass.dscp")[0],
                        col("ipv6.tclass.ecn")[0]
                    )),
                    "ipv6" => {
                        parts.push(format!(
                            "ip6({},{})",
                            col("ipv6.tclass.dscp")[0],
                            col("ipv6.tclass.ecn")[0]
                        ));
                        let r = col("icmpv6.nd.na.flag.r");
                        let s = col("icmpv6.nd.na.flag.s");
                        let o = col("icmpv6.nd.na.flag.o");
                        parts.push(format!(
                            "na({},{},{},{},{},{},{},{})",
                            col("ipv6.src")[0],
                            col("ipv6.dst")[0],
                            col("ipv6.hlim")[0],
                            flag(&r[0]),
                            flag(&s[0]),
                            flag(&o[0]),
                            col("icmpv6.nd.na.target_address")[0],
                            col("icmpv6.opt.linkaddr")[0]
                        ));
                        break;
                    }
                    "arp" => {
                        parts.push(format!(
                            "arp({},{},{},{},{})",
                            col("arp.opcode")[0],
                            col("arp.src.hw_mac")[0],
                            col("arp.src.proto_ipv4")[0],
                            col("arp.dst.hw_mac")[0],
                            col("arp.dst.proto_ipv4")[0]
                        ));
                        break;
                    }
                    "tcp" | "udp" => {
                        parts.push(proto.to_string());
                        break;
                    }
                    _ => {}
                }
            }
            (parts.join(" "), col("eth.type")[0].clone())
        })
        .collect()
}

/// The expected stack as tshark renders it: TPIDs dropped (tshark names 0x8100 and
/// 0x9100 both `vlan`), plus the expected Ethernet type.
fn for_tshark(expected: &str) -> (String, String) {
    let mut eth_type = None;
    let parts: Vec<String> = expected
        .split(' ')
        .map(|p| {
            if let Some(rest) = p.strip_prefix("vlan(") {
                let (tpid, rest) = rest.split_once(',').unwrap();
                eth_type.get_or_insert(format!("0x{tpid}"));
                format!("tag({rest}")
            } else {
                let t = if p.starts_with("mpls(") {
                    Some("0x8847")
                } else if p.starts_with("ip4(") {
                    Some("0x0800")
                } else if p.starts_with("ip6(") {
                    Some("0x86dd")
                } else if p.starts_with("arp(") {
                    Some("0x0806")
                } else {
                    None
                };
                if let Some(t) = t {
                    eth_type.get_or_insert(t.to_string());
                }
                p.to_string()
            }
        })
        .collect();
    (parts.join(" "), eth_type.unwrap_or_default())
}

/// One frame through a pipeline.
struct Case {
    name: &'static str,
    /// Inline QoS attributes for the catch-all rule.
    qos: &'static str,
    /// scapy expression of the input frame.
    frame: &'static str,
    /// Expected stack after the Ethernet header, or `None` for a `rewrite_failed` drop.
    expect: Option<&'static str>,
}

const fn case(
    name: &'static str,
    qos: &'static str,
    frame: &'static str,
    expect: &'static str,
) -> Case {
    Case {
        name,
        qos,
        frame,
        expect: Some(expect),
    }
}

const fn fails(name: &'static str, qos: &'static str, frame: &'static str) -> Case {
    Case {
        name,
        qos,
        frame,
        expect: None,
    }
}

const QINQ: &str = "E()/Dot1AD(vlan=100,prio=1)/Dot1Q(vlan=200,prio=2)/U4()";

fn cases() -> Vec<Case> {
    vec![
        // DSCP on IPv4 by name and number; ECN (tos & 3 = 1) is kept.
        case("dscp ef", "{ dscp: ef }", "E()/U4()", "ip4(46,1) udp"),
        case("dscp af41", "{ dscp: af41 }", "E()/U4()", "ip4(34,1) udp"),
        case("dscp cs5", "{ dscp: cs5 }", "E()/U4()", "ip4(40,1) udp"),
        case(
            "dscp number",
            "{ dscp: 13 }",
            "E()/U4(tos=0x02)",
            "ip4(13,2) udp",
        ),
        case(
            "dscp to zero",
            "{ dscp: be }",
            "E()/U4(tos=0xbb)",
            "ip4(0,3) udp",
        ),
        case(
            "dscp with IPv4 options",
            "{ dscp: ef }",
            "E()/IP(src='198.51.100.7', dst='203.0.113.99', tos=1, options=[IPOption_RR(routers=['192.0.2.9','192.0.2.10']), IPOption_Router_Alert()])/UDP(sport=1,dport=2)/Raw(b'opt')",
            "ip4(46,1) udp",
        ),
        case(
            "dscp, input checksum 0x0000",
            "{ dscp: ef }",
            "E()/U4(id=ck_zero(1))",
            "ip4(46,1) udp",
        ),
        case(
            "dscp, input checksum 0xffff (the other zero)",
            "{ dscp: ef }",
            "E()/U4(id=ck_zero(1), chksum=0xffff)",
            "ip4(46,1) udp",
        ),
        case(
            "dscp, output checksum 0x0000",
            "{ dscp: ef }",
            "E()/U4(id=ck_zero((46<<2)|1))",
            "ip4(46,1) udp",
        ),
        case(
            "dscp behind tags and labels",
            "{ dscp: af11 }",
            "E()/Dot1Q(vlan=5)/MPLS(label=9,s=1,ttl=64)/U4()",
            "vlan(8100,5,0,0) mpls(9,0,1,64) ip4(10,1) udp",
        ),
        // DSCP on IPv6: traffic class spans two bytes; ECN kept.
        case("dscp ef v6", "{ dscp: ef }", "E()/T6()", "ip6(46,3) tcp"),
        case(
            "dscp af41 v6",
            "{ dscp: af41 }",
            "E()/T6(tc=0x01)",
            "ip6(34,1) tcp",
        ),
        case(
            "dscp 63 v6",
            "{ dscp: 63 }",
            "E()/T6(tc=0x02)",
            "ip6(63,2) tcp",
        ),
        case(
            "dscp 0 v6",
            "{ dscp: 0 }",
            "E()/T6(tc=0xff)",
            "ip6(0,3) tcp",
        ),
        // PCP: outermost tag only; untagged frames get a priority tag (VID 0).
        case(
            "pcp tagged",
            "{ pcp: 5 }",
            "E()/Dot1Q(vlan=10,prio=1,id=1)/U4()",
            "vlan(8100,10,5,1) ip4(0,1) udp",
        ),
        case(
            "pcp QinQ outer",
            "{ pcp: 6 }",
            QINQ,
            "vlan(88a8,100,6,0) vlan(8100,200,2,0) ip4(0,1) udp",
        ),
        case(
            "pcp untagged",
            "{ pcp: 5 }",
            "E()/U4()",
            "vlan(8100,0,5,0) ip4(0,1) udp",
        ),
        case(
            "pcp untagged v6",
            "{ pcp: 7 }",
            "E()/T6()",
            "vlan(8100,0,7,0) ip6(0,3) tcp",
        ),
        case(
            "pcp 0 tagged",
            "{ pcp: 0 }",
            "E()/Dot1Q(vlan=4095,prio=7)/U4()",
            "vlan(8100,4095,0,0) ip4(0,1) udp",
        ),
        // push_vlan with each TPID, onto untagged and tagged frames.
        case(
            "push 8100 untagged",
            "{ push_vlan: { vid: 100, pcp: 3 } }",
            "E()/U4()",
            "vlan(8100,100,3,0) ip4(0,1) udp",
        ),
        case(
            "push 8100 tagged",
            "{ push_vlan: { vid: 100, pcp: 3, tpid: 0x8100 } }",
            "E()/Dot1Q(vlan=10,prio=2)/U4()",
            "vlan(8100,100,3,0) vlan(8100,10,2,0) ip4(0,1) udp",
        ),
        case(
            "push 88a8 untagged",
            "{ push_vlan: { vid: 4094, tpid: \"0x88a8\" } }",
            "E()/T6()",
            "vlan(88a8,4094,0,0) ip6(0,3) tcp",
        ),
        case(
            "push 88a8 tagged",
            "{ push_vlan: { vid: 300, pcp: 7, tpid: dot1ad } }",
            "E()/Dot1Q(vlan=10,prio=2,id=1)/U4()",
            "vlan(88a8,300,7,0) vlan(8100,10,2,1) ip4(0,1) udp",
        ),
        case(
            "push 9100 untagged",
            "{ push_vlan: { vid: 1, pcp: 1, tpid: 0x9100 } }",
            "E()/U4()",
            "vlan(9100,1,1,0) ip4(0,1) udp",
        ),
        case(
            "push 9100 onto QinQ",
            "{ push_vlan: { vid: 2, tpid: \"0x9100\" } }",
            QINQ,
            "vlan(9100,2,0,0) vlan(88a8,100,1,0) vlan(8100,200,2,0) ip4(0,1) udp",
        ),
        // pop_vlan and set_vlan.
        case(
            "pop single",
            "{ pop_vlan: true }",
            "E()/Dot1Q(vlan=10,prio=2)/U4()",
            "ip4(0,1) udp",
        ),
        case(
            "pop single v6",
            "{ pop_vlan: true }",
            "E()/Dot1Q(vlan=10)/T6()",
            "ip6(0,3) tcp",
        ),
        case(
            "pop outer of QinQ",
            "{ pop_vlan: true }",
            QINQ,
            "vlan(8100,200,2,0) ip4(0,1) udp",
        ),
        case(
            "set_vlan keeps PCP and DEI",
            "{ set_vlan: { vid: 20 } }",
            "E()/Dot1Q(vlan=10,prio=5,id=1)/U4()",
            "vlan(8100,20,5,1) ip4(0,1) udp",
        ),
        case(
            "set_vlan outer of QinQ",
            "{ set_vlan: { vid: 4095 } }",
            QINQ,
            "vlan(88a8,4095,1,0) vlan(8100,200,2,0) ip4(0,1) udp",
        ),
        // push_mpls.
        case(
            "push_mpls untagged v4",
            "{ push_mpls: { label: 1000, tc: 1, ttl: 64 } }",
            "E()/U4()",
            "mpls(1000,1,1,64) ip4(0,1) udp",
        ),
        case(
            "push_mpls untagged v6",
            "{ push_mpls: { label: 1048575, tc: 7, ttl: 255 } }",
            "E()/T6()",
            "mpls(1048575,7,1,255) ip6(0,3) tcp",
        ),
        case(
            "push_mpls defaults",
            "{ push_mpls: { label: 16 } }",
            "E()/U4()",
            "mpls(16,0,1,64) ip4(0,1) udp",
        ),
        case(
            "push_mpls onto a stack",
            "{ push_mpls: { label: 2000, tc: 5, ttl: 33 } }",
            "E()/MPLS(label=16,cos=2,s=1,ttl=9)/U4()",
            "mpls(2000,5,0,33) mpls(16,2,1,9) ip4(0,1) udp",
        ),
        case(
            "push_mpls behind a tag",
            "{ push_mpls: { label: 1000, tc: 1, ttl: 64 } }",
            "E()/Dot1Q(vlan=10,prio=3)/U4()",
            "vlan(8100,10,3,0) mpls(1000,1,1,64) ip4(0,1) udp",
        ),
        case(
            "push_mpls behind QinQ onto a stack",
            "{ push_mpls: { label: 3, ttl: 1 } }",
            "E()/Dot1AD(vlan=100,prio=1)/Dot1Q(vlan=200,prio=2)/MPLS(label=16,s=1,ttl=9)/T6()",
            "vlan(88a8,100,1,0) vlan(8100,200,2,0) mpls(3,0,0,1) mpls(16,0,1,9) ip6(0,3) tcp",
        ),
        // pop_mpls and swap_mpls.
        case(
            "pop_mpls bottom v4",
            "{ pop_mpls: true }",
            "E()/MPLS(label=100,s=1,ttl=5)/U4()",
            "ip4(0,1) udp",
        ),
        case(
            "pop_mpls bottom v6",
            "{ pop_mpls: true }",
            "E()/MPLS(label=100,s=1,ttl=5)/T6()",
            "ip6(0,3) tcp",
        ),
        case(
            "pop_mpls of two",
            "{ pop_mpls: true }",
            "E()/MPLS(label=100,s=0,ttl=5)/MPLS(label=200,cos=3,s=1,ttl=6)/U4()",
            "mpls(200,3,1,6) ip4(0,1) udp",
        ),
        case(
            "pop_mpls behind a tag",
            "{ pop_mpls: true }",
            "E()/Dot1Q(vlan=10)/MPLS(label=100,s=1)/U4()",
            "vlan(8100,10,0,0) ip4(0,1) udp",
        ),
        case(
            "swap_mpls",
            "{ swap_mpls: { label: 999 } }",
            "E()/MPLS(label=100,cos=3,s=1,ttl=7)/U4()",
            "mpls(999,3,1,7) ip4(0,1) udp",
        ),
        case(
            "swap_mpls outer of two",
            "{ swap_mpls: { label: 1048575 } }",
            "E()/MPLS(label=100,cos=1,s=0,ttl=7)/MPLS(label=200,s=1,ttl=8)/T6()",
            "mpls(1048575,1,0,7) mpls(200,0,1,8) ip6(0,3) tcp",
        ),
        // Combinations, listed in reverse of the documented order to show the order is fixed.
        case(
            "all eight in order",
            "{ dscp: ef, push_mpls: { label: 300, tc: 2, ttl: 10 }, pcp: 6, push_vlan: { vid: 30, pcp: 1, tpid: 0x88a8 }, set_vlan: { vid: 20 }, pop_vlan: true, swap_mpls: { label: 77 }, pop_mpls: true }",
            "E()/Dot1AD(vlan=100,prio=1)/Dot1Q(vlan=200,prio=2)/MPLS(label=16,s=0,ttl=5)/MPLS(label=17,cos=4,s=1,ttl=6)/U4()",
            "vlan(88a8,30,6,0) vlan(8100,20,2,0) mpls(300,2,0,10) mpls(77,4,1,6) ip4(46,1) udp",
        ),
        case(
            "pop last label then push",
            "{ push_mpls: { label: 200 }, pop_mpls: true }",
            "E()/MPLS(label=100,s=1)/U4()",
            "mpls(200,0,1,64) ip4(0,1) udp",
        ),
        case(
            "pop tag then pcp tags again",
            "{ pcp: 4, pop_vlan: true }",
            "E()/Dot1Q(vlan=10,prio=1)/U4()",
            "vlan(8100,0,4,0) ip4(0,1) udp",
        ),
        case(
            "push tag then pcp marks the new tag",
            "{ pcp: 2, push_vlan: { vid: 7, pcp: 6 } }",
            "E()/Dot1Q(vlan=10,prio=1)/T6()",
            "vlan(8100,7,2,0) vlan(8100,10,1,0) ip6(0,3) tcp",
        ),
        case(
            "the voice class",
            "{ dscp: ef, push_vlan: { vid: 100, pcp: 5 } }",
            "E()/U4()",
            "vlan(8100,100,5,0) ip4(46,1) udp",
        ),
        // Failures: nothing to pop or set.
        fails("pop_vlan untagged", "{ pop_vlan: true }", "E()/U4()"),
        fails("set_vlan untagged", "{ set_vlan: { vid: 3 } }", "E()/T6()"),
        fails("pop_mpls unlabelled", "{ pop_mpls: true }", "E()/U4()"),
        fails(
            "swap_mpls unlabelled",
            "{ swap_mpls: { label: 3 } }",
            "E()/Dot1Q(vlan=1)/U4()",
        ),
        fails(
            "pop_vlan twice needed",
            "{ pop_vlan: true, set_vlan: { vid: 5 } }",
            "E()/Dot1Q(vlan=10)/U4()",
        ),
        fails(
            "pop_mpls over a pseudowire",
            "{ pop_mpls: true }",
            "E()/MPLS(label=100,s=1)/Raw(b'\\x00\\x00\\x00\\x00' + bytes(Ether()/IP()/UDP()))",
        ),
    ]
}

fn rule_pipeline(qos: &str) -> Pipeline {
    let yaml = format!(
        "system: {{ mac: \"{SYS}\", addresses: [192.0.2.1], gateway: \"{GW}\" }}\n\
         flows:\n  - name: all\n    match: {{}}\n    to: gateway\n    qos: {qos}\ndefault: drop\n"
    );
    Pipeline::from_str(&yaml, Path::new("case.yaml")).unwrap_or_else(|e| panic!("{qos}: {e}"))
}

/// Writes inputs and outputs, runs both oracles, compares with `expected` (full stacks,
/// Ethernet included).
fn verify(names: &[String], inputs: &[Vec<u8>], outputs: &[Vec<u8>], expected: &[String]) {
    let tmp = tempfile::tempdir().expect("tmp");
    let (ip, op) = (tmp.path().join("in.pcap"), tmp.path().join("out.pcap"));
    for (p, frames) in [(&ip, inputs), (&op, outputs)] {
        let mut w = PcapWriter::create(p, LinkType::Ethernet).expect("create");
        for (i, f) in frames.iter().enumerate() {
            w.write(i as u64 * 1000, f).expect("write");
        }
        w.finish().expect("finish");
    }
    let sv = scapy_views(&ip, &op);
    let tv = tshark_views(&op);
    let ck = common::checksum_status(&op);
    assert_eq!(sv.len(), names.len());
    assert_eq!(tv.len(), names.len());
    let mut errors = Vec::new();
    for i in 0..names.len() {
        let n = &names[i];
        if sv[i].stack != expected[i] {
            errors.push(format!(
                "{n}: scapy reads {:?}, expected {:?}",
                sv[i].stack, expected[i]
            ));
        }
        if !sv[i].bad.is_empty() {
            errors.push(format!(
                "{n}: scapy recomputes other checksums: {:?}",
                sv[i].bad
            ));
        }
        if !sv[i].same {
            errors.push(format!("{n}: IP addresses/fields or L4 payload changed"));
        }
        let (want, want_type) = for_tshark(&expected[i]);
        if tv[i].0 != want {
            errors.push(format!(
                "{n}: tshark reads {:?}, expected {:?}",
                tv[i].0, want
            ));
        }
        if tv[i].1 != want_type {
            errors.push(format!(
                "{n}: tshark eth.type {:?}, expected {want_type:?}",
                tv[i].1
            ));
        }
        for (k, st) in ck[i].iter().enumerate() {
            if st.split(',').any(|s| !s.is_empty() && s != "1") {
                errors.push(format!(
                    "{n}: tshark checksum status {k} is {st:?} (want all Good)"
                ));
            }
        }
    }
    assert!(
        errors.is_empty(),
        "{} problems:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

#[test]
fn every_qos_attribute_and_edge_case() {
    if !common::have_oracles() {
        return;
    }
    let cases = cases();
    let frames = craft(&cases.iter().map(|c| c.frame).collect::<Vec<_>>());
    let (mut names, mut ins, mut outs, mut want) = (vec![], vec![], vec![], vec![]);
    let mut buf = FrameBuf::new(4096);
    for (c, f) in cases.iter().zip(&frames) {
        let p = rule_pipeline(c.qos);
        let mut w = Worker::new(Arc::new(Tables::build(p, 1)));
        assert!(buf.load(f));
        let o = w.process(&mut buf, 0, 1);
        let s = &w.stats;
        assert_eq!(s.packets_in, 1, "{}", c.name);
        assert_eq!(s.packets_in, s.packets_out + s.dropped(), "{}", c.name);
        match c.expect {
            None => {
                assert_eq!(o.drop, Some(DropReason::RewriteFailed), "{}: {o:?}", c.name);
                assert!(o.route.is_none(), "{}", c.name);
                assert_eq!(s.drops[DropReason::RewriteFailed as usize], 1, "{}", c.name);
                assert_eq!(s.packets_out, 0, "{}", c.name);
            }
            Some(e) => {
                assert_eq!(o.drop, None, "{}: {o:?}", c.name);
                let r = o.route.unwrap_or_else(|| panic!("{}: not routed", c.name));
                assert_eq!(r.port, 0);
                names.push(c.name.to_string());
                ins.push(f.clone());
                outs.push(buf.data().to_vec());
                want.push(format!("eth({GW},{SYS}) {e}"));
            }
        }
    }
    verify(&names, &ins, &outs, &want);
}

fn shipped(name: &str) -> Pipeline {
    Pipeline::load(&common::root().join("pipelines").join(name)).expect("shipped pipeline")
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Service traffic through `qos-mpls.yaml` (sip: `qos: voice`, `reply_qos: { dscp: ef,
/// pcp: 5 }`) and `web-farm.yaml` (http: `gold`, no reply QoS; https6: no QoS): the
/// request goes to the chosen server's MAC with the service QoS; the response from that
/// server goes to the gateway with the reply QoS; the source MAC is always the system's.
#[test]
fn services_rewrite_macs_and_apply_reply_qos() {
    if !common::have_oracles() {
        return;
    }
    struct Flow {
        pipeline: &'static str,
        request: &'static str,
        /// Response; its Ethernet source is then set to the chosen server's MAC.
        response: &'static str,
        fwd: &'static str,
        rev: &'static str,
    }
    let flows = [
        Flow {
            pipeline: "qos-mpls.yaml",
            request: "Ether(src='02:00:00:00:00:fe',dst=SYSMAC)/IP(src='198.51.100.7',dst='192.0.2.10',tos=1)/UDP(sport=4000,dport=5060)/Raw(b'INVITE')",
            response: "Ether(src='02:00:00:00:99:99',dst=SYSMAC)/IP(src='192.0.2.10',dst='198.51.100.7',tos=2)/UDP(sport=5060,dport=4000)/Raw(b'SIP/2.0 200 OK')",
            fwd: "vlan(8100,100,5,0) ip4(46,1) udp",
            rev: "vlan(8100,0,5,0) ip4(46,2) udp",
        },
        Flow {
            pipeline: "web-farm.yaml",
            request: "Ether(src='02:00:00:00:00:fe',dst=SYSMAC)/IP(src='198.51.100.8',dst='203.0.113.10')/TCP(sport=40000,dport=8080,flags='S')",
            response: "Ether(src='02:00:00:00:99:99',dst=SYSMAC)/IP(src='203.0.113.10',dst='198.51.100.8')/TCP(sport=8080,dport=40000,flags='SA')",
            fwd: "vlan(8100,0,4,0) ip4(34,0) tcp",
            rev: "ip4(0,0) tcp",
        },
        Flow {
            pipeline: "web-farm.yaml",
            request: "Ether(src='02:00:00:00:00:fe',dst=SYSMAC)/IPv6(src='2001:db8:5::8',dst='2001:db8:100::10',tc=0x88)/TCP(sport=40001,dport=443,flags='S')",
            response: "Ether(src='02:00:00:00:99:99',dst=SYSMAC)/IPv6(src='2001:db8:100::10',dst='2001:db8:5::8',tc=0x89)/TCP(sport=443,dport=40001,flags='SA')",
            fwd: "ip6(34,0) tcp",
            rev: "ip6(34,1) tcp",
        },
    ];
    let (mut names, mut ins, mut outs, mut want) = (vec![], vec![], vec![], vec![]);
    let mut buf = FrameBuf::new(4096);
    // All frames in one scapy run: requests, then responses.
    let exprs: Vec<&str> = flows
        .iter()
        .map(|f| f.request)
        .chain(flows.iter().map(|f| f.response))
        .collect();
    let frames = craft(&exprs);
    for (k, fl) in flows.iter().enumerate() {
        let p = shipped(fl.pipeline);
        let tables = Arc::new(Tables::build(p, 1));
        let mut w = Worker::new(Arc::clone(&tables));
        let req = frames[k].clone();
        assert!(buf.load(&req));
        let o = w.process(&mut buf, 0, 1);
        assert_eq!(o.kind, Kind::NewFlow, "{}: {o:?}", fl.request);
        let r = o.route.expect("request routed");
        let srv = &tables.pipeline.servers[r.server as usize];
        assert_eq!(r.mac, srv.mac);
        let srv_mac = mac_str(srv.mac);
        names.push(format!("{} request", fl.pipeline));
        ins.push(req);
        outs.push(buf.data().to_vec());
        want.push(format!("eth({srv_mac},{SYS}) {}", fl.fwd));

        let mut resp = frames[flows.len() + k].clone();
        resp[6..12].copy_from_slice(&srv.mac);
        assert!(buf.load(&resp));
        let o = w.process(&mut buf, 0, 2);
        assert_eq!(
            o.kind,
            Kind::Flow { reverse: true },
            "{}: {o:?}",
            fl.response
        );
        assert!(o.route.is_some());
        names.push(format!("{} response", fl.pipeline));
        ins.push(resp);
        outs.push(buf.data().to_vec());
        want.push(format!("eth({GW},{SYS}) {}", fl.rev));
        let s = &w.stats;
        assert_eq!((s.packets_in, s.packets_out, s.dropped()), (2, 2, 0));
    }
    verify(&names, &ins, &outs, &want);
}

/// ARP requests and neighbour solicitations through `web-farm.yaml`: answered for a VIP
/// and for a system address (on a tagged frame too), dropped as `not_for_us` otherwise.
#[test]
fn arp_and_nd_answers_through_the_pipeline() {
    if !common::have_oracles() {
        return;
    }
    // (request, expected reply stack after eth, or None for not_for_us)
    let ns = |tgt: &str, vlan: &str| format!("NS('{tgt}', {vlan})");
    let arp = |tgt: &str, vlan: &str| format!("ARPQ('{tgt}', {vlan})");
    let reqs: Vec<(String, Option<String>)> = vec![
        (
            arp("203.0.113.10", "None"),
            Some(format!("arp(2,{SYS},203.0.113.10,{CLIENT},203.0.113.99)")),
        ),
        (
            arp("10.0.0.1", "None"),
            Some(format!("arp(2,{SYS},10.0.0.1,{CLIENT},203.0.113.99)")),
        ),
        (
            arp("203.0.113.1", "7"),
            Some(format!(
                "vlan(8100,7,3,0) arp(2,{SYS},203.0.113.1,{CLIENT},203.0.113.99)"
            )),
        ),
        (arp("203.0.113.77", "None"), None),
        (
            ns("2001:db8:100::10", "None"),
            Some(format!(
                "ip6(0,0) na({t},2001:db8:100::99,255,0,1,1,{t},{SYS})",
                t = "2001:db8:100::10"
            )),
        ),
        (
            ns("2001:db8:100::1", "9"),
            Some(format!(
                "vlan(8100,9,0,0) ip6(0,0) na({t},2001:db8:100::99,255,0,1,1,{t},{SYS})",
                t = "2001:db8:100::1"
            )),
        ),
        (ns("2001:db8:100::77", "None"), None),
    ];
    let exprs: Vec<&str> = reqs.iter().map(|r| r.0.as_str()).collect();
    let frames = craft(&exprs);
    let (mut names, mut ins, mut outs, mut want) = (vec![], vec![], vec![], vec![]);
    let mut buf = FrameBuf::new(4096);
    for ((expr, exp), f) in reqs.iter().zip(&frames) {
        let mut w = Worker::new(Arc::new(Tables::build(shipped("web-farm.yaml"), 1)));
        assert!(buf.load(f));
        let o = w.process(&mut buf, 3, 1);
        let s = &w.stats;
        assert_eq!(s.packets_in, s.packets_out + s.dropped());
        match exp {
            None => {
                assert_eq!(o.drop, Some(DropReason::NotForUs), "{expr}: {o:?}");
                assert_eq!(s.drops[DropReason::NotForUs as usize], 1);
                assert_eq!(s.arp_replies + s.nd_replies, 0);
            }
            Some(e) => {
                assert_eq!(o.kind, Kind::Reply, "{expr}: {o:?}");
                let r = o.route.expect("reply routed");
                assert_eq!(r.port, 3, "reply leaves by the port the request came in on");
                assert_eq!(s.arp_replies + s.nd_replies, 1);
                names.push(expr.clone());
                ins.push(f.clone());
                outs.push(buf.data().to_vec());
                want.push(format!("eth({CLIENT},{SYS}) {e}"));
            }
        }
    }
    verify(&names, &ins, &outs, &want);
}

/// Pattern-rule flows (`tests/data/rewrite-all.yaml`): the creating direction goes to the
/// rule's target with `qos`; the reverse direction goes back to the MAC that created the
/// flow (learned) with `reply_qos`, on the port it came from.
#[test]
fn rule_flows_reply_to_the_learned_mac_with_reply_qos() {
    if !common::have_oracles() {
        return;
    }
    let pairs = [
        (
            "Ether(src=CL,dst=SYSMAC)/IP(src='198.51.100.7',dst='192.0.2.77',tos=3)/TCP(sport=5555,dport=443,flags='S')",
            "Ether(src='02:00:00:00:00:fe',dst=SYSMAC)/IP(src='192.0.2.77',dst='198.51.100.7',tos=1)/TCP(sport=443,dport=5555,flags='SA')/Raw(b'hello')",
            "vlan(8100,42,3,0) ip4(34,3) tcp",
            "ip4(8,1) tcp",
        ),
        (
            "Ether(src=CL,dst=SYSMAC)/Dot1Q(vlan=12,prio=1)/IPv6(src='2001:db8::7',dst='2001:db8::77',tc=2)/UDP(sport=5555,dport=53)/Raw(b'q')",
            "Ether(src='02:00:00:00:00:fe',dst=SYSMAC)/Dot1Q(vlan=12,prio=1)/IPv6(src='2001:db8::77',dst='2001:db8::7',tc=1)/UDP(sport=53,dport=5555)/Raw(b'answer')",
            "vlan(8100,12,6,0) ip6(24,2) udp",
            "vlan(8100,12,1,0) ip6(18,1) udp",
        ),
    ];
    let (mut names, mut ins, mut outs, mut want) = (vec![], vec![], vec![], vec![]);
    let mut buf = FrameBuf::new(4096);
    let p = Pipeline::load(&common::root().join("tests/data/rewrite-all.yaml")).expect("pipeline");
    let mut w = Worker::new(Arc::new(Tables::build(p, 1)));
    for (i, (req, resp, fwd, rev)) in pairs.iter().enumerate() {
        let f = craft(&[req, resp]);
        assert!(buf.load(&f[0]));
        let o = w.process(&mut buf, 2, 1);
        assert_eq!(o.kind, Kind::NewFlow, "{req}: {o:?}");
        names.push(format!("rule {i} request"));
        ins.push(f[0].clone());
        outs.push(buf.data().to_vec());
        want.push(format!("eth({GW},{SYS}) {fwd}"));
        assert!(buf.load(&f[1]));
        let o = w.process(&mut buf, 0, 2);
        assert_eq!(o.kind, Kind::Flow { reverse: true }, "{resp}: {o:?}");
        assert_eq!(
            o.route.map(|r| r.port),
            Some(2),
            "back out of the port the flow came in on"
        );
        names.push(format!("rule {i} response"));
        ins.push(f[1].clone());
        outs.push(buf.data().to_vec());
        want.push(format!("eth({CLIENT},{SYS}) {rev}"));
    }
    let s = &w.stats;
    assert_eq!((s.packets_in, s.packets_out, s.dropped()), (4, 4, 0));
    verify(&names, &ins, &outs, &want);
}
