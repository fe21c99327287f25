//! Pipeline configuration: `pipelines/*.yaml` parsed low ([`raw`]) and validated high
//! (this module) once, at start.
//!
//! [`Pipeline::load`] returns either a fully typed, cross-checked [`Pipeline`] or a
//! [`ConfigError`] that names the file, the line and the key (`services[0].qos`), so
//! `flowgate check` can point a user at the mistake. Nothing here runs on the packet path.
//!
//! QoS attributes resolve to [`QosActions`]; their application order on a frame is fixed
//! and documented in `crate::action`.

pub mod changes;
pub mod locate;
pub mod raw;

use crate::classify::{self, Decision, Range, Rule};
use raw::{RawAffinity, RawMatch, RawPipeline, RawQos, RawQosRef, RawRange};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// A 48-bit Ethernet address.
pub type Mac = [u8; 6];

/// A configuration error, located in its file.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {}{msg}", key_prefix(.key))]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub key: String,
    pub msg: String,
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

/// Splits a serde_yaml_ng message into the key path it starts with (`services[0].vip: …`)
/// and the rest, drops its trailing position, and names the offending key itself for
/// unknown-field errors (`services[0].servers[0].mak`).
fn split_serde_msg(msg: &str) -> (String, String) {
    let (mut key, msg) = match msg.split_once(": ") {
        Some((k, m)) if !k.contains(' ') => (k.to_string(), m.to_string()),
        _ => (String::new(), msg.to_string()),
    };
    let msg = match msg.rsplit_once(" at line ") {
        Some((m, _)) => m.to_string(),
        None => msg,
    };
    if let Some(f) = ["unknown field `", "duplicate field `"]
        .iter()
        .find_map(|p| msg.strip_prefix(p))
        .and_then(|r| r.split_once('`'))
        .map(|(f, _)| f)
    {
        if !key.is_empty() {
            key.push('.');
        }
        key.push_str(f);
    }
    (key, msg)
}

/// A located error for a YAML syntax or shape error.
fn yaml_error(file: &str, text: &str, e: &serde_yaml_ng::Error) -> ConfigError {
    let line = e.location().map_or(0, |l| l.line());
    let (key, msg) = split_serde_msg(&e.to_string());
    if msg.contains("untagged enum RawQosRef")
        && let Some(better) = qos_ref_error(file, text, &key)
    {
        return better;
    }
    let line = match msg
        .strip_prefix("duplicate field `")
        .and_then(|r| r.split_once('`'))
    {
        Some((f, _)) => {
            let parent = key.strip_suffix(f).unwrap_or("").trim_end_matches('.');
            let owned = parse_path(parent);
            locate::line_of_duplicate(text, &segs_of(&owned), f)
        }
        None => line,
    };
    ConfigError {
        file: file.to_string(),
        line,
        key,
        msg,
    }
}

fn segs_of(owned: &[(String, Option<usize>)]) -> Vec<locate::Seg<'_>> {
    owned
        .iter()
        .map(|(k, i)| match i {
            Some(i) => locate::Seg::Idx(*i),
            None => locate::Seg::Key(k.as_str()),
        })
        .collect()
}

/// `services[1].qos` as owned path segments.
fn parse_path(key: &str) -> Vec<(String, Option<usize>)> {
    let mut v = Vec::new();
    for part in key.split('.').filter(|p| !p.is_empty()) {
        let mut it = part.split('[');
        if let Some(k) = it.next().filter(|k| !k.is_empty()) {
            v.push((k.to_string(), None));
        }
        for idx in it {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                v.push((String::new(), Some(i)));
            }
        }
    }
    v
}

/// serde reports a bad `qos:`/`reply_qos:` (class name or inline attributes) only as
/// "did not match any variant" at the enclosing item. Re-check the item's QoS values
/// one by one to name the real key and line (`services[0].qos.bogus`).
fn qos_ref_error(file: &str, text: &str, item: &str) -> Option<ConfigError> {
    let root: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).ok()?;
    let segs = parse_path(item);
    let mut v = &root;
    for (k, i) in &segs {
        v = match i {
            Some(i) => v.get(*i)?,
            None => v.get(k.as_str())?,
        };
    }
    for field in ["qos", "reply_qos"] {
        let Some(q) = v.get(field) else { continue };
        let mut path = if item.is_empty() {
            field.to_string()
        } else {
            format!("{item}.{field}")
        };
        let msg = match q {
            serde_yaml_ng::Value::String(_) => continue,
            // Through text, so that serde prefixes nested keys (`push_vlan: unknown…`).
            serde_yaml_ng::Value::Mapping(_) => match serde_yaml_ng::to_string(q)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_yaml_ng::from_str::<RawQos>(&t).map_err(|e| e.to_string()))
            {
                Ok(_) => continue,
                Err(e) => {
                    let (sub, msg) = split_serde_msg(&e);
                    if !sub.is_empty() {
                        path = format!("{path}.{sub}");
                    }
                    msg
                }
            },
            _ => "expected a QoS class name or a map of QoS attributes".to_string(),
        };
        let owned = parse_path(&path);
        return Some(ConfigError {
            file: file.to_string(),
            line: locate::line_of(text, &segs_of(&owned)),
            key: path,
            msg,
        });
    }
    None
}

/// Where traffic goes when it is not sent to a chosen server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Target {
    /// To server `i` of [`Pipeline::servers`].
    Server(u16),
    /// To the outside gateway.
    Gateway,
    /// Dropped (counted).
    #[default]
    Drop,
}

/// Server-choice policy of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Weighted Maglev over the configured weights.
    Maglev,
    /// Weighted Maglev over `weight × (1 − load)`.
    LeastLoad,
    /// Weighted Maglev over `weight × (min response time / response time)`.
    ResponseTime,
    /// The member with the fewest open flows for its weight (IPVS's weighted least
    /// connections), counted over all the workers of `flowgate run`
    /// ([`crate::pipeline::gauges`]); the Maglev table (over
    /// the configured weights) breaks ties.
    LeastFlows,
}

/// Which new flows of a service go to the same server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Affinity {
    /// Each new flow is placed by its own addresses, ports and protocol: one client's
    /// connections spread over the servers.
    #[default]
    Connection,
    /// Every new flow from one client network goes to one server: placed by the source
    /// address cut to `v4_prefix` (IPv4) or `v6_prefix` (IPv6) bits. The placement is a
    /// function of that prefix and the Maglev table only, so services with the same
    /// servers and weights place a client on the same server (IKE on UDP 500 and 4500
    /// with the ESP it keys, HTTP beside HTTPS), on every worker and every intermediate
    /// system, without shared state.
    Source { v4_prefix: u8, v6_prefix: u8 },
}

impl Affinity {
    /// `affinity: source`'s prefixes when none are given: one IPv4 address, one IPv6 /64
    /// (a host's temporary addresses rotate within its /64, RFC 8981).
    pub const SOURCE_V4_PREFIX: u8 = 32;
    pub const SOURCE_V6_PREFIX: u8 = 64;
}

/// A service's `rate_limit`: how many new flows each client may open (`per_source`: a
/// token bucket per client), and how many the service takes from all of them together
/// (`total`: one bucket). A client is its source address cut to `v4_prefix` or
/// `v6_prefix` bits, as in [`Affinity::Source`]. At least one of the two is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_source: Option<Bucket>,
    pub total: Option<Bucket>,
    pub v4_prefix: u8,
    pub v6_prefix: u8,
}

/// A token bucket: `rate` new flows a second, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub rate: u32,
    pub burst: u32,
}

impl RateLimit {
    /// The most a `rate_limit` may say, a second or at once.
    pub const MAX: u32 = 10_000_000;
}

/// A service's `conn_limit`: how many open flows (TCP connections, UDP and other flows)
/// each client may hold at once. A client is one IPv4 address or one IPv6 /64, fixed (not
/// configurable) so that a flow is uncounted under the key it was counted under whatever
/// a reload changes; see `pipeline::gauges::ConnCounts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimit {
    pub per_source: u32,
}

impl ConnLimit {
    /// The most a `conn_limit` may say.
    pub const MAX: u32 = 10_000_000;
    /// What one client is: its address cut to these prefixes.
    pub const V4_PREFIX: u8 = 32;
    pub const V6_PREFIX: u8 = 64;
}

/// Administrative state of a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// Takes new flows (when its weight is > 0).
    Up,
    /// Takes no new flows, keeps its existing ones (graceful shutdown).
    Draining,
    /// Takes nothing; its flows are re-balanced.
    Down,
}

/// One end system.
#[derive(Clone, Debug, PartialEq)]
pub struct Server {
    pub name: String,
    pub mac: Mac,
    pub ip: Option<IpAddr>,
    /// The port it sits behind (index into [`Pipeline::ports`]); `None` = the only port.
    pub port: Option<u16>,
    pub state: ServerState,
    /// Load figure 0.0..=1.0 (from the control plane; static in the YAML).
    pub load: f64,
    /// Response time in ms (from the control plane; static in the YAML).
    pub response_ms: f64,
    /// Removed from the file by a reload ([`Pipeline::regrow`]) but kept, down, while
    /// flows may still go to it; [`Pipeline::reclaim`] frees its index once none does.
    pub removed: bool,
    /// The most open flows (of every service and rule) whose target it is; a new flow
    /// whose first choice it is at that goes to another server with room (see
    /// `Worker::place`). Counted over all the workers of `flowgate run`
    /// ([`crate::pipeline::gauges`]). `None`: no limit.
    pub max_flows: Option<u32>,
    /// Nanoseconds over which the server takes its weight after it comes up while the
    /// system runs (`slow_start`, seconds in the file; `None`, or 0 there: at once).
    /// `flowgate run` ramps it ([`crate::runtime::ramp`]) through `ramp`.
    pub slow_start_ns: Option<u64>,
    /// The share of its weight the server has now (1.0 but during a slow start; never in
    /// a file): [`crate::pipeline::effective_weight`] scales by it.
    pub ramp: f64,
    /// Passive health check (`max_fails`): this many failures (a client's SYN sent again
    /// unanswered, a reset answering a SYN, a port unreachable on a flow never answered)
    /// within `fail_timeout_ns` take the server out of new flows for `fail_timeout_ns`
    /// ([`crate::runtime::eject`]).
    /// `None`: never.
    pub max_fails: Option<u32>,
    /// `fail_timeout` (seconds in the file, default 10), in nanoseconds.
    pub fail_timeout_ns: u64,
    /// Taken out by the passive health check (never in a file): no new flows
    /// ([`crate::pipeline::effective_weight`] is 0), and its flows never answered move
    /// on their next packet from the client.
    pub ejected: bool,
}

