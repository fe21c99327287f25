//! `flowgate check`: every shipped pipeline is valid and summarised; every kind of mistake
//! exits with code 2 and points at the file, the line and the key.
//!
//! The bad inputs are single-line edits of one valid pipeline, so the expected line of
//! each error is known by construction (written by hand below, not taken from the code).

mod common;

use std::path::{Path, PathBuf};

/// A valid pipeline; the mutations below edit one line of it (1-based line numbers are
/// shown on the right for reference).
const BASE: &str = r#"system:
  mac: "02:00:00:00:00:01"
  addresses: [192.0.2.1]
  gateway: "02:00:00:00:00:fe"
qos:
  gold:
    dscp: af41
services:
  - name: web
    vip: 192.0.2.10
    proto: tcp
    ports: [80]
    qos: gold
    servers:
      - name: w1
        mac: "02:00:00:00:01:01"
      - { name: w2, mac: "02:00:00:00:01:02" }
  - name: dns
    vip: 192.0.2.53
    proto: udp
    ports: [53]
    servers:
      - { name: d1, mac: "02:00:00:00:02:01" }
flows:
  - name: r
    match:
      proto: udp
      dst_port: 53
    to: gateway
    qos: { dscp: ef }
default: gateway
"#;

fn run_check(path: &Path) -> (i32, String, String) {
    let o = common::flowgate()
        .arg("check")
        .arg("--pipeline")
        .arg(path)
        .output()
        .expect("run flowgate");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `BASE` with line `n` (1-based) replaced by `text` (which may span lines); `n` one past
/// the end appends.
fn mutate(n: usize, text: &str) -> String {
    let mut lines: Vec<&str> = BASE.lines().collect();
    if n == lines.len() + 1 {
        lines.push(text);
    } else {
        lines[n - 1] = text;
    }
    lines.join("\n") + "\n"
}

#[test]
fn base_is_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("base.yaml");
    std::fs::write(&f, BASE).unwrap();
    let (code, out, err) = run_check(&f);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(
        out.starts_with(&format!("pipeline {}: OK", f.display())),
        "{out}"
    );
    assert!(out.contains("service web vip 192.0.2.10"), "{out}");
    assert!(out.contains("flow rule r -> gateway"), "{out}");
    assert!(
        out.contains("mtu: none set (frames leave at any size)"),
        "{out}"
    );
}

#[test]
fn check_says_what_a_service_does_without_servers() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("reject.yaml");
    std::fs::write(&f, mutate(13, "    qos: gold\n    no_server: reject")).unwrap();
    let (code, out, err) = run_check(&f);
    assert_eq!(code, 0, "stderr: {err}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("service {name} ")))
            .unwrap_or_else(|| panic!("{out}"))
            .to_string()
    };
    assert!(
        line("web").ends_with(" no_server reject (ICMP port unreachable from the VIP)"),
        "{out}"
    );
    assert!(line("dns").ends_with(" no_server drop"), "{out}");
}

#[test]
fn check_says_what_the_mtu_does() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("mtu.yaml");
    std::fs::write(
        &f,
        mutate(4, "  gateway: \"02:00:00:00:00:fe\"\n  mtu: 1400"),
    )
    .unwrap();
    let (code, out, err) = run_check(&f);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(
        out.contains(
            "mtu 1400: larger packets cut into fragments (IPv4 without DF) or answered with \
             Fragmentation Needed / Packet Too Big (IPv4 from 192.0.2.1, IPv6 none: dropped \
             unanswered), at most 1000 ICMP errors a second per worker"
        ),
        "{out}"
    );
    // By port name: each its own, the ports not named unlimited.
    std::fs::write(
        &f,
        mutate(
            4,
            "  gateway: { mac: \"02:00:00:00:00:fe\", port: outside }\n  \
             mtu: { outside: 1500, inside: 9000 }",
        ),
    )
    .unwrap();
    let (code, out, err) = run_check(&f);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(
        out.contains("mtu by port: outside 1500, inside 9000 (other ports: none): larger"),
        "{out}"
    );
}

