//! How long a worker's sweep takes after an advertised flow changes (see
//! `Worker::sweep`): the shipped web-farm pipeline with 64 advertised-flow slots and 1M
//! established flows, one slot then filled with an advert matching 256 of them, and the
//! sweep run to its end in steps of 256 slots, as `flowgate run`'s workers do once per
//! poll loop. Prints the steps, the flows moved, the total and the mean and worst step.
//! Then the same for a flow listing (`GET /flows` in `flowgate run`) over that table, in
//! steps of `LIST_PER_STEP` slots: all flows (the default limit of 10000 listed), and
//! those of one server. Last, how long a worker takes new tables whose established-TCP
//! timeout changed (a reload): its table's entries of that class are linked again; and
//! whose idle timeout changed: every non-TCP flow moves to the class of its new timeout
//! (with 1M TCP flows, none of which moves, and with 1M non-TCP flows, all moving).
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
    let mut q = w.tables().pipeline.clone();
    for secs in [3600, 300] {
        q.flow_table.tcp_established_ns = secs * 1_000_000_000;
        let t = Arc::new(Tables::build(q.clone(), 3));
        w.expire(2_000_000_000, 0);
        let t0 = Instant::now();
        w.set_tables(t).unwrap();
        println!(
            "tables with tcp_established_timeout {secs} s taken under {} flows in {:.2} ms",
            w.flow_count(),
            t0.elapsed().as_secs_f64() * 1e3
        );
    }
    moves();
    // flow_table's idle timeout: every non-TCP flow is looked at, to move it to its
    // new class (here every flow is TCP: the pass without the relinks).
    for secs in [30, 60] {
        q.flow_table.idle_ns = secs * 1_000_000_000;
        let t = Arc::new(Tables::build(q.clone(), 4));
        let t0 = Instant::now();
        w.set_tables(t).unwrap();
        println!(
            "tables with idle_timeout {secs} s taken under {} flows in {:.2} ms",
            w.flow_count(),
            t0.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// A worker's flow table with 1M non-TCP flows of one pattern rule (30 s), all moved to
/// the class of the rule's new idle timeout (45 s), as a reload that changes it does.
fn moves() {
    use flowgate::config::FlowTableConf;
    use flowgate::flow::{Flow, FlowKey, FlowTable, Owner, TcpState};
    const S: u64 = 1_000_000_000;
    let conf = FlowTableConf {
        capacity: 1 << 20,
        ..FlowTableConf::default()
    };
    let mut t = FlowTable::new(&conf, &[30 * S]);
    let base = t.idle_class(30 * S);
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
    let idle_of = |_: &Flow| 45 * S;
    let t0 = Instant::now();
    t.retime(&conf, &[45 * S], 2 * S, Some(&idle_of)).unwrap();
    println!(
        "1000000 non-TCP flows moved to their rule's new idle timeout's class in {:.2} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
}