impl Server {
    /// A free index: a removed server whose last flow ended ([`Pipeline::reclaim`]),
    /// waiting for a new server ([`Pipeline::regrow`]). It has no name, is down and
    /// serves no service.
    pub fn vacant(&self) -> bool {
        self.name.is_empty()
    }

    fn vacated() -> Server {
        Server {
            name: String::new(),
            mac: [0; 6],
            ip: None,
            port: None,
            state: ServerState::Down,
            load: 0.0,
            response_ms: 1.0,
            removed: true,
            max_flows: None,
            slow_start_ns: None,
            ramp: 1.0,
            max_fails: None,
            fail_timeout_ns: DEFAULT_FAIL_TIMEOUT_NS,
            ejected: false,
        }
    }
}

/// `fail_timeout` when a server with `max_fails` leaves it out: 10 s, as nginx's.
pub const DEFAULT_FAIL_TIMEOUT_NS: u64 = 10_000_000_000;

/// A service member: a server with its weight in this service.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// The server ([`Member::VACANT`] for a free member index).
    pub server: u16,
    pub weight: u32,
    /// `backup: true`: the member takes the service's new flows only while no primary
    /// member (one without it) can take them, or, under `max_flows`, those no primary
    /// has room for ([`crate::pipeline::tier_weights`]).
    pub backup: bool,
}

impl Member {
    /// The server of a free member index: a removed member whose server's last flow
    /// ended ([`Pipeline::reclaim`]), waiting for a new member of its service.
    pub const VACANT: u16 = u16::MAX;

    /// A free member index (see [`Member::VACANT`]); weight 0.
    pub fn vacant(&self) -> bool {
        self.server == Member::VACANT
    }
}

/// QoS rewrites, applied in the order documented in `crate::action`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QosActions {
    pub pop_mpls: bool,
    pub swap_mpls: Option<u32>,
    pub pop_vlan: bool,
    pub set_vlan: Option<u16>,
    /// (tpid, vid, pcp)
    pub push_vlan: Option<(u16, u16, u8)>,
    pub pcp: Option<u8>,
    /// (label, tc, ttl)
    pub push_mpls: Option<(u32, u8, u8)>,
    pub dscp: Option<u8>,
}

impl QosActions {
    /// No action (the `Default`, usable in a `static`).
    pub const NONE: QosActions = QosActions {
        pop_mpls: false,
        swap_mpls: None,
        pop_vlan: false,
        set_vlan: None,
        push_vlan: None,
        pcp: None,
        push_mpls: None,
        dscp: None,
    };

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        *self == QosActions::default()
    }
}

/// A service's `allow` list: the networks as written (for listings), and the same
/// addresses as sorted, disjoint ranges, so that a lookup is a binary search, whatever
/// the number of networks (a country's address blocks run to thousands).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    written: Vec<Range<u128>>,
    merged: Vec<Range<u128>>,
}

impl AllowList {
    /// The list of `networks` (IPv4-mapped; any order, overlaps allowed).
    pub fn new(networks: Vec<Range<u128>>) -> AllowList {
        let mut sorted: Vec<Range<u128>> =
            networks.iter().copied().filter(|r| !r.is_empty()).collect();
        sorted.sort_unstable_by_key(|r| r.lo);
        let mut merged: Vec<Range<u128>> = Vec::with_capacity(sorted.len());
        for r in sorted {
            match merged.last_mut() {
                // Overlapping or adjacent: one range.
                Some(m) if m.hi == u128::MAX || r.lo <= m.hi + 1 => m.hi = m.hi.max(r.hi),
                _ => merged.push(r),
            }
        }
        AllowList {
            written: networks,
            merged,
        }
    }

    /// True when the list is empty (every client is taken).
    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
    }

    /// The networks as written.
    pub fn networks(&self) -> &[Range<u128>] {
        &self.written
    }

    /// True when address `a` (IPv4-mapped) lies in one of the networks.
    #[inline]
    pub fn contains(&self, a: u128) -> bool {
        let i = self.merged.partition_point(|r| r.hi < a);
        self.merged.get(i).is_some_and(|r| r.lo <= a)
    }

    /// True when, as a service's `allow`, this list takes every client `old` took (an
    /// empty list takes every client): false when a reload from `old` to it narrows the
    /// service to fewer clients.
    pub fn admits_all_of(&self, old: &AllowList) -> bool {
        if self.is_empty() {
            return true;
        }
        let all = [Range::new(0, u128::MAX)];
        let old = if old.is_empty() {
            &all[..]
        } else {
            &old.merged
        };
        // The merged ranges are maximal (adjacent ones joined): each of `old`'s lies
        // inside one of them or is not wholly taken.
        old.iter().all(|r| {
            let i = self.merged.partition_point(|m| m.hi < r.lo);
            self.merged
                .get(i)
                .is_some_and(|m| m.lo <= r.lo && r.hi <= m.hi)
        })
    }
}

/// A VIP service.
#[derive(Clone, Debug)]
pub struct Service {
    pub name: String,
    pub vip: IpAddr,
    pub proto: u8,
    pub ports: Vec<Range<u16>>,
    pub policy: Policy,
    /// What keeps new flows together on one server.
    pub affinity: Affinity,
    pub qos: QosActions,
    pub reply_qos: QosActions,
    /// The member servers. A member's index is its identity while the system runs
    /// (counters hold it); a reload appends new members and keeps removed ones at
    /// weight 0 ([`Pipeline::regrow`]), so the order here is not the file's.
    pub members: Vec<Member>,
    /// The members in the file's order, as indices into `members` (a member a reload
    /// removed is not here): the order Maglev places them in, which decides its ties, so
    /// that a reloaded system places new flows as one started on the same file does.
    pub member_order: Vec<u16>,
    /// Maglev lookup table size (prime).
    pub table_size: usize,
    /// `no_server: reject`: a new flow no server can take is answered with an ICMP
    /// (ICMPv6) port unreachable from the VIP, so its client fails at once; else (`drop`,
    /// the default) it is dropped.
    pub reject: bool,
    /// New flows each client may open (`None`: no limit); see
    /// `Worker::admit` in [`crate::pipeline`].
    pub rate_limit: Option<RateLimit>,
    /// Open flows each client may hold (`None`: no limit); see
    /// [`ConnCounts`](crate::pipeline::gauges::ConnCounts).
    pub conn_limit: Option<ConnLimit>,
    /// `allow`: the client networks (source prefixes, in the IPv4-mapped space) whose
    /// new flows the service takes; empty: every client.
    pub allow: AllowList,
    /// Removed from the file by a reload ([`Pipeline::regrow`]) but kept so that its
    /// open flows go on: it matches no new traffic and owns no address.
    /// [`Pipeline::reclaim`] frees its index once its last flow ended.
    pub retired: bool,
}

impl Service {
    /// A free index: a retired service whose last flow ended ([`Pipeline::reclaim`]),
    /// waiting for a new service ([`Pipeline::regrow`]). It has no name, no members and
    /// matches nothing.
    pub fn vacant(&self) -> bool {
        self.name.is_empty()
    }

    /// Members that are not free ([`Member::vacant`]).
    pub fn live_members(&self) -> usize {
        self.members.iter().filter(|m| !m.vacant()).count()
    }

    fn vacated(&self) -> Service {
        Service {
            name: String::new(),
            ports: Vec::new(),
            qos: QosActions::NONE,
            reply_qos: QosActions::NONE,
            members: Vec::new(),
            member_order: Vec::new(),
            // The smallest Maglev table a file may ask for: it places nothing.
            table_size: 7,
            reject: false,
            retired: true,
            ..self.clone()
        }
    }

    /// What service `index` (this one) matches: one rule per port range, to its VIP (and
    /// protocol, unless any).
    pub fn rules(&self, index: usize) -> impl Iterator<Item = Rule> + '_ {
        let (addr, len) = ip_to_u128(self.vip);
        // A retired service matches nothing new.
        let ports = if self.retired {
            &[][..]
        } else {
            &self.ports[..]
        };
        ports.iter().map(move |p| {
            let mut r = Rule::any(Decision::Service(index as u32));
            r.dst = classify::prefix_range(addr, len);
            if self.proto != 0 {
                r.proto = Range::exact(self.proto);
            }
            r.dst_port = *p;
            r
        })
    }
}

/// A pattern rule (`flows:`).
#[derive(Clone, Debug)]
pub struct FlowRule {
    pub name: String,
    /// The compiled match (decision = `FlowRule(index)`).
    pub rule: Rule,
    pub target: Target,
    pub qos: QosActions,
    pub reply_qos: QosActions,
    /// Idle timeout of the flows it creates, in ns.
    pub idle_timeout_ns: u64,
    /// When the rule changes in new tables, flows already in the flow table that it
    /// matches (on addresses, protocol and ports, as their first packet went) move to it,
    /// and flows it held that it no longer matches let go of it (see
    /// [`Worker::sweep`](crate::pipeline::Worker::sweep)). Set for the slots of
    /// advertised flows, where an end system says where its flows go; an operator's
    /// rules (`flows:`) steer new flows only.
    pub claims_existing: bool,
}

impl FlowRule {
    /// A free index: a removed rule whose last flow ended ([`Pipeline::reclaim`]),
    /// waiting for a new rule ([`Pipeline::regrow`]). It has no name and matches nothing.
    pub fn vacant(&self) -> bool {
        self.name.is_empty()
    }

    /// The free rule at index `i` of a pipeline whose default idle timeout is `idle_ns`.
    fn vacated(i: usize, idle_ns: u64) -> FlowRule {
        let mut rule = Rule::any(Decision::FlowRule(i as u32));
        rule.proto = Range { lo: 1, hi: 0 };
        FlowRule {
            name: String::new(),
            rule,
            target: Target::Drop,
            qos: QosActions::NONE,
            reply_qos: QosActions::NONE,
            idle_timeout_ns: idle_ns,
            claims_existing: false,
        }
    }
}

/// Flow table sizing and timeouts (ns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTableConf {
    pub capacity: usize,
    pub tcp_syn_ns: u64,
    pub tcp_established_ns: u64,
    pub tcp_closing_ns: u64,
    pub idle_ns: u64,
}

impl Default for FlowTableConf {
    fn default() -> Self {
        const S: u64 = 1_000_000_000;
        FlowTableConf {
            capacity: 1 << 20,
            tcp_syn_ns: 10 * S,
            tcp_established_ns: 300 * S,
            tcp_closing_ns: 10 * S,
            idle_ns: 60 * S,
        }
    }
}

