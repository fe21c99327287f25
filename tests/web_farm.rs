//! Acceptance tests for the web farm (project issue 2), with tshark as the oracle on the
//! OUTPUT capture:
//! - `gen web` → `replay` (both through the binary): every client→VIP frame of a TCP
//!   connection goes to one server of that service; every VIP→client frame goes to the
//!   gateway from the system MAC; flows spread within 15% (relative) of the weights; the
//!   stats JSON agrees with what tshark counts.
//! - Weight 0 / `draining` / `down` swapped in mid-capture through the library
//!   (`Worker::set_tables`): a weight-0 or draining server keeps the flows it has and gets
//!   no new ones; a `down` server's flows are moved (each to one live server).
//! - Two replays of the same input are byte-identical.
//! - FTP, UDP, ESP and tagged traffic through `pipelines/ftp.yaml` and
//!   `pipelines/qos-mpls.yaml`: the counter invariant, no checksum turned bad, and one
//!   destination MAC per flow and direction.

mod common;

use flowgate::action::{FrameBuf, PacketBuf};
use flowgate::config::{Pipeline, ServerState};
use flowgate::r#gen::{GenArgs, Scenario};
use flowgate::pipeline::{Tables, Worker};
use flowgate::port::pcap::{LinkType, PcapReader, PcapWriter};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const SYSTEM: &str = "02:00:00:00:00:01";
const GATEWAY: &str = "02:00:00:00:00:fe";

/// One service of pipelines/web-farm.yaml, written out here independently of the parser.
struct Svc {
    name: &'static str,
    vip: &'static str,
    /// (server name, MAC, weight)
    servers: &'static [(&'static str, &'static str, u32)],
}

const WEB_FARM: &[Svc] = &[
    Svc {
        name: "http",
        vip: "203.0.113.10",
        servers: &[
            ("web1", "02:00:00:00:01:01", 100),
            ("web2", "02:00:00:00:01:02", 100),
            ("web3", "02:00:00:00:01:03", 200),
        ],
    },
    Svc {
        name: "https6",
        vip: "2001:db8:100::10",
        servers: &[
            ("web6a", "02:00:00:00:02:01", 100),
            ("web6b", "02:00:00:00:02:02", 100),
        ],
    },
];

fn pipeline(name: &str) -> PathBuf {
    common::root().join("pipelines").join(name)
}

/// One frame as tshark reads it.
#[derive(Debug, Clone)]
struct Frame {
    eth_src: String,
    eth_dst: String,
    src: String,
    dst: String,
    proto: String,
    sport: String,
    dport: String,
    /// tcp.stream (empty when not TCP).
    stream: String,
    /// Extra flow discriminator: ESP SPI or ICMP identifier.
    extra: String,
}

impl Frame {
    /// A key naming the flow and direction of this frame.
    fn flow_dir(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            self.src, self.dst, self.proto, self.sport, self.dport, self.extra
        )
    }
}

fn first(field: &str) -> String {
    field.split(',').next().unwrap_or("").to_string()
}

/// Every frame of `file`, in order.
fn frames(file: &Path) -> Vec<Frame> {
    let fields = [
        "eth.src",
        "eth.dst",
        "ip.src",
        "ip.dst",
        "ipv6.src",
        "ipv6.dst",
        "ip.proto",
        "ipv6.nxt",
        "tcp.srcport",
        "tcp.dstport",
        "udp.srcport",
        "udp.dstport",
        "tcp.stream",
        "esp.spi",
        "icmp.ident",
        "icmpv6.echo.identifier",
    ];
    let mut args = vec![
        "-T",
        "fields",
        "-E",
        "separator=;",
        "-o",
        "ip.defragment:FALSE",
    ];
    for f in &fields {
        args.push("-e");
        args.push(f);
    }
    common::tshark(file, &args)
        .into_iter()
        .map(|l| {
            let v: Vec<String> = l.split(';').map(first).collect();
            let g = |i: usize| v.get(i).cloned().unwrap_or_default();
            let or = |a: String, b: String| if a.is_empty() { b } else { a };
            Frame {
                eth_src: g(0),
                eth_dst: g(1),
                src: or(g(2), g(4)),
                dst: or(g(3), g(5)),
                proto: or(g(6), g(7)),
                sport: or(g(8), g(10)),
                dport: or(g(9), g(11)),
                stream: g(12),
                extra: or(g(13), or(g(14), g(15))),
            }
        })
        .collect()
}

