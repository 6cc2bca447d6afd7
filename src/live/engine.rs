//! `selfheal engine`: the decision core on Kafka.
//!
//! The engine instances form one consumer group over the six input topics.
//! Every input topic is keyed by service and has the same number of
//! partitions, and the group uses the `range` assignor, so partition `p` of
//! every input topic goes to the same instance: that instance runs one core
//! for `p`, and a service's state lives with its partition.
//!
//! Each core sees its records in arrival order at event time
//! `max(Kafka timestamp, event time reached)`; a record further behind
//! than `max_lateness`, or stamped further ahead of the wall clock than
//! `max_future`, goes to the dead-letter topic instead. When all of a
//! partition's input topics are consumed to their end, a clock tick at
//! wall-clock time advances the core, so deadlines and minute evaluations
//! happen without traffic. Ticks are journaled like records.
//!
//! Batches: outputs, dead letters and the batch's [journal](super::journal)
//! records are produced together with the consumed offsets; with
//! `exactly_once` in one Kafka transaction, with `at_least_once` by
//! flushing then committing offsets (a crash in between re-emits the batch;
//! command ids derive from the inputs, and executors run each id once).
//! A batch commits when it holds `max_batch` records, after
//! `commit_interval`, or at once when it holds a command, an escalation
//! or an approval request under `exactly_once` (under `at_least_once`
//! those are sent as they are decided). Committing whenever the consumer
//! had nothing more would, under a steady live load, commit every few
//! milliseconds and spend the engine's time waiting on the broker.
//!
//! On assignment a partition's core is rebuilt from its journal, and input
//! records at offsets the journal already holds are skipped; on revocation
//! the pending batch is committed first, unless the group took the
//! partitions back after a session timeout (then nothing more is written
//! and the engine starts over from the journals).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use opentelemetry::trace::SpanContext;

use super::journal::{self, Entry};
use super::signing::ApprovalKey;
use super::telemetry::{self, EngineGauges, EngineMetrics, Observer, Status, TopicCounters};
use super::wire::{self, Format, INPUT_KINDS};
use super::{wall_ms, Health, KafkaArgs, LiveError, Topics};
use crate::engine::Engine;
use crate::policy::Policy;
use crate::records::avro::{decode_metric_value, decode_value, scan_metric_value};
use crate::records::{Emitted, Fixed, InputKind, LabelBuf, MetricRef, Output, Record};
use crate::slo::SeriesId;
use crate::time::Timestamp;

/// `linger.ms` of the engine's producer. Under at-least-once outputs are
/// sent as they are decided and wait at most this long for company; under
/// exactly-once a batch holding a command, an escalation or an approval
/// request is committed at once, and a commit flushes.
pub const PRODUCER_LINGER_MS: u32 = 1;

/// Longest input record value decided by default: the size of one journal
/// record, so that every record decided fits the journal and every dead
/// letter fits the dead-letter topic.
pub const DEFAULT_MAX_RECORD_BYTES: usize = journal::MAX_RECORD_BYTES;

/// `processing.guarantee`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Guarantee {
    /// Consume, decide and produce in one Kafka transaction.
    ExactlyOnce,
    /// For brokers without transactions: outputs may repeat after a crash,
    /// with the same ids; executors deduplicate commands by id.
    AtLeastOnce,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub kafka: KafkaArgs,
    pub policy: Arc<Policy>,
    pub group: String,
    /// Names this instance's producer (`transactional.id`) and client.
    pub instance: String,
    pub guarantee: Guarantee,
    pub format: Format,
    pub tick: StdDuration,
    pub commit_interval: StdDuration,
    pub max_batch: usize,
    pub max_lateness_ms: i64,
    pub max_future_ms: i64,
    /// A record value longer than this goes to the dead-letter topic
    /// (code `too_large`), cut to this length there.
    pub max_record_bytes: usize,
    /// When set, approvals must carry a valid signature under this key;
    /// others go to the dead-letter topic (code `unauthenticated`).
    pub approval_key: Option<ApprovalKey>,
    /// `auto.offset.reset` for partitions with no committed offset.
    pub start_earliest: bool,
    /// How far one input topic of a partition may run ahead of another
    /// that is still catching up (see `Runtime::pace`).
    pub pace_slack_ms: i64,
    /// OpenTelemetry spans of the decisions, and `traceparent` headers on
    /// commands; `None` (the default) makes neither.
    pub traces: Option<super::traces::Traces>,
    /// The policy file, read again on a reload control record and, with
    /// `policy_reload`, whenever its content changes.
    pub policy_file: Option<PathBuf>,
    /// How often the policy file's content is checked; `None`: only on a
    /// reload control record.
    pub policy_reload: Option<StdDuration>,
    /// Heartbeat, assignment and broker state for the health endpoints.
    pub status: Status,
    /// Metrics are served: the consumer sends librdkafka statistics
    /// (consumer lag, broker state) every few seconds.
    pub telemetry: bool,
}

impl EngineConfig {
    pub fn new(kafka: KafkaArgs, policy: Arc<Policy>) -> EngineConfig {
        EngineConfig {
            kafka,
            policy,
            group: "selfheal-engine".into(),
            instance: default_instance("engine"),
            guarantee: Guarantee::ExactlyOnce,
            format: Format::Avro,
            tick: StdDuration::from_secs(1),
            commit_interval: StdDuration::from_millis(100),
            max_batch: 10_000,
            max_lateness_ms: 10 * 60_000,
            max_future_ms: 5 * 60_000,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            approval_key: None,
            start_earliest: true,
            pace_slack_ms: 5_000,
            traces: None,
            policy_file: None,
            policy_reload: None,
            status: Status::default(),
            telemetry: false,
        }
    }
}

/// `<host>-<what>-<pid>`.
pub fn default_instance(what: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "selfheal".into());
    format!("{host}-{what}-{}", std::process::id())
}

/// Counters of a running engine, readable from other threads.
#[derive(Debug, Default)]
pub struct EngineCounters {
    pub consumed: AtomicU64,
    pub skipped_replayed: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub clamped_late: AtomicU64,
    pub ticks: AtomicU64,
    pub outputs: AtomicU64,
    pub commands: AtomicU64,
    pub batches: AtomicU64,
    pub recovered_entries: AtomicU64,
    pub partitions: AtomicU64,
    pub restarts: AtomicU64,
    /// Records held back for running ahead of their partition's slowest
    /// input (see `Runtime::pace`).
    pub paces: AtomicU64,
    /// Records held back right now.
    pub held: AtomicU64,
    /// Incidents open in the cores of the partitions held, as of the last
    /// clock tick (every 200 ms).
    pub open_incidents: AtomicU64,
    /// [`crate::engine::Engine::remembered`] summed over those cores, as
    /// of the last clock tick.
    pub remembered: AtomicU64,
}

impl EngineCounters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// One runtime's part of the gauges among [`EngineCounters`]
/// (`partitions`, `held`, `open_incidents`, `remembered`): it adds the
/// change of its own value, so engines that share the counters (the bench's
/// `--engines N`) add up instead of overwriting each other, and a runtime
/// that goes (a restart) takes its part back.
#[derive(Default)]
struct GaugeParts([std::cell::Cell<u64>; 4]);

#[derive(Clone, Copy)]
enum Gauge {
    Partitions,
    Held,
    OpenIncidents,
    Remembered,
}

impl GaugeParts {
    fn set(&self, counters: &EngineCounters, g: Gauge, now: u64) {
        let c = match g {
            Gauge::Partitions => &counters.partitions,
            Gauge::Held => &counters.held,
            Gauge::OpenIncidents => &counters.open_incidents,
            Gauge::Remembered => &counters.remembered,
        };
        let last = self.0[g as usize].replace(now);
        c.fetch_add(now.wrapping_sub(last), Ordering::Relaxed);
    }
}

/// Runs the engine until `stop` is set. Kafka failures that leave the
/// in-memory state ahead of what was committed (an aborted transaction, a
/// failed delivery) rebuild the consumer and producer and recover from
/// the journals; configuration errors and a broker without transactions
/// under `exactly_once` are returned.
pub fn run(
    cfg: &EngineConfig,
    stop: &AtomicBool,
    counters: &Arc<EngineCounters>,
) -> Result<(), LiveError> {
    let mut first = true;
    loop {
        cfg.status.beat();
        match run_once(cfg, stop, counters, first) {
            Ok(()) => return Ok(()),
            Err(
                e @ (LiveError::NoTransactions(_)
                | LiveError::BadSetting(_)
                | LiveError::MissingTopic { .. }
                | LiveError::PartitionMismatch { .. }),
            ) => return Err(e),
            Err(e) => {
                tracing::error!(error = %e, "engine failed; rebuilding from the journals");
                eprintln!("selfheal engine: {e}; restarting from the journals");
                counters.restarts.fetch_add(1, Ordering::Relaxed);
                let reason = match e {
                    LiveError::OtherWriter { .. } => "journal_conflict",
                    LiveError::AssignmentLost(_) => "assignment_lost",
                    _ => "failure",
                };
                metrics::counter!(telemetry::names::ENGINE_RESTARTS, "reason" => reason)
                    .increment(1);
                cfg.status.set_assigned(0);
                cfg.status.beat();
                first = false;
                std::thread::sleep(StdDuration::from_secs(1));
                if stop.load(Ordering::Relaxed) {
                    return Err(e);
                }
            }
        }
    }
}

struct Ctx {
    health: Health,
    rt: Arc<Mutex<Runtime>>,
    failed: Arc<Mutex<Option<LiveError>>>,
}

