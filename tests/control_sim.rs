//! Simulation of the control plane: one supervisor, several agents and listeners on a
//! fake network with loss, duplication, reordering (random delay), partitions, restarts
//! (supervisor rebuilt from its store; agents and listeners rebuilt from scratch) and
//! clock jumps, all from a seed and a fake clock (quinn-proto's `Pair`, grown to N).
//!
//! Checked at every step:
//! - no number is usable by two systems at once (each agent's *own* view of its valid
//!   grants, see PROTOCOL.md §6.4), and the supervisor never holds overlapping grants;
//! - every live, connected, registered end system is known to every registered
//!   listener within two advertisement intervals of its registration; without loss it
//!   stays known, and with loss it is never missing for more than two intervals beyond
//!   that (a listener drops a server whose relays of a whole dead interval were lost,
//!   and has it again with the next relay that arrives);
//! - a killed or cut-off system is gone from the supervisor and every listener within
//!   the dead interval (plus network delay) of its last datagram, and not before (when
//!   the supervisor listed it as it went).
//!
//! And after the quiet spell that ends the routed-numbers scenario: the supervisor holds
//! exactly the blocks the agents hold (none kept for a holder that gave it up).
//!
//! Each test runs a few fixed seeds; `SIM_SEEDS=1-200 cargo test --release --test
//! control_sim` runs others (the scenario tests passed seeds 1–200 when this was
//! written).

use flowgate::control::agent::FlowSpec;
use flowgate::control::agent::{Agent, AgentConfig, NumberRoute};
use flowgate::control::ana::PoolConf;
use flowgate::control::driver::Endpoint;
use flowgate::control::listener::{Listener, ListenerConfig, TableEvent};
use flowgate::control::proto::{FlowMatch, Qos, SysState};
use flowgate::control::proto::{Key, SeqGen, Service, system_id};
use flowgate::control::store::MemStore;
use flowgate::control::supervisor::{Supervisor, SupervisorConfig};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const I: Duration = Duration::from_millis(1000);
const DEAD: Duration = Duration::from_millis(3500);

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Clone, Copy)]
struct Faults {
    loss: f64,
    dup: f64,
    /// Base one-way delay and extra random delay (reordering).
    delay: Duration,
    jitter: Duration,
    /// Assert the convergence bound (not promised under heavy loss).
    strict: bool,
    /// Advertisements by multicast (supervisor does not relay) instead of relay.
    multicast: bool,
    /// Agents route their `nat` blocks (UDP to [`ROUTE_DST`], the block's ports).
    route_numbers: bool,
}

/// The shared address the agents' `nat` blocks are routed for.
const ROUTE_DST: &str = "10.9.9.1";

fn group() -> SocketAddr {
    "239.255.70.71:7701".parse().unwrap()
}

enum Kind {
    Sup(Box<Supervisor>),
    Agent(Box<Agent>),
    Listener(Box<Listener>),
}

struct Node {
    name: String,
    addr: SocketAddr,
    kind: Option<Kind>,
    /// Cut off from the network until this instant.
    cut_until: Option<Instant>,
    /// Hears nothing until this instant (what it sends still goes out): a one-way loss,
    /// or a process too busy to read its socket.
    deaf_until: Option<Instant>,
    /// Last instant this node was alive and connected (for the death check).
    gone_since: Option<Instant>,
    /// When the supervisor started listing it (end systems).
    listed_since: Option<Instant>,
    /// Whether the supervisor listed it at `gone_since`: one that was not (it went while
    /// still registering again after a partition, say) may be missing there at once.
    listed_when_gone: bool,
    /// Disturbed (restart, partition end, clock jump) at this time.
    disturbed: Instant,
}

impl Node {
    fn ep(&mut self) -> Option<&mut dyn Endpoint> {
        match self.kind.as_mut()? {
            Kind::Sup(s) => Some(s.as_mut()),
            Kind::Agent(a) => Some(a.as_mut()),
            Kind::Listener(l) => Some(l.as_mut()),
        }
    }
    fn alive(&self, now: Instant) -> bool {
        self.kind.is_some() && self.cut_until.is_none_or(|t| t <= now)
    }
}

/// (arrival, order, destination node, source, payload).
type InFlight = (Instant, u64, usize, SocketAddr, Vec<u8>);

struct Sim {
    rng: Rng,
    f: Faults,
    key: Key,
    now: Instant,
    start: Instant,
    seq_base: u64,
    store: MemStore,
    nodes: Vec<Node>,
    queue: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    last_jump: Instant,
    sup_restarted: Instant,
    checks: Checks,
    stuck: u32,
    /// Every table event any listener emitted: (listener name, event).
    table: Vec<(String, TableEvent)>,
    /// (end system, listener) → when the listener last had it (convergence check).
    seen: std::collections::HashMap<(String, String), Instant>,
}