fn replay_bin(pipe: &Path, input: &Path, output: &Path, stats: &Path) -> serde_json::Value {
    common::replay_with(
        pipe,
        input,
        output,
        &["--stats-json".as_ref(), stats.as_os_str()],
    );
    let text = std::fs::read_to_string(stats).expect("read stats json");
    serde_json::from_str(&text).expect("stats json parses")
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// `packets_in == packets_out + sum(drops)`; returns the drop total.
fn check_invariant(s: &serde_json::Value) -> u64 {
    let drops: u64 = s["drops"]
        .as_object()
        .expect("drops object")
        .values()
        .map(u)
        .sum();
    assert_eq!(
        u(&s["packets_in"]),
        u(&s["packets_out"]) + drops,
        "counter invariant: {s}"
    );
    drops
}

#[test]
fn web_farm_affinity_spread_and_responses() {
    if !common::have_tshark() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pipe = pipeline("web-farm.yaml");
    let input = dir.path().join("web.pcap");
    let output = dir.path().join("out.pcap");
    let stats_f = dir.path().join("stats.json");
    let n_flows = 4000u64;
    common::generate(Some(&pipe), "web", n_flows, &input, &[]);
    let s = replay_bin(&pipe, &input, &output, &stats_f);

    let fin = frames(&input);
    let fout = frames(&output);
    assert_eq!(
        check_invariant(&s),
        0,
        "a clean web capture drops nothing: {s}"
    );
    assert_eq!(
        u(&s["packets_in"]),
        fin.len() as u64,
        "packets_in counts every input frame"
    );
    assert_eq!(
        u(&s["packets_out"]),
        fout.len() as u64,
        "packets_out counts every output frame"
    );

    // Per TCP connection: the server MAC its client→VIP frames went to.
    let mut conn_server: HashMap<String, (usize, String)> = HashMap::new();
    // Client→VIP frames per (service, MAC), counted from the output.
    let mut to_server: HashMap<(usize, String), u64> = HashMap::new();
    let (mut fwd, mut rev) = (0u64, 0u64);
    for (i, f) in fout.iter().enumerate() {
        assert!(
            !f.stream.is_empty(),
            "output frame {} is not TCP: {f:?}",
            i + 1
        );
        assert_eq!(
            f.eth_src,
            SYSTEM,
            "output frame {} not sent from the system MAC",
            i + 1
        );
        if let Some(k) = WEB_FARM.iter().position(|v| v.vip == f.dst) {
            fwd += 1;
            let svc = &WEB_FARM[k];
            assert!(
                svc.servers.iter().any(|x| x.1 == f.eth_dst),
                "frame {} to {} went to {}, not a server of {}",
                i + 1,
                f.dst,
                f.eth_dst,
                svc.name
            );
            let e = conn_server
                .entry(f.stream.clone())
                .or_insert((k, f.eth_dst.clone()));
            assert_eq!(
                e.1,
                f.eth_dst,
                "frame {} of stream {} changed server",
                i + 1,
                f.stream
            );
            *to_server.entry((k, f.eth_dst.clone())).or_default() += 1;
        } else {
            assert!(
                WEB_FARM.iter().any(|v| v.vip == f.src),
                "frame {} neither to nor from a VIP: {f:?}",
                i + 1
            );
            rev += 1;
            assert_eq!(
                f.eth_dst,
                GATEWAY,
                "response frame {} not sent to the gateway",
                i + 1
            );
        }
    }
    assert!(fwd > 0 && rev > 0);
    assert_eq!(
        conn_server.len() as u64,
        n_flows,
        "one TCP connection per generated flow"
    );
    assert_eq!(u(&s["flows_created"]), n_flows, "flows_created");

    for (k, svc) in WEB_FARM.iter().enumerate() {
        let conns: Vec<&String> = conn_server
            .values()
            .filter(|(s, _)| *s == k)
            .map(|(_, m)| m)
            .collect();
        let js = &s["services"][svc.name];
        assert_eq!(u(&js["flows"]), conns.len() as u64, "{}: flows", svc.name);
        let wsum: u32 = svc.servers.iter().map(|x| x.2).sum();
        for (name, mac, w) in svc.servers {
            let got =
                conns.iter().filter(|m| m.as_str() == *mac).count() as f64 / conns.len() as f64;
            let want = f64::from(*w) / f64::from(wsum);
            eprintln!(
                "{}: {name} share {:.3} (weight share {:.3})",
                svc.name, got, want
            );
            assert!(
                (got - want).abs() <= 0.15 * want,
                "{}: {name} got {got:.3} of the flows, weight share {want:.3}",
                svc.name
            );
            let counted = to_server.get(&(k, mac.to_string())).copied().unwrap_or(0);
            assert_eq!(
                u(&js["servers"][*name]),
                counted,
                "{}: packets to {name}",
                svc.name
            );
        }
    }
}

#[test]
fn replay_is_deterministic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipe = pipeline("web-farm.yaml");
    let input = dir.path().join("mix.pcap");
    common::generate(Some(&pipe), "mix", 2000, &input, &[]);
    let (a, b) = (dir.path().join("a.pcap"), dir.path().join("b.pcap"));
    let sa = replay_bin(&pipe, &input, &a, &dir.path().join("a.json"));
    let sb = replay_bin(&pipe, &input, &b, &dir.path().join("b.json"));
    let (ba, bb) = (
        std::fs::read(&a).expect("read a"),
        std::fs::read(&b).expect("read b"),
    );
    assert!(ba.len() > 24 + 1000, "output has frames");
    assert!(ba == bb, "two replays of the same input differ");
    assert_eq!(sa, sb, "stats differ between identical replays");
}

