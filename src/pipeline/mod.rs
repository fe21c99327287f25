//! The per-packet worker: parse → flow → classify → act.
//!
//! Layer: `pipeline`, above `classify`, `flow`, `balance`, `action` and `wire`.
//! [`Tables`] is the immutable snapshot a worker reads (compiled rules, Maglev tables,
//! servers); [`Worker`] owns what changes per packet (flow table, fragment records,
//! counters). [`Worker::process`] handles one frame in place and returns an [`Outcome`]
//! saying where it goes and why. It never allocates, locks or makes a syscall.
//! [`Worker::process_burst`], what the DPDK runtime uses, does the same for a burst,
//! overlapping the flow-table misses, and sends the packets of known load-balanced flows
//! in the common shape down the [`express`] path; `process` always takes the general path,
//! which makes it the oracle `tests/burst.rs` checks the burst path against.
//!
//! Routing rules (see `docs/ARCHITECTURE.md` for the why):
//! - ARP requests and IPv6 neighbour solicitations for a VIP or a `system.addresses`
//!   entry are answered out of the port they came in on; other ARP/ND is dropped as
//!   `not_for_us`.
//! - A packet of a known flow in its creating direction goes to the flow's target. In the
//!   reverse direction, a flow whose target is a server sends to the gateway (responses
//!   leave through the outside gateway), and any other flow sends back to the MAC that
//!   created it (learned, as a switch would).
//! - A packet that starts no flow (no rule matched) goes to the gateway when it comes from
//!   a known server, else to `default`.
//! - An ICMP error follows the flow of the packet it quotes; it never creates a flow.
//! - A non-first fragment follows its first fragment; without one it is dropped
//!   (`fragment_no_first`).

pub mod express;
pub mod gauges;
pub mod listing;
pub mod meta;
pub mod parse;
pub mod reply;
pub mod stats;

use crate::action::{self, PacketBuf};
use crate::balance::{maglev::Maglev, source_hash, source_key, tuple_hash};
use crate::classify::{self, Classifier, Decision, Key};
use crate::config::{
    Affinity, Bucket, Forwarding, Mac, Pipeline, Policy, QosActions, RateLimit, ServerState, Target,
};
use crate::flow::{
    FlowKey, FlowTable, FragKey, Inserted, LruTable, Owner, TcpState, tcp_flags, tcp_next,
};
use crate::wire::ipv4::option_at;
use gauges::{ConnCounts, FlowsRow};
use meta::{DropReason, Frag, L3, Meta, Tuple};
use stats::Stats;
use std::borrow::Cow;
use std::sync::Arc;

const NONE16: u16 = u16::MAX;

/// Which QoS set a route applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QosSel {
    #[default]
    None,
    /// A service's `qos` (client → server).
    Service(u16),
    /// A service's `reply_qos` (server → client).
    ServiceReply(u16),
    /// A pattern rule's `qos` (creating direction).
    Rule(u16),
    /// A pattern rule's `reply_qos` (reverse direction).
    RuleReply(u16),
}

/// Where one frame goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Route {
    pub mac: Mac,
    pub port: u16,
    pub qos: QosSel,
    /// Service and member the packet belongs to, for counters (NONE = u16::MAX).
    pub svc: u16,
    pub member: u16,
    pub rule: u16,
    /// Server index when the route is to a server.
    pub server: u16,
}

/// How the worker got to its decision (for `--trace` and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    /// Dropped before a routing decision (parse error, ARP not for us…).
    #[default]
    Early,
    /// A new flow was created by a service or a pattern rule.
    NewFlow,
    /// A packet of a known flow; `reverse` when against the creating direction.
    Flow { reverse: bool },
    /// A non-first fragment that followed its first fragment.
    Fragment,
    /// No flow: sent to the gateway or `default` without state.
    Stateless,
    /// An ARP reply, an IPv6 neighbour advertisement, an echo reply or (router mode) an
    /// ICMP Time Exceeded was sent in the frame's place.
    Reply,
}

/// What happened to a frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub kind: Kind,
    /// The classifier's decision when it was consulted.
    pub decision: Option<Decision>,
    /// Output port and next hop when forwarded.
    pub route: Option<Route>,
    /// Why it was dropped.
    pub drop: Option<DropReason>,
}

/// Immutable tables a worker reads; rebuilt and swapped as a whole.
pub struct Tables {
    pub pipeline: Pipeline,
    /// Shared with the tables before when the rules are the same
    /// ([`build_after`](Tables::build_after)).
    pub classifier: Arc<dyn Classifier>,
    /// Per service: Maglev table over the members of the tier taking its new flows
    /// ([`tier_weights`]; lookup gives a member index); shared with the tables before
    /// when its members, their order and weights and the size are the same. Which tier
    /// that is follows from `weights` ([`Tiers::taking`]).
    pub maglev: Vec<Arc<Maglev>>,
    /// Per service: each member's weight in `maglev` (by member index; 0 outside it).
    weights: Vec<Box<[u32]>>,
    /// Per service, while its primaries take its new flows and a backup could: the
    /// backups' table and weights, for the new flows no primary has room for
    /// (`max_flows`).
    spill: Vec<Option<Spill>>,
    /// Server index by MAC (to recognise traffic from inside).
    pub server_by_mac: hashbrown::HashMap<Mac, u16>,
    /// The addresses the system owns ([`Pipeline::owns`]: `system.addresses` and the
    /// VIPs of services not retired): a packet to one of them that nothing takes is
    /// answered (a ping) or dropped, never sent on by `default`.
    own: hashbrown::HashSet<std::net::IpAddr>,
    /// `member_of[svc * servers + server]`: the member index of `server` in service
    /// `svc`, or `NONE16` (a flow hit needs it for per-server counters; a table read
    /// instead of a search of the members on every packet).
    member_of: Vec<u16>,
    /// Precomputed routes of the express path.
    express: express::Express,
    /// The pattern rules' idle timeouts ([`Pipeline::rule_idle_ns`]).
    rule_idle: Vec<u64>,
    /// The rules that [claim existing flows](crate::config::FlowRule::claims_existing)
    /// and can match, by index (the advertised-flow slots: also their priority order):
    /// what a worker's sweep reconsiders flows by.
    sweep_rules: Vec<u16>,
    /// What changed from the tables these were built after ([`Tables::build_after`]),
    /// checked and worked out on the management core, so that a worker that runs those
    /// takes these between two bursts without going over every rule.
    after: Option<After>,
    pub generation: u64,
}

/// A service's backups while its primaries take its new flows (see `Tables::spill`).
struct Spill {
    maglev: Arc<Maglev>,
    weights: Box<[u32]>,
}

/// What changed from the tables a [`Tables`] was built after (see `Tables::after`).
struct After {
    /// Their generation.
    generation: u64,
    /// Indices whose entry changed (freed, or a free one taken): counters to zero there
    /// ([`Pipeline::changed_entries`]).
    changed: Vec<crate::config::Entry>,
    /// `flow_table`'s timeouts or a rule's idle timeout changed.
    timeouts: bool,
    /// Rules that claim existing flows and changed (their match, target or QoS).
    claims: Vec<u16>,
    /// Services whose `allow` list takes fewer clients ([`Pipeline::allow_narrowed`]).
    narrowed: Vec<u16>,
}

impl Tables {
    /// The hash that places a new flow in service `i`'s Maglev table, `t` being the
    /// flow's tuple in its creating direction (client to service), by the service's
    /// [`Affinity`].
    #[inline]
    fn placement_hash(&self, i: usize, t: &Tuple) -> u64 {
        match self.pipeline.services[i].affinity {
            Affinity::Connection => tuple_hash(t),
            Affinity::Source {
                v4_prefix,
                v6_prefix,
            } => source_hash(&t.src, v4_prefix, v6_prefix),
        }
    }

    /// What changed from `prev` (the tables these replace) in which servers of the
    /// services with backups take new flows, for the log: `service http on its backup
    /// servers` when no primary can take its new flows any more, `service http back on
    /// its primary servers` when one can again, `service http: no server takes new
    /// flows` when neither can. `None` when nothing changed.
    pub fn backup_news(&self, prev: &Tables) -> Option<String> {
        let news: Vec<String> = (self.pipeline.services.iter().enumerate())
            .filter(|(_, s)| !s.vacant() && s.members.iter().any(|m| m.backup))
            .filter_map(|(i, s)| {
                let was = (prev.pipeline.services.get(i))
                    .filter(|o| o.name == s.name)
                    .map_or(Taking::Primaries, |o| taking(o, &prev.weights[i]));
                let now = taking(s, &self.weights[i]);
                (was != now).then(|| match now {
                    Taking::Backups => format!("service {} on its backup servers", s.name),
                    Taking::Easing => format!(
                        "service {} easing back onto its primary servers (their slow start)",
                        s.name
                    ),
                    Taking::Primaries => {
                        format!("service {} back on its primary servers", s.name)
                    }
                    Taking::None => format!("service {}: no server takes new flows", s.name),
                })
            })
            .collect();
        (!news.is_empty()).then(|| news.join("; "))
    }

    /// The QoS actions a route's selector names.
    #[inline]
    pub fn qos(&self, sel: QosSel) -> &QosActions {
        static NONE: QosActions = QosActions::NONE;
        let p = &self.pipeline;
        match sel {
            QosSel::None => &NONE,
            QosSel::Service(i) => &p.services[i as usize].qos,
            QosSel::ServiceReply(i) => &p.services[i as usize].reply_qos,
            QosSel::Rule(i) => &p.flow_rules[i as usize].qos,
            QosSel::RuleReply(i) => &p.flow_rules[i as usize].reply_qos,
        }
    }

    /// Compiles `p` into tables.
    pub fn build(p: Pipeline, generation: u64) -> Tables {
        Self::build_reusing(p, generation, None)
    }

    /// Compiles `p` into tables, taking from `prev` (the tables it replaces) what `p`
    /// would compile to the same: the classifier when the rules are the same, and each
    /// service's Maglev table when its inputs are (so a control-plane publication that
    /// changes one server's state rebuilds only the services it is a member of). A
    /// worker that runs `prev` takes them without going over the rules again
    /// ([`Worker::set_tables`]): it knows `prev` by its generation, so generations must
    /// not repeat (the runtime counts them up).
    pub fn build_after(p: Pipeline, generation: u64, prev: &Tables) -> Tables {
        Self::build_reusing(p, generation, Some(prev))
    }

    fn build_reusing(p: Pipeline, generation: u64, prev: Option<&Tables>) -> Tables {
        let rules = p.rules();
        let classifier = match prev {
            Some(t) if t.pipeline.rules() == rules => Arc::clone(&t.classifier),
            _ => Arc::from(classify::compile(rules)),
        };
        let tiers: Vec<Tiers> = (0..p.services.len()).map(|i| tier_weights(&p, i)).collect();
        // Service i's table over weights `w`; `before`'s (a table of `prev`'s service i
        // and the weights it was built over) when that was built from the same.
        let table = |i: usize, w: &[u32], before: Option<(&[u32], &Arc<Maglev>)>| {
            let input = maglev_input(&p, i, w);
            match (prev, before) {
                (Some(q), Some((v, m))) if maglev_input(&q.pipeline, i, v) == input => {
                    Arc::clone(m)
                }
                _ => {
                    let (names, size, order) = input;
                    let mut m = Maglev::build(&names, size);
                    m.renumber(order);
                    Arc::new(m)
                }
            }
        };
        let maglev = (tiers.iter().enumerate())
            .map(|(i, t)| {
                let before = prev
                    .filter(|q| i < q.maglev.len())
                    .map(|q| (&q.weights[i][..], &q.maglev[i]));
                table(i, &t.weights, before)
            })
            .collect();
        let spill = (tiers.iter().enumerate())
            .map(|(i, t)| {
                let w = t.spill.as_deref()?;
                let before = (prev.and_then(|q| q.spill.get(i)?.as_ref()))
                    .map(|s| (&s.weights[..], &s.maglev));
                Some(Spill {
                    maglev: table(i, w, before),
                    weights: w.into(),
                })
            })
            .collect();
        let weights = tiers.into_iter().map(|t| t.weights.into()).collect();
        let server_by_mac = p
            .servers
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.vacant())
            .map(|(i, s)| (s.mac, i as u16))
            .collect();
        let own = p.owned_addresses().collect();
        let n = p.servers.len();
        let mut member_of = vec![NONE16; p.services.len() * n];
        for (i, svc) in p.services.iter().enumerate() {
            for (j, m) in svc.members.iter().enumerate().rev() {
                if !m.vacant() {
                    member_of[i * n + m.server as usize] = j as u16; // the first wins
                }
            }
        }
        let express = express::Express::build(&p, &member_of);
        let rule_idle = p.rule_idle_ns();
        let sweep_rules = (0..p.flow_rules.len() as u16)
            .filter(|&i| {
                let r = &p.flow_rules[usize::from(i)];
                r.claims_existing && r.rule.can_match()
            })
            .collect();
        // Worked out here once rather than in every worker (with 60000 rules, checking
        // the shape and the timeouts took a worker about 5 ms).
        let after = prev
            .filter(|t| t.pipeline.grows_into(&p))
            .map(|t| After::of(t, &p, &rule_idle));
        Tables {
            pipeline: p,
            classifier,
            maglev,
            weights,
            spill,
            server_by_mac,
            own,
            member_of,
            express,
            rule_idle,
            sweep_rules,
            after,
            generation,
        }
    }
}

impl After {
    /// What `p` (with rule idle timeouts `rule_idle`), which grows `t`'s pipeline,
    /// changes from it.
    fn of(t: &Tables, p: &Pipeline, rule_idle: &[u64]) -> After {
        let (a, b) = (&t.pipeline, p);
        After {
            generation: t.generation,
            changed: a.changed_entries(b),
            timeouts: a.flow_table != b.flow_table || t.rule_idle[..] != rule_idle[..],
            claims: claims_changed(a, b),
            narrowed: a.allow_narrowed(b),
        }
    }
}

/// The rules of `b` that claim existing flows and differ from `a`'s at their index (in
/// their match, target or QoS): a worker sweeps its flows for them.
fn claims_changed(a: &Pipeline, b: &Pipeline) -> Vec<u16> {
    (a.flow_rules.iter().zip(&b.flow_rules).enumerate())
        .filter(|(_, (o, n))| {
            n.claims_existing
                && (o.rule != n.rule
                    || o.target != n.target
                    || o.qos != n.qos
                    || o.reply_qos != n.reply_qos)
        })
        .map(|(i, _)| i as u16)
        .collect()
}

/// What a Maglev table of service `i` is built from: its members' names and weights `w`
/// (by member index) in the file's order (which decides Maglev's ties), the table size,
/// and the member indices they are numbered with.
fn maglev_input<'a>(
    p: &'a Pipeline,
    i: usize,
    w: &[u32],
) -> (Vec<(&'a str, u32)>, usize, &'a [u16]) {
    let s = &p.services[i];
    let names = (s.member_order.iter().map(|&j| usize::from(j)))
        .map(|j| (p.servers[s.members[j].server as usize].name.as_str(), w[j]))
        .collect();
    (names, s.table_size, &s.member_order)
}

/// The weights of a service's members in the tables that place its new flows
/// ([`tier_weights`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Tiers {
    /// By member index: the weight in the table that places new flows (the tier that
    /// takes them, or both while the primaries are eased in), 0 for the members outside
    /// it (and for free member indices).
    pub weights: Vec<u32>,
    /// While the primaries alone take new flows: the backups' weights (0 for the
    /// primaries), when one of them is above 0; they take the new flows no primary has
    /// room for. (`None` while the primaries are eased in, [`Taking::Easing`]: the
    /// backups are then in the one table.)
    pub spill: Option<Vec<u32>>,
}

/// Which members of a service take its new flows ([`Tiers::taking`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taking {
    Primaries,
    Backups,
    /// The primaries, back after the backups stood in, in their slow start, and the
    /// backups beside them with the rest ([`tier_weights`]).
    Easing,
    /// None can: a new flow is dropped as `no_server` (or rejected).
    None,
}

impl Tiers {
    /// Which members of service `s` (whose tiers these are) take its new flows.
    pub fn taking(&self, s: &crate::config::Service) -> Taking {
        taking(s, &self.weights)
    }
}

/// Which members of service `s` take its new flows, by their `weights` in the table
/// that places them ([`Tiers::weights`]).
fn taking(s: &crate::config::Service, weights: &[u32]) -> Taking {
    let taking =
        |backup: bool| (s.members.iter().zip(weights)).any(|(m, &w)| m.backup == backup && w > 0);
    match (taking(false), taking(true)) {
        (false, false) => Taking::None,
        (false, true) => Taking::Backups,
        (true, false) => Taking::Primaries,
        (true, true) => Taking::Easing,
    }
}

/// Which of service `i`'s members take its new flows, and with what weights: the
/// primaries (members without `backup`) while any of them has an effective weight above
/// 0 ([`effective_weight`]: up, not taken out, weight above 0); the backups when none
/// has (all down, draining, at weight 0 or taken out by the passive check). A service
/// of backups alone is served by them. While every primary taking new flows is in its
/// slow start (a `ramp` below 1: they came back together after the backups stood in),
/// the backups stay in the table beside them with the rest of the new flows: the
/// primaries take the share `r` their ramps give their weights, the backups `1 − r`
/// (their weights scaled to that), so that a primary back from an outage is eased in
/// instead of taking every new flow at once.
pub fn tier_weights(p: &Pipeline, i: usize) -> Tiers {
    let s = &p.services[i];
    let mut w = vec![0; s.members.len()];
    for &j in &s.member_order {
        w[usize::from(j)] = effective_weight(p, i, usize::from(j));
    }
    let primaries = (s.members.iter().zip(&w)).any(|(m, &w)| !m.backup && w > 0);
    if !primaries {
        return Tiers {
            weights: w,
            spill: None,
        };
    }
    let (mut weights, spill): (Vec<u32>, Vec<u32>) = (s.members.iter().zip(w))
        .map(|(m, w)| if m.backup { (0, w) } else { (w, 0) })
        .unzip();
    let spill = spill.iter().any(|&w| w > 0).then_some(spill);
    // The primaries' share while all of them ramp: their weights against what they
    // will be (each weight over its server's ramp).
    let ramps = (s.members.iter().zip(&weights)).filter(|(m, w)| !m.backup && **w > 0);
    let (mut now, mut full) = (0.0, 0.0);
    let mut all_ramping = true;
    for (m, &w) in ramps {
        let ramp = p.servers[usize::from(m.server)].ramp;
        all_ramping &= ramp < 1.0;
        now += f64::from(w);
        full += f64::from(w) / ramp.max(f64::MIN_POSITIVE);
    }
    if let Some(backups) = spill.as_ref().filter(|_| all_ramping && full > 0.0) {
        let r = (now / full).clamp(0.0, 1.0);
        let total: f64 = backups.iter().map(|&w| f64::from(w)).sum();
        // The backups' weights scaled to `now × (1 − r) / r` in all.
        let scale = now * (1.0 - r) / r.max(f64::MIN_POSITIVE) / total;
        for (x, &b) in weights.iter_mut().zip(backups) {
            if b > 0 {
                *x = ((f64::from(b) * scale).round() as u32).max(1);
            }
        }
        // Every member that takes new flows is in the one table: no overflow table.
        return Tiers {
            weights,
            spill: None,
        };
    }
    Tiers { weights, spill }
}

/// The weight member `j` of service `i` has in the Maglev table, after its state and
/// the service's policy (before its tier, [`tier_weights`]): 0 unless the server is up;
/// scaled by the server's slow-start `ramp`; `least-load` scales by `1 − load`;
/// `response-time` by `fastest response / this response`.
pub fn effective_weight(p: &Pipeline, i: usize, j: usize) -> u32 {
    let s = &p.services[i];
    let m = &s.members[j];
    let srv = &p.servers[m.server as usize];
    if srv.state != ServerState::Up || srv.ejected || m.weight == 0 {
        return 0;
    }
    let w = f64::from(m.weight) * srv.ramp;
    let scaled = match s.policy {
        Policy::Maglev | Policy::LeastFlows => w,
        Policy::LeastLoad => w * (1.0 - srv.load),
        Policy::ResponseTime => {
            // Every figure is above 0: a file's are checked, the control plane's are
            // rounded up to 0.1 ms (a 0 would leave every other server at weight 0).
            debug_assert!(srv.response_ms > 0.0, "response_ms {}", srv.response_ms);
            let best = s
                .members
                .iter()
                .filter(|m| !m.vacant())
                .map(|m| p.servers[m.server as usize].response_ms)
                .fold(f64::INFINITY, f64::min);
            w * best / srv.response_ms
        }
    };
    // Keep a live server with a tiny share in the table; 0 only when load is total.
    if scaled <= 0.0 {
        0
    } else {
        (scaled.round() as u32).max(1)
    }
}

/// [`Worker::set_tables`] refused tables that do not only grow the current ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the new pipeline removes or reorders servers, services, members or flow rules, or changes ports, or has too many timeouts; restart to apply it"
)]
pub struct ShapeChanged;

