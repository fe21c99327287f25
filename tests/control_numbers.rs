//! Numbers kept exactly once: a block the supervisor holds for a system is a block that
//! system holds, through the message losses and reorderings that used to leave one held
//! beside the next until its lease ran out (seen as a CI failure: three grants for two
//! systems). One [`Session`] (the client half of agents and listeners) against a real
//! [`Supervisor`], every datagram handed over by the test, so each case is one exact
//! interleaving.

use flowgate::control::Transmit;
use flowgate::control::ana::PoolConf;
use flowgate::control::proto::*;
use flowgate::control::session::{ReqKey, SessEvent, Session};
use flowgate::control::store::{MemStore, Record, Store};
use flowgate::control::supervisor::{Supervisor, SupervisorConfig};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const ADVERT: Duration = Duration::from_millis(1000);
const DEAD: Duration = Duration::from_millis(3500);

fn key() -> Key {
    Key::new(&[7u8; 32]).unwrap()
}

fn sup_addr() -> SocketAddr {
    "10.0.0.1:7700".parse().unwrap()
}

fn agent_addr() -> SocketAddr {
    "10.0.1.1:9000".parse().unwrap()
}

fn sup_cfg() -> SupervisorConfig {
    SupervisorConfig {
        name: "sup".into(),
        advert_interval: ADVERT,
        dead_interval: DEAD,
        relay: false,
        drain_timeout: Duration::from_secs(5),
        pools: vec![PoolConf {
            name: "nat".into(),
            first: Some(0),
            last: Some(499),
            prefix: None,
            block: 100,
            lease_ms: 20_000,
        }],
    }
}

/// A supervisor started (`start` = 0, 1, 2… for each restart: its sequence numbers go
/// on rising, as a real one's do across restarts) from what `store` holds.
fn supervisor(now: Instant, store: &MemStore, start: u64) -> Supervisor {
    supervisor_with(sup_cfg(), now, store, start)
}

/// [`supervisor`] with another configuration.
fn supervisor_with(
    cfg: SupervisorConfig,
    now: Instant,
    store: &MemStore,
    start: u64,
) -> Supervisor {
    Supervisor::restore(
        cfg,
        key(),
        SeqGen::new(1 + start * 1_000_000_000),
        now,
        store.records(),
        Box::new(store.clone()),
    )
    .unwrap()
}

fn session() -> Session {
    session_from(1_000_000)
}

/// `web1`'s session whose sequence numbers start at `seq` (a restarted one's go on
/// above the last run's, as a real agent's do: they start at the time in microseconds).
fn session_from(seq: u64) -> Session {
    Session::new(
        key(),
        SeqGen::new(seq),
        sup_addr(),
        Register {
            kind: SystemKind::End,
            name: "web1".into(),
            mac: [2, 0, 0, 0, 0, 1],
            addrs: vec!["10.0.1.1".parse().unwrap()],
            capabilities: 0,
            lease_ms: 0,
        },
        ADVERT,
        DEAD,
    )
}

fn from_session(s: &mut Session) -> Vec<Transmit> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

fn from_sup(sup: &mut Supervisor, now: Instant) -> Vec<Transmit> {
    std::iter::from_fn(|| sup.poll_transmit(now)).collect()
}

fn to_sup(sup: &mut Supervisor, now: Instant, ts: &[Transmit]) {
    for t in ts {
        assert_eq!(t.dst, sup_addr());
        sup.handle(now, agent_addr(), &t.payload);
    }
}

fn to_session(s: &mut Session, now: Instant, ts: &[Transmit]) {
    for t in ts {
        assert!(
            s.handle(now, &t.payload).is_none(),
            "a reply the session takes"
        );
    }
}

/// Both ways until neither has anything to say.
fn exchange(s: &mut Session, sup: &mut Supervisor, now: Instant) {
    loop {
        let out = from_session(s);
        to_sup(sup, now, &out);
        let back = from_sup(sup, now);
        to_session(s, now, &back);
        if out.is_empty() && back.is_empty() {
            return;
        }
    }
}

