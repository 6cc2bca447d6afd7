//! `selfheal bench`: throughput and latency of the live engine against a
//! broker, beside a raw consumer of the same records.

use std::path::PathBuf;

use anyhow::{bail, Context};
use selfheal::live::bench::{self, BenchConfig};
use selfheal::live::engine::Guarantee;
use selfheal::live::wire::Format;
use selfheal::live::KafkaArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bootstrap servers of the broker to measure; without it, an embedded
    /// broker (librdkafka's mock cluster) in this process.
    /// `scripts/bench.sh` starts Tansu and passes its address.
    #[arg(long, env = "SELFHEAL_BROKERS")]
    pub brokers: Option<String>,
    /// A librdkafka setting for every client (repeatable), as for
    /// `selfheal engine`.
    #[arg(short = 'X', long = "kafka", value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    /// Services in the generated fleet (two counter series each).
    #[arg(long, default_value_t = 10_000)]
    pub services: usize,
    /// SLOs in the bench policy (SLO i on service i mod services).
    #[arg(long, default_value_t = 10_000)]
    pub slos: usize,
    /// Runbooks in the bench policy (one matches the bench's alerts).
    #[arg(long, default_value_t = 1_000)]
    pub runbooks: usize,
    /// Metric samples written before the throughput phases.
    #[arg(long, default_value_t = 2_000_000)]
    pub samples: u64,
    /// One alert per this many samples in the fill (0: none).
    #[arg(long, default_value_t = 20_000)]
    pub alert_every: u64,
    /// Partitions of every topic; default 2 on a given broker. The
    /// embedded broker keeps at most 100,000 records or 5 MB per partition,
    /// so there the default is one partition per 30,000 records.
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Engine instances in one consumer group, each on a thread of its
    /// own, as replicas of a Deployment share the partitions (at most the
    /// partition count). They start together; a rebalance while they
    /// join is part of the measured phase.
    #[arg(long, default_value_t = 1)]
    pub engines: usize,
    /// Encoding of the generated records.
    #[arg(long, value_enum, default_value = "avro")]
    pub format: Format,
    /// The engine's guarantee; default: exactly_once when the broker
    /// commits transactions, else at_least_once.
    #[arg(long = "processing-guarantee", value_enum)]
    pub guarantee: Option<Guarantee>,
    /// fetch.wait.max.ms of every consumer (the raw reader, the engine,
    /// the actions reader). Apache Kafka answers a fetch as soon as it has
    /// a record; some brokers (Tansu 0.6) hold every fetch this long, and
    /// each hop of an alert's way (to the engine, its command to the
    /// reader) then waits up to this much more.
    #[arg(long, default_value_t = 2)]
    pub fetch_wait_ms: u32,
    /// linger.ms of the load generator's metric producer in the latency
    /// and soak phases: samples go to the broker in fewer, larger
    /// requests.
    #[arg(long, default_value_t = 20)]
    pub metrics_linger_ms: u32,
    /// Loads of the latency phases, as shares of the measured engine
    /// capacity.
    #[arg(long, value_delimiter = ',', default_value = "0.5,0.8")]
    pub loads: Vec<f64>,
    /// Length of each latency phase, seconds.
    #[arg(long, default_value_t = 20)]
    pub load_seconds: u64,
    /// Alerts per second during the latency phases (each one a new
    /// incident with a tier-1 command).
    #[arg(long, default_value_t = 20)]
    pub alerts_per_second: u32,
    /// A steady run after the latency phases (e.g. 30m), sampling
    /// resident memory and the engine's lag every 30 s.
    #[arg(long)]
    pub soak: Option<String>,
    /// Load of the soak, as a share of the measured capacity.
    #[arg(long, default_value_t = 0.8)]
    pub soak_load: f64,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Prefix of the run's topics; default `selfheal-bench-<pid>-<time>.`.
    /// They are left on the broker.
    #[arg(long)]
    pub topic_prefix: Option<String>,
    /// What the broker is, for the report (e.g. "tansu 0.6, memory
    /// storage"); default: its address.
    #[arg(long)]
    pub broker_name: Option<String>,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    if a.services == 0 || a.slos == 0 || a.samples == 0 {
        bail!("--services, --slos and --samples must be at least 1");
    }
    if a.partitions.is_some_and(|p| p < 1) {
        bail!("--partitions must be at least 1");
    }
    if a.engines == 0 {
        bail!("--engines must be at least 1");
    }
    if let Some(l) = a.loads.iter().find(|l| !(**l > 0.0 && **l <= 2.0)) {
        bail!("--loads must be shares of capacity in (0, 2], not {l}");
    }
    if !(a.soak_load > 0.0 && a.soak_load <= 2.0) {
        bail!("--soak-load must be in (0, 2]");
    }
    let soak = a
        .soak
        .as_deref()
        .map(super::live::std_duration)
        .transpose()?
        .map(|d| (d, a.soak_load));
    let rt = super::live::runtime()?;
    let prefix = a.topic_prefix.clone().unwrap_or_else(|| {
        format!(
            "selfheal-bench-{}-{}.",
            std::process::id(),
            selfheal::live::wall_ms()
        )
    });
    let (_cluster, brokers, kind) = match &a.brokers {
        Some(b) => (
            None,
            b.clone(),
            a.broker_name
                .clone()
                .unwrap_or_else(|| format!("given ({b})")),
        ),
        None => {
            let c =
                rdkafka::mocking::MockCluster::new(1).context("starting the embedded broker")?;
            let b = c.bootstrap_servers();
            (Some(c), b, "embedded (librdkafka mock cluster)".to_string())
        }
    };
    let partitions = a.partitions.unwrap_or(match &_cluster {
        None => 2,
        Some(_) => {
            let records = a.samples + a.samples / a.alert_every.max(1);
            (records.div_ceil(30_000) as i32).max(2)
        }
    });
    let mut kafka = KafkaArgs::local(&brokers);
    kafka.settings = a.settings.clone();
    kafka.topic_prefix = prefix.clone();
    match &_cluster {
        Some(c) => super::live::create_embedded_topics(c, &kafka, partitions)?,
        None => rt
            .block_on(selfheal::live::create_topics(&kafka, partitions))
            .with_context(|| format!("creating the bench topics on {brokers}"))?,
    }
    if a.engines > partitions as usize {
        bail!("--engines {} is more than the {partitions} partitions: an engine without one would idle", a.engines);
    }
    eprintln!("selfheal bench: broker {brokers}, topics {prefix}* ({partitions} partitions)");
    let cfg = BenchConfig {
        kafka,
        services: a.services,
        slos: a.slos,
        runbooks: a.runbooks,
        samples: a.samples,
        alert_every: a.alert_every,
        partitions,
        engines: a.engines,
        format: a.format,
        guarantee: a.guarantee,
        fetch_wait_ms: a.fetch_wait_ms,
        metrics_linger_ms: a.metrics_linger_ms,
        loads: a.loads.clone(),
        load_seconds: a.load_seconds,
        alerts_per_second: a.alerts_per_second,
        soak,
        broker_kind: kind,
    };
    let started = std::time::Instant::now();
    let report = bench::run(&cfg, &mut |line| {
        eprintln!("[{:>6.1}s] {line}", started.elapsed().as_secs_f64());
    })?;
    let json = serde_json::to_string_pretty(&report)?;
    println!("{json}");
    if let Some(path) = &a.out {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(0)
}
