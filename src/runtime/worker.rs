//! `flowgate run`: EAL, ports and workers; the worker poll loop and the management loop.
//!
//! Layer: `runtime` (feature `dpdk`). Safe code only: every DPDK object comes from
//! `port::dpdk`, whose lifetimes order the teardown (queues → ports → pool → EAL).
//! Invariants: a worker touches only its own queues, flow table and counters; it
//! publishes a copy of its counters to the management lcore every
//! [`PUBLISH_NS`] and a final copy when it stops; every received mbuf is either sent,
//! handed to another worker, or freed.

use super::conf::{RunConf, map_ports};
use super::control::ControlRt;
use super::eject::{self, Ejections};
use super::lister::{Board, Lister, WorkerSide};
use super::ramp::{self, Ramps};
use super::{copy_stats, dispatch_hash};
use crate::config::Pipeline;
use crate::pipeline::gauges::{ConnCounts, ServerFlows};
use crate::pipeline::meta::DropReason;
use crate::pipeline::reply::{self, Announcer};
use crate::pipeline::stats::Stats;
use crate::pipeline::{Outcome, Share, Tables, Worker};
use crate::port::dpdk::{
    BURST, DpdkError, Eal, Link, Mbuf, MbufBatch, Mempool, PoolLayout, Port, PortConf, RxQueue,
    SYMMETRIC_RSS_KEY, TxQueue,
};
use anyhow::{Context, Result, anyhow, bail};
use crossbeam::queue::ArrayQueue;
use parking_lot::Mutex;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How often a worker copies its counters for the management lcore (ns).
pub const PUBLISH_NS: u64 = 50_000_000;
/// RX queues configured and polled on a port without RSS (all of the PMD's, up to this).
pub const MAX_POLLED_RXQ: u16 = 16;
/// Frames one software-dispatch queue holds.
pub const DISPATCH_QUEUE: usize = 4096;
/// Expiry work per poll loop (flows examined at most).
const EXPIRE_PER_LOOP: usize = 32;
/// How often the management loop looks for removed entries whose last flow ended
/// ([`reclaim`]).
const RECLAIM_EVERY: Duration = Duration::from_secs(1);
/// Flow-table slots a sweep (after a changed advertised flow) visits per poll loop: 1M
/// flows take 3907 loops, each step about 2.2 µs on the development VM
/// (`cargo run --release --example sweeptime`).
const SWEEP_PER_LOOP: usize = 256;
/// Flow-table slots a reload's timeout pass (flows moved to the classes of their new
/// timeouts) visits per poll loop (`cargo run --release --example sweeptime` times a
/// step).
const MOVES_PER_LOOP: usize = 256;

/// Options of `flowgate run` beyond the conf file.
pub struct RunOpts {
    /// Overrides the conf's `stats.json`.
    pub stats_json: Option<PathBuf>,
    /// No periodic summary line.
    pub quiet: bool,
}

/// What a run did.
pub struct RunResult {
    pub stats_json: serde_json::Value,
    pub summary: String,
    /// Mbufs still in use after the ports were closed (0: nothing leaked).
    pub mempool_in_use: u32,
}

/// What the management lcore shares with a worker.
struct Slot {
    /// The worker's counters, and the generation of the tables it ran when it copied
    /// them (see [`worker_sum`]).
    stats: Mutex<(Stats, u64)>,
    /// Monotonic ns of the last non-empty receive, or of the start of polling (0: the
    /// worker is not polling yet).
    last_rx_ns: AtomicU64,
    flows: AtomicU64,
    tx_refused: AtomicU64,
    dispatch_dropped: AtomicU64,
    /// Frames left in RX queues at stop, freed unprocessed.
    drained: AtomicU64,
    /// Nanoseconds spent in poll loops that received frames (the rest of the time the
    /// worker polled empty queues): how busy the core is, which its CPU time (always
    /// all of it) does not say.
    busy_ns: AtomicU64,
    done: AtomicBool,
}

/// State shared by all lcores.
struct Shared {
    stop: AtomicBool,
    /// Workers that have left their poll loop (and flushed their TX batches).
    stopped: AtomicU64,
    generation: AtomicU64,
    /// The generation of the last tables a reload published (those that removed what
    /// the running tables keep, see [`reclaim`]).
    regrown: AtomicU64,
    tables: Mutex<Arc<Tables>>,
    slots: Vec<Slot>,
    start: Instant,
    /// Flow listings (`GET /flows`) between the management loop and the workers.
    board: Board,
    /// Flow tables the workers' resizes emptied, and the tables they replaced, freed by
    /// the management loop (unmapping a large flow table, or freeing a pipeline of many
    /// rules, would hold a worker for milliseconds).
    retired: Mutex<Vec<Box<dyn Send>>>,
    /// Servers' slow starts, applied to every pipeline published ([`publish_tables`]).
    ramps: Mutex<Ramps>,
    /// The passive health check's servers taken out, applied the same way.
    ejections: Mutex<Ejections>,
    /// Every worker's open flows per server, for `max_flows` and `least-flows`.
    server_flows: Arc<ServerFlows>,
    /// Every client's open flows over all the workers, for `conn_limit` (8 MiB, made
    /// whether or not the pipeline has a limit: a reload may bring one).
    conns: Arc<ConnCounts>,
}

