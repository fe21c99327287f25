//! A reloaded pipeline that grows (servers, services and members added after the existing
//! ones, pattern rules added, removed or reordered) replaces the running one under live
//! flows: open flows keep their servers and rules, new ones use the new servers and
//! rules, counters carry on and grow. Anything that would change what a flow or a counter
//! points at is refused, with the reason, and the old tables stay.

use flowgate::action::{FrameBuf, PacketBuf};
use flowgate::classify::Decision;
use flowgate::config::{Pipeline, ServerState};
use flowgate::pipeline::{Tables, Worker};
use std::path::Path;
use std::sync::Arc;

const HEAD: &str = r#"system: { mac: "02:00:00:00:00:01", addresses: [203.0.113.1], gateway: "02:00:00:00:00:fe" }
flows:
  - { name: voice, match: { proto: udp, dst_port: 5060 }, to: gateway }
services:
"#;

const HTTP: &str = r#"  - name: http
    vip: 203.0.113.10
    proto: tcp
    ports: [80]
    servers:
      - { name: a, mac: "02:00:00:00:01:01" }
      - { name: b, mac: "02:00:00:00:01:02" }
"#;

const DNS: &str = r#"  - name: dns
    vip: 203.0.113.53
    proto: udp
    ports: [53]
    servers:
      - { name: d, mac: "02:00:00:00:03:01" }
"#;

fn load(services: &str) -> Pipeline {
    load_text(&format!("{HEAD}{services}"))
}

fn load_text(text: &str) -> Pipeline {
    Pipeline::from_str(text, Path::new("p.yaml")).expect("valid")
}

/// The grown file: a server `c` added to `http` (declared first there, so it comes
/// before `d` in the file's server order), and a new service `api` on `a` and a new `e`.
fn grown() -> Pipeline {
    load(&grown_text())
}

/// The services of [`grown`].
fn grown_text() -> String {
    let http_c = HTTP.to_string() + "      - { name: c, mac: \"02:00:00:00:01:03\" }\n";
    let api = r#"  - name: api
    vip: 203.0.113.20
    proto: tcp
    ports: [8080]
    servers:
      - { name: e, mac: "02:00:00:00:04:01" }
      - { name: a, mac: "02:00:00:00:01:01" }
"#;
    format!("{http_c}{DNS}{api}")
}

/// New flows of every service of `b` go to the same servers (by name) under `a`'s tables
/// as under `b`'s: every slot of each service's Maglev table names the same server
/// (ties decide a few slots in 65537: sampling flows would miss them).
fn same_choices(a: &Pipeline, b: &Pipeline) {
    let (ta, tb) = (Tables::build(a.clone(), 1), Tables::build(b.clone(), 1));
    for (j, s) in b.services.iter().enumerate() {
        let i = (a.services.iter().position(|x| x.name == s.name)).expect("service kept");
        let server = |p: &Pipeline, t: &Tables, k: usize, slot: u64| {
            let m = t.maglev[k].lookup(slot)?;
            let srv = p.services[k].members[usize::from(m)].server;
            Some(p.servers[usize::from(srv)].name.clone())
        };
        assert_eq!(ta.maglev[i].len(), tb.maglev[j].len());
        for slot in 0..tb.maglev[j].len() as u64 {
            let (ca, cb) = (server(a, &ta, i, slot), server(b, &tb, j, slot));
            assert_eq!(ca, cb, "service {} slot {slot}", s.name);
        }
    }
}

fn names(p: &Pipeline) -> Vec<&str> {
    p.servers.iter().map(|s| s.name.as_str()).collect()
}

#[test]
fn regrow_keeps_indices_and_takes_the_files_order() {
    let old = load(&format!("{HTTP}{DNS}"));
    assert_eq!(names(&old), ["a", "b", "d"]);
    let new = grown();
    assert_eq!(names(&new), ["a", "b", "c", "d", "e"], "the file's order");
    assert!(!old.grows_into(&new), "d moved in the file's order");
    let g = old.regrow(new).expect("it only grows");
    assert_eq!(
        names(&g),
        ["a", "b", "d", "c", "e"],
        "old servers keep their indices"
    );
    assert!(old.grows_into(&g));
    let members = |svc: usize| -> Vec<&str> {
        g.services[svc]
            .members
            .iter()
            .map(|m| g.servers[m.server as usize].name.as_str())
            .collect()
    };
    assert_eq!(members(0), ["a", "b", "c"]);
    assert_eq!(members(1), ["d"]);
    assert_eq!(members(2), ["e", "a"]);

    // Services reordered and a new one put before the running ones: taken, the running
    // ones at their indices, the file's order their priority (see
    // `services_reorder_under_live_flows`).
    let api = DNS
        .replace("dns", "api")
        .replace("203.0.113.53", "203.0.113.54");
    let g = old
        .regrow(load(&format!("{api}{DNS}{HTTP}")))
        .expect("services may move");
    let svcs: Vec<&str> = g.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        (svcs, g.service_order.clone()),
        (vec!["http", "dns", "api"], vec![2, 1, 0])
    );
    assert!(old.grows_into(&g));
    // A server put before the running ones of a service, and two swapped: taken, the
    // members at their indices, Maglev placing them in the file's order (so new flows
    // go where a system started on the new file sends them; see the property test).
    let c_first = HTTP
        .replace(
            "    servers:\n",
            "    servers:\n      - { name: c, mac: \"02:00:00:00:01:03\" }\n",
        )
        .replace(
            "      - { name: a, mac: \"02:00:00:00:01:01\" }\n      - { name: b, mac: \"02:00:00:00:01:02\" }\n",
            "      - { name: b, mac: \"02:00:00:00:01:02\" }\n      - { name: a, mac: \"02:00:00:00:01:01\" }\n",
        );
    let new = load(&format!("{c_first}{DNS}"));
    let g = old.regrow(new.clone()).expect("members may move");
    let http: Vec<&str> = (g.services[0].members.iter())
        .map(|m| g.servers[m.server as usize].name.as_str())
        .collect();
    assert_eq!(http, ["a", "b", "c"], "indices kept, the new one after");
    assert_eq!(
        g.services[0].member_order,
        [2, 1, 0],
        "c, b, a as in the file"
    );
    assert!(old.grows_into(&g));
    same_choices(&g, &new);
    // The ports a server sits behind: refused (the run's ports are fixed).
    let ported = HTTP.replace(
        "{ name: a, mac: \"02:00:00:00:01:01\" }",
        "{ name: a, mac: \"02:00:00:00:01:01\", port: inside }",
    );
    let e = old.regrow(load(&format!("{ported}{DNS}"))).unwrap_err();
    assert!(e.contains("ports changed"), "{e}");
    // A pattern rule renamed: a new rule after the running one, which is kept (out of
    // the priority order) for its flows (see `pattern_rules_change_under_live_flows`).
    let p = Pipeline::from_str(
        &format!("{}{HTTP}{DNS}", HEAD.replace("voice", "sip")),
        Path::new("p.yaml"),
    )
    .unwrap();
    let g = old.regrow(p).expect("rules may change");
    let rules: Vec<&str> = g.flow_rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        (rules, g.rule_order.clone()),
        (vec!["voice", "sip"], vec![1])
    );
    assert!(old.grows_into(&g));
}

