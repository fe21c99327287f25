//! `flowgate` command line (control-plane subcommands; the lead merges the rest).

use clap::{Parser, Subcommand};
use flowgate::control::cli;

#[derive(Parser)]
#[command(name = "flowgate", version, about = "flowgate packet processor")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Supervisor: registrations, relay, server lists, numbers (ANA), management.
    Supervisor(cli::SupervisorArgs),
    /// End-system agent beside a server.
    Agent(cli::AgentArgs),
    /// Talk to a supervisor.
    Ctl(cli::CtlArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Supervisor(a) => cli::run_supervisor(&a),
        Cmd::Agent(a) => cli::run_agent(&a),
        Cmd::Ctl(a) => cli::run_ctl(&a),
    }
}