fn bodies(ts: &[Transmit]) -> Vec<Body> {
    ts.iter()
        .map(|t| key().open(&t.payload).expect("sealed").body)
        .collect()
}

/// (grant id, first number) of the supervisor's grants, and of the session's.
fn sup_grants(sup: &Supervisor) -> Vec<(u64, u64)> {
    sup.grants().map(|g| (g.id, g.first)).collect()
}

fn held(s: &Session) -> Vec<(u64, u64)> {
    s.grants.values().map(|g| (g.grant_id, g.first)).collect()
}

/// A flow `web1` advertises to itself: TCP to 10.9.9.1:80 from anywhere.
fn web1_flow(flow_id: u64) -> FlowAdvert {
    FlowAdvert {
        origin: system_id("web1"),
        flow_id,
        target: system_id("web1"),
        matcher: FlowMatch {
            proto: 6,
            src: "0.0.0.0".parse().unwrap(),
            src_plen: 0,
            dst: "10.9.9.1".parse().unwrap(),
            dst_plen: 32,
            sport: (0, 65535),
            dport: (80, 80),
            spi: None,
        },
        qos: vec![],
        lifetime_ms: 0,
    }
}

/// A session registered with `sup` and holding one `nat` block.
fn registered_with_a_block(now: Instant, sup: &mut Supervisor) -> Session {
    let mut s = session();
    s.wanted = vec!["nat".into()];
    s.start(now);
    exchange(&mut s, sup, now);
    assert!(s.registered);
    assert_eq!(held(&s).len(), 1);
    assert_eq!(sup_grants(sup), held(&s));
    s
}

/// A holder that stops hearing the supervisor (which still hears it) gives its block up
/// after the dead interval, as it must (PROTOCOL.md §6.4), and releases it: the block
/// it asks for next is then the only one held for it.
#[test]
fn a_block_given_up_unheard_is_released() {
    let t0 = Instant::now();
    let store = MemStore::default();
    let mut sup = supervisor(t0, &store, 0);
    let mut s = registered_with_a_block(t0, &mut sup);
    let first = held(&s);

    // Renewals and their retransmissions reach the supervisor; its answers are lost.
    let mut now = t0;
    let mut out = Vec::new();
    while !s.grants.is_empty() {
        now += Duration::from_millis(50);
        s.handle_timeout(now);
        out = from_session(&mut s);
        if !s.grants.is_empty() {
            to_sup(&mut sup, now, &out);
            sup.handle_timeout(now);
            from_sup(&mut sup, now);
        }
    }
    assert!(
        now - t0 <= DEAD + Duration::from_millis(100),
        "{:?}",
        now - t0
    );
    assert!(s.registered, "nothing said it is not");
    assert_eq!(
        sup_grants(&sup),
        first,
        "the supervisor still holds it for us"
    );
    let lost: Vec<_> = std::iter::from_fn(|| s.events.pop_front()).collect();
    assert!(
        lost.iter()
            .any(|e| matches!(e, SessEvent::Lost(g) if g.grant_id == first[0].0))
    );
    // What it sent as it gave the block up: its release, and a request for a new one.
    let sent = bodies(&out);
    assert!(
        sent.iter()
            .any(|b| matches!(b, Body::NumberRelease(r) if r.grant_id == first[0].0)),
        "{sent:?}"
    );
    assert!(
        sent.iter().any(|b| matches!(b, Body::NumberRequest(_))),
        "{sent:?}"
    );
    to_sup(&mut sup, now, &out);
    to_session(&mut s, now, &from_sup(&mut sup, now));
    exchange(&mut s, &mut sup, now);
    let next = held(&s);
    assert_eq!(next.len(), 1, "a block again");
    assert_ne!(next[0].0, first[0].0);
    assert_eq!(
        sup_grants(&sup),
        next,
        "only the block it holds, well inside the lease"
    );
}

