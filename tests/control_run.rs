//! The intermediate system's control plane (`runtime::control`, what `flowgate run`'s
//! management core runs) against real processes on loopback: a supervisor and two
//! agents beside servers s1 and s2 of a three-server pipeline (s3 has no agent). The
//! tables it publishes go into a pipeline `Worker`, and packets show the effect:
//! - both agents heard: every server takes new connections, loads come from the adverts;
//! - `ctl drain s2`: s2 keeps its connections and takes no new ones, and its agent stays
//!   (draining) while a real TCP connection is open on its service port;
//! - s1's agent killed (-9): after the dead interval s1 is down, its connections move;
//! - s3, never heard, keeps the pipeline's state (`unheard: keep`);
//! - the held connection closes: s2's agent leaves, s2 is down, its entries move;
//! - an advertised flow (`agent flow add`) sends matching connections, new and already
//!   open, to its target with its DSCP; withdrawn, new ones are balanced again;
//! - the supervisor killed, or the path to it cut: no server goes down for the silence,
//!   and the agents are followed again once it answers.
//!
//! Short intervals (200 ms adverts, 1 s dead interval) keep it fast.

mod common;

use common::{Proc, free_port, sweep_to_end};
use flowgate::action::{FrameBuf, PacketBuf};
use flowgate::config::{Pipeline, ServerState};
use flowgate::control::overlay::Unheard;
use flowgate::r#gen::ack::{Template, frame, handshake};
use flowgate::pipeline::{Tables, Worker};
use flowgate::runtime::conf::ControlConf;
use flowgate::runtime::control::ControlRt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_flowgate");
const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

const PIPELINE: &str = "system:\n  mac: \"02:00:00:00:00:01\"\n  addresses: [10.0.0.1]\n  gateway: \"02:00:00:00:00:fe\"\n\
services:\n  - name: web\n    vip: 203.0.113.10\n    proto: tcp\n    ports: [80]\n    servers:\n      \
- { name: s1, mac: \"02:00:00:00:01:01\", weight: 100 }\n      \
- { name: s2, mac: \"02:00:00:00:01:02\", weight: 100 }\n      \
- { name: s3, mac: \"02:00:00:00:01:03\", weight: 100 }\n";

/// Runs `c`; its stdout, or the test fails with its stderr.
fn succeed(mut c: Command) -> Vec<u8> {
    let out = c.stderr(Stdio::piped()).output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A test's directory (key, confs, sockets, the supervisor's state) and the supervisor's
/// address on loopback.
struct Env {
    dir: tempfile::TempDir,
    sup: String,
}

impl Env {
    /// Writes the key and a supervisor conf (200 ms adverts, 1 s dead interval, plus
    /// `extra` YAML lines).
    fn new(extra: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), format!("{KEY}\n")).unwrap();
        std::fs::write(
            dir.path().join("sup.yaml"),
            format!("name: sup\nadvert_interval_ms: 200\ndead_interval_ms: 1000\n{extra}"),
        )
        .unwrap();
        Env {
            dir,
            sup: format!("127.0.0.1:{}", free_port()),
        }
    }

    fn p(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    /// `flowgate <args…>`, its stderr discarded.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args).stderr(Stdio::null());
        c
    }

    fn supervisor(&self) -> Proc {
        Proc(
            self.cmd(&["supervisor", "--conf"])
                .arg(self.p("sup.yaml"))
                .arg("--state")
                .arg(self.p("state"))
                .args(["--listen", &self.sup, "--key-file"])
                .arg(self.p("key"))
                .spawn()
                .unwrap(),
        )
    }

    /// An agent beside server `name` (MAC …:01:0`mac`); its service's TCP port is `port`
    /// (a drain waits for the connections open on it); `extra` YAML lines.
    fn agent(&self, name: &str, mac: u8, port: u16, extra: &str) -> Proc {
        let conf = self.p(&format!("{name}.yaml"));
        std::fs::write(
            &conf,
            format!(
                "name: {name}\nmac: \"02:00:00:00:01:0{mac}\"\naddrs: [127.0.0.1]\n\
                 load: {{source: static, value: 250}}\ndrain_timeout_ms: 60000\n{extra}\
                 services:\n  - {{name: web, vip: 203.0.113.10, proto: tcp, ports: [{port}]}}\n"
            ),
        )
        .unwrap();
        Proc(
            self.cmd(&["agent", "--conf"])
                .arg(&conf)
                .args(["--supervisor", &self.sup, "--key-file"])
                .arg(self.p("key"))
                .arg("--control-socket")
                .arg(self.p(&format!("{name}.sock")))
                .spawn()
                .unwrap(),
        )
    }

    /// `flowgate ctl` against the supervisor; its stdout (the test fails unless it
    /// succeeds).
    fn ctl(&self, args: &[&str]) -> Vec<u8> {
        let mut c = self.cmd(&["ctl", "--supervisor", &self.sup, "--key-file"]);
        c.arg(self.p("key")).args(args);
        succeed(c)
    }

    /// `flowgate agent` request to agent `name` through its control socket: the reply.
    fn agent_req(&self, name: &str, args: &[&str]) -> serde_json::Value {
        let mut c = self.cmd(&["agent", "--control-socket"]);
        c.arg(self.p(&format!("{name}.sock"))).args(args);
        serde_json::from_slice(&succeed(c)).expect("json reply")
    }

    /// The run conf's `control:` for this supervisor.
    fn control(&self, unheard: Unheard, flow_slots: usize, group: Option<&str>) -> ControlConf {
        ControlConf {
            supervisor: self.sup.parse().unwrap(),
            key_file: self.p("key"),
            name: "lb-test".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            advert_interval_ms: 200,
            dead_interval_ms: 1000,
            unheard,
            flow_slots,
            multicast_group: group.map(|g| g.parse().unwrap()),
        }
    }
}

