//! Live mode: the decision core and the executors on Kafka.
//!
//! * [`engine`] — `selfheal engine`: consumes the input topics as one
//!   consumer group and drives one core per partition; emission is
//!   transactional (`exactly_once`) or idempotent-by-id (`at_least_once`).
//! * [`journal`] — the per-partition journal from which a core's state is
//!   rebuilt after a restart or a rebalance.
//! * [`executor`] — `selfheal executor`: runs commands at most once per id.
//! * [`notify`] — `selfheal notify`: escalations to the paging sinks.
//! * [`range`] — a time range of topics as a replay source.
//! * [`tools`] — operator tools: publish alerts, approve, kill switch,
//!   audit tail, the Alertmanager bridge.
//! * [`traces`] — OpenTelemetry spans, one trace per incident.
//! * [`verify`] — replaying the journals to check the audit topic.
//! * [`wire`] — how records are framed on topics.

pub mod bench;
pub mod engine;
pub mod executor;
pub mod journal;
pub mod notify;
pub mod range;
pub mod signing;
pub mod telemetry;
pub mod tools;
pub mod traces;
pub mod verify;
pub mod wire;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::ClientContext;

/// Errors of the live runtime.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: KafkaError,
    },
    #[error(
        "the broker does not support transactions ({0}); processing.guarantee \
         exactly_once needs them. Run with --processing-guarantee at_least_once: \
         commands then keep their input-derived ids and executors deduplicate them"
    )]
    NoTransactions(String),
    /// The setting's text is not kept: it may be a secret.
    #[error("invalid Kafka setting #{0} (-X or SELFHEAL_KAFKA_*): expected key=value with a non-empty key")]
    BadSetting(usize),
    #[error("topic {topic} is missing or has no partitions on {brokers}")]
    MissingTopic { topic: String, brokers: String },
    #[error("topics {a} ({na} partitions) and {b} ({nb} partitions) must have the same number of partitions: a service's records must meet in one partition")]
    PartitionMismatch {
        a: String,
        na: usize,
        b: String,
        nb: usize,
    },
    #[error("journal of partition {partition}: {message}")]
    Journal { partition: i32, message: String },
    #[error(
        "journal of partition {partition}: another writer: this engine's journal records \
         landed at offsets {first}..={last}, the last one it knew of ends at {expected}; \
         two engines own the partition at once"
    )]
    OtherWriter {
        partition: i32,
        expected: i64,
        first: i64,
        last: i64,
    },
    #[error(
        "the consumer group took back partitions {0} (no heartbeat reached it within \
         session.timeout.ms): nothing decided since the last commit is written; the \
         partitions' next owner decides it again from the journals"
    )]
    AssignmentLost(String),
    #[error("{0} deliveries failed: {1}")]
    Delivery(u64, String),
    #[error("{0}")]
    Other(String),
}

impl LiveError {
    pub(crate) fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> LiveError {
        let context = context.into();
        move |source| LiveError::Kafka { context, source }
    }
}

/// What [`read_to_end`] read of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The low watermark listed before reading.
    pub low: i64,
    /// The high watermark listed before reading (for logs: Tansu 0.6
    /// lists it behind its log).
    pub high: i64,
    /// The offset after the last record read (`low` when none was).
    pub end: i64,
}

/// Reads partition `p` of `topic` from its first record to its end with
/// `reader`, a consumer of its own with `enable.partition.eof` set,
/// calling `f` with every record in order. A read not done within
/// `limit` fails with `late(next offset, listed end)`; a Kafka error
/// names `topic[p]`, except a [`transient`] one, which is logged while
/// the read goes on.
///
/// The end is where a fetch finds nothing more (partition EOF), or, for a
/// broker that never says so, half a second without a record once the
/// high watermark listed at the start is reached. The listed high
/// watermark alone is no end: Tansu 0.6 lists one behind its log (1 for a
/// partition of 38 records was seen), and a read that stops there leaves
/// out what the previous owner wrote last.
pub(crate) fn read_to_end<C: rdkafka::consumer::ConsumerContext>(
    reader: &rdkafka::consumer::BaseConsumer<C>,
    topic: &str,
    p: i32,
    limit: StdDuration,
    late: impl FnOnce(i64, i64) -> LiveError,
    mut f: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> Result<(), LiveError>,
) -> Result<Span, LiveError> {
    use rdkafka::consumer::Consumer;
    use rdkafka::Message;
    let kafka = || LiveError::kafka(format!("reading {topic}[{p}]"));
    let (low, high) = reader
        .fetch_watermarks(topic, p, StdDuration::from_secs(10))
        .map_err(kafka())?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
        .map_err(kafka())?;
    reader.assign(&tpl).map_err(kafka())?;
    let deadline = std::time::Instant::now() + limit;
    let mut next = low;
    let span = |end| Span { low, high, end };
    loop {
        if std::time::Instant::now() > deadline {
            return Err(late(next, high));
        }
        match reader.poll(StdDuration::from_millis(500)) {
            None if next >= high => return Ok(span(next)),
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(span(next)),
            Some(Err(e)) if transient(&e) => {
                tracing::warn!(error = %e, "reading {topic}[{p}]; retrying");
            }
            Some(Err(e)) => return Err(kafka()(e)),
            Some(Ok(m)) => {
                f(&m)?;
                next = m.offset() + 1;
            }
        }
    }
}