/// A request given up after its retries (the supervisor's answers all lost) and then
/// answered late: the block granted for it is released, not held beside the one the
/// holder asked for next.
#[test]
fn a_block_granted_for_a_request_given_up_is_released() {
    let t0 = Instant::now();
    let store = MemStore::default();
    let mut sup = supervisor(t0, &store, 0);
    let mut s = session();
    s.start(t0);
    exchange(&mut s, &mut sup, t0);
    assert!(s.registered && s.grants.is_empty());

    s.wanted = vec!["nat".into()];
    s.want_numbers(t0);
    let out = from_session(&mut s);
    to_sup(&mut sup, t0, &out);
    let mut late = from_sup(&mut sup, t0);
    assert!(matches!(&bodies(&late)[..], [Body::NumberGrant(g)] if g.status == status::OK));
    let granted = sup_grants(&sup);
    assert_eq!(granted.len(), 1);

    // Retransmissions reach the supervisor (the same request: the same grant); every
    // answer is lost until the session gives the request up and asks anew, except the
    // answer to the last retransmission, which is late.
    let mut now = t0;
    let anew = loop {
        now += Duration::from_millis(100);
        s.handle_timeout(now);
        let out = from_session(&mut s);
        if std::iter::from_fn(|| s.events.pop_front())
            .any(|e| matches!(e, SessEvent::Failed(ReqKey::Number(_))))
        {
            break out;
        }
        to_sup(&mut sup, now, &out);
        let answers = from_sup(&mut sup, now);
        if !answers.is_empty() {
            late = answers;
        }
        assert!(
            now - t0 < Duration::from_secs(120),
            "the request never failed"
        );
    };
    assert_eq!(sup_grants(&sup), granted, "retries are one request");
    // The new request (sent by the same timeout), answered and delivered.
    assert!(
        bodies(&anew)
            .iter()
            .any(|b| matches!(b, Body::NumberRequest(_)))
    );
    to_sup(&mut sup, now, &anew);
    to_session(&mut s, now, &from_sup(&mut sup, now));
    exchange(&mut s, &mut sup, now);
    let mine = held(&s);
    assert_eq!(mine.len(), 1);
    assert_ne!(mine, granted);
    assert_eq!(
        sup_grants(&sup).len(),
        2,
        "both held at the supervisor for now"
    );

    // The first answer arrives now: its block goes back.
    to_session(&mut s, now, &late);
    exchange(&mut s, &mut sup, now);
    assert_eq!(held(&s), mine);
    assert_eq!(sup_grants(&sup), mine);
}

/// A NOT_REGISTERED that answers a message the supervisor got before the registration
/// (here a keepalive sent while the Register was on its way, answered after) does not
/// undo the registration: the holder keeps its block and does not ask for another
/// beside it.
#[test]
fn a_stale_not_registered_leaves_the_registration_alone() {
    let t0 = Instant::now();
    let store = MemStore::default();
    let mut sup = supervisor(t0, &store, 0);
    let mut s = session();
    s.wanted = vec!["nat".into()];
    s.start(t0);
    let register = from_session(&mut s);
    let t1 = t0 + Duration::from_millis(10);
    s.send_periodic(t1, &Body::Keepalive(Keepalive { state: 0 }));
    let keepalive = from_session(&mut s);
    // The keepalive overtakes the Register: NOT_REGISTERED, held back.
    to_sup(&mut sup, t1, &keepalive);
    let stale = from_sup(&mut sup, t1);
    assert!(matches!(&bodies(&stale)[..], [Body::Ack(a)] if a.status == status::NOT_REGISTERED));
    // A retransmitted Register (sent after the keepalive) gets through and the
    // session takes its block.
    let t2 = t1 + Duration::from_millis(300);
    s.handle_timeout(t2);
    let again = from_session(&mut s);
    assert!(!again.is_empty(), "the Register is retransmitted");
    drop(register);
    to_sup(&mut sup, t2, &again);
    to_session(&mut s, t2, &from_sup(&mut sup, t2));
    exchange(&mut s, &mut sup, t2);
    let mine = held(&s);
    assert!(s.registered && mine.len() == 1);

    to_session(&mut s, t2, &[stale[0].clone()]);
    assert!(s.registered, "the registration stands");
    assert_eq!(held(&s), mine);
    exchange(&mut s, &mut sup, t2);
    assert_eq!(sup_grants(&sup), mine);
    assert!(
        !std::iter::from_fn(|| s.events.pop_front()).any(|e| matches!(e, SessEvent::Lost(_))),
        "no block was given up"
    );
}

