//! The passive health check (servers' `max_fails` and `fail_timeout`): connections a
//! server leaves unanswered (the client sends its SYN again) or refuses (a reset
//! answering the SYN) take it out of new flows for `fail_timeout`, the connections it
//! never answered move on the client's next SYN, and it comes back when its time is up.
//! Captures are written by scapy and `flowgate replay`'s output is read by tshark (the
//! independent oracles); the capture's clock drives the check as `flowgate run`'s does.

mod common;

use common::{flowgate, have_oracles, replay_stats, scapy, tshark_fields};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MACS: [(&str, &str); 3] = [
    ("s1", "02:00:00:00:01:01"),
    ("s2", "02:00:00:00:01:02"),
    ("s3", "02:00:00:00:01:03"),
];

/// The web service over `servers` (names from s1..s3), each with `extra` in its entry.
fn pipeline(dir: &Path, name: &str, servers: &[&str], extra: &str) -> PathBuf {
    pipeline_of(dir, name, servers, extra, "tcp", 80)
}

/// [`pipeline`] for protocol `proto` and port `port`.
fn pipeline_of(
    dir: &Path,
    name: &str,
    servers: &[&str],
    extra: &str,
    proto: &str,
    port: u16,
) -> PathBuf {
    let list: String = MACS
        .iter()
        .filter(|(n, _)| servers.contains(n))
        .map(|(n, mac)| format!("      - {{ name: {n}, mac: \"{mac}\"{extra} }}\n"))
        .collect();
    let yaml = format!(
        r#"system: {{ mac: "02:00:00:00:00:01", addresses: [203.0.113.1], gateway: "02:00:00:00:00:fe" }}
services:
  - name: web
    vip: 203.0.113.10
    proto: {proto}
    ports: [{port}]
    servers:
{list}"#
    );
    let p = dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    p
}

/// [`pipeline`] `p.yaml` over `servers` (with s3) with `extra` (which starts with
/// `, max_fails`) in each entry, s3 a backup.
fn with_backup_s3(dir: &Path, servers: &[&str], extra: &str) -> PathBuf {
    let p = pipeline(dir, "p.yaml", servers, extra);
    let yaml = std::fs::read_to_string(&p).unwrap();
    let yaml = yaml.replace("01:03\", max_fails", "01:03\", backup: true, max_fails");
    assert!(yaml.contains("backup: true"));
    std::fs::write(&p, yaml).unwrap();
    p
}

/// One frame of the capture: at `t` s, a client's SYN (`"syn"`) or its server's answer
/// (`"synack"` or `"rst"`, from that server's MAC); or a client's UDP datagram to port 53
/// (`"query"`) and its server's answer (`"answer"`, or `"unreach"`: an ICMP port
/// unreachable quoting it) for client `i` (198.51.100.`i + 1`
/// for the first 250, then 198.51.101…; port 40000 + `i`).
type Step = (f64, u32, &'static str, &'static str);