/// The validated pipeline.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// File it came from (for messages).
    pub source: PathBuf,
    pub mac: Mac,
    /// Addresses the system owns besides VIPs (answers ARP/ND for them).
    pub addresses: Vec<IpAddr>,
    pub gateway_mac: Mac,
    pub gateway_port: Option<u16>,
    /// Port names referenced (`port:` of servers and gateway), in first-seen order.
    pub ports: Vec<String>,
    pub servers: Vec<Server>,
    /// The services. A service's index is its identity while the system runs (flows and
    /// counters hold it); a reload appends new services and keeps removed ones as
    /// [`Service::retired`] ([`regrow`](Self::regrow)), so the order here is not their
    /// priority.
    pub services: Vec<Service>,
    /// The live services, as indices into `services`, in priority order (the file's):
    /// of two services whose addresses, protocols and ports overlap, the first matches.
    pub service_order: Vec<u16>,
    /// The pattern rules. A rule's index is its identity while the system runs (flows and
    /// counters hold it); a reload appends new rules and keeps removed ones
    /// ([`regrow`](Self::regrow)), so the order here is not their priority.
    pub flow_rules: Vec<FlowRule>,
    /// The live pattern rules, as indices into `flow_rules`, in priority order: the file's
    /// order, then the advertised-flow slots. A rule a reload removed is not here: it
    /// matches nothing new, and the flows it made keep its target, QoS and timeout.
    pub rule_order: Vec<u16>,
    pub default: Target,
    pub flow_table: FlowTableConf,
    /// Switch or router (`system.mode`).
    pub forwarding: Forwarding,
    /// ICMP errors a worker may send per second (0: none).
    pub icmp_rate: u32,
    /// The links' MTU (`system.mtu`): the most bytes after the Ethernet header and VLAN
    /// tags (MPLS labels and the IP packet) a forwarded frame may carry, on every port;
    /// `None`: no limit but the frame buffer's (or `port_mtu`'s). See [`Pipeline::mtu_for`].
    pub mtu: Option<u16>,
    /// Per port (index into `ports`), from `system.mtu` given by port name: that port's
    /// MTU, over `mtu`; `None` or past the end: `mtu`.
    pub port_mtu: Vec<Option<u16>>,
}

/// How the system forwards IP packets (`system.mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Forwarding {
    /// A layer-2 hop (the default): MAC addresses and QoS are rewritten, the IP header's
    /// TTL or hop limit is not.
    #[default]
    Switch,
    /// An IP hop: every forwarded IPv4 or IPv6 packet (not inside MPLS) leaves with its
    /// TTL or hop limit one lower, and one that arrives with 1 or 0 is not forwarded but
    /// answered with an ICMP Time Exceeded, at most `icmp_rate` a second per worker.
    Router,
}

/// Default `system.icmp_rate`: ICMP errors a worker sends per second (Linux's
/// `icmp_msgs_per_sec` default).
pub const DEFAULT_ICMP_RATE: u32 = 1000;

/// What `system.mtu` may be: at least the IPv6 minimum link MTU (RFC 8200 §5), at most
/// what a frame of [`crate::action::MAX_FRAME`] bytes with the most VLAN tags the parser
/// takes can carry.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 1280..=16_000;

/// How the names of the control plane's advertised-flow slots start (pattern rules the
/// runtime appends; a file's rules may not use it).
pub const SLOT_PREFIX: &str = "advertised-";

/// Default Maglev table size: a prime well above 100 × the number of servers.
pub const DEFAULT_TABLE_SIZE: usize = 65537;

/// An index of a running pipeline's list ([`Pipeline::regrow_with`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Server(usize),
    Service(usize),
    /// Service, member.
    Member(usize, usize),
    Rule(usize),
}

/// Open flows per server, service and pattern rule (by index), summed over every
/// worker: what [`Pipeline::reclaim`] reads.
#[derive(Clone, Copy, Debug)]
pub struct OpenFlows<'a> {
    pub servers: &'a [u64],
    pub services: &'a [u64],
    pub rules: &'a [u64],
}

/// What [`Pipeline::reclaim`] freed, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Freed {
    pub servers: Vec<String>,
    pub services: Vec<String>,
    /// (service, server).
    pub members: Vec<(String, String)>,
    pub rules: Vec<String>,
}

impl std::fmt::Display for Freed {
    /// `servers ["a"], members ["web"/"a"], rules ["r"]`: the lists that are not empty.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let quoted = |v: &[String]| v.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>();
        let members = (self.members.iter()).map(|(s, m)| format!("{s:?}/{m:?}"));
        let mut sep = "";
        for (what, v) in [
            ("servers", quoted(&self.servers)),
            ("services", quoted(&self.services)),
            ("members", members.collect()),
            ("rules", quoted(&self.rules)),
        ] {
            if !v.is_empty() {
                write!(f, "{sep}{what} [{}]", v.join(", "))?;
                sep = ", ";
            }
        }
        Ok(())
    }
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn err(&self, path: &[locate::Seg], msg: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line: locate::line_of(self.text, path),
            key: locate::render(path),
            msg: msg.into(),
        }
    }
}

use locate::Seg::{Idx, Key};

impl Pipeline {
    /// The MTU of pipeline port `port` (see [`Pipeline::mtu`]): its own from
    /// `system.mtu`'s map, else the one for every port; `None`: no limit.
    #[inline]
    pub fn mtu_for(&self, port: u16) -> Option<u16> {
        self.port_mtu
            .get(usize::from(port))
            .copied()
            .flatten()
            .or(self.mtu)
    }

    /// The smallest MTU of any port (`None`: no port has one): a frame within it fits
    /// every port.
    pub fn smallest_mtu(&self) -> Option<u16> {
        (self.port_mtu.iter().flatten().copied())
            .chain(self.mtu)
            .min()
    }

