//! `selfheal notify`: delivers the escalations topic to the paging sinks.
//!
//! The notifiers form their own consumer group on the escalations topic.
//! Records are handled one at a time: each escalation goes to every sink
//! that takes its severity ([`crate::notify::Notifier`]), and its offset
//! is committed (synchronously) only once every sink has it or has given
//! up. What a sink gave up on is written to the dead-letter topic, one
//! record per sink, with the reason (redacted) in its headers; undecodable
//! records go there too. A record whose delivery is cut short by a stop is
//! not committed, so it is delivered again after the restart.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Message};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::wire;
use super::{KafkaArgs, LiveError};
use crate::notify::{Notifier, Outcome};
use crate::records::IncidentState;
use crate::records::Output;

/// Settings of the notify service.
#[derive(Debug, Clone)]
pub struct NotifyServiceConfig {
    pub kafka: KafkaArgs,
    pub group: String,
    pub instance: String,
    /// Where a partition without a committed offset starts.
    pub start_earliest: bool,
    /// Heartbeat, assignment and broker state for the health endpoints.
    pub status: super::telemetry::Status,
    /// Metrics are served: the consumer sends librdkafka statistics.
    pub telemetry: bool,
}

impl NotifyServiceConfig {
    pub fn new(kafka: KafkaArgs) -> NotifyServiceConfig {
        NotifyServiceConfig {
            kafka,
            group: "selfheal-notify".into(),
            instance: super::engine::default_instance("notify"),
            start_earliest: true,
            status: Default::default(),
            telemetry: false,
        }
    }
}

/// Counters of a running notify service (the sinks' own are in the
/// [`Notifier`]).
#[derive(Debug, Default)]
pub struct NotifyCounters {
    pub received: AtomicU64,
    pub escalations: AtomicU64,
    pub undecodable: AtomicU64,
    pub skipped: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub committed: AtomicU64,
}

