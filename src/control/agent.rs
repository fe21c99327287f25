//! The end-system agent's sans-IO state machine: registers with the supervisor,
//! advertises its services (with load, congestion and response time) every
//! advertisement interval, advertises and withdraws flows, holds numbers from the ANA
//! for its role, and on [`Agent::drain`] advertises draining, waits until its flows are
//! gone (or a timeout), releases its numbers and leaves.
//!
//! Phases: `Running` → (`drain`) → `Draining` → (no flows, or timeout) → `Leaving` →
//! (Leave acknowledged, or timeout) → `Left`. A supervisor that answers NOT_REGISTERED
//! (e.g. it declared this agent dead) triggers a new registration; held numbers are
//! dropped at once (see [`super::session`] for the validity rule).
//!
//! Routed numbers ([`NumberRoute`]): while the agent holds a block of a port pool (a
//! NAT server's source ports behind a shared public address, say), it advertises the
//! traffic to that address and those destination ports as a flow to its own system, so
//! the intermediate systems send the returning traffic to it (for ESP, the packets whose
//! SPI lies in the block: an IPsec server's SPIs); the flow is withdrawn when the grant
//! ends. Such standing flows do not hold a drain back: the agent leaves once
//! its other flows and connections are gone.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::Transmit;
use super::proto::*;
use super::session::{HeldGrant, ReqKey, SessEvent, Session};
use super::supervisor::Stats;
use crate::wire::ipv4::proto as ip_proto;

/// Agent settings (from `conf/agent.yaml`).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub name: String,
    pub mac: [u8; 6],
    pub addrs: Vec<IpAddr>,
    pub capabilities: u32,
    pub supervisor: SocketAddr,
    /// Also send advertisements to this multicast group.
    pub group: Option<SocketAddr>,
    /// Used until the supervisor's RegisterAck gives its own.
    pub advert_interval: Duration,
    pub dead_interval: Duration,
    pub services: Vec<Service>,
    /// Pools to hold one grant from each.
    pub pools: Vec<String>,
    /// Held blocks to advertise as flows to this system.
    pub routes: Vec<NumberRoute>,
    pub drain_timeout: Duration,
}

/// Traffic to `dst` with protocol `protos[i]` and, for TCP, UDP and the like, a
/// destination port in a held block of `pool`, or, for ESP, an SPI in it, goes to this
/// end system (one flow advertisement per protocol).
#[derive(Clone, Debug, PartialEq)]
pub struct NumberRoute {
    pub pool: String,
    pub dst: IpAddr,
    pub protos: Vec<u8>,
}

impl NumberRoute {
    /// The flows that route grant `g`, or why it cannot be routed: a block past port
    /// 65535 for a port protocol, or past 2^32 - 1 for ESP; AH (51), whose packets
    /// flowgate's data plane keys by the transport inside (IPv6) or not at all (IPv4),
    /// is refused.
    pub fn specs(&self, g: &HeldGrant) -> Result<Vec<FlowSpec>, String> {
        let last = g.last();
        if g.count == 0 {
            return Err(format!("pool {}: empty block", g.pool));
        }
        let (any, full) = match self.dst {
            IpAddr::V4(_) => (IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 32),
            IpAddr::V6(_) => (IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 128),
        };
        let all = (0, u16::MAX);
        let not = |what: &str| format!("pool {}: block {}..{last} is not {what}", g.pool, g.first);
        self.protos
            .iter()
            .map(|&proto| {
                if proto == ip_proto::AH {
                    return Err(format!(
                        "pool {}: AH is not routed by SPI (route esp)",
                        g.pool
                    ));
                }
                // `first <= last`, so `first` fits wherever `last` does.
                let (dport, spi) = if proto == ip_proto::ESP {
                    let l = u32::try_from(last).map_err(|_| not("an SPI range"))?;
                    (all, Some((g.first as u32, l)))
                } else {
                    let l = u16::try_from(last).map_err(|_| not("a port range"))?;
                    ((g.first as u16, l), None)
                };
                Ok(FlowSpec {
                    target: None,
                    matcher: FlowMatch {
                        proto,
                        src: any,
                        src_plen: 0,
                        dst: self.dst,
                        dst_plen: full,
                        sport: all,
                        dport,
                        spi,
                    },
                    qos: Vec::new(),
                    lifetime_ms: 0,
                })
            })
            .collect()
    }
}

