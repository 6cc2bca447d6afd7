//! `selfheal executor`: runs remediation commands at most once per id.
//!
//! Executors form a consumer group on the actions topic. Before a command
//! runs, a `claimed` entry is written to the executions ledger (a topic
//! partitioned like the actions topic, keyed by command id) and flushed;
//! only then is the command's offset committed and the command started.
//! Before it runs the first command of a partition it holds, an executor
//! reads the ledger partition to its end (a failed read is tried again,
//! with backoff), and a command whose id is already there is not run
//! again: redelivery after a crash or a rebalance, or the same command
//! emitted twice under `at_least_once`, runs it once. A command claimed
//! by an executor that died before reporting gets no result; the engine
//! escalates it when its result is overdue. Commands past their deadline
//! are not started: they are reported `timed_out` at once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use opentelemetry::trace::SpanContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::telemetry::{self, ExecutorMetrics, Status};
use super::wire::{self, Format};
use super::{wall_ms, Health, KafkaArgs, LiveError, Topics};
use crate::executor::{Outcome, Runner};
use crate::records::{ActionResult, Command, Input, Output, ResultStatus};
use crate::time::Timestamp;

/// Executor settings.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    pub kafka: KafkaArgs,
    pub group: String,
    pub instance: String,
    pub format: Format,
    /// Commands run at once, at most.
    pub concurrency: usize,
    /// OpenTelemetry `execute` spans; `None` (the default) makes none.
    pub traces: Option<super::traces::Traces>,
    /// Heartbeat, assignment and broker state for the health endpoints.
    pub status: Status,
    /// Metrics are served: the consumer sends librdkafka statistics.
    pub telemetry: bool,
}

impl ExecutorConfig {
    pub fn new(kafka: KafkaArgs) -> ExecutorConfig {
        ExecutorConfig {
            kafka,
            group: "selfheal-executor".into(),
            instance: super::engine::default_instance("executor"),
            format: Format::Avro,
            concurrency: 16,
            traces: None,
            status: Status::default(),
            telemetry: false,
        }
    }
}

