//! Per-worker counters and the stats JSON shared by `replay` and `run`.
//!
//! Counters are plain integers owned by one worker (no atomics, no sharing); the
//! management side sums workers with [`Stats::merge`]. (One gauge is also published for
//! the other workers: `server_flows`, through [`Stats::flows_row`].) The JSON keeps the invariant
//! `packets_in == packets_out + sum(drops)`.

use super::gauges::FlowsRow;
use super::meta::DropReason;
use crate::config::{Entry, Pipeline, Target};
use crate::flow::{Flow, Owner};
use serde_json::{Map, Value, json};

/// Counters of one worker.
#[derive(Clone, Debug)]
pub struct Stats {
    pub packets_in: u64,
    pub packets_out: u64,
    pub drops: [u64; DropReason::COUNT],
    pub flows_created: u64,
    pub flows_evicted: u64,
    /// Of those, assured flows: open connections lost to a full table (unassured flows
    /// go first, see [`crate::flow`]).
    pub flows_evicted_assured: u64,
    pub flows_expired: u64,
    /// Flows moved to another server or owner by a changed advertised flow (see
    /// [`Worker::sweep`](super::Worker::sweep)).
    pub flows_moved: u64,
    pub arp_replies: u64,
    pub nd_replies: u64,
    /// ICMP errors sent: Time Exceeded for packets whose TTL or hop limit ran out (router
    /// mode), Fragmentation Needed or Packet Too Big for packets over `system.mtu`, port
    /// unreachable for new flows of a `no_server: reject` service with no server.
    pub icmp_errors: u64,
    /// Echo requests to the system's own addresses answered.
    pub echo_replies: u64,
    /// Gratuitous ARPs and unsolicited neighbour advertisements `flowgate run` sent for
    /// the system's addresses (`announce` in its conf), one per address and port.
    pub announcements: u64,
    /// IPv4 fragments made beyond the first, for packets without DF over `system.mtu`.
    pub fragments_out: u64,
    /// Of those, fragments `flowgate run` could not send (no mbuf left in the pool).
    pub fragments_unsent: u64,
    /// Per service: flows created, packets (both directions).
    pub svc_flows: Vec<u64>,
    pub svc_packets: Vec<u64>,
    /// Per service and member: packets sent to that server.
    pub svc_server_packets: Vec<Vec<u64>>,
    /// Per pattern rule: flows created, packets.
    pub rule_flows: Vec<u64>,
    pub rule_packets: Vec<u64>,
    /// Per server (pipeline index): live flows whose target it is, a gauge (what
    /// `ipvsadm -L` shows as a real server's connections), kept as flows are created,
    /// moved, evicted, expired and removed.
    pub server_flows: Vec<u64>,
    /// Per server: new flows whose first choice it was while it held its `max_flows`
    /// (placed on another server, or refused as `servers_full`).
    pub server_overflows: Vec<u64>,
    /// Per server with a passive health check (`max_fails`): failures, a client's SYN
    /// sent again while the server had not answered its connection, a reset answering a
    /// SYN, or its port unreachable on a flow it never answered (0 for the other
    /// servers).
    pub server_fails: Vec<u64>,
    /// Per service and per pattern rule: live flows it made (whose [`Owner`] it is), a
    /// gauge kept the same way.
    pub svc_open: Vec<u64>,
    pub rule_open: Vec<u64>,
    /// Per service: new flows refused by its `rate_limit` (also in `drops`).
    pub svc_limited: Vec<u64>,
    /// Per service: new flows from clients outside its `allow` list (also in `drops`).
    pub svc_denied: Vec<u64>,
    /// Per service: open flows cut because a reload narrowed its `allow` list and left
    /// their client out ([`Worker::sweep`](super::Worker::sweep)).
    pub svc_revoked: Vec<u64>,
    /// Per service: new flows refused by its `conn_limit` (also in `drops`).
    pub svc_conn_limited: Vec<u64>,
    /// Not a counter: where `flowgate run` publishes this worker's `server_flows` for
    /// the other workers ([`FlowsRow`]), kept there by [`flow_in`](Self::flow_in) and
    /// [`flow_out`](Self::flow_out); `None` for a lone worker (replay). Neither merged
    /// nor copied.
    pub flows_row: Option<FlowsRow>,
}

