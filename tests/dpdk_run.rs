//! `flowgate run` end to end (feature `dpdk`, root): the binary is started as a child
//! process with a conf written to a temporary directory.
//!
//! - `run_pcap_matches_replay`: on a `net_pcap` vdev, `run` emits the same frames, byte
//!   for byte and in order, as `replay` on the same capture and pipeline (the shipped
//!   sample and a capture from `gen`); the counters agree too; nothing leaks.
//! - `run_two_workers_dispatch_matches_replay`: the same with two workers on one
//!   `net_pcap` RX queue (software dispatcher) and one `tx_pcap` per worker: the union of
//!   the outputs is the replay output as a multiset, each flow's frames keep their order,
//!   and the counters agree.
//! - `run_stops_cleanly_on_sigterm`: `net_null` ports, two workers with RSS (more lcores
//!   than CPUs via `lcores.cpus`), SIGTERM → exit code 0, stats JSON written,
//!   `packets_in == packets_out + drops`, mempool in use 0.
//! - `run_bad_port_is_a_clear_error`: a vdev that cannot probe fails the run, naming it.
//! - `run_rewrites_the_stats_file_while_running`: the stats JSON is rewritten every
//!   interval while the run goes on (`runtime.running` true, every frame counted once the
//!   capture is read, whole at every read), then once more at the stop.
//!
//! Skips with a note when not root (and `CI` is not set).
#![cfg(feature = "dpdk")]

mod common;

use common::{flowgate, in_ci, root, sigterm_and_wait};
use flowgate::port::pcap::PcapReader;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    let ok = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !ok {
        assert!(!in_ci(), "DPDK run tests must run as root in CI");
        eprintln!("SKIP: not root");
    }
    ok
}

/// Frames of a capture, in order.
fn frames(p: &Path) -> Vec<Vec<u8>> {
    let mut r = PcapReader::open(p).expect("open capture");
    let mut out = Vec::new();
    while let Some(pkt) = r.next_packet().expect("read capture") {
        out.push(pkt.data.to_vec());
    }
    out
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).expect("stats json")).expect("valid json")
}

/// A unique EAL file prefix per test run.
/// A run conf at `conf`: `pipeline` on two `net_null` ports (outside, inside), worker
/// lcores `workers` (a YAML list) sharing CPUs 0-1, the stats JSON at `stats` every
/// `interval_ms`; EAL file prefix from `tag`.
fn write_null_conf(
    conf: &Path,
    pipeline: &Path,
    tag: &str,
    workers: &str,
    interval_ms: u64,
    stats: &Path,
) {
    std::fs::write(
        conf,
        format!(
            "pipeline: {}\neal: [\"--no-huge\", \"-m\", \"512\", \"--no-pci\", \"--no-telemetry\", \"--file-prefix\", \"{}\"]\n\
             lcores: {{ management: 0, workers: {workers}, cpus: \"0-1\" }}\n\
             ports:\n  - {{ name: outside, device: \"net_null1\" }}\n  - {{ name: inside, device: \"net_null0,size=64\" }}\n\
             mempool: {{ mbufs: 4095, cache: 64 }}\n\
             stats: {{ interval_ms: {interval_ms}, json: {} }}\n",
            pipeline.display(),
            prefix(tag),
            stats.display()
        ),
    )
    .expect("write conf");
}

/// web-farm.yaml's line for web3 (the reload tests add servers after it).
const WEB3: &str =
    "      - { name: web3, mac: \"02:00:00:00:01:03\", ip: 10.0.0.13, weight: 200 }\n";

/// A copy of web-farm.yaml in `dir` (for the test to edit and reload) run on two
/// `net_null` ports ([`write_null_conf`] with `tag`, `workers`, stats every 200 ms to
/// `stats`), once it polls: the copy's path, the farm's text, the run and its log.
fn farm_on_null(
    dir: &Path,
    tag: &str,
    workers: &str,
    stats: &Path,
) -> (std::path::PathBuf, String, common::Proc, Log) {
    let conf = dir.join("null.yaml");
    let pipe = dir.join("pipe.yaml");
    let farm = std::fs::read_to_string(root().join("pipelines/web-farm.yaml")).expect("farm");
    assert!(farm.contains(WEB3), "web-farm.yaml lists web3 as expected");
    std::fs::write(&pipe, &farm).expect("write pipeline");
    write_null_conf(&conf, &pipe, tag, workers, 200, stats);
    let (mut child, mut log) = spawn_run(&conf);
    let polling = log.wait_for("] rx ");
    let _ = (!polling).then(|| child.0.kill());
    assert!(polling, "periodic rate line within 30 s: {}", log.text);
    (pipe, farm, child, log)
}

/// Sends `sig` (`-HUP`, …) to process `pid`.
fn signal(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill")
            .success()
    );
}

/// Starts `flowgate run --conf conf` (killed if the test fails before it stops) and
/// follows what it says.
fn spawn_run(conf: &Path) -> (common::Proc, Log) {
    let mut child = common::Proc(
        flowgate()
            .args(["run", "--conf"])
            .arg(conf)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn run"),
    );
    let log = Log::follow(&mut child.0);
    (child, log)
}

/// A run's stderr, read as it comes by a thread of its own, so that a test can act on
/// what the run says.
struct Log {
    rx: std::sync::mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Every line read so far.
    text: String,
}

impl Log {
    fn follow(child: &mut std::process::Child) -> Log {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let stderr = child.stderr.take().expect("stderr piped");
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(l);
            }
        });
        Log {
            rx,
            reader: Some(reader),
            text: String::new(),
        }
    }

    /// Reads on until a line contains `needle` (true) or 30 s pass (false).
    fn wait_for(&mut self, needle: &str) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if let Ok(l) = self.rx.recv_timeout(Duration::from_millis(100)) {
                self.text.push_str(&l);
                self.text.push('\n');
                if l.contains(needle) {
                    return true;
                }
            }
        }
        false
    }

    /// Everything the run said, once it has exited.
    fn finish(mut self) -> String {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.text.extend(self.rx.try_iter().map(|l| l + "\n"));
        self.text
    }
}