/// Whether a consumer error is one librdkafka recovers from by itself
/// (a lost or refused connection, a request timed out, a partition
/// leader moving): a reader goes on polling, within its own deadline,
/// instead of failing. An idle connection the broker closed shows up as
/// `AllBrokersDown` for as long as both the bootstrap and the broker
/// connection are down, which is no reason to start over.
pub(crate) fn transient(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::AllBrokersDown
                | C::BrokerTransportFailure
                | C::NetworkException
                | C::RequestTimedOut
                | C::OperationTimedOut
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::NotCoordinator
                | C::CoordinatorNotAvailable
        )
    )
}

/// Topic names, all under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub metrics: String,
    pub alerts: String,
    pub changes: String,
    pub results: String,
    pub approvals: String,
    pub control: String,
    pub actions: String,
    pub escalations: String,
    pub audit: String,
    pub dlq: String,
    pub incidents: String,
    pub approval_requests: String,
    pub journal: String,
    pub executions: String,
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Topics {
        let t = |n: &str| format!("{prefix}{n}");
        Topics {
            metrics: t("metrics"),
            alerts: t("alerts"),
            changes: t("changes"),
            results: t("results"),
            approvals: t("approvals"),
            control: t("control"),
            actions: t("actions"),
            escalations: t("escalations"),
            audit: t("audit"),
            dlq: t("dlq"),
            incidents: t("incidents"),
            approval_requests: t("approval_requests"),
            journal: t("journal"),
            executions: t("executions"),
        }
    }

    /// The engine's input topics, in journal index order.
    pub fn inputs(&self) -> [&str; 6] {
        [
            &self.metrics,
            &self.alerts,
            &self.changes,
            &self.results,
            &self.approvals,
            &self.control,
        ]
    }

    /// Every topic, for creating them.
    pub fn all(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.inputs().to_vec();
        v.extend([
            self.actions.as_str(),
            &self.escalations,
            &self.audit,
            &self.dlq,
            &self.incidents,
            &self.approval_requests,
            &self.journal,
            &self.executions,
        ]);
        v
    }
}

/// How to reach the broker: shared by every live command. `Debug` shows
/// the setting names only, never their values (passwords).
#[derive(Clone, clap::Args)]
pub struct KafkaArgs {
    /// Bootstrap servers, comma separated.
    #[arg(long, env = "SELFHEAL_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Prefix of every topic name.
    #[arg(long, env = "SELFHEAL_TOPIC_PREFIX", default_value = "selfheal.")]
    pub topic_prefix: String,
    /// A librdkafka setting passed through as is (repeatable), e.g.
    /// `-X security.protocol=SASL_SSL -X sasl.mechanism=SCRAM-SHA-512`.
    /// Settings also come from `SELFHEAL_KAFKA_<NAME>` variables, with `_`
    /// for `.` (`SELFHEAL_KAFKA_SASL_PASSWORD` sets `sasl.password`); flags
    /// win over variables. A `consumer.` or `producer.` prefix limits a
    /// setting to consumers or producers (`-X
    /// consumer.session.timeout.ms=6000`).
    #[arg(short = 'X', long = "kafka", value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
}

impl std::fmt::Debug for KafkaArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .settings
            .iter()
            .map(|s| s.split_once('=').map_or("<invalid>", |(k, _)| k.trim()))
            .collect();
        f.debug_struct("KafkaArgs")
            .field("brokers", &self.brokers)
            .field("topic_prefix", &self.topic_prefix)
            .field("settings", &names)
            .finish()
    }
}

