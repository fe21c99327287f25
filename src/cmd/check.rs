//! `flowgate check`: validate a pipeline and print what it compiles to.

use super::summary::{mac, qos, target};
use crate::config::{Affinity, Forwarding, Pipeline, Service};
use crate::pipeline::Tables;
use hashbrown::HashSet;
use std::fmt::Write as _;

/// The compiled summary of `p` as text.
pub fn render(p: &Pipeline) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "pipeline {}: OK", p.source.display());
    let _ = writeln!(
        s,
        "system mac {} gateway {}{} addresses {:?}",
        mac(&p.mac),
        mac(&p.gateway_mac),
        p.gateway_port
            .map(|i| format!(" (port {})", p.ports[i as usize]))
            .unwrap_or_default(),
        p.addresses
    );
    let from = |v6: bool| {
        p.addresses
            .iter()
            .find(|a| a.is_ipv6() == v6)
            .map_or("none: dropped unanswered".to_string(), |a| {
                format!("from {a}")
            })
    };
    match p.forwarding {
        Forwarding::Switch => {
            let _ = writeln!(s, "mode switch: TTLs and hop limits kept");
        }
        Forwarding::Router => {
            let _ = writeln!(
                s,
                "mode router: TTLs and hop limits lowered by one; expired packets answered \
                 with ICMP Time Exceeded (IPv4 {}, IPv6 {}), at most {} a second per worker",
                from(false),
                from(true),
                p.icmp_rate
            );
        }
    }
    let per_port: Vec<String> = (p.ports.iter().enumerate())
        .filter_map(|(i, n)| Some(format!("{n} {}", p.port_mtu.get(i).copied().flatten()?)))
        .collect();
    match (p.mtu, per_port.is_empty()) {
        (None, true) => {
            let _ = writeln!(s, "mtu: none set (frames leave at any size)");
        }
        (m, _) => {
            let which = match m {
                Some(m) if per_port.is_empty() => format!("mtu {m}"),
                m => format!(
                    "mtu by port: {} (other ports: {})",
                    per_port.join(", "),
                    m.map_or("none".to_string(), |m| m.to_string())
                ),
            };
            let _ = writeln!(
                s,
                "{which}: larger packets cut into fragments (IPv4 without DF) or answered \
                 with Fragmentation Needed / Packet Too Big (IPv4 {}, IPv6 {}), at most {} \
                 ICMP errors a second per worker",
                from(false),
                from(true),
                p.icmp_rate
            );
        }
    }
    let t = Tables::build(p.clone(), 0);
    for (i, svc) in p.services.iter().enumerate().filter(|(_, s)| !s.vacant()) {
        let ports: Vec<String> = svc
            .ports
            .iter()
            .map(|r| {
                if r.lo == r.hi {
                    r.lo.to_string()
                } else {
                    format!("{}-{}", r.lo, r.hi)
                }
            })
            .collect();
        let _ = writeln!(
            s,
            "service {}{} vip {} proto {} ports [{}] policy {:?} affinity {} qos [{}] reply_qos [{}] table {} no_server {}",
            svc.name,
            if svc.retired {
                " (removed: open flows only, until they end)"
            } else {
                ""
            },
            svc.vip,
            svc.proto,
            ports.join(","),
            svc.policy,
            match svc.affinity {
                Affinity::Connection => "connection".to_string(),
                Affinity::Source {
                    v4_prefix,
                    v6_prefix,
                } => format!("source (IPv4 /{v4_prefix}, IPv6 /{v6_prefix})"),
            },
            qos(&svc.qos),
            qos(&svc.reply_qos),
            svc.table_size,
            if svc.reject {
                "reject (ICMP port unreachable from the VIP)"
            } else {
                "drop"
            }
        );
        if !svc.allow.is_empty() {
            let nets: Vec<String> = svc.allow.networks().iter().map(cidr).collect();
            let _ = writeln!(s, "  allow {}", nets.join(", "));
        }
        if let Some(r) = &svc.rate_limit {
            let mut parts = Vec::new();
            if let Some(b) = r.per_source {
                parts.push(format!(
                    "{} new flows a second per client (IPv4 /{}, IPv6 /{}), {} at once",
                    b.rate, r.v4_prefix, r.v6_prefix, b.burst
                ));
            }
            if let Some(b) = r.total {
                parts.push(format!(
                    "{} new flows a second in all, {} at once",
                    b.rate, b.burst
                ));
            }
            let _ = writeln!(s, "  rate_limit {}", parts.join("; "));
        }
        if let Some(c) = &svc.conn_limit {
            let _ = writeln!(
                s,
                "  conn_limit {} open flows per client (IPv4 /{}, IPv6 /{})",
                c.per_source,
                crate::config::ConnLimit::V4_PREFIX,
                crate::config::ConnLimit::V6_PREFIX
            );
        }
        let shares = t.maglev[i].shares(svc.members.len());
        for (j, m) in svc.members.iter().enumerate().filter(|(_, m)| !m.vacant()) {
            let srv = &p.servers[m.server as usize];
            let _ = writeln!(
                s,
                "  server {}{} mac {} weight {} state {:?} share {:.1}%{}",
                srv.name,
                if m.backup { " (backup)" } else { "" },
                mac(&srv.mac),
                m.weight,
                srv.state,
                100.0 * shares[j] as f64 / svc.table_size as f64,
                srv.max_flows
                    .map_or(String::new(), |n| format!(" max_flows {n}"))
                    + &srv.slow_start_ns.map_or(String::new(), |ns| {
                        format!(" slow_start {} s", ns / 1_000_000_000)
                    })
                    + &srv.max_fails.map_or(String::new(), |n| {
                        format!(
                            " max_fails {n} fail_timeout {} s",
                            srv.fail_timeout_ns / 1_000_000_000
                        )
                    })
            );
        }
    }
    for r in p.rule_order.iter().map(|&i| &p.flow_rules[usize::from(i)]) {
        let _ = writeln!(
            s,
            "flow rule {} -> {} qos [{}] reply_qos [{}] idle {}s",
            r.name,
            target(p, r.target),
            qos(&r.qos),
            qos(&r.reply_qos),
            r.idle_timeout_ns / 1_000_000_000
        );
    }
    let _ = writeln!(s, "default -> {}", target(p, p.default));
    let _ = writeln!(
        s,
        "classifier: {} rules, {} bytes; flow table capacity {}",
        p.rules().len(),
        t.classifier.bytes(),
        p.flow_table.capacity
    );
    s
}