#[derive(Default, Debug)]
struct Checks {
    convergence: u64,
    deaths: u64,
    grant_pairs: u64,
    /// Times a block went from one agent to another.
    handovers: u64,
    /// Times a listener lost a live end system it had (its relays all lost for a dead
    /// interval).
    gaps: u64,
    owner: std::collections::HashMap<u64, String>,
}

fn sup_addr() -> SocketAddr {
    "10.0.0.1:7700".parse().unwrap()
}

fn sup_cfg(multicast: bool) -> SupervisorConfig {
    SupervisorConfig {
        name: "sup".into(),
        advert_interval: I,
        dead_interval: DEAD,
        relay: !multicast,
        drain_timeout: Duration::from_secs(5),
        pools: vec![PoolConf {
            name: "nat".into(),
            first: Some(0),
            last: Some(499),
            prefix: None,
            block: 100,
            // Much longer than the dead interval: a holder relying on the lease alone
            // would keep using a block reclaimed from it (the sim catches that).
            lease_ms: 20_000,
        }],
    }
}

impl Sim {
    fn new(seed: u64, f: Faults, agents: usize, listeners: usize) -> Sim {
        let now = Instant::now();
        let mut s = Sim {
            rng: Rng(seed.max(1)),
            f,
            key: Key::new(&[0x42; 32]).unwrap(),
            now,
            start: now,
            seq_base: 1_000_000_000,
            store: MemStore::default(),
            nodes: Vec::new(),
            queue: BinaryHeap::new(),
            order: 0,
            last_jump: now,
            sup_restarted: now,
            checks: Checks::default(),
            stuck: 0,
            table: Vec::new(),
            seen: std::collections::HashMap::new(),
        };
        let sup = s.make_sup(Vec::new());
        s.nodes.push(Node {
            name: "sup".into(),
            addr: sup_addr(),
            kind: Some(Kind::Sup(Box::new(sup))),
            cut_until: None,
            deaf_until: None,
            gone_since: None,
            listed_since: None,
            listed_when_gone: false,
            disturbed: now,
        });
        for i in 0..agents {
            let name = format!("agent{i}");
            let addr = format!("10.0.1.{}:9000", i + 1).parse().unwrap();
            let a = s.make_agent(&name, addr);
            s.push(name, addr, Kind::Agent(Box::new(a)));
        }
        for i in 0..listeners {
            let name = format!("lb{i}");
            let addr = format!("10.0.2.{}:9000", i + 1).parse().unwrap();
            let l = s.make_listener(&name, addr);
            s.push(name, addr, Kind::Listener(Box::new(l)));
        }
        s
    }

    fn push(&mut self, name: String, addr: SocketAddr, kind: Kind) {
        self.nodes.push(Node {
            name,
            addr,
            kind: Some(kind),
            cut_until: None,
            deaf_until: None,
            gone_since: None,
            listed_since: None,
            listed_when_gone: false,
            disturbed: self.now,
        });
    }

    fn seq(&mut self) -> SeqGen {
        self.seq_base += 1_000_000_000;
        SeqGen::new(self.seq_base)
    }

    fn make_sup(&mut self, records: Vec<flowgate::control::store::Record>) -> Supervisor {
        let seq = self.seq();
        Supervisor::restore(
            sup_cfg(self.f.multicast),
            self.key.clone(),
            seq,
            self.now,
            records,
            Box::new(self.store.clone()),
        )
        .unwrap()
    }

    fn make_agent(&mut self, name: &str, _addr: SocketAddr) -> Agent {
        let seq = self.seq();
        Agent::new(
            AgentConfig {
                name: name.into(),
                mac: [2, 0, 0, 0, 0, 1],
                addrs: vec!["192.0.2.1".parse().unwrap()],
                capabilities: 3,
                supervisor: sup_addr(),
                group: self.f.multicast.then(group),
                advert_interval: I,
                dead_interval: DEAD,
                services: vec![Service {
                    name: "web".into(),
                    vip: "10.9.9.9".parse().unwrap(),
                    proto: 6,
                    ports: vec![(80, 80)],
                    capacity: 100,
                    weight: 1,
                    load: 0,
                    congestion: 0,
                    response_time_us: 0,
                }],
                pools: vec!["nat".into()],
                routes: if self.f.route_numbers {
                    vec![NumberRoute {
                        pool: "nat".into(),
                        dst: ROUTE_DST.parse().unwrap(),
                        // The block as UDP ports and as ESP SPIs (FlowAdd's extension).
                        protos: vec![17, 50],
                    }]
                } else {
                    vec![]
                },
                drain_timeout: Duration::from_secs(3),
            },
            self.key.clone(),
            seq,
            self.now,
        )
    }

