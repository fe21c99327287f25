//! Helpers shared by the integration tests: the ../shared data, tshark and scapy oracles.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// True when running in CI (`CI=true`): missing data or oracles must fail, not skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/<rel>` if present. In CI a missing directory fails the test; elsewhere the
/// caller skips (and says so).
pub fn shared(rel: &str) -> Option<PathBuf> {
    let p = root().join("..").join("shared").join(rel);
    if p.exists() {
        return Some(p);
    }
    assert!(!in_ci(), "{} is missing in CI", p.display());
    eprintln!("SKIP: {} not found", p.display());
    None
}

/// True when `tool` runs; fails in CI when it does not.
pub fn have(tool: &str, args: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(!in_ci(), "{tool} is required in CI");
        eprintln!("SKIP: {tool} not available");
    }
    ok
}

/// tshark is installed.
pub fn have_tshark() -> bool {
    have("tshark", &["-v"])
}

/// Debian's python with scapy (the first python3 on PATH may not have it).
pub const SCAPY_PY: &str = "/usr/bin/python3";

/// scapy importable from `/usr/bin/python3`.
pub fn have_scapy() -> bool {
    have(SCAPY_PY, &["-c", "import scapy.all"])
}

/// Whether scapy and tshark, the tests' packet oracles, are here; CI must have them.
pub fn have_oracles() -> bool {
    let ok = have_scapy() && have_tshark();
    assert!(ok || !in_ci(), "CI must have scapy and tshark");
    ok
}