/// Turns the control plane until `f` holds for the pipeline it publishes (15 s at most);
/// returns that pipeline.
fn turn_until(c: &mut ControlRt, what: &str, f: impl Fn(&Pipeline) -> bool) -> Pipeline {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        c.turn(Duration::from_millis(10));
        let e = c.effective();
        if f(&e) {
            return e;
        }
        assert!(Instant::now() < end, "timed out waiting for: {what}");
    }
}

/// Opens connection `k` (SYN, SYN-ACK, ACK); returns the server it went to.
fn open(w: &mut Worker, tpl: Template, k: u32, now: u64) -> u16 {
    let mut b = FrameBuf::new(256);
    let mut server = u16::MAX;
    handshake(k, tpl, |f, rev| {
        b.load(f);
        let out = w.process(&mut b, 0, now);
        if !rev {
            server = out.route.expect("forwarded").server;
        }
    });
    server
}

/// One more packet (ACK) of connection `k`; returns the server it went to.
fn ack(w: &mut Worker, tpl: Template, k: u32, now: u64) -> u16 {
    let mut f = [0u8; 60];
    let mut b = FrameBuf::new(256);
    frame(&mut f, k, tpl, 0x10, false);
    b.load(&f);
    w.process(&mut b, 0, now).route.expect("forwarded").server
}

/// Gives the worker tables for `p` (generation `g + 1`) and moves its clock 1 ms on.
fn publish(w: &mut Worker, g: &mut u64, now: &mut u64, p: Pipeline) {
    *g += 1;
    w.set_tables(Arc::new(Tables::build(p, *g)))
        .expect("same shape");
    *now += 1_000_000;
}

/// Turns the control plane for 3.5 s (over three dead intervals) while its supervisor is
/// silent (`while_`): every server stays up, in what it publishes and in its view, and it
/// ends holding the last view.
fn all_up(p: &Pipeline) -> bool {
    p.servers.iter().all(|s| s.state == ServerState::Up)
}

fn all_up_for(c: &mut ControlRt, while_: &str) {
    let end = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < end {
        if let Some(p) = c.turn(Duration::from_millis(10)) {
            assert!(
                all_up(&p),
                "a server went down while {while_}: {:?}",
                p.servers.iter().map(|s| s.state).collect::<Vec<_>>()
            );
        }
        assert!(
            all_up(&c.effective()),
            "a server is down in the view while {while_}"
        );
    }
    let j = c.to_json();
    assert_eq!(j["holding"], true, "{j}");
}

