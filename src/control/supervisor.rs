//! The supervisor's sans-IO state machine: registrations with a dead interval, relay of
//! end-system advertisements to intermediate systems, server-list queries, the Assigned
//! Numbers Authority ([`super::ana`]) and the management agent.
//!
//! Bytes and `now` in ([`Supervisor::handle`], [`Supervisor::handle_timeout`]), datagrams
//! ([`Supervisor::poll_transmit`]), a deadline ([`Supervisor::poll_timeout`]) and events
//! ([`Supervisor::poll_event`]) out. The only side effect is [`Store::append`], called
//! *before* an acknowledgement of a registration or grant is queued: what was acked was
//! persisted. [`Supervisor::restore`] rebuilds the state from the store's records.
//!
//! Guarantees: `handle` never panics on any input; every refused datagram is counted in
//! [`Stats`]; a refused datagram changes nothing but a counter.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Transmit;
use super::ana::{Ana, Grant, PoolConf};
use super::proto::*;
use super::store::{Record, Store};

/// Supervisor settings (from `conf/supervisor.yaml`).
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    pub name: String,
    pub advert_interval: Duration,
    pub dead_interval: Duration,
    /// Relay end-system messages to registered intermediate systems by unicast.
    pub relay: bool,
    pub drain_timeout: Duration,
    pub pools: Vec<PoolConf>,
}

/// Counters, all monotonic.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    pub rx_ok: u64,
    pub rx_malformed: u64,
    pub rx_bad_version: u64,
    pub rx_bad_mac: u64,
    pub rx_replayed: u64,
    pub rx_stale: u64,
    pub rx_not_registered: u64,
    pub rx_unexpected: u64,
    pub tx: u64,
    pub registrations: u64,
    pub adverts: u64,
    pub relayed: u64,
    pub deaths: u64,
    pub leaves: u64,
    pub grants: u64,
    pub renewals: u64,
    pub releases: u64,
    pub reclaimed: u64,
    pub expired: u64,
    pub store_errors: u64,
    pub queries: u64,
    pub mgmt: u64,
}

impl Stats {
    pub fn count_error(&mut self, e: ProtoError) {
        match e {
            ProtoError::Malformed => self.rx_malformed += 1,
            ProtoError::BadVersion => self.rx_bad_version += 1,
            ProtoError::BadMac => self.rx_bad_mac += 1,
            ProtoError::Replayed => self.rx_replayed += 1,
            ProtoError::Stale => self.rx_stale += 1,
        }
    }
}

/// What happened, for logs.
#[derive(Clone, Debug, PartialEq)]
pub enum SupEvent {
    Registered {
        id: u64,
        name: String,
    },
    Dead {
        id: u64,
        name: String,
    },
    Left {
        id: u64,
        name: String,
    },
    Granted {
        holder: u64,
        pool: String,
        first: u64,
        count: u32,
    },
    Reclaimed {
        holder: u64,
        pool: String,
        first: u64,
    },
    Refused {
        from: SocketAddr,
        error: ProtoError,
    },
}

/// A registered system as the supervisor knows it.
#[derive(Clone, Debug)]
pub struct SystemRec {
    pub id: u64,
    pub kind: SystemKind,
    pub name: String,
    pub mac: [u8; 6],
    pub addrs: Vec<std::net::IpAddr>,
    pub caps: u32,
    pub addr: SocketAddr,
    pub last_heard: Instant,
    pub state: SysState,
    pub admin_drain: bool,
    pub weight: Option<u32>,
    pub services: Vec<Service>,
}

impl SystemRec {
    fn eff_state(&self) -> SysState {
        if self.admin_drain {
            SysState::Draining
        } else {
            self.state
        }
    }
    fn info(&self) -> SystemInfo {
        SystemInfo {
            id: self.id,
            kind: self.kind,
            name: self.name.clone(),
            mac: self.mac,
            addrs: self.addrs.clone(),
            state: self.eff_state(),
        }
    }
    fn eff_services(&self) -> Vec<Service> {
        self.services
            .iter()
            .map(|s| Service {
                // An end system's own 0 (its health check fails) stands: the operator's
                // weight cannot send flows to a service that says it cannot take them.
                weight: if s.weight == 0 {
                    0
                } else {
                    self.weight.unwrap_or(s.weight)
                },
                ..s.clone()
            })
            .collect()
    }
    fn record(&self) -> Record {
        Record::System {
            id: self.id,
            kind: self.kind,
            name: self.name.clone(),
            mac: self.mac,
            addrs: self.addrs.clone(),
            caps: self.caps,
            addr: self.addr,
        }
    }
}

