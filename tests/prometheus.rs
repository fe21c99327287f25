//! `flowgate replay --prometheus FILE`: the exposition text parses with the Prometheus
//! project's Python client (`prometheus_client.parser`, the independent oracle), every
//! family has the type its name says, and the samples equal the stats JSON of the same
//! run, drop reasons included.

mod common;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// What the oracle read: (sample name, labels) → value, and family name → type.
type Parsed = (
    BTreeMap<(String, BTreeMap<String, String>), f64>,
    BTreeMap<String, String>,
);

fn parse(file: &Path) -> Parsed {
    // Debian's python3 (the one scapy runs under) with python3-prometheus-client.
    let out = common::scapy(&format!(
        "import json\n\
         from prometheus_client.parser import text_string_to_metric_families\n\
         fams = list(text_string_to_metric_families(open({:?}).read()))\n\
         print(json.dumps({{'types': {{f.name: f.type for f in fams}},\n\
           'samples': [[s.name, s.labels, s.value] for f in fams for s in f.samples]}}))\n",
        file.display().to_string()
    ));
    let j: Value = serde_json::from_str(out.trim()).expect("oracle JSON");
    let mut samples = BTreeMap::new();
    for s in j["samples"].as_array().expect("samples") {
        let labels: BTreeMap<String, String> = s[1]
            .as_object()
            .expect("labels")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("label value").to_string()))
            .collect();
        let key = (s[0].as_str().expect("name").to_string(), labels);
        assert!(
            samples
                .insert(key.clone(), s[2].as_f64().expect("value"))
                .is_none(),
            "duplicate sample {key:?}"
        );
    }
    let types = j["types"]
        .as_object()
        .expect("types")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    (samples, types)
}

fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn replay_prometheus_agrees_with_the_stats_json() {
    // Debian's python3 with python3-prometheus-client (required in CI).
    if !common::have(common::SCAPY_PY, &["-c", "import prometheus_client"]) {
        return;
    }
    let sample = common::root().join("samples/web-farm.pcap");
    let farm = common::root().join("pipelines/web-farm.yaml");
    let mut inputs = vec![(farm.clone(), sample.clone())];
    // Third-party traffic that the web farm drops for several reasons.
    for c in [
        "captures/ndpi_ip_fragmented_garbage.pcap",
        "captures/suricata_decode-too-small.pcap",
    ] {
        inputs.extend(common::shared(c).map(|c| (farm.clone(), c)));
    }
    // Services with a backup, a rate limit and an allow list: their own families.
    inputs.push((common::root().join("tests/data/guarded.yaml"), sample));
    let tmp = tempfile::tempdir().unwrap();
    let mut reasons_seen = 0;
    let mut optional_seen = 0;
    for (pipeline, input) in &inputs {
        let (json, prom) = (tmp.path().join("s.json"), tmp.path().join("s.prom"));
        let out = common::flowgate()
            .args(["replay", "-q", "--pipeline"])
            .arg(pipeline)
            .arg("--input")
            .arg(input)
            .arg("--output")
            .arg(tmp.path().join("out.pcap"))
            .arg("--stats-json")
            .arg(&json)
            .arg("--prometheus")
            .arg(&prom)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let (samples, types) = parse(&prom);
        let get = |name: &str, kv: &[(&str, &str)]| {
            *samples
                .get(&(name.to_string(), labels(kv)))
                .unwrap_or_else(|| panic!("{}: no {name} {kv:?}", input.display()))
        };
        for (k, v) in j.as_object().unwrap() {
            if let Some(n) = v.as_u64() {
                assert_eq!(get(&format!("flowgate_{k}_total"), &[]), n as f64, "{k}");
                assert_eq!(types[&format!("flowgate_{k}")], "counter", "{k}");
            }
        }
        // Every reason is a series; those the JSON lists carry its count, the rest 0.
        let drops: Vec<_> = samples
            .iter()
            .filter(|((n, _), _)| n == "flowgate_drops_total")
            .collect();
        assert!(drops.len() >= 10, "{drops:?}");
        let mut sum = 0.0;
        for ((_, l), v) in &drops {
            let want = j["drops"][&l["reason"]].as_u64().unwrap_or(0);
            assert_eq!(**v, want as f64, "drops {}", l["reason"]);
            sum += **v;
            reasons_seen += usize::from(want > 0);
        }
        let (pin, pout) = (j["packets_in"].as_f64(), j["packets_out"].as_f64());
        assert_eq!(Some(sum), pin.zip(pout).map(|(i, o)| i - o));
        for (svc, s) in j["services"].as_object().unwrap() {
            for f in ["flows", "packets"] {
                let name = format!("flowgate_service_{f}_total");
                assert_eq!(get(&name, &[("service", svc)]), s[f].as_f64().unwrap());
            }
            for (srv, n) in s["servers"].as_object().unwrap() {
                let kv = [("service", svc.as_str()), ("server", srv.as_str())];
                let got = get("flowgate_service_server_packets_total", &kv);
                assert_eq!(got, n.as_f64().unwrap());
            }
            // Keys only some services have, each a family of those.
            for (k, name, kind) in [
                ("on_backup", "flowgate_service_on_backup", "gauge"),
                (
                    "rate_limited",
                    "flowgate_service_rate_limited_total",
                    "counter",
                ),
                ("denied", "flowgate_service_denied_total", "counter"),
            ] {
                let family = name.trim_end_matches("_total");
                match s.get(k) {
                    Some(v) => {
                        assert_eq!(get(name, &[("service", svc)]), v.as_f64().unwrap(), "{k}");
                        assert_eq!(types[family], kind, "{k}");
                        optional_seen += 1;
                    }
                    None => assert!(
                        !samples.contains_key(&(name.to_string(), labels(&[("service", svc)]))),
                        "{name} for {svc}, which has no {k}"
                    ),
                }
            }
        }
        // The live-flow gauge per server, and no more live flows than the flows made.
        let mut live = 0.0;
        for (srv, n) in j["server_flows"].as_object().unwrap() {
            assert_eq!(
                get("flowgate_server_flows", &[("server", srv)]),
                n.as_f64().unwrap()
            );
            live += n.as_f64().unwrap();
        }
        assert_eq!(types["flowgate_server_flows"], "gauge");
        assert!(live <= j["flows_created"].as_f64().unwrap());
    }
    if inputs.len() > 2 {
        assert!(
            reasons_seen >= 2,
            "the third-party captures drop for reasons"
        );
    }
    assert_eq!(
        optional_seen, 6,
        "both guarded services have all three keys"
    );
}