fn capture(dir: &Path, name: &str, steps: &[Step]) -> PathBuf {
    let out = dir.join(name);
    let list: Vec<String> = steps
        .iter()
        .map(|(t, i, what, server)| {
            let mac = MACS.iter().find(|m| m.0 == *server).map_or("", |m| m.1);
            format!("({t}, {i}, '{what}', '{mac}')")
        })
        .collect();
    scapy(&format!(
        r#"
from scapy.all import *
pk = []
for t, i, what, mac in [{}]:
    c = "198.51.%d.%d" % (100 + i // 250, i % 250 + 1)
    q = IP(src=c, dst="203.0.113.10")/UDP(sport=40000 + i, dport=53)/Raw(b"query")
    if what == "syn":
        p = Ether(src="02:00:00:00:00:fe", dst="02:00:00:00:00:01")/IP(src=c, dst="203.0.113.10")/TCP(sport=40000 + i, dport=80, flags="S", seq=1000)
    elif what == "query":
        p = Ether(src="02:00:00:00:00:fe", dst="02:00:00:00:00:01")/q
    elif what == "answer":
        p = Ether(src=mac, dst="02:00:00:00:00:01")/IP(src="203.0.113.10", dst=c)/UDP(sport=53, dport=40000 + i)/Raw(b"answer")
    elif what == "unreach":
        p = Ether(src=mac, dst="02:00:00:00:00:01")/IP(src="203.0.113.10", dst=c)/ICMP(type=3, code=3)/bytes(q)
    else:
        flags = "SA" if what == "synack" else "RA"
        p = Ether(src=mac, dst="02:00:00:00:00:01")/IP(src="203.0.113.10", dst=c)/TCP(sport=80, dport=40000 + i, flags=flags, seq=5000, ack=1001)
    p.time = t
    pk.append(p)
wrpcap("{}", pk)
"#,
        list.join(", "),
        out.display()
    ));
    out
}

/// The SYNs in `out`, in order: (client number, the server they left for).
fn syns(out: &Path) -> Vec<(u32, String)> {
    to_servers(out, "tcp.flags.syn == 1 && tcp.flags.ack == 0")
}

/// The frames of `out` that tshark's display `filter` takes, in order: (client number,
/// the server they left for).
fn to_servers(out: &Path, filter: &str) -> Vec<(u32, String)> {
    let by_mac: BTreeMap<&str, &str> = MACS.iter().map(|&(n, m)| (m, n)).collect();
    tshark_fields(out, filter, &["eth.dst", "ip.src"])
        .into_iter()
        .map(|f| {
            let (mac, src) = (f[0].as_str(), &f[1]);
            let o: Vec<u32> = src.split('.').map(|x| x.parse().unwrap()).collect();
            let i = (o[2] - 100) * 250 + o[3] - 1;
            let server = by_mac.get(mac).unwrap_or_else(|| panic!("to {mac}"));
            (i, server.to_string())
        })
        .collect()
}

/// The servers client `i`'s frames of `sent` (as [`to_servers`] lists them) went to, in
/// order.
fn servers_of(sent: &[(u32, String)], i: u32) -> Vec<&str> {
    sent.iter()
        .filter(|(c, _)| *c == i)
        .map(|(_, s)| s.as_str())
        .collect()
}

/// Where the first SYNs of clients `clients` go (their first choice, by Maglev).
fn placement(dir: &Path, p: &Path, clients: std::ops::Range<u32>) -> BTreeMap<u32, String> {
    let steps: Vec<Step> = clients
        .map(|i| (1.0 + f64::from(i) / 1000.0, i, "syn", ""))
        .collect();
    let cap = capture(dir, "first.pcap", &steps);
    let out = dir.join("first.out.pcap");
    replay_stats(p, &cap, &out);
    syns(&out).into_iter().collect()
}

/// `flowgate replay` (not quiet) of `cap` through `p` into `out`: its stats JSON and
/// what it printed.
fn replay_told(p: &Path, cap: &Path, out: &Path) -> (serde_json::Value, String) {
    let stats = out.with_extension("json");
    let o = flowgate()
        .args(["replay", "--pipeline"])
        .arg(p)
        .arg("--input")
        .arg(cap)
        .arg("--output")
        .arg(out)
        .arg("--stats-json")
        .arg(&stats)
        .output()
        .expect("replay");
    let text =
        String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "replay failed: {text}");
    let j = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    (j, text)
}

