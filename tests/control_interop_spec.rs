//! Interoperability of the control protocol with a client written from docs/PROTOCOL.md
//! alone (tests/interop_spec/client.py, Python standard library only) against a real
//! `flowgate supervisor`.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PYTHON: &str = "/usr/bin/python3";

/// Kills the supervisor and removes its state directory, however the test ends.
struct Supervisor {
    child: Child,
    dir: PathBuf,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Supervisor {
    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("supervisor.stderr")).unwrap_or_default()
    }
}

fn free_udp_port() -> u16 {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    sock.local_addr().expect("local_addr").port()
}

fn unique_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    std::env::temp_dir().join(format!(
        "flowgate-interop-spec-{}-{}",
        std::process::id(),
        nanos
    ))
}

fn start_supervisor(root: &Path, addr: &str, key: &Path) -> Supervisor {
    let dir = unique_dir();
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("create state dir");
    let stderr = std::fs::File::create(dir.join("supervisor.stderr")).expect("stderr file");
    let child = Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .current_dir(root)
        .arg("supervisor")
        .arg("--conf")
        .arg(root.join("conf/supervisor.yaml"))
        .arg("--state")
        .arg(&state)
        .arg("--listen")
        .arg(addr)
        .arg("--key-file")
        .arg(key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start flowgate supervisor");
    Supervisor { child, dir }
}

/// Waits until the supervisor answers a management request (`flowgate ctl stats`).
fn wait_until_answering(sup: &mut Supervisor, root: &Path, addr: &str, key: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = sup.child.try_wait().expect("try_wait") {
            panic!(
                "supervisor exited early ({status}); stderr:\n{}",
                sup.stderr()
            );
        }
        let out = Command::new(env!("CARGO_BIN_EXE_flowgate"))
            .current_dir(root)
            .args(["ctl", "--supervisor", addr, "--key-file"])
            .arg(key)
            .args(["--timeout-ms", "300", "stats"])
            .output()
            .expect("run flowgate ctl");
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "supervisor at {addr} did not answer; ctl: {}\nsupervisor stderr:\n{}",
            String::from_utf8_lossy(&out.stderr),
            sup.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn spec_only_client_interoperates_with_supervisor() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let key = root.join("conf/control.key");
    let addr = format!("127.0.0.1:{}", free_udp_port());
    let mut sup = start_supervisor(root, &addr, &key);
    wait_until_answering(&mut sup, root, &addr, &key);

    let out = Command::new(PYTHON)
        .current_dir(root)
        .arg(root.join("tests/interop_spec/client.py"))
        .arg(&addr)
        .arg(&key)
        .stdin(Stdio::null())
        .output()
        .expect("run /usr/bin/python3 tests/interop_spec/client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "client.py failed ({}):\n--- stdout\n{stdout}--- stderr\n{stderr}--- supervisor stderr\n{}",
        out.status,
        sup.stderr()
    );
    assert!(
        stdout.contains("PASS"),
        "client.py exited 0 without PASS:\n{stdout}{stderr}"
    );
    for step in 0..=7 {
        assert!(
            stdout.contains(&format!("step {step}: ")),
            "client.py did not report step {step}:\n{stdout}"
        );
    }
}
