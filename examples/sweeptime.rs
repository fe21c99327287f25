//! How long a worker's sweep takes after an advertised flow changes (see
//! `Worker::sweep`): the shipped web-farm pipeline with 64 advertised-flow slots and 1M
//! established flows, one slot then filled with an advert matching 256 of them, and the
//! sweep run to its end in steps of 256 slots, as `flowgate run`'s workers do once per
//! poll loop. Prints the steps, the flows moved, the total and the mean and worst step.
//! Then the same for a flow listing (`GET /flows` in `flowgate run`) over that table, in
//! steps of `LIST_PER_STEP` slots: all flows (the default limit of 10000 listed), and
//! those of one server. Last, reloads that change a timeout: how long a worker takes the
//! new tables, and then the pass that moves the flows of the changed timeout to the
//! class of the new value, in steps of `MOVES_PER_STEP` slots as `flowgate run`'s
//! workers take it once per poll loop (established-TCP timeout: 1M flows move;
//! `flow_table`'s idle timeout over 1M TCP flows: none moves; a new flow-table size: every
//! flow moves into a new table; a rule's idle timeout over 1M non-TCP flows of that rule:
//! all move).
//!
//! `cargo run --release --example sweeptime`
use flowgate::action::FrameBuf;
use flowgate::classify::{Decision, Range, Rule, prefix_range, v4_mapped};
use flowgate::config::{Pipeline, Target};
use flowgate::control::overlay::{first_slot, reserve_flow_slots};
use flowgate::r#gen::ack::{Template, handshake};
use flowgate::pipeline::listing::{DEFAULT_LIMIT, FlowFilter, LIST_PER_STEP, Listing};
use flowgate::pipeline::{Tables, Worker};
use std::sync::Arc;
use std::time::Instant;
fn main() {
    let flows: u32 = 1_000_000;
    let mut p = Pipeline::load(std::path::Path::new("pipelines/web-farm.yaml")).unwrap();
    p.flow_table.capacity = flows as usize;
    reserve_flow_slots(&mut p, 64);
    let tpl = Template::for_pipeline(&p).unwrap();
    let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
    let mut b = FrameBuf::new(2048);
    for k in 0..flows {
        handshake(k, tpl, |f, _| {
            b.load(f);
            w.process(&mut b, 0, 0);
        });
    }
    let i = first_slot(&p);
    let mut r = Rule::any(Decision::FlowRule(i as u32));
    r.proto = Range::exact(6);
    r.src = prefix_range(v4_mapped([100, 64, 0, 0]), 96 + 24);
    p.flow_rules[i].rule = r;
    p.flow_rules[i].target = Target::Server(1);
    w.set_tables(Arc::new(Tables::build(p, 2))).unwrap();
    let t0 = Instant::now();
    let (mut steps, mut moved) = (0, 0);
    let mut worst = 0f64;
    while w.sweep_due() {
        let s = Instant::now();
        moved += w.sweep(256);
        worst = worst.max(s.elapsed().as_secs_f64());
        steps += 1;
    }
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "{steps} steps, {moved} moved, {:.2} ms in all, {:.2} us a step on average, worst {:.1} us",
        dt * 1e3,
        dt * 1e6 / steps as f64,
        worst * 1e6
    );
    let p = w.tables().pipeline.clone();
    for q in ["", "to=web1"] {
        let (filter, _) = FlowFilter::parse(q, &p).unwrap();
        let mut out = Listing::with_limit(DEFAULT_LIMIT);
        let t0 = Instant::now();
        let (mut at, mut steps, mut worst) = (Some(0), 0, 0f64);
        while let Some(from) = at {
            let s = Instant::now();
            at = w.list_flows(from, LIST_PER_STEP, 1, &filter, 0, &mut out);
            worst = worst.max(s.elapsed().as_secs_f64());
            steps += 1;
        }
        let dt = t0.elapsed().as_secs_f64();
        println!(
            "listing {q:?}: {steps} steps, {} matched, {} listed, {:.2} ms in all, {:.2} us a step on average, worst {:.1} us",
            out.matched,
            out.records.len(),
            dt * 1e3,
            dt * 1e6 / steps as f64,
            worst * 1e6
        );
    }
    // Reloads that change a timeout: the worker takes the tables at once, then moves
    // the flows of a changed timeout to its class in steps between bursts.
    let mut q = w.tables().pipeline.clone();
    w.expire(2_000_000_000, 0);
    for secs in [3600, 300] {
        q.flow_table.tcp_established_ns = secs * 1_000_000_000;
        let t = Arc::new(Tables::build(q.clone(), 3));
        retime(&mut w, t, &format!("tcp_established_timeout {secs} s"));
    }
    // flow_table's idle timeout: every flow is looked at, but every flow here is TCP:
    // none moves.
    for secs in [30, 60] {
        q.flow_table.idle_ns = secs * 1_000_000_000;
        let t = Arc::new(Tables::build(q.clone(), 4));
        retime(&mut w, t, &format!("idle_timeout {secs} s"));
    }
    // A new size: a new table, into which the flows move (the last step also frees the
    // old table).
    q.flow_table.capacity = 2_000_000;
    let t = Arc::new(Tables::build(q.clone(), 5));
    retime(&mut w, t, "flow_table.capacity 2000000");
    moves();
}

