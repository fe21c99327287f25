//! `flowgate bench`: the full pipeline with many live flows on `net_null` ports, against
//! `dpdk-testpmd --forward-mode=macswap` on the same kind of port, same lcores.
//!
//! Layer: `runtime` (feature `dpdk`). How the measurement is kept honest:
//! - Input: each worker polls its `net_null` RX queue, exactly as testpmd does (same PMD,
//!   same mbuf allocation cost), then overwrites the first 60 bytes of the 64-byte frame
//!   the PMD returned with an IPv4/TCP ACK of one of its pre-created flows (a template
//!   copy, the client address and port of the flow, an incremental IPv4 checksum): work
//!   that testpmd does not pay, standing in for the NIC's DMA. Flows are visited in a
//!   random order (a fixed shuffle, then round after round), so with 1 M flows nearly
//!   every lookup misses the CPU caches and TLBs for its bucket and its flow entry, as
//!   with real traffic; visiting them in creation order would read the flow entries
//!   sequentially and flatter the figure.
//! - Flows are created before the clock starts (SYN, SYN-ACK, ACK per flow, so they are
//!   established and live for the TCP established timeout); the run then checks that no
//!   flow was created, evicted or expired and nothing was dropped during the measurement,
//!   i.e. every measured packet took the established-flow path (lookup, TCP state,
//!   QoS rewrite, MAC rewrite) and was transmitted on the output `net_null` port.
//! - The clock advances per poll, as in `flowgate run`, so every hit records its time;
//!   the flow table is sized as `flowgate run` sizes it for the conf (grown to the flow
//!   count) and advised for transparent huge pages, as there.
//! - `--io-only` runs the same poll/transmit loop without stamping or the pipeline: the
//!   harness's and the PMD's own cost, to subtract.
//! - testpmd runs afterwards (not at the same time: both would compete for the same
//!   cores), on the same lcores, `--nb-cores` = number of workers, two `net_null` ports,
//!   for the same duration; its rate is its accumulated RX count over the time between
//!   "Press enter to exit" and the stop.
//! - Without hugepages flowgate's mbuf pool is packed ([`PoolLayout::Packed`]) and
//!   testpmd's default pool is not: one mbuf per 4 KB page, every frame at the same page
//!   offset, which costs testpmd about two thirds of its rate on `net_null`. So the bench
//!   then runs testpmd a second time with `--mbuf-size=4096`: an mbuf larger than a page,
//!   which DPDK places back to back. `ratio` is against testpmd as it runs by default,
//!   `ratio_packed` against that second run, where both pools are packed.

use super::conf::RunConf;
use super::copy_stats;
use crate::r#gen::ack::{AckStamp, Template, frame, handshake, shuffle};
use crate::pipeline::stats::Stats;
use crate::pipeline::{Outcome, Tables, Worker};
use crate::port::dpdk::{Eal, MbufBatch, Mempool, PoolLayout, Port, PortConf, SYMMETRIC_RSS_KEY};
use anyhow::{Context, Result, anyhow, bail};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Options of `flowgate bench`.
pub struct BenchOpts {
    pub flows: usize,
    pub seconds: f64,
    /// Skip the testpmd comparison.
    pub no_testpmd: bool,
    /// Measure only the poll/transmit loop (no frame stamping, no pipeline): what the
    /// bench harness and the `net_null` PMD cost by themselves.
    pub io_only: bool,
}

/// Figures of one bench run.
#[derive(Debug, serde::Serialize)]
pub struct BenchResult {
    /// Million packets per second per worker core, full pipeline.
    pub flowgate_mpps: f64,
    /// Million packets per second per forwarding core, testpmd macswap.
    pub testpmd_mpps: Option<f64>,
    pub ratio: Option<f64>,
    /// flowgate's mbuf pool layout.
    pub pool: PoolLayout,
    /// testpmd macswap with `--mbuf-size=4096`, whose pool DPDK packs (run only when
    /// EAL has no hugepages; with them testpmd's default pool is packed already).
    pub testpmd_packed_mpps: Option<f64>,
    /// `flowgate_mpps / testpmd_packed_mpps`.
    pub ratio_packed: Option<f64>,
    pub workers: usize,
    pub flows: usize,
    pub seconds: f64,
    pub packets: u64,
    /// The run measured the loop without the pipeline ([`BenchOpts::io_only`]).
    pub io_only: bool,
    /// Flow-table memory advised for transparent huge pages (all workers), MB.
    pub huge_advised_mb: f64,
    /// The process's anonymous memory backed by huge pages once the flows were created
    /// (`AnonHugePages` of /proc/self/smaps_rollup), MB; `None` when unreadable.
    pub anon_huge_mb: Option<f64>,
    /// What a page walk costs on this machine (`page_walk_probe`).
    pub page_walk: PageWalkProbe,
}