impl Shared {
    #[inline]
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// One worker's queues. Pipeline port index of each RX queue; TX queues by conf port.
struct WorkerIo<'q> {
    rx: Vec<(u16, RxQueue<'q>, bool)>,
    tx: Vec<TxQueue<'q>>,
    /// The pool the queues' mbufs come from (fragments beyond the first go out in
    /// mbufs taken from it).
    pool: &'q Mempool<'q>,
}

/// Loads the pipeline and sizes its flow table for one worker.
pub(super) fn load_pipeline(conf: &RunConf) -> Result<Pipeline> {
    let mut p = Pipeline::load(&conf.pipeline)?;
    if let Some(cap) = conf.flow_capacity {
        p.flow_table.capacity = cap.div_ceil(conf.worker_lcores.len()).max(1);
    }
    Ok(p)
}

/// Runs the data plane until SIGINT/SIGTERM or the idle stop; see the module docs.
pub fn run(conf: &RunConf, opts: &RunOpts) -> Result<RunResult> {
    let mut pipeline = load_pipeline(conf)?;
    // The control plane starts before the EAL so that a bad key or address fails fast;
    // the first tables already carry its view (all servers down with `unheard: down`).
    let mut control = match &conf.control {
        None => None,
        Some(c) => {
            let rt = ControlRt::start(c, pipeline.clone())?;
            pipeline = rt.effective();
            crate::logln!(
                "control: registering with the supervisor at {} as {:?}",
                c.supervisor,
                c.name
            );
            Some(rt)
        }
    };
    let (to_conf, to_pipe) = map_ports(conf, &pipeline.ports).map_err(|e| anyhow!(e))?;
    let n_workers = conf.worker_lcores.len();

    let stop_sig = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for s in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(s, Arc::clone(&stop_sig))
            .context("installing signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
        .context("installing SIGHUP")?;

    // Before the EAL, so that an address in use fails fast. `GET /flows` requests wait in
    // `asks` for the management loop.
    let asks = conf
        .stats_prometheus
        .map(|_| Arc::new(crate::cmd::prom::Asks::default()));
    let exporter = conf
        .stats_prometheus
        .map(|a| crate::cmd::prom::Exporter::bind(a, asks.clone()))
        .transpose()?;
    if let Some(e) = &exporter {
        // Zeros until the first interval's snapshot, rather than an empty page (and
        // `/healthz` says starting until then).
        let zero = crate::pipeline::stats::Stats::new(&pipeline);
        e.set(crate::cmd::prom::render(&zero.to_json(&pipeline)));
        // Three snapshots missed: the management loop is stuck.
        let every = Duration::from_millis(conf.stats_interval_ms);
        e.set_stale_after((every * 3).max(Duration::from_secs(3)));
        crate::logln!(
            "stats: Prometheus metrics on http://{0}/metrics, health on http://{0}/healthz, live flows on http://{0}/flows",
            e.local_addr()
        );
    }
    let eal = Eal::init(&conf.eal_args()).context("EAL initialisation")?;
    let lcores = eal.worker_lcores();
    for l in &conf.worker_lcores {
        if !lcores.contains(l) {
            bail!("worker lcore {l} is not enabled in the EAL (enabled workers: {lcores:?})");
        }
    }
    let data_room = conf.mbuf_data_room();
    let pool = Mempool::new(
        &eal,
        "flowgate",
        conf.mbufs,
        conf.mbuf_cache,
        data_room,
        None,
    )
    .context("creating the mbuf pool (in --no-huge mode, raise -m; else reserve hugepages)")?;
    crate::logln!(
        "mbuf pool: {} mbufs of {} bytes, {} layout",
        pool.size(),
        data_room,
        match pool.layout() {
            PoolLayout::Packed => "packed (no hugepages)",
            PoolLayout::Default => "DPDK's default",
        }
    );

    let mut ports = Vec::new();
    for spec in &conf.ports {
        let port = Port::by_name(&eal, spec.dpdk_name()).map_err(|e| match e {
            DpdkError::NoSuchPort(_) => anyhow!(
                "port {:?}: device {:?} did not probe (check the device string, the interface or file it names, \
                 and for a PCI NIC its vfio-pci binding; DPDK's log above says why)",
                spec.name,
                spec.device
            ),
            e => anyhow!(e),
        })?;
        ports.push(port);
    }
    // Queues: RSS when the PMD has it and several workers need it. Else one RX queue on a
    // PMD with RSS; on a PMD without, every RX queue it has (up to MAX_POLLED_RXQ). Worker
    // 0 polls them all and, with several workers, hands frames to the others (software
    // dispatch). A PMD without RSS may spread frames over its queues by its own rule:
    // net_af_packet with qpairs=N fans them out over N sockets, configured or not. A queue
    // nobody polls would lose frames, and that rule need not keep a flow's two directions,
    // fragments and ICMP errors together as the dispatcher's hash does.
    let mut rss_used = vec![false; ports.len()];
    for (i, port) in ports.iter_mut().enumerate() {
        let spec = &conf.ports[i];
        let info = port.info().with_context(|| format!("port {}", spec.name))?;
        let nw = n_workers as u16;
        if info.max_tx_queues < nw {
            bail!(
                "port {:?} ({}) offers {} TX queues; {} workers need one each (use fewer workers, or qpairs= for net_af_packet)",
                spec.name,
                info.driver,
                info.max_tx_queues,
                n_workers
            );
        }
        let rss = n_workers > 1 && info.rss_offloads != 0 && info.max_rx_queues >= nw;
        // Without RSS, the queues the PMD may spread frames over.
        let all_rxq = info.max_rx_queues.clamp(1, MAX_POLLED_RXQ);
        let mut pc = PortConf {
            // A PMD with RSS sends everything to the one queue configured.
            n_rxq: if rss {
                nw
            } else if info.rss_offloads != 0 {
                1
            } else {
                all_rxq
            },
            n_txq: nw,
            rx_desc: spec.rx_desc,
            tx_desc: spec.tx_desc,
            rss_key: Some(SYMMETRIC_RSS_KEY),
            promiscuous: true,
            mtu: spec.mtu,
        };
        // What went wrong starting the port, with a hint where one helps.
        let start_err = |e: DpdkError| {
            let hint = match &e {
                DpdkError::Call {
                    what: "rte_eth_rx_queue_setup",
                    ..
                } => format!(
                    "; the pool needs more than ports × RX queues × rx_desc mbufs ({}) plus caches",
                    conf.mbufs
                ),
                DpdkError::Call {
                    what: "rte_eth_dev_set_mtu",
                    ..
                } => format!("; the device does not take mtu {}", spec.mtu.unwrap_or(0)),
                _ => String::new(),
            };
            anyhow!(e).context(format!(
                "starting port {:?} ({}){hint}",
                spec.name, spec.device
            ))
        };
        let hf = port.start(&pc, &pool).map_err(start_err)?;
        if rss && hf == 0 {
            // The PMD advertised RSS but applied none: software dispatch.
            pc.n_rxq = all_rxq;
            port.start(&pc, &pool).map_err(start_err)?;
        }
        rss_used[i] = rss && hf != 0;
        crate::logln!(
            "port {} = {} ({}): {} rx / {} tx queues, {}",
            spec.name,
            spec.device,
            info.driver,
            pc.n_rxq,
            pc.n_txq,
            if n_workers == 1 {
                "one worker"
            } else if rss_used[i] {
                "symmetric RSS"
            } else {
                "software dispatch"
            }
        );
        // Packets up to the port's `system.mtu` pass the pipeline's check; a port whose
        // own MTU is lower would be handed frames larger than its link takes.
        if let (Some(sys), Ok(m)) = (pipeline.mtu_for(to_pipe[i]), port.mtu())
            && m < sys
        {
            crate::logln!(
                "warning: port {} has MTU {m}, below system.mtu {sys}: packets of {}..={sys} \
                 bytes would leave larger than its link takes (set the port's mtu: {sys}, or \
                 lower system.mtu)",
                spec.name,
                m + 1
            );
        }
    }

    // The servers up at the start take their whole weight; those that come up later ramp.
    let mut ramps = Ramps::default();
    ramps.apply(&mut pipeline, 0);
    // The passive health check counts from here.
    let mut ejections = Ejections::default();
    ejections.observe(&pipeline, &[], 0);
    let tables = Arc::new(Tables::build(pipeline, 1));
    let shared = Shared {
        stop: AtomicBool::new(false),
        stopped: AtomicU64::new(0),
        generation: AtomicU64::new(1),
        regrown: AtomicU64::new(1),
        tables: Mutex::new(Arc::clone(&tables)),
        slots: (0..n_workers)
            .map(|_| Slot {
                stats: Mutex::new((Stats::new(&tables.pipeline), 0)),
                last_rx_ns: AtomicU64::new(0),
                flows: AtomicU64::new(0),
                tx_refused: AtomicU64::new(0),
                dispatch_dropped: AtomicU64::new(0),
                drained: AtomicU64::new(0),
                busy_ns: AtomicU64::new(0),
                done: AtomicBool::new(false),
            })
            .collect(),
        start: Instant::now(),
        board: Board::new(n_workers),
        retired: Mutex::new(Vec::new()),
        ramps: Mutex::new(ramps),
        ejections: Mutex::new(ejections),
        server_flows: ServerFlows::new(n_workers),
        conns: ConnCounts::new(),
    };
    // Where the stats JSON goes: rewritten every interval while running, and at the stop.
    let stats_path = opts.stats_json.as_deref().or(conf.stats_json.as_deref());
    // A port without RSS is dispatched in software when there are several workers.
    let dispatched = |ci: usize| n_workers > 1 && !rss_used[ci];
    let inboxes: Vec<ArrayQueue<(u16, Mbuf<'_>)>> = if (0..ports.len()).any(dispatched) {
        (0..n_workers)
            .map(|_| ArrayQueue::new(DISPATCH_QUEUE))
            .collect()
    } else {
        Vec::new()
    };

    let launch_result = {
        let mut ios: Vec<WorkerIo<'_>> = (0..n_workers)
            .map(|_| WorkerIo {
                rx: Vec::new(),
                tx: Vec::new(),
                pool: &pool,
            })
            .collect();
        for (ci, port) in ports.iter().enumerate() {
            let (rxs, txs) = port.queues()?;
            for (q, rxq) in rxs.into_iter().enumerate() {
                // RSS: worker q owns queue q. Otherwise worker 0 polls them all.
                let w = if rss_used[ci] { q } else { 0 };
                ios[w].rx.push((to_pipe[ci], rxq, dispatched(ci)));
            }
            for (q, txq) in txs.into_iter().enumerate() {
                ios[q].tx.push(txq);
            }
        }
        let shared = &shared;
        let announce = (conf.announce_rounds, conf.announce_interval_ms);
        let to_conf = &to_conf[..];
        let inboxes = &inboxes[..];
        let stop_sig = &stop_sig;
        let hup = &hup;
        let control = &mut control;
        eal.scope(|s| -> Result<()> {
            for (i, io) in ios.into_iter().enumerate() {
                let lcore = conf.worker_lcores[i];
                s.launch(lcore, move || {
                    worker_loop(i, io, shared, to_conf, inboxes, announce)
                })
                .with_context(|| format!("launching worker {i} on lcore {lcore}"))?;
            }
            let mut live = Live {
                ports: &ports,
                json: stats_path,
                prometheus: exporter.as_ref(),
                lister: asks.clone().map(Lister::new),
            };
            manage(
                conf,
                shared,
                stop_sig,
                hup,
                opts.quiet,
                &mut live,
                control.as_mut(),
            );
            if let Some(e) = live.prometheus {
                e.stopping();
            }
            Ok(())
        })
    };
    // Stop workers even when a launch failed (the scope has already waited for them).
    shared.stop.store(true, Relaxed);
    let scoped = launch_result.context("worker lcores")?;
    scoped?;
    // Frames still queued for dispatch are freed here, before the ports close.
    let mut leftover = 0u64;
    for q in &inboxes {
        while q.pop().is_some() {
            leftover += 1;
        }
    }
    drop(inboxes);

    let seconds = shared.start.elapsed().as_secs_f64();
    // The last tables published (a reload may have added services and servers).
    let latest = Arc::clone(&shared.tables.lock());
    let p = &latest.pipeline;
    // Busy shares over the whole run.
    let g = gather(&shared, conf, p, &vec![0; n_workers], seconds);
    let (total, flows, tx_refused) = (g.sum, g.flows, g.tx_refused);
    let dispatch_dropped = g.dispatch_dropped + leftover;
    let drained: u64 = shared.slots.iter().map(|s| s.drained.load(Relaxed)).sum();
    let port_stats = port_stats_json(conf, &ports);
    for port in ports {
        port.close().context("closing a port")?;
    }
    let in_use = pool.in_use_count();
    let j = stats_json(
        &total,
        p,
        json!({
            "running": false,
            "seconds": seconds,
            "workers": n_workers,
            "live_flows": flows,
            "flow_capacity": p.flow_table.capacity * n_workers,
            "tx_refused": tx_refused,
            "dispatch_dropped": dispatch_dropped,
            "per_worker": g.per_worker,
            "drained_at_stop": drained,
            "mempool_in_use": in_use,
            "ports": port_stats,
        }),
        control.as_ref(),
    );
    if let Some(f) = stats_path {
        crate::cmd::write_json(f, &j)?;
    }
    let summary = format!(
        "packets in {}  out {}  dropped {}  ({:.3} s)\nflows created {}  live {}  moved {}  tx refused {}  dispatch dropped {}\n\
         arp replies {}  nd replies {}  icmp errors {}  echo replies {}  fragments out {} (unsent {})\n\
         mempool in use after stop: {in_use} of {}\n",
        total.packets_in,
        total.packets_out,
        total.dropped(),
        seconds,
        total.flows_created,
        flows,
        total.flows_moved,
        tx_refused,
        dispatch_dropped,
        total.arp_replies,
        total.nd_replies,
        total.icmp_errors,
        total.echo_replies,
        total.fragments_out,
        total.fragments_unsent,
        pool.size()
    );
    drop(pool);
    drop(eal); // rte_eal_cleanup
    Ok(RunResult {
        stats_json: j,
        summary,
        mempool_in_use: in_use,
    })
}

/// What the management loop reports on while the run goes on.
struct Live<'a> {
    ports: &'a [Port<'a>],
    /// Where the stats JSON goes (rewritten every interval, and at the stop).
    json: Option<&'a std::path::Path>,
    /// Where the same stats are served for Prometheus (refreshed every interval).
    prometheus: Option<&'a crate::cmd::prom::Exporter>,
    /// Answers `GET /flows` on the same server.
    lister: Option<Lister>,
}