/// What the agent reports to its driver.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentEvent {
    Registered,
    Unregistered,
    Granted(HeldGrant),
    NumberLost(HeldGrant),
    NumberRefused {
        pool: String,
        status: u8,
    },
    /// A grant of a routed pool that cannot be routed (see [`NumberRoute::specs`]).
    RouteRefused {
        pool: String,
        reason: String,
    },
    FlowAcked {
        flow_id: u64,
        status: u8,
    },
    RequestFailed(ReqKey),
    Draining,
    Left,
}

/// A flow to advertise.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowSpec {
    /// End system the flow goes to; `None` = this agent's system.
    pub target: Option<u64>,
    pub matcher: FlowMatch,
    pub qos: Vec<Qos>,
    pub lifetime_ms: u32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Running,
    Draining { deadline: Instant },
    Leaving { deadline: Instant },
    Left,
}

pub struct Agent {
    cfg: AgentConfig,
    sess: Session,
    phase: Phase,
    next_advert: Instant,
    /// Multicast mode: when to send the last advertisement's group datagrams once more.
    group_repeat: Option<Instant>,
    flows: BTreeMap<u64, FlowAdvert>,
    /// Flows with a lifetime end on their own (everywhere) at these instants.
    flow_expiry: BTreeMap<u64, Instant>,
    next_flow_id: u64,
    active: u64,
    events: VecDeque<AgentEvent>,
    /// Per held grant id: the flows that route it ([`NumberRoute`]).
    routed: BTreeMap<u64, Vec<u64>>,
    /// Per service (conf order): failing its health check, so advertised at weight 0.
    unhealthy: Vec<bool>,
}

impl Agent {
    /// Starts registering at `now`. `seq` should start at the wall clock (restarts).
    pub fn new(cfg: AgentConfig, key: Key, seq: SeqGen, now: Instant) -> Agent {
        let reg = Register {
            kind: SystemKind::End,
            name: cfg.name.clone(),
            mac: cfg.mac,
            addrs: cfg.addrs.clone(),
            capabilities: cfg.capabilities,
            lease_ms: 0,
        };
        let mut sess = Session::new(
            key,
            seq,
            cfg.supervisor,
            reg,
            cfg.advert_interval,
            cfg.dead_interval,
        );
        sess.wanted = cfg.pools.clone();
        sess.start(now);
        let cfg_services = cfg.services.len();
        Agent {
            cfg,
            sess,
            phase: Phase::Running,
            next_advert: now,
            group_repeat: None,
            flows: BTreeMap::new(),
            flow_expiry: BTreeMap::new(),
            next_flow_id: 1,
            active: 0,
            events: VecDeque::new(),
            routed: BTreeMap::new(),
            unhealthy: vec![false; cfg_services],
        }
    }

    /// Takes service `i`'s health-check verdict ([`super::health`]): an unhealthy
    /// service is advertised with weight 0, so the intermediate systems send it no new
    /// flows and keep its open ones; healthy again, its configured weight. A change is
    /// advertised at once. False when nothing changed (or there is no service `i`).
    pub fn set_healthy(&mut self, now: Instant, i: usize, healthy: bool) -> bool {
        let Some(u) = self.unhealthy.get_mut(i) else {
            return false;
        };
        if *u != healthy {
            return false;
        }
        *u = !healthy;
        // Sent by the next timeout, at once when registered (with the registration's
        // first advertisement otherwise).
        self.next_advert = now;
        true
    }

    pub fn id(&self) -> u64 {
        self.sess.id
    }
    pub fn name(&self) -> &str {
        &self.cfg.name
    }
    pub fn is_registered(&self) -> bool {
        self.sess.registered
    }
    pub fn is_left(&self) -> bool {
        self.phase == Phase::Left
    }
    pub fn is_draining(&self) -> bool {
        !matches!(self.phase, Phase::Running)
    }
    pub fn stats(&self) -> &Stats {
        &self.sess.stats
    }
    /// Grants currently usable at `now` (see the validity rule in `session`).
    pub fn grants(&self, now: Instant) -> Vec<HeldGrant> {
        self.sess
            .grants
            .values()
            .filter(|g| self.sess.valid_until(g) > now)
            .cloned()
            .collect()
    }
    pub fn flows(&self) -> impl Iterator<Item = &FlowAdvert> {
        self.flows.values()
    }