/// 30 clients connect at 1 s; s2 and s3 answer theirs, s1 (a dead server) answers
/// none. Its clients send their SYNs again at 2 s (counted: failures) and at 4 s: with
/// `max_fails` those third SYNs go to s2 and s3 (s1 was taken out in between), new
/// clients at 5 s avoid s1, and new clients after `fail_timeout` reach it again.
/// Without `max_fails` every SYN of s1's clients goes to s1.
#[test]
fn unanswered_connections_take_a_server_out_and_move() {
    if !have_oracles() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let watched = pipeline(
        d,
        "watched.yaml",
        &["s1", "s2", "s3"],
        ", max_fails: 3, fail_timeout: 5",
    );
    let plain = pipeline(d, "plain.yaml", &["s1", "s2", "s3"], "");
    let first = placement(d, &watched, 0..30);
    assert_eq!(
        first,
        placement(d, &plain, 0..30),
        "max_fails does not place"
    );
    let dead: Vec<u32> = first
        .iter()
        .filter(|(_, s)| *s == "s1")
        .map(|(i, _)| *i)
        .collect();
    assert!(dead.len() >= 4, "s1's share of 30: {first:?}");

    let mut steps: Vec<Step> = Vec::new();
    for i in 0..30 {
        steps.push((1.0 + f64::from(i) / 1000.0, i, "syn", ""));
    }
    for (&i, s) in &first {
        if s != "s1" {
            steps.push((
                1.2 + f64::from(i) / 1000.0,
                i,
                "synack",
                MACS.iter().find(|m| m.0 == s).unwrap().0,
            ));
        }
    }
    for &i in &dead {
        steps.push((2.0 + f64::from(i) / 1000.0, i, "syn", ""));
    }
    for &i in &dead {
        steps.push((4.0 + f64::from(i) / 1000.0, i, "syn", ""));
    }
    // New clients while s1 is out (its 5 s run from about 4 s), and after.
    for i in 100..130 {
        steps.push((5.0 + f64::from(i - 100) / 1000.0, i, "syn", ""));
    }
    for i in 200..230 {
        steps.push((12.0 + f64::from(i - 200) / 1000.0, i, "syn", ""));
    }
    steps.sort_by(|a, b| a.0.total_cmp(&b.0));
    let cap = capture(d, "dead.pcap", &steps);

    let out = d.join("watched.out.pcap");
    let (j, told) = replay_told(&watched, &cap, &out);
    let sent = syns(&out);
    let times = |i: u32| servers_of(&sent, i);
    for &i in &dead {
        let t = times(i);
        assert_eq!(t.len(), 3, "client {i}: {t:?}");
        assert_eq!(&t[..2], ["s1", "s1"], "client {i}: before s1 was out");
        assert_ne!(t[2], "s1", "client {i}: moved off s1 taken out");
    }
    for (&i, s) in first.iter().filter(|(_, s)| *s != "s1") {
        assert_eq!(times(i), [s.as_str()], "client {i} answered: untouched");
    }
    let new: BTreeMap<u32, &str> = sent
        .iter()
        .filter(|(c, _)| (100..130).contains(c))
        .map(|(c, s)| (*c, s.as_str()))
        .collect();
    assert_eq!(new.len(), 30);
    assert!(
        new.values().all(|s| *s != "s1"),
        "none to s1 while out: {new:?}"
    );
    let later: Vec<&str> = sent
        .iter()
        .filter(|(c, _)| (200..230).contains(c))
        .map(|(_, s)| s.as_str())
        .collect();
    assert!(later.contains(&"s1"), "s1 back after 5 s: {later:?}");
    // Counted: each SYN sent again while s1 had not answered (twice per client).
    assert_eq!(j["server_fails"]["s1"], 2 * dead.len() as u64, "{j}");
    assert_eq!(j["server_fails"]["s2"], 0);
    assert_eq!(j["server_ejected"]["s1"], 0, "back at the end");
    assert!(
        told.contains(&format!(
            "passive check: s1 out for 5 s ({} failures in 5 s)",
            dead.len()
        )),
        "{told}"
    );
    assert!(told.contains("passive check: s1 back"), "{told}");

    // The same capture without max_fails: s1 keeps every SYN of its clients.
    let out = d.join("plain.out.pcap");
    let j = replay_stats(&plain, &cap, &out);
    let sent = syns(&out);
    for &i in &dead {
        let t = servers_of(&sent, i);
        assert_eq!(t, ["s1", "s1", "s1"], "client {i}");
    }
    assert!(j["server_fails"].as_object().unwrap().is_empty(), "{j}");
    assert!(j["server_ejected"].as_object().unwrap().is_empty());
}