/// A reload may change the flow table's timeouts: the flows already open take them (it
/// used to be taken and ignored: the running table kept its old timeouts while the
/// tables said otherwise). What the table was built with stays: its size, and the class
/// each running rule's flows are in (which rules share an idle timeout, which have the
/// default), so a reload that would change those is refused with the reason.
#[test]
fn a_reload_applies_changed_timeouts_to_the_flows_already_open() {
    const S: u64 = 1_000_000_000;
    let old = load(HTTP);
    let head = |extra: &str| HEAD.replace("services:\n", &format!("{extra}services:\n"));
    let with = |h: String| Pipeline::from_str(&format!("{h}{HTTP}"), Path::new("p.yaml")).unwrap();
    // A connection opened at 1 s (SYN, then the client's ACK: established, 300 s).
    let open = || {
        let mut w = Worker::new(Arc::new(Tables::build(old.clone(), 1)));
        for flags in [0x02, 0x10] {
            send(&mut w, &old, &tcp(40000, [203, 0, 113, 10], 80, flags), S);
        }
        w.expire(2 * S, usize::MAX);
        assert_eq!(w.flow_count(), 1);
        w
    };
    // Longer: the open connection outlives its old 300 s, and goes after 3600 s.
    let longer = with(head("flow_table: { tcp_established_timeout: 3600 }\n"));
    let mut w = open();
    let g = old.regrow(longer.clone()).expect("timeouts may change");
    w.set_tables(Arc::new(Tables::build(g, 2)))
        .expect("same classes");
    assert_eq!(
        settle(&mut w),
        1,
        "the connection moved to the class of 3600 s"
    );
    w.expire(400 * S, usize::MAX);
    assert_eq!(w.flow_count(), 1, "still open after 400 s");
    w.expire(3590 * S, usize::MAX);
    assert_eq!(w.flow_count(), 1);
    // (A timeout of 3600 s has windows of 225 s: seen in [0, 225), gone at 3825 s.)
    w.expire(3824 * S, usize::MAX);
    assert_eq!(w.flow_count(), 1);
    w.expire(3825 * S, usize::MAX);
    assert_eq!(w.flow_count(), 0, "gone after 3600 s idle");
    // A packet of the connection before the pass reaches it: the connection stays in
    // its class (its state did not change) until the pass moves it, seen at 3 s.
    let mut w = open();
    w.set_tables(Arc::new(Tables::build(
        old.regrow(longer.clone()).unwrap(),
        2,
    )))
    .unwrap();
    send(
        &mut w,
        &old,
        &tcp(40000, [203, 0, 113, 10], 80, 0x10),
        3 * S,
    );
    assert_eq!(settle(&mut w), 1);
    w.expire(3600 * S, usize::MAX);
    assert_eq!(w.flow_count(), 1, "seen at 3 s: 3600 s");
    w.expire(3830 * S, usize::MAX);
    assert_eq!(w.flow_count(), 0);
    // Shorter: gone once 30 s have passed, not before.
    let mut w = open();
    let shorter = with(head("flow_table: { tcp_established_timeout: 30 }\n"));
    w.set_tables(Arc::new(Tables::build(old.regrow(shorter).unwrap(), 2)))
        .unwrap();
    w.expire(25 * S, usize::MAX);
    assert_eq!(w.flow_count(), 1);
    // Until the worker's pass reaches it, the flow keeps its old timeout.
    w.expire(40 * S, usize::MAX);
    assert_eq!(w.flow_count(), 1, "not moved yet: 300 s still");
    assert_eq!(settle(&mut w), 1);
    w.expire(41 * S, usize::MAX);
    assert_eq!(w.flow_count(), 0);
    // The idle timeout of flow_table and a rule that follows it: one class, new value.
    let rule = |t: &str| HEAD.replace("to: gateway }", &format!("to: gateway{t} }}"));
    let idle = |ft: &str, r: &str| {
        Pipeline::from_str(
            &format!(
                "{}{HTTP}",
                rule(r).replace("services:\n", &format!("{ft}services:\n"))
            ),
            Path::new("p.yaml"),
        )
        .unwrap()
    };
    assert!(
        old.regrow(idle("flow_table: { idle_timeout: 5 }\n", ""))
            .is_ok()
    );
    // A running rule leaving the default for a value of its own: taken, and its open
    // flow moves to the class of the new timeout (seen at 1 s: gone 30 s later, at most
    // a sixteenth late, not 60 s later).
    let udp_open = |p: &Pipeline, dp: u16| {
        let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
        assert_eq!(send(&mut w, p, &udp(1000, dp), S), "gateway");
        w
    };
    let mut w = udp_open(&old, 5060);
    let own = old
        .regrow(idle("", ", idle_timeout: 30"))
        .expect("a rule's timeout may change");
    w.set_tables(Arc::new(Tables::build(own.clone(), 2)))
        .expect("taken");
    assert_eq!(settle(&mut w), 1);
    w.expire(30 * S, usize::MAX);
    assert_eq!(w.flow_count(), 1);
    w.expire(33 * S, usize::MAX);
    assert_eq!(w.flow_count(), 0, "gone 30 s after it was seen");
    // Back to the default's class: 60 s again.
    let mut w = udp_open(&own, 5060);
    let back = own.regrow(idle("", "")).expect("taken");
    w.set_tables(Arc::new(Tables::build(back, 2)))
        .expect("taken");
    assert_eq!(settle(&mut w), 1);
    w.expire(40 * S, usize::MAX);
    assert_eq!(w.flow_count(), 1, "60 s again");
    w.expire(66 * S, usize::MAX);
    assert_eq!(w.flow_count(), 0);
    // Two rules sharing a value part: the one that changed takes its flows along.
    let two = |a: u64, b: u64| {
        let y = HEAD.replace(
            "  - { name: voice, match: { proto: udp, dst_port: 5060 }, to: gateway }\n",
            &format!(
                "  - {{ name: voice, match: {{ proto: udp, dst_port: 5060 }}, to: gateway, idle_timeout: {a} }}\n  \
                 - {{ name: rtp, match: {{ proto: udp, dst_port: 5004 }}, to: gateway, idle_timeout: {b} }}\n"
            ),
        );
        Pipeline::from_str(&format!("{y}{HTTP}"), Path::new("p.yaml")).unwrap()
    };
    let shared = two(30, 30);
    let mut w = udp_open(&shared, 5060);
    assert_eq!(send(&mut w, &shared, &udp(1001, 5004), S), "gateway");
    let parted = shared.regrow(two(30, 60)).expect("taken");
    w.set_tables(Arc::new(Tables::build(parted, 2)))
        .expect("taken");
    assert_eq!(settle(&mut w), 1, "rtp's flow moved, voice's stayed");
    w.expire(33 * S, usize::MAX);
    assert_eq!(w.flow_count(), 1, "voice's flow gone at 30 s, rtp's kept");
    w.expire(66 * S, usize::MAX);
    assert_eq!(w.flow_count(), 0);
    assert!(two(30, 30).regrow(two(45, 45)).is_ok());
}