    /// Reads and validates a pipeline file.
    pub fn load(path: &Path) -> Result<Pipeline, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: 0,
            key: String::new(),
            msg: format!("cannot read: {e}"),
        })?;
        Self::from_str(&text, path)
    }

    /// Parses and validates `text` (named `path` in errors).
    pub fn from_str(text: &str, path: &Path) -> Result<Pipeline, ConfigError> {
        let file = path.display().to_string();
        let raw: RawPipeline =
            serde_yaml_ng::from_str(text).map_err(|e| yaml_error(&file, text, &e))?;
        let cx = Ctx { file: &file, text };
        resolve(&cx, raw, path)
    }

    /// True when `self` and `other` have exactly the same shape: the same servers (by
    /// name, in order), services (name and member servers), pattern rules and ports.
    /// Weights, states, loads, QoS and matches may differ. What the control plane's
    /// overlay keeps (it never adds nor removes); a reload may also grow the shape
    /// ([`grows_into`](Self::grows_into)).
    pub fn same_shape(&self, other: &Pipeline) -> bool {
        self.servers.len() == other.servers.len()
            && (self.servers.iter().zip(&other.servers)).all(|(a, b)| a.name == b.name)
            && self.services.len() == other.services.len()
            && (self.services.iter().zip(&other.services)).all(|(a, b)| {
                a.name == b.name
                    && a.members.len() == b.members.len()
                    && (a.members.iter().zip(&b.members)).all(|(x, y)| x.server == y.server)
            })
            && self.flow_rules.len() == other.flow_rules.len()
            && (self.flow_rules.iter().zip(&other.flow_rules)).all(|(a, b)| a.name == b.name)
            && self.ports == other.ports
            && self.flow_table_change(other).is_none()
    }

    /// True when `new` only grows `self`, so that it can replace it under live flows
    /// and counters: each of `self`'s servers (by name), services (by name), members of
    /// a service (by server) and pattern rules (by name, the advertised-flow slots among
    /// them) is at its index in `new`, unless a reload had removed it (kept for its open
    /// flows, or already free: [`reclaim`](Self::reclaim)), whose index `new` may give
    /// to another ([`regrow`](Self::regrow)); the same ports. New entries may follow;
    /// weights, states, QoS, matches and the priority orders may differ. (A flow holds
    /// server, service and rule indices; a counter, service, member and rule indices:
    /// all keep their meaning, except at an index whose entry changed, whose counters
    /// start again from zero and which no flow holds: see
    /// [`reclaim`](Self::reclaim).)
    pub fn grows_into(&self, new: &Pipeline) -> bool {
        let live_rules = in_order(&self.rule_order, self.flow_rules.len());
        self.servers.len() <= new.servers.len()
            && (self.servers.iter().zip(&new.servers)).all(|(a, b)| a.name == b.name || a.removed)
            && self.services.len() <= new.services.len()
            && (self.services.iter().zip(&new.services)).all(|(a, b)| {
                if a.name != b.name {
                    return a.retired;
                }
                let live = in_order(&a.member_order, a.members.len());
                a.members.len() <= b.members.len()
                    && (a.members.iter().zip(&b.members).zip(live))
                        .all(|((x, y), live)| x.server == y.server || !live)
            })
            && self.flow_rules.len() <= new.flow_rules.len()
            && (self.flow_rules.iter().zip(&new.flow_rules).zip(live_rules))
                .all(|((a, b), live)| a.name == b.name || !live)
            && self.ports == new.ports
            && self.flow_table_change(new).is_none()
    }

    /// The pattern rules' idle timeouts (ns), by rule.
    pub fn rule_idle_ns(&self) -> Vec<u64> {
        // A free index has no timeout of its own (`reclaim`): the default's, which takes
        // no class of its own.
        (self.flow_rules.iter())
            .map(|r| {
                if r.vacant() {
                    self.flow_table.idle_ns
                } else {
                    r.idle_timeout_ns
                }
            })
            .collect()
    }

    /// Why a flow table built for `self` cannot serve `new`, if it cannot (its size may
    /// change: [`crate::flow::FlowTable::resize`]). Each distinct timeout is a class, so that a flow whose
    /// timeout changes (its TCP state's, `flow_table`'s idle timeout or its pattern
    /// rule's) moves to the class of the new value
    /// ([`crate::flow::FlowTable::retime`]); the timeouts the open flows may have
    /// (`self`'s) and those of `new` must then be at most [`crate::flow::MAX_TIMEOUTS`]
    /// distinct values. Call with `new` regrown from `self`
    /// ([`grows_into`](Self::grows_into)).
    pub fn flow_table_change(&self, new: &Pipeline) -> Option<String> {
        let (a, b) = (&self.flow_table, &new.flow_table);
        let mut distinct = crate::flow::distinct_timeouts(a, &self.rule_idle_ns());
        for t in crate::flow::distinct_timeouts(b, &new.rule_idle_ns()) {
            if !distinct.contains(&t) {
                distinct.push(t);
            }
        }
        if distinct.len() > crate::flow::MAX_TIMEOUTS {
            return Some(format!(
                "the timeouts of the running and the new pipeline (flow_table's and the \
                 pattern rules' idle_timeout, with those kept for open flows) make {} \
                 distinct values; at most {}",
                distinct.len(),
                crate::flow::MAX_TIMEOUTS
            ));
        }
        None
    }

    /// `new` (this pipeline's file loaded again, say) made to grow `self`
    /// ([`grows_into`](Self::grows_into)), so that a running system can take it under
    /// live flows:
    /// - servers: `self`'s keep their indices, new ones take free indices (left by
    ///   [`reclaim`](Self::reclaim)) or follow (server order means nothing else: Maglev
    ///   places by name); one the file no longer has is kept, `down` and
    ///   [`Server::removed`], so its flows move to the other servers on their next packet;
    /// - services (by name): `self`'s keep their indices, new ones take free indices or
    ///   follow; their priority (which of overlapping services matches) is the file's order
    ///   ([`service_order`](Self::service_order)), so they may be added anywhere and
    ///   reordered; one the file no longer has is kept as [`Service::retired`]: it matches
    ///   nothing new and owns no address, and its open flows go on until they end;
    /// - a service's servers (by server): those it had keep their member indices, new ones
    ///   take free member indices or follow; Maglev places them in the file's order
    ///   ([`Service::member_order`]), so they may be added anywhere and reordered; one it
    ///   no longer lists is kept at weight 0, so its open flows stay and it takes no new
    ///   ones;
    /// - pattern rules (by name): `self`'s keep their indices, new ones take free indices
    ///   or follow; their priority is the file's order ([`rule_order`](Self::rule_order)),
    ///   so they may also be reordered; one the file no longer has is kept out of the
    ///   order: it matches nothing new, and the flows it made keep its target, QoS and
    ///   idle timeout until they end (the same name in a later file takes its index back);
    /// - the ports must be the same;
    /// - the flow table's timeouts and size may change, the open flows taking them
    ///   ([`flow_table_change`](Self::flow_table_change)).
    ///
    /// Kept entries stay until [`reclaim`](Self::reclaim) frees them (their last flow
    /// ended). The error says what cannot be taken.
    pub fn regrow(&self, new: Pipeline) -> Result<Pipeline, String> {
        self.regrow_with(new, |_| true)
    }

    /// [`regrow`](Self::regrow), giving a new entry a free index only where `reusable`
    /// says so (`flowgate run`: only once every worker's counters there read zero, so
    /// that none of a freed entry's counts shows under the new one).
    pub fn regrow_with(
        &self,
        mut new: Pipeline,
        reusable: impl Fn(Entry) -> bool,
    ) -> Result<Pipeline, String> {
        if self.ports != new.ports {
            return Err(format!(
                "ports changed ({:?} to {:?})",
                self.ports, new.ports
            ));
        }
        // Servers: the running ones at their indices (a removed one kept, down), then the
        // file's new ones in its order, into free indices first.
        let (servers, to) = merge(
            &self.servers,
            &new.servers,
            |s| (!s.vacant()).then_some(s.name.as_str()),
            |i| reusable(Entry::Server(i)),
            |s| Server {
                state: ServerState::Down,
                removed: true,
                ..s.clone()
            },
            |_, _, n| n.clone(),
        );
        if servers.len() >= usize::from(u16::MAX) {
            return Err("too many servers, with those kept (at most 65534)".into());
        }
        let to: Vec<u16> = to.into_iter().map(|i| i as u16).collect();
        for svc in &mut new.services {
            for m in &mut svc.members {
                m.server = to[usize::from(m.server)];
            }
        }
        for r in &mut new.flow_rules {
            if let Target::Server(i) = r.target {
                r.target = Target::Server(to[usize::from(i)]);
            }
        }
        if let Target::Server(i) = new.default {
            new.default = Target::Server(to[usize::from(i)]);
        }
        self.regrow_rules(&mut new, |i| reusable(Entry::Rule(i)))?;
        if let Some(why) = self.flow_table_change(&new) {
            return Err(why);
        }
        // Services: the running ones at their indices (a removed one kept, retired),
        // then the file's new ones, into free indices first; their priority (which of two
        // overlapping services matches) is the file's order.
        let (services, at) = merge(
            &self.services,
            &new.services,
            |s| (!s.vacant()).then_some(s.name.as_str()),
            |i| reusable(Entry::Service(i)),
            |old| Service {
                retired: true,
                members: (old.members.iter())
                    .map(|m| Member {
                        weight: 0,
                        ..m.clone()
                    })
                    .collect(),
                ..old.clone()
            },
            |i, old, n| regrow_members(old, n.clone(), |j| reusable(Entry::Member(i, j))),
        );
        if services.len() >= usize::from(u16::MAX) {
            return Err("too many services, with those kept (at most 65534)".into());
        }
        new.service_order = (new.service_order.iter())
            .map(|&j| at[usize::from(j)] as u16)
            .collect();
        new.servers = servers;
        new.services = services;
        debug_assert!(self.grows_into(&new));
        Ok(new)
    }

    /// [`regrow`](Self::regrow)'s part for the pattern rules of `new` (its servers
    /// already renumbered): `self`'s rules at their indices (one `new` lacks kept as it
    /// was, out of the priority order), then `new`'s others, into free indices first
    /// where `reusable`; the priority order is `new`'s.
    fn regrow_rules(
        &self,
        new: &mut Pipeline,
        reusable: impl Fn(usize) -> bool,
    ) -> Result<(), String> {
        let (mut rules, at) = merge(
            &self.flow_rules,
            &new.flow_rules,
            |r| (!r.vacant()).then_some(r.name.as_str()),
            reusable,
            Clone::clone,
            |_, _, n| n.clone(),
        );
        if rules.len() >= usize::from(u16::MAX) {
            return Err("too many pattern rules, with those kept (at most 65534)".into());
        }
        for (i, r) in rules.iter_mut().enumerate() {
            r.rule.decision = crate::classify::Decision::FlowRule(i as u32);
        }
        new.rule_order = (new.rule_order.iter())
            .map(|&j| at[usize::from(j)] as u16)
            .collect();
        new.flow_rules = rules;
        Ok(())
    }

    /// The indices of `self` whose entry `new` (which [grows](Self::grows_into) it)
    /// changes: a free index taken, or an entry freed ([`reclaim`](Self::reclaim)). Their
    /// counters start again from zero.
    pub fn changed_entries(&self, new: &Pipeline) -> Vec<Entry> {
        let mut v = Vec::new();
        for (i, (a, b)) in self.servers.iter().zip(&new.servers).enumerate() {
            if a.name != b.name {
                v.push(Entry::Server(i));
            }
        }
        for (i, (a, b)) in self.services.iter().zip(&new.services).enumerate() {
            if a.name != b.name {
                v.push(Entry::Service(i));
                continue;
            }
            for (j, (x, y)) in a.members.iter().zip(&b.members).enumerate() {
                if x.server != y.server {
                    v.push(Entry::Member(i, j));
                }
            }
        }
        for (i, (a, b)) in self.flow_rules.iter().zip(&new.flow_rules).enumerate() {
            if a.name != b.name {
                v.push(Entry::Rule(i));
            }
        }
        v
    }

    /// The services (by index) whose `allow` list in `new`, which [grows](Self::grows_into)
    /// `self`, takes fewer clients than in `self`: a run cuts their open flows from the
    /// clients left out ([`Worker::sweep`](crate::pipeline::Worker::sweep)).
    pub fn allow_narrowed(&self, new: &Pipeline) -> Vec<u16> {
        (self.services.iter().zip(&new.services).enumerate())
            .filter(|(_, (a, b))| a.name == b.name && !b.allow.admits_all_of(&a.allow))
            .map(|(i, _)| i as u16)
            .collect()
    }

    /// Whether a reload removed entries that are still kept for their flows (servers,
    /// services, members, pattern rules): what [`reclaim`](Self::reclaim) may free.
    pub fn keeps_removed(&self) -> bool {
        self.servers.iter().any(|s| s.removed && !s.vacant())
            || self
                .services
                .iter()
                .any(|s| (s.retired && !s.vacant()) || s.member_order.len() < s.live_members())
            || self.rule_order.len() < self.flow_rules.iter().filter(|r| !r.vacant()).count()
    }

    /// `self` with each kept entry ([`regrow`](Self::regrow)) that no open flow uses
    /// any more made free: its index waits, nameless, for a new entry of a later reload
    /// (so that a system whose servers, services and rules come and go over months of
    /// reloads keeps a bounded pipeline and counters). `open` holds the open flows per
    /// server, service and rule, summed over every worker, counted while they ran
    /// `self` (flows of a kept entry only end: none is made after it was removed, so a
    /// count of zero stays zero). Freed here:
    /// - a retired service with no open flow (with its members);
    /// - a pattern rule out of the priority order with no open flow;
    /// - a service's kept member (weight 0, out of its [`Service::member_order`]) whose
    ///   server has no open flow;
    /// - a removed server with no open flow that no member, rule or the default names.
    ///
    /// `None` when nothing can be freed. Counts missing from `open` (a shorter list) are
    /// taken as flows.
    pub fn reclaim(&self, open: &OpenFlows<'_>) -> Option<(Pipeline, Freed)> {
        let none = |v: &[u64], i: usize| v.get(i) == Some(&0);
        let mut p = self.clone();
        let mut freed = Freed::default();
        for (i, s) in p.services.iter_mut().enumerate() {
            if s.retired && !s.vacant() && none(open.services, i) {
                freed.services.push(std::mem::take(&mut s.name));
                *s = s.vacated();
            }
        }
        let live_rules = in_order(&p.rule_order, p.flow_rules.len());
        let idle = p.flow_table.idle_ns;
        for (i, r) in p.flow_rules.iter_mut().enumerate() {
            if !live_rules[i] && !r.vacant() && none(open.rules, i) {
                freed.rules.push(std::mem::take(&mut r.name));
                *r = FlowRule::vacated(i, idle);
            }
        }
        for s in p.services.iter_mut().filter(|s| !s.vacant()) {
            let live = in_order(&s.member_order, s.members.len());
            for (m, live) in s.members.iter_mut().zip(live) {
                if !live && !m.vacant() && none(open.servers, usize::from(m.server)) {
                    let server = &self.servers[usize::from(m.server)].name;
                    freed.members.push((s.name.clone(), server.clone()));
                    *m = Member {
                        server: Member::VACANT,
                        weight: 0,
                        backup: false,
                    };
                }
            }
        }
        let mut named = vec![false; p.servers.len()];
        let targets = (p.flow_rules.iter().map(|r| r.target)).chain([p.default]);
        for t in targets {
            if let Target::Server(i) = t {
                named[usize::from(i)] = true;
            }
        }
        for m in p.services.iter().flat_map(|s| &s.members) {
            if !m.vacant() {
                named[usize::from(m.server)] = true;
            }
        }
        for (i, s) in p.servers.iter_mut().enumerate() {
            if s.removed && !s.vacant() && !named[i] && none(open.servers, i) {
                freed.servers.push(std::mem::take(&mut s.name));
                *s = Server::vacated();
            }
        }
        if freed == Freed::default() {
            return None;
        }
        debug_assert!(self.grows_into(&p));
        Some((p, freed))
    }

    /// Index of server `name`.
    pub fn server_index(&self, name: &str) -> Option<u16> {
        self.servers
            .iter()
            .position(|s| s.name == name)
            .map(|i| i as u16)
    }

    /// All classification rules in priority order: the live flow rules
    /// ([`rule_order`](Self::rule_order)), then the live services' ([`Service::rules`], in
    /// [`service_order`](Self::service_order)).
    pub fn rules(&self) -> Vec<Rule> {
        let mut rules: Vec<Rule> = (self.rule_order.iter())
            .map(|&i| self.flow_rules[usize::from(i)].rule)
            .collect();
        for &i in &self.service_order {
            let i = usize::from(i);
            rules.extend(self.services[i].rules(i));
        }
        rules
    }

    /// The addresses the system owns (answers ARP/ND and pings for): `system.addresses`
    /// and the VIPs of services not retired, in that order (a VIP shared by services or
    /// equal to a system address comes more than once).
    pub fn owned_addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        (self.addresses.iter().copied())
            .chain(self.services.iter().filter(|s| !s.retired).map(|s| s.vip))
    }

    /// True when `ip` is a VIP or a system address.
    pub fn owns(&self, ip: IpAddr) -> bool {
        self.owned_addresses().any(|a| a == ip)
    }
}