/// Grant ids are never handed out twice, across restarts that compact the store (which
/// drops the records of gone grants): a late message about a gone grant (a
/// retransmitted release, say) must not reach a new grant of the same holder.
#[test]
fn grant_ids_are_not_reused_after_a_restart() {
    let t0 = Instant::now();
    let store = MemStore::default();
    let mut sup = supervisor(t0, &store, 0);
    let mut s = registered_with_a_block(t0, &mut sup);
    let first = held(&s)[0].0;
    s.release_all(t0);
    s.wanted = vec!["nat".into()];
    exchange(&mut s, &mut sup, t0);
    assert!(sup_grants(&sup).is_empty());
    assert!(
        store
            .records()
            .iter()
            .any(|r| matches!(r, Record::GrantGone { id } if *id == first))
    );

    // Restarted from the store (and compacted: the gone grant's records are dropped).
    let t1 = t0 + Duration::from_millis(100);
    let mut sup = supervisor(t1, &store, 1);
    assert!(
        !store
            .records()
            .iter()
            .any(|r| matches!(r, Record::Grant { id, .. } if *id == first)),
        "compacted"
    );
    s.want_numbers(t1);
    exchange(&mut s, &mut sup, t1);
    let second = held(&s);
    assert_eq!(second.len(), 1);
    assert!(second[0].0 > first, "{second:?} after grant {first}");

    // Released again, then two restarts before the next request: after the first one's
    // compaction no record names the gone grant any more.
    let t2 = t1 + Duration::from_millis(100);
    s.release_all(t2);
    s.wanted = vec!["nat".into()];
    exchange(&mut s, &mut sup, t2);
    assert!(sup_grants(&sup).is_empty());
    drop(supervisor(t2, &store, 2));
    assert!(
        !store
            .records()
            .iter()
            .any(|r| matches!(r, Record::Grant { .. } | Record::GrantGone { .. })),
        "{:?}",
        store.records()
    );
    let mut sup = supervisor(t2, &store, 3);
    s.want_numbers(t2);
    exchange(&mut s, &mut sup, t2);
    assert!(held(&s)[0].0 > second[0].0, "{:?}", held(&s));
}

/// An agent killed and started again within the dead interval (the supervisor never saw
/// it gone) asks for a block of a pool whose only block its last run held: its Register
/// says it holds nothing, so the supervisor releases that block then, and the new run
/// gets it at once instead of being refused until the old lease runs out. (Its request
/// ids start over, so its first request is not the one the old block was granted for:
/// here the old run had asked twice.)
#[test]
fn a_restarted_holder_gets_a_block_of_a_full_pool_at_once() {
    let t0 = Instant::now();
    let store = MemStore::default();
    let mut cfg = sup_cfg();
    cfg.pools[0].last = Some(99);
    let mut sup = supervisor_with(cfg, t0, &store, 0);
    let mut old = registered_with_a_block(t0, &mut sup);
    old.release_all(t0);
    exchange(&mut old, &mut sup, t0);
    old.wanted = vec!["nat".into()];
    old.want_numbers(t0);
    exchange(&mut old, &mut sup, t0);
    let before = held(&old);
    assert_eq!(before.len(), 1, "its second request");
    assert_eq!(sup_grants(&sup), before);
    old.request(t0, ReqKey::FlowAdd(1), Body::FlowAdd(web1_flow(1)));
    exchange(&mut old, &mut sup, t0);
    assert_eq!(sup.flows().count(), 1);
    drop(old);

    let t1 = t0 + Duration::from_millis(800);
    let mut new = session_from(2_000_000);
    new.wanted = vec!["nat".into()];
    new.start(t1);
    let register = from_session(&mut new);
    assert!(matches!(&bodies(&register)[..], [Body::Register(_)]));
    to_sup(&mut sup, t1, &register);
    assert!(
        sup_grants(&sup).is_empty(),
        "the last run's block is released by the Register"
    );
    assert_eq!(sup.flows().count(), 0, "and its flows withdrawn, as before");
    assert!(
        store
            .records()
            .iter()
            .any(|r| matches!(r, Record::GrantGone { id } if *id == before[0].0)),
        "durably"
    );
    to_session(&mut new, t1, &from_sup(&mut sup, t1));
    exchange(&mut new, &mut sup, t1);
    let mine = held(&new);
    assert_eq!(mine.len(), 1, "granted, not refused");
    assert!(mine[0].0 > before[0].0);
    assert_eq!(sup_grants(&sup), mine);
}

