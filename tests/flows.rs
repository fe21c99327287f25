//! Listing live flows (`flowgate replay --flows`, `flowgate flows --file`) against tshark.
//!
//! A `gen web` capture cut off mid-way (so connections are in every state: half-open,
//! established, answered but not yet acknowledged, closing) runs through `flowgate
//! replay`; tshark reads the input and the output. The oracle, per TCP conversation to a
//! VIP, from tshark's fields alone: its creator (the first packet's source), its state
//! (FIN or RST seen: closing; else a packet back, or an ACK without SYN from the creator:
//! established; else syn), whether it was replied to and assured (the creator spoke
//! after a reply), how long it has been idle at the last packet of the capture, and the
//! server its packets were forwarded to (the destination MAC in the output). The listing
//! must hold exactly those conversations with exactly those attributes.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Nanoseconds from tshark's `frame.time_epoch` ("1700000000.019990000").
fn ns(t: &str) -> u128 {
    let (s, f) = t.split_once('.').unwrap_or((t, "0"));
    let f = format!("{f:0<9}");
    s.parse::<u128>().unwrap() * 1_000_000_000 + f[..9].parse::<u128>().unwrap()
}

/// A conversation's two ends, (address, port) each, in order: the same both ways.
type Ends = (String, u64, String, u64);

fn ends(a: &(String, u64), b: &(String, u64)) -> Ends {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    (x.0.clone(), x.1, y.0.clone(), y.1)
}

#[derive(Debug, Default)]
struct Conv {
    /// Creator's (address, port) and the other end's.
    creator: (String, u64),
    other: (String, u64),
    closing: bool,
    established: bool,
    replied: bool,
    assured: bool,
    last_ns: u128,
    /// Destination MACs of the creator's packets in the output.
    macs: Vec<String>,
}

/// The TCP conversations of `input` (by unordered ends), from tshark.
fn conversations(input: &Path, output: &Path) -> (BTreeMap<Ends, Conv>, u128) {
    let fields = [
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-e",
        "frame.time_epoch",
        "-e",
        "ip.src",
        "-e",
        "ipv6.src",
        "-e",
        "ip.dst",
        "-e",
        "ipv6.dst",
        "-e",
        "tcp.srcport",
        "-e",
        "tcp.dstport",
        "-e",
        "tcp.flags",
        "-e",
        "eth.dst",
        "-Y",
        "tcp",
    ];
    let parse = |l: &str| {
        let v: Vec<&str> = l.split('|').collect();
        let src = (format!("{}{}", v[1], v[2]), v[5].parse::<u64>().unwrap());
        let dst = (format!("{}{}", v[3], v[4]), v[6].parse::<u64>().unwrap());
        let flags =
            u8::from_str_radix(v[7].trim_start_matches("0x00").trim_start_matches("0x"), 16)
                .unwrap();
        (ns(v[0]), src, dst, flags, v[8].to_owned())
    };
    let mut convs: BTreeMap<_, Conv> = BTreeMap::new();
    let mut last = 0;
    for l in common::tshark(input, &fields) {
        let (t, src, dst, flags, _) = parse(&l);
        last = last.max(t);
        let c = convs.entry(ends(&src, &dst)).or_insert_with(|| Conv {
            creator: src.clone(),
            other: dst.clone(),
            ..Conv::default()
        });
        let forward = src == c.creator;
        let (syn, ack, fin, rst) = (
            flags & 2 != 0,
            flags & 0x10 != 0,
            flags & 1 != 0,
            flags & 4 != 0,
        );
        if fin || rst {
            c.closing = true;
        }
        if !forward || (ack && !syn) {
            c.established = true;
        }
        if !forward {
            c.replied = true;
        } else if c.replied {
            c.assured = true;
        }
        c.last_ns = t;
    }
    for l in common::tshark(output, &fields) {
        let (_, src, dst, _, mac) = parse(&l);
        let c = convs
            .get_mut(&ends(&src, &dst))
            .expect("an output packet of an input conversation");
        if src == c.creator {
            c.macs.push(mac);
        }
    }
    (convs, last)
}