impl ClientContext for Ctx {
    fn error(&self, error: KafkaError, reason: &str) {
        self.health.error(error, reason);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        self.health.observe_stats(&statistics);
        telemetry::record_lag(&statistics);
    }
}

impl ConsumerContext for Ctx {
    /// Revoked partitions are committed and let go; assigned ones are
    /// rebuilt from their journals before they are assigned, each input
    /// at the offset its journal ends at: the journal, not the committed
    /// offset, says what the partition's state holds. They agree but for
    /// an `at_least_once` offset commit that was lost (the journal is
    /// ahead: those records would be skipped anyway) or a broker whose
    /// committed offset ran ahead of the journal it served (the records
    /// between are read again instead of leaving the state without them).
    /// An input the journal never saw starts at its committed offset.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let done = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assigned(tpl);
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoked(consumer, tpl);
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                let code: rdkafka::error::RDKafkaErrorCode = other.into();
                tracing::error!(error = %code, "rebalance failed; partitions let go");
                self.revoked(consumer, tpl);
                consumer.unassign()
            }
        };
        if let Err(e) = done {
            set_failed(&self.failed, LiveError::kafka("applying a rebalance")(e));
        }
    }
}

impl Ctx {
    /// Commits the pending batch and drops the revoked partitions' state.
    ///
    /// Partitions the group took back without asking (this member's
    /// session timed out, `assignment_lost`) may already belong to
    /// another engine: nothing more is written for them, neither the
    /// pending batch nor its offsets, and the run ends, to start again
    /// from the journals like after any failure. The delivery reports of
    /// journal records still on their way then meet no rebuilt state.
    fn revoked(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let Ok(mut rt) = self.rt.lock() else { return };
        if !rt.abandoned && consumer.assignment_lost() {
            let mut parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            parts.sort_unstable();
            parts.dedup();
            rt.abandoned = true;
            set_failed(
                &self.failed,
                LiveError::AssignmentLost(format!("{parts:?}")),
            );
        }
        if rt.abandoned {
            // A failed run's state goes unsaved; the next starts from
            // the journals.
        } else if let Err(e) = rt.commit_final(consumer) {
            set_failed(&self.failed, e);
        }
        let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        rt.held.retain(|(_, p), _| !parts.contains(p));
        rt.held_count = rt.held.values().map(|q| q.len()).sum();
        rt.behind.retain(|p, _| !parts.contains(p));
        for p in parts {
            if rt.shards.remove(&p).is_some() {
                tracing::info!(partition = p, "partition revoked");
            }
        }
        rt.count_partitions();
    }

    /// Rebuilds each newly assigned partition from its journal and sets
    /// its inputs' start offsets in `tpl` to where the journal ends.
    fn assigned(&self, tpl: &mut TopicPartitionList) {
        let Ok(mut rt) = self.rt.lock() else { return };
        let mut parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        parts.sort_unstable();
        parts.dedup();
        for p in parts {
            if rt.shards.contains_key(&p) {
                continue;
            }
            match rt.recover(p) {
                Ok(shard) => {
                    rt.shards.insert(p, shard);
                    rt.sync_policy(p);
                }
                Err(e) => set_failed(&self.failed, e),
            }
        }
        let starts: Vec<(String, i32, i64)> = tpl
            .elements()
            .iter()
            .filter_map(|e| {
                let t = rt.topics.inputs().iter().position(|x| *x == e.topic())?;
                let pos = rt.shards.get(&e.partition())?.positions[t];
                (pos >= 0).then(|| (e.topic().to_string(), e.partition(), pos))
            })
            .collect();
        for (topic, p, pos) in starts {
            if let Err(e) = tpl.set_partition_offset(&topic, p, Offset::Offset(pos)) {
                set_failed(&self.failed, LiveError::kafka("setting a start offset")(e));
            }
        }
        rt.count_partitions();
    }
}

/// Sends one record, waiting out a full queue.
fn produce_on(
    producer: &BaseProducer<ProducerCtx>,
    rec: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), LiveError> {
    let mut rec = rec;
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                r,
            )) => {
                rec = r;
                producer.poll(StdDuration::from_millis(50));
            }
            Err((e, _)) => {
                return Err(LiveError::Kafka {
                    context: "producing".into(),
                    source: e,
                })
            }
        }
    }
}

fn set_failed(slot: &Mutex<Option<LiveError>>, e: LiveError) {
    tracing::error!(error = %e, "engine error");
    if let Ok(mut g) = slot.lock() {
        g.get_or_insert(e);
    }
}

#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    last: Mutex<Option<String>>,
    /// The journal topic, when its deliveries are watched (`at_least_once`):
    /// the partition and offset of each journal record delivered, for
    /// [`Runtime::check_journal`].
    journal_topic: Option<String>,
    journal: Mutex<Vec<(i32, i64)>>,
}

struct ProducerCtx {
    health: Health,
    deliveries: Arc<Deliveries>,
}

impl ClientContext for ProducerCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        self.health.error(error, reason);
    }
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let (Ok(m), Some(topic)) = (result, &self.deliveries.journal_topic) {
            if m.topic() == topic {
                if let Ok(mut j) = self.deliveries.journal.lock() {
                    j.push((m.partition(), m.offset()));
                }
            }
        }
        if let Err((e, _)) = result {
            self.deliveries.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut g) = self.deliveries.last.lock() {
                *g = Some(e.to_string());
            }
        }
    }
}

/// Records taken from the consumer at most between two rounds of timers,
/// commit checks and producer callbacks (a batch ends sooner when it holds
/// a command, or reaches `max_batch`).
const POLL_BATCH: usize = 512;

/// Records decided at most on one reading of the clocks (a few hundred
/// microseconds of work).
const CLOCK_EVERY: usize = 64;

/// Records held back at most, over all partitions (about 100 bytes each
/// plus the value).
const HOLD_LIMIT: usize = 200_000;

/// An input record held back by [`Runtime::pace`].
struct Held {
    offset: i64,
    ts: Option<i64>,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    /// A result's trace context, when tracing is on (boxed: most held
    /// records have none).
    trace: Option<Box<SpanContext>>,
}

/// At most 10 log lines a second for one kind of event; the count of the
/// ones left out goes with the next line.
#[derive(Default)]
struct LogLimit {
    second: Option<Instant>,
    lines: u32,
    suppressed: u64,
}

impl LogLimit {
    /// `Some(suppressed since the last line)` when this one may be logged.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .second
            .is_none_or(|s| now.duration_since(s) >= StdDuration::from_secs(1))
        {
            self.second = Some(now);
            self.lines = 0;
        }
        if self.lines < 10 {
            self.lines += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

struct Dead {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    code: &'static str,
    reason: String,
    topic: String,
    partition: i32,
    offset: i64,
}

struct Shard {
    core: Engine,
    /// Next offset to process, per input topic; -1 when unknown.
    positions: [i64; 6],
    journal: journal::Writer,
    outputs: Vec<Emitted>,
    dead: Vec<Dead>,
    touched: bool,
    assigned_at: Instant,
    observer: Observer,
    /// The offset after the last journal record of this partition that
    /// this engine read or wrote: where its next one must land.
    journal_end: i64,
}

impl Shard {
    fn new(policy: &Arc<Policy>, p: i32, metrics: &Arc<EngineMetrics>, report: bool) -> Shard {
        let mut core = Engine::new(policy.clone()).with_global_chain(format!("global@{p}"));
        if report {
            core = core.with_burn_rate_report();
        }
        Shard {
            observer: Observer::new(metrics.clone()),
            core,
            positions: [-1; 6],
            journal: journal::Writer::default(),
            outputs: Vec::new(),
            dead: Vec::new(),
            touched: false,
            assigned_at: Instant::now(),
            journal_end: -1,
        }
    }

    fn apply(&mut self, e: &Entry) -> Result<(), String> {
        if let Some((t, off)) = e.position() {
            let slot = &mut self.positions[t as usize % 6];
            *slot = (*slot).max(off + 1);
        }
        let mut sink = Vec::new();
        match e.replay(&mut self.core, &mut sink) {
            Ok(_) => Ok(()),
            // A record that decoded when it was journaled decodes again,
            // unless the decoder changed; then it is skipped as it would
            // be dead-lettered now.
            Err(journal::ReplayError::Undecodable(e)) => {
                tracing::warn!(error = %e, "journaled record no longer decodes; skipped");
                Ok(())
            }
            Err(e) => Err(format!("replaying the journal: {e}")),
        }
    }
}

/// A decoded input record: a sample of a series the core knows by its
/// bytes; a metric sample borrowed from the record and the runtime's label
/// buffer, with its series bytes when it is Avro; or any record owned.
#[derive(Debug)]
pub(super) enum Decoded<'a> {
    Series(SeriesId, Fixed),
    Metric(MetricRef<'a>, Option<&'a [u8]>),
    Input(crate::records::Input),
}

/// Decodes input record `value` of kind `kind` for `core`, with
/// [`decode_value`]'s verdict and errors. An Avro metric sample of a
/// series `core` has seen is found by its series bytes and only its value
/// and timestamp are read; a new series' sample is decoded into `labels`,
/// and its series bytes go with it for the core to remember; the others
/// (and JSON samples) are decoded owned.
pub(super) fn decode<'a>(
    core: &Engine,
    kind: InputKind,
    value: &'a [u8],
    labels: &'a mut LabelBuf,
) -> Result<Decoded<'a>, crate::records::DecodeError> {
    if kind != InputKind::Metric {
        return decode_value(kind, value).map(Decoded::Input);
    }
    let scan = scan_metric_value(value);
    if let Some((s, (id, name))) = scan.and_then(|s| Some((s, core.known_series(s.series)?))) {
        return s.check(name).map(|v| Decoded::Series(id, v));
    }
    match decode_metric_value(value, labels) {
        Some(m) => m.map(|m| Decoded::Metric(m, scan.map(|s| s.series))),
        None => decode_value(kind, value).map(Decoded::Input),
    }
}

