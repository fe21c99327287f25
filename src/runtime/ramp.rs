//! Slow start: a server that comes up while the system runs (added by a reload, back
//! from `down` or `draining`, or first heard by the control plane) takes its weight in
//! steps over its `slow_start` seconds, as HAProxy's `slowstart` and nginx's
//! `slow_start` do, instead of its whole share of new flows at once (and under
//! `policy: least-flows`, every new flow until it holds as many as the others).
//!
//! Layer: runtime (management core). [`Ramps::apply`] sets each server's
//! [`ramp`](crate::config::Server::ramp) in every pipeline the management core
//! publishes, and the management core publishes again every [`STEP`] while a ramp is
//! under way ([`Ramps::under_way`]). Servers up when the system starts take their whole
//! weight at once. `flowgate replay` ramps on the capture's clock, where the only servers
//! that come up are those back from the passive health check ([`super::eject`]).

use crate::config::{Pipeline, ServerState};
use std::collections::{HashMap, HashSet};

/// How often a ramp under way moves on (ns): the management core publishes the tables
/// again, each ramping server a step closer to its weight.
pub const STEP: u64 = 500_000_000;

/// What one [`Ramps::apply`] did.
#[derive(Debug, Default, PartialEq)]
pub struct Ramped {
    /// The servers ramping, with the share of their weight they have (per cent).
    pub under_way: Vec<(String, u32)>,
    /// Of those, the ones whose ramp started at this call.
    pub started: Vec<String>,
    /// The servers whose ramp ended at this call with their whole weight.
    pub done: Vec<String>,
}

impl Ramped {
    /// What the log says of it: `slow start: web3 from 5 %; web4 at its whole weight`,
    /// or nothing when no ramp started or ended.
    pub fn phrase(&self) -> Option<String> {
        let from = self
            .under_way
            .iter()
            .filter(|(n, _)| self.started.contains(n));
        let parts: Vec<String> = from
            .map(|(n, pc)| format!("{n} from {pc} %"))
            .chain(self.done.iter().map(|n| format!("{n} at its whole weight")))
            .collect();
        (!parts.is_empty()).then(|| format!("slow start: {}", parts.join("; ")))
    }
}

/// Which servers are up, and since when the ramping ones are.
#[derive(Debug, Default)]
pub struct Ramps {
    /// Whether [`apply`](Self::apply) ran before (the first call starts no ramp).
    seen: bool,
    /// The servers up at the last call, by name.
    up: HashSet<String>,
    /// The servers whose ramp is under way, by name: when it started (ns).
    since: HashMap<String, u64>,
}

impl Ramps {
    /// Sets each server's `ramp` in `p` for time `now` (ns, a monotonic clock): a server
    /// with a `slow_start` that was not up at the last call (or not there) and is up now
    /// starts its ramp at `now`, one [`STEP`] in; a ramp ends when its time is up, or when
    /// its server goes down, drains or leaves.
    pub fn apply(&mut self, p: &mut Pipeline, now: u64) -> Ramped {
        let mut up = HashSet::new();
        let mut out = Ramped::default();
        for s in p.servers.iter_mut().filter(|s| !s.vacant()) {
            s.ramp = 1.0;
            // (Back from the passive health check's time out: it ramps as from down.)
            if s.state != ServerState::Up || s.removed || s.ejected {
                self.since.remove(&s.name);
                continue;
            }
            up.insert(s.name.clone());
            let Some(over) = s.slow_start_ns else {
                self.since.remove(&s.name);
                continue;
            };
            if self.seen && !self.up.contains(&s.name) {
                self.since.insert(s.name.clone(), now);
                out.started.push(s.name.clone());
            }
            let Some(&t0) = self.since.get(&s.name) else {
                continue;
            };
            let share = (now.saturating_sub(t0).max(STEP) as f64 / over as f64).min(1.0);
            if share >= 1.0 {
                self.since.remove(&s.name);
                out.done.push(s.name.clone());
            } else {
                s.ramp = share;
                out.under_way.push((s.name.clone(), (share * 100.0) as u32));
            }
        }
        self.since.retain(|n, _| up.contains(n));
        self.up = up;
        self.seen = true;
        out
    }