fn prefix(tag: &str) -> String {
    format!("fgt-{tag}-{}", std::process::id())
}

fn run_pcap_case(dir: &Path, input: &Path, tag: &str) {
    run_pcap_case_with(dir, input, tag, &root().join("pipelines/web-farm.yaml"));
}

fn run_pcap_case_with(dir: &Path, input: &Path, tag: &str, pipeline: &Path) {
    run_pcap_case_eal(dir, input, tag, &no_huge_eal(tag), pipeline);
}

/// The EAL arguments of a run without hugepages, with its own file prefix.
fn no_huge_eal(tag: &str) -> String {
    format!(
        "[\"--no-huge\", \"-m\", \"512\", \"--no-pci\", \"--no-telemetry\", \"--file-prefix\", \"{}\"]",
        prefix(tag)
    )
}

/// `flowgate run` of `input` through `pipeline` on a `net_pcap` port (EAL arguments
/// `eal`, a YAML list), until idle: its output capture (`TAG-run.pcap` in `dir`) and its
/// stats JSON. Panics with its stderr when it fails.
fn run_pcap(
    dir: &Path,
    input: &Path,
    tag: &str,
    eal: &str,
    pipeline: &Path,
) -> (std::path::PathBuf, serde_json::Value) {
    let out_run = dir.join(format!("{tag}-run.pcap"));
    let stats_run = dir.join(format!("{tag}-run.json"));
    let conf = dir.join(format!("{tag}.yaml"));
    std::fs::write(
        &conf,
        format!(
            "pipeline: {}\neal: {eal}\n\
             lcores: {{ management: 0, workers: [1], cpus: \"0-1\" }}\n\
             ports:\n  - {{ name: outside, device: \"net_pcap0,rx_pcap={},tx_pcap={}\" }}\n\
             stop: {{ idle_ms: 700 }}\n",
            pipeline.display(),
            input.display(),
            out_run.display()
        ),
    )
    .expect("write conf");
    let o = flowgate()
        .args(["run", "--quiet", "--conf"])
        .arg(&conf)
        .arg("--stats-json")
        .arg(&stats_run)
        .output()
        .expect("run");
    assert!(
        o.status.success(),
        "flowgate run failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (out_run, json(&stats_run))
}

fn run_pcap_case_eal(dir: &Path, input: &Path, tag: &str, eal: &str, pipeline: &Path) {
    let (out_run, jr) = run_pcap(dir, input, tag, eal, pipeline);
    let out_replay = dir.join(format!("{tag}-replay.pcap"));
    let jp = common::replay_stats(pipeline, input, &out_replay);

    let got = frames(&out_run);
    let want = frames(&out_replay);
    let n_in = frames(input).len();
    assert!(
        !want.is_empty(),
        "{tag}: replay forwards frames ({} of {n_in})",
        want.len()
    );
    assert_eq!(got.len(), want.len(), "{tag}: frame count");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            g == w,
            "{tag}: frame {i} differs\nrun    {g:02x?}\nreplay {w:02x?}"
        );
    }
    for k in [
        "packets_in",
        "packets_out",
        "drops",
        "flows_created",
        "arp_replies",
        "nd_replies",
        "icmp_errors",
        "fragments_out",
        "services",
    ] {
        assert_eq!(jr[k], jp[k], "{tag}: stats key {k}");
    }
    assert_eq!(
        jr["packets_in"].as_u64(),
        Some(n_in as u64),
        "{tag}: every input frame counted"
    );
    assert_eq!(
        jr["runtime"]["mempool_in_use"].as_u64(),
        Some(0),
        "{tag}: no mbuf leaked"
    );
    assert_eq!(jr["runtime"]["tx_refused"].as_u64(), Some(0));
}

#[test]
fn run_pcap_matches_replay() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    run_pcap_case(dir.path(), &root().join("samples/web-farm.pcap"), "sample");
    // A fresh capture from gen: web clients, FTP, UDP, ESP, tagged traffic.
    let gen_pcap = dir.path().join("gen.pcap");
    common::generate(
        Some(&root().join("pipelines/web-farm.yaml")),
        "mix",
        300,
        &gen_pcap,
        &[],
    );
    run_pcap_case(dir.path(), &gen_pcap, "gen");
}

/// Free 2 MiB hugepages, from /proc/meminfo.
fn free_hugepages() -> u64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let free = m
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok());
    let size_2m = m
        .lines()
        .any(|l| l.starts_with("Hugepagesize:") && l.contains("2048 kB"));
    if size_2m { free.unwrap_or(0) } else { 0 }
}

/// The pcap equivalence with hugepages (`--in-memory`) instead of `--no-huge`. Needs
/// 2 MiB hugepages reserved (e.g. `echo 512 > /proc/sys/vm/nr_hugepages` and hugetlbfs
/// mounted); skips with a note otherwise (also in CI: reserving pages is the host's call).
#[test]
fn run_pcap_with_hugepages() {
    if !is_root() {
        return;
    }
    if free_hugepages() < 256 {
        eprintln!("SKIP: fewer than 256 free 2 MiB hugepages");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let eal = "[\"--in-memory\", \"-m\", \"256\", \"--no-pci\", \"--no-telemetry\"]";
    run_pcap_case_eal(
        dir.path(),
        &root().join("samples/web-farm.pcap"),
        "huge",
        eal,
        &root().join("pipelines/web-farm.yaml"),
    );
}

/// Third-party captures with VLAN tags and MPLS labels under the QoS/MPLS pipeline: the
/// rewrites (push/pop in the mbuf headroom) give the same bytes as replay's.
#[test]
fn run_pcap_qos_mpls_matches_replay() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = root().join("pipelines/qos-mpls.yaml");
    for (i, name) in [
        "packetlife_MPLS_encapsulation.pcap",
        "packetlife_EoMPLS_802.1q.pcap",
        "suricata_eve-flow-vlan-02.pcap",
    ]
    .iter()
    .enumerate()
    {
        let Some(cap) = common::shared(&format!("captures/{name}")) else {
            return;
        };
        run_pcap_case_with(dir.path(), &cap, &format!("q{i}"), &pipeline);
    }
}