impl Stats {
    /// Zeroed counters shaped for `p`.
    pub fn new(p: &Pipeline) -> Self {
        Stats {
            packets_in: 0,
            packets_out: 0,
            drops: [0; DropReason::COUNT],
            flows_created: 0,
            flows_evicted: 0,
            flows_evicted_assured: 0,
            flows_expired: 0,
            flows_moved: 0,
            arp_replies: 0,
            nd_replies: 0,
            icmp_errors: 0,
            echo_replies: 0,
            announcements: 0,
            fragments_out: 0,
            fragments_unsent: 0,
            svc_flows: vec![0; p.services.len()],
            svc_packets: vec![0; p.services.len()],
            svc_server_packets: p
                .services
                .iter()
                .map(|s| vec![0; s.members.len()])
                .collect(),
            rule_flows: vec![0; p.flow_rules.len()],
            rule_packets: vec![0; p.flow_rules.len()],
            server_flows: vec![0; p.servers.len()],
            server_overflows: vec![0; p.servers.len()],
            server_fails: vec![0; p.servers.len()],
            svc_open: vec![0; p.services.len()],
            rule_open: vec![0; p.flow_rules.len()],
            svc_limited: vec![0; p.services.len()],
            svc_denied: vec![0; p.services.len()],
            svc_revoked: vec![0; p.services.len()],
            svc_conn_limited: vec![0; p.services.len()],
            flows_row: None,
        }
    }

    /// Makes room for the services and members `p` has beyond those counted so far (a
    /// reloaded pipeline that grew, [`Pipeline::grows_into`]); never shrinks.
    pub fn grow_to(&mut self, p: &Pipeline) {
        let n = p.services.len();
        for v in [
            &mut self.svc_flows,
            &mut self.svc_packets,
            &mut self.svc_open,
            &mut self.svc_limited,
            &mut self.svc_denied,
            &mut self.svc_revoked,
            &mut self.svc_conn_limited,
        ] {
            if v.len() < n {
                v.resize(n, 0);
            }
        }
        if self.svc_server_packets.len() < n {
            self.svc_server_packets.resize(n, Vec::new());
        }
        for (v, s) in self.svc_server_packets.iter_mut().zip(&p.services) {
            if v.len() < s.members.len() {
                v.resize(s.members.len(), 0);
            }
        }
        let r = p.flow_rules.len();
        for v in [
            &mut self.rule_flows,
            &mut self.rule_packets,
            &mut self.rule_open,
        ] {
            if v.len() < r {
                v.resize(r, 0);
            }
        }
        for v in [
            &mut self.server_flows,
            &mut self.server_overflows,
            &mut self.server_fails,
        ] {
            if v.len() < p.servers.len() {
                v.resize(p.servers.len(), 0);
            }
        }
    }

    /// Takes the counters from a worker's pipeline to `new`, which
    /// [grows](Pipeline::grows_into) it: room for what `new` adds
    /// ([`grow_to`](Self::grow_to)), and zero counters at each index in `changed`, whose
    /// entry changed ([`Pipeline::changed_entries`]: freed by [`Pipeline::reclaim`], or a
    /// free index taken by a new entry), so that nothing a freed entry counted shows under
    /// the next one. No flow holds such an index (checked in debug builds).
    pub fn adopt(&mut self, new: &Pipeline, changed: &[Entry]) {
        self.grow_to(new);
        for &e in changed {
            match e {
                Entry::Server(i) => {
                    debug_assert_eq!(self.server_flows[i], 0, "flows on freed server {i}");
                    self.server_flows[i] = 0;
                    if let (Some(row), Ok(s)) = (&self.flows_row, u16::try_from(i)) {
                        row.set(s, 0);
                    }
                    self.server_overflows[i] = 0;
                    self.server_fails[i] = 0;
                }
                Entry::Service(i) => {
                    debug_assert_eq!(self.svc_open[i], 0, "flows of freed service {i}");
                    self.svc_flows[i] = 0;
                    self.svc_packets[i] = 0;
                    self.svc_open[i] = 0;
                    self.svc_limited[i] = 0;
                    self.svc_denied[i] = 0;
                    self.svc_revoked[i] = 0;
                    self.svc_conn_limited[i] = 0;
                    self.svc_server_packets[i].fill(0);
                }
                Entry::Member(i, j) => self.svc_server_packets[i][j] = 0,
                Entry::Rule(i) => {
                    debug_assert_eq!(self.rule_open[i], 0, "flows of freed rule {i}");
                    self.rule_flows[i] = 0;
                    self.rule_packets[i] = 0;
                    self.rule_open[i] = 0;
                }
            }
        }
    }

    /// True when every counter at index `e` reads zero (and `e` is counted here):
    /// `flowgate run` gives a free index to a new entry only then.
    pub fn counts_nothing(&self, e: Entry) -> bool {
        let zero = |v: &[u64], i: usize| v.get(i) == Some(&0);
        match e {
            Entry::Server(i) => {
                zero(&self.server_flows, i)
                    && zero(&self.server_overflows, i)
                    && zero(&self.server_fails, i)
            }
            Entry::Service(i) => {
                zero(&self.svc_flows, i)
                    && zero(&self.svc_packets, i)
                    && zero(&self.svc_open, i)
                    && zero(&self.svc_limited, i)
                    && zero(&self.svc_denied, i)
                    && zero(&self.svc_revoked, i)
                    && zero(&self.svc_conn_limited, i)
                    && (self.svc_server_packets.get(i)).is_some_and(|r| r.iter().all(|&n| n == 0))
            }
            Entry::Member(i, j) => (self.svc_server_packets.get(i)).is_some_and(|r| zero(r, j)),
            Entry::Rule(i) => {
                zero(&self.rule_flows, i) && zero(&self.rule_packets, i) && zero(&self.rule_open, i)
            }
        }
    }