    /// True for a flow that routes a held number block (it does not hold a drain back).
    fn is_standing(&self, flow_id: u64) -> bool {
        self.routed.values().any(|v| v.contains(&flow_id))
    }

    /// Sets the load of every service (per mille) for the next advertisement.
    pub fn set_load(&mut self, load: u32) {
        for s in &mut self.cfg.services {
            s.load = load;
        }
    }

    /// Sets service `i`'s congestion (per mille, at most 1000) for the next
    /// advertisement.
    pub fn set_congestion(&mut self, i: usize, permille: u16) {
        if let Some(s) = self.cfg.services.get_mut(i) {
            s.congestion = permille.min(1000);
        }
    }

    /// Sets service `i`'s response time (µs; 0: none measured) for the next
    /// advertisement.
    pub fn set_response_time(&mut self, i: usize, us: u32) {
        if let Some(s) = self.cfg.services.get_mut(i) {
            s.response_time_us = us;
        }
    }

    /// Connections still open that a drain should wait for (besides advertised flows).
    pub fn set_active(&mut self, n: u64) {
        self.active = n;
    }

    /// Advertises a flow (reliably); returns its id.
    pub fn add_flow(&mut self, now: Instant, spec: FlowSpec) -> u64 {
        let id = self.next_flow_id;
        self.next_flow_id += 1;
        let adv = FlowAdvert {
            origin: self.sess.id,
            flow_id: id,
            target: spec.target.unwrap_or(self.sess.id),
            matcher: spec.matcher,
            qos: spec.qos,
            lifetime_ms: spec.lifetime_ms,
        };
        if adv.lifetime_ms > 0 {
            self.flow_expiry
                .insert(id, now + Duration::from_millis(adv.lifetime_ms as u64));
        }
        self.flows.insert(id, adv.clone());
        self.send_flow(now, &adv);
        id
    }

    fn send_flow(&mut self, now: Instant, adv: &FlowAdvert) {
        let body = Body::FlowAdd(adv.clone());
        if let Some(g) = self.cfg.group {
            self.sess.send_to(g, &body);
        }
        self.sess.request(now, ReqKey::FlowAdd(adv.flow_id), body);
    }

    /// Withdraws a flow; false if unknown.
    pub fn del_flow(&mut self, now: Instant, flow_id: u64) -> bool {
        if self.flows.remove(&flow_id).is_none() {
            return false;
        }
        self.flow_expiry.remove(&flow_id);
        self.sess.cancel(&ReqKey::FlowAdd(flow_id));
        let body = Body::FlowDel(FlowWithdraw {
            origin: self.sess.id,
            flow_id,
        });
        if let Some(g) = self.cfg.group {
            self.sess.send_to(g, &body);
        }
        self.sess.request(now, ReqKey::FlowDel(flow_id), body);
        true
    }

    /// Starts a graceful shutdown (idempotent).
    pub fn drain(&mut self, now: Instant, timeout: Option<Duration>) {
        if self.phase != Phase::Running {
            return;
        }
        let t = timeout.unwrap_or(self.cfg.drain_timeout);
        self.phase = Phase::Draining { deadline: now + t };
        self.events.push_back(AgentEvent::Draining);
        let body = Body::Drain(Drain {
            target: self.sess.id,
            timeout_ms: t.as_millis().min(u32::MAX as u128) as u32,
        });
        if let Some(g) = self.cfg.group {
            self.sess.send_to(g, &body);
        }
        if self.sess.registered {
            self.sess.request(now, ReqKey::Drain, body);
        }
        self.next_advert = now;
        self.step(now);
    }

    fn advertise(&mut self, now: Instant) {
        let body = self.advert_body();
        // Reliable until acknowledged or replaced by the next one: a lost first
        // advertisement would otherwise delay the server by a whole interval.
        self.sess.request(now, ReqKey::Advert, body);
        if self.cfg.group.is_some() {
            self.send_group();
            // Once more half an interval later, as the supervisor repeats its relays: a
            // listener then drops this system (or a flow) only when about six datagrams
            // in a row are lost, not three (PROTOCOL.md §6.2).
            self.group_repeat = Some(now + self.sess.advert_interval / 2);
        }
    }