/// A copy of a Register that arrives after what its sender said next (here a
/// retransmission overtaken by the answer to the first copy, then by a grant and a
/// flow) releases and withdraws nothing: it was sent before them.
#[test]
fn a_late_copy_of_a_register_leaves_what_came_after_it() {
    let t0 = Instant::now();
    let store = MemStore::default();
    let mut sup = supervisor(t0, &store, 0);
    let mut s = session();
    s.wanted = vec!["nat".into()];
    s.start(t0);
    let first = from_session(&mut s);
    // The first copy is slow to arrive; the session sends another.
    let t1 = t0 + Duration::from_millis(300);
    s.handle_timeout(t1);
    let again = from_session(&mut s);
    assert!(matches!(&bodies(&again)[..], [Body::Register(_)]));
    to_sup(&mut sup, t1, &again);
    to_session(&mut s, t1, &from_sup(&mut sup, t1));
    exchange(&mut s, &mut sup, t1);
    let mine = held(&s);
    assert_eq!(mine.len(), 1);
    s.request(t1, ReqKey::FlowAdd(7), Body::FlowAdd(web1_flow(7)));
    exchange(&mut s, &mut sup, t1);
    assert_eq!(sup.flows().count(), 1);
    // And a flow advertised (its first copy slow, a retransmission taken) and withdrawn.
    let eight = web1_flow(8);
    s.request(t1, ReqKey::FlowAdd(8), Body::FlowAdd(eight));
    let slow_add = from_session(&mut s);
    let t2 = t1 + Duration::from_millis(300);
    s.handle_timeout(t2);
    exchange(&mut s, &mut sup, t2);
    assert_eq!(sup.flows().count(), 2);
    s.cancel(&ReqKey::FlowAdd(8));
    s.request(
        t2,
        ReqKey::FlowDel(8),
        Body::FlowDel(FlowWithdraw {
            origin: system_id("web1"),
            flow_id: 8,
        }),
    );
    exchange(&mut s, &mut sup, t2);
    assert_eq!(sup.flows().count(), 1);

    // Now the first copy of the Register (sent before the second) arrives, and then
    // the slow copy of the withdrawn flow's FlowAdd.
    let t3 = t2 + Duration::from_millis(50);
    to_sup(&mut sup, t3, &first);
    let answer = from_sup(&mut sup, t3);
    assert!(matches!(&bodies(&answer)[..], [Body::RegisterAck(a)] if a.status == status::OK));
    assert_eq!(sup_grants(&sup), mine, "the block granted after it stays");
    assert_eq!(sup.flows().count(), 1, "the flow advertised after it stays");
    to_sup(&mut sup, t3, &slow_add);
    from_sup(&mut sup, t3);
    assert_eq!(
        sup.flows().map(|f| f.flow_id).collect::<Vec<_>>(),
        [7],
        "and the flow withdrawn after it stays withdrawn"
    );
    for t in &answer {
        s.handle(t3, &t.payload);
    }
    exchange(&mut s, &mut sup, t3);
    assert_eq!(held(&s), mine);
    assert_eq!(sup_grants(&sup), mine);
}