/// Runs until `stop` is set.
pub async fn run(
    cfg: NotifyServiceConfig,
    notifier: Arc<Notifier>,
    stop: Arc<AtomicBool>,
    counters: Arc<NotifyCounters>,
) -> Result<(), LiveError> {
    let topics = cfg.kafka.topics();
    let mut pc = cfg.kafka.producer_config()?;
    pc.set("client.id", &cfg.instance)
        .set("linger.ms", "0")
        .set("acks", "all");
    cfg.status.beat();
    let producer: FutureProducer<super::Health> = pc
        .create_with_context(cfg.status.health().clone())
        .map_err(LiveError::kafka("creating the producer"))?;
    let md = producer
        .client()
        .fetch_metadata(None, StdDuration::from_secs(10))
        .map_err(LiveError::kafka(format!(
            "fetching metadata from {}",
            cfg.kafka.brokers
        )))?;
    for t in [&topics.escalations, &topics.incidents, &topics.dlq] {
        let ok = md
            .topics()
            .iter()
            .any(|m| m.name() == t.as_str() && m.error().is_none() && !m.partitions().is_empty());
        if !ok {
            return Err(LiveError::MissingTopic {
                topic: t.clone(),
                brokers: cfg.kafka.brokers.clone(),
            });
        }
    }
    let mut cc = cfg.kafka.consumer_config()?;
    cc.set("group.id", &cfg.group)
        .set("client.id", &cfg.instance)
        .set("enable.auto.commit", "false")
        .set(
            "auto.offset.reset",
            if cfg.start_earliest {
                "earliest"
            } else {
                "latest"
            },
        )
        .set("isolation.level", "read_committed")
        // Partition p of both topics to one member: an incident's
        // escalation and its resolve (both keyed by service) meet there.
        .set("partition.assignment.strategy", "range");
    if cc.get("session.timeout.ms").is_none() {
        cc.set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000");
    }
    // A sink retrying for minutes holds the loop; the group must not
    // drop the member meanwhile.
    if cc.get("max.poll.interval.ms").is_none() {
        cc.set("max.poll.interval.ms", "1800000");
    }
    if cfg.telemetry && cc.get("statistics.interval.ms").is_none() {
        cc.set(
            "statistics.interval.ms",
            super::telemetry::STATS_INTERVAL_MS.to_string(),
        );
    }
    let consumer: StreamConsumer<super::telemetry::StatusContext> = cc
        .create_with_context(super::telemetry::StatusContext(cfg.status.clone()))
        .map_err(LiveError::kafka("creating the consumer"))?;
    // The incidents topic brings the resolves of what was delivered.
    consumer
        .subscribe(&[&topics.escalations, &topics.incidents])
        .map_err(LiveError::kafka(
            "subscribing to the escalations and incidents topics",
        ))?;
    let sinks: Vec<String> = notifier
        .sinks()
        .iter()
        .map(|s| format!("{} {}", s.kind, s.display_url()))
        .collect();
    eprintln!(
        "selfheal notify: {} on {} ({}, resolves from {}), delivering to {}",
        cfg.instance,
        cfg.kafka.brokers,
        topics.escalations,
        topics.incidents,
        sinks.join(", ")
    );
    let svc = Service {
        producer,
        dlq: topics.dlq.clone(),
        incidents: topics.incidents.clone(),
        notifier,
        counters,
    };
    let consumed = super::telemetry::TopicCounters::new(&[&topics.escalations, &topics.incidents]);
    while !stop.load(Ordering::Relaxed) {
        cfg.status.beat();
        let m = match tokio::time::timeout(StdDuration::from_millis(200), consumer.recv()).await {
            Err(_) => continue,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "consumer error");
                tokio::time::sleep(StdDuration::from_millis(200)).await;
                continue;
            }
            Ok(Ok(m)) => m,
        };
        consumed.consumed(usize::from(m.topic() == svc.incidents));
        // Retries are bounded by the config; the loop is alive meanwhile.
        let handled = tokio::select! {
            done = svc.handle(&m, &stop) => done,
            _ = stopped(&stop) => false,
            _ = beating(&cfg.status) => false,
        };
        if !handled {
            tracing::info!(
                partition = m.partition(),
                offset = m.offset(),
                "stopping before the record was handled; it is delivered again after a restart"
            );
            break;
        }
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition_offset(m.topic(), m.partition(), Offset::Offset(m.offset() + 1));
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                svc.counters.committed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "committing the escalations offset"),
        }
    }
    let _ = svc.producer.flush(StdDuration::from_secs(10));
    Ok(())
}

/// Beats the heartbeat every second, forever.
async fn beating(status: &super::telemetry::Status) {
    loop {
        tokio::time::sleep(StdDuration::from_secs(1)).await;
        status.beat();
    }
}

async fn stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
}

struct Service {
    producer: FutureProducer<super::Health>,
    dlq: String,
    incidents: String,
    notifier: Arc<Notifier>,
    counters: Arc<NotifyCounters>,
}