/// The management loop on the main lcore: signals, idle stop, table publication, the
/// periodic summary line and stats file. Returns when the run must stop.
fn manage(
    conf: &RunConf,
    shared: &Shared,
    stop_sig: &AtomicBool,
    hup: &AtomicBool,
    quiet: bool,
    live: &mut Live<'_>,
    mut control: Option<&mut ControlRt>,
) {
    // However the loop ends, a panic included, the workers are told to stop: nobody
    // else would, and the run would never end.
    let _stop = StopGuard(&shared.stop);
    // What a SIGHUP may change (see `reload`).
    let mut conf = conf.clone();
    let p0 = Arc::clone(&shared.tables.lock());
    let mut sum = Stats::new(&p0.pipeline);
    let mut last_print = Instant::now();
    // Each worker's busy time at the last summary, for the busy share since.
    let mut last_busy = vec![0u64; shared.slots.len()];
    let mut last_reclaim = Instant::now();
    // Each port's link as last read (`None`: not yet, or the driver refused).
    let mut links: Vec<Option<Link>> = vec![None; live.ports.len()];
    let mut last_link: Option<Instant> = None;
    let mut last_ramp = Instant::now();
    let mut last_eject = Instant::now();
    let (mut last_in, mut last_out) = (0u64, 0u64);
    loop {
        // The control plane's turn doubles as the loop's 10 ms wait.
        match control.as_deref_mut() {
            Some(c) => {
                if let Some(p) = c.turn(Duration::from_millis(10)) {
                    publish_tables(shared, p, "control: tables published");
                }
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
        if stop_sig.load(Relaxed) {
            crate::logln!("stopping (signal)");
            break;
        }
        if shared.slots.iter().any(|s| s.done.load(Relaxed)) {
            crate::logln!("stopping (a worker ended)");
            break;
        }
        // The idle clock starts once every worker is polling (building a large flow table
        // takes a while, longer in a debug build).
        if conf.idle_ms > 0 && shared.slots.iter().all(|s| s.last_rx_ns.load(Relaxed) != 0) {
            let now = shared.now_ns();
            let last = shared
                .slots
                .iter()
                .map(|s| s.last_rx_ns.load(Relaxed))
                .max()
                .unwrap_or(0);
            if now.saturating_sub(last) > conf.idle_ms * 1_000_000 {
                crate::logln!("stopping (idle for {} ms)", conf.idle_ms);
                break;
            }
        }
        if hup.swap(false, Relaxed) {
            reload(&mut conf, shared, control.as_deref_mut());
        }
        if last_link.is_none_or(|t| t.elapsed() >= LINK_EVERY) {
            last_link = Some(Instant::now());
            watch_links(&conf, live.ports, &mut links);
        }
        // A slow start under way: its servers a step closer to their weights.
        if last_ramp.elapsed() >= Duration::from_nanos(ramp::STEP) {
            last_ramp = Instant::now();
            if shared.ramps.lock().under_way() {
                // Cloned outside the lock: a worker taking tables waits on it.
                let cur = Arc::clone(&shared.tables.lock());
                publish_ramped(shared, cur.pipeline.clone(), None);
            }
        }
        // The passive health check: servers failing go out, those whose time is up back.
        if last_eject.elapsed() >= Duration::from_nanos(eject::EVERY) {
            last_eject = Instant::now();
            check_fails(shared);
        }
        if last_reclaim.elapsed() >= RECLAIM_EVERY {
            last_reclaim = Instant::now();
            reclaim(shared, control.as_deref_mut());
        }
        // Outside the lock: freeing a table takes milliseconds.
        let retired = std::mem::take(&mut *shared.retired.lock());
        drop(retired);
        if let Some(l) = &mut live.lister {
            l.turn(&shared.board, &shared.tables);
        }
        if conf.stats_interval_ms > 0
            && last_print.elapsed() >= Duration::from_millis(conf.stats_interval_ms)
        {
            let dt = last_print.elapsed().as_secs_f64();
            last_print = Instant::now();
            // The tables now published: a reload may have added services and servers.
            let cur = Arc::clone(&shared.tables.lock());
            let g = gather(shared, &conf, &cur.pipeline, &last_busy, dt);
            last_busy = g.busy_ns;
            sum = g.sum;
            let (flows, tx_refused, dispatch_dropped) = (g.flows, g.tx_refused, g.dispatch_dropped);
            if !quiet {
                let busy: Vec<String> = (g.busy.iter())
                    .map(|b| format!("{:.0}", b * 100.0))
                    .collect();
                crate::logln!(
                    "[{:7.1} s] rx {:.3} Mpps  tx {:.3} Mpps  in {}  out {}  dropped {}  flows {}  evicted {} ({} assured)  moved {}  busy {} %{}",
                    shared.start.elapsed().as_secs_f64(),
                    (sum.packets_in - last_in) as f64 / dt / 1e6,
                    (sum.packets_out - last_out) as f64 / dt / 1e6,
                    sum.packets_in,
                    sum.packets_out,
                    sum.dropped(),
                    flows,
                    sum.flows_evicted,
                    sum.flows_evicted_assured,
                    sum.flows_moved,
                    busy.join("/"),
                    control
                        .as_deref()
                        .map(|c| format!("  {}", c.summary()))
                        .unwrap_or_default()
                );
            }
            if live.json.is_some() || live.prometheus.is_some() {
                let j = stats_json(
                    &sum,
                    &cur.pipeline,
                    json!({
                        "running": true,
                        "seconds": shared.start.elapsed().as_secs_f64(),
                        "workers": shared.slots.len(),
                        "live_flows": flows,
                        "flow_capacity": cur.pipeline.flow_table.capacity * shared.slots.len(),
                        "tx_refused": tx_refused,
                        "dispatch_dropped": dispatch_dropped,
                        "per_worker": g.per_worker,
                        "ports": port_stats_json(&conf, live.ports),
                    }),
                    control.as_deref(),
                );
                if let Some(e) = live.prometheus {
                    e.set_snapshot(&j);
                }
                // A monitoring file: a failed write is reported, the run goes on.
                if let Some(f) = live.json
                    && let Err(e) = crate::cmd::write_json(f, &j)
                {
                    crate::logln!("stats: {e:#}");
                }
            }
            last_in = sum.packets_in;
            last_out = sum.packets_out;
        }
    }
    let _ = sum;
}

/// Sets the workers' stop flag when the management loop ends, also by a panic.
struct StopGuard<'a>(&'a AtomicBool);
impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

/// The stats JSON: the counters in `total` (as `flowgate replay --stats-json` writes
/// them), `runtime`, and the control plane's view when there is one.
fn stats_json(
    total: &Stats,
    p: &Pipeline,
    runtime: serde_json::Value,
    control: Option<&ControlRt>,
) -> serde_json::Value {
    let mut j = total.to_json(p);
    if let Some(o) = j.as_object_mut() {
        o.insert("runtime".into(), runtime);
        if let Some(c) = control {
            o.insert("control".into(), c.to_json());
        }
    }
    j
}

/// Each port's counters by conf name (`rte_eth_stats_get`, which DPDK applications also
/// call while their data cores run), a port whose driver refuses showing zeros, and its
/// link (`rte_eth_link_get_nowait`; `link_up` false, `speed_mbps` 0 when the driver
/// refuses).
fn port_stats_json(conf: &RunConf, ports: &[Port<'_>]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (i, port) in ports.iter().enumerate() {
        let st = port.stats().unwrap_or_default();
        let link = port.link().ok();
        m.insert(
            conf.ports[i].name.clone(),
            json!({ "ipackets": st.ipackets, "opackets": st.opackets, "imissed": st.imissed,
                    "ierrors": st.ierrors, "oerrors": st.oerrors, "rx_nombuf": st.rx_nombuf,
                    "link_up": link.is_some_and(|l| l.up),
                    "speed_mbps": link.and_then(|l| l.speed()).unwrap_or(0) }),
        );
    }
    serde_json::Value::Object(m)
}

/// How often the management core reads the ports' links.
const LINK_EVERY: Duration = Duration::from_millis(250);

/// Reads each port's link and logs it when it differs from `links` (the last reading):
/// the first reading, and every change after (`port inside: link down`).
fn watch_links(conf: &RunConf, ports: &[Port<'_>], links: &mut [Option<Link>]) {
    for ((port, spec), last) in ports.iter().zip(&conf.ports).zip(links.iter_mut()) {
        let Ok(now) = port.link() else { continue };
        if *last != Some(now) {
            crate::logln!("port {}: link {now}", spec.name);
            *last = Some(now);
        }
    }
}

/// SIGHUP: reload the pipeline and publish new tables when it can replace the running one
/// ([`Pipeline::regrow`]: servers, services and members may be added, removed ones are
/// kept while flows use them, see [`reclaim`]), with the control plane's view applied on
/// top when there is one.
/// The conf file is read again for what the management core can take live
/// ([`RunConf::reload_from`]: the pipeline file it names, `flows.capacity` — a new size
/// is a new flow table in each worker —, `stop.idle_ms`, `stats.interval_ms`); `conf`
/// becomes that when the reload is taken. Its other settings take a restart: the log
/// names those that changed.
fn reload(conf: &mut RunConf, shared: &Shared, control: Option<&mut ControlRt>) {
    let fresh = match RunConf::load(&conf.source) {
        Ok(c) => c,
        Err(e) => {
            crate::logln!("reload refused: {e}");
            return;
        }
    };
    let (next, restart) = conf.reload_from(&fresh);
    match load_pipeline(&next) {
        Err(e) => crate::logln!("reload refused: {e:#}"),
        Ok(p) => {
            let p = match &control {
                Some(c) => c.with_slots(p),
                None => p,
            };
            let cur = Arc::clone(&shared.tables.lock());
            // New servers, services and members may join and removed ones are kept
            // (down, weight 0, retired); nothing that flows or counters point at moves.
            // New entries take free indices where every worker's counters read zero (a
            // worker that has not taken the tables that freed one may still show what
            // the entry there counted).
            let (sum, _) = worker_sum(shared, &cur);
            let p = match cur.pipeline.regrow_with(p, |e| sum.counts_nothing(e)) {
                Ok(p) => p,
                Err(why) => {
                    crate::logln!("reload refused: {why} (restart to apply)");
                    return;
                }
            };
            let mut why = "pipeline reloaded".to_string();
            for c in crate::config::changes::reload_changes(&cur.pipeline, &p) {
                why += &format!("; {c}");
            }
            for c in conf.live_changes(&next) {
                why += &format!("; conf: {c}");
            }
            if !restart.is_empty() {
                why += &format!(
                    "; conf: {} changed, kept as running until a restart",
                    restart.join(", ")
                );
            }
            *conf = next;
            let p = match control {
                Some(c) => c.set_base(p),
                None => p,
            };
            let g = publish_tables(shared, p, &why);
            shared.regrown.store(g, Relaxed);
        }
    }
}

/// What the workers last published ([`publish`]), gathered by the management core.
struct Gathered {
    /// Their counters summed.
    sum: Stats,
    flows: u64,
    tx_refused: u64,
    dispatch_dropped: u64,
    /// Each worker's busy time (ns, [`Slot::busy_ns`]).
    busy_ns: Vec<u64>,
    /// Each worker's share of the time since the last gathering spent busy.
    busy: Vec<f64>,
    /// The stats JSON's `runtime.per_worker`: each worker's figures, by index.
    per_worker: serde_json::Map<String, serde_json::Value>,
}

/// The workers' figures, with counters shaped for `p`, and each worker's busy share of
/// the last `dt` seconds, in which it was `since[i]` ns busy before.
fn gather(shared: &Shared, conf: &RunConf, p: &Pipeline, since: &[u64], dt: f64) -> Gathered {
    let mut g = Gathered {
        sum: Stats::new(p),
        flows: 0,
        tx_refused: 0,
        dispatch_dropped: 0,
        busy_ns: Vec::with_capacity(shared.slots.len()),
        busy: Vec::with_capacity(shared.slots.len()),
        per_worker: serde_json::Map::new(),
    };
    for (i, slot) in shared.slots.iter().enumerate() {
        let (packets_in, packets_out, dropped) = {
            let s = slot.stats.lock();
            g.sum.merge(&s.0);
            (s.0.packets_in, s.0.packets_out, s.0.dropped())
        };
        let flows = slot.flows.load(Relaxed);
        g.flows += flows;
        g.tx_refused += slot.tx_refused.load(Relaxed);
        g.dispatch_dropped += slot.dispatch_dropped.load(Relaxed);
        let busy_ns = slot.busy_ns.load(Relaxed);
        let was = since.get(i).copied().unwrap_or(0);
        let busy = if dt > 0.0 {
            (busy_ns.saturating_sub(was) as f64 / 1e9 / dt).clamp(0.0, 1.0)
        } else {
            0.0
        };
        g.per_worker.insert(
            i.to_string(),
            json!({
                "lcore": conf.worker_lcores.get(i),
                "packets_in": packets_in,
                "packets_out": packets_out,
                "dropped": dropped,
                "live_flows": flows,
                "busy_seconds": busy_ns as f64 / 1e9,
                "busy": busy,
            }),
        );
        g.busy_ns.push(busy_ns);
        g.busy.push(busy);
    }
    g
}

/// Every worker's counters summed (shaped as `cur`), and whether each copied them
/// running the tables of the last reload or later ones: then an entry the current
/// tables keep for its flows (removed by that reload or an earlier one) that no flow of
/// these counts uses has no flow left at all, since none is made after it is removed.
fn worker_sum(shared: &Shared, cur: &Tables) -> (Stats, bool) {
    let regrown = shared.regrown.load(Relaxed);
    let mut sum = Stats::new(&cur.pipeline);
    let mut settled = true;
    for slot in &shared.slots {
        let s = slot.stats.lock();
        settled &= s.1 >= regrown;
        sum.merge(&s.0);
    }
    (sum, settled)
}

/// Frees the entries reloads removed whose last flow ended ([`Pipeline::reclaim`]) and
/// publishes the tables without them: their names leave the counters, and their indices
/// wait for new entries. Waits (does nothing) until every worker has taken the last
/// reload's tables and published its counters from them.
fn reclaim(shared: &Shared, control: Option<&mut ControlRt>) {
    let cur = Arc::clone(&shared.tables.lock());
    if !cur.pipeline.keeps_removed() {
        return;
    }
    let (sum, settled) = worker_sum(shared, &cur);
    if !settled {
        return;
    }
    let open = crate::config::OpenFlows {
        servers: &sum.server_flows,
        services: &sum.svc_open,
        rules: &sum.rule_open,
    };
    let base = control.as_ref().map_or(&cur.pipeline, |c| c.base());
    let Some((p, freed)) = base.reclaim(&open) else {
        return;
    };
    let p = match control {
        Some(c) => c.set_base(p),
        None => p,
    };
    publish_tables(
        shared,
        p,
        &format!("freed, their last flows ended: {freed}"),
    );
}

/// Builds and publishes tables for `p` (the current ones' shape, or grown from it), its
/// servers' slow starts applied: workers take them at their next poll. Logs `why`, the
/// slow starts begun or done, and services going to their backup servers or back.
/// Returns their generation.
fn publish_tables(shared: &Shared, p: Pipeline, why: &str) -> u64 {
    publish_ramped(shared, p, Some(why))
}

/// Reads the workers' failure counters for the passive health check
/// ([`Ejections::observe`]): publishes the tables again when a server goes out or comes
/// back, and logs it.
fn check_fails(shared: &Shared) {
    let cur = Arc::clone(&shared.tables.lock());
    if !Ejections::watches(&cur.pipeline) {
        return;
    }
    let (sum, _) = worker_sum(shared, &cur);
    let ch = (shared.ejections.lock()).observe(&cur.pipeline, &sum.server_fails, shared.now_ns());
    match ch.phrase() {
        Some(why) if ch.republish() => {
            publish_tables(shared, cur.pipeline.clone(), &why);
        }
        Some(why) => crate::logln!("{why}"),
        None => {}
    }
}

/// [`publish_tables`]; without `why` (a slow start's step) it logs only the slow starts
/// done and the services that go to their backup servers or back
/// ([`Tables::backup_news`]).
fn publish_ramped(shared: &Shared, mut p: Pipeline, why: Option<&str>) -> u64 {
    // Servers taken out by the passive health check first: one that comes back ramps.
    shared.ejections.lock().apply(&mut p);
    let ramped = shared.ramps.lock().apply(&mut p, shared.now_ns());
    let g = shared.generation.load(Relaxed) + 1;
    // What did not change is taken from the tables in use (Maglev tables are most of
    // the build: a control-plane change of one server rebuilds only its services').
    let prev = Arc::clone(&shared.tables.lock());
    let t = Arc::new(Tables::build_after(p, g, &prev));
    let tiers = t.backup_news(&prev);
    drop(prev);
    *shared.tables.lock() = t;
    shared.generation.store(g, Relaxed);
    let said: Vec<String> = [why.map(str::to_string), ramped.phrase(), tiers]
        .into_iter()
        .flatten()
        .collect();
    if !said.is_empty() {
        crate::logln!("{} (generation {g})", said.join("; "));
    }
    g
}

/// Marks the slot done when the worker leaves its loop, also by a panic.
struct DoneGuard<'a>(&'a Slot);
impl Drop for DoneGuard<'_> {
    fn drop(&mut self) {
        self.0.done.store(true, Relaxed);
    }
}