/// `pipelines/web-farm.yaml` with `system.mtu: mtu`, written into `dir` (the same file
/// each time); its path.
fn web_farm_with_mtu(dir: &Path, mtu: u16) -> std::path::PathBuf {
    let web = std::fs::read_to_string(root().join("pipelines/web-farm.yaml")).unwrap();
    let p = dir.join("web-farm-mtu.yaml");
    let text = web.replacen("system:\n", &format!("system:\n  mtu: {mtu}\n"), 1);
    std::fs::write(&p, text).unwrap();
    p
}

/// Packets cut into fragments (`system.mtu` 1280, IPv4 without DF) and answered (with
/// DF: Fragmentation Needed), mixed with others in the same bursts: each fragment leaves
/// right after its first, as replay writes them. (Frames within the default mbufs'
/// 2048 bytes: a larger one would arrive chained, and flowgate reads only an mbuf's first
/// segment.) From a host beside the servers, so that the datagrams no service takes leave
/// to the gateway (from the gateway they would go back where they came from, and are
/// dropped as `reflected`).
#[test]
fn run_pcap_fragments_match_replay() {
    if !is_root() || !common::have_scapy() {
        assert!(!in_ci(), "CI runs this as root with scapy");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = web_farm_with_mtu(dir.path(), 1280);
    let input = dir.path().join("big.pcap");
    common::scapy(&format!(
        "from scapy.all import *\n\
         E = Ether(src='02:00:00:00:00:aa', dst='02:00:00:00:00:01')\n\
         fs = []\n\
         for i in range(60):\n  \
         n = [10, 1500, 1900, 1300][i % 4]\n  \
         df = 'DF' if i % 8 == 3 else 0\n  \
         fs.append(E/IP(src='198.51.100.%d' % (i % 7 + 1), dst='192.0.2.99', id=i, flags=df)/UDP(sport=5000 + i, dport=53)/Raw(b'z' * n))\n\
         wrpcap({:?}, fs)\n",
        input.to_str().unwrap()
    ));
    run_pcap_case_with(dir.path(), &input, "frag", &pipeline);
    let j = json(&dir.path().join("frag-run.json"));
    assert!(j["fragments_out"].as_u64() > Some(20), "{j}");
    assert!(j["icmp_errors"].as_u64() > Some(0), "{j}");
}

/// `flowgate run` of `input` through `pipeline` with two workers on one `net_pcap` port
/// (single-queue: the software dispatcher spreads the frames), until idle, in `dir`:
/// each worker's output capture and the stats JSON's path. Checks that it ran and
/// dispatched.
fn run_two_workers_dispatched(
    dir: &Path,
    pipeline: &Path,
    input: &Path,
    tag: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let (out0, out1, stats) = (
        dir.join(format!("{tag}-o0.pcap")),
        dir.join(format!("{tag}-o1.pcap")),
        dir.join(format!("{tag}-run.json")),
    );
    let conf = dir.join(format!("{tag}.yaml"));
    std::fs::write(
        &conf,
        format!(
            "pipeline: {}\neal: {}\n\
             lcores: {{ management: 0, workers: [1, 2], cpus: \"0-1\" }}\n\
             ports:\n  - {{ name: outside, device: \"net_pcap0,rx_pcap={},tx_pcap={},tx_pcap={}\" }}\n\
             stop: {{ idle_ms: 700 }}\n",
            pipeline.display(),
            no_huge_eal(tag),
            input.display(),
            out0.display(),
            out1.display()
        ),
    )
    .expect("write conf");
    let o = flowgate()
        .args(["run", "--quiet", "--conf"])
        .arg(&conf)
        .arg("--stats-json")
        .arg(&stats)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "flowgate run failed: {err}");
    assert!(err.contains("software dispatch"), "{err}");
    (out0, out1, stats)
}

#[test]
fn run_two_workers_dispatch_matches_replay() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pipeline = root().join("pipelines/web-farm.yaml");
    let input = d.join("gen.pcap");
    common::generate(Some(&pipeline), "mix", 400, &input, &[]);
    let out_replay = d.join("replay.pcap");
    let (out0, out1, stats_run) = run_two_workers_dispatched(d, &pipeline, &input, "two");
    let jp = common::replay_stats(&pipeline, &input, &out_replay);
    let (a, b, want) = (frames(&out0), frames(&out1), frames(&out_replay));
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both workers forwarded frames ({} / {})",
        a.len(),
        b.len()
    );
    // Multiset equality.
    let mut got: Vec<&Vec<u8>> = a.iter().chain(&b).collect();
    let mut w: Vec<&Vec<u8>> = want.iter().collect();
    got.sort();
    w.sort();
    assert_eq!(got.len(), w.len(), "frame count");
    assert!(
        got == w,
        "the two workers' outputs are not the replay output"
    );
    // Each worker's output is a subsequence of the replay output (order kept per flow).
    for (name, out) in [("worker 0", &a), ("worker 1", &b)] {
        let mut it = want.iter();
        for (i, f) in out.iter().enumerate() {
            assert!(it.any(|x| x == f), "{name}: frame {i} out of order");
        }
    }
    let jr = json(&stats_run);
    for k in [
        "packets_in",
        "packets_out",
        "drops",
        "flows_created",
        "services",
    ] {
        assert_eq!(jr[k], jp[k], "stats key {k}");
    }
    assert_eq!(jr["runtime"]["mempool_in_use"].as_u64(), Some(0));
    assert_eq!(jr["runtime"]["dispatch_dropped"].as_u64(), Some(0));
}

