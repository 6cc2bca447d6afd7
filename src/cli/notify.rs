//! `selfheal notify`: the paging service.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use selfheal::live::notify::{NotifyCounters, NotifyServiceConfig};
use selfheal::live::KafkaArgs;
use selfheal::notify::{Notifier, NotifyConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Sink configuration (YAML): PagerDuty, Opsgenie, Slack, retries;
    /// secrets are read from the environment variables or files it names.
    #[arg(long = "notify-config", env = "SELFHEAL_NOTIFY_CONFIG")]
    pub config: PathBuf,
    /// Consumer group of the notifiers.
    #[arg(long, default_value = "selfheal-notify")]
    pub group: String,
    /// This instance's name (client.id); default `<host>-notify-<pid>`.
    #[arg(long, env = "SELFHEAL_INSTANCE")]
    pub instance: Option<String>,
    /// Where a partition with no committed offset starts.
    #[arg(long, value_parser = ["earliest", "latest"], default_value = "earliest")]
    pub start: String,
    /// Load and check the configuration (secrets included), print the
    /// sinks, and exit.
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub metrics: super::live::MetricsArgs,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    let cfg = NotifyConfig::load(&a.config)?;
    if a.check {
        for s in &cfg.sinks {
            let sev: Vec<&str> = s.severities.iter().map(|s| s.as_str()).collect();
            println!("{} {} [{}]", s.kind, s.display_url(), sev.join(", "));
        }
        return Ok(0);
    }
    let notifier = Arc::new(Notifier::new(cfg).context("starting the notifier")?);
    let mut svc = NotifyServiceConfig::new(a.kafka);
    svc.group = a.group;
    if let Some(i) = a.instance {
        svc.instance = i;
    }
    svc.start_earliest = a.start == "earliest";
    let rt = super::live::runtime()?;
    svc.telemetry = a.metrics.start(&rt, "notify", &svc.status)?;
    let stop = super::live::stop_on_signal(
        &rt,
        "an escalation not yet delivered is delivered after a restart",
    );
    let counters = Arc::new(NotifyCounters::default());
    rt.block_on(selfheal::live::notify::run(
        svc,
        notifier.clone(),
        stop,
        counters.clone(),
    ))?;
    let g = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let per_sink: Vec<String> = notifier
        .sinks()
        .iter()
        .zip(notifier.counters())
        .map(|(s, c)| {
            format!(
                "{} {} delivered, {} duplicates, {} gave up",
                s.kind,
                g(&c.delivered),
                g(&c.duplicates),
                g(&c.gave_up)
            )
        })
        .collect();
    eprintln!(
        "selfheal notify: stopped after {} escalations ({}), {} dead-lettered",
        g(&counters.escalations),
        per_sink.join("; "),
        g(&counters.dead_lettered)
    );
    Ok(0)
}
