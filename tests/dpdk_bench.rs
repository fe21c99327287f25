//! `flowgate bench` end to end (feature `dpdk`, root): a short run with few flows prints
//! the JSON the issue specifies, with positive rates and `ratio == flowgate / testpmd`,
//! the second testpmd run with a packed pool (`--no-huge`), and the page-walk probe's two
//! timings.
//! (The bench itself refuses to report when a measured packet was dropped or created a
//! flow, so a success also says every packet took the established-flow path.)
#![cfg(feature = "dpdk")]

mod common;

use common::{flowgate, in_ci, root};
use std::process::Command;

#[test]
fn bench_prints_rates_and_ratio() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let testpmd = Command::new("dpdk-testpmd").arg("-h").output().is_ok();
    if !(is_root && testpmd) {
        assert!(!in_ci(), "the bench test needs root and dpdk-testpmd in CI");
        eprintln!("SKIP: needs root and dpdk-testpmd");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("bench.yaml");
    std::fs::write(
        &conf,
        format!(
            "pipeline: {}\neal: [\"--no-huge\", \"-m\", \"1024\", \"--no-pci\", \"--no-telemetry\", \"--file-prefix\", \"fgt-bench-{}\"]\n\
             lcores: {{ management: 0, workers: [1], cpus: \"0-1\" }}\n\
             ports:\n  - {{ name: rx, device: net_null0 }}\n  - {{ name: tx, device: net_null1 }}\n\
             mempool: {{ mbufs: 16383, cache: 256 }}\n",
            root().join("pipelines/web-farm.yaml").display(),
            std::process::id()
        ),
    )
    .expect("conf");
    let j = bench_json(&conf, &["--flows", "5000", "--seconds", "1"]);
    let f = j["flowgate_mpps"].as_f64().expect("flowgate_mpps");
    let t = j["testpmd_mpps"].as_f64().expect("testpmd_mpps");
    let r = j["ratio"].as_f64().expect("ratio");
    assert!(f > 0.0 && t > 0.0, "{j}");
    assert!((r - f / t).abs() < 1e-9, "{j}");
    // Without hugepages flowgate's pool is packed, and testpmd ran a second time with a
    // packed pool of its own.
    assert_eq!(j["pool"], "packed", "{j}");
    let tp = j["testpmd_packed_mpps"]
        .as_f64()
        .expect("testpmd_packed_mpps");
    let rp = j["ratio_packed"].as_f64().expect("ratio_packed");
    assert!(tp > 0.0 && (rp - f / tp).abs() < 1e-9, "{j}");
    assert_eq!(j["io_only"], serde_json::Value::Bool(false), "{j}");
    // The page-walk probe ran: both layouts timed over the same lines.
    let w = &j["page_walk"];
    assert_eq!(w["lines"].as_u64(), Some(16384), "{j}");
    for k in ["packed_ns", "spread_ns"] {
        let ns = w[k].as_f64().expect(k);
        assert!(ns.is_finite() && ns > 0.0 && ns < 10_000.0, "{k}: {j}");
    }

    // The loop alone: no testpmd, a rate of its own, flagged as such.
    let j = bench_json(
        &conf,
        &[
            "--flows",
            "1000",
            "--seconds",
            "0.5",
            "--no-testpmd",
            "--io-only",
        ],
    );
    assert!(
        j["flowgate_mpps"].as_f64().expect("flowgate_mpps") > 0.0,
        "{j}"
    );
    assert_eq!(j["io_only"], serde_json::Value::Bool(true), "{j}");
    for k in [
        "testpmd_mpps",
        "ratio",
        "testpmd_packed_mpps",
        "ratio_packed",
    ] {
        assert!(j[k].is_null(), "{k}: {j}");
    }
}

/// Runs `flowgate bench --json --conf conf ARGS`; its JSON line, after checking it exited 0.
fn bench_json(conf: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let o = flowgate()
        .arg("bench")
        .args(args)
        .args(["--json", "--conf"])
        .arg(conf)
        .output()
        .expect("bench");
    assert!(
        o.status.success(),
        "bench {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}