/// A server that refuses connections (a reset answering each SYN: nothing listens) is
/// taken out after `max_fails` of them, and new clients go to the others.
#[test]
fn refused_connections_take_a_server_out() {
    if !have_oracles() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pipeline(d, "p.yaml", &["s1", "s2", "s3"], ", max_fails: 2");
    let first = placement(d, &p, 0..30);
    let mut steps: Vec<Step> = Vec::new();
    for (&i, s) in &first {
        let t = 1.0 + f64::from(i) / 1000.0;
        steps.push((t, i, "syn", ""));
        let answer = if s == "s1" { "rst" } else { "synack" };
        steps.push((
            t + 0.0005,
            i,
            answer,
            MACS.iter().find(|m| m.0 == s).unwrap().0,
        ));
    }
    for i in 100..130 {
        steps.push((2.0 + f64::from(i - 100) / 1000.0, i, "syn", ""));
    }
    let cap = capture(d, "refused.pcap", &steps);
    let out = d.join("out.pcap");
    let (j, told) = replay_told(&p, &cap, &out);
    let refused = first.values().filter(|s| *s == "s1").count() as u64;
    assert!(refused >= 2);
    assert_eq!(j["server_fails"]["s1"], refused, "{j}");
    assert_eq!(
        j["server_ejected"]["s1"], 1,
        "out at the end (10 s by default)"
    );
    let new: Vec<String> = syns(&out)
        .into_iter()
        .filter(|(c, _)| *c >= 100)
        .map(|(_, s)| s)
        .collect();
    assert_eq!(new.len(), 30);
    assert!(!new.contains(&"s1".to_string()), "{new:?}");
    assert!(told.contains("passive check: s1 out for 10 s"), "{told}");
    // `flowgate check` lists the check.
    let o = flowgate()
        .args(["check", "--pipeline"])
        .arg(&p)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&o.stdout);
    assert!(
        (listing.lines()).any(|l| l.starts_with("  server s1 ") && l.ends_with(" max_fails 2 fail_timeout 10 s")),
        "{listing}"
    );
}

/// The last server taking new flows of a service is never taken out (the clients would
/// have none): it keeps its new flows, and the summary says why once.
#[test]
fn the_last_server_of_a_service_stays() {
    if !have_oracles() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pipeline(d, "p.yaml", &["s1"], ", max_fails: 1");
    let mut steps: Vec<Step> = Vec::new();
    for i in 0..5 {
        let t = 1.0 + f64::from(i) / 1000.0;
        steps.push((t, i, "syn", ""));
        steps.push((t + 0.0005, i, "rst", "s1"));
    }
    for i in 100..105 {
        steps.push((2.0 + f64::from(i - 100) / 1000.0, i, "syn", ""));
    }
    steps.push((3.0, 200, "syn", ""));
    let cap = capture(d, "one.pcap", &steps);
    let out = d.join("out.pcap");
    let (j, told) = replay_told(&p, &cap, &out);
    assert_eq!(j["server_fails"]["s1"], 5);
    assert_eq!(j["server_ejected"]["s1"], 0);
    assert!(syns(&out).iter().all(|(_, s)| s == "s1"));
    assert_eq!(
        told.matches("passive check: s1 failing but kept (the last server of a service)")
            .count(),
        1,
        "{told}"
    );
}

/// A server back from the passive check takes its weight through its `slow_start`
/// (replay ramps on the capture's clock, as `flowgate run` does on its own): s1, dead at
/// first, goes out for 2 s; back, it gets a small share of the new clients of the next
/// half second and its whole share once 4 s have passed.
#[test]
fn a_server_back_from_the_check_ramps_through_its_slow_start() {
    if !have_oracles() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pipeline(
        d,
        "p.yaml",
        &["s1", "s2", "s3"],
        ", max_fails: 1, fail_timeout: 2, slow_start: 4",
    );
    let first = placement(d, &p, 0..30);
    let dead = *first.iter().find(|(_, s)| *s == "s1").expect("one on s1").0;
    let mut steps: Vec<Step> = vec![(1.0, dead, "syn", ""), (2.0, dead, "syn", "")];
    // s1 out from about 2.25 s to 4.25 s. 400 new clients 1 ms apart at 4.5 s (the
    // ramp's first second) and 400 at 9 s (after it).
    for (start, t0) in [(1000, 4.5), (2000, 9.0)] {
        for k in 0..400 {
            steps.push((t0 + f64::from(k) / 1000.0, start + k, "syn", ""));
        }
    }
    let cap = capture(d, "ramp.pcap", &steps);
    let out = d.join("out.pcap");
    let (_, told) = replay_told(&p, &cap, &out);
    let sent = syns(&out);
    let share = |range: std::ops::Range<u32>| {
        let n = sent
            .iter()
            .filter(|(c, s)| range.contains(c) && s == "s1")
            .count();
        n as f64 / 400.0
    };
    let (ramping, whole) = (share(1000..1400), share(2000..2400));
    assert!(ramping < 0.15, "s1's share while ramping: {ramping}");
    assert!(whole > 0.25, "s1's share after: {whole}");
    assert!(told.contains("passive check: s1 back"), "{told}");
    assert!(told.contains("slow start: s1 from"), "{told}");
    assert!(
        told.contains("slow start: s1 at its whole weight"),
        "{told}"
    );
}

