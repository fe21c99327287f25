//! `flowgate replay`: the pipeline over a capture file, packet timestamps as the clock.
//!
//! Deterministic: the same capture and pipeline give the same output, byte for byte.
//! Every frame read is either written (in order) or counted as a drop, so
//! `packets_in == packets_out + sum(drops)` holds for the stats it prints.

use super::summary;
use crate::action::FrameBuf;
use crate::config::Pipeline;
use crate::pipeline::listing::FlowFilter;
use crate::pipeline::meta::DropReason;
use crate::pipeline::{Tables, Worker};
use crate::port::pcap::{LinkType, PcapReader, PcapWriter};
use crate::runtime::eject::{self, Ejections};
use crate::runtime::ramp::Ramps;
use anyhow::{Context, Result};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Largest frame replay accepts (bigger ones are dropped as `too_big`).
pub const MAX_REPLAY_FRAME: usize = 65535;

/// What a replay run did.
pub struct ReplayResult {
    pub stats_json: serde_json::Value,
    pub summary: String,
    pub packets: u64,
    pub seconds: f64,
}

/// Options of one replay run.
pub struct ReplayOpts<'a> {
    pub pipeline: &'a Path,
    pub input: &'a Path,
    pub output: &'a Path,
    pub stats_json: Option<PathBuf>,
    /// The same counters in the Prometheus text format ([`super::prom`]).
    pub prometheus: Option<PathBuf>,
    /// Write the flows live at the end (see [`crate::pipeline::listing`]) as JSON here...
    pub flows: Option<PathBuf>,
    /// ... those this query accepts (`to=web1&proto=tcp`, as `GET /flows` takes it).
    pub flows_filter: Option<String>,
    pub trace: bool,
    pub progress: bool,
}

/// Runs a replay; prints the trace (if asked) to stdout.
pub fn run(o: &ReplayOpts) -> Result<ReplayResult> {
    let p = Pipeline::load(o.pipeline)?;
    let filter = match &o.flows_filter {
        Some(q) => FlowFilter::parse(q, &p).map_err(|e| anyhow::anyhow!("--flows-filter: {e}"))?,
        None => (FlowFilter::default(), None),
    };
    let (mut mgmt, p) = Management::new(p);
    let mut tables = Arc::new(Tables::build(p, 1));
    let mut w = Worker::new(Arc::clone(&tables));
    let mut rd =
        PcapReader::open(o.input).with_context(|| format!("reading {}", o.input.display()))?;
    let mut wr = PcapWriter::create(o.output, LinkType::Ethernet)
        .with_context(|| format!("creating {}", o.output.display()))?;
    let mut buf = FrameBuf::new(MAX_REPLAY_FRAME);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let total = rd.total_bytes();
    let show = o.progress && std::io::stderr().is_terminal() && total > (8 << 20);
    let start = Instant::now();
    let mut n: u64 = 0;
    let mut last_ts = 0u64;
    let mut expired_at = 0u64;
    while let Some(pkt) = rd.next_packet()? {
        n += 1;
        let ts = pkt.ts_ns;
        last_ts = last_ts.max(ts);
        // As `flowgate run` does between bursts: every 32 packets, and before a packet
        // that comes a millisecond or more after the last call (a sparse capture's flows
        // end when their time is up, not 32 packets later).
        if n.is_multiple_of(32) || last_ts >= expired_at + 1_000_000 {
            w.expire(last_ts, 256);
            expired_at = last_ts;
        }
        mgmt.catch_up(&mut w, &mut tables, last_ts)?;
        if !buf.load(pkt.data) {
            w.count_drop(DropReason::TooBig);
            continue;
        }
        let len = pkt.data.len();
        let outcome = w.process(&mut buf, 0, last_ts);
        if outcome.route.is_some() && outcome.drop.is_none() {
            wr.write(ts, crate::action::PacketBuf::data(&buf))?;
            // The rest of a packet cut into fragments, after its first.
            for (_, f) in w.extra_frames() {
                wr.write(ts, f)?;
            }
        }
        if o.trace {
            writeln!(out, "{}", summary::trace_line(&tables, n, len, &outcome))?;
        }
        if show && n.is_multiple_of(65536) {
            progress(rd.bytes_read(), total, n, start.elapsed().as_secs_f64());
        }
    }
    wr.finish()?;
    out.flush()?;
    if show {
        progress(total, total, n, start.elapsed().as_secs_f64());
        eprintln!();
    }
    let seconds = start.elapsed().as_secs_f64();
    let p = &tables.pipeline;
    let stats_json = w.stats.to_json(p);
    if let Some(f) = &o.stats_json {
        super::write_json(f, &stats_json)?;
    }
    if let Some(f) = &o.prometheus {
        super::write_whole(f, &super::prom::render(&stats_json))?;
    }
    if let Some(f) = &o.flows {
        let (filter, limit) = filter;
        let listing = w.list_all_flows(last_ts, &filter, limit.unwrap_or(usize::MAX));
        super::write_json(f, &listing.to_json(p))?;
    }
    let mut summary = render_summary(&w, p, seconds);
    for e in &mgmt.events {
        summary += &format!("\n{e}");
    }
    Ok(ReplayResult {
        stats_json,
        summary,
        packets: n,
        seconds,
    })
}

