//! Replays every real third-party capture in ../shared/captures through the pipeline and
//! checks, with tshark as the independent oracle:
//! - no panic, and `packets_in == packets_out + sum(drops)`;
//! - no output frame has a bad checksum where its input frame had a good one;
//! - the rewritten DSCP, VLAN and PCP fields read back as configured.

mod common;

use flowgate::action::{FrameBuf, PacketBuf};
use flowgate::config::Pipeline;
use flowgate::pipeline::{QosSel, Tables, Worker};
use flowgate::port::pcap::{LinkType, PcapReader, PcapWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One replay through the library; returns the worker and, per output frame, the input
/// frame number (1-based) and the rule that routed it.
fn replay(pipeline: &Path, input: &Path, output: &Path) -> (Worker, Vec<(usize, QosSel)>) {
    let p = Pipeline::load(pipeline).expect("pipeline");
    let mut w = Worker::new(Arc::new(Tables::build(p, 1)));
    let mut rd = PcapReader::open(input).expect("open capture");
    let mut wr = PcapWriter::create(output, LinkType::Ethernet).expect("create output");
    let mut buf = FrameBuf::new(65535);
    let mut map = Vec::new();
    let mut n = 0;
    while let Some(pkt) = rd.next_packet().expect("read capture") {
        n += 1;
        assert!(buf.load(pkt.data), "frame {n} too big for the test buffer");
        let o = w.process(&mut buf, 0, pkt.ts_ns);
        if let Some(r) = o.route {
            wr.write(pkt.ts_ns, buf.data()).expect("write");
            map.push((n, r.qos));
        }
    }
    wr.finish().expect("finish");
    (w, map)
}

fn captures() -> Vec<PathBuf> {
    let Some(dir) = common::shared("captures") else {
        return vec![];
    };
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list captures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    v.sort();
    assert!(
        v.len() >= 150,
        "expected the 153 shared captures, found {}",
        v.len()
    );
    v
}

fn first(field: &str) -> &str {
    field.split(',').next().unwrap_or("")
}

fn check_capture(input: &Path, tmp: &Path) -> Result<(), String> {
    let pipe = common::root().join("tests/data/rewrite-all.yaml");
    let name = input.file_name().unwrap().to_string_lossy().to_string();
    let out = tmp.join(format!("{name}.out.pcap"));
    let (w, map) = replay(&pipe, input, &out);
    let s = &w.stats;
    if s.packets_in != s.packets_out + s.dropped() {
        return Err(format!(
            "{name}: invariant broken: {} != {} + {}",
            s.packets_in,
            s.packets_out,
            s.dropped()
        ));
    }
    if map.len() as u64 != s.packets_out {
        return Err(format!(
            "{name}: {} frames written, {} counted",
            map.len(),
            s.packets_out
        ));
    }
    let before = common::checksum_status(input);
    let after = common::checksum_status(&out);
    if after.len() != map.len() {
        return Err(format!(
            "{name}: tshark sees {} output frames, expected {}",
            after.len(),
            map.len()
        ));
    }
    for (k, &(i, _)) in map.iter().enumerate() {
        let (b, a) = (&before[i - 1], &after[k]);
        for f in 0..5 {
            let bv: Vec<&str> = b[f].split(',').collect();
            let av: Vec<&str> = a[f].split(',').collect();
            for (j, &x) in bv.iter().enumerate() {
                if x == "1" && av.get(j) == Some(&"0") {
                    return Err(format!(
                        "{name}: frame {i} (out {}) field {f} good -> bad",
                        k + 1
                    ));
                }
            }
        }
    }
    // Rewritten fields as configured (rule 0 = v4: dscp af41 = 34 + tag 42/pcp 3, replies
    // cs1 = 8; rule 1 = v6: dscp cs3 = 24 + pcp 6 on the outermost tag, replies af21 = 18).
    let fields = common::tshark(
        &out,
        &[
            "-o",
            "ip.defragment:FALSE",
            "-o",
            "ipv6.defragment:FALSE",
            "-T",
            "fields",
            "-E",
            "separator=;",
            "-e",
            "vlan.id",
            "-e",
            "vlan.priority",
            "-e",
            "ip.dsfield.dscp",
            "-e",
            "ipv6.tclass.dscp",
            "-e",
            "ieee8021ad.priority",
        ],
    );
    for (k, &(i, rule)) in map.iter().enumerate() {
        let f: Vec<&str> = fields[k].split(';').collect();
        match rule {
            QosSel::Rule(0) if first(f[0]) != "42" || first(f[1]) != "3" || first(f[2]) != "34" => {
                return Err(format!("{name}: frame {i}: v4 rewrite reads {:?}", f));
            }
            QosSel::RuleReply(0) if first(f[2]) != "8" => {
                return Err(format!("{name}: frame {i}: v4 reply rewrite reads {:?}", f));
            }
            QosSel::RuleReply(1) if first(f[3]) != "18" => {
                return Err(format!("{name}: frame {i}: v6 reply rewrite reads {:?}", f));
            }
            QosSel::Rule(1) => {
                // The outermost tag may be 802.1ad (tshark names it differently).
                let pcp = if !f[4].is_empty() {
                    first(f[4])
                } else {
                    first(f[1])
                };
                if pcp != "6" || first(f[3]) != "24" {
                    return Err(format!("{name}: frame {i}: v6 rewrite reads {:?}", f));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[test]
fn every_shared_capture_replays_cleanly() {
    let files = captures();
    if files.is_empty() || !common::have_tshark() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let files = std::sync::Mutex::new(files.into_iter());
    let errors = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for _ in 0..2 {
            sc.spawn(|| {
                loop {
                    let Some(f) = files.lock().unwrap().next() else {
                        break;
                    };
                    if let Err(e) = check_capture(&f, tmp.path()) {
                        errors.lock().unwrap().push(e);
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap();
    assert!(
        errors.is_empty(),
        "{} captures failed:\n{}",
        errors.len(),
        errors.join("\n")
    );
}
