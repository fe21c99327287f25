//! `rte_acl` as a `Classifier`: on ClassBench acl1_1K it must agree with the trace's
//! expected first-match column and with the reference `Linear` matcher, for every
//! classify algorithm the CPU offers; plus the fallback paths (IPv6 keys, ethertype) and
//! the refusals. One test function (one EAL per process); run as root.
#![cfg(feature = "dpdk")]

use std::path::{Path, PathBuf};

use flowgate::classify::linear::Linear;
use flowgate::classify::{Classifier, Decision, Key, Range, Rule, prefix_range, v4_mapped};
use flowgate::port::dpdk::{AclAlg, AclClassifier, DpdkError, Eal};

fn shared(rel: &str) -> Option<PathBuf> {
    let p = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared")).join(rel);
    if p.exists() {
        return Some(p);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{} is missing (required when CI=true)", p.display());
    }
    eprintln!("note: {} missing, test skipped", p.display());
    None
}

fn parse_v4(s: &str) -> [u8; 4] {
    let mut a = [0u8; 4];
    let mut it = s.split('.');
    for b in &mut a {
        *b = it
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("bad address {s}"));
    }
    a
}

fn parse_prefix(s: &str) -> Range<u128> {
    let (a, l) = s
        .split_once('/')
        .unwrap_or_else(|| panic!("bad prefix {s}"));
    let l: u8 = l
        .parse()
        .unwrap_or_else(|_| panic!("bad prefix length {s}"));
    assert!(l <= 32);
    prefix_range(v4_mapped(parse_v4(a)), 96 + l)
}

fn hex_u8(s: &str) -> u8 {
    u8::from_str_radix(s.trim_start_matches("0x").trim_start_matches("0X"), 16)
        .unwrap_or_else(|_| panic!("bad hex {s}"))
}

/// ClassBench rules in the DPDK test-acl dialect; rule `i` decides `FlowRule(i)`.
fn parse_rules(text: &str) -> Vec<Rule> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(line) = line.strip_prefix('@') else {
            continue;
        };
        let t: Vec<&str> = line.split_whitespace().collect();
        assert!(
            t.len() >= 9 && t[3] == ":" && t[6] == ":",
            "bad rule line {line}"
        );
        let mut r = Rule::any(Decision::FlowRule(out.len() as u32));
        r.src = parse_prefix(t[0]);
        r.dst = parse_prefix(t[1]);
        let num = |s: &str| s.parse::<u16>().unwrap_or_else(|_| panic!("bad port {s}"));
        r.src_port = Range::new(num(t[2]), num(t[4]));
        r.dst_port = Range::new(num(t[5]), num(t[7]));
        let (v, m) = t[8]
            .split_once('/')
            .unwrap_or_else(|| panic!("bad proto {}", t[8]));
        r.proto = match hex_u8(m) {
            0xff => Range::exact(hex_u8(v)),
            0x00 => Range::new(0, 255),
            m => panic!("proto mask {m:#x} not in the format"),
        };
        out.push(r);
    }
    out
}

/// Trace keys and the expected 1-based first-match rule.
fn parse_trace(text: &str) -> Vec<(Key, u32)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .map(|x| x.parse().unwrap_or_else(|_| panic!("bad trace {l}")))
                .collect();
            assert!(v.len() >= 6, "bad trace line {l}");
            let key = Key {
                src: v4_mapped((v[0] as u32).to_be_bytes()),
                dst: v4_mapped((v[1] as u32).to_be_bytes()),
                src_port: v[2] as u16,
                dst_port: v[3] as u16,
                proto: v[4] as u8,
                ethertype: 0x0800,
                ..Key::default()
            };
            (key, v[5] as u32)
        })
        .collect()
}