/// `rate_limit` behind the software dispatcher: every flow of a client reaches one
/// worker (the dispatcher hashes addresses), which holds the client to its whole limit,
/// not to its share of it: 4 clients, 20 SYNs each at once, with a burst of 10 (and one
/// more a second) get 10 each through two workers, as through replay's one.
#[test]
fn run_two_workers_dispatch_hold_each_client_to_its_whole_rate_limit() {
    if !is_root() || !common::have_scapy() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pipeline = d.join("limited.yaml");
    std::fs::write(
        &pipeline,
        "system: { mac: \"02:00:00:00:00:01\", addresses: [203.0.113.1], gateway: \"02:00:00:00:00:fe\" }\n\
         services:\n  - name: web\n    vip: 203.0.113.10\n    proto: tcp\n    ports: [80]\n\
         \x20   rate_limit: { per_source: 1, burst: 10 }\n    servers:\n\
         \x20     - { name: web1, mac: \"02:00:00:00:01:01\" }\n\
         \x20     - { name: web2, mac: \"02:00:00:00:01:02\" }\n",
    )
    .expect("pipeline");
    let input = d.join("syns.pcap");
    common::scapy(&format!(
        "from scapy.all import *\n\
         pk = [Ether(src='02:00:00:00:00:fe', dst='02:00:00:00:00:01')/IP(src='198.51.100.%d' % c, dst='203.0.113.10')/TCP(sport=1000 + k, dport=80, flags='S') for k in range(20) for c in range(1, 5)]\n\
         wrpcap('{}', pk)\n",
        input.display()
    ));
    let (out0, out1, stats_run) = run_two_workers_dispatched(d, &pipeline, &input, "limit");
    let jr = json(&stats_run);
    assert_eq!(jr["packets_out"], 40, "{jr}");
    assert_eq!(jr["drops"]["rate_limited"], 40, "{jr}");
    assert_eq!(frames(&out0).len() + frames(&out1).len(), 40);
    let jp = common::replay_stats(&pipeline, &input, &d.join("replay.pcap"));
    assert_eq!(
        (&jp["packets_out"], &jp["drops"]),
        (&jr["packets_out"], &jr["drops"])
    );
}

#[test]
fn run_rewrites_the_stats_file_while_running() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let input = root().join("samples/web-farm.pcap");
    let n_in = frames(&input).len() as u64;
    let stats = dir.path().join("live.json");
    let conf = dir.path().join("live.yaml");
    let prom = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("its address")
    };
    std::fs::write(
        &conf,
        format!(
            "pipeline: {}\neal: [\"--no-huge\", \"-m\", \"512\", \"--no-pci\", \"--no-telemetry\", \"--file-prefix\", \"{}\"]\n\
             lcores: {{ management: 0, workers: [1], cpus: \"0-1\" }}\n\
             ports:\n  - {{ name: outside, device: \"net_pcap0,rx_pcap={},tx_pcap={}\" }}\n\
             stop: {{ idle_ms: 3000 }}\n\
             stats: {{ interval_ms: 100, json: {}, prometheus: \"{prom}\" }}\n",
            root().join("pipelines/web-farm.yaml").display(),
            prefix("live"),
            input.display(),
            dir.path().join("out.pcap").display(),
            stats.display()
        ),
    )
    .expect("write conf");
    let mut child = flowgate()
        .args(["run", "--quiet", "--conf"])
        .arg(&conf)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn run");
    // Read the file as a monitoring agent would, until a snapshot taken while running
    // counts every frame of the capture (or the run has ended).
    let t0 = Instant::now();
    let mut reads = 0;
    let mut live = None;
    // And scrape the Prometheus endpoint, until it too counts every frame while running,
    // and ask it whether the run is healthy (running, its port's link up, a recent
    // snapshot) until it says so.
    let mut scraped = None;
    let mut healthy = None;
    let want = [
        format!("flowgate_packets_in_total {n_in}"),
        "flowgate_running 1".to_string(),
    ];
    while t0.elapsed() < Duration::from_secs(30)
        && (live.is_none() || scraped.is_none() || healthy.is_none())
        && child.try_wait().is_ok_and(|s| s.is_none())
    {
        if healthy.is_none()
            && let Some((status, body)) = http_get(prom, "/healthz")
            && status.starts_with("HTTP/1.0 200")
        {
            healthy = Some(body);
        }
        if scraped.is_none()
            && let Some(text) = scrape(prom)
            && want.iter().all(|w| text.lines().any(|l| l == w))
        {
            scraped = Some(text);
        }
        if let Ok(text) = std::fs::read_to_string(&stats) {
            reads += 1;
            let j: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("a read saw a partial file ({e}): {text}"));
            if j["runtime"]["running"] == serde_json::Value::Bool(true)
                && j["packets_in"].as_u64() == Some(n_in)
            {
                live = Some(j);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().expect("wait for run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "flowgate run failed: {err}");
    let live = live.unwrap_or_else(|| {
        panic!("no snapshot while running counted all {n_in} frames ({reads} reads): {err}")
    });
    let scraped = scraped.unwrap_or_else(|| {
        panic!("no scrape of http://{prom}/metrics while running counted all {n_in} frames: {err}")
    });
    assert_eq!(
        healthy.as_deref(),
        Some("ok\n"),
        "http://{prom}/healthz never said 200 ok while running: {err}"
    );
    assert!(
        err.contains(&format!(
            "stats: Prometheus metrics on http://{prom}/metrics, health on http://{prom}/healthz"
        )),
        "{err}"
    );
    // The Prometheus project's own parser reads it (python3-prometheus-client, in CI).
    if common::have(common::SCAPY_PY, &["-c", "import prometheus_client"]) {
        let f = dir.path().join("scrape.prom");
        std::fs::write(&f, &scraped).expect("write scrape");
        let out = common::scapy(&format!(
            "from prometheus_client.parser import text_string_to_metric_families\n\
             fams = list(text_string_to_metric_families(open({:?}).read()))\n\
             print([s.value for f in fams for s in f.samples if s.name == 'flowgate_port_ipackets_total'])\n\
             print([(s.labels, s.value) for f in fams for s in f.samples if s.name == 'flowgate_worker_packets_in_total'])\n",
            f.display().to_string()
        ));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0], format!("[{}.0]", n_in), "{scraped}");
        // The one worker processed every frame.
        assert_eq!(
            lines[1],
            format!("[({{'worker': '0'}}, {}.0)]", n_in),
            "{scraped}"
        );
    }
    assert_eq!(live["runtime"]["workers"].as_u64(), Some(1));
    // web-farm.yaml's flow table (the default 1M) on one worker.
    assert_eq!(live["runtime"]["flow_capacity"].as_u64(), Some(1 << 20));
    assert!(
        live["runtime"]["ports"]["outside"]["ipackets"].as_u64() == Some(n_in),
        "live port counters: {live}"
    );
    let fin = json(&stats);
    assert_eq!(fin["runtime"]["running"], serde_json::Value::Bool(false));
    assert_eq!(fin["packets_in"].as_u64(), Some(n_in));
    assert_eq!(fin["packets_out"], live["packets_out"]);
    assert_eq!(fin["runtime"]["mempool_in_use"].as_u64(), Some(0));
    assert!(
        !dir.path().join("live.json.tmp").exists(),
        "the temporary file is renamed, not left behind"
    );
}

