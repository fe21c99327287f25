//! `flowgate classbench`: build engines over a ClassBench filter file, check every trace
//! lookup against the trace's expected rule, and time batched lookups.
//!
//! Layer: CLI tooling over `classify`. Engines come from a small registry of factories
//! (`&[Rule]` → `Box<dyn Classifier>`); [`run_classbench_with`] accepts extra factories, so
//! the binary can register `rte_acl` when built with the `dpdk` feature without this
//! module depending on DPDK.
//!
//! Timing: the trace is converted to keys once, then replayed in bursts of 32 through
//! `classify_batch` (as the data path calls it) until at least `--seconds` have passed;
//! caches are warm, as in dpdk-test-acl's `--iter` runs.

use super::classbench::{TraceEntry, parse_rules, parse_trace};
use super::compiled::Compiled;
use super::linear::Linear;
use super::{Classifier, Decision, Key, Rule};
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Arguments of `flowgate classbench`.
#[derive(Clone, Debug, clap::Args)]
pub struct ClassbenchArgs {
    /// ClassBench filter file (`@src/len dst/len sp : sp dp : dp proto/mask`).
    #[arg(long)]
    pub rules: PathBuf,
    /// Trace file (`src dst sport dport proto expected_rule`, 1-based).
    #[arg(long)]
    pub trace: PathBuf,
    /// Engines to run, comma-separated (flowgate, linear, rte_acl).
    #[arg(long, value_delimiter = ',', default_value = "flowgate")]
    pub engine: Vec<String>,
    /// Minimum measuring time per engine, in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Print one JSON object per engine instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Builds an engine from rules.
pub type EngineFactory = fn(&[Rule]) -> anyhow::Result<Box<dyn Classifier>>;

fn build_flowgate(rules: &[Rule]) -> anyhow::Result<Box<dyn Classifier>> {
    Ok(Box::new(Compiled::build(rules)))
}

fn build_linear(rules: &[Rule]) -> anyhow::Result<Box<dyn Classifier>> {
    Ok(Box::new(Linear::new(rules.to_vec())))
}

fn build_rte_acl_missing(_: &[Rule]) -> anyhow::Result<Box<dyn Classifier>> {
    bail!("engine rte_acl needs a flowgate built with `--features dpdk`")
}

/// The built-in engines: `flowgate`, `linear`, and an `rte_acl` stub that errors.
pub fn builtin_engines() -> Vec<(&'static str, EngineFactory)> {
    vec![
        ("flowgate", build_flowgate as EngineFactory),
        ("linear", build_linear as EngineFactory),
        ("rte_acl", build_rte_acl_missing as EngineFactory),
    ]
}

/// One engine's figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EngineReport {
    pub engine: String,
    pub build_ms: f64,
    pub bytes: usize,
    /// Lookups per wall-clock second.
    pub lookups_per_s: f64,
    /// Lookups per second of this thread's CPU time (excludes time other processes
    /// held the core; the machine is shared), when the OS reports it.
    pub lookups_per_cpu_s: Option<f64>,
    pub mismatches: u64,
    /// Keys per batch call in the measurement (the engine's [`Classifier::burst`]).
    pub burst: usize,
}

/// Counts trace entries whose first match differs from the expected rule.
pub fn count_mismatches(engine: &dyn Classifier, trace: &[TraceEntry]) -> u64 {
    let mut bad = 0;
    let keys: Vec<Key> = trace.iter().map(|t| t.key).collect();
    let mut out = vec![Decision::NoMatch; 32];
    for (tc, kc) in trace.chunks(32).zip(keys.chunks(32)) {
        engine.classify_batch(kc, &mut out[..kc.len()]);
        for (t, d) in tc.iter().zip(&out) {
            let got = match *d {
                Decision::FlowRule(i) => Some(i),
                _ => None,
            };
            // Also the single-key path must agree.
            if got != t.expected || engine.lookup(&t.key) != t.expected {
                bad += 1;
            }
        }
    }
    bad
}

/// Nanoseconds this thread has run on a CPU (Linux `schedstat`), if available.
pub fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Lookups per wall-clock second and per on-CPU second (when the OS reports it).
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub wall: f64,
    pub cpu: Option<f64>,
    /// Keys per `classify_batch` call.
    pub burst: usize,
}

