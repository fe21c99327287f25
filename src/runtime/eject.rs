//! Passive health check: a server with `max_fails` that has that many failures within
//! `fail_timeout` is taken out of new flows for `fail_timeout`, as nginx's
//! `max_fails`/`fail_timeout` do, so that a server that died without its agent saying so
//! (or with no agent at all) stops costing clients their connections.
//!
//! A failure is seen by the workers, on the general path (the express path sends the
//! packets of a watched server's unanswered flows there): a client's SYN sent again
//! while the server has not answered the connection, a reset from the server answering a
//! SYN, or the server's ICMP port or protocol unreachable on a flow it never answered
//! (UDP's refusal). Each worker counts them per server (`Stats::server_fails`).
//!
//! Layer: runtime (management core), pure logic: [`Ejections::observe`] takes the summed
//! counters and the time, and says who goes out and who comes back;
//! [`Ejections::apply`] marks them in every pipeline published
//! ([`Server::ejected`](crate::config::Server::ejected)): no new flows (weight 0), and the
//! flows it never answered move on their client's next packet. A server comes back
//! when its time is up (through its `slow_start`, if it has one), and is tried again: if
//! it still fails, `max_fails` more failures take it out again. A server is never taken
//! out when a service it serves would be left without a server taking new flows (it
//! stays, and the log says so once). `flowgate run` observes every [`EVERY`];
//! `flowgate replay` every [`EVERY`] of the capture's time.

use crate::config::{Pipeline, ServerState};
use std::collections::{HashMap, HashSet, VecDeque};

/// How often the management core reads the failure counters (ns).
pub const EVERY: u64 = 250_000_000;

/// What one [`Ejections::observe`] changed.
#[derive(Debug, Default, PartialEq)]
pub struct Change {
    /// Taken out now: name, failures counted in its window, the window (s).
    pub out: Vec<(String, u64, u64)>,
    /// Back in now.
    pub back: Vec<String>,
    /// Failing enough to go out, but kept: the last server taking new flows of a service
    /// it serves (said once while it lasts).
    pub kept: Vec<String>,
}

impl Change {
    /// Whether the tables must be published again (someone went out or came back).
    pub fn republish(&self) -> bool {
        !self.out.is_empty() || !self.back.is_empty()
    }

    /// What the log says: `passive check: web1 out for 10 s (3 failures in 10 s); web2
    /// back`, or nothing.
    pub fn phrase(&self) -> Option<String> {
        let parts: Vec<String> = (self.out.iter())
            .map(|(n, f, s)| {
                let failures = if *f == 1 { "failure" } else { "failures" };
                format!("{n} out for {s} s ({f} {failures} in {s} s)")
            })
            .chain(self.back.iter().map(|n| format!("{n} back")))
            .chain(
                (self.kept.iter())
                    .map(|n| format!("{n} failing but kept (the last server of a service)")),
            )
            .collect();
        (!parts.is_empty()).then(|| format!("passive check: {}", parts.join("; ")))
    }
}

/// The passive health check's state, by server name (indices change with reloads).
#[derive(Debug, Default)]
pub struct Ejections {
    /// Each watched server's failure counter as last seen.
    seen: HashMap<String, u64>,
    /// Failures within each watched server's `fail_timeout`: (when seen, how many).
    recent: HashMap<String, VecDeque<(u64, u64)>>,
    /// The servers taken out, until when (ns).
    out: HashMap<String, u64>,
    /// The servers kept in as the last of a service, already said.
    kept: HashSet<String>,
}