/// Service `n` (its member servers already renumbered) with the members of `old`, the
/// running version, at their indices (one `n` no longer lists kept at weight 0), then
/// `n`'s new members; the Maglev order is `n`'s ([`Pipeline::regrow`]).
fn regrow_members(old: &Service, mut n: Service, reusable: impl Fn(usize) -> bool) -> Service {
    let (members, at) = merge(
        &old.members,
        &n.members,
        |m| (!m.vacant()).then_some(m.server),
        reusable,
        |m| Member {
            weight: 0,
            ..m.clone()
        },
        |_, _, x| x.clone(),
    );
    n.member_order = (n.member_order.iter())
        .map(|&j| at[usize::from(j)] as u16)
        .collect();
    n.members = members;
    n
}

/// `order` (indices into a list of `n`) as one mark per index: which entries are in it.
fn in_order(order: &[u16], n: usize) -> Vec<bool> {
    let mut v = vec![false; n];
    for &i in order {
        if let Some(x) = v.get_mut(usize::from(i)) {
            *x = true;
        }
    }
    v
}

/// [`Pipeline::regrow`]'s merge of one list by identity (`id`; `None` for a free index):
/// `old`'s items at their indices, each the item of `new` with its identity
/// (`take(index, old, new)`) or, when `new` has none, `keep(old)`; then `new`'s other items in
/// its order, each into the first free index of `old` that is `reusable`, else at the
/// end. Returns the list and where each of `new`'s items went in it. Linear (a file may
/// hold 65534 rules).
fn merge<'a, T: Clone, K: std::hash::Hash + Eq>(
    old: &'a [T],
    new: &'a [T],
    id: impl Fn(&'a T) -> Option<K>,
    reusable: impl Fn(usize) -> bool,
    keep: impl Fn(&T) -> T,
    take: impl Fn(usize, &T, &T) -> T,
) -> (Vec<T>, Vec<usize>) {
    let by_id: hashbrown::HashMap<K, usize> = (new.iter().enumerate())
        .filter_map(|(j, n)| Some((id(n)?, j)))
        .collect();
    let mut out = Vec::with_capacity(old.len() + new.len());
    let mut at = vec![usize::MAX; new.len()];
    let mut free = std::collections::VecDeque::new();
    for (i, o) in old.iter().enumerate() {
        match id(o).map(|k| by_id.get(&k)) {
            Some(Some(&j)) => {
                at[j] = out.len();
                out.push(take(i, o, &new[j]));
            }
            Some(None) => out.push(keep(o)),
            None => {
                if reusable(i) {
                    free.push_back(i);
                }
                out.push(o.clone());
            }
        }
    }
    for (j, n) in new.iter().enumerate() {
        if at[j] == usize::MAX {
            at[j] = match free.pop_front() {
                Some(i) => {
                    out[i] = n.clone();
                    i
                }
                None => {
                    out.push(n.clone());
                    out.len() - 1
                }
            };
        }
    }
    (out, at)
}