/// What a server change does to flows open across it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Change {
    Weight0,
    Draining,
    Down,
}

/// Replays `frames` through the library: the first `split` with the original tables,
/// the rest with tables where http's first server (web1) is changed by `change`. Writes
/// every output frame to `out`; returns the worker.
fn replay_swap(
    p: &Pipeline,
    frames: &[(u64, Vec<u8>)],
    split: usize,
    change: Change,
    out: &Path,
) -> Worker {
    let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
    let mut p2 = p.clone();
    let web1 = p2.server_index("web1").expect("web1 in web-farm.yaml");
    let http = p2
        .services
        .iter()
        .position(|s| s.name == "http")
        .expect("http service");
    match change {
        Change::Weight0 => {
            let m = p2.services[http]
                .members
                .iter_mut()
                .find(|m| m.server == web1)
                .expect("member");
            m.weight = 0;
        }
        Change::Draining => p2.servers[web1 as usize].state = ServerState::Draining,
        Change::Down => p2.servers[web1 as usize].state = ServerState::Down,
    }
    let t2 = Arc::new(Tables::build(p2, 2));
    let mut wr = PcapWriter::create(out, LinkType::Ethernet).expect("create output");
    let mut buf = FrameBuf::new(65535);
    for (i, (ts, data)) in frames.iter().enumerate() {
        if i == split {
            w.set_tables(Arc::clone(&t2)).expect("same shape");
        }
        assert!(buf.load(data), "frame {} fits", i + 1);
        let o = w.process(&mut buf, 0, *ts);
        if o.route.is_some() {
            wr.write(*ts, buf.data()).expect("write");
        }
    }
    wr.finish().expect("finish");
    w
}

