//! `selfheal bench`: the live engine's throughput and latency against a
//! broker, measured in one run beside a raw consumer of the same records.
//!
//! Phases, each on fresh topics under a per-run prefix:
//!
//! 1. **fill** — metric samples for `services` services (two counter series
//!    each: requests and errors, one sample per series per minute of event
//!    time, ending at the wall clock) with an alert every `alert_every`
//!    samples, produced as the live wire format.
//! 2. **raw** — a plain rdkafka consumer reads every record of the input
//!    topics with the engine's consumer settings and does nothing with
//!    them: the broker's and client's ceiling.
//! 3. **engine** — the engine, as `selfheal engine` runs it (consumer
//!    group, decoding, burn rates, runbook matching, journal, outputs,
//!    transactions or flushes and offset commits), consumes the same
//!    records; its rate is the capacity.
//! 4. **latency** — for each load (a share of the capacity), samples are
//!    produced at that rate with alerts mixed in, and the time from an
//!    alert's send to its command's arrival on the actions topic is
//!    recorded. A responder plays the executor (a `succeeded` result, then
//!    the alert resolved), so incidents close as in production.
//! 5. **soak** (optional) — the same at one load for a long time, sampling
//!    the process's resident memory and the engine's lag.
//!
//! Every figure is printed as one JSON object ([`Report`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::engine::{self, EngineConfig, EngineCounters, Guarantee};
use super::wire::{self, Format};
use super::{serve_deliveries, wall_ms, KafkaArgs, LiveError, Topics};
use crate::engine::Engine;
use crate::policy::Policy;
use crate::records::avro::{MetricTemplate, MetricTemplateWriter};
use crate::records::{
    ActionResult, Alert, AlertStatus, Fixed, Input, Labels, MetricSample, Output, ResultStatus,
};
use crate::time::Timestamp;

/// What to generate and how to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Brokers and pass-through settings; the topic prefix is the run's.
    pub kafka: KafkaArgs,
    pub services: usize,
    pub slos: usize,
    pub runbooks: usize,
    /// Metric samples in the fill.
    pub samples: u64,
    /// One alert per this many samples in the fill.
    pub alert_every: u64,
    pub partitions: i32,
    /// Engine instances in one consumer group, a thread each.
    pub engines: usize,
    pub format: Format,
    /// `None`: exactly-once when the broker has transactions, else
    /// at-least-once.
    pub guarantee: Option<Guarantee>,
    /// `fetch.wait.max.ms` of every consumer (raw, engine, actions).
    pub fetch_wait_ms: u32,
    /// `linger.ms` of the load generator's metric producer in the latency
    /// and soak phases.
    pub metrics_linger_ms: u32,
    /// Shares of the measured capacity for the latency phases.
    pub loads: Vec<f64>,
    pub load_seconds: u64,
    pub alerts_per_second: u32,
    /// Length and load of the soak phase; none when `None`.
    pub soak: Option<(StdDuration, f64)>,
    /// Name of the broker for the report.
    pub broker_kind: String,
}