/// Dependent loads over the same number of cache lines in two layouts, run before the
/// bench: packed together, and spread one per 4 KB page over 64 MB (as a big flow
/// table's lookups are). Both layouts read the same number of lines, so the difference
/// is what the spread loads' address translations cost: small where the memory is
/// mapped with huge pages end to end (the spread lines then sit in 32 pages of 2 MB),
/// a page walk per load where it is not, e.g. in a virtual machine whose host maps the
/// guest with 4 KB pages whatever the guest's own pages are.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct PageWalkProbe {
    /// Lines chased in each layout.
    pub lines: usize,
    /// ns per load, the lines packed together (`lines` × 64 bytes).
    pub packed_ns: f64,
    /// ns per load, one line per 4 KB page.
    pub spread_ns: f64,
    /// How much the process's huge-page-backed memory (`AnonHugePages`) grew when the
    /// 64 MB region was first touched, MB: whether the kernel gave it huge pages.
    pub spread_huge_mb: Option<f64>,
}

/// Runs the probe described at [`PageWalkProbe`] (about 0.2 s).
pub fn page_walk_probe() -> PageWalkProbe {
    const LINES: usize = 16384;
    const PAGE_WORDS: usize = 4096 / 8;
    let words = LINES * PAGE_WORDS;
    let before = anon_huge_mb();
    // Zeroed, hence fresh from the kernel and not yet backed: advised before the first
    // touch, as the flow tables are.
    let mut v: Vec<u64> = vec![0; words];
    crate::port::dpdk::advise_huge_pages(&[(v.as_ptr().cast(), words * 8)]);
    for w in v.iter_mut().step_by(PAGE_WORDS) {
        *w = 1;
    }
    let spread_huge_mb = before.zip(anon_huge_mb()).map(|(b, a)| a - b);
    // One cycle through every line, in random order (no stride for a prefetcher).
    let mut order: Vec<u32> = (0..LINES as u32).collect();
    shuffle(&mut order, 0x9e37_79b9_7f4a_7c15);
    let packed_ns = chase(&mut v, &order, 8);
    let spread_ns = chase(&mut v, &order, PAGE_WORDS);
    PageWalkProbe {
        lines: LINES,
        packed_ns,
        spread_ns,
        spread_huge_mb,
    }
}

/// Links line `order[i]` to `order[i + 1]` (cyclically; line `k` is word `k * stride`),
/// then follows the links; ns per load.
fn chase(v: &mut [u64], order: &[u32], stride: usize) -> f64 {
    let n = order.len();
    for i in 0..n {
        v[order[i] as usize * stride] = (order[(i + 1) % n] as usize * stride) as u64;
    }
    let mut at = order[0] as usize * stride;
    // One round to warm the caches and TLBs as far as they reach, then the timed loads.
    for _ in 0..n {
        at = v[at] as usize;
    }
    const LOADS: usize = 2_000_000;
    let t = Instant::now();
    for _ in 0..LOADS {
        at = v[at] as usize;
    }
    let ns = t.elapsed().as_nanos() as f64 / LOADS as f64;
    std::hint::black_box(at);
    ns
}

/// Per-worker outcome.
struct Done {
    packets: u64,
    /// Bytes of flow table advised for huge pages.
    huge: usize,
    seconds: f64,
    stats: Stats,
    flows: usize,
}

