//! Human-readable renderings shared by `check`, `replay` and `--trace`.

use crate::classify::Decision;
use crate::config::{Mac, Pipeline, QosActions, Target};
use crate::pipeline::{Kind, Outcome, Tables};
use std::fmt::Write as _;

/// `02:00:00:00:00:01`.
pub fn mac(m: &Mac) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// `dscp=46 pcp=5 push_vlan=100/pcp5/0x8100 …`, or `-`.
pub fn qos(q: &QosActions) -> String {
    let mut s = String::new();
    let mut add = |t: String| {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(&t);
    };
    if q.pop_mpls {
        add("pop_mpls".into());
    }
    if let Some(l) = q.swap_mpls {
        add(format!("swap_mpls={l}"));
    }
    if q.pop_vlan {
        add("pop_vlan".into());
    }
    if let Some(v) = q.set_vlan {
        add(format!("set_vlan={v}"));
    }
    if let Some((tpid, vid, pcp)) = q.push_vlan {
        add(format!("push_vlan={vid}/pcp{pcp}/{tpid:#06x}"));
    }
    if let Some(p) = q.pcp {
        add(format!("pcp={p}"));
    }
    if let Some((l, tc, ttl)) = q.push_mpls {
        add(format!("push_mpls={l}/tc{tc}/ttl{ttl}"));
    }
    if let Some(d) = q.dscp {
        add(format!("dscp={d}"));
    }
    if s.is_empty() { "-".into() } else { s }
}

/// The target in words.
pub fn target(p: &Pipeline, t: Target) -> String {
    match t {
        Target::Server(i) => p.servers[i as usize].name.clone(),
        Target::Gateway => "gateway".into(),
        Target::Drop => "drop".into(),
    }
}

/// One `--trace` line for packet number `n`.
pub fn trace_line(t: &Tables, n: u64, len: usize, o: &Outcome) -> String {
    let p = &t.pipeline;
    let mut s = format!("{n} len={len} ");
    let kind = match o.kind {
        Kind::Early => "early",
        Kind::NewFlow => "new-flow",
        Kind::Flow { reverse: false } => "flow",
        Kind::Flow { reverse: true } => "flow-reverse",
        Kind::Fragment => "fragment",
        Kind::Stateless => "stateless",
        Kind::Reply => "reply",
    };
    s.push_str(kind);
    match o.decision {
        Some(Decision::Service(i)) => {
            let _ = write!(s, " match=service:{}", p.services[i as usize].name);
        }
        Some(Decision::FlowRule(i)) => {
            let _ = write!(s, " match=rule:{}", p.flow_rules[i as usize].name);
        }
        Some(Decision::NoMatch) => s.push_str(" match=none"),
        None => {}
    }
    if let Some(r) = o.route {
        if r.svc != u16::MAX {
            let _ = write!(s, " service={}", p.services[r.svc as usize].name);
        }
        if r.rule != u16::MAX {
            let _ = write!(s, " rule={}", p.flow_rules[r.rule as usize].name);
        }
        let to = if r.server != u16::MAX {
            format!("server:{}", p.servers[r.server as usize].name)
        } else if r.mac == p.gateway_mac {
            "gateway".into()
        } else {
            mac(&r.mac)
        };
        let q = t.qos(r.qos);
        let _ = write!(
            s,
            " -> {to} port={} dst_mac={} actions=[{}]",
            r.port,
            mac(&r.mac),
            qos(q)
        );
    }
    if let Some(d) = o.drop {
        let _ = write!(s, " -> drop reason={}", d.as_str());
    }
    s
}