/// Counters of a running executor.
#[derive(Debug, Default)]
pub struct ExecutorCounters {
    pub received: AtomicU64,
    pub started: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub timed_out: AtomicU64,
    pub expired: AtomicU64,
    pub duplicates: AtomicU64,
    pub undecodable: AtomicU64,
    /// Reads of a partition's executions ledger that failed and were
    /// tried again.
    pub ledger_retries: AtomicU64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct LedgerEntry {
    command_id: String,
    state: String,
    executor: String,
    at: String,
    #[serde(default)]
    status: Option<String>,
}

/// Runs the executor until `stop` is set.
pub async fn run(
    cfg: ExecutorConfig,
    runner: Arc<Runner>,
    stop: Arc<AtomicBool>,
    counters: Arc<ExecutorCounters>,
) -> Result<(), LiveError> {
    let topics = cfg.kafka.topics();
    let health = cfg.status.health().clone();
    cfg.status.beat();
    let mut pc = cfg.kafka.producer_config()?;
    pc.set("client.id", &cfg.instance)
        .set("linger.ms", "0")
        .set("acks", "all");
    let producer: FutureProducer<Health> = pc
        .create_with_context(health.clone())
        .map_err(LiveError::kafka("creating the producer"))?;
    let n = super::check_topics(
        producer.client(),
        &topics,
        &cfg.kafka.brokers,
        &[&topics.actions, &topics.executions],
    )?;
    let mut cc = cfg.kafka.consumer_config()?;
    cc.set("group.id", &cfg.group)
        .set("client.id", &cfg.instance)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("partition.assignment.strategy", "range");
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
    let ledgers: Arc<Mutex<HashMap<i32, HashSet<String>>>> = Arc::default();
    let consumer: StreamConsumer<ExecCtx> = cc
        .create_with_context(ExecCtx {
            ledgers: ledgers.clone(),
            status: cfg.status.clone(),
        })
        .map_err(LiveError::kafka("creating the consumer"))?;
    consumer
        .subscribe(&[&topics.actions])
        .map_err(LiveError::kafka("subscribing to the actions topic"))?;
    eprintln!(
        "selfheal executor: {} on {} ({n} partitions of {})",
        cfg.instance, cfg.kafka.brokers, topics.actions
    );
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.concurrency.max(1)));
    let mut tm = ExecutorMetrics::new(&topics);
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        topics: topics.clone(),
        producer,
        counters,
        runner,
        in_flight: tm.in_flight.clone(),
    });
    while !stop.load(Ordering::Relaxed) {
        cfg.status.beat();
        let m = match tokio::time::timeout(StdDuration::from_millis(200), consumer.recv()).await {
            Err(_) => continue,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "consumer error");
                tokio::time::sleep(StdDuration::from_millis(200)).await;
                continue;
            }
            Ok(Ok(m)) => {
                health.mark_up();
                m
            }
        };
        let p = m.partition();
        let loaded = ledgers.lock().map(|l| l.contains_key(&p)).unwrap_or(false);
        if !loaded {
            // No command of the partition runs before its ledger is read;
            // a read that fails (a broker busy or away) is tried again.
            let mut wait = StdDuration::from_millis(500);
            let ids = loop {
                let read = read_ledger_beating(&cfg, &topics.executions, p).await;
                match read.map_err(|e| LiveError::Other(format!("ledger reader: {e}")))? {
                    Ok(ids) => break Some(ids),
                    Err(e) if !stop.load(Ordering::Relaxed) => {
                        shared
                            .counters
                            .ledger_retries
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            partition = p,
                            error = %e,
                            retry_in_ms = wait.as_millis() as u64,
                            "reading the executions ledger failed; no command of the \
                             partition runs before it is read"
                        );
                        tokio::time::sleep(wait).await;
                        cfg.status.beat();
                        wait = (wait * 2).min(StdDuration::from_secs(10));
                    }
                    Err(_) => break None,
                }
            };
            // Stopping: the record is left for the next owner.
            let Some(ids) = ids else { break };
            if let Ok(mut l) = ledgers.lock() {
                l.insert(p, ids);
            }
        }
        shared.counters.received.fetch_add(1, Ordering::Relaxed);
        tm.topic.consumed(0);
        let kind = wire::header(m.headers(), wire::KIND_HEADER).map(str::to_string);
        let decoded = wire::decode_output(
            kind.as_deref().or(Some("command")),
            m.payload().unwrap_or(&[]),
        );
        let cmd = match decoded {
            Ok(Output::Command(c)) => Some(c),
            Ok(other) => {
                tracing::warn!(
                    kind = other.kind(),
                    "not a command on the actions topic; skipped"
                );
                None
            }
            Err(e) => {
                shared.counters.undecodable.fetch_add(1, Ordering::Relaxed);
                tm.topic.decode_failed(0);
                tm.topic.dead_lettered(0, e.code());
                shared.dead_letter(&m, e.code(), &e.to_string()).await;
                None
            }
        };
        if let Some(cmd) = cmd {
            // The command's trace context: the engine's `command.emit`
            // span. Missing or malformed headers leave it `None`.
            let trace = wire::header(m.headers(), super::traces::TRACEPARENT).and_then(|tp| {
                super::traces::parse(
                    Some(tp),
                    wire::header(m.headers(), super::traces::TRACESTATE),
                )
            });
            let fresh = ledgers
                .lock()
                .map(|mut l| l.entry(p).or_default().insert(cmd.id.clone()))
                .unwrap_or(false);
            if !fresh {
                shared.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                tracing::info!(command = %cmd.id, "already claimed; not run again");
            } else {
                shared.ledger(p, &cmd.id, "claimed", None).await?;
                let permit = slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| LiveError::Other("executor slots closed".into()))?;
                let s = shared.clone();
                tokio::spawn(async move {
                    s.execute(p, cmd, trace).await;
                    drop(permit);
                });
            }
        }
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition_offset(m.topic(), p, Offset::Offset(m.offset() + 1));
        if let Err(e) = consumer.commit(&tpl, rdkafka::consumer::CommitMode::Async) {
            tracing::warn!(error = %e, "committing the actions offset");
        }
    }
    // Let running commands finish and report.
    let _ = slots.acquire_many(cfg.concurrency.max(1) as u32).await;
    let _ = shared.producer.flush(StdDuration::from_secs(10));
    Ok(())
}