/// A prefix of the IPv4-mapped space as it is written: `10.0.0.0/8`, `2001:db8::/32`.
fn cidr(r: &crate::classify::Range<u128>) -> String {
    let len = 128
        - (r.hi - r.lo)
            .checked_add(1)
            .map_or(128, u128::trailing_zeros);
    let v6 = std::net::Ipv6Addr::from(r.lo);
    match v6.to_ipv4_mapped() {
        Some(v4) if len >= 96 => format!("{v4}/{}", len - 96),
        _ => format!("{v6}/{len}"),
    }
}

/// Whether a run on `old` takes `new` on SIGHUP ([`Pipeline::regrow`]): what it adds, or
/// why it would be refused.
pub fn reload_verdict(old: &Pipeline, new: Pipeline) -> Result<String, String> {
    // By name, in sets (a file may list thousands); a free index has no name.
    fn names<'a>(v: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
        v.filter(|n| !n.is_empty()).collect()
    }
    fn lacking(a: &[&str], b: &[&str]) -> Vec<String> {
        let b: HashSet<&str> = b.iter().copied().collect();
        (a.iter())
            .filter(|n| !b.contains(*n))
            .map(|n| n.to_string())
            .collect()
    }
    fn servers(p: &Pipeline) -> Vec<&str> {
        names(p.servers.iter().map(|s| s.name.as_str()))
    }
    fn services(p: &Pipeline) -> Vec<&str> {
        names(p.services.iter().map(|s| s.name.as_str()))
    }
    let gone_servers = lacking(&servers(old), &servers(&new));
    let gone_services = lacking(&services(old), &services(&new));
    let g = old.regrow(new)?;
    let members = |p: &Pipeline| p.services.iter().map(Service::live_members).sum::<usize>();
    let mut v = format!(
        "accepted (adds servers {}, services {}, service members {})",
        lacking(&servers(&g), &servers(old)).len(),
        lacking(&services(&g), &services(old)).len(),
        members(&g).saturating_sub(members(old))
    );
    for c in crate::config::changes::reload_changes(old, &g) {
        let _ = write!(v, "; {c}");
    }
    if !gone_servers.is_empty() {
        let _ = write!(v, "; removed servers {gone_servers:?} kept down");
    }
    if !gone_services.is_empty() {
        let _ = write!(
            v,
            "; removed services {gone_services:?} kept for their open flows"
        );
    }
    if !gone_servers.is_empty() || !gone_services.is_empty() {
        v.push_str(" until their last flow ends");
    }
    Ok(v)
}