struct Bad {
    what: &'static str,
    line: usize,
    text: &'static str,
    /// Expected error line and key, and a fragment of the message.
    want_line: usize,
    want_key: &'static str,
    want_msg: &'static str,
}

const fn bad(
    what: &'static str,
    line: usize,
    text: &'static str,
    want_line: usize,
    want_key: &'static str,
    want_msg: &'static str,
) -> Bad {
    Bad {
        what,
        line,
        text,
        want_line,
        want_key,
        want_msg,
    }
}

fn bads() -> Vec<Bad> {
    vec![
        // YAML syntax.
        bad("tab indentation", 10, "\tvip: 192.0.2.10", 10, "", "tab"),
        bad(
            "duplicate key",
            11,
            "    proto: tcp\n    proto: udp",
            12,
            "",
            "duplicate",
        ),
        // Unknown keys at every level.
        bad(
            "unknown top-level key",
            32,
            "bogus: 1",
            32,
            "bogus",
            "unknown field `bogus`",
        ),
        bad(
            "unknown key in system",
            3,
            "  adresses: [192.0.2.1]",
            3,
            "system.adresses",
            "unknown field",
        ),
        bad(
            "unknown key in a service",
            11,
            "    proto: tcp\n    colour: red",
            12,
            "services[0].colour",
            "unknown field",
        ),
        bad(
            "unknown key in a server",
            16,
            "        mak: \"02:00:00:00:01:01\"",
            16,
            "services[0].servers[0].mak",
            "unknown field",
        ),
        bad(
            "unknown key in a one-line server",
            23,
            "      - { name: d1, mac: \"02:00:00:00:02:01\", wieght: 5 }",
            23,
            "services[1].servers[0].wieght",
            "unknown field",
        ),
        bad(
            "unknown key in match",
            27,
            "      protocol: udp",
            27,
            "flows[0].match.protocol",
            "unknown field",
        ),
        bad(
            "unknown key in a qos class",
            7,
            "    dscpp: af41",
            7,
            "qos.gold.dscpp",
            "unknown field",
        ),
        bad(
            "unknown key in inline qos",
            30,
            "    qos: { dcsp: ef }",
            30,
            "flows[0].qos.dcsp",
            "unknown field",
        ),
        bad(
            "unknown key in block inline qos",
            13,
            "    qos:\n      dscp: ef\n      bogus: 1",
            15,
            "services[0].qos.bogus",
            "unknown field",
        ),
        bad(
            "unknown key in nested reply_qos",
            13,
            "    qos: gold\n    reply_qos: { push_vlan: { vid: 1, tpidd: 1 } }",
            14,
            "services[0].reply_qos.push_vlan.tpidd",
            "unknown field",
        ),
        bad(
            "qos neither a name nor a map",
            13,
            "    qos: [1, 2]",
            13,
            "services[0].qos",
            "QoS class name or a map",
        ),
        // Bad addresses.
        bad(
            "bad VIP",
            19,
            "    vip: 192.0.2.300",
            19,
            "services[1].vip",
            "192.0.2.300",
        ),
        bad(
            "bad system address",
            3,
            "  addresses: [192.0.2.1, 10.0.0]",
            3,
            "system.addresses[1]",
            "10.0.0",
        ),
        bad(
            "bad prefix in match",
            27,
            "      src: 10.0.0.0/33",
            27,
            "flows[0].match.src",
            "10.0.0.0/33",
        ),
        bad(
            "bad server MAC",
            16,
            "        mac: \"02:00:00:00:01\"",
            16,
            "services[0].servers[0].mac",
            "bad MAC",
        ),
        bad(
            "bad one-line server MAC",
            17,
            "      - { name: w2, mac: \"02:00:00:00:01:0g\" }",
            17,
            "services[0].servers[1].mac",
            "bad MAC",
        ),
        bad(
            "bad system MAC",
            2,
            "  mac: \"02:00:00:00:00:001\"",
            2,
            "system.mac",
            "bad MAC",
        ),
        bad(
            "signed MAC octet",
            16,
            "        mac: \"02:00:00:00:01:+1\"",
            16,
            "services[0].servers[0].mac",
            "bad MAC",
        ),
        bad(
            "bad gateway MAC",
            4,
            "  gateway: \"gateway\"",
            4,
            "system.gateway",
            "bad MAC",
        ),
        // QoS classes and values.
        bad(
            "unknown qos class",
            13,
            "    qos: silver",
            13,
            "services[0].qos",
            "\"silver\" does not exist",
        ),
        bad(
            "unknown flow qos class",
            30,
            "    qos: platinum",
            30,
            "flows[0].qos",
            "\"platinum\" does not exist",
        ),
        bad(
            "unknown reply_qos class",
            13,
            "    qos: gold\n    reply_qos: bronze",
            14,
            "services[0].reply_qos",
            "\"bronze\"",
        ),
        bad(
            "bad DSCP in a class",
            7,
            "    dscp: af51",
            7,
            "qos.gold.dscp",
            "af51",
        ),
        bad(
            "bad DSCP inline",
            30,
            "    qos: { dscp: xx }",
            30,
            "flows[0].qos.dscp",
            "\"xx\"",
        ),
        bad(
            "DSCP number too big",
            7,
            "    dscp: 64",
            7,
            "qos.gold.dscp",
            "64",
        ),
        bad(
            "bad DSCP in match",
            27,
            "      dscp: af99",
            27,
            "flows[0].match.dscp",
            "af99",
        ),
        bad(
            "pcp out of range",
            7,
            "    dscp: af41\n    pcp: 9",
            8,
            "qos.gold.pcp",
            "9",
        ),
        // Ports.
        bad(
            "service port out of range",
            12,
            "    ports: [80, 70000]",
            12,
            "services[0].ports[1]",
            "70000",
        ),
        bad(
            "service port range out of range",
            21,
            "    ports: [\"1000-65536\"]",
            21,
            "services[1].ports[0]",
            "65536",
        ),
        bad(
            "match port out of range",
            28,
            "      dst_port: 70000",
            28,
            "flows[0].match.dst_port",
            "70000",
        ),
        // Other values, and keys on an item's own `- ` line.
        bad(
            "flow rule named like an advertised-flow slot",
            25,
            "  - name: advertised-0",
            25,
            "flows[0].name",
            "the control plane's advertised-flow slots",
        ),
        bad(
            "duplicate flow rule name",
            30,
            "    qos: { dscp: ef }\n  - { name: r, match: { proto: tcp }, to: gateway }",
            31,
            "flows[1].name",
            "duplicate flow rule name \"r\"",
        ),
        // An empty name marks a free index in a running system: never a file's.
        bad(
            "empty service name",
            9,
            "  - name: \"\"",
            9,
            "services[0].name",
            "a service needs a name",
        ),
        bad(
            "empty server name",
            15,
            "      - name: \"\"",
            15,
            "services[0].servers[0].name",
            "a server needs a name",
        ),
        bad(
            "a server limited to no flows",
            16,
            "        mac: \"02:00:00:00:01:01\"\n        max_flows: 0",
            17,
            "services[0].servers[0].max_flows",
            "max_flows must be at least 1 (leave it out for no limit)",
        ),
        bad(
            "a passive check taking a server out at no failure",
            16,
            "        mac: \"02:00:00:00:01:01\"\n        max_fails: 0",
            17,
            "services[0].servers[0].max_fails",
            "max_fails must be at least 1 (leave it out for no passive check)",
        ),
        bad(
            "fail_timeout without max_fails",
            16,
            "        mac: \"02:00:00:00:01:01\"\n        fail_timeout: 5",
            17,
            "services[0].servers[0].fail_timeout",
            "fail_timeout needs max_fails",
        ),
        bad(
            "fail_timeout out of range",
            16,
            "        mac: \"02:00:00:00:01:01\"\n        max_fails: 3\n        fail_timeout: 0",
            18,
            "services[0].servers[0].fail_timeout",
            "fail_timeout 0 is not in 1..=3600 seconds",
        ),
        bad(
            "a rate limit of no new flows",
            13,
            "    qos: gold\n    rate_limit: { per_source: 0 }",
            14,
            "services[0].rate_limit.per_source",
            "per_source 0 is not in 1..=10000000",
        ),
        bad(
            "a rate limit of nothing",
            13,
            "    qos: gold\n    rate_limit: { ipv4_prefix: 24 }",
            14,
            "services[0].rate_limit",
            "a rate_limit needs per_source, total or both",
        ),
        bad(
            "a total burst without a total",
            13,
            "    qos: gold\n    rate_limit:\n      per_source: 5\n      total_burst: 9",
            16,
            "services[0].rate_limit.total_burst",
            "total_burst needs total",
        ),
        bad(
            "a rate limit's burst out of range",
            13,
            "    qos: gold\n    rate_limit:\n      per_source: 5\n      burst: 20000000",
            16,
            "services[0].rate_limit.burst",
            "burst 20000000 is not in 1..=10000000",
        ),
        bad(
            "backup not a boolean",
            16,
            "        mac: \"02:00:00:00:01:01\"\n        backup: maybe",
            17,
            "services[0].servers[0].backup",
            "expected a boolean",
        ),
        bad(
            "empty flow rule name",
            25,
            "  - name: \"\"",
            25,
            "flows[0].name",
            "a flow rule needs a name",
        ),
        bad(
            "duplicate service name",
            18,
            "  - name: web",
            18,
            "services[1].name",
            "duplicate service name",
        ),
        bad(
            "server listed twice",
            15,
            "      - name: w1\n        mac: \"02:00:00:00:01:01\"\n      - name: w1",
            17,
            "services[0].servers[1].name",
            "listed twice",
        ),
        bad(
            "unknown forwarding mode",
            4,
            "  gateway: \"02:00:00:00:00:fe\"\n  mode: bridge",
            5,
            "system.mode",
            "unknown mode \"bridge\" (switch, router)",
        ),
        bad(
            "negative ICMP rate",
            4,
            "  gateway: \"02:00:00:00:00:fe\"\n  icmp_rate: -5",
            5,
            "system.icmp_rate",
            "-5",
        ),
        bad(
            "an MTU below IPv6's minimum",
            4,
            "  gateway: \"02:00:00:00:00:fe\"\n  mtu: 1000",
            5,
            "system.mtu",
            "mtu 1000 is out of range (1280..=16000",
        ),
        bad(
            "a port's MTU out of range",
            4,
            "  gateway: \"02:00:00:00:00:fe\"\n  mtu:\n    inside: 9000\n    outside: 70",
            7,
            "system.mtu.outside",
            "mtu 70 is out of range (1280..=16000",
        ),
        bad(
            "an MTU that is neither a number nor a map",
            4,
            "  gateway: \"02:00:00:00:00:fe\"\n  mtu: [1500]",
            5,
            "system.mtu",
            "mtu must be a number, or a map from port names to numbers",
        ),
        bad(
            "unknown no_server",
            13,
            "    qos: gold\n    no_server: refuse",
            14,
            "services[0].no_server",
            "unknown no_server \"refuse\" (drop, reject)",
        ),
        bad(
            "unknown policy",
            11,
            "    proto: tcp\n    policy: fastest",
            12,
            "services[0].policy",
            "fastest",
        ),
        bad(
            "a tcp service without ports",
            12,
            "",
            9,
            "services[0].name",
            "a tcp service needs `ports`",
        ),
        bad(
            "unknown affinity",
            11,
            "    proto: tcp\n    affinity: sticky",
            12,
            "services[0].affinity",
            "unknown affinity \"sticky\" (connection, source)",
        ),
        bad(
            "unknown key in an affinity map",
            11,
            "    proto: tcp\n    affinity: { by: source, ipv4_prefx: 24 }",
            12,
            "services[0].affinity.ipv4_prefx",
            "unknown field",
        ),
        bad(
            "affinity prefix out of range",
            11,
            "    proto: tcp\n    affinity:\n      by: source\n      ipv6_prefix: 129",
            14,
            "services[0].affinity.ipv6_prefix",
            "ipv6_prefix 129 is not in 1..=128",
        ),
        bad(
            "prefixes with connection affinity",
            11,
            "    proto: tcp\n    affinity: { by: connection, ipv4_prefix: 24 }",
            12,
            "services[0].affinity",
            "prefixes apply to `by: source` only",
        ),
        bad(
            "unknown server state",
            16,
            "        mac: \"02:00:00:00:01:01\"\n        state: asleep",
            17,
            "services[0].servers[0].state",
            "asleep",
        ),
        bad(
            "load out of range",
            17,
            "      - { name: w2, mac: \"02:00:00:00:01:02\", load: 1.5 }",
            17,
            "services[0].servers[1].load",
            "1.5",
        ),
        bad(
            "unknown in_port",
            27,
            "      in_port: eth9",
            27,
            "flows[0].match.in_port",
            "eth9",
        ),
        bad(
            "unknown ethertype",
            27,
            "      ethertype: ipx",
            27,
            "flows[0].match.ethertype",
            "ipx",
        ),
        bad(
            "unknown protocol",
            20,
            "    proto: quic",
            20,
            "services[1].proto",
            "quic",
        ),
        bad(
            "vlan out of range",
            27,
            "      vlan: 5000",
            27,
            "flows[0].match.vlan",
            "5000",
        ),
        bad(
            "push_vlan vid out of range",
            13,
            "    qos: { push_vlan: { vid: 5000 } }",
            13,
            "services[0].qos.push_vlan",
            "5000",
        ),
        bad(
            "bad tpid",
            13,
            "    qos: { push_vlan: { vid: 5, tpid: 0x8847 } }",
            13,
            "services[0].qos.push_vlan",
            "tpid",
        ),
        bad(
            "MPLS label out of range",
            7,
            "    push_mpls: { label: 1048576 }",
            7,
            "qos.gold.push_mpls",
            "1048576",
        ),
        bad(
            "MPLS tc out of range",
            13,
            "    qos: { push_mpls: { label: 5, tc: 8 } }",
            13,
            "services[0].qos.push_mpls",
            "tc 8",
        ),
        bad(
            "bad default",
            31,
            "default: nowhere",
            31,
            "default",
            "nowhere",
        ),
        bad(
            "flow table capacity 0",
            31,
            "default: gateway\nflow_table:\n  capacity: 0",
            33,
            "flow_table.capacity",
            "1..=",
        ),
        // Timeouts in seconds that overflow u64 nanoseconds are errors, not a wrap.
        bad(
            "flow table timeout overflows",
            31,
            "default: gateway\nflow_table:\n  idle_timeout: 18446744073709551615",
            33,
            "flow_table.idle_timeout",
            "too long",
        ),
        bad(
            "rule idle timeout overflows",
            29,
            "    to: gateway\n    idle_timeout: 18446744073709",
            30,
            "flows[0].idle_timeout",
            "too long",
        ),
        // Targets and Maglev table size.
        bad(
            "unknown to: target",
            29,
            "    to: nowhere",
            29,
            "flows[0].to",
            "\"nowhere\"",
        ),
        bad(
            "non-prime table_size",
            13,
            "    qos: gold\n    table_size: 100",
            14,
            "services[0].table_size",
            "100",
        ),
        bad(
            "non-prime table_size (2nd)",
            21,
            "    ports: [53]\n    table_size: 65536",
            22,
            "services[1].table_size",
            "65536",
        ),
    ]
}