/// s2's agent advertises the clients 100.64.3.0/24 → the VIP's port 80 to s2 (with
/// `extra` options such as a DSCP); the agent's reply.
fn advertise_clients_to_s2(env: &Env, extra: &[&str]) -> serde_json::Value {
    let args: Vec<&str> = [
        "flow",
        "add",
        "--src",
        "100.64.3.0/24",
        "--dst",
        "203.0.113.10",
        "--dport",
        "80",
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .collect();
    env.agent_req("s2", &args)
}

fn state(p: &Pipeline, name: &str) -> ServerState {
    p.servers[p.server_index(name).unwrap() as usize].state
}

#[test]
fn run_follows_agents_drain_and_death() {
    let env = Env::new("");
    let _sup = env.supervisor();
    // s2's server holds one real connection on its service port: its drain waits for it.
    let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port2 = l2.local_addr().unwrap().port();
    let held = std::net::TcpStream::connect(("127.0.0.1", port2)).unwrap();
    let (held_srv, _) = l2.accept().unwrap();
    let mut a1 = env.agent("s1", 1, free_port(), "");
    let mut a2 = env.agent("s2", 2, port2, "");

    let base = Pipeline::from_str(PIPELINE, Path::new("p.yaml")).unwrap();
    let tpl = Template::for_pipeline(&base).unwrap();
    let conf = env.control(Unheard::Keep, 4, None);
    let mut c = ControlRt::start(&conf, base.clone()).expect("control starts");
    // Nothing heard yet: the pipeline as written.
    assert!(
        c.effective()
            .servers
            .iter()
            .all(|s| s.state == ServerState::Up)
    );

    let p1 = turn_until(&mut c, "both agents heard", |p| {
        p.servers[..2].iter().all(|s| s.load == 0.25)
    });
    assert!(c.registered());
    assert!(p1.same_shape(&c.with_slots(base.clone())));
    let mut g = 1;
    let mut w = Worker::new(Arc::new(Tables::build(p1, g)));
    let mut now = 1_000_000;
    let mut on = [Vec::new(), Vec::new(), Vec::new()];
    for k in 0..300 {
        on[open(&mut w, tpl, k, now) as usize].push(k);
    }
    assert!(
        on.iter().all(|v| !v.is_empty()),
        "all three servers take new connections: {:?}",
        on.iter().map(Vec::len).collect::<Vec<_>>()
    );

    // s2's agent advertises a flow to itself (clients 100.64.3.0/24, DSCP 46): new
    // connections from there go to s2 with that DSCP, and so do those already open (the
    // worker's sweep moves them); withdrawn, new ones are balanced again and the moved
    // ones stay on s2.
    let before: Vec<(u32, u16)> = (900..912).map(|k| (k, open(&mut w, tpl, k, now))).collect();
    assert!(
        before.iter().any(|&(_, s)| s != 1),
        "some of them start elsewhere: {before:?}"
    );
    let reply = advertise_clients_to_s2(&env, &["--dscp", "46"]);
    let flow_id = reply["flow_id"].as_u64().expect("flow id");
    let pf = turn_until(&mut c, "advertised flow applied", |p| {
        p.flow_rules
            .iter()
            .any(|r| r.target == flowgate::config::Target::Server(1) && r.qos.dscp == Some(46))
    });
    publish(&mut w, &mut g, &mut now, pf);
    let moved = sweep_to_end(&mut w, 256);
    assert_eq!(
        moved,
        before.len(),
        "every open connection of the advert is taken"
    );
    for &(k, _) in &before {
        assert_eq!(
            ack(&mut w, tpl, k, now),
            1,
            "open connection {k} moves to s2"
        );
    }
    for k in 768..800 {
        // 100.64.3.x is k = 768 + x.
        assert_eq!(
            open(&mut w, tpl, k, now),
            1,
            "connection {k} follows the advert to s2"
        );
    }
    let mut f = [0u8; 60];
    let mut b = FrameBuf::new(256);
    frame(&mut f, 800, tpl, 0x02, false);
    b.load(&f);
    let o = w.process(&mut b, 0, now);
    assert_eq!(o.route.expect("forwarded").server, 1);
    assert_eq!(b.data()[15] >> 2, 46, "the advert's DSCP is applied");
    let j = c.to_json();
    assert_eq!(j["flows"][0]["server"], "s2", "{j}");
    let reply = env.agent_req("s2", &["flow", "del", &flow_id.to_string()]);
    assert_eq!(reply["ok"], true, "{reply}");
    let pw = turn_until(&mut c, "advertised flow withdrawn", |p| {
        p.flow_rules
            .iter()
            .all(|r| r.target != flowgate::config::Target::Server(1))
    });
    publish(&mut w, &mut g, &mut now, pw);
    sweep_to_end(&mut w, 256);
    for &(k, _) in &before {
        assert_eq!(
            ack(&mut w, tpl, k, now),
            1,
            "moved connection {k} stays on s2"
        );
    }
    let mut after = [0usize; 3];
    for k in 801..860 {
        after[open(&mut w, tpl, k, now) as usize] += 1;
    }
    assert!(after.iter().all(|&n| n > 0), "balanced again: {after:?}");

    // Weighted to 0 by the operator at the supervisor: s1 keeps its connections and takes no new ones; weighted back
    // to 100, it takes new ones again.
    env.ctl(&["weight", "s1", "0"]);
    let pz = turn_until(&mut c, "s1 at weight 0", |p| {
        p.services[0].members[0].weight == 0
    });
    assert_eq!(state(&pz, "s1"), ServerState::Up);
    publish(&mut w, &mut g, &mut now, pz);
    for &k in &on[0] {
        assert_eq!(ack(&mut w, tpl, k, now), 0, "s1 keeps connection {k}");
    }
    for k in 1000..1100 {
        assert_ne!(open(&mut w, tpl, k, now), 0, "no new connection on s1");
    }
    env.ctl(&["weight", "s1", "100"]);
    let pb = turn_until(&mut c, "s1 at weight 100", |p| {
        p.services[0].members[0].weight == 100
    });
    publish(&mut w, &mut g, &mut now, pb);
    let mut back = [0usize; 3];
    for k in 1100..1160 {
        back[open(&mut w, tpl, k, now) as usize] += 1;
    }
    assert!(
        back.iter().all(|&n| n > 0),
        "s1 takes new ones again: {back:?}"
    );

    // Drained by the supervisor: s2 keeps its connections, takes no new ones.
    env.ctl(&["drain", "s2"]);
    let p2 = turn_until(&mut c, "s2 draining", |p| {
        state(p, "s2") == ServerState::Draining
    });
    assert_eq!(state(&p2, "s1"), ServerState::Up);
    publish(&mut w, &mut g, &mut now, p2);
    for &k in &on[1] {
        assert_eq!(ack(&mut w, tpl, k, now), 1, "s2 keeps connection {k}");
    }
    for k in 300..600 {
        assert_ne!(open(&mut w, tpl, k, now), 1, "no new connection on s2");
    }

    // s1's agent dies without a word: down after the dead interval, its connections
    // move; s3 (never heard) stays up.
    let _ = a1.0.kill();
    let _ = a1.0.wait();
    let t0 = Instant::now();
    let p3 = turn_until(&mut c, "s1 down", |p| state(p, "s1") == ServerState::Down);
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "not before the dead interval: {:?}",
        t0.elapsed()
    );
    assert_eq!(state(&p3, "s3"), ServerState::Up);
    assert_eq!(state(&p3, "s2"), ServerState::Draining);
    publish(&mut w, &mut g, &mut now, p3);
    for &k in &on[0] {
        assert_ne!(
            ack(&mut w, tpl, k, now),
            0,
            "connection {k} left the down s1"
        );
    }
    for k in 600..700 {
        assert_eq!(
            open(&mut w, tpl, k, now),
            2,
            "only s3 takes new connections"
        );
    }

    // s2's last connection closes: its agent ends the drain and leaves; s2 is down.
    assert!(
        a2.0.try_wait().unwrap().is_none(),
        "s2's agent still drains"
    );
    drop((held, held_srv));
    let p4 = turn_until(&mut c, "s2 down", |p| state(p, "s2") == ServerState::Down);
    let code = a2.0.wait().unwrap();
    assert!(code.success(), "the drained agent exits cleanly: {code:?}");
    publish(&mut w, &mut g, &mut now, p4);
    for &k in &on[1] {
        assert_eq!(
            ack(&mut w, tpl, k, now),
            2,
            "s2's connection {k} moves to s3"
        );
    }
    let j = c.to_json();
    assert_eq!(j["registered"], true, "{j}");
    assert_eq!(j["servers"]["s1"]["state"], "down", "{j}");
    assert_eq!(j["servers"]["s2"]["state"], "down", "{j}");
    assert_eq!(j["servers"]["s3"]["state"], "up", "{j}");
    assert!(j["published"].as_u64().unwrap() >= 4, "{j}");
    assert_eq!(j["protocol"]["rx_bad_mac"], 0, "{j}");
    assert_eq!(
        c.summary(),
        "control: registered, servers up 1 draining 0 down 2, advertised flows 0"
    );
}

