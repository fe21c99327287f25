//! Any bytes through the whole packet path — parse, flow lookup, classify, rewrite — with
//! a pipeline that rewrites every IP frame: no panic, and every frame is either forwarded
//! or counted as one drop.
#![no_main]

use flowgate::action::FrameBuf;
use flowgate::config::Pipeline;
use flowgate::pipeline::{Tables, Worker};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;

const PIPELINE: &str = r#"
system: { mac: "02:00:00:00:00:01", addresses: [192.0.2.1, "2001:db8::1"], gateway: "02:00:00:00:00:fe" }
services:
  - { name: web, vip: 192.0.2.10, proto: tcp, ports: [80], qos: { dscp: af41, pcp: 3 },
      servers: [ { name: a, mac: "02:00:00:00:01:01" }, { name: b, mac: "02:00:00:00:01:02" } ] }
flows:
  - { name: v4, match: { ethertype: ipv4 }, to: gateway, qos: { pop_vlan: true, push_mpls: { label: 7 }, dscp: ef } }
  - { name: v6, match: { ethertype: ipv6 }, to: gateway, qos: { push_vlan: { vid: 9, tpid: 0x88a8 }, dscp: cs3 } }
  - { name: mpls, match: { ethertype: mpls }, to: gateway, qos: { pop_mpls: true, swap_mpls: { label: 5 } } }
flow_table: { capacity: 1024 }
"#;

thread_local! {
    static W: RefCell<(Worker, FrameBuf, u64)> = RefCell::new((
        Worker::new(Arc::new(Tables::build(
            Pipeline::from_str(PIPELINE, Path::new("fuzz.yaml")).expect("pipeline"),
            1,
        ))),
        FrameBuf::new(65535),
        0,
    ));
}

fuzz_target!(|data: &[u8]| {
    W.with(|w| {
        let (w, buf, now) = &mut *w.borrow_mut();
        *now += 1_000_000;
        if !buf.load(data) {
            return;
        }
        let before = (w.stats.packets_in, w.stats.packets_out, w.stats.dropped());
        let o = w.process(buf, 0, *now);
        assert!(o.route.is_some() != o.drop.is_some());
        let after = (w.stats.packets_in, w.stats.packets_out, w.stats.dropped());
        assert_eq!(after.0, before.0 + 1);
        assert_eq!(after.1 + after.2, before.1 + before.2 + 1);
    });
});