/// Where a non-first fragment goes: the route its first fragment took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragRec {
    pub route: Route,
}

/// Per-core state: flows, fragment records, counters.
pub struct Worker {
    tables: Arc<Tables>,
    flows: FlowTable,
    frags: LruTable<FragKey, FragRec>,
    pub stats: Stats,
    scratch: Vec<u8>,
    /// Router mode's ICMP error budget: tokens left (a burst of at most
    /// [`ICMP_BURST`]) and when the last one was earned (ns).
    icmp_tokens: u64,
    icmp_earned_at: u64,
    /// Frames the last `process`/`process_burst` call made beyond those it was given
    /// (IPv4 fragments after the first), back to back, within [`EXTRA_CAPACITY`]...
    extra: Vec<u8>,
    /// ... and each one's (index of the frame it follows, end offset in `extra`).
    extra_ends: Vec<(u32, u32)>,
    /// The index (in the call's `bufs`) of the frame being processed.
    current: u32,
    /// `process_burst`'s per-frame parse results, reused from burst to burst.
    burst_metas: Vec<Meta>,
    burst_keys: Vec<(FlowKey, bool, u64)>,
    /// Per pattern rule: changed (and claiming existing flows) since the flow table was
    /// last swept for it.
    sweep_pending: Vec<bool>,
    /// Per service: its `allow` list narrowed since the flow table was last swept for it
    /// (the sweep cuts its open flows from the clients left out).
    revoke_pending: Vec<bool>,
    /// The slot [`sweep`](Worker::sweep) goes on from; `None`: no sweep is due.
    sweep_at: Option<usize>,
    /// The latest time [`expire`](Worker::expire) was called with: when new timeouts
    /// from [`set_tables`](Worker::set_tables) take effect.
    clock: u64,
    /// This worker's part of the limits it shares with the other workers: each service's
    /// `rate_limit.total` and, without a board of every worker's flows
    /// ([`Worker::set_server_flows`]), each server's `max_flows`.
    share: Share,
    /// This worker's part of each client's `rate_limit`, for the frames being processed
    /// ([`Worker::set_limit_share`]).
    limit_share: Share,
    /// Per client of a rate-limited service: when its bucket is next full
    /// ([`Worker::admit`]); made when a pipeline first has a `rate_limit`.
    limits: Option<LruTable<LimitKey, u64>>,
    /// Each client's open flows of the services with a `conn_limit`: shared by every
    /// worker of `flowgate run` ([`Worker::set_conn_counts`]), else made when a pipeline
    /// first has a limit.
    conns: Option<Arc<ConnCounts>>,
}

/// A bucket of a rate-limited service: a client's (its network, [`source_key`]) or,
/// `whole`, the service's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct LimitKey {
    service: u16,
    whole: bool,
    client: [u8; 16],
}

/// One new flow from bucket `key` of table `t` (limit `b`, of which this worker admits
/// `part`) at `now`, if it has one. The generic cell rate algorithm, a token bucket's
/// exact equivalent in one number: the time the bucket is next full (`tat`); a flow is
/// admitted while that is at most `burst − 1` intervals ahead, and moves it one
/// interval on. With a part of W the worker admits one flow each `W / rate` s, and its
/// share of `burst` (at least 1).
fn take(t: &mut LruTable<LimitKey, u64>, key: LimitKey, b: Bucket, part: Share, now: u64) -> bool {
    let interval = 1_000_000_000 * u64::from(part.of) / u64::from(b.rate);
    let ahead = u64::from(part.of(b.burst).max(1) - 1) * interval;
    let Some(h) = t.find(&key) else {
        t.insert(key, now + interval, 0, now);
        return true;
    };
    let tat = (*t.get(h)).max(now);
    t.touch(h, 0, now);
    if tat - now > ahead {
        return false;
    }
    *t.get_mut(h) = tat + interval;
    true
}

/// Undoes one [`take`] from bucket `key` (limit `b`, of which this worker admits
/// `part`): its next-full time one interval earlier.
fn give_back(t: &mut LruTable<LimitKey, u64>, key: LimitKey, b: Bucket, part: Share) {
    let interval = 1_000_000_000 * u64::from(part.of) / u64::from(b.rate);
    if let Some(h) = t.find(&key) {
        let tat = t.get_mut(h);
        *tat = tat.saturating_sub(interval);
    }
}

/// The bucket of service `i`'s `rate_limit` `rl` for the client with source address
/// `src`, or with `None` the service's own (`total`).
fn limit_key(rl: &RateLimit, i: u16, src: Option<&[u8; 16]>) -> LimitKey {
    match src {
        Some(src) => LimitKey {
            service: i,
            whole: false,
            client: source_key(src, rl.v4_prefix, rl.v6_prefix),
        },
        None => LimitKey {
            service: i,
            whole: true,
            client: [0; 16],
        },
    }
}

/// Clients of rate-limited services each worker keeps a bucket for; past that the
/// client idle the longest is forgotten (and starts again with its whole burst).
pub const LIMIT_CAPACITY: usize = 65536;
/// How long a client's bucket is kept after its last new flow (ns): a client idle that
/// long starts again with its whole burst.
pub const LIMIT_IDLE_NS: u64 = 60_000_000_000;

/// Counts of clients' open flows, when `p` has a service with a `conn_limit`.
fn conns_for(p: &Pipeline) -> Option<Arc<ConnCounts>> {
    (p.services.iter().any(|s| s.conn_limit.is_some())).then(ConnCounts::new)
}

/// Flow `f` (key `k`) is no longer counted against its client's `conn_limit` when it was:
/// its count in `conns` goes down (the caller clears the mark, or drops the flow).
#[inline]
fn uncount(conns: Option<&ConnCounts>, k: &FlowKey, f: &crate::flow::Flow) {
    if f.counted()
        && let (Owner::Service(i), Some(c)) = (f.owner, conns)
    {
        let ((client, _), _) = ends(k, f);
        c.close(i, &client);
    }
}

/// Flow `f` (key `k`) left the flow table (expired, or removed): the gauges and its
/// client's open flows.
#[inline]
fn gone(stats: &mut Stats, conns: Option<&ConnCounts>, k: &FlowKey, f: &crate::flow::Flow) {
    stats.flow_out(f);
    uncount(conns, k, f);
}

/// Flow `f` (key `k`) was evicted from a full flow table: as [`gone`], counted as an
/// eviction.
#[inline]
fn evicted(stats: &mut Stats, conns: Option<&ConnCounts>, k: &FlowKey, f: &crate::flow::Flow) {
    stats.evicted(f);
    uncount(conns, k, f);
}

/// A table of rate-limit buckets, when `p` has a service with a `rate_limit`.
fn limits_for(p: &Pipeline) -> Option<LruTable<LimitKey, u64>> {
    (p.services.iter().any(|s| s.rate_limit.is_some()))
        .then(|| LruTable::new(LIMIT_CAPACITY, &[LIMIT_IDLE_NS]))
}

/// Which part of a limit one worker admits: worker `index` of `of` admits `limit / of`,
/// one more when `index < limit % of`, so the parts add up to the limit. For the limits
/// the workers keep apart (each holds its own flows and buckets): a service's
/// `rate_limit.total`, a client's `rate_limit` on frames RSS spread by their ports, and
/// a server's `max_flows` on a worker without a board of every worker's flows
/// ([`Worker::set_server_flows`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    index: u32,
    of: u32,
}

impl Share {
    /// The only worker: all of every limit.
    pub const ALL: Share = Share { index: 0, of: 1 };

    /// Worker `index` of `of`; `None` unless `index < of`.
    pub fn new(index: usize, of: usize) -> Option<Share> {
        let (index, of) = (u32::try_from(index).ok()?, u32::try_from(of).ok()?);
        (index < of).then_some(Share { index, of })
    }

    /// This worker's part of `limit`.
    pub fn of(self, limit: u32) -> u32 {
        limit / self.of + u32::from(self.index < limit % self.of)
    }
}

/// The (address, port) that sent flow `f`'s (key `k`) creating packet, and the one it
/// went to: the key's `a` side sent it unless swapped.
fn ends(k: &FlowKey, f: &crate::flow::Flow) -> (([u8; 16], u16), ([u8; 16], u16)) {
    if f.swapped() {
        ((k.b, k.pb), (k.a, k.pa))
    } else {
        ((k.a, k.pa), (k.b, k.pb))
    }
}

/// What a sweep does to flow `f` (key `k`): `Some` with its new value when it moves (see
/// [`Worker::sweep`]), `None` when it stays as it is. `claiming` lists the rules that
/// claim existing flows and can match anything, in priority order.
fn reconsider(
    p: &Pipeline,
    claiming: &[u16],
    pending: &[bool],
    k: &FlowKey,
    f: crate::flow::Flow,
) -> Option<crate::flow::Flow> {
    let rules = &p.flow_rules;
    let held = match f.owner {
        Owner::Rule(i) => {
            if !rules.get(usize::from(i)).is_some_and(|r| r.claims_existing) {
                return None; // the operator's rule keeps its flows
            }
            Some(i)
        }
        _ => None,
    };
    let ((src, sp), (dst, dp)) = ends(k, &f);
    let mut key = crate::classify::Key::of_five_tuple(
        u128::from_be_bytes(src),
        u128::from_be_bytes(dst),
        k.proto,
        sp,
        dp,
    );
    if k.proto == crate::wire::ipv4::proto::ESP {
        // The key's ports hold the SPI (`Meta::flow_tuple`).
        key.spi = meta::esp_spi(sp, dp);
        (key.src_port, key.dst_port) = (0, 0);
    }
    let first = claiming
        .iter()
        .copied()
        .find(|&i| rules[usize::from(i)].rule.matches(&key));
    let due = |i: Option<u16>| i.is_some_and(|i| pending.get(usize::from(i)) == Some(&true));
    if !due(first) && !due(held) {
        return None;
    }
    let mut g = f;
    match first {
        Some(i) => {
            g.owner = Owner::Rule(i);
            g.target = rules[usize::from(i)].target;
        }
        None => {
            // Let go: the flow keeps its server, under the service whose address and
            // port it went to (which moves it if that server goes down), if any.
            let svc = (p.service_order.iter().copied()).find(|&i| {
                (p.services[usize::from(i)].rules(usize::from(i))).any(|r| r.matches(&key))
            });
            g.owner = svc.map_or(Owner::Other, Owner::Service);
        }
    }
    (g != f).then_some(g)
}

/// Fragment records kept per worker, and how long (ns) they live.
pub const FRAG_CAPACITY: usize = 65536;
pub const FRAG_TIMEOUT_NS: u64 = 30_000_000_000;
/// Bytes of extra frames (fragments) one `process_burst` call may make: room for every
/// frame of a 32-frame burst of the largest frames cut at the smallest MTU; a packet
/// whose fragments would not fit is dropped (`mtu_exceeded`).
pub const EXTRA_CAPACITY: usize = 1 << 20;

/// The most ICMP errors a worker sends at once, however long it was quiet (Linux's
/// `icmp_msgs_burst`; fewer when `system.icmp_rate` is lower); `icmp_rate` refills them.
pub const ICMP_BURST: u64 = 50;

impl Worker {
    /// A worker over `tables`, with its own flow table sized by the pipeline.
    pub fn new(tables: Arc<Tables>) -> Worker {
        let p = &tables.pipeline;
        Worker {
            flows: FlowTable::new(&p.flow_table, &p.rule_idle_ns()),
            frags: LruTable::new(FRAG_CAPACITY, &[FRAG_TIMEOUT_NS]),
            stats: Stats::new(p),
            scratch: vec![0; reply::ICMP_ERROR_MAX],
            icmp_tokens: u64::MAX,
            icmp_earned_at: 0,
            extra: Vec::with_capacity(EXTRA_CAPACITY),
            extra_ends: Vec::with_capacity(EXTRA_CAPACITY / 512),
            current: 0,
            burst_metas: Vec::new(),
            burst_keys: Vec::new(),
            sweep_pending: vec![false; p.flow_rules.len()],
            revoke_pending: vec![false; p.services.len()],
            sweep_at: None,
            clock: 0,
            share: Share::ALL,
            limit_share: Share::ALL,
            limits: limits_for(p),
            conns: conns_for(p),
            tables,
        }
    }

    /// Makes this worker admit `share` of each service's `rate_limit.total` and, unless
    /// it has a board of every worker's flows ([`Worker::set_server_flows`]), of each
    /// server's `max_flows` (all of it by default: the only worker).
    pub fn set_share(&mut self, share: Share) {
        self.share = share;
    }

    /// Makes this worker admit `share` of each client's `rate_limit` for the frames it
    /// processes next (all of it by default). `flowgate run` gives the worker's share for
    /// frames that RSS spread by their ports (a client's connections then reach every
    /// worker) and all of it for frames its software dispatcher spread by their
    /// addresses (each client's reach one worker).
    #[inline]
    pub fn set_limit_share(&mut self, share: Share) {
        self.limit_share = share;
    }

    /// Makes this worker publish its open flows per server in `row` and place new flows
    /// by every worker's (`flowgate run` with one board for all its workers): a server's
    /// `max_flows` and `least-flows` then count the server's flows over all the workers,
    /// and [`set_share`](Worker::set_share) no longer divides `max_flows`.
    pub fn set_server_flows(&mut self, row: FlowsRow) {
        for (s, &open) in self.stats.server_flows.iter().enumerate() {
            if let Ok(s) = u16::try_from(s) {
                row.set(s, open);
            }
        }
        self.stats.flows_row = Some(row);
    }

    /// Makes this worker count its clients' open flows in `counts`, which every worker
    /// of `flowgate run` shares, so that a service's `conn_limit` holds over all of them
    /// (a client's flows spread over the workers by RSS). Before the worker's first flow:
    /// a flow counted elsewhere would be uncounted here.
    pub fn set_conn_counts(&mut self, counts: Arc<ConnCounts>) {
        debug_assert_eq!(self.flows.len(), 0, "conn counts set under open flows");
        self.conns = Some(counts);
    }

    /// Server `s`'s open flows: over all the workers when they share a board
    /// ([`set_server_flows`](Worker::set_server_flows)), else this worker's.
    #[inline]
    fn open_flows(&self, s: u16) -> u64 {
        match &self.stats.flows_row {
            Some(row) => row.total(s),
            None => (self.stats.server_flows)
                .get(usize::from(s))
                .copied()
                .unwrap_or(0),
        }
    }

    /// True when server `s` may take one more new flow: it has no `max_flows`, or its
    /// open flows over all the workers hold less than that; a worker without a board
    /// ([`set_server_flows`](Worker::set_server_flows)) holds its own flows to its share
    /// of the limit.
    #[inline]
    fn has_room(&self, tables: &Tables, s: u16) -> bool {
        match tables
            .pipeline
            .servers
            .get(usize::from(s))
            .and_then(|x| x.max_flows)
        {
            None => true,
            Some(n) if self.stats.flows_row.is_some() => self.open_flows(s) < u64::from(n),
            Some(n) => self.open_flows(s) < u64::from(self.share.of(n)),
        }
    }

    /// `policy: least-flows`: of the members of service `i` with a weight above 0 in
    /// `weights` (a tier's, by member index) that `ok` takes, the one with the fewest
    /// open flows ([`open_flows`](Worker::open_flows)) for its weight; `start` (the
    /// flow's Maglev member) on ties. `None` when `ok` takes none.
    fn fewest_flows(
        &self,
        tables: &Tables,
        i: usize,
        weights: &[u32],
        start: u16,
        ok: impl Fn(u16) -> bool,
    ) -> Option<u16> {
        let members = &tables.pipeline.services[i].members;
        // (member, open flows, weight); fewer flows per weight wins: a/w < b/v ⇔ a·v < b·w.
        let figures = |j: u16| {
            let open = self.open_flows(members[usize::from(j)].server);
            (j, open, u64::from(weights[usize::from(j)]))
        };
        let weighs = |j: u16| weights[usize::from(j)] > 0;
        let mut best = (weighs(start) && ok(start)).then(|| figures(start));
        for j in 0..members.len() as u16 {
            // 0 also for a free member index (a reclaimed member), which names no server.
            if !weighs(j) || j == start || !ok(j) {
                continue;
            }
            let c = figures(j);
            if best.is_none_or(|b| {
                u128::from(c.1) * u128::from(b.2) < u128::from(b.1) * u128::from(c.2)
            }) {
                best = Some(c);
            }
        }
        best.map(|b| b.0)
    }

    /// The member of service `i` a new flow with tuple `t` goes to: its slot's in the
    /// Maglev table of the tier taking new flows ([`tier_weights`],
    /// [`Tables::placement_hash`]; with `policy: least-flows`, [`Worker::fewest_flows`]
    /// from there) or, when that server holds its `max_flows` (counted in
    /// `server_overflows`), another with room: the next member of the Maglev table with
    /// room ([`Maglev::next_taking`](crate::balance::maglev::Maglev::next_taking)), or
    /// under `least-flows` the one with the fewest flows for its weight; when none has,
    /// and the primaries are that tier, a backup with room, found the same way in the
    /// backups' table. The drop reason when none can take it: `no_server` (no server
    /// takes new flows) or `servers_full`.
    /// `moving`: the flow is not new but leaves a server that went down (its packets ask
    /// again until it has moved): no overflow is counted.
    #[inline]
    fn place(
        &mut self,
        tables: &Tables,
        i: usize,
        t: &Tuple,
        moving: bool,
    ) -> Result<u16, DropReason> {
        let h = tables.placement_hash(i, t);
        let table = &tables.maglev[i];
        let by_hash = table.lookup(h).ok_or(DropReason::NoServer)?;
        let least = tables.pipeline.services[i].policy == Policy::LeastFlows;
        let weights = &tables.weights[i];
        let first = if least {
            (self.fewest_flows(tables, i, weights, by_hash, |_| true)).unwrap_or(by_hash)
        } else {
            by_hash
        };
        let members = &tables.pipeline.services[i].members;
        let server = |b: u16| members[usize::from(b)].server;
        if self.has_room(tables, server(first)) {
            return Ok(first);
        }
        if !moving
            && let Some(n) = (self.stats.server_overflows).get_mut(usize::from(server(first)))
        {
            *n += 1;
        }
        let room = |b: u16| b != first && self.has_room(tables, server(b));
        // Another member of the table with room (its walk only when one has room).
        let other = |table: &Maglev, weights: &[u32], start: u16| {
            if least {
                self.fewest_flows(tables, i, weights, start, room)
            } else if room(start) {
                Some(start)
            } else if table.present().iter().any(|&b| room(b)) {
                table.next_taking(h, room)
            } else {
                None
            }
        };
        // `first` has no room: the next of the table (under least-flows, by flows).
        let start = if least { first } else { by_hash };
        if let Some(b) = other(table, weights, start) {
            return Ok(b);
        }
        // Every member of the tier is full: when that is the primaries, the backups take
        // the flow while one has room.
        let spill = tables.spill[i].as_ref().ok_or(DropReason::ServersFull)?;
        let start = spill.maglev.lookup(h).ok_or(DropReason::ServersFull)?;
        other(&spill.maglev, &spill.weights, start).ok_or(DropReason::ServersFull)
    }

    /// `rate_limit`: whether the client with source address `src` may open one more
    /// flow of service `i` at `now`: one from its own bucket (`per_source`, the worker's
    /// part by [`Worker::set_limit_share`]) and one from the service's (`total`, the
    /// worker's part of every limit, [`Worker::set_share`]: all clients' flows spread
    /// over the workers). A flow the service's bucket refuses gives its client's token
    /// back, and so does one no server then takes ([`Worker::refund`]): only the flows
    /// the service opens spend tokens.
    fn admit(&mut self, rl: &RateLimit, i: u16, src: &[u8; 16], now: u64) -> bool {
        let Some(t) = self.limits.as_mut() else {
            return true;
        };
        let client = rl.per_source.map(|b| (limit_key(rl, i, Some(src)), b));
        if let Some((key, b)) = client
            && !take(t, key, b, self.limit_share, now)
        {
            return false;
        }
        if let Some(b) = rl.total
            && !take(t, limit_key(rl, i, None), b, self.share, now)
        {
            if let Some((key, b)) = client {
                give_back(t, key, b, self.limit_share);
            }
            return false;
        }
        true
    }

    /// Gives back the tokens [`admit`](Worker::admit) took for a flow of service `i` from
    /// `src` that was not opened after all (no server could take it).
    fn refund(&mut self, rl: &RateLimit, i: u16, src: &[u8; 16]) {
        let Some(t) = self.limits.as_mut() else {
            return;
        };
        if let Some(b) = rl.per_source {
            give_back(t, limit_key(rl, i, Some(src)), b, self.limit_share);
        }
        if let Some(b) = rl.total {
            give_back(t, limit_key(rl, i, None), b, self.share);
        }
    }

    /// The tables in use.
    pub fn tables(&self) -> &Arc<Tables> {
        &self.tables
    }

