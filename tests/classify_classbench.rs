//! The compiled classifier on the hold-out ClassBench sets: every trace lookup must give
//! the trace's expected first-match rule (column 6, checked independently of this code,
//! see ../shared/classbench/SOURCES.md). Fails when `CI=true` and the data is missing;
//! otherwise skips with a note.

use flowgate::classify::Classifier;
use flowgate::classify::bench_cmd::count_mismatches;
use flowgate::classify::classbench::{parse_rules, parse_trace};
use flowgate::classify::compiled::Compiled;
use std::path::PathBuf;

fn data_dir() -> Option<PathBuf> {
    let d = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/classbench"));
    if d.join("rules").is_dir() {
        return Some(d);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "ClassBench data missing at {} (required when CI=true)",
        d.display()
    );
    eprintln!("note: {} missing, skipping ClassBench checks", d.display());
    None
}

fn check_set(name: &str) {
    let Some(d) = data_dir() else { return };
    let rules = std::fs::read_to_string(d.join("rules").join(name)).expect("rules file");
    let trace =
        std::fs::read_to_string(d.join("traces").join(format!("{name}_trace"))).expect("trace");
    let rules = parse_rules(&rules).expect("valid rules");
    let trace = parse_trace(&trace).expect("valid trace");
    assert!(!rules.is_empty() && !trace.is_empty());
    let c = Compiled::build(&rules);
    assert_eq!(
        count_mismatches(&c, &trace),
        0,
        "{name}: mismatches vs trace column 6"
    );
    // Spot-check the expected column itself against a brute-force scan on a sample.
    for t in trace.iter().step_by(997) {
        let want = rules
            .iter()
            .position(|r| r.matches(&t.key))
            .map(|i| i as u32);
        assert_eq!(want, t.expected, "{name}: trace column 6 vs brute force");
        assert_eq!(c.lookup(&t.key), want);
    }
}

#[test]
fn acl1_1k() {
    check_set("acl1_1K");
}
#[test]
fn fw1_1k() {
    check_set("fw1_1K");
}
#[test]
fn ipc1_1k() {
    check_set("ipc1_1K");
}
#[test]
fn acl1_10k() {
    check_set("acl1_10K");
}
#[test]
fn fw1_10k() {
    check_set("fw1_10K");
}
#[test]
fn ipc1_10k() {
    check_set("ipc1_10K");
}
#[test]
fn acl1_100k() {
    check_set("acl1_100K");
}