#[test]
fn bad_pipelines_exit_2_and_point_at_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let mut errors = Vec::new();
    for (i, b) in bads().iter().enumerate() {
        let f = tmp.path().join(format!("bad{i}.yaml"));
        std::fs::write(&f, mutate(b.line, b.text)).unwrap();
        let (code, out, err) = run_check(&f);
        let err = err.trim();
        let file = f.display().to_string();
        let prefix = format!("error: {file}:{}: ", b.want_line);
        let keyed = if b.want_key.is_empty() {
            prefix.clone()
        } else {
            format!("{prefix}{}: ", b.want_key)
        };
        if code != 2 {
            errors.push(format!("{}: exit {code}, want 2 (stderr {err:?})", b.what));
        } else if !out.is_empty() {
            errors.push(format!("{}: printed a summary for a bad file", b.what));
        } else if !err.starts_with(&keyed) {
            errors.push(format!(
                "{}: stderr {err:?}, want it to start with {keyed:?}",
                b.what
            ));
        } else if !err.contains(b.want_msg) {
            errors.push(format!(
                "{}: stderr {err:?} does not mention {:?}",
                b.what, b.want_msg
            ));
        }
    }
    assert!(
        errors.is_empty(),
        "{} of {} cases wrong:\n{}",
        errors.len(),
        bads().len(),
        errors.join("\n")
    );
}

