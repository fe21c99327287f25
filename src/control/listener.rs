//! The intermediate system's listener: a sans-IO state machine that registers with the
//! supervisor (kind `intermediate`), keeps itself alive, hears advertisements (relayed
//! by the supervisor, or on the multicast group) and turns them into [`TableEvent`]s for
//! the data plane: servers up/draining/down, service load, flows added/removed, and
//! numbers granted to this intermediate system.
//!
//! Guarantees: a server is reported `ServerUp` once per appearance and `ServerDown`
//! once per disappearance (leave, or no advertisement for the dead interval); every
//! flow reported added is later reported removed if its origin goes down.
//! Advertisements are accepted from the supervisor or from the system they describe.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::Transmit;
use super::proto::*;
use super::session::{HeldGrant, SessEvent, Session};
use super::supervisor::Stats;

#[derive(Clone, Debug)]
pub struct ListenerConfig {
    pub name: String,
    pub mac: [u8; 6],
    pub addrs: Vec<IpAddr>,
    pub capabilities: u32,
    pub supervisor: SocketAddr,
    pub advert_interval: Duration,
    pub dead_interval: Duration,
    pub pools: Vec<String>,
}

/// Table changes for the data plane.
#[derive(Clone, Debug, PartialEq)]
pub enum TableEvent {
    ServerUp(SystemInfo),
    ServerDraining(u64),
    ServerDown(u64),
    ServiceLoad { server: u64, service: Service },
    FlowAdded(FlowAdvert),
    FlowRemoved { origin: u64, flow_id: u64 },
    NumbersGranted(HeldGrant),
    NumbersLost(HeldGrant),
    Registered,
}

#[derive(Clone, Debug)]
struct Server {
    info: SystemInfo,
    last_heard: Instant,
    services: Vec<Service>,
}

#[derive(Clone, Debug)]
struct FlowRec {
    adv: FlowAdvert,
    expires: Option<Instant>,
    /// When a FlowAdd for it last arrived: the supervisor (relay mode) or the origin
    /// (multicast) repeats every live flow at least once an interval, so a flow not
    /// heard of for the dead interval is gone (its FlowDel was lost, or came before the
    /// FlowAdd).
    heard: Instant,
}

pub struct Listener {
    sess: Session,
    servers: BTreeMap<u64, Server>,
    flows: BTreeMap<(u64, u64), FlowRec>,
    next_keepalive: Instant,
    events: VecDeque<TableEvent>,
}

