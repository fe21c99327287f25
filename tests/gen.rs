//! `flowgate gen` checked against an independent dissector (tshark) and read back with
//! `PcapReader`. Expected counts come from the scenario definitions in `src/gen/mod.rs`
//! (flow `i` → kind), not from the generator's own output.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use flowgate::r#gen::{GenArgs, GenSpec, GenSummary, Scenario, run};
use flowgate::port::pcap::PcapReader;

mod common;

use common::{have_tshark, tshark_text as tshark};

fn count(file: &Path, filter: &str) -> usize {
    tshark(file, &["-Y", filter]).lines().count()
}

fn bad_checksums(file: &Path) -> usize {
    tshark(
        file,
        &[
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
            "-Y",
            "ip.checksum.status==Bad || tcp.checksum.status==Bad || udp.checksum.status==Bad \
             || icmp.checksum.status==Bad || icmpv6.checksum.status==Bad",
        ],
    )
    .lines()
    .count()
}

/// Conversations listed by `-z conv,<proto>`.
fn conversations(file: &Path, proto: &str) -> usize {
    tshark(file, &["-q", "-z", &format!("conv,{proto}")])
        .lines()
        .filter(|l| l.contains("<->"))
        .count()
}

const SCAPY_ORACLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/captures/oracles/scapy_cksum_oracle.py"
);

/// Second, independent checksum oracle: scapy recomputes every checksum (prints one line
/// per bad frame).
fn scapy_checksums(file: &Path) {
    if !Path::new(SCAPY_ORACLE).exists() || !Path::new(common::SCAPY_PY).exists() {
        assert!(!common::in_ci(), "scapy oracle missing and CI is set");
        eprintln!("note: scapy oracle missing, skipped");
        return;
    }
    let out = Command::new(common::SCAPY_PY)
        .arg(SCAPY_ORACLE)
        .arg(file)
        .output()
        .expect("run scapy oracle");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = String::from_utf8_lossy(&out.stdout);
    assert!(bad.trim().is_empty(), "scapy finds bad checksums:\n{bad}");
}

fn generate(sc: Scenario, flows: u64, dir: &Path) -> (PathBuf, GenSummary) {
    let out = dir.join(format!("{sc:?}.pcap"));
    let mut a = GenArgs::new(sc, flows, &out);
    a.concurrency = 16;
    let s = run(&a, &GenSpec::default()).expect("gen run");
    (out, s)
}

/// Reads the file back; returns (frames, bytes) and checks timestamps never go back.
fn read_back(file: &Path) -> (u64, u64) {
    let mut r = PcapReader::open(file).expect("open");
    let (mut n, mut bytes, mut last) = (0u64, 0u64, 0u64);
    while let Some(p) = r.next_packet().expect("read") {
        assert!(p.ts_ns >= last);
        last = p.ts_ns;
        assert_eq!(p.orig_len as usize, p.data.len());
        n += 1;
        bytes += p.data.len() as u64;
    }
    assert_eq!(r.bytes_read(), r.total_bytes());
    (n, bytes)
}

/// Checks shared by every scenario: checksums, no malformed frames, MACs, read-back.
fn common(file: &Path, s: &GenSummary) {
    assert!(s.packets > 0);
    assert_eq!(read_back(file), (s.packets, s.bytes));
    scapy_checksums(file);
    if !have_tshark() {
        return;
    }
    assert_eq!(count(file, ""), s.packets as usize, "tshark frame count");
    assert_eq!(
        bad_checksums(file),
        0,
        "bad checksums in {}",
        file.display()
    );
    assert_eq!(
        count(file, "_ws.malformed || _ws.expert.severity >= error"),
        0
    );
    // Every frame goes to the system MAC; client frames come from the gateway, the rest
    // from a server of the default spec.
    assert_eq!(count(file, "eth.dst != 02:00:00:00:00:01"), 0);
    let servers = "eth.src in {02:00:00:00:01:01, 02:00:00:00:01:02, 02:00:00:00:01:03, \
                   02:00:00:00:02:01, 02:00:00:00:02:02}";
    assert_eq!(
        count(
            file,
            &format!("!(eth.src == 02:00:00:00:00:fe) && !({servers})")
        ),
        0
    );
    // Responses carry the VIP as source; requests carry it as destination.
    assert_eq!(
        count(
            file,
            "eth.src == 02:00:00:00:00:fe && !(ip.dst == 203.0.113.10 || ipv6.dst == 2001:db8:100::10)"
        ),
        0
    );
    assert_eq!(
        count(
            file,
            &format!("{servers} && !(ip.src == 203.0.113.10 || ipv6.src == 2001:db8:100::10)")
        ),
        0
    );
}