impl Decoded<'_> {
    /// Hands the record to `core` at event time `ts`; a result's command
    /// id comes back (for its trace).
    ///
    /// Errors are dropped: the only one is a record behind the core's
    /// event time, which the caller never hands over.
    pub(super) fn apply(
        self,
        core: &mut Engine,
        ts: Timestamp,
        out: &mut Vec<Emitted>,
    ) -> Option<String> {
        match self {
            Decoded::Series(id, v) => {
                let _ = core.process_series(ts, id, v, out);
                None
            }
            Decoded::Metric(m, raw) => {
                let _ = core.process_metric(ts, m, raw, out);
                None
            }
            Decoded::Input(input) => {
                let rec = Record { ts, input };
                let _ = core.process(&rec, out);
                match rec.input {
                    crate::records::Input::Result(r) => Some(r.command_id),
                    _ => None,
                }
            }
        }
    }
}

struct Runtime {
    cfg: EngineConfig,
    topics: Topics,
    producer: BaseProducer<ProducerCtx>,
    /// Under `at_least_once`, the journal's own producer: a journal
    /// record still on its way (see [`Unsettled`]) then holds up no
    /// command behind it on the connection. Under `exactly_once` the
    /// journal goes in the batch's transaction, on `producer`.
    journal_producer: Option<BaseProducer<ProducerCtx>>,
    deliveries: Arc<Deliveries>,
    shards: BTreeMap<i32, Shard>,
    /// When each input topic-partition last delivered a record.
    last_seen: BTreeMap<(u8, i32), Instant>,
    /// The Kafka timestamp of each input topic-partition's last record.
    last_ts: BTreeMap<(u8, i32), i64>,
    /// Records held back for running ahead of their partition's frontier.
    held: BTreeMap<(u8, i32), std::collections::VecDeque<Held>>,
    held_count: usize,
    /// Per partition, per input topic: the last-processed timestamp of
    /// each input still behind its high watermark.
    behind: BTreeMap<i32, [Option<i64>; 6]>,
    dlq_log: LogLimit,
    pending: usize,
    batch_started: Option<Instant>,
    /// The last `at_least_once` batch whose journal records are sent and
    /// not yet known delivered: its offsets wait for them
    /// ([`Runtime::settle`]).
    unsettled: Option<Unsettled>,
    /// The batch holds a command, an escalation or an approval request:
    /// it is committed without waiting for `commit_interval`.
    urgent: bool,
    counters: Arc<EngineCounters>,
    metrics: Arc<EngineMetrics>,
    topic_counters: TopicCounters,
    policy: PolicyWatch,
    /// Storage for the labels of the metric sample being decoded.
    labels: LabelBuf,
    /// The clocks as read by the poll loop (at most [`CLOCK_EVERY`]
    /// records ago): per-record work reads these, not the system clocks.
    clock: Clock,
    /// This process's batches: `selfheal-batch` is `batch_tag-N` on every
    /// record the `N`th batch writes (see [`wire::BATCH_HEADER`]).
    batch_tag: String,
    batch_seq: u64,
    gauges: GaugeParts,
    /// The run failed and its state is dropped: nothing more is
    /// committed (see the end of [`run_once`]).
    abandoned: bool,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for g in [
            Gauge::Partitions,
            Gauge::Held,
            Gauge::OpenIncidents,
            Gauge::Remembered,
        ] {
            self.gauges.set(&self.counters, g, 0);
        }
    }
}

/// An `at_least_once` batch committed up to its journal: the journal
/// records are sent, and the input offsets are committed once they are
/// delivered. The engine decides the next batch meanwhile; that batch's
/// commit first waits for these records, so at most one batch is
/// unsettled.
struct Unsettled {
    offsets: TopicPartitionList,
    /// Journal records sent; their delivery reports land in
    /// `Deliveries::journal`.
    records: usize,
}

/// The monotonic and wall clocks, read together.
#[derive(Clone, Copy)]
struct Clock {
    mono: Instant,
    wall_ms: i64,
}

impl Clock {
    fn now() -> Clock {
        Clock {
            mono: Instant::now(),
            wall_ms: wall_ms(),
        }
    }
}

/// The policy file and the text the cores run with.
struct PolicyWatch {
    /// The policy the engine was started with: every core starts from it
    /// and its journal's policy entries, as `audit verify` replays it.
    base: Arc<Policy>,
    /// The text of `cfg.policy`, when it came from a file.
    text: Option<String>,
    /// Version of the file content last acted on (applied or refused).
    seen: String,
    last_check: Instant,
    /// A reload control record arrived.
    requested: bool,
}

impl Runtime {
    /// Publishes how many partitions this engine holds (counters and
    /// status), after a rebalance.
    fn count_partitions(&self) {
        let n = self.shards.len() as u64;
        self.gauges.set(&self.counters, Gauge::Partitions, n);
        self.cfg.status.set_assigned(n);
    }

    /// Brings a just-recovered partition to the current policy: a journal
    /// written under another one gets a policy entry, decided and
    /// audited like a reload.
    fn sync_policy(&mut self, p: i32) {
        let Some(text) = self.policy.text.clone() else {
            return;
        };
        let Some(shard) = self.shards.get_mut(&p) else {
            return;
        };
        if shard.core.policy().version == self.cfg.policy.version {
            return;
        }
        tracing::info!(
            partition = p,
            journal_policy = %shard.core.policy().version,
            policy = %self.cfg.policy.version,
            "partition's journal ran another policy; switching it"
        );
        self.reload_shard(p, &text);
    }

    /// Journals and applies policy text to partition `p`'s core.
    fn reload_shard(&mut self, p: i32, text: &str) {
        let Some(shard) = self.shards.get_mut(&p) else {
            return;
        };
        let ts = shard.core.now().map_or_else(wall_ms, |n| n.0);
        let before = shard.outputs.len();
        let _ = shard
            .core
            .reload_policy(Timestamp(ts), text, &mut shard.outputs);
        shard.journal.push(&Entry::Policy {
            ts,
            text: text.to_string(),
        });
        shard.touched = true;
        self.pending += 1;
        self.batch_started.get_or_insert_with(Instant::now);
        count_outputs(&self.counters, &shard.outputs[before..]);
        self.emitted(p, before, true);
    }

