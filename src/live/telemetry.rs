//! Prometheus metrics and health endpoints of `selfheal engine` and
//! `selfheal executor` (`--metrics-listen ADDR`).
//!
//! One HTTP listener serves:
//!
//! * `GET /metrics`: every metric family of [`names`], in the Prometheus
//!   text format, rendered from a `metrics-exporter-prometheus` recorder;
//! * `GET /healthz`: 200 while the service's main loop turns (its
//!   heartbeat is younger than [`STALE_AFTER`]), 503 otherwise;
//! * `GET /readyz`: 200 when the broker is reachable and the service has
//!   partitions assigned, 503 with the reason otherwise.
//!
//! Decision metrics are read off the outputs the core emits
//! ([`Observer`]) and off its state between batches ([`EngineGauges`]); the
//! core itself never sees them. Labels come from the policy or from fixed
//! sets (topics, partitions, runbooks, SLOs, actions, reasons), never from
//! a service, a target or an incident id. Without a recorder installed
//! every metric is a no-op.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::{wall_ms, Health, Topics};
use crate::policy::Policy;
use crate::records::{Emitted, EscalationReason, IncidentState, Output, ResultStatus, Scope};

/// Metric names: dashboards and alert rules use exactly these.
pub mod names {
    /// Counter `{topic}`: input records taken from a topic.
    pub const RECORDS_CONSUMED: &str = "selfheal_records_consumed_total";
    /// Counter `{topic}`: records that did not decode.
    pub const DECODE_FAILURES: &str = "selfheal_decode_failures_total";
    /// Counter `{topic,reason}`: records sent to the dead-letter topic.
    pub const DEAD_LETTERS: &str = "selfheal_dead_letters_total";
    /// Gauge `{topic,partition}`: librdkafka's consumer lag.
    pub const CONSUMER_LAG: &str = "selfheal_consumer_lag_records";
    /// Gauge: 1 while a broker connection is up.
    pub const BROKER_UP: &str = "selfheal_broker_up";
    /// Gauge `{slo,window}`: burn rate at the last minute evaluation.
    pub const SLO_BURN_RATE: &str = "selfheal_slo_burn_rate";
    /// Gauge `{slo}`: 1 - bad/allowed over the SLO period.
    pub const SLO_BUDGET_REMAINING: &str = "selfheal_slo_error_budget_remaining_ratio";
    /// Gauge `{state}`: open incidents.
    pub const INCIDENTS_OPEN: &str = "selfheal_incidents_open";
    /// Counter `{runbook,tier}`: commands emitted.
    pub const COMMANDS: &str = "selfheal_commands_total";
    /// Counter `{status}`: action results the engine received.
    pub const ACTION_RESULTS: &str = "selfheal_action_results_total";
    /// Counter `{action,status}`: commands an executor finished.
    pub const EXECUTOR_COMMANDS: &str = "selfheal_executor_commands_total";
    /// Histogram `{action}`: how long an executor ran a command.
    pub const EXECUTOR_COMMAND_DURATION: &str = "selfheal_executor_command_duration_seconds";
    /// Gauge: commands an executor is running.
    pub const EXECUTOR_IN_FLIGHT: &str = "selfheal_executor_in_flight";
    /// Counter `{outcome}`: fixes confirmed or failed validation.
    pub const VALIDATIONS: &str = "selfheal_validations_total";
    /// Counter `{reason,severity}`: escalations emitted.
    pub const ESCALATIONS: &str = "selfheal_escalations_total";
    /// Counter `{kind}`: guardrail checks that failed.
    pub const GUARDRAIL_BLOCKS: &str = "selfheal_guardrail_blocks_total";
    /// Histogram: incident opened to its first command, event time.
    pub const SIGNAL_TO_COMMAND: &str = "selfheal_signal_to_command_seconds";
    /// Histogram: last command to the fix confirmed, event time.
    pub const COMMAND_TO_VALIDATED: &str = "selfheal_command_to_validated_seconds";
    /// Histogram: incident opened to resolved, event time.
    pub const MTTR: &str = "selfheal_mttr_seconds";
    /// Gauge: kill switches on (global, per service, per runbook).
    pub const KILL_SWITCHES_ACTIVE: &str = "selfheal_kill_switches_active";
    /// Gauge: what the engine keeps of closed incidents
    /// ([`crate::engine::Engine::remembered`]): their alert keys, for a
    /// day, and the targets in the guardrails' command history.
    pub const REMEMBERED: &str = "selfheal_remembered_entries";
    /// Histogram: how long an engine batch commit took.
    pub const COMMIT_DURATION: &str = "selfheal_commit_duration_seconds";
    /// Counter `{sink,outcome}`: escalations the notifier handled per sink
    /// (`delivered`, `duplicate`, `gave_up`).
    pub const NOTIFY_DELIVERIES: &str = "selfheal_notify_deliveries_total";

