//! Listing live flows: which connection sits on which server, in what state, idle for how
//! long — what `ipvsadm -Lnc` or `conntrack -L` show an operator.
//!
//! Layer: `pipeline`, read-only over a [`Worker`]'s flow table. [`Worker::list_flows`]
//! walks the table in bounded steps (slot order, like the sweep), copying the flows a
//! [`FlowFilter`] accepts into a [`Listing`] whose limit the caller sets: it never
//! allocates, so `flowgate run` lets a worker do it between two bursts while the
//! management side waits. Names are resolved afterwards, away from the worker, by
//! [`Listing::to_json`]. Served by `flowgate run` at `GET /flows` on `stats.prometheus`,
//! written by `flowgate replay --flows`, shown by `flowgate flows`.
//!
//! Each flow is shown in its creating direction (`src` sent the packet that created it),
//! with the service or rule that owns it, where that direction goes (`to`), its TCP
//! state, whether it was replied to and is assured (see [`crate::flow`]), how long it
//! has been idle and how long it has left before it expires if nothing is seen.

use super::Worker;
use crate::config::{Pipeline, Target};
use crate::flow::{Flow, FlowKey, Owner, TcpState};
use crate::wire::ipv4::proto;
use serde_json::{Value, json};

/// Most flows one listing returns unless asked for another limit.
pub const DEFAULT_LIMIT: usize = 10_000;
/// Most flows one listing may return (per worker in `flowgate run`).
pub const MAX_LIMIT: usize = 1 << 20;

/// Which flows a listing shows: each field that is set must match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    /// Where the creating direction goes.
    pub to: Option<Target>,
    /// The owning service (index).
    pub service: Option<u16>,
    /// The owning pattern rule (index).
    pub rule: Option<u16>,
    /// An address of either end (IPv4 as mapped IPv6).
    pub addr: Option<[u8; 16]>,
    /// A port of either end (not for ESP, whose key holds the SPI).
    pub port: Option<u16>,
    pub proto: Option<u8>,
    pub assured: Option<bool>,
}

impl FlowFilter {
    /// Parses a URL query (`to=web1&service=http&addr=198.51.100.7&port=80&proto=tcp&
    /// assured=true&limit=100`, percent-encoding allowed) against `p`'s names; returns
    /// the filter and the limit, if one was given. Unknown keys, names and malformed
    /// values are errors that say which.
    pub fn parse(query: &str, p: &Pipeline) -> Result<(FlowFilter, Option<usize>), String> {
        let mut f = FlowFilter::default();
        let mut limit = None;
        for pair in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v).ok_or_else(|| format!("{k}: bad percent-encoding"))?;
            let v = v.as_str();
            match k {
                "to" => {
                    f.to = Some(match v {
                        "gateway" => Target::Gateway,
                        "drop" => Target::Drop,
                        name => Target::Server(
                            (p.servers.iter().position(|s| s.name == name))
                                .ok_or_else(|| format!("to: no server named {name:?}"))?
                                as u16,
                        ),
                    })
                }
                "service" => {
                    let i = (p.services.iter().position(|s| s.name == v))
                        .ok_or_else(|| format!("service: no service named {v:?}"))?;
                    f.service = Some(i as u16);
                }
                "rule" => {
                    let i = (p.flow_rules.iter().position(|r| r.name == v))
                        .ok_or_else(|| format!("rule: no flow rule named {v:?}"))?;
                    f.rule = Some(i as u16);
                }
                "addr" => {
                    let a: std::net::IpAddr = v
                        .parse()
                        .map_err(|_| format!("addr: {v:?} is not an IP address"))?;
                    f.addr = Some(match a {
                        std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                        std::net::IpAddr::V6(a) => a.octets(),
                    });
                }
                "port" => {
                    f.port = Some(
                        v.parse()
                            .map_err(|_| format!("port: {v:?} is not a port"))?,
                    )
                }
                "proto" => {
                    f.proto = Some(
                        crate::config::parse_proto(v)
                            .filter(|&n| n != 0)
                            .ok_or_else(|| format!("proto: {v:?} is not an IP protocol"))?,
                    )
                }
                "assured" => {
                    f.assured = Some(match v {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" => false,
                        _ => return Err(format!("assured: {v:?} is not true or false")),
                    })
                }
                "limit" => {
                    limit = Some(
                        v.parse()
                            .ok()
                            .filter(|n| (1..=MAX_LIMIT).contains(n))
                            .ok_or_else(|| {
                                format!("limit: {v:?} is not a number in 1..={MAX_LIMIT}")
                            })?,
                    )
                }
                _ => {
                    return Err(format!(
                        "unknown key {k:?} (to, service, rule, addr, port, proto, assured, limit)"
                    ));
                }
            }
        }
        Ok((f, limit))
    }

    /// Whether flow `f` (key `k`) passes.
    pub fn accepts(&self, k: &FlowKey, f: &Flow) -> bool {
        self.to.is_none_or(|t| t == f.target)
            && self.service.is_none_or(|s| f.owner == Owner::Service(s))
            && self.rule.is_none_or(|r| f.owner == Owner::Rule(r))
            && self.addr.is_none_or(|a| k.a == a || k.b == a)
            && self
                .port
                .is_none_or(|p| k.proto != proto::ESP && (k.pa == p || k.pb == p))
            && self.proto.is_none_or(|p| k.proto == p)
            && self.assured.is_none_or(|a| f.assured() == a)
    }
}