    fn make_listener(&mut self, name: &str, _addr: SocketAddr) -> Listener {
        let seq = self.seq();
        Listener::new(
            ListenerConfig {
                name: name.into(),
                mac: [2, 0, 0, 0, 1, 1],
                addrs: vec![],
                capabilities: 0,
                supervisor: sup_addr(),
                advert_interval: I,
                dead_interval: DEAD,
                pools: vec![],
            },
            self.key.clone(),
            seq,
            self.now,
        )
    }

    fn idx(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    fn send(&mut self, from: usize, dst: SocketAddr, payload: Vec<u8>) {
        if !self.nodes[from].alive(self.now) {
            return;
        }
        if dst != group() && self.rng.chance(self.f.loss) {
            return;
        }
        if dst == group() {
            // The segment delivers a multicast datagram to every member, each copy
            // lost, duplicated and delayed on its own.
            let members: Vec<SocketAddr> = self
                .nodes
                .iter()
                .filter(|n| n.name.starts_with("lb") || n.name == "sup")
                .map(|n| n.addr)
                .collect();
            for m in members {
                self.send(from, m, payload.clone());
            }
            return;
        }
        let copies = if self.rng.chance(self.f.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let extra = self.rng.below(self.f.jitter.as_micros() as u64 + 1);
            let at = self.now + self.f.delay + Duration::from_micros(extra);
            self.order += 1;
            let src = self.nodes[from].addr;
            let di = self.idx(dst).unwrap_or(usize::MAX);
            self.queue
                .push(Reverse((at, self.order, di, src, payload.clone())));
        }
    }

    fn flush(&mut self, i: usize) {
        let now = self.now;
        loop {
            let t = match self.nodes[i].ep() {
                Some(ep) => ep.poll_transmit(now),
                None => None,
            };
            let Some(t) = t else { break };
            self.send(i, t.dst, t.payload);
        }
    }

    /// Advances to the next event (or by at most `max`), processing it.
    fn step(&mut self, max: Duration) {
        let mut next = self.now + max;
        if let Some(Reverse((t, ..))) = self.queue.peek() {
            next = next.min(*t);
        }
        for n in self.nodes.iter_mut() {
            if let Some(t) = n.ep().and_then(|e| e.poll_timeout()) {
                next = next.min(t.max(self.now));
            }
        }
        // A deadline that stays in the past after handle_timeout would spin a real
        // driver at 100% CPU: treat many steps without progress as a bug.
        if next == self.now {
            self.stuck += 1;
            assert!(self.stuck < 10_000, "livelock: a deadline never moves on");
        } else {
            self.stuck = 0;
        }
        self.now = next;
        while let Some(Reverse((t, ..))) = self.queue.peek() {
            if *t > self.now {
                break;
            }
            let Some(Reverse((_, _, di, src, p))) = self.queue.pop() else {
                break;
            };
            let deaf = di != usize::MAX && self.nodes[di].deaf_until.is_some_and(|t| t > self.now);
            if di == usize::MAX || deaf || !self.nodes[di].alive(self.now) {
                continue;
            }
            let now = self.now;
            if let Some(ep) = self.nodes[di].ep() {
                ep.handle(now, src, &p);
            }
            self.flush(di);
        }
        for i in 0..self.nodes.len() {
            let now = self.now;
            if let Some(ep) = self.nodes[i].ep()
                && ep.poll_timeout().is_some_and(|t| t <= now)
            {
                ep.handle_timeout(now);
            }
            self.flush(i);
            // Drain events (not inspected: state is checked directly).
            let node = &mut self.nodes[i];
            match node.kind.as_mut() {
                Some(Kind::Sup(s)) => while s.poll_event().is_some() {},
                Some(Kind::Agent(a)) => while a.poll_event().is_some() {},
                Some(Kind::Listener(l)) => {
                    let name = &node.name;
                    while let Some(e) = l.poll_event() {
                        self.table.push((name.clone(), e));
                    }
                }
                None => {}
            }
        }
        self.check();
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step(
                Duration::from_millis(50)
                    .min(end - self.now)
                    .max(Duration::from_micros(1)),
            );
        }
    }

    fn sup(&self) -> Option<&Supervisor> {
        match self.nodes[0].kind.as_ref()? {
            Kind::Sup(s) => Some(s),
            _ => None,
        }
    }