/// `fetch.queue.backoff.ms` of every consumer (see
/// [`KafkaArgs::consumer_config`]).
pub const FETCH_QUEUE_BACKOFF_MS: u32 = 10;

impl KafkaArgs {
    pub fn local(brokers: &str) -> KafkaArgs {
        KafkaArgs {
            brokers: brokers.to_string(),
            topic_prefix: "selfheal.".to_string(),
            settings: Vec::new(),
        }
    }

    pub fn topics(&self) -> Topics {
        Topics::with_prefix(&self.topic_prefix)
    }

    /// A producer configuration: the client's, with the Java clients'
    /// partitioner, so a service's records land on the same partition
    /// whoever produced them (unless a pass-through setting says otherwise).
    pub fn producer_config(&self) -> Result<ClientConfig, LiveError> {
        let mut c = self.scoped_config(Some(SCOPE_PRODUCER))?;
        if c.get("partitioner").is_none() {
            c.set("partitioner", "murmur2_random");
        }
        Ok(c)
    }

    /// A consumer configuration: the client's, with two librdkafka
    /// defaults changed unless a pass-through setting says otherwise.
    /// `fetch.wait.max.ms` 100 (from 500): an idle input is noticed
    /// sooner. `fetch.queue.backoff.ms` [`FETCH_QUEUE_BACKOFF_MS`] (from
    /// 1,000): once a partition's prefetch queue is full, librdkafka
    /// waits this long before fetching again, however soon the queue
    /// drains. At the default, a consumer working through a backlog
    /// reads at most about one full queue per partition a second, and the
    /// first records after the backlog can wait up to a second.
    pub fn consumer_config(&self) -> Result<ClientConfig, LiveError> {
        let mut c = self.scoped_config(Some(SCOPE_CONSUMER))?;
        if c.get("fetch.wait.max.ms").is_none() {
            c.set("fetch.wait.max.ms", "100");
        }
        if c.get("fetch.queue.backoff.ms").is_none() {
            c.set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS.to_string());
        }
        Ok(c)
    }

    /// A client configuration with the bootstrap servers and every
    /// pass-through setting, for clients that neither consume nor produce
    /// (metadata, admin): settings named `consumer.…` or `producer.…` are
    /// left out.
    pub fn client_config(&self) -> Result<ClientConfig, LiveError> {
        self.scoped_config(None)
    }

    /// The client configuration of a consumer (`scope` [`SCOPE_CONSUMER`])
    /// or producer ([`SCOPE_PRODUCER`]): a setting named with the scope's
    /// prefix applies, without it, to those clients only, and one with
    /// the other prefix not at all. So `-X
    /// consumer.session.timeout.ms=6000` reaches the consumers without
    /// librdkafka warning on every producer that it ignores a consumer
    /// property.
    fn scoped_config(&self, scope: Option<&str>) -> Result<ClientConfig, LiveError> {
        let mut c = ClientConfig::new();
        let set = |c: &mut ClientConfig, k: &str, v: &str| {
            let k = match [SCOPE_CONSUMER, SCOPE_PRODUCER]
                .into_iter()
                .find_map(|p| k.strip_prefix(p).map(|rest| (p, rest)))
            {
                Some((p, rest)) if scope == Some(p) => rest,
                Some(_) => return,
                None => k,
            };
            c.set(k, v);
        };
        c.set("bootstrap.servers", &self.brokers);
        c.set_log_level(RDKafkaLogLevel::Warning);
        let mut env: Vec<(String, String)> = std::env::vars()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix("SELFHEAL_KAFKA_")?;
                Some((name.to_ascii_lowercase().replace('_', "."), v))
            })
            .collect();
        env.sort();
        if let Some(file) = FILE_SETTINGS.get() {
            for (k, v) in file {
                set(&mut c, k, v);
            }
        }
        for (k, v) in env {
            set(&mut c, &k, &v);
        }
        for (i, s) in self.settings.iter().enumerate() {
            let (k, v) = s
                .split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .ok_or(LiveError::BadSetting(i + 1))?;
            set(&mut c, k.trim(), v.trim());
        }
        if c.get("debug").is_some() {
            // librdkafka's debug contexts log at debug level: let them
            // through (target `librdkafka`).
            c.set_log_level(RDKafkaLogLevel::Debug);
        }
        Ok(c)
    }
}

/// The prefix of a pass-through setting for consumers only
/// (`consumer.session.timeout.ms`).
pub const SCOPE_CONSUMER: &str = "consumer.";
/// The prefix of a pass-through setting for producers only
/// (`producer.linger.ms`).
pub const SCOPE_PRODUCER: &str = "producer.";