#[test]
fn a_bad_key_file_or_address_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let base = Pipeline::from_str(PIPELINE, Path::new("p.yaml")).unwrap();
    let mut conf = ControlConf {
        supervisor: "127.0.0.1:9".parse().unwrap(),
        key_file: dir.path().join("missing.key"),
        name: "lb".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        advert_interval_ms: 200,
        dead_interval_ms: 1000,
        unheard: Unheard::Down,
        flow_slots: 4,
        multicast_group: None,
    };
    let e = ControlRt::start(&conf, base.clone())
        .err()
        .expect("refused");
    assert!(format!("{e:#}").contains("missing.key"), "{e:#}");
    std::fs::write(dir.path().join("short.key"), "abcd\n").unwrap();
    conf.key_file = dir.path().join("short.key");
    let e = ControlRt::start(&conf, base.clone())
        .err()
        .expect("refused");
    assert!(format!("{e:#}").contains("short.key"), "{e:#}");
    // With `unheard: down` and no supervisor, every server is down and stays so; the
    // turns go on without an error.
    std::fs::write(dir.path().join("k"), KEY).unwrap();
    conf.key_file = dir.path().join("k");
    let mut c = ControlRt::start(&conf, base).expect("starts without a supervisor");
    for _ in 0..5 {
        assert!(c.turn(Duration::from_millis(5)).is_none());
    }
    assert!(
        c.effective()
            .servers
            .iter()
            .all(|s| s.state == ServerState::Down)
    );
    assert!(!c.registered());
}