#[test]
fn web() {
    let dir = tempfile::tempdir().expect("tmp");
    let flows = 64;
    let (f, s) = generate(Scenario::Web, flows, dir.path());
    // 2 TCP services: flow i uses service i%2; it ends in RST when (i/2)%8 == 7.
    let rst = (0..flows).filter(|i| (i / 2) % 8 == 7).count() as u64;
    assert_eq!(s.packets, (flows - rst) * 9 + rst * 7);
    assert_eq!(s.tcp_connections, flows);
    common(&f, &s);
    if !have_tshark() {
        return;
    }
    assert_eq!(conversations(&f, "tcp"), flows as usize);
    // The service ports (80, 8000-8099, 443) are not all HTTP to tshark by default.
    let http = ["-d", "tcp.port==8000-8099,http", "-d", "tcp.port==443,http"];
    let n = |filter: &str| {
        let mut a = http.to_vec();
        a.extend(["-Y", filter]);
        tshark(&f, &a).lines().count()
    };
    assert_eq!(n("http.request.method == \"GET\""), flows as usize);
    assert_eq!(n("http.response.code == 200"), flows as usize);
    assert_eq!(n("_ws.malformed"), 0);
    assert_eq!(count(&f, "tcp.flags.reset == 1"), rst as usize);
    assert_eq!(
        count(&f, "tcp.flags.syn == 1 && tcp.flags.ack == 0"),
        flows as usize
    );
    assert_eq!(
        count(&f, "ipv6 && tcp.flags.syn == 1 && tcp.flags.ack == 0"),
        32
    );
    // Interleaving: some flow's SYN comes before an earlier flow's last packet.
    let streams = tshark(&f, &["-T", "fields", "-e", "tcp.stream"]);
    let order: Vec<u32> = streams.lines().filter_map(|l| l.parse().ok()).collect();
    let mut open = BTreeSet::new();
    let mut max_open = 0;
    let mut last: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, s) in order.iter().enumerate() {
        last.insert(*s, i);
    }
    for (i, s) in order.iter().enumerate() {
        open.insert(*s);
        max_open = max_open.max(open.len());
        if last.get(s) == Some(&i) {
            open.remove(s);
        }
    }
    assert!(max_open >= 8, "only {max_open} flows open at once");
    // Server choice: each TCP stream's responses come from one server MAC.
    let rows = tshark(
        &f,
        &[
            "-Y",
            "eth.src != 02:00:00:00:00:fe",
            "-T",
            "fields",
            "-e",
            "tcp.stream",
            "-e",
            "eth.src",
        ],
    );
    let mut by_stream: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for l in rows.lines() {
        let mut it = l.split('\t');
        let (Some(st), Some(mac)) = (it.next(), it.next()) else {
            continue;
        };
        by_stream.entry(st.into()).or_default().insert(mac.into());
    }
    assert_eq!(by_stream.len(), flows as usize);
    assert!(by_stream.values().all(|m| m.len() == 1));
    let used: BTreeSet<&String> = by_stream.values().flatten().collect();
    assert!(used.len() >= 4, "servers used: {used:?}");
}