static FILE_SETTINGS: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

/// Sets the librdkafka settings of the config file: every client config
/// starts from them, then `SELFHEAL_KAFKA_<NAME>` variables and `-X`
/// flags override them key by key. Only the first call counts.
pub fn set_file_settings(settings: Vec<(String, String)>) {
    let _ = FILE_SETTINGS.set(settings);
}

/// Client context that reports librdkafka's errors through `tracing` and
/// remembers whether the broker is reachable: down on `AllBrokersDown` or
/// a transport failure, up again when a record arrives or the client's
/// statistics (`statistics.interval.ms`) show a broker connection up.
#[derive(Default, Clone)]
pub struct Health {
    inner: Arc<HealthInner>,
}

// 0: no connection seen yet.
const BROKER_UP: u8 = 1;
const BROKER_DOWN: u8 = 2;

#[derive(Default)]
struct HealthInner {
    broker: AtomicU8,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Health {
    /// False once the broker was found unreachable, until it is back.
    pub fn broker_reachable(&self) -> bool {
        self.inner.broker.load(Ordering::Relaxed) != BROKER_DOWN
    }

    /// True once a broker connection was seen up, until it goes down.
    pub fn broker_up(&self) -> bool {
        self.inner.broker.load(Ordering::Relaxed) == BROKER_UP
    }

    pub fn last_error(&self) -> Option<String> {
        self.inner.last_error.lock().ok().and_then(|g| g.clone())
    }

    pub fn errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_up(&self) {
        self.inner.broker.store(BROKER_UP, Ordering::Relaxed);
    }

    /// Takes the broker state from a client's statistics: up when a broker
    /// connection is up, down when brokers are known and none is.
    pub fn observe_stats(&self, stats: &rdkafka::Statistics) {
        // Bootstrap and learned brokers; not the internal or logical ones.
        let brokers = stats
            .brokers
            .values()
            .filter(|b| matches!(b.source.as_str(), "configured" | "learned"));
        let (mut known, mut up) = (false, false);
        for b in brokers {
            known = true;
            up |= b.state == "UP";
        }
        if up {
            self.mark_up();
        } else if known {
            self.inner.broker.store(BROKER_DOWN, Ordering::Relaxed);
        }
    }
}

impl ClientContext for Health {
    fn error(&self, error: KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode as C;
        // The end of a partition, which a reader asked to be told of,
        // comes as a partition error or as a global one.
        if matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(C::PartitionEOF)
        {
            return;
        }
        self.inner.errors.fetch_add(1, Ordering::Relaxed);
        if matches!(
            error.rdkafka_error_code(),
            Some(C::AllBrokersDown) | Some(C::BrokerTransportFailure)
        ) {
            self.inner.broker.store(BROKER_DOWN, Ordering::Relaxed);
        }
        if let Ok(mut g) = self.inner.last_error.lock() {
            *g = Some(format!("{error}: {reason}"));
        }
        tracing::warn!(%error, reason, "kafka client error");
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        self.observe_stats(&statistics);
    }
}

impl rdkafka::consumer::ConsumerContext for Health {}

/// Checks that every topic exists and that the input topics (and the
/// topics written per partition) share one partition count, which is
/// returned.
pub fn check_topics<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topics: &Topics,
    brokers: &str,
    also: &[&str],
) -> Result<usize, LiveError> {
    let md = client
        .fetch_metadata(None, StdDuration::from_secs(10))
        .map_err(LiveError::kafka(format!(
            "fetching metadata from {brokers}"
        )))?;
    let count = |name: &str| {
        md.topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none())
            .map(|t| t.partitions().len())
            .filter(|n| *n > 0)
            .ok_or_else(|| LiveError::MissingTopic {
                topic: name.to_string(),
                brokers: brokers.to_string(),
            })
    };
    let first = topics.metrics.as_str();
    let n = count(first)?;
    for t in topics.inputs().into_iter().chain(also.iter().copied()) {
        let m = count(t)?;
        if m != n {
            return Err(LiveError::PartitionMismatch {
                a: first.to_string(),
                na: n,
                b: t.to_string(),
                nb: m,
            });
        }
    }
    Ok(n)
}