/// Forgets a partition's ledger when the partition is revoked: other
/// executors claim its commands meanwhile, so it is read again when the
/// partition comes back.
struct ExecCtx {
    ledgers: Arc<Mutex<HashMap<i32, HashSet<String>>>>,
    status: Status,
}

impl rdkafka::ClientContext for ExecCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        self.status.health().error(error, reason);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        self.status.health().observe_stats(&statistics);
        telemetry::record_lag(&statistics);
    }
}

impl rdkafka::consumer::ConsumerContext for ExecCtx {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        if let rdkafka::consumer::Rebalance::Revoke(tpl) = rebalance {
            if let Ok(mut l) = self.ledgers.lock() {
                for e in tpl.elements() {
                    l.remove(&e.partition());
                }
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, _: &rdkafka::consumer::Rebalance<'_>) {
        let held: Vec<i32> = consumer
            .assignment()
            .map(|a| a.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        tracing::info!(partitions = ?held, "actions partitions held after a rebalance");
        self.status.set_assigned(held.len() as u64);
    }
}

struct Shared {
    cfg: ExecutorConfig,
    topics: Topics,
    producer: FutureProducer<Health>,
    counters: Arc<ExecutorCounters>,
    runner: Arc<Runner>,
    in_flight: metrics::Gauge,
}

impl Shared {
    async fn execute(&self, p: i32, cmd: Command, trace: Option<SpanContext>) {
        let started = std::time::SystemTime::now();
        let now = wall_ms();
        let mut took = None;
        let outcome = if now > cmd.deadline.0 {
            self.counters.expired.fetch_add(1, Ordering::Relaxed);
            Outcome::timed_out(format!(
                "not started: deadline {} had passed when the executor got it at {}",
                cmd.deadline,
                Timestamp(now)
            ))
        } else {
            self.counters.started.fetch_add(1, Ordering::Relaxed);
            // With traces on, the line names the incident's trace.
            let trace_id = self
                .cfg
                .traces
                .as_ref()
                .map(|_| super::traces::trace_id(&cmd.incident).to_string());
            tracing::info!(
                command = %cmd.id,
                incident = %cmd.incident,
                action = %cmd.action,
                target = %cmd.target,
                trace_id,
                "running"
            );
            self.in_flight.increment(1.0);
            let t0 = std::time::Instant::now();
            let outcome = crate::executor::run(&cmd, &self.runner).await;
            took = Some(t0.elapsed());
            self.in_flight.decrement(1.0);
            outcome
        };
        ExecutorMetrics::finished(&cmd.action, outcome.status, took);
        match outcome.status {
            ResultStatus::Succeeded => &self.counters.succeeded,
            ResultStatus::Failed => &self.counters.failed,
            ResultStatus::TimedOut => &self.counters.timed_out,
        }
        .fetch_add(1, Ordering::Relaxed);
        let result = Input::Result(ActionResult {
            command_id: cmd.id.clone(),
            status: outcome.status,
            detail: outcome.detail.clone(),
            at: Some(Timestamp(wall_ms())),
            previous: outcome.previous,
        });
        let Some(value) = wire::encode_input(&result, self.cfg.format) else {
            return;
        };
        // The result continues the trace: from the `execute` span when
        // tracing is on, else from the command's own context.
        let trace = match &self.cfg.traces {
            Some(tr) => Some(tr.execute(
                &cmd,
                trace,
                outcome.status,
                &outcome.detail,
                (started, std::time::SystemTime::now()),
            )),
            None => trace,
        };
        let (traceparent, tracestate) = match &trace {
            Some(sc) => (
                Some(super::traces::traceparent(sc)),
                Some(sc.trace_state().header()).filter(|s| !s.is_empty()),
            ),
            None => (None, None),
        };
        for attempt in 0..10u32 {
            let rec = FutureRecord::to(&self.topics.results)
                .key(cmd.service.as_str())
                .payload(value.as_slice())
                .timestamp(wall_ms())
                .headers(trace_headers(
                    wire::kind_headers("result"),
                    traceparent.as_deref(),
                    tracestate.as_deref(),
                ));
            match self.producer.send(rec, StdDuration::from_secs(30)).await {
                Ok(_) => break,
                Err((e, _)) => {
                    tracing::warn!(command = %cmd.id, attempt, error = %e, "publishing the result");
                    tokio::time::sleep(StdDuration::from_secs(1 << attempt.min(4))).await;
                }
            }
        }
        if let Err(e) = self
            .ledger(p, &cmd.id, "done", Some(outcome.status.as_str()))
            .await
        {
            tracing::warn!(command = %cmd.id, error = %e, "recording the result in the ledger");
        }
    }