#[test]
fn ftp() {
    let dir = tempfile::tempdir().expect("tmp");
    let flows = 20;
    let (f, s) = generate(Scenario::Ftp, flows, dir.path());
    assert_eq!(s.packets, flows * 33);
    common(&f, &s);
    if !have_tshark() {
        return;
    }
    assert_eq!(conversations(&f, "tcp"), 2 * flows as usize);
    assert_eq!(count(&f, "ftp.response.code == 227"), 10);
    assert_eq!(count(&f, "ftp.request.command == \"PORT\""), 10);
    // Every data transfer is dissected as ftp-data: tshark linked it to the PASV/PORT.
    assert_eq!(count(&f, "ftp-data"), flows as usize);
    // The 227 reply names the VIP and the port the data connection then uses.
    let pasv = tshark(
        &f,
        &[
            "-Y",
            "ftp.response.code == 227",
            "-T",
            "fields",
            "-e",
            "ftp.passive.ip",
            "-e",
            "ftp.passive.port",
            "-e",
            "ip.dst",
        ],
    );
    let data = tshark(
        &f,
        &[
            "-Y",
            "ftp-data && tcp.srcport != 20",
            "-T",
            "fields",
            "-e",
            "tcp.srcport",
            "-e",
            "ip.dst",
        ],
    );
    let mut want = BTreeSet::new();
    for l in pasv.lines() {
        let v: Vec<&str> = l.split('\t').collect();
        assert_eq!(v[0], "203.0.113.10");
        want.insert((v[1].to_string(), v[2].to_string()));
    }
    let got: BTreeSet<(String, String)> = data
        .lines()
        .map(|l| {
            let v: Vec<&str> = l.split('\t').collect();
            (v[0].to_string(), v[1].to_string())
        })
        .collect();
    assert_eq!(want.len(), 10);
    assert_eq!(want, got);
    // Active mode: the server opens the data connection from port 20 to the PORT port.
    let port = tshark(
        &f,
        &[
            "-Y",
            "ftp.request.command == \"PORT\"",
            "-T",
            "fields",
            "-e",
            "ftp.active.cip",
            "-e",
            "ftp.active.port",
        ],
    );
    let syn20 = tshark(
        &f,
        &[
            "-Y",
            "tcp.srcport == 20 && tcp.flags.syn == 1 && tcp.flags.ack == 0",
            "-T",
            "fields",
            "-e",
            "ip.dst",
            "-e",
            "tcp.dstport",
        ],
    );
    let a: BTreeSet<&str> = port.lines().collect();
    let b: BTreeSet<&str> = syn20.lines().collect();
    assert_eq!(a.len(), 10);
    assert_eq!(a, b);
}

#[test]
fn udp() {
    let dir = tempfile::tempdir().expect("tmp");
    let flows = 30;
    let (f, s) = generate(Scenario::Udp, flows, dir.path());
    // i%3: DNS (2 frames), SIP (2), ping (4)
    assert_eq!(s.packets, 10 * 2 + 10 * 2 + 10 * 4);
    common(&f, &s);
    if !have_tshark() {
        return;
    }
    assert_eq!(conversations(&f, "udp"), 20);
    assert_eq!(
        count(&f, "dns.flags.response == 0 && udp.dstport == 53"),
        10
    );
    assert_eq!(
        count(&f, "dns.flags.response == 1 && dns.count.answers == 1"),
        10
    );
    assert_eq!(count(&f, "sip.Method == \"OPTIONS\""), 10);
    assert_eq!(count(&f, "sip.Status-Code == 200"), 10);
    assert_eq!(count(&f, "icmp.type == 8 || icmpv6.type == 128"), 20);
    assert_eq!(count(&f, "icmp.type == 0 || icmpv6.type == 129"), 20);
    // every echo reply matched its request
    assert_eq!(count(&f, "icmp.resp_to || icmpv6.resp_to"), 20);
}