    /// Reads the policy file when a reload was requested or the check is
    /// due; changed content is applied to (or refused by) every core at
    /// one batch boundary: the batch before is committed first, and the
    /// reload entries are committed as a batch of their own.
    fn check_policy(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), LiveError> {
        let Some(path) = self.cfg.policy_file.clone() else {
            return Ok(());
        };
        let due = self
            .cfg
            .policy_reload
            .is_some_and(|every| self.policy.last_check.elapsed() >= every);
        if !due && !self.policy.requested {
            return Ok(());
        }
        let requested = std::mem::take(&mut self.policy.requested);
        self.policy.last_check = Instant::now();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the policy file; the policy stays");
                return Ok(());
            }
        };
        let version = crate::policy::load::version(&text);
        if version == self.policy.seen {
            if requested {
                tracing::info!(file = %path.display(), %version, "reload requested; the policy file is unchanged");
            }
            return Ok(());
        }
        self.policy.seen = version.clone();
        let parsed = crate::policy::load::parse(&text, &path.display().to_string());
        match &parsed {
            Ok(_) => tracing::info!(
                file = %path.display(),
                old = %self.cfg.policy.version,
                new = %version,
                partitions = self.shards.len(),
                "policy file changed; applying it to every partition"
            ),
            Err(problems) => {
                for pr in &problems.0 {
                    tracing::error!(problem = %pr, "policy file refused");
                }
                tracing::error!(
                    file = %path.display(),
                    %version,
                    problems = problems.0.len(),
                    policy = %self.cfg.policy.version,
                    "policy file refused; the policy stays"
                );
            }
        }
        self.commit(consumer)?;
        let parts: Vec<i32> = self.shards.keys().copied().collect();
        for p in parts {
            self.reload_shard(p, &text);
        }
        if let Ok(policy) = parsed {
            self.cfg.policy = Arc::new(policy);
            self.policy.text = Some(text);
        }
        self.commit(consumer)
    }

    fn recover(&mut self, p: i32) -> Result<Shard, LiveError> {
        let started = Instant::now();
        let mut shard = Shard::new(&self.policy.base, p, &self.metrics, self.cfg.telemetry);
        let status = self.cfg.status.clone();
        let mut entries = 0u64;
        let mut failed = None;
        let span = journal::read(
            &self.cfg.kafka,
            &format!("{}-journal-reader", self.cfg.group),
            p,
            self.cfg.guarantee == Guarantee::ExactlyOnce,
            |e| {
                if failed.is_none() {
                    entries += 1;
                    if entries % 4096 == 0 {
                        // A long journal is progress, not a stall.
                        status.beat();
                    }
                    failed = shard.apply(&e).err();
                }
            },
        )?;
        if let Some(message) = failed {
            return Err(LiveError::Journal {
                partition: p,
                message,
            });
        }
        self.counters
            .recovered_entries
            .fetch_add(entries, Ordering::Relaxed);
        tracing::info!(
            partition = p,
            entries,
            journal_low = span.low,
            journal_high = span.high,
            journal_end = span.end,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "partition assigned; state rebuilt from the journal"
        );
        shard.journal_end = span.end;
        Ok(shard)
    }

    fn on_message(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        m: &rdkafka::message::BorrowedMessage<'_>,
    ) {
        let Some(t) = self.topics.inputs().iter().position(|x| *x == m.topic()) else {
            return;
        };
        let p = m.partition();
        let key = (t as u8, p);
        self.last_seen.insert(key, self.clock.mono);
        let Some(shard) = self.shards.get(&p) else {
            return;
        };
        let off = m.offset();
        if off < shard.positions[t] {
            self.counters
                .skipped_replayed
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let ts = m.timestamp().to_millis();
        // A result's trace context, for the `validate` span.
        let trace = match &self.cfg.traces {
            Some(_) if t == 3 => super::traces::parse(
                wire::header(m.headers(), super::traces::TRACEPARENT),
                wire::header(m.headers(), super::traces::TRACESTATE),
            ),
            _ => None,
        };
        let (mut ahead, mut queued) = self.held_back(p, t, ts);
        if (ahead || queued) && self.release_for(consumer, p, t, ts, queued) {
            // What held this record back may have been held itself, and
            // is decided now: look again.
            (ahead, queued) = self.held_back(p, t, ts);
        }
        if ahead || queued {
            // Held back, in offset order, until the partition's slower
            // inputs catch up (see `pace`), at most HOLD_LIMIT records.
            self.held.entry(key).or_default().push_back(Held {
                offset: off,
                ts,
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().unwrap_or(&[]).to_vec(),
                trace: trace.map(Box::new),
            });
            self.held_count += 1;
            self.counters.paces.fetch_add(1, Ordering::Relaxed);
            if self.held_count > HOLD_LIMIT {
                // Memory first: the earliest held record goes on, and
                // the slower input may then find its records late.
                self.release_earliest();
            }
            return;
        }
        self.process_input(t, p, off, ts, m.key(), m.payload().unwrap_or(&[]), trace);
    }

    /// Decides one input record (or dead-letters it) and journals it.
    #[allow(clippy::too_many_arguments)]
    fn process_input(
        &mut self,
        t: usize,
        p: i32,
        off: i64,
        ts: Option<i64>,
        key: Option<&[u8]>,
        value: &[u8],
        trace: Option<SpanContext>,
    ) {
        if let Some(ts) = ts {
            self.last_ts.insert((t as u8, p), ts);
            if let Some(slot) = self.behind.get_mut(&p).map(|b| &mut b[t]) {
                let holding = self.held.get(&(t as u8, p)).is_some_and(|q| !q.is_empty());
                if slot.is_some() && !holding {
                    *slot = Some(ts);
                }
            }
        }
        let (max_lateness, max_future) = (self.cfg.max_lateness_ms, self.cfg.max_future_ms);
        let topic = self.topics.inputs()[t];
        let Some(shard) = self.shards.get_mut(&p) else {
            return;
        };
        self.counters.consumed.fetch_add(1, Ordering::Relaxed);
        self.topic_counters.consumed(t);
        shard.positions[t] = off + 1;
        shard.touched = true;
        self.pending += 1;
        self.batch_started.get_or_insert(self.clock.mono);
        let wall = self.clock.wall_ms;
        let kafka_ts = ts.unwrap_or(wall);
        let now = shard.core.now().map(|t| t.0);
        let max_bytes = self.cfg.max_record_bytes;
        let verdict = if value.len() > max_bytes {
            Err((
                "too_large",
                format!(
                    "record value of {} bytes is larger than the limit of {max_bytes} bytes \
                     (the dead letter keeps the first {max_bytes})",
                    value.len()
                ),
            ))
        } else if kafka_ts > wall + max_future {
            Err((
                "future_timestamp",
                format!(
                    "record timestamp {} is more than {}s ahead of the clock",
                    Timestamp(kafka_ts),
                    max_future / 1000
                ),
            ))
        } else if now.is_some_and(|n| kafka_ts < n - max_lateness) {
            Err((
                "late",
                format!(
                    "record timestamp {} is more than {}s behind the partition's event time {}",
                    Timestamp(kafka_ts),
                    max_lateness / 1000,
                    Timestamp(now.unwrap_or_default())
                ),
            ))
        } else {
            decode(&shard.core, INPUT_KINDS[t], value, &mut self.labels)
                .map_err(|e| (e.code(), e.to_string()))
                .and_then(|d| match d {
                    Decoded::Input(input) => {
                        authenticate(self.cfg.approval_key.as_ref(), input).map(Decoded::Input)
                    }
                    metric => Ok(metric),
                })
        };
        match verdict {
            Ok(decoded) => {
                if let Decoded::Input(crate::records::Input::Control(c)) = &decoded {
                    self.policy.requested |= c.reload_policy;
                }
                if let Decoded::Input(crate::records::Input::Result(r)) = &decoded {
                    self.metrics.result(r.status);
                }
                let ts = now.map_or(kafka_ts, |n| n.max(kafka_ts));
                if now.is_some_and(|n| kafka_ts < n) {
                    self.counters.clamped_late.fetch_add(1, Ordering::Relaxed);
                }
                let before = shard.outputs.len();
                let started = self
                    .cfg
                    .traces
                    .as_ref()
                    .map(|_| std::time::SystemTime::now());
                let ts = Timestamp(ts);
                // Event time never goes back here, so the core cannot
                // refuse the record as late.
                let command = decoded.apply(&mut shard.core, ts, &mut shard.outputs);
                if let (Some(tr), Some(started)) = (&self.cfg.traces, started) {
                    let command = command.as_deref();
                    tr.decisions(
                        &self.cfg.policy,
                        &shard.outputs[before..],
                        trace.as_ref(),
                        command,
                        started,
                    );
                }
                let urgent = count_outputs(&self.counters, &shard.outputs[before..]);
                if self.cfg.telemetry {
                    shard.observer.observe(&shard.outputs[before..]);
                }
                shard.journal.push_record(t as u8, off, ts.0, value);
                self.emitted(p, before, urgent);
            }
            Err((code, reason)) => {
                self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                if !matches!(code, "late" | "future_timestamp") {
                    self.topic_counters.decode_failed(t);
                }
                self.topic_counters.dead_lettered(t, code);
                if let Some(suppressed) = self.dlq_log.allow() {
                    tracing::warn!(
                        topic,
                        partition = p,
                        offset = off,
                        code,
                        %reason,
                        suppressed,
                        "dead-lettered (suppressed: earlier ones not logged; every one is on the dead-letter topic)"
                    );
                }
                shard.dead.push(Dead {
                    key: key.map(<[u8]>::to_vec),
                    value: value[..value.len().min(max_bytes)].to_vec(),
                    code,
                    reason,
                    topic: topic.to_string(),
                    partition: p,
                    offset: off,
                });
                shard.journal.push(&Entry::Dropped {
                    topic: t as u8,
                    offset: off,
                });
            }
        }
    }

    /// Whether every input topic of partition `p` is consumed to the end
    /// the consumer knows of: the position (or the journal's) reached the
    /// high watermark from the last fetch, or the topic-partition has been
    /// quiet (see [`Runtime::quiet`]).
    fn caught_up(
        &self,
        consumer: &BaseConsumer<Ctx>,
        positions: &TopicPartitionList,
        p: i32,
    ) -> bool {
        let Some(shard) = self.shards.get(&p) else {
            return false;
        };
        // Held records are still to be decided.
        if (0..6u8).any(|t| self.held.get(&(t, p)).is_some_and(|q| !q.is_empty())) {
            return false;
        }
        (0..6).all(|t| {
            let (pos, high) =
                self.input_progress(consumer, Some(positions), t, p, shard.positions[t]);
            (high >= 0 && pos >= high) || high == 0 || self.quiet(t, p, shard, high > pos)
        })
    }

    /// Input topic `t` of partition `p`: its position (the consumer's in
    /// `positions`, or `floor` when that is later or there is none) and
    /// its high watermark as of the last fetch (-1 when unknown).
    fn input_progress(
        &self,
        consumer: &BaseConsumer<Ctx>,
        positions: Option<&TopicPartitionList>,
        t: usize,
        p: i32,
        floor: i64,
    ) -> (i64, i64) {
        let name = self.topics.inputs()[t];
        let pos = positions
            .and_then(|ps| ps.find_partition(name, p))
            .and_then(|e| e.offset().to_raw())
            .unwrap_or(-1)
            .max(floor);
        let high = cached_high_watermark(consumer, name, p).unwrap_or(-1);
        (pos, high)
    }

    /// Whether input topic `t` of partition `p` has delivered nothing for
    /// 5 s (since assignment, if ever), or for 30 s when its high watermark
    /// says records are still to come (`backlog`): a fetch that is merely
    /// slow, on a loaded machine, must not let a clock tick move event time
    /// past a backlog. The fallback remains for a high watermark that
    /// cannot be reached (a transaction marker at the end of a topic).
    fn quiet(&self, t: usize, p: i32, shard: &Shard, backlog: bool) -> bool {
        let after = if backlog { 30 } else { 5 };
        self.last_seen
            .get(&(t as u8, p))
            .unwrap_or(&shard.assigned_at)
            .elapsed()
            >= StdDuration::from_secs(after)
    }

    /// The event-time frontier of partition `p` for topic `except`: the
    /// earliest last-processed timestamp among the partition's other
    /// input topics that are still behind their high watermark (as of the
    /// last [`Runtime::pace`]); `i64::MAX` when none is.
    fn frontier(&self, p: i32, except: usize) -> i64 {
        self.behind.get(&p).map_or(i64::MAX, |b| {
            b.iter()
                .enumerate()
                .filter(|(t, _)| *t != except)
                .filter_map(|(_, ts)| *ts)
                .min()
                .unwrap_or(i64::MAX)
        })
    }

    /// Keeps a partition's input topics in step by timestamp while it
    /// catches up on a backlog. The consumer fetches topics independently,
    /// so a sparse topic (alerts) would race ahead of a dense one
    /// (metrics), push the partition's event time forward, and make the
    /// dense topic's backlog late. A record more than `pace_slack` ahead of
    /// the frontier (the slowest other input still behind its high
    /// watermark: its first held record, or else its last decided one) is
    /// held until the frontier comes near; held records are then decided
    /// in timestamp order. A topic-partition that has delivered nothing
    /// for 5 s (30 s while its high watermark says more is to come) counts
    /// as caught up, so a silent one holds nothing back for long. At most
    /// `HOLD_LIMIT` records are held: past that, the earliest goes on.
    /// Topic-partitions are not paused: a paused and resumed partition is
    /// not fetched again by some brokers.
    fn pace(&mut self, consumer: &BaseConsumer<Ctx>) {
        let Ok(positions) = consumer.position() else {
            return;
        };
        let mut behind = BTreeMap::new();
        for (&p, shard) in &self.shards {
            let b: [Option<i64>; 6] = std::array::from_fn(|t| {
                let key = (t as u8, p);
                // A holding topic-partition's next record is its first
                // held one.
                if let Some(h) = self.held.get(&key).and_then(|q| q.front()) {
                    return Some(h.ts.unwrap_or(i64::MIN));
                }
                let (pos, high) =
                    self.input_progress(consumer, Some(&positions), t, p, shard.positions[t]);
                // An unknown high watermark (no fetch answered yet) counts
                // as behind, with nothing processed.
                ((high < 0 || high > pos.max(0)) && !self.quiet(t, p, shard, high > pos.max(0)))
                    .then(|| self.last_ts.get(&key).copied().unwrap_or(i64::MIN))
            });
            behind.insert(p, b);
        }
        self.behind = behind;
        self.release(consumer, Some(&positions), None);
        self.held.retain(|_, q| !q.is_empty());
        self.gauges
            .set(&self.counters, Gauge::Held, self.held_count as u64);
    }

    /// Decides the earliest held record whatever the frontier.
    fn release_earliest(&mut self) {
        let next = self
            .held
            .iter()
            .filter_map(|(k, q)| q.front().map(|h| (h.ts.unwrap_or(i64::MIN), *k)))
            .min();
        let Some((_, key)) = next else { return };
        let Some(h) = self.held.get_mut(&key).and_then(|q| q.pop_front()) else {
            return;
        };
        self.held_count -= 1;
        let (t, p) = (key.0 as usize, key.1);
        if let Some(b) = self.behind.get_mut(&p) {
            b[t] = self
                .held
                .get(&key)
                .and_then(|q| q.front())
                .map(|n| n.ts.unwrap_or(i64::MIN))
                .or(h.ts);
        }
        self.process_input(
            t,
            p,
            h.offset,
            h.ts,
            h.key.as_deref(),
            &h.value,
            h.trace.map(|b| *b),
        );
    }

    /// Whether a record of input topic `t` of partition `p`, stamped
    /// `ts`, is ahead of the partition's frontier (past the pacing slack),
    /// and whether records of its topic-partition are held already.
    fn held_back(&self, p: i32, t: usize, ts: Option<i64>) -> (bool, bool) {
        let slack = self.cfg.pace_slack_ms;
        let ahead = ts.is_some_and(|ts| ts > self.frontier(p, t).saturating_add(slack));
        let queued = self.held.get(&(t as u8, p)).is_some_and(|q| !q.is_empty());
        (ahead, queued)
    }

    /// A record of input topic `t` of partition `p`, stamped `ts`, was
    /// fetched ahead of the partition's frontier or behind held records
    /// of its own topic (`queued`). The records holding it back may be
    /// held themselves (a sparse topic read far ahead, in a backlog): with
    /// this record as its topic's next one, the partition's held records
    /// that are due are decided now, earliest first, as the next
    /// [`Runtime::pace`] would, instead of this one and every record after
    /// it waiting, copied, for that. Whether any was decided.
    fn release_for(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        p: i32,
        t: usize,
        ts: Option<i64>,
        queued: bool,
    ) -> bool {
        if !queued {
            // Its topic's next record is this one (a topic caught up with
            // its high watermark holds nothing back and stays so).
            let Some(ts) = ts else { return false };
            if let Some(slot @ Some(_)) = self.behind.get_mut(&p).map(|b| &mut b[t]) {
                *slot = Some(ts);
            }
        }
        self.release(consumer, None, Some(p))
    }

    /// Decides held records that the frontier has come near, earliest
    /// first: every partition's, or partition `only`'s. A topic-partition
    /// drained of held records stays behind (at its last record's
    /// timestamp) while its position in `positions` (or the drained
    /// record's, when later or without them) is short of its high
    /// watermark. Whether any was decided.
    fn release(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        positions: Option<&TopicPartitionList>,
        only: Option<i32>,
    ) -> bool {
        let slack = self.cfg.pace_slack_ms;
        let mut any = false;
        loop {
            let front = |key: (u8, i32), q: &std::collections::VecDeque<Held>| {
                q.front().map(|h| (h.ts.unwrap_or(i64::MIN), key))
            };
            let due = |(ts, (t, p)): &(i64, (u8, i32))| {
                *ts <= self.frontier(*p, *t as usize).saturating_add(slack)
            };
            let next = match only {
                Some(p) => (0..6u8)
                    .filter_map(|t| front((t, p), self.held.get(&(t, p))?))
                    .filter(due)
                    .min(),
                None => self
                    .held
                    .iter()
                    .filter_map(|(k, q)| front(*k, q))
                    .filter(due)
                    .min(),
            };
            let Some((_, key)) = next else { break };
            any = true;
            let Some(h) = self.held.get_mut(&key).and_then(|q| q.pop_front()) else {
                break;
            };
            self.held_count -= 1;
            let (t, p) = (key.0 as usize, key.1);
            let next = match self.held.get(&key).and_then(|q| q.front()) {
                Some(n) => Some(n.ts.unwrap_or(i64::MIN)),
                None => {
                    // Drained: behind its high watermark still, it is
                    // where its last record was.
                    let (pos, high) = self.input_progress(consumer, positions, t, p, h.offset + 1);
                    (high > pos).then_some(h.ts.unwrap_or(i64::MIN))
                }
            };
            if let Some(b) = self.behind.get_mut(&p) {
                b[t] = next;
            }
            self.process_input(
                key.0 as usize,
                key.1,
                h.offset,
                h.ts,
                h.key.as_deref(),
                &h.value,
                h.trace.map(|b| *b),
            );
        }
        any
    }

    /// Ticks every caught-up partition whose event time is a tick behind
    /// the clock.
    fn tick(&mut self, consumer: &BaseConsumer<Ctx>) {
        let wall = wall_ms();
        let step = self.cfg.tick.as_millis() as i64;
        let positions = consumer.position().unwrap_or_default();
        let due: Vec<i32> = self
            .shards
            .iter()
            .filter(|(_, s)| s.core.now().is_none_or(|n| wall - n.0 >= step))
            .map(|(&p, _)| p)
            .collect();
        for p in due {
            if !self.caught_up(consumer, &positions, p) {
                continue;
            }
            let Some(shard) = self.shards.get_mut(&p) else {
                continue;
            };
            let ts = shard.core.now().map_or(wall, |n| n.0.max(wall));
            let before = shard.outputs.len();
            let started = self
                .cfg
                .traces
                .as_ref()
                .map(|_| std::time::SystemTime::now());
            let rec = Record {
                ts: Timestamp(ts),
                input: crate::records::Input::Tick,
            };
            let _ = shard.core.process(&rec, &mut shard.outputs);
            if let (Some(tr), Some(started)) = (&self.cfg.traces, started) {
                tr.decisions(
                    &self.cfg.policy,
                    &shard.outputs[before..],
                    None,
                    None,
                    started,
                );
            }
            let urgent = count_outputs(&self.counters, &shard.outputs[before..]);
            if self.cfg.telemetry {
                shard.observer.observe(&shard.outputs[before..]);
            }
            self.counters.ticks.fetch_add(1, Ordering::Relaxed);
            shard.journal.push(&Entry::Tick { ts });
            shard.touched = true;
            self.pending += 1;
            self.emitted(p, before, urgent);
            self.batch_started.get_or_insert_with(Instant::now);
        }
        let open: usize = self.shards.values().map(|s| s.core.open_incidents()).sum();
        self.gauges
            .set(&self.counters, Gauge::OpenIncidents, open as u64);
        let remembered: usize = self.shards.values().map(|s| s.core.remembered()).sum();
        self.gauges
            .set(&self.counters, Gauge::Remembered, remembered as u64);
    }

    /// Outputs of partition `p` from index `from` were just decided.
    /// Under exactly-once they wait for the batch's transaction, which an
    /// urgent one (a command, an escalation, an approval request) commits
    /// at once. Under at-least-once they are sent now; the batch commit
    /// flushes them before the journal and the offsets, so a crash before
    /// that re-decides and re-sends them with the same ids.
    fn emitted(&mut self, p: i32, from: usize, urgent: bool) {
        if self.cfg.guarantee == Guarantee::ExactlyOnce {
            self.urgent |= urgent;
            return;
        }
        let Some(shard) = self.shards.get_mut(&p) else {
            return;
        };
        if shard.outputs.len() <= from {
            return;
        }
        let new: Vec<Emitted> = shard.outputs.drain(from..).collect();
        let mut failed = Vec::new();
        // Of the batch the next commit closes.
        let batch = self.batch_id(self.batch_seq + 1);
        for e in new {
            if let Err(err) = self.produce_output(&e, &batch) {
                tracing::warn!(error = %err, "sending an output; retried at the batch commit");
                failed.push(e);
            }
        }
        if let Some(shard) = self.shards.get_mut(&p) {
            shard.outputs.extend(failed);
        }
    }

    /// The `selfheal-batch` value of this process's `seq`th batch.
    fn batch_id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.batch_tag)
    }

    fn due(&self) -> bool {
        self.pending > 0
            && (self.urgent
                || self.pending >= self.cfg.max_batch
                || self
                    .batch_started
                    .is_some_and(|s| s.elapsed() >= self.cfg.commit_interval))
    }

    fn produce(&self, rec: BaseRecord<'_, [u8], [u8]>) -> Result<(), LiveError> {
        produce_on(&self.producer, rec)
    }

    /// The producer journal records go out on.
    fn journal_out(&self) -> &BaseProducer<ProducerCtx> {
        self.journal_producer.as_ref().unwrap_or(&self.producer)
    }

    /// Commits the pending batch of every partition; the consumer offsets
    /// of an `at_least_once` batch asynchronously (see
    /// [`Runtime::commit_with`]).
    fn commit(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), LiveError> {
        self.commit_with(consumer, rdkafka::consumer::CommitMode::Async)
    }

    /// Commits the pending batch before the consumer lets partitions go
    /// (revocation, stop): offsets synchronously.
    fn commit_final(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), LiveError> {
        self.commit_with(consumer, rdkafka::consumer::CommitMode::Sync)
    }

    fn commit_with(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        mode: rdkafka::consumer::CommitMode,
    ) -> Result<(), LiveError> {
        let sync = matches!(mode, rdkafka::consumer::CommitMode::Sync);
        if self.pending == 0 {
            if sync {
                self.settle_now(consumer, mode)?;
            }
            return Ok(());
        }
        let started = Instant::now();
        let eos = self.cfg.guarantee == Guarantee::ExactlyOnce;
        self.batch_seq += 1;
        let batch = self.batch_id(self.batch_seq);
        if eos {
            self.producer
                .begin_transaction()
                .map_err(LiveError::kafka("beginning a transaction"))?;
        }
        let mut offsets = TopicPartitionList::new();
        let mut journals: Vec<(i32, Vec<Vec<u8>>)> = Vec::new();
        let mut outputs: Vec<Emitted> = Vec::new();
        let mut dead: Vec<Dead> = Vec::new();
        for (&p, shard) in self.shards.iter_mut() {
            if !shard.touched {
                continue;
            }
            for (t, &pos) in shard.positions.iter().enumerate() {
                if pos >= 0 {
                    offsets
                        .add_partition_offset(self.topics.inputs()[t], p, Offset::Offset(pos))
                        .map_err(LiveError::kafka("building offsets"))?;
                }
            }
            journals.push((p, shard.journal.take()));
            outputs.append(&mut shard.outputs);
            dead.append(&mut shard.dead);
            shard.touched = false;
        }
        for e in &outputs {
            self.produce_output(e, &batch)?;
        }
        for d in &dead {
            self.produce_dead(d, &batch)?;
        }
        if !eos {
            self.flush("outputs")?;
            // The journal of the batch before, if still on its way.
            self.settle_now(consumer, rdkafka::consumer::CommitMode::Async)?;
        }
        let mut records = 0;
        for (p, chunks) in &journals {
            let key = p.to_string();
            for c in chunks {
                produce_on(
                    self.journal_out(),
                    BaseRecord::to(&self.topics.journal)
                        .partition(*p)
                        .key(key.as_bytes())
                        .payload(c.as_slice())
                        .headers(wire::with_batch(
                            rdkafka::message::OwnedHeaders::new(),
                            &batch,
                        )),
                )?;
                records += 1;
            }
        }
        if eos {
            let meta = consumer.group_metadata().ok_or_else(|| {
                LiveError::Other("consumer has no group metadata for the transaction".into())
            })?;
            self.producer
                .send_offsets_to_transaction(&offsets, &meta, StdDuration::from_secs(30))
                .map_err(LiveError::kafka("adding offsets to the transaction"))?;
            // Delivered first with the prompt flush: the rdkafka crate's
            // commit flushes in whole 100 ms polls.
            let commit = self
                .wait_delivered(&self.producer)
                .and_then(|()| self.producer.commit_transaction(StdDuration::from_secs(30)));
            if let Err(e) = commit {
                let _ = self.producer.abort_transaction(StdDuration::from_secs(30));
                return Err(LiveError::Kafka {
                    context: "committing the transaction".into(),
                    source: e,
                });
            }
            self.check_deliveries()?;
        } else {
            // The journal is not waited for here: the next batch is
            // decided while it is delivered, and the offsets follow it
            // (`settle`). A crash meanwhile resumes from the journal
            // before, which decides this batch again with the same ids.
            self.unsettled = Some(Unsettled { offsets, records });
            if sync {
                self.settle_now(consumer, mode)?;
            }
        }
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .commit_duration
            .record(started.elapsed().as_secs_f64());
        self.pending = 0;
        self.batch_started = None;
        self.urgent = false;
        Ok(())
    }

    /// Settles the unsettled batch once its journal records are all
    /// reported (by a flush, or by the loop's serving of delivery reports):
    /// checks the deliveries and the journal's offsets, then commits the
    /// batch's input offsets, asynchronously while running: the journal is
    /// what a restart resumes from, and a lost offset commit only means
    /// records fetched again and skipped as already journaled.
    fn settle(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        mode: rdkafka::consumer::CommitMode,
    ) -> Result<(), LiveError> {
        let deliveries = &self.deliveries;
        let Some(u) = self.unsettled.take_if(|u| {
            deliveries.failed.load(Ordering::Relaxed) > 0
                || deliveries.journal.lock().map_or(0, |j| j.len()) >= u.records
        }) else {
            return Ok(());
        };
        self.check_deliveries()?;
        self.check_journal()?;
        if u.offsets.count() > 0 {
            consumer
                .commit(&u.offsets, mode)
                .map_err(LiveError::kafka("committing offsets"))?;
        }
        Ok(())
    }

    /// Under `at_least_once`, each partition's journal records just
    /// delivered must follow the last one this engine read or wrote, one
    /// after another. A gap means another engine wrote that partition's
    /// journal meanwhile: two members of the group own the partition at
    /// once (a group coordinator that let a new member in before the old
    /// owner gave the partition up, or an owner that lost its membership
    /// and did not notice). The state here then lacks the other writer's
    /// decisions, so the engine stops with an error and restarts from the
    /// journals, rejoining the group (`run`).
    fn check_journal(&mut self) -> Result<(), LiveError> {
        let mut got = match self.deliveries.journal.lock() {
            Ok(mut j) => std::mem::take(&mut *j),
            Err(_) => return Ok(()),
        };
        got.sort_unstable();
        let mut conflict = None;
        for run in got.chunk_by(|a, b| a.0 == b.0) {
            let (p, first, last) = (run[0].0, run[0].1, run[run.len() - 1].1);
            let Some(shard) = self.shards.get_mut(&p) else {
                continue;
            };
            let expected = shard.journal_end;
            let gapless = last - first + 1 == run.len() as i64;
            if (expected >= 0 && first != expected) || !gapless {
                conflict.get_or_insert((p, expected, first, last));
            }
            shard.journal_end = last + 1;
        }
        let Some((partition, expected, first, last)) = conflict else {
            return Ok(());
        };
        Err(LiveError::OtherWriter {
            partition,
            expected,
            first,
            last,
        })
    }

    fn flush(&self, what: &str) -> Result<(), LiveError> {
        self.wait_delivered(&self.producer)
            .map_err(LiveError::kafka(format!("flushing {what}")))?;
        self.check_deliveries()
    }

    /// Waits up to 30 s for everything `producer` holds to be delivered
    /// (or failed), the heartbeat beating meanwhile: waiting out a broker
    /// that is away is not a hung loop.
    fn wait_delivered(&self, producer: &BaseProducer<ProducerCtx>) -> Result<(), KafkaError> {
        super::flush_producer(producer, StdDuration::from_secs(30), &|| {
            self.cfg.status.beat()
        })
    }

    /// Waits for the unsettled batch's journal records, if any, and
    /// settles it.
    fn settle_now(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        mode: rdkafka::consumer::CommitMode,
    ) -> Result<(), LiveError> {
        if self.unsettled.is_none() {
            return Ok(());
        }
        self.wait_delivered(self.journal_out())
            .map_err(LiveError::kafka("flushing the journal"))?;
        self.check_deliveries()?;
        self.settle(consumer, mode)
    }

    fn check_deliveries(&self) -> Result<(), LiveError> {
        let failed = self.deliveries.failed.swap(0, Ordering::Relaxed);
        if failed > 0 {
            let last = self
                .deliveries
                .last
                .lock()
                .ok()
                .and_then(|g| g.clone())
                .unwrap_or_default();
            return Err(LiveError::Delivery(failed, last));
        }
        Ok(())
    }

    fn produce_output(&self, e: &Emitted, batch: &str) -> Result<(), LiveError> {
        let topic = match &e.output {
            Output::Command(_) => &self.topics.actions,
            Output::Escalation(_) => &self.topics.escalations,
            Output::Audit(_) => &self.topics.audit,
            Output::Incident(_) | Output::BurnAlert(_) => &self.topics.incidents,
            Output::ApprovalRequest(_) => &self.topics.approval_requests,
        };
        let value = wire::encode_output(&e.output, self.cfg.format);
        let mut headers = wire::with_batch(wire::kind_headers(e.output.kind()), batch);
        if let (Some(_), Output::Command(c)) = (&self.cfg.traces, &e.output) {
            // The command's span, for the executor to continue.
            let tp = super::traces::traceparent(&super::traces::command_span(&c.incident, &c.id));
            headers = headers.insert(rdkafka::message::Header {
                key: super::traces::TRACEPARENT,
                value: Some(tp.as_str()),
            });
        }
        self.produce(
            BaseRecord::to(topic)
                .key(e.output.key().as_bytes())
                .payload(value.as_slice())
                .timestamp(e.ts.0)
                .headers(headers),
        )
    }

    fn produce_dead(&self, d: &Dead, batch: &str) -> Result<(), LiveError> {
        let headers = wire::with_batch(
            wire::dead_letter_headers(&d.reason, d.code, &d.topic, d.partition, d.offset),
            batch,
        );
        let mut rec = BaseRecord::to(&self.topics.dlq)
            .payload(d.value.as_slice())
            .headers(headers);
        if let Some(k) = &d.key {
            rec = rec.key(k.as_slice());
        }
        self.produce(rec)
    }
}