#[test]
fn multicast_mode_is_heard_on_the_group() {
    // A supervisor in multicast mode relays nothing: the intermediate system hears the
    // agent's adverts on the group it joined.
    let group = format!("239.255.70.71:{}", free_port());
    let env = Env::new(&format!(
        "adverts: multicast\nmulticast_group: \"{group}\"\n"
    ));
    let _sup = env.supervisor();
    let mcast = format!("adverts: multicast\nmulticast_group: \"{group}\"\n");
    let _a1 = env.agent("s1", 1, free_port(), &mcast);
    let base = Pipeline::from_str(PIPELINE, Path::new("p.yaml")).unwrap();
    let conf = env.control(Unheard::Down, 0, Some(&group));
    let mut c = ControlRt::start(&conf, base).expect("control starts");
    let e = turn_until(&mut c, "s1 heard on the group", |p| {
        state(p, "s1") == ServerState::Up && p.servers[0].load == 0.25
    });
    assert_eq!(state(&e, "s2"), ServerState::Down, "unheard: down");
    let stats: serde_json::Value =
        serde_json::from_slice(&env.ctl(&["--json", "stats"])).expect("ctl stats");
    let relayed = stats
        .as_array()
        .and_then(|a| a.iter().find(|o| o["name"] == "relayed"))
        .and_then(|o| o["value"].as_u64());
    assert_eq!(
        relayed,
        Some(0),
        "nothing relayed in multicast mode: {stats}"
    );
}

