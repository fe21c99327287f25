//! What the control plane says about the pipeline's servers, applied to the pipeline:
//! how `flowgate run` obeys the end systems' advertisements.
//!
//! Layer: control, above `config`. Pure: [`Overlay::view`] reads the listener's current
//! systems, [`apply`] writes a view into a copy of the pipeline; the runtime publishes
//! the result as new tables when the view changed. Only what keeps the pipeline's shape
//! changes (server states, loads, response times, member weights), so workers take the
//! new tables between two bursts without losing a flow.
//!
//! Rules, for each server of the pipeline:
//! - Its end system is the live system of kind `end` with the server's MAC address (the
//!   address traffic is forwarded to), or else with its name.
//! - Live and advertising `up`: the pipeline's state; advertising `draining` (or told to
//!   drain by the supervisor): at least draining, so it keeps its flows and takes no new
//!   ones. An operator's `down` or `draining` in the pipeline always wins.
//! - Not live (it left, or was not heard for the dead interval) after having been heard:
//!   down, and its flows move to other servers. Never heard since start: the pipeline's
//!   state, or down with [`Unheard::Down`] (every server must run an agent).
//! - Load and response time: from the advertised services that match a pipeline
//!   service it is a member of (same name, or same VIP): load is the larger of load and
//!   congestion, per mille, as a fraction clamped to 0..=1 (least-load weighs members by
//!   `weight × (1 − load)`); response time is the largest advertised, in ms. No matching
//!   service advertised: the pipeline's figures stay.
//! - Membership: a live server that advertises services but none matching a pipeline
//!   service it is a member of does not offer it: its weight there becomes 0 (no new
//!   flows of that service, existing ones stay).
//!
//! Advertised flows (`FlowAdd`) are not applied here: they would add pattern rules, a
//! change of shape (see `docs/RUNNING.md`).

use crate::config::{Pipeline, ServerState};
use crate::control::proto::{Service, SysState, SystemInfo, SystemKind};

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
/// service it is a member of (pipeline order), whether it offers that service.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerView {
    pub state: ServerState,
    pub load: f64,
    pub response_ms: f64,
    /// The system it was matched with (`None`: not live).
    pub system: Option<u64>,
    /// Per pipeline service (index): false when the server is a member that does not
    /// offer it.
    pub offers: Vec<bool>,
}

/// Remembers which servers were heard since start.
#[derive(Clone, Debug)]
pub struct Overlay {
    unheard: Unheard,
    heard: Vec<bool>,
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
    pub fn new(servers: usize, unheard: Unheard) -> Overlay {
        Overlay {
            unheard,
            heard: vec![false; servers],
        }
    }

    /// The view of every server of `base` given the live `systems` (each with the
    /// services it advertises).
    pub fn view<'a>(
        &mut self,
        base: &Pipeline,
        systems: impl IntoIterator<Item = (&'a SystemInfo, &'a [Service])> + Clone,
    ) -> Vec<ServerView> {
        if self.heard.len() != base.servers.len() {
            self.heard.resize(base.servers.len(), false);
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
                let sys = ends()
                    .find(|(i, _)| i.mac == srv.mac)
                    .or_else(|| ends().find(|(i, _)| i.name == srv.name));
                let member_of = |svc: &crate::config::Service| {
                    svc.members.iter().any(|m| usize::from(m.server) == s)
                };
                let mut v = ServerView {
                    state: srv.state,
                    load: srv.load,
                    response_ms: srv.response_ms,
                    system: None,
                    offers: vec![true; base.services.len()],
                };
                match sys {
                    Some((info, adverts)) => {
                        self.heard[s] = true;
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
                                v.offers[k] = false;
                            }
                            matched.extend(m);
                        }
                        if !matched.is_empty() {
                            let permille = matched
                                .iter()
                                .map(|a| a.load.max(u32::from(a.congestion)))
                                .max()
                                .unwrap_or(0);
                            v.load = (f64::from(permille) / 1000.0).clamp(0.0, 1.0);
                            v.response_ms = matched
                                .iter()
                                .map(|a| f64::from(a.response_time_us) / 1000.0)
                                .fold(0.0, f64::max);
                        }
                    }
                    None if self.heard[s] || self.unheard == Unheard::Down => {
                        v.state = ServerState::Down;
                    }
                    None => {}
                }
                v
            })
            .collect()
    }
}