/// A request whose answer is lost and whose retransmission is answered: the holder
/// counts its lease from sending the retransmission, so the supervisor must count it
/// from receiving that, not from receiving the first copy (PROTOCOL.md §6.4: the
/// supervisor's bound comes after the holder's), or the block could be handed to
/// another while its holder still uses it.
#[test]
fn a_retransmitted_request_restarts_the_lease() {
    let t0 = Instant::now();
    let store = MemStore::default();
    let mut sup = supervisor(t0, &store, 0);
    let mut s = session();
    s.start(t0);
    exchange(&mut s, &mut sup, t0);
    s.wanted = vec!["nat".into()];
    s.want_numbers(t0);
    to_sup(&mut sup, t0, &from_session(&mut s));
    assert_eq!(
        from_sup(&mut sup, t0).len(),
        1,
        "answered, and the answer lost"
    );
    let t1 = t0 + Duration::from_millis(300);
    s.handle_timeout(t1);
    let again = from_session(&mut s);
    assert!(matches!(&bodies(&again)[..], [Body::NumberRequest(_)]));
    to_sup(&mut sup, t1, &again);
    to_session(&mut s, t1, &from_sup(&mut sup, t1));
    let g = s.grants.values().next().expect("held").clone();
    assert_eq!(g.valid_from, t1);
    // The holder's lease bound: what decides while other messages are acknowledged
    // (its dead-interval bound moves on with each) and only its renewals are lost.
    let holder_until = g.valid_from + Duration::from_millis(g.lease_ms.into());
    let supervisor_until = sup.grants().next().expect("granted").expires;
    assert!(
        supervisor_until >= holder_until,
        "the supervisor frees it {:?} before its holder stops using it",
        holder_until - supervisor_until
    );
}

/// What a Register gives up is known across a supervisor restart (the store keeps each
/// grant's and flow's sequence number): an agent restarted after the supervisor was
/// gets a block of the full pool at once; a grant restored from a record written before
/// the number was kept is not given up by a Register (the old rule: it stays to its
/// lease's end unless asked for again under its request id).
#[test]
fn a_register_after_a_supervisor_restart_gives_up_the_last_runs_block() {
    let t0 = Instant::now();
    let store = MemStore::default();
    let mut cfg = sup_cfg();
    cfg.pools[0].last = Some(99);
    let mut sup = supervisor_with(cfg.clone(), t0, &store, 0);
    let old = registered_with_a_block(t0, &mut sup);
    let before = held(&old);
    drop((old, sup));

    let t1 = t0 + Duration::from_millis(500);
    let mut sup = supervisor_with(cfg.clone(), t1, &store, 1);
    assert_eq!(sup_grants(&sup), before, "restored");
    let mut new = session_from(2_000_000);
    new.wanted = vec!["nat".into()];
    new.start(t1);
    exchange(&mut new, &mut sup, t1);
    let mine = held(&new);
    assert_eq!(mine.len(), 1, "granted, not refused");
    assert_ne!(mine, before);
    assert_eq!(sup_grants(&sup), mine);

    // The same grant written as an older supervisor wrote it (no sequence number).
    let mut legacy = MemStore::default();
    for mut r in store.records() {
        if let Record::Grant { seq, .. } = &mut r {
            *seq = None;
        }
        legacy.append(&r).unwrap();
    }
    let t2 = t1 + Duration::from_millis(500);
    let mut sup = supervisor_with(cfg, t2, &legacy, 2);
    assert_eq!(sup_grants(&sup), mine);
    let mut third = session_from(3_000_000);
    third.wanted = vec!["nat".into()];
    third.start(t2);
    let register = from_session(&mut third);
    to_sup(&mut sup, t2, &register);
    assert_eq!(sup_grants(&sup), mine, "not given up by the Register");
    to_session(&mut third, t2, &from_sup(&mut sup, t2));
    exchange(&mut third, &mut sup, t2);
    // Here the new run's first request has the id the grant was made for (both runs'
    // first), so it gets that grant, with its lease restarted.
    assert_eq!(held(&third), mine);
    let g = third.grants.values().next().unwrap();
    assert!(
        sup.grants().next().unwrap().expires
            >= g.valid_from + Duration::from_millis(g.lease_ms.into())
    );
}