/// `GET /metrics` from `flowgate run`'s exporter at `addr`: the body of a 200, if any.
fn scrape(addr: std::net::SocketAddr) -> Option<String> {
    let (status, body) = http_get(addr, "/metrics")?;
    status.starts_with("HTTP/1.0 200").then_some(body)
}

/// `GET path` from `flowgate run`'s exporter at `addr`: the status line and the body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(String, String)> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    c.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .ok()?;
    let mut r = String::new();
    c.read_to_string(&mut r).ok()?;
    let (head, body) = r.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

#[test]
fn run_stops_cleanly_on_sigterm() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let stats = dir.path().join("stats.json");
    // A copy of the web farm, edited below for the reloads.
    let (pipe, farm, mut child, mut log) = farm_on_null(dir.path(), "term", "[1, 2]", &stats);
    let conf = dir.path().join("null.yaml");
    let pid = child.0.id();
    let kill = |sig: &str| signal(pid, sig);
    // SIGHUP: the management lcore reloads the (unchanged) pipeline and publishes it.
    kill("-HUP");
    assert!(
        log.wait_for("pipeline reloaded (generation 2)"),
        "{}",
        log.text
    );
    // A server added to a service: taken without a restart.
    let web3 = WEB3;
    let web4 = "      - { name: web4, mac: \"02:00:00:00:01:04\", ip: 10.0.0.14, weight: 100 }\n";
    std::fs::write(&pipe, farm.replace(web3, &format!("{web3}{web4}"))).expect("grow");
    kill("-HUP");
    assert!(
        log.wait_for("pipeline reloaded (generation 3)"),
        "{}",
        log.text
    );
    // Servers taken away: taken too, each kept down while flows go to it. None does
    // (net_null's frames make no flow), so the management loop frees them within
    // about a second, and their names leave the counters.
    std::fs::write(&pipe, farm.replace(web3, "")).expect("shrink");
    kill("-HUP");
    assert!(
        log.wait_for("pipeline reloaded (generation 4)"),
        "{}",
        log.text
    );
    assert!(
        log.wait_for("freed, their last flows ended: servers [\"web3\", \"web4\"], members [\"http\"/\"web3\", \"http\"/\"web4\"] (generation 5)"),
        "{}", log.text
    );
    // A longer established-TCP timeout: taken, for the open flows too (said in the log).
    let longer = farm.replace(web3, "").replacen(
        "services:\n",
        "flow_table: { tcp_established_timeout: 900 }\nservices:\n",
        1,
    );
    std::fs::write(&pipe, &longer).expect("longer");
    kill("-HUP");
    assert!(
        log.wait_for("pipeline reloaded; timeouts changed, open flows included: tcp_established_timeout 300 → 900 s (generation 6)"),
        "{}", log.text
    );
    // A pattern rule added, with an idle timeout no class had: taken, and said.
    let ntp = "flows:\n  - { name: ntp, match: { proto: udp, dst_port: 123 }, to: gateway, idle_timeout: 45 }\ndefault:";
    std::fs::write(&pipe, longer.replacen("default:", ntp, 1)).expect("a rule");
    kill("-HUP");
    assert!(
        log.wait_for("pipeline reloaded; flow rules added: [\"ntp\"] (generation 7)"),
        "{}",
        log.text
    );
    // The services swapped: taken (a service is known by name; the file's order is
    // their priority), and said.
    let at = farm
        .find("  - name: https6")
        .expect("https6 in web-farm.yaml");
    let end = farm.find("default:").expect("default in web-farm.yaml");
    let (head, http) = farm[..at].split_at(farm.find("  - name: http\n").expect("http"));
    std::fs::write(
        &pipe,
        format!("{head}{}{http}{}", &farm[at..end], &farm[end..]),
    )
    .expect("swap");
    kill("-HUP");
    assert!(
        log.wait_for("services reordered: [\"https6\", \"http\"]"),
        "{}",
        log.text
    );
    // A new flow-table size: taken (each worker moves its flows into a new table), and
    // said.
    std::fs::write(
        &pipe,
        farm.replacen(
            "services:\n",
            "flow_table: { capacity: 4096 }\nservices:\n",
            1,
        ),
    )
    .expect("capacity");
    kill("-HUP");
    assert!(
        log.wait_for("flow table resized: 1048576 → 4096 flows a worker, open flows moving into the new table"),
        "{}", log.text
    );
    // A file that does not parse: refused, the running tables stay.
    std::fs::write(&pipe, "services: [\n").expect("broken");
    kill("-HUP");
    assert!(log.wait_for("reload refused:"), "{}", log.text);
    // The conf names another pipeline file, a slower summary and a larger mempool: the
    // first two are taken, the mempool is said to take a restart.
    let pipe2 = dir.path().join("pipe2.yaml");
    std::fs::write(&pipe2, &farm).expect("pipe2");
    let text = std::fs::read_to_string(&conf).expect("conf");
    let edited = text
        .replace(&pipe.display().to_string(), &pipe2.display().to_string())
        .replace("interval_ms: 200", "interval_ms: 300")
        .replace("mbufs: 4095", "mbufs: 8191");
    assert!(edited.contains("pipe2.yaml") && edited.contains("300") && edited.contains("8191"));
    std::fs::write(&conf, edited).expect("edit conf");
    kill("-HUP");
    let line = format!(
        "pipeline reloaded; flow table resized: 4096 → 1048576 flows a worker, open flows moving into the new table; \
         conf: pipeline {} → {}; conf: stats.interval_ms 200 → 300; \
         conf: mempool changed, kept as running until a restart",
        pipe.display(),
        pipe2.display()
    );
    assert!(log.wait_for(&line), "{line}\n{}", log.text);
    // The next reload reads the new file.
    std::fs::write(&pipe2, farm.replacen("default:", ntp, 1)).expect("a rule in pipe2");
    kill("-HUP");
    assert!(
        log.wait_for("pipeline reloaded; flow rules added: [\"ntp\"]"),
        "{}",
        log.text
    );
    let status = sigterm_and_wait(&mut child.0, Duration::from_secs(20))
        .expect("flowgate run did not stop within 20 s of SIGTERM");
    let err = log.finish();
    assert!(status.success(), "exit status {status:?}\n{err}");
    assert!(err.contains("stopping (signal)"), "{err}");
    assert!(
        err.contains("symmetric RSS"),
        "net_null with 2 workers: {err}"
    );
    assert!(err.contains("] rx "), "periodic rate line: {err}");
    let j = json(&stats);
    // web3 came back with the later files (into a free index), web4 did not.
    assert!(
        j["services"]["http"]["servers"]["web3"].is_u64()
            && j["services"]["http"]["servers"].get("web4").is_none()
            && j["server_flows"].get("web4").is_none(),
        "the final counters are the last pipeline's, without the freed server: {j}"
    );
    let pin = j["packets_in"].as_u64().expect("packets_in");
    let pout = j["packets_out"].as_u64().expect("packets_out");
    let drops: u64 = j["drops"]
        .as_object()
        .expect("drops")
        .values()
        .filter_map(|v| v.as_u64())
        .sum();
    assert!(pin > 1000, "net_null delivered frames: {pin}");
    assert_eq!(
        pin,
        pout + drops,
        "every frame forwarded or counted as a drop"
    );
    assert_eq!(
        j["runtime"]["mempool_in_use"].as_u64(),
        Some(0),
        "no mbuf leaked: {j}"
    );
    assert_eq!(j["runtime"]["workers"].as_u64(), Some(2));
    // Each worker's own figures: they add up to the totals, and net_null, which fills
    // every burst, keeps both busy (a share of the run in loops that received frames).
    let per = j["runtime"]["per_worker"].as_object().expect("per_worker");
    assert_eq!(per.keys().collect::<Vec<_>>(), ["0", "1"], "{j}");
    let sum = |k: &str| {
        per.values()
            .map(|w| w[k].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!(sum("packets_in"), pin, "{j}");
    assert_eq!(sum("packets_out"), pout, "{j}");
    assert_eq!(sum("dropped"), drops, "{j}");
    assert_eq!(Some(sum("live_flows")), j["runtime"]["live_flows"].as_u64());
    let seconds = j["runtime"]["seconds"].as_f64().expect("seconds");
    for (i, w) in per {
        assert!(w["packets_in"].as_u64() > Some(0), "worker {i}: {j}");
        let busy = w["busy"].as_f64().expect("busy");
        assert!(busy > 0.5 && busy <= 1.0, "worker {i} busy {busy}: {j}");
        let s = w["busy_seconds"].as_f64().expect("busy_seconds");
        assert!(
            s > 0.0 && s <= seconds,
            "worker {i}: {s} of {seconds} s: {j}"
        );
    }
    assert_eq!(per["0"]["lcore"].as_u64(), Some(1), "{j}");
    assert!(err.contains("busy "), "the rate line's busy shares: {err}");
    assert!(
        j["runtime"]["ports"]["inside"]["ipackets"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );
}

#[test]
fn run_bad_port_is_a_clear_error() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("bad.yaml");
    // `flowgate run` with one port (`port`, the YAML inside its braces): its stderr,
    // once it has failed.
    let fails = |port: &str, tag: &str| {
        std::fs::write(
            &conf,
            format!(
                "pipeline: {}\neal: [\"--no-huge\", \"-m\", \"256\", \"--no-pci\", \"--no-telemetry\", \"--file-prefix\", \"{}\"]\n\
                 lcores: {{ management: 0, workers: [1], cpus: \"0-1\" }}\n\
                 ports:\n  - {{ name: outside, {port} }}\n",
                root().join("pipelines/web-farm.yaml").display(),
                prefix(tag),
            ),
        )
        .expect("write conf");
        let o = flowgate()
            .args(["run", "--conf"])
            .arg(&conf)
            .output()
            .expect("run");
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let missing = dir.path().join("missing.pcap");
    let err = fails(
        &format!("device: \"net_pcap0,rx_pcap={}\"", missing.display()),
        "bad",
    );
    assert!(
        err.contains("port \"outside\"") && err.contains("did not probe"),
        "{err}"
    );
    // A port MTU its device cannot take stops the start, naming the port and the call.
    let err = fails("device: \"net_ring0\", mtu: 9000", "badmtu");
    assert!(
        err.contains("starting port \"outside\"") && err.contains("rte_eth_dev_set_mtu"),
        "{err}"
    );

    // A conf error names the file and key (exit code 2).
    std::fs::write(
        &conf,
        "pipeline: x.yaml\nlcores: {management: 0, workers: [0]}\nports: [{name: a, device: net_null0}]\n",
    )
    .expect("write conf");
    let o = flowgate()
        .args(["run", "--conf"])
        .arg(&conf)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.yaml:2: lcores.workers[0]"), "{err}");
}

/// `system.mtu` above a port's own MTU is a misconfiguration `flowgate run` names at
/// start; within the port's MTU there is no warning.
#[test]
fn run_warns_when_a_port_mtu_is_below_system_mtu() {
    if !is_root() {
        return;
    }
    let Some(cap) = common::shared("captures/packetlife_MPLS_encapsulation.pcap") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = web_farm_with_mtu(dir.path(), 9000);
    let run = |port_extra: &str, tag: &str| {
        let conf = dir.path().join(format!("{tag}.yaml"));
        std::fs::write(
            &conf,
            format!(
                "pipeline: {}\neal: [\"--no-huge\", \"-m\", \"256\", \"--no-pci\", \"--no-telemetry\", \"--file-prefix\", \"{}\"]\n\
                 lcores: {{ management: 0, workers: [1], cpus: \"0-1\" }}\n\
                 ports:\n  - {{ name: outside, device: \"net_pcap0,rx_pcap={},tx_pcap={}\"{port_extra} }}\n\
                 stop: {{ idle_ms: 500 }}\n",
                pipeline.display(),
                prefix(tag),
                cap.display(),
                dir.path().join(format!("{tag}.pcap")).display()
            ),
        )
        .expect("write conf");
        let o = flowgate()
            .args(["run", "--conf"])
            .arg(&conf)
            .output()
            .expect("run");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = run("", "mtu-low");
    assert!(
        err.contains("warning: port outside has MTU 1500, below system.mtu 9000"),
        "{err}"
    );
    // net_pcap cannot change its MTU, so the silent case is a pipeline within it.
    web_farm_with_mtu(dir.path(), 1500);
    let err = run("", "mtu-ok");
    assert!(!err.contains("warning: port"), "{err}");
    // The MTU given by port name: the port's own is the one compared.
    let farm = std::fs::read_to_string(&pipeline).unwrap();
    let by_name =
        |m: &str| farm.replacen("  mtu: 1500\n", &format!("  mtu: {{ outside: {m} }}\n"), 1);
    std::fs::write(&pipeline, by_name("9000")).unwrap();
    let err = run("", "mtu-port-low");
    assert!(
        err.contains("warning: port outside has MTU 1500, below system.mtu 9000"),
        "{err}"
    );
    std::fs::write(&pipeline, by_name("1500")).unwrap();
    let err = run("", "mtu-port-ok");
    assert!(!err.contains("warning: port"), "{err}");
}

/// A stderr that goes away (a log pipe closed, a terminal gone) does not stop the run
/// from logging on, nor from stopping cleanly on SIGTERM: before, the management loop
/// panicked on its next log line and left the workers polling for ever.
#[test]
fn run_survives_a_closed_stderr() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let stats = dir.path().join("stats.json");
    let conf = dir.path().join("null.yaml");
    let farm = root().join("pipelines/web-farm.yaml");
    write_null_conf(&conf, &farm, "epipe", "[1]", 100, &stats);
    let mut child = flowgate()
        .args(["run", "--conf"])
        .arg(&conf)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn run");
    {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let t0 = Instant::now();
        while !lines
            .next()
            .and_then(Result::ok)
            .is_some_and(|l| l.contains("] rx "))
        {
            assert!(t0.elapsed() < Duration::from_secs(30), "no rate line");
        }
        // The read end is dropped here: every later log line fails to write.
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "still running with its stderr gone"
    );
    let status = sigterm_and_wait(&mut child, Duration::from_secs(20))
        .expect("flowgate run did not stop within 20 s of SIGTERM with its stderr closed");
    assert!(status.success(), "exit status {status:?}");
    let j = json(&stats);
    assert_eq!(j["runtime"]["running"], serde_json::Value::Bool(false));
    assert_eq!(j["runtime"]["mempool_in_use"].as_u64(), Some(0), "{j}");
}

#[test]
fn run_pcap_drops_frames_larger_than_an_mbuf_and_counts_them() {
    // Without a port `mtu` the mbufs hold 2048 bytes; net_pcap chains a larger frame over
    // several. flowgate reads one segment, so such a frame is dropped and counted as
    // `segmented` (not forwarded cut short, not misread), its mbufs all freed; the other
    // frames are forwarded as replay forwards them.
    if !is_root() || !common::have_scapy() {
        assert!(!in_ci(), "CI runs this as root with scapy");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = web_farm_with_mtu(dir.path(), 9000);
    let (all, small) = (dir.path().join("all.pcap"), dir.path().join("small.pcap"));
    common::scapy(&format!(
        "from scapy.all import *\n\
         E = Ether(src='02:00:00:00:00:fe', dst='02:00:00:00:00:01')\n\
         fs = [E/IP(src='198.51.100.%d' % (i % 7 + 1), dst='203.0.113.10')/TCP(sport=40000 + i, dport=80, flags='S')/Raw(b'z' * [100, 1994, 1995, 3000, 8000][i % 5]) for i in range(50)]\n\
         wrpcap({:?}, fs)\n\
         wrpcap({:?}, [f for f in fs if len(f) <= 2048])\n",
        all.to_str().unwrap(),
        small.to_str().unwrap()
    ));
    let (out_run, j) = run_pcap(dir.path(), &all, "seg", &no_huge_eal("seg"), &pipeline);
    let n_small = frames(&small).len();
    assert_eq!(
        n_small, 20,
        "frames of 154 and 2048 bytes (2049 and more are chained)"
    );
    assert_eq!(j["packets_in"].as_u64(), Some(50), "{j}");
    assert_eq!(j["drops"], serde_json::json!({"segmented": 30}), "{j}");
    assert_eq!(j["runtime"]["mempool_in_use"].as_u64(), Some(0), "{j}");
    let out_replay = dir.path().join("replay.pcap");
    common::replay_stats(&pipeline, &small, &out_replay);
    assert_eq!(frames(&out_run), frames(&out_replay));
}

/// A port's link going down and up again (a `net_tap` port, whose kernel interface is
/// set down and up, as a cable pulled and put back): the management core logs each
/// change, and the stats JSON shows the link as it is while running.
#[test]
fn run_reports_link_changes() {
    if !is_root() || !Path::new("/dev/net/tun").exists() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let stats = dir.path().join("stats.json");
    let conf = dir.path().join("tap.yaml");
    let tap = format!("fgtap{}", std::process::id() % 100_000);
    std::fs::write(
        &conf,
        format!(
            "pipeline: {}\neal: [\"--no-huge\", \"-m\", \"512\", \"--no-pci\", \"--no-telemetry\", \"--file-prefix\", \"{}\"]\n\
             lcores: {{ management: 0, workers: [1], cpus: \"0-1\" }}\n\
             ports:\n  - {{ name: outside, device: \"net_tap0,iface={tap}\" }}\n  - {{ name: inside, device: \"net_null0\" }}\n\
             stats: {{ interval_ms: 100, json: {} }}\n",
            root().join("pipelines/web-farm.yaml").display(),
            prefix("tap"),
            stats.display()
        ),
    )
    .expect("write conf");
    let (mut child, mut log) = spawn_run(&conf);
    let mut wait_for = |needle: &str| {
        if log.wait_for(needle) {
            Ok(())
        } else {
            Err(format!("no {needle:?} within 30 s:\n{}", log.text))
        }
    };
    let link_in_stats = |want: bool| {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            let j = std::fs::read_to_string(&stats)
                .ok()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok());
            if j.is_some_and(|j| j["runtime"]["ports"]["outside"]["link_up"] == want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    };
    let ip = |state: &str| {
        assert!(
            Command::new("ip")
                .args(["link", "set", &tap, state])
                .status()
                .expect("ip")
                .success()
        )
    };
    wait_for("port outside: link up").unwrap();
    assert!(link_in_stats(true), "link_up true in the stats");
    ip("down");
    wait_for("port outside: link down").unwrap();
    assert!(link_in_stats(false), "link_up false in the stats");
    ip("up");
    wait_for("port outside: link up").unwrap();
    assert!(link_in_stats(true), "link_up true again");
    let status = sigterm_and_wait(&mut child.0, Duration::from_secs(20))
        .expect("flowgate run did not stop within 20 s of SIGTERM");
    let err = log.finish();
    assert!(status.success(), "exit status {status:?}\n{err}");
    // Each change said once; net_null's link is up from the start and stays so.
    let says = |what: &str| err.lines().filter(|l| l.contains(what)).count();
    assert_eq!(says("port outside: link up"), 2, "{err}");
    assert_eq!(says("port outside: link down"), 1, "{err}");
    assert_eq!(says("port inside: link up"), 1, "{err}");
    let j = json(&stats);
    assert_eq!(j["runtime"]["ports"]["inside"]["link_up"], true, "{j}");
}

#[test]
fn run_ramps_up_a_server_added_with_a_slow_start() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let stats = dir.path().join("stats.json");
    let (pipe, farm, mut child, mut log) = farm_on_null(dir.path(), "ramp", "[1]", &stats);
    assert!(
        !log.text.contains("slow start"),
        "no ramp at the start: {}",
        log.text
    );
    // web4 joins with a 2 s slow start: a quarter of its weight one step (0.5 s) in,
    // the whole of it about 2 s later, published in steps between.
    let web4 = "      - { name: web4, mac: \"02:00:00:00:01:04\", weight: 100, slow_start: 2 }\n";
    std::fs::write(&pipe, farm.replace(WEB3, &format!("{WEB3}{web4}"))).expect("grow");
    signal(child.0.id(), "-HUP");
    assert!(
        log.wait_for("pipeline reloaded; slow start: web4 from 25 % (generation 2)"),
        "{}",
        log.text
    );
    let t0 = Instant::now();
    assert!(
        log.wait_for("slow start: web4 at its whole weight (generation "),
        "{}",
        log.text
    );
    let took = t0.elapsed();
    assert!(
        took > Duration::from_millis(1000) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // The steps between were published (without a log line each).
    let last = log.text.lines().last().unwrap_or_default().to_string();
    let g: u64 = last
        .rsplit_once("(generation ")
        .and_then(|(_, g)| g.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("{last}"));
    assert!(g >= 4, "steps published: {last}");
    let status = sigterm_and_wait(&mut child.0, Duration::from_secs(20))
        .expect("flowgate run did not stop within 20 s of SIGTERM");
    let err = log.finish();
    assert!(status.success(), "exit status {status:?}\n{err}");
    assert_eq!(json(&stats)["runtime"]["mempool_in_use"].as_u64(), Some(0));
}