/// With an approval key, refuses an approval whose signature is missing or
/// does not match; the core never sees it.
fn authenticate(
    key: Option<&ApprovalKey>,
    input: crate::records::Input,
) -> Result<crate::records::Input, (&'static str, String)> {
    match (key, &input) {
        (Some(key), crate::records::Input::Approval(a)) => key
            .verify(a)
            .map(|()| input)
            .map_err(|e| ("unauthenticated", e.to_string())),
        _ => Ok(input),
    }
}

/// Counts outputs; true when one of them is urgent (a command, an
/// escalation or an approval request).
fn count_outputs(c: &EngineCounters, outs: &[Emitted]) -> bool {
    if outs.is_empty() {
        return false;
    }
    c.outputs.fetch_add(outs.len() as u64, Ordering::Relaxed);
    let cmds = outs
        .iter()
        .filter(|e| matches!(e.output, Output::Command(_)))
        .count();
    c.commands.fetch_add(cmds as u64, Ordering::Relaxed);
    outs.iter().any(|e| {
        matches!(
            e.output,
            Output::Command(_) | Output::Escalation(_) | Output::ApprovalRequest(_)
        )
    })
}

fn run_once(
    cfg: &EngineConfig,
    stop: &AtomicBool,
    counters: &Arc<EngineCounters>,
    first: bool,
) -> Result<(), LiveError> {
    let topics = cfg.kafka.topics();
    let health = cfg.status.health().clone();
    // Under exactly_once the transaction fences another writer; under
    // at_least_once the journal's offsets show one (`check_journal`).
    let deliveries = Arc::new(Deliveries {
        journal_topic: (cfg.guarantee == Guarantee::AtLeastOnce).then(|| topics.journal.clone()),
        ..Deliveries::default()
    });
    let mut pc = cfg.kafka.producer_config()?;
    if pc.get("compression.type").is_none() {
        pc.set("compression.type", "lz4");
    }
    pc.set("client.id", &cfg.instance)
        .set("linger.ms", PRODUCER_LINGER_MS.to_string())
        .set("message.max.bytes", "2000000");
    match cfg.guarantee {
        Guarantee::ExactlyOnce => {
            pc.set(
                "transactional.id",
                format!("{}-{}", cfg.group, cfg.instance),
            )
            .set("transaction.timeout.ms", "30000");
        }
        Guarantee::AtLeastOnce => {
            if pc.get("enable.idempotence").is_none() {
                pc.set("enable.idempotence", "true");
            }
        }
    }
    let producer: BaseProducer<ProducerCtx> = pc
        .create_with_context(ProducerCtx {
            health: health.clone(),
            deliveries: deliveries.clone(),
        })
        .map_err(LiveError::kafka("creating the producer"))?;
    let journal_producer = match cfg.guarantee {
        Guarantee::ExactlyOnce => None,
        Guarantee::AtLeastOnce => Some(
            pc.set("client.id", format!("{}-journal", cfg.instance))
                .create_with_context(ProducerCtx {
                    health: health.clone(),
                    deliveries: deliveries.clone(),
                })
                .map_err(LiveError::kafka("creating the journal producer"))?,
        ),
    };
    let n = check_partitions(cfg, &producer, &topics)?;
    if cfg.guarantee == Guarantee::ExactlyOnce {
        probe_transactions(&producer, &topics.journal)?;
    }
    if first {
        let g = match cfg.guarantee {
            Guarantee::ExactlyOnce => "exactly_once (Kafka transactions)",
            Guarantee::AtLeastOnce => {
                "at_least_once (no transactions: outputs may repeat after a crash, with the same ids)"
            }
        };
        eprintln!(
            "selfheal engine: {} on {} ({n} partitions), processing.guarantee {g}, policy {}",
            cfg.instance, cfg.kafka.brokers, cfg.policy.version
        );
    }
    let failed: Arc<Mutex<Option<LiveError>>> = Arc::default();
    let base = cfg.policy.clone();
    let mut cfg = cfg.clone();
    let mut text = None;
    if let Some(path) = &cfg.policy_file {
        // After a restart the file may hold a newer policy than the one
        // started with; a partition whose journal ends under another one
        // is switched to it on assignment.
        match std::fs::read_to_string(path) {
            Ok(t) => match crate::policy::load::parse(&t, &path.display().to_string()) {
                Ok(p) => {
                    cfg.policy = Arc::new(p);
                    text = Some(t);
                }
                Err(problems) => tracing::error!(
                    file = %path.display(),
                    problems = problems.0.len(),
                    "policy file refused; running the policy loaded before"
                ),
            },
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the policy file")
            }
        }
    }
    let seen = text
        .as_deref()
        .map(crate::policy::load::version)
        .unwrap_or_default();
    let rt = Arc::new(Mutex::new(Runtime {
        policy: PolicyWatch {
            base: base.clone(),
            text,
            seen,
            last_check: Instant::now(),
            requested: false,
        },
        cfg: cfg.clone(),
        topics: topics.clone(),
        producer,
        journal_producer,
        deliveries,
        shards: BTreeMap::new(),
        last_seen: BTreeMap::new(),
        last_ts: BTreeMap::new(),
        held: BTreeMap::new(),
        held_count: 0,
        behind: BTreeMap::new(),
        dlq_log: LogLimit::default(),
        pending: 0,
        batch_started: None,
        unsettled: None,
        urgent: false,
        counters: counters.clone(),
        metrics: Arc::new(EngineMetrics::new()),
        topic_counters: TopicCounters::new(&topics.inputs()),
        labels: LabelBuf::new(),
        clock: Clock::now(),
        batch_tag: format!("{}.{:x}.{}", cfg.instance, wall_ms(), std::process::id()),
        batch_seq: 0,
        gauges: GaugeParts::default(),
        abandoned: false,
    }));
    let gauges = EngineGauges::new(&cfg.policy);
    let mut cc = cfg.kafka.consumer_config()?;
    cc.set("group.id", &cfg.group)
        .set("client.id", &cfg.instance)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("partition.assignment.strategy", "range")
        .set(
            "auto.offset.reset",
            if cfg.start_earliest {
                "earliest"
            } else {
                "latest"
            },
        );
    if cc.get("session.timeout.ms").is_none() {
        cc.set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000");
    }
    if cfg.telemetry && cc.get("statistics.interval.ms").is_none() {
        cc.set(
            "statistics.interval.ms",
            telemetry::STATS_INTERVAL_MS.to_string(),
        );
    }
    let consumer: BaseConsumer<Ctx> = cc
        .create_with_context(Ctx {
            health: health.clone(),
            rt: rt.clone(),
            failed: failed.clone(),
        })
        .map_err(LiveError::kafka("creating the consumer"))?;
    consumer
        .subscribe(&topics.inputs())
        .map_err(LiveError::kafka("subscribing to the input topics"))?;

    let result = (|| {
        let mut last_tick = Instant::now();
        let mut last_pace = Instant::now();
        let mut last_gauges = Instant::now();
        let mut busy = false;
        let lock = || {
            rt.lock()
                .map_err(|_| LiveError::Other("engine state lock poisoned".into()))
        };
        while !stop.load(Ordering::Relaxed) {
            let wait = if busy {
                StdDuration::from_millis(5)
            } else {
                StdDuration::from_millis(100)
            };
            // A batch: the first record waits up to `wait`, the rest are
            // what the consumer already holds. Timers, commits and the
            // producer's callbacks are served once per batch, and the
            // clocks read every CLOCK_EVERY records. The state lock is not
            // held across `poll`, where rebalance callbacks take it.
            let mut polled = consumer.poll(wait);
            let mut n = 0;
            while let Some(got) = polled {
                if let Some(e) = failed.lock().ok().and_then(|mut g| g.take()) {
                    return Err(e);
                }
                let mut rt = lock()?;
                if n % CLOCK_EVERY == 0 {
                    rt.clock = Clock::now();
                }
                match got {
                    Ok(m) => {
                        health.mark_up();
                        if !rt.behind.contains_key(&m.partition()) {
                            // A partition's first record: its inputs'
                            // positions are needed before anything is
                            // decided.
                            rt.pace(&consumer);
                        }
                        rt.on_message(&consumer, &m);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "consumer error");
                    }
                }
                n += 1;
                // A command waits for no more records.
                if n == POLL_BATCH || rt.urgent || rt.pending >= rt.cfg.max_batch {
                    break;
                }
                drop(rt);
                polled = consumer.poll(StdDuration::ZERO);
            }
            if let Some(e) = failed.lock().ok().and_then(|mut g| g.take()) {
                return Err(e);
            }
            let mut rt = lock()?;
            let now = Clock::now();
            rt.clock = now;
            if now.mono.duration_since(last_pace) >= StdDuration::from_millis(20) {
                rt.pace(&consumer);
                last_pace = now.mono;
                cfg.status.beat();
            }
            if now.mono.duration_since(last_tick) >= StdDuration::from_millis(200) {
                rt.tick(&consumer);
                last_tick = now.mono;
            }
            if cfg.telemetry && now.mono.duration_since(last_gauges) >= StdDuration::from_secs(1) {
                gauges.update(rt.shards.values().map(|s| &s.core));
                last_gauges = now.mono;
            }
            if rt.due() {
                rt.commit(&consumer)?;
            }
            rt.check_policy(&consumer)?;
            super::serve_deliveries(&rt.producer);
            if let Some(j) = &rt.journal_producer {
                super::serve_deliveries(j);
            }
            rt.settle(&consumer, rdkafka::consumer::CommitMode::Async)?;
            busy = rt.pending > 0 || rt.unsettled.is_some();
        }
        let mut rt = rt
            .lock()
            .map_err(|_| LiveError::Other("engine state lock poisoned".into()))?;
        rt.commit_final(&consumer)?;
        Ok(())
    })();
    if result.is_ok() {
        consumer.unsubscribe();
    } else if let Ok(mut rt) = rt.lock() {
        // The state is rebuilt from the journals next: closing the
        // consumer revokes its partitions, and that revocation commits
        // nothing (against a broker that is down it would wait there).
        rt.abandoned = true;
    }
    result
}