/// A reload may resize the flow table: each worker takes a new table, into which the
/// open flows move (when a packet finds one in the old table, or as the worker's pass
/// reaches it), keeping their servers, state and last-seen time; new flows go to the new
/// table at once. One smaller than the open flows evicts those that do not fit, counted.
#[test]
fn a_reload_resizes_the_flow_table_under_open_flows() {
    const S: u64 = 1_000_000_000;
    let old = load(HTTP);
    let sized = |n: usize| {
        let h = HEAD.replace(
            "services:\n",
            &format!("flow_table: {{ capacity: {n} }}\nservices:\n"),
        );
        old.regrow(Pipeline::from_str(&format!("{h}{HTTP}"), Path::new("p.yaml")).unwrap())
            .expect("a new size is taken")
    };
    let mut w = Worker::new(Arc::new(Tables::build(old.clone(), 1)));
    // Ten connections, established at 1 s, and their servers.
    let vip = [203, 0, 113, 10];
    let servers: Vec<String> = (0..10)
        .map(|i| {
            let s = send(&mut w, &old, &tcp(40000 + i, vip, 80, 0x02), S);
            send(&mut w, &old, &tcp(40000 + i, vip, 80, 0x10), S);
            s
        })
        .collect();
    assert!(servers.contains(&"a".to_string()) && servers.contains(&"b".to_string()));
    let big = sized(4096);
    assert!(old.grows_into(&big));
    w.set_tables(Arc::new(Tables::build(big.clone(), 2)))
        .expect("taken");
    assert!(w.moves_due());
    assert_eq!(w.flow_count(), 10);
    // A packet of the first connection finds it in the old table: same server.
    assert_eq!(
        send(&mut w, &big, &tcp(40000, vip, 80, 0x10), 2 * S),
        servers[0]
    );
    assert_eq!(settle(&mut w), 9, "the others moved by the pass");
    assert_eq!(w.flow_count(), 10);
    for (i, s) in servers.iter().enumerate() {
        assert_eq!(
            &send(&mut w, &big, &tcp(40000 + i as u16, vip, 80, 0x10), 3 * S),
            s
        );
    }
    assert_eq!(w.stats.flows_created, 10, "no flow made again");
    // Still established (300 s): gone 300 s after 3 s, not before.
    w.expire(300 * S, usize::MAX);
    assert_eq!(w.flow_count(), 10);
    // Smaller than the open flows: 4 fit, 6 are evicted as they move, counted.
    let small = big
        .regrow(
            Pipeline::from_str(
                &format!(
                    "{}{HTTP}",
                    HEAD.replace("services:\n", "flow_table: { capacity: 4 }\nservices:\n")
                ),
                Path::new("p.yaml"),
            )
            .unwrap(),
        )
        .expect("taken");
    w.set_tables(Arc::new(Tables::build(small, 3)))
        .expect("taken");
    settle(&mut w);
    assert_eq!((w.flow_count(), w.stats.flows_evicted), (4, 6));
    w.expire(400 * S, usize::MAX);
    assert_eq!(w.flow_count(), 0, "gone 300 s after they were seen");
}

/// Drives the pass a reload started, as the worker's poll loop does (bounded steps);
/// returns how many flows moved.
fn settle(w: &mut Worker) -> usize {
    let mut moved = 0;
    while w.moves_due() {
        moved += w.move_flows(64);
    }
    moved
}

#[test]
fn regrow_keeps_what_the_file_removed_until_a_restart() {
    let old = load(&format!("{HTTP}{DNS}"));
    // `b` gone from the file, and with it from `http`; `dns` gone, its server `d` too.
    let new = load(&HTTP.replace("      - { name: b, mac: \"02:00:00:00:01:02\" }\n", ""));
    let g = old.regrow(new).expect("removals are kept, not refused");
    assert!(old.grows_into(&g));
    assert_eq!(names(&g), ["a", "b", "d"], "every index kept");
    let state = |n: &str| g.servers[g.server_index(n).unwrap() as usize].state;
    assert_eq!(state("a"), ServerState::Up);
    assert_eq!(state("b"), ServerState::Down, "its flows move");
    assert_eq!(state("d"), ServerState::Down);
    let w: Vec<u32> = g.services[0].members.iter().map(|m| m.weight).collect();
    assert_eq!(w, [100, 0], "b stays a member at weight 0");
    assert!(g.services[1].retired && !old.services[1].retired);
    assert_eq!(
        g.services[1].rules(1).count(),
        0,
        "a retired service matches nothing"
    );
    assert!(!g.owns("203.0.113.53".parse().unwrap()), "nor owns its VIP");
    assert!(g.owns("203.0.113.10".parse().unwrap()));
    // Kept entries come back when the file has them again.
    let back = g.regrow(load(&format!("{HTTP}{DNS}"))).expect("back");
    assert_eq!(state("b"), ServerState::Down);
    assert_eq!(back.servers[1].state, ServerState::Up);
    assert!(!back.services[1].retired);
    assert_eq!(back.services[0].members[1].weight, 100);
}

/// A frame from client port `sp` (and an address derived from it) to `dst`, protocol
/// `proto`, its layer-4 header written by `l4`: the capture generator's frame builder,
/// checksums filled.
fn frame(sp: u16, dst: [u8; 4], proto: u8, l4: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    use flowgate::r#gen::frame;
    let client = std::net::Ipv4Addr::new(198, 51, 100, (sp % 200) as u8 + 1);
    let mut f = Vec::new();
    let lay = frame::begin(
        &mut f,
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 0, 0xfe],
        &frame::Tags::NONE,
        client.into(),
        std::net::Ipv4Addr::from(dst).into(),
        proto,
        sp,
    );
    l4(&mut f);
    frame::finish(&mut f, lay);
    f
}

/// A TCP frame from client port `sp` to `vip`:`dp`, flags `flags`.
fn tcp(sp: u16, vip: [u8; 4], dp: u16, flags: u8) -> Vec<u8> {
    use flowgate::r#gen::frame::{TCP, tcp};
    frame(sp, vip, TCP, |f| tcp(f, sp, dp, 1, 0, flags))
}

/// A UDP frame from client port `sp` to 203.0.113.99:`dp`.
fn udp(sp: u16, dp: u16) -> Vec<u8> {
    use flowgate::r#gen::frame::{UDP, udp};
    frame(sp, [203, 0, 113, 99], UDP, |f| udp(f, sp, dp))
}

/// Runs `f` through `w`; where it went (by destination MAC): a server's name, `gateway`,
/// or the MAC.
fn send(w: &mut Worker, p: &Pipeline, f: &[u8], now: u64) -> String {
    send_dscp(w, p, f, now).0
}

/// [`send`], and the DSCP the frame left with.
fn send_dscp(w: &mut Worker, p: &Pipeline, f: &[u8], now: u64) -> (String, u8) {
    let mut b = FrameBuf::new(256);
    assert!(b.load(f));
    let o = w.process(&mut b, 0, now);
    assert!(o.route.is_some(), "{o:?}");
    let d = b.data();
    let mac = &d[..6];
    let to = match p.servers.iter().find(|s| s.mac == mac) {
        Some(s) => s.name.clone(),
        None if mac == p.gateway_mac => "gateway".to_string(),
        None => format!("{mac:02x?}"),
    };
    (to, d[15] >> 2)
}