#[derive(Clone, Debug)]
struct FlowRec {
    adv: FlowAdvert,
    expires: Option<Instant>,
    /// Sequence number of the latest FlowAdd that advertised it (0 when restored from a
    /// record without one): a Register with a higher one withdraws it.
    seq: u64,
}

/// The supervisor.
pub struct Supervisor {
    cfg: SupervisorConfig,
    id: u64,
    key: Key,
    seq: SeqGen,
    replay: ReplayGuard,
    systems: BTreeMap<u64, SystemRec>,
    flows: BTreeMap<(u64, u64), FlowRec>,
    ana: Ana,
    store: Box<dyn Store>,
    out: VecDeque<Transmit>,
    events: VecDeque<SupEvent>,
    /// Extra relays of a new or changed advertisement: (when, system, how many more).
    bursts: Vec<(Instant, u64, u8)>,
    /// Relay mode: when every live flow is next relayed again, twice an interval (see
    /// `handle_timeout`).
    next_flow_refresh: Instant,
    /// Flows withdrawn in the last dead interval, by (origin, flow id), with when and the
    /// FlowDel's sequence number: a FlowAdd for one of them is a copy delayed past its
    /// FlowDel (UDP reorders) and must not bring it back. Cleared for an origin that
    /// registers again (its flow ids start over), but for FlowDels sent after that
    /// Register (a late copy of it).
    withdrawn: BTreeMap<(u64, u64), (Instant, u64)>,
    pub stats: Stats,
}

impl Supervisor {
    /// A supervisor with the state in `records` (from [`Store`]); compacts the store.
    /// Restored registrations count as heard at `now`; restored grants' leases restart
    /// at `now` (never shorter than before the restart).
    pub fn restore(
        cfg: SupervisorConfig,
        key: Key,
        seq: SeqGen,
        now: Instant,
        records: Vec<Record>,
        mut store: Box<dyn Store>,
    ) -> Result<Supervisor, String> {
        let mut ana = Ana::new(&cfg.pools)?;
        let mut systems = BTreeMap::new();
        let mut grants: BTreeMap<u64, Grant> = BTreeMap::new();
        let mut flows: BTreeMap<(u64, u64), FlowRec> = BTreeMap::new();
        for r in records {
            match r {
                Record::System {
                    id,
                    kind,
                    name,
                    mac,
                    addrs,
                    caps,
                    addr,
                } => {
                    systems.insert(
                        id,
                        SystemRec {
                            id,
                            kind,
                            name,
                            mac,
                            addrs,
                            caps,
                            addr,
                            last_heard: now,
                            state: SysState::Up,
                            admin_drain: false,
                            weight: None,
                            services: Vec::new(),
                        },
                    );
                }
                Record::SystemGone { id } => {
                    systems.remove(&id);
                    // Its flows went with it (a later registration starts without them).
                    flows.retain(|k, _| k.0 != id);
                }
                Record::Grant {
                    id,
                    pool,
                    holder,
                    request_id,
                    first,
                    count,
                    lease_ms,
                    seq,
                } => {
                    // Gone or not, its id is never handed out again.
                    ana.reserve_ids(id.saturating_add(1));
                    grants.insert(
                        id,
                        Grant {
                            id,
                            pool,
                            holder,
                            request_id,
                            first,
                            count,
                            lease_ms,
                            expires: now,
                            seq,
                        },
                    );
                }
                Record::GrantGone { id } => {
                    grants.remove(&id);
                }
                Record::GrantIds { next } => ana.reserve_ids(next),
                Record::Flow {
                    origin,
                    flow_id,
                    body,
                    seq,
                } => {
                    let decoded = hex::decode(&body)
                        .ok()
                        .and_then(|b| Body::decode(ty::FLOW_ADD, &b).ok());
                    if let Some(Body::FlowAdd(adv)) = decoded
                        && adv.origin == origin
                        && adv.flow_id == flow_id
                    {
                        // Lifetimes restart at `now` (never shorter than before).
                        let expires = (adv.lifetime_ms > 0)
                            .then(|| now + Duration::from_millis(adv.lifetime_ms as u64));
                        let seq = seq.unwrap_or(0);
                        flows.insert((origin, flow_id), FlowRec { adv, expires, seq });
                    }
                }
                Record::FlowGone { origin, flow_id } => {
                    flows.remove(&(origin, flow_id));
                }
            }
        }
        flows.retain(|k, _| systems.contains_key(&k.0));
        for g in grants.into_values() {
            ana.restore(now, g);
        }
        let mut s = Supervisor {
            id: system_id(&cfg.name),
            cfg,
            key,
            seq,
            replay: ReplayGuard::new(65_536),
            systems,
            flows,
            ana,
            store: Box::new(super::store::MemStore::default()),
            out: VecDeque::new(),
            events: VecDeque::new(),
            bursts: Vec::new(),
            next_flow_refresh: now,
            withdrawn: BTreeMap::new(),
            stats: Stats::default(),
        };
        store
            .compact(&s.snapshot())
            .map_err(|e| format!("compacting the store: {e}"))?;
        s.store = store;
        Ok(s)
    }

