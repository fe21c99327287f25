//! Placement by open flows. Servers' `max_flows`: a server that holds its limit takes no
//! new flow; the flows that would have gone to it go to the next server of the Maglev
//! table with room, the others stay where they would go anyway, and when every server is
//! full a new flow is refused (`servers_full`, or an ICMP port unreachable with
//! `no_server: reject`). `policy: least-flows`: each new flow to the server with the
//! fewest open flows for its weight. Backup servers take what full primaries turn away.
//! Services' `rate_limit` (new connections per client), `conn_limit` (open connections
//! per client) and `allow` (the clients a service takes). Captures are written by scapy and `flowgate replay`'s output is read by tshark (the independent
//! oracles); the capture's clock lets the first flows time out before the second batch.

mod common;

use common::{have_oracles, replay_stats, scapy, tshark_fields};
use std::collections::BTreeMap;
use std::path::Path;

const MACS: [(&str, &str); 3] = [
    ("s1", "02:00:00:00:01:01"),
    ("s2", "02:00:00:00:01:02"),
    ("s3", "02:00:00:00:01:03"),
];

/// The web service over s1..s3, each with the given `max_flows` (`None`: no limit).
fn pipeline(
    dir: &Path,
    name: &str,
    limits: [Option<u32>; 3],
    no_server: &str,
) -> std::path::PathBuf {
    with_servers(dir, name, limits.map(|l| (100, l)), no_server, "maglev")
}

/// The web service over s1..s3 with their (weight, `max_flows`) and `policy`.
fn with_servers(
    dir: &Path,
    name: &str,
    servers: [(u32, Option<u32>); 3],
    no_server: &str,
    policy: &str,
) -> std::path::PathBuf {
    let servers: String = MACS
        .iter()
        .zip(servers)
        .map(|((n, mac), (w, l))| {
            let limit = l.map_or(String::new(), |l| format!(", max_flows: {l}"));
            format!("      - {{ name: {n}, mac: \"{mac}\", weight: {w}{limit} }}\n")
        })
        .collect();
    let yaml = format!(
        r#"system: {{ mac: "02:00:00:00:00:01", addresses: [203.0.113.1], gateway: "02:00:00:00:00:fe" }}
services:
  - name: web
    vip: 203.0.113.10
    proto: tcp
    ports: [80]
    no_server: {no_server}
    policy: {policy}
    servers:
{servers}"#
    );
    let p = dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    p
}