/// Every figure of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub broker: BrokerInfo,
    pub machine: Machine,
    pub workload: Workload,
    pub settings: Settings,
    pub fill: Rate,
    pub raw_consume: Rate,
    pub engine: EngineRate,
    /// `engine.records_per_s / raw_consume.records_per_s`.
    pub ratio_engine_to_raw: f64,
    pub latency: Vec<Latency>,
    pub memory: Memory,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<Soak>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BrokerInfo {
    pub kind: String,
    pub brokers: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    pub services: usize,
    pub series: usize,
    pub slos: usize,
    pub runbooks: usize,
    pub samples: u64,
    pub alerts: u64,
    pub partitions: i32,
    pub format: &'static str,
    pub mean_record_bytes: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Engine instances in the consumer group, a thread each.
    pub engines: usize,
    pub processing_guarantee: &'static str,
    pub fetch_wait_max_ms: u32,
    /// `fetch.queue.backoff.ms` of every consumer (raw, engine, actions).
    pub fetch_queue_backoff_ms: String,
    /// `linger.ms` of the producer that sends alerts in the latency phase.
    pub alert_producer_linger_ms: u32,
    /// The load generator's metric producer in the latency and soak phases.
    pub metrics_producer_linger_ms: u32,
    /// `linger.ms` of the engine's producer; a batch with a command is
    /// flushed or committed at once, so it does not add to the latency.
    pub engine_producer_linger_ms: u32,
    pub engine_commit_interval_ms: u64,
    pub engine_max_batch: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rate {
    pub records: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    pub mib_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EngineRate {
    pub records: u64,
    /// From the first record consumed to the commit of the last.
    pub seconds: f64,
    pub records_per_s: f64,
    /// From start to the first record: group join and journal recovery.
    pub startup_seconds: f64,
    pub batches: u64,
    pub outputs: u64,
    pub commands: u64,
    pub dead_lettered: u64,
    /// Records held back by pacing (a partition's input running ahead of
    /// a slower one) and decided later, each copied once.
    pub held: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Share of `engine.records_per_s`.
    pub load: f64,
    pub target_records_per_s: f64,
    pub achieved_records_per_s: f64,
    pub seconds: f64,
    pub alerts: u64,
    pub commands: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Records produced but not yet consumed by the engine when the
    /// producer stopped.
    pub lag_at_end: u64,
    /// The five slowest alerts: when each was sent (seconds into the
    /// phase) and its latency, to tell a slow start from a stall.
    pub slowest: Vec<Slow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Slow {
    pub sent_at_s: f64,
    pub ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Heap bytes of one SLO's burn-rate windows (30-day period).
    pub slo_window_bytes: usize,
    /// Every byte of the burn-rate state (windows, series, selector index)
    /// divided by the number of SLOs, with every series seen.
    pub slo_state_bytes_per_slo: usize,
    pub slo_state_bound_bytes: usize,
    /// Resident memory of the whole bench process at the end (producers,
    /// consumers, their queues and the engine).
    pub rss_mib_end: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Soak {
    pub load: f64,
    pub seconds: f64,
    pub records: u64,
    pub alerts: u64,
    pub commands: u64,
    pub p99_ms: f64,
    pub max_lag: u64,
    /// Records produced and not yet consumed by the engine, every 30 s.
    pub lag: Vec<u64>,
    /// The same once the load stopped and the engine had up to 60 s to
    /// catch up: 0 means it consumed every record.
    pub lag_after_drain: u64,
    /// Records the engine sent to the dead-letter topic during the soak.
    pub dead_lettered: u64,
    /// Resident memory every 30 s, MiB.
    pub rss_mib: Vec<f64>,
    /// Least-squares slope of the second half of `rss_mib`, MiB per minute.
    pub rss_slope_mib_per_min_second_half: f64,
    /// Bytes the allocator has handed out and not had back (Rust's
    /// allocations and librdkafka's alike), every 30 s, MiB: what the
    /// process holds, where `rss_mib` also counts memory freed but kept by
    /// the allocator. jemalloc's `stats.allocated` in the `selfheal`
    /// binary; empty where no allocator statistics are available.
    pub heap_in_use_mib: Vec<f64>,
    /// Least-squares slope of the second half of `heap_in_use_mib`.
    pub heap_slope_mib_per_min_second_half: Option<f64>,
    /// Memory the allocator keeps beyond that, every 30 s, MiB (jemalloc:
    /// `stats.resident` minus `stats.allocated`; glibc: free in its
    /// arenas).
    pub heap_free_mib: Vec<f64>,
    /// Incidents open in the engine every 30 s: each alert is answered
    /// and resolved, so this stays near alerts per second times the
    /// alert-to-resolve time unless incidents are left open.
    pub open_incidents: Vec<u64>,
    /// What the engine keeps of closed incidents every 30 s: their alert
    /// keys, kept a day (and the guardrails' command history of their
    /// targets, which the bench policy, with no cooldown or rate limit,
    /// does not keep). It grows with every incident for that day, and
    /// the heap with it.
    pub remembered: Vec<u64>,
}

/// Bytes of SLO state allowed per 30-day SLO.
pub const SLO_STATE_BOUND: usize = 32 * 1024;

const ALERT: &str = "BenchInstanceDown";

/// The bench policy: `slos` SLOs over `services` services (SLO `i` on
/// service `i % services`), SRE Workbook tiers, one tier-1 runbook for the
/// bench's alert and `runbooks - 1` others that never match.
pub fn policy_text(services: usize, slos: usize, runbooks: usize) -> String {
    let mut s = String::with_capacity(slos * 220 + runbooks * 200);
    s += "slos:\n";
    for i in 0..slos {
        let svc = i % services.max(1);
        s += &format!(
            "  - name: slo{i}\n    service: svc{svc}\n    objective: 99.9\n    sli:\n      total: 'http_requests_total{{service=\"svc{svc}\"}}'\n      bad: 'http_requests_total{{service=\"svc{svc}\",code=~\"5..\"}}'\n"
        );
    }
    s += "runbooks:\n";
    s += &format!(
        "  - name: restart-instance\n    match: ['alertname=\"{ALERT}\"', 'env!=\"dev\"']\n    tier: 1\n    action: {{kind: restart, target: '{{{{ labels.pod }}}}'}}\n    validate: {{within: 5m}}\n"
    );
    for i in 1..runbooks.max(1) {
        s += &format!(
            "  - name: rb{i}\n    match: ['alertname=\"Other{i}\"']\n    tier: 1\n    action: {{kind: restart, target: '{{{{ labels.pod }}}}'}}\n    validate: {{within: 5m}}\n"
        );
    }
    s
}

/// The record generator: counters that only go up, one sample per series
/// in turn.
struct Gen {
    services: usize,
    /// Samples so far per series (2 per service: code 200, code 500).
    counts: Vec<i64>,
    next: usize,
    alerts: u64,
    format: Format,
    /// Record key of each service.
    keys: Vec<String>,
    /// Avro: per series, its first sample split around `timestamp` and
    /// `value`; only those two are written per sample after that, so the
    /// load generator's cost stays small beside the engine's.
    avro_parts: Vec<Option<MetricTemplate>>,
    avro_writer: MetricTemplateWriter,
}

impl Gen {
    fn new(services: usize, format: Format) -> Gen {
        Gen {
            services,
            counts: vec![0; services * 2],
            next: 0,
            alerts: 0,
            format,
            keys: (0..services).map(|s| format!("svc{s}")).collect(),
            avro_parts: (0..services * 2).map(|_| None).collect(),
            avro_writer: MetricTemplateWriter::default(),
        }
    }

    /// The record key of service `svc`.
    fn key(&self, svc: usize) -> &str {
        &self.keys[svc]
    }

    fn series(&self) -> usize {
        self.counts.len()
    }

    /// The next sample: 1,000 requests a minute per service and one error a
    /// minute on every third service (a burn rate of 1: nothing fires).
    fn metric(&mut self, ts: i64) -> (usize, Vec<u8>) {
        let k = self.next;
        self.next = (k + 1) % self.counts.len();
        let svc = k / 2;
        let n = self.counts[k];
        self.counts[k] = n + 1;
        let per = if k % 2 == 0 {
            1000
        } else {
            i64::from(svc % 3 == 0)
        };
        if let Some(t) = &self.avro_parts[k] {
            let value = Fixed::from_units(n * per);
            return (svc, t.encode(&mut self.avro_writer, Timestamp(ts), &value));
        }
        let value = self.metric_slow(k, n * per, ts);
        if self.format == Format::Avro {
            self.avro_parts[k] = MetricTemplate::new(&value);
        }
        (svc, value)
    }

    /// Series `k`'s sample through the general encoder.
    fn metric_slow(&self, k: usize, units: i64, ts: i64) -> Vec<u8> {
        let svc = k / 2;
        let code = if k % 2 == 0 { "200" } else { "500" };
        let input = Input::Metric(MetricSample {
            name: "http_requests_total".into(),
            labels: Labels::from_pairs([
                ("service", format!("svc{svc}")),
                ("code", code.to_string()),
                (
                    "instance",
                    format!(
                        "10.{}.{}.{}:9090",
                        svc / 65536,
                        (svc / 256) % 256,
                        svc % 256
                    ),
                ),
                ("job", "api".to_string()),
            ]),
            value: Fixed::from_units(units),
            timestamp: Some(Timestamp(ts)),
        });
        self.encode(&input)
    }

    /// The next alert (firing), for a service chosen in turn; its `pod`
    /// label carries the alert's number.
    fn alert(&mut self, ts: i64) -> (u64, usize, Vec<u8>) {
        let n = self.alerts;
        self.alerts += 1;
        let svc = (n as usize * 7919) % self.services;
        let a = bench_alert(n, svc, ts, AlertStatus::Firing);
        (n, svc, self.encode(&Input::Alerts(vec![a])))
    }

    fn encode(&self, input: &Input) -> Vec<u8> {
        wire::encode_input(input, self.format).unwrap_or_default()
    }
}

fn bench_alert(n: u64, svc: usize, ts: i64, status: AlertStatus) -> Alert {
    Alert {
        status,
        labels: Labels::from_pairs([
            ("alertname", ALERT.to_string()),
            ("service", format!("svc{svc}")),
            ("pod", format!("svc{svc}-pod-{n}")),
            ("env", "prod".to_string()),
            ("severity", "page".to_string()),
        ]),
        annotations: Labels::from_pairs([("summary", "instance down".to_string())]),
        starts_at: Some(Timestamp(ts)),
        ends_at: (status == AlertStatus::Resolved).then_some(Timestamp(ts)),
        fingerprint: Some(format!("bench-{n}")),
        generator_url: None,
    }
}

/// The alert number in a command's target (`svcS-pod-N`).
fn alert_number(target: &str) -> Option<u64> {
    target.rsplit_once("-pod-")?.1.parse().ok()
}

fn send(producer: &BaseProducer, mut rec: BaseRecord<'_, str, [u8]>) -> Result<(), LiveError> {
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                rec = r;
                producer.poll(StdDuration::from_millis(5));
            }
            Err((e, _)) => {
                return Err(LiveError::Kafka {
                    context: "producing bench records".into(),
                    source: e,
                })
            }
        }
    }
}

/// Sends a record of service `svc` (the key), stamped `ts`.
fn send_for(
    producer: &BaseProducer,
    topic: &str,
    key: &str,
    value: &[u8],
    ts: i64,
) -> Result<(), LiveError> {
    send(
        producer,
        BaseRecord::to(topic).key(key).payload(value).timestamp(ts),
    )
}

fn producer(kafka: &KafkaArgs, linger_ms: u32) -> Result<BaseProducer, LiveError> {
    let mut pc = kafka.producer_config()?;
    pc.set("linger.ms", linger_ms.to_string())
        .set("compression.type", "lz4")
        .set("queue.buffering.max.kbytes", "262144")
        .set("batch.num.messages", "10000");
    pc.create().map_err(LiveError::kafka("creating a producer"))
}

fn consumer_config(cfg: &BenchConfig) -> Result<rdkafka::ClientConfig, LiveError> {
    let mut cc = cfg.kafka.consumer_config()?;
    cc.set("group.id", "selfheal-bench-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", cfg.fetch_wait_ms.to_string());
    Ok(cc)
}

fn partitions_of(
    consumer: &BaseConsumer,
    topic: &str,
    brokers: &str,
) -> Result<Vec<i32>, LiveError> {
    let md = consumer
        .fetch_metadata(Some(topic), StdDuration::from_secs(10))
        .map_err(LiveError::kafka(format!("fetching {topic} metadata")))?;
    let ids: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if ids.is_empty() {
        return Err(LiveError::MissingTopic {
            topic: topic.to_string(),
            brokers: brokers.to_string(),
        });
    }
    Ok(ids)
}

/// One soak sample.
struct Sample {
    rss_mib: f64,
    heap: Option<Heap>,
    lag: u64,
    open_incidents: u64,
    remembered: u64,
}

#[derive(Clone, Copy)]
struct Heap {
    in_use_mib: f64,
    free_mib: f64,
}

/// An allocator's own account of the process's heap: bytes handed out
/// and not returned, and bytes it holds beyond them.
pub type HeapProbe = fn() -> Option<(u64, u64)>;

static HEAP_PROBE: std::sync::OnceLock<HeapProbe> = std::sync::OnceLock::new();

/// Says how to read the heap of the allocator the binary chose (the
/// `selfheal` binary: jemalloc); only the first call counts. Without it,
/// glibc's `mallinfo2` is read where available.
pub fn set_heap_probe(probe: HeapProbe) {
    let _ = HEAP_PROBE.set(probe);
}

/// The allocator's account of the process's heap: the probe set with
/// [`set_heap_probe`], else glibc malloc's (bytes handed out and not
/// returned, mmapped chunks included, and bytes free in its arenas);
/// `None` where neither is available.
fn heap() -> Option<Heap> {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    if let Some(probe) = HEAP_PROBE.get() {
        return probe().map(|(used, held)| Heap {
            in_use_mib: mib(used),
            free_mib: mib(held),
        });
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments and only reads the
        // allocator's statistics, under its own locks.
        let m = unsafe { libc::mallinfo2() };
        Some(Heap {
            in_use_mib: mib((m.uordblks + m.hblkhd) as u64),
            free_mib: mib(m.fordblks as u64),
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        memory_gib,
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// Runs every phase; `progress` receives one line per step.
pub fn run(cfg: &BenchConfig, progress: &mut dyn FnMut(&str)) -> Result<Report, LiveError> {
    let policy = crate::policy::parse(
        &policy_text(cfg.services, cfg.slos, cfg.runbooks),
        "bench-policy.yaml",
    )
    .map_err(|p| LiveError::Other(format!("bench policy: {p}")))?;
    let policy = Arc::new(policy);
    let topics = cfg.kafka.topics();

    // 1. Fill.
    let mut gen = Gen::new(cfg.services, cfg.format);
    let fill = fill(cfg, &topics, &mut gen, progress)?;
    let total = fill.records;
    let fill_alerts = total - cfg.samples;
    let mean_bytes = fill.mib_per_s * 1024.0 * 1024.0 / fill.records_per_s.max(1.0);

    // 2. Raw consume.
    progress("raw consume: reading every input record, no processing");
    let raw = raw_consume(cfg, &topics, total)?;
    progress(&format!(
        "raw consume: {:.0} records/s ({:.1} s)",
        raw.records_per_s, raw.seconds
    ));

    // 3. The engine.
    let guarantee = match cfg.guarantee {
        Some(g) => g,
        None => {
            if engine::broker_has_transactions(&cfg.kafka)? {
                Guarantee::ExactlyOnce
            } else {
                Guarantee::AtLeastOnce
            }
        }
    };
    let mut ecfg = EngineConfig::new(cfg.kafka.clone(), policy.clone());
    ecfg.group = format!("{}engine", cfg.kafka.topic_prefix);
    ecfg.instance = "bench-engine".into();
    ecfg.guarantee = guarantee;
    ecfg.format = cfg.format;
    ecfg.kafka
        .settings
        .push(format!("consumer.fetch.wait.max.ms={}", cfg.fetch_wait_ms));
    let settings = Settings {
        engines: cfg.engines,
        processing_guarantee: match guarantee {
            Guarantee::ExactlyOnce => "exactly_once",
            Guarantee::AtLeastOnce => "at_least_once",
        },
        fetch_wait_max_ms: cfg.fetch_wait_ms,
        fetch_queue_backoff_ms: consumer_config(cfg)?
            .get("fetch.queue.backoff.ms")
            .unwrap_or("librdkafka's default")
            .to_string(),
        alert_producer_linger_ms: 0,
        metrics_producer_linger_ms: cfg.metrics_linger_ms,
        engine_producer_linger_ms: engine::PRODUCER_LINGER_MS,
        engine_commit_interval_ms: ecfg.commit_interval.as_millis() as u64,
        engine_max_batch: ecfg.max_batch,
    };
    progress(&format!(
        "engine: consuming the same records ({})",
        settings.processing_guarantee
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(EngineCounters::default());
    let launched = Instant::now();
    let mut handles = Vec::new();
    for i in 0..cfg.engines {
        let (mut ecfg, stop, counters) = (ecfg.clone(), stop.clone(), counters.clone());
        let name = if cfg.engines == 1 {
            "bench-engine".to_string()
        } else {
            format!("bench-engine-{i}")
        };
        ecfg.instance = name.clone();
        handles.push(
            std::thread::Builder::new()
                .name(name)
                .spawn(move || engine::run(&ecfg, &stop, &counters))
                .map_err(|e| LiveError::Other(format!("starting the engine thread: {e}")))?,
        );
    }
    let handle = Engines(handles);
    let engine_rate = (|| {
        let engine_rate = measure_engine(&counters, total, launched, &handle, progress)?;
        progress(&format!(
            "engine: {:.0} records/s ({:.1} s), {:.2}x raw",
            engine_rate.records_per_s,
            engine_rate.seconds,
            engine_rate.records_per_s / raw.records_per_s.max(1.0)
        ));
        // Every fill alert opens an incident with a tier-1 command; a
        // faster engine that decides fewer of them is not faster.
        if engine_rate.commands != fill_alerts || engine_rate.dead_lettered > 0 {
            progress(&format!(
                "engine: WARNING: {} commands for {fill_alerts} alerts, {} records dead-lettered \
                 (the rate is not comparable)",
                engine_rate.commands, engine_rate.dead_lettered
            ));
        }

        // 4. Latency at shares of the capacity.
        let mut latency = Vec::new();
        for &load in &cfg.loads {
            let rate = engine_rate.records_per_s * load;
            progress(&format!(
                "latency at {:.0}% load: {rate:.0} records/s for {} s, {} alerts/s",
                load * 100.0,
                cfg.load_seconds,
                cfg.alerts_per_second
            ));
            let run = drive(
                cfg,
                &topics,
                &mut gen,
                &counters,
                &handle,
                rate,
                StdDuration::from_secs(cfg.load_seconds),
                None,
                progress,
            )?;
            let l = run.latency(load);
            progress(&format!(
                "latency at {:.0}% load: p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms ({} commands)",
                load * 100.0,
                l.p50_ms,
                l.p99_ms,
                l.p999_ms,
                l.commands
            ));
            latency.push(l);
        }

        // 5. Soak.
        let soak = match cfg.soak {
            None => None,
            Some((length, load)) => {
                let rate = engine_rate.records_per_s * load;
                progress(&format!(
                    "soak: {:.0}% load ({rate:.0} records/s) for {} s",
                    load * 100.0,
                    length.as_secs()
                ));
                let mut samples = Vec::new();
                let run = drive(
                    cfg,
                    &topics,
                    &mut gen,
                    &counters,
                    &handle,
                    rate,
                    length,
                    Some(&mut samples),
                    progress,
                )?;
                let l = run.latency(load);
                let rss: Vec<f64> = samples.iter().map(|s| round(s.rss_mib, 1)).collect();
                let lag: Vec<u64> = samples.iter().map(|s| s.lag).collect();
                let heap: Vec<f64> = samples
                    .iter()
                    .filter_map(|s| s.heap.map(|h| round(h.in_use_mib, 1)))
                    .collect();
                let heap_free: Vec<f64> = samples
                    .iter()
                    .filter_map(|s| s.heap.map(|h| round(h.free_mib, 1)))
                    .collect();
                let max_lag = lag.iter().copied().max().unwrap_or(0);
                Some(Soak {
                    load,
                    seconds: round(run.seconds, 1),
                    records: run.records,
                    alerts: l.alerts,
                    commands: l.commands,
                    p99_ms: l.p99_ms,
                    max_lag,
                    lag,
                    lag_after_drain: run.lag_after_drain,
                    dead_lettered: run.dead_lettered,
                    rss_slope_mib_per_min_second_half: round(slope(&rss[rss.len() / 2..], 0.5), 3),
                    rss_mib: rss,
                    heap_slope_mib_per_min_second_half: (!heap.is_empty())
                        .then(|| round(slope(&heap[heap.len() / 2..], 0.5), 3)),
                    heap_in_use_mib: heap,
                    heap_free_mib: heap_free,
                    open_incidents: samples.iter().map(|s| s.open_incidents).collect(),
                    remembered: samples.iter().map(|s| s.remembered).collect(),
                })
            }
        };
        Ok::<_, LiveError>((engine_rate, latency, soak))
    })();
    stop.store(true, Ordering::Relaxed);
    let mut joined = Ok(());
    for h in handle.0 {
        let r = h
            .join()
            .map_err(|_| LiveError::Other("an engine thread panicked".into()))?;
        joined = joined.and(r);
    }
    let (engine_rate, latency, soak) = engine_rate?;
    joined?;

    let memory = slo_memory(&policy, &mut Gen::new(cfg.services, cfg.format));
    Ok(Report {
        broker: BrokerInfo {
            kind: cfg.broker_kind.clone(),
            brokers: cfg.kafka.brokers.clone(),
        },
        machine: machine(),
        workload: Workload {
            services: cfg.services,
            series: gen.series(),
            slos: cfg.slos,
            runbooks: cfg.runbooks,
            samples: cfg.samples,
            alerts: fill_alerts,
            partitions: cfg.partitions,
            format: match cfg.format {
                Format::Avro => "avro",
                Format::Json => "json",
            },
            mean_record_bytes: round(mean_bytes, 1),
        },
        settings,
        ratio_engine_to_raw: round(engine_rate.records_per_s / raw.records_per_s.max(1.0), 3),
        fill,
        raw_consume: raw,
        engine: engine_rate,
        latency,
        memory: Memory {
            rss_mib_end: round(rss_mib(), 1),
            ..memory
        },
        soak,
    })
}

/// Least-squares slope of `ys` sampled every `step_min` minutes.
fn slope(ys: &[f64], step_min: f64) -> f64 {
    let n = ys.len() as f64;
    if ys.len() < 2 {
        return 0.0;
    }
    let mx = (n - 1.0) / 2.0 * step_min;
    let my = ys.iter().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, y) in ys.iter().enumerate() {
        let dx = i as f64 * step_min - mx;
        num += dx * (y - my);
        den += dx * dx;
    }
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

fn fill(
    cfg: &BenchConfig,
    topics: &Topics,
    gen: &mut Gen,
    progress: &mut dyn FnMut(&str),
) -> Result<Rate, LiveError> {
    let producer = producer(&cfg.kafka, 20)?;
    let series = gen.series() as i64;
    let minutes = (cfg.samples as i64 + series - 1) / series;
    progress(&format!(
        "fill: {} samples ({} series, {} minutes of event time) and {} alerts into {}",
        cfg.samples,
        series,
        minutes,
        cfg.samples / cfg.alert_every.max(1),
        topics.metrics
    ));
    let end = wall_ms();
    let start_ts = end - minutes * 60_000;
    let started = Instant::now();
    let mut bytes = 0u64;
    let mut records = 0u64;
    let mut last_report = Instant::now();
    for j in 0..cfg.samples {
        let ts = start_ts + (j as i64) * 60_000 / series;
        let (svc, value) = gen.metric(ts);
        bytes += value.len() as u64;
        send_for(&producer, &topics.metrics, gen.key(svc), &value, ts)?;
        records += 1;
        if cfg.alert_every > 0 && (j + 1) % cfg.alert_every == 0 {
            let (_, svc, value) = gen.alert(ts);
            bytes += value.len() as u64;
            send_for(&producer, &topics.alerts, gen.key(svc), &value, ts)?;
            records += 1;
        }
        if j % 4096 == 0 {
            serve_deliveries(&producer);
            if last_report.elapsed() >= StdDuration::from_secs(5) {
                progress(&format!(
                    "fill: {j}/{} samples ({:.0}/s)",
                    cfg.samples,
                    j as f64 / started.elapsed().as_secs_f64()
                ));
                last_report = Instant::now();
            }
        }
    }
    producer
        .flush(StdDuration::from_secs(120))
        .map_err(LiveError::kafka("flushing the fill"))?;
    let secs = started.elapsed().as_secs_f64();
    progress(&format!(
        "fill: {records} records in {secs:.1} s ({:.0}/s)",
        records as f64 / secs
    ));
    Ok(rate(records, bytes, secs))
}

fn rate(records: u64, bytes: u64, secs: f64) -> Rate {
    let secs = secs.max(1e-9);
    Rate {
        records,
        seconds: round(secs, 3),
        records_per_s: round(records as f64 / secs, 0),
        mib_per_s: round(bytes as f64 / secs / (1024.0 * 1024.0), 2),
    }
}

fn raw_consume(cfg: &BenchConfig, topics: &Topics, total: u64) -> Result<Rate, LiveError> {
    let consumer: BaseConsumer = consumer_config(cfg)?
        .create()
        .map_err(LiveError::kafka("creating the raw consumer"))?;
    let mut tpl = TopicPartitionList::new();
    for t in [&topics.metrics, &topics.alerts] {
        for p in partitions_of(&consumer, t, &cfg.kafka.brokers)? {
            tpl.add_partition_offset(t, p, Offset::Beginning)
                .map_err(LiveError::kafka("building the assignment"))?;
        }
    }
    consumer
        .assign(&tpl)
        .map_err(LiveError::kafka("assigning partitions"))?;
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut first = None;
    let deadline = Instant::now() + StdDuration::from_secs(600);
    while n < total {
        if Instant::now() > deadline {
            return Err(LiveError::Other(format!(
                "raw consume read {n} of {total} records in 600 s"
            )));
        }
        match consumer.poll(StdDuration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                bytes += m.payload_len() as u64;
                n += 1;
            }
            Some(Err(e)) => tracing::warn!(error = %e, "raw consume"),
            None => {}
        }
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    Ok(rate(n, bytes, secs))
}

/// How long the engine phase may consume nothing before the bench fails.
const STALL: StdDuration = StdDuration::from_secs(60);

/// The engine threads of a run.
struct Engines(Vec<std::thread::JoinHandle<Result<(), LiveError>>>);

impl Engines {
    /// Whether any engine has stopped (they run until the bench ends).
    fn is_finished(&self) -> bool {
        self.0.iter().any(|h| h.is_finished())
    }
}

fn measure_engine(
    counters: &EngineCounters,
    total: u64,
    launched: Instant,
    handle: &Engines,
    progress: &mut dyn FnMut(&str),
) -> Result<EngineRate, LiveError> {
    let get = EngineCounters::get;
    let mut first = None;
    let mut last_report = Instant::now();
    let deadline = Instant::now() + StdDuration::from_secs(900);
    // The count last seen and since when: a count that stops short of
    // the total for STALL is a failure, not a wait for the deadline.
    let mut moved = (0, Instant::now());
    let consumed_all = loop {
        if handle.is_finished() {
            return Err(LiveError::Other(
                "the engine stopped during the bench".into(),
            ));
        }
        if Instant::now() > deadline {
            return Err(LiveError::Other(format!(
                "the engine consumed {} of {total} records in 900 s",
                get(&counters.consumed)
            )));
        }
        let c = get(&counters.consumed);
        if c > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if c != moved.0 {
            moved = (c, Instant::now());
        } else if c > 0 && moved.1.elapsed() >= STALL {
            return Err(LiveError::Other(format!(
                "the engine consumed {c} of {total} records and then nothing for {} s; \
                 on Tansu 0.6 this is the broker losing the records of a stored batch \
                 after the offset a consumer resumes at (after a rebalance), see \
                 scripts/broker.sh",
                STALL.as_secs()
            )));
        }
        if c >= total {
            break get(&counters.batches);
        }
        if last_report.elapsed() >= StdDuration::from_secs(5) {
            progress(&format!(
                "engine: {c}/{total} records ({} held back, {} held in all)",
                get(&counters.held),
                get(&counters.paces)
            ));
            last_report = Instant::now();
        }
        std::thread::sleep(StdDuration::from_millis(2));
    };
    // The last record counts once its batch is committed.
    while get(&counters.batches) == consumed_all && get(&counters.consumed) == total {
        if handle.is_finished() {
            return Err(LiveError::Other(
                "the engine stopped during the bench".into(),
            ));
        }
        std::thread::sleep(StdDuration::from_millis(1));
    }
    let first = first.unwrap_or(launched);
    let secs = first.elapsed().as_secs_f64();
    Ok(EngineRate {
        records: total,
        seconds: round(secs, 3),
        records_per_s: round(total as f64 / secs.max(1e-9), 0),
        startup_seconds: round((first - launched).as_secs_f64(), 3),
        batches: get(&counters.batches),
        outputs: get(&counters.outputs),
        commands: get(&counters.commands),
        dead_lettered: get(&counters.dead_lettered),
        held: get(&counters.paces),
    })
}

/// Alerts sent and not yet answered: number -> (sent at, service, startsAt).
type SentAlerts = HashMap<u64, (Instant, usize, i64)>;

/// What a paced run measured.
struct Driven {
    records: u64,
    seconds: f64,
    target: f64,
    alerts: u64,
    /// Per answered alert: seconds into the run it was sent, latency.
    latencies_ms: Vec<(f64, f64)>,
    lag_at_end: u64,
    lag_after_drain: u64,
    dead_lettered: u64,
}

impl Driven {
    fn latency(&self, load: f64) -> Latency {
        let mut l: Vec<f64> = self.latencies_ms.iter().map(|(_, ms)| *ms).collect();
        l.sort_by(f64::total_cmp);
        let mut slowest = self.latencies_ms.clone();
        slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
        let slowest = slowest
            .into_iter()
            .take(5)
            .map(|(at, ms)| Slow {
                sent_at_s: round(at, 2),
                ms: round(ms, 2),
            })
            .collect();
        Latency {
            load,
            target_records_per_s: round(self.target, 0),
            achieved_records_per_s: round(self.records as f64 / self.seconds.max(1e-9), 0),
            seconds: round(self.seconds, 2),
            alerts: self.alerts,
            commands: l.len() as u64,
            p50_ms: round(percentile(&l, 0.5), 2),
            p99_ms: round(percentile(&l, 0.99), 2),
            p999_ms: round(percentile(&l, 0.999), 2),
            max_ms: round(l.last().copied().unwrap_or(f64::NAN), 2),
            lag_at_end: self.lag_at_end,
            slowest,
        }
    }
}

/// Produces samples at `rate` records/s and alerts at the configured rate
/// for `length`, while a responder reads the actions topic, times each
/// command from its alert's send and answers it as an executor would.
/// `samples` gets resident memory, the heap and the engine lag every 30 s.
#[allow(clippy::too_many_arguments)]
fn drive(
    cfg: &BenchConfig,
    topics: &Topics,
    gen: &mut Gen,
    counters: &Arc<EngineCounters>,
    handle: &Engines,
    rate: f64,
    length: StdDuration,
    mut samples: Option<&mut Vec<Sample>>,
    progress: &mut dyn FnMut(&str),
) -> Result<Driven, LiveError> {
    // Samples batch for `metrics_linger_ms` (fewer, larger requests: the
    // broker shares the machine); alerts go at once.
    let metrics_producer = producer(&cfg.kafka, cfg.metrics_linger_ms)?;
    let alert_producer = producer(&cfg.kafka, 0)?;
    let sent: Arc<Mutex<SentAlerts>> = Arc::default();
    let latencies: Arc<Mutex<Vec<(Instant, f64)>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));

    // The responder: subscribes before the first alert is sent.
    let actions: BaseConsumer = consumer_config(cfg)?
        .create()
        .map_err(LiveError::kafka("creating the actions reader"))?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions_of(&actions, &topics.actions, &cfg.kafka.brokers)? {
        let (_, high) = actions
            .fetch_watermarks(&topics.actions, p, StdDuration::from_secs(10))
            .map_err(LiveError::kafka("reading the actions watermarks"))?;
        tpl.add_partition_offset(&topics.actions, p, Offset::Offset(high))
            .map_err(LiveError::kafka("building the assignment"))?;
    }
    actions
        .assign(&tpl)
        .map_err(LiveError::kafka("assigning the actions topic"))?;
    let responder = {
        let (sent, latencies, done, answered) = (
            sent.clone(),
            latencies.clone(),
            done.clone(),
            answered.clone(),
        );
        let producer = producer(&cfg.kafka, 0)?;
        let topics = topics.clone();
        let format = cfg.format;
        std::thread::Builder::new()
            .name("bench-responder".into())
            .spawn(move || -> Result<(), LiveError> {
                while !done.load(Ordering::Relaxed) {
                    let Some(m) = actions.poll(StdDuration::from_millis(50)) else {
                        serve_deliveries(&producer);
                        continue;
                    };
                    let m = m.map_err(LiveError::kafka("reading the actions topic"))?;
                    let arrived = Instant::now();
                    let kind = wire::header(m.headers(), wire::KIND_HEADER);
                    let Ok(Output::Command(c)) =
                        wire::decode_output(kind, m.payload().unwrap_or(&[]))
                    else {
                        continue;
                    };
                    let Some(n) = alert_number(&c.target) else {
                        continue;
                    };
                    let Some((at, svc, starts)) = sent.lock().ok().and_then(|mut s| s.remove(&n))
                    else {
                        continue;
                    };
                    if let Ok(mut l) = latencies.lock() {
                        l.push((at, (arrived - at).as_secs_f64() * 1000.0));
                    }
                    // The executor's part: the fix succeeded, the alert resolves.
                    let now = wall_ms();
                    let result = Input::Result(ActionResult {
                        command_id: c.id.clone(),
                        status: ResultStatus::Succeeded,
                        detail: "bench".into(),
                        at: Some(Timestamp(now)),
                        previous: Default::default(),
                    });
                    let resolved =
                        Input::Alerts(vec![bench_alert(n, svc, starts, AlertStatus::Resolved)]);
                    for (topic, input) in [(&topics.results, result), (&topics.alerts, resolved)] {
                        let value = wire::encode_input(&input, format).unwrap_or_default();
                        send_for(&producer, topic, &format!("svc{svc}"), &value, now)?;
                    }
                    answered.fetch_add(2, Ordering::Relaxed);
                    serve_deliveries(&producer);
                }
                producer
                    .flush(StdDuration::from_secs(30))
                    .map_err(LiveError::kafka("flushing results"))
            })
            .map_err(|e| LiveError::Other(format!("starting the responder: {e}")))?
    };

    let consumed_before = EngineCounters::get(&counters.consumed);
    let dead_before = EngineCounters::get(&counters.dead_lettered);
    let answered_before = 0u64;
    let started = Instant::now();
    let (mut records, mut alerts) = (0u64, 0u64);
    let mut next_sample = started + StdDuration::from_secs(30);
    let alert_rate = f64::from(cfg.alerts_per_second);
    let result = (|| {
        while started.elapsed() < length {
            if handle.is_finished() {
                return Err(LiveError::Other(
                    "the engine stopped during the bench".into(),
                ));
            }
            let t = started.elapsed().as_secs_f64();
            let due = (t * rate) as u64;
            let mut burst = 0;
            while records < due && burst < 2000 {
                let ts = wall_ms();
                let (svc, value) = gen.metric(ts);
                send_for(&metrics_producer, &topics.metrics, gen.key(svc), &value, ts)?;
                records += 1;
                burst += 1;
            }
            let due_alerts = (t * alert_rate) as u64;
            while alerts < due_alerts {
                let ts = wall_ms();
                let (n, svc, value) = gen.alert(ts);
                if let Ok(mut s) = sent.lock() {
                    s.insert(n, (Instant::now(), svc, ts));
                }
                send_for(&alert_producer, &topics.alerts, gen.key(svc), &value, ts)?;
                alerts += 1;
            }
            serve_deliveries(&metrics_producer);
            serve_deliveries(&alert_producer);
            if let Some(s) = samples.as_deref_mut() {
                if Instant::now() >= next_sample {
                    let produced = records + alerts + answered.load(Ordering::Relaxed);
                    let consumed = EngineCounters::get(&counters.consumed) - consumed_before;
                    let (rss, lag, heap) = (rss_mib(), produced.saturating_sub(consumed), heap());
                    let open = EngineCounters::get(&counters.open_incidents);
                    let remembered = EngineCounters::get(&counters.remembered);
                    s.push(Sample {
                        rss_mib: rss,
                        heap,
                        lag,
                        open_incidents: open,
                        remembered,
                    });
                    progress(&format!(
                        "soak: {:.0} s, {records} samples and {alerts} alerts sent, \
                         {} commands, {open} incidents open, {remembered} closed ones remembered, \
                         lag {lag} records, resident {rss:.1} MiB{}",
                        started.elapsed().as_secs_f64(),
                        latencies.lock().map(|l| l.len()).unwrap_or(0),
                        heap.map_or(String::new(), |h| format!(
                            " (heap in use {:.1} MiB, held beyond it by the allocator {:.1} MiB)",
                            h.in_use_mib, h.free_mib
                        )),
                    ));
                    next_sample += StdDuration::from_secs(30);
                }
            }
            if burst < 2000 {
                std::thread::sleep(StdDuration::from_micros(300));
            }
        }
        Ok(())
    })();
    let seconds = started.elapsed().as_secs_f64();
    let produced = records + alerts + answered.load(Ordering::Relaxed) - answered_before;
    let lag_at_end =
        produced.saturating_sub(EngineCounters::get(&counters.consumed) - consumed_before);
    let flushed = metrics_producer
        .flush(StdDuration::from_secs(60))
        .and(alert_producer.flush(StdDuration::from_secs(60)))
        .map_err(LiveError::kafka("flushing the load"));
    // Commands still on their way.
    let wait_until = Instant::now() + StdDuration::from_secs(30);
    while result.is_ok()
        && Instant::now() < wait_until
        && sent.lock().map(|s| !s.is_empty()).unwrap_or(false)
    {
        std::thread::sleep(StdDuration::from_millis(20));
    }
    done.store(true, Ordering::Relaxed);
    let responded = responder
        .join()
        .map_err(|_| LiveError::Other("the responder panicked".into()))?;
    result?;
    flushed?;
    responded?;
    // Every record sent, the responder's included, should reach the engine.
    let produced = records + alerts + answered.load(Ordering::Relaxed) - answered_before;
    let lag_now =
        || produced.saturating_sub(EngineCounters::get(&counters.consumed) - consumed_before);
    let drain_until = Instant::now() + StdDuration::from_secs(60);
    while lag_now() > 0 && Instant::now() < drain_until && !handle.is_finished() {
        std::thread::sleep(StdDuration::from_millis(50));
    }
    let lag_after_drain = lag_now();
    let dead_lettered = EngineCounters::get(&counters.dead_lettered) - dead_before;
    let latencies_ms = latencies
        .lock()
        .map(|l| {
            l.iter()
                .map(|(at, ms)| (at.saturating_duration_since(started).as_secs_f64(), *ms))
                .collect()
        })
        .unwrap_or_default();
    Ok(Driven {
        records: records + alerts,
        seconds,
        target: rate,
        alerts,
        latencies_ms,
        lag_at_end,
        lag_after_drain,
        dead_lettered,
    })
}

/// Burn-rate state per SLO: an engine for the policy fed one sample of
/// every series (so every series and its feeds exist), then its SLO
/// state's heap bytes.
fn slo_memory(policy: &Arc<Policy>, gen: &mut Gen) -> Memory {
    let mut core = Engine::new(policy.clone());
    let mut out = Vec::new();
    let t0 = wall_ms() - 3_600_000;
    let mut labels = crate::records::LabelBuf::new();
    // Decided as the live engine decides them, so what it keeps to find a
    // series by its bytes is counted.
    for round in 0..2 {
        for _ in 0..gen.series() {
            let (_, value) = gen.metric(t0 + round * 60_000);
            if let Ok(d) = super::engine::decode(
                &core,
                crate::records::InputKind::Metric,
                &value,
                &mut labels,
            ) {
                d.apply(&mut core, Timestamp(t0 + round * 60_000), &mut out);
            }
        }
    }
    let slos = core.slos();
    let n = policy.slos.len().max(1);
    Memory {
        slo_window_bytes: slos.window_bytes(0) + std::mem::size_of::<crate::slo::window::Windows>(),
        slo_state_bytes_per_slo: slos.heap_bytes() / n,
        slo_state_bound_bytes: SLO_STATE_BOUND,
        rss_mib_end: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generator's pre-encoded samples are byte for byte what the
    /// general encoder writes, and decode to the same sample.
    #[test]
    fn pre_encoded_samples_equal_the_encoder_output() {
        let mut gen = Gen::new(300, Format::Avro);
        let t0 = 1_790_000_000_123;
        for i in 0..5_000i64 {
            let k = gen.next;
            let n = gen.counts[k];
            let ts = t0 + i * 7;
            let (svc, fast) = gen.metric(ts);
            let per = if k % 2 == 0 {
                1000
            } else {
                i64::from(svc % 3 == 0)
            };
            assert_eq!(fast, gen.metric_slow(k, n * per, ts), "sample {i}");
        }
        // Past the first round every sample took the pre-encoded path.
        assert!(gen.avro_parts.iter().all(Option::is_some));
        let (svc, v) = gen.metric(t0);
        let decoded =
            crate::records::avro::decode_value(crate::records::InputKind::Metric, v.as_slice())
                .expect("decodes");
        let Input::Metric(m) = decoded else {
            panic!("not a metric: {decoded:?}")
        };
        assert_eq!(m.timestamp, Some(Timestamp(t0)));
        assert_eq!(m.labels.get("service"), Some(format!("svc{svc}").as_str()));
    }
}