    /// A fresh supervisor (empty state).
    pub fn new(
        cfg: SupervisorConfig,
        key: Key,
        seq: SeqGen,
        now: Instant,
        store: Box<dyn Store>,
    ) -> Result<Supervisor, String> {
        Supervisor::restore(cfg, key, seq, now, Vec::new(), store)
    }

    /// The supervisor's own system id (SHA-256 of its name, PROTOCOL.md §3.2).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Current records (what a compaction writes).
    pub fn snapshot(&self) -> Vec<Record> {
        let mut v: Vec<Record> = self.systems.values().map(|s| s.record()).collect();
        v.extend(self.ana.grants.values().map(|g| Record::Grant {
            id: g.id,
            pool: g.pool.clone(),
            holder: g.holder,
            request_id: g.request_id,
            first: g.first,
            count: g.count,
            lease_ms: g.lease_ms,
            seq: g.seq,
        }));
        v.extend(self.flows.values().map(|f| flow_record(&f.adv, f.seq)));
        v.push(Record::GrantIds {
            next: self.ana.next_id(),
        });
        v
    }

    pub fn systems(&self) -> impl Iterator<Item = &SystemRec> {
        self.systems.values()
    }

    pub fn grants(&self) -> impl Iterator<Item = &Grant> {
        self.ana.grants.values()
    }

    /// Live advertised flows, in (origin, flow id) order.
    pub fn flows(&self) -> impl Iterator<Item = &FlowAdvert> {
        self.flows.values().map(|f| &f.adv)
    }

    pub fn poll_transmit(&mut self, _now: Instant) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<SupEvent> {
        self.events.pop_front()
    }

    fn send(&mut self, dst: SocketAddr, body: &Body) {
        let seq = self.seq.next_seq();
        let payload = self.key.seal(self.id, seq, body);
        self.stats.tx += 1;
        self.out.push_back(Transmit { dst, payload });
    }

    fn relay(&mut self, body: &Body) {
        let dsts: Vec<SocketAddr> = self
            .systems
            .values()
            .filter(|s| s.kind == SystemKind::Intermediate)
            .map(|s| s.addr)
            .collect();
        for d in dsts {
            self.stats.relayed += 1;
            self.send(d, body);
        }
    }

    fn ack(&mut self, dst: SocketAddr, seq: u64, status: u8) {
        self.send(
            dst,
            &Body::Ack(Ack {
                in_reply_to: seq,
                status,
            }),
        );
    }

    fn persist(&mut self, rec: &Record) -> bool {
        match self.store.append(rec) {
            Ok(()) => true,
            Err(_) => {
                self.stats.store_errors += 1;
                false
            }
        }
    }

    fn advert_of(&self, now: Instant, s: &SystemRec) -> Body {
        let age = now.saturating_duration_since(s.last_heard).as_millis();
        Body::ServiceAdvert(ServiceAdvert {
            origin: s.info(),
            age_ms: age.min(u32::MAX as u128) as u32,
            services: s.eff_services(),
        })
    }