#[test]
fn a_supervisor_outage_holds_the_view() {
    // Relay mode: the supervisor is killed (-9) while both agents run. Their silence then
    // proves nothing, so no server may go down; once the supervisor is back (same state)
    // the intermediate system follows the agents again (a drain applies).
    let env = Env::new("");
    let mut sup = env.supervisor();
    let _a1 = env.agent("s1", 1, free_port(), "");
    let _a2 = env.agent("s2", 2, free_port(), "");
    let base = Pipeline::from_str(PIPELINE, Path::new("p.yaml")).unwrap();
    let conf = env.control(Unheard::Keep, 0, None);
    let mut c = ControlRt::start(&conf, base).expect("control starts");
    turn_until(&mut c, "both agents heard", |p| {
        p.servers[..2].iter().all(|s| s.load == 0.25)
    });

    let _ = sup.0.kill();
    let _ = sup.0.wait();
    all_up_for(&mut c, "the supervisor was away");
    let j = c.to_json();
    assert_eq!(j["holds"], 1, "{j}");

    // Back with the same state: the view is followed again after the grace, and no
    // server went down on the way (the agents' adverts came back in time).
    sup = env.supervisor();
    let end = Instant::now() + Duration::from_secs(15);
    while c.to_json()["holding"] == true {
        if let Some(p) = c.turn(Duration::from_millis(10)) {
            assert!(all_up(&p));
        }
        assert!(
            Instant::now() < end,
            "still holding 15 s after the supervisor came back"
        );
    }
    for _ in 0..50 {
        c.turn(Duration::from_millis(10));
        assert!(
            all_up(&c.effective()),
            "no server goes down after the outage"
        );
    }
    // Following again: a drain of s2 (whose agent then leaves, no connection being open)
    // takes it out of the new flows' way.
    env.ctl(&["drain", "s2"]);
    let e = turn_until(&mut c, "s2 drained once the supervisor is back", |p| {
        state(p, "s2") != ServerState::Up
    });
    assert_eq!(state(&e, "s1"), ServerState::Up);
    drop(sup);
}

