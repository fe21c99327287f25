//! The client half shared by the agent and the intermediate system's listener:
//! registration (retried until acknowledged, redone when the supervisor says
//! NOT_REGISTERED), reliable requests (retransmitted with fresh sequence numbers until
//! answered), acknowledged keepalives/advertisements, and held number grants with
//! renewal at half-lease.
//!
//! Safety rule for numbers (PROTOCOL.md §6.4): a grant is used only until
//! `min(sent + lease, last_acked + dead_interval)`, where `sent` is when the request or
//! renewal that the supervisor answered was *sent* and `last_acked` is the send time of
//! the latest message the supervisor answered. Both bounds end no later than the
//! supervisor's own (it measures from *receipt*), so a number the supervisor reclaims
//! has already been given up by its holder. A grant given up that way while still
//! registered is released (the supervisor may not have reclaimed it: it may hear us
//! when we no longer hear it), so that it is not held beside the next one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Transmit;
use super::proto::*;
use super::supervisor::Stats;

/// What a reliable request is, so its reply can be matched across retransmissions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReqKey {
    Register,
    Number(u64),
    Renew(u64),
    Release(u64),
    FlowAdd(u64),
    FlowDel(u64),
    Drain,
    Leave,
    /// The latest advertisement (re-sent until acknowledged or replaced).
    Advert,
}

#[derive(Clone, Debug)]
struct Pending {
    body: Body,
    next: Instant,
    tries: u32,
}

/// A grant this system holds.
#[derive(Clone, Debug, PartialEq)]
pub struct HeldGrant {
    pub grant_id: u64,
    pub pool: String,
    pub first: u64,
    pub count: u32,
    pub lease_ms: u32,
    /// Send time of the request/renewal the supervisor answered.
    pub valid_from: Instant,
}

impl HeldGrant {
    /// The last number of the block (`first` for an empty grant, which the ANA never
    /// hands out).
    pub fn last(&self) -> u64 {
        self.first + u64::from(self.count.max(1)) - 1
    }
}

/// Session-level happenings, for the wrapper to turn into its own events.
#[derive(Clone, Debug, PartialEq)]
pub enum SessEvent {
    Registered,
    Unregistered,
    Granted(HeldGrant),
    Lost(HeldGrant),
    Refused { pool: String, status: u8 },
    Acked(ReqKey, u8),
    Failed(ReqKey),
}

/// Most transmissions of one request before it is given up (Register: never).
pub const MAX_TRIES: u32 = 30;

pub struct Session {
    pub id: u64,
    key: Key,
    seq: SeqGen,
    replay: ReplayGuard,
    pub supervisor: SocketAddr,
    pub register: Register,
    pub registered: bool,
    /// When the Register the supervisor acknowledged (the current registration) was
    /// sent: a NOT_REGISTERED answering a message sent before it is stale.
    registered_sent: Option<Instant>,
    /// Sender id of the supervisor, learnt from its RegisterAck.
    pub supervisor_id: Option<u64>,
    pub advert_interval: Duration,
    pub dead_interval: Duration,
    pending: BTreeMap<ReqKey, Pending>,
    sent: HashMap<u64, (Option<ReqKey>, Instant)>,
    pub last_acked: Option<Instant>,
    pub grants: BTreeMap<u64, HeldGrant>,
    renewing: HashMap<u64, Instant>,
    /// Pools of which this system wants to hold one grant each.
    pub wanted: Vec<String>,
    requested: HashMap<String, u64>,
    next_req: u64,
    retry_after: HashMap<String, Instant>,
    out: VecDeque<Transmit>,
    pub events: VecDeque<SessEvent>,
    pub stats: Stats,
}

