//! What the control plane says about the pipeline's servers, applied to the pipeline:
//! how `flowgate run` obeys the end systems' advertisements.
//!
//! Layer: control, above `config`. Pure: [`Overlay::view`] reads the listener's current
//! systems and advertised flows, [`apply`] writes a view into a copy of the pipeline; the
//! runtime publishes the result as new tables when the view changed. Only what keeps the
//! pipeline's shape changes (server states, loads, response times, member weights, the
//! rules in the reserved slots), so workers take the new tables between two bursts
//! without losing a flow.
//!
//! Rules, for each server of the pipeline:
//! - Its end system is the live system of kind `end` with the server's MAC address (the
//!   address traffic is forwarded to), or else with its name; a server a reload removed
//!   has none (it stays down, and no advertised flow may target it).
//! - Live and advertising `up`: the pipeline's state; advertising `draining` (or told to
//!   drain by the supervisor): at least draining, so it keeps its flows and takes no new
//!   ones. An operator's `down` or `draining` in the pipeline always wins.
//! - Not live (it left, or was not heard for the dead interval) after having been heard:
//!   down, and its flows move to other servers. Never heard since start: the pipeline's
//!   state, or down with [`Unheard::Down`] (every server must run an agent).
//! - Load and response time: from the advertised services that match a pipeline
//!   service it is a member of (same name, or same VIP): load is the larger of load and
//!   congestion, per mille, as a fraction clamped to 0..=1 in steps of 0.01 (least-load
//!   weighs members by `weight × (1 − load)`); response time is the largest advertised,
//!   in steps of 0.1 ms (rounded up, so at least 0.1 ms; an advertised 0 means the agent
//!   measures none, and the pipeline's figure stays). No matching service advertised:
//!   the pipeline's figures stay.
//! - Membership: a live server that advertises services but none matching a pipeline
//!   service it is a member of does not offer it: its weight there becomes 0 (no new
//!   flows of that service, existing ones stay).
//! - Weight: an advertised service's weight scales the member's pipeline weight, in
//!   percent: 100 (the agent's default) keeps it, 50 halves it, 0 takes no new flows of
//!   that service (an agent's failing health check, or `flowgate ctl weight NAME 0` at
//!   the supervisor, which relays that weight). Adverts that match the pipeline service
//!   by name decide; without one, those that match by VIP; of several, the smallest.
//!
//! Advertised flows (`FlowAdd`) become pattern rules in slots reserved after the
//! pipeline's own rules ([`reserve_flow_slots`]; the number of slots is part of the
//! shape, so it never changes while running). So they rank below the operator's rules and
//! above the services. An advertised flow takes a slot when it first applies and keeps it
//! until it is withdrawn (or its origin goes down). The slots' rules
//! [claim existing flows](crate::config::FlowRule::claims_existing): when a slot changes,
//! each worker's [`sweep`](crate::pipeline::Worker::sweep) moves the flows already open
//! that it matches to its target, and lets go (to their service, same server) of those
//! it held and no longer matches. It applies when
//! its target end system is a live pipeline server (matched as above) and its QoS can be
//! expressed (no pop and swap of MPLS together); otherwise it is refused with a reason.
//! With every slot taken, further adverts are refused until one is withdrawn.

use crate::classify::{Decision, Range, Rule};
use crate::config::{FlowRule, Pipeline, QosActions, ServerState, Target};
use crate::control::proto::{
    FlowAdvert, FlowMatch, Qos, Service, SysState, SystemInfo, SystemKind,
};

/// Servers whose end system has not been heard since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unheard {
    /// Keep the pipeline's state (servers without an agent keep working).
    #[default]
    Keep,
    /// Down until their agent is heard.
    Down,
}

/// The control plane's word on one server: its state, load, response time, and per
/// service it is a member of (pipeline order), the weight it advertises there.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerView {
    pub state: ServerState,
    pub load: f64,
    pub response_ms: f64,
    /// The system it was matched with (`None`: not live).
    pub system: Option<u64>,
    /// Per pipeline service (index): the advertised weight, in percent of the member's
    /// pipeline weight (100 when nothing matching is advertised); `None` when the server
    /// advertises services but not this one (weight 0 there).
    pub weights: Vec<Option<u32>>,
}

/// What the control plane's advertised flows do: per reserved slot, the advert it holds
/// (and the pipeline server it targets); the adverts refused, with the reason.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlowsView {
    pub slots: Vec<Option<(FlowAdvert, u16)>>,
    pub refused: Vec<((u64, u64), String)>,
}

/// The control plane's whole view: servers and advertised flows.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub servers: Vec<ServerView>,
    pub flows: FlowsView,
}

/// Name of reserved slot `i` (the names are part of the pipeline's shape).
fn slot_name(i: usize) -> String {
    format!("{}{i}", crate::config::SLOT_PREFIX)
}

/// Appends `n` pattern-rule slots for advertised flows to `p`: rules that match
/// nothing until [`apply`] fills them.
pub fn reserve_flow_slots(p: &mut Pipeline, n: usize) {
    let first = p.flow_rules.len();
    p.rule_order.extend((first..first + n).map(|i| i as u16));
    for i in 0..n {
        p.flow_rules.push(FlowRule {
            name: slot_name(i),
            rule: never(Decision::FlowRule((first + i) as u32)),
            target: Target::Drop,
            qos: QosActions::default(),
            reply_qos: QosActions::default(),
            idle_timeout_ns: p.flow_table.idle_ns,
            claims_existing: true,
        });
    }
}

/// Index of the first of the reserved rules of `p` (contiguous, and after the rules of
/// the file it was loaded from, though a reload may add rules after them; found by name,
/// which a file's rules may not take): the rule count when none is reserved.
pub fn first_slot(p: &Pipeline) -> usize {
    let first = slot_name(0);
    (p.flow_rules.iter().position(|r| r.name == first)).unwrap_or(p.flow_rules.len())
}

/// A rule that matches nothing (an empty protocol range).
fn never(d: Decision) -> Rule {
    let mut r = Rule::any(d);
    r.proto = Range { lo: 1, hi: 0 };
    r
}