impl Listener {
    pub fn new(cfg: ListenerConfig, key: Key, seq: SeqGen, now: Instant) -> Listener {
        let reg = Register {
            kind: SystemKind::Intermediate,
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
        Listener {
            sess,
            servers: BTreeMap::new(),
            flows: BTreeMap::new(),
            next_keepalive: now,
            events: VecDeque::new(),
        }
    }

    pub fn id(&self) -> u64 {
        self.sess.id
    }
    /// When the supervisor last answered (the send time of the newest acknowledged
    /// keepalive or registration); `None` before registration or after it was lost.
    pub fn supervisor_acked(&self) -> Option<Instant> {
        self.sess.last_acked
    }
    /// The dead interval in force (the supervisor's, once registered).
    pub fn dead_interval(&self) -> Duration {
        self.sess.dead_interval
    }
    pub fn is_registered(&self) -> bool {
        self.sess.registered
    }
    pub fn stats(&self) -> &Stats {
        &self.sess.stats
    }
    /// Servers currently known, with their advertised state.
    pub fn servers(&self) -> impl Iterator<Item = &SystemInfo> {
        self.systems().map(|(info, _)| info)
    }
    /// Servers currently known, each with the services it last advertised.
    pub fn systems(&self) -> impl Iterator<Item = (&SystemInfo, &[Service])> + Clone {
        self.servers
            .values()
            .map(|s| (&s.info, s.services.as_slice()))
    }
    /// Live advertised flows, in (origin, flow id) order.
    pub fn flows(&self) -> impl Iterator<Item = &FlowAdvert> {
        self.flows.values().map(|f| &f.adv)
    }
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    fn server_down(&mut self, id: u64) {
        if self.servers.remove(&id).is_some() {
            self.events.push_back(TableEvent::ServerDown(id));
        }
        let gone: Vec<(u64, u64)> = self.flows.keys().filter(|k| k.0 == id).copied().collect();
        for k in gone {
            self.flows.remove(&k);
            self.events.push_back(TableEvent::FlowRemoved {
                origin: k.0,
                flow_id: k.1,
            });
        }
    }

    fn on_advert(&mut self, now: Instant, a: ServiceAdvert) {
        let id = a.origin.id;
        // Liveness follows the origin, not the relay: date the advert back by its age.
        let age = Duration::from_millis(a.age_ms as u64);
        if age >= self.sess.dead_interval {
            return;
        }
        let heard = now.checked_sub(age).unwrap_or(now);

        match self.servers.get_mut(&id) {
            None => {
                self.events
                    .push_back(TableEvent::ServerUp(a.origin.clone()));
                if a.origin.state == SysState::Draining {
                    self.events.push_back(TableEvent::ServerDraining(id));
                }
                for s in &a.services {
                    self.events.push_back(TableEvent::ServiceLoad {
                        server: id,
                        service: s.clone(),
                    });
                }
                self.servers.insert(
                    id,
                    Server {
                        info: a.origin,
                        last_heard: heard,
                        services: a.services,
                    },
                );
            }
            Some(s) => {
                s.last_heard = s.last_heard.max(heard);
                if s.info.state != a.origin.state {
                    self.events.push_back(match a.origin.state {
                        SysState::Draining => TableEvent::ServerDraining(id),
                        SysState::Up => TableEvent::ServerUp(a.origin.clone()),
                    });
                }
                for svc in &a.services {
                    if !s.services.contains(svc) {
                        self.events.push_back(TableEvent::ServiceLoad {
                            server: id,
                            service: svc.clone(),
                        });
                    }
                }
                s.info = a.origin;
                s.services = a.services;
            }
        }
    }

    pub fn handle(&mut self, now: Instant, _from: SocketAddr, data: &[u8]) {
        if let Some(msg) = self.sess.handle(now, data) {
            let sup = self.sess.supervisor_id;
            let trusted = |origin: u64| Some(msg.sender) == sup || msg.sender == origin;
            match msg.body {
                Body::ServiceAdvert(a) if trusted(a.origin.id) => self.on_advert(now, a),
                Body::FlowAdd(f) if trusted(f.origin) => {
                    let key = (f.origin, f.flow_id);
                    let expires = (f.lifetime_ms > 0)
                        .then(|| now + Duration::from_millis(f.lifetime_ms as u64));
                    let changed = self.flows.get(&key).is_none_or(|r| r.adv != f);
                    if changed {
                        self.events.push_back(TableEvent::FlowAdded(f.clone()));
                    }
                    self.flows.insert(
                        key,
                        FlowRec {
                            adv: f,
                            expires,
                            heard: now,
                        },
                    );
                }
                Body::FlowDel(f) if trusted(f.origin) => {
                    if self.flows.remove(&(f.origin, f.flow_id)).is_some() {
                        self.events.push_back(TableEvent::FlowRemoved {
                            origin: f.origin,
                            flow_id: f.flow_id,
                        });
                    }
                }
                Body::Drain(d) if trusted(d.target) => {
                    if let Some(s) = self.servers.get_mut(&d.target)
                        && s.info.state != SysState::Draining
                    {
                        s.info.state = SysState::Draining;
                        self.events.push_back(TableEvent::ServerDraining(d.target));
                    }
                }
                Body::Leave(l) if trusted(l.origin) => self.server_down(l.origin),
                _ => self.sess.stats.rx_unexpected += 1,
            }
        }
        self.pump();
    }

    fn pump(&mut self) {
        while let Some(e) = self.sess.events.pop_front() {
            match e {
                SessEvent::Registered => self.events.push_back(TableEvent::Registered),
                SessEvent::Granted(g) => self.events.push_back(TableEvent::NumbersGranted(g)),
                SessEvent::Lost(g) => self.events.push_back(TableEvent::NumbersLost(g)),
                _ => {}
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.sess.handle_timeout(now);
        if self.sess.registered && now >= self.next_keepalive {
            self.sess
                .send_periodic(now, &Body::Keepalive(Keepalive { state: 0 }));
            self.next_keepalive = now + self.sess.advert_interval;
        }
        let dead = self.sess.dead_interval;
        let gone: Vec<u64> = self
            .servers
            .values()
            .filter(|s| s.last_heard + dead <= now)
            .map(|s| s.info.id)
            .collect();
        for id in gone {
            self.server_down(id);
        }
        let expired: Vec<(u64, u64)> = self
            .flows
            .iter()
            .filter(|(_, f)| f.expires.is_some_and(|e| e <= now) || f.heard + dead <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            self.flows.remove(&k);
            self.events.push_back(TableEvent::FlowRemoved {
                origin: k.0,
                flow_id: k.1,
            });
        }
        self.pump();
    }

    pub fn poll_transmit(&mut self, _now: Instant) -> Option<Transmit> {
        self.sess.poll_transmit()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let dead = self.sess.dead_interval;
        let s = self.servers.values().map(|s| s.last_heard + dead).min();
        let f = self
            .flows
            .values()
            .map(|f| f.expires.map_or(f.heard + dead, |e| e.min(f.heard + dead)))
            .min();
        let k = self.sess.registered.then_some(self.next_keepalive);
        [self.sess.poll_timeout(), s, f, k]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn poll_event(&mut self) -> Option<TableEvent> {
        self.events.pop_front()
    }
}