    /// One datagram from `from`.
    pub fn handle(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let msg = match self.key.open(data) {
            Ok(m) => m,
            Err(e) => {
                self.stats.count_error(e);
                self.events.push_back(SupEvent::Refused { from, error: e });
                return;
            }
        };
        if let Err(e) = self.replay.check(msg.sender, msg.seq) {
            self.stats.count_error(e);
            self.events.push_back(SupEvent::Refused { from, error: e });
            return;
        }
        self.stats.rx_ok += 1;
        let Message { sender, seq, body } = msg;
        let registered = if let Some(s) = self.systems.get_mut(&sender) {
            s.last_heard = now;
            s.addr = from;
            true
        } else {
            false
        };
        let needs_reg = matches!(
            body,
            Body::ServiceAdvert(_)
                | Body::FlowAdd(_)
                | Body::FlowDel(_)
                | Body::Drain(_)
                | Body::Keepalive(_)
                | Body::NumberRequest(_)
                | Body::NumberRenew(_)
                | Body::NumberRelease(_)
        );
        if needs_reg && !registered {
            self.stats.rx_not_registered += 1;
            if let Body::NumberRequest(r) = &body {
                let reply = Body::NumberGrant(NumberGrant {
                    in_reply_to: seq,
                    request_id: r.request_id,
                    status: status::NOT_REGISTERED,
                    grant_id: 0,
                    pool: r.pool.clone(),
                    first: 0,
                    count: 0,
                    lease_ms: 0,
                });
                self.send(from, &reply);
            } else {
                self.ack(from, seq, status::NOT_REGISTERED);
            }
            return;
        }
        // A system speaks only for itself.
        let claimed = match &body {
            Body::FlowAdd(f) => Some(f.origin),
            Body::FlowDel(f) => Some(f.origin),
            Body::Drain(d) => Some(d.target),
            Body::Leave(l) => Some(l.origin),
            _ => None,
        };
        if claimed.is_some_and(|o| o != sender) {
            self.ack(from, seq, status::BAD_REQUEST);
            return;
        }
        match body {
            Body::Register(r) => self.on_register(now, from, sender, seq, r),
            Body::ServiceAdvert(a) => {
                self.stats.adverts += 1;
                if a.origin.id != sender {
                    self.stats.rx_unexpected += 1;
                    return;
                }
                let mut news = false;
                let body = if let Some(s) = self.systems.get_mut(&sender) {
                    news = s.state != a.origin.state || s.services.is_empty();
                    s.state = a.origin.state;
                    s.services = a.services;
                    let s = s.clone();
                    Some(self.advert_of(now, &s))
                } else {
                    None
                };
                self.ack(from, seq, status::OK);
                if self.cfg.relay
                    && let Some(b) = body
                {
                    self.relay(&b);
                    if news {
                        // A new server or a state change: relay twice more, a
                        // quarter interval apart, so one lost datagram does not
                        // hide it from an intermediate system for an interval.
                        let at = now + self.cfg.advert_interval / 4;
                        self.bursts.retain(|b| b.1 != sender);
                        self.bursts.push((at, sender, 2));
                    } else if !self.bursts.iter().any(|b| b.1 == sender) {
                        // Any other advert once more, half an interval later: an
                        // intermediate system drops a server it has not heard of for
                        // the dead interval, and this makes that take twice as many
                        // lost datagrams in a row (loss^6 instead of loss^3).
                        let at = now + self.cfg.advert_interval / 2;
                        self.bursts.push((at, sender, 1));
                    }
                }
            }
            Body::Keepalive(k) => {
                if let Some(s) = self.systems.get_mut(&sender) {
                    s.state = if k.state == 1 {
                        SysState::Draining
                    } else {
                        SysState::Up
                    };
                }
                self.ack(from, seq, status::OK)
            }
            Body::FlowAdd(f)
                if self
                    .withdrawn
                    .get(&(f.origin, f.flow_id))
                    .is_some_and(|(_, del)| *del > seq) =>
            {
                // A late copy of a FlowAdd its origin has withdrawn since.
                self.ack(from, seq, status::OK);
            }
            Body::FlowAdd(f) => {
                let expires =
                    (f.lifetime_ms > 0).then(|| now + Duration::from_millis(f.lifetime_ms as u64));
                let known = self.flows.get(&(f.origin, f.flow_id));
                let same = known.is_some_and(|r| r.adv == f);
                // (A copy overtaken by a later one does not date it back.)
                let latest = known.map_or(seq, |r| r.seq.max(seq));
                if !same && !self.persist(&flow_record(&f, seq)) {
                    self.ack(from, seq, status::STORE_FAILED);
                    return;
                }
                self.flows.insert(
                    (f.origin, f.flow_id),
                    FlowRec {
                        adv: f.clone(),
                        expires,
                        seq: latest,
                    },
                );
                self.ack(from, seq, status::OK);
                if self.cfg.relay {
                    self.relay(&Body::FlowAdd(f));
                }
            }
            Body::FlowDel(f) => {
                if self.flows.contains_key(&(f.origin, f.flow_id)) {
                    if !self.persist(&Record::FlowGone {
                        origin: f.origin,
                        flow_id: f.flow_id,
                    }) {
                        self.ack(from, seq, status::STORE_FAILED);
                        return;
                    }
                    self.flows.remove(&(f.origin, f.flow_id));
                }
                self.withdrawn.insert((f.origin, f.flow_id), (now, seq));
                self.ack(from, seq, status::OK);
                if self.cfg.relay {
                    self.relay(&Body::FlowDel(f));
                }
            }
            Body::Drain(d) => {
                if let Some(s) = self.systems.get_mut(&sender) {
                    s.state = SysState::Draining;
                }
                self.ack(from, seq, status::OK);
                if self.cfg.relay {
                    self.relay(&Body::Drain(d));
                }
            }
            Body::Leave(_) => {
                if registered {
                    self.remove_system(sender, false);
                }
                self.ack(from, seq, status::OK);
            }
            Body::ServerListQuery(q) => {
                self.stats.queries += 1;
                let entries = self.server_list(&q.service);
                self.send(
                    from,
                    &Body::ServerListReply(ServerListReply {
                        in_reply_to: seq,
                        status: status::OK,
                        entries,
                    }),
                );
            }
            Body::NumberRequest(r) => self.on_number_request(now, from, sender, seq, r),
            Body::NumberRenew(r) => {
                let reply = match self.ana.renew(now, sender, seq, r.grant_id, r.lease_ms) {
                    Ok(g) => {
                        self.stats.renewals += 1;
                        grant_body(seq, &g, status::OK)
                    }
                    Err(st) => Body::NumberGrant(NumberGrant {
                        in_reply_to: seq,
                        request_id: 0,
                        status: st,
                        grant_id: r.grant_id,
                        pool: String::new(),
                        first: 0,
                        count: 0,
                        lease_ms: 0,
                    }),
                };
                self.send(from, &reply);
            }
            Body::NumberRelease(r) => {
                let st = match self.ana.grants.get(&r.grant_id) {
                    None => status::NO_SUCH_GRANT,
                    Some(g) if g.holder != sender => status::NOT_HOLDER,
                    Some(_) => {
                        if self.persist(&Record::GrantGone { id: r.grant_id }) {
                            let _ = self.ana.release(sender, r.grant_id);
                            self.stats.releases += 1;
                            status::OK
                        } else {
                            status::STORE_FAILED
                        }
                    }
                };
                self.ack(from, seq, st);
            }
            Body::MgmtRequest(m) => {
                self.stats.mgmt += 1;
                let (st, json) = self.management(now, &m);
                self.send(
                    from,
                    &Body::MgmtReply(MgmtReply {
                        in_reply_to: seq,
                        status: st,
                        json,
                    }),
                );
            }
            Body::RegisterAck(_)
            | Body::ServerListReply(_)
            | Body::NumberGrant(_)
            | Body::Ack(_)
            | Body::MgmtReply(_) => self.stats.rx_unexpected += 1,
        }
    }