fn prefix(ip: std::net::IpAddr, plen: u8) -> Range<u128> {
    let (v, _) = crate::config::ip_to_u128(ip);
    let len = match ip {
        std::net::IpAddr::V4(_) => 96 + plen.min(32),
        std::net::IpAddr::V6(_) => plen.min(128),
    };
    crate::classify::prefix_range(v, len)
}

/// The rule of an advertised match.
fn advert_rule(m: &FlowMatch, d: Decision) -> Rule {
    let mut r = Rule::any(d);
    if m.proto != 0 {
        r.proto = Range::exact(m.proto);
    }
    r.src = prefix(m.src, m.src_plen);
    r.dst = prefix(m.dst, m.dst_plen);
    r.src_port = Range::new(m.sport.0, m.sport.1);
    r.dst_port = Range::new(m.dport.0, m.dport.1);
    if let Some((lo, hi)) = m.spi {
        r.spi = Range::new(lo, hi);
    }
    r
}

/// The pipeline's QoS actions for an advert's list; `Err` when they contradict.
pub fn qos_actions(q: &[Qos]) -> Result<QosActions, String> {
    let mut a = QosActions::default();
    for x in q {
        match *x {
            Qos::Dscp(v) if v < 64 => a.dscp = Some(v),
            Qos::Pcp(v) if v < 8 => a.pcp = Some(v),
            Qos::PushVlan { vid, pcp, tpid } if vid < 4096 && pcp < 8 => {
                a.push_vlan = Some((tpid, vid, pcp))
            }
            Qos::PopVlan => a.pop_vlan = true,
            Qos::SetVlan { vid } if vid < 4096 => a.set_vlan = Some(vid),
            Qos::PushMpls { label, tc, ttl } if label < 1 << 20 && tc < 8 => {
                a.push_mpls = Some((label, tc, ttl))
            }
            Qos::PopMpls => a.pop_mpls = true,
            Qos::SwapMpls { label } if label < 1 << 20 => a.swap_mpls = Some(label),
            other => return Err(format!("QoS value out of range: {other:?}")),
        }
    }
    if a.pop_mpls && a.swap_mpls.is_some() {
        return Err("pops and swaps an MPLS label".into());
    }
    Ok(a)
}

/// Remembers which servers were heard since start, and which advert holds which slot.
#[derive(Clone, Debug)]
pub struct Overlay {
    unheard: Unheard,
    /// Per server index: its name and whether it was heard since it took that index (a
    /// reload may give a free index to another server, see `Pipeline::reclaim`).
    heard: Vec<(String, bool)>,
    /// Per reserved slot: the (origin, flow id) holding it.
    slots: Vec<Option<(u64, u64)>>,
    /// Free slots, the longest free first (a freed slot is reused last).
    free: std::collections::VecDeque<usize>,
}

fn worse(a: ServerState, b: ServerState) -> ServerState {
    let rank = |s| match s {
        ServerState::Up => 0,
        ServerState::Draining => 1,
        ServerState::Down => 2,
    };
    if rank(a) >= rank(b) { a } else { b }
}

impl Overlay {
    /// An overlay for `servers` pipeline servers and `flow_slots` reserved slots.
    pub fn new(servers: usize, unheard: Unheard, flow_slots: usize) -> Overlay {
        Overlay {
            unheard,
            heard: vec![(String::new(), false); servers],
            slots: vec![None; flow_slots],
            free: (0..flow_slots).collect(),
        }
    }