/// `base` with `views` (one per server, from [`Overlay::view`]) applied; same shape.
pub fn apply(base: &Pipeline, views: &[ServerView]) -> Pipeline {
    let mut p = base.clone();
    for (srv, v) in p.servers.iter_mut().zip(views) {
        srv.state = v.state;
        srv.load = v.load;
        srv.response_ms = v.response_ms;
    }
    for (k, svc) in p.services.iter_mut().enumerate() {
        for m in &mut svc.members {
            if views
                .get(usize::from(m.server))
                .is_some_and(|v| !v.offers.get(k).copied().unwrap_or(true))
            {
                m.weight = 0;
            }
        }
    }
    p
}

/// One line per server whose view changed from `old` to `new` (for the log).
pub fn changes(base: &Pipeline, old: &[ServerView], new: &[ServerView]) -> Vec<String> {
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
            let was = o.is_none_or(|o| o.offers.get(k).copied().unwrap_or(true));
            let is = n.offers[k];
            if was != is {
                out.push(format!(
                    "control: server {} {} service {}",
                    srv.name,
                    if is { "offers" } else { "does not advertise" },
                    svc.name
                ));
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

    #[test]
    fn states_follow_the_end_systems() {
        let p = base();
        let mut o = Overlay::new(3, Unheard::Keep);
        // Nothing heard: the pipeline's states.
        let v = o.view(&p, std::iter::empty());
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
        let v = o.view(&p, systems.iter().copied());
        assert_eq!(v[0].state, ServerState::Draining);
        assert_eq!(v[0].system, Some(7));
        assert_eq!((v[0].load, v[0].response_ms), (0.5, 2.0));
        assert_eq!(v[1].state, ServerState::Up, "s2 never heard: kept");
        assert_eq!(v[2].state, ServerState::Draining);
        assert_eq!(v[2].system, Some(9));
        // s1 gone after having been heard: down. s2 still never heard: kept.
        let v = o.view(&p, systems[1..].iter().copied());
        assert_eq!(v[0].state, ServerState::Down);
        assert_eq!(v[0].system, None);
        assert_eq!(v[1].state, ServerState::Up);
        // With Unheard::Down, an unheard server is down.
        let mut strict = Overlay::new(3, Unheard::Down);
        let v = strict.view(&p, std::iter::empty());
        assert!(v.iter().all(|v| v.state == ServerState::Down));
    }

    #[test]
    fn load_and_offers_come_from_matching_services() {
        let p = base();
        let mut o = Overlay::new(3, Unheard::Keep);
        let a = sys(1, "s1", 1, SysState::Up);
        let b = sys(2, "s2", 2, SysState::Up);
        // s1 advertises the VIP under another name, congested; s2 advertises only an
        // unrelated service.
        let sa = [svc("http", "203.0.113.10", 100, 900, 500)];
        let sb = [svc("ftp", "192.0.2.1", 0, 0, 0)];
        let v = o.view(&p, [(&a, &sa[..]), (&b, &sb[..])]);
        assert_eq!(v[0].load, 0.9, "congestion counts as load");
        assert_eq!(v[0].offers, [true]);
        assert_eq!(v[1].offers, [false]);
        let q = apply(&p, &v);
        assert!(q.same_shape(&p));
        assert_eq!(q.servers[0].load, 0.9);
        let w: Vec<u32> = q.services[0].members.iter().map(|m| m.weight).collect();
        assert_eq!(w, [100, 0, 100]);
        // Overload is clamped to 1.
        let sa = [svc("web", "198.51.100.1", 2500, 0, 0)];
        let v = o.view(&p, [(&a, &sa[..])]);
        assert_eq!(v[0].load, 1.0);
        let lines = changes(&p, &[], &v);
        assert!(
            lines.iter().any(|l| l.contains("server s1 is up")),
            "{lines:?}"
        );
    }

    #[test]
    fn only_end_systems_count() {
        let p = base();
        let mut o = Overlay::new(3, Unheard::Down);
        let mut lb = sys(5, "s1", 1, SysState::Up);
        lb.kind = SystemKind::Intermediate;
        let v = o.view(&p, [(&lb, &[][..])]);
        assert_eq!(v[0].state, ServerState::Down);
    }
}