/// Creates every topic with `partitions` partitions (existing ones are
/// left as they are), through the admin API.
pub async fn create_topics(args: &KafkaArgs, partitions: i32) -> Result<(), LiveError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = args
        .client_config()?
        .create()
        .map_err(LiveError::kafka("creating the admin client"))?;
    let topics = args.topics();
    // Ask only for the missing ones: a broker without the CreateTopics API
    // (librdkafka's mock cluster, see `selfheal broker`) is then fine once
    // its topics exist.
    let existing: std::collections::HashSet<String> = {
        // A short blocking call; this runs once, before any work.
        let md = admin
            .inner()
            .fetch_metadata(None, StdDuration::from_secs(10))
            .map_err(LiveError::kafka("reading the broker's topics"))?;
        md.topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.name().to_string())
            .collect()
    };
    let names: Vec<&str> = topics
        .all()
        .into_iter()
        .filter(|n| !existing.contains(*n))
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    let res = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(StdDuration::from_secs(10))),
        )
        .await
        .map_err(LiveError::kafka("creating topics"))?;
    for r in res {
        if let Err((name, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                return Err(LiveError::Other(format!("creating topic {name}: {code}")));
            }
        }
    }
    Ok(())
}

/// Serves the delivery reports (and errors) already queued for
/// `producer`, without waiting, up to 256 events a call.
///
/// `BaseProducer::poll(Duration::ZERO)` serves at most one event, and one
/// event reports one batch: a loop that sends to several topics or
/// partitions between two such calls gets reports faster than it serves
/// them. Each report left queued holds its messages, so the process's
/// memory grows with the backlog for as long as the loop runs.
pub fn serve_deliveries<C>(producer: &rdkafka::producer::BaseProducer<C>)
where
    C: rdkafka::producer::ProducerContext,
{
    use rdkafka::producer::Producer;
    for _ in 0..256 {
        // Messages not yet reported plus events queued: a call that
        // served an event lowers it, one that found none leaves it.
        let before = producer.in_flight_count();
        if before == 0 {
            return;
        }
        producer.poll(StdDuration::ZERO);
        if producer.in_flight_count() == before {
            return;
        }
    }
}