#[test]
fn a_grown_pipeline_replaces_the_running_one_under_live_flows() {
    let old = load(&format!("{HTTP}{DNS}"));
    let mut w = Worker::new(Arc::new(Tables::build(old.clone(), 1)));
    let http = [203, 0, 113, 10];
    let mut before = Vec::new();
    for sp in 1000..1300u16 {
        before.push((sp, send(&mut w, &old, &tcp(sp, http, 80, 0x02), 1_000)));
    }
    let (in_before, http_before) = (w.stats.packets_in, w.stats.svc_packets[0]);

    // Not growing: refused, the old tables stay and still serve.
    let shrunk = load(HTTP);
    assert!(
        w.set_tables(Arc::new(Tables::build(shrunk, 2))).is_err(),
        "a service removed"
    );

    let g = old.regrow(grown()).expect("grows");
    w.set_tables(Arc::new(Tables::build(g.clone(), 3)))
        .expect("a grown pipeline is taken");
    // Open flows keep their servers.
    for (sp, srv) in &before {
        assert_eq!(
            &send(&mut w, &g, &tcp(*sp, http, 80, 0x10), 2_000),
            srv,
            "flow {sp}"
        );
    }
    // New flows also reach the new server; the new service works.
    let mut on_c = 0;
    for sp in 2000..2300u16 {
        on_c += usize::from(send(&mut w, &g, &tcp(sp, http, 80, 0x02), 3_000) == "c");
    }
    assert!(on_c > 50, "the new server takes about a third: {on_c}");
    let api = send(&mut w, &g, &tcp(4000, [203, 0, 113, 20], 8080, 0x02), 3_000);
    assert!(api == "e" || api == "a", "{api}");
    // Counters carried on, and count the new service and member.
    let j = w.stats.to_json(&g);
    assert_eq!(w.stats.packets_in, in_before + 300 + 300 + 1);
    assert_eq!(
        j["services"]["http"]["packets"].as_u64(),
        Some(http_before + 600)
    );
    assert_eq!(
        j["services"]["http"]["servers"]["c"].as_u64(),
        Some(on_c as u64)
    );
    assert_eq!(j["services"]["api"]["flows"].as_u64(), Some(1));
    assert_eq!(
        w.stats.packets_in,
        w.stats.packets_out + w.stats.drops.iter().sum::<u64>()
    );

    // Then `b` leaves the file: its flows move on their next packet, to where a new
    // flow would go, and it takes no new ones; the others' flows stay.
    let b_gone = grown_text().replace("      - { name: b, mac: \"02:00:00:00:01:02\" }\n", "");
    let s = g.regrow(load(&b_gone)).expect("a removal is kept down");
    w.set_tables(Arc::new(Tables::build(s.clone(), 4)))
        .expect("taken");
    for (sp, srv) in &before {
        let now = send(&mut w, &s, &tcp(*sp, http, 80, 0x10), 4_000);
        if srv == "b" {
            assert!(now == "a" || now == "c", "flow {sp} left b for {now}");
        } else {
            assert_eq!(&now, srv, "flow {sp} stays");
        }
    }
    for sp in 5000..5100u16 {
        assert_ne!(send(&mut w, &s, &tcp(sp, http, 80, 0x02), 5_000), "b");
    }
    let j = w.stats.to_json(&s);
    assert!(
        j["services"]["http"]["servers"]["b"].as_u64() > Some(0),
        "{j}"
    );
}

/// A pipeline from a small universe: services `svc0..svc3` (in the given order, each on
/// its own VIP) with the given member servers `s0..s5` (in the given order).
fn universe(services: &[(u8, Vec<u8>)]) -> Pipeline {
    load(&services_yaml(services))
}

/// The `services:` entries of [`universe`]: `svc{k}` on 203.0.113.(100 + k) port 80,
/// under `policy: least-flows` for odd `k`, with its servers `s{m}`, of which s4 and s5
/// are backups.
fn services_yaml(services: &[(u8, Vec<u8>)]) -> String {
    let mut y = String::new();
    for (k, members) in services {
        let policy = if k % 2 == 1 { "least-flows" } else { "maglev" };
        y += &format!(
            "  - name: svc{k}\n    vip: 203.0.113.{}\n    proto: tcp\n    ports: [80]\n    policy: {policy}\n    servers:\n",
            100 + k
        );
        for m in members {
            let backup = if *m >= 4 { ", backup: true" } else { "" };
            y += &format!("      - {{ name: s{m}, mac: \"02:00:00:00:09:0{m}\"{backup} }}\n");
        }
    }
    y
}

/// A SYN from client port `sp` to each service of `file` through `w` (running `p`):
/// each goes to a server the file lists for it, a primary when it lists one.
fn syns_reach_the_files_servers(w: &mut Worker, p: &Pipeline, file: &Pipeline, sp: u16) {
    for s in &file.services {
        let k: u8 = s.name.trim_start_matches("svc").parse().expect("svcK");
        let to = send(w, p, &tcp(sp, [203, 0, 113, 100 + k], 80, 0x02), 1_000);
        let names: Vec<(&str, bool)> = (s.members.iter())
            .map(|m| (file.servers[usize::from(m.server)].name.as_str(), m.backup))
            .collect();
        let primaries = names.iter().any(|(_, b)| !b);
        assert!(
            names.iter().any(|(n, b)| *n == to && (!primaries || !b)),
            "{} to {to}, not one of {names:?}",
            s.name
        );
    }
}

/// [`universe`] with the pattern rules `rules` instead of `voice`: rule `r{k}` matches UDP
/// to ports 5000 to 5000 + k (so that earlier rules shadow later ones), with idle timeout
/// choice `t` (0: the default, else `15 t` s).
fn universe_rules(services: &[(u8, Vec<u8>)], rules: &[(u8, u8)]) -> Pipeline {
    let mut y = String::from("flows:\n");
    for (k, t) in rules {
        let idle = if *t == 0 {
            String::new()
        } else {
            format!(", idle_timeout: {}", 15 * t)
        };
        y += &format!(
            "  - {{ name: r{k}, match: {{ proto: udp, dst_port: \"5000-{}\" }}, to: gateway{idle} }}\n",
            5000 + u16::from(*k),
        );
    }
    let voice = "flows:\n  - { name: voice, match: { proto: udp, dst_port: 5060 }, to: gateway }\n";
    let head = HEAD.replace(voice, if rules.is_empty() { "" } else { &y });
    let text = format!("{head}{}", services_yaml(services));
    Pipeline::from_str(&text, Path::new("p.yaml")).expect("valid")
}

fn rules() -> impl proptest::strategy::Strategy<Value = Vec<(u8, u8)>> {
    use proptest::prelude::*;
    // Up to six distinct rules in any order, each with one of three idle timeouts.
    (
        Just((0u8..6).collect::<Vec<_>>()).prop_shuffle(),
        0usize..=6,
        prop::collection::vec(0u8..3, 6),
    )
        .prop_map(|(order, n, t)| {
            order
                .into_iter()
                .take(n)
                .map(|k| (k, t[k as usize]))
                .collect()
        })
}