/// Runs tshark on `file` with `args`, returns stdout lines.
pub fn tshark(file: &Path, args: &[&str]) -> Vec<String> {
    tshark_text(file, args)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The fields `fields` of each frame of `file` that tshark's display `filter` takes (every
/// frame for `""`), in order: one entry per field (`""` where a frame has none; several
/// values of one field joined by commas, as tshark prints them).
pub fn tshark_fields(file: &Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut args = Vec::new();
    if !filter.is_empty() {
        args.extend(["-Y", filter]);
    }
    args.extend(["-T", "fields", "-E", "separator=;"]);
    for f in fields {
        args.extend(["-e", f]);
    }
    tshark(file, &args)
        .into_iter()
        .map(|l| l.split(';').map(str::to_string).collect())
        .collect()
}

/// Runs `tshark -n -r file args`, returns stdout; panics (naming the file) when it fails.
pub fn tshark_text(file: &Path, args: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-n")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "tshark failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Per-frame checksum statuses (ip, tcp, udp, icmp, icmpv6), each a comma-separated list
/// of 0=Bad 1=Good 2=Unverified, as the oracle README prescribes.
pub fn checksum_status(file: &Path) -> Vec<[String; 5]> {
    tshark(
        file,
        &[
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
            "-o",
            "ip.defragment:FALSE",
            "-o",
            "ipv6.defragment:FALSE",
            "-T",
            "fields",
            "-E",
            "separator=;",
            "-e",
            "ip.checksum.status",
            "-e",
            "tcp.checksum.status",
            "-e",
            "udp.checksum.status",
            "-e",
            "icmp.checksum.status",
            "-e",
            "icmpv6.checksum.status",
        ],
    )
    .into_iter()
    .map(|l| {
        let mut f = l.split(';').map(str::to_string);
        std::array::from_fn(|_| f.next().unwrap_or_default())
    })
    .collect()
}

/// Runs a python snippet under Debian's python (with scapy); returns stdout.
pub fn scapy(code: &str) -> String {
    let out = Command::new(SCAPY_PY)
        .arg("-c")
        .arg(code)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Decodes a hex string without separators (scapy's `bytes(...).hex()`).
pub fn unhex(s: &str) -> Vec<u8> {
    let s = s.trim();
    assert!(s.len().is_multiple_of(2), "odd-length hex {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Frames crafted by scapy: runs `prelude` (Python, after `import sys, json` and
/// `from scapy.all import *`), then evaluates each of `exprs` and returns its bytes, in
/// order. The caller checks [`have_scapy`] first.
pub fn craft(prelude: &str, exprs: &[&str]) -> Vec<Vec<u8>> {
    let code = format!(
        "import sys, json\nfrom scapy.all import *\n{prelude}\n\
         for e in json.loads(sys.argv[1]):\n    print(bytes(eval(e)).hex())\n"
    );
    let arg = serde_json::to_string(exprs).expect("json");
    let out = Command::new(SCAPY_PY)
        .arg("-c")
        .arg(&code)
        .arg(&arg)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "craft failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frames: Vec<Vec<u8>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(unhex)
        .collect();
    assert_eq!(frames.len(), exprs.len(), "one frame per expression");
    frames
}

/// The shipped pipelines (`pipelines/*.yaml`), sorted by name.
pub fn shipped_pipelines() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("pipelines"))
        .expect("read pipelines/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

/// The flowgate binary.
pub fn flowgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flowgate"))
}

/// `flowgate gen SCENARIO [--pipeline PIPE] --flows FLOWS -o OUT EXTRA…` (no pipeline:
/// gen's built-in network, whose system and gateway MACs are those of every shipped
/// pipeline); panics with its output when it fails.
pub fn generate(pipe: Option<&Path>, scenario: &str, flows: u64, out: &Path, extra: &[&str]) {
    let mut c = flowgate();
    c.arg("gen").arg(scenario);
    if let Some(p) = pipe {
        c.arg("--pipeline").arg(p);
    }
    c.arg("--flows")
        .arg(flows.to_string())
        .arg("-o")
        .arg(out)
        .args(extra);
    run_ok(&mut c);
}

/// Runs `cmd` to its end; panics with its output unless it succeeds.
pub fn run_ok(cmd: &mut Command) {
    let o = cmd.output().expect("run flowgate");
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `flowgate replay --quiet` of `input` through `pipeline` into `output`, with the stats
/// JSON written beside the output (`OUTPUT.json`): that JSON. Panics with replay's stderr
/// when it fails.
pub fn replay_stats(pipeline: &Path, input: &Path, output: &Path) -> serde_json::Value {
    let stats = output.with_extension("json");
    replay_with(
        pipeline,
        input,
        output,
        &["--stats-json".as_ref(), stats.as_os_str()],
    );
    serde_json::from_str(&std::fs::read_to_string(&stats).expect("stats JSON")).expect("JSON")
}

/// `flowgate replay --quiet` of `input` through `pipeline` into `output`, with `extra`
/// arguments. Panics with replay's output when it fails.
pub fn replay_with(pipeline: &Path, input: &Path, output: &Path, extra: &[&std::ffi::OsStr]) {
    run_ok(
        flowgate()
            .args(["replay", "--quiet", "--pipeline"])
            .arg(pipeline)
            .arg("--input")
            .arg(input)
            .arg("--output")
            .arg(output)
            .args(extra),
    );
}

/// A child process killed (and reaped) when dropped, also when the test fails.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A UDP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port on 127.0.0.1")
}

/// Runs `w`'s flow-table sweep to its end, `step` slots a call (as `flowgate run`'s poll
/// loop does); the flows it moved.
pub fn sweep_to_end(w: &mut flowgate::pipeline::Worker, step: usize) -> usize {
    let (mut moved, mut calls) = (0, 0);
    while w.sweep_due() {
        moved += w.sweep(step);
        calls += 1;
        assert!(calls < 10_000, "the sweep ends");
    }
    moved
}

/// Sends SIGTERM to `c` and waits at most `within` for it to exit: its exit status, or
/// `None` (it is then killed) when it did not exit in time.
pub fn sigterm_and_wait(c: &mut Child, within: Duration) -> Option<ExitStatus> {
    let sent = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(sent, "kill -TERM {}", c.id());
    let t0 = Instant::now();
    loop {
        if let Some(s) = c.try_wait().expect("wait") {
            return Some(s);
        }
        if t0.elapsed() > within {
            let _ = c.kill();
            let _ = c.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