/// UDP: a server whose port is closed (its kernel answers each datagram with a port
/// unreachable, which reaches the client) is taken out; its clients' next datagrams
/// move to the others and new clients avoid it, while the flows the others answered
/// stay.
#[test]
fn a_udp_server_answering_port_unreachable_is_taken_out() {
    if !have_oracles() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pipeline_of(
        d,
        "dns.yaml",
        &["s1", "s2", "s3"],
        ", max_fails: 3",
        "udp",
        53,
    );
    let mut steps: Vec<Step> = (0..30)
        .map(|i| (1.0 + f64::from(i) / 1000.0, i, "query", ""))
        .collect();
    let first = {
        let cap = capture(d, "first.pcap", &steps);
        let out = d.join("first.out.pcap");
        replay_stats(&p, &cap, &out);
        to_servers(&out, "udp.dstport == 53")
            .into_iter()
            .collect::<BTreeMap<_, _>>()
    };
    let refused: Vec<u32> = first
        .iter()
        .filter(|(_, s)| *s == "s1")
        .map(|(i, _)| *i)
        .collect();
    assert!(refused.len() >= 3, "{first:?}");
    for (&i, s) in &first {
        let answer = if s == "s1" { "unreach" } else { "answer" };
        let mac = MACS.iter().find(|m| m.0 == s).unwrap().0;
        steps.push((1.1 + f64::from(i) / 1000.0, i, answer, mac));
        steps.push((2.0 + f64::from(i) / 1000.0, i, "query", ""));
    }
    for i in 100..130 {
        steps.push((3.0 + f64::from(i - 100) / 1000.0, i, "query", ""));
    }
    steps.sort_by(|a, b| a.0.total_cmp(&b.0));
    let cap = capture(d, "dns.pcap", &steps);
    let out = d.join("out.pcap");
    let (j, told) = replay_told(&p, &cap, &out);
    let sent = to_servers(&out, "udp.dstport == 53 && !icmp");
    let to = |i: u32| servers_of(&sent, i);
    for (&i, s) in &first {
        let t = to(i);
        if s == "s1" {
            assert_eq!(t.len(), 2, "client {i}: {t:?}");
            assert_eq!(t[0], "s1");
            assert_ne!(t[1], "s1", "client {i}: moved off s1 taken out");
        } else {
            assert_eq!(t, [s.as_str(), s.as_str()], "client {i}: answered, stays");
        }
    }
    assert!(
        (100..130).all(|i| to(i).len() == 1 && to(i)[0] != "s1"),
        "new clients avoid s1: {sent:?}"
    );
    // The port unreachables went back to the clients (the gateway), not to s1.
    let errors = tshark_fields(&out, "icmp.type == 3", &["eth.dst"]);
    assert_eq!(
        errors,
        vec![vec!["02:00:00:00:00:fe".to_string()]; refused.len()]
    );
    assert_eq!(j["server_fails"]["s1"], refused.len() as u64, "{j}");
    assert_eq!(j["server_ejected"]["s1"], 1, "{j}");
    assert!(told.contains("passive check: s1 out for 10 s"), "{told}");
}