#[test]
fn weight0_draining_keep_flows_down_moves_them() {
    if !common::have_tshark() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pipe = pipeline("web-farm.yaml");
    let p = Pipeline::load(&pipe).expect("pipeline");
    let input = dir.path().join("web.pcap");
    // Many flows open at once, so many connections straddle the swap.
    let mut args = GenArgs::new(Scenario::Web, 4000, &input);
    args.concurrency = 1200;
    flowgate::r#gen::run(&args, &flowgate::cmd::gen_spec(&p)).expect("gen");
    let mut rd = PcapReader::open(&input).expect("open");
    let mut all = Vec::new();
    while let Some(pkt) = rd.next_packet().expect("read") {
        all.push((pkt.ts_ns, pkt.data.to_vec()));
    }
    let split = all.len() / 2;
    let http = &WEB_FARM[0];
    let web1 = http.servers[0].1;

    for change in [Change::Weight0, Change::Draining, Change::Down] {
        let out = dir.path().join(format!("{change:?}.pcap"));
        let w = replay_swap(&p, &all, split, change, &out);
        let s = &w.stats;
        assert_eq!(s.packets_in, all.len() as u64);
        assert_eq!(s.packets_out, s.packets_in, "{change:?}: nothing dropped");
        // No drops: output frame i is input frame i.
        let fout = frames(&out);
        assert_eq!(fout.len(), all.len());

        // Server of each http connection before the swap, from its client frames.
        let mut before: HashMap<&str, &str> = HashMap::new();
        for f in fout[..split].iter().filter(|f| f.dst == http.vip) {
            let e = before
                .entry(f.stream.as_str())
                .or_insert(f.eth_dst.as_str());
            assert_eq!(
                *e, f.eth_dst,
                "stream {} changed server before the swap",
                f.stream
            );
        }
        // After the swap: where client frames of old and new connections went.
        let mut old_on_web1: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut old_elsewhere = 0u64;
        let mut new_conn: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for f in fout[split..].iter().filter(|f| f.dst == http.vip) {
            match before.get(f.stream.as_str()) {
                Some(&m) if m == web1 => {
                    old_on_web1
                        .entry(f.stream.as_str())
                        .or_default()
                        .insert(f.eth_dst.as_str());
                }
                Some(&m) => {
                    assert_eq!(
                        m, f.eth_dst,
                        "{change:?}: stream {} not on web1 moved",
                        f.stream
                    );
                    old_elsewhere += 1;
                }
                None => {
                    new_conn
                        .entry(f.stream.as_str())
                        .or_default()
                        .insert(f.eth_dst.as_str());
                }
            }
        }
        eprintln!(
            "{change:?}: {} connections on web1 straddle the swap; {} frames of other old connections; {} new http connections",
            old_on_web1.len(),
            old_elsewhere,
            new_conn.len()
        );
        assert!(
            old_on_web1.len() >= 50,
            "too few web1 connections straddle the swap: {}",
            old_on_web1.len()
        );
        assert!(
            new_conn.len() >= 300,
            "too few new connections after the swap: {}",
            new_conn.len()
        );
        for (st, macs) in &new_conn {
            assert_eq!(
                macs.len(),
                1,
                "{change:?}: new stream {st} spread over {macs:?}"
            );
            assert!(
                !macs.contains(web1),
                "{change:?}: new stream {st} went to web1"
            );
        }
        let moved: BTreeMap<&str, usize> = old_on_web1
            .values()
            .filter(|m| !m.contains(web1))
            .flat_map(|m| m.iter().copied())
            .fold(BTreeMap::new(), |mut acc, m| {
                *acc.entry(m).or_default() += 1;
                acc
            });
        match change {
            Change::Weight0 | Change::Draining => {
                for (st, macs) in &old_on_web1 {
                    assert_eq!(
                        macs.iter().copied().collect::<Vec<_>>(),
                        vec![web1],
                        "{change:?}: stream {st} left web1"
                    );
                }
            }
            Change::Down => {
                // Observed: each of web1's connections moves, as a whole, to one live
                // server of the service (Maglev over the remaining servers).
                for (st, macs) in &old_on_web1 {
                    assert_eq!(macs.len(), 1, "Down: stream {st} split over {macs:?}");
                    assert!(!macs.contains(web1), "Down: stream {st} still sent to web1");
                    assert!(
                        http.servers[1..].iter().any(|x| macs.contains(x.1)),
                        "Down: stream {st} to {macs:?}"
                    );
                }
                eprintln!("Down: web1's straddling connections moved to {moved:?}");
                assert!(
                    moved.len() == 2,
                    "Down: moved flows use both remaining servers: {moved:?}"
                );
            }
        }
    }
}