    fn check(&mut self) {
        let now = self.now;
        // 1. Numbers: no overlap between distinct holders' valid grants.
        let mut held: Vec<(String, u64, u64)> = Vec::new();
        for n in &self.nodes {
            if let Some(Kind::Agent(a)) = &n.kind {
                for g in a.grants(now) {
                    held.push((n.name.clone(), g.first, g.first + g.count as u64));
                }
            }
        }
        for x in &held {
            let prev = self.checks.owner.insert(x.1, x.0.clone());
            if prev.is_some_and(|p| p != x.0) {
                self.checks.handovers += 1;
            }
        }
        for (i, x) in held.iter().enumerate() {
            for y in &held[i + 1..] {
                self.checks.grant_pairs += 1;
                assert!(
                    x.0 == y.0 || x.2 <= y.1 || y.2 <= x.1,
                    "number in two hands at {:?}: {x:?} {y:?}",
                    now - self.start
                );
            }
        }
        let Some(sup) = self.sup() else { return };
        let sg: Vec<(u64, u64)> = sup
            .grants()
            .map(|g| (g.first, g.first + g.count as u64))
            .collect();
        for (i, x) in sg.iter().enumerate() {
            for y in &sg[i + 1..] {
                assert!(x.1 <= y.0 || y.1 <= x.0, "supervisor overlap {x:?} {y:?}");
            }
        }
        let listed: Vec<u64> = sup.systems().map(|s| s.id).collect();
        // Track when each end system became listed.
        for n in self.nodes.iter_mut() {
            if matches!(n.kind, Some(Kind::Agent(_))) {
                let id = system_id(&n.name);
                if listed.contains(&id) {
                    n.listed_since.get_or_insert(now);
                } else {
                    n.listed_since = None;
                }
            }
        }
        // 2. Convergence within two advertisement intervals.
        let quiet_since = self.last_jump.max(self.sup_restarted);
        let slack = I * 2 + self.f.delay * 2 + self.f.jitter * 2;
        let mut seen_now = Vec::new();
        for a in self.nodes.iter().filter(|_| self.f.strict) {
            let Some(Kind::Agent(ag)) = &a.kind else {
                continue;
            };
            let Some(since) = a.listed_since else {
                continue;
            };
            if !a.alive(now) || ag.is_draining() || !ag.is_registered() {
                continue;
            }
            let from = since.max(a.disturbed).max(quiet_since);
            for l in &self.nodes {
                let Some(Kind::Listener(li)) = &l.kind else {
                    continue;
                };
                if !l.alive(now) || !li.is_registered() {
                    continue;
                }
                let from = from.max(l.disturbed);
                let key = (a.name.clone(), l.name.clone());
                if li.servers().any(|s| s.id == ag.id()) {
                    seen_now.push(key);
                } else if now >= from + slack {
                    if self
                        .seen
                        .get(&key)
                        .is_some_and(|t| *t > from && *t + Duration::from_millis(60) >= now)
                    {
                        self.checks.gaps += 1;
                    }
                    // Without loss a listener never loses a live server. With loss, the
                    // relays of a whole dead interval can all be lost (p = loss^3 per
                    // interval): the listener drops the server and has it again with the
                    // next relay that arrives. So it may miss it for a while, but not for
                    // more than two intervals beyond the bound (two more relays lost in a
                    // row after the drop; p = loss^5 in all).
                    let last = self.seen.get(&key).copied().unwrap_or(from).max(from);
                    assert!(
                        self.f.loss > 0.0 && now < last + slack + I * 2,
                        "{} not seen by {} at {:?} (listed since {:?}, last seen {:?})",
                        a.name,
                        l.name,
                        now - self.start,
                        since - self.start,
                        last - self.start
                    );
                }
                if now >= from + slack {
                    self.checks.convergence += 1;
                }
            }
        }
        for k in seen_now {
            self.seen.insert(k, now);
        }
        // 3. Deaths: gone from supervisor and listeners after dead interval + delays.
        let max_delay = self.f.delay + self.f.jitter;
        for a in &self.nodes {
            let Some(g) = a.gone_since else { continue };
            if now < quiet_since + DEAD * 2 {
                continue;
            }
            let id = system_id(&a.name);
            if now >= g + DEAD + max_delay * 3 {
                self.checks.deaths += 1;
                assert!(!listed.contains(&id), "{} still at the supervisor", a.name);
                for l in &self.nodes {
                    if let Some(Kind::Listener(li)) = &l.kind {
                        assert!(
                            li.servers().all(|s| s.id != id),
                            "{} still at {} {:?} after it went at {:?}",
                            a.name,
                            l.name,
                            now - self.start,
                            g - self.start
                        );
                    }
                }
            } else if now + I + max_delay * 2 < g + DEAD && self.f.loss == 0.0 && a.listed_when_gone
            {
                // It advertised at most one interval before going, so the supervisor
                // heard it then: it must not be removed before that + DEAD.
                assert!(
                    listed.contains(&id),
                    "{} removed early (gone at {:?}, now {:?})",
                    a.name,
                    g - self.start,
                    now - self.start
                );
            }
        }
    }

    fn kill(&mut self, i: usize) {
        self.nodes[i].kind = None;
        self.nodes[i].gone_since = Some(self.now);
        self.nodes[i].listed_when_gone = self.listed(i);
    }

    /// Whether the supervisor lists node `i` now.
    fn listed(&self, i: usize) -> bool {
        let id = system_id(&self.nodes[i].name);
        self.sup().is_some_and(|s| s.systems().any(|x| x.id == id))
    }