    /// The services as the next advertisement says them (an unhealthy one at weight 0).
    pub fn advertised(&self) -> Vec<Service> {
        (self.cfg.services.iter().zip(&self.unhealthy))
            .map(|(s, &sick)| Service {
                weight: if sick { 0 } else { s.weight },
                ..s.clone()
            })
            .collect()
    }

    /// This system's advertisement as it stands.
    fn advert_body(&self) -> Body {
        let state = if matches!(self.phase, Phase::Running) {
            SysState::Up
        } else {
            SysState::Draining
        };
        if self.cfg.services.is_empty() {
            Body::Keepalive(Keepalive { state: state as u8 })
        } else {
            Body::ServiceAdvert(ServiceAdvert {
                origin: SystemInfo {
                    id: self.sess.id,
                    kind: SystemKind::End,
                    name: self.cfg.name.clone(),
                    mac: self.cfg.mac,
                    addrs: self.cfg.addrs.clone(),
                    state,
                },
                age_ms: 0,
                services: self.advertised(),
            })
        }
    }

    /// Multicast mode: the advertisement (if this system has services) and every live
    /// flow, to the group.
    fn send_group(&mut self) {
        let Some(g) = self.cfg.group else {
            return;
        };
        let body = self.advert_body();
        if matches!(body, Body::ServiceAdvert(_)) {
            self.sess.send_to(g, &body);
        }
        let flows: Vec<Body> = self.flows.values().cloned().map(Body::FlowAdd).collect();
        for f in flows {
            self.sess.send_to(g, &f);
        }
    }

    fn step(&mut self, now: Instant) {
        match self.phase {
            Phase::Draining { deadline }
                if ((self.flows.keys().all(|&id| self.is_standing(id)) && self.active == 0)
                    || now >= deadline) =>
            {
                self.sess.release_all(now);
                self.sess.request(
                    now,
                    ReqKey::Leave,
                    Body::Leave(Leave {
                        origin: self.sess.id,
                        reason: 1,
                    }),
                );
                let wait = (self.sess.advert_interval * 2).max(Duration::from_millis(500));
                self.phase = Phase::Leaving {
                    deadline: now + wait,
                };
            }
            Phase::Leaving { deadline } if now >= deadline => self.finish(),
            _ => {}
        }
    }

    fn finish(&mut self) {
        if self.phase != Phase::Left {
            self.phase = Phase::Left;
            self.events.push_back(AgentEvent::Left);
        }
    }

    fn pump_session(&mut self, now: Instant) {
        while let Some(e) = self.sess.events.pop_front() {
            match e {
                SessEvent::Registered => {
                    self.events.push_back(AgentEvent::Registered);
                    // A (re-)registration wipes this origin's flows at the supervisor.
                    let flows: Vec<FlowAdvert> = self.flows.values().cloned().collect();
                    for f in flows {
                        self.send_flow(now, &f);
                    }
                    self.next_advert = now;
                }
                SessEvent::Unregistered => self.events.push_back(AgentEvent::Unregistered),
                SessEvent::Granted(g) => {
                    self.route(now, &g);
                    self.events.push_back(AgentEvent::Granted(g));
                }
                SessEvent::Lost(g) => {
                    for id in self.routed.remove(&g.grant_id).unwrap_or_default() {
                        self.del_flow(now, id);
                    }
                    self.events.push_back(AgentEvent::NumberLost(g));
                }
                SessEvent::Refused { pool, status } => self
                    .events
                    .push_back(AgentEvent::NumberRefused { pool, status }),
                SessEvent::Acked(ReqKey::FlowAdd(id), st) => {
                    self.events.push_back(AgentEvent::FlowAcked {
                        flow_id: id,
                        status: st,
                    })
                }
                SessEvent::Acked(ReqKey::Leave, _) => self.finish(),
                SessEvent::Acked(..) => {}
                SessEvent::Failed(ReqKey::Advert) => {}
                SessEvent::Failed(k) => {
                    if k == ReqKey::Leave {
                        self.finish();
                    }
                    self.events.push_back(AgentEvent::RequestFailed(k));
                }
            }
        }
    }