impl Ejections {
    /// Takes the failure counters summed over the workers (`fails[i]` for
    /// `p.servers[i]`; counters only grow, but for an index a reload gave to another
    /// server) at time `now` (ns, a monotonic clock).
    pub fn observe(&mut self, p: &Pipeline, fails: &[u64], now: u64) -> Change {
        let mut ch = Change::default();
        let watched: HashSet<&str> = (p.servers.iter())
            .filter(|s| !s.vacant() && s.max_fails.is_some())
            .map(|s| s.name.as_str())
            .collect();
        // A server no longer watched (a reload) or gone: nothing kept of it.
        self.seen.retain(|n, _| watched.contains(n.as_str()));
        self.recent.retain(|n, _| watched.contains(n.as_str()));
        self.kept.retain(|n| watched.contains(n.as_str()));
        // Those whose time is up come back (one no longer watched just leaves).
        self.out.retain(|n, until| {
            if !watched.contains(n.as_str()) {
                return false;
            }
            let stays = now < *until;
            if !stays {
                ch.back.push(n.clone());
            }
            stays
        });
        let mut failing = Vec::new();
        for (i, s) in p.servers.iter().enumerate() {
            let Some(max) = s.max_fails.filter(|_| !s.vacant()) else {
                continue;
            };
            let n = fails.get(i).copied().unwrap_or(0);
            let new = match self.seen.insert(s.name.clone(), n) {
                Some(before) => n.saturating_sub(before),
                // First seen (at the start, or watched since a reload): what it counted
                // before is not this check's.
                None => 0,
            };
            let q = self.recent.entry(s.name.clone()).or_default();
            // Failures while it is out (connections begun before) do not count towards
            // the next time.
            if new > 0 && !self.out.contains_key(&s.name) {
                q.push_back((now, new));
            }
            while q.front().is_some_and(|(t, _)| t + s.fail_timeout_ns <= now) {
                q.pop_front();
            }
            let total: u64 = q.iter().map(|(_, k)| k).sum();
            if total >= u64::from(max) && !self.out.contains_key(&s.name) {
                failing.push((i, total));
            } else if total < u64::from(max) {
                self.kept.remove(&s.name);
            }
        }
        for (i, total) in failing {
            let s = &p.servers[i];
            if self.last_of_a_service(p, i) {
                if self.kept.insert(s.name.clone()) {
                    ch.kept.push(s.name.clone());
                }
                continue;
            }
            self.kept.remove(&s.name);
            self.out.insert(s.name.clone(), now + s.fail_timeout_ns);
            // Back in, it starts afresh: `max_fails` new failures take it out again.
            if let Some(q) = self.recent.get_mut(&s.name) {
                q.clear();
            }
            ch.out
                .push((s.name.clone(), total, s.fail_timeout_ns / 1_000_000_000));
        }
        ch
    }

    /// Whether taking server `i` out would leave a service it serves (with a weight)
    /// without a server taking new flows.
    fn last_of_a_service(&self, p: &Pipeline, i: usize) -> bool {
        let takes = |j: usize| {
            let x = &p.servers[j];
            x.state == ServerState::Up && !x.removed && !self.out.contains_key(&x.name)
        };
        p.services.iter().filter(|s| !s.vacant()).any(|svc| {
            let serves = (svc.members.iter()).any(|m| usize::from(m.server) == i && m.weight > 0);
            serves
                && !(svc.members.iter())
                    .filter(|m| !m.vacant() && m.weight > 0)
                    .any(|m| usize::from(m.server) != i && takes(usize::from(m.server)))
        })
    }

    /// Marks the servers taken out in `p` (every pipeline published).
    pub fn apply(&self, p: &mut Pipeline) {
        for s in p.servers.iter_mut() {
            s.ejected = s.max_fails.is_some() && self.out.contains_key(&s.name);
        }
    }