    fn restart_agent(&mut self, i: usize) {
        let (name, addr) = (self.nodes[i].name.clone(), self.nodes[i].addr);
        let a = self.make_agent(&name, addr);
        let n = &mut self.nodes[i];
        n.kind = Some(Kind::Agent(Box::new(a)));
        n.gone_since = None;
        n.cut_until = None;
        n.disturbed = self.now;
    }

    fn restart_supervisor(&mut self) {
        let recs = self.store.records();
        let s = self.make_sup(recs);
        self.nodes[0].kind = Some(Kind::Sup(Box::new(s)));
        self.sup_restarted = self.now;
    }

    fn cut(&mut self, i: usize, d: Duration) {
        self.nodes[i].cut_until = Some(self.now + d);
        // A node already dead (killed, not restarted) stays gone since its death.
        if d > DEAD && self.nodes[i].kind.is_some() && self.nodes[i].gone_since.is_none() {
            self.nodes[i].gone_since = Some(self.now);
            self.nodes[i].listed_when_gone = self.listed(i);
        }
    }

    fn heal_check(&mut self) {
        let now = self.now;
        for n in self.nodes.iter_mut() {
            if n.cut_until.is_some_and(|t| t <= now) {
                n.cut_until = None;
                // A healed path brings back a live node, not a killed one.
                if n.kind.is_some() {
                    n.gone_since = None;
                }
                n.disturbed = now;
            }
        }
    }

    fn jump(&mut self, d: Duration) {
        self.now += d;
        self.last_jump = self.now;
        for n in self.nodes.iter_mut() {
            n.disturbed = self.now;
        }
    }
}

fn agents(sim: &Sim) -> Vec<usize> {
    (0..sim.nodes.len())
        .filter(|&i| sim.nodes[i].name.starts_with("agent"))
        .collect()
}

fn scenario(seed: u64, f: Faults) -> Checks {
    let mut sim = Sim::new(seed, f, 6, 3);
    sim.run_for(Duration::from_secs(8));
    // Every agent registered; the pool's 5 blocks are all held (6 agents compete, so
    // one keeps asking and grabs any block the supervisor reclaims).
    if f.loss < 0.2 {
        let mut holders = 0;
        for i in agents(&sim) {
            if let Some(Kind::Agent(a)) = &sim.nodes[i].kind {
                assert!(a.is_registered(), "{} registered", sim.nodes[i].name);
                holders += a.grants(sim.now).len();
            }
        }
        assert_eq!(holders, 5);
    }
    for round in 0..12 {
        let ags = agents(&sim);
        let pick = ags[sim.rng.below(ags.len() as u64) as usize];
        match sim.rng.below(6) {
            0 => {
                // kill -9, later restart
                if sim.nodes[pick].kind.is_some() {
                    sim.kill(pick);
                } else {
                    sim.restart_agent(pick);
                }
            }
            1 => {
                // partition longer than the dead interval: its block gets reclaimed
                // and re-granted while it is cut off; it must have stopped using it.
                let d = DEAD + Duration::from_millis(500 + sim.rng.below(3000));
                sim.cut(pick, d);
            }
            2 => sim.restart_supervisor(),
            3 => {
                let d = Duration::from_millis(sim.rng.below(10_000));
                sim.jump(d);
            }
            4 => {
                // A listener restarts from scratch.
                let li = (0..sim.nodes.len())
                    .filter(|&i| sim.nodes[i].name.starts_with("lb"))
                    .nth(round % 3)
                    .unwrap_or(1);
                let (name, addr) = (sim.nodes[li].name.clone(), sim.nodes[li].addr);
                let l = sim.make_listener(&name, addr);
                sim.nodes[li].kind = Some(Kind::Listener(Box::new(l)));
                sim.nodes[li].disturbed = sim.now;
            }
            _ => {
                if sim.nodes[pick].kind.is_none() {
                    sim.restart_agent(pick);
                }
            }
        }
        let end = sim.now + Duration::from_secs(6);
        while sim.now < end {
            sim.step(Duration::from_millis(50));
            sim.heal_check();
        }
    }
    if f.route_numbers {
        // Every agent back and the network quiet: each listener routes exactly the
        // blocks the agents hold, each to its holder, and nothing else.
        for i in agents(&sim) {
            if sim.nodes[i].kind.is_none() {
                sim.restart_agent(i);
            }
        }
        // Then wait until the grants have not changed for a dead interval and two
        // advertisement intervals (a block freed late is granted again late, and its
        // route needs that long to reach everyone), at least 15 s and at most 60 s.
        let start = sim.now;
        let mut last: Vec<(u64, u64)> = Vec::new();
        let mut changed = sim.now;
        while sim.now < start + Duration::from_secs(60) {
            sim.step(Duration::from_millis(50));
            sim.heal_check();
            let mut g: Vec<(u64, u64)> = sim
                .sup()
                .map(|s| s.grants().map(|g| (g.holder, g.first)).collect())
                .unwrap_or_default();
            g.sort_unstable();
            if g != last {
                last = g;
                changed = sim.now;
            }
            if sim.now >= start + Duration::from_secs(15) && sim.now >= changed + DEAD + I * 2 {
                break;
            }
        }
        // The supervisor holds exactly the blocks the agents hold: none is kept for a
        // holder that gave it up.
        let mut held: Vec<(u64, u64)> = Vec::new();
        for n in &sim.nodes {
            if let Some(Kind::Agent(a)) = &n.kind {
                held.extend(a.grants(sim.now).iter().map(|g| (a.id(), g.first)));
            }
        }
        held.sort_unstable();
        assert_eq!(
            last, held,
            "seed {seed}: the supervisor's grants against the agents'"
        );
        check_routes(&mut sim);
    }
    sim.checks
}