impl Session {
    pub fn new(
        key: Key,
        seq: SeqGen,
        supervisor: SocketAddr,
        register: Register,
        advert_interval: Duration,
        dead_interval: Duration,
    ) -> Session {
        Session {
            id: system_id(&register.name),
            key,
            seq,
            replay: ReplayGuard::new(256),
            supervisor,
            register,
            registered: false,
            registered_sent: None,
            supervisor_id: None,
            advert_interval,
            dead_interval,
            pending: BTreeMap::new(),
            sent: HashMap::new(),
            last_acked: None,
            grants: BTreeMap::new(),
            renewing: HashMap::new(),
            wanted: Vec::new(),
            requested: HashMap::new(),
            next_req: 1,
            retry_after: HashMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    fn retry(&self) -> Duration {
        (self.advert_interval / 4).max(Duration::from_millis(20))
    }

    /// Starts (or restarts) registration.
    pub fn start(&mut self, now: Instant) {
        let body = Body::Register(self.register.clone());
        self.request(now, ReqKey::Register, body);
    }

    /// Sends `body` to `dst` once, unreliably. Returns its sequence number.
    pub fn send_to(&mut self, dst: SocketAddr, body: &Body) -> u64 {
        let seq = self.seq.next_seq();
        let payload = self.key.seal(self.id, seq, body);
        self.stats.tx += 1;
        self.out.push_back(Transmit { dst, payload });
        seq
    }

    /// Sends a periodic message (advertisement, keepalive) to the supervisor; its
    /// acknowledgement refreshes `last_acked`.
    pub fn send_periodic(&mut self, now: Instant, body: &Body) {
        let seq = self.send_to(self.supervisor, body);
        self.sent.insert(seq, (None, now));
    }

    /// Sends a request reliably (retransmitted until answered).
    pub fn request(&mut self, now: Instant, key: ReqKey, body: Body) {
        let seq = self.send_to(self.supervisor, &body);
        self.sent.insert(seq, (Some(key.clone()), now));
        self.pending.insert(
            key,
            Pending {
                body,
                next: now + self.retry(),
                tries: 1,
            },
        );
    }

    pub fn cancel(&mut self, key: &ReqKey) {
        self.pending.remove(key);
    }

    pub fn is_pending(&self, key: &ReqKey) -> bool {
        self.pending.contains_key(key)
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Grants usable until this instant.
    pub fn valid_until(&self, g: &HeldGrant) -> Instant {
        let by_lease = g.valid_from + Duration::from_millis(g.lease_ms as u64);
        match self.last_acked {
            Some(t) => by_lease.min(t + self.dead_interval),
            None => g.valid_from,
        }
    }

    fn unregister(&mut self) {
        if self.registered {
            self.events.push_back(SessEvent::Unregistered);
        }
        self.registered = false;
        self.last_acked = None;
        let lost: Vec<HeldGrant> = std::mem::take(&mut self.grants).into_values().collect();
        for g in lost {
            self.events.push_back(SessEvent::Lost(g));
        }
        self.renewing.clear();
        self.requested.clear();
        self.pending
            .retain(|k, _| !matches!(k, ReqKey::Number(_) | ReqKey::Renew(_)));
    }

    /// Authenticates a datagram; consumes replies addressed to the session and returns
    /// anything else for the wrapper.
    pub fn handle(&mut self, now: Instant, data: &[u8]) -> Option<Message> {
        let msg = match self.key.open(data) {
            Ok(m) => m,
            Err(e) => {
                self.stats.count_error(e);
                return None;
            }
        };
        if msg.sender == self.id {
            // Our own multicast looped back.
            return None;
        }
        if let Err(e) = self.replay.check(msg.sender, msg.seq) {
            self.stats.count_error(e);
            return None;
        }
        self.stats.rx_ok += 1;
        let reply_to = match &msg.body {
            Body::RegisterAck(a) => Some(a.in_reply_to),
            Body::Ack(a) => Some(a.in_reply_to),
            Body::NumberGrant(g) => Some(g.in_reply_to),
            _ => None,
        };
        let Some(rt) = reply_to else {
            return Some(msg);
        };
        let Some((key, sent_at)) = self.sent.remove(&rt) else {
            self.stats.rx_unexpected += 1;
            return None;
        };
        let status = match &msg.body {
            Body::RegisterAck(a) => a.status,
            Body::Ack(a) => a.status,
            Body::NumberGrant(g) => g.status,
            _ => status::OK,
        };
        if status == status::NOT_REGISTERED {
            // The answer to a message the supervisor got before our registration
            // (reordered, or retransmitted across it): the registration stands. Taking
            // it would drop grants the supervisor still holds for us and ask for new
            // ones beside them.
            if self.registered && self.registered_sent.is_some_and(|t| sent_at < t) {
                return None;
            }
            self.unregister();
            if !self.pending.contains_key(&ReqKey::Register) {
                self.start(now);
            }
            return None;
        }
        if self.registered || matches!(msg.body, Body::RegisterAck(_)) {
            self.last_acked = Some(self.last_acked.map_or(sent_at, |t| t.max(sent_at)));
        }
        if let Some(k) = &key
            && self.pending.remove(k).is_none()
        {
            // A grant for a request given up (its pool's wish was dropped when the
            // supervisor said NOT_REGISTERED, say): the supervisor holds the block for
            // us, and we would ask for another. Give it back.
            if let (Body::NumberGrant(g), ReqKey::Number(_)) = (&msg.body, k)
                && g.status == status::OK
                && self.registered
                && !self.grants.contains_key(&g.grant_id)
            {
                let id = g.grant_id;
                self.release(now, id);
            }
            return None;
        }
        let sender = msg.sender;
        match (msg.body, key) {
            (Body::RegisterAck(a), Some(ReqKey::Register)) => {
                if a.status == status::OK {
                    self.registered = true;
                    self.registered_sent = Some(sent_at);
                    self.supervisor_id = Some(sender);
                    if a.advert_interval_ms > 0 {
                        self.advert_interval = Duration::from_millis(a.advert_interval_ms as u64);
                    }
                    if a.dead_interval_ms > 0 {
                        self.dead_interval = Duration::from_millis(a.dead_interval_ms as u64);
                    }
                    self.events.push_back(SessEvent::Registered);
                    self.want_numbers(now);
                } else {
                    self.request(now, ReqKey::Register, Body::Register(self.register.clone()));
                }
            }
            (Body::NumberGrant(g), Some(ReqKey::Number(rid))) => {
                self.requested.retain(|_, r| *r != rid);
                if g.status == status::OK {
                    let h = HeldGrant {
                        grant_id: g.grant_id,
                        pool: g.pool,
                        first: g.first,
                        count: g.count,
                        lease_ms: g.lease_ms,
                        valid_from: sent_at,
                    };
                    self.grants.insert(h.grant_id, h.clone());
                    self.events.push_back(SessEvent::Granted(h));
                } else {
                    self.retry_after
                        .insert(g.pool.clone(), now + self.advert_interval);
                    self.events.push_back(SessEvent::Refused {
                        pool: g.pool,
                        status: g.status,
                    });
                }
            }
            (Body::NumberGrant(g), Some(ReqKey::Renew(gid))) => {
                self.renewing.remove(&gid);
                if g.status == status::OK {
                    if let Some(h) = self.grants.get_mut(&gid) {
                        h.valid_from = h.valid_from.max(sent_at);
                        h.lease_ms = g.lease_ms;
                    }
                } else if let Some(h) = self.grants.remove(&gid) {
                    self.events.push_back(SessEvent::Lost(h));
                }
            }
            (Body::Ack(a), Some(k)) => self.events.push_back(SessEvent::Acked(k, a.status)),
            _ => {}
        }
        None
    }

    /// Requests a grant from each wanted pool not held or pending.
    pub fn want_numbers(&mut self, now: Instant) {
        if !self.registered {
            return;
        }
        for pool in self.wanted.clone() {
            let held = self.grants.values().any(|g| g.pool == pool);
            let asked = self.requested.contains_key(&pool);
            let backoff = self.retry_after.get(&pool).is_some_and(|t| *t > now);
            if !backoff {
                self.retry_after.remove(&pool);
            }
            if !held && !asked && !backoff {
                let rid = self.next_req;
                self.next_req += 1;
                self.requested.insert(pool.clone(), rid);
                self.request(
                    now,
                    ReqKey::Number(rid),
                    Body::NumberRequest(NumberRequest {
                        request_id: rid,
                        pool,
                        lease_ms: 0,
                    }),
                );
            }
        }
    }

    /// Releases every held grant (best effort, reliable).
    pub fn release_all(&mut self, now: Instant) {
        self.wanted.clear();
        let ids: Vec<u64> = self.grants.keys().copied().collect();
        for id in ids {
            if let Some(g) = self.grants.remove(&id) {
                self.events.push_back(SessEvent::Lost(g));
            }
            self.release(now, id);
        }
    }

    /// Gives grant `id` back (reliable; NO_SUCH_GRANT if the supervisor has it no more).
    fn release(&mut self, now: Instant, id: u64) {
        self.request(
            now,
            ReqKey::Release(id),
            Body::NumberRelease(NumberRelease { grant_id: id }),
        );
    }

    /// Retransmissions, renewals and grant expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        let retry = self.retry();
        let mut resend = Vec::new();
        let mut failed = Vec::new();
        for (k, p) in self.pending.iter_mut() {
            if p.next <= now {
                if p.tries >= MAX_TRIES && *k != ReqKey::Register {
                    failed.push(k.clone());
                } else {
                    p.tries += 1;
                    let backoff = retry * p.tries.min(4);
                    p.next = now + backoff;
                    resend.push((k.clone(), p.body.clone()));
                }
            }
        }
        for k in failed {
            self.pending.remove(&k);
            if let ReqKey::Number(rid) = k {
                self.requested.retain(|_, r| *r != rid);
            }
            if let ReqKey::Renew(g) = k {
                self.renewing.remove(&g);
            }
            self.events.push_back(SessEvent::Failed(k));
        }
        for (k, body) in resend {
            let seq = self.send_to(self.supervisor, &body);
            self.sent.insert(seq, (Some(k), now));
        }
        // Grants: lose the expired, renew at half-life.
        let mut lost = Vec::new();
        let mut renew = Vec::new();
        for g in self.grants.values() {
            if self.valid_until(g) <= now {
                lost.push(g.grant_id);
            } else if g.valid_from + Duration::from_millis(g.lease_ms as u64 / 2) <= now
                && !self.renewing.contains_key(&g.grant_id)
            {
                renew.push(g.grant_id);
            }
        }
        for id in lost {
            self.renewing.remove(&id);
            self.pending.remove(&ReqKey::Renew(id));
            if let Some(g) = self.grants.remove(&id) {
                self.events.push_back(SessEvent::Lost(g));
                // The supervisor may still hold it for us (we stopped hearing it, it
                // did not stop hearing us): give it back, or the block stays taken until
                // its lease runs out, beside the one `want_numbers` asks for next.
                if self.registered {
                    self.release(now, id);
                }
            }
        }
        for id in renew {
            self.renewing.insert(id, now);
            self.request(
                now,
                ReqKey::Renew(id),
                Body::NumberRenew(NumberRenew {
                    grant_id: id,
                    lease_ms: 0,
                }),
            );
        }
        self.want_numbers(now);
        // Forget send records no reply can usefully match any more.
        let horizon = self.dead_interval * 2;
        self.sent
            .retain(|_, (_, t)| now.saturating_duration_since(*t) < horizon);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let p = self.pending.values().map(|p| p.next).min();
        let g = self
            .grants
            .values()
            .map(|g| {
                let half = g.valid_from + Duration::from_millis(g.lease_ms as u64 / 2);
                if self.renewing.contains_key(&g.grant_id) {
                    self.valid_until(g)
                } else {
                    half.min(self.valid_until(g))
                }
            })
            .min();
        let w = if self.registered {
            self.wanted
                .iter()
                .filter_map(|p| self.retry_after.get(p).copied())
                .min()
        } else {
            None
        };
        [p, g, w].into_iter().flatten().min()
    }
}