/// The same over IPv6: a server's ICMPv6 port unreachable on flows it never answered
/// takes it out, and its clients' next datagrams move.
#[test]
fn an_ipv6_udp_server_answering_port_unreachable_is_taken_out() {
    if !have_oracles() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = d.join("dns6.yaml");
    std::fs::write(
        &p,
        r#"system: { mac: "02:00:00:00:00:01", addresses: ["2001:db8::1"], gateway: "02:00:00:00:00:fe" }
services:
  - name: dns6
    vip: "2001:db8:10::53"
    proto: udp
    ports: [53]
    servers:
      - { name: s1, mac: "02:00:00:00:01:01", max_fails: 2 }
      - { name: s2, mac: "02:00:00:00:01:02", max_fails: 2 }
"#,
    )
    .unwrap();
    // Phase `n` of the capture: 20 clients' queries at 1 s; with `s1_clients` (phase 2)
    // s1's answers are port unreachables, s2's datagrams, and every client asks again
    // at 2 s.
    let write = |name: &str, s1_clients: Option<&[u32]>| {
        let cap = d.join(name);
        let answers = match s1_clients {
            None => "None".to_string(),
            Some(c) => format!("{c:?}"),
        };
        scapy(&format!(
            r#"
from scapy.all import *
GW, SYS, S1, S2 = "02:00:00:00:00:fe", "02:00:00:00:00:01", "02:00:00:00:01:01", "02:00:00:00:01:02"
vip = "2001:db8:10::53"
s1 = {answers}
pk = []
def q(i):
    return IPv6(src="2001:db8:1::%x" % (i + 1), dst=vip)/UDP(sport=40000 + i, dport=53)/Raw(b"query")
for i in range(20):
    f = Ether(src=GW, dst=SYS)/q(i); f.time = 1 + i / 1000; pk.append(f)
if s1 is not None:
    for i in range(20):
        if i in s1:
            a = Ether(src=S1, dst=SYS)/IPv6(src=vip, dst="2001:db8:1::%x" % (i + 1))/ICMPv6DestUnreach(code=4)/bytes(q(i))
        else:
            a = Ether(src=S2, dst=SYS)/IPv6(src=vip, dst="2001:db8:1::%x" % (i + 1))/UDP(sport=53, dport=40000 + i)/Raw(b"answer")
        a.time = 1.1 + i / 1000; pk.append(a)
    for i in range(20):
        f = Ether(src=GW, dst=SYS)/q(i); f.time = 2 + i / 1000; pk.append(f)
wrpcap("{}", pk)
"#,
            cap.display()
        ));
        cap
    };
    // Queries to the servers: (client, server) in order.
    let queries = |out: &Path| -> Vec<(u32, String)> {
        let filter = "udp.dstport == 53 && !icmpv6";
        (tshark_fields(out, filter, &["eth.dst", "udp.srcport"]).into_iter())
            .map(|f| {
                let server = MACS.iter().find(|m| m.1 == f[0]).map_or("?", |m| m.0);
                (f[1].parse::<u32>().unwrap() - 40000, server.to_string())
            })
            .collect()
    };
    let out = d.join("first.out.pcap");
    replay_stats(&p, &write("first.pcap", None), &out);
    let first: BTreeMap<u32, String> = queries(&out).into_iter().collect();
    let on_s1: Vec<u32> = first
        .iter()
        .filter(|(_, s)| *s == "s1")
        .map(|(i, _)| *i)
        .collect();
    assert!(on_s1.len() >= 2 && on_s1.len() < 20, "{first:?}");

    let out = d.join("out.pcap");
    let j = replay_stats(&p, &write("dns6.pcap", Some(&on_s1)), &out);
    let sent = queries(&out);
    for i in 0..20 {
        let t = servers_of(&sent, i);
        let want = if on_s1.contains(&i) {
            ["s1", "s2"]
        } else {
            ["s2", "s2"]
        };
        assert_eq!(t, want, "client {i}");
    }
    let errors = tshark_fields(&out, "icmpv6.type == 1", &["eth.dst"]);
    assert_eq!(
        errors,
        vec![vec!["02:00:00:00:00:fe".to_string()]; on_s1.len()],
        "to the clients"
    );
    assert_eq!(j["server_fails"]["s1"], on_s1.len() as u64, "{j}");
    assert_eq!(j["server_ejected"]["s1"], 1, "{j}");
}