/// Runs `scenario` for `pipe` through gen and replay (binary); checks the invariant,
/// checksums and one destination MAC per flow and direction. Returns the output frames.
/// `gen_pipe` is the pipeline gen makes the traffic for (`None`: gen's built-in web farm).
fn scenario_checks(
    pipe: &Path,
    gen_pipe: Option<&Path>,
    scenario: &str,
    flows: u64,
    extra: &[&str],
    tmp: &Path,
) -> Vec<Frame> {
    let tag = format!(
        "{}-{}-{scenario}{}",
        pipe.file_stem().unwrap_or_default().to_string_lossy(),
        if gen_pipe.is_some() { "own" } else { "builtin" },
        extra.join("").replace(['-', ','], "")
    );
    let input = tmp.join(format!("{tag}.in.pcap"));
    let output = tmp.join(format!("{tag}.out.pcap"));
    common::generate(gen_pipe, scenario, flows, &input, extra);
    let s = replay_bin(pipe, &input, &output, &tmp.join(format!("{tag}.json")));
    let drops = check_invariant(&s);
    let fin = frames(&input);
    let fout = frames(&output);
    assert_eq!(u(&s["packets_in"]), fin.len() as u64, "{tag}: packets_in");
    assert_eq!(
        u(&s["packets_out"]),
        fout.len() as u64,
        "{tag}: packets_out"
    );
    eprintln!(
        "{tag}: {} in, {} out, {drops} dropped, {}",
        fin.len(),
        fout.len(),
        s["drops"]
    );

    // gen writes correct checksums; none may turn bad.
    for (i, st) in common::checksum_status(&input).iter().enumerate() {
        assert!(
            !st.iter().any(|f| f.split(',').any(|x| x == "0")),
            "{tag}: input frame {} bad checksum {st:?}",
            i + 1
        );
    }
    for (i, st) in common::checksum_status(&output).iter().enumerate() {
        assert!(
            !st.iter().any(|f| f.split(',').any(|x| x == "0")),
            "{tag}: output frame {} bad checksum {st:?}",
            i + 1
        );
    }

    let mut dst: HashMap<String, String> = HashMap::new();
    for (i, f) in fout.iter().enumerate() {
        assert_eq!(f.eth_src, SYSTEM, "{tag}: frame {} source MAC", i + 1);
        let e = dst.entry(f.flow_dir()).or_insert(f.eth_dst.clone());
        assert_eq!(
            *e,
            f.eth_dst,
            "{tag}: frame {} ({}) changed destination",
            i + 1,
            f.flow_dir()
        );
    }
    assert!(
        dst.len() as u64 >= flows,
        "{tag}: {} flow directions for {flows} flows",
        dst.len()
    );
    fout
}

#[test]
fn ftp_udp_esp_tagged_scenarios() {
    if !common::have_tshark() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ftp = pipeline("ftp.yaml");
    let qos = pipeline("qos-mpls.yaml");
    let ftp_servers = ["02:00:00:00:04:01", "02:00:00:00:04:02"];

    // FTP: the control connection (to port 21) goes to an FTP server, passive data
    // connections to the server owning their port (30000-30499 ftp1, 30500-30999 ftp2),
    // active data (from port 20) to the gateway.
    let out = scenario_checks(&ftp, Some(&ftp), "ftp", 200, &[], dir.path());
    let vip = "198.51.100.21";
    let ctl: Vec<&Frame> = out
        .iter()
        .filter(|f| f.dst == vip && f.dport == "21")
        .collect();
    assert!(!ctl.is_empty(), "FTP control frames present");
    for f in &ctl {
        assert!(
            ftp_servers.contains(&f.eth_dst.as_str()),
            "control frame to {}",
            f.eth_dst
        );
    }
    let used: BTreeSet<&str> = ctl.iter().map(|f| f.eth_dst.as_str()).collect();
    assert_eq!(used.len(), 2, "control connections use both FTP servers");
    for f in out.iter().filter(|f| f.src == vip) {
        assert_eq!(
            f.eth_dst, GATEWAY,
            "responses from the VIP go to the gateway"
        );
    }
    let mut pasv = [0; 2];
    for f in out.iter().filter(|f| f.dst == vip && f.proto == "6") {
        let port: u32 = f.dport.parse().unwrap_or(0);
        if (30000..=30999).contains(&port) {
            let owner = usize::from(port >= 30500);
            assert_eq!(
                f.eth_dst, ftp_servers[owner],
                "passive data connection to port {port}"
            );
            pasv[owner] += 1;
        }
    }
    assert!(
        pasv[0] > 0 && pasv[1] > 0,
        "passive data frames for both ranges: {pasv:?}"
    );
    for f in out.iter().filter(|f| f.sport == "20" && f.proto == "6") {
        assert_eq!(
            f.eth_dst, GATEWAY,
            "active data connection (from port 20) to the gateway"
        );
    }

    for sc in ["udp", "esp", "tagged", "mix"] {
        scenario_checks(&ftp, Some(&ftp), sc, 200, &[], dir.path());
    }
    // qos-mpls has only a UDP service: gen makes UDP and ESP traffic for it; tagged (TCP)
    // traffic comes from gen's built-in web farm (same system and gateway MACs), once
    // with VLAN 10 and MPLS label 100 so the retag and lsp-exit rules apply.
    for sc in ["udp", "esp"] {
        scenario_checks(&qos, Some(&qos), sc, 200, &[], dir.path());
    }
    for sc in ["tagged", "mix"] {
        scenario_checks(&qos, None, sc, 200, &[], dir.path());
    }
    scenario_checks(
        &qos,
        None,
        "tagged",
        200,
        &["--vlan-id", "10", "--mpls-labels", "100,200,300"],
        dir.path(),
    );
}