/// What `flowgate check` lists for pipeline `p`.
fn listing(p: &Path) -> String {
    let o = common::flowgate()
        .args(["check", "--pipeline"])
        .arg(p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The web service over s1..s3 without limits, with `line` (a service key) added.
fn service_with(dir: &Path, name: &str, line: &str) -> std::path::PathBuf {
    let p = pipeline(dir, name, [None; 3], "drop");
    let yaml = std::fs::read_to_string(&p).unwrap();
    let with = yaml.replace(
        "    policy: maglev\n",
        &format!("    policy: maglev\n    {line}\n"),
    );
    assert_ne!(yaml, with);
    std::fs::write(&p, with).unwrap();
    p
}

/// `n` SYNs from distinct clients of network `net` (198.51.`net`.0/24) at `t` seconds
/// on, 1 ms apart, followed by `n` more from 198.51.`net + 1`.0/24 at `t + 30` (after
/// the SYN timeout, 10 s, has ended the first ones).
fn capture(dir: &Path, n: u32) -> std::path::PathBuf {
    let out = dir.join("syns.pcap");
    scapy(&format!(
        r#"
from scapy.all import *
pk = []
for b, t0 in ((100, 1.0), (101, 31.0)):
    for i in range({n}):
        p = Ether(src="02:00:00:00:00:fe", dst="02:00:00:00:00:01")/IP(src="198.51.%d.%d" % (b, i + 1), dst="203.0.113.10")/TCP(sport=40000 + i, dport=80, flags="S")
        p.time = t0 + i / 1000
        pk.append(p)
wrpcap("{}", pk)
"#,
        out.display()
    ));
    out
}

/// `flowgate replay` of `cap` through `p` into `NAME.out.pcap` in `d`, with the stats
/// JSON and the Prometheus text: the output's path, the stats, the text.
fn replay_counted(
    d: &Path,
    p: &Path,
    cap: &Path,
    name: &str,
) -> (std::path::PathBuf, serde_json::Value, String) {
    let out = d.join(format!("{name}.out.pcap"));
    let prom = d.join(format!("{name}.prom"));
    let stats = d.join(format!("{name}.json"));
    common::replay_with(
        p,
        cap,
        &out,
        &[
            "--prometheus".as_ref(),
            prom.as_os_str(),
            "--stats-json".as_ref(),
            stats.as_os_str(),
        ],
    );
    let s = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    (out, s, std::fs::read_to_string(&prom).unwrap())
}

/// `clients.pcap` in `d`, written by scapy: the TCP frames `body` (python) makes with
/// `tcp(client, sport, t, flags="S")`, each from the gateway to the web VIP's port 80 at
/// time `t`, in time order.
fn client_capture(d: &Path, body: &str) -> std::path::PathBuf {
    let cap = d.join("clients.pcap");
    scapy(&format!(
        r#"
from scapy.all import *
pk = []
def tcp(c, sp, t, flags="S"):
    p = Ether(src="02:00:00:00:00:fe", dst="02:00:00:00:00:01")/IP(src=c, dst="203.0.113.10")/TCP(sport=sp, dport=80, flags=flags, seq=1000, ack=0 if flags == "S" else 5001)
    p.time = t
    pk.append(p)
{body}
pk.sort(key=lambda p: p.time)
wrpcap("{}", pk)
"#,
        cap.display()
    ));
    cap
}

/// Per client address, the server (by MAC) its SYN left for; ICMP errors as "icmp".
fn destinations(out: &Path) -> BTreeMap<String, String> {
    let by_mac: BTreeMap<&str, &str> = MACS.iter().map(|&(n, m)| (m, n)).collect();
    let fields = ["eth.dst", "ip.src", "ip.dst", "icmp.type", "icmp.code"];
    (tshark_fields(out, "", &fields).into_iter())
        .map(|f| {
            let l = f.join(";");
            if f[3] == "3" && f[4] == "3" {
                // Port unreachable to the client (the first address is the error's own).
                assert_eq!(
                    f[1].split(',').next(),
                    Some("203.0.113.10"),
                    "from the VIP: {l}"
                );
                (
                    f[2].split(',').next().unwrap().to_string(),
                    "icmp".to_string(),
                )
            } else {
                let server = by_mac
                    .get(f[0].as_str())
                    .unwrap_or_else(|| panic!("unknown destination: {l}"));
                (f[1].to_string(), server.to_string())
            }
        })
        .collect()
}

#[test]
fn a_full_server_sends_its_new_flows_to_the_others() {
    if !have_oracles() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let syns = capture(dir.path(), 60);
    let free = pipeline(dir.path(), "free.yaml", [None; 3], "drop");
    let s_free = replay_stats(&free, &syns, &dir.path().join("free.pcap"));
    let limited = pipeline(dir.path(), "limited.yaml", [Some(5), None, None], "drop");
    let s_lim = replay_stats(&limited, &syns, &dir.path().join("limited.pcap"));
    let d_free = destinations(&dir.path().join("free.pcap"));
    let d_lim = destinations(&dir.path().join("limited.pcap"));
    assert_eq!(
        (d_free.len(), d_lim.len()),
        (120, 120),
        "every SYN forwarded"
    );
    let mut overflows = 0;
    for net in ["198.51.100.", "198.51.101."] {
        let batch = |d: &BTreeMap<String, String>| -> Vec<(String, String)> {
            let mut v: Vec<(String, String)> = (d.iter())
                .filter(|(c, _)| c.starts_with(net))
                .map(|(c, s)| (c.clone(), s.clone()))
                .collect();
            // In the order the SYNs came (the last octet).
            v.sort_by_key(|(c, _)| c.rsplit('.').next().unwrap().parse::<u32>().unwrap());
            v
        };
        let (free, lim) = (batch(&d_free), batch(&d_lim));
        let firsts = free.iter().filter(|(_, s)| s == "s1").count();
        assert!(
            firsts > 5,
            "s1 is the first choice of {firsts} of {net}0/24"
        );
        overflows += firsts - 5;
        let mut admitted = 0;
        for ((c, f), (_, l)) in free.iter().zip(&lim) {
            if f == "s1" && admitted < 5 {
                admitted += 1;
                assert_eq!(l, "s1", "{c}: s1 has room");
            } else if f == "s1" {
                assert_ne!(l, "s1", "{c}: s1 is full");
            } else {
                assert_eq!(l, f, "{c}: a flow s1 would not have taken stays");
            }
        }
        assert_eq!(
            admitted, 5,
            "s1 takes flows again once the first ones ended"
        );
        // The turned-away flows spread over both others.
        let moved: Vec<&String> = (free.iter().zip(&lim))
            .filter(|((_, f), (_, l))| f == "s1" && l != "s1")
            .map(|(_, (_, l))| l)
            .collect();
        assert!(
            moved.contains(&&"s2".to_string()) && moved.contains(&&"s3".to_string()),
            "{moved:?}"
        );
    }
    assert_eq!(s_lim["server_overflows"]["s1"], overflows as u64);
    assert_eq!(s_lim["server_overflows"]["s2"], 0);
    assert_eq!(s_lim["server_max_flows"], serde_json::json!({"s1": 5}));
    assert_eq!(s_free["server_overflows"]["s1"], 0);
    assert_eq!(s_lim["flows_expired"], 60, "the first batch timed out");
    assert_eq!(s_lim["packets_out"], 120);
    // The same count in the Prometheus text, and the limit in `check`'s listing.
    let prom = dir.path().join("limited.prom");
    common::replay_with(
        &limited,
        &syns,
        &dir.path().join("again.pcap"),
        &["--prometheus".as_ref(), prom.as_os_str()],
    );
    let text = std::fs::read_to_string(&prom).unwrap();
    for line in [
        format!("flowgate_server_overflows_total{{server=\"s1\"}} {overflows}"),
        "flowgate_server_max_flows{server=\"s1\"} 5".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    assert!(
        !text.contains("flowgate_server_max_flows{server=\"s2\"}"),
        "{text}"
    );
    let listing = listing(&limited);
    assert!(
        (listing.lines()).any(|l| l.starts_with("  server s1 ") && l.ends_with(" max_flows 5")),
        "{listing}"
    );
    let s2: Vec<&str> = (listing.lines())
        .filter(|l| l.starts_with("  server s2 "))
        .collect();
    assert!(s2.len() == 1 && !s2[0].contains("max_flows"), "{listing}");
}

#[test]
fn new_flows_are_refused_when_every_server_is_full() {
    if !have_oracles() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let syns = capture(dir.path(), 10);
    let free = pipeline(dir.path(), "free.yaml", [None; 3], "drop");
    replay_stats(&free, &syns, &dir.path().join("free.pcap"));
    let firsts = destinations(&dir.path().join("free.pcap"));
    for no_server in ["drop", "reject"] {
        let p = pipeline(
            dir.path(),
            "full.yaml",
            [Some(2), Some(2), Some(2)],
            no_server,
        );
        let out = dir.path().join(format!("{no_server}.pcap"));
        let s = replay_stats(&p, &syns, &out);
        let d = destinations(&out);
        let mut overflows = 0;
        for net in ["198.51.100.", "198.51.101."] {
            let mut count: BTreeMap<&str, usize> = BTreeMap::new();
            for i in 1..=10 {
                let c = format!("{net}{i}");
                let srv = d.get(&c).map_or("none", String::as_str);
                // Turned away from its first choice when that one already held 2.
                if count.get(firsts[&c].as_str()).copied().unwrap_or(0) >= 2 {
                    overflows += 1;
                } else {
                    assert_eq!(srv, firsts[&c], "{c}: its first choice has room");
                }
                *count.entry(srv).or_default() += 1;
            }
            let refused = if no_server == "reject" {
                ("icmp", 4)
            } else {
                ("none", 4)
            };
            let want: BTreeMap<&str, usize> = [("s1", 2), ("s2", 2), ("s3", 2), refused].into();
            assert_eq!(count, want, "{no_server}, {net}0/24");
        }
        let drops = &s["drops"]["servers_full"];
        if no_server == "drop" {
            assert_eq!(*drops, 8);
            assert_eq!(s["packets_out"], 12);
        } else {
            assert!(drops.is_null() || *drops == 0, "{s}");
            assert_eq!(s["icmp_errors"], 8);
        }
        assert!(s["drops"]["no_server"].is_null() || s["drops"]["no_server"] == 0);
        let total: u64 = (s["server_overflows"].as_object().unwrap().values())
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(
            total, overflows,
            "each flow turned away counted once, at its first choice"
        );
        assert!(
            overflows > 8,
            "some flows turned away found room: {overflows}"
        );
    }
}

#[test]
fn least_flows_fills_the_servers_by_weight() {
    if !have_oracles() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let syns = capture(dir.path(), 28);
    let weights = [(100, None), (100, None), (200, None)];
    let mut split = BTreeMap::new();
    for policy in ["maglev", "least-flows"] {
        let p = with_servers(
            dir.path(),
            &format!("{policy}.yaml"),
            weights,
            "drop",
            policy,
        );
        let out = dir.path().join(format!("{policy}.pcap"));
        let s = replay_stats(&p, &syns, &out);
        assert_eq!(s["packets_out"], 56, "{policy}");
        for net in ["198.51.100.", "198.51.101."] {
            let mut count: BTreeMap<String, usize> = BTreeMap::new();
            for (_, srv) in destinations(&out)
                .iter()
                .filter(|(c, _)| c.starts_with(net))
            {
                *count.entry(srv.clone()).or_default() += 1;
            }
            split.insert((policy, net), count);
        }
    }
    let want: BTreeMap<String, usize> =
        [("s1".into(), 7), ("s2".into(), 7), ("s3".into(), 14)].into();
    // Both batches (the second after the first timed out), flow by flow to the emptiest.
    assert_eq!(split[&("least-flows", "198.51.100.")], want);
    assert_eq!(split[&("least-flows", "198.51.101.")], want);
    // Hashing alone spreads 28 flows less evenly.
    assert_ne!(split[&("maglev", "198.51.100.")], want, "{split:?}");
}

/// A backup server (s3, `backup: true`) takes no new flow while s1 and s2 have room, the
/// flows neither has room for once both hold their `max_flows`, and is refused with them
/// when it is full too; `check` lists it as a backup.
#[test]
fn backups_take_the_flows_the_full_primaries_turn_away() {
    if !have_oracles() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let syns = capture(d, 30);
    let backup = |name: &str, limits: [Option<u32>; 3]| {
        let p = pipeline(d, name, limits, "drop");
        let yaml = std::fs::read_to_string(&p).unwrap();
        let yaml = yaml.replace("01:03\", weight", "01:03\", backup: true, weight");
        assert!(yaml.contains("backup: true"));
        std::fs::write(&p, yaml).unwrap();
        p
    };
    // Room for all: s3 takes nothing.
    let free = backup("free.yaml", [None, None, None]);
    let s = replay_stats(&free, &syns, &d.join("free.pcap"));
    let dest = destinations(&d.join("free.pcap"));
    assert_eq!(dest.len(), 60);
    assert!(dest.values().all(|s| s != "s3"), "{dest:?}");
    assert_eq!(s["services"]["web"]["on_backup"], 0, "{s}");
    // s1 and s2 hold 5 each: in each batch, in the order the SYNs came, the first
    // 10 go to them (by the choice without the backup) and the other 20 to s3.
    let lim = backup("limited.yaml", [Some(5), Some(5), None]);
    let s = replay_stats(&lim, &syns, &d.join("limited.pcap"));
    let dest = destinations(&d.join("limited.pcap"));
    assert_eq!(dest.len(), 60, "every SYN forwarded: {s}");
    let firsts = destinations(&d.join("free.pcap"));
    for net in ["198.51.100.", "198.51.101."] {
        let mut held: BTreeMap<&str, u32> = BTreeMap::new();
        for i in 1..=30 {
            let c = format!("{net}{i}");
            let (srv, first) = (dest[&c].as_str(), firsts[&c].as_str());
            let room = |s: &str| held.get(s).copied().unwrap_or(0) < 5;
            if room(first) {
                assert_eq!(srv, first, "{c}: its first choice has room");
            } else if room("s1") || room("s2") {
                assert!(srv != first && srv != "s3", "{c}: to the primary with room");
            } else {
                assert_eq!(srv, "s3", "{c}: both primaries are full");
            }
            *held.entry(srv).or_default() += 1;
        }
        let on = |s: &str| {
            (dest.iter())
                .filter(|(c, v)| c.starts_with(net) && *v == s)
                .count()
        };
        assert_eq!((on("s1"), on("s2"), on("s3")), (5, 5, 20), "{net}0/24");
    }
    assert_eq!(s["drops"]["servers_full"], serde_json::Value::Null, "{s}");
    assert_eq!(
        s["services"]["web"]["on_backup"], 0,
        "an overflow is not a failover"
    );
    // s3 full too: refused.
    let full = backup("full.yaml", [Some(5), Some(5), Some(15)]);
    let s = replay_stats(&full, &syns, &d.join("full.pcap"));
    assert_eq!(s["packets_out"], 50, "{s}");
    assert_eq!(s["drops"]["servers_full"], 10, "{s}");
    let listing = listing(&full);
    let line = |n: &str| {
        (listing.lines())
            .find(|l| l.starts_with(&format!("  server {n} ")))
            .unwrap_or_else(|| panic!("{n} in {listing}"))
            .to_string()
    };
    assert!(line("s3").starts_with("  server s3 (backup) "), "{listing}");
    assert!(line("s3").contains(" share 0.0%"), "{listing}");
    assert!(!line("s1").contains("backup"), "{listing}");
}

/// `rate_limit`: each client may open `per_source` connections a second, `burst` at
/// once. A client that opens 30 connections in 0.3 s gets exactly those a token bucket
/// (worked out here, in whole microseconds, from the capture's own times as tshark
/// reads them) admits; a client beside it is not held back; a second SYN of an admitted
/// connection and its ACK pass; once idle, the client has its burst again. The
/// refused SYNs are counted (stats, Prometheus) and `check` lists the limit.
#[test]
fn rate_limits_hold_each_client_to_its_rate() {
    if !have_oracles() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = service_with(
        d,
        "limited.yaml",
        "rate_limit: { per_source: 10, burst: 5 }",
    );
    let cap = client_capture(
        d,
        r#"
for k in range(30):
    tcp("198.51.100.7", 1000 + k, 1.0 + k * 0.01)
for k in range(5):
    tcp("198.51.100.8", 2000 + k, 1.05 + k * 0.001)
tcp("198.51.100.7", 1000, 1.5)
tcp("198.51.100.7", 1001, 1.5, "A")
for k in range(7):
    tcp("198.51.100.7", 3000 + k, 3.0 + k * 0.001)
"#,
    );
    let (out, s, text) = replay_counted(d, &p, &cap, "limited");
    // The model: a bucket of 5 per client, 10 a second; a SYN takes one when there is one.
    let mut bucket = TokenBuckets::new(10, 5);
    let mut want = Vec::new();
    for (t, c, sp, syn) in frames(&cap) {
        if !syn || (c == "198.51.100.7" && sp == 1000 && t == 1_500_000) {
            want.push((c, sp)); // an open connection's packets
        } else if bucket.take(&c, t) {
            want.push((c, sp));
        }
    }
    let got: Vec<(String, u16)> = frames(&out)
        .into_iter()
        .map(|(_, c, sp, _)| (c, sp))
        .collect();
    assert_eq!(got, want);
    let of = |c: &str| got.iter().filter(|(x, _)| x == c).count();
    assert_eq!(of("198.51.100.8"), 5, "the other client is not held back");
    let first: Vec<u16> = (got.iter())
        .filter(|(c, sp)| c == "198.51.100.7" && (1000..1030).contains(sp))
        .map(|(_, sp)| *sp)
        .collect();
    assert_eq!(
        first,
        [1000, 1001, 1002, 1003, 1004, 1010, 1020, 1000, 1001],
        "{got:?}"
    );
    let later = (got.iter())
        .filter(|(_, sp)| (3000..3007).contains(sp))
        .count();
    assert_eq!(later, 5, "the whole burst again");
    let refused = (30 + 5 + 2 + 7 - got.len()) as u64;
    assert_eq!(refused, 23 + 2);
    refusals_counted(&s, &text, "rate_limited", refused);
    let listing = listing(&p);
    assert!(
        listing.contains(
            "  rate_limit 10 new flows a second per client (IPv4 /32, IPv6 /64), 5 at once"
        ),
        "{listing}"
    );
}

/// `conn_limit`: a client holds at most `per_source` open connections of the service; its
/// SYNs beyond that are dropped and counted, another client's are not; an established
/// connection that closes (FIN) frees its place at once, and connections that time out
/// (the SYN timeout, on the capture's clock) free theirs; `check` lists the limit.
#[test]
fn conn_limits_hold_each_client_to_its_open_connections() {
    if !have_oracles() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = service_with(d, "conns.yaml", "conn_limit: { per_source: 3 }");
    let cap = client_capture(
        d,
        r#"
for k in range(6):
    tcp("198.51.100.7", 1000 + k, 1.0 + k * 0.01)
for k in range(3):
    tcp("198.51.100.8", 2000 + k, 1.05 + k * 0.001)
tcp("198.51.100.7", 1000, 1.09, "A")
tcp("198.51.100.7", 1000, 1.1, "FA")
tcp("198.51.100.7", 1006, 1.2)
tcp("198.51.100.7", 1007, 1.21)
for k in range(3):
    tcp("198.51.100.7", 3000 + k, 100.0 + k * 0.001)
tcp("198.51.100.7", 3003, 100.01)
"#,
    );
    let (out, s, text) = replay_counted(d, &p, &cap, "conns");
    let got: Vec<(String, u16, bool)> = frames(&out)
        .into_iter()
        .map(|(_, c, sp, syn)| (c, sp, syn))
        .collect();
    let of = |c: &str| -> Vec<u16> {
        (got.iter())
            .filter(|(x, _, syn)| x == c && *syn)
            .map(|(_, sp, _)| *sp)
            .collect()
    };
    // Three at once; the ACK and FIN of 1000 (forwarded) free a place for 1006, not 1007; by
    // t = 100 s the unanswered connections have timed out: three more, not a fourth.
    assert_eq!(
        of("198.51.100.7"),
        [1000, 1001, 1002, 1006, 3000, 3001, 3002],
        "{got:?}"
    );
    let acks = (got.iter()).filter(|(c, sp, syn)| c == "198.51.100.7" && *sp == 1000 && !syn);
    assert_eq!(acks.count(), 2, "the ACK and the FIN: {got:?}");
    assert_eq!(of("198.51.100.8"), [2000, 2001, 2002], "the other client");
    let refused = 3 + 1 + 1;
    refusals_counted(&s, &text, "conn_limited", refused);
    let listing = listing(&p);
    assert!(
        (listing.lines()).any(|l| l == "  conn_limit 3 open flows per client (IPv4 /32, IPv6 /64)"),
        "{listing}"
    );
}

/// `allow`: a service takes new connections from the listed client networks only; the
/// others' SYNs are dropped and counted; `check` lists the networks.
#[test]
fn allow_lists_the_clients_a_service_takes() {
    if !have_oracles() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let syns = capture(d, 20);
    let p = service_with(
        d,
        "allow.yaml",
        "allow: [198.51.100.0/29, 198.51.101.5, \"2001:db8::/32\"]",
    );
    let out = d.join("allow.out.pcap");
    let s = replay_stats(&p, &syns, &out);
    let mut got: Vec<String> = destinations(&out).into_keys().collect();
    got.sort();
    let mut want: Vec<String> = (1..=7).map(|i| format!("198.51.100.{i}")).collect();
    want.push("198.51.101.5".into());
    want.sort();
    assert_eq!(got, want);
    assert_eq!(s["drops"]["not_allowed"], 32, "{s}");
    assert_eq!(s["services"]["web"]["denied"], 32, "{s}");
    let listing = listing(&p);
    assert!(
        (listing.lines()).any(|l| l == "  allow 198.51.100.0/29, 198.51.101.5/32, 2001:db8::/32"),
        "{listing}"
    );
}

/// (time in µs, client, source port, SYN only) of each TCP frame of `f`, by tshark.
fn frames(f: &Path) -> Vec<(u64, String, u16, bool)> {
    let fields = ["frame.time_epoch", "ip.src", "tcp.srcport", "tcp.flags.ack"];
    (tshark_fields(f, "", &fields).into_iter())
        .map(|f| {
            let (s, frac) = f[0].split_once('.').expect("seconds.fraction");
            let us = s.parse::<u64>().unwrap() * 1_000_000 + frac[..6].parse::<u64>().unwrap();
            let ack = f[3] == "1" || f[3] == "True";
            (us, f[1].to_string(), f[2].parse().unwrap(), !ack)
        })
        .collect()
}

/// The oracle of `rate_limit`: token buckets by key, each full (`burst` tokens) at first
/// sight and refilled at `rate` a second, in millionths of a token and whole
/// microseconds (so `rate` millionths a microsecond: exact).
struct TokenBuckets {
    rate: u64,
    burst: u64,
    by_key: BTreeMap<String, (u64, u64)>,
}

impl TokenBuckets {
    fn new(rate: u64, burst: u64) -> Self {
        TokenBuckets {
            rate,
            burst: burst * 1_000_000,
            by_key: BTreeMap::new(),
        }
    }

    /// Whether bucket `key` has a token at `t` µs (and takes it).
    fn take(&mut self, key: &str, t: u64) -> bool {
        let (tokens, last) = self
            .by_key
            .entry(key.to_string())
            .or_insert((self.burst, t));
        *tokens = (*tokens + (t - *last) * self.rate).min(self.burst);
        *last = t;
        let ok = *tokens >= 1_000_000;
        if ok {
            *tokens -= 1_000_000;
        }
        ok
    }
}

/// `rate_limit.total`: one bucket for all of a service's clients, beside each client's
/// own. 30 clients, one SYN each 1 ms apart, twice (30 s apart), under `total: 100,
/// total_burst: 5`: exactly those one token bucket (worked out from the capture's times
/// as tshark reads them) admits, and the listing says so.
#[test]
fn a_total_rate_limit_holds_all_clients_together() {
    if !have_oracles() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let syns = capture(d, 30);
    let p = service_with(
        d,
        "total.yaml",
        "rate_limit: { per_source: 1, total: 100, total_burst: 5 }",
    );
    let out = d.join("total.out.pcap");
    let s = replay_stats(&p, &syns, &out);
    let mut bucket = TokenBuckets::new(100, 5);
    let want: Vec<(String, u16)> = (frames(&syns).into_iter())
        .filter(|(t, _, _, _)| bucket.take("all", *t))
        .map(|(_, c, sp, _)| (c, sp))
        .collect();
    let got: Vec<(String, u16)> = (frames(&out).into_iter())
        .map(|(_, c, sp, _)| (c, sp))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        got.len(),
        2 * 7,
        "5 at once, at 10 and 20 ms one more; twice: {got:?}"
    );
    assert_eq!(s["drops"]["rate_limited"], 60 - 14, "{s}");
    let listing = listing(&p);
    let line = "  rate_limit 1 new flows a second per client (IPv4 /32, IPv6 /64), 1 at once; \
                100 new flows a second in all, 5 at once";
    assert!(listing.lines().any(|l| l == line), "{listing}");
}

/// `refused` new flows of service `web` refused as `reason` (`rate_limited`,
/// `conn_limited`): in the stats JSON's drops and the service's count, and in the
/// Prometheus text `text` as both counters.
fn refusals_counted(s: &serde_json::Value, text: &str, reason: &str, refused: u64) {
    assert_eq!(s["drops"][reason], refused, "{s}");
    assert_eq!(s["services"]["web"][reason], refused, "{s}");
    for line in [
        format!("flowgate_service_{reason}_total{{service=\"web\"}} {refused}"),
        format!("flowgate_drops_total{{reason=\"{reason}\"}} {refused}"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
}