/// A UDP relay between the intermediate system and the supervisor on loopback, which
/// can cut the path both ways (a broken network, not a dead supervisor).
struct Relay {
    addr: std::net::SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn new(to: std::net::SocketAddr) -> Relay {
        use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
        let front = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        back.connect(to).unwrap();
        front.set_nonblocking(true).unwrap();
        back.set_nonblocking(true).unwrap();
        let addr = front.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (Arc::clone(&cut), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            let mut client = None;
            while !s.load(Relaxed) {
                let mut idle = true;
                while let Ok((n, from)) = front.recv_from(&mut buf) {
                    idle = false;
                    client = Some(from);
                    if !c.load(Relaxed) {
                        let _ = back.send(&buf[..n]);
                    }
                }
                while let Ok(n) = back.recv(&mut buf) {
                    idle = false;
                    if let (Some(to), false) = (client, c.load(Relaxed)) {
                        let _ = front.send_to(&buf[..n], to);
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        Relay {
            addr,
            cut,
            stop,
            thread: Some(thread),
        }
    }

    fn cut(&self, on: bool) {
        self.cut.store(on, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_broken_path_to_the_supervisor_holds_the_view() {
    // Relay mode, the intermediate system reaching the supervisor through a relay that
    // is then cut both ways while the supervisor and the agents keep running. s1's agent
    // dies during the cut: nothing the intermediate system hears (nothing) may take a
    // server down. Once the path heals, s1's death applies (after the grace) and s2
    // stays up.
    let env = Env::new("");
    let _sup = env.supervisor();
    let mut a1 = env.agent("s1", 1, free_port(), "");
    let _a2 = env.agent("s2", 2, free_port(), "");
    let relay = Relay::new(env.sup.parse().unwrap());
    let base = Pipeline::from_str(PIPELINE, Path::new("p.yaml")).unwrap();
    let mut conf = env.control(Unheard::Keep, 2, None);
    conf.supervisor = relay.addr;
    let mut c = ControlRt::start(&conf, base).expect("control starts");
    turn_until(&mut c, "both agents heard through the relay", |p| {
        p.servers[..2].iter().all(|s| s.load == 0.25)
    });
    assert!(c.registered());
    // s2's agent advertises a flow to itself; it must outlive the cut too (the listener
    // stops hearing the supervisor's repeats of it, and drops it).
    advertise_clients_to_s2(&env, &[]);
    let to_s2 = |p: &Pipeline| {
        p.flow_rules
            .iter()
            .any(|r| r.target == flowgate::config::Target::Server(1))
    };
    turn_until(&mut c, "advertised flow applied", to_s2);

    relay.cut(true);
    let _ = a1.0.kill();
    let _ = a1.0.wait();
    all_up_for(&mut c, "the path was cut");
    assert!(
        to_s2(&c.effective()),
        "the advertised flow held through the cut"
    );

    relay.cut(false);
    let e = turn_until(&mut c, "s1's death applies once the path heals", |p| {
        assert_eq!(state(p, "s2"), ServerState::Up, "s2's agent runs");
        state(p, "s1") == ServerState::Down
    });
    assert_eq!(
        state(&e, "s3"),
        ServerState::Up,
        "s3 has no agent: unheard, kept"
    );
    assert!(
        to_s2(&e),
        "the advertised flow is still applied after the cut"
    );
    assert_eq!(c.to_json()["holding"], false);
}

/// A reload that removes a server whose agent still runs, as `flowgate run` takes it
/// (regrown from what it publishes, then the control plane's base): the server stays
/// down and its agent cannot send it flows; once freed (no flow left) its name leaves
/// the control plane's view and counts, and a new server taking its index starts
/// unheard (kept up with `unheard: keep`, whatever the old one's agent did).
#[test]
fn a_removed_server_is_out_of_its_agents_reach_and_freed() {
    let env = Env::new("");
    let _sup = env.supervisor();
    let _a1 = env.agent("s1", 1, free_port(), "");
    let _a2 = env.agent("s2", 2, free_port(), "");
    let base = Pipeline::from_str(PIPELINE, Path::new("p.yaml")).unwrap();
    let mut c = ControlRt::start(&env.control(Unheard::Keep, 2, None), base).expect("starts");
    turn_until(&mut c, "s1 and s2 heard", |p| {
        p.servers[0].load == 0.25 && p.servers[1].load == 0.25
    });
    // The reload: s2 leaves the file.
    let without_s2 = PIPELINE.replace(
        "- { name: s2, mac: \"02:00:00:00:01:02\", weight: 100 }\n      ",
        "",
    );
    let file = Pipeline::from_str(&without_s2, Path::new("p.yaml")).unwrap();
    let g = c.effective().regrow(c.with_slots(file)).expect("kept");
    let e = c.set_base(g);
    assert!(e.servers[1].removed);
    assert_eq!(state(&e, "s2"), ServerState::Down);
    assert!(c.to_json()["servers"]["s2"]["system"].is_null());
    // Its agent advertises a flow to it: refused, however long it keeps at it.
    let reply = advertise_clients_to_s2(&env, &[]);
    assert_eq!(reply["ok"], true, "{reply}");
    let t0 = Instant::now();
    loop {
        c.turn(Duration::from_millis(10));
        let j = c.to_json();
        let why = j["flows_refused"][0]["why"].as_str().unwrap_or("");
        if why.contains("not a live pipeline server") {
            assert_eq!(j["flows"].as_array().map(Vec::len), Some(0), "{j}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the advert refused: {j}"
        );
    }
    assert_eq!(state(&c.effective(), "s2"), ServerState::Down);
    // No flow left on s2: freed, out of the view and the counts.
    let zero = [0u64; 8];
    let open = flowgate::config::OpenFlows {
        servers: &zero,
        services: &zero,
        rules: &zero,
    };
    let (r, freed) = c.base().reclaim(&open).expect("s2 freed");
    assert_eq!(freed.servers, ["s2"]);
    let e = c.set_base(r);
    assert!(e.servers[1].vacant());
    let j = c.to_json();
    let names: Vec<&String> = j["servers"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["s1", "s3"], "{j}");
    assert!(
        c.summary().contains("servers up 2 draining 0 down 0"),
        "{}",
        c.summary()
    );
    // s4 (no agent) takes the free index, and stays up: never heard.
    let with_s4 = PIPELINE.replace(
        "name: s2, mac: \"02:00:00:00:01:02\"",
        "name: s4, mac: \"02:00:00:00:01:04\"",
    );
    let file = Pipeline::from_str(&with_s4, Path::new("p.yaml")).unwrap();
    let g = c.effective().regrow(c.with_slots(file)).expect("grows");
    assert_eq!(g.servers[1].name, "s4");
    c.set_base(g);
    for _ in 0..50 {
        c.turn(Duration::from_millis(10));
    }
    assert_eq!(state(&c.effective(), "s4"), ServerState::Up);
}