    /// Switches to new tables between bursts. Flows keep their servers; new flows use the
    /// new Maglev tables; counters are kept. Refused (the old tables stay) unless the new
    /// pipeline only grows the current one ([`Pipeline::grows_into`]: servers, services,
    /// members and rules added after the existing ones): flows and counters hold
    /// indices into it. The counters grow with it. Changed
    /// timeouts apply to new flows at once, and to the flows already in the table as
    /// [`move_flows`](Worker::move_flows) moves them to the classes of their new
    /// timeouts in bounded steps ([`FlowTable::retime`](crate::flow::FlowTable::retime));
    /// a new `flow_table.capacity` gives the worker a new flow table, into which the open
    /// flows move the same way ([`FlowTable::resize`](crate::flow::FlowTable::resize)).
    ///
    /// A changed rule that [claims existing flows](crate::config::FlowRule::claims_existing)
    /// (an advertised flow) also starts a sweep of the flow table, done by
    /// [`sweep`](Worker::sweep) in bounded steps.
    ///
    /// Returns the tables it replaced (freeing a large pipeline's takes a while: the
    /// runtime hands them to the management thread).
    pub fn set_tables(&mut self, t: Arc<Tables>) -> Result<Arc<Tables>, ShapeChanged> {
        // Tables built after these ones ([`Tables::build_after`]) say what changed,
        // checked on the management core; others are checked here.
        let after = t
            .after
            .as_ref()
            .filter(|a| a.generation == self.tables.generation);
        if after.is_none() && !self.tables.pipeline.grows_into(&t.pipeline) {
            return Err(ShapeChanged);
        }
        // New timeouts: each gets a class of the flow table; flows whose timeout changed
        // move to theirs in the background (`move_flows`). Allocates: a reload that
        // changed them.
        let (p0, p1) = (&self.tables.pipeline, &t.pipeline);
        let timeouts = after.map_or_else(
            || p0.flow_table != p1.flow_table || self.tables.rule_idle != t.rule_idle,
            |a| a.timeouts,
        );
        if timeouts {
            let (stats, conns) = (&mut self.stats, self.conns.as_deref());
            let r = (self.flows).retime(&p1.flow_table, &t.rule_idle, self.clock, |k, f| {
                evicted(stats, conns, k, f)
            });
            debug_assert!(r.is_ok(), "grows_into checked the timeouts: {r:?}");
            if r.is_err() {
                return Err(ShapeChanged);
            }
        }
        // A new size: a new table, into which the open flows move in the background
        // (`move_flows`) or when a packet finds them in the old one.
        if p0.flow_table.capacity != p1.flow_table.capacity {
            let (stats, conns) = (&mut self.stats, self.conns.as_deref());
            (self.flows).resize(p1.flow_table.capacity, self.clock, |k, f| {
                evicted(stats, conns, k, f)
            });
            if self.sweep_at.is_some() {
                // The slots it had passed are another table's now: from the start again,
                // once the flows are in the new table (`sweep`).
                self.sweep_at = Some(0);
            }
        }
        // Counters for what the pipeline gained (allocates only when it grew: a reload),
        // fresh ones where an entry changed.
        match after {
            Some(a) => self.stats.adopt(p1, &a.changed),
            None => self.stats.adopt(p1, &p0.changed_entries(p1)),
        }
        // One mark per rule (grows, allocating, only when a reload added rules).
        self.sweep_pending.resize(p1.flow_rules.len(), false);
        // Buckets for the first rate limit a reload brings, counts for the first
        // connection limit (allocates then only).
        if self.limits.is_none() {
            self.limits = limits_for(p1);
        }
        if self.conns.is_none() {
            self.conns = conns_for(p1);
        }
        let (claims, narrowed) = match after {
            Some(a) => (Cow::Borrowed(&a.claims[..]), Cow::Borrowed(&a.narrowed[..])),
            None => (
                Cow::Owned(claims_changed(p0, p1)),
                Cow::Owned(p0.allow_narrowed(p1)),
            ),
        };
        for &i in claims.iter() {
            self.sweep_pending[usize::from(i)] = true;
        }
        self.revoke_pending.resize(p1.services.len(), false);
        for &i in narrowed.iter() {
            self.revoke_pending[usize::from(i)] = true;
        }
        if !claims.is_empty() || !narrowed.is_empty() {
            // From the start again: flows already passed may match the new change.
            self.sweep_at = Some(0);
        }
        Ok(std::mem::replace(&mut self.tables, t))
    }

    /// Goes on moving the open flows whose timeout a reload changed to the classes of
    /// their new timeouts (at most `max` slots, at the time of the last
    /// [`expire`](Worker::expire) call; call once per poll loop, like `expire`); returns
    /// how many it moved. Until the pass reaches it, a flow keeps its old timeout. A no-op
    /// when no pass is due.
    pub fn move_flows(&mut self, max: usize) -> usize {
        let (stats, conns) = (&mut self.stats, self.conns.as_deref());
        self.flows
            .move_step(max, self.clock, |k, f| evicted(stats, conns, k, f))
    }

    /// The flow table a finished resize emptied, not freed yet: freeing it unmaps its
    /// memory (milliseconds for 1M flows), which a poll loop hands to another thread
    /// (dropped with the worker, or at the next resize, otherwise).
    pub fn take_retired_table(&mut self) -> Option<Box<dyn Send>> {
        self.flows.take_retired().map(|t| t as Box<dyn Send>)
    }

    /// True while a pass started by [`set_tables`](Worker::set_tables) for changed
    /// timeouts or a new flow-table size is unfinished ([`move_flows`](Worker::move_flows)).
    pub fn moves_due(&self) -> bool {
        self.flows.moving()
    }

    /// True while a sweep started by [`set_tables`](Worker::set_tables) is unfinished.
    pub fn sweep_due(&self) -> bool {
        self.sweep_at.is_some()
    }

    /// Goes on with the sweep of the flow table (at most `max` slots; call once per poll
    /// loop, like [`expire`](Worker::expire)); returns how many flows it moved. Each flow
    /// is reconsidered when the first rule claiming existing flows that matches its
    /// creating packet's addresses, protocol and ports has changed, or the rule that holds
    /// it has: it moves to the matching rule (its target, and its QoS from then on), or,
    /// matched by none, keeps its server and goes back under the service whose address
    /// and port it went to ([`Owner::Other`], no QoS, when there is none). Flows of the
    /// operator's rules are never taken.
    ///
    /// A flow of a service whose `allow` list a reload narrowed, from a client the list
    /// no longer takes, is removed (counted in the service's `revoked`): the client's next
    /// packet finds no flow and is dropped as `not_allowed`, as a new one would be.
    ///
    /// A no-op when no sweep is due, and while a resize's move is under way (the sweep
    /// waits for it).
    pub fn sweep(&mut self, max: usize) -> usize {
        let Some(from) = self.sweep_at else {
            return 0;
        };
        if self.flows.resizing() {
            // Flows moving into the new table could pass behind the sweep: it waits
            // until they are all there (a resize's move is short).
            return 0;
        }
        let p = &self.tables.pipeline;
        let (claiming, pending) = (&self.tables.sweep_rules, &self.sweep_pending);
        let revoking = &self.revoke_pending;
        let mut moved = 0;
        let (stats, conns) = (&mut self.stats, self.conns.as_deref());
        self.sweep_at = self.flows.table.visit_retain(from, max, |k, f| {
            if let Owner::Service(i) = f.owner
                && revoking.get(usize::from(i)) == Some(&true)
            {
                let allow = &p.services[usize::from(i)].allow;
                let ((client, _), _) = ends(k, f);
                if !allow.is_empty() && !allow.contains(u128::from_be_bytes(client)) {
                    gone(stats, conns, k, f);
                    stats.svc_revoked[usize::from(i)] += 1;
                    return false;
                }
            }
            if let Some(mut g) = reconsider(p, claiming, pending, k, *f) {
                if g.target != f.target || g.owner != f.owner {
                    stats.flow_out(f);
                    stats.flow_in(&g);
                }
                if g.owner != f.owner {
                    // Counted under its service only while it is the service's.
                    uncount(conns, k, f);
                    g.set_counted(false);
                }
                *f = g;
                moved += 1;
            }
            true
        });
        if self.sweep_at.is_none() {
            self.sweep_pending.fill(false);
            self.revoke_pending.fill(false);
        }
        self.stats.flows_moved += moved as u64;
        moved
    }

    /// The memory of the flow table, as `(start, bytes)` regions (see
    /// [`LruTable::memory`]).
    pub fn memory(&self) -> [(*const u8, usize); 3] {
        self.flows.table.memory()
    }

    /// Live flows.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// Expires idle flows and fragment records (call once per burst; bounded work).
    pub fn expire(&mut self, now: u64, max: usize) {
        self.clock = self.clock.max(now);
        let stats = &mut self.stats;
        let conns = self.conns.as_deref();
        let n = self.flows.expire(now, max, |k, f| gone(stats, conns, k, f));
        self.stats.flows_expired += n as u64;
        self.frags.expire(now, max, |_, _| {});
        if let Some(l) = self.limits.as_mut() {
            l.expire(now, max, |_, _| {});
        }
    }