/// The routed `nat` blocks equal the grants the agents hold: at the supervisor now, and
/// at every listener within three intervals, never with a block that is not held. (A
/// listener drops a flow whose repeats were all lost for a dead
/// interval, p = loss^3 per interval, and has it again with the next one that arrives.)
fn check_routes(sim: &mut Sim) {
    let dst: std::net::IpAddr = ROUTE_DST.parse().unwrap();
    // (holder, protocol, block): UDP routes by destination port, ESP by SPI.
    type Routed = (u64, u8, (u32, u32));
    let routed = |flows: &mut dyn Iterator<Item = &flowgate::control::proto::FlowAdvert>| {
        let mut v: Vec<Routed> = flows
            .filter(|f| f.matcher.dst == dst)
            .map(|f| {
                let m = &f.matcher;
                assert_eq!(f.target, f.origin, "a block routes to its holder");
                assert_eq!(m.dst_plen, 32);
                let block = match (m.proto, m.spi) {
                    (17, None) => (u32::from(m.dport.0), u32::from(m.dport.1)),
                    (50, Some(spi)) => spi,
                    _ => panic!("not a route of this sim: {f:?}"),
                };
                (f.origin, m.proto, block)
            })
            .collect();
        v.sort_unstable();
        v
    };
    let mut want: Vec<Routed> = Vec::new();
    for i in agents(sim) {
        if let Some(Kind::Agent(a)) = &sim.nodes[i].kind {
            for g in a.grants(sim.now) {
                for proto in [17, 50] {
                    want.push((a.id(), proto, (g.first as u32, g.last() as u32)));
                }
            }
        }
    }
    want.sort_unstable();
    assert!(!want.is_empty(), "some blocks are held");
    if let Some(sup) = sim.sup() {
        assert_eq!(
            routed(&mut sup.flows()),
            want,
            "the supervisor's routed blocks"
        );
    }
    let end = sim.now + I * 3;
    loop {
        let mut behind = Vec::new();
        for n in &sim.nodes {
            if let Some(Kind::Listener(l)) = &n.kind {
                let got = routed(&mut l.flows());
                assert!(
                    got.iter().all(|r| want.contains(r)),
                    "{}: a block routed that is not held: {got:?}, held {want:?}",
                    n.name
                );
                if got != want {
                    behind.push((n.name.clone(), got));
                }
            }
        }
        if behind.is_empty() {
            return;
        }
        assert!(
            sim.now < end,
            "listeners still missing routes: {behind:?}, held {want:?}"
        );
        sim.step(Duration::from_millis(50));
    }
}

/// The seeds a test runs: `default`, or `SIM_SEEDS=FIRST-LAST` from the environment to
/// run many more (e.g. `SIM_SEEDS=1-200 cargo test --release --test control_sim`; a
/// seed that fails prints in the panic message's test, rerun it alone to look closer).
fn seeds(default: std::ops::RangeInclusive<u64>) -> std::ops::RangeInclusive<u64> {
    let Ok(v) = std::env::var("SIM_SEEDS") else {
        return default;
    };
    let (a, b) = v.split_once('-').unwrap_or((&v, &v));
    match (a.trim().parse(), b.trim().parse()) {
        (Ok(a), Ok(b)) => {
            eprintln!("SIM_SEEDS: seeds {a}..={b}");
            a..=b
        }
        _ => panic!("SIM_SEEDS={v:?}: expected FIRST-LAST"),
    }
}

/// Whether `SIM_SEEDS` asks for other seeds than the tests' own (then the checks of
/// what a default seed exercises, deaths and handovers, do not apply).
fn soaking() -> bool {
    std::env::var("SIM_SEEDS").is_ok()
}