#[test]
fn esp() {
    let dir = tempfile::tempdir().expect("tmp");
    let flows = 20;
    let (f, s) = generate(Scenario::Esp, flows, dir.path());
    assert_eq!(s.packets, flows * 6);
    common(&f, &s);
    if !have_tshark() {
        return;
    }
    assert_eq!(count(&f, "esp"), (flows * 6) as usize);
    assert_eq!(count(&f, "udp.port == 4500 && esp"), 60);
    assert_eq!(count(&f, "ip.proto == 50 || ipv6.nxt == 50"), 60);
    // per-direction SPIs: each (src, dst, spi) triple is one direction of one flow
    let rows = tshark(
        &f,
        &[
            "-Y",
            "esp",
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "ipv6.src",
            "-e",
            "ip.dst",
            "-e",
            "ipv6.dst",
            "-e",
            "esp.spi",
            "-e",
            "esp.sequence",
        ],
    );
    let mut spis: BTreeMap<String, (String, Vec<u32>)> = BTreeMap::new();
    for l in rows.lines() {
        let v: Vec<&str> = l.split('\t').collect();
        let dir = format!("{}{}>{}{}", v[0], v[1], v[2], v[3]);
        let e = spis
            .entry(v[4].to_string())
            .or_insert((dir.clone(), vec![]));
        assert_eq!(e.0, dir, "an SPI is used in one direction only");
        e.1.push(v[5].parse().expect("seq"));
    }
    assert_eq!(spis.len(), 2 * flows as usize);
    assert!(spis.values().all(|(_, s)| s == &[1, 2, 3]));
}

#[test]
fn tagged() {
    let dir = tempfile::tempdir().expect("tmp");
    let flows = 40;
    let (f, s) = generate(Scenario::Tagged, flows, dir.path());
    assert_eq!(s.tcp_connections, flows);
    common(&f, &s);
    if !have_tshark() {
        return;
    }
    assert_eq!(conversations(&f, "tcp"), flows as usize);
    let rows = tshark(
        &f,
        &[
            "-Y",
            "eth.src == 02:00:00:00:00:fe",
            "-T",
            "fields",
            "-E",
            "separator=;",
            "-e",
            "ieee8021ad.id",
            "-e",
            "ieee8021ad.priority",
            "-e",
            "vlan.id",
            "-e",
            "vlan.priority",
            "-e",
            "mpls.label",
            "-e",
            "tcp.stream",
        ],
    );
    let mut kinds: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for l in rows.lines() {
        let (k, stream) = l.rsplit_once(';').expect("fields");
        kinds
            .entry(k.to_string())
            .or_default()
            .insert(stream.to_string());
    }
    let want: BTreeSet<&str> = [
        ";;100;5;",
        "200;5;100;5;",
        ";;;;1000",
        ";;;;1000,2000",
        ";;;;1000,2000,3000",
    ]
    .into();
    let got: BTreeSet<&str> = kinds.keys().map(String::as_str).collect();
    assert_eq!(got, want);
    // flow i gets variant i%5: 8 flows each
    assert!(kinds.values().all(|s| s.len() == 8), "{kinds:?}");
    // responses are untagged
    assert_eq!(
        count(
            &f,
            "eth.src != 02:00:00:00:00:fe && (vlan || mpls || ieee8021ad)"
        ),
        0
    );
}

#[test]
fn mix() {
    let dir = tempfile::tempdir().expect("tmp");
    let flows = 100;
    let (f, s) = generate(Scenario::Mix, flows, dir.path());
    common(&f, &s);
    // i%5: web (1 conn), ftp (2), udp, esp, tagged (1)
    assert_eq!(s.tcp_connections, 20 + 40 + 20);
    if !have_tshark() {
        return;
    }
    assert_eq!(conversations(&f, "tcp"), 80);
    assert!(count(&f, "ftp-data") == 20);
    assert!(count(&f, "esp") > 0 && count(&f, "mpls") > 0 && count(&f, "dns") > 0);
}

#[test]
fn packet_limit_and_determinism() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("a.pcap");
    let mut a = GenArgs::new(Scenario::Mix, 1000, &out);
    a.packets = Some(777);
    a.seed = Some(42);
    let s = run(&a, &GenSpec::default()).expect("run");
    assert_eq!(s.packets, 777);
    let first = std::fs::read(&out).expect("read");
    run(&a, &GenSpec::default()).expect("run");
    assert_eq!(first, std::fs::read(&out).expect("read"));
    assert_eq!(read_back(&out).0, 777);
    if have_tshark() {
        assert_eq!(bad_checksums(&out), 0);
    }
}