/// An address as a full-length prefix in the mapped 128-bit space.
pub fn ip_to_u128(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(a) => (classify::v4_mapped(a.octets()), 128),
        IpAddr::V6(a) => (u128::from_be_bytes(a.octets()), 128),
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` (or `-` separated).
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut out = [0u8; 6];
    let mut n = 0;
    for part in s.split([':', '-']) {
        // Two hex digits exactly (`from_str_radix` alone would take "+a").
        if n == 6 || part.len() != 2 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        out[n] = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6).then_some(out)
}

/// DSCP by name (`ef`, `af11`…`af43`, `cs0`…`cs7`, `be`/`default`, `va`) or number 0–63.
pub fn parse_dscp(s: &str) -> Option<u8> {
    let s = s.trim().to_ascii_lowercase();
    if let Ok(v) = s.parse::<u8>() {
        return (v < 64).then_some(v);
    }
    match s.as_str() {
        "be" | "default" | "df" => return Some(0),
        "ef" => return Some(46),
        "va" | "voice-admit" => return Some(44),
        "le" => return Some(1),
        _ => {}
    }
    if let Some(c) = s.strip_prefix("cs") {
        let c: u8 = c.parse().ok()?;
        return (c <= 7).then_some(c << 3);
    }
    if let Some(af) = s.strip_prefix("af") {
        let b = af.as_bytes();
        if b.len() == 2 {
            let (c, d) = (b[0].wrapping_sub(b'0'), b[1].wrapping_sub(b'0'));
            if (1..=4).contains(&c) && (1..=3).contains(&d) {
                return Some((c << 3) | (d << 1));
            }
        }
    }
    None
}

/// The IP protocols known by name.
const PROTO_NAMES: &[(&str, u8)] = &[
    ("tcp", 6),
    ("udp", 17),
    ("icmp", 1),
    ("icmpv6", 58),
    ("esp", 50),
    ("ah", 51),
    ("gre", 47),
    ("sctp", 132),
];

/// An IP protocol by name (tcp, udp, icmp, icmpv6 or ipv6-icmp, esp, ah, gre, sctp, any)
/// or number.
pub(crate) fn parse_proto(s: &str) -> Option<u8> {
    match s.to_ascii_lowercase().as_str() {
        "ipv6-icmp" => Some(58),
        "any" => Some(0),
        n => (PROTO_NAMES.iter().find(|(name, _)| *name == n))
            .map(|&(_, v)| v)
            .or_else(|| n.parse().ok()),
    }
}

/// The name of IP protocol `n`, where [`parse_proto`] knows one.
pub(crate) fn proto_name(n: u8) -> Option<&'static str> {
    PROTO_NAMES
        .iter()
        .find(|&&(_, v)| v == n)
        .map(|&(name, _)| name)
}

fn parse_ethertype(s: &str) -> Option<u16> {
    match s.to_ascii_lowercase().as_str() {
        "ipv4" | "ip" => Some(0x0800),
        "ipv6" => Some(0x86dd),
        "arp" => Some(0x0806),
        "mpls" => Some(0x8847),
        "vlan" => Some(0x8100),
        n => match n.strip_prefix("0x") {
            Some(h) => u16::from_str_radix(h, 16).ok(),
            None => n.parse().ok(),
        },
    }
}

/// One host's address: IPv4, or IPv6 but not IPv4-mapped (`::ffff:a.b.c.d`, which
/// flowgate would hold as the IPv4 address in some places and not in others, and which
/// the parser drops in IPv6 headers).
fn host_addr(a: &str) -> Result<IpAddr, String> {
    match a.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_some() => Err(format!(
            "{a:?} is an IPv4-mapped IPv6 address: write it as IPv4 ({})",
            v6.to_canonical()
        )),
        Ok(ip) => Ok(ip),
        Err(_) => Err(format!("bad IP address {a:?}")),
    }
}

/// `a.b.c.d`, `a.b.c.d/len`, IPv6 likewise, as a range in the mapped space.
fn parse_prefix(s: &str) -> Option<Range<u128>> {
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
        None => (s, None),
    };
    let ip: IpAddr = a.trim().parse().ok()?;
    let (v, full) = ip_to_u128(ip);
    let len = match (ip, len) {
        (_, None) => full,
        (IpAddr::V4(_), Some(l)) if l <= 32 => 96 + l,
        (IpAddr::V6(_), Some(l)) if l <= 128 => l,
        _ => return None,
    };
    Some(classify::prefix_range(v, len))
}

fn resolve(cx: &Ctx, raw: RawPipeline, path: &Path) -> Result<Pipeline, ConfigError> {
    let mac = parse_mac(&raw.system.mac).ok_or_else(|| {
        cx.err(
            &[Key("system"), Key("mac")],
            format!("bad MAC address {:?}", raw.system.mac),
        )
    })?;
    let mut addresses = Vec::new();
    for (i, a) in raw.system.addresses.iter().enumerate() {
        let ip = host_addr(a).map_err(|e| cx.err(&[Key("system"), Key("addresses"), Idx(i)], e))?;
        addresses.push(ip);
    }
    let mut ports: Vec<String> = Vec::new();
    let mut port_index = |name: &str| -> u16 {
        match ports.iter().position(|p| p == name) {
            Some(i) => i as u16,
            None => {
                ports.push(name.to_string());
                (ports.len() - 1) as u16
            }
        }
    };
    let (gw_mac, gw_port) = match &raw.system.gateway {
        raw::RawGateway::Mac(m) => (m.clone(), None),
        raw::RawGateway::Full(g) => (g.mac.clone(), g.port.clone()),
    };
    let gateway_mac = parse_mac(&gw_mac).ok_or_else(|| {
        cx.err(
            &[Key("system"), Key("gateway")],
            format!("bad MAC address {gw_mac:?}"),
        )
    })?;
    let gateway_port = gw_port.as_deref().map(&mut port_index);
    let forwarding = match raw.system.mode.as_deref().unwrap_or("switch") {
        "switch" => Forwarding::Switch,
        "router" => Forwarding::Router,
        m => {
            return Err(cx.err(
                &[Key("system"), Key("mode")],
                format!("unknown mode {m:?} (switch, router)"),
            ));
        }
    };
    let icmp_rate = raw.system.icmp_rate.unwrap_or(DEFAULT_ICMP_RATE);
    let mtu_in_range = |v: &serde_yaml_ng::Value, path: &[locate::Seg]| {
        let m = v.as_u64().ok_or_else(|| {
            cx.err(
                path,
                "mtu must be a number, or a map from port names to numbers",
            )
        })?;
        match u32::try_from(m) {
            Ok(n) if MTU_RANGE.contains(&n) => Ok(n as u16),
            _ => Err(cx.err(
                path,
                format!(
                    "mtu {m} is out of range ({}..={}: at least IPv6's minimum link MTU)",
                    MTU_RANGE.start(),
                    MTU_RANGE.end()
                ),
            )),
        }
    };
    // A number for every port, or a map from port names to numbers.
    let (mtu, port_mtu) = match &raw.system.mtu {
        None => (None, Vec::new()),
        Some(serde_yaml_ng::Value::Mapping(by_name)) => {
            let mut v: Vec<Option<u16>> = Vec::new();
            for (name, m) in by_name {
                let Some(name) = name.as_str() else {
                    return Err(cx.err(
                        &[Key("system"), Key("mtu")],
                        "mtu must be a number, or a map from port names to numbers",
                    ));
                };
                let m = mtu_in_range(m, &[Key("system"), Key("mtu"), Key(name)])?;
                let i = usize::from(port_index(name));
                if v.len() <= i {
                    v.resize(i + 1, None);
                }
                v[i] = Some(m);
            }
            (None, v)
        }
        Some(m) => (
            Some(mtu_in_range(m, &[Key("system"), Key("mtu")])?),
            Vec::new(),
        ),
    };

    // QoS classes.
    let mut classes: BTreeMap<String, QosActions> = BTreeMap::new();
    for (name, q) in &raw.qos {
        let a = qos_actions(cx, q, &[Key("qos"), Key(name)])?;
        classes.insert(name.clone(), a);
    }
    let qos_ref =
        |r: &Option<RawQosRef>, path: &[locate::Seg]| -> Result<QosActions, ConfigError> {
            match r {
                None => Ok(QosActions::default()),
                Some(RawQosRef::Class(c)) => classes.get(c).copied().ok_or_else(|| {
                    let known: Vec<&str> = classes.keys().map(String::as_str).collect();
                    cx.err(
                        path,
                        format!("QoS class {c:?} does not exist (defined: {known:?})"),
                    )
                }),
                Some(RawQosRef::Inline(q)) => qos_actions(cx, q, path),
            }
        };

    // Servers (shared by name across services) and services.
    let mut servers: Vec<Server> = Vec::new();
    // Indices by name (a file may name thousands of servers and rules).
    let mut server_at: hashbrown::HashMap<String, usize> = hashbrown::HashMap::new();
    let mut services = Vec::new();
    let mut service_names = hashbrown::HashSet::new();
    for (si, s) in raw.services.iter().enumerate() {
        let at = |k: &'static str| [Key("services"), Idx(si), Key(k)];
        // An empty name marks a free index while running (`Pipeline::reclaim`).
        if s.name.is_empty() {
            return Err(cx.err(&at("name"), "a service needs a name"));
        }
        if !service_names.insert(s.name.as_str()) {
            return Err(cx.err(&at("name"), format!("duplicate service name {:?}", s.name)));
        }
        let vip = host_addr(&s.vip).map_err(|e| cx.err(&at("vip"), e))?;
        let proto = parse_proto(&s.proto.0)
            .ok_or_else(|| cx.err(&at("proto"), format!("unknown protocol {:?}", s.proto.0)))?;
        let ports = match &s.ports {
            Some(p) => p.as_slice(),
            // ESP, AH, GRE and ICMP carry no ports (their tuples' are 0): the whole range.
            None if ![0, 6, 17, 132].contains(&proto) => &[RawRange {
                lo: 0,
                hi: u64::from(u16::MAX),
            }],
            None => {
                return Err(cx.err(
                    &at("name"),
                    format!("a {} service needs `ports`", s.proto.0),
                ));
            }
        };
        if ports.is_empty() {
            return Err(cx.err(&at("ports"), "a service needs at least one port"));
        }
        let mut pr = Vec::new();
        for (pi, p) in ports.iter().enumerate() {
            pr.push(range16(
                cx,
                p,
                &[Key("services"), Idx(si), Key("ports"), Idx(pi)],
            )?);
        }
        let policy = match s.policy.as_deref().unwrap_or("maglev") {
            "maglev" => Policy::Maglev,
            "least-load" => Policy::LeastLoad,
            "response-time" => Policy::ResponseTime,
            "least-flows" | "least-connections" => Policy::LeastFlows,
            p => {
                return Err(cx.err(
                    &at("policy"),
                    format!(
                        "unknown policy {p:?} (maglev, least-load, response-time, least-flows)"
                    ),
                ));
            }
        };
        let affinity = affinity(cx, s.affinity.as_ref(), &at("affinity"))?;
        let rate_limit = match &s.rate_limit {
            None => None,
            Some(r) => Some(rate_limit(cx, r, &at("rate_limit"))?),
        };
        let conn_limit = match &s.conn_limit {
            None => None,
            Some(c) => match u32::try_from(c.per_source) {
                Ok(n) if (1..=ConnLimit::MAX).contains(&n) => Some(ConnLimit { per_source: n }),
                _ => {
                    let p = [
                        Key("services"),
                        Idx(si),
                        Key("conn_limit"),
                        Key("per_source"),
                    ];
                    return Err(cx.err(
                        &p,
                        format!(
                            "per_source {} is not in 1..={}",
                            c.per_source,
                            ConnLimit::MAX
                        ),
                    ));
                }
            },
        };
        let mut allow = Vec::new();
        if let Some(list) = &s.allow {
            if list.is_empty() {
                return Err(cx.err(
                    &at("allow"),
                    "allow lists no network (leave it out to take every client)",
                ));
            }
            for (k, a) in list.iter().enumerate() {
                let r = parse_prefix(a).ok_or_else(|| {
                    let path = [Key("services"), Idx(si), Key("allow"), Idx(k)];
                    cx.err(&path, format!("bad address or prefix {a:?}"))
                })?;
                allow.push(r);
            }
        }
        if policy == Policy::LeastFlows && affinity != Affinity::Connection {
            return Err(cx.err(
                &at("affinity"),
                "affinity: source needs a policy that places by hash (maglev, least-load, \
                 response-time), not least-flows",
            ));
        }
        let qos = qos_ref(&s.qos, &at("qos"))?;
        let reply_qos = qos_ref(&s.reply_qos, &at("reply_qos"))?;
        let reject = match s.no_server.as_deref().unwrap_or("drop") {
            "drop" => false,
            "reject" => true,
            x => {
                return Err(cx.err(
                    &at("no_server"),
                    format!("unknown no_server {x:?} (drop, reject)"),
                ));
            }
        };
        let table_size = s.table_size.unwrap_or(DEFAULT_TABLE_SIZE);
        if !is_prime(table_size) || !(7..=16_777_259).contains(&table_size) {
            return Err(cx.err(
                &at("table_size"),
                format!("{table_size} is not a prime in 7..=16777259"),
            ));
        }
        if s.servers.is_empty() {
            return Err(cx.err(&at("servers"), "a service needs at least one server"));
        }
        let mut members = Vec::new();
        for (vi, v) in s.servers.iter().enumerate() {
            let sp = |k: &'static str| [Key("services"), Idx(si), Key("servers"), Idx(vi), Key(k)];
            let smac = parse_mac(&v.mac)
                .ok_or_else(|| cx.err(&sp("mac"), format!("bad MAC address {:?}", v.mac)))?;
            let ip = match &v.ip {
                None => None,
                Some(a) => Some(host_addr(a).map_err(|e| cx.err(&sp("ip"), e))?),
            };
            let state = match v.state.as_deref().unwrap_or("up") {
                "up" => ServerState::Up,
                "draining" | "drain" => ServerState::Draining,
                "down" => ServerState::Down,
                x => {
                    return Err(cx.err(
                        &sp("state"),
                        format!("unknown state {x:?} (up, draining, down)"),
                    ));
                }
            };
            let load = v.load.unwrap_or(0.0);
            if !(0.0..=1.0).contains(&load) {
                return Err(cx.err(&sp("load"), format!("load {load} is not in 0.0..=1.0")));
            }
            let response_ms = v.response_ms.unwrap_or(1.0);
            if !(response_ms > 0.0 && response_ms.is_finite()) {
                return Err(cx.err(&sp("response_ms"), "response_ms must be > 0"));
            }
            let weight = v.weight.unwrap_or(100);
            if weight > 1_000_000 {
                return Err(cx.err(&sp("weight"), "weight must be <= 1000000"));
            }
            if v.max_flows == Some(0) {
                return Err(cx.err(
                    &sp("max_flows"),
                    "max_flows must be at least 1 (leave it out for no limit)",
                ));
            }
            if v.max_fails == Some(0) {
                return Err(cx.err(
                    &sp("max_fails"),
                    "max_fails must be at least 1 (leave it out for no passive check)",
                ));
            }
            let fail_timeout_ns = match (v.max_fails, v.fail_timeout) {
                (_, None) => DEFAULT_FAIL_TIMEOUT_NS,
                (Some(_), Some(t)) if (1..=3600).contains(&t) => u64::from(t) * 1_000_000_000,
                (Some(_), Some(t)) => {
                    return Err(cx.err(
                        &sp("fail_timeout"),
                        format!("fail_timeout {t} is not in 1..=3600 seconds"),
                    ));
                }
                (None, Some(_)) => {
                    return Err(cx.err(
                        &sp("fail_timeout"),
                        "fail_timeout needs max_fails (the failures that take the server out)",
                    ));
                }
            };
            let port = v.port.as_deref().map(&mut port_index);
            let candidate = Server {
                name: v.name.clone(),
                mac: smac,
                ip,
                port,
                state,
                load,
                response_ms,
                removed: false,
                max_flows: v.max_flows,
                slow_start_ns: v
                    .slow_start
                    .filter(|&s| s > 0)
                    .map(|s| u64::from(s) * 1_000_000_000),
                ramp: 1.0,
                max_fails: v.max_fails,
                fail_timeout_ns,
                ejected: false,
            };
            if v.name.is_empty() {
                return Err(cx.err(&sp("name"), "a server needs a name"));
            }
            let idx = match server_at.get(&v.name).copied() {
                Some(i) if servers[i] == candidate => i,
                Some(_) => {
                    return Err(cx.err(
                        &sp("name"),
                        format!(
                            "server {:?} is declared twice with different attributes",
                            v.name
                        ),
                    ));
                }
                None => {
                    server_at.insert(v.name.clone(), servers.len());
                    servers.push(candidate);
                    servers.len() - 1
                }
            };
            if members.iter().any(|m: &Member| m.server as usize == idx) {
                return Err(cx.err(
                    &sp("name"),
                    format!("server {:?} listed twice in one service", v.name),
                ));
            }
            members.push(Member {
                server: idx as u16,
                weight,
                backup: v.backup.unwrap_or(false),
            });
        }
        // Indices travel as u16 on the packet path, where u16::MAX means "none".
        if servers.len() >= usize::from(u16::MAX) {
            return Err(cx.err(&at("servers"), "too many servers (at most 65534)"));
        }
        if si + 1 >= usize::from(u16::MAX) {
            return Err(cx.err(&at("name"), "too many services (at most 65534)"));
        }
        services.push(Service {
            name: s.name.clone(),
            vip,
            proto,
            ports: pr,
            policy,
            affinity,
            qos,
            reply_qos,
            member_order: (0..members.len() as u16).collect(),
            members,
            table_size,
            reject,
            rate_limit,
            conn_limit,
            allow: AllowList::new(allow),
            retired: false,
        });
    }

    let default_target = match raw.default.as_deref().unwrap_or("gateway") {
        "gateway" => Target::Gateway,
        "drop" => Target::Drop,
        x => {
            return Err(cx.err(
                &[Key("default")],
                format!("must be gateway or drop, not {x:?}"),
            ));
        }
    };
    let ft = FlowTableConf::default();
    let flow_table = match &raw.flow_table {
        None => ft,
        Some(r) => {
            let cap = r.capacity.unwrap_or(ft.capacity);
            if cap == 0 || cap > (1 << 28) {
                return Err(cx.err(
                    &[Key("flow_table"), Key("capacity")],
                    "must be in 1..=268435456",
                ));
            }
            let ns = |v: Option<u64>, default: u64, k: &'static str| match v {
                None => Ok(default),
                Some(s) => secs_to_ns(cx, s, &[Key("flow_table"), Key(k)]),
            };
            FlowTableConf {
                capacity: cap,
                tcp_syn_ns: ns(r.tcp_syn_timeout, ft.tcp_syn_ns, "tcp_syn_timeout")?,
                tcp_established_ns: ns(
                    r.tcp_established_timeout,
                    ft.tcp_established_ns,
                    "tcp_established_timeout",
                )?,
                tcp_closing_ns: ns(
                    r.tcp_closing_timeout,
                    ft.tcp_closing_ns,
                    "tcp_closing_timeout",
                )?,
                idle_ns: ns(r.idle_timeout, ft.idle_ns, "idle_timeout")?,
            }
        }
    };

    let mut flow_rules = Vec::new();
    let mut rule_names = hashbrown::HashSet::with_capacity(raw.flows.len());
    for (fi, f) in raw.flows.iter().enumerate() {
        let at = |k: &'static str| [Key("flows"), Idx(fi), Key(k)];
        // A rule's name is its identity across reloads (a set: a file may hold 65534);
        // an empty one marks a free index while running (`Pipeline::reclaim`).
        if f.name.is_empty() {
            return Err(cx.err(&at("name"), "a flow rule needs a name"));
        }
        if !rule_names.insert(f.name.as_str()) {
            return Err(cx.err(
                &at("name"),
                format!("duplicate flow rule name {:?}", f.name),
            ));
        }
        if f.name.starts_with(SLOT_PREFIX) {
            return Err(cx.err(
                &at("name"),
                format!(
                    "names starting with {SLOT_PREFIX:?} are the control plane's \
                     advertised-flow slots"
                ),
            ));
        }
        let mut rule = Rule::any(Decision::FlowRule(fi as u32));
        match_fields(cx, &f.matches, fi, &mut rule, &ports)?;
        let target = match f.to.as_str() {
            "gateway" => Target::Gateway,
            "drop" => Target::Drop,
            name => match server_at.get(name) {
                Some(&i) => Target::Server(i as u16),
                None => {
                    return Err(cx.err(
                        &at("to"),
                        format!("{name:?} is not a server of any service, gateway, or drop"),
                    ));
                }
            },
        };
        flow_rules.push(FlowRule {
            name: f.name.clone(),
            rule,
            target,
            qos: qos_ref(&f.qos, &at("qos"))?,
            reply_qos: qos_ref(&f.reply_qos, &at("reply_qos"))?,
            idle_timeout_ns: match f.idle_timeout {
                None => flow_table.idle_ns,
                Some(s) => secs_to_ns(cx, s, &at("idle_timeout"))?,
            },
            claims_existing: false,
        });
    }
    // Indices travel as u16 on the packet path, where u16::MAX means "none".
    if flow_rules.len() >= usize::from(u16::MAX) {
        return Err(cx.err(&[Key("flows")], "too many flow rules (at most 65534)"));
    }

    // Each distinct timeout is a timeout class of the flow table (a bounded number).
    let idle: Vec<u64> = flow_rules.iter().map(|r| r.idle_timeout_ns).collect();
    let n = crate::flow::distinct_timeouts(&flow_table, &idle).len();
    if n > crate::flow::MAX_TIMEOUTS {
        return Err(cx.err(
            &[Key("flows")],
            format!(
                "{n} distinct timeouts (flow_table's and the rules' idle_timeout); at most {}",
                crate::flow::MAX_TIMEOUTS
            ),
        ));
    }

    Ok(Pipeline {
        source: path.to_path_buf(),
        mac,
        addresses,
        gateway_mac,
        gateway_port,
        ports,
        servers,
        service_order: (0..services.len() as u16).collect(),
        services,
        rule_order: (0..flow_rules.len() as u16).collect(),
        flow_rules,
        default: default_target,
        flow_table,
        forwarding,
        icmp_rate,
        mtu,
        port_mtu,
    })
}

/// Seconds from the YAML as nanoseconds; an error rather than an overflow.
fn secs_to_ns(cx: &Ctx, s: u64, path: &[locate::Seg]) -> Result<u64, ConfigError> {
    s.checked_mul(1_000_000_000).ok_or_else(|| {
        cx.err(
            path,
            format!("{s} s is too long (at most {} s)", u64::MAX / 1_000_000_000),
        )
    })
}

/// A service's `affinity:` (absent: [`Affinity::Connection`]).
fn affinity(
    cx: &Ctx,
    a: Option<&RawAffinity>,
    path: &[locate::Seg],
) -> Result<Affinity, ConfigError> {
    let sub = |k: &'static str| {
        let mut v = path.to_vec();
        v.push(Key(k));
        v
    };
    let (by, v4, v6, at) = match a {
        None => return Ok(Affinity::Connection),
        Some(RawAffinity::Name(n)) => (n.as_str(), None, None, path.to_vec()),
        Some(RawAffinity::Spec(s)) => (s.by.as_str(), s.ipv4_prefix, s.ipv6_prefix, sub("by")),
    };
    let prefix = |v, default, max, k| prefix_len(cx, &sub(k), v, default, max, k);
    match by {
        "connection" if v4.is_none() && v6.is_none() => Ok(Affinity::Connection),
        "connection" => Err(cx.err(
            path,
            "prefixes apply to `by: source` only (connection affinity places each flow by its own addresses and ports)",
        )),
        "source" => Ok(Affinity::Source {
            v4_prefix: prefix(v4, Affinity::SOURCE_V4_PREFIX, 32, "ipv4_prefix")?,
            v6_prefix: prefix(v6, Affinity::SOURCE_V6_PREFIX, 128, "ipv6_prefix")?,
        }),
        x => Err(cx.err(
            &at,
            format!("unknown affinity {x:?} (connection, source)"),
        )),
    }
}

/// A client prefix length `v` (key `k` at `path`) in 1..=`max`; `default` when absent.
fn prefix_len(
    cx: &Ctx,
    path: &[locate::Seg],
    v: Option<u64>,
    default: u8,
    max: u8,
    k: &str,
) -> Result<u8, ConfigError> {
    match v {
        None => Ok(default),
        Some(n) if (1..=u64::from(max)).contains(&n) => Ok(n as u8),
        Some(n) => Err(cx.err(path, format!("{k} {n} is not in 1..={max}"))),
    }
}

/// A service's `rate_limit:`.
fn rate_limit(
    cx: &Ctx,
    r: &raw::RawRateLimit,
    path: &[locate::Seg],
) -> Result<RateLimit, ConfigError> {
    let at = |k: &'static str| {
        let mut v = path.to_vec();
        v.push(Key(k));
        v
    };
    let count = |n: u64, k: &'static str| match u32::try_from(n) {
        Ok(n) if (1..=RateLimit::MAX).contains(&n) => Ok(n),
        _ => Err(cx.err(&at(k), format!("{k} {n} is not in 1..={}", RateLimit::MAX))),
    };
    // A bucket of `rate` (key `k`) and `burst` (key `kb`, default the rate), or none.
    let bucket = |rate: Option<u64>, burst: Option<u64>, k, kb| match (rate, burst) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(cx.err(&at(kb), format!("{kb} needs {k}"))),
        (Some(r), b) => Ok(Some(Bucket {
            rate: count(r, k)?,
            burst: count(b.unwrap_or(r), kb)?,
        })),
    };
    let per_source = bucket(r.per_source, r.burst, "per_source", "burst")?;
    let total = bucket(r.total, r.total_burst, "total", "total_burst")?;
    if per_source.is_none() && total.is_none() {
        return Err(cx.err(path, "a rate_limit needs per_source, total or both"));
    }
    let prefix = |v, default, max, k| prefix_len(cx, &at(k), v, default, max, k);
    Ok(RateLimit {
        per_source,
        total,
        v4_prefix: prefix(r.ipv4_prefix, Affinity::SOURCE_V4_PREFIX, 32, "ipv4_prefix")?,
        v6_prefix: prefix(
            r.ipv6_prefix,
            Affinity::SOURCE_V6_PREFIX,
            128,
            "ipv6_prefix",
        )?,
    })
}

fn range16(cx: &Ctx, r: &RawRange, path: &[locate::Seg]) -> Result<Range<u16>, ConfigError> {
    if r.hi > u64::from(u16::MAX) {
        return Err(cx.err(path, format!("{} is out of range 0..=65535", r.hi)));
    }
    Ok(Range::new(r.lo as u16, r.hi as u16))
}

fn match_fields(
    cx: &Ctx,
    m: &RawMatch,
    fi: usize,
    rule: &mut Rule,
    ports: &[String],
) -> Result<(), ConfigError> {
    let p = |k: &'static str| [Key("flows"), Idx(fi), Key("match"), Key(k)];
    let bounded = |r: &RawRange, max: u64, k: &'static str| -> Result<(u64, u64), ConfigError> {
        if r.hi > max {
            return Err(cx.err(&p(k), format!("{} is out of range 0..={max}", r.hi)));
        }
        Ok((r.lo, r.hi))
    };
    if let Some(t) = &m.in_port {
        let i = match ports.iter().position(|n| *n == t.0) {
            Some(i) => i as u16,
            None => t.0.parse().map_err(|_| {
                cx.err(
                    &p("in_port"),
                    format!("unknown port {:?} (ports named so far: {ports:?})", t.0),
                )
            })?,
        };
        rule.in_port = Range::exact(i);
    }
    if let Some(r) = &m.vlan {
        let (lo, hi) = bounded(r, 4095, "vlan")?;
        rule.vlan = Range::new(lo as u16, hi as u16);
    }
    if let Some(r) = &m.pcp {
        let (lo, hi) = bounded(r, 7, "pcp")?;
        rule.pcp = Range::new(lo as u8, hi as u8);
    }
    if let Some(r) = &m.mpls {
        let (lo, hi) = bounded(r, 0xf_ffff, "mpls")?;
        rule.mpls = Range::new(lo as u32, hi as u32);
    }
    if let Some(t) = &m.ethertype {
        let e = parse_ethertype(&t.0)
            .ok_or_else(|| cx.err(&p("ethertype"), format!("unknown ethertype {:?}", t.0)))?;
        rule.ethertype = Range::exact(e);
    }
    if let Some(s) = &m.src {
        rule.src = parse_prefix(s)
            .ok_or_else(|| cx.err(&p("src"), format!("bad address or prefix {s:?}")))?;
    }
    if let Some(s) = &m.dst {
        rule.dst = parse_prefix(s)
            .ok_or_else(|| cx.err(&p("dst"), format!("bad address or prefix {s:?}")))?;
    }
    if let Some(t) = &m.proto {
        let v = parse_proto(&t.0)
            .ok_or_else(|| cx.err(&p("proto"), format!("unknown protocol {:?}", t.0)))?;
        if v != 0 {
            rule.proto = Range::exact(v);
        }
    }
    if let Some(r) = &m.src_port {
        let (lo, hi) = bounded(r, 65535, "src_port")?;
        rule.src_port = Range::new(lo as u16, hi as u16);
    }
    if let Some(r) = &m.dst_port {
        let (lo, hi) = bounded(r, 65535, "dst_port")?;
        rule.dst_port = Range::new(lo as u16, hi as u16);
    }
    if let Some(t) = &m.dscp {
        let d = parse_dscp(&t.0)
            .ok_or_else(|| cx.err(&p("dscp"), format!("unknown DSCP {:?}", t.0)))?;
        rule.dscp = Range::exact(d);
    }
    if let Some(r) = &m.spi {
        let (lo, hi) = bounded(r, u64::from(u32::MAX), "spi")?;
        rule.spi = Range::new(lo as u32, hi as u32);
    }
    Ok(())
}

fn qos_actions(cx: &Ctx, q: &RawQos, path: &[locate::Seg]) -> Result<QosActions, ConfigError> {
    let sub = |k: &'static str| {
        let mut v = path.to_vec();
        v.push(Key(k));
        v
    };
    let mut a = QosActions::default();
    if let Some(d) = &q.dscp {
        a.dscp = Some(parse_dscp(&d.0).ok_or_else(|| {
            cx.err(
                &sub("dscp"),
                format!(
                    "unknown DSCP {:?} (a name such as ef, af41, cs5, or 0-63)",
                    d.0
                ),
            )
        })?);
    }
    let pcp_ok = |v: u8, k| {
        if v > 7 {
            Err(cx.err(&sub(k), format!("pcp {v} is not in 0..=7")))
        } else {
            Ok(v)
        }
    };
    if let Some(p) = q.pcp {
        a.pcp = Some(pcp_ok(p, "pcp")?);
    }
    if let Some(v) = &q.push_vlan {
        if v.vid > 4095 {
            return Err(cx.err(
                &sub("push_vlan"),
                format!("vid {} is not in 0..=4095", v.vid),
            ));
        }
        let tpid = match v.tpid.as_ref().map(|t| t.0.to_ascii_lowercase()) {
            None => 0x8100,
            Some(t) => match t.as_str() {
                "0x8100" | "33024" | "8100" | "dot1q" => 0x8100,
                "0x88a8" | "34984" | "88a8" | "dot1ad" => 0x88a8,
                "0x9100" | "37120" | "9100" => 0x9100,
                _ => {
                    return Err(cx.err(
                        &sub("push_vlan"),
                        format!("tpid {t} is not 0x8100, 0x88a8 or 0x9100"),
                    ));
                }
            },
        };
        a.push_vlan = Some((tpid, v.vid, pcp_ok(v.pcp.unwrap_or(0), "push_vlan")?));
    }
    a.pop_vlan = q.pop_vlan.unwrap_or(false);
    if let Some(v) = &q.set_vlan {
        if v.vid > 4095 {
            return Err(cx.err(
                &sub("set_vlan"),
                format!("vid {} is not in 0..=4095", v.vid),
            ));
        }
        a.set_vlan = Some(v.vid);
    }
    if let Some(m) = &q.push_mpls {
        if m.label > 0xf_ffff {
            return Err(cx.err(
                &sub("push_mpls"),
                format!("label {} is not in 0..=1048575", m.label),
            ));
        }
        let tc = m.tc.unwrap_or(0);
        if tc > 7 {
            return Err(cx.err(&sub("push_mpls"), format!("tc {tc} is not in 0..=7")));
        }
        a.push_mpls = Some((m.label, tc, m.ttl.unwrap_or(64)));
    }
    a.pop_mpls = q.pop_mpls.unwrap_or(false);
    if let Some(m) = &q.swap_mpls {
        if m.label > 0xf_ffff {
            return Err(cx.err(
                &sub("swap_mpls"),
                format!("label {} is not in 0..=1048575", m.label),
            ));
        }
        a.swap_mpls = Some(m.label);
    }
    Ok(a)
}

fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod allow_tests {
    use super::*;
    use proptest::prelude::*;

    /// A network `base/len`, in the IPv4-mapped space when `v4`.
    fn net(base: u128, len: u32, v4: bool) -> Range<u128> {
        let (len, base) = if v4 {
            (96 + len.min(32), (0xffff_u128 << 32) | (base & 0xffff_ffff))
        } else {
            (len.min(128), base)
        };
        let host = if len == 0 {
            u128::MAX
        } else {
            (1u128 << (128 - len)) - 1
        };
        Range::new(base & !host, (base & !host) | host)
    }

    proptest! {
        /// The binary search over the merged ranges answers as a scan of the networks
        /// as written, at every network's edges and anywhere else.
        #[test]
        fn lookups_match_a_scan_of_the_networks(
            nets in proptest::collection::vec((any::<u128>(), 0u32..=128, any::<bool>()), 0..40),
            probes in proptest::collection::vec(any::<u128>(), 0..40),
        ) {
            let written: Vec<Range<u128>> =
                nets.iter().map(|&(b, l, v4)| net(b, if v4 { l % 33 } else { l }, v4)).collect();
            let list = AllowList::new(written.clone());
            prop_assert_eq!(list.networks(), &written[..]);
            let edges = written.iter().flat_map(|r| {
                [r.lo.wrapping_sub(1), r.lo, r.hi, r.hi.wrapping_add(1)]
            });
            for a in edges.chain(probes) {
                let scan = written.iter().any(|r| r.contains(a));
                prop_assert_eq!(list.contains(a), scan, "{:#x}", a);
            }
        }
    }

    proptest! {
        /// A list admits all of another exactly when every address of the other (at
        /// every edge of both lists' networks and anywhere else) lies in it; an empty
        /// list takes every address.
        #[test]
        fn admits_all_of_is_a_subset_test(
            a in proptest::collection::vec((any::<u128>(), 0u32..=128, any::<bool>()), 0..12),
            b in proptest::collection::vec((any::<u128>(), 0u32..=128, any::<bool>()), 0..12),
            probes in proptest::collection::vec(any::<u128>(), 0..40),
        ) {
            let list = |nets: &[(u128, u32, bool)]| {
                AllowList::new(nets.iter().map(|&(b, l, v4)| net(b, if v4 { l % 33 } else { l }, v4)).collect())
            };
            // A narrower copy of the first list's networks, so that subsets are common.
            let inner: Vec<(u128, u32, bool)> =
                a.iter().map(|&(b, l, v4)| (b, l.saturating_add(3), v4)).collect();
            let takes = |l: &AllowList, x: u128| l.is_empty() || l.contains(x);
            for (new, old) in [(list(&a), list(&b)), (list(&a), list(&inner)), (list(&inner), list(&a))] {
                let edges = (new.networks().iter().chain(old.networks()))
                    .flat_map(|r| [r.lo.wrapping_sub(1), r.lo, r.hi, r.hi.wrapping_add(1)]);
                let probes = edges.chain(probes.iter().copied()).chain([0, u128::MAX]);
                let missed = probes.clone().find(|&x| takes(&old, x) && !takes(&new, x));
                if new.admits_all_of(&old) {
                    prop_assert!(missed.is_none(), "{:#x}", missed.unwrap_or(0));
                } else {
                    // Some address of `old` is not in `new`: it lies at an edge.
                    prop_assert!(missed.is_some());
                }
            }
        }
    }

    #[test]
    fn adjacent_and_nested_networks_merge() {
        let list = AllowList::new(vec![
            net(0x0a00_0000, 9, true),  // 10.0.0.0/9
            net(0x0a80_0000, 9, true),  // 10.128.0.0/9: with the first, 10.0.0.0/8
            net(0x0a01_0000, 16, true), // inside
            net(0, 0, false),           // ::/0 swallows all
        ]);
        assert_eq!(list.merged, [Range::new(0, u128::MAX)]);
        let list = AllowList::new(vec![net(0x0a80_0000, 9, true), net(0x0a00_0000, 9, true)]);
        assert_eq!(list.merged.len(), 1);
        assert!(list.contains(0xffff_0aff_ffff) && !list.contains(0xffff_0b00_0000));
        assert!(!AllowList::new(vec![]).contains(0));
    }
}