fn faults(loss: f64) -> Faults {
    Faults {
        loss,
        dup: 0.05,
        delay: Duration::from_millis(2),
        jitter: Duration::from_millis(20),
        strict: loss < 0.1,
        multicast: false,
        route_numbers: false,
    }
}

#[test]
fn lossless_with_reordering_and_duplication() {
    for seed in seeds(1..=4) {
        let c = scenario(seed, faults(0.0));
        // The default seeds are chosen to exercise deaths and handovers.
        if !soaking() {
            assert!(
                c.convergence > 1000 && c.deaths > 0 && c.grant_pairs > 1000,
                "{c:?}"
            );
            assert!(c.handovers > 0, "a reclaimed block was re-granted: {c:?}");
        }
    }
}

#[test]
fn lossy_network() {
    for seed in seeds(10..=13) {
        let c = scenario(seed, faults(0.05));
        assert!(c.convergence > 1000 && c.grant_pairs > 1000, "{c:?}");
        // Relay mode repeats every advert half an interval later: no listener lost a
        // live server here (without that repeat, seeds 1-60 had 5 such gaps).
        assert_eq!(c.gaps, 0, "a listener lost a live server: {c:?}");
    }
}

#[test]
fn very_lossy_network_keeps_numbers_safe() {
    // 30% loss: convergence bounds are not promised, but numbers must stay safe.
    for seed in 20..=21 {
        let mut sim = Sim::new(seed, faults(0.3), 5, 2);
        for _ in 0..6 {
            let ags = agents(&sim);
            let pick = ags[sim.rng.below(ags.len() as u64) as usize];
            sim.cut(pick, DEAD + Duration::from_secs(1));
            let end = sim.now + Duration::from_secs(8);
            while sim.now < end {
                sim.step(Duration::from_millis(50));
                sim.heal_check();
            }
        }
        assert!(sim.checks.grant_pairs > 100, "{:?}", sim.checks);
    }
}

/// Agents route their `nat` blocks (NumberRoute), as UDP ports and as ESP SPIs: after
/// kills, restarts, partitions, supervisor and listener restarts and clock jumps, on a
/// network that loses 2 %, duplicates 5 % and reorders datagrams, then a quiet spell,
/// the supervisor and every listener route exactly the blocks the agents hold, each to
/// its holder. A lost or
/// reordered FlowAdd or FlowDel is mended by the repeated relay of every live
/// flow and the listeners' expiry of flows not heard of for the dead interval; a flow
/// of a system that died does not come back when the supervisor restarts. The timing
/// bounds of `scenario` hold throughout.
#[test]
fn routed_numbers_follow_their_grants() {
    let mut handovers = 0;
    for seed in seeds(40..=45) {
        let f = Faults {
            route_numbers: true,
            ..faults(0.02)
        };
        let c = scenario(seed, f);
        handovers += c.handovers;
        if !soaking() {
            assert!(c.grant_pairs > 1000, "{c:?}");
        }
    }
    // Blocks moved from one agent to another (so routes were withdrawn and re-made).
    assert!(
        soaking() || handovers > 0,
        "no handover in the default seeds"
    );
    for seed in seeds(50..=52) {
        let f = Faults {
            multicast: true,
            route_numbers: true,
            ..faults(0.02)
        };
        scenario(seed, f);
    }
}

#[test]
fn multicast_advertisements() {
    for seed in seeds(30..=32) {
        let f = Faults {
            multicast: true,
            ..faults(0.03)
        };
        let c = scenario(seed, f);
        assert!(c.convergence > 1000 && c.grant_pairs > 1000, "{c:?}");
        // Agents send their group datagrams once more half an interval later: no
        // listener lost a live server here (without that repeat, 5 % loss on seeds 1-200
        // gave 39 such gaps).
        assert_eq!(c.gaps, 0, "a listener lost a live server: {c:?}");
    }
}

/// A network that loses, duplicates and reorders nothing (1 ms of delay).
fn lossless() -> Faults {
    Faults {
        loss: 0.0,
        dup: 0.0,
        delay: Duration::from_millis(1),
        jitter: Duration::ZERO,
        strict: true,
        multicast: false,
        route_numbers: false,
    }
}

fn agent_mut(sim: &mut Sim, i: usize) -> &mut Agent {
    match sim.nodes[i].kind.as_mut() {
        Some(Kind::Agent(a)) => a,
        _ => panic!("not an agent"),
    }
}