    /// The frames the last [`process`](Worker::process) or
    /// [`process_burst`](Worker::process_burst) call made beyond the ones it was given,
    /// in order: each with the index of the frame it follows (0 for `process`) and goes
    /// out with, on that frame's route. Today these are IPv4 fragments: a frame cut to
    /// fit `system.mtu` leaves as its first fragment, and the rest are here.
    pub fn extra_frames(&self) -> impl Iterator<Item = (usize, &[u8])> + '_ {
        let mut start = 0;
        self.extra_ends.iter().map(move |&(i, end)| {
            let f = &self.extra[start..end as usize];
            start = end as usize;
            (i as usize, f)
        })
    }

    /// Processes one frame in place. On `Outcome::route` the frame in `buf` is ready to
    /// send on `route.port`; on `Outcome::drop` it must be freed. Counters are updated.
    pub fn process<B: PacketBuf + ?Sized>(
        &mut self,
        buf: &mut B,
        in_port: u16,
        now: u64,
    ) -> Outcome {
        self.stats.packets_in += 1;
        self.extra.clear();
        self.extra_ends.clear();
        self.current = 0;
        let tables = Arc::clone(&self.tables);
        let mut out = Outcome::default();
        match parse::parse(buf.data()) {
            Ok(m) => {
                let (key, swapped) = FlowKey::of(&m.flow_tuple());
                let hash = self.flows.table.hash(&key);
                let k = (key, swapped, hash);
                self.decide(&tables, buf, &m, &k, in_port, now, &mut out);
            }
            Err(r) => drop_into(&mut out, r),
        }
        self.count(&out);
        out
    }

    /// Processes a burst of frames: parses all, prefetches their flow-table lines together
    /// so the cache misses overlap, then decides each. `outs[i]` is the outcome of `bufs[i]`.
    ///
    /// # Panics
    /// If `outs` is shorter than `bufs` (a programming error, not an input error).
    pub fn process_burst<B: PacketBuf>(
        &mut self,
        bufs: &mut [B],
        in_port: u16,
        now: u64,
        outs: &mut [Outcome],
    ) {
        // A shorter `outs` would leave frames unprocessed and uncounted: a caller bug.
        assert!(
            outs.len() >= bufs.len(),
            "process_burst: outs shorter than bufs"
        );
        const N: usize = 32;
        let tables = Arc::clone(&self.tables);
        self.extra.clear();
        self.extra_ends.clear();
        for (c, (bufs, outs)) in bufs.chunks_mut(N).zip(outs.chunks_mut(N)).enumerate() {
            // Kept between bursts (every entry a frame uses is written first), so that a
            // burst does not start by clearing 32 `Meta`s.
            let mut metas = std::mem::take(&mut self.burst_metas);
            let mut keys = std::mem::take(&mut self.burst_keys);
            metas.resize(N, Meta::default());
            keys.resize(N, (FlowKey::default(), false, 0));
            let mut parsed = [false; N];
            // Frames the express parser took: their TCP flags, IP version, VLAN tag.
            let mut fast = [None; N];
            // Parse, hash, and start loading each packet's bucket; `LAG` packets later,
            // when that bucket has had the time of `LAG` parses to arrive, read it and
            // start loading the hot slot it names. The two dependent misses of every
            // lookup overlap with each other, with the other lookups and with parsing.
            const LAG: usize = 12;
            let table = &self.flows.table;
            let n = bufs.len();
            // A router answers a frame whose TTL runs out on the general path, and so
            // is a frame over the MTU (which `express::parse` refuses).
            let min_ttl = if tables.express.router { 2 } else { 0 };
            let mtu = tables.express.mtu;
            for (i, b) in bufs.iter().enumerate() {
                if let Some(x) = express::parse(b.data(), mtu)
                    && x.ttl >= min_ttl
                {
                    let (key, swapped) = FlowKey::of(&x.tuple);
                    let h = table.hash(&key);
                    table.prefetch_bucket(h);
                    keys[i] = (key, swapped, h);
                    fast[i] = Some((x.tcp_flags, x.v6, x.tagged));
                    parsed[i] = true;
                } else {
                    self.parse_one(b.data(), &mut metas[i], &mut keys[i], &mut outs[i]);
                    parsed[i] = outs[i].drop.is_none();
                    if parsed[i] {
                        table.prefetch_bucket(keys[i].2);
                    }
                }
                if i >= LAG && parsed[i - LAG] {
                    table.prefetch_slot(keys[i - LAG].2);
                }
            }
            for i in n.saturating_sub(LAG)..n {
                if parsed[i] {
                    table.prefetch_slot(keys[i].2);
                }
            }
            // The express candidates' lookups, in one tight loop: their slot reads overlap
            // (any still missing the cache) and the table's fields stay in registers.
            let mut found = [None; N];
            for i in 0..n {
                if fast[i].is_some() {
                    found[i] = table.find_hashed(&keys[i].0, keys[i].2);
                }
            }
            let changes = table.changes();
            self.stats.packets_in += n as u64;
            for (i, b) in bufs.iter_mut().enumerate() {
                let done = fast[i].is_some_and(|shape| {
                    // An earlier frame of the burst may have inserted or removed a flow
                    // (an eviction can reuse the slot found): then look again.
                    let h = if self.flows.table.changes() == changes {
                        found[i]
                    } else {
                        self.flows.table.find_hashed(&keys[i].0, keys[i].2)
                    };
                    self.express(&tables, b, &keys[i], h, shape, now, &mut outs[i])
                });
                if !done {
                    if fast[i].is_some() {
                        // Not an express flow (a new connection's SYN, say): the general
                        // path needs the general parse's `Meta`. The key and hash stay:
                        // the general parser finds the same tuple (a property test
                        // checks it).
                        outs[i] = Outcome::default();
                        if let Err(r) = parse::parse_into(b.data(), &mut metas[i]) {
                            drop_into(&mut outs[i], r);
                            parsed[i] = false;
                        }
                    }
                    if parsed[i] {
                        // (Only the general path makes extra frames.)
                        self.current = (c * N + i) as u32;
                        self.decide(&tables, b, &metas[i], &keys[i], in_port, now, &mut outs[i]);
                    }
                }
                self.count(&outs[i]);
            }
            self.burst_metas = metas;
            self.burst_keys = keys;
        }
    }

    /// The general parse of one frame of a burst: its `Meta` and key triple, or the drop
    /// in `out`.
    #[inline]
    fn parse_one(&self, d: &[u8], m: &mut Meta, key: &mut (FlowKey, bool, u64), out: &mut Outcome) {
        *out = Outcome::default();
        match parse::parse_into(d, m) {
            Ok(()) => {
                let (k, swapped) = FlowKey::of(&m.flow_tuple());
                *key = (k, swapped, self.flows.table.hash(&k));
            }
            Err(r) => drop_into(out, r),
        }
    }

    /// The express path (see [`express`]): handles a packet of an express flow into
    /// `out` and returns true, or returns false having changed nothing.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn express<B: PacketBuf>(
        &mut self,
        tables: &Tables,
        buf: &mut B,
        &(fkey, swapped, _): &(FlowKey, bool, u64),
        found: Option<crate::flow::Handle>,
        (tcp_flags, v6, tagged): (u8, bool, bool),
        now: u64,
        out: &mut Outcome,
    ) -> bool {
        let Some(h) = found else {
            return false;
        };
        let f = *self.flows.table.get(h);
        let (Owner::Service(svc), Target::Server(server)) = (f.owner, f.target) else {
            return false;
        };
        let forward = f.swapped() == swapped;
        let tcp = fkey.proto == 6;
        let state = f.tcp();
        // (Syn and Closing, the odd states: one test on the hit path.)
        const _: () = assert!(
            TcpState::Syn as u8 & 1 == 1
                && TcpState::Closing as u8 & 1 == 1
                && TcpState::Established as u8 & 1 == 0
                && TcpState::None as u8 & 1 == 0
        );
        if tcp && state as u8 & 1 != 0 {
            // A new connection reusing a closed one's tuple; or a connection its server
            // has not answered yet, to a server with a passive health check (the general
            // path counts its failures and moves it off a server taken out).
            if state == TcpState::Closing && forward && syn_only(tcp_flags)
                || state == TcpState::Syn && tables.express.watched(server)
            {
                return false;
            }
        } else if !tcp && !f.replied() && tables.express.watched(server) {
            // The same for a UDP flow its server has never answered.
            return false;
        }
        // Forward routes exist only for servers that are up; a response also needs its
        // server up (the general path moves a flow off a down server in both directions).
        let Some(fwd) = tables.express.route(svc, server, true) else {
            return false;
        };
        let r = if forward {
            fwd
        } else {
            match tables.express.route(svc, server, false) {
                Some(r) => r,
                None => return false,
            }
        };
        // A tagged frame keeps its tag: QoS that pushes one or sets a priority (which
        // would rewrite the tag's) is the general path's.
        if tagged && r.qos.tag.is_some() {
            return false;
        }
        self.step(h, f, tcp.then_some(tcp_flags), forward, now);
        *out = Outcome {
            kind: Kind::Flow { reverse: !forward },
            ..Outcome::default()
        };
        match express::rewrite(buf, &r.qos, &r.macs, v6, tagged) {
            Ok(()) => out.route = r.route,
            Err(e) => out.drop = Some(e),
        }
        true
    }

    /// Advances flow `h` (whose value was `f`) by one packet: its replied and assured
    /// marks, its TCP state when `tcp_flags` is given, its timer.
    #[inline(always)]
    fn step(
        &mut self,
        h: u32,
        mut f: crate::flow::Flow,
        tcp_flags: Option<u8>,
        forward: bool,
        now: u64,
    ) {
        let class = f.class;
        // A first reply, or the creator's next packet after one, which assures the flow:
        // it leaves its class's unassured twin (the first to go from a full table).
        if f.marks_change(forward) {
            f.mark(forward);
            f.class = self
                .flows
                .class(self.flows.base_class(f.class), f.assured());
        }
        if let Some(flags) = tcp_flags
            && f.tcp() != TcpState::None
        {
            // A new state is a new timeout's class; in the same state the flow stays in
            // its class (a reload's new timeouts reach it by `move_flows`).
            let s = tcp_next(f.tcp(), flags, forward);
            if s != f.tcp() {
                f.set_tcp(s);
                f.class = self.flows.tcp_class(s, f.assured());
            }
        }
        // The class says what the assured mark says (the mark spares the hit path a
        // look at the class).
        debug_assert_eq!(self.flows.assured_class(f.class), f.assured());
        // Written back whole even when nothing changed: measured faster on the hit path
        // than a skipped write with the changes out of line (ARCHITECTURE, flow table).
        *self.flows.table.get_mut(h) = f;
        if f.class == class {
            self.flows.table.touch(h, class, now);
        } else {
            self.reclassed(h, now);
        }
    }

    /// Flow `h`, just stepped at `now`, changed class: a new TCP state's timeout, or its
    /// assured twin. When it is a connection that began closing (a FIN or RST), it no
    /// longer counts against its client's `conn_limit`. (Out of line, as the table's
    /// relinking is anyway: nothing of it in the hit path's code. A closing timeout equal
    /// to the open state's keeps the class: the connection then counts until it ends.)
    #[inline(never)]
    fn reclassed(&mut self, h: u32, now: u64) {
        let f = *self.flows.table.get(h);
        if f.counted() && f.tcp() == TcpState::Closing {
            uncount(self.conns.as_deref(), self.flows.table.key(h), &f);
            self.flows.table.get_mut(h).set_counted(false);
        }
        self.flows.table.touch_reclass(h, f.class, now);
    }

    #[inline]
    fn count(&mut self, out: &Outcome) {
        match (out.route, out.drop) {
            (Some(r), None) => {
                self.stats.packets_out += 1;
                if r.svc != NONE16 {
                    self.stats.svc_packets[r.svc as usize] += 1;
                    if r.member != NONE16 {
                        self.stats.svc_server_packets[r.svc as usize][r.member as usize] += 1;
                    }
                }
                if r.rule != NONE16 {
                    self.stats.rule_packets[r.rule as usize] += 1;
                }
            }
            (_, Some(d)) => self.stats.drops[d as usize] += 1,
            (None, None) => self.stats.drops[DropReason::Unmatched as usize] += 1,
        }
    }

    /// Decides one parsed frame into `out` (overwritten): the flow-hit path here, the
    /// rest out of line. The key triple is the frame's flow key (the quoted packet's for
    /// an ICMP error), its orientation and its hash, computed once by the caller.
    #[allow(clippy::too_many_arguments)]
    fn decide<B: PacketBuf + ?Sized>(
        &mut self,
        tables: &Tables,
        buf: &mut B,
        m: &Meta,
        &(fkey, swapped, hash): &(FlowKey, bool, u64),
        in_port: u16,
        now: u64,
        out: &mut Outcome,
    ) {
        *out = Outcome::default();

        // ARP and neighbour discovery for owned addresses.
        if m.l3 == L3::Arp
            || (m.v6 && m.tuple.proto == 58 && (m.icmp_type == 135 || m.icmp_type == 136))
        {
            *out = self.answer(tables, buf, m, in_port, *out);
            return;
        }

        // Pings to the system's own addresses are answered, whatever their TTL (inside
        // MPLS they are forwarded by their label, as before).
        if reply::is_echo_request(m)
            && m.n_mpls == 0
            && tables.pipeline.addresses.contains(&m.dst_ip())
        {
            *out = self.pong(tables, buf, m, in_port, *out);
            return;
        }

        // A router does not forward a packet whose TTL or hop limit runs out here.
        if tables.pipeline.forwarding == Forwarding::Router
            && m.ttl <= 1
            && m.n_mpls == 0
            && matches!(m.l3, L3::Ipv4 | L3::Ipv6)
        {
            *out = self.expired(tables, buf, m, in_port, now, *out);
            return;
        }

        // Non-first fragments follow their first fragment.
        if m.frag == Frag::Later {
            let fk = frag_key(m);
            match self.frags.find(&fk) {
                Some(h) => {
                    let rec = *self.frags.get(h);
                    out.kind = Kind::Fragment;
                    self.emit(tables, buf, m, rec.route, in_port, now, out);
                }
                None => drop_into(out, DropReason::FragmentNoFirst),
            }
            return;
        }

        let is_ip = matches!(m.l3, L3::Ipv4 | L3::Ipv6);

        let mut route = None;
        let (stats, conns) = (&mut self.stats, self.conns.as_deref());
        let found = is_ip
            .then(|| (self.flows).find(&fkey, hash, now, |k, f| evicted(stats, conns, k, f)))
            .flatten();
        if let Some(h) = found {
            let f = *self.flows.table.get(h);
            // An ICMP error travels against the packet it quotes (to that packet's
            // sender): an error quoting a server's response goes to the server (a path
            // MTU error from a router outside), one quoting a client's packet goes back
            // to the client (a server's port unreachable).
            let forward = (f.swapped() == swapped) != m.quoted.is_some();
            let syn_only = m.tuple.proto == 6 && syn_only(m.tcp_flags);
            if f.tcp() == TcpState::Closing && forward && syn_only && m.quoted.is_none() {
                // A new connection reusing the tuple of a closed one: start afresh.
                self.flows.table.remove(h);
                gone(&mut self.stats, self.conns.as_deref(), &fkey, &f);
            } else {
                route = self.follow(tables, h, m, forward, now, out);
                if route.is_none() && out.drop.is_some() {
                    return;
                }
            }
        }

        let route = match route {
            Some(r) => r,
            None => {
                let src_mac: Mac = mac_at(buf.data(), 6);
                match self.miss(
                    tables, buf, m, fkey, hash, swapped, src_mac, in_port, now, out,
                ) {
                    Some(r) => r,
                    None => return,
                }
            }
        };

        if m.frag == Frag::First {
            let fk = frag_key(m);
            match self.frags.find(&fk) {
                Some(h) => self.frags.get_mut(h).route = route,
                None => {
                    self.frags.insert(fk, FragRec { route }, 0, now);
                }
            }
        }
        self.emit(tables, buf, m, route, in_port, now, out);
    }

    /// Routes a packet of flow `h`; updates its TCP state and timers.
    /// A frame no flow took: classify it, and create a flow when it starts one. `None`
    /// when it is dropped (`out.drop` says why) or answered in its place (`out.route`,
    /// a service with `no_server: reject` and no server).
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn miss<B: PacketBuf + ?Sized>(
        &mut self,
        tables: &Tables,
        buf: &mut B,
        m: &Meta,
        fkey: FlowKey,
        hash: u64,
        swapped: bool,
        src_mac: Mac,
        in_port: u16,
        now: u64,
        out: &mut Outcome,
    ) -> Option<Route> {
        let p = &tables.pipeline;
        let is_ip = matches!(m.l3, L3::Ipv4 | L3::Ipv6);
        let key = class_key(m, in_port);
        let d = tables.classifier.classify(&key);
        out.decision = Some(d);
        let create = is_ip && m.quoted.is_none();
        match d {
            Decision::Service(i) if create => {
                let i = i as u16;
                let allow = &p.services[usize::from(i)].allow;
                if !allow.is_empty() && !allow.contains(u128::from_be_bytes(m.tuple.src)) {
                    self.stats.svc_denied[usize::from(i)] += 1;
                    drop_into(out, DropReason::NotAllowed);
                    return None;
                }
                // Only what opens a flow is held to a rate limit: a TCP SYN, or the
                // first packet of another protocol's flow.
                let limit = (p.services[usize::from(i)].rate_limit.as_ref())
                    .filter(|_| m.tuple.proto != 6 || syn_only(m.tcp_flags));
                if let Some(rl) = limit
                    && !self.admit(rl, i, &m.tuple.src, now)
                {
                    self.stats.svc_limited[usize::from(i)] += 1;
                    drop_into(out, DropReason::RateLimited);
                    return None;
                }
                // The same flows are held to the client's open flows (`conn_limit`); a
                // flow a mid-connection packet opens is neither refused nor counted.
                let opens = m.tuple.proto != 6 || syn_only(m.tcp_flags);
                let counted = match (p.services[usize::from(i)].conn_limit, &self.conns) {
                    (Some(cl), Some(c)) if opens => {
                        if !c.open(i, &m.tuple.src, cl.per_source) {
                            if let Some(rl) = limit {
                                self.refund(rl, i, &m.tuple.src);
                            }
                            self.stats.svc_conn_limited[usize::from(i)] += 1;
                            drop_into(out, DropReason::ConnLimited);
                            return None;
                        }
                        true
                    }
                    _ => false,
                };
                let member = match self.place(tables, usize::from(i), &m.tuple, false) {
                    Ok(member) => member,
                    Err(why) => {
                        if let Some(rl) = limit {
                            self.refund(rl, i, &m.tuple.src);
                        }
                        if counted && let Some(c) = &self.conns {
                            c.close(i, &m.tuple.src);
                        }
                        *out = self.no_server(tables, buf, m, i, why, in_port, now, *out);
                        return None;
                    }
                };
                let server = p.services[i as usize].members[member as usize].server;
                let target = Target::Server(server);
                self.create(
                    fkey,
                    hash,
                    swapped,
                    m,
                    src_mac,
                    in_port,
                    target,
                    Owner::Service(i),
                    counted,
                    now,
                );
                self.stats.svc_flows[i as usize] += 1;
                out.kind = Kind::NewFlow;
                Some(route_to(
                    &tables.pipeline,
                    target,
                    QosSel::Service(i),
                    i,
                    member,
                    NONE16,
                ))
            }
            Decision::FlowRule(i) => {
                let i = i as u16;
                let rule = &p.flow_rules[i as usize];
                if rule.target == Target::Drop {
                    drop_into(out, DropReason::RuleDrop);
                    return None;
                }
                if create {
                    self.create(
                        fkey,
                        hash,
                        swapped,
                        m,
                        src_mac,
                        in_port,
                        rule.target,
                        Owner::Rule(i),
                        false,
                        now,
                    );
                    self.stats.rule_flows[i as usize] += 1;
                    out.kind = Kind::NewFlow;
                } else {
                    out.kind = Kind::Stateless;
                }
                Some(route_to(
                    &tables.pipeline,
                    rule.target,
                    QosSel::Rule(i),
                    NONE16,
                    NONE16,
                    i,
                ))
            }
            _ if is_ip && m.n_mpls == 0 && tables.own.contains(&m.dst_ip()) => {
                // For the system itself (a VIP's port no service listens on, an echo
                // reply, an error quoting a flow gone): `default` would send it back to
                // the gateway, which routes it here again, round and round until its
                // TTL runs out. A ping of a VIP is answered, as of a system address.
                if reply::is_echo_request(m) {
                    *out = self.pong(tables, buf, m, in_port, *out);
                } else {
                    drop_into(out, DropReason::Unserved);
                }
                None
            }
            _ => {
                out.kind = Kind::Stateless;
                let from_server = tables.server_by_mac.contains_key(&src_mac);
                let target = if from_server {
                    Target::Gateway
                } else {
                    p.default
                };
                if target == Target::Drop {
                    drop_into(out, DropReason::Unmatched);
                    return None;
                }
                let route = route_to(p, target, QosSel::None, NONE16, NONE16, NONE16);
                // Not back out of the port it came in on to the station that sent it
                // (the gateway's own multicast and broadcast, such as VRRP, router
                // advertisements, OSPF hellos, DHCP, or a packet the gateway routed
                // here that `default` would route back: a loop), and never a frame to
                // an IEEE 802.1 reserved group address (STP, LACP, LLDP, 802.1X: a
                // bridge's own links' traffic, which no bridge forwards).
                if route.port == in_port && route.mac == src_mac {
                    drop_into(out, DropReason::Reflected);
                    return None;
                }
                let dst_mac = mac_at(buf.data(), 0);
                if dst_mac[..5] == [0x01, 0x80, 0xc2, 0x00, 0x00] && dst_mac[5] < 0x10 {
                    drop_into(out, DropReason::LinkLocal);
                    return None;
                }
                Some(route)
            }
        }
    }

    #[inline]
    fn follow(
        &mut self,
        tables: &Tables,
        h: u32,
        m: &Meta,
        forward: bool,
        now: u64,
        out: &mut Outcome,
    ) -> Option<Route> {
        let p = &tables.pipeline;
        let mut f = *self.flows.table.get(h);
        out.kind = Kind::Flow { reverse: !forward };
        // The passive health check's failures, for a server with `max_fails`, on a flow
        // it has not answered: the client's SYN again, a reset from the server, or the
        // server's port (or protocol) unreachable, UDP's refusal.
        let watched = |s: u16| {
            p.servers
                .get(usize::from(s))
                .is_some_and(|x| x.max_fails.is_some())
        };
        if let Target::Server(s) = f.target
            && !f.replied()
            && watched(s)
        {
            let failed = match m.quoted {
                Some(_) => !forward && unreachable_port(m),
                None if m.tuple.proto == 6 && f.tcp() == TcpState::Syn => {
                    if forward {
                        syn_only(m.tcp_flags)
                    } else {
                        m.tcp_flags & crate::flow::tcp_flags::RST != 0
                    }
                }
                None => false,
            };
            if failed && let Some(n) = self.stats.server_fails.get_mut(usize::from(s)) {
                *n += 1;
            }
        }
        if m.quoted.is_none() {
            // A TCP connection not answered yet, or a UDP flow never answered.
            let unanswered = !f.replied()
                && match m.tuple.proto {
                    6 => f.tcp() == TcpState::Syn,
                    17 => true,
                    _ => false,
                };
            // A server that went down: move the flow (its connections are lost anyway), to
            // where a new flow of this client would go, whichever way this packet goes.
            // So too a flow it never answered once the passive health check took it
            // out, on the client's next packet (a TCP client's SYN again).
            if let (Target::Server(s), Owner::Service(i)) = (f.target, f.owner)
                && p.servers.get(s as usize).is_some_and(|x| {
                    x.state == ServerState::Down || x.ejected && unanswered && forward
                })
                && let Ok(mb) = self.place(
                    tables,
                    usize::from(i),
                    &if forward { m.tuple } else { m.tuple.reversed() },
                    true,
                )
            {
                self.stats.flow_out(&f);
                f.target = Target::Server(p.services[i as usize].members[mb as usize].server);
                self.stats.flow_in(&f);
            }
            self.step(
                h,
                f,
                (m.tuple.proto == 6).then_some(m.tcp_flags),
                forward,
                now,
            );
        }
        let (svc, rule) = match f.owner {
            Owner::Service(i) => (i, NONE16),
            Owner::Rule(i) => (NONE16, i),
            Owner::Other => (NONE16, NONE16),
        };
        if forward {
            let (qos, member) = match f.owner {
                Owner::Service(i) => (QosSel::Service(i), Self::member_in(tables, i, f.target)),
                Owner::Rule(i) => (QosSel::Rule(i), NONE16),
                Owner::Other => (QosSel::None, NONE16),
            };
            if f.target == Target::Drop {
                out.drop = Some(DropReason::RuleDrop);
                return None;
            }
            return Some(route_to(&tables.pipeline, f.target, qos, svc, member, rule));
        }
        let qos = match f.owner {
            Owner::Service(i) => QosSel::ServiceReply(i),
            Owner::Rule(i) => QosSel::RuleReply(i),
            Owner::Other => QosSel::None,
        };
        match f.target {
            Target::Server(_) => Some(route_to(
                &tables.pipeline,
                Target::Gateway,
                qos,
                svc,
                NONE16,
                rule,
            )),
            _ => Some(Route {
                mac: f.origin_mac,
                port: f.origin_port,
                qos,
                svc,
                member: NONE16,
                rule,
                server: NONE16,
            }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        key: FlowKey,
        hash: u64,
        swapped: bool,
        m: &Meta,
        src_mac: Mac,
        in_port: u16,
        target: Target,
        owner: Owner,
        counted: bool,
        now: u64,
    ) {
        let tcp = if m.tuple.proto == 6 {
            if syn_only(m.tcp_flags) {
                TcpState::Syn
            } else if m.tcp_flags & (tcp_flags::FIN | tcp_flags::RST) != 0 {
                TcpState::Closing
            } else {
                TcpState::Established
            }
        } else {
            TcpState::None
        };
        let class = self.flows.base_class_of(tcp, owner);
        // Unassured until its creator speaks again after a reply.
        let class = self.flows.class(class, false);
        let mut flow = crate::flow::Flow::new(target, owner, src_mac, in_port, swapped, tcp, class);
        flow.set_counted(counted);
        self.stats.flows_created += 1;
        self.stats.flow_in(&flow);
        if let Inserted::Evicted(_, k, f) =
            self.flows.table.insert_hashed(key, hash, flow, class, now)
        {
            evicted(&mut self.stats, self.conns.as_deref(), &k, &f);
        }
    }

    #[inline]
    fn member_in(tables: &Tables, svc: u16, target: Target) -> u16 {
        match target {
            Target::Server(s) if (s as usize) < tables.pipeline.servers.len() => {
                let n = tables.pipeline.servers.len();
                tables
                    .member_of
                    .get(svc as usize * n + s as usize)
                    .copied()
                    .unwrap_or(NONE16)
            }
            _ => NONE16,
        }
    }

    /// Rewrites the frame for `route` (TTL in router mode, QoS, MACs) into `out`, or,
    /// when it would leave larger than `system.mtu`, answers or drops it (see
    /// [`Worker::too_big`]).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn emit<B: PacketBuf + ?Sized>(
        &mut self,
        tables: &Tables,
        buf: &mut B,
        m: &Meta,
        route: Route,
        in_port: u16,
        now: u64,
        out: &mut Outcome,
    ) {
        let q = tables.qos(route.qos);
        let mut cut = None;
        if let Some(mtu) = tables.pipeline.mtu_for(route.port)
            && mtu_bytes(buf.data().len(), m, q) > usize::from(mtu)
        {
            // An IPv4 packet without DF is cut into fragments once rewritten; anything
            // else is answered or dropped.
            match fragmentable(buf.data(), m, q, mtu) {
                Some(c) => cut = Some(c),
                None => {
                    *out = self.too_big(tables, buf, m, q, mtu, in_port, now, *out);
                    return;
                }
            }
        }
        // A router lowers the TTL (the IP header is still where the parser found it).
        if tables.pipeline.forwarding == Forwarding::Router && m.n_mpls == 0 {
            let off = usize::from(m.l3_off);
            if let Err(r) = action::dec_ttl(buf.data_mut(), m.l3, off) {
                drop_into(out, r);
                return;
            }
        }
        let before = buf.data().len();
        if let Err(r) = action::apply_qos(buf, m, q) {
            drop_into(out, r);
            return;
        }
        action::set_macs(buf, route.mac, tables.pipeline.mac);
        if let Some(c) = cut {
            // The rewrite added or removed tags and labels in front of the IP header.
            let l3 = (usize::from(m.l3_off) + buf.data().len()).checked_sub(before);
            if !l3.is_some_and(|l3| self.fragment(buf, l3, c)) {
                drop_into(out, DropReason::MtuExceeded);
                return;
            }
        }
        out.route = Some(route);
    }

    /// Cuts the rewritten IPv4 packet in `buf`, whose IP header is at `l3`, as `c` says:
    /// fragments of at most `c.chunk` bytes of payload, the first staying in `buf`, the
    /// others going to the extra frames, each with the frame's headers before the IP
    /// header and an IP header with its length, offset, MF flag and checksum. Options
    /// go whole into the first fragment; in the others those without the copied flag are
    /// overwritten with no-operations (RFC 791, as Linux does), so every fragment's
    /// header has the same length. False, with nothing changed, when they do not fit
    /// what is left of [`EXTRA_CAPACITY`].
    fn fragment<B: PacketBuf + ?Sized>(&mut self, buf: &mut B, l3: usize, c: Cut) -> bool {
        let hl = c.header;
        let payload = c.ip_len - hl;
        let pieces = payload.div_ceil(c.chunk);
        let room = self.extra.len() + payload + (pieces - 1) * (l3 + hl) <= EXTRA_CAPACITY
            && self.extra_ends.len() + pieces <= self.extra_ends.capacity();
        let d = buf.data_mut();
        if !room || d.len() < l3 + c.ip_len {
            return false;
        }
        let v = crate::wire::ipv4::Packet::new_unchecked(&d[l3..l3 + hl]);
        let (base, last_mf) = (v.frag_offset(), v.more_frags());
        let mut off = c.chunk;
        while off < payload {
            let n = c.chunk.min(payload - off);
            let more = off + n < payload || last_mf;
            let start = self.extra.len();
            self.extra.extend_from_slice(&d[..l3 + hl]);
            let data = l3 + hl + off;
            self.extra.extend_from_slice(&d[data..data + n]);
            let ip = &mut self.extra[start + l3..start + l3 + hl];
            uncopied_options_to_nops(&mut ip[20..]);
            set_fragment(ip, n, base, off, more);
            self.extra_ends
                .push((self.current, self.extra.len() as u32));
            self.stats.fragments_out += 1;
            off += n;
        }
        set_fragment(&mut d[l3..l3 + hl], c.chunk, base, 0, true);
        let len = d.len();
        buf.trim(len - (l3 + hl + c.chunk))
    }

    /// Router mode, a packet whose TTL or hop limit ran out: answered with an ICMP Time
    /// Exceeded (see [`Worker::icmp_error`]), or dropped as `ttl_exceeded`.
    fn expired<B: PacketBuf + ?Sized>(
        &mut self,
        tables: &Tables,
        buf: &mut B,
        m: &Meta,
        in_port: u16,
        now: u64,
        out: Outcome,
    ) -> Outcome {
        let kind = reply::IcmpError::TimeExceeded;
        self.icmp_error(tables, buf, m, kind, in_port, now, out)
            .unwrap_or_else(|| drop_with(out, DropReason::TtlExceeded))
    }

    /// A packet that would leave larger than `mtu` with QoS `q`: answered with an ICMP
    /// Fragmentation Needed (IPv4 with DF) or Packet Too Big (IPv6) naming the largest
    /// IP packet that fits, `mtu` less the labels it would leave under (see
    /// [`Worker::icmp_error`]), or dropped as `mtu_exceeded`.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn too_big<B: PacketBuf + ?Sized>(
        &mut self,
        tables: &Tables,
        buf: &mut B,
        m: &Meta,
        q: &crate::config::QosActions,
        mtu: u16,
        in_port: u16,
        now: u64,
        out: Outcome,
    ) -> Outcome {
        // (An error goes only about a packet without labels of its own.)
        let labels = labels_out(m, q).unwrap_or(0) as u16;
        let kind = reply::IcmpError::TooBig {
            mtu: mtu.saturating_sub(labels),
        };
        self.icmp_error(tables, buf, m, kind, in_port, now, out)
            .unwrap_or_else(|| drop_with(out, DropReason::MtuExceeded))
    }

    /// A new flow of service `svc` that no server can take (`why`: `no_server` or
    /// `servers_full`): with `no_server: reject`, answered with an ICMP port unreachable
    /// from the VIP (see [`Worker::icmp_error`]); else, or when no error may be sent,
    /// dropped as `why`.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn no_server<B: PacketBuf + ?Sized>(
        &mut self,
        tables: &Tables,
        buf: &mut B,
        m: &Meta,
        svc: u16,
        why: DropReason,
        in_port: u16,
        now: u64,
        out: Outcome,
    ) -> Outcome {
        let s = &tables.pipeline.services[usize::from(svc)];
        if !s.reject {
            return drop_with(out, why);
        }
        let (vip, kind) = (s.vip, reply::IcmpError::PortUnreachable);
        self.icmp_error_from(tables, buf, m, vip, kind, in_port, now, out)
            .unwrap_or_else(|| drop_with(out, why))
    }

    /// Puts the ICMP error `kind` about the packet in `buf` in its place, from the
    /// system's first address of the packet's family, to go back out of its input port
    /// (see [`reply::icmp_error`]), within `system.icmp_rate`: the outcome, or `None`
    /// when no error may or can be sent.
    #[allow(clippy::too_many_arguments)]
    fn icmp_error<B: PacketBuf + ?Sized>(
        &mut self,
        tables: &Tables,
        buf: &mut B,
        m: &Meta,
        kind: reply::IcmpError,
        in_port: u16,
        now: u64,
        out: Outcome,
    ) -> Option<Outcome> {
        let p = &tables.pipeline;
        let src = *p.addresses.iter().find(|a| a.is_ipv6() == m.v6)?;
        self.icmp_error_from(tables, buf, m, src, kind, in_port, now, out)
    }

    /// [`Worker::icmp_error`] from address `src`.
    #[allow(clippy::too_many_arguments)]
    fn icmp_error_from<B: PacketBuf + ?Sized>(
        &mut self,
        tables: &Tables,
        buf: &mut B,
        m: &Meta,
        src: std::net::IpAddr,
        kind: reply::IcmpError,
        in_port: u16,
        now: u64,
        out: Outcome,
    ) -> Option<Outcome> {
        let p = &tables.pipeline;
        let o = reply::icmp_error(buf.data(), m, p.mac, src, kind, &mut self.scratch)
            .filter(|_| self.icmp_token(p.icmp_rate, now))
            .and_then(|n| self.send_back(buf, n, in_port, out))?;
        self.stats.icmp_errors += 1;
        Some(o)
    }

    /// Takes one ICMP error token, earning `rate` a second up to a burst of
    /// [`ICMP_BURST`] or `rate`, the smaller (the bucket starts full); false when none
    /// is left (or `rate` is 0).
    fn icmp_token(&mut self, rate: u32, now: u64) -> bool {
        if rate == 0 {
            return false;
        }
        let period = 1_000_000_000 / u64::from(rate).min(1_000_000_000);
        let earned = now.saturating_sub(self.icmp_earned_at) / period;
        self.icmp_earned_at += earned * period;
        let burst = ICMP_BURST.min(u64::from(rate));
        self.icmp_tokens = self.icmp_tokens.saturating_add(earned).min(burst);
        if self.icmp_tokens == 0 {
            return false;
        }
        self.icmp_tokens -= 1;
        true
    }

    /// An echo request to one of the system's addresses: answered back out of its input
    /// port (see [`reply::echo_reply`]), or dropped as `not_for_us`.
    fn pong<B: PacketBuf + ?Sized>(
        &mut self,
        tables: &Tables,
        buf: &mut B,
        m: &Meta,
        in_port: u16,
        out: Outcome,
    ) -> Outcome {
        let sent = reply::echo_reply(buf.data(), m, tables.pipeline.mac, &mut self.scratch)
            .and_then(|n| self.send_back(buf, n, in_port, out));
        match sent {
            Some(o) => {
                self.stats.echo_replies += 1;
                o
            }
            None => drop_with(out, DropReason::NotForUs),
        }
    }

    /// Puts the `n` bytes of `scratch` (a reply written there) in the frame's place, to
    /// go back out of `in_port` to the MAC they are addressed to: `out` as a reply, or
    /// `None` when `buf` cannot hold them.
    fn send_back<B: PacketBuf + ?Sized>(
        &self,
        buf: &mut B,
        n: usize,
        in_port: u16,
        mut out: Outcome,
    ) -> Option<Outcome> {
        if !buf.set(&self.scratch[..n]) {
            return None;
        }
        out.kind = Kind::Reply;
        out.route = Some(reply_route(mac_at(buf.data(), 0), in_port));
        Some(out)
    }

    fn answer<B: PacketBuf + ?Sized>(
        &mut self,
        tables: &Tables,
        buf: &mut B,
        m: &Meta,
        in_port: u16,
        out: Outcome,
    ) -> Outcome {
        let p = &tables.pipeline;
        let mac = p.mac;
        let len = if m.l3 == L3::Arp {
            match reply::arp_request_target(buf.data(), m) {
                Some(t) if p.owns(std::net::IpAddr::from(t)) => {
                    reply::arp_reply(buf.data(), m, mac, &mut self.scratch)
                }
                _ => None,
            }
        } else {
            match reply::ns_target(buf.data(), m) {
                Some(t) if p.owns(std::net::IpAddr::from(t)) => {
                    reply::nd_advert(buf.data(), m, mac, &mut self.scratch)
                }
                _ => None,
            }
        };
        match len.and_then(|n| self.send_back(buf, n, in_port, out)) {
            Some(o) => {
                if m.l3 == L3::Arp {
                    self.stats.arp_replies += 1;
                } else {
                    self.stats.nd_replies += 1;
                }
                o
            }
            None => drop_with(out, DropReason::NotForUs),
        }
    }
}

