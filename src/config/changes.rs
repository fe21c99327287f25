//! What a reload changes, in the words the run's log and `flowgate check --reload-from`
//! both use: the order of services, servers and pattern rules, rules added and removed,
//! and the timeouts the open flows take.
//!
//! Layer: `config`. Compares a running pipeline with the one [`Pipeline::regrow`] made
//! from the file loaded again.

use super::{Pipeline, Service};
use hashbrown::HashSet;

/// What a run that takes `g` ([`Pipeline::regrow`]n from `old`) says it changed, one
/// phrase each: [`order_changes`], the services whose `allow` list now takes fewer
/// clients ([`Pipeline::allow_narrowed`]), a new flow-table size, then the timeouts its
/// open flows take ([`timeout_changes`]). `check --reload-from` and the run's reload log
/// both say it.
pub fn reload_changes(old: &Pipeline, g: &Pipeline) -> Vec<String> {
    let mut v = order_changes(old, g);
    for i in old.allow_narrowed(g) {
        v.push(format!(
            "service {:?} allows fewer clients: open flows of those left out cut",
            g.services[usize::from(i)].name
        ));
    }
    let (a, b) = (old.flow_table.capacity, g.flow_table.capacity);
    if a != b {
        v.push(format!(
            "flow table resized: {a} → {b} flows a worker, open flows moving into the new table"
        ));
    }
    let changed = timeout_changes(old, g);
    if !changed.is_empty() {
        v.push(format!(
            "timeouts changed, open flows included: {}",
            changed.join(", ")
        ));
    }
    v
}

/// What `g` ([`Pipeline::regrow`]n from `old`) changes in the order of services and their
/// servers and in the pattern rules, one phrase each: the running services' new order
/// when it changed, a service's servers' when it changed, rules added, the running rules'
/// new order when it changed, and rules removed (kept for the flows they made).
pub fn order_changes(old: &Pipeline, g: &Pipeline) -> Vec<String> {
    // Sets: a file may hold 65534 rules.
    let (was, is): (HashSet<&str>, HashSet<&str>) =
        (live_rules(old).collect(), live_rules(g).collect());
    let added: Vec<&str> = live_rules(g).filter(|n| !was.contains(n)).collect();
    let gone: Vec<&str> = live_rules(old).filter(|n| !is.contains(n)).collect();
    let mut v = Vec::new();
    if let Some(kept) = reordered(live_services(old), live_services(g)) {
        v.push(format!("services reordered: {kept:?}"));
    }
    for (i, s) in old.services.iter().enumerate() {
        let Some(n) = g.services.get(i).filter(|n| !n.retired) else {
            continue;
        };
        if let Some(kept) = reordered(members(old, s), members(g, n)) {
            v.push(format!(
                "servers of service {:?} reordered: {kept:?}",
                s.name
            ));
        }
    }
    if !added.is_empty() {
        v.push(format!("flow rules added: {added:?}"));
    }
    if let Some(kept) = reordered(live_rules(old), live_rules(g)) {
        v.push(format!("flow rules reordered: {kept:?}"));
    }
    if !gone.is_empty() {
        v.push(format!(
            "flow rules removed: {gone:?}, kept for their open flows until they end"
        ));
    }
    v
}

/// The names both `old` and `new` list, in `new`'s order, when it is not `old`'s.
fn reordered<'a>(
    old: impl Iterator<Item = &'a str> + Clone,
    new: impl Iterator<Item = &'a str> + Clone,
) -> Option<Vec<&'a str>> {
    let was: HashSet<&str> = old.clone().collect();
    let kept: Vec<&str> = new.filter(|n| was.contains(n)).collect();
    let both: HashSet<&str> = kept.iter().copied().collect();
    old.filter(|o| both.contains(o))
        .ne(kept.iter().copied())
        .then_some(kept)
}

/// The names of the servers of `p`'s service `s`, in Maglev's order.
fn members<'a>(p: &'a Pipeline, s: &'a Service) -> impl Iterator<Item = &'a str> + Clone {
    (s.member_order.iter()).map(|&j| {
        p.servers[usize::from(s.members[usize::from(j)].server)]
            .name
            .as_str()
    })
}

/// The names of `p`'s live services, in priority order.
fn live_services(p: &Pipeline) -> impl Iterator<Item = &str> + Clone {
    (p.service_order.iter()).map(|&i| p.services[usize::from(i)].name.as_str())
}

/// The names of `p`'s live pattern rules, in priority order.
fn live_rules(p: &Pipeline) -> impl Iterator<Item = &str> + Clone {
    (p.rule_order.iter()).map(|&i| p.flow_rules[usize::from(i)].name.as_str())
}

/// The flow-table timeouts `new` changes from `old` (`name old → new s`), which a run
/// applies to its open flows.
pub fn timeout_changes(old: &Pipeline, new: &Pipeline) -> Vec<String> {
    let s = |ns: u64| ns as f64 / 1e9;
    let (a, b) = (&old.flow_table, &new.flow_table);
    let mut v: Vec<String> = [
        ("tcp_syn_timeout", a.tcp_syn_ns, b.tcp_syn_ns),
        (
            "tcp_established_timeout",
            a.tcp_established_ns,
            b.tcp_established_ns,
        ),
        ("tcp_closing_timeout", a.tcp_closing_ns, b.tcp_closing_ns),
        ("idle_timeout", a.idle_ns, b.idle_ns),
    ]
    .into_iter()
    .filter(|(_, x, y)| x != y)
    .map(|(k, x, y)| format!("{k} {} → {} s", s(x), s(y)))
    .collect();
    // By index: a rule keeps its index across reloads (a free one taken by a new rule
    // is no change of timeout).
    for (ra, rb) in old.flow_rules.iter().zip(&new.flow_rules) {
        if ra.name == rb.name && ra.idle_timeout_ns != rb.idle_timeout_ns {
            v.push(format!(
                "flow rule {:?} idle_timeout {} → {} s",
                rb.name,
                s(ra.idle_timeout_ns),
                s(rb.idle_timeout_ns)
            ));
        }
    }
    v
}