    /// Adds `o` into `self`, growing `self` where `o` counts more services, members or
    /// rules (a worker that already took a grown pipeline).
    pub fn merge(&mut self, o: &Stats) {
        // Every field named (a new counter does not compile until it is added here).
        let Stats {
            packets_in,
            packets_out,
            drops,
            flows_created,
            flows_evicted,
            flows_evicted_assured,
            flows_expired,
            flows_moved,
            arp_replies,
            nd_replies,
            icmp_errors,
            echo_replies,
            announcements,
            fragments_out,
            fragments_unsent,
            svc_flows,
            svc_packets,
            svc_server_packets,
            rule_flows,
            rule_packets,
            server_flows,
            server_overflows,
            server_fails,
            svc_open,
            rule_open,
            svc_limited,
            svc_denied,
            svc_revoked,
            svc_conn_limited,
            flows_row: _,
        } = o;
        self.packets_in += packets_in;
        self.packets_out += packets_out;
        for (a, b) in self.drops.iter_mut().zip(drops) {
            *a += b;
        }
        self.flows_created += flows_created;
        self.flows_evicted += flows_evicted;
        self.flows_evicted_assured += flows_evicted_assured;
        self.flows_expired += flows_expired;
        self.flows_moved += flows_moved;
        self.arp_replies += arp_replies;
        self.nd_replies += nd_replies;
        self.icmp_errors += icmp_errors;
        self.echo_replies += echo_replies;
        self.announcements += announcements;
        self.fragments_out += fragments_out;
        self.fragments_unsent += fragments_unsent;
        let add = |a: &mut Vec<u64>, b: &Vec<u64>| {
            if a.len() < b.len() {
                a.resize(b.len(), 0);
            }
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y)
        };
        if self.svc_server_packets.len() < svc_server_packets.len() {
            self.svc_server_packets
                .resize(svc_server_packets.len(), Vec::new());
        }
        add(&mut self.svc_flows, svc_flows);
        add(&mut self.svc_packets, svc_packets);
        add(&mut self.rule_flows, rule_flows);
        add(&mut self.rule_packets, rule_packets);
        add(&mut self.server_flows, server_flows);
        add(&mut self.server_overflows, server_overflows);
        add(&mut self.server_fails, server_fails);
        add(&mut self.svc_open, svc_open);
        add(&mut self.svc_limited, svc_limited);
        add(&mut self.svc_denied, svc_denied);
        add(&mut self.svc_revoked, svc_revoked);
        add(&mut self.svc_conn_limited, svc_conn_limited);
        add(&mut self.rule_open, rule_open);
        for (a, b) in self.svc_server_packets.iter_mut().zip(svc_server_packets) {
            add(a, b);
        }
    }

    /// Flow `f` entered the flow table (or moved to its target or owner): the gauges of
    /// its server and of its service or rule.
    #[inline]
    pub fn flow_in(&mut self, f: &Flow) {
        for n in self.gauges(f).into_iter().flatten() {
            *n += 1;
        }
        self.publish(f);
    }

    /// Flow `f` left the flow table (or its target or owner changed).
    #[inline]
    pub fn flow_out(&mut self, f: &Flow) {
        for n in self.gauges(f).into_iter().flatten() {
            *n = n.saturating_sub(1);
        }
        self.publish(f);
    }

    /// The gauge of flow `f`'s server, into this worker's row of the board.
    #[inline]
    fn publish(&self, f: &Flow) {
        if let (Some(row), Target::Server(s)) = (&self.flows_row, f.target)
            && let Some(&open) = self.server_flows.get(usize::from(s))
        {
            row.set(s, open);
        }
    }

    /// The gauges flow `f` counts in: its server's, its service's or rule's.
    #[inline]
    fn gauges(&mut self, f: &Flow) -> [Option<&mut u64>; 2] {
        let server = match f.target {
            Target::Server(s) => self.server_flows.get_mut(usize::from(s)),
            _ => None,
        };
        let owner = match f.owner {
            Owner::Service(i) => self.svc_open.get_mut(usize::from(i)),
            Owner::Rule(i) => self.rule_open.get_mut(usize::from(i)),
            Owner::Other => None,
        };
        [server, owner]
    }

    /// A flow evicted from a full flow table.
    pub fn evicted(&mut self, f: &Flow) {
        self.flow_out(f);
        self.flows_evicted += 1;
        if f.assured() {
            self.flows_evicted_assured += 1;
        }
    }

    /// Total drops.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// The stats JSON object (see README: `--stats-json`).
    pub fn to_json(&self, p: &Pipeline) -> Value {
        let mut drops = Map::new();
        for r in DropReason::ALL {
            let n = self.drops[*r as usize];
            if n > 0 {
                drops.insert(r.as_str().into(), json!(n));
            }
        }
        let mut services = Map::new();
        // Free indices (see `Pipeline::reclaim`) have no name and count nothing.
        for (i, s) in p.services.iter().enumerate().filter(|(_, s)| !s.vacant()) {
            let mut servers = Map::new();
            for (j, m) in s.members.iter().enumerate().filter(|(_, m)| !m.vacant()) {
                servers.insert(
                    p.servers[m.server as usize].name.clone(),
                    json!(self.svc_server_packets[i][j]),
                );
            }
            let mut svc = json!({ "flows": self.svc_flows[i], "open_flows": self.svc_open[i],
                                  "packets": self.svc_packets[i], "servers": servers });
            // A rate-limited service: the new flows it refused.
            if s.rate_limit.is_some() {
                svc["rate_limited"] = json!(self.svc_limited[i]);
            }
            // A connection-limited service: the new flows it refused.
            if s.conn_limit.is_some() {
                svc["conn_limited"] = json!(self.svc_conn_limited[i]);
            }
            // A service with an `allow` list: the new flows from other clients, and the
            // open flows a reload that narrowed it cut.
            if !s.allow.is_empty() {
                svc["denied"] = json!(self.svc_denied[i]);
                svc["revoked"] = json!(self.svc_revoked[i]);
            }
            // A service with backup servers: 1 while they take its new flows.
            if s.members.iter().any(|m| m.backup && !m.vacant()) {
                let on = matches!(
                    super::tier_weights(p, i).taking(s),
                    super::Taking::Backups | super::Taking::Easing
                );
                svc["on_backup"] = json!(u8::from(on));
            }
            services.insert(s.name.clone(), svc);
        }
        let mut rules = Map::new();
        for (i, r) in p.flow_rules.iter().enumerate().filter(|(_, r)| !r.vacant()) {
            rules.insert(
                r.name.clone(),
                json!({ "flows": self.rule_flows[i], "open_flows": self.rule_open[i],
                        "packets": self.rule_packets[i] }),
            );
        }
        // Per server, by name (a server in several services counted once).
        let by_server = |v: &[u64]| -> Map<String, Value> {
            (p.servers.iter().zip(v))
                .filter(|(s, _)| !s.vacant())
                .map(|(s, n)| (s.name.clone(), json!(n)))
                .collect()
        };
        let server_flows = by_server(&self.server_flows);
        let server_overflows = by_server(&self.server_overflows);
        // The passive health check, for the servers with `max_fails`: their failures,
        // and 1 while one is taken out.
        let watched =
            || (p.servers.iter().enumerate()).filter(|(_, s)| !s.vacant() && s.max_fails.is_some());
        let server_fails: Map<String, Value> = watched()
            .map(|(i, s)| {
                (
                    s.name.clone(),
                    json!(self.server_fails.get(i).copied().unwrap_or(0)),
                )
            })
            .collect();
        let server_ejected: Map<String, Value> = watched()
            .map(|(_, s)| (s.name.clone(), json!(u8::from(s.ejected))))
            .collect();
        // The limits in force (the pipeline's, for dashboards beside `server_flows`).
        let server_max_flows: Map<String, Value> = (p.servers.iter())
            .filter(|s| !s.vacant())
            .filter_map(|s| Some((s.name.clone(), json!(s.max_flows?))))
            .collect();
        json!({
            "packets_in": self.packets_in,
            "packets_out": self.packets_out,
            "drops": drops,
            "flows_created": self.flows_created,
            "flows_evicted": self.flows_evicted,
            "flows_evicted_assured": self.flows_evicted_assured,
            "flows_expired": self.flows_expired,
            "flows_moved": self.flows_moved,
            "arp_replies": self.arp_replies,
            "nd_replies": self.nd_replies,
            "icmp_errors": self.icmp_errors,
            "echo_replies": self.echo_replies,
            "announcements": self.announcements,
            "fragments_out": self.fragments_out,
            "fragments_unsent": self.fragments_unsent,
            "services": services,
            "server_flows": server_flows,
            "server_overflows": server_overflows,
            "server_max_flows": server_max_flows,
            "server_fails": server_fails,
            "server_ejected": server_ejected,
            "flow_rules": rules,
        })
    }
}