/// s1 and s2 refuse connections (a reset answering each SYN) until both are taken out:
/// their backup s3, which took nothing before, takes every new client while they are
/// out, and nothing once they are back; the summary says when the service went to its
/// backup and back.
#[test]
fn a_backup_takes_the_new_clients_while_every_primary_is_out() {
    if !have_oracles() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = with_backup_s3(d, &["s1", "s2", "s3"], ", max_fails: 2, fail_timeout: 5");
    let first = placement(d, &p, 0..20);
    assert!(first.values().all(|s| s != "s3"), "{first:?}");
    let mut steps: Vec<Step> = Vec::new();
    for (&i, s) in &first {
        let t = 1.0 + f64::from(i) / 1000.0;
        steps.push((t, i, "syn", ""));
        steps.push((
            t + 0.0005,
            i,
            "rst",
            MACS.iter().find(|m| m.0 == s).unwrap().0,
        ));
    }
    // While they are out (5 s from about 1.25 s), and after.
    for i in 100..130 {
        steps.push((2.0 + f64::from(i - 100) / 1000.0, i, "syn", ""));
    }
    for i in 200..230 {
        steps.push((9.0 + f64::from(i - 200) / 1000.0, i, "syn", ""));
    }
    let cap = capture(d, "refused.pcap", &steps);
    let out = d.join("out.pcap");
    let (j, told) = replay_told(&p, &cap, &out);
    assert_eq!(j["server_ejected"]["s1"], 0, "back at the end: {j}");
    assert_eq!(j["services"]["web"]["on_backup"], 0, "{j}");
    let sent = syns(&out);
    let of = |r: std::ops::Range<u32>| -> Vec<&str> {
        (sent.iter())
            .filter(|(c, _)| r.contains(c))
            .map(|(_, s)| s.as_str())
            .collect()
    };
    assert_eq!(of(100..130), ["s3"; 30], "while both are out");
    let later = of(200..230);
    assert_eq!(later.len(), 30);
    assert!(later.iter().all(|s| *s != "s3"), "both back: {later:?}");
    assert!(later.contains(&"s1") && later.contains(&"s2"), "{later:?}");
    // Said in order: s3 took over when the second went out, and let go when one came back.
    let on = told
        .find("service web on its backup servers")
        .unwrap_or_else(|| panic!("{told}"));
    let back =
        (told.find("service web back on its primary servers")).unwrap_or_else(|| panic!("{told}"));
    assert!(on < back, "{told}");
    assert!(
        !told.contains("failing but kept"),
        "a backup stands in: {told}"
    );
    let s3 = (told.lines())
        .find(|l| l.starts_with("  s3 "))
        .unwrap_or_else(|| panic!("{told}"));
    assert!(s3.ends_with("  backup"), "{told}");
}

/// A primary back from the passive check while its backup stood in is eased in through
/// its `slow_start`, the backup taking the rest of the new clients meanwhile: s1 (the
/// only primary) refuses a connection and goes out for 2 s, s3 (its backup) takes the
/// new clients; back, s1 takes a part of those of the next half second, s3 the rest, and
/// once the ramp is done s1 takes them all. Without the easing s1 would take them all
/// at once.
#[test]
fn a_primary_back_from_the_check_is_eased_in_beside_its_backup() {
    if !have_oracles() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = with_backup_s3(
        d,
        &["s1", "s3"],
        ", max_fails: 1, fail_timeout: 2, slow_start: 4",
    );
    // Client 0 refused at 1 s: s1 out from about 1.25 s to 3.25 s, then ramping to
    // about 7.25 s. New clients 1 ms apart: 30 at 2 s, 400 at 4 s, 400 at 9 s.
    let mut steps: Vec<Step> = vec![(1.0, 0, "syn", ""), (1.0005, 0, "rst", "s1")];
    for (start, n, t0) in [(100, 30, 2.0), (1000, 400, 4.0), (2000, 400, 9.0)] {
        for k in 0..n {
            steps.push((t0 + f64::from(k) / 1000.0, start + k, "syn", ""));
        }
    }
    let cap = capture(d, "eased.pcap", &steps);
    let out = d.join("out.pcap");
    let (j, told) = replay_told(&p, &cap, &out);
    let sent = syns(&out);
    let on = |range: std::ops::Range<u32>, server: &str| {
        (sent.iter())
            .filter(|(c, s)| range.contains(c) && s == server)
            .count()
    };
    assert_eq!(on(100..130, "s3"), 30, "s1 out: the backup");
    let (s1, s3) = (on(1000..1400, "s1"), on(1000..1400, "s3"));
    assert_eq!(s1 + s3, 400);
    assert!(
        (20..200).contains(&s1),
        "s1 in the first second of its ramp: {s1} of 400"
    );
    assert_eq!(
        on(2000..2400, "s1"),
        400,
        "after the ramp: the primary alone"
    );
    assert_eq!(j["services"]["web"]["on_backup"], 0, "{j}");
    let at = |line: &str| {
        told.find(line)
            .unwrap_or_else(|| panic!("{line:?} not in\n{told}"))
    };
    let (backup, easing, primary) = (
        at("service web on its backup servers"),
        at("service web easing back onto its primary servers (their slow start)"),
        at("service web back on its primary servers"),
    );
    assert!(backup < easing && easing < primary, "{told}");
}