/// Slots a step of the move pass visits: `flowgate run`'s workers' `MOVES_PER_LOOP`.
const MOVES_PER_STEP: usize = 256;

/// Times `w` taking tables `t` (`set_tables`) and then the move pass, in steps as
/// `flowgate run`'s workers take it, once per poll loop.
fn retime(w: &mut Worker, t: Arc<Tables>, what: &str) {
    let t0 = Instant::now();
    w.set_tables(t).unwrap();
    let taken = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let (mut steps, mut moved, mut worst) = (0u64, 0, 0f64);
    let mut freed = None;
    while w.moves_due() {
        let s = Instant::now();
        moved += w.move_flows(MOVES_PER_STEP);
        // As `flowgate run`'s workers do: a table a resize emptied goes to the
        // management thread, which frees it (timed apart).
        let retired = w.take_retired_table();
        worst = worst.max(s.elapsed().as_secs_f64());
        steps += 1;
        if let Some(t) = retired {
            let f = Instant::now();
            drop(t);
            freed = Some(f.elapsed().as_secs_f64());
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "tables with {what} taken under {} flows in {:.1} us; then {steps} steps, {moved} moved, {:.2} ms in all, {:.2} us a step on average, worst {:.1} us{}",
        w.flow_count(),
        taken * 1e6,
        dt * 1e3,
        dt * 1e6 / steps.max(1) as f64,
        worst * 1e6,
        freed.map_or(String::new(), |f| format!(
            "; the old table freed apart in {:.2} ms",
            f * 1e3
        ))
    );
}

/// A flow table with 1M non-TCP flows of one pattern rule (30 s), all moved to the class
/// of the rule's new idle timeout (45 s), as a reload that changes it does, in steps.
fn moves() {
    use flowgate::config::FlowTableConf;
    use flowgate::flow::{Flow, FlowKey, FlowTable, Owner, TcpState};
    const S: u64 = 1_000_000_000;
    let conf = FlowTableConf {
        capacity: 1 << 20,
        ..FlowTableConf::default()
    };
    let mut t = FlowTable::new(&conf, &[30 * S]);
    let base = t.base_class_of(TcpState::None, Owner::Rule(0));
    for k in 0..1_000_000u32 {
        let mut key = FlowKey::default();
        key.a[..4].copy_from_slice(&k.to_be_bytes());
        key.proto = 17;
        let mut f = Flow::new(
            Target::Gateway,
            Owner::Rule(0),
            [0; 6],
            0,
            false,
            TcpState::None,
            0,
        );
        f.class = t.class(base, false);
        t.table.insert(key, f, f.class, u64::from(k));
    }
    let t0 = Instant::now();
    t.retime(&conf, &[45 * S], 2 * S, |_, _| {}).unwrap();
    let taken = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let (mut steps, mut moved, mut worst) = (0u64, 0, 0f64);
    while t.moving() {
        let s = Instant::now();
        moved += t.move_step(MOVES_PER_STEP, 2 * S, |_, _| {});
        worst = worst.max(s.elapsed().as_secs_f64());
        steps += 1;
    }
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "a rule's idle timeout 30 s -> 45 s taken under 1000000 non-TCP flows of it in {:.1} us; then {steps} steps, {moved} moved, {:.2} ms in all, {:.2} us a step on average, worst {:.1} us",
        taken * 1e6,
        dt * 1e3,
        dt * 1e6 / steps as f64,
        worst * 1e6
    );
}