#[test]
fn affinity_is_summarised() {
    let tmp = tempfile::tempdir().unwrap();
    for (line, want) in [
        ("    proto: tcp", "affinity connection"),
        (
            "    proto: tcp\n    affinity: source",
            "affinity source (IPv4 /32, IPv6 /64)",
        ),
        (
            "    proto: tcp\n    affinity: { by: source, ipv4_prefix: 24, ipv6_prefix: 56 }",
            "affinity source (IPv4 /24, IPv6 /56)",
        ),
        (
            "    proto: tcp\n    affinity: connection",
            "affinity connection",
        ),
    ] {
        let f = tmp.path().join("a.yaml");
        std::fs::write(&f, mutate(11, line)).unwrap();
        let (code, out, err) = run_check(&f);
        assert_eq!(code, 0, "{line}: {err}");
        let web = out
            .lines()
            .find(|l| l.starts_with("service web "))
            .expect("the web service line");
        assert!(web.contains(want), "{line}: {web}");
    }
}

#[test]
fn reload_from_says_whether_a_run_would_take_it() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old.yaml");
    std::fs::write(&old, BASE).unwrap();
    let check = |text: &str| {
        let f = tmp.path().join("new.yaml");
        std::fs::write(&f, text).unwrap();
        let o = common::flowgate()
            .args(["check", "--pipeline"])
            .arg(&f)
            .arg("--reload-from")
            .arg(&old)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // A server added to `web` (line 17 is its last) and a new service at the end.
    let grown = mutate(17, "      - { name: w2, mac: \"02:00:00:00:01:02\" }\n      - { name: w3, mac: \"02:00:00:00:01:03\" }")
        .replace(
            "flows:\n",
            "  - name: ntp\n    vip: 192.0.2.123\n    proto: udp\n    ports: [123]\n    servers:\n      - { name: n1, mac: \"02:00:00:00:05:01\" }\nflows:\n",
        );
    let (code, out, err) = check(&grown);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("accepted (adds servers 2, services 1, service members 2)"),
        "{out}"
    );
    // The services swapped: taken, and said.
    let (at, end) = (
        BASE.find("  - name: dns").unwrap(),
        BASE.find("flows:").unwrap(),
    );
    let web = BASE.find("  - name: web").unwrap();
    let swapped = format!(
        "{}{}{}{}",
        &BASE[..web],
        &BASE[at..end],
        &BASE[web..at],
        &BASE[end..]
    );
    let (code, out, err) = check(&swapped);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("accepted (adds servers 0, services 0, service members 0); services reordered: [\"dns\", \"web\"]"),
        "{out}"
    );
    // A server added before the running ones: taken, no running one reordered; w1 and
    // w2 swapped: taken, and said.
    let w0 = "      - { name: w0, mac: \"02:00:00:00:01:00\" }\n      - name: w1\n";
    let (code, out, err) = check(&BASE.replacen("      - name: w1\n", w0, 1));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("accepted (adds servers 1, services 0, service members 1)")
            && !out.contains("reordered"),
        "{out}"
    );
    let swapped = BASE.replace(
        "      - name: w1\n        mac: \"02:00:00:00:01:01\"\n      - { name: w2, mac: \"02:00:00:00:01:02\" }\n",
        "      - { name: w2, mac: \"02:00:00:00:01:02\" }\n      - name: w1\n        mac: \"02:00:00:00:01:01\"\n",
    );
    assert_ne!(swapped, BASE);
    let (code, out, err) = check(&swapped);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("; servers of service \"web\" reordered: [\"w2\", \"w1\"]"),
        "{out}"
    );
    // w2 removed from `web` (and so from the file): taken, w2 kept down.
    let (code, out, err) = check(&mutate(17, ""));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("removed servers [\"w2\"] kept down until their last flow ends"),
        "{out}"
    );
    // Timeouts changed: taken, and said to apply to the open flows.
    let longer = BASE.replace(
        "services:\n",
        "flow_table: { tcp_established_timeout: 3600, idle_timeout: 30 }\nservices:\n",
    );
    let (code, out, err) = check(&longer);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("timeouts changed, open flows included: tcp_established_timeout 300 → 3600 s, idle_timeout 60 → 30 s"),
        "{out}"
    );
    // An `allow` list given to `web`: taken, and said to cut the open flows of the
    // clients it leaves out; none given to a service that had none (dns) is no news.
    let allow = |nets: &str| {
        BASE.replace(
            "    qos: gold\n",
            &format!("    qos: gold\n    allow: {nets}\n"),
        )
    };
    let (code, out, err) = check(&allow("[198.51.100.0/24]"));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("; service \"web\" allows fewer clients: open flows of those left out cut")
            && !out.contains("\"dns\" allows"),
        "{out}"
    );
    // From a list to a wider one, or to none: nothing cut.
    std::fs::write(&old, allow("[198.51.100.0/24]")).unwrap();
    for wider in [allow("[198.51.100.0/23, 203.0.113.7]"), BASE.to_string()] {
        let (code, out, err) = check(&wider);
        assert_eq!(code, Some(0), "{err}");
        assert!(!out.contains("allows fewer"), "{out}");
    }
    let (code, out, err) = check(&allow("[198.51.100.128/25]"));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("\"web\" allows fewer clients"), "{out}");
    std::fs::write(&old, BASE).unwrap();
    // The flow table's size: taken, a new table.
    let (code, out, err) =
        check(&BASE.replace("services:\n", "flow_table: { capacity: 1000 }\nservices:\n"));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("; flow table resized: 1048576 → 1000 flows a worker, open flows moving into the new table"),
        "{out}"
    );
    // The pattern rule renamed: a new rule, the old one kept for its open flows.
    let (code, out, err) = check(&BASE.replace("  - name: r\n", "  - name: r2\n"));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("; flow rules added: [\"r2\"]; flow rules removed: [\"r\"], kept for their open flows until they end"),
        "{out}"
    );
    // A rule added before it, with a timeout of its own (a new timeout class): taken,
    // and the running rule's priority order is unchanged.
    let ntp = "  - name: ntp\n    match: { proto: udp, dst_port: 123 }\n    to: gateway\n    idle_timeout: 45\n";
    let (code, out, err) = check(&BASE.replace("flows:\n", &format!("flows:\n{ntp}")));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("; flow rules added: [\"ntp\"]") && !out.contains("reordered"),
        "{out}"
    );
    // Two running rules swapped: said.
    let two = BASE.replace("flows:\n", &format!("flows:\n{ntp}"));
    std::fs::write(&old, &two).unwrap();
    let swapped = BASE.replace("default: gateway", &format!("{ntp}default: gateway"));
    let (code, out, err) = check(&swapped);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        !out.contains("added") && out.contains("; flow rules reordered: [\"r\", \"ntp\"]"),
        "{out}"
    );
    // A running rule's timeout moved to another rule's value: taken, its open flows
    // with it, and said.
    let joined = two.replace(
        "    qos: { dscp: ef }\n",
        "    qos: { dscp: ef }\n    idle_timeout: 45\n",
    );
    let (code, out, err) = check(&joined);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(
            "timeouts changed, open flows included: flow rule \"r\" idle_timeout 60 → 45 s"
        ),
        "{out}"
    );
}

