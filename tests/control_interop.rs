//! Runs the independent Python client (`tests/interop/client.py`, written only from
//! docs/PROTOCOL.md, stdlib only) against a real supervisor process.

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_flowgate");

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn python_client_interoperates() {
    let python = ["python3", "/usr/bin/python3"].into_iter().find(|p| {
        Command::new(p)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(python) = python else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 missing in CI"
        );
        eprintln!("skipping: no python3");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "# test\n".to_string() + &"ab".repeat(40) + "\n").unwrap();
    let conf = dir.path().join("sup.yaml");
    std::fs::write(
        &conf,
        "advert_interval_ms: 500\ndead_interval_ms: 5000\n\
         pools:\n  - {name: nat-ports, first: 1024, last: 65535, block: 4096}\n",
    )
    .unwrap();
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let _sup = Kill(
        Command::new(BIN)
            .args(["supervisor", "--conf"])
            .arg(&conf)
            .arg("--state")
            .arg(dir.path().join("state"))
            .args(["--listen", &addr, "--key-file"])
            .arg(&key)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/client.py");
    let start = Instant::now();
    let out = Command::new(python)
        .arg(script)
        .args(["--supervisor", &addr, "--key-file"])
        .arg(&key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed after {:?}: {stdout} {}",
        start.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["grant"]["count"], 4096);
    assert_eq!(v["register"]["advert_interval_ms"], 500);
}