/// The route to target `t` (a server, or else the gateway) with the given selectors.
#[inline]
fn route_to(p: &Pipeline, t: Target, qos: QosSel, svc: u16, member: u16, rule: u16) -> Route {
    match t {
        Target::Server(s) => {
            let srv = &p.servers[s as usize];
            Route {
                mac: srv.mac,
                port: srv.port.unwrap_or(0),
                qos,
                svc,
                member,
                rule,
                server: s,
            }
        }
        _ => Route {
            mac: p.gateway_mac,
            port: p.gateway_port.unwrap_or(0),
            qos,
            svc,
            member,
            rule,
            server: NONE16,
        },
    }
}

/// The bytes of the frame `m` describes (`len` long) that count against an MTU once QoS
/// `q` applied: what follows the Ethernet header and VLAN tags (tags are the link's, as
/// 802.1Q frames may be 4 bytes longer), so MPLS labels and the packet.
#[inline]
fn mtu_bytes(len: usize, m: &Meta, q: &crate::config::QosActions) -> usize {
    let grown = len + 4 * usize::from(q.push_mpls.is_some());
    grown.saturating_sub(14 + 4 * usize::from(m.n_vlans) + 4 * usize::from(q.pop_mpls))
}

/// The bytes of MPLS labels in front of the IP header of the packet `m` describes once
/// QoS `q` applied (its own, plus a label `q` pushes, less one it pops): what counts
/// against an MTU besides the packet. `None` when `q` pops a label it does not have.
fn labels_out(m: &Meta, q: &crate::config::QosActions) -> Option<usize> {
    (usize::from(m.l3_off) + 4 * usize::from(q.push_mpls.is_some()))
        .checked_sub(14 + 4 * usize::from(m.n_vlans) + 4 * usize::from(q.pop_mpls))
}

/// How [`Worker::fragment`] cuts a packet: its IP length and the payload bytes of each
/// fragment (a multiple of 8).
#[derive(Clone, Copy, Debug)]
struct Cut {
    ip_len: usize,
    /// The IP header's length, options included.
    header: usize,
    chunk: usize,
}

/// How to cut the packet `m` describes in `d` so that each piece leaves within `mtu`
/// with QoS `q`: `Some` for an IPv4 packet without DF whose options (if any) are well
/// formed; `None` for anything else (answered with an ICMP error or dropped).
fn fragmentable(d: &[u8], m: &Meta, q: &crate::config::QosActions, mtu: u16) -> Option<Cut> {
    if m.l3 != L3::Ipv4 {
        return None;
    }
    let ip = crate::wire::ipv4::Packet::new_checked_header(d.get(usize::from(m.l3_off)..)?).ok()?;
    if ip.dont_frag() || !options_valid(ip.options()) {
        return None;
    }
    let (header, ip_len) = (ip.header_len(), usize::from(ip.total_len()));
    let chunk = (usize::from(mtu).checked_sub(labels_out(m, q)? + header)? / 8) * 8;
    (chunk > 0 && ip_len > header + chunk).then_some(Cut {
        ip_len,
        header,
        chunk,
    })
}

/// Whether the IPv4 options `o` parse ([`option_at`]).
fn options_valid(o: &[u8]) -> bool {
    let mut i = 0;
    loop {
        match option_at(o, i) {
            None => return true,
            Some(Err(_)) => return false,
            Some(Ok((_, n))) => i += n,
        }
    }
}

/// Overwrites the options of `o` (well formed, see [`options_valid`]) whose copied flag
/// (bit 7 of the type) is clear with no-operations: what a fragment after the first
/// carries of them (RFC 791, 3.2).
fn uncopied_options_to_nops(o: &mut [u8]) {
    let mut i = 0;
    while let Some(Ok((t, n))) = option_at(o, i) {
        if t & 0x80 == 0 {
            o[i..i + n].fill(1);
        }
        i += n;
    }
}

/// Writes a fragment's length (`n` bytes of payload), offset (`base` + `off` bytes) and
/// MF flag into the IPv4 header `ip` (options included), and its checksum.
fn set_fragment(ip: &mut [u8], n: usize, base: u16, off: usize, more: bool) {
    let mut v = crate::wire::ipv4::Packet::new_unchecked(ip);
    v.set_total_len((v.header_len() + n) as u16);
    // (An offset past 13 bits only comes of a packet already past 64 KB: kept in them.)
    v.raw_set_frag(false, more, base.wrapping_add(off as u16));
    v.fill_checksum();
}

/// An ICMP destination unreachable saying nothing listens there: port or protocol
/// unreachable (ICMP type 3, codes 2 and 3), ICMPv6 port unreachable (type 1, code 4).
fn unreachable_port(m: &Meta) -> bool {
    if m.v6 {
        m.icmp_type == 1 && m.icmp_code == 4
    } else {
        m.icmp_type == 3 && matches!(m.icmp_code, 2 | 3)
    }
}

/// A SYN without ACK: what opens a connection.
#[inline]
fn syn_only(flags: u8) -> bool {
    flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
}

/// The route of a frame this system wrote in answer to one from `port`: back out of it
/// to `mac`, with no QoS.
fn reply_route(mac: Mac, port: u16) -> Route {
    Route {
        mac,
        port,
        qos: QosSel::None,
        svc: NONE16,
        member: NONE16,
        rule: NONE16,
        server: NONE16,
    }
}

fn drop_with(mut out: Outcome, r: DropReason) -> Outcome {
    drop_into(&mut out, r);
    out
}

/// Marks `out` dropped for `r`.
#[inline]
fn drop_into(out: &mut Outcome, r: DropReason) {
    out.drop = Some(r);
    out.route = None;
}

#[inline]
fn mac_at(d: &[u8], off: usize) -> Mac {
    let mut m = [0u8; 6];
    m.copy_from_slice(&d[off..off + 6]);
    m
}

fn frag_key(m: &Meta) -> FragKey {
    FragKey {
        src: m.tuple.src,
        dst: m.tuple.dst,
        id: m.frag_id,
        proto: m.tuple.proto,
    }
}

/// The classifier key of a parsed frame.
pub fn class_key(m: &Meta, in_port: u16) -> Key {
    let (vlan, pcp) = match m.outer_vlan() {
        Some(t) => (t.tci & 0x0fff, (t.tci >> 13) as u8),
        None => (classify::NO_VLAN, classify::NO_PCP),
    };
    let ip = matches!(m.l3, L3::Ipv4 | L3::Ipv6);
    Key {
        in_port,
        vlan,
        pcp,
        mpls: if m.n_mpls > 0 {
            m.mpls_label
        } else {
            classify::NO_MPLS
        },
        ethertype: m.ethertype,
        src: if ip {
            u128::from_be_bytes(m.tuple.src)
        } else {
            0
        },
        dst: if ip {
            u128::from_be_bytes(m.tuple.dst)
        } else {
            0
        },
        proto: m.tuple.proto,
        src_port: m.tuple.src_port,
        dst_port: m.tuple.dst_port,
        dscp: m.dscp,
        spi: m.spi,
    }
}