#[test]
fn dpdk_acl_classbench_and_fallbacks() {
    let (Some(rp), Some(tp)) = (
        shared("classbench/rules/acl1_1K"),
        shared("classbench/traces/acl1_1K_trace"),
    ) else {
        return;
    };
    let rules = parse_rules(&std::fs::read_to_string(rp).expect("rules"));
    let trace = parse_trace(&std::fs::read_to_string(tp).expect("trace"));
    assert_eq!(rules.len(), 917);
    assert_eq!(trace.len(), 9380);
    let keys: Vec<Key> = trace.iter().map(|t| t.0).collect();

    let args: Vec<String> = [
        "-l",
        "0",
        "--no-huge",
        "-m",
        "512",
        "--no-pci",
        "--no-telemetry",
        "--file-prefix",
        "fg_test_acl",
        "--force-max-simd-bitwidth=512",
        "--log-level",
        "lib.eal:error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let eal = Eal::init(&args).expect("EAL init (run as root)");

    let linear = Linear::new(rules.clone());
    let best = AclClassifier::new(&eal, &rules).expect("acl build");
    let best_alg = best.alg().expect("an algorithm");
    eprintln!(
        "rte_acl on acl1_1K: alg {best_alg:?}, {} bytes",
        best.bytes()
    );
    assert!(best.bytes() > 0);

    let mut tested = 0;
    for alg in AclAlg::PREFERENCE {
        let acl = match AclClassifier::with_algs(&eal, &rules, &[alg]) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("{alg:?} unavailable: {e}");
                assert_ne!(alg, AclAlg::Scalar, "scalar always works");
                continue;
            }
        };
        assert_eq!(acl.alg(), Some(alg));
        let mut got = vec![None; keys.len()];
        acl.lookup_batch(&keys, &mut got);
        let mism_trace = got
            .iter()
            .zip(&trace)
            .filter(|(g, t)| g.map(|i| i + 1) != Some(t.1))
            .count();
        assert_eq!(mism_trace, 0, "{alg:?}: mismatches vs trace column 6");
        let mism_linear = keys
            .iter()
            .zip(&got)
            .filter(|(k, g)| linear.lookup(k) != **g)
            .count();
        assert_eq!(mism_linear, 0, "{alg:?}: mismatches vs Linear");
        tested += 1;
    }
    assert!(tested >= 2, "at least SSE and scalar on x86-64");

    // Single lookups and the Decision interface agree with the batch.
    let mut dec = vec![Decision::NoMatch; keys.len()];
    best.classify_batch(&keys, &mut dec);
    for ((k, d), t) in keys.iter().zip(&dec).zip(&trace) {
        assert_eq!(*d, Decision::FlowRule(t.1 - 1));
        assert_eq!(best.classify(k), *d);
        assert_eq!(best.lookup(k), Some(t.1 - 1));
    }

    // Keys the trie cannot take fall back to a scan: an IPv6 key, a non-IPv4 ethertype.
    let mut v6_any = Rule::any(Decision::Service(1));
    v6_any.proto = Range::exact(17);
    v6_any.dst_port = Range::exact(53);
    let mut v4_only = Rule::any(Decision::Service(2));
    v4_only.ethertype = Range::exact(0x0800);
    v4_only.dst = prefix_range(v4_mapped([10, 0, 0, 0]), 96 + 8);
    let small = vec![v4_only, v6_any];
    let acl = AclClassifier::new(&eal, &small).expect("build");
    let lin = Linear::new(small.clone());
    let v6 = Key {
        src: 0x2001_0db8 << 96 | 1,
        dst: 0x2001_0db8 << 96 | 2,
        proto: 17,
        dst_port: 53,
        ethertype: 0x86dd,
        ..Key::default()
    };
    let v4 = Key {
        src: v4_mapped([192, 0, 2, 1]),
        dst: v4_mapped([10, 1, 2, 3]),
        proto: 6,
        ethertype: 0x0800,
        ..Key::default()
    };
    let v4_odd_ether = Key {
        ethertype: 0x86dd,
        ..v4
    };
    let v4_dns = Key {
        proto: 17,
        dst_port: 53,
        ..v4_odd_ether
    };
    for k in [
        v6,
        v4,
        v4_odd_ether,
        v4_dns,
        Key {
            proto: 17,
            dst_port: 53,
            ..v4
        },
    ] {
        assert_eq!(acl.classify(&k), lin.classify(&k), "{k:?}");
    }
    assert_eq!(acl.classify(&v6), Decision::Service(1));
    assert_eq!(acl.classify(&v4), Decision::Service(2));
    assert_eq!(acl.classify(&v4_odd_ether), Decision::NoMatch);

    // Refusals and the empty set.
    let mut vlan = Rule::any(Decision::NoMatch);
    vlan.vlan = Range::exact(100);
    match AclClassifier::new(&eal, &[Rule::any(Decision::NoMatch), vlan]) {
        Err(DpdkError::UnsupportedRule { index: 1, reason }) => assert!(reason.contains("vlan")),
        other => panic!("expected UnsupportedRule, got {other:?}"),
    }
    let mut v6rule = Rule::any(Decision::NoMatch);
    v6rule.src = prefix_range(0x2001_0db8 << 96, 32);
    assert!(matches!(
        AclClassifier::new(&eal, &[v6rule]),
        Err(DpdkError::UnsupportedRule { index: 0, .. })
    ));
    let empty = AclClassifier::new(&eal, &[]).expect("empty");
    assert_eq!(empty.classify(&v4), Decision::NoMatch);
    drop((best, acl, empty));
    drop(eal);
}