    /// Advertises the flows that route grant `g` when its pool is routed.
    fn route(&mut self, now: Instant, g: &HeldGrant) {
        let routes: Vec<NumberRoute> = self
            .cfg
            .routes
            .iter()
            .filter(|r| r.pool == g.pool)
            .cloned()
            .collect();
        for r in routes {
            match r.specs(g) {
                Ok(specs) => {
                    let ids: Vec<u64> = specs.into_iter().map(|f| self.add_flow(now, f)).collect();
                    self.routed.entry(g.grant_id).or_default().extend(ids);
                }
                Err(reason) => self.events.push_back(AgentEvent::RouteRefused {
                    pool: g.pool.clone(),
                    reason,
                }),
            }
        }
    }

    pub fn handle(&mut self, now: Instant, _from: SocketAddr, data: &[u8]) {
        if self.phase == Phase::Left {
            return;
        }
        if let Some(msg) = self.sess.handle(now, data) {
            let from_sup = Some(msg.sender) == self.sess.supervisor_id;
            match msg.body {
                Body::Drain(d) if from_sup && d.target == self.sess.id => {
                    let t = (d.timeout_ms > 0).then(|| Duration::from_millis(d.timeout_ms as u64));
                    self.drain(now, t);
                }
                _ => self.sess.stats.rx_unexpected += 1,
            }
        }
        self.pump_session(now);
        self.step(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Left {
            return;
        }
        self.sess.handle_timeout(now);
        if self.sess.registered && now >= self.next_advert {
            self.advertise(now);
            self.next_advert = now + self.sess.advert_interval;
        } else if self.group_repeat.is_some_and(|t| now >= t) {
            self.group_repeat = None;
            if self.sess.registered && matches!(self.phase, Phase::Running | Phase::Draining { .. })
            {
                self.send_group();
            }
        }
        // Flows with a lifetime lapse on their own.
        let lapsed: Vec<u64> = self
            .flow_expiry
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in lapsed {
            self.flow_expiry.remove(&id);
            self.flows.remove(&id);
            self.sess.cancel(&ReqKey::FlowAdd(id));
        }
        self.pump_session(now);
        self.step(now);
    }

    pub fn poll_transmit(&mut self, _now: Instant) -> Option<Transmit> {
        self.sess.poll_transmit()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Left {
            return None;
        }
        let mut t = self.sess.poll_timeout();
        if let Some(e) = self.flow_expiry.values().min() {
            t = Some(t.map_or(*e, |x| x.min(*e)));
        }
        if self.sess.registered {
            t = Some(t.map_or(self.next_advert, |x| x.min(self.next_advert)));
        }
        if let Some(r) = self.group_repeat {
            t = Some(t.map_or(r, |x| x.min(r)));
        }
        match self.phase {
            Phase::Draining { deadline } | Phase::Leaving { deadline } => {
                Some(t.map_or(deadline, |x| x.min(deadline)))
            }
            _ => t,
        }
    }

    pub fn poll_event(&mut self) -> Option<AgentEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(pool: &str, first: u64, count: u32) -> HeldGrant {
        HeldGrant {
            grant_id: 7,
            pool: pool.into(),
            first,
            count,
            lease_ms: 1000,
            valid_from: Instant::now(),
        }
    }

    fn advertised_weights(a: &Agent) -> Vec<u32> {
        match a.advert_body() {
            Body::ServiceAdvert(s) => s.services.iter().map(|s| s.weight).collect(),
            other => panic!("not an advert: {other:?}"),
        }
    }

    #[test]
    fn an_unhealthy_service_is_advertised_at_weight_0_at_once() {
        let svc = |name: &str, weight| Service {
            name: name.into(),
            vip: "10.0.0.100".parse().unwrap(),
            proto: 6,
            ports: vec![(80, 80)],
            capacity: 1000,
            weight,
            load: 0,
            congestion: 0,
            response_time_us: 0,
        };
        let t0 = Instant::now();
        let cfg = AgentConfig {
            name: "web1".into(),
            mac: [2, 0, 0, 0, 0, 1],
            addrs: vec![],
            capabilities: cap::SERVICES,
            supervisor: "127.0.0.1:7700".parse().unwrap(),
            group: None,
            advert_interval: Duration::from_secs(1),
            dead_interval: Duration::from_secs(3),
            services: vec![svc("web", 100), svc("api", 40)],
            pools: vec![],
            routes: vec![],
            drain_timeout: Duration::from_secs(1),
        };
        let mut a = Agent::new(cfg, Key::new(&[7; 32]).unwrap(), SeqGen::new(1), t0);
        assert_eq!(advertised_weights(&a), [100, 40]);
        let later = t0 + Duration::from_millis(300);
        a.next_advert = t0 + Duration::from_secs(1);
        assert!(a.set_healthy(later, 1, false));
        assert_eq!(advertised_weights(&a), [100, 0]);
        assert_eq!(a.next_advert, later, "advertised at once");
        assert!(!a.set_healthy(later, 1, false), "no change");
        assert!(!a.set_healthy(later, 9, false), "no such service");
        assert!(a.set_healthy(later, 1, true));
        assert_eq!(advertised_weights(&a), [100, 40], "its own weight again");
    }

    #[test]
    fn a_port_block_becomes_one_flow_per_protocol() {
        let r = NumberRoute {
            pool: "nat-ports".into(),
            dst: "203.0.113.1".parse().unwrap(),
            protos: vec![6, 17],
        };
        let specs = r
            .specs(&grant("nat-ports", 3072, 1024))
            .expect("a port block");
        assert_eq!(specs.len(), 2);
        for (s, proto) in specs.iter().zip([6, 17]) {
            let m = &s.matcher;
            assert_eq!(
                (m.proto, m.dport, m.sport),
                (proto, (3072, 4095), (0, 65535))
            );
            assert_eq!((m.dst, m.dst_plen, m.src_plen), (r.dst, 32, 0));
            assert_eq!(
                (s.target, s.lifetime_ms),
                (None, 0),
                "to this system, until withdrawn"
            );
        }
        // IPv6: a /128 and an unspecified IPv6 source.
        let r6 = NumberRoute {
            dst: "2001:db8::1".parse().unwrap(),
            ..r.clone()
        };
        let m = &r6.specs(&grant("nat-ports", 1024, 1)).expect("one port")[0].matcher;
        assert_eq!(
            (m.dst_plen, m.dport, m.src.is_ipv6()),
            (128, (1024, 1024), true)
        );
        // Numbers that are not ports (an SPI range, say) are refused, not truncated.
        assert!(r.specs(&grant("nat-ports", 65_000, 1024)).is_err());
        assert!(r.specs(&grant("nat-ports", 0x1_0000, 16)).is_err());
        assert!(r.specs(&grant("nat-ports", 10, 0)).is_err());
    }

    #[test]
    fn an_spi_block_becomes_an_spi_range_for_esp() {
        let r = NumberRoute {
            pool: "ipsec-spi".into(),
            dst: "203.0.113.1".parse().unwrap(),
            protos: vec![ip_proto::ESP],
        };
        let specs = r
            .specs(&grant("ipsec-spi", 0x0002_0000, 65536))
            .expect("an SPI block");
        assert_eq!(specs.len(), 1);
        let m = &specs[0].matcher;
        assert_eq!(
            (m.proto, m.spi, m.sport, m.dport),
            (50, Some((0x0002_0000, 0x0002_ffff)), (0, 65535), (0, 65535))
        );
        assert_eq!(m.check(), Ok(()));
        assert!(!m.is_exact());
        // AH is refused, with the reason.
        let ah = NumberRoute {
            protos: vec![51],
            ..r.clone()
        };
        let e = ah.specs(&grant("ipsec-spi", 0x0002_0000, 16)).unwrap_err();
        assert!(e.contains("AH"), "{e}");
        // The last SPI, 2^32 - 1, is a number of the block; past it is not.
        let top = r
            .specs(&grant("ipsec-spi", 0xffff_0000, 65536))
            .expect("top");
        assert_eq!(top[0].matcher.spi, Some((0xffff_0000, u32::MAX)));
        assert!(r.specs(&grant("ipsec-spi", 0xffff_0001, 65536)).is_err());
        // One route may mix both kinds: the ports of a NAT block for UDP, fine; an SPI
        // block for UDP is refused as a port range.
        let mixed = NumberRoute {
            protos: vec![17, ip_proto::ESP],
            ..r.clone()
        };
        assert_eq!(mixed.specs(&grant("p", 4096, 256)).expect("both").len(), 2);
        assert!(mixed.specs(&grant("p", 0x10_0000, 256)).is_err());
    }
}