fn services() -> impl proptest::strategy::Strategy<Value = Vec<(u8, Vec<u8>)>> {
    use proptest::prelude::*;
    // Up to four distinct services, each with one to four distinct servers.
    (
        Just((0u8..4).collect::<Vec<_>>()).prop_shuffle(),
        1usize..=4,
        prop::collection::vec(
            (
                Just((0u8..6).collect::<Vec<_>>()).prop_shuffle(),
                1usize..=4,
            ),
            4,
        ),
    )
        .prop_map(|(order, n, members)| {
            (order.into_iter().take(n).zip(members))
                .map(|(k, (m, len))| (k, m.into_iter().take(len).collect()))
                .collect()
        })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Whatever two files are, regrow takes the second; what it makes keeps every index
    /// of the running pipeline, offers every service and member of the file, ranks the
    /// services as the file does, and places new flows on the servers a system started
    /// on the file would (ECMP neighbours running the file agree with it).
    #[test]
    fn regrow_of_any_two_files(a in services(), b in services()) {
        let (old, new) = (universe(&a), universe(&b));
        let regrown = old.regrow(new.clone());
        proptest::prop_assert!(regrown.is_ok(), "{:?}", regrown.as_ref().err());
        if let Ok(g) = regrown {
            same_choices(&g, &new);
            proptest::prop_assert!(old.grows_into(&g));
            let order: Vec<&str> = g.service_order.iter().map(|&i| g.services[usize::from(i)].name.as_str()).collect();
            let file: Vec<&str> = new.services.iter().map(|s| s.name.as_str()).collect();
            proptest::prop_assert_eq!(order, file);
            for s in &new.services {
                let k = g.services.iter().position(|x| x.name == s.name).expect("service kept");
                let gs = &g.services[k];
                proptest::prop_assert!(!gs.retired);
                for m in &s.members {
                    let name = &new.servers[m.server as usize].name;
                    let j = g.server_index(name).expect("server kept");
                    proptest::prop_assert!(gs.members.iter().any(|x| x.server == j && x.weight == m.weight));
                }
            }
            // Nothing the file dropped takes new flows: kept servers are down, kept
            // members weight 0, kept services retired.
            for (i, s) in g.servers.iter().enumerate() {
                if new.server_index(&s.name).is_none() {
                    proptest::prop_assert_eq!(s.state, ServerState::Down, "{}", i);
                }
            }
            for s in &g.services {
                if !new.services.iter().any(|x| x.name == s.name) {
                    proptest::prop_assert!(s.retired);
                }
            }
            // And a worker takes it.
            let mut w = Worker::new(Arc::new(Tables::build(old.clone(), 1)));
            proptest::prop_assert!(w.set_tables(Arc::new(Tables::build(g, 2))).is_ok());
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Whatever two rule lists are, regrow takes the new one (a rule's idle timeout may
    /// change too: its flows move with it), keeps every running rule at its index, and
    /// ranks the live rules as the new file does.
    #[test]
    fn regrow_of_any_two_rule_lists(svc in services(), a in rules(), b in rules()) {
        let (old, new) = (universe_rules(&svc, &a), universe_rules(&svc, &b));
        match old.regrow(new.clone()) {
            Err(e) => proptest::prop_assert!(false, "{}", e),
            Ok(g) => {
                proptest::prop_assert!(old.grows_into(&g));
                let names: Vec<&str> = g.flow_rules.iter().map(|r| r.name.as_str()).collect();
                for (i, r) in old.flow_rules.iter().enumerate() {
                    proptest::prop_assert_eq!(&r.name, names[i]);
                }
                for (i, r) in g.flow_rules.iter().enumerate() {
                    proptest::prop_assert_eq!(r.rule.decision, Decision::FlowRule(i as u32));
                    proptest::prop_assert_eq!(names.iter().filter(|n| **n == r.name).count(), 1);
                }
                let live: Vec<&str> = g.rule_order.iter().map(|&i| names[usize::from(i)]).collect();
                let file: Vec<String> = b.iter().map(|r| format!("r{}", r.0)).collect();
                proptest::prop_assert_eq!(live, file.iter().map(String::as_str).collect::<Vec<_>>());
                // New flows go by the file's order: to port 5000 + j, the first rule
                // there with k >= j.
                let t = Tables::build(g.clone(), 2);
                for j in 0..7u16 {
                    let key = flowgate::classify::Key {
                        src: flowgate::classify::v4_mapped([198, 51, 100, 1]),
                        dst: flowgate::classify::v4_mapped([192, 0, 2, 1]),
                        proto: 17,
                        src_port: 40000,
                        dst_port: 5000 + j,
                        ethertype: 0x0800,
                        ..Default::default()
                    };
                    let want = (b.iter().find(|r| u16::from(r.0) >= j)).map_or(Decision::NoMatch, |r| {
                        let i = names.iter().position(|n| *n == format!("r{}", r.0)).unwrap();
                        Decision::FlowRule(i as u32)
                    });
                    proptest::prop_assert_eq!(t.classifier.classify(&key), want);
                }
                // And a worker takes it.
                let mut w = Worker::new(Arc::new(Tables::build(old.clone(), 1)));
                proptest::prop_assert!(w.set_tables(Arc::new(t)).is_ok());
            }
        }
    }
}

/// Pattern rules may be added, removed and reordered by a reload, under live flows: a
/// rule's index is its identity (flows and counters hold it), its priority is the file's
/// order. The flows a removed rule made keep its target and QoS until they end; new
/// flows go by the new rules, a new rule may bring a timeout of its own (a new class of
/// the running flow table), and a rule that comes back by name takes its old index.
#[test]
fn pattern_rules_change_under_live_flows() {
    const S: u64 = 1_000_000_000;
    let voice = "  - { name: voice, match: { proto: udp, dst_port: 5060 }, to: gateway, qos: { dscp: 46 } }\n";
    let any = "  - { name: any-udp, match: { proto: udp }, to: a }\n";
    let rtp = "  - { name: rtp, match: { proto: udp, dst_port: 5004 }, to: b, qos: { dscp: 34 }, idle_timeout: 45 }\n";
    let file = |rules: &[&str]| {
        let y = format!(
            "system: {{ mac: \"02:00:00:00:00:01\", addresses: [203.0.113.1], gateway: \"02:00:00:00:00:fe\" }}\nflows:\n{}services:\n{HTTP}",
            rules.concat()
        );
        Pipeline::from_str(&y, Path::new("p.yaml")).unwrap()
    };
    let names =
        |p: &Pipeline| -> Vec<String> { p.flow_rules.iter().map(|r| r.name.clone()).collect() };
    let p1 = file(&[voice, any]);
    let mut w = Worker::new(Arc::new(Tables::build(p1.clone(), 1)));
    assert_eq!(
        send_dscp(&mut w, &p1, &udp(1000, 5060), S),
        ("gateway".into(), 46)
    );
    assert_eq!(send_dscp(&mut w, &p1, &udp(1001, 7000), S), ("a".into(), 0));
    assert_eq!(send_dscp(&mut w, &p1, &udp(1002, 5004), S), ("a".into(), 0));

    // voice removed, rtp added before any-udp, with an idle timeout no rule had.
    let p2 = p1.regrow(file(&[rtp, any])).expect("rules may change");
    assert_eq!(
        names(&p2),
        ["voice", "any-udp", "rtp"],
        "indices kept, new ones after"
    );
    assert_eq!(p2.rule_order, [2, 1], "the file's order; voice out of it");
    assert!(p1.grows_into(&p2));
    w.set_tables(Arc::new(Tables::build(p2.clone(), 2)))
        .expect("taken");
    // The open voice flow keeps voice's target and QoS; a new one goes by the new rules.
    assert_eq!(
        send_dscp(&mut w, &p2, &udp(1000, 5060), 2 * S),
        ("gateway".into(), 46)
    );
    assert_eq!(
        send_dscp(&mut w, &p2, &udp(2000, 5060), 2 * S),
        ("a".into(), 0)
    );
    // Open flows keep their rule; new RTP flows take the new one, ahead of any-udp.
    assert_eq!(
        send_dscp(&mut w, &p2, &udp(1002, 5004), 2 * S),
        ("a".into(), 0)
    );
    assert_eq!(
        send_dscp(&mut w, &p2, &udp(2001, 5004), 2 * S),
        ("b".into(), 34)
    );
    // rtp's flow goes after 45 s idle (not before; at most a sixteenth later), in a class
    // of its own: the 60 s flows stay.
    w.expire(46 * S, usize::MAX);
    assert_eq!(w.flow_count(), 5);
    w.expire(50 * S, usize::MAX);
    assert_eq!(w.flow_count(), 4, "the rtp flow is gone");
    let j = w.stats.to_json(&p2);
    assert_eq!(j["flow_rules"]["voice"]["flows"].as_u64(), Some(1), "{j}");
    assert_eq!(j["flow_rules"]["any-udp"]["flows"].as_u64(), Some(3), "{j}");
    assert_eq!(j["flow_rules"]["rtp"]["flows"].as_u64(), Some(1), "{j}");
    assert_eq!(j["flow_rules"]["voice"]["packets"].as_u64(), Some(2), "{j}");

    // Reordered, and voice back: it takes its old index, and new flows take the new order.
    let p3 = p2.regrow(file(&[voice, any, rtp])).expect("taken");
    assert_eq!(names(&p3), ["voice", "any-udp", "rtp"]);
    assert_eq!(p3.rule_order, [0, 1, 2]);
    w.set_tables(Arc::new(Tables::build(p3.clone(), 3)))
        .expect("taken");
    assert_eq!(
        send_dscp(&mut w, &p3, &udp(3000, 5004), 51 * S),
        ("a".into(), 0)
    );
    assert_eq!(
        send_dscp(&mut w, &p3, &udp(3001, 5060), 51 * S),
        ("gateway".into(), 46)
    );
    assert_eq!(
        send_dscp(&mut w, &p3, &udp(1000, 5060), 51 * S),
        ("gateway".into(), 46)
    );
    let j = w.stats.to_json(&p3);
    assert_eq!(j["flow_rules"]["voice"]["flows"].as_u64(), Some(2), "{j}");
    assert_eq!(
        w.stats.packets_in,
        w.stats.packets_out + w.stats.drops.iter().sum::<u64>()
    );
}

/// Services may be reordered and added anywhere by a reload, under live flows: a
/// service's index is its identity, its priority the file's order. Where two overlap,
/// new flows go to the first in the new file and open flows stay with theirs.
#[test]
fn services_reorder_under_live_flows() {
    let web = "  - { name: web, vip: 203.0.113.10, proto: tcp, ports: [80], servers: [{ name: a, mac: \"02:00:00:00:01:01\" }] }\n";
    let all = "  - { name: all, vip: 203.0.113.10, proto: tcp, ports: [\"1-65535\"], servers: [{ name: d, mac: \"02:00:00:00:03:01\" }] }\n";
    let api = "  - { name: api, vip: 203.0.113.20, proto: tcp, ports: [80], servers: [{ name: e, mac: \"02:00:00:00:04:01\" }] }\n";
    let vip = [203, 0, 113, 10];
    let p1 = load(&format!("{web}{all}"));
    let mut w = Worker::new(Arc::new(Tables::build(p1.clone(), 1)));
    assert_eq!(send(&mut w, &p1, &tcp(1000, vip, 80, 0x02), 1_000), "a");
    assert_eq!(send(&mut w, &p1, &tcp(1001, vip, 443, 0x02), 1_000), "d");
    // `all` first, and `api` before both.
    let p2 = p1
        .regrow(load(&format!("{api}{all}{web}")))
        .expect("services may move");
    assert_eq!(p2.service_order, [2, 1, 0]);
    w.set_tables(Arc::new(Tables::build(p2.clone(), 2)))
        .expect("taken");
    assert_eq!(
        send(&mut w, &p2, &tcp(1000, vip, 80, 0x10), 2_000),
        "a",
        "open flow stays"
    );
    assert_eq!(
        send(&mut w, &p2, &tcp(2000, vip, 80, 0x02), 2_000),
        "d",
        "new: all first"
    );
    let api_vip = [203, 0, 113, 20];
    assert_eq!(send(&mut w, &p2, &tcp(2001, api_vip, 80, 0x02), 2_000), "e");
    let j = w.stats.to_json(&p2);
    assert_eq!(j["services"]["web"]["flows"].as_u64(), Some(1), "{j}");
    assert_eq!(j["services"]["all"]["flows"].as_u64(), Some(2), "{j}");
    assert_eq!(j["services"]["api"]["flows"].as_u64(), Some(1), "{j}");
    assert_eq!(j["services"]["web"]["packets"].as_u64(), Some(2), "{j}");
}

/// The flow table has a class per distinct timeout (TCP's SYN and closing 10 s and
/// established 300 s, `flow_table`'s idle 60 s, the rules'), at most 127: a file with
/// more is refused at its `flows` key, and so is a reload whose timeouts and the running
/// file's (which open flows keep until the worker's pass moves them) make more.
#[test]
fn timeouts_are_bounded_in_a_file_and_across_a_reload() {
    // `n` rules, each with an idle timeout of its own from `from` seconds on.
    let rules = |from: u64, n: u64| -> String {
        let mut y = String::from(
            "system: { mac: \"02:00:00:00:00:01\", addresses: [203.0.113.1], gateway: \"02:00:00:00:00:fe\" }\nflows:\n",
        );
        for i in 0..n {
            y += &format!(
                "  - {{ name: r{i}, match: {{ proto: udp, dst_port: {} }}, to: gateway, idle_timeout: {} }}\n",
                1000 + i,
                from + i
            );
        }
        y + "services:\n" + HTTP
    };
    let parse = |y: &str| Pipeline::from_str(y, Path::new("p.yaml"));
    assert!(parse(&rules(1000, 124)).is_ok(), "3 + 124 values");
    let e = parse(&rules(1000, 125)).unwrap_err().to_string();
    assert!(
        e.contains(
            "flows: 128 distinct timeouts (flow_table's and the rules' idle_timeout); at most 127"
        ),
        "{e}"
    );
    let old = parse(&rules(1000, 62)).unwrap();
    let g = old
        .regrow(parse(&rules(2000, 62)).unwrap())
        .expect("3 + 62 + 62 values");
    assert!(old.grows_into(&g));
    let e = old.regrow(parse(&rules(2000, 63)).unwrap()).unwrap_err();
    assert!(
        e.contains("make 128 distinct values; at most 127"),
        "3 + 62 + 63 values: {e}"
    );
}

/// Open flows per server, service and rule, as `flowgate run`'s management loop sums
/// them (one worker here).
fn open(w: &Worker) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
    let s = &w.stats;
    (
        s.server_flows.clone(),
        s.svc_open.clone(),
        s.rule_open.clone(),
    )
}

/// [`Pipeline::reclaim`] with `w`'s open flows.
fn reclaim(p: &Pipeline, w: &Worker) -> Option<(Pipeline, flowgate::config::Freed)> {
    let (servers, services, rules) = open(w);
    p.reclaim(&flowgate::config::OpenFlows {
        servers: &servers,
        services: &services,
        rules: &rules,
    })
}

/// What a reload removed is kept while flows use it and freed when the last one ends:
/// a removed member once its server carries no flow, the server once no member names it,
/// a retired service and a removed rule once no flow of theirs is open. The worker takes
/// the pipeline with the free indices, the stats leave the freed names out, and the next
/// reload's new entries take the free indices, with counters from zero.
#[test]
fn removed_entries_are_freed_when_their_last_flow_ends() {
    let old = load(&format!("{HTTP}{DNS}"));
    let mut w = Worker::new(Arc::new(Tables::build(old.clone(), 1)));
    let http = [203, 0, 113, 10];
    let mut on_b = Vec::new();
    for sp in 1000..1100u16 {
        if send(&mut w, &old, &tcp(sp, http, 80, 0x02), 1_000) == "b" {
            on_b.push(sp);
        }
    }
    assert!(on_b.len() > 20, "b takes about half: {}", on_b.len());
    let dns = |sp: u16| {
        use flowgate::r#gen::frame::{UDP, udp};
        frame(sp, [203, 0, 113, 53], UDP, |f| udp(f, sp, 53))
    };
    assert_eq!(send(&mut w, &old, &dns(3000), 1_000), "d");
    assert_eq!(
        send(&mut w, &old, &udp(4000, 5060), 1_000),
        "gateway",
        "voice"
    );
    // The file loses `b`, `dns` (and with it `d`) and the rule `voice`.
    let text = format!("{HEAD}{HTTP}")
        .replace("      - { name: b, mac: \"02:00:00:00:01:02\" }\n", "")
        .replace(
            "  - { name: voice, match: { proto: udp, dst_port: 5060 }, to: gateway }\n",
            "",
        )
        .replace("flows:\n", "");
    let g = old.regrow(load_text(&text)).expect("removals are kept");
    assert!(g.keeps_removed());
    w.set_tables(Arc::new(Tables::build(g.clone(), 2)))
        .expect("taken");
    assert!(
        reclaim(&g, &w).is_none(),
        "every kept entry still has flows"
    );
    // b's flows move on their next packet: b's member and then b are free.
    for &sp in &on_b {
        let to = send(&mut w, &g, &tcp(sp, http, 80, 0x10), 2_000);
        assert_eq!(to, "a", "flow {sp} left b");
    }
    let (r1, freed) = reclaim(&g, &w).expect("b freed");
    assert_eq!(freed.members, [("http".to_string(), "b".to_string())]);
    assert_eq!(freed.servers, ["b"]);
    assert!(
        freed.services.is_empty() && freed.rules.is_empty(),
        "{freed:?}"
    );
    assert_eq!(
        freed.to_string(),
        "servers [\"b\"], members [\"http\"/\"b\"]"
    );
    let b = usize::from(old.server_index("b").unwrap());
    assert!(r1.servers[b].vacant() && r1.services[0].members[1].vacant());
    assert!(g.grows_into(&r1));
    let mut other = r1.clone();
    other.servers[0].name = "z".into();
    assert!(!r1.grows_into(&other), "a live server's index is its own");
    w.set_tables(Arc::new(Tables::build(r1.clone(), 3)))
        .expect("taken");
    let j = w.stats.to_json(&r1);
    assert!(j["server_flows"].get("b").is_none(), "{j}");
    assert!(j["services"]["http"]["servers"].get("b").is_none(), "{j}");
    assert_eq!(j["services"]["dns"]["open_flows"].as_u64(), Some(1), "{j}");
    assert_eq!(
        j["flow_rules"]["voice"]["open_flows"].as_u64(),
        Some(1),
        "{j}"
    );
    // Idle long enough: the DNS and voice flows expire, and the rest is freed.
    let later = 1_000 + 61 * 1_000_000_000 + 60 * 1_000_000_000 / 16;
    w.expire(later, 1 << 20);
    let (r2, freed) = reclaim(&r1, &w).expect("the rest freed");
    assert_eq!(freed.services, ["dns"]);
    assert_eq!(freed.servers, ["d"]);
    assert_eq!(freed.rules, ["voice"]);
    assert!(!r2.keeps_removed());
    assert!(reclaim(&r2, &w).is_none(), "nothing left to free");
    w.set_tables(Arc::new(Tables::build(r2.clone(), 4)))
        .expect("taken");
    let j = w.stats.to_json(&r2);
    assert!(
        j["services"].get("dns").is_none() && j["flow_rules"].get("voice").is_none(),
        "{j}"
    );
    // The next reload: a new service with a new server, a new rule, a new member of
    // `http`: each takes a free index, with fresh counters, and works.
    let ntp = "flows:\n  - { name: ntp, match: { proto: udp, dst_port: 123 }, to: gateway }\n";
    let api = "  - name: api\n    vip: 203.0.113.20\n    proto: tcp\n    ports: [8080]\n    servers:\n      - { name: e, mac: \"02:00:00:00:04:01\" }\n";
    let http_e = HTTP.replace(
        "name: b, mac: \"02:00:00:00:01:02\"",
        "name: e, mac: \"02:00:00:00:04:01\"",
    );
    let text = format!(
        "{}{http_e}{api}",
        HEAD.replace(
            "flows:\n  - { name: voice, match: { proto: udp, dst_port: 5060 }, to: gateway }\n",
            ntp
        )
    );
    let g2 = r2.regrow(load_text(&text)).expect("grows");
    assert_eq!(names(&g2), ["a", "e", ""]);
    assert_eq!(g2.servers.len(), old.servers.len(), "no index added");
    assert_eq!(g2.services[1].name, "api");
    assert_eq!(g2.flow_rules[0].name, "ntp");
    assert_eq!(
        g2.services[0].members[1].server, 1,
        "e took b's member index"
    );
    w.set_tables(Arc::new(Tables::build(g2.clone(), 5)))
        .expect("taken");
    assert_eq!(
        send(
            &mut w,
            &g2,
            &tcp(5000, [203, 0, 113, 20], 8080, 0x02),
            6_000
        ),
        "e"
    );
    assert_eq!(send(&mut w, &g2, &udp(5001, 123), 6_000), "gateway");
    let j = w.stats.to_json(&g2);
    assert_eq!(j["services"]["api"]["packets"].as_u64(), Some(1), "{j}");
    assert_eq!(j["services"]["api"]["flows"].as_u64(), Some(1), "{j}");
    assert_eq!(j["flow_rules"]["ntp"]["flows"].as_u64(), Some(1), "{j}");
    assert_eq!(j["flow_rules"]["ntp"]["packets"].as_u64(), Some(1), "{j}");
    assert_eq!(j["server_flows"]["e"].as_u64(), Some(1), "{j}");
    assert_eq!(
        j["services"]["http"]["servers"]["e"].as_u64(),
        Some(0),
        "{j}"
    );
}

/// `regrow_with` gives a free index to a new entry only where allowed (`flowgate run`:
/// where every worker's counters read zero); elsewhere the new entry follows.
#[test]
fn a_free_index_is_taken_only_where_allowed() {
    let old = load(&format!("{HTTP}{DNS}"));
    let no_dns = load(HTTP);
    let g = old.regrow(no_dns).expect("kept");
    let zero = flowgate::config::OpenFlows {
        servers: &[0; 3],
        services: &[0; 2],
        rules: &[0; 1],
    };
    let (r, _) = g.reclaim(&zero).expect("dns and d freed");
    let api = "  - name: api\n    vip: 203.0.113.20\n    proto: tcp\n    ports: [8080]\n    servers:\n      - { name: e, mac: \"02:00:00:00:04:01\" }\n";
    let new = load(&format!("{HTTP}{api}"));
    let held = r.regrow_with(new.clone(), |_| false).expect("grows");
    assert_eq!(names(&held), ["a", "b", "", "e"]);
    assert_eq!(held.services[2].name, "api");
    let took = r
        .regrow_with(new, |e| e == flowgate::config::Entry::Server(2))
        .expect("grows");
    assert_eq!(names(&took), ["a", "b", "e"]);
    assert_eq!(took.services.len(), 3, "the service index was not allowed");
}

/// Every server index's open flows on `board` are `w`'s (its only worker), at reload `k`.
fn on_the_board(w: &Worker, board: &flowgate::pipeline::gauges::ServerFlows, k: u32) {
    for (i, &open) in w.stats.server_flows.iter().enumerate() {
        let i = u16::try_from(i).expect("a u16 index");
        assert_eq!(board.total(i), open, "server index {i} at reload {k}");
    }
}

/// Servers that come and go through hundreds of reloads (a rolling replacement, each new
/// server taking flows before the old one's end) keep the pipeline as large as the
/// servers alive at once, not as all the servers ever named.
#[test]
fn servers_that_come_and_go_keep_the_pipeline_bounded() {
    let file = |k: u32| {
        let srv = |k: u32| {
            format!(
                "      - {{ name: s{k}, mac: \"02:00:00:00:{:02x}:{:02x}\" }}\n",
                k >> 8,
                k & 0xff
            )
        };
        load_text(&format!(
            "{HEAD}  - name: http\n    vip: 203.0.113.10\n    proto: tcp\n    ports: [80]\n    servers:\n{}{}",
            srv(k),
            srv(k + 1)
        ))
    };
    let mut p = file(0);
    let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
    // The worker publishes its open flows per server as `flowgate run`'s workers do:
    // the board must follow its gauges through every creation, expiry, reload and
    // reclaim (a freed index reads 0 before a new server takes it).
    let board = flowgate::pipeline::gauges::ServerFlows::new(1);
    w.set_server_flows(board.row(0).expect("row 0"));
    let mut g = 1;
    let mut now = 1_000u64;
    let mut most = 0;
    for k in 1..300u32 {
        // New connections on the current servers.
        for sp in 0..4u16 {
            let to = send(
                &mut w,
                &p,
                &tcp(sp + (k as u16 % 8) * 4, [203, 0, 113, 10], 80, 0x02),
                now,
            );
            assert!(
                to == format!("s{k}") || to == format!("s{}", k - 1),
                "{to} at reload {k}"
            );
        }
        assert!(w.stats.server_flows.iter().any(|&n| n > 0), "flows open");
        on_the_board(&w, &board, k);
        // s(k-1) leaves the file, s(k+1) joins.
        p = p.regrow(file(k)).expect("taken");
        g += 1;
        w.set_tables(Arc::new(Tables::build(p.clone(), g)))
            .expect("taken");
        // Time passes: connections older than the SYN timeout end.
        now += 11_000_000_000;
        w.expire(now, 1 << 20);
        if let Some((r, _)) = reclaim(&p, &w) {
            p = r;
            g += 1;
            w.set_tables(Arc::new(Tables::build(p.clone(), g)))
                .expect("taken");
        }
        most = most.max(p.servers.len());
        on_the_board(&w, &board, k);
    }
    assert!(
        most <= 4,
        "at most {most} server indices for 2 live at a time"
    );
    assert!(
        p.services[0].members.len() <= 4,
        "{:?}",
        p.services[0].members
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// Any sequence of files, each reload followed or not by a reclaim with no flow
    /// open: every step grows the running pipeline (a worker takes it), ranks and places
    /// as the file does, and a reclaim leaves exactly the file's servers, services,
    /// members and rules named (free indices are named by no member, rule or order).
    #[test]
    fn reloads_and_reclaims_of_any_files(
        files in proptest::collection::vec((services(), rules(), proptest::bool::ANY), 1..6)
    ) {
        let mut p = universe_rules(&[(0, vec![0, 1])], &[(0, 0)]);
        let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
        let mut g = 1;
        for (svc, rl, free) in files {
            let file = universe_rules(&svc, &rl);
            let next = p.regrow(file.clone());
            proptest::prop_assert!(next.is_ok(), "{:?}", next.as_ref().err());
            let next = next.unwrap();
            proptest::prop_assert!(p.grows_into(&next));
            same_choices(&next, &file);
            let order: Vec<&str> = next.rule_order.iter().map(|&i| next.flow_rules[usize::from(i)].name.as_str()).collect();
            let want: Vec<&str> = file.flow_rules.iter().map(|r| r.name.as_str()).collect();
            proptest::prop_assert_eq!(order, want);
            g += 1;
            proptest::prop_assert!(w.set_tables(Arc::new(Tables::build(next.clone(), g))).is_ok());
            syns_reach_the_files_servers(&mut w, &next, &file, 1000 + g as u16);
            p = next;
            if !free {
                continue;
            }
            let zero = [0u64; 64];
            let open = flowgate::config::OpenFlows { servers: &zero, services: &zero, rules: &zero };
            if let Some((r, _)) = p.reclaim(&open) {
                proptest::prop_assert!(p.grows_into(&r));
                proptest::prop_assert!(!r.keeps_removed());
                let live = |v: &mut dyn Iterator<Item = &str>| {
                    let mut v: Vec<String> = v.filter(|n| !n.is_empty()).map(str::to_string).collect();
                    v.sort();
                    v
                };
                proptest::prop_assert_eq!(
                    live(&mut r.servers.iter().map(|s| s.name.as_str())),
                    live(&mut file.servers.iter().map(|s| s.name.as_str()))
                );
                proptest::prop_assert_eq!(
                    live(&mut r.services.iter().map(|s| s.name.as_str())),
                    live(&mut file.services.iter().map(|s| s.name.as_str()))
                );
                proptest::prop_assert_eq!(
                    live(&mut r.flow_rules.iter().map(|s| s.name.as_str())),
                    live(&mut file.flow_rules.iter().map(|s| s.name.as_str()))
                );
                for s in &r.services {
                    proptest::prop_assert_eq!(s.live_members(), s.member_order.len(), "{}", s.name);
                    for m in s.members.iter().filter(|m| !m.vacant()) {
                        proptest::prop_assert!(!r.servers[usize::from(m.server)].vacant());
                    }
                }
                same_choices(&r, &file);
                g += 1;
                proptest::prop_assert!(w.set_tables(Arc::new(Tables::build(r.clone(), g))).is_ok());
                syns_reach_the_files_servers(&mut w, &r, &file, 1000 + g as u16);
                p = r;
            }
        }
    }
}

/// `policy: least-flows` over a service whose member a reload removed and a reclaim
/// freed: new flows go to the members left (a free member index names no server).
#[test]
fn least_flows_places_beside_a_freed_member() {
    let lf = HTTP.replace(
        "    ports: [80]\n",
        "    ports: [80]\n    policy: least-flows\n",
    );
    let old = load(&lf);
    let mut w = Worker::new(Arc::new(Tables::build(old.clone(), 1)));
    let http = [203, 0, 113, 10];
    let text =
        format!("{HEAD}{lf}").replace("      - { name: b, mac: \"02:00:00:00:01:02\" }\n", "");
    let g = old.regrow(load_text(&text)).expect("removals are kept");
    w.set_tables(Arc::new(Tables::build(g.clone(), 2)))
        .expect("taken");
    let (r, freed) = reclaim(&g, &w).expect("b freed");
    assert_eq!(freed.servers, ["b"]);
    assert!(r.services[0].members[1].vacant());
    w.set_tables(Arc::new(Tables::build(r.clone(), 3)))
        .expect("taken");
    for sp in 1000..1010u16 {
        assert_eq!(send(&mut w, &r, &tcp(sp, http, 80, 0x02), 1_000), "a");
    }
}

/// A reload that makes a server a backup (or a primary again) takes effect for new
/// flows at once; the flows already open on it stay.
#[test]
fn a_reload_turns_a_server_into_a_backup_and_back() {
    let old = load(HTTP);
    let mut w = Worker::new(Arc::new(Tables::build(old.clone(), 1)));
    let http = [203, 0, 113, 10];
    let on_b: Vec<u16> = (1000..1100u16)
        .filter(|&sp| send(&mut w, &old, &tcp(sp, http, 80, 0x02), 1_000) == "b")
        .collect();
    assert!(on_b.len() > 20, "{}", on_b.len());
    let text = format!("{HEAD}{HTTP}").replace(
        "{ name: b, mac: \"02:00:00:00:01:02\" }",
        "{ name: b, mac: \"02:00:00:00:01:02\", backup: true }",
    );
    let g = old.regrow(load_text(&text)).expect("taken");
    assert!(g.services[0].members[1].backup);
    w.set_tables(Arc::new(Tables::build(g.clone(), 2)))
        .expect("taken");
    for sp in 2000..2100u16 {
        assert_eq!(send(&mut w, &g, &tcp(sp, http, 80, 0x02), 2_000), "a");
    }
    for &sp in &on_b {
        assert_eq!(
            send(&mut w, &g, &tcp(sp, http, 80, 0x10), 2_000),
            "b",
            "open flow {sp}"
        );
    }
    // And back: b takes new flows again.
    let back = g.regrow(old.clone()).expect("taken");
    w.set_tables(Arc::new(Tables::build(back.clone(), 3)))
        .expect("taken");
    let n = (3000..3100u16)
        .filter(|&sp| send(&mut w, &back, &tcp(sp, http, 80, 0x02), 3_000) == "b")
        .count();
    assert!(n > 20, "{n}");
}