impl Worker {
    /// Counts a frame that never reached [`Worker::process`] (e.g. too big for the
    /// buffer) as received and dropped.
    pub fn count_drop(&mut self, r: DropReason) {
        self.stats.packets_in += 1;
        self.stats.drops[r as usize] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const P: &str = "system: { mac: \"02:00:00:00:00:01\", gateway: \"02:00:00:00:00:fe\" }\nservices:\n  - name: s\n    vip: 192.0.2.10\n    proto: tcp\n    ports: [80]\n    servers:\n      - { name: a, mac: \"02:00:00:00:01:01\" }\n      - { name: b, mac: \"02:00:00:00:01:02\" }\n";

    /// [`P`] with `line` (a key of service `s`, e.g. `policy: least-flows`) before its
    /// servers.
    fn keyed(line: &str) -> String {
        P.replace("    servers:", &format!("    {line}\n    servers:"))
    }

    #[test]
    fn options_parse_and_only_copied_ones_stay_in_later_fragments() {
        // Record Route (7, not copied; length 7), Router Alert (148, copied), NOP, EOL.
        let mut o = [7, 7, 4, 0, 0, 0, 0, 148, 4, 0, 0, 1, 0, 0, 0, 0];
        assert!(options_valid(&o));
        uncopied_options_to_nops(&mut o);
        assert_eq!(o, [1, 1, 1, 1, 1, 1, 1, 148, 4, 0, 0, 1, 0, 0, 0, 0]);
        // Loose source route (131, copied) stays; security (130, copied) too.
        let mut o = [131, 7, 4, 1, 2, 3, 4, 130, 3, 9, 1, 0];
        uncopied_options_to_nops(&mut o);
        assert_eq!(o, [131, 7, 4, 1, 2, 3, 4, 130, 3, 9, 1, 0]);
        // A length past the end, below 2, or missing: malformed.
        assert!(!options_valid(&[68, 9, 5, 0]));
        assert!(!options_valid(&[7, 1, 0, 0]));
        assert!(!options_valid(&[1, 1, 1, 7]));
        assert!(options_valid(&[]) && options_valid(&[1, 1, 1, 1]));
    }

    #[test]
    fn the_workers_shares_of_a_limit_add_up_to_it() {
        for limit in 0..40u32 {
            for of in 1..7usize {
                let parts: Vec<u32> = (0..of)
                    .map(|i| Share::new(i, of).unwrap().of(limit))
                    .collect();
                assert_eq!(parts.iter().sum::<u32>(), limit, "{limit} over {of}");
                let (lo, hi) = (limit / of as u32, limit.div_ceil(of as u32));
                assert!(parts.iter().all(|&n| n == lo || n == hi), "{parts:?}");
            }
        }
        assert_eq!(Share::new(2, 2), None);
        assert_eq!(Share::ALL.of(7), 7);
    }

    /// A SYN from client `i` (198.51.100.0 + i, port 40000 + i) to 192.0.2.10:80.
    fn syn_from(i: u32) -> crate::action::FrameBuf {
        use crate::r#gen::frame::{Tags, begin, finish, flags, tcp};
        let mut f = Vec::new();
        let src = std::net::IpAddr::from(std::net::Ipv4Addr::from(0xc633_6400 + i));
        let dst = "192.0.2.10".parse().unwrap();
        let sys = [2, 0, 0, 0, 0, 1];
        let lay = begin(
            &mut f,
            sys,
            [2, 0, 0, 0, 0, 0xfe],
            &Tags::NONE,
            src,
            dst,
            6,
            1,
        );
        tcp(&mut f, 40000 + i as u16, 80, 1, 0, flags::SYN);
        finish(&mut f, lay);
        let mut b = crate::action::FrameBuf::new(256);
        assert!(b.load(&f));
        b
    }

    /// Where the SYNs of clients `0..n` go (server index, or `None` when not forwarded).
    fn place_syns(w: &mut Worker, n: u32) -> Vec<Option<u16>> {
        (0..n).map(|i| place_one(w, i, 10)).collect()
    }

    /// The passive health check on the burst path (`flowgate run`'s): the express path
    /// leaves a watched server's unanswered connections to the general path, which
    /// counts a SYN sent again as a failure and, once the server is taken out, moves the
    /// connection on that SYN; a connection the server answered stays where it is.
    #[test]
    fn bursts_count_unanswered_syns_and_move_them_off_a_server_taken_out() {
        let y = P.replace("01:01\" }", "01:01\", max_fails: 2 }");
        let p = Pipeline::from_str(&y, Path::new("p.yaml")).unwrap();
        let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
        let to = |w: &Worker, b: &crate::action::FrameBuf| {
            let dst: Mac = b.data()[..6].try_into().unwrap();
            (w.tables.pipeline.servers.iter().position(|s| s.mac == dst)).unwrap()
        };
        let burst = |w: &mut Worker, clients: &[u32], now: u64| -> Vec<usize> {
            let mut bufs: Vec<_> = clients.iter().map(|&i| syn_from(i)).collect();
            let mut outs = vec![Outcome::default(); bufs.len()];
            w.process_burst(&mut bufs, 0, now, &mut outs);
            assert!(outs.iter().all(|o| o.route.is_some() && o.drop.is_none()));
            bufs.iter().map(|b| to(w, b)).collect()
        };
        let first = burst(&mut w, &(0..20).collect::<Vec<_>>(), 10);
        let mut on_a: Vec<u32> = (0..20).filter(|&i| first[i as usize] == 0).collect();
        assert!(on_a.len() >= 3, "{first:?}");
        // a answers one of its connections (a SYN-ACK from it through the system).
        let answered = on_a.pop().unwrap();
        let mut f = Vec::new();
        {
            use crate::r#gen::frame::{Tags, begin, finish, flags, tcp};
            let client = std::net::Ipv4Addr::from(0xc633_6400 + answered).into();
            let lay = begin(
                &mut f,
                [2, 0, 0, 0, 0, 1],
                [2, 0, 0, 0, 1, 1],
                &Tags::NONE,
                "192.0.2.10".parse().unwrap(),
                client,
                6,
                1,
            );
            tcp(
                &mut f,
                80,
                40000 + answered as u16,
                7,
                2,
                flags::SYN | flags::ACK,
            );
            finish(&mut f, lay);
        }
        let mut b = crate::action::FrameBuf::new(256);
        assert!(b.load(&f));
        let mut outs = [Outcome::default()];
        w.process_burst(std::slice::from_mut(&mut b), 0, 500_000_000, &mut outs);
        assert!(outs[0].route.is_some(), "{:?}", outs[0]);
        let others: Vec<u32> = (0..20).filter(|i| *i != answered).collect();
        // Each client's SYN again: a's still unanswered (counted), b's too (not watched).
        let again = burst(&mut w, &others, 1_000_000_000);
        let firsts: Vec<usize> = others.iter().map(|&i| first[i as usize]).collect();
        assert_eq!(again, firsts, "nothing moves before a is taken out");
        assert_eq!(w.stats.server_fails, [on_a.len() as u64, 0]);
        // Taken out (what the management core publishes): a's unanswered connections
        // move on their next SYN, counted once more; b's stay.
        let mut q = p.clone();
        q.servers[0].ejected = true;
        let t = Arc::new(Tables::build_after(q, 2, &w.tables));
        w.set_tables(t).unwrap();
        let third = burst(&mut w, &others, 2_000_000_000);
        assert_eq!(third, vec![1; 19], "{third:?}");
        assert_eq!(w.stats.server_fails, [2 * on_a.len() as u64, 0]);
        assert_eq!(w.stats.server_flows, [1, 19], "the answered one stays on a");
        // Its client's next packet (the SYN again, here) still goes to a: answered.
        assert_eq!(burst(&mut w, &[answered], 2_100_000_000), [0]);
    }

    /// The same for UDP on the burst path: a watched server's flows it never answered
    /// are the general path's; once it is taken out, each moves on its client's next
    /// datagram, and a flow it answered stays.
    #[test]
    fn bursts_move_unanswered_udp_flows_off_a_server_taken_out() {
        use crate::r#gen::frame::{Tags, begin, finish, udp};
        let y = P
            .replace("proto: tcp", "proto: udp")
            .replace("01:01\" }", "01:01\", max_fails: 2 }");
        let p = Pipeline::from_str(&y, Path::new("p.yaml")).unwrap();
        let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
        // A datagram of client `i`, or (`back`) its server's answer from MAC `from`.
        let frame = |i: u32, back: Option<Mac>| {
            let mut f = Vec::new();
            let client = std::net::Ipv4Addr::from(0xc633_6400 + i).into();
            let vip = "192.0.2.10".parse().unwrap();
            let (src_mac, src, dst, sp, dp) = match back {
                None => ([2, 0, 0, 0, 0, 0xfe], client, vip, 40000 + i as u16, 80),
                Some(mac) => (mac, vip, client, 80, 40000 + i as u16),
            };
            let lay = begin(
                &mut f,
                [2, 0, 0, 0, 0, 1],
                src_mac,
                &Tags::NONE,
                src,
                dst,
                17,
                1,
            );
            udp(&mut f, sp, dp);
            f.extend_from_slice(b"data");
            finish(&mut f, lay);
            let mut b = crate::action::FrameBuf::new(256);
            assert!(b.load(&f));
            b
        };
        let burst = |w: &mut Worker, bufs: &mut Vec<crate::action::FrameBuf>, now: u64| {
            let mut outs = vec![Outcome::default(); bufs.len()];
            w.process_burst(bufs, 0, now, &mut outs);
            assert!(outs.iter().all(|o| o.route.is_some() && o.drop.is_none()));
            bufs.iter()
                .map(|b| {
                    let dst: Mac = b.data()[..6].try_into().unwrap();
                    (w.tables.pipeline.servers.iter()).position(|s| s.mac == dst)
                })
                .collect::<Vec<_>>()
        };
        let mut first: Vec<_> = (0..20).map(|i| frame(i, None)).collect();
        let first = burst(&mut w, &mut first, 10);
        let on_a: Vec<u32> = (0..20).filter(|&i| first[i as usize] == Some(0)).collect();
        assert!(on_a.len() >= 2, "{first:?}");
        // a answers its first client.
        let mut answer = vec![frame(on_a[0], Some([2, 0, 0, 0, 1, 1]))];
        assert_eq!(burst(&mut w, &mut answer, 20), [None], "to the gateway");
        let mut q = p.clone();
        q.servers[0].ejected = true;
        w.set_tables(Arc::new(Tables::build_after(q, 2, &w.tables)))
            .unwrap();
        let mut again: Vec<_> = (0..20).map(|i| frame(i, None)).collect();
        let again = burst(&mut w, &mut again, 1_000_000_000);
        for i in 0..20usize {
            let want = if i as u32 == on_a[0] {
                Some(0)
            } else {
                Some(1)
            };
            assert_eq!(again[i], want, "client {i}: {again:?}");
        }
    }

    #[test]
    fn a_worker_admits_its_share_of_max_flows_and_sends_the_rest_on() {
        let p = Pipeline::from_str(P, Path::new("p.yaml")).unwrap();
        let free = place_syns(&mut Worker::new(Arc::new(Tables::build(p, 1))), 100);
        let firsts = free.iter().filter(|&&s| s == Some(0)).count() as u64;
        assert!(firsts > 10, "a gets {firsts} of 100 without a limit");
        let y = P.replace("01:01\" }", "01:01\", max_flows: 5 }");
        let p = Pipeline::from_str(&y, Path::new("p.yaml")).unwrap();
        for (share, admitted) in [
            (Share::ALL, 5),
            (Share::new(0, 2).unwrap(), 3),
            (Share::new(1, 2).unwrap(), 2),
        ] {
            let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
            w.set_share(share);
            let got = place_syns(&mut w, 100);
            // Every flow placed: a's first `admitted`, then b.
            assert!(got.iter().all(Option::is_some));
            assert_eq!(w.stats.server_flows, [admitted, 100 - admitted]);
            assert_eq!(w.stats.server_overflows, [firsts - admitted, 0]);
            let mut to_a = 0;
            for (g, f) in got.iter().zip(&free) {
                if *f == Some(0) && to_a < admitted {
                    to_a += 1;
                    assert_eq!(*g, Some(0));
                } else {
                    assert_eq!(*g, Some(1));
                }
            }
        }
        // Both full: new flows are refused as `servers_full`; a flow that ends frees room.
        let y = y.replace("01:02\" }", "01:02\", max_flows: 1 }");
        let p = Pipeline::from_str(&y, Path::new("p.yaml")).unwrap();
        let mut w = Worker::new(Arc::new(Tables::build(p, 1)));
        let got = place_syns(&mut w, 10);
        assert_eq!(got.iter().flatten().count(), 6);
        assert_eq!(w.stats.drops[DropReason::ServersFull as usize], 4);
        assert_eq!(w.stats.drops[DropReason::NoServer as usize], 0);
        w.expire(10 + 11_000_000_000, 100); // the SYN timeout (10 s) has passed
        assert_eq!(w.stats.server_flows, [0, 0]);
        assert_eq!(place_syns(&mut w, 10).iter().flatten().count(), 6);
    }

    /// Where the SYN of client `i` goes on worker `w` (server index), at time `now`.
    fn place_one(w: &mut Worker, i: u32, now: u64) -> Option<u16> {
        let mut b = syn_from(i);
        let out = w.process(&mut b, 0, now);
        out.route.map(|_| {
            let dst: Mac = b.data()[..6].try_into().unwrap();
            (w.tables.pipeline.servers.iter().position(|s| s.mac == dst)).unwrap() as u16
        })
    }

    /// Workers sharing a board of their open flows: a server's `max_flows` holds over all
    /// of them (not a share each: one worker may take the whole limit, and none takes
    /// more once the others hold it), and `least-flows` weighs every worker's flows.
    #[test]
    fn workers_sharing_their_open_flows_hold_a_limit_together() {
        let y = P.replace("01:01\" }", "01:01\", max_flows: 3 }");
        let p = Pipeline::from_str(&y, Path::new("p.yaml")).unwrap();
        let board = gauges::ServerFlows::new(2);
        let mut ws: Vec<Worker> = (0..2)
            .map(|k| {
                let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
                w.set_share(Share::new(k, 2).unwrap());
                w.set_server_flows(board.row(k).unwrap());
                w
            })
            .collect();
        // Clients whose Maglev slot names a, without a limit.
        let plain = Pipeline::from_str(P, Path::new("p.yaml")).unwrap();
        let free = place_syns(&mut Worker::new(Arc::new(Tables::build(plain, 1))), 40);
        let to_a: Vec<u32> = (0..40).filter(|&i| free[i as usize] == Some(0)).collect();
        assert!(to_a.len() >= 6, "{free:?}");
        // Worker 1 alone: all three of a's flows (a share would be one).
        for &i in &to_a[..3] {
            assert_eq!(place_one(&mut ws[1], i, 10), Some(0), "client {i}");
        }
        // Then neither worker puts more on a.
        assert_eq!(place_one(&mut ws[0], to_a[3], 10), Some(1));
        assert_eq!(place_one(&mut ws[1], to_a[4], 10), Some(1));
        assert_eq!(board.total(0), 3);
        assert_eq!(
            (ws[0].stats.server_flows[0], ws[1].stats.server_flows[0]),
            (0, 3)
        );
        assert_eq!(ws[0].stats.server_overflows[0], 1);
        // Worker 1's flows to a end (the SYN timeout): worker 0 may use a again.
        ws[1].expire(10 + 11_000_000_000, 100);
        assert_eq!(board.total(0), 0, "flows that end leave the board");
        assert_eq!(place_one(&mut ws[0], to_a[5], 20 + 11_000_000_000), Some(0));
        assert_eq!(board.total(0), 1);

        // least-flows: worker 0, whose tables have b draining, puts 4 flows on a; worker
        // 1's next 4 go to b (its own flows alone would be level), then one to each.
        let y = keyed("policy: least-flows");
        let p = Pipeline::from_str(&y, Path::new("p.yaml")).unwrap();
        let mut drained = p.clone();
        drained.servers[1].state = ServerState::Draining;
        let board = gauges::ServerFlows::new(2);
        let mut ws: Vec<Worker> = [drained, p]
            .into_iter()
            .enumerate()
            .map(|(k, p)| {
                let mut w = Worker::new(Arc::new(Tables::build(p, 1)));
                w.set_server_flows(board.row(k).unwrap());
                w
            })
            .collect();
        for i in 0..4 {
            assert_eq!(place_one(&mut ws[0], i, 10), Some(0));
        }
        let got: Vec<Option<u16>> = (100..106).map(|i| place_one(&mut ws[1], i, 10)).collect();
        assert_eq!(got[..4], [Some(1); 4], "{got:?}");
        assert_eq!((board.total(0), board.total(1)), (5, 5), "{got:?}");
        assert_eq!(ws[1].stats.server_flows[1], 5);
    }

    #[test]
    fn flows_leaving_a_down_server_move_only_into_room_and_are_not_overflows() {
        let y = P.replace("01:02\" }", "01:02\", max_flows: 2 }");
        let p = Pipeline::from_str(&y, Path::new("p.yaml")).unwrap();
        let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
        assert!(place_syns(&mut w, 20).iter().all(Option::is_some));
        assert_eq!(w.stats.server_flows, [18, 2]);
        let turned = w.stats.server_overflows.clone();
        // a goes down, and b's limit is raised to 4: a's flows' next packets move two of
        // them to b; the others stay (and ask again with each packet).
        let mut q = p.clone();
        q.servers[0].state = ServerState::Down;
        q.servers[1].max_flows = Some(4);
        w.set_tables(Arc::new(Tables::build(q, 2))).unwrap();
        for _ in 0..3 {
            for i in 0..20 {
                w.process(&mut syn_from(i), 0, 20);
            }
        }
        assert_eq!(w.stats.server_flows, [16, 4], "two moved, the rest stay");
        assert_eq!(w.stats.server_overflows, turned, "moves are not new flows");
    }

    #[test]
    fn least_flows_places_by_open_flows_per_weight() {
        let y = keyed("policy: least-flows")
            + "      - { name: c, mac: \"02:00:00:00:01:03\", weight: 200 }\n";
        let p = Pipeline::from_str(&y, Path::new("p.yaml")).unwrap();
        let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
        assert!(place_syns(&mut w, 40).iter().all(Option::is_some));
        assert_eq!(w.stats.server_flows, [10, 10, 20], "by weight, exactly");
        // c drains (keeping its flows): the next flows fill a and b.
        let mut q = p.clone();
        q.servers[2].state = ServerState::Draining;
        w.set_tables(Arc::new(Tables::build(q, 2))).unwrap();
        let got = (40..60).map(|i| {
            let mut b = syn_from(i);
            w.process(&mut b, 0, 20);
            b.data()[5]
        });
        assert!(got.into_iter().all(|mac| mac == 1 || mac == 2));
        assert_eq!(w.stats.server_flows, [20, 20, 20]);
        // Back up, behind: c takes the next 20 new flows (40 for its weight).
        w.set_tables(Arc::new(Tables::build(p, 3))).unwrap();
        let got: Vec<u8> = (60..80)
            .map(|i| {
                let mut b = syn_from(i);
                w.process(&mut b, 0, 30);
                b.data()[5]
            })
            .collect();
        assert_eq!(got, [3; 20]);
        // A limit on c: the flows it would take go to the emptiest of the others.
        let lim = y.replace("weight: 200 }", "weight: 200, max_flows: 15 }");
        let p = Pipeline::from_str(&lim, Path::new("p.yaml")).unwrap();
        let mut w = Worker::new(Arc::new(Tables::build(p, 1)));
        assert!(place_syns(&mut w, 40).iter().all(Option::is_some));
        let f = &w.stats.server_flows;
        assert_eq!((f[2], f[0] + f[1]), (15, 25), "{f:?}");
        assert!(f[0].abs_diff(f[1]) <= 1, "{f:?}");
        assert!(w.stats.server_overflows[2] > 0);
        // Everybody full: refused.
        let full = lim
            .replace("01:01\" }", "01:01\", max_flows: 1 }")
            .replace("01:02\" }", "01:02\", max_flows: 1 }");
        let p = Pipeline::from_str(&full, Path::new("p.yaml")).unwrap();
        let mut w = Worker::new(Arc::new(Tables::build(p, 1)));
        assert_eq!(place_syns(&mut w, 20).iter().flatten().count(), 17);
        assert_eq!(w.stats.drops[DropReason::ServersFull as usize], 3);
        // By its other name; not with source affinity, which needs a stateless choice.
        let alias = y.replace("least-flows", "least-connections");
        let p = Pipeline::from_str(&alias, Path::new("p.yaml")).unwrap();
        assert_eq!(p.services[0].policy, Policy::LeastFlows);
        let e = Pipeline::from_str(
            &y.replace("    servers:", "    affinity: source\n    servers:"),
            Path::new("p.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not least-flows"), "{e}");
    }

    /// P with backups c and d (weights 100 and 300) added; `policy` if given.
    fn with_backups(policy: Option<&str>) -> Pipeline {
        let y = P.replace(
            "    servers:",
            &policy.map_or("    servers:".into(), |p| {
                format!("    policy: {p}\n    servers:")
            }),
        ) + "      - { name: c, mac: \"02:00:00:00:01:03\", backup: true }\n"
            + "      - { name: d, mac: \"02:00:00:00:01:04\", backup: true, weight: 300 }\n";
        Pipeline::from_str(&y, Path::new("p.yaml")).unwrap()
    }

    /// Backups take no new flow while a primary can; every new flow, by their weights,
    /// when none can (down, draining, weight 0 or taken out by the passive check); the
    /// primaries again once one can, the backups' open flows staying.
    #[test]
    fn backups_take_new_flows_only_while_no_primary_can() {
        for policy in [None, Some("least-flows")] {
            let p = with_backups(policy);
            let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
            let got = place_syns(&mut w, 200);
            assert!(
                got.iter().all(|s| matches!(s, Some(0 | 1))),
                "{policy:?} {got:?}"
            );
            let t = tier_weights(&p, 0);
            assert_eq!(
                (t.taking(&p.services[0]), t.spill),
                (Taking::Primaries, Some(vec![0, 0, 100, 300]))
            );
            type Out = fn(&mut Pipeline, usize);
            let outs: [(&str, Out); 4] = [
                ("down", |q, i| q.servers[i].state = ServerState::Down),
                ("draining", |q, i| {
                    q.servers[i].state = ServerState::Draining
                }),
                ("weight 0", |q, i| q.services[0].members[i].weight = 0),
                ("taken out", |q, i| q.servers[i].ejected = true),
            ];
            for (k, out) in outs {
                let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
                // a alone out: b takes everything.
                let mut q = p.clone();
                out(&mut q, 0);
                w.set_tables(Arc::new(Tables::build_after(q.clone(), 2, &w.tables)))
                    .unwrap();
                assert!(place_syns(&mut w, 40).iter().all(|s| *s == Some(1)), "{k}");
                // Both out: the backups, 1:3.
                out(&mut q, 1);
                let t = Arc::new(Tables::build_after(q.clone(), 3, &w.tables));
                assert_eq!(
                    t.backup_news(&w.tables).as_deref(),
                    Some("service s on its backup servers")
                );
                w.set_tables(t).unwrap();
                let before = w.stats.server_flows.clone();
                let got: Vec<_> = (1000..1400)
                    .map(|i| {
                        let mut b = syn_from(i);
                        w.process(&mut b, 0, 20);
                        b.data()[5]
                    })
                    .collect();
                let on = |m: u8| got.iter().filter(|&&x| x == m).count();
                assert_eq!(on(3) + on(4), 400, "{k} {policy:?}");
                if policy.is_some() {
                    assert_eq!((on(3), on(4)), (100, 300), "{k}: least-flows by weight");
                } else {
                    assert!((70..=130).contains(&on(3)), "{k}: {} on c", on(3));
                }
                assert_eq!(
                    &w.stats.server_flows[..2],
                    &before[..2],
                    "{k}: open flows stay"
                );
                let j = w.stats.to_json(&q);
                assert_eq!(j["services"]["s"]["on_backup"], 1, "{k}");
                // a back: the primaries take new flows again; the backups keep theirs.
                let t = Arc::new(Tables::build_after(p.clone(), 4, &w.tables));
                assert_eq!(
                    t.backup_news(&w.tables).as_deref(),
                    Some("service s back on its primary servers")
                );
                w.set_tables(t).unwrap();
                let held = w.stats.server_flows[2] + w.stats.server_flows[3];
                assert!(
                    (2000..2100).all(|i| {
                        let mut b = syn_from(i);
                        w.process(&mut b, 0, 30);
                        b.data()[5] <= 2
                    }),
                    "{k}"
                );
                assert_eq!(w.stats.server_flows[2] + w.stats.server_flows[3], held);
                assert_eq!(w.stats.to_json(&p)["services"]["s"]["on_backup"], 0);
            }
        }
        // Everybody out: no server, and the news says so.
        let p = with_backups(None);
        let mut q = p.clone();
        for s in &mut q.servers {
            s.state = ServerState::Down;
        }
        let t0 = Tables::build(p.clone(), 1);
        let t = Tables::build_after(q, 2, &t0);
        assert_eq!(
            t.backup_news(&t0).as_deref(),
            Some("service s: no server takes new flows")
        );
        // A service without backups has no news and no `on_backup`.
        let plain = Pipeline::from_str(P, Path::new("p.yaml")).unwrap();
        let mut down = plain.clone();
        down.servers[0].state = ServerState::Down;
        let t0 = Tables::build(plain.clone(), 1);
        assert_eq!(Tables::build_after(down, 2, &t0).backup_news(&t0), None);
        assert!(
            Worker::new(Arc::new(t0)).stats.to_json(&plain)["services"]["s"]
                .get("on_backup")
                .is_none()
        );
    }

    /// Primaries back after the backups stood in, all in their slow start, take the
    /// share their ramps give them, the backups the rest; with any primary at its whole
    /// weight, or no backups, the ramps change nothing of the tiers.
    #[test]
    fn primaries_back_in_their_slow_start_share_with_the_backups() {
        let p = with_backups(None);
        let mut down = p.clone();
        down.servers[0].state = ServerState::Down;
        down.servers[1].state = ServerState::Down;
        let t0 = Tables::build(down, 1);
        let share_of_primaries = |ramps: [f64; 2]| {
            let mut q = p.clone();
            q.servers[0].ramp = ramps[0];
            q.servers[1].ramp = ramps[1];
            let t = Tables::build_after(q.clone(), 2, &t0);
            let mut w = Worker::new(Arc::new(t));
            let got = (5000..7000).filter_map(|i| place_one(&mut w, i, 10));
            let primaries = got.filter(|&s| s < 2).count();
            (primaries as f64 / 2000.0, w)
        };
        // Both at a quarter of their weights: a quarter of the new flows.
        let (r, w) = share_of_primaries([0.25, 0.25]);
        assert!((0.2..0.3).contains(&r), "{r}");
        let t = tier_weights(&w.tables.pipeline, 0);
        assert_eq!(t.taking(&w.tables.pipeline.services[0]), Taking::Easing);
        assert_eq!(t.weights, [25, 25, 38, 113], "backups 1:3, 150 against 50");
        assert_eq!(t.spill, None, "all of them in the one table");
        assert_eq!(
            w.tables.backup_news(&t0).as_deref(),
            Some("service s easing back onto its primary servers (their slow start)")
        );
        assert_eq!(
            w.stats.to_json(&w.tables.pipeline)["services"]["s"]["on_backup"],
            1
        );
        // Further on, more; a's ramp done (b's not): the primaries alone.
        let (r, _) = share_of_primaries([0.75, 0.5]);
        assert!((0.55..0.75).contains(&r), "{r}");
        let (r, w) = share_of_primaries([1.0, 0.5]);
        assert_eq!(r, 1.0);
        assert_eq!(
            tier_weights(&w.tables.pipeline, 0).spill,
            Some(vec![0, 0, 100, 300])
        );
        // Without backups, a ramp only weighs the primaries against each other.
        let plain = Pipeline::from_str(P, Path::new("p.yaml")).unwrap();
        let mut q = plain.clone();
        q.servers[0].ramp = 0.25;
        q.servers[1].ramp = 0.25;
        let t = tier_weights(&q, 0);
        assert_eq!((t.weights, t.spill), (vec![25, 25], None));
    }

    /// Under `max_flows`, the new flows no primary has room for go to the backups (by
    /// their weights, each within its own limit); refused once they are full too.
    #[test]
    fn backups_take_the_new_flows_no_primary_has_room_for() {
        for policy in [None, Some("least-flows")] {
            let mut p = with_backups(policy);
            p.servers[0].max_flows = Some(10);
            p.servers[1].max_flows = Some(10);
            p.servers[3].max_flows = Some(60);
            let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
            let got = place_syns(&mut w, 200);
            let on = |m: u16| got.iter().filter(|&&x| x == Some(m)).count();
            assert_eq!((on(0), on(1)), (10, 10), "{policy:?}");
            assert_eq!(on(3), 60, "{policy:?}: d up to its limit");
            assert_eq!(on(2), 120, "{policy:?}: c takes the rest");
            assert_eq!(w.stats.drops[DropReason::ServersFull as usize], 0);
            assert_eq!(
                w.stats.to_json(&p)["services"]["s"]["on_backup"],
                0,
                "overflow is not on backup"
            );
            // All full: refused.
            let mut p = p.clone();
            p.servers[2].max_flows = Some(120);
            let mut w = Worker::new(Arc::new(Tables::build(p, 1)));
            assert_eq!(place_syns(&mut w, 210).iter().flatten().count(), 200);
            assert_eq!(
                w.stats.drops[DropReason::ServersFull as usize],
                10,
                "{policy:?}"
            );
        }
    }

    /// A TCP frame from client address 198.51.100.`c` port `sp` to the VIP with `flags`.
    fn tcp_from(c: u8, sp: u16, flags: u8) -> crate::action::FrameBuf {
        use crate::r#gen::frame::{Tags, begin, finish, tcp};
        let mut f = Vec::new();
        let src = std::net::IpAddr::from([198, 51, 100, c]);
        let lay = begin(
            &mut f,
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 0xfe],
            &Tags::NONE,
            src,
            "192.0.2.10".parse().unwrap(),
            6,
            1,
        );
        tcp(&mut f, sp, 80, 1, 0, flags);
        finish(&mut f, lay);
        let mut b = crate::action::FrameBuf::new(256);
        assert!(b.load(&f));
        b
    }