    /// Counter `{reason}`: times the engine stopped on an error and
    /// restarted from the journals: `journal_conflict` (another engine
    /// wrote a partition's journal), `assignment_lost` (the group took its
    /// partitions back after a session timeout) or `failure` (any other
    /// error).
    pub const ENGINE_RESTARTS: &str = "selfheal_engine_restarts_total";

    /// Every name above.
    pub const ALL: [&str; 24] = [
        RECORDS_CONSUMED,
        DECODE_FAILURES,
        DEAD_LETTERS,
        CONSUMER_LAG,
        BROKER_UP,
        SLO_BURN_RATE,
        SLO_BUDGET_REMAINING,
        INCIDENTS_OPEN,
        COMMANDS,
        ACTION_RESULTS,
        EXECUTOR_COMMANDS,
        EXECUTOR_COMMAND_DURATION,
        EXECUTOR_IN_FLIGHT,
        VALIDATIONS,
        ESCALATIONS,
        GUARDRAIL_BLOCKS,
        SIGNAL_TO_COMMAND,
        COMMAND_TO_VALIDATED,
        MTTR,
        KILL_SWITCHES_ACTIVE,
        REMEMBERED,
        COMMIT_DURATION,
        NOTIFY_DELIVERIES,
        ENGINE_RESTARTS,
    ];
}

use names::*;

/// A heartbeat older than this makes `/healthz` answer 503.
pub const STALE_AFTER: StdDuration = StdDuration::from_secs(30);

/// `statistics.interval.ms` of the consumers when metrics are served.
pub const STATS_INTERVAL_MS: u32 = 5_000;

/// Errors of the metrics endpoint.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("installing the metrics recorder: {0}")]
    Recorder(String),
    #[error("listening on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Incident states an open incident can be in.
pub const OPEN_STATES: [IncidentState; 7] = [
    IncidentState::Opened,
    IncidentState::AwaitingApproval,
    IncidentState::Remediating,
    IncidentState::Validating,
    IncidentState::RollingBack,
    IncidentState::Escalated,
    IncidentState::Suppressed,
];

/// Guardrail check names the engine records.
pub const GUARDRAIL_KINDS: [&str; 8] = [
    "kill_switch",
    "change_freeze",
    "allow_list",
    "kubernetes",
    "stale_data",
    "cooldown",
    "rate_limit",
    "blast_radius",
];

const RESULT_STATUSES: [ResultStatus; 3] = [
    ResultStatus::Succeeded,
    ResultStatus::Failed,
    ResultStatus::TimedOut,
];

/// Buckets of the latency histograms in seconds (event time: seconds to
/// hours).
const LATENCY_BUCKETS: [f64; 14] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
    86400.0,
];

/// Buckets of the commit and command duration histograms in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A Prometheus builder with the histogram buckets of every family.
pub fn builder() -> Result<PrometheusBuilder, TelemetryError> {
    let mut b = PrometheusBuilder::new();
    for (name, buckets) in [
        (SIGNAL_TO_COMMAND, &LATENCY_BUCKETS),
        (COMMAND_TO_VALIDATED, &LATENCY_BUCKETS),
        (MTTR, &LATENCY_BUCKETS),
        (COMMIT_DURATION, &DURATION_BUCKETS),
        (EXECUTOR_COMMAND_DURATION, &DURATION_BUCKETS),
    ] {
        b = b
            .set_buckets_for_metric(Matcher::Full(name.to_string()), buckets)
            .map_err(|e| TelemetryError::Recorder(e.to_string()))?;
    }
    Ok(b)
}

/// Installs the process-wide Prometheus recorder.
pub fn install() -> Result<PrometheusHandle, TelemetryError> {
    builder()?
        .install_recorder()
        .map_err(|e| TelemetryError::Recorder(e.to_string()))
}

/// What the health endpoints read: a heartbeat from the service's loop,
/// its assignment, and the broker state from its Kafka clients.
#[derive(Clone, Default)]
pub struct Status {
    inner: Arc<StatusInner>,
}

#[derive(Default)]
struct StatusInner {
    health: Health,
    beat_ms: AtomicI64,
    assigned: AtomicU64,
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Status")
            .field("beat_ms", &self.inner.beat_ms.load(Ordering::Relaxed))
            .field("assigned", &self.inner.assigned.load(Ordering::Relaxed))
            .finish()
    }
}

impl Status {
    /// The broker health shared by the service's Kafka clients.
    pub fn health(&self) -> &Health {
        &self.inner.health
    }

    /// The main loop turned.
    pub fn beat(&self) {
        self.inner.beat_ms.store(wall_ms(), Ordering::Relaxed);
    }

    /// Partitions this instance holds now.
    pub fn set_assigned(&self, n: u64) {
        self.inner.assigned.store(n, Ordering::Relaxed);
    }