    /// Whether any server is watched or out (else [`observe`](Self::observe) has nothing
    /// to do).
    pub fn watches(p: &Pipeline) -> bool {
        p.servers.iter().any(|s| s.max_fails.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// web-farm with `max_fails` on its servers (3 within 10 s unless given).
    fn farm(extra: &str) -> Pipeline {
        let yaml = format!(
            "system: {{ mac: \"02:00:00:00:00:01\", addresses: [203.0.113.1], gateway: \"02:00:00:00:00:fe\" }}\n\
             services:\n  - name: http\n    vip: 203.0.113.10\n    proto: tcp\n    ports: [80]\n    servers:\n\
             \x20     - {{ name: s1, mac: \"02:00:00:00:01:01\", max_fails: 3{extra} }}\n\
             \x20     - {{ name: s2, mac: \"02:00:00:00:01:02\", max_fails: 3{extra} }}\n\
             \x20     - {{ name: s3, mac: \"02:00:00:00:01:03\" }}\n"
        );
        Pipeline::from_str(&yaml, std::path::Path::new("t.yaml")).expect("pipeline")
    }

    #[test]
    fn failures_within_the_window_take_a_server_out_for_its_time() {
        let p = farm("");
        let mut e = Ejections::default();
        assert_eq!(e.observe(&p, &[0, 0, 0], 0), Change::default());
        // Two, then one 11 s later: never three within 10 s.
        assert!(!e.observe(&p, &[2, 0, 0], S).republish());
        assert!(!e.observe(&p, &[3, 0, 0], 12 * S).republish());
        // Two more within 10 s of that one: out for 10 s.
        let ch = e.observe(&p, &[5, 0, 0], 13 * S);
        assert_eq!(ch.out, [("s1".to_string(), 3, 10)]);
        assert_eq!(
            ch.phrase().unwrap(),
            "passive check: s1 out for 10 s (3 failures in 10 s)"
        );
        let mut q = p.clone();
        e.apply(&mut q);
        assert_eq!(
            q.servers.iter().map(|s| s.ejected).collect::<Vec<_>>(),
            [true, false, false]
        );
        // Failures while out do not extend it; back at 23 s, afresh.
        assert!(!e.observe(&p, &[9, 0, 0], 20 * S).republish());
        let ch = e.observe(&p, &[9, 0, 0], 23 * S);
        assert_eq!(ch.back, ["s1"]);
        e.apply(&mut q);
        assert!(!q.servers[0].ejected);
        assert!(!e.observe(&p, &[11, 0, 0], 24 * S).republish(), "2 since");
        assert_eq!(e.observe(&p, &[12, 0, 0], 25 * S).out.len(), 1, "3 since");
    }

    #[test]
    fn fail_timeout_sets_the_window_and_the_time_out() {
        let p = farm(", fail_timeout: 2");
        let mut e = Ejections::default();
        e.observe(&p, &[0, 0, 0], 0);
        e.observe(&p, &[2, 0, 0], S);
        assert!(
            !e.observe(&p, &[3, 0, 0], 3 * S).republish(),
            "the first two are old"
        );
        assert_eq!(e.observe(&p, &[5, 0, 0], 4 * S).out, [("s1".into(), 3, 2)]);
        assert!(!e.observe(&p, &[5, 0, 0], 5 * S).republish());
        assert_eq!(e.observe(&p, &[5, 0, 0], 6 * S).back, ["s1"]);
    }

    #[test]
    fn the_last_server_taking_new_flows_stays() {
        let mut p = farm("");
        p.servers[2].state = ServerState::Down;
        let mut e = Ejections::default();
        e.observe(&p, &[0, 0, 0], 0);
        assert_eq!(e.observe(&p, &[3, 0, 0], S).out.len(), 1, "s1 out, s2 left");
        let ch = e.observe(&p, &[3, 3, 0], 2 * S);
        assert_eq!((ch.out.len(), &ch.kept[..]), (0, &["s2".to_string()][..]));
        assert!(ch.phrase().unwrap().contains("s2 failing but kept"));
        assert_eq!(
            e.observe(&p, &[3, 4, 0], 3 * S),
            Change::default(),
            "said once"
        );
        // s1 back: now s2 goes, in the same turn.
        let ch = e.observe(&p, &[3, 4, 0], 11 * S);
        assert_eq!(
            (&ch.back[..], &ch.out[..]),
            (&["s1".to_string()][..], &[("s2".to_string(), 4, 10)][..])
        );
    }

    #[test]
    fn only_servers_with_max_fails_are_watched() {
        let p = farm("");
        let mut e = Ejections::default();
        e.observe(&p, &[0, 0, 0], 0);
        assert!(
            !e.observe(&p, &[0, 0, 100], S).republish(),
            "s3 is not watched"
        );
        // A reload leaves s1 without max_fails: what was counted of it is forgotten.
        let mut q = p.clone();
        q.servers[0].max_fails = None;
        e.observe(&p, &[2, 0, 0], 2 * S);
        e.observe(&q, &[2, 0, 0], 3 * S);
        assert!(
            !e.observe(&p, &[2, 0, 0], 4 * S).republish(),
            "watched again"
        );
        assert!(!e.observe(&p, &[4, 0, 0], 5 * S).republish(), "2 since");
        assert_eq!(e.observe(&p, &[5, 0, 0], 6 * S).out.len(), 1, "3 since");
    }
}
