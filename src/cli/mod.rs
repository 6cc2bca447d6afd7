//! The command line: parsing and the subcommands' edges.

pub mod check;
pub mod replay;

use clap::{Parser, Subcommand};

/// selfheal: SLO burn rates, runbooks, safety tiers and guardrails.
#[derive(Debug, Parser)]
#[command(name = "selfheal", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drive the decision core from a historical JSON Lines stream.
    Replay(replay::Args),
    /// Validate a policy file; lists every problem with its place.
    Check(check::Args),
}

/// Runs the parsed command; the process exit code is returned.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Replay(a) => replay::run(a),
        Command::Check(a) => check::run(a),
    }
}
