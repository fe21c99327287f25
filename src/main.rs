//! The `flowgate` binary (minimal: only the `classbench` subcommand so far).

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "flowgate", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Benchmark classifiers on ClassBench filter and trace files.
    Classbench(flowgate::classify::bench_cmd::ClassbenchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Classbench(a) => flowgate::classify::bench_cmd::run_classbench(&a),
    }
}