/// Most keys per call `measure` hands an engine.
pub const MAX_BURST: usize = 256;

/// Replays `keys` in bursts of `engine.burst()` (at most [`MAX_BURST`]) for at least
/// `min` wall time.
pub fn measure(engine: &dyn Classifier, keys: &[Key], min: Duration) -> Rate {
    let burst = engine.burst().clamp(1, MAX_BURST);
    let mut out = [Decision::NoMatch; MAX_BURST];
    let mut n = 0u64;
    let cpu0 = thread_cpu_ns();
    let start = Instant::now();
    let mut sink = 0u64;
    loop {
        for kc in keys.chunks(burst) {
            engine.classify_batch(kc, &mut out[..kc.len()]);
            if let Decision::FlowRule(i) = out[0] {
                sink = sink.wrapping_add(u64::from(i));
            }
        }
        n += keys.len() as u64;
        let el = start.elapsed();
        if el >= min {
            std::hint::black_box(sink);
            let cpu = match (cpu0, thread_cpu_ns()) {
                (Some(a), Some(b)) if b > a => Some(n as f64 * 1e9 / (b - a) as f64),
                _ => None,
            };
            return Rate {
                wall: n as f64 / el.as_secs_f64(),
                cpu,
                burst,
            };
        }
    }
}

/// Runs the command with the built-in engines.
pub fn run_classbench(args: &ClassbenchArgs) -> anyhow::Result<()> {
    run_classbench_with(args, &[])
}

/// Runs the command; `extra` engines override built-ins of the same name.
pub fn run_classbench_with(
    args: &ClassbenchArgs,
    extra: &[(&'static str, EngineFactory)],
) -> anyhow::Result<()> {
    let rtext = std::fs::read_to_string(&args.rules)
        .with_context(|| format!("reading {}", args.rules.display()))?;
    let rules = parse_rules(&rtext).with_context(|| format!("{}", args.rules.display()))?;
    let ttext = std::fs::read_to_string(&args.trace)
        .with_context(|| format!("reading {}", args.trace.display()))?;
    let trace = parse_trace(&ttext).with_context(|| format!("{}", args.trace.display()))?;
    if trace.is_empty() {
        bail!("{}: empty trace", args.trace.display());
    }
    let keys: Vec<Key> = trace.iter().map(|t| t.key).collect();
    let mut registry = builtin_engines();
    for &(name, f) in extra {
        registry.retain(|(n, _)| *n != name);
        registry.push((name, f));
    }
    if !args.json {
        println!(
            "{} rules, {} trace packets ({})",
            rules.len(),
            trace.len(),
            args.rules.display()
        );
        println!(
            "{:<10} {:>10} {:>12} {:>14} {:>14} {:>10} {:>6}",
            "engine", "build_ms", "bytes", "lookups/s", "lookups/cpu-s", "mismatches", "burst"
        );
    }
    let min = Duration::from_secs_f64(args.seconds.max(0.0));
    for name in &args.engine {
        let Some(&(_, factory)) = registry.iter().find(|(n, _)| n == name) else {
            let known: Vec<&str> = registry.iter().map(|(n, _)| *n).collect();
            bail!("unknown engine {name:?} (known: {})", known.join(", "));
        };
        let t0 = Instant::now();
        let engine = factory(&rules)?;
        let build_ms = t0.elapsed().as_secs_f64() * 1e3;
        let mismatches = count_mismatches(engine.as_ref(), &trace);
        let rate = measure(engine.as_ref(), &keys, min);
        let rep = EngineReport {
            engine: name.clone(),
            build_ms,
            bytes: engine.bytes(),
            lookups_per_s: rate.wall,
            lookups_per_cpu_s: rate.cpu,
            mismatches,
            burst: rate.burst,
        };
        if args.json {
            println!("{}", serde_json::to_string(&rep)?);
        } else {
            println!(
                "{:<10} {:>10.1} {:>12} {:>14.0} {:>14.0} {:>10} {:>6}",
                rep.engine,
                rep.build_ms,
                rep.bytes,
                rep.lookups_per_s,
                rep.lookups_per_cpu_s.unwrap_or(f64::NAN),
                rep.mismatches,
                rep.burst
            );
        }
    }
    Ok(())
}
