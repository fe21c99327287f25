//! The `flowgate` command line: picks files and overrides, then calls the library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use flowgate::cmd;
use flowgate::config::{ConfigError, Pipeline};
use std::path::PathBuf;
use std::process::ExitCode;

/// flowgate: turns a layer-2 network of ordinary servers into one load-balanced,
/// QoS-aware service.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the pipeline over a capture file (packet timestamps are the clock).
    Replay {
        /// Pipeline YAML.
        #[arg(long, default_value = "pipelines/web-farm.yaml")]
        pipeline: PathBuf,
        /// Input capture (pcap or pcapng).
        #[arg(long, default_value = "samples/web-farm.pcap")]
        input: PathBuf,
        /// Output pcap: every transmitted frame, in order.
        #[arg(long, default_value = "/tmp/flowgate-replay.pcap")]
        output: PathBuf,
        /// Write counters as JSON to this file.
        #[arg(long)]
        stats_json: Option<PathBuf>,
        /// Write the same counters in the Prometheus text format to this file (for
        /// node_exporter's textfile collector).
        #[arg(long)]
        prometheus: Option<PathBuf>,
        /// Write the flows live at the end of the capture as JSON to this file (what
        /// `flowgate flows` shows; `flowgate run` serves it at GET /flows).
        #[arg(long)]
        flows: Option<PathBuf>,
        /// Only the flows this query accepts, e.g. `to=web1&proto=tcp&assured=true`
        /// (keys: to, service, rule, addr, port, proto, assured, limit).
        #[arg(long, requires = "flows")]
        flows_filter: Option<String>,
        /// Print one line per packet: what it matched, where it went, the actions.
        #[arg(long)]
        trace: bool,
        /// Do not print the summary.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Run the pipeline on DPDK ports until SIGINT/SIGTERM (feature `dpdk`).
    Run {
        /// Run configuration (EAL, lcores, ports, pipeline): see conf/*.yaml.
        #[arg(long)]
        conf: PathBuf,
        /// Write counters as JSON to this file at exit (overrides the conf's stats.json).
        #[arg(long)]
        stats_json: Option<PathBuf>,
        /// No periodic rate line.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Measure the full pipeline with many live flows on net_null, against dpdk-testpmd.
    Bench {
        #[arg(long, default_value = "conf/null-bench.yaml")]
        conf: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        flows: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Print {"flowgate_mpps", "testpmd_mpps", "ratio"} as JSON.
        #[arg(long)]
        json: bool,
        /// Skip the dpdk-testpmd comparison.
        #[arg(long)]
        no_testpmd: bool,
        /// Measure only the poll/transmit loop, without stamping frames or running the
        /// pipeline (the harness's and the PMD's own cost).
        #[arg(long)]
        io_only: bool,
    },
    /// Validate a pipeline and print its compiled summary (exit code 2 when invalid).
    Check {
        #[arg(long)]
        pipeline: PathBuf,
        /// Also say whether a `flowgate run` on this pipeline would take the new one on
        /// SIGHUP (exit code 1 when it would refuse it).
        #[arg(long, value_name = "RUNNING_PIPELINE")]
        reload_from: Option<PathBuf>,
    },
    /// Supervisor: registrations, relay, server lists, numbers (ANA), management.
    Supervisor(flowgate::control::cli::SupervisorArgs),
    /// End-system agent beside a server.
    Agent(flowgate::control::cli::AgentArgs),
    /// Talk to a supervisor (systems, services, flows, numbers, drain, weight, stats).
    Ctl(flowgate::control::cli::CtlArgs),
    /// List live flows: of a running `flowgate run` (its stats.prometheus address) or of
    /// a `flowgate replay --flows` file.
    Flows(cmd::flows::FlowsArgs),
    /// Benchmark classifiers on ClassBench filter and trace files.
    Classbench(flowgate::classify::bench_cmd::ClassbenchArgs),
    /// Write a synthetic capture (clients to VIPs, FTP, UDP, ESP, tagged traffic).
    Gen {
        /// Make the traffic for this pipeline's services, MACs and gateway (default: the
        /// built-in web-farm example).
        #[arg(long)]
        pipeline: Option<PathBuf>,
        #[command(flatten)]
        args: flowgate::r#gen::GenArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(c) = e.downcast_ref::<ConfigError>() {
                eprintln!("error: {c}");
                return ExitCode::from(2);
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Replay {
            pipeline,
            input,
            output,
            stats_json,
            prometheus,
            flows,
            flows_filter,
            trace,
            quiet,
        } => {
            let r = cmd::replay::run(&cmd::replay::ReplayOpts {
                pipeline: &pipeline,
                input: &input,
                output: &output,
                stats_json,
                prometheus,
                flows,
                flows_filter,
                trace,
                progress: !quiet,
            })?;
            if !quiet {
                eprint!("{}", r.summary);
            }
            Ok(())
        }
        Cmd::Gen { pipeline, args } => {
            let spec = match pipeline {
                Some(p) => cmd::gen_spec(&Pipeline::load(&p)?),
                None => flowgate::r#gen::GenSpec::default(),
            };
            let summary = flowgate::r#gen::run(&args, &spec)?;
            eprintln!("{summary}");
            Ok(())
        }
        Cmd::Supervisor(a) => flowgate::control::cli::run_supervisor(&a),
        Cmd::Agent(a) => flowgate::control::cli::run_agent(&a),
        Cmd::Ctl(a) => flowgate::control::cli::run_ctl(&a),
        Cmd::Flows(a) => cmd::flows::run(&a),
        Cmd::Run {
            conf,
            stats_json,
            quiet,
        } => run_dpdk(&conf, stats_json, quiet),
        Cmd::Bench {
            conf,
            flows,
            seconds,
            json,
            no_testpmd,
            io_only,
        } => bench_dpdk(&conf, flows, seconds, json, no_testpmd, io_only),
        Cmd::Classbench(a) => classbench(&a),
        Cmd::Check {
            pipeline,
            reload_from,
        } => {
            let p = Pipeline::load(&pipeline)?;
            print!("{}", cmd::check::render(&p));
            if let Some(old) = reload_from {
                let o = Pipeline::load(&old)?;
                let verdict = cmd::check::reload_verdict(&o, p).map_err(|why| {
                    anyhow::anyhow!("reload from {}: refused: {why}", old.display())
                })?;
                println!("reload from {}: {verdict}", old.display());
            }
            Ok(())
        }
    }
}

#[cfg(feature = "dpdk")]
fn run_dpdk(conf: &std::path::Path, stats_json: Option<PathBuf>, quiet: bool) -> Result<()> {
    use flowgate::runtime;
    let c = runtime::conf::RunConf::load(conf)?;
    let r = runtime::run(&c, &runtime::RunOpts { stats_json, quiet })?;
    // After a clean stop, a stderr that went away must not turn it into a failure.
    flowgate::logln!("{}", r.summary.trim_end());
    Ok(())
}

#[cfg(feature = "dpdk")]
fn bench_dpdk(
    conf: &std::path::Path,
    flows: usize,
    seconds: f64,
    json: bool,
    no_testpmd: bool,
    io_only: bool,
) -> Result<()> {
    use flowgate::runtime;
    let c = runtime::conf::RunConf::load(conf)?;
    let r = runtime::bench(
        &c,
        &runtime::BenchOpts {
            flows,
            seconds,
            no_testpmd,
            io_only,
        },
    )?;
    if json {
        println!(
            "{}",
            serde_json::json!({"flowgate_mpps": r.flowgate_mpps, "testpmd_mpps": r.testpmd_mpps, "ratio": r.ratio, "pool": r.pool, "testpmd_packed_mpps": r.testpmd_packed_mpps, "ratio_packed": r.ratio_packed, "io_only": r.io_only, "anon_huge_mb": r.anon_huge_mb, "page_walk": r.page_walk})
        );
    } else {
        println!(
            "flowgate{}: {:.2} Mpps per worker core ({} workers, {} live flows, {} packets in {:.1} s)",
            if r.io_only {
                " (--io-only: poll and transmit, no pipeline)"
            } else {
                ""
            },
            r.flowgate_mpps,
            r.workers,
            r.flows,
            r.packets,
            r.seconds
        );
        println!(
            "flow tables: {:.0} MB advised for transparent huge pages, {} MB backed by them",
            r.huge_advised_mb,
            r.anon_huge_mb
                .map_or_else(|| "?".to_string(), |m| format!("{m:.0}"))
        );
        let w = &r.page_walk;
        println!(
            "page-walk probe: {} dependent loads cost {:.1} ns each packed in {} MB, {:.1} ns spread one per 4 KB page over {} MB ({} MB of it on huge pages)",
            w.lines,
            w.packed_ns,
            (w.lines * 64) >> 20,
            w.spread_ns,
            (w.lines * 4096) >> 20,
            w.spread_huge_mb
                .map_or_else(|| "?".to_string(), |m| format!("{m:.0}"))
        );
        if let (Some(t), Some(q)) = (r.testpmd_mpps, r.ratio) {
            println!("dpdk-testpmd macswap: {t:.2} Mpps per core\nratio: {q:.2}");
        }
        if let (Some(t), Some(q)) = (r.testpmd_packed_mpps, r.ratio_packed) {
            println!(
                "dpdk-testpmd macswap --mbuf-size=4096 (its pool packed, as flowgate's is without hugepages): {t:.2} Mpps per core\nratio to it: {q:.2}"
            );
        }
    }
    Ok(())
}

#[cfg(not(feature = "dpdk"))]
fn run_dpdk(_: &std::path::Path, _: Option<PathBuf>, _: bool) -> Result<()> {
    anyhow::bail!(
        "flowgate was built without the dpdk feature: rebuild with `cargo build --release --features dpdk`"
    )
}

#[cfg(not(feature = "dpdk"))]
fn bench_dpdk(_: &std::path::Path, _: usize, _: f64, _: bool, _: bool, _: bool) -> Result<()> {
    anyhow::bail!(
        "flowgate was built without the dpdk feature: rebuild with `cargo build --release --features dpdk`"
    )
}

#[cfg(not(feature = "dpdk"))]
fn classbench(a: &flowgate::classify::bench_cmd::ClassbenchArgs) -> Result<()> {
    flowgate::classify::bench_cmd::run_classbench(a)
}

/// With DPDK, `--engine rte_acl` runs DPDK's ACL library in this process on the same
/// rules and keys (EAL is started once, only when that engine is asked for).
#[cfg(feature = "dpdk")]
fn classbench(a: &flowgate::classify::bench_cmd::ClassbenchArgs) -> Result<()> {
    use flowgate::classify::bench_cmd::EngineFactory;
    use flowgate::port::dpdk::{AclClassifier, Eal};
    thread_local! {
        // EAL can start once per process; the engine factory may run several times.
        static EAL: std::cell::Cell<Option<&'static Eal>> = const { std::cell::Cell::new(None) };
    }
    fn rte_acl(
        rules: &[flowgate::classify::Rule],
    ) -> Result<Box<dyn flowgate::classify::Classifier>> {
        let eal: &'static Eal = match EAL.get() {
            Some(e) => e,
            None => {
                let args: Vec<String> = [
                    "-l",
                    "0",
                    "--no-huge",
                    "-m",
                    "2048",
                    "--no-pci",
                    "--no-telemetry",
                    "--force-max-simd-bitwidth=512",
                    "--file-prefix",
                    "fg-classbench",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                let e: &'static Eal = Box::leak(Box::new(Eal::init(&args)?));
                EAL.set(Some(e));
                e
            }
        };
        Ok(Box::new(AclClassifier::new(eal, rules)?))
    }
    flowgate::classify::bench_cmd::run_classbench_with(a, &[("rte_acl", rte_acl as EngineFactory)])
}