/// `%XX` and `+` decoded; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = b.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// One listed flow, as the worker's table holds it (names are resolved later).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlowRecord {
    pub key: FlowKey,
    pub flow: Flow,
    /// Time since it was last seen, and its class's timeout (ns).
    pub idle_ns: u64,
    pub timeout_ns: u64,
    /// The worker whose table holds it.
    pub worker: u16,
}

/// Flows a filter accepted: at most the limit the caller gave, and how many matched.
#[derive(Debug, Default)]
pub struct Listing {
    pub records: Vec<FlowRecord>,
    /// Flows that matched, listed or not (the records stop at `limit`).
    pub matched: u64,
    /// Most records it takes (no more than the room allocated for them).
    limit: usize,
}

impl Listing {
    /// An empty listing with room for `limit` flows (allocated here, once).
    pub fn with_limit(limit: usize) -> Listing {
        Listing {
            records: Vec::with_capacity(limit),
            matched: 0,
            limit,
        }
    }

    /// Empties it, keeping its room.
    pub fn clear(&mut self) {
        self.records.clear();
        self.matched = 0;
    }

    /// Adds `other`'s flows while there is room, and its match count.
    pub fn absorb(&mut self, other: &Listing) {
        let room = self.limit.saturating_sub(self.records.len());
        (self.records).extend(other.records.iter().take(room).copied());
        self.matched += other.matched;
    }

    /// The JSON a listing is served and written as: `matched`, `listed`, and `flows`, one
    /// object per flow (see the module docs) with names from `p`.
    pub fn to_json(&self, p: &Pipeline) -> Value {
        json!({
            "matched": self.matched,
            "listed": self.records.len(),
            "flows": self.records.iter().map(|r| r.to_json(p)).collect::<Vec<_>>(),
        })
    }
}

/// An IP address as the key holds it (IPv4 mapped), shown as the packet had it.
fn ip(a: &[u8; 16]) -> std::net::IpAddr {
    match super::parse::v4_unmapped(a) {
        Some(v4) => std::net::IpAddr::from(v4),
        None => std::net::IpAddr::from(*a),
    }
}

/// A protocol number's name where it has one, else the number.
pub fn proto_name(n: u8) -> Value {
    crate::config::proto_name(n).map_or(n.into(), Value::from)
}