    fn on_register(&mut self, now: Instant, from: SocketAddr, sender: u64, seq: u64, r: Register) {
        let prev = self.systems.get(&sender).cloned();
        let rec = SystemRec {
            id: sender,
            kind: r.kind,
            name: r.name,
            mac: r.mac,
            addrs: r.addrs,
            caps: r.capabilities,
            addr: from,
            last_heard: now,
            state: SysState::Up,
            admin_drain: prev.as_ref().is_some_and(|p| p.admin_drain),
            weight: prev.as_ref().and_then(|p| p.weight),
            services: prev
                .as_ref()
                .map(|p| p.services.clone())
                .unwrap_or_default(),
        };
        let changed = prev.as_ref().is_none_or(|p| p.record() != rec.record());
        let status = if changed && !self.persist(&rec.record()) {
            status::STORE_FAILED
        } else {
            status::OK
        };
        if status == status::OK {
            if prev.is_none() {
                self.stats.registrations += 1;
                self.events.push_back(SupEvent::Registered {
                    id: sender,
                    name: rec.name.clone(),
                });
            }
            let kind = rec.kind;
            self.systems.insert(sender, rec);
            // A (re-)registering system starts over, holding nothing it said before the
            // Register (it is restarting, or it dropped everything on NOT_REGISTERED):
            // its grants and flows from before are released and withdrawn, and its flow
            // ids may be used again. What it said after (this is a late copy of the
            // Register) stands.
            self.withdrawn
                .retain(|k, (_, del)| k.0 != sender || *del > seq);
            self.release_sent_before(sender, seq);
            let stale: Vec<(u64, u64)> = self
                .flows
                .iter()
                .filter(|(k, f)| k.0 == sender && f.seq < seq)
                .map(|(k, _)| *k)
                .collect();
            for k in stale {
                self.persist(&Record::FlowGone {
                    origin: k.0,
                    flow_id: k.1,
                });
                self.flows.remove(&k);
                if self.cfg.relay {
                    self.relay(&Body::FlowDel(FlowWithdraw {
                        origin: k.0,
                        flow_id: k.1,
                    }));
                }
            }
            if kind == SystemKind::Intermediate {
                // Bring the newcomer up to date at once.
                let snapshot: Vec<Body> = self
                    .systems
                    .values()
                    .filter(|s| s.kind == SystemKind::End)
                    .map(|s| self.advert_of(now, s))
                    .chain(self.flows.values().map(|f| Body::FlowAdd(f.adv.clone())))
                    .collect();
                for b in snapshot {
                    self.send(from, &b);
                }
            }
        }
        let ms = |d: Duration| d.as_millis().min(u32::MAX as u128) as u32;
        let ack = Body::RegisterAck(RegisterAck {
            in_reply_to: seq,
            status,
            lease_ms: ms(self.cfg.dead_interval),
            advert_interval_ms: ms(self.cfg.advert_interval),
            dead_interval_ms: ms(self.cfg.dead_interval),
        });
        self.send(from, &ack);
    }