    pub fn assigned(&self) -> u64 {
        self.inner.assigned.load(Ordering::Relaxed)
    }

    /// `Ok` while the heartbeat is younger than `stale` at `now_ms`.
    pub fn liveness(&self, now_ms: i64, stale: StdDuration) -> Result<(), String> {
        let beat = self.inner.beat_ms.load(Ordering::Relaxed);
        if beat == 0 {
            return Err("main loop not started".into());
        }
        let age = now_ms.saturating_sub(beat);
        if age > stale.as_millis() as i64 {
            return Err(format!("main loop stalled for {} ms", age));
        }
        Ok(())
    }

    /// `Ok` when the broker is up and partitions are assigned.
    pub fn readiness(&self) -> Result<(), String> {
        let h = self.health();
        if !h.broker_reachable() {
            return Err(match h.last_error() {
                Some(e) => format!("broker unreachable: {e}"),
                None => "broker unreachable".into(),
            });
        }
        if !h.broker_up() {
            return Err("broker not connected yet".into());
        }
        if self.assigned() == 0 {
            return Err("no partitions assigned".into());
        }
        Ok(())
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` from the current
/// tokio runtime; returns the bound address (`:0` picks a free port).
pub async fn serve(
    addr: &str,
    handle: PrometheusHandle,
    status: Status,
) -> Result<SocketAddr, TelemetryError> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| TelemetryError::Listen {
            addr: addr.to_string(),
            source,
        })?;
    let bound = listener
        .local_addr()
        .map_err(|source| TelemetryError::Listen {
            addr: addr.to_string(),
            source,
        })?;
    let broker_up = metrics::gauge!(BROKER_UP);
    let (s1, s2, s3) = (status.clone(), status.clone(), status);
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = {
                    broker_up.set(if s1.health().broker_up() { 1.0 } else { 0.0 });
                    handle.render()
                };
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let r = s2.liveness(wall_ms(), STALE_AFTER);
                async move {
                    match r {
                        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
                        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let r = s3.readiness();
                async move {
                    match r {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
                    }
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    });
    Ok(bound)
}

/// Client context of a consumer that only reports to the health
/// endpoints: broker errors and statistics, and its assignment.
pub struct StatusContext(pub Status);

impl rdkafka::ClientContext for StatusContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.0.health().error(error, reason);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        self.0.health().observe_stats(&statistics);
        record_lag(&statistics);
    }
}

impl rdkafka::consumer::ConsumerContext for StatusContext {
    fn post_rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        _: &rdkafka::consumer::Rebalance<'_>,
    ) {
        use rdkafka::consumer::Consumer;
        let n = consumer.assignment().map_or(0, |a| a.count());
        self.0.set_assigned(n as u64);
    }
}

/// Runs the recorder's upkeep (histogram buckets) every few seconds.
pub fn spawn_upkeep(handle: PrometheusHandle) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(StdDuration::from_secs(5));
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    });
}

/// Sets the consumer lag gauges from librdkafka statistics: for each
/// partition this consumer fetches, its end offset (the last stable offset
/// under `read_committed`) minus the consumer's position (its committed or
/// fetched offset, whichever is later). librdkafka's own `consumer_lag`
/// counts from this consumer's last offset commit, which offsets committed
/// through a transaction (`exactly_once`) never update.
pub fn record_lag(stats: &rdkafka::Statistics) {
    for (topic, t) in &stats.topics {
        for (p, part) in &t.partitions {
            if let Some(lag) = partition_lag(*p, part) {
                metrics::gauge!(CONSUMER_LAG, "topic" => topic.clone(), "partition" => p.to_string())
                    .set(lag as f64);
            }
        }
    }
}

/// A partition's lag from its statistics; `None` when not fetched by this
/// consumer or unknown.
pub fn partition_lag(p: i32, part: &rdkafka::statistics::Partition) -> Option<i64> {
    if p < 0 || !part.desired {
        return None;
    }
    let end = if part.ls_offset >= 0 {
        part.ls_offset
    } else {
        part.hi_offset
    };
    let pos = part.committed_offset.max(part.app_offset);
    (end >= 0 && pos >= 0).then(|| (end - pos).max(0))
}

/// Per-topic handles of the counters the consuming loop touches for every
/// record, registered once.
pub struct TopicCounters {
    topics: Vec<String>,
    consumed: Vec<Counter>,
    decode_failures: Vec<Counter>,
    dead: Vec<(usize, &'static str, Counter)>,
}

impl TopicCounters {
    pub fn new<S: AsRef<str>>(topics: &[S]) -> TopicCounters {
        let topics: Vec<String> = topics.iter().map(|t| t.as_ref().to_string()).collect();
        TopicCounters {
            consumed: topics
                .iter()
                .map(|t| metrics::counter!(RECORDS_CONSUMED, "topic" => t.clone()))
                .collect(),
            decode_failures: topics
                .iter()
                .map(|t| metrics::counter!(DECODE_FAILURES, "topic" => t.clone()))
                .collect(),
            topics,
            dead: Vec::new(),
        }
    }

    /// A record of topic `t` (index in the list given to `new`) was taken.
    #[inline]
    pub fn consumed(&self, t: usize) {
        if let Some(c) = self.consumed.get(t) {
            c.increment(1);
        }
    }

    /// A record of topic `t` did not decode.
    pub fn decode_failed(&self, t: usize) {
        if let Some(c) = self.decode_failures.get(t) {
            c.increment(1);
        }
    }

    /// A record of topic `t` was dead-lettered for `reason` (the
    /// dead-letter error code).
    pub fn dead_lettered(&mut self, t: usize, reason: &'static str) {
        if let Some((_, _, c)) = self.dead.iter().find(|(i, r, _)| *i == t && *r == reason) {
            c.increment(1);
            return;
        }
        let Some(topic) = self.topics.get(t) else {
            return;
        };
        let c = metrics::counter!(DEAD_LETTERS, "topic" => topic.clone(), "reason" => reason);
        c.increment(1);
        self.dead.push((t, reason, c));
    }
}

/// Handles of the engine's metrics, shared by its partitions.
pub struct EngineMetrics {
    pub commit_duration: Histogram,
    results: [Counter; 3],
    validations_confirmed: Counter,
    validations_failed: Counter,
    guardrails: [Counter; GUARDRAIL_KINDS.len()],
    signal_to_command: Histogram,
    command_to_validated: Histogram,
    mttr: Histogram,
}

impl EngineMetrics {
    pub fn new() -> EngineMetrics {
        EngineMetrics {
            commit_duration: metrics::histogram!(COMMIT_DURATION),
            results: RESULT_STATUSES
                .map(|s| metrics::counter!(ACTION_RESULTS, "status" => s.as_str())),
            validations_confirmed: metrics::counter!(VALIDATIONS, "outcome" => "confirmed"),
            validations_failed: metrics::counter!(VALIDATIONS, "outcome" => "failed"),
            guardrails: GUARDRAIL_KINDS.map(|k| metrics::counter!(GUARDRAIL_BLOCKS, "kind" => k)),
            signal_to_command: metrics::histogram!(SIGNAL_TO_COMMAND),
            command_to_validated: metrics::histogram!(COMMAND_TO_VALIDATED),
            mttr: metrics::histogram!(MTTR),
        }
    }

    /// The engine received an action result.
    pub fn result(&self, status: ResultStatus) {
        let i = match status {
            ResultStatus::Succeeded => 0,
            ResultStatus::Failed => 1,
            ResultStatus::TimedOut => 2,
        };
        self.results[i].increment(1);
    }
}

impl Default for EngineMetrics {
    fn default() -> Self {
        EngineMetrics::new()
    }
}

/// Event times of one incident, for the latency histograms.
#[derive(Debug, Clone, Copy)]
struct Track {
    opened: i64,
    commanded: bool,
    last_command: Option<i64>,
}

/// Incidents tracked at most per partition: past that, new incidents are
/// counted but not timed.
const TRACK_LIMIT: usize = 100_000;

/// Turns one partition's outputs into metric updates. It keeps the event
/// times of the incidents it saw open, so incidents opened before this
/// instance took the partition are counted but not timed.
pub struct Observer {
    m: Arc<EngineMetrics>,
    tracks: HashMap<String, Track>,
}

impl Observer {
    pub fn new(m: Arc<EngineMetrics>) -> Observer {
        Observer {
            m,
            tracks: HashMap::new(),
        }
    }

    /// Counts and times the outputs just decided.
    pub fn observe(&mut self, outs: &[Emitted]) {
        for e in outs {
            let ts = e.ts.0;
            match &e.output {
                Output::Incident(i) => match i.state {
                    IncidentState::Opened if self.tracks.len() < TRACK_LIMIT => {
                        self.tracks.insert(
                            i.id.clone(),
                            Track {
                                opened: ts,
                                commanded: false,
                                last_command: None,
                            },
                        );
                    }
                    IncidentState::Resolved => {
                        let confirmed = i.reason.starts_with(crate::engine::FIX_CONFIRMED);
                        if confirmed {
                            self.m.validations_confirmed.increment(1);
                        }
                        if let Some(t) = self.tracks.remove(&i.id) {
                            self.m.mttr.record(secs(ts - t.opened));
                            if let (true, Some(c)) = (confirmed, t.last_command) {
                                self.m.command_to_validated.record(secs(ts - c));
                            }
                        }
                    }
                    // Escalated and suppressed incidents stay open until
                    // their trigger resolves: still timed.
                    _ => {}
                },
                Output::Command(c) => {
                    metrics::counter!(COMMANDS, "runbook" => c.runbook.clone(), "tier" => tier_label(c.tier))
                        .increment(1);
                    if let Some(t) = self.tracks.get_mut(&c.incident) {
                        if !t.commanded {
                            t.commanded = true;
                            self.m.signal_to_command.record(secs(ts - t.opened));
                        }
                        if c.rollback_of.is_none() {
                            t.last_command = Some(ts);
                        }
                    }
                }
                Output::Escalation(x) => {
                    metrics::counter!(ESCALATIONS, "reason" => x.reason.as_str(), "severity" => x.severity.as_str())
                        .increment(1);
                    if x.reason == EscalationReason::ValidationFailed {
                        self.m.validations_failed.increment(1);
                    }
                }
                Output::Audit(a) => {
                    for g in a.guardrails.iter().filter(|g| !g.passed) {
                        if let Some(i) = GUARDRAIL_KINDS.iter().position(|k| *k == g.name) {
                            self.m.guardrails[i].increment(1);
                        }
                    }
                }
                Output::BurnAlert(_) | Output::ApprovalRequest(_) => {}
            }
        }
    }
}

fn secs(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}

fn tier_label(tier: u8) -> &'static str {
    match tier {
        0 => "0",
        1 => "1",
        2 => "2",
        3 => "3",
        _ => "other",
    }
}

/// The engine's state gauges: SLO burn rates and budgets, open incidents,
/// kill switches. Registered from the policy at start, so every SLO's
/// series exist from the first scrape.
pub struct EngineGauges {
    /// Per SLO: (window gauges with their tier slot, budget gauge).
    slos: Vec<(Vec<(usize, Gauge)>, Gauge)>,
    incidents: [Gauge; 7],
    kill_switches: Gauge,
    remembered: Gauge,
}

impl EngineGauges {
    pub fn new(policy: &Policy) -> EngineGauges {
        let slos = policy
            .slos
            .iter()
            .map(|s| {
                let mut windows: Vec<(String, usize)> = Vec::new();
                for (t, tier) in s.tiers.iter().enumerate() {
                    for (k, w) in [(0, tier.long), (1, tier.short)] {
                        let w = w.to_string();
                        if !windows.iter().any(|(x, _)| *x == w) {
                            windows.push((w, t * 2 + k));
                        }
                    }
                }
                let gauges = windows
                    .into_iter()
                    .map(|(w, slot)| {
                        let g =
                            metrics::gauge!(SLO_BURN_RATE, "slo" => s.name.clone(), "window" => w);
                        g.set(0.0);
                        (slot, g)
                    })
                    .collect();
                let budget = metrics::gauge!(SLO_BUDGET_REMAINING, "slo" => s.name.clone());
                budget.set(1.0);
                (gauges, budget)
            })
            .collect();
        let incidents = OPEN_STATES.map(|s| metrics::gauge!(INCIDENTS_OPEN, "state" => s.as_str()));
        for g in &incidents {
            g.set(0.0);
        }
        let kill_switches = metrics::gauge!(KILL_SWITCHES_ACTIVE);
        kill_switches.set(0.0);
        let remembered = metrics::gauge!(REMEMBERED);
        remembered.set(0.0);
        EngineGauges {
            slos,
            incidents,
            kill_switches,
            remembered,
        }
    }

    /// Sets every gauge from the cores of the partitions held. An SLO's
    /// figures come from the core that evaluated it last (its service's
    /// partition); a burn rate without traffic in its window is 0.
    pub fn update<'a>(&self, cores: impl Iterator<Item = &'a crate::engine::Engine> + Clone) {
        for (i, (windows, budget)) in self.slos.iter().enumerate() {
            let latest = cores
                .clone()
                .filter_map(|c| c.slos().evaluated_at(i).map(|t| (t, c)))
                .max_by_key(|(t, _)| *t);
            let Some((_, core)) = latest else { continue };
            let burns = core.slos().last_burn_rates(i);
            for (slot, g) in windows {
                g.set(burns.get(*slot).copied().flatten().unwrap_or(0.0));
            }
            budget.set(core.slos().budget_remaining(i).unwrap_or(1.0));
        }
        let mut counts = [0u64; 7];
        let mut kills: BTreeSet<&Scope> = BTreeSet::new();
        let mut remembered = 0;
        for c in cores {
            remembered += c.remembered();
            for s in c.open_incident_states() {
                if let Some(k) = OPEN_STATES.iter().position(|x| *x == s) {
                    counts[k] += 1;
                }
            }
            kills.extend(c.active_kill_switches());
        }
        for (g, n) in self.incidents.iter().zip(counts) {
            g.set(n as f64);
        }
        self.kill_switches.set(kills.len() as f64);
        self.remembered.set(remembered as f64);
    }
}

/// The executor's metrics.
pub struct ExecutorMetrics {
    pub topic: TopicCounters,
    pub in_flight: Gauge,
}

impl ExecutorMetrics {
    pub fn new(topics: &Topics) -> ExecutorMetrics {
        let in_flight = metrics::gauge!(EXECUTOR_IN_FLIGHT);
        in_flight.set(0.0);
        ExecutorMetrics {
            topic: TopicCounters::new(&[&topics.actions]),
            in_flight,
        }
    }

    /// A command finished with `status` after `took` (`None`: not started).
    pub fn finished(action: &str, status: ResultStatus, took: Option<StdDuration>) {
        metrics::counter!(EXECUTOR_COMMANDS, "action" => action.to_string(), "status" => status.as_str())
            .increment(1);
        if let Some(d) = took {
            metrics::histogram!(EXECUTOR_COMMAND_DURATION, "action" => action.to_string())
                .record(d.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use crate::records::Record;

    /// Runs a golden scenario through the core, observing its outputs and
    /// updating the gauges under a local recorder; returns the rendered
    /// Prometheus text.
    fn run_scenario(name: &str) -> String {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/scenarios")
            .join(name);
        let policy = Arc::new(crate::policy::load::load(&dir.join("policy.yaml")).expect("policy"));
        let input = std::fs::read_to_string(dir.join("input.jsonl")).expect("input");
        let recorder = builder().expect("buckets").build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let m = Arc::new(EngineMetrics::new());
            let gauges = EngineGauges::new(&policy);
            let mut obs = Observer::new(m);
            let mut core = Engine::new(policy.clone()).with_burn_rate_report();
            for line in input.lines().filter(|l| !l.trim().is_empty()) {
                let Ok(rec) = Record::from_json_line(line) else {
                    continue;
                };
                let mut out = Vec::new();
                core.process(&rec, &mut out).expect("in order");
                obs.observe(&out);
            }
            gauges.update(std::iter::once(&core));
        });
        handle.render()
    }

    /// The value of the sample `name` whose labels include every pair of
    /// `labels`.
    fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            if n != name {
                return None;
            }
            let rest = rest.strip_suffix('}')?;
            let have: Vec<(&str, &str)> = rest
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once("=\"")?;
                    Some((k, v.trim_end_matches('"')))
                })
                .collect();
            labels
                .iter()
                .all(|want| have.contains(want))
                .then(|| value.parse().ok())?
        })
    }

    #[test]
    fn a_validated_restart_counts_one_command_and_times_the_incident() {
        let t = run_scenario("tier1_restart_validated");
        let rb = [("runbook", "restart-on-oom"), ("tier", "1")];
        assert_eq!(sample(&t, COMMANDS, &rb), Some(1.0), "{t}");
        assert_eq!(
            sample(&t, VALIDATIONS, &[("outcome", "confirmed")]),
            Some(1.0)
        );
        assert_eq!(sample(&t, VALIDATIONS, &[("outcome", "failed")]), Some(0.0));
        // The closed incident's alert key; the runbook, with no cooldown
        // or rate limit, keeps no command history.
        assert_eq!(sample(&t, REMEMBERED, &[]), Some(1.0));
        // Alert at 10:01:30 opens the incident and the restart goes out at
        // once; the alert resolves at 10:03:30 and confirms the fix.
        let count = |h: &str| sample(&t, &format!("{h}_count"), &[]);
        let sum = |h: &str| sample(&t, &format!("{h}_sum"), &[]);
        assert_eq!(count(SIGNAL_TO_COMMAND), Some(1.0));
        assert_eq!(sum(SIGNAL_TO_COMMAND), Some(0.0));
        assert_eq!(count(MTTR), Some(1.0));
        assert_eq!(sum(MTTR), Some(120.0));
        assert_eq!(count(COMMAND_TO_VALIDATED), Some(1.0));
        assert_eq!(sum(COMMAND_TO_VALIDATED), Some(120.0));
        // Nothing is open at the end.
        for s in OPEN_STATES {
            assert_eq!(
                sample(&t, INCIDENTS_OPEN, &[("state", s.as_str())]),
                Some(0.0)
            );
        }
        // One error in the last minutes: the SLO burns and its budget
        // shrinks; every tier window has a gauge.
        let slo = "checkout-availability";
        let burn5m = sample(&t, SLO_BURN_RATE, &[("slo", slo), ("window", "5m")]).unwrap();
        assert!(burn5m > 0.0, "{t}");
        for w in ["1h", "6h", "30m", "1d", "2h", "3d"] {
            assert!(
                sample(&t, SLO_BURN_RATE, &[("slo", slo), ("window", w)]).is_some(),
                "{w}"
            );
        }
        let budget = sample(&t, SLO_BUDGET_REMAINING, &[("slo", slo)]).unwrap();
        assert!(budget < 1.0 && budget > 0.0, "{budget}");
    }

    #[test]
    fn kill_switches_count_as_guardrail_blocks_and_escalations() {
        let t = run_scenario("guardrail_kill_switch");
        assert_eq!(
            sample(&t, GUARDRAIL_BLOCKS, &[("kind", "kill_switch")]),
            Some(3.0),
            "{t}"
        );
        assert_eq!(
            sample(&t, GUARDRAIL_BLOCKS, &[("kind", "cooldown")]),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &t,
                ESCALATIONS,
                &[("reason", "guardrail"), ("severity", "page")]
            ),
            Some(3.0)
        );
        let rb = [("runbook", "restart-on-oom"), ("tier", "1")];
        assert_eq!(sample(&t, COMMANDS, &rb), Some(2.0));
        // The suppressed incidents are still open; every switch is off.
        assert_eq!(
            sample(&t, INCIDENTS_OPEN, &[("state", "suppressed")]),
            Some(3.0)
        );
        assert_eq!(sample(&t, KILL_SWITCHES_ACTIVE, &[]), Some(0.0));
    }

    #[test]
    fn a_failed_validation_counts_and_rolls_back_once() {
        let t = run_scenario("validation_failed_rollback");
        assert_eq!(sample(&t, VALIDATIONS, &[("outcome", "failed")]), Some(1.0));
        assert_eq!(
            sample(&t, VALIDATIONS, &[("outcome", "confirmed")]),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &t,
                ESCALATIONS,
                &[("reason", "validation_failed"), ("severity", "page")]
            ),
            Some(1.0)
        );
        // The restart and its rollback: the first is what the signal
        // waited for.
        assert_eq!(
            sample(&t, &format!("{SIGNAL_TO_COMMAND}_count"), &[]),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, &format!("{COMMAND_TO_VALIDATED}_count"), &[]),
            Some(0.0)
        );
        assert_eq!(sample(&t, &format!("{MTTR}_count"), &[]), Some(1.0));
    }

    #[test]
    fn engine_results_and_dead_letters_are_counted_per_label() {
        let recorder = builder().expect("buckets").build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let m = EngineMetrics::new();
            m.result(ResultStatus::Failed);
            m.result(ResultStatus::Failed);
            m.result(ResultStatus::Succeeded);
            let mut tc = TopicCounters::new(&["p.metrics", "p.alerts"]);
            tc.consumed(1);
            tc.consumed(1);
            tc.consumed(0);
            tc.decode_failed(1);
            tc.dead_lettered(1, "malformed_json");
            tc.dead_lettered(1, "malformed_json");
            tc.dead_lettered(0, "late");
            // Out of range: ignored, not a panic.
            tc.consumed(7);
            tc.dead_lettered(7, "late");
        });
        let t = handle.render();
        assert_eq!(
            sample(&t, ACTION_RESULTS, &[("status", "failed")]),
            Some(2.0)
        );
        assert_eq!(
            sample(&t, ACTION_RESULTS, &[("status", "succeeded")]),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, ACTION_RESULTS, &[("status", "timed_out")]),
            Some(0.0)
        );
        assert_eq!(
            sample(&t, RECORDS_CONSUMED, &[("topic", "p.alerts")]),
            Some(2.0)
        );
        assert_eq!(
            sample(&t, RECORDS_CONSUMED, &[("topic", "p.metrics")]),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, DECODE_FAILURES, &[("topic", "p.alerts")]),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &t,
                DEAD_LETTERS,
                &[("topic", "p.alerts"), ("reason", "malformed_json")]
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &t,
                DEAD_LETTERS,
                &[("topic", "p.metrics"), ("reason", "late")]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn burn_rate_reporting_leaves_every_output_as_it_was() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/burn_rate_page");
        let policy = Arc::new(crate::policy::load::load(&dir.join("policy.yaml")).expect("policy"));
        let input = std::fs::read_to_string(dir.join("input.jsonl")).expect("input");
        let run = |report: bool| {
            let mut core = Engine::new(policy.clone());
            if report {
                core = core.with_burn_rate_report();
            }
            let mut out = Vec::new();
            for line in input.lines() {
                if let Ok(rec) = Record::from_json_line(line) {
                    core.process(&rec, &mut out).expect("in order");
                }
            }
            let burns = core.slos().last_burn_rates(0).to_vec();
            (
                out.iter().map(|e| e.to_json_line()).collect::<Vec<_>>(),
                burns,
            )
        };
        let (plain, none) = run(false);
        let (reported, burns) = run(true);
        assert!(plain.iter().any(|l| l.contains("\"kind\":\"burn_alert\"")));
        assert_eq!(plain, reported);
        assert!(none.is_empty());
        assert_eq!(burns.len(), policy.slos[0].tiers.len() * 2);
        assert!(
            burns.iter().any(|b| b.is_some_and(|b| b > 1.0)),
            "{burns:?}"
        );
    }

    #[test]
    fn kill_switches_active_count_distinct_scopes_until_they_expire() {
        let policy = Arc::new(crate::policy::parse("runbooks: []\n", "p.yaml").expect("policy"));
        let line = |ts: &str, kind: &str, data: &str| {
            Record::from_json_line(&format!(r#"{{"ts":"{ts}","kind":"{kind}","data":{data}}}"#))
                .expect("record")
        };
        let recorder = builder().expect("buckets").build_recorder();
        let handle = recorder.handle();
        let mut seen = Vec::new();
        metrics::with_local_recorder(&recorder, || {
            let gauges = EngineGauges::new(&policy);
            // Two partitions' cores: a global switch reaches both.
            let mut a = Engine::new(policy.clone());
            let mut b = Engine::new(policy.clone());
            let global = r#"{"scope":"global","kill_switch":true,"until":"2026-03-01T10:30:00Z"}"#;
            let service = r#"{"scope":"service:web","kill_switch":true}"#;
            let mut out = Vec::new();
            for core in [&mut a, &mut b] {
                core.process(&line("2026-03-01T10:00:00Z", "control", global), &mut out)
                    .unwrap();
            }
            a.process(&line("2026-03-01T10:01:00Z", "control", service), &mut out)
                .unwrap();
            let mut read = |a: &Engine, b: &Engine| {
                gauges.update([a, b].into_iter());
                seen.push(sample(&handle.render(), KILL_SWITCHES_ACTIVE, &[]));
            };
            read(&a, &b);
            for core in [&mut a, &mut b] {
                core.process(&line("2026-03-01T10:31:00Z", "tick", "{}"), &mut out)
                    .unwrap();
            }
            read(&a, &b);
        });
        assert_eq!(seen, [Some(2.0), Some(1.0)]);
    }

    #[test]
    fn lag_counts_from_the_later_of_the_committed_and_fetched_offsets() {
        use rdkafka::statistics::Partition;
        let part = |committed: i64, app: i64, ls: i64, desired: bool| Partition {
            committed_offset: committed,
            app_offset: app,
            ls_offset: ls,
            hi_offset: ls + 5,
            desired,
            ..Partition::default()
        };
        // Offsets committed in a transaction leave `committed` behind.
        assert_eq!(partition_lag(0, &part(10, 90, 100, true)), Some(10));
        assert_eq!(partition_lag(0, &part(95, 90, 100, true)), Some(5));
        assert_eq!(partition_lag(0, &part(100, 100, 100, true)), Some(0));
        // Unknown position or end, not ours, or the internal partition.
        assert_eq!(partition_lag(0, &part(-1001, -1001, 100, true)), None);
        assert_eq!(partition_lag(0, &part(10, 90, 100, false)), None);
        assert_eq!(partition_lag(-1, &part(10, 90, 100, true)), None);
        let no_end = Partition {
            ls_offset: -1,
            hi_offset: -1,
            ..part(10, 90, 0, true)
        };
        assert_eq!(partition_lag(0, &no_end), None);
    }

    #[test]
    fn broker_state_follows_the_statistics_both_ways() {
        use rdkafka::statistics::{Broker, Statistics};
        let stats = |states: &[(&str, &str)]| Statistics {
            brokers: states
                .iter()
                .enumerate()
                .map(|(i, (source, state))| {
                    (
                        format!("b{i}"),
                        Broker {
                            source: source.to_string(),
                            state: state.to_string(),
                            ..Broker::default()
                        },
                    )
                })
                .collect(),
            ..Statistics::default()
        };
        let h = Health::default();
        assert!(!h.broker_up());
        // The internal broker is always up: it does not count.
        h.observe_stats(&stats(&[("internal", "UP"), ("configured", "CONNECT")]));
        assert!(!h.broker_up() && !h.broker_reachable());
        h.observe_stats(&stats(&[("configured", "INIT"), ("learned", "UP")]));
        assert!(h.broker_up());
        h.observe_stats(&stats(&[("learned", "DOWN"), ("logical", "UP")]));
        assert!(!h.broker_up() && !h.broker_reachable());
        h.observe_stats(&stats(&[("learned", "UP")]));
        assert!(h.broker_up() && h.broker_reachable());
    }

    #[test]
    fn health_endpoints_follow_the_heartbeat_and_the_assignment() {
        let s = Status::default();
        assert!(s.liveness(wall_ms(), STALE_AFTER).is_err());
        s.beat();
        assert!(s.liveness(wall_ms(), STALE_AFTER).is_ok());
        let later = wall_ms() + 31_000;
        assert!(s
            .liveness(later, STALE_AFTER)
            .unwrap_err()
            .contains("stalled"));
        assert_eq!(s.readiness().unwrap_err(), "broker not connected yet");
        s.health().mark_up();
        assert_eq!(s.readiness().unwrap_err(), "no partitions assigned");
        s.set_assigned(3);
        assert_eq!(s.readiness(), Ok(()));
    }
}