/// Whether the broker commits Kafka transactions: a throwaway
/// transactional producer commits one transaction holding an empty
/// journal record (which replay skips).
pub fn broker_has_transactions(kafka: &KafkaArgs) -> Result<bool, LiveError> {
    let topics = kafka.topics();
    let mut pc = kafka.producer_config()?;
    pc.set(
        "transactional.id",
        format!("selfheal-probe-{}-{}", std::process::id(), wall_ms()),
    )
    .set("transaction.timeout.ms", "30000");
    let producer: BaseProducer<ProducerCtx> = pc
        .create_with_context(ProducerCtx {
            health: Health::default(),
            deliveries: Arc::default(),
        })
        .map_err(LiveError::kafka("creating the probe producer"))?;
    match probe_transactions(&producer, &topics.journal) {
        Ok(()) => Ok(true),
        Err(LiveError::NoTransactions(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Initialises transactions and commits one transaction holding an empty
/// journal record (which replay skips): some brokers accept
/// `InitProducerId` but refuse `EndTxn`, and that must show at start, not
/// at the first batch.
fn probe_transactions(
    producer: &BaseProducer<ProducerCtx>,
    journal: &str,
) -> Result<(), LiveError> {
    let no = |e: KafkaError| LiveError::NoTransactions(e.to_string());
    let t = StdDuration::from_secs(20);
    producer.init_transactions(t).map_err(no)?;
    producer.begin_transaction().map_err(no)?;
    let sent = producer
        .send(
            BaseRecord::<[u8], [u8]>::to(journal)
                .partition(0)
                .key(b"0".as_slice())
                .payload(journal::EMPTY.as_slice()),
        )
        .map_err(|(e, _)| e);
    if let Err(e) = sent.and_then(|()| producer.commit_transaction(t)) {
        let _ = producer.abort_transaction(t);
        return Err(no(e));
    }
    Ok(())
}

/// The high watermark (the last stable offset under `read_committed`) of
/// a partition as of the consumer's last fetch, without a request.
fn cached_high_watermark(consumer: &BaseConsumer<Ctx>, topic: &str, p: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives; librdkafka
    // reads the NUL-terminated topic name and writes the two offsets.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            p,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

fn check_partitions(
    cfg: &EngineConfig,
    producer: &BaseProducer<ProducerCtx>,
    topics: &Topics,
) -> Result<usize, LiveError> {
    super::check_topics(
        producer.client(),
        topics,
        &cfg.kafka.brokers,
        &[&topics.journal],
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{decode, Decoded, EngineCounters, Gauge, GaugeParts};

    #[test]
    fn gauges_of_engines_sharing_counters_add_up() {
        let counters = EngineCounters::default();
        let (a, b) = (GaugeParts::default(), GaugeParts::default());
        a.set(&counters, Gauge::Held, 30);
        b.set(&counters, Gauge::Held, 12);
        assert_eq!(EngineCounters::get(&counters.held), 42);
        // Falling and rising values move only their own part.
        a.set(&counters, Gauge::Held, 5);
        b.set(&counters, Gauge::Held, 20);
        assert_eq!(EngineCounters::get(&counters.held), 25);
        // A runtime that goes takes its part back (`Drop for Runtime`).
        a.set(&counters, Gauge::Held, 0);
        assert_eq!(EngineCounters::get(&counters.held), 20);
        assert_eq!(EngineCounters::get(&counters.remembered), 0);
    }
    use crate::engine::Engine;
    use crate::records::avro::{
        confluent_encode, decode_value, single_object_encode, write_metric_datum, RecordType,
    };
    use crate::records::{Emitted, InputKind, LabelBuf, Output, Record};
    use crate::time::{Timestamp, MINUTE};

    const POLICY: &str = r#"
slos:
  - name: api-availability
    service: api
    objective: 99.9
    sli:
      total: 'http_requests_total{service="api"}'
      bad: 'http_requests_total{service="api",code=~"5.."}'
"#;

    #[test]
    fn samples_found_by_their_series_bytes_are_decided_as_decoded_ones() {
        // Two hours of samples every 15 s for the two series of one SLO,
        // with half an hour of 5xx in the middle (its burn alerts fire and
        // resolve), label order and framing varying from sample to sample
        // and a bad record now and then. The engine's decode (series found
        // by their bytes) and the full decode must give the same verdicts
        // and the same outputs.
        let policy = Arc::new(crate::policy::load::parse(POLICY, "p.yaml").unwrap());
        let (mut fast, mut full) = (Engine::new(policy.clone()), Engine::new(policy));
        let (mut out_fast, mut out_full) = (Vec::<Emitted>::new(), Vec::<Emitted>::new());
        let mut labels = LabelBuf::new();
        let (mut ok, mut by_bytes, mut refused) = (0, 0, 0);
        let t0 = Timestamp::parse("2026-03-01T10:00:00Z").unwrap().0;
        let (mut good, mut bad) = (0u64, 0u64);
        for i in 0..480i64 {
            let ts = Timestamp(t0 + i * 15_000);
            good += 1000;
            if (160..280).contains(&i) {
                bad += 50;
            }
            for (code, count) in [("200", good), ("500", bad)] {
                let mut value = count.to_string();
                let mut stamp = if i % 3 == 0 {
                    ts.to_string()
                } else {
                    String::new()
                };
                match (i + code.len() as i64 * 7) % 41 {
                    5 => value = "NaN".into(),
                    11 => value = "-3".into(),
                    17 => stamp = "yesterday".into(),
                    _ => {}
                }
                let pairs = [("service", "api"), ("code", code), ("job", "web")];
                let mut order = pairs.to_vec();
                order.rotate_left(i as usize % 3);
                let mut d = write_metric_datum(&stamp, &value, "http_requests_total", &order);
                if i % 37 == 36 {
                    d.truncate(d.len() - 3);
                }
                let bytes = if i % 2 == 0 {
                    single_object_encode(RecordType::MetricSample, &d)
                } else {
                    confluent_encode(3, &d)
                };
                let a = decode(&fast, InputKind::Metric, &bytes, &mut labels);
                let b = decode_value(InputKind::Metric, &bytes);
                match (a, b) {
                    (Ok(d), Ok(input)) => {
                        by_bytes += usize::from(matches!(d, Decoded::Series(..)));
                        d.apply(&mut fast, ts, &mut out_fast);
                        full.process(&Record { ts, input }, &mut out_full).unwrap();
                        ok += 1;
                    }
                    (Err(a), Err(b)) => {
                        assert_eq!(a.to_string(), b.to_string(), "sample {i} {code}");
                        refused += 1;
                    }
                    (a, b) => panic!("sample {i} {code}: {a:?} against {b:?}"),
                }
            }
        }
        let end = Timestamp(t0 + 480 * 15_000 + 10 * MINUTE);
        fast.advance(end, &mut out_fast).unwrap();
        full.advance(end, &mut out_full).unwrap();
        assert_eq!(out_fast, out_full);
        let burns = out_full
            .iter()
            .filter(|e| matches!(e.output, Output::BurnAlert(_)))
            .count();
        assert!(burns >= 2, "burn alerts fire and resolve: {out_full:?}");
        assert!(refused >= 30, "{refused} bad records");
        assert!(
            by_bytes + 10 > ok,
            "{by_bytes} of {ok} samples were found by their bytes"
        );
    }
}
