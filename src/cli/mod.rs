//! The command line: parsing and the subcommands' edges.

pub mod bench;
pub mod broker;
pub mod check;
pub mod config;
pub mod demo;
pub mod live;
pub mod notify;
pub mod record;
pub mod replay;

use clap::{Parser, Subcommand};

/// selfheal: SLO burn rates, runbooks, safety tiers and guardrails.
#[derive(Debug, Parser)]
#[command(name = "selfheal", version, about)]
pub struct Cli {
    /// Config file (YAML): a `kafka` section and one section per
    /// subcommand, keyed by long flag names. Flags win over `SELFHEAL_*`
    /// variables, which win over the file, which wins over defaults.
    #[arg(long, global = true, env = "SELFHEAL_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Print the subcommand's effective settings with their sources
    /// (flag, env, file, default), secrets redacted, and exit.
    #[arg(long, global = true)]
    pub print_config: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The whole loop on an embedded broker: a fleet of local services
    /// with injected faults, the engine, an executor, a live timeline and a
    /// report.
    Demo(demo::Args),
    /// Drive the decision core from a historical JSON Lines stream or a
    /// time range of the input topics.
    Replay(replay::Args),
    /// Write a time range of the input topics as a replay file.
    Record(record::Args),
    /// Validate a policy file; lists every problem with its place.
    Check(check::Args),
    /// Run the decision engine against a broker.
    Engine(live::EngineArgs),
    /// Run an executor: carries out commands, publishes results.
    Executor(live::ExecutorArgs),
    /// Deliver escalations to PagerDuty, Opsgenie and Slack; resolve them there when their incident resolves.
    Notify(notify::Args),
    /// Publish alerts.
    #[command(subcommand)]
    Alert(live::AlertCmd),
    /// Approve a proposed (tier 2) command.
    Approve(live::DecideArgs),
    /// Reject a proposed (tier 2) command.
    Reject(live::DecideArgs),
    /// Stop (on) or resume (off) automated actions in a scope.
    KillSwitch(live::KillSwitchArgs),
    /// Ask every engine to read its policy file again now (a control
    /// record); a changed, valid policy is applied at one batch boundary.
    ReloadPolicy(live::ReloadPolicyArgs),
    /// Follow and verify the audit topic; check it against a replay of
    /// the journals.
    #[command(subcommand)]
    Audit(live::AuditCmd),
    /// Receive alerts from other systems.
    #[command(subcommand)]
    Bridge(live::BridgeCmd),
    /// Read the engine's per-partition journal.
    #[command(subcommand)]
    Journal(live::JournalCmd),
    /// Measure the engine's throughput and alert-to-command latency
    /// against a broker, beside a raw consumer of the same records.
    Bench(bench::Args),
    /// Create selfheal's topics on a broker.
    #[command(subcommand)]
    Topics(live::TopicsCmd),
    /// An embedded broker (librdkafka's mock cluster) on loopback with
    /// selfheal's topics, in its own process: for trying the live commands
    /// without Kafka. In memory, bounded per partition; not for production.
    Broker(broker::Args),
    /// One service instance of the demo fleet (started by `selfheal demo`).
    #[command(name = "demo-service", hide = true)]
    DemoService(selfheal::demo::ServiceOpts),
}

/// Runs the parsed command; the process exit code is returned.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Replay(a) => replay::run(a),
        Command::Record(a) => record::run(a),
        Command::Check(a) => check::run(a),
        Command::Demo(a) => demo::run(a),
        Command::DemoService(a) => demo::service(a),
        Command::Engine(a) => live::engine(a),
        Command::Executor(a) => live::executor(a),
        Command::Notify(a) => notify::run(a),
        Command::Alert(a) => live::alert(a),
        Command::Approve(a) => live::decide(a, selfheal::records::Verdict::Approve),
        Command::Reject(a) => live::decide(a, selfheal::records::Verdict::Reject),
        Command::KillSwitch(a) => live::kill_switch(a),
        Command::ReloadPolicy(a) => live::reload_policy(a),
        Command::Audit(a) => live::audit(a),
        Command::Bridge(a) => live::bridge(a),
        Command::Topics(a) => live::topics(a),
        Command::Journal(a) => live::journal(a),
        Command::Bench(a) => bench::run(a),
        Command::Broker(a) => broker::run(a),
    }
}
