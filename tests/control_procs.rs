//! Real processes on loopback: a supervisor, agents and `ctl`, driven through the
//! binary (`CARGO_BIN_EXE_flowgate`). Short intervals (200 ms / 1 s) keep it fast;
//! each test uses its own ports, state directory and sockets.

mod common;

use common::{Proc, free_port, sigterm_and_wait};
use serde_json::Value;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_flowgate");
const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const WRONG_KEY: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

struct Env {
    dir: tempfile::TempDir,
    port: u16,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), format!("# test key\n{KEY}\n")).unwrap();
        std::fs::write(dir.path().join("wrong.key"), WRONG_KEY).unwrap();
        std::fs::write(
            dir.path().join("sup.yaml"),
            "name: sup\nadvert_interval_ms: 200\ndead_interval_ms: 1000\n\
             pools:\n  - {name: nat-ports, first: 1024, last: 65535, block: 1024, lease_ms: 5000}\n  \
             - {name: ipsec-spi, first: 0x100, last: 0xffffffff, block: 65536, lease_ms: 5000}\n",
        )
        .unwrap();
        Env {
            dir,
            port: free_port(),
        }
    }
    fn p(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn supervisor(&self) -> Proc {
        let c = Command::new(BIN)
            .args(["supervisor", "--conf"])
            .arg(self.p("sup.yaml"))
            .arg("--state")
            .arg(self.p("state"))
            .args(["--listen", &self.addr(), "--key-file"])
            .arg(self.p("key"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let p = Proc(c);
        self.wait_for(|| self.try_ctl(&["stats"]).is_some(), "supervisor up");
        p
    }

    fn agent(&self, name: &str, key: &str) -> Proc {
        let conf = self.p(&format!("{name}.yaml"));
        std::fs::write(
            &conf,
            format!(
                "name: {name}\nmac: \"02:00:00:00:00:0{}\"\naddrs: [127.0.0.1]\n\
                 load: {{source: static, value: 250}}\n\
                 services:\n  - {{name: web, vip: 10.0.0.100, proto: tcp, ports: [80]}}\n\
                 numbers: [nat-ports]\n",
                name.len() % 10
            ),
        )
        .unwrap();
        self.spawn_agent(&conf, name, key)
    }

    /// `flowgate agent` on `conf` with this supervisor, key file `key` and the control
    /// socket `NAME.sock`.
    fn spawn_agent(&self, conf: &std::path::Path, name: &str, key: &str) -> Proc {
        let c = Command::new(BIN)
            .args(["agent", "--conf"])
            .arg(conf)
            .args(["--supervisor", &self.addr(), "--key-file"])
            .arg(self.p(key))
            .arg("--control-socket")
            .arg(self.p(&format!("{name}.sock")))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Proc(c)
    }

    /// `field` of service `service` of system `system` as the supervisor lists it
    /// (`ctl services`), when it does.
    fn service_figure(&self, system: &str, service: &str, field: &str) -> Option<u64> {
        self.try_ctl(&["services"])?
            .as_array()?
            .iter()
            .find(|s| s["system"] == system && s["name"] == service)
            .and_then(|s| s[field].as_u64())
    }

    fn try_ctl(&self, args: &[&str]) -> Option<Value> {
        let out = Command::new(BIN)
            .args(["ctl", "--supervisor", &self.addr(), "--key-file"])
            .arg(self.p("key"))
            .args(["--timeout-ms", "1000", "--json"])
            .args(args)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    fn ctl(&self, args: &[&str]) -> Vec<Value> {
        match self.try_ctl(args) {
            Some(Value::Array(a)) => a,
            other => panic!("ctl {args:?}: {other:?}"),
        }
    }

    fn stat(&self, name: &str) -> u64 {
        self.ctl(&["stats"])
            .iter()
            .find(|o| o["name"] == name)
            .and_then(|o| o["value"].as_u64())
            .unwrap_or_else(|| panic!("no stat {name}"))
    }

    fn wait_for(&self, mut f: impl FnMut() -> bool, what: &str) {
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for: {what}");
    }

    fn names(&self, what: &str, field: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .ctl(&[what])
            .iter()
            .filter_map(|o| o[field].as_str().map(str::to_owned))
            .collect();
        v.sort();
        v
    }
}

/// (grant_id, holder, first, count) of every grant, sorted.
fn grants(env: &Env) -> Vec<(u64, String, u64, u64)> {
    let mut v: Vec<_> = env
        .ctl(&["numbers"])
        .iter()
        .map(|o| {
            (
                o["grant_id"].as_u64().unwrap(),
                o["holder"].as_str().unwrap().to_owned(),
                o["first"].as_u64().unwrap(),
                o["count"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn supervisor_three_agents_kill_restart_wrong_key_malformed() {
    let env = Env::new();
    let mut sup = env.supervisor();
    let _a = env.agent("alpha", "key");
    let b = env.agent("bravo", "key");
    let _c = env.agent("charlie", "key");
    let three = vec!["alpha".to_string(), "bravo".into(), "charlie".into()];

    // All three registered, up, advertising, each holding one block.
    env.wait_for(
        || env.names("systems", "name") == three && grants(&env).len() == 3,
        "three systems with grants",
    );
    let systems = env.ctl(&["systems"]);
    assert!(
        systems
            .iter()
            .all(|s| s["state"] == "up" && s["kind"] == "end")
    );
    env.wait_for(
        || env.names("services", "system") == three,
        "three services",
    );
    for s in env.ctl(&["services"]) {
        assert_eq!(s["name"], "web");
        assert_eq!(s["vip"], "10.0.0.100");
        assert_eq!(s["load"], 250);
    }
    let g = grants(&env);
    let holders: Vec<&str> = g.iter().map(|x| x.1.as_str()).collect();
    for n in &three {
        assert!(holders.contains(&n.as_str()), "{n} holds a block: {g:?}");
    }
    for (i, x) in g.iter().enumerate() {
        assert_eq!(x.3, 1024);
        assert!(x.2 >= 1024 && x.2 + x.3 - 1 <= 65535);
        for y in &g[i + 1..] {
            assert!(x.2 + x.3 <= y.2 || y.2 + y.3 <= x.2, "overlap {x:?} {y:?}");
        }
    }

    // kill -9 of an agent: removed after the dead interval (1 s), numbers reclaimed.
    drop(b);
    let killed = Instant::now();
    env.wait_for(
        || env.names("systems", "name") == ["alpha", "charlie"],
        "bravo removed",
    );
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_millis(600),
        "removed too early: {took:?}"
    );
    let g = grants(&env);
    assert_eq!(g.len(), 2);
    assert!(g.iter().all(|x| x.1 != "bravo"));
    assert!(env.stat("deaths") >= 1 && env.stat("reclaimed") >= 1);

    // kill -9 of the supervisor and a restart keep every grant.
    let before = grants(&env);
    sup.0.kill().unwrap();
    sup.0.wait().unwrap();
    let _sup2 = env.supervisor();
    let after = grants(&env);
    assert_eq!(before, after, "grants survive kill -9");
    env.wait_for(
        || env.names("systems", "name") == ["alpha", "charlie"],
        "agents still registered after restart",
    );
    // The agents keep their blocks (renewals are accepted by the restarted supervisor).
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(grants(&env), after);

    // An agent with the wrong key is refused and counted.
    let bad_before = env.stat("rx_bad_mac");
    let _w = env.agent("wrongkey", "wrong.key");
    env.wait_for(
        || env.stat("rx_bad_mac") >= bad_before + 2,
        "bad MACs counted",
    );
    assert!(
        !env.names("systems", "name")
            .contains(&"wrongkey".to_string())
    );

    // Malformed datagrams change nothing but a counter.
    let snap = |env: &Env| {
        (
            env.names("systems", "name"),
            grants(env),
            env.names("services", "system"),
        )
    };
    let s0 = snap(&env);
    let m0 = env.stat("rx_malformed");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut junk: Vec<Vec<u8>> = vec![vec![], b"hello".to_vec(), vec![0u8; 100], {
        // Right magic and version, body_len disagreeing with the length.
        let mut v = b"FG\x01\x01".to_vec();
        v.extend_from_slice(&[0u8; 16]);
        v.extend_from_slice(&[0xff, 0xff, 0, 0]);
        v.extend_from_slice(&[0u8; 40]);
        v
    }];
    let mut x: u32 = 12345;
    for _ in 0..20 {
        let n = (x % 300) as usize;
        let mut v = vec![0u8; n];
        for b in v.iter_mut() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 16) as u8;
        }
        if n > 2 {
            v[0] = b'F';
            v[1] = b'G';
        }
        junk.push(v);
    }
    for j in &junk {
        sock.send_to(j, env.addr()).unwrap();
    }
    env.wait_for(
        || {
            env.stat("rx_malformed") + env.stat("rx_bad_version") + env.stat("rx_bad_mac")
                >= m0 + junk.len() as u64 - 1
        },
        "malformed counted",
    );
    assert!(env.stat("rx_malformed") > m0);
    assert_eq!(snap(&env), s0, "malformed datagrams changed state");
}

#[test]
fn agent_sigterm_drains_and_leaves_and_flows_travel() {
    let env = Env::new();
    let mut sup = env.supervisor();
    let mut a = env.agent("delta", "key");
    env.wait_for(|| grants(&env).len() == 1, "delta registered with a grant");

    // Flow add/del through the agent's unix socket.
    let out = Command::new(BIN)
        .args(["agent", "--control-socket"])
        .arg(env.p("delta.sock"))
        .args([
            "flow",
            "add",
            "--src",
            "192.0.2.7",
            "--dst",
            "10.0.0.100",
            "--sport",
            "40000",
            "--dport",
            "30001",
            "--dscp",
            "46",
            "--push-mpls",
            "1000,5,64",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = reply["flow_id"].as_u64().unwrap();
    env.wait_for(|| env.ctl(&["flows"]).len() == 1, "flow advertised");
    let f = &env.ctl(&["flows"])[0];
    assert_eq!(f["exact"], true);
    assert_eq!(f["origin"], "delta");
    assert_eq!(f["qos"][0]["dscp"], 46);
    assert_eq!(f["qos"][1]["push_mpls"]["label"], 1000);
    // Flows are persisted too: a kill -9 and restart of the supervisor keeps it.
    sup.0.kill().unwrap();
    sup.0.wait().unwrap();
    let _sup2 = env.supervisor();
    assert_eq!(
        env.ctl(&["flows"]).len(),
        1,
        "flow survives a supervisor restart"
    );
    let out = Command::new(BIN)
        .args(["agent", "--control-socket"])
        .arg(env.p("delta.sock"))
        .args(["flow", "del", &id.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    env.wait_for(|| env.ctl(&["flows"]).is_empty(), "flow withdrawn");

    // ctl weight and drain change what is advertised.
    let weight_is = |w: u64| {
        env.ctl(&["services"])
            .first()
            .is_some_and(|s| s["weight"] == w)
    };
    env.ctl(&["weight", "delta", "7"]);
    env.wait_for(|| weight_is(7), "weight override");
    // Cleared: the agent's own weight (100) again, and no override on record.
    env.ctl(&["weight", "delta", "clear"]);
    env.wait_for(|| weight_is(100), "weight override cleared");
    assert!(
        env.ctl(&["systems"])
            .iter()
            .any(|s| s["name"] == "delta" && s["weight"].is_null())
    );

    // SIGTERM: drain (no flows left), release, leave, exit 0.
    let code = sigterm_and_wait(&mut a.0, Duration::from_secs(10))
        .expect("agent did not exit after SIGTERM");
    assert!(code.success());
    // Gone at once (Leave), not after the dead interval; its block released.
    assert!(env.ctl(&["systems"]).is_empty());
    assert!(grants(&env).is_empty());
    assert_eq!(env.stat("leaves"), 1);
    assert_eq!(env.stat("deaths"), 0);
    assert_eq!(env.stat("releases"), 1);
}

/// An agent that routes its number block (`numbers: [{pool, route}]`): it advertises the
/// block's ports at the shared address as flows to itself (TCP and UDP), writes what it
/// holds to `numbers_file`, and on SIGTERM leaves at once (those standing flows do not
/// hold its drain), withdrawing the flows and releasing the block.
#[test]
fn an_agent_routes_its_number_block_and_writes_it_down() {
    let env = Env::new();
    let _sup = env.supervisor();
    let file = env.p("numbers.json");
    let conf = env.p("nat.yaml");
    std::fs::write(
        &conf,
        format!(
            "name: nat\nmac: \"02:00:00:00:00:09\"\naddrs: [127.0.0.1]\n\
             load: {{source: static, value: 100}}\n\
             numbers:\n  - {{pool: nat-ports, route: {{dst: 203.0.113.1, proto: [tcp, udp]}}}}\n  \
             - {{pool: ipsec-spi, route: {{dst: 203.0.113.1, proto: esp}}}}\n\
             numbers_file: {}\n",
            file.display()
        ),
    )
    .unwrap();
    let mut agent = env.spawn_agent(&conf, "nat", "key");
    let read =
        || -> Option<Value> { serde_json::from_str(&std::fs::read_to_string(&file).ok()?).ok() };
    env.wait_for(
        || read().is_some_and(|j| j["nat-ports"].is_object() && j["ipsec-spi"].is_object()),
        "numbers file",
    );
    let j = read().unwrap();
    let block = |pool: &str| {
        (
            j[pool]["first"].as_u64().unwrap(),
            j[pool]["last"].as_u64().unwrap(),
        )
    };
    let ((first, last), (spi_first, spi_last)) = (block("nat-ports"), block("ipsec-spi"));
    assert_eq!(spi_last - spi_first + 1, 65536);
    // The supervisor's view agrees with the file.
    let g = grants(&env);
    assert_eq!(g.len(), 2);
    for (pool, (f, l)) in [
        ("nat-ports", (first, last)),
        ("ipsec-spi", (spi_first, spi_last)),
    ] {
        let id = j[pool]["grant"].as_u64();
        let held = g.iter().find(|x| Some(x.0) == id).expect(pool);
        assert_eq!((held.1.as_str(), held.2, held.3), ("nat", f, l - f + 1));
    }
    // Three flows route the blocks to the agent's system: the ports for TCP and UDP,
    // the SPIs for ESP (any ports).
    env.wait_for(|| env.ctl(&["flows"]).len() == 3, "the blocks routed");
    let mut protos = Vec::new();
    for f in env.ctl(&["flows"]) {
        assert_eq!(
            (f["origin"].as_str(), f["target"].as_str()),
            (Some("nat"), Some("nat"))
        );
        let m = &f["match"];
        assert_eq!(m["dst"], "203.0.113.1", "{f}");
        assert_eq!(m["dst_plen"], 32, "{f}");
        let proto = m["proto"].as_u64().unwrap();
        if proto == 50 {
            assert_eq!(m["spi"], serde_json::json!([spi_first, spi_last]), "{f}");
            assert_eq!(m["dport"], serde_json::json!([0, 65535]), "{f}");
        } else {
            assert_eq!(m["dport"], serde_json::json!([first, last]), "{f}");
            assert!(m.get("spi").is_none(), "{f}");
        }
        protos.push(proto);
    }
    protos.sort();
    assert_eq!(protos, vec![6, 17, 50]);
    // SIGTERM: drained and gone well before the agent's 10 s drain timeout.
    let status = sigterm_and_wait(&mut agent.0, Duration::from_secs(5))
        .expect("the agent still draining after 5 s: its routes held it back");
    assert!(status.success());
    env.wait_for(|| env.ctl(&["flows"]).is_empty(), "routes withdrawn");
    env.wait_for(|| grants(&env).is_empty(), "block released");
    assert_eq!(
        read(),
        Some(serde_json::json!({})),
        "the file says nothing is held"
    );
}

/// A service whose health check fails is advertised at weight 0 (the supervisor's view,
/// which it relays to the intermediate systems), and at its own weight once the check
/// passes again; an unchecked service beside it is untouched, and the operator's weight
/// override does not revive a failing one.
#[test]
fn a_failing_health_check_advertises_weight_0() {
    let env = Env::new();
    let _sup = env.supervisor();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let conf = env.p("hc.yaml");
    std::fs::write(
        &conf,
        format!(
            "name: hc\nmac: \"02:00:00:00:00:0a\"\naddrs: [127.0.0.1]\n\
             load: {{source: static, value: 100}}\n\
             services:\n  \
             - name: web\n    vip: 10.0.0.100\n    ports: [80]\n    \
             health: {{tcp: \"127.0.0.1:{port}\", interval_ms: 100, timeout_ms: 100, rise: 2, fall: 2}}\n  \
             - {{name: api, vip: 10.0.0.101, ports: [81], weight: 60}}\n"
        ),
    )
    .unwrap();
    let _agent = env.spawn_agent(&conf, "hc", "key");
    let weight = |svc: &str| env.service_figure("hc", svc, "weight");
    env.wait_for(
        || weight("web") == Some(100) && weight("api") == Some(60),
        "healthy: both services at their weights",
    );
    drop(l);
    let t0 = Instant::now();
    env.wait_for(|| weight("web") == Some(0), "web at weight 0");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "two failed 100 ms probes, then at once: {:?}",
        t0.elapsed()
    );
    assert_eq!(
        weight("api"),
        Some(60),
        "the unchecked service keeps its weight"
    );
    env.ctl(&["weight", "hc", "50"]);
    env.wait_for(|| weight("api") == Some(50), "override applied to api");
    for _ in 0..5 {
        assert_eq!(weight("web"), Some(0), "an override does not revive web");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _l = std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port again");
    env.wait_for(
        || weight("web") == Some(50),
        "web healthy again (overridden)",
    );
}

/// An agent whose stderr went away (a closed log pipe) still drains, leaves and exits 0
/// on SIGTERM: logging a line it cannot write used to panic it instead.
#[test]
fn an_agent_with_a_closed_stderr_still_drains_and_leaves() {
    let env = Env::new();
    let _sup = env.supervisor();
    let conf = env.p("quiet.yaml");
    std::fs::write(
        &conf,
        "name: quiet\nmac: \"02:00:00:00:00:0b\"\naddrs: [127.0.0.1]\n\
         load: {source: static, value: 100}\n\
         services:\n  - {name: web, vip: 10.0.0.100, ports: [80]}\n",
    )
    .unwrap();
    let mut a = Command::new(BIN)
        .args(["agent", "--conf"])
        .arg(&conf)
        .args(["--supervisor", &env.addr(), "--key-file"])
        .arg(env.p("key"))
        .arg("--control-socket")
        .arg(env.p("quiet.sock"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(a.stderr.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(first.starts_with("agent quiet on "), "{first}");
        // The read end is dropped here.
    }
    env.wait_for(
        || env.names("systems", "name") == ["quiet"],
        "the agent registered",
    );
    let code = sigterm_and_wait(&mut a, Duration::from_secs(10))
        .expect("the agent did not exit after SIGTERM");
    assert!(code.success(), "{code:?}");
    assert_eq!(env.stat("leaves"), 1, "it left (Leave), not died");
}

/// A checked service's response time is what its passing probes take, smoothed, and
/// the agent advertises it (what `policy: response-time` weighs servers by); an
/// unchecked service advertises none (0).
#[test]
fn health_checks_time_the_service() {
    let env = Env::new();
    let _sup = env.supervisor();
    // An HTTP server that takes 40 ms to answer.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in l.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            std::thread::sleep(Duration::from_millis(40));
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let conf = env.p("rt.yaml");
    std::fs::write(
        &conf,
        format!(
            "name: rt\nmac: \"02:00:00:00:00:0c\"\naddrs: [127.0.0.1]\n\
             load: {{source: static, value: 100}}\n\
             services:\n  \
             - name: web\n    vip: 10.0.0.100\n    ports: [80]\n    \
             health: {{http: \"http://127.0.0.1:{port}/\", interval_ms: 100, timeout_ms: 1000}}\n  \
             - {{name: api, vip: 10.0.0.101, ports: [81]}}\n"
        ),
    )
    .unwrap();
    let _agent = env.spawn_agent(&conf, "rt", "key");
    let rt = |svc: &str| env.service_figure("rt", svc, "response_time_us");
    env.wait_for(
        || rt("web").is_some_and(|us| us > 0),
        "web advertised with a response time",
    );
    // A few probes later: about 40 ms (and what a loaded machine adds).
    std::thread::sleep(Duration::from_millis(600));
    let us = rt("web").unwrap();
    assert!(
        (40_000..1_000_000).contains(&us),
        "web answers in 40 ms: {us} µs"
    );
    assert_eq!(rt("api"), Some(0), "api is not checked: no figure");
}

/// A server that falls behind fills its listener's accept queue: the agent advertises
/// that as the service's congestion (which the intermediate systems count as load), and
/// nothing once the queue is empty again; `congestion: none` advertises none.
#[test]
fn a_full_accept_queue_is_advertised_as_congestion() {
    let env = Env::new();
    let _sup = env.supervisor();
    // A listener with a backlog of 4 that accepts nothing until told.
    let py = "import socket,sys\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(4)\n\
              print(s.getsockname()[1],flush=True)\nsys.stdin.readline()\n\
              while True:\n  c,_=s.accept()\n  c.close()";
    let mut server = Proc(
        Command::new("/usr/bin/python3")
            .args(["-c", py])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3"),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.0.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("port");
    let port: u16 = line.trim().parse().expect("a port");
    for (name, extra) in [("cq", ""), ("cn", "congestion: none\n")] {
        std::fs::write(
            env.p(&format!("{name}.yaml")),
            format!(
                "name: {name}\nmac: \"02:00:00:00:00:{}\"\naddrs: [127.0.0.1]\n\
                 load: {{source: static, value: 100}}\n{extra}\
                 services:\n  - {{name: web, vip: 10.0.0.100, ports: [{port}]}}\n",
                if name == "cq" { "0d" } else { "0e" }
            ),
        )
        .unwrap();
    }
    let _a = env.spawn_agent(&env.p("cq.yaml"), "cq", "key");
    let _b = env.spawn_agent(&env.p("cn.yaml"), "cn", "key");
    let congestion = |system: &str| env.service_figure(system, "web", "congestion");
    env.wait_for(
        || congestion("cq") == Some(0) && congestion("cn") == Some(0),
        "both advertised, the queue empty",
    );
    let clients: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    env.wait_for(
        || congestion("cq") == Some(750),
        "3 of 4 queued: 750 per mille",
    );
    assert_eq!(congestion("cn"), Some(0), "congestion: none");
    // The agent says the same itself (`flowgate agent status`).
    let o = Command::new(BIN)
        .args(["agent", "--conf"])
        .arg(env.p("cq.yaml"))
        .arg("--control-socket")
        .arg(env.p("cq.sock"))
        .arg("status")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let st: Value = serde_json::from_slice(&o.stdout).expect("status JSON");
    assert_eq!(
        (&st["name"], &st["registered"], &st["state"]),
        (&Value::from("cq"), &Value::from(true), &Value::from("up")),
        "{st}"
    );
    assert_eq!(st["services"][0]["name"], "web", "{st}");
    assert_eq!(st["services"][0]["congestion"], 750, "{st}");
    assert_eq!(st["services"][0]["load"], 100, "{st}");
    // The server catches up.
    use std::io::Write;
    server
        .0
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"go\n")
        .unwrap();
    env.wait_for(|| congestion("cq") == Some(0), "the queue drained");
    drop(clients);
}

/// A UDP server that falls behind fills its socket's receive buffer and then drops
/// datagrams: the agent advertises that as the service's congestion, and nothing once
/// the server has read its queue.
#[test]
fn a_full_udp_receive_buffer_is_advertised_as_congestion() {
    let env = Env::new();
    let _sup = env.supervisor();
    let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    std::fs::write(
        env.p("cu.yaml"),
        format!(
            "name: cu\nmac: \"02:00:00:00:00:1d\"\naddrs: [127.0.0.1]\n\
             services:\n  - {{name: dns, vip: 10.0.0.53, proto: udp, ports: [{port}]}}\n"
        ),
    )
    .unwrap();
    let _a = env.spawn_agent(&env.p("cu.yaml"), "cu", "key");
    let congestion = || env.service_figure("cu", "dns", "congestion");
    env.wait_for(|| congestion() == Some(0), "advertised, the buffer empty");
    // More than the buffer holds (212992 bytes by default; each datagram takes more
    // than its 1000 bytes of it): the queue fills and the kernel drops the rest.
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..1000 {
        client.send_to(&[0u8; 1000], ("127.0.0.1", port)).unwrap();
    }
    env.wait_for(|| congestion().is_some_and(|c| c >= 900), "the buffer full");
    // The server catches up.
    server.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    let mut read = 0;
    while server.recv(&mut buf).is_ok() {
        read += 1;
    }
    assert!(
        (20..1000).contains(&read),
        "{read} datagrams queued of 1000"
    );
    env.wait_for(|| congestion() == Some(0), "the buffer read");
}

/// A load command that takes longer than the dead interval (a hung script, a slow disk)
/// does not hold up the agent's adverts: it stays registered and alive while the
/// command runs, and advertises the figure once the command answers.
#[test]
fn a_slow_load_command_does_not_silence_the_agent() {
    let env = Env::new();
    let _sup = env.supervisor();
    std::fs::write(
        env.p("slow.yaml"),
        "name: slow\nmac: \"02:00:00:00:00:0f\"\naddrs: [127.0.0.1]\n\
         load: {source: command, command: \"sleep 2.5; echo 640\"}\n\
         services:\n  - {name: web, vip: 10.0.0.100, ports: [80]}\n",
    )
    .unwrap();
    let _a = env.spawn_agent(&env.p("slow.yaml"), "slow", "key");
    let load = || env.service_figure("slow", "web", "load");
    env.wait_for(|| load().is_some(), "slow registered and advertising");
    // 2.5 s of the first command, 2.5 times the dead interval: never removed.
    let t0 = Instant::now();
    while load() != Some(640) {
        assert!(
            env.names("systems", "name") == ["slow"],
            "the agent stays registered while its load command runs"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "load 640 advertised"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(env.stat("deaths"), 0, "never declared dead");
}

/// An agent killed and started again at once (within the dead interval: the supervisor
/// never sees it die), here with a conf that now asks for one pool of the two: its new
/// run gets the only block of the full pool at once, as a new grant, and the block of
/// the pool it no longer asks for is given back, both by its Register (PROTOCOL.md
/// §4.1). Before (measured): the new run was refused, then got the old run's grant back
/// because its second request had the id the old one was granted for, its lease not
/// restarted; and the other block stayed held until its lease ran out (5.3 s).
#[test]
fn a_restarted_agent_gets_a_block_of_a_full_pool_at_once() {
    let env = Env::new();
    std::fs::write(
        env.p("sup.yaml"),
        "name: sup\nadvert_interval_ms: 200\ndead_interval_ms: 1000\n\
         pools:\n  - {name: nat-ports, first: 1024, last: 2047, block: 1024, lease_ms: 5000}\n  \
         - {name: ipsec-spi, first: 0x100, last: 0xffffffff, block: 65536, lease_ms: 5000}\n",
    )
    .unwrap();
    let _sup = env.supervisor();
    let conf = |numbers: &str| {
        let path = env.p(&format!("nat1-{}.yaml", numbers.len()));
        std::fs::write(
            &path,
            format!(
                "name: nat1\nmac: \"02:00:00:00:00:11\"\naddrs: [127.0.0.1]\n\
                 services:\n  - {{name: nat, vip: 203.0.113.1, proto: udp, ports: [4500]}}\n\
                 numbers: [{numbers}]\n"
            ),
        )
        .unwrap();
        path
    };
    let first = env.spawn_agent(&conf("ipsec-spi, nat-ports"), "nat1", "key");
    env.wait_for(|| grants(&env).len() == 2, "both blocks granted");
    let before = grants(&env);
    assert!(
        before.iter().any(|g| g.2 == 1024 && g.3 == 1024),
        "{before:?}"
    );

    drop(first); // kill -9
    let restarted = Instant::now();
    let _second = env.spawn_agent(&conf("nat-ports"), "nat1", "key");
    env.wait_for(
        || {
            let g = grants(&env);
            g.len() == 1 && g[0].0 > before[1].0
        },
        "the new run's block, and nothing else",
    );
    let took = restarted.elapsed();
    let g = grants(&env);
    assert_eq!((g[0].1.as_str(), g[0].2, g[0].3), ("nat1", 1024, 1024));
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(
        env.stat("deaths"),
        0,
        "released by the Register, not a death"
    );
    assert_eq!(env.stat("reclaimed"), 2, "{:?}", env.ctl(&["stats"]));
}