    fn on_number_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sender: u64,
        seq: u64,
        r: NumberRequest,
    ) {
        let reply = match self
            .ana
            .grant(now, sender, seq, r.request_id, &r.pool, r.lease_ms)
        {
            Ok((g, new)) => {
                let rec = Record::Grant {
                    id: g.id,
                    pool: g.pool.clone(),
                    holder: g.holder,
                    request_id: g.request_id,
                    first: g.first,
                    count: g.count,
                    lease_ms: g.lease_ms,
                    seq: g.seq,
                };
                if new && !self.persist(&rec) {
                    let _ = self.ana.release(sender, g.id);
                    grant_err(seq, &r, status::STORE_FAILED)
                } else {
                    if new {
                        self.stats.grants += 1;
                        self.events.push_back(SupEvent::Granted {
                            holder: sender,
                            pool: g.pool.clone(),
                            first: g.first,
                            count: g.count,
                        });
                    }
                    grant_body(seq, &g, status::OK)
                }
            }
            Err(st) => grant_err(seq, &r, st),
        };
        self.send(from, &reply);
    }

    /// Releases the grants of `holder` that its Register `seq` gives up
    /// ([`Ana::sent_before`]), each persisted as gone first (if that fails it stays, to
    /// its lease's end: the safe direction).
    fn release_sent_before(&mut self, holder: u64, seq: u64) {
        for id in self.ana.sent_before(holder, seq) {
            if !self.persist(&Record::GrantGone { id }) {
                continue;
            }
            if let Ok(g) = self.ana.release(holder, id) {
                self.stats.reclaimed += 1;
                self.events.push_back(SupEvent::Reclaimed {
                    holder,
                    pool: g.pool,
                    first: g.first,
                });
            }
        }
    }

    fn remove_system(&mut self, id: u64, dead: bool) {
        let Some(s) = self.systems.get(&id).cloned() else {
            return;
        };
        // Persist first: if this fails the system comes back after a restart (and its
        // grants with it), which is the safe direction.
        for g in self
            .ana
            .grants
            .values()
            .filter(|g| g.holder == id)
            .cloned()
            .collect::<Vec<_>>()
        {
            self.persist(&Record::GrantGone { id: g.id });
        }
        self.persist(&Record::SystemGone { id });
        for g in self.ana.reclaim_holder(id) {
            self.stats.reclaimed += 1;
            self.events.push_back(SupEvent::Reclaimed {
                holder: id,
                pool: g.pool,
                first: g.first,
            });
        }
        self.systems.remove(&id);
        self.replay.forget(id);
        self.flows.retain(|k, _| k.0 != id);
        if dead {
            self.stats.deaths += 1;
            self.events.push_back(SupEvent::Dead { id, name: s.name });
        } else {
            self.stats.leaves += 1;
            self.events.push_back(SupEvent::Left { id, name: s.name });
        }
        if self.cfg.relay && s.kind == SystemKind::End {
            self.relay(&Body::Leave(Leave {
                origin: id,
                reason: if dead { 2 } else { 0 },
            }));
        }
    }

    /// Timers: dead systems, lease expiry, flow lifetimes, repeated relays.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<(Instant, u64, u8)> =
            self.bursts.iter().filter(|b| b.0 <= now).copied().collect();
        self.bursts.retain(|b| b.0 > now);
        for (_, id, left) in due {
            if let Some(s) = self.systems.get(&id).cloned() {
                let b = self.advert_of(now, &s);
                self.relay(&b);
                if left > 1 {
                    self.bursts
                        .push((now + self.cfg.advert_interval / 4, id, left - 1));
                }
            }
        }
        let dead: Vec<u64> = self
            .systems
            .values()
            .filter(|s| s.last_heard + self.cfg.dead_interval <= now)
            .map(|s| s.id)
            .collect();
        for id in dead {
            self.remove_system(id, true);
        }
        let expiring: Vec<u64> = self
            .ana
            .grants
            .values()
            .filter(|g| g.expires <= now)
            .map(|g| g.id)
            .collect();
        for id in &expiring {
            self.persist(&Record::GrantGone { id: *id });
        }
        for _ in self.ana.expire(now) {
            self.stats.expired += 1;
        }
        self.flows.retain(|_, f| f.expires.is_none_or(|e| e > now));
        let keep = self.cfg.dead_interval;
        self.withdrawn.retain(|_, (t, _)| *t + keep > now);
        // Relay mode: every live flow again, twice an interval. A listener drops a flow not
        // heard of for the dead interval, so a lost or reordered FlowAdd or FlowDel (or
        // one sent before a listener restarted) is mended within that time, and a live
        // flow is dropped only when about six repeats in a row are lost (as for adverts).
        if self.cfg.relay && now >= self.next_flow_refresh {
            self.next_flow_refresh = now + self.cfg.advert_interval / 2;
            let flows: Vec<Body> = self
                .flows
                .values()
                .map(|f| Body::FlowAdd(f.adv.clone()))
                .collect();
            for b in flows {
                self.relay(&b);
            }
        }
    }

    /// The earliest instant at which `handle_timeout` has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let a = self
            .systems
            .values()
            .map(|s| s.last_heard + self.cfg.dead_interval)
            .min();
        let b = self.ana.next_deadline();
        let c = self.flows.values().filter_map(|f| f.expires).min();
        let d = self.bursts.iter().map(|b| b.0).min();
        let e = (self.cfg.relay && !self.flows.is_empty()).then_some(self.next_flow_refresh);
        [a, b, c, d, e].into_iter().flatten().min()
    }

    fn server_list(&self, service: &str) -> Vec<ServerEntry> {
        let mut v = Vec::new();
        for s in self.systems.values() {
            for svc in s.eff_services() {
                if service.is_empty() || svc.name == service {
                    v.push(ServerEntry {
                        system: s.id,
                        name: s.name.clone(),
                        mac: s.mac,
                        addrs: s.addrs.clone(),
                        state: s.eff_state(),
                        service: svc.name.clone(),
                        vip: svc.vip,
                        proto: svc.proto,
                        weight: svc.weight,
                        load: svc.load,
                        congestion: svc.congestion,
                        response_time_us: svc.response_time_us,
                    });
                }
            }
        }
        v
    }

    fn by_name(&self, name: &str) -> Option<u64> {
        self.systems.values().find(|s| s.name == name).map(|s| s.id)
    }

    /// Answers a management request: (status, JSON text).
    pub fn management(&mut self, now: Instant, m: &MgmtRequest) -> (u8, String) {
        use serde_json::{Value, json};
        let name_of = |sys: &BTreeMap<u64, SystemRec>, id: u64| {
            sys.get(&id)
                .map(|s| s.name.clone())
                .unwrap_or_else(|| format!("{id:016x}"))
        };
        let v: Value = match m.op {
            op::SYSTEMS => Value::Array(
                self.systems
                    .values()
                    .map(|s| {
                        json!({
                            "name": s.name,
                            "id": format!("{:016x}", s.id),
                            "kind": s.kind.as_str(),
                            "state": s.eff_state().as_str(),
                            "mac": fmt_mac(&s.mac),
                            "addrs": s.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                            "addr": s.addr.to_string(),
                            "services": s.services.len(),
                            "weight": s.weight,
                            "last_heard_ms_ago": now.saturating_duration_since(s.last_heard).as_millis() as u64,
                        })
                    })
                    .collect(),
            ),
            op::SERVICES => Value::Array(
                self.systems
                    .values()
                    .flat_map(|s| {
                        s.eff_services().into_iter().map(move |svc| {
                            json!({
                                "name": svc.name,
                                "system": s.name,
                                "state": s.eff_state().as_str(),
                                "vip": svc.vip.to_string(),
                                "proto": svc.proto,
                                "ports": svc.ports,
                                "capacity": svc.capacity,
                                "weight": svc.weight,
                                "load": svc.load,
                                "congestion": svc.congestion,
                                "response_time_us": svc.response_time_us,
                            })
                        })
                    })
                    .collect(),
            ),
            op::FLOWS => Value::Array(
                self.flows
                    .values()
                    .map(|f| {
                        let a = &f.adv;
                        json!({
                            "name": format!("{}/{}", name_of(&self.systems, a.origin), a.flow_id),
                            "origin": name_of(&self.systems, a.origin),
                            "flow_id": a.flow_id,
                            "target": name_of(&self.systems, a.target),
                            "exact": a.matcher.is_exact(),
                            "match": a.matcher,
                            "qos": a.qos,
                            "lifetime_ms": a.lifetime_ms,
                            "state": "active",
                        })
                    })
                    .collect(),
            ),
            op::NUMBERS => Value::Array(
                self.ana
                    .grants
                    .values()
                    .map(|g| {
                        let is_prefix = self
                            .ana
                            .pools
                            .iter()
                            .any(|p| p.name == g.pool && p.is_prefix);
                        let last = g.first + g.count as u64 - 1;
                        json!({
                            "name": format!("{}/{}", g.pool, g.id),
                            "pool": g.pool,
                            "grant_id": g.id,
                            "holder": name_of(&self.systems, g.holder),
                            "first": if is_prefix { json!(std::net::Ipv4Addr::from(g.first as u32).to_string()) } else { json!(g.first) },
                            "last": if is_prefix { json!(std::net::Ipv4Addr::from(last as u32).to_string()) } else { json!(last) },
                            "count": g.count,
                            "lease_ms": g.lease_ms,
                            "expires_in_ms": g.expires.saturating_duration_since(now).as_millis() as u64,
                            "state": "granted",
                        })
                    })
                    .collect(),
            ),
            op::DRAIN => {
                let Some(id) = self.by_name(&m.arg) else {
                    return (status::NOT_FOUND, json!({"error": "no such system"}).to_string());
                };
                let timeout = if m.value > 0 {
                    m.value
                } else {
                    self.cfg.drain_timeout.as_millis().min(u32::MAX as u128) as u32
                };
                let (addr, advert) = match self.systems.get_mut(&id) {
                    Some(s) => {
                        s.admin_drain = true;
                        let s = s.clone();
                        (s.addr, self.advert_of(now, &s))
                    }
                    None => return (status::NOT_FOUND, "{}".into()),
                };
                self.send(
                    addr,
                    &Body::Drain(Drain {
                        target: id,
                        timeout_ms: timeout,
                    }),
                );
                if self.cfg.relay {
                    self.relay(&advert);
                }
                json!([{"name": m.arg, "state": "draining"}])
            }
            op::WEIGHT => {
                let Some(id) = self.by_name(&m.arg) else {
                    return (status::NOT_FOUND, json!({"error": "no such system"}).to_string());
                };
                // u32::MAX clears the override: the system's own weights apply again.
                let weight = (m.value != WEIGHT_CLEAR).then_some(m.value);
                let advert = match self.systems.get_mut(&id) {
                    Some(s) => {
                        s.weight = weight;
                        let s = s.clone();
                        self.advert_of(now, &s)
                    }
                    None => return (status::NOT_FOUND, "{}".into()),
                };
                if self.cfg.relay {
                    self.relay(&advert);
                }
                json!([{"name": m.arg, "weight": weight, "state": "ok"}])
            }
            op::STATS => {
                let mut v = match serde_json::to_value(&self.stats) {
                    Ok(Value::Object(o)) => o
                        .into_iter()
                        .map(|(k, v)| json!({"name": k, "value": v}))
                        .collect::<Vec<_>>(),
                    _ => Vec::new(),
                };
                v.push(json!({"name": "systems", "value": self.systems.len()}));
                v.push(json!({"name": "grants_held", "value": self.ana.grants.len()}));
                v.push(json!({"name": "flows", "value": self.flows.len()}));
                for p in &self.ana.pools {
                    let (total, free) = p.usage();
                    v.push(json!({"name": format!("pool.{}.free_blocks", p.name), "value": free, "total": total}));
                }
                Value::Array(v)
            }
            _ => return (status::BAD_REQUEST, json!({"error": "unknown op"}).to_string()),
        };
        (status::OK, v.to_string())
    }
}

/// The record of flow `f` advertised by the message `seq`.
fn flow_record(f: &FlowAdvert, seq: u64) -> Record {
    let mut b = Vec::new();
    Body::FlowAdd(f.clone()).encode(&mut b);
    Record::Flow {
        origin: f.origin,
        flow_id: f.flow_id,
        body: hex::encode(b),
        seq: Some(seq),
    }
}

fn grant_body(seq: u64, g: &Grant, st: u8) -> Body {
    Body::NumberGrant(NumberGrant {
        in_reply_to: seq,
        request_id: g.request_id,
        status: st,
        grant_id: g.id,
        pool: g.pool.clone(),
        first: g.first,
        count: g.count,
        lease_ms: g.lease_ms,
    })
}

fn grant_err(seq: u64, r: &NumberRequest, st: u8) -> Body {
    Body::NumberGrant(NumberGrant {
        in_reply_to: seq,
        request_id: r.request_id,
        status: st,
        grant_id: 0,
        pool: r.pool.clone(),
        first: 0,
        count: 0,
        lease_ms: 0,
    })
}

/// "02:00:00:00:00:01".
pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