    /// True while a ramp is under way: the tables need publishing again a [`STEP`] on.
    pub fn under_way(&self) -> bool {
        !self.since.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const P: &str = "system: { mac: \"02:00:00:00:00:01\", gateway: \"02:00:00:00:00:fe\" }
services:
  - name: s
    vip: 192.0.2.10
    proto: tcp
    ports: [80]
    servers:
      - { name: a, mac: \"02:00:00:00:01:01\", slow_start: 10 }
      - { name: b, mac: \"02:00:00:00:01:02\", slow_start: 10 }
      - { name: c, mac: \"02:00:00:00:01:03\" }
";

    const S: u64 = 1_000_000_000;

    fn load(yaml: &str) -> Pipeline {
        Pipeline::from_str(yaml, Path::new("p.yaml")).unwrap()
    }

    fn ramps(p: &Pipeline) -> Vec<f64> {
        p.servers.iter().map(|s| s.ramp).collect()
    }

    #[test]
    fn a_server_that_comes_up_takes_its_weight_over_its_slow_start() {
        let mut r = Ramps::default();
        let mut p = load(P);
        // At the start: every server at its whole weight.
        assert_eq!(r.apply(&mut p, 0), Ramped::default());
        assert_eq!(ramps(&p), [1.0, 1.0, 1.0]);
        assert!(!r.under_way());
        // a goes down, then comes back at 20 s: a tenth a second, from one step in.
        p.servers[0].state = ServerState::Down;
        r.apply(&mut p, 10 * S);
        p.servers[0].state = ServerState::Up;
        let back = r.apply(&mut p, 20 * S);
        assert_eq!(back.under_way, [("a".to_string(), 5)]);
        assert_eq!(back.phrase().as_deref(), Some("slow start: a from 5 %"));
        assert_eq!(ramps(&p), [0.05, 1.0, 1.0]);
        assert!(r.under_way());
        let half = r.apply(&mut p, 25 * S);
        assert_eq!(half.under_way, [("a".to_string(), 50)]);
        assert_eq!(half.phrase(), None, "steps are not news");
        let w = crate::pipeline::effective_weight(&p, 0, 0);
        assert_eq!(w, 50, "half of 100");
        // Done at 30 s, and stays done.
        let done = r.apply(&mut p, 30 * S);
        assert!(done.under_way.is_empty());
        assert_eq!(
            done.phrase().as_deref(),
            Some("slow start: a at its whole weight")
        );
        assert_eq!(r.apply(&mut p, 31 * S), Ramped::default());
        assert_eq!(ramps(&p), [1.0, 1.0, 1.0]);
        assert!(!r.under_way());
        // Draining and back up ramps too; draining again mid-ramp ends it.
        p.servers[1].state = ServerState::Draining;
        r.apply(&mut p, 40 * S);
        p.servers[1].state = ServerState::Up;
        assert_eq!(r.apply(&mut p, 42 * S).under_way, [("b".to_string(), 5)]);
        p.servers[1].state = ServerState::Draining;
        assert_eq!(
            r.apply(&mut p, 43 * S),
            Ramped::default(),
            "ended, not done"
        );
        assert!(!r.under_way());
        // A server without slow_start comes back at once.
        p.servers[2].state = ServerState::Down;
        r.apply(&mut p, 50 * S);
        p.servers[2].state = ServerState::Up;
        assert!(r.apply(&mut p, 51 * S).under_way.is_empty());
        assert_eq!(p.servers[2].ramp, 1.0);
    }

    #[test]
    fn a_server_a_reload_adds_ramps_and_one_it_removes_stops() {
        let mut r = Ramps::default();
        let mut p = load(P);
        r.apply(&mut p, 0);
        let grown =
            P.to_string() + "      - { name: d, mac: \"02:00:00:00:01:04\", slow_start: 4 }\n";
        let mut q = p.regrow(load(&grown)).unwrap();
        assert_eq!(r.apply(&mut q, 8 * S).under_way, [("d".to_string(), 12)]);
        assert_eq!(r.apply(&mut q, 10 * S).under_way, [("d".to_string(), 50)]);
        // Removed mid-ramp (kept down while flows may use it): no ramp left.
        let mut back = q.regrow(load(P)).unwrap();
        assert!(r.apply(&mut back, 11 * S).under_way.is_empty());
        assert!(!r.under_way());
        // The tables follow: d's Maglev share grows with its ramp.
        let mut q = p.regrow(load(&grown)).unwrap();
        let mut r = Ramps::default();
        r.apply(&mut p.clone(), 0);
        r.apply(&mut q, 0);
        let share = |q: &Pipeline| {
            let t = crate::pipeline::Tables::build(q.clone(), 1);
            t.maglev[0].shares(4)[3] as f64 / 65537.0
        };
        let early = share(&q);
        r.apply(&mut q, 3 * S);
        let late = share(&q);
        assert!(early < 0.05 && late > 0.15, "{early} then {late}");
    }
}