    /// What the live adverts `flows` do, given the `servers` views (from
    /// [`server_views`](Self::server_views)): an advert's target is the server whose end
    /// system it names. Slots of adverts gone are freed.
    pub fn flows_view<'a>(
        &mut self,
        servers: &[ServerView],
        flows: impl IntoIterator<Item = &'a FlowAdvert>,
    ) -> FlowsView {
        let flows: Vec<&FlowAdvert> = flows.into_iter().collect();
        let key = |f: &FlowAdvert| (f.origin, f.flow_id);
        let mut v = FlowsView {
            slots: vec![None; self.slots.len()],
            refused: Vec::new(),
        };
        let mut usable = Vec::new();
        for f in &flows {
            let target = servers.iter().position(|v| v.system == Some(f.target));
            match (target, qos_actions(&f.qos)) {
                (None, _) => v.refused.push((
                    key(f),
                    format!(
                        "target end system {:016x} is not a live pipeline server",
                        f.target
                    ),
                )),
                (_, Err(e)) => v.refused.push((key(f), e)),
                (Some(t), Ok(_)) => usable.push((*f, t as u16)),
            }
        }
        // Free the slots of adverts no longer usable, then keep or give slots.
        for k in 0..self.slots.len() {
            if let Some(h) = self.slots[k]
                && !usable.iter().any(|(f, _)| key(f) == h)
            {
                self.slots[k] = None;
                self.free.push_back(k);
            }
        }
        for (f, t) in usable {
            let k = match self.slots.iter().position(|s| *s == Some(key(f))) {
                Some(k) => k,
                None => match self.free.pop_front() {
                    Some(k) => {
                        self.slots[k] = Some(key(f));
                        k
                    }
                    None => {
                        v.refused.push((
                            key(f),
                            format!("all {} advertised-flow slots are taken", self.slots.len()),
                        ));
                        continue;
                    }
                },
            };
            v.slots[k] = Some((f.clone(), t));
        }
        v
    }

    /// The whole view: [`server_views`](Self::server_views) and
    /// [`flows_view`](Self::flows_view).
    pub fn view<'a>(
        &mut self,
        base: &Pipeline,
        systems: impl IntoIterator<Item = (&'a SystemInfo, &'a [Service])> + Clone,
        flows: impl IntoIterator<Item = &'a FlowAdvert>,
    ) -> View {
        let servers = self.server_views(base, systems);
        let flows = self.flows_view(&servers, flows);
        View { servers, flows }
    }

    /// The view of every server of `base` given the live `systems` (each with the
    /// services it advertises).
    pub fn server_views<'a>(
        &mut self,
        base: &Pipeline,
        systems: impl IntoIterator<Item = (&'a SystemInfo, &'a [Service])> + Clone,
    ) -> Vec<ServerView> {
        if self.heard.len() != base.servers.len() {
            self.heard
                .resize(base.servers.len(), (String::new(), false));
        }
        for (h, srv) in self.heard.iter_mut().zip(&base.servers) {
            if h.0 != srv.name {
                *h = (srv.name.clone(), false);
            }
        }
        let ends = || {
            systems
                .clone()
                .into_iter()
                .filter(|(i, _)| i.kind == SystemKind::End)
        };
        base.servers
            .iter()
            .enumerate()
            .map(|(s, srv)| {
                // A server a reload removed (kept down for its open flows, or free) is no
                // end system's any more: advertised flows may not target it.
                let sys = if srv.removed {
                    None
                } else {
                    ends()
                        .find(|(i, _)| i.mac == srv.mac)
                        .or_else(|| ends().find(|(i, _)| i.name == srv.name))
                };
                let member_of = |svc: &crate::config::Service| {
                    svc.members.iter().any(|m| usize::from(m.server) == s)
                };
                let mut v = ServerView {
                    state: srv.state,
                    load: srv.load,
                    response_ms: srv.response_ms,
                    system: None,
                    weights: vec![Some(100); base.services.len()],
                };
                match sys {
                    Some((info, adverts)) => {
                        self.heard[s].1 = true;
                        v.system = Some(info.id);
                        if info.state == SysState::Draining {
                            v.state = worse(v.state, ServerState::Draining);
                        }
                        let mut matched: Vec<&Service> = Vec::new();
                        for (k, svc) in base.services.iter().enumerate() {
                            if !member_of(svc) {
                                continue;
                            }
                            let m: Vec<&Service> = adverts
                                .iter()
                                .filter(|a| a.name == svc.name || a.vip == svc.vip)
                                .collect();
                            if m.is_empty() && !adverts.is_empty() {
                                v.weights[k] = None;
                            }
                            let by_name = (m.iter().filter(|a| a.name == svc.name))
                                .map(|a| a.weight)
                                .min();
                            if let Some(w) = by_name.or_else(|| m.iter().map(|a| a.weight).min()) {
                                v.weights[k] = Some(w);
                            }
                            matched.extend(m);
                        }
                        if !matched.is_empty() {
                            let permille = matched
                                .iter()
                                .map(|a| a.load.max(u32::from(a.congestion)))
                                .max()
                                .unwrap_or(0);
                            // In steps of 1 % and 0.1 ms: smaller changes publish nothing.
                            v.load = (f64::from(permille.min(1000)) / 10.0).round() / 100.0;
                            let us = matched
                                .iter()
                                .map(|a| a.response_time_us)
                                .max()
                                .unwrap_or(0);
                            // 0: the agent measures none (no health check); the
                            // pipeline's figure stays. Rounded up: a figure under 0.1
                            // ms is 0.1 ms, never 0.
                            if us > 0 {
                                v.response_ms = f64::from(us.div_ceil(100)) / 10.0;
                            }
                        }
                    }
                    None if self.heard[s].1 || self.unheard == Unheard::Down => {
                        v.state = ServerState::Down;
                    }
                    None => {}
                }
                v
            })
            .collect()
    }
}

/// A member's pipeline weight scaled by an advertised weight in percent: within the
/// pipeline's bounds (at most 1000000), and at least 1 unless either is 0 (a server that
/// takes new flows keeps a share).
fn scaled_weight(weight: u32, pct: u32) -> u32 {
    if weight == 0 || pct == 0 {
        return 0;
    }
    let w = (u64::from(weight) * u64::from(pct) + 50) / 100;
    w.clamp(1, 1_000_000) as u32
}

/// `base` (with its flow slots reserved) with `view` applied; same shape.
pub fn apply(base: &Pipeline, view: &View) -> Pipeline {
    let views = &view.servers;
    let mut p = base.clone();
    for (srv, v) in p.servers.iter_mut().zip(views) {
        srv.state = v.state;
        srv.load = v.load;
        srv.response_ms = v.response_ms;
    }
    for (k, svc) in p.services.iter_mut().enumerate() {
        for m in &mut svc.members {
            let pct = views.get(usize::from(m.server)).map_or(Some(100), |v| {
                v.weights.get(k).copied().unwrap_or(Some(100))
            });
            m.weight = scaled_weight(m.weight, pct.unwrap_or(0));
        }
    }
    let first = first_slot(&p);
    for (k, slot) in view.flows.slots.iter().enumerate() {
        let Some(fr) = p.flow_rules.get_mut(first + k) else {
            break;
        };
        let d = Decision::FlowRule((first + k) as u32);
        match slot {
            Some((f, t)) => {
                fr.rule = advert_rule(&f.matcher, d);
                fr.target = Target::Server(*t);
                fr.qos = qos_actions(&f.qos).unwrap_or_default();
            }
            None => {
                fr.rule = never(d);
                fr.target = Target::Drop;
                fr.qos = QosActions::default();
            }
        }
    }
    p
}

/// One line per change from `old` to `new` (for the log).
pub fn changes(base: &Pipeline, old: &View, new: &View) -> Vec<String> {
    let mut out = server_changes(base, &old.servers, &new.servers);
    let first = first_slot(base);
    for (k, (o, n)) in old.flows.slots.iter().zip(&new.flows.slots).enumerate() {
        if o != n {
            out.push(match n {
                Some((f, t)) => format!(
                    "control: flow {} of end system {:016x} -> server {} (rule {})",
                    f.flow_id,
                    f.origin,
                    base.servers[usize::from(*t)].name,
                    first + k
                ),
                None => format!("control: rule {} ({}) is free", first + k, slot_name(k)),
            });
        }
    }
    for (k, why) in &new.flows.refused {
        if !old.flows.refused.iter().any(|(o, w)| o == k && w == why) {
            out.push(format!("control: flow {:016x}/{} refused: {why}", k.0, k.1));
        }
    }
    out
}