/// Table events end to end (lossless): server up with its service, a flow with QoS
/// added and removed, drain, leave.
#[test]
fn listener_table_events() {
    let f = lossless();
    let mut sim = Sim::new(7, f, 1, 2);
    sim.run_for(Duration::from_secs(2));
    let id = system_id("agent0");
    for lb in ["lb0", "lb1"] {
        let ev: Vec<&TableEvent> = sim
            .table
            .iter()
            .filter(|e| e.0 == lb)
            .map(|e| &e.1)
            .collect();
        assert!(ev.contains(&&TableEvent::Registered), "{lb}: {ev:?}");
        assert!(ev.iter().any(
            |e| matches!(e, TableEvent::ServerUp(i) if i.id == id && i.state == SysState::Up)
        ));
        assert!(ev.iter().any(|e| matches!(e, TableEvent::ServiceLoad { server, service } if *server == id && service.name == "web")));
    }
    let spec = FlowSpec {
        target: Some(system_id("other")),
        matcher: FlowMatch {
            proto: 6,
            src: "192.0.2.7".parse().unwrap(),
            src_plen: 32,
            dst: "10.9.9.9".parse().unwrap(),
            dst_plen: 32,
            sport: (40000, 40000),
            dport: (30001, 30001),
            spi: None,
        },
        qos: vec![
            Qos::Dscp(46),
            Qos::PushVlan {
                vid: 7,
                pcp: 3,
                tpid: 0x88a8,
            },
        ],
        lifetime_ms: 0,
    };
    let now = sim.now;
    let flow_id = agent_mut(&mut sim, 1).add_flow(now, spec.clone());
    sim.flush(1);
    sim.run_for(Duration::from_millis(100));
    for lb in ["lb0", "lb1"] {
        assert!(
            sim.table.iter().any(|(l, e)| l == lb
                && matches!(e, TableEvent::FlowAdded(f)
            if f.flow_id == flow_id && f.origin == id && f.target == system_id("other")
               && f.qos == spec.qos && f.matcher == spec.matcher)),
            "{lb} got the flow"
        );
    }
    let now = sim.now;
    assert!(agent_mut(&mut sim, 1).del_flow(now, flow_id));
    sim.flush(1);
    sim.run_for(Duration::from_millis(100));
    for lb in ["lb0", "lb1"] {
        assert!(sim.table.iter().any(|(l, e)| l == lb
            && *e
                == TableEvent::FlowRemoved {
                    origin: id,
                    flow_id
                }));
    }
    // Drain: draining at once, then gone (Leave relayed) well before the dead interval.
    let now = sim.now;
    agent_mut(&mut sim, 1).drain(now, Some(Duration::from_secs(1)));
    sim.flush(1);
    sim.run_for(Duration::from_millis(100));
    for lb in ["lb0", "lb1"] {
        assert!(
            sim.table
                .iter()
                .any(|(l, e)| l == lb && *e == TableEvent::ServerDraining(id))
        );
    }
    sim.run_for(Duration::from_millis(500));
    assert!(agent_mut(&mut sim, 1).is_left());
    for lb in ["lb0", "lb1"] {
        assert!(
            sim.table
                .iter()
                .any(|(l, e)| l == lb && *e == TableEvent::ServerDown(id)),
            "{lb} saw it leave"
        );
    }
    assert_eq!(
        sim.sup().unwrap().systems().filter(|s| s.id == id).count(),
        0
    );
    assert_eq!(
        sim.sup().unwrap().grants().count(),
        0,
        "drained agent released its block"
    );
}

/// An agent that hears nothing from the supervisor for longer than the dead interval
/// (while the supervisor hears it, so it stays registered there) stops using its block
/// (PROTOCOL.md §6.4) and asks for another when it hears again: it releases the block it
/// gave up, so the supervisor holds exactly the block the agent holds, not that one as
/// well until its lease runs out.
#[test]
fn a_block_given_up_by_a_deaf_agent_is_released() {
    let f = lossless();
    let mut sim = Sim::new(3, f, 1, 0);
    sim.run_for(Duration::from_secs(3));
    let id = system_id("agent0");
    let sup_blocks = |sim: &Sim| -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = sim
            .sup()
            .unwrap()
            .grants()
            .map(|g| (g.holder, g.first))
            .collect();
        v.sort_unstable();
        v
    };
    let held = |sim: &mut Sim| -> Vec<(u64, u64)> {
        let now = sim.now;
        agent_mut(sim, 1)
            .grants(now)
            .iter()
            .map(|g| (id, g.first))
            .collect()
    };
    let first = held(&mut sim);
    assert_eq!(first.len(), 1, "one block held");
    assert_eq!(sup_blocks(&sim), first);

    sim.nodes[1].deaf_until = Some(sim.now + DEAD + Duration::from_millis(700));
    sim.run_for(DEAD + Duration::from_millis(500));
    assert!(
        held(&mut sim).is_empty(),
        "a deaf agent stops using its block"
    );
    assert!(sim.listed(1), "the supervisor still hears it");
    sim.run_for(Duration::from_secs(3));
    let now = held(&mut sim);
    assert_eq!(now.len(), 1, "a block again");
    // Well inside the 20 s lease of the block given up.
    assert_eq!(
        sup_blocks(&sim),
        now,
        "the supervisor holds only the agent's block"
    );
}