    async fn ledger(
        &self,
        p: i32,
        id: &str,
        state: &str,
        status: Option<&str>,
    ) -> Result<(), LiveError> {
        let entry = LedgerEntry {
            command_id: id.to_string(),
            state: state.to_string(),
            executor: self.cfg.instance.clone(),
            at: Timestamp(wall_ms()).to_string(),
            status: status.map(str::to_string),
        };
        let value = serde_json::to_vec(&entry).unwrap_or_default();
        let rec = FutureRecord::to(&self.topics.executions)
            .partition(p)
            .key(id)
            .payload(value.as_slice());
        self.producer
            .send(rec, StdDuration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| LiveError::Kafka {
                context: format!("writing the executions ledger for {id}"),
                source: e,
            })
    }

    async fn dead_letter(
        &self,
        m: &rdkafka::message::BorrowedMessage<'_>,
        code: &str,
        reason: &str,
    ) {
        let headers = wire::dead_letter_headers(reason, code, m.topic(), m.partition(), m.offset());
        let mut rec = FutureRecord::to(&self.topics.dlq)
            .payload(m.payload().unwrap_or(&[]))
            .headers(headers);
        if let Some(k) = m.key() {
            rec = rec.key(k);
        }
        if let Err((e, _)) = self.producer.send(rec, StdDuration::from_secs(30)).await {
            tracing::error!(error = %e, "dead-lettering an undecodable command");
        }
    }
}

/// `headers` with `traceparent` and `tracestate` added when present.
fn trace_headers(
    headers: OwnedHeaders,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> OwnedHeaders {
    [
        (super::traces::TRACEPARENT, traceparent),
        (super::traces::TRACESTATE, tracestate),
    ]
    .into_iter()
    .fold(headers, |h, (key, value)| match value {
        Some(v) => h.insert(Header {
            key,
            value: Some(v),
        }),
        None => h,
    })
}

/// [`read_ledger`] on a blocking thread, the heartbeat beating while it
/// lasts: reading a long ledger is progress, not a stall.
async fn read_ledger_beating(
    cfg: &ExecutorConfig,
    topic: &str,
    p: i32,
) -> Result<Result<HashSet<String>, LiveError>, tokio::task::JoinError> {
    let (args, t, group) = (cfg.kafka.clone(), topic.to_string(), cfg.group.clone());
    let mut reading = tokio::task::spawn_blocking(move || read_ledger(&args, &group, &t, p));
    loop {
        tokio::select! {
            r = &mut reading => return r,
            _ = tokio::time::sleep(StdDuration::from_secs(1)) => cfg.status.beat(),
        }
    }
}

/// The ids in one partition of the executions ledger.
fn read_ledger(
    args: &KafkaArgs,
    group: &str,
    topic: &str,
    p: i32,
) -> Result<HashSet<String>, LiveError> {
    let mut cc = args.consumer_config()?;
    cc.set("group.id", format!("{group}-ledger-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    let reader: BaseConsumer<super::Health> = cc
        .create_with_context(super::Health::default())
        .map_err(LiveError::kafka("creating the ledger reader"))?;
    let mut ids = HashSet::new();
    let late = |_, _| {
        LiveError::Other(format!(
            "the executions ledger {topic}[{p}] was not read to its end within 60s"
        ))
    };
    super::read_to_end(&reader, topic, p, StdDuration::from_secs(60), late, |m| {
        if let Some(k) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
            ids.insert(k.to_string());
        }
        Ok(())
    })?;
    Ok(ids)
}