impl FlowRecord {
    /// The flow as JSON, in its creating direction, with names from `p`.
    pub fn to_json(&self, p: &Pipeline) -> Value {
        let (k, f) = (&self.key, &self.flow);
        let ((src, sp), (dst, dp)) = if f.swapped() {
            ((k.b, k.pb), (k.a, k.pa))
        } else {
            ((k.a, k.pa), (k.b, k.pb))
        };
        let mut o = json!({
            "proto": proto_name(k.proto),
            "src": ip(&src).to_string(),
            "dst": ip(&dst).to_string(),
        });
        let m = o.as_object_mut().expect("an object");
        if k.proto == proto::ESP {
            m.insert(
                "spi".into(),
                format!("0x{:08x}", super::meta::esp_spi(sp, dp)).into(),
            );
        } else {
            m.insert("src_port".into(), sp.into());
            m.insert("dst_port".into(), dp.into());
        }
        let name = |v: &Option<&str>| v.map_or(Value::Null, Value::from);
        match f.owner {
            Owner::Service(i) => {
                let n = p.services.get(usize::from(i)).map(|s| s.name.as_str());
                m.insert("service".into(), name(&n));
            }
            Owner::Rule(i) => {
                let n = p.flow_rules.get(usize::from(i)).map(|r| r.name.as_str());
                m.insert("rule".into(), name(&n));
            }
            Owner::Other => {}
        }
        m.insert(
            "to".into(),
            match f.target {
                Target::Server(i) => name(&p.servers.get(usize::from(i)).map(|s| s.name.as_str())),
                Target::Gateway => "gateway".into(),
                Target::Drop => "drop".into(),
            },
        );
        let state = match f.tcp() {
            TcpState::None => None,
            TcpState::Syn => Some("syn"),
            TcpState::Established => Some("established"),
            TcpState::Closing => Some("closing"),
        };
        if let Some(s) = state {
            m.insert("state".into(), s.into());
        }
        m.insert("replied".into(), f.replied().into());
        m.insert("assured".into(), f.assured().into());
        m.insert("idle_ms".into(), (self.idle_ns / 1_000_000).into());
        m.insert(
            "expires_in_ms".into(),
            (self.timeout_ns.saturating_sub(self.idle_ns) / 1_000_000).into(),
        );
        m.insert("worker".into(), self.worker.into());
        o
    }
}

/// Flow-table slots [`Worker::list_flows`] is usually given per step.
pub const LIST_PER_STEP: usize = 1024;

impl Worker {
    /// Goes on listing this worker's flows from slot `from`, at most `max` slots: each
    /// flow `filter` accepts is counted in `out.matched` and, while `out` has room (its
    /// limit, within the room it was made with: this never allocates), copied into it with its idle time at `now`.
    /// Returns the slot to go on from, or `None` when the whole table was visited. While
    /// a resize moves flows the walk must wait, and after one start again
    /// ([`walk_ok`](Worker::walk_ok)): it walks the new table only.
    pub fn list_flows(
        &self,
        from: usize,
        max: usize,
        now: u64,
        filter: &FlowFilter,
        worker: u16,
        out: &mut Listing,
    ) -> Option<usize> {
        self.flows.table.visit(from, max, |k, f, seen, timeout| {
            if filter.accepts(k, f) {
                out.matched += 1;
                if out.records.len() < out.limit {
                    out.records.push(FlowRecord {
                        key: *k,
                        flow: *f,
                        idle_ns: now.saturating_sub(seen),
                        timeout_ns: timeout,
                        worker,
                    });
                }
            }
        })
    }

    /// Whether a walk over the flow table's slots ([`list_flows`](Worker::list_flows))
    /// begun at `resizes` ([`resizes`](Worker::resizes)) can go on now: `Some(true)` as
    /// it is, `Some(false)` from the start (a resize since gave the worker another
    /// table), `None` not yet (flows are moving into a new table, and could pass behind
    /// the walk).
    pub fn walk_ok(&self, resizes: u64) -> Option<bool> {
        (!self.flows.resizing()).then(|| self.flows.resizes() == resizes)
    }

    /// How many times the worker's flow table has been resized.
    pub fn resizes(&self) -> u64 {
        self.flows.resizes()
    }