#[test]
fn missing_file_exits_2_and_names_it() {
    let (code, out, err) = run_check(Path::new("/nonexistent/pipe.yaml"));
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("/nonexistent/pipe.yaml"), "{err}");
}

fn shipped() -> Vec<PathBuf> {
    let v = common::shipped_pipelines();
    assert!(v.len() >= 4, "expected the shipped pipelines, found {v:?}");
    v
}

/// Every shipped pipeline passes, and the summary agrees with the YAML read independently
/// (serde_yaml_ng into a generic value): each service and its servers appear, each flow
/// rule appears, and Maglev shares follow the weights (±2 points; 100% in total).
#[test]
fn every_shipped_pipeline_checks() {
    for f in shipped() {
        let (code, out, err) = run_check(&f);
        assert_eq!(code, 0, "{}: {err}", f.display());
        assert!(
            out.starts_with(&format!("pipeline {}: OK\n", f.display())),
            "{out}"
        );
        assert!(out.contains("\ndefault -> "), "{out}");
        assert!(out.contains("\nclassifier: "), "{out}");
        let y: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        for s in y
            .get("services")
            .and_then(|v| v.as_sequence())
            .into_iter()
            .flatten()
        {
            let name = s["name"].as_str().unwrap();
            assert!(
                out.contains(&format!("\nservice {name} vip ")),
                "{}: {name} missing:\n{out}",
                f.display()
            );
            let servers = s["servers"].as_sequence().unwrap();
            let total: f64 = servers
                .iter()
                .map(|v| v.get("weight").and_then(|w| w.as_f64()).unwrap_or(100.0))
                .sum();
            let mut sum = 0.0;
            for v in servers {
                let sn = v["name"].as_str().unwrap();
                let w = v.get("weight").and_then(|w| w.as_f64()).unwrap_or(100.0);
                let line = out
                    .lines()
                    .find(|l| l.starts_with(&format!("  server {sn} mac ")))
                    .unwrap_or_else(|| panic!("{}: server {sn} missing:\n{out}", f.display()));
                let share: f64 = line
                    .rsplit("share ")
                    .next()
                    .and_then(|s| s.trim_end_matches('%').parse().ok())
                    .unwrap_or_else(|| panic!("no share in {line:?}"));
                sum += share;
                let want = 100.0 * w / total;
                assert!(
                    (share - want).abs() <= 2.0,
                    "{}: {sn} share {share}%, weights say {want:.1}%",
                    f.display()
                );
            }
            assert!(
                (sum - 100.0).abs() < 0.5,
                "{}: shares of {name} sum to {sum}",
                f.display()
            );
        }
        for r in y
            .get("flows")
            .and_then(|v| v.as_sequence())
            .into_iter()
            .flatten()
        {
            let name = r["name"].as_str().unwrap();
            assert!(
                out.contains(&format!("\nflow rule {name} -> ")),
                "{}: rule {name} missing:\n{out}",
                f.display()
            );
        }
    }
}