    /// `rate_limit`: a client's SYNs beyond its burst are refused until time earns it
    /// more (one each 1/per_source s); other clients have their own; packets of a
    /// connection already open, and a non-SYN packet that adopts one (a connection
    /// opened through another intermediate system), are not new connections; a prefix
    /// puts a network's clients in one bucket; W workers each admit their part.
    #[test]
    fn rate_limit_admits_a_burst_then_one_per_interval_per_client() {
        use crate::r#gen::frame::flags::{ACK, SYN};
        const MS: u64 = 1_000_000;
        let y = keyed("rate_limit: { per_source: 10, burst: 5 }");
        let p = Pipeline::from_str(&y, Path::new("p.yaml")).unwrap();
        let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
        let try_at = |w: &mut Worker, c: u8, sp: u16, flags: u8, t: u64| {
            w.process(&mut tcp_from(c, sp, flags), 0, t).route.is_some()
        };
        // 30 SYNs 10 ms apart: 5 at once, then one each 100 ms (at 100 and 200 ms).
        let got: Vec<u64> = (0..30u16)
            .filter(|&k| {
                try_at(
                    &mut w,
                    7,
                    1000 + k,
                    SYN,
                    1_000 * MS + u64::from(k) * 10 * MS,
                )
            })
            .map(|k| u64::from(k) * 10)
            .collect();
        assert_eq!(got, [0, 10, 20, 30, 40, 100, 200]);
        assert_eq!(w.stats.drops[DropReason::RateLimited as usize], 23);
        assert_eq!(w.stats.svc_limited, [23]);
        // Another client has its own burst; an admitted connection's packets pass.
        assert!((0..5).all(|k| try_at(&mut w, 8, 2000 + k, SYN, 1_300 * MS)));
        assert!(!try_at(&mut w, 8, 2005, SYN, 1_300 * MS));
        assert!(try_at(&mut w, 7, 1000, ACK, 1_300 * MS), "open connection");
        assert!(try_at(&mut w, 7, 1000, SYN, 1_300 * MS), "its SYN again");
        // A mid-connection packet the table does not know is no new connection.
        assert!(try_at(&mut w, 7, 3000, ACK, 1_300 * MS));
        // Idle a second: the whole burst again, no more.
        let again = (0..7u16).filter(|&k| try_at(&mut w, 7, 4000 + k, SYN, 2_500 * MS));
        assert_eq!(again.count(), 5);
        let j = w.stats.to_json(&p);
        assert_eq!(j["services"]["s"]["rate_limited"], 23 + 1 + 2, "{j}");
        assert_eq!(j["drops"]["rate_limited"], 26);

        // One /24 is one client.
        let y24 = y.replace("burst: 5 }", "burst: 5, ipv4_prefix: 24 }");
        let p = Pipeline::from_str(&y24, Path::new("p.yaml")).unwrap();
        let mut w = Worker::new(Arc::new(Tables::build(p, 1)));
        let n = (0..10u8)
            .filter(|&c| try_at(&mut w, 10 + c, 1000, SYN, 10))
            .count();
        assert_eq!(n, 5);
        // Worker 0 of 2: 5 a second (one each 200 ms), a burst of 3.
        let p = Pipeline::from_str(&y, Path::new("p.yaml")).unwrap();
        let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
        w.set_limit_share(Share::new(0, 2).unwrap());
        let got: Vec<u64> = (0..50u16)
            .filter(|&k| try_at(&mut w, 7, 1000 + k, SYN, u64::from(k) * 10 * MS))
            .map(|k| u64::from(k) * 10)
            .collect();
        assert_eq!(got, [0, 10, 20, 200, 400], "{got:?}");
        // No limit: everything passes, and no buckets are kept.
        let plain = Pipeline::from_str(P, Path::new("p.yaml")).unwrap();
        let mut w = Worker::new(Arc::new(Tables::build(plain, 1)));
        assert!((0..50).all(|k| try_at(&mut w, 7, 1000 + k, SYN, 10)));
        assert!(w.limits.is_none());
        // A reload that brings a limit brings the buckets.
        w.set_tables(Arc::new(Tables::build(p, 2))).unwrap();
        assert_eq!(
            (0..10)
                .filter(|&k| try_at(&mut w, 9, 1000 + k, SYN, 20))
                .count(),
            5
        );
        // `total`: one bucket for every client of the service, the worker's share of it
        // by `set_share` (all clients' flows spread over the workers).
        let yt = keyed("rate_limit: { total: 10, total_burst: 5 }");
        let p = Pipeline::from_str(&yt, Path::new("p.yaml")).unwrap();
        let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
        assert_eq!(
            (1..=10u8)
                .filter(|&c| try_at(&mut w, c, 1000, SYN, 10))
                .count(),
            5
        );
        assert!(
            try_at(&mut w, 11, 1000, SYN, 10 + 100 * MS),
            "one more 100 ms later"
        );
        let mut w = Worker::new(Arc::new(Tables::build(p, 1)));
        w.set_share(Share::new(1, 2).unwrap());
        assert_eq!(
            (1..=10u8)
                .filter(|&c| try_at(&mut w, c, 1000, SYN, 10))
                .count(),
            2
        );
    }

    /// Only the flows a service opens spend `rate_limit` tokens: a SYN no server takes
    /// gives its client's and the service's back, and one the service's bucket refuses
    /// gives back its client's.
    #[test]
    fn rate_limit_tokens_come_back_when_no_flow_is_opened() {
        use crate::r#gen::frame::flags::SYN;
        const MS: u64 = 1_000_000;
        let y = keyed("rate_limit: { per_source: 1, burst: 2, total: 100, total_burst: 3 }");
        let up = Pipeline::from_str(&y, Path::new("p.yaml")).unwrap();
        let mut down = up.clone();
        for s in &mut down.servers {
            s.state = ServerState::Down;
        }
        let mut w = Worker::new(Arc::new(Tables::build(down, 1)));
        let to = |w: &mut Worker, c: u8, sp: u16, now: u64| {
            w.process(&mut tcp_from(c, sp, SYN), 0, now).drop
        };
        // No server up: each SYN is refused as such, never as rate limited.
        for sp in 0..10 {
            assert_eq!(to(&mut w, 7, 1000 + sp, 10), Some(DropReason::NoServer));
        }
        // Servers up again: the client still has its whole burst, and the service its
        // whole total burst (1 more for client 8).
        w.set_tables(Arc::new(Tables::build(up, 2))).unwrap();
        assert_eq!(to(&mut w, 7, 2000, 10), None);
        assert_eq!(to(&mut w, 7, 2001, 10), None);
        assert_eq!(to(&mut w, 7, 2002, 10), Some(DropReason::RateLimited));
        assert_eq!(to(&mut w, 8, 3000, 10), None);
        // Client 9 meets the service's empty bucket twice; 50 ms later the service has
        // tokens again and client 9 its whole burst of 2 (which those refusals did not
        // spend: its own bucket refills only one a second).
        assert_eq!(to(&mut w, 9, 4000, 10), Some(DropReason::RateLimited));
        assert_eq!(to(&mut w, 9, 4001, 10), Some(DropReason::RateLimited));
        assert_eq!(to(&mut w, 9, 4002, 50 * MS), None);
        assert_eq!(to(&mut w, 9, 4003, 50 * MS), None);
        assert_eq!(to(&mut w, 9, 4004, 50 * MS), Some(DropReason::RateLimited));
        assert_eq!(w.stats.drops[DropReason::NoServer as usize], 10);
        assert_eq!(w.stats.svc_limited, [4]);
    }