/// Runs the bench; see the module docs.
pub fn bench(conf: &RunConf, o: &BenchOpts) -> Result<BenchResult> {
    let n_workers = conf.worker_lcores.len();
    if conf.ports.len() < 2 {
        bail!("bench needs two ports (RX and TX), e.g. net_null0 and net_null1");
    }
    // The flow table `flowgate run` would give each worker with this conf, grown when
    // needed so that every bench flow fits without eviction.
    let mut p = super::worker::load_pipeline(conf)?;
    let per_worker = o.flows.div_ceil(n_workers);
    if per_worker >= 1 << 24 {
        bail!("at most 16M flows per worker");
    }
    p.flow_table.capacity = p.flow_table.capacity.max(per_worker);
    // The measured packets must all hit live flows: the run ends inside the timeout.
    if o.seconds * 1e9 + 1e9 >= p.flow_table.tcp_established_ns as f64 {
        bail!(
            "--seconds must stay under the pipeline's TCP established timeout ({} s) minus 1 s",
            p.flow_table.tcp_established_ns / 1_000_000_000
        );
    }
    let tpl = Template::for_pipeline(&p)?;
    let tables = Arc::new(Tables::build(p, 1));
    if tables
        .pipeline
        .services
        .iter()
        .all(|s| s.members.is_empty())
    {
        bail!("the bench pipeline has no servers");
    }

    // Before EAL starts anything: nothing else runs on this thread's core.
    let page_walk = page_walk_probe();
    let eal = Eal::init(&conf.eal_args()).context("EAL initialisation")?;
    let pool = Mempool::new(
        &eal,
        "flowgate-bench",
        conf.mbufs,
        conf.mbuf_cache,
        2176,
        None,
    )
    .context("creating the mbuf pool")?;
    let pool_layout = pool.layout();
    let hugepages = eal.has_hugepages();
    let mut rx_port = Port::by_name(&eal, conf.ports[0].dpdk_name()).map_err(|e| {
        anyhow!(
            "port {:?} ({}): {e}",
            conf.ports[0].name,
            conf.ports[0].device
        )
    })?;
    let mut tx_port = Port::by_name(&eal, conf.ports[1].dpdk_name()).map_err(|e| {
        anyhow!(
            "port {:?} ({}): {e}",
            conf.ports[1].name,
            conf.ports[1].device
        )
    })?;
    let nq = n_workers as u16;
    let pc = PortConf {
        n_rxq: nq,
        n_txq: nq,
        rx_desc: 1024,
        tx_desc: 1024,
        rss_key: Some(SYMMETRIC_RSS_KEY),
        promiscuous: true,
        mtu: None,
    };
    rx_port.start(&pc, &pool).context("starting the RX port")?;
    tx_port.start(&pc, &pool).context("starting the TX port")?;
    let (rxs, _) = rx_port.queues()?;
    let (_, txs) = tx_port.queues()?;
    let go = AtomicBool::new(false);
    let ready: Vec<AtomicBool> = (0..n_workers).map(|_| AtomicBool::new(false)).collect();
    let results: Vec<parking_lot::Mutex<Option<Done>>> = (0..n_workers)
        .map(|_| parking_lot::Mutex::new(None))
        .collect();
    let seconds = o.seconds;
    let total_flows = o.flows;
    let anon_huge = parking_lot::Mutex::new(None);
    let io_only = o.io_only;
    eal.scope(|s| -> Result<()> {
        for (i, (mut rxq, mut txq)) in rxs.into_iter().zip(txs).enumerate() {
            let (tables, go, ready, results, pool) =
                (Arc::clone(&tables), &go, &ready[i], &results[i], &pool);
            s.launch(conf.worker_lcores[i], move || {
                let mut w = Worker::new(tables);
                // As `flowgate run` does (see `advise_huge_pages`).
                let huge = crate::port::dpdk::advise_huge_pages(&w.memory());
                // Flows of this worker: k ≡ i (mod workers).
                let mine: Vec<u32> = (i..total_flows)
                    .step_by(n_workers)
                    .map(|k| k as u32)
                    .collect();
                let mut f = [0u8; 60];
                for &k in &mine {
                    handshake(k, tpl, |f, _| {
                        if let Some(mut m) = pool.alloc()
                            && m.set_data(f)
                        {
                            let _ = w.process(&mut m, 0, 0);
                        }
                    });
                }
                // Visit the flows in a random order (a fixed one per worker).
                let mut mine = mine;
                shuffle(&mut mine, 0x2545_f491_4f6c_dd1d ^ i as u64);
                let before = w.stats.clone();
                let flows = w.flow_count();
                ready.store(true, Relaxed);
                while !go.load(Relaxed) {
                    std::hint::spin_loop();
                }
                let stamp = AckStamp::new(tpl);
                let mut rxb = MbufBatch::new();
                let mut txb = MbufBatch::new();
                let mut outs = [Outcome::default(); 32];
                let t0 = Instant::now();
                let mut packets = 0u64;
                let mut j = 0usize;
                // The clock `flowgate run` gives a burst: nanoseconds since the start, read
                // once per poll, so every hit records its time (a constant clock would
                // spare each packet that write). Flows were created at 0; the run lasts
                // well inside every timeout, and nothing calls `expire`.
                let n = mine.len().max(1);
                loop {
                    let got = rxq.rx_burst(&mut rxb);
                    if got > 0 && io_only {
                        rxb.drain_each(|m| {
                            let _ = txb.push(m);
                        });
                        packets += got as u64;
                        txq.tx_burst(&mut txb);
                    } else if got > 0 {
                        // The order list is 4 bytes a flow (4 MB for 1M): read ahead of
                        // the random flow-table traffic, which starves the hardware
                        // prefetcher.
                        prefetch_index::prefetch_index(&mine, (j + 256) % n);
                        prefetch_index::prefetch_index(&mine, (j + 272) % n);
                        for m in rxb.as_mut_slice() {
                            let k = mine.get(j).copied().unwrap_or(0);
                            j += 1;
                            if j == n {
                                j = 0;
                            }
                            // net_null hands out 64-byte frames: stamp the ACK in place.
                            if m.data().len() >= 60 {
                                stamp.write(m.data_mut(), k);
                            } else {
                                frame(&mut f, k, tpl, 0x10, false);
                                let _ = m.set_data(&f);
                            }
                        }
                        let now = t0.elapsed().as_nanos() as u64 + 1_000_000;
                        w.process_burst(rxb.as_mut_slice(), 0, now, &mut outs[..got]);
                        let mut k = 0;
                        rxb.drain_each(|m| {
                            if outs[k].route.is_some() && outs[k].drop.is_none() {
                                let _ = txb.push(m);
                            }
                            k += 1;
                        });
                        packets += got as u64;
                        txq.tx_burst(&mut txb);
                    }
                    if packets & 0xfff < 32 && t0.elapsed().as_secs_f64() >= seconds {
                        break;
                    }
                }
                let secs = t0.elapsed().as_secs_f64();
                let mut st = Stats::new(&w.tables().pipeline);
                copy_stats(&mut st, &w.stats);
                // Subtract the setup phase: what remains is the measured run.
                st.packets_in -= before.packets_in;
                st.packets_out -= before.packets_out;
                for (a, b) in st.drops.iter_mut().zip(before.drops) {
                    *a -= b;
                }
                st.flows_created -= before.flows_created;
                st.flows_evicted -= before.flows_evicted;
                st.flows_expired -= before.flows_expired;
                *results.lock() = Some(Done {
                    packets,
                    huge,
                    seconds: secs,
                    stats: st,
                    flows,
                });
            })?;
        }
        while !ready.iter().all(|r| r.load(Relaxed)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        *anon_huge.lock() = anon_huge_mb();
        go.store(true, Relaxed);
        Ok(())
    })??;
    let mut packets = 0u64;
    let mut mpps_sum = 0.0;
    let mut live = 0usize;
    let mut huge = 0usize;
    for r in &results {
        let d = r
            .lock()
            .take()
            .ok_or_else(|| anyhow!("a bench worker did not report"))?;
        let s = &d.stats;
        // With --io-only nothing went through the pipeline: there is nothing to check.
        if !io_only
            && (s.dropped() != 0
                || s.flows_created != 0
                || s.flows_evicted != 0
                || s.flows_expired != 0)
        {
            bail!(
                "the measured packets did not all take the established-flow path: dropped {}, created {}, evicted {}, expired {}",
                s.dropped(),
                s.flows_created,
                s.flows_evicted,
                s.flows_expired
            );
        }
        if !io_only && s.packets_out != d.packets {
            bail!(
                "{} packets measured but {} forwarded",
                d.packets,
                s.packets_out
            );
        }
        packets += d.packets;
        mpps_sum += d.packets as f64 / d.seconds / 1e6;
        live += d.flows;
        huge += d.huge;
    }
    if live < o.flows {
        bail!(
            "only {live} of {} flows were live at the start of the measurement",
            o.flows
        );
    }
    drop(rx_port);
    drop(tx_port);
    drop(pool);
    drop(eal);
    let flowgate_mpps = mpps_sum / n_workers as f64;
    let testpmd_mpps = if o.no_testpmd {
        None
    } else {
        Some(testpmd(conf, o.seconds, None)?)
    };
    let testpmd_packed_mpps = if o.no_testpmd || hugepages {
        None
    } else {
        Some(testpmd(conf, o.seconds, Some(4096))?)
    };
    Ok(BenchResult {
        flowgate_mpps,
        testpmd_mpps,
        ratio: testpmd_mpps.map(|t| flowgate_mpps / t),
        pool: pool_layout,
        testpmd_packed_mpps,
        ratio_packed: testpmd_packed_mpps.map(|t| flowgate_mpps / t),
        workers: n_workers,
        flows: live,
        seconds: o.seconds,
        packets,
        io_only: o.io_only,
        huge_advised_mb: huge as f64 / 1e6,
        anon_huge_mb: anon_huge.into_inner(),
        page_walk,
    })
}

/// `AnonHugePages` of this process, MB.
fn anon_huge_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("AnonHugePages:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1000.0)
}

/// `dpdk-testpmd --forward-mode=macswap` on two `net_null` ports with the conf's lcores and
/// EAL memory options; Mpps per forwarding core.
/// testpmd macswap on the conf's lcores and two `net_null` ports for `seconds`; its Mpps
/// per forwarding core. `mbuf_size`: testpmd's `--mbuf-size` (default 2176).
fn testpmd(conf: &RunConf, seconds: f64, mbuf_size: Option<u16>) -> Result<f64> {
    let n = conf.worker_lcores.len();
    let mut args: Vec<String> = Vec::new();
    let mut skip = false;
    for a in &conf.eal {
        // Our own file prefix would collide with nothing (our EAL is gone), but keep the
        // runs apart anyway.
        if skip {
            skip = false;
            continue;
        }
        if a == "--file-prefix" {
            skip = true;
            continue;
        }
        args.push(a.clone());
    }
    args.extend(conf.lcore_args());
    args.extend([
        "--file-prefix".into(),
        format!("fg-testpmd-{}", std::process::id()),
        "--vdev".into(),
        "net_null0".into(),
        "--vdev".into(),
        "net_null1".into(),
        "--".into(),
        "--forward-mode=macswap".into(),
        format!("--nb-cores={n}"),
        format!("--rxq={n}"),
        format!("--txq={n}"),
        format!("--total-num-mbufs={}", conf.mbufs.max(16384)),
    ]);
    args.extend(mbuf_size.map(|m| format!("--mbuf-size={m}")));
    // testpmd's stdout is a pipe here, hence fully buffered: stdbuf makes it line buffered
    // so that "Press enter to exit" arrives when forwarding starts.
    let mut child = Command::new("stdbuf")
        .arg("-oL")
        .arg("dpdk-testpmd")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting stdbuf dpdk-testpmd (apt install dpdk coreutils)")?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("testpmd stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut out = String::new();
    let mut started = None;
    for l in lines.by_ref() {
        let l = l?;
        out.push_str(&l);
        out.push('\n');
        if l.contains("Press enter to exit") {
            started = Some(Instant::now());
            break;
        }
    }
    let Some(t0) = started else {
        let _ = child.wait();
        bail!("dpdk-testpmd did not start forwarding:\n{out}");
    };
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let mut stdin = child.stdin.take().ok_or_else(|| anyhow!("testpmd stdin"))?;
    let _ = stdin.write_all(b"\n");
    let secs = t0.elapsed().as_secs_f64();
    drop(stdin);
    for l in lines {
        out.push_str(&l?);
        out.push('\n');
    }
    let _ = child.wait();
    let rx = testpmd_total_rx(&out)
        .ok_or_else(|| anyhow!("no accumulated RX count in testpmd's output:\n{out}"))?;
    Ok(rx as f64 / secs / 1e6 / n as f64)
}

/// The `RX-packets` of testpmd's "Accumulated forward statistics for all ports" block.
pub fn testpmd_total_rx(out: &str) -> Option<u64> {
    let at = out.find("Accumulated forward statistics for all ports")?;
    let rest = &out[at..];
    let i = rest.find("RX-packets:")?;
    rest[i + "RX-packets:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn testpmd_output_is_parsed() {
        let s = "  ---------------------- Forward statistics for port 0  ----------------------\n  RX-packets: 5              RX-dropped: 0             RX-total: 5\n\
                 \n  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++\n  RX-packets: 167804640      RX-dropped: 0             RX-total: 167804640\n";
        assert_eq!(testpmd_total_rx(s), Some(167_804_640));
        assert_eq!(testpmd_total_rx("nothing"), None);
    }
}