/// Waits until every message produced so far is delivered or failed,
/// serving the delivery reports. `Producer::flush` of the rdkafka crate
/// waits in polls that always last their whole step (up to 100 ms); this
/// one sends at once and returns within about a millisecond of the last
/// delivery, which is what keeps the engine's batch commits short.
/// `waiting` is called on each turn of the wait (the engine beats its
/// heartbeat there: a loop waiting out a broker outage is alive).
pub fn flush_producer<C>(
    producer: &rdkafka::producer::BaseProducer<C>,
    timeout: StdDuration,
    waiting: &dyn Fn(),
) -> Result<(), KafkaError>
where
    C: rdkafka::producer::ProducerContext,
{
    use rdkafka::producer::Producer;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        waiting();
        serve_deliveries(producer);
        if producer.in_flight_count() == 0 {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(KafkaError::Flush(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        // Sends whatever lingers and waits up to 1 ms for deliveries.
        // SAFETY: the producer's handle is valid while `producer` lives.
        unsafe {
            rdkafka::bindings::rd_kafka_flush(producer.client().native_ptr(), 1);
        }
    }
}

/// Milliseconds since the Unix epoch, from the wall clock.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the delivery reports served.
    #[derive(Default)]
    struct Reports(AtomicU64);

    impl ClientContext for Reports {}

    impl rdkafka::producer::ProducerContext for Reports {
        type DeliveryOpaque = ();
        fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn serve_deliveries_serves_every_queued_report_not_one() {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
        cluster.create_topic("t", 8, 1).unwrap();
        let producer: BaseProducer<Reports> = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("linger.ms", "0")
            .create_with_context(Reports::default())
            .unwrap();
        // One message a partition: eight requests, eight reports.
        for p in 0..8 {
            producer
                .send(BaseRecord::<str, str>::to("t").partition(p).payload("x"))
                .unwrap();
        }
        // A queued report counts once for its message and once as an
        // event: 16 once every partition has answered.
        let deadline = std::time::Instant::now() + StdDuration::from_secs(30);
        while producer.in_flight_count() < 16 {
            assert!(std::time::Instant::now() < deadline, "no deliveries");
            std::thread::sleep(StdDuration::from_millis(5));
        }
        producer.poll(StdDuration::ZERO);
        let one = producer.context().0.load(Ordering::Relaxed);
        assert!(one < 8, "poll(ZERO) served {one} reports");
        serve_deliveries(&producer);
        assert_eq!(producer.context().0.load(Ordering::Relaxed), 8);
        assert_eq!(producer.in_flight_count(), 0);
    }

    /// A journal read that meets a broker down for two seconds waits for
    /// it and reads every record, where it used to fail on the first
    /// `AllBrokersDown` and restart the engine.
    #[test]
    fn a_read_to_the_end_rides_out_a_broker_down_for_a_moment() {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
        cluster.create_topic("j", 1, 1).unwrap();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .unwrap();
        for i in 0..20 {
            producer
                .send(BaseRecord::<str, str>::to("j").payload(&i.to_string()))
                .unwrap();
        }
        producer.flush(StdDuration::from_secs(10)).unwrap();
        let reader: BaseConsumer<Health> = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "r")
            .set("enable.partition.eof", "true")
            .set("reconnect.backoff.max.ms", "200")
            .create_with_context(Health::default())
            .unwrap();
        cluster.broker_down(1).unwrap();
        let mut seen = Vec::new();
        let span = std::thread::scope(|s| {
            let read = s.spawn(|| {
                read_to_end(
                    &reader,
                    "j",
                    0,
                    StdDuration::from_secs(30),
                    |next, end| LiveError::Other(format!("late at {next} of {end}")),
                    |m| {
                        use rdkafka::Message;
                        seen.push(m.offset());
                        Ok(())
                    },
                )
            });
            std::thread::sleep(StdDuration::from_secs(2));
            cluster.broker_up(1).unwrap();
            read.join().unwrap()
        })
        .unwrap();
        assert_eq!(seen, (0..20).collect::<Vec<i64>>());
        assert_eq!(span.end, 20);
        assert!(
            reader.context().errors() > 0,
            "the broker was never seen down: the test tests nothing"
        );
    }

    /// Every consumer gets selfheal's fetch defaults; a `-X` setting of
    /// the same name wins over them.
    #[test]
    fn consumer_defaults_yield_to_pass_through_settings() {
        let mut args = KafkaArgs::local("127.0.0.1:9092");
        let c = args.consumer_config().unwrap();
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(c.get("fetch.wait.max.ms"), Some("100"));
        assert_eq!(
            args.producer_config()
                .unwrap()
                .get("fetch.queue.backoff.ms"),
            None
        );

        args.settings = vec![
            "fetch.queue.backoff.ms=250".into(),
            "fetch.wait.max.ms = 5".into(),
        ];
        let c = args.consumer_config().unwrap();
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("250"));
        assert_eq!(c.get("fetch.wait.max.ms"), Some("5"));
    }

    #[test]
    fn a_debug_setting_lets_librdkafka_debug_logs_through() {
        let mut args = KafkaArgs::local("127.0.0.1:9092");
        let level = |c: ClientConfig| c.log_level;
        assert!(matches!(
            level(args.consumer_config().unwrap()),
            RDKafkaLogLevel::Warning
        ));
        args.settings = vec!["consumer.debug=fetch".into()];
        assert!(matches!(
            level(args.consumer_config().unwrap()),
            RDKafkaLogLevel::Debug
        ));
        assert!(matches!(
            level(args.producer_config().unwrap()),
            RDKafkaLogLevel::Warning
        ));
    }

    #[test]
    fn scoped_settings_reach_their_clients_only() {
        let mut args = KafkaArgs::local("127.0.0.1:9092");
        args.settings = vec![
            "consumer.session.timeout.ms=6000".into(),
            "producer.linger.ms=7".into(),
            "client.rack=r1".into(),
        ];
        let (c, p, a) = (
            args.consumer_config().unwrap(),
            args.producer_config().unwrap(),
            args.client_config().unwrap(),
        );
        assert_eq!(c.get("session.timeout.ms"), Some("6000"));
        assert_eq!(c.get("linger.ms"), None);
        assert_eq!(p.get("linger.ms"), Some("7"));
        assert_eq!(p.get("session.timeout.ms"), None);
        assert_eq!(
            (a.get("linger.ms"), a.get("session.timeout.ms")),
            (None, None)
        );
        for cfg in [&c, &p, &a] {
            assert_eq!(cfg.get("client.rack"), Some("r1"));
            assert_eq!(cfg.get("consumer.session.timeout.ms"), None);
            assert_eq!(cfg.get("producer.linger.ms"), None);
        }
        // Settings apply in order: the later one wins for the clients
        // both reach.
        args.settings = vec![
            "session.timeout.ms=9000".into(),
            "consumer.session.timeout.ms=6000".into(),
        ];
        let c = args.consumer_config().unwrap();
        assert_eq!(c.get("session.timeout.ms"), Some("6000"));
    }
}