fn server_changes(base: &Pipeline, old: &[ServerView], new: &[ServerView]) -> Vec<String> {
    let name = |s: ServerState| match s {
        ServerState::Up => "up",
        ServerState::Draining => "draining",
        ServerState::Down => "down",
    };
    let mut out = Vec::new();
    for (i, n) in new.iter().enumerate() {
        let o = old.get(i);
        let srv = &base.servers[i];
        if o.is_none_or(|o| o.state != n.state || o.system != n.system) {
            out.push(format!(
                "control: server {} is {} ({})",
                srv.name,
                name(n.state),
                match n.system {
                    Some(id) => format!("end system {id:016x}"),
                    None => "no live end system".into(),
                }
            ));
        }
        for (k, svc) in base.services.iter().enumerate() {
            let was = o.map_or(Some(100), |o| {
                o.weights.get(k).copied().unwrap_or(Some(100))
            });
            let is = n.weights[k];
            if was != is {
                out.push(match is {
                    None => format!(
                        "control: server {} does not advertise service {} (weight 0)",
                        srv.name, svc.name
                    ),
                    Some(w) => format!(
                        "control: server {} advertises service {} at weight {w} ({w}% of the pipeline's)",
                        srv.name, svc.name
                    ),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::path::Path;

    const P: &str = "system:\n  mac: \"02:00:00:00:00:01\"\n  addresses: [10.0.0.1]\n  gateway: \"02:00:00:00:00:fe\"\n\
services:\n  - name: web\n    vip: 203.0.113.10\n    proto: tcp\n    ports: [80]\n    policy: least-load\n    servers:\n      \
- { name: s1, mac: \"02:00:00:00:01:01\", weight: 100 }\n      \
- { name: s2, mac: \"02:00:00:00:01:02\", weight: 100 }\n      \
- { name: s3, mac: \"02:00:00:00:01:03\", weight: 100, state: draining }\n";

    fn sys(id: u64, name: &str, mac: u8, state: SysState) -> SystemInfo {
        SystemInfo {
            id,
            kind: SystemKind::End,
            name: name.into(),
            mac: [2, 0, 0, 0, 1, mac],
            addrs: vec![],
            state,
        }
    }

    fn svc(name: &str, vip: &str, load: u32, congestion: u16, rt_us: u32) -> Service {
        Service {
            name: name.into(),
            vip: vip.parse::<IpAddr>().unwrap(),
            proto: 6,
            ports: vec![(80, 80)],
            capacity: 1000,
            weight: 100,
            load,
            congestion,
            response_time_us: rt_us,
        }
    }

    fn base() -> Pipeline {
        Pipeline::from_str(P, Path::new("p.yaml")).expect("pipeline")
    }

    /// `p` with the server views `v` applied (no advertised flows), checked to keep its
    /// shape.
    fn apply_servers(p: &Pipeline, v: &[ServerView]) -> Pipeline {
        let q = apply(
            p,
            &View {
                servers: v.to_vec(),
                flows: FlowsView::default(),
            },
        );
        assert!(q.same_shape(p));
        q
    }

    /// The member weights of service `web`.
    fn weights(q: &Pipeline) -> Vec<u32> {
        q.services[0].members.iter().map(|m| m.weight).collect()
    }

    #[test]
    fn states_follow_the_end_systems() {
        let p = base();
        let mut o = Overlay::new(3, Unheard::Keep, 0);
        // Nothing heard: the pipeline's states.
        let v = o.server_views(&p, std::iter::empty());
        let st: Vec<_> = v.iter().map(|v| v.state).collect();
        assert_eq!(
            st,
            [ServerState::Up, ServerState::Up, ServerState::Draining]
        );
        // s1 live (by MAC, under another name) and draining, s3 live and up: s3 stays
        // draining (the operator's word wins).
        let a = sys(7, "other-name", 1, SysState::Draining);
        let c = sys(9, "s3", 0x33, SysState::Up); // wrong MAC: matched by name
        let sv = [svc("web", "203.0.113.10", 500, 0, 2000)];
        let systems = [(&a, &sv[..]), (&c, &[][..])];
        let v = o.server_views(&p, systems.iter().copied());
        assert_eq!(v[0].state, ServerState::Draining);
        assert_eq!(v[0].system, Some(7));
        assert_eq!((v[0].load, v[0].response_ms), (0.5, 2.0));
        assert_eq!(v[1].state, ServerState::Up, "s2 never heard: kept");
        assert_eq!(v[2].state, ServerState::Draining);
        assert_eq!(v[2].system, Some(9));
        // s1 gone after having been heard: down. s2 still never heard: kept.
        let v = o.server_views(&p, systems[1..].iter().copied());
        assert_eq!(v[0].state, ServerState::Down);
        assert_eq!(v[0].system, None);
        assert_eq!(v[1].state, ServerState::Up);
        // With Unheard::Down, an unheard server is down.
        let mut strict = Overlay::new(3, Unheard::Down, 0);
        let v = strict.server_views(&p, std::iter::empty());
        assert!(v.iter().all(|v| v.state == ServerState::Down));
    }

    #[test]
    fn load_and_offers_come_from_matching_services() {
        let p = base();
        let mut o = Overlay::new(3, Unheard::Keep, 0);
        let a = sys(1, "s1", 1, SysState::Up);
        let b = sys(2, "s2", 2, SysState::Up);
        // s1 advertises the VIP under another name, congested; s2 advertises only an
        // unrelated service.
        let sa = [svc("http", "203.0.113.10", 100, 900, 500)];
        let sb = [svc("ftp", "192.0.2.1", 0, 0, 0)];
        let v = o.server_views(&p, [(&a, &sa[..]), (&b, &sb[..])]);
        assert_eq!(v[0].load, 0.9, "congestion counts as load");
        assert_eq!(v[0].weights, [Some(100)]);
        assert_eq!(v[1].weights, [None]);
        let q = apply_servers(&p, &v);
        assert_eq!(q.servers[0].load, 0.9);
        assert_eq!(weights(&q), [100, 0, 100]);
        // Overload is clamped to 1.
        let sa = [svc("web", "198.51.100.1", 2500, 0, 0)];
        let v = o.server_views(&p, [(&a, &sa[..])]);
        assert_eq!(v[0].load, 1.0);
        let lines = server_changes(&p, &[], &v);
        assert!(
            lines.iter().any(|l| l.contains("server s1 is up")),
            "{lines:?}"
        );
    }

    /// Advertised response times in steps of 0.1 ms, rounded up; 0 (an agent that
    /// times nothing) keeps the pipeline's figure. Under `policy: response-time` a server
    /// that answers in microseconds takes the largest share, and the others keep theirs:
    /// before, its figure rounded to 0 ms and left every other server at weight 0.
    #[test]
    fn response_times_round_up_and_zero_keeps_the_pipelines() {
        let p = Pipeline::from_str(
            &P.replace("least-load", "response-time")
                .replace("state: draining", "response_ms: 4.0"),
            Path::new("p.yaml"),
        )
        .expect("pipeline");
        let mut o = Overlay::new(3, Unheard::Keep, 0);
        let (a, b, c) = (
            sys(1, "s1", 1, SysState::Up),
            sys(2, "s2", 2, SysState::Up),
            sys(3, "s3", 3, SysState::Up),
        );
        let (sa, sb, sc) = (
            [svc("web", "203.0.113.10", 0, 0, 40)],
            [svc("web", "203.0.113.10", 0, 0, 1234)],
            [svc("web", "203.0.113.10", 0, 0, 0)],
        );
        let v = o.server_views(&p, [(&a, &sa[..]), (&b, &sb[..]), (&c, &sc[..])]);
        let rt: Vec<f64> = v.iter().map(|v| v.response_ms).collect();
        assert_eq!(rt, [0.1, 1.3, 4.0]);
        let q = apply_servers(&p, &v);
        let w: Vec<u32> = (0..3)
            .map(|j| crate::pipeline::effective_weight(&q, 0, j))
            .collect();
        assert_eq!(w, [100, 8, 3], "weight × fastest / own");
    }

    #[test]
    fn advertised_weights_scale_the_pipelines() {
        let p = base();
        let mut o = Overlay::new(3, Unheard::Keep, 0);
        let (a, b, c) = (
            sys(1, "s1", 1, SysState::Up),
            sys(2, "s2", 2, SysState::Up),
            sys(3, "s3", 3, SysState::Up),
        );
        let with_weight = |name: &str, vip: &str, w: u32| Service {
            weight: w,
            ..svc(name, vip, 0, 0, 0)
        };
        // s1: by name at 0, beside another service on the same VIP at 100, which does
        // not decide: a match by name does. s2: by VIP only, two adverts, the smaller
        // decides. s3: draining in the pipeline, advertises 300.
        let sa = [
            with_weight("web", "203.0.113.10", 0),
            with_weight("api", "203.0.113.10", 100),
        ];
        let sb = [
            with_weight("www", "203.0.113.10", 50),
            with_weight("www2", "203.0.113.10", 80),
        ];
        let sc = [with_weight("web", "203.0.113.10", 300)];
        let v = o.server_views(&p, [(&a, &sa[..]), (&b, &sb[..]), (&c, &sc[..])]);
        let w: Vec<_> = v.iter().map(|v| v.weights[0]).collect();
        assert_eq!(w, [Some(0), Some(50), Some(300)]);
        let q = apply_servers(&p, &v);
        assert_eq!(weights(&q), [0, 50, 300]);
        // Weight 0 keeps the server up (its open flows stay), and is logged.
        assert_eq!(q.servers[0].state, ServerState::Up);
        let lines = server_changes(&p, &[], &v);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("server s1 advertises service web at weight 0")),
            "{lines:?}"
        );
        // Bounds: a positive weight keeps a share, the pipeline's maximum holds.
        assert_eq!(scaled_weight(1, 10), 1);
        assert_eq!(scaled_weight(1_000_000, u32::MAX), 1_000_000);
        assert_eq!(scaled_weight(0, 100), 0);
        assert_eq!(scaled_weight(200, 100), 200);
    }

    #[test]
    fn only_end_systems_count() {
        let p = base();
        let mut o = Overlay::new(3, Unheard::Down, 0);
        let mut lb = sys(5, "s1", 1, SysState::Up);
        lb.kind = SystemKind::Intermediate;
        let v = o.server_views(&p, [(&lb, &[][..])]);
        assert_eq!(v[0].state, ServerState::Down);
    }

    /// A server a reload removed is no end system's: it stays down, and no advertised
    /// flow may target it, although its agent still runs. A server that takes its
    /// index once it is free starts unheard.
    #[test]
    fn removed_servers_are_out_of_reach_and_free_indices_start_unheard() {
        let p = base();
        let a = sys(1, "s1", 1, SysState::Up);
        let b = sys(2, "s2", 2, SysState::Up);
        let systems = [(&a, &[][..]), (&b, &[][..])];
        let mut o = Overlay::new(3, Unheard::Keep, 1);
        let v = o.server_views(&p, systems);
        assert_eq!((v[1].system, v[1].state), (Some(2), ServerState::Up));
        // s2 leaves the file: kept down, out of reach of its agent.
        let g = p
            .regrow(
                Pipeline::from_str(
                    &P.replace(
                        "      - { name: s2, mac: \"02:00:00:00:01:02\", weight: 100 }\n",
                        "",
                    ),
                    Path::new("p.yaml"),
                )
                .unwrap(),
            )
            .unwrap();
        assert!(g.servers[1].removed);
        let v = o.server_views(&g, systems);
        assert_eq!((v[1].system, v[1].state), (None, ServerState::Down));
        let f = advert(1, 1, 2, "192.0.2.0", vec![]);
        let fv = o.flows_view(&v, [&f]);
        assert_eq!(fv.slots[0], None);
        assert!(
            fv.refused[0].1.contains("not a live pipeline server"),
            "{:?}",
            fv.refused
        );
        // Its flows ended: freed; then `s4` takes its index. Never heard, so with
        // `Unheard::Keep` it keeps the pipeline's state, although s2 had been heard.
        let open = crate::config::OpenFlows {
            servers: &[0; 3],
            services: &[0; 1],
            rules: &[],
        };
        let (r, _) = g.reclaim(&open).expect("s2 freed");
        assert!(r.servers[1].vacant());
        let s4 = P.replace(
            "name: s2, mac: \"02:00:00:00:01:02\"",
            "name: s4, mac: \"02:00:00:00:01:04\"",
        );
        let n = r
            .regrow(Pipeline::from_str(&s4, Path::new("p.yaml")).unwrap())
            .unwrap();
        assert_eq!(n.servers[1].name, "s4");
        let v = o.server_views(&n, [(&a, &[][..])]);
        assert_eq!((v[1].system, v[1].state), (None, ServerState::Up));
    }

    fn advert(origin: u64, id: u64, target: u64, src: &str, qos: Vec<Qos>) -> FlowAdvert {
        FlowAdvert {
            origin,
            flow_id: id,
            target,
            matcher: FlowMatch {
                proto: 6,
                src: src.parse().unwrap(),
                src_plen: 24,
                dst: "203.0.113.10".parse().unwrap(),
                dst_plen: 32,
                sport: (0, 65535),
                dport: (80, 80),
                spi: None,
            },
            qos,
            lifetime_ms: 0,
        }
    }

    /// A classifier key for TCP from `src` to the VIP's port 80.
    fn key(src: [u8; 4]) -> crate::classify::Key {
        crate::classify::Key {
            src: crate::classify::v4_mapped(src),
            dst: crate::classify::v4_mapped([203, 0, 113, 10]),
            proto: 6,
            src_port: 40000,
            dst_port: 80,
            ethertype: 0x0800,
            ..Default::default()
        }
    }

    #[test]
    fn advertised_flows_take_stable_slots_and_become_rules() {
        let mut p = base();
        let static_rules = p.flow_rules.len();
        reserve_flow_slots(&mut p, 2);
        assert_eq!(p.flow_rules.len(), static_rules + 2);
        let a = sys(1, "s1", 1, SysState::Up);
        let b = sys(2, "s2", 2, SysState::Up);
        let systems = [(&a, &[][..]), (&b, &[][..])];
        let mut o = Overlay::new(3, Unheard::Keep, 2);
        let f1 = advert(1, 1, 2, "192.0.2.0", vec![Qos::Dscp(46)]);
        let f2 = advert(2, 7, 1, "198.51.100.0", vec![]);
        let bad_target = advert(1, 2, 99, "192.0.2.0", vec![]);
        let bad_qos = advert(
            1,
            3,
            1,
            "192.0.2.0",
            vec![Qos::PopMpls, Qos::SwapMpls { label: 5 }],
        );
        let sv = o.server_views(&p, systems);
        let fv = o.flows_view(&sv, [&f1, &f2, &bad_target, &bad_qos]);
        assert_eq!(
            fv.slots[0],
            Some((f1.clone(), 1)),
            "f1 -> s2 in the first slot"
        );
        assert_eq!(fv.slots[1], Some((f2.clone(), 0)));
        let why: Vec<&str> = fv.refused.iter().map(|(_, w)| w.as_str()).collect();
        assert!(why[0].contains("not a live pipeline server"), "{why:?}");
        assert!(why[1].contains("pops and swaps"), "{why:?}");
        let view = View {
            servers: sv.clone(),
            flows: fv,
        };
        let q = apply(&p, &view);
        assert!(q.same_shape(&p), "slots keep the shape");
        let r0 = &q.flow_rules[static_rules];
        assert_eq!(r0.target, Target::Server(1));
        assert_eq!(r0.qos.dscp, Some(46));
        // The compiled classifier finds the slot's rule for a matching key, and the
        // free slot's rule matches nothing.
        let t = crate::pipeline::Tables::build(q.clone(), 1);
        assert_eq!(
            t.classifier.classify(&key([192, 0, 2, 9])),
            Decision::FlowRule(static_rules as u32)
        );
        assert_eq!(
            t.classifier.classify(&key([203, 0, 113, 9])),
            Decision::Service(0)
        );

        // f1 withdrawn: its slot is free and reused last; f2 keeps its slot; a third
        // advert takes slot 0 (the only free one); a fourth finds no slot.
        let f3 = advert(1, 4, 1, "192.0.2.0", vec![]);
        let f4 = advert(1, 5, 1, "192.0.2.0", vec![]);
        let fv = o.flows_view(&sv, [&f2, &f3, &f4]);
        assert_eq!(fv.slots[1], Some((f2.clone(), 0)), "f2 stays in its slot");
        assert_eq!(fv.slots[0], Some((f3.clone(), 0)));
        assert!(
            fv.refused
                .iter()
                .any(|((_, id), w)| *id == 5 && w.contains("slots are taken"))
        );
        // Nothing advertised: every slot matches nothing again.
        let fv = o.flows_view(&sv, []);
        assert!(fv.slots.iter().all(Option::is_none));
        let q = apply(
            &p,
            &View {
                servers: view.servers.clone(),
                flows: fv,
            },
        );
        let t = crate::pipeline::Tables::build(q, 2);
        assert_eq!(
            t.classifier.classify(&key([192, 0, 2, 9])),
            Decision::Service(0)
        );
    }

    /// A reload that adds a pattern rule (`Pipeline::regrow`) puts it after the slots in
    /// the rule table, so that their indices, which open flows and counters hold, stay,
    /// and before them in priority; the adverts land in the same slots.
    #[test]
    fn a_reload_adds_rules_beside_the_slots() {
        let with = |rules: &str| {
            let y = format!("{P}flows:\n{rules}");
            let mut p = Pipeline::from_str(&y, Path::new("p.yaml")).expect("pipeline");
            reserve_flow_slots(&mut p, 2);
            p
        };
        let r1 = "  - { name: r1, match: { proto: udp }, to: gateway }\n";
        let r2 = "  - { name: r2, match: { proto: tcp, src: 192.0.2.0/25 }, to: s3 }\n";
        let p = with(r1);
        let mut o = Overlay::new(3, Unheard::Keep, 2);
        let (a, b) = (sys(1, "s1", 1, SysState::Up), sys(2, "s2", 2, SysState::Up));
        let sv = o.server_views(&p, [(&a, &[][..]), (&b, &[][..])]);
        // From end system 1: its flows from 192.0.2.0/24 go to end system 2 (s2).
        let f1 = advert(1, 1, 2, "192.0.2.0", vec![Qos::Dscp(46)]);
        let view = View {
            flows: o.flows_view(&sv, [&f1]),
            servers: sv,
        };
        let running = apply(&p, &view);
        assert_eq!(first_slot(&running), 1);
        assert_eq!(running.flow_rules[1].target, Target::Server(1));

        let g = running
            .regrow(with(&format!("{r2}{r1}")))
            .expect("a rule added");
        let names: Vec<&str> = g.flow_rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["r1", "advertised-0", "advertised-1", "r2"]);
        assert_eq!(
            g.rule_order,
            [3, 0, 1, 2],
            "the file's order, then the slots"
        );
        assert!(running.grows_into(&g));
        let q = apply(&g, &view);
        assert!(q.same_shape(&g));
        assert_eq!(first_slot(&q), 1);
        assert_eq!(
            q.flow_rules[1].target,
            Target::Server(1),
            "the advert kept its slot"
        );
        assert_eq!(q.flow_rules[1].qos.dscp, Some(46));
        let t = crate::pipeline::Tables::build(q, 2);
        // r2 ranks above the slots; the rest of the advert's prefix goes to its slot.
        assert_eq!(
            t.classifier.classify(&key([192, 0, 2, 9])),
            Decision::FlowRule(3)
        );
        assert_eq!(
            t.classifier.classify(&key([192, 0, 2, 200])),
            Decision::FlowRule(1)
        );
    }

    /// An Ethernet/IPv4/ESP frame from `src` to the VIP with `spi` (IPv4 checksum 0: the
    /// pipeline does not check it).
    fn esp_frame(src: [u8; 4], spi: u32) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0xfe, 0x08, 0x00]);
        f.extend_from_slice(&[0x45, 0, 0, 44, 0, 1, 0, 0, 64, 50, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[203, 0, 113, 10]);
        f.extend_from_slice(&spi.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 1]);
        f.extend_from_slice(&[0; 16]);
        f
    }

    #[test]
    fn spi_adverts_steer_esp_by_spi() {
        let mut p = base();
        let static_rules = p.flow_rules.len();
        reserve_flow_slots(&mut p, 2);
        let a = sys(1, "s1", 1, SysState::Up);
        let b = sys(2, "s2", 2, SysState::Up);
        let systems = [(&a, &[][..]), (&b, &[][..])];
        let mut o = Overlay::new(3, Unheard::Keep, 2);
        // What two agents routing their `ipsec-spi` blocks advertise (NumberRoute::specs).
        let route = |origin: u64, first: u64| {
            let r = crate::control::agent::NumberRoute {
                pool: "ipsec-spi".into(),
                dst: "203.0.113.10".parse().unwrap(),
                protos: vec![crate::wire::ipv4::proto::ESP],
            };
            let g = crate::control::session::HeldGrant {
                grant_id: 1,
                pool: "ipsec-spi".into(),
                first,
                count: 65536,
                lease_ms: 1000,
                valid_from: std::time::Instant::now(),
            };
            let s = r.specs(&g).expect("an SPI block").remove(0);
            FlowAdvert {
                origin,
                flow_id: 1,
                target: origin,
                matcher: s.matcher,
                qos: s.qos,
                lifetime_ms: 0,
            }
        };
        let (fa, fb) = (route(1, 0x1_0000), route(2, 0x2_0000));
        let sv = o.server_views(&p, systems);
        let fv = o.flows_view(&sv, [&fa, &fb]);
        assert!(fv.refused.is_empty(), "{:?}", fv.refused);
        use crate::pipeline::Kind;
        let q = apply(
            &p,
            &View {
                servers: sv,
                flows: fv,
            },
        );
        let mut w =
            crate::pipeline::Worker::new(std::sync::Arc::new(crate::pipeline::Tables::build(q, 1)));
        let mut buf = crate::action::FrameBuf::new(2048);
        let mut send = |w: &mut crate::pipeline::Worker, src: [u8; 4], spi: u32| {
            assert!(buf.load(&esp_frame(src, spi)));
            w.process(&mut buf, 0, 1)
        };
        let mac = |server: u8| [2, 0, 0, 0, 1, server + 1];
        // Each client's first ESP packet goes by its SPI: the block's holder.
        for (i, (spi, server, rule)) in [
            (0x1_0005, 0, static_rules),
            (0x2_fffe, 1, static_rules + 1),
            (0x1_ffff, 0, static_rules),
            (0x2_0000, 1, static_rules + 1),
        ]
        .into_iter()
        .enumerate()
        {
            let out = send(&mut w, [198, 51, 100, i as u8 + 1], spi);
            assert_eq!(out.kind, Kind::NewFlow, "{spi:#x}");
            assert_eq!(
                out.decision,
                Some(Decision::FlowRule(rule as u32)),
                "{spi:#x}"
            );
            assert_eq!(out.route.expect("routed").mac, mac(server), "{spi:#x}");
        }
        // An SPI in neither block matches no advert.
        let out = send(&mut w, [198, 51, 100, 9], 0x3_0000);
        assert_ne!(out.decision, Some(Decision::FlowRule(static_rules as u32)));
        assert_ne!(
            out.decision,
            Some(Decision::FlowRule(static_rules as u32 + 1))
        );
        // One client with security associations on both servers (after a failover, say):
        // each SPI is a flow of its own and goes to its own block's holder.
        let c = [198, 51, 100, 20];
        let to = |o: crate::pipeline::Outcome| (o.kind, o.route.expect("routed").mac);
        let fwd = Kind::Flow { reverse: false };
        assert_eq!(to(send(&mut w, c, 0x1_0100)), (Kind::NewFlow, mac(0)));
        assert_eq!(to(send(&mut w, c, 0x2_0100)), (Kind::NewFlow, mac(1)));
        assert_eq!(to(send(&mut w, c, 0x1_0100)), (fwd, mac(0)));
        assert_eq!(to(send(&mut w, c, 0x2_0100)), (fwd, mac(1)));
        // s1 hands its block to s2 (its advert now targets s2): the open associations in
        // the block move with it, because the sweep matches an ESP flow's SPI.
        let handed = FlowAdvert {
            target: 2,
            ..fa.clone()
        };
        let sv = o.server_views(&p, systems);
        let fv = o.flows_view(&sv, [&handed, &fb]);
        let q = apply(
            &p,
            &View {
                servers: sv,
                flows: fv,
            },
        );
        w.set_tables(std::sync::Arc::new(crate::pipeline::Tables::build(q, 2)))
            .expect("same shape");
        let mut moved = 0;
        while w.sweep_due() {
            moved += w.sweep(64);
        }
        assert_eq!(moved, 3, "the three flows with an SPI in s1's block");
        assert_eq!(to(send(&mut w, c, 0x1_0100)), (fwd, mac(1)));
        assert_eq!(to(send(&mut w, [198, 51, 100, 1], 0x1_0005)), (fwd, mac(1)));
    }

    use proptest::prelude::*;

    /// The live systems (with their services) and adverts of one step.
    type Step = (Vec<(SystemInfo, Vec<Service>)>, Vec<FlowAdvert>);

    fn arb_system() -> impl Strategy<Value = (SystemInfo, Vec<Service>)> {
        (
            1u64..6,
            0u8..5,
            prop::bool::weighted(0.9),
            any::<bool>(),
            prop::collection::vec(
                (
                    prop::sample::select(vec!["web", "other"]),
                    prop::sample::select(vec!["203.0.113.10", "192.0.2.1", "2001:db8::1"]),
                    0u32..3000,
                    0u16..2000,
                    any::<u32>(),
                ),
                0..3,
            ),
        )
            .prop_map(|(id, mac, end, draining, svcs)| {
                let mut i = sys(
                    id,
                    &format!("s{mac}"),
                    mac,
                    if draining {
                        SysState::Draining
                    } else {
                        SysState::Up
                    },
                );
                if !end {
                    i.kind = SystemKind::Intermediate;
                }
                let sv = svcs
                    .into_iter()
                    .map(|(n, v, l, c, r)| svc(n, v, l, c, r))
                    .collect();
                (i, sv)
            })
    }

    fn arb_advert() -> impl Strategy<Value = FlowAdvert> {
        (
            1u64..6,
            0u64..6,
            1u64..7,
            prop::sample::select(vec!["192.0.2.0", "2001:db8::", "0.0.0.0"]),
            any::<u8>(),
            (any::<u16>(), any::<u16>()),
            prop::collection::vec(
                prop_oneof![
                    any::<u8>().prop_map(Qos::Dscp),
                    any::<u8>().prop_map(Qos::Pcp),
                    Just(Qos::PopMpls),
                    any::<u32>().prop_map(|label| Qos::SwapMpls { label }),
                    (any::<u16>(), any::<u8>()).prop_map(|(vid, pcp)| Qos::PushVlan {
                        vid,
                        pcp,
                        tpid: 0x8100
                    }),
                ],
                0..3,
            ),
        )
            .prop_map(|(origin, id, target, src, plen, sport, qos)| {
                let mut f = advert(origin, id, target, src, qos);
                f.matcher.src_plen = plen;
                f.matcher.sport = sport;
                f
            })
    }

    proptest! {
        /// Whatever the live systems and adverts, the applied pipeline keeps the shape and
        /// builds; every advert is applied or refused; an advert keeps its slot while it
        /// stays applied; applied adverts target a live end system's server.
        #[test]
        fn any_control_state_applies_safely(
            pool_systems in prop::collection::vec(arb_system(), 1..5),
            pool_flows in prop::collection::vec(arb_advert(), 1..8),
            masks in prop::collection::vec((any::<u8>(), any::<u8>()), 1..8),
            unheard_down in any::<bool>(),
        ) {
            // Each step sees a subset of the pools, so systems and adverts come, stay
            // and go across steps.
            let steps: Vec<Step> = masks
                .iter()
                .map(|&(ms, mf)| {
                    (
                        pool_systems.iter().enumerate()
                            .filter(|(i, _)| ms & (1 << i) != 0).map(|(_, x)| x.clone()).collect(),
                        pool_flows.iter().enumerate()
                            .filter(|(i, _)| mf & (1 << i) != 0).map(|(_, x)| x.clone()).collect(),
                    )
                })
                .collect();
            let mut p = base();
            reserve_flow_slots(&mut p, 3);
            let unheard = if unheard_down { Unheard::Down } else { Unheard::Keep };
            let mut o = Overlay::new(3, unheard, 3);
            let mut prev: Vec<Option<(u64, u64)>> = vec![None; 3];
            for (g, (systems, flows)) in steps.iter().enumerate() {
                // The listener keys systems by id and adverts by (origin, flow id).
                let mut systems = systems.clone();
                systems.sort_by_key(|(i, _)| i.id);
                systems.dedup_by_key(|(i, _)| i.id);
                let mut flows = flows.clone();
                flows.sort_by_key(|f| (f.origin, f.flow_id));
                flows.dedup_by_key(|f| (f.origin, f.flow_id));
                let sys: Vec<(&SystemInfo, &[Service])> =
                    systems.iter().map(|(i, s)| (i, s.as_slice())).collect();
                let view = o.view(&p, sys.iter().copied(), flows.iter());
                let q = apply(&p, &view);
                prop_assert!(q.same_shape(&p));
                let _ = crate::pipeline::Tables::build(q.clone(), g as u64 + 1);
                let applied: Vec<(u64, u64)> = view.flows.slots.iter().flatten()
                    .map(|(f, _)| (f.origin, f.flow_id)).collect();
                prop_assert_eq!(applied.len() + view.flows.refused.len(), flows.len());
                let now: Vec<Option<(u64, u64)>> = view.flows.slots.iter()
                    .map(|s| s.as_ref().map(|(f, _)| (f.origin, f.flow_id))).collect();
                for (k, key) in now.iter().enumerate() {
                    // An advert applied before and now sits in the same slot.
                    if let Some(key) = key
                        && let Some(j) = prev.iter().position(|p| p.as_ref() == Some(key))
                    {
                        prop_assert_eq!(j, k, "advert {:?} moved slots", key);
                    }
                }
                for (f, t) in view.flows.slots.iter().flatten() {
                    let srv = &p.servers[usize::from(*t)];
                    prop_assert!(systems.iter().any(|(i, _)| i.id == f.target
                        && i.kind == SystemKind::End
                        && (i.mac == srv.mac || i.name == srv.name)));
                }
                prev = now;
                for (v, srv) in view.servers.iter().zip(&p.servers) {
                    prop_assert!((0.0..=1.0).contains(&v.load));
                    // The operator's word wins: never better than the pipeline's state.
                    prop_assert!(!(srv.state == ServerState::Draining && v.state == ServerState::Up));
                }
            }
        }
    }
}