/// What `flowgate run`'s management core decides on its clock, on the capture's: the
/// passive health check ([`Ejections`]) every [`eject::EVERY`] of capture time, and the
/// slow starts ([`Ramps`]) of the servers that come back from it.
struct Management {
    ejections: Ejections,
    ramps: Ramps,
    /// Whether any server has a passive health check (else nothing to do).
    watch: bool,
    /// The capture time of the last check; `None` before the first packet.
    checked_at: Option<u64>,
    /// What it did, for the summary.
    events: Vec<String>,
}

impl Management {
    /// The management of `p`, and `p` as it starts (the servers up take their whole
    /// weight, as in `flowgate run`).
    fn new(mut p: Pipeline) -> (Management, Pipeline) {
        let mut ramps = Ramps::default();
        ramps.apply(&mut p, 0);
        let m = Management {
            watch: Ejections::watches(&p),
            ejections: Ejections::default(),
            ramps,
            checked_at: None,
            events: Vec::new(),
        };
        (m, p)
    }

    /// Runs every check due by capture time `now` at its own time (a sparse capture's
    /// gap holds a server's time out ending, and its ramp starting, when they would have
    /// in `flowgate run`), publishing new tables to `w` when a server goes out, comes
    /// back, or ramps.
    fn catch_up(&mut self, w: &mut Worker, tables: &mut Arc<Tables>, now: u64) -> Result<()> {
        if !self.watch {
            return Ok(());
        }
        let Some(mut t) = self.checked_at else {
            // The counters start here.
            self.ejections.observe(&tables.pipeline, &[], now);
            self.checked_at = Some(now);
            return Ok(());
        };
        while now >= t + eject::EVERY {
            t += eject::EVERY;
            let ch = self
                .ejections
                .observe(&tables.pipeline, &w.stats.server_fails, t);
            let at = format!("at {:.3} s of the capture", t as f64 / 1e9);
            if let Some(why) = ch.phrase() {
                self.events.push(format!("{at}: {why}"));
            }
            if ch.republish() || self.ramps.under_way() {
                let mut p = tables.pipeline.clone();
                self.ejections.apply(&mut p);
                if let Some(why) = self.ramps.apply(&mut p, t).phrase() {
                    self.events.push(format!("{at}: {why}"));
                }
                let next = Arc::new(Tables::build_after(p, tables.generation + 1, tables));
                if let Some(why) = next.backup_news(tables) {
                    self.events.push(format!("{at}: {why}"));
                }
                w.set_tables(Arc::clone(&next))
                    .map_err(|_| anyhow::anyhow!("passive check: tables of another shape"))?;
                *tables = next;
            }
        }
        self.checked_at = Some(t);
        Ok(())
    }
}

fn progress(done: u64, total: u64, n: u64, secs: f64) {
    let frac = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    let width = 30;
    let fill = ((frac * width as f64) as usize).min(width);
    eprint!(
        "\r[{}{}] {:5.1}% {} packets {:.2} Mpps",
        "#".repeat(fill),
        ".".repeat(width - fill),
        frac * 100.0,
        n,
        n as f64 / secs.max(1e-9) / 1e6
    );
    let _ = std::io::stderr().flush();
}

fn render_summary(w: &Worker, p: &Pipeline, seconds: f64) -> String {
    use std::fmt::Write as _;
    let s = &w.stats;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "packets in {}  out {}  dropped {}  ({:.3} s, {:.2} Mpps)",
        s.packets_in,
        s.packets_out,
        s.dropped(),
        seconds,
        s.packets_in as f64 / seconds.max(1e-9) / 1e6
    );
    for r in DropReason::ALL {
        let c = s.drops[*r as usize];
        if c > 0 {
            let _ = writeln!(o, "  drop {:<22} {c}", r.as_str());
        }
    }
    let _ = writeln!(
        o,
        "flows created {}  evicted {} ({} assured)  expired {}  live {}  arp replies {}  nd replies {}  icmp errors {}  echo replies {}  fragments out {}",
        s.flows_created,
        s.flows_evicted,
        s.flows_evicted_assured,
        s.flows_expired,
        w.flow_count(),
        s.arp_replies,
        s.nd_replies,
        s.icmp_errors,
        s.echo_replies,
        s.fragments_out
    );
    for (i, svc) in p.services.iter().enumerate() {
        let _ = writeln!(
            o,
            "service {}: {} flows, {} packets",
            svc.name, s.svc_flows[i], s.svc_packets[i]
        );
        let sent: u64 = s.svc_server_packets[i].iter().sum();
        for (j, m) in svc.members.iter().enumerate() {
            let c = s.svc_server_packets[i][j];
            let _ = writeln!(
                o,
                "  {:<12} weight {:<6} packets {:<10} {:5.1}%{}",
                p.servers[m.server as usize].name,
                m.weight,
                c,
                if sent == 0 {
                    0.0
                } else {
                    100.0 * c as f64 / sent as f64
                },
                if m.backup { "  backup" } else { "" }
            );
        }
    }
    for (i, r) in p.flow_rules.iter().enumerate() {
        let _ = writeln!(
            o,
            "flow rule {}: {} flows, {} packets",
            r.name, s.rule_flows[i], s.rule_packets[i]
        );
    }
    o
}