    /// `allow`: only the listed client networks open flows of the service; the rest
    /// (any packet that would make a flow, a SYN or not) are dropped as `not_allowed`
    /// and counted, before they cost a rate-limit token.
    #[test]
    fn allow_takes_new_flows_of_the_listed_networks_only() {
        use crate::r#gen::frame::flags::{ACK, SYN};
        let y = keyed(
            "allow: [198.51.100.0/28, \"2001:db8::/32\", 192.0.2.99]\n    rate_limit: { per_source: 1, ipv4_prefix: 8 }",
        );
        let p = Pipeline::from_str(&y, Path::new("p.yaml")).unwrap();
        assert_eq!(p.services[0].allow.networks().len(), 3);
        let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
        let mut to = |c: u8, sp: u16, flags: u8| w.process(&mut tcp_from(c, sp, flags), 0, 10).drop;
        assert_eq!(to(1, 1000, SYN), None, "198.51.100.1 is in the /28");
        assert_eq!(
            to(16, 1000, SYN),
            Some(DropReason::NotAllowed),
            ".16 is not"
        );
        assert_eq!(
            to(200, 1000, ACK),
            Some(DropReason::NotAllowed),
            "nor a mid-connection packet"
        );
        // The /8 bucket of the allowed client is spent; the denied ones took none.
        assert_eq!(to(2, 1001, SYN), Some(DropReason::RateLimited));
        assert_eq!((w.stats.svc_denied[0], w.stats.svc_limited[0]), (2, 1));
        let j = w.stats.to_json(&p);
        assert_eq!(
            (
                j["services"]["s"]["denied"].as_u64(),
                j["drops"]["not_allowed"].as_u64()
            ),
            (Some(2), Some(2)),
            "{j}"
        );
        // Bad entries are refused at their place.
        for (bad, msg) in [
            ("[]", "allow lists no network"),
            ("[10.0.0.0/33]", "bad address or prefix \"10.0.0.0/33\""),
        ] {
            let e = Pipeline::from_str(&keyed(&format!("allow: {bad}")), Path::new("p.yaml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(msg) && e.contains("services[0].allow"), "{e}");
        }
    }

    /// `conn_limit`: a client holds at most `per_source` open flows of the service (over
    /// every worker sharing the counts); its SYNs beyond that are dropped as
    /// `conn_limited` and counted; an established connection that closes (its FIN, here
    /// on the express path), expires or is evicted frees its place; other clients, and flows a
    /// mid-connection packet opens, are not held; a flow no server takes gives its place
    /// back.
    #[test]
    fn conn_limit_holds_each_client_to_its_open_flows() {
        use crate::r#gen::frame::flags::{ACK, FIN, SYN};
        let y = keyed("conn_limit: { per_source: 2 }");
        let p = Pipeline::from_str(&y, Path::new("p.yaml")).unwrap();
        assert_eq!(
            p.services[0].conn_limit,
            Some(crate::config::ConnLimit { per_source: 2 })
        );
        let counts = ConnCounts::new();
        let mut ws: Vec<Worker> = (0..2)
            .map(|_| {
                let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
                w.set_conn_counts(Arc::clone(&counts));
                w
            })
            .collect();
        let src = |c: u8| parse::v4_mapped([198, 51, 100, c]);
        let to = |w: &mut Worker, c: u8, sp: u16, flags: u8, now: u64| {
            w.process(&mut tcp_from(c, sp, flags), 0, now).drop
        };
        // Client 1: one connection on each worker, then no third on either.
        assert_eq!(to(&mut ws[0], 1, 1000, SYN, 10), None);
        assert_eq!(to(&mut ws[1], 1, 1001, SYN, 10), None);
        for w in ws.iter_mut() {
            assert_eq!(to(w, 1, 1002, SYN, 20), Some(DropReason::ConnLimited));
        }
        assert_eq!(counts.count(0, &src(1)), 2);
        // Another client is its own; a mid-connection packet is not held (nor counted).
        assert_eq!(to(&mut ws[0], 2, 1000, SYN, 30), None);
        assert_eq!(to(&mut ws[0], 1, 1003, ACK, 30), None);
        assert_eq!(counts.count(0, &src(1)), 2);
        // The connection on worker 0 closes (the client's ACK and FIN through the burst
        // path, the express path, as `flowgate run` sends them): a place is free.
        let mut burst = [tcp_from(1, 1000, ACK), tcp_from(1, 1000, FIN | ACK)];
        let mut outs = [Outcome::default(); 2];
        ws[0].process_burst(&mut burst, 0, 40, &mut outs);
        assert!(outs.iter().all(|o| o.drop.is_none()), "{outs:?}");
        assert_eq!(counts.count(0, &src(1)), 1, "closing: no longer counted");
        assert_eq!(to(&mut ws[1], 1, 1002, SYN, 50), None);
        assert_eq!(
            to(&mut ws[1], 1, 1004, SYN, 50),
            Some(DropReason::ConnLimited)
        );
        let j = ws[1].stats.to_json(&p);
        assert_eq!(j["services"]["s"]["conn_limited"], 2, "{j}");
        assert_eq!(j["drops"]["conn_limited"], 2, "{j}");
        // Everything expires: every count back to 0 (the closed flow was uncounted once).
        for w in ws.iter_mut() {
            w.expire(1_000_000_000_000, 1 << 16);
            assert_eq!(w.flow_count(), 0);
        }
        assert_eq!((counts.count(0, &src(1)), counts.count(0, &src(2))), (0, 0));

        // Evicted from a full table (8 flows, 20 clients): uncounted too.
        let small = y.replace("services:", "flow_table: { capacity: 8 }\nservices:");
        let p = Pipeline::from_str(&small, Path::new("p.yaml")).unwrap();
        let mut w = Worker::new(Arc::new(Tables::build(p, 1)));
        for c in 1..=20 {
            assert_eq!(to(&mut w, c, 2000, SYN, 60), None);
        }
        assert!(w.stats.flows_evicted >= 12, "{}", w.stats.flows_evicted);
        let c = w.conns.clone().expect("made for the pipeline's limit");
        let held: u32 = (1..=20).map(|k| c.count(0, &src(k))).sum();
        assert_eq!(held as usize, w.flow_count());
        w.expire(1_000_000_000_000, 1 << 16);
        assert!((1..=20).all(|k| c.count(0, &src(k)) == 0));

        // No server takes it: the place is given back.
        let down = y
            .replace("01:01\" }", "01:01\", state: down }")
            .replace("01:02\" }", "01:02\", state: down }");
        let p = Pipeline::from_str(&down, Path::new("p.yaml")).unwrap();
        let mut w = Worker::new(Arc::new(Tables::build(p, 1)));
        for sp in 0..5 {
            assert_eq!(
                to(&mut w, 1, 3000 + sp, SYN, 70),
                Some(DropReason::NoServer)
            );
        }
        let c = w.conns.clone().expect("counts");
        assert_eq!(c.count(0, &src(1)), 0);
        // An advertised flow claims one of a client's two connections: it is no longer
        // the service's, nor counted, and the client may open another.
        let mut p = Pipeline::from_str(&y, Path::new("p.yaml")).unwrap();
        crate::control::overlay::reserve_flow_slots(&mut p, 1);
        let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
        assert_eq!(to(&mut w, 1, 4000, SYN, 80), None);
        assert_eq!(to(&mut w, 1, 4001, SYN, 80), None);
        assert_eq!(to(&mut w, 1, 4002, SYN, 80), Some(DropReason::ConnLimited));
        let mut q = p.clone();
        let r = &mut q.flow_rules[0];
        r.rule.proto = classify::Range::exact(6);
        r.rule.src_port = classify::Range::exact(4000);
        r.target = Target::Server(1);
        assert!(w.set_tables(Arc::new(Tables::build(q, 2))).is_ok());
        while w.sweep_due() {
            w.sweep(64);
        }
        assert_eq!(w.stats.flows_moved, 1);
        let c = w.conns.clone().expect("counts");
        assert_eq!(c.count(0, &src(1)), 1);
        assert_eq!(to(&mut w, 1, 4002, SYN, 90), None);
        // Bad values are refused at their place.
        for bad in ["0", "10000001"] {
            let e = Pipeline::from_str(
                &keyed(&format!("conn_limit: {{ per_source: {bad} }}")),
                Path::new("p.yaml"),
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("services[0].conn_limit.per_source")
                    && e.contains("is not in 1..=10000000"),
                "{e}"
            );
        }
    }

    /// A reload that narrows a service's `allow` list cuts the open flows of the clients
    /// it leaves out (once the sweep has passed them: their next packets are dropped as
    /// `not_allowed`, counted in `revoked`, the gauges follow); the clients it keeps keep
    /// their flows and servers; widening or dropping the list cuts nothing. The same with
    /// tables built after the running ones and built afresh.
    #[test]
    fn a_narrowed_allow_list_cuts_the_open_flows_of_the_clients_left_out() {
        use crate::r#gen::frame::flags::{ACK, SYN};
        use crate::r#gen::frame::{Tags, begin, finish, tcp};
        let with = |allow: &str| {
            let y = if allow.is_empty() {
                P.to_string()
            } else {
                keyed(&format!("allow: {allow}"))
            };
            Pipeline::from_str(&y, Path::new("p.yaml")).unwrap()
        };
        // The server's answer to client `c`'s port `sp`, from the VIP.
        let answer = |c: u8, sp: u16| {
            let mut f = Vec::new();
            let lay = begin(
                &mut f,
                [2, 0, 0, 0, 1, 1],
                [2, 0, 0, 0, 0, 1],
                &Tags::NONE,
                "192.0.2.10".parse().unwrap(),
                std::net::IpAddr::from([198, 51, 100, c]),
                6,
                1,
            );
            tcp(&mut f, 80, sp, 1, 1, SYN | ACK);
            finish(&mut f, lay);
            let mut b = crate::action::FrameBuf::new(256);
            assert!(b.load(&f));
            b
        };
        let clients = [1u8, 2, 9, 14];
        for built_after in [false, true] {
            let p = with("[198.51.100.0/28]");
            let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
            let mut now = 10;
            let mut servers = Vec::new();
            for &c in &clients {
                let o = w.process(&mut tcp_from(c, 1000, SYN), 0, now);
                assert!(o.drop.is_none());
                servers.push(o.route.unwrap().mac);
                assert!(w.process(&mut answer(c, 1000), 0, now).drop.is_none());
                now += 10;
            }
            assert_eq!(w.flow_count(), 4);
            // Narrowed to .0–.3: .9 and .14 are left out.
            let mut g = 2;
            let mut reload = |w: &mut Worker, allow: &str| {
                let next = w.tables().pipeline.regrow(with(allow)).unwrap();
                let t = if built_after {
                    Tables::build_after(next, g, w.tables())
                } else {
                    Tables::build(next, g)
                };
                g += 1;
                assert!(w.set_tables(Arc::new(t)).is_ok());
            };
            reload(&mut w, "[198.51.100.0/30, 203.0.113.0/24]");
            assert!(w.sweep_due());
            while w.sweep_due() {
                assert_eq!(w.sweep(3), 0, "nothing moved, only cut");
            }
            assert_eq!(w.flow_count(), 2);
            assert_eq!(w.stats.svc_revoked[0], 2);
            assert_eq!(w.stats.svc_open[0], 2);
            assert_eq!(w.stats.server_flows.iter().sum::<u64>(), 2);
            for (&c, server) in clients.iter().zip(&servers) {
                let o = w.process(&mut tcp_from(c, 1000, ACK), 0, now);
                if c < 4 {
                    assert_eq!(
                        (o.drop, o.route.map(|r| r.mac)),
                        (None, Some(*server)),
                        "{c}"
                    );
                } else {
                    assert_eq!(o.drop, Some(DropReason::NotAllowed), "{c}");
                }
            }
            // The server's side of a cut flow is a packet of no flow: the pipeline's
            // `default` (here the gateway), without state.
            let o = w.process(&mut answer(9, 1000), 0, now);
            assert_eq!((o.kind, o.drop), (Kind::Stateless, None));
            assert_eq!(w.flow_count(), 2);
            let j = w.stats.to_json(&w.tables().pipeline);
            assert_eq!(j["services"]["s"]["revoked"], 2, "{j}");
            assert_eq!(j["services"]["s"]["denied"], 2, "{j}");
            // Widened, then dropped: nothing to cut.
            for allow in ["[198.51.100.0/24, 203.0.113.0/24]", ""] {
                reload(&mut w, allow);
                assert!(!w.sweep_due(), "{allow}");
            }
            assert_eq!((w.flow_count(), w.stats.svc_revoked[0]), (2, 2));
        }
    }

    #[test]
    fn set_tables_refuses_a_different_shape() {
        let p = Pipeline::from_str(P, Path::new("p.yaml")).unwrap();
        let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
        // Weight change: same shape.
        let q = Pipeline::from_str(
            &P.replace("01:02\" }", "01:02\", weight: 0 }"),
            Path::new("q.yaml"),
        )
        .unwrap();
        assert!(w.set_tables(Arc::new(Tables::build(q, 2))).is_ok());
        // One server fewer: refused, the old tables stay.
        let r = Pipeline::from_str(
            &P.replace("      - { name: b, mac: \"02:00:00:00:01:02\" }\n", ""),
            Path::new("r.yaml"),
        )
        .unwrap();
        assert!(matches!(
            w.set_tables(Arc::new(Tables::build(r, 3))),
            Err(ShapeChanged)
        ));
        assert_eq!(w.tables().generation, 2);
    }

    /// Established IPv4 and IPv6 TCP flows, untagged or with one VLAN tag, take the
    /// express path in both directions, with the QoS applied (`tests/burst.rs` checks
    /// that the express path gives what the general path gives; this checks that it is
    /// taken).
    #[test]
    fn established_ipv4_and_ipv6_flows_take_the_express_path() {
        use crate::r#gen::frame::{Layout, Tag, Tags, begin, finish, flags, tcp};
        let y = keyed("qos: { dscp: af41 }")
            + "  - name: s6\n    vip: \"2001:db8::10\"\n    proto: tcp\n    ports: [80]\n    qos: { dscp: af41 }\n    servers:\n      - { name: a, mac: \"02:00:00:00:01:01\" }\n";
        let p = Pipeline::from_str(&y, Path::new("p.yaml")).unwrap();
        let mut w = Worker::new(Arc::new(Tables::build(p, 1)));
        let mut f = Vec::new();
        let vlan = Tags::from_slice(&[Tag::Vlan {
            tpid: 0x8100,
            pcp: 3,
            vid: 7,
        }]);
        for (client, vip, tags) in [
            ("198.51.100.7", "192.0.2.10", Tags::NONE),
            ("2001:db8:1::7", "2001:db8::10", Tags::NONE),
            ("198.51.100.8", "192.0.2.10", vlan),
            ("2001:db8:1::8", "2001:db8::10", vlan),
        ] {
            let (c, v) = (client.parse().unwrap(), vip.parse().unwrap());
            // (src, dst, src port, dst port, flags, from the server)
            let pkts = [
                (c, v, 40000, 80, flags::SYN, false),
                (v, c, 80, 40000, flags::SYN | flags::ACK, true),
                (c, v, 40000, 80, flags::ACK, false),
                (v, c, 80, 40000, flags::ACK, true),
            ];
            for (k, &(src, dst, sp, dp, fl, from_server)) in pkts.iter().enumerate() {
                let (dmac, smac) = if from_server {
                    ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 1, 1])
                } else {
                    ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 0xfe])
                };
                let lay: Layout = begin(&mut f, dmac, smac, &tags, src, dst, 6, 1);
                tcp(&mut f, sp, dp, 1, 1, fl);
                finish(&mut f, lay);
                let mut b = crate::action::FrameBuf::new(256);
                assert!(b.load(&f));
                if k < 2 {
                    // The handshake opens the flow (the SYN takes the general path).
                    assert!(w.process(&mut b, 0, 10).route.is_some());
                    continue;
                }
                let x = express::parse(b.data(), usize::MAX).expect("express shape");
                assert_eq!((x.v6, x.tagged), (client.contains(':'), tags.n == 1));
                let (key, swapped) = FlowKey::of(&x.tuple);
                let hash = w.flows.table.hash(&key);
                let found = w.flows.table.find_hashed(&key, hash);
                let tables = Arc::clone(&w.tables);
                let mut out = Outcome::default();
                let taken = w.express(
                    &tables,
                    &mut b,
                    &(key, swapped, hash),
                    found,
                    (x.tcp_flags, x.v6, x.tagged),
                    20,
                    &mut out,
                );
                assert!(taken, "{client}: packet {k} not express");
                assert_eq!(
                    out.kind,
                    Kind::Flow {
                        reverse: from_server
                    }
                );
                assert!(out.route.is_some() && out.drop.is_none());
                let m = parse::parse(b.data()).unwrap();
                assert_eq!(m.n_vlans, tags.n, "{client}: the tag is kept");
                if !from_server {
                    assert_eq!(m.dscp, 34, "{client}: af41 written");
                }
            }
        }
    }

    /// Three services over four servers, `least-load` on `api` (its weights follow the
    /// servers' loads), and a pattern rule when `rule`.
    fn three(states: [&str; 4], loads: [f64; 4], weights: [u32; 4], rule: bool) -> Pipeline {
        let srv = |i: usize| {
            format!(
                "      - {{ name: s{i}, mac: \"02:00:00:00:01:0{i}\", state: {}, load: {}, weight: {} }}\n",
                states[i], loads[i], weights[i]
            )
        };
        let svc = |name: &str, vip: u8, policy: &str, members: &[usize]| {
            format!(
                "  - name: {name}\n    vip: 192.0.2.{vip}\n    proto: tcp\n    ports: [80]\n    policy: {policy}\n    table_size: 251\n    servers:\n{}",
                members.iter().map(|&i| srv(i)).collect::<String>()
            )
        };
        // s2 and s3 as backups of s0 and s1.
        let tiered = svc("tiered", 40, "maglev", &[0, 1, 2, 3])
            .replace("01:02\", state", "01:02\", backup: true, state")
            .replace("01:03\", state", "01:03\", backup: true, state");
        let flows = if rule {
            "flows:\n  - { name: r, match: { proto: udp, dst_port: 53 }, to: gateway }\n"
        } else {
            ""
        };
        let y = format!(
            "system: {{ mac: \"02:00:00:00:00:01\", gateway: \"02:00:00:00:00:fe\" }}\nservices:\n{}{}{}{flows}",
            svc("web", 10, "maglev", &[0, 1]),
            svc("api", 20, "least-load", &[1, 2]),
            svc("dns", 30, "maglev", &[3]) + &tiered
        );
        assert_eq!(y.matches("backup: true").count(), 2);
        Pipeline::from_str(&y, Path::new("p.yaml")).unwrap()
    }

    /// Every slot of every service's Maglev table of `a` names the member `b`'s does.
    fn same_maglev(a: &Tables, b: &Tables) -> bool {
        let same = |x: &Maglev, y: &Maglev| {
            x.len() == y.len() && (0..x.len() as u64).all(|h| x.lookup(h) == y.lookup(h))
        };
        fn spill(t: &Tables, i: usize) -> Option<(&Arc<Maglev>, &[u32])> {
            t.spill[i].as_ref().map(|s| (&s.maglev, &s.weights[..]))
        }
        a.maglev.len() == b.maglev.len()
            && (a.maglev.iter().zip(&b.maglev)).all(|(x, y)| same(x, y))
            && a.weights == b.weights
            && (0..a.maglev.len()).all(|i| match (spill(a, i), spill(b, i)) {
                (None, None) => true,
                (Some((x, v)), Some((y, w))) => same(x, y) && v == w,
                _ => false,
            })
    }

    #[test]
    fn tables_built_after_others_share_what_did_not_change() {
        let up = ["up"; 4];
        let p1 = three(up, [0.0; 4], [100; 4], false);
        let t1 = Tables::build(p1, 1);
        // s2 goes down: only `api` (its member) is rebuilt; the rules are the same.
        let s2_down = ["up", "up", "down", "up"];
        let s1_half = [0.0, 0.5, 0.0, 0.0];
        let p2 = three(s2_down, [0.0; 4], [100; 4], false);
        let t2 = Tables::build_after(p2.clone(), 2, &t1);
        assert!(Arc::ptr_eq(&t1.classifier, &t2.classifier));
        assert!(Arc::ptr_eq(&t1.maglev[0], &t2.maglev[0]), "web kept");
        assert!(!Arc::ptr_eq(&t1.maglev[1], &t2.maglev[1]), "api rebuilt");
        assert!(Arc::ptr_eq(&t1.maglev[2], &t2.maglev[2]), "dns kept");
        assert!(same_maglev(&t2, &Tables::build(p2, 2)));
        // s1's load changes: `api` (least-load) is rebuilt, `web` (maglev) is not.
        let p3 = three(s2_down, s1_half, [100; 4], false);
        let t3 = Tables::build_after(p3.clone(), 3, &t2);
        assert!(Arc::ptr_eq(&t2.maglev[0], &t3.maglev[0]));
        assert!(!Arc::ptr_eq(&t2.maglev[1], &t3.maglev[1]));
        assert!(same_maglev(&t3, &Tables::build(p3, 3)));
        // A rule added: a new classifier, the same Maglev tables.
        let p4 = three(s2_down, s1_half, [100; 4], true);
        let t4 = Tables::build_after(p4.clone(), 4, &t3);
        assert!(!Arc::ptr_eq(&t3.classifier, &t4.classifier));
        assert!((0..3).all(|i| Arc::ptr_eq(&t3.maglev[i], &t4.maglev[i])));
        let key = classify::Key {
            dst: classify::v4_mapped([203, 0, 113, 1]),
            proto: 17,
            dst_port: 53,
            ethertype: 0x0800,
            ..Default::default()
        };
        assert_eq!(t4.classifier.classify(&key), Decision::FlowRule(0));
        assert_eq!(t3.classifier.classify(&key), Decision::NoMatch);
    }

    proptest::proptest! {
        /// Whatever the states, loads and weights change to, one after another, tables
        /// built after the ones before place every slot as tables built afresh.
        #[test]
        fn tables_built_after_others_equal_fresh_ones(
            steps in proptest::collection::vec(
                (proptest::collection::vec(0u8..3, 4), proptest::collection::vec(0u8..3, 4),
                 proptest::collection::vec(0u32..3, 4), proptest::bool::ANY),
                1..8,
            )
        ) {
            let mut prev = Tables::build(three(["up"; 4], [0.0; 4], [100; 4], false), 1);
            for (g, (st, ld, wt, rule)) in steps.into_iter().enumerate() {
                let states = [0, 1, 2, 3].map(|i| ["up", "draining", "down"][usize::from(st[i])]);
                let loads = [0, 1, 2, 3].map(|i| f64::from(ld[i]) / 4.0);
                let weights = [0, 1, 2, 3].map(|i| wt[i] * 50);
                let p = three(states, loads, weights, rule);
                let t = Tables::build_after(p.clone(), g as u64 + 2, &prev);
                proptest::prop_assert!(same_maglev(&t, &Tables::build(p, 0)));
                prev = t;
            }
        }
    }

    /// A pipeline of service `s` with the rules `r{k}` (UDP to port 5000 + k, idle
    /// timeout choice `t`: 0 the default, else 15 t s), `flow_table`'s idle timeout
    /// choice `idle`, servers `a` and `b` unless `no_b`, and two advertised-flow slots,
    /// the first pointed at `b` (or `a`) for UDP to 6000 when `slot` says so.
    fn universe(rules: &[(u8, u8)], idle: u8, no_b: bool, slot: Option<bool>) -> Pipeline {
        let mut y = String::from("flows:\n");
        let mut seen = Vec::new();
        // Each rule once (the first of a number).
        for (k, t) in rules.iter().filter(|(k, _)| {
            !seen.contains(k) && {
                seen.push(*k);
                true
            }
        }) {
            let to = if *t == 0 {
                String::new()
            } else {
                format!(", idle_timeout: {}", 15 * t)
            };
            y += &format!(
                "  - {{ name: r{k}, match: {{ proto: udp, dst_port: {} }}, to: gateway{to} }}\n",
                5000 + u16::from(*k)
            );
        }
        if rules.is_empty() {
            y.clear();
        }
        let text = P.replace(
            "services:\n",
            &format!(
                "flow_table: {{ idle_timeout: {} }}\n{y}services:\n",
                30 + 30 * u32::from(idle)
            ),
        );
        let text = if no_b {
            text.replace("      - { name: b, mac: \"02:00:00:00:01:02\" }\n", "")
        } else {
            text
        };
        let mut p = Pipeline::from_str(&text, Path::new("u.yaml")).unwrap();
        crate::control::overlay::reserve_flow_slots(&mut p, 2);
        if let Some(to_b) = slot {
            let i = p.flow_rules.len() - 2;
            let r = &mut p.flow_rules[i];
            r.rule.proto = classify::Range::exact(17);
            r.rule.dst_port = classify::Range::exact(6000);
            r.target = Target::Server(if to_b && !no_b { 1 } else { 0 });
        }
        p
    }

    /// A UDP frame from `198.51.100.(sp % 200)`:`sp` to `192.0.2.10`:`dp`.
    fn udp_frame(sp: u16, dp: u16) -> crate::action::FrameBuf {
        use crate::r#gen::frame::{Tags, begin, finish, udp};
        let mut f = Vec::new();
        let c: std::net::IpAddr = format!("198.51.100.{}", sp % 200).parse().unwrap();
        let lay = begin(
            &mut f,
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 0xfe],
            &Tags::NONE,
            c,
            "192.0.2.10".parse().unwrap(),
            17,
            1,
        );
        udp(&mut f, sp, dp);
        finish(&mut f, lay);
        let mut b = crate::action::FrameBuf::new(256);
        assert!(b.load(&f));
        b
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// A worker that takes tables built after its own (what changed worked out on
        /// the management core) ends in the same state as one that takes the same
        /// pipelines built afresh (and works it out itself): the same sweep to do, the
        /// same flows to move, the same counters, the same outcomes for the same
        /// packets; through reloads of rules and timeouts, reclaims (an index changing
        /// hands), advertised flows coming and going, and a skipped generation.
        #[test]
        fn tables_built_after_others_take_a_worker_where_fresh_ones_do(
            steps in proptest::collection::vec(
                (proptest::collection::vec((0u8..6, 0u8..3), 0..5), 0u8..2, proptest::bool::ANY,
                 proptest::option::of(proptest::bool::ANY), proptest::bool::ANY),
                1..8,
            )
        ) {
            let mut p = universe(&[(0, 0), (1, 1)], 0, false, None);
            let first = Tables::build(p.clone(), 1);
            let mut fast = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
            let mut slow = Worker::new(Arc::new(first));
            let mut skipped: Option<Arc<Tables>> = None;
            let mut now = 1_000_000_000u64;
            for (g, (rules, idle, no_b, slot, skip)) in steps.into_iter().enumerate() {
                // Flows of the rules, the slot's port and the service.
                for sp in 0..12u16 {
                    for dp in [5000 + sp % 6, 6000, 80] {
                        now += 1000;
                        let (mut x, mut y) = (udp_frame(sp, dp), udp_frame(sp, dp));
                        let (o1, o2) = (fast.process(&mut x, 0, now), slow.process(&mut y, 0, now));
                        proptest::prop_assert_eq!(o1.route, o2.route);
                        proptest::prop_assert_eq!(x.data(), y.data());
                    }
                }
                let file = universe(&rules, idle, no_b, slot);
                let mut next = p.regrow(file).unwrap();
                if no_b && skipped.is_none() {
                    // Time passes (flows of removed rules expire), then what no flow
                    // uses is freed, as `flowgate run` does (one worker's gauges, once
                    // it runs the tables of the last reload).
                    now += 100_000_000_000;
                    fast.expire(now, 1 << 16);
                    slow.expire(now, 1 << 16);
                    let st = &fast.stats;
                    let open = crate::config::OpenFlows {
                        servers: &st.server_flows,
                        services: &st.svc_open,
                        rules: &st.rule_open,
                    };
                    if let Some((r, _)) = p.reclaim(&open) {
                        next = r.regrow(universe(&rules, idle, no_b, slot)).unwrap();
                    }
                }
                let generation = g as u64 + 2;
                let t_fast = Arc::new(Tables::build_after(next.clone(), generation, fast.tables()));
                proptest::prop_assert!(t_fast.after.is_some());
                if skip && skipped.is_none() {
                    // This generation never reaches `fast`: the next one finds it on
                    // the one before (the slow path).
                    skipped = Some(t_fast);
                } else {
                    skipped = None;
                    proptest::prop_assert!(fast.set_tables(t_fast).is_ok());
                    proptest::prop_assert!(slow.set_tables(Arc::new(Tables::build(next.clone(), generation))).is_ok());
                    proptest::prop_assert_eq!(&fast.sweep_pending, &slow.sweep_pending);
                    proptest::prop_assert_eq!(&fast.revoke_pending, &slow.revoke_pending);
                    proptest::prop_assert_eq!(fast.sweep_at, slow.sweep_at);
                    proptest::prop_assert_eq!(fast.moves_due(), slow.moves_due());
                    proptest::prop_assert_eq!(fast.stats.to_json(&next), slow.stats.to_json(&next));
                    // Index by index, free ones included.
                    let per_index = |w: &Worker| {
                        let s = &w.stats;
                        (s.svc_flows.clone(), s.svc_packets.clone(), s.svc_server_packets.clone(),
                         s.rule_flows.clone(), s.rule_packets.clone(), gauges(w))
                    };
                    proptest::prop_assert_eq!(per_index(&fast), per_index(&slow));
                    while fast.moves_due() || slow.moves_due() {
                        fast.move_flows(64);
                        slow.move_flows(64);
                    }
                    while fast.sweep_due() || slow.sweep_due() {
                        fast.sweep(64);
                        slow.sweep(64);
                    }
                }
                p = next;
            }
        }
    }

    /// Live flows per server, per service and per rule, counted by walking the flow
    /// table.
    fn census(w: &mut Worker) -> [Vec<u64>; 3] {
        let p = &w.tables.pipeline;
        let mut n = [p.servers.len(), p.services.len(), p.flow_rules.len()].map(|l| vec![0u64; l]);
        let mut at = Some(0);
        while let Some(from) = at {
            at = w.flows.table.visit(from, 1024, |_, f, _, _| {
                if let Target::Server(s) = f.target {
                    n[0][s as usize] += 1;
                }
                match f.owner {
                    Owner::Service(i) => n[1][usize::from(i)] += 1,
                    Owner::Rule(i) => n[2][usize::from(i)] += 1,
                    Owner::Other => {}
                }
            });
        }
        n
    }

    /// The gauges [`census`] counts.
    fn gauges(w: &Worker) -> [Vec<u64>; 3] {
        let s = &w.stats;
        [
            s.server_flows.clone(),
            s.svc_open.clone(),
            s.rule_open.clone(),
        ]
    }

    proptest::proptest! {
        /// The live-flow gauges (per server, service and rule) equal a census of the
        /// flow table through
        /// creation, handshakes, closing and reuse of a tuple, eviction from a small
        /// table, expiry, and flows moved off a server that went down.
        #[test]
        fn server_flows_follow_the_table(
            ops in proptest::collection::vec((0u8..7, 0u16..40), 1..300)
        ) {
            use crate::r#gen::frame::{Tags, begin, finish, flags, tcp, udp};
            let y = P.replace("      - { name: b, mac: \"02:00:00:00:01:02\" }\n",
                "      - { name: b, mac: \"02:00:00:00:01:02\" }\n      - { name: c, mac: \"02:00:00:00:01:03\" }\n")
                + "flows:\n  - name: r\n    match: { proto: udp, dst_port: 53 }\n    to: c\n    idle_timeout: 2\n\
                   flow_table: { capacity: 16, tcp_syn_timeout: 1, tcp_closing_timeout: 1 }\n";
            let p = Pipeline::from_str(&y, Path::new("p.yaml")).unwrap();
            let down = Pipeline::from_str(
                &y.replace("01:01\" }", "01:01\", state: down }"),
                Path::new("q.yaml"),
            )
            .unwrap();
            let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
            let mut now = 1_000_000_000u64;
            let mut f = Vec::new();
            let v: std::net::IpAddr = "192.0.2.10".parse().unwrap();
            let (sys, gw, srv) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 0xfe], [2, 0, 0, 0, 1, 1]);
            for (i, (op, c)) in ops.into_iter().enumerate() {
                let client: std::net::IpAddr = format!("198.51.100.{}", c % 20).parse().unwrap();
                let port = 40000 + c;
                now += 1_000_000;
                let mut frame = |from_server: bool, fl: u8, is_udp: bool| {
                    let (s, d, sm) = if from_server { (v, client, srv) } else { (client, v, gw) };
                    let lay = begin(&mut f, sys, sm, &Tags::NONE, s, d, if is_udp { 17 } else { 6 }, 1);
                    match (is_udp, from_server) {
                        (true, false) => udp(&mut f, port, 53),
                        (true, true) => udp(&mut f, 53, port),
                        (false, false) => tcp(&mut f, port, 80, 1, 1, fl),
                        (false, true) => tcp(&mut f, 80, port, 1, 1, fl),
                    }
                    finish(&mut f, lay);
                    let mut b = crate::action::FrameBuf::new(256);
                    assert!(b.load(&f));
                    b
                };
                let mut b = match op {
                    0 => frame(false, flags::SYN, false),
                    1 => frame(true, flags::SYN | flags::ACK, false),
                    2 => frame(false, flags::ACK, false),
                    3 => frame(false, flags::FIN | flags::ACK, false),
                    4 => frame(false, 0, true),
                    5 => {
                        // Time passes: flows expire.
                        now += 3_000_000_000;
                        w.expire(now, 1000);
                        proptest::prop_assert_eq!(census(&mut w), gauges(&w));
                        continue;
                    }
                    _ => {
                        // Server a goes down or comes back (same shape).
                        let t = if i % 2 == 0 { down.clone() } else { p.clone() };
                        w.set_tables(Arc::new(Tables::build(t, i as u64 + 2))).unwrap();
                        continue;
                    }
                };
                w.process(&mut b, 0, now);
                proptest::prop_assert_eq!(census(&mut w), gauges(&w));
            }
        }
    }
}