    /// Every flow `filter` accepts, in one go (at most `limit` listed): for callers
    /// that own the worker outright, such as replay.
    pub fn list_all_flows(&self, now: u64, filter: &FlowFilter, limit: usize) -> Listing {
        let mut out = Listing::with_limit(limit.min(self.flow_count()));
        let mut at = Some(0);
        while let Some(from) = at {
            at = self.list_flows(from, usize::MAX, now, filter, 0, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::{FrameBuf, PacketBuf};
    use crate::r#gen::ack::{Template, frame, handshake};
    use crate::pipeline::Tables;
    use std::path::Path;
    use std::sync::Arc;

    const P: &str = "system: { mac: \"02:00:00:00:00:01\", gateway: \"02:00:00:00:00:fe\" }\nflow_table: { tcp_syn_timeout: 10, tcp_established_timeout: 300 }\nflows:\n  - { name: voice, match: { proto: udp, dst_port: 5060 }, to: gateway }\nservices:\n  - name: s\n    vip: 192.0.2.10\n    proto: tcp\n    ports: [80]\n    servers:\n      - { name: a, mac: \"02:00:00:00:01:01\" }\n      - { name: b, mac: \"02:00:00:00:01:02\" }\n";

    fn pipeline() -> Pipeline {
        Pipeline::from_str(P, Path::new("p.yaml")).unwrap()
    }

    /// `opened` flows with a full handshake and `half` more with a SYN only; returns the
    /// worker and, per flow, the server index its SYN was forwarded to (by the output
    /// frame's destination MAC: what the data path did, not what the table says).
    fn worker(opened: u32, half: u32) -> (Worker, Vec<u16>) {
        let p = pipeline();
        let t = Template::for_pipeline(&p).unwrap();
        let macs: Vec<[u8; 6]> = p.servers.iter().map(|s| s.mac).collect();
        let mut w = Worker::new(Arc::new(Tables::build(p, 1)));
        let mut to = Vec::new();
        let mut b = FrameBuf::new(128);
        let mut send = |w: &mut Worker, f: &[u8]| {
            assert!(b.load(f));
            let o = w.process(&mut b, 0, 1_000_000);
            assert!(o.drop.is_none(), "{o:?}");
            let dst: [u8; 6] = b.data()[..6].try_into().unwrap();
            macs.iter().position(|m| *m == dst)
        };
        for k in 0..opened {
            let mut first = None;
            handshake(k, t, |f, _| {
                let s = send(&mut w, f);
                first = first.or(s);
            });
            to.push(first.expect("the SYN went to a server") as u16);
        }
        for k in opened..opened + half {
            let mut f = [0u8; 60];
            frame(&mut f, k, t, 0x02, false);
            to.push(send(&mut w, &f).expect("a server") as u16);
        }
        (w, to)
    }

    /// The flow of bench client `k` in a listing.
    fn find(l: &Listing, k: u32) -> Option<&FlowRecord> {
        let client = (0x6440_0000u32 | k).to_be_bytes();
        let mapped = std::net::Ipv4Addr::from(client).to_ipv6_mapped().octets();
        l.records
            .iter()
            .find(|r| r.key.a == mapped || r.key.b == mapped)
    }

    #[test]
    fn every_flow_is_listed_with_the_server_its_packets_went_to() {
        let (w, to) = worker(300, 50);
        let p = &w.tables().pipeline;
        let now = 1_000_000 + 2_500_000_000; // 2.5 s after the last packet
        let all = w.list_all_flows(now, &FlowFilter::default(), usize::MAX);
        assert_eq!((all.matched, all.records.len()), (350, 350));
        for (k, &server) in to.iter().enumerate() {
            let r = find(&all, k as u32).unwrap_or_else(|| panic!("flow {k} not listed"));
            assert_eq!(r.flow.target, Target::Server(server), "flow {k}");
            let j = r.to_json(p);
            assert_eq!(j["to"], p.servers[usize::from(server)].name.as_str());
            assert_eq!(j["service"], "s");
            assert_eq!(
                j["src"],
                std::net::Ipv4Addr::from(0x6440_0000u32 | k as u32).to_string()
            );
            assert_eq!(
                (j["src_port"].as_u64(), j["dst_port"].as_u64()),
                (Some(1024), Some(80))
            );
            assert_eq!(j["dst"], "192.0.2.10");
            assert_eq!(j["idle_ms"], 2500);
            let opened = k < 300;
            assert_eq!(j["assured"], opened);
            assert_eq!(j["replied"], opened);
            assert_eq!(j["state"], if opened { "established" } else { "syn" });
            assert_eq!(j["expires_in_ms"], if opened { 297_500 } else { 7_500 });
        }
        // Filters, against what the packets did.
        let count = |q: &str| {
            let (f, _) = FlowFilter::parse(q, p).unwrap();
            w.list_all_flows(now, &f, usize::MAX).matched
        };
        let to_a = to.iter().filter(|&&s| s == 0).count() as u64;
        assert!(to_a > 100 && to_a < 250, "{to_a}");
        assert_eq!(count("to=a"), to_a);
        assert_eq!(count("to=b"), 350 - to_a);
        assert_eq!(count("to=gateway"), 0);
        assert_eq!(count("service=s&assured=false"), 50);
        assert_eq!(count("assured=true&proto=tcp&port=80"), 300);
        assert_eq!(count("rule=voice"), 0);
        assert_eq!(count("proto=udp"), 0);
        assert_eq!(count("addr=100.64.0.7"), 1);
        assert_eq!(
            count("addr=%3A%3Affff%3A100.64.0.7"),
            1,
            "IPv4-mapped is the same"
        );
        assert_eq!(
            count("addr=192.0.2.10&to=b&assured=1"),
            to[..300].iter().filter(|&&s| s == 1).count() as u64
        );
        assert_eq!(count("port=81"), 0);
    }

    #[test]
    fn listing_in_steps_under_a_limit_lists_the_same_flows_and_counts_all() {
        let (w, _) = worker(200, 0);
        let f = FlowFilter::default();
        let all = w.list_all_flows(5, &f, usize::MAX);
        let mut part = Listing::with_limit(20);
        let cap = part.records.capacity();
        let (mut at, mut steps) = (Some(0), 0);
        while let Some(from) = at {
            at = w.list_flows(from, 7, 5, &f, 3, &mut part);
            steps += 1;
        }
        assert_eq!(steps, 200usize.div_ceil(7));
        assert_eq!((part.matched, part.records.len()), (200, 20));
        assert_eq!(part.records.capacity(), cap, "no allocation");
        for (a, b) in part.records.iter().zip(&all.records) {
            assert_eq!((a.key, a.flow, a.worker), (b.key, b.flow, 3));
        }
        // Merging respects the merged listing's limit and sums the counts.
        let mut merged = Listing::with_limit(30);
        merged.absorb(&part);
        merged.absorb(&all);
        assert_eq!((merged.matched, merged.records.len()), (400, 30));
        let j = merged.to_json(&w.tables().pipeline);
        assert_eq!(
            (j["matched"].as_u64(), j["listed"].as_u64()),
            (Some(400), Some(30))
        );
        assert_eq!(j["flows"].as_array().unwrap().len(), 30);
    }

    #[test]
    fn bad_queries_say_what_is_wrong() {
        let p = pipeline();
        let err = |q: &str| FlowFilter::parse(q, &p).unwrap_err();
        assert!(err("to=c").contains("no server named \"c\""));
        assert!(err("service=x").contains("no service named"));
        assert!(err("rule=x").contains("no flow rule named"));
        assert!(err("addr=1.2.3").contains("not an IP address"));
        assert!(err("port=70000").contains("not a port"));
        assert!(err("proto=any").contains("not an IP protocol"));
        assert!(err("assured=maybe").contains("not true or false"));
        assert!(err("limit=0").contains("limit"));
        assert!(err("colour=red").contains("unknown key \"colour\""));
        assert!(err("to=%zz").contains("percent"));
        let (f, limit) = FlowFilter::parse("to=gateway&proto=esp&limit=5&", &p).unwrap();
        assert_eq!(
            (f.to, f.proto, limit),
            (Some(Target::Gateway), Some(proto::ESP), Some(5))
        );
        assert_eq!(
            FlowFilter::parse("", &p).unwrap(),
            (FlowFilter::default(), None)
        );
    }
}
