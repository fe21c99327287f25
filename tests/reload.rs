//! A reloaded pipeline that grows (servers, services and members added after the existing
//! ones) replaces the running one under live flows: open flows keep their servers, new
//! ones use the new servers, counters carry on and grow. Anything that would change what
//! a flow or a counter points at is refused, with the reason, and the old tables stay.

use flowgate::action::{FrameBuf, PacketBuf};
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
    Pipeline::from_str(&format!("{HEAD}{services}"), Path::new("p.yaml")).expect("valid")
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

fn names(p: &Pipeline) -> Vec<&str> {
    p.servers.iter().map(|s| s.name.as_str()).collect()
}

#[test]
fn regrow_keeps_indices_and_refuses_what_would_move_them() {
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

    let refused = |services: String, why: &str| {
        let e = old.regrow(load(&services)).expect_err(why);
        assert!(e.contains(why), "{e}");
    };
    // Services reordered, a new one put before a running one, a server put before the
    // running ones of a service.
    refused(
        format!("{DNS}{HTTP}"),
        "moved before another running service",
    );
    let api = DNS
        .replace("dns", "api")
        .replace("203.0.113.53", "203.0.113.54");
    refused(
        format!("{api}{HTTP}{DNS}"),
        "new service \"api\" comes before",
    );
    let c_first = HTTP.replace(
        "    servers:\n",
        "    servers:\n      - { name: c, mac: \"02:00:00:00:01:03\" }\n",
    );
    refused(
        format!("{c_first}{DNS}"),
        "new servers may only follow them",
    );
    let swapped = HTTP.replace(
        "      - { name: a, mac: \"02:00:00:00:01:01\" }\n      - { name: b, mac: \"02:00:00:00:01:02\" }\n",
        "      - { name: b, mac: \"02:00:00:00:01:02\" }\n      - { name: a, mac: \"02:00:00:00:01:01\" }\n",
    );
    refused(format!("{swapped}{DNS}"), "were reordered");
    // Pattern rules and ports: their indices are in flows and counters.
    let p = Pipeline::from_str(
        &format!("{}{HTTP}{DNS}", HEAD.replace("voice", "sip")),
        Path::new("p.yaml"),
    )
    .unwrap();
    assert!(old.regrow(p).unwrap_err().contains("pattern rules"));
}

/// A reload may change the flow table's timeouts: the flows already open take them (it
/// used to be taken and ignored: the running table kept its old timeouts while the
/// tables said otherwise). What the table was built with stays: its size, and its
/// timeout classes (how many distinct idle timeouts, and which rules share one), so a
/// reload that would change those is refused with the reason.
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
    w.expire(400 * S, usize::MAX);
    assert_eq!(w.flow_count(), 1, "still open after 400 s");
    w.expire(3590 * S, usize::MAX);
    assert_eq!(w.flow_count(), 1);
    // (A timeout of 3600 s has windows of 225 s: seen in [0, 225), gone at 3825 s.)
    w.expire(3824 * S, usize::MAX);
    assert_eq!(w.flow_count(), 1);
    w.expire(3825 * S, usize::MAX);
    assert_eq!(w.flow_count(), 0, "gone after 3600 s idle");
    // Shorter: gone once 30 s have passed, not before.
    let mut w = open();
    let shorter = with(head("flow_table: { tcp_established_timeout: 30 }\n"));
    w.set_tables(Arc::new(Tables::build(old.regrow(shorter).unwrap(), 2)))
        .unwrap();
    w.expire(25 * S, usize::MAX);
    assert_eq!(w.flow_count(), 1);
    w.expire(40 * S, usize::MAX);
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
    // A rule taking a value of its own: one class more. Refused.
    let e = old.regrow(idle("", ", idle_timeout: 30")).unwrap_err();
    assert!(
        e.contains("2 distinct values") && e.contains("(were 1)"),
        "{e}"
    );
    let mut w = open();
    assert!(
        w.set_tables(Arc::new(Tables::build(idle("", ", idle_timeout: 30"), 3)))
            .is_err()
    );
    // A table built with the rule on its own value may move that value...
    let own = idle("", ", idle_timeout: 30");
    assert!(own.regrow(idle("", ", idle_timeout: 90")).is_ok());
    // ... and swap values with flow_table's (each class takes the other's value)...
    assert!(
        own.regrow(idle(
            "flow_table: { idle_timeout: 30 }\n",
            ", idle_timeout: 60"
        ))
        .is_ok()
    );
    // ... but not join the default class.
    let e = own.regrow(idle("", ", idle_timeout: 60")).unwrap_err();
    assert!(e.contains("1 distinct values"), "{e}");
    // Two rules sharing a value may not part (the same number of values, other classes).
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
    let e = two(30, 30).regrow(two(30, 60)).unwrap_err();
    assert!(
        e.contains("flow rule \"rtp\": idle_timeout 60 s would move it"),
        "{e}"
    );
    assert!(two(30, 30).regrow(two(45, 45)).is_ok());
    // The size: refused.
    let bigger = with(head("flow_table: { capacity: 4096 }\n"));
    let e = old.regrow(bigger.clone()).unwrap_err();
    assert!(e.contains("capacity changed (1048576 to 4096)"), "{e}");
    assert!(!old.grows_into(&bigger));
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

/// A TCP frame from client port `sp` (and an address derived from it) to `vip`:`dp`,
/// flags `flags`: the capture generator's frame builder, checksums filled.
fn tcp(sp: u16, vip: [u8; 4], dp: u16, flags: u8) -> Vec<u8> {
    use flowgate::r#gen::frame;
    let client = std::net::Ipv4Addr::new(198, 51, 100, (sp % 200) as u8 + 1);
    let mut f = Vec::new();
    let lay = frame::begin(
        &mut f,
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 0, 0xfe],
        &frame::Tags::NONE,
        client.into(),
        std::net::Ipv4Addr::from(vip).into(),
        frame::TCP,
        sp,
    );
    frame::tcp(&mut f, sp, dp, 1, 0, flags);
    frame::finish(&mut f, lay);
    f
}

/// Runs `f` through `w`; the server it went to (by destination MAC).
fn send(w: &mut Worker, p: &Pipeline, f: &[u8], now: u64) -> String {
    let mut b = FrameBuf::new(256);
    assert!(b.load(f));
    let o = w.process(&mut b, 0, now);
    assert!(o.route.is_some(), "{o:?}");
    let mac = &b.data()[..6];
    p.servers
        .iter()
        .find(|s| s.mac == mac)
        .map(|s| s.name.clone())
        .unwrap_or_else(|| format!("{mac:02x?}"))
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
    let mut y = String::new();
    for (k, members) in services {
        y += &format!(
            "  - name: svc{k}\n    vip: 203.0.113.{}\n    proto: tcp\n    ports: [80]\n    servers:\n",
            100 + k
        );
        for m in members {
            y += &format!("      - {{ name: s{m}, mac: \"02:00:00:00:09:0{m}\" }}\n");
        }
    }
    load(&y)
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

    /// Whatever two files are, regrow never panics, and what it accepts keeps every
    /// index of the running pipeline and offers every service and member of the file.
    #[test]
    fn regrow_of_any_two_files(a in services(), b in services()) {
        let (old, new) = (universe(&a), universe(&b));
        if let Ok(g) = old.regrow(new.clone()) {
            proptest::prop_assert!(old.grows_into(&g));
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