#[test]
fn replay_lists_every_open_flow_as_tshark_sees_it() {
    if !common::have_tshark() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pipeline = common::root().join("pipelines/web-farm.yaml");
    let (input, output, flows) = (
        dir.path().join("in.pcap"),
        dir.path().join("out.pcap"),
        dir.path().join("flows.json"),
    );
    common::generate(Some(&pipeline), "web", 300, &input, &["--packets", "2000"]);
    common::replay_with(
        &pipeline,
        &input,
        &output,
        &["--flows".as_ref(), flows.as_os_str()],
    );
    let listing: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&flows).unwrap()).unwrap();
    let (convs, last) = conversations(&input, &output);

    let p = flowgate::config::Pipeline::load(&pipeline).unwrap();
    let server_of_mac: HashMap<String, &str> = p
        .servers
        .iter()
        .map(|s| {
            (
                s.mac
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
                s.name.as_str(),
            )
        })
        .collect();
    let flows = listing["flows"].as_array().unwrap();
    assert_eq!(listing["matched"].as_u64(), Some(convs.len() as u64));
    assert_eq!(flows.len(), convs.len(), "every conversation listed once");
    // The capture has connections in every state, or the test would prove little.
    let count = |f: &dyn Fn(&Conv) -> bool| convs.values().filter(|c| f(c)).count();
    assert!(count(&|c| c.closing) > 50);
    assert!(count(&|c| !c.closing && c.established && c.assured) > 5);
    assert!(count(&|c| c.replied && !c.assured && !c.closing) > 3);
    assert!(count(&|c| !c.established) > 1);
    assert!(count(&|c| c.creator.0.contains(':')) > 50, "IPv6 too");

    let mut by_server: HashMap<String, usize> = HashMap::new();
    for f in flows {
        let s = |k: &str| f[k].as_str().unwrap().to_owned();
        let creator = (s("src"), f["src_port"].as_u64().unwrap());
        let other = (s("dst"), f["dst_port"].as_u64().unwrap());
        let key = ends(&creator, &other);
        let c = convs
            .get(&key)
            .unwrap_or_else(|| panic!("listed but not in the capture: {f}"));
        assert_eq!((&c.creator, &c.other), (&creator, &other), "{f}");
        let state = if c.closing {
            "closing"
        } else if c.established {
            "established"
        } else {
            "syn"
        };
        assert_eq!(f["state"], state, "{f}");
        assert_eq!(f["proto"], "tcp");
        assert_eq!(
            (f["replied"].as_bool(), f["assured"].as_bool()),
            (Some(c.replied), Some(c.assured)),
            "{f}"
        );
        assert_eq!(
            f["idle_ms"].as_u64(),
            Some(((last - c.last_ns) / 1_000_000) as u64),
            "{f}"
        );
        // Every packet of the creator went to one server, the one listed.
        let mac = &c.macs[0];
        assert!(c.macs.iter().all(|m| m == mac), "{f}: {:?}", c.macs);
        assert_eq!(f["to"], server_of_mac[mac.as_str()], "{f}");
        let svc = if creator.0.contains(':') {
            "https6"
        } else {
            "http"
        };
        assert_eq!(f["service"], svc, "{f}");
        *by_server.entry(s("to")).or_default() += 1;
    }

    // `flowgate flows --file` shows the same flows, filtered as asked.
    let table = |args: &[&str]| {
        let o = common::flowgate()
            .arg("flows")
            .arg("--file")
            .arg(dir.path().join("flows.json"))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let t = table(&["--to", "web3"]);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), by_server["web3"] + 2, "{t}");
    assert!(
        lines[1..lines.len() - 1]
            .iter()
            .all(|l| l.split_whitespace().nth(4) == Some("web3")),
        "{t}"
    );
    assert_eq!(
        lines.last().unwrap(),
        &format!("{0} flows listed of {0} matched", by_server["web3"])
    );

    // replay's own filter: the IPv6 service's flows not assured yet.
    let some_file = dir.path().join("some.json");
    common::replay_with(
        &pipeline,
        &input,
        &output,
        &[
            "--flows".as_ref(),
            some_file.as_os_str(),
            "--flows-filter".as_ref(),
            "service=https6&assured=false".as_ref(),
        ],
    );
    let some: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&some_file).unwrap()).unwrap();
    let want = count(&|c| c.creator.0.contains(':') && !c.assured);
    assert!(want > 0);
    assert_eq!(some["matched"].as_u64(), Some(want as u64));
    assert!(
        some["flows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["service"] == "https6" && f["assured"] == false)
    );
    // A bad filter is an error that says what is wrong, before anything runs.
    let r = common::flowgate()
        .args([
            "replay",
            "--quiet",
            "--flows",
            "/dev/null",
            "--flows-filter",
            "to=web9",
        ])
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("--flows-filter: to: no server named \"web9\"")
    );
}