/// The poll loop of worker `idx`.
fn worker_loop<'q>(
    idx: usize,
    mut io: WorkerIo<'q>,
    shared: &Shared,
    to_conf: &[usize],
    inboxes: &[ArrayQueue<(u16, Mbuf<'q>)>],
    (rounds, interval_ms): (u32, u64),
) {
    let slot = &shared.slots[idx];
    let _done = DoneGuard(slot);
    let mut generation = shared.generation.load(Relaxed);
    let mut w = Worker::new(Arc::clone(&shared.tables.lock()));
    // Before any flow touches it: huge pages spare every lookup a TLB miss.
    crate::port::dpdk::advise_huge_pages(&w.memory());
    let n_workers = shared.slots.len();
    let share = Share::new(idx, n_workers).unwrap_or(Share::ALL);
    w.set_share(share);
    if let Some(row) = shared.server_flows.row(idx) {
        w.set_server_flows(row);
    }
    w.set_conn_counts(Arc::clone(&shared.conns));
    // The first worker announces the system's addresses on every port (it owns queue 0
    // of each): those of the first tables now, those a reload brings when it comes.
    let mut announcer = (idx == 0).then(|| {
        let mut a = Announcer::new(rounds, interval_ms.saturating_mul(1_000_000));
        a.own(
            shared.tables.lock().pipeline.owned_addresses(),
            shared.now_ns(),
        );
        a
    });
    let mut rxb: MbufBatch<'q> = MbufBatch::new();
    // This worker's frames picked out of a dispatched burst or its inbox.
    let mut mine: MbufBatch<'q> = MbufBatch::new();
    let mut txb: Vec<MbufBatch<'q>> = io.tx.iter().map(|_| MbufBatch::new()).collect();
    let mut last_pub = 0u64;
    let mut dispatch_dropped = 0u64;
    let mut listing = WorkerSide::default();
    slot.last_rx_ns.store(shared.now_ns().max(1), Relaxed); // polling starts: idle clock on
    // When the last poll loop started, and whether it received frames: a loop that did
    // counts as busy until the next one starts.
    let (mut busy_ns, mut last_loop) = (0u64, (0u64, false));
    loop {
        let now = shared.now_ns();
        if last_loop.1 {
            busy_ns += now.saturating_sub(last_loop.0);
        }
        let g = shared.generation.load(Relaxed);
        if g != generation {
            generation = g;
            // The management core only publishes tables that keep or grow the shape (SIGHUP
            // refuses others); a grown one resizes this worker's counters, here between
            // two bursts (an allocation, once per reload that grew the pipeline).
            let table = w.memory()[0].0;
            let latest = Arc::clone(&shared.tables.lock());
            if let Some(a) = announcer.as_mut() {
                a.own(latest.pipeline.owned_addresses(), now);
            }
            if let Ok(old) = w.set_tables(latest) {
                // Freeing a large pipeline takes milliseconds: the management thread
                // drops the last reference (unless it is not the last one here).
                shared.retired.lock().push(Box::new(old));
            }
            if w.memory()[0].0 != table {
                // A new flow table (a new size): huge pages for it too.
                crate::port::dpdk::advise_huge_pages(&w.memory());
            }
        }
        let mut got = 0usize;
        for (in_port, rxq, dispatch) in io.rx.iter_mut() {
            let n = rxq.rx_burst(&mut rxb);
            if n == 0 {
                continue;
            }
            got += n;
            let in_port = *in_port;
            if *dispatch {
                // Software dispatch: keep this worker's share (in order, as one burst),
                // hand the rest over. By addresses: every flow of a client comes here,
                // which holds it to its whole rate limit.
                w.set_limit_share(Share::ALL);
                rxb.drain_each(|m| {
                    let target =
                        dispatch_hash(m.data()).map_or(0, |h| (h % n_workers as u64) as usize);
                    if target == idx {
                        // `mine` is empty here and one rx_burst holds at most BURST
                        // frames, so there is room.
                        let _ = mine.push(m);
                    } else if inboxes[target].push((in_port, m)).is_err() {
                        dispatch_dropped += 1; // the Err holds the mbuf, freed here
                    }
                });
                run_burst(
                    &mut w, io.pool, &mut mine, in_port, now, to_conf, &mut txb, &mut io.tx,
                );
            } else {
                // The whole burst at once: its flow-table misses overlap. RSS spread
                // a client's connections over the workers by their ports: each holds
                // it to its part of the rate limit.
                w.set_limit_share(share);
                run_burst(
                    &mut w, io.pool, &mut rxb, in_port, now, to_conf, &mut txb, &mut io.tx,
                );
            }
        }
        if let Some(inbox) = inboxes.get(idx) {
            // Frames handed over by the dispatcher, in bursts of one input port each.
            w.set_limit_share(Share::ALL);
            let mut port = 0u16;
            for _ in 0..BURST {
                let Some((in_port, m)) = inbox.pop() else {
                    break;
                };
                got += 1;
                if !mine.is_empty() && in_port != port {
                    run_burst(
                        &mut w, io.pool, &mut mine, port, now, to_conf, &mut txb, &mut io.tx,
                    );
                }
                port = in_port;
                let _ = mine.push(m); // emptied above whenever it could be full
            }
            run_burst(
                &mut w, io.pool, &mut mine, port, now, to_conf, &mut txb, &mut io.tx,
            );
        }
        for (c, b) in txb.iter_mut().enumerate() {
            flush(&mut io.tx[c], b);
        }
        if let Some(addrs) = announcer.as_mut().and_then(|a| a.due(now)) {
            let mac = shared.tables.lock().pipeline.mac;
            w.stats.announcements += announce(addrs, mac, io.pool, &mut txb, &mut io.tx);
        }
        if got > 0 {
            slot.last_rx_ns.store(now.max(1), Relaxed);
        }
        last_loop = (now, got > 0);
        w.expire(now, EXPIRE_PER_LOOP);
        w.sweep(SWEEP_PER_LOOP);
        w.move_flows(MOVES_PER_LOOP);
        if let Some(t) = w.take_retired_table() {
            shared.retired.lock().push(t);
        }
        listing.step(&shared.board, idx, &w, now);
        if now.wrapping_sub(last_pub) >= PUBLISH_NS {
            last_pub = now;
            publish(slot, &w, &io, dispatch_dropped, busy_ns);
        }
        if shared.stop.load(Relaxed) {
            break;
        }
    }
    publish(slot, &w, &io, dispatch_dropped, busy_ns);
    // Two-phase stop: once every worker has flushed its last TX batch, free what is left
    // in our RX queues (a loopback PMD such as net_ring keeps sent frames in its ring, and
    // closing the port would not free them). Bounded: net_null never runs dry.
    shared.stopped.fetch_add(1, Relaxed);
    let t0 = Instant::now();
    while shared.stopped.load(Relaxed) < shared.slots.len() as u64
        && t0.elapsed() < Duration::from_secs(2)
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut drained = 0u64;
    for (_, rxq, _) in io.rx.iter_mut() {
        for _ in 0..4096 {
            let n = rxq.rx_burst(&mut rxb);
            if n == 0 {
                break;
            }
            drained += n as u64;
            rxb.clear();
        }
    }
    if let Some(inbox) = inboxes.get(idx) {
        while inbox.pop().is_some() {
            drained += 1;
        }
    }
    slot.drained.store(drained, Relaxed);
}

fn publish(slot: &Slot, w: &Worker, io: &WorkerIo<'_>, dispatch_dropped: u64, busy_ns: u64) {
    {
        let mut s = slot.stats.lock();
        copy_stats(&mut s.0, &w.stats);
        s.1 = w.tables().generation;
    }
    slot.flows.store(w.flow_count() as u64, Relaxed);
    slot.tx_refused
        .store(io.tx.iter().map(TxQueue::refused).sum(), Relaxed);
    slot.dispatch_dropped.store(dispatch_dropped, Relaxed);
    slot.busy_ns.store(busy_ns, Relaxed);
}

/// Runs the frames of `b` (all from `in_port`) through the pipeline as one burst and
/// queues each on its output port (or frees it when dropped), followed by the fragments
/// the pipeline cut from it, copied into mbufs from `pool`; `b` is left empty.
#[inline]
#[allow(clippy::too_many_arguments)]
fn run_burst<'q>(
    w: &mut Worker,
    pool: &'q Mempool<'_>,
    b: &mut MbufBatch<'q>,
    in_port: u16,
    now: u64,
    to_conf: &[usize],
    txb: &mut [MbufBatch<'q>],
    tx: &mut [TxQueue<'q>],
) {
    if b.is_empty() {
        return;
    }
    // A frame chained over several mbufs is dropped and counted, not read in part (the
    // burst is only rewritten when it holds one).
    if b.iter().any(|m| m.segments() != 1) {
        let n = b.len();
        b.retain(|m| m.segments() == 1);
        for _ in b.len()..n {
            w.count_drop(DropReason::Segmented);
        }
        if b.is_empty() {
            return;
        }
    }
    let mut outs = [Outcome::default(); BURST];
    let n = b.len();
    w.process_burst(b.as_mut_slice(), in_port, now, &mut outs[..n]);
    let mut k = 0;
    let mut unsent = 0;
    {
        let mut extra = w.extra_frames().peekable();
        b.drain_each(|m| {
            send(outs[k], m, to_conf, txb, tx);
            // The rest of a packet cut into fragments, right after its first, in fresh
            // mbufs (none left: the fragment is lost, and counted).
            while let Some((_, f)) = extra.next_if(|&(i, _)| i == k) {
                let x = pool.alloc().and_then(|mut x| x.set_data(f).then_some(x));
                match x {
                    Some(x) => send(outs[k], x, to_conf, txb, tx),
                    None => unsent += 1,
                }
            }
            k += 1;
        });
    }
    w.stats.fragments_unsent += unsent;
}

/// Sends the announcements of `addrs` ([`reply::announcement`]) from `mac` out of every
/// port; returns how many were sent (an empty pool sends fewer).
fn announce<'q>(
    addrs: &[std::net::IpAddr],
    mac: [u8; 6],
    pool: &'q Mempool<'_>,
    txb: &mut [MbufBatch<'q>],
    tx: &mut [TxQueue<'q>],
) -> u64 {
    let mut sent = 0;
    let mut frame = [0u8; 128];
    for (c, b) in txb.iter_mut().enumerate() {
        for &a in addrs {
            let Some(n) = reply::announcement(a, mac, &mut frame) else {
                continue;
            };
            let Some(m) = pool
                .alloc()
                .and_then(|mut m| m.set_data(&frame[..n]).then_some(m))
            else {
                continue;
            };
            if let Err(m) = b.push(m) {
                flush(&mut tx[c], b);
                let _ = b.push(m); // just emptied: room (else the mbuf is freed)
            }
            sent += 1;
        }
        flush(&mut tx[c], b);
    }
    sent
}

/// Queues a processed frame on its output port (or frees it when it was dropped).
#[inline]
fn send<'q>(
    o: Outcome,
    m: Mbuf<'q>,
    to_conf: &[usize],
    txb: &mut [MbufBatch<'q>],
    tx: &mut [TxQueue<'q>],
) {
    let Some(r) = o.route.filter(|_| o.drop.is_none()) else {
        return; // dropped: `m` is freed here
    };
    let c = to_conf.get(usize::from(r.port)).copied().unwrap_or(0);
    let b = &mut txb[c];
    if let Err(m) = b.push(m) {
        flush(&mut tx[c], b);
        if b.push(m).is_err() {
            // Cannot happen (the batch was just emptied); the mbuf is freed.
        }
    }
}

/// Sends a batch, retrying briefly while the PMD's ring is full; what is still refused
/// is freed and counted by the queue.
#[inline]
fn flush<'q>(tx: &mut TxQueue<'q>, b: &mut MbufBatch<'q>) {
    let mut tries = 0;
    while !b.is_empty() && tries < 8 {
        tx.try_tx_burst(b);
        tries += 1;
    }
    if !b.is_empty() {
        tx.tx_burst(b);
    }
}