impl Service {
    /// Delivers one record; `false` when it could not be finished (the
    /// dead-letter topic unreachable until a stop).
    async fn handle(&self, m: &BorrowedMessage<'_>, stop: &AtomicBool) -> bool {
        if m.topic() == self.incidents {
            return self.handle_incident(m, stop).await;
        }
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let kind = wire::header(m.headers(), wire::KIND_HEADER).map(str::to_string);
        let decoded = wire::decode_output(
            kind.as_deref().or(Some("escalation")),
            m.payload().unwrap_or(&[]),
        );
        let esc = match decoded {
            Ok(Output::Escalation(e)) => e,
            Ok(other) => {
                self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    kind = other.kind(),
                    "not an escalation on the escalations topic; skipped"
                );
                return true;
            }
            Err(e) => {
                self.counters.undecodable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, partition = m.partition(), offset = m.offset(), "undecodable escalation; dead-lettered");
                return self
                    .dead_letter(m, e.code(), &e.to_string(), None, stop)
                    .await;
            }
        };
        self.counters.escalations.fetch_add(1, Ordering::Relaxed);
        let deliveries = self.notifier.deliver(&esc).await;
        let outcome = |o: &Outcome| match o {
            Outcome::Delivered { .. } => Some("delivered"),
            Outcome::Duplicate => Some("duplicate"),
            Outcome::GaveUp { .. } => Some("gave_up"),
            Outcome::NotSubscribed => None,
        };
        self.settle(m, &deliveries, outcome, "take", &esc.incident, stop)
            .await
    }

    /// Counts each sink's outcome in `selfheal_notify_deliveries_total`
    /// under the label `outcome` gives it (none: not counted), and
    /// dead-letters the record once per sink that gave up ("did not
    /// `verb` incident …"); `false` as for [`Service::handle`].
    async fn settle(
        &self,
        m: &BorrowedMessage<'_>,
        deliveries: &[crate::notify::Delivery],
        outcome: impl Fn(&Outcome) -> Option<&'static str>,
        verb: &str,
        incident: &str,
        stop: &AtomicBool,
    ) -> bool {
        for d in deliveries {
            if let Some(o) = outcome(&d.outcome) {
                metrics::counter!(
                    super::telemetry::names::NOTIFY_DELIVERIES,
                    "sink" => d.sink.as_str(),
                    "outcome" => o
                )
                .increment(1);
            }
            if let Outcome::GaveUp { reason, .. } = &d.outcome {
                let reason = format!("{} did not {verb} incident {incident}: {reason}", d.sink);
                if !self
                    .dead_letter(m, "sink_failed", &reason, Some(d.sink.as_str()), stop)
                    .await
                {
                    return false;
                }
            }
        }
        true
    }

    /// An incident record: a resolved incident is resolved at the sinks
    /// it was delivered to; any other state is left alone, and an
    /// undecodable record is dead-lettered.
    async fn handle_incident(&self, m: &BorrowedMessage<'_>, stop: &AtomicBool) -> bool {
        let kind = wire::header(m.headers(), wire::KIND_HEADER);
        let inc = match wire::decode_output(kind.or(Some("incident")), m.payload().unwrap_or(&[])) {
            Ok(Output::Incident(i)) if i.state == IncidentState::Resolved => i,
            Ok(_) => return true,
            Err(e) => {
                self.counters.undecodable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, partition = m.partition(), offset = m.offset(), "undecodable incident record; dead-lettered");
                return self
                    .dead_letter(m, e.code(), &e.to_string(), None, stop)
                    .await;
            }
        };
        let deliveries = self.notifier.resolve(&inc).await;
        // A resolve is only sent where the incident was delivered, so it
        // is never a duplicate nor unsubscribed.
        let outcome = |o: &Outcome| match o {
            Outcome::Delivered { .. } => Some("resolved"),
            _ => Some("resolve_gave_up"),
        };
        self.settle(m, &deliveries, outcome, "resolve", &inc.id, stop)
            .await
    }

    /// Writes the record to the dead-letter topic with the reason,
    /// retrying until the broker has it or a stop is asked for.
    async fn dead_letter(
        &self,
        m: &BorrowedMessage<'_>,
        code: &str,
        reason: &str,
        sink: Option<&str>,
        stop: &AtomicBool,
    ) -> bool {
        let reason = self.notifier.redact(reason);
        let mut wait = StdDuration::from_millis(500);
        loop {
            let mut headers =
                wire::dead_letter_headers(&reason, code, m.topic(), m.partition(), m.offset());
            if let Some(s) = sink {
                headers = headers.insert(Header {
                    key: "selfheal-sink",
                    value: Some(s),
                });
            }
            if let Some(k) = wire::header(m.headers(), wire::KIND_HEADER) {
                headers = headers.insert(Header {
                    key: wire::KIND_HEADER,
                    value: Some(k),
                });
            }
            let mut rec = FutureRecord::to(&self.dlq)
                .payload(m.payload().unwrap_or(&[]))
                .headers(headers);
            if let Some(k) = m.key() {
                rec = rec.key(k);
            }
            match self.producer.send(rec, StdDuration::from_secs(30)).await {
                Ok(_) => {
                    self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Err((e, _)) => {
                    tracing::error!(error = %e, "writing to the dead-letter topic; retrying");
                    if stop.load(Ordering::Relaxed) {
                        return false;
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(StdDuration::from_secs(30));
                }
            }
        }
    }
}
