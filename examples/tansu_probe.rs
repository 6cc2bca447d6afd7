//! Kafka compatibility probe: what a broker (Tansu, Apache Kafka, rdkafka's
//! mock cluster) does with the client features the engine relies on.
//!
//! ```text
//! cargo run --example tansu_probe -- 127.0.0.1:9092          # a running broker
//! cargo run --example tansu_probe -- --mock                  # rdkafka's mock cluster
//! cargo run --example tansu_probe -- 127.0.0.1:9092 --only 2,3
//! cargo run --example tansu_probe -- 127.0.0.1:9092 --persist write   # then restart the broker
//! cargo run --example tansu_probe -- 127.0.0.1:9092 --persist read
//! ```
//!
//! Sections (numbered as in the compatibility report, `--only` picks some):
//! 1 keys/headers/CreateTime, 2 idempotence and transactions, 3 consumer
//! groups, commits, read_committed, 4 watermarks, assign+seek,
//! offsets_for_times, 5 admin create_topics, 6 partitioners, 7 sizes and
//! compression, 8 latency, 9 metadata and anything else.
//!
//! The probe creates its own topics `probe.<run>.*` (admin API, falling back
//! to `tansu topic create` when the broker refuses) and leaves them; `--cleanup`
//! deletes them one by one and stops if other topics vanish too (Tansu 0.6
//! with sqlite storage deletes every topic on any DeleteTopics).
//! `PROBE_DEBUG=broker,protocol` sets librdkafka's `debug`; librdkafka
//! warnings and errors are printed on stderr as `[client log ...]`.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, Timestamp};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::get_rdkafka_version;
use tokio::runtime::Runtime;

/// Client context: prints librdkafka's warnings and errors with the client's tag.
struct Ctx(&'static str);

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let shown = matches!(
            level,
            RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error
                | RDKafkaLogLevel::Warning
        ) || std::env::var_os("PROBE_DEBUG").is_some();
        if shown {
            eprintln!("    [{} log {level:?} {fac}] {message}", self.0);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("    [{} error] {error}: {reason}", self.0);
    }
}

impl ConsumerContext for Ctx {}

type Producer_ = FutureProducer<Ctx>;
type Consumer_ = BaseConsumer<Ctx>;

/// A consumed record, detached.
struct Rec {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    ts: Timestamp,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

struct Probe {
    brokers: String,
    mock: bool,
    rt: Runtime,
    run: String,
    /// Base CreateTime of the records produced in section 1.
    base_ts: i64,
    /// Topics created by this run, with their partition count.
    topics: Vec<(String, i32)>,
    /// `--mock`: rdkafka's in-process mock cluster (its CreateTopics does not
    /// answer the admin client, so topics are created through it).
    cluster: Option<MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Kafka's (Java client) murmur2, to compare with the partitioners.
fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka API keys by name, for the ApiVersions listing.
const API_NAMES: &[(i16, &str)] = &[
    (0, "Produce"),
    (1, "Fetch"),
    (2, "ListOffsets"),
    (3, "Metadata"),
    (8, "OffsetCommit"),
    (9, "OffsetFetch"),
    (10, "FindCoordinator"),
    (11, "JoinGroup"),
    (12, "Heartbeat"),
    (13, "LeaveGroup"),
    (14, "SyncGroup"),
    (15, "DescribeGroups"),
    (16, "ListGroups"),
    (17, "SaslHandshake"),
    (18, "ApiVersions"),
    (19, "CreateTopics"),
    (20, "DeleteTopics"),
    (21, "DeleteRecords"),
    (22, "InitProducerId"),
    (23, "OffsetForLeaderEpoch"),
    (24, "AddPartitionsToTxn"),
    (25, "AddOffsetsToTxn"),
    (26, "EndTxn"),
    (27, "WriteTxnMarkers"),
    (28, "TxnOffsetCommit"),
    (29, "DescribeAcls"),
    (30, "CreateAcls"),
    (31, "DeleteAcls"),
    (32, "DescribeConfigs"),
    (33, "AlterConfigs"),
    (36, "SaslAuthenticate"),
    (37, "CreatePartitions"),
    (42, "DeleteGroups"),
    (44, "IncrementalAlterConfigs"),
    (47, "OffsetDelete"),
    (50, "DescribeUserScramCredentials"),
    (51, "AlterUserScramCredentials"),
    (60, "DescribeCluster"),
    (61, "DescribeProducers"),
    (65, "DescribeTransactions"),
    (66, "ListTransactions"),
    (68, "ConsumerGroupHeartbeat"),
    (69, "ConsumerGroupDescribe"),
    (71, "GetTelemetrySubscriptions"),
    (72, "PushTelemetry"),
    (75, "DescribeTopicPartitions"),
];

fn api_name(key: i16) -> String {
    API_NAMES
        .iter()
        .find(|(k, _)| *k == key)
        .map_or_else(|| format!("api{key}"), |(_, n)| (*n).to_string())
}

/// A raw ApiVersions v0 request: which API keys (and versions) the broker
/// announces. librdkafka does the same at connect time but does not expose it;
/// a start-up check can use this to see, e.g., whether EndTxn (26) exists.
fn api_versions(addr: &str) -> Result<Vec<(i16, i16, i16)>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let client = b"tansu_probe";
    let mut req = Vec::new();
    req.extend(18i16.to_be_bytes()); // api key ApiVersions
    req.extend(0i16.to_be_bytes()); // version 0
    req.extend(42i32.to_be_bytes()); // correlation id
    req.extend((client.len() as i16).to_be_bytes());
    req.extend(client);
    s.write_all(&(req.len() as i32).to_be_bytes())?;
    s.write_all(&req)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf)?;
    let i16_at = |o: usize| i16::from_be_bytes([buf[o], buf[o + 1]]);
    let error = i16_at(4);
    if error != 0 {
        bail!("ApiVersions error code {error}");
    }
    let n = i32::from_be_bytes([buf[6], buf[7], buf[8], buf[9]]) as usize;
    Ok((0..n)
        .map(|i| {
            let o = 10 + i * 6;
            (i16_at(o), i16_at(o + 2), i16_at(o + 4))
        })
        .collect())
}

fn describe_err(e: &KafkaError) -> String {
    match e {
        KafkaError::Transaction(r) => format!(
            "{e} [code={:?} fatal={} retriable={} txn_requires_abort={}]",
            r.code(),
            r.is_fatal(),
            r.is_retriable(),
            r.txn_requires_abort()
        ),
        other => match other.rdkafka_error_code() {
            Some(code) => format!("{other} [code={code:?}]"),
            None => format!("{other}"),
        },
    }
}

fn headers_of(m: &impl Message) -> Vec<(String, Option<Vec<u8>>)> {
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
}

impl Probe {
    fn config(&self, extra: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        if let Ok(debug) = std::env::var("PROBE_DEBUG") {
            c.set("debug", debug);
        }
        for (k, v) in extra {
            c.set(*k, *v);
        }
        c
    }

    fn producer(&self, tag: &'static str, extra: &[(&str, &str)]) -> Result<Producer_> {
        let mut base = vec![("linger.ms", "0"), ("message.timeout.ms", "15000")];
        base.extend_from_slice(extra);
        self.config(&base)
            .create_with_context(Ctx(tag))
            .with_context(|| format!("creating producer {tag} {extra:?}"))
    }

    /// A consumer; `assign` in librdkafka needs a `group.id` even without
    /// group membership (else "Local: Unknown group"), so one is always set.
    fn consumer(&self, tag: &'static str, extra: &[(&str, &str)]) -> Result<Consumer_> {
        let group = format!("probe.{}.assign", self.run);
        let mut base = vec![
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "1000"),
        ];
        base.extend_from_slice(extra);
        self.config(&base)
            .create_with_context(Ctx(tag))
            .with_context(|| format!("creating consumer {tag} {extra:?}"))
    }

    fn admin(&self) -> Result<AdminClient<DefaultClientContext>> {
        self.config(&[]).create().context("creating admin client")
    }

    fn send<K, P>(&self, p: &Producer_, rec: FutureRecord<'_, K, P>) -> Result<Delivery, KafkaError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        self.rt
            .block_on(p.send(rec, Duration::from_secs(15)))
            .map_err(|(e, _)| e)
    }

    fn topic(&self, suffix: &str) -> String {
        format!("probe.{}.{suffix}", self.run)
    }

    /// Reads up to `n` messages (or until `timeout`).
    fn read(&self, c: &Consumer_, n: usize, timeout: Duration) -> Vec<Rec> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < deadline {
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => out.push(Rec {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                    ts: m.timestamp(),
                    headers: headers_of(&m),
                }),
                Some(Err(e)) => println!("    consume error: {}", describe_err(&e)),
                None => {}
            }
        }
        out
    }

    fn assign_at(&self, c: &Consumer_, topic: &str, partition: i32, offset: Offset) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, offset)?;
        c.assign(&tpl)?;
        Ok(())
    }

    // ---------------------------------------------------------------- 5
    fn s5_admin(&mut self) -> Result<()> {
        let wanted: Vec<(String, i32)> = vec![
            (self.topic("a"), 3),
            (self.topic("b"), 3),
            (self.topic("c"), 1),
            (self.topic("d"), 1),
            (self.topic("e"), 1),
        ];
        if let Some(cluster) = &self.cluster {
            for (name, parts) in &wanted {
                cluster.create_topic(name, *parts, 1)?;
            }
            println!("  mock cluster: topics created with MockCluster::create_topic");
            self.topics.extend(wanted);
            return Ok(());
        }
        let admin = self.admin()?;
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(Duration::from_secs(15)));
        let new: Vec<NewTopic<'_>> = wanted
            .iter()
            .map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(1)))
            .collect();
        let t0 = Instant::now();
        let res = self.rt.block_on(admin.create_topics(&new, &opts));
        println!(
            "  create_topics({} topics) took {}",
            new.len(),
            ms(t0.elapsed())
        );
        let mut missing = Vec::new();
        match res {
            Ok(results) => {
                for r in results {
                    match r {
                        Ok(name) => println!("    created {name}"),
                        Err((name, code)) => {
                            println!("    {name}: error {code:?}");
                            missing.push(name);
                        }
                    }
                }
            }
            Err(e) => {
                println!("    create_topics failed: {}", describe_err(&e));
                missing = wanted.iter().map(|(n, _)| n.clone()).collect();
            }
        }
        // Replication factor -1 (broker default), as Kafka >= 2.4 allows.
        let t = self.topic("rf");
        let res = self.rt.block_on(
            admin.create_topics(&[NewTopic::new(&t, 1, TopicReplication::Fixed(-1))], &opts),
        );
        println!("  create with replication_factor=-1: {res:?}");
        if res.as_ref().is_ok_and(|v| v.iter().all(|r| r.is_ok())) {
            self.topics.push((t, 1));
        }
        // Creating an existing topic again: what the engine sees.
        let again = self.rt.block_on(admin.create_topics(&new[..1], &opts));
        println!("  create an existing topic again: {again:?}");
        // Topic config: retention.ms as a creation config.
        let t = self.topic("cfg");
        let with_cfg = NewTopic::new(&t, 1, TopicReplication::Fixed(1))
            .set("retention.ms", "3600000")
            .set("cleanup.policy", "delete");
        let res = self.rt.block_on(admin.create_topics(&[with_cfg], &opts));
        println!("  create with configs (retention.ms, cleanup.policy): {res:?}");
        if res.as_ref().is_ok_and(|v| v.iter().all(|r| r.is_ok())) {
            self.topics.push((t.clone(), 1));
            let d = self.rt.block_on(
                admin.describe_configs(&[ResourceSpecifier::Topic(&t)], &AdminOptions::new()),
            );
            match d {
                Ok(v) => {
                    for r in v {
                        match r {
                            Ok(cfg) => {
                                let m = cfg.entry_map();
                                println!(
                                    "  describe_configs: {} entries; retention.ms={:?} cleanup.policy={:?}",
                                    m.len(),
                                    m.get("retention.ms").and_then(|e| e.value.clone()),
                                    m.get("cleanup.policy").and_then(|e| e.value.clone())
                                );
                            }
                            Err(e) => println!("  describe_configs: error {e:?}"),
                        }
                    }
                }
                Err(e) => println!("  describe_configs failed: {}", describe_err(&e)),
            }
        }
        if !missing.is_empty() && !self.mock {
            println!("  falling back to `tansu topic create` for {missing:?}");
            for name in &missing {
                let parts = wanted
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(1, |(_, p)| *p);
                let out = Command::new("tansu")
                    .args(["topic", "create", name, "--broker"])
                    .arg(format!("tcp://{}", self.brokers))
                    .args(["--partitions", &parts.to_string()])
                    .output()
                    .context("running tansu topic create")?;
                println!("    tansu topic create {name}: {}", out.status);
            }
        }
        self.topics.extend(wanted);
        // How long until metadata shows the new topic with its partitions.
        let c = self.consumer("meta", &[])?;
        let a = self.topic("a");
        let t0 = Instant::now();
        loop {
            let md = c.fetch_metadata(Some(&a), Duration::from_secs(5));
            let parts = md.as_ref().ok().and_then(|m| {
                m.topics()
                    .first()
                    .map(|t| (t.partitions().len(), t.error()))
            });
            if let Some((n, None)) = parts {
                if n > 0 {
                    println!(
                        "  metadata shows {a} with {n} partitions after {}",
                        ms(t0.elapsed())
                    );
                    break;
                }
            }
            if t0.elapsed() > Duration::from_secs(15) {
                bail!("metadata does not show {a}: {parts:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    // ---------------------------------------------------------------- 1
    fn s1_records(&self) -> Result<()> {
        let t = self.topic("a");
        let p = self.producer("p1", &[])?;
        for i in 0..5i64 {
            let key = format!("k{i}");
            let payload = format!("v{i}");
            let trace = format!("trace-{i}");
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "trace-id",
                    value: Some(trace.as_str()),
                })
                .insert(Header {
                    key: "bin",
                    value: Some(&[0u8, 255, 1][..]),
                })
                .insert(Header {
                    key: "null",
                    value: None::<&str>,
                })
                .insert(Header {
                    key: "trace-id",
                    value: Some("dup"),
                });
            let rec = FutureRecord::to(&t)
                .partition(0)
                .key(&key)
                .payload(&payload)
                .timestamp(self.base_ts + i * 1000)
                .headers(headers);
            let d = self.send(&p, rec)?;
            println!(
                "  sent k{i}: partition {} offset {} timestamp {:?}",
                d.partition, d.offset, d.timestamp
            );
        }
        // One record without an explicit timestamp and without a key.
        let before = now_ms();
        let d = self.send(
            &p,
            FutureRecord::<str, str>::to(&t)
                .partition(0)
                .payload("no-ts"),
        )?;
        println!(
            "  sent no-key/no-ts: offset {} timestamp {:?}",
            d.offset, d.timestamp
        );

        let c = self.consumer("c1", &[])?;
        self.assign_at(&c, &t, 0, Offset::Beginning)?;
        let got = self.read(&c, 6, Duration::from_secs(10));
        println!("  consumed {} of 6", got.len());
        for (i, r) in got.iter().enumerate() {
            let (off, key, payload, ts, hdrs) = (r.offset, &r.key, &r.payload, &r.ts, &r.headers);
            let key = key.as_deref().map(String::from_utf8_lossy);
            let payload = payload.as_deref().map(String::from_utf8_lossy);
            println!("    offset {off} key {key:?} payload {payload:?} ts {ts:?} headers {hdrs:?}");
            if i < 5 {
                let want = self.base_ts + i as i64 * 1000;
                let ok = *ts == Timestamp::CreateTime(want);
                let want_h = vec![
                    (
                        "trace-id".to_string(),
                        Some(format!("trace-{i}").into_bytes()),
                    ),
                    ("bin".to_string(), Some(vec![0u8, 255, 1])),
                    ("null".to_string(), None),
                    ("trace-id".to_string(), Some(b"dup".to_vec())),
                ];
                println!(
                    "      timestamp preserved as CreateTime: {ok}; headers preserved (order, dup, null, binary): {}",
                    *hdrs == want_h
                );
            } else if let Timestamp::CreateTime(v) = ts {
                println!(
                    "      no-ts record got CreateTime {} ms after send",
                    v - before
                );
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- 4
    fn s4_offsets(&self) -> Result<()> {
        let t = self.topic("a");
        let c = self.consumer("c4", &[])?;
        for part in 0..3 {
            match c.fetch_watermarks(&t, part, Duration::from_secs(5)) {
                Ok((lo, hi)) => println!("  fetch_watermarks {t}[{part}] = low {lo}, high {hi}"),
                Err(e) => println!("  fetch_watermarks {t}[{part}]: {}", describe_err(&e)),
            }
        }
        self.assign_at(&c, &t, 0, Offset::Offset(2))?;
        let got = self.read(&c, 1, Duration::from_secs(10));
        println!(
            "  assign at offset 2 (group.id set, no subscribe) -> first offset read {:?}",
            got.first().map(|m| m.offset)
        );
        let got = self.read(&c, 1, Duration::from_secs(5));
        println!("  next read {:?}", got.first().map(|m| m.offset));
        match c.seek(&t, 0, Offset::Offset(1), Duration::from_secs(5)) {
            Ok(()) => {
                let got = self.read(&c, 1, Duration::from_secs(10));
                println!("  seek to 1 -> read {:?}", got.first().map(|m| m.offset));
            }
            Err(e) => println!("  seek: {}", describe_err(&e)),
        }
        match c.seek(&t, 0, Offset::End, Duration::from_secs(5)) {
            Ok(()) => {
                let got = self.read(&c, 1, Duration::from_secs(2));
                println!(
                    "  seek to End -> read {:?} (None expected)",
                    got.first().map(|m| m.offset)
                );
            }
            Err(e) => println!("  seek End: {}", describe_err(&e)),
        }
        // position() after reading.
        println!("  position: {:?}", c.position().map(|p| p.to_topic_map()));
        for (label, ts) in [
            ("CreateTime of record 2 (want 2)", self.base_ts + 2000),
            ("between records 2 and 3 (want 3)", self.base_ts + 2500),
            ("before all (want 0)", self.base_ts - 3_600_000),
            ("after all (want End/-1)", now_ms() + 3_600_000),
        ] {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&t, 0, Offset::Offset(ts))?;
            match c.offsets_for_times(tpl, Duration::from_secs(5)) {
                Ok(r) => {
                    let e = r.elements();
                    println!(
                        "  offsets_for_times {label}: {:?} {:?}",
                        e.first().map(|e| e.offset()),
                        e.first().map(|e| e.error())
                    );
                }
                Err(e) => println!("  offsets_for_times {label}: {}", describe_err(&e)),
            }
        }
        // ListOffsets for an empty partition and earliest/latest via tpl.
        Ok(())
    }

    // ---------------------------------------------------------------- 6
    fn s6_partitioner(&self) -> Result<()> {
        let t = self.topic("a");
        for key in ["checkout", "payments", "search"] {
            let java = (murmur2(key.as_bytes()) & 0x7fff_ffff) % 3;
            let mut line = format!("  key {key:?}: Java murmur2 -> {java}");
            for part in [
                "consistent_random",
                "murmur2_random",
                "murmur2",
                "fnv1a_random",
            ] {
                let p = self.producer("p6", &[("partitioner", part)])?;
                let d = self.send(&p, FutureRecord::to(&t).key(key).payload("x"))?;
                line.push_str(&format!(", {part} -> {}", d.partition));
            }
            println!("{line}");
        }
        Ok(())
    }

    // ---------------------------------------------------------------- 2
    fn s2_transactions(&self) -> Result<()> {
        let t = self.topic("b");
        let t0 = Instant::now();
        let p = self.producer("idem", &[("enable.idempotence", "true")])?;
        let mut offsets = Vec::new();
        for i in 0..5 {
            match self.send(
                &p,
                FutureRecord::to(&t)
                    .partition(1)
                    .key("idem")
                    .payload(&format!("{i}")),
            ) {
                Ok(d) => offsets.push(d.offset),
                Err(e) => {
                    println!("  idempotent send {i}: {}", describe_err(&e));
                    break;
                }
            }
        }
        println!(
            "  idempotent producer: {} of 5 delivered, offsets {offsets:?}, {}",
            offsets.len(),
            ms(t0.elapsed())
        );
        drop(p);

        let txid = format!("probe-{}-tx", self.run);
        let p = self.producer(
            "tx",
            &[
                ("transactional.id", txid.as_str()),
                ("transaction.timeout.ms", "10000"),
                ("message.timeout.ms", "10000"),
            ],
        )?;
        let t0 = Instant::now();
        let init = p.init_transactions(Duration::from_secs(10));
        println!(
            "  init_transactions(10s): {} after {}",
            match &init {
                Ok(()) => "Ok".to_string(),
                Err(e) => describe_err(e),
            },
            ms(t0.elapsed())
        );
        if init.is_err() {
            // Shorter timeout: how quickly a start-up check can conclude.
            drop(p);
            let p = self.producer("tx2", &[("transactional.id", &format!("{txid}-2"))])?;
            let t0 = Instant::now();
            let r = p.init_transactions(Duration::from_secs(3));
            println!(
                "  init_transactions(3s) on a fresh producer: {} after {}",
                r.as_ref().map_or_else(describe_err, |_| "Ok".into()),
                ms(t0.elapsed())
            );
            return Ok(());
        }
        // Commit one record, abort another, then read both isolation levels.
        let mut fenced = false;
        for (payload, commit) in [("committed", true), ("aborted", false)] {
            if let Err(e) = p.begin_transaction() {
                println!("  begin_transaction: {}", describe_err(&e));
                fenced = true;
                break;
            }
            let d = self.send(
                &p,
                FutureRecord::to(&t).partition(2).key("tx").payload(payload),
            );
            println!(
                "  in-transaction send {payload:?}: {}",
                d.map_or_else(|e| describe_err(&e), |d| format!("offset {}", d.offset))
            );
            let t0 = Instant::now();
            let (what, r) = if commit {
                (
                    "commit_transaction",
                    p.commit_transaction(Duration::from_secs(10)),
                )
            } else {
                (
                    "abort_transaction",
                    p.abort_transaction(Duration::from_secs(10)),
                )
            };
            println!(
                "  {what}: {} after {}",
                r.as_ref().map_or_else(describe_err, |_| "Ok".into()),
                ms(t0.elapsed())
            );
            if r.is_err() {
                let t0 = Instant::now();
                let r = p.abort_transaction(Duration::from_secs(5));
                println!(
                    "  abort_transaction after the failure: {} after {}",
                    r.as_ref().map_or_else(describe_err, |_| "Ok".into()),
                    ms(t0.elapsed())
                );
                if r.is_err() {
                    fenced = true;
                    break;
                }
            }
        }
        if fenced {
            println!("  (the transactional producer is unusable from here)");
        }
        drop(p);
        for level in ["read_committed", "read_uncommitted"] {
            let c = self.consumer("c2", &[("isolation.level", level)])?;
            self.assign_at(&c, &t, 2, Offset::Beginning)?;
            let got = self.read(&c, 2, Duration::from_secs(3));
            let payloads: Vec<_> = got
                .iter()
                .map(|m| {
                    String::from_utf8_lossy(m.payload.as_deref().unwrap_or_default()).to_string()
                })
                .collect();
            println!("  consumer isolation.level={level} sees: {payloads:?}");
            let (lo, hi) = c.fetch_watermarks(&t, 2, Duration::from_secs(5))?;
            println!("    watermarks low {lo} high {hi}");
        }
        if fenced {
            // Does the open transaction ever end? After transaction.timeout.ms,
            // and after a new producer with the same transactional.id.
            let seen = |when: &str| -> Result<()> {
                let c = self.consumer("c2b", &[("isolation.level", "read_committed")])?;
                self.assign_at(&c, &t, 2, Offset::Beginning)?;
                let got = self.read(&c, 1, Duration::from_secs(3));
                let (_, hi) = c.fetch_watermarks(&t, 2, Duration::from_secs(5))?;
                println!(
                    "  {when}: read_committed reads {} record(s), high watermark {hi}",
                    got.len()
                );
                Ok(())
            };
            std::thread::sleep(Duration::from_secs(12));
            seen("12 s later (transaction.timeout.ms=10000)")?;
            let p = self.producer(
                "tx3",
                &[
                    ("transactional.id", txid.as_str()),
                    ("message.timeout.ms", "10000"),
                ],
            )?;
            let r = p.init_transactions(Duration::from_secs(10));
            println!(
                "  init_transactions with the same transactional.id: {}",
                r.as_ref().map_or_else(describe_err, |_| "Ok".into())
            );
            seen("after that")?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- 3
    fn wait_assigned(
        &self,
        cs: &[&Consumer_],
        total: usize,
        timeout: Duration,
    ) -> Vec<BTreeSet<(String, i32)>> {
        let deadline = Instant::now() + timeout;
        loop {
            for c in cs {
                let _ = c.poll(Duration::from_millis(50));
            }
            let sets: Vec<BTreeSet<(String, i32)>> = cs
                .iter()
                .map(|c| {
                    c.assignment()
                        .map(|a| {
                            a.elements()
                                .iter()
                                .map(|e| (e.topic().to_string(), e.partition()))
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect();
            let all: BTreeSet<_> = sets.iter().flatten().cloned().collect();
            let disjoint = sets.iter().map(BTreeSet::len).sum::<usize>() == all.len();
            if (all.len() == total && disjoint && sets.iter().all(|s| !s.is_empty()))
                || Instant::now() > deadline
            {
                return sets;
            }
        }
    }

    fn short(&self, set: &BTreeSet<(String, i32)>) -> String {
        let prefix = format!("probe.{}.", self.run);
        set.iter()
            .map(|(t, p)| format!("{}{p}", t.strip_prefix(&prefix).unwrap_or(t)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn s3_groups(&self) -> Result<()> {
        let (a, b) = (self.topic("a"), self.topic("b"));
        for strategy in [
            "range",
            "roundrobin",
            "cooperative-sticky",
            "range,roundrobin",
        ] {
            let group = format!("probe.{}.g.{}", self.run, strategy.replace(',', "+"));
            let extra = [
                ("group.id", group.as_str()),
                ("partition.assignment.strategy", strategy),
            ];
            let c1 = self.consumer("g1", &extra)?;
            c1.subscribe(&[&a, &b])?;
            let t0 = Instant::now();
            let s = self.wait_assigned(&[&c1], 6, Duration::from_secs(30));
            println!(
                "  {strategy}: member 1 alone after {}: [{}] (protocol {})",
                ms(t0.elapsed()),
                self.short(&s[0]),
                match c1.rebalance_protocol() {
                    RebalanceProtocol::Eager => "eager",
                    RebalanceProtocol::Cooperative => "cooperative",
                    RebalanceProtocol::None => "none",
                }
            );
            let c2 = self.consumer("g2", &extra)?;
            c2.subscribe(&[&a, &b])?;
            let t0 = Instant::now();
            let s = self.wait_assigned(&[&c1, &c2], 6, Duration::from_secs(40));
            println!(
                "  {strategy}: after member 2 joined ({}): m1 [{}] m2 [{}]",
                ms(t0.elapsed()),
                self.short(&s[0]),
                self.short(&s[1])
            );
            if strategy == "range" {
                for (i, set) in s.iter().enumerate() {
                    let pa: BTreeSet<i32> = set.iter().filter(|x| x.0 == a).map(|x| x.1).collect();
                    let pb: BTreeSet<i32> = set.iter().filter(|x| x.0 == b).map(|x| x.1).collect();
                    println!(
                        "    range m{}: same partition numbers of a and b: {}",
                        i + 1,
                        pa == pb
                    );
                }
            }
            // Member 2 leaves: member 1 should get everything back.
            drop(c2);
            let t0 = Instant::now();
            let s = self.wait_assigned(&[&c1], 6, Duration::from_secs(40));
            println!(
                "  {strategy}: after member 2 left ({}): m1 [{}]",
                ms(t0.elapsed()),
                self.short(&s[0])
            );
        }

        // Commit, restart, committed offsets.
        let group = format!("probe.{}.commit", self.run);
        let extra = [("group.id", group.as_str())];
        let c = self.consumer("gc", &extra)?;
        c.subscribe(&[&a])?;
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.iter().filter(|m: &&Rec| m.partition == 0).count() < 3
            && Instant::now() < deadline
        {
            got.extend(self.read(&c, 1, Duration::from_millis(500)));
        }
        let last = got
            .iter()
            .filter(|m| m.partition == 0)
            .map(|m| m.offset)
            .nth(2);
        println!(
            "  commit group: read {} messages, last offset on partition 0 {last:?}",
            got.len()
        );
        let commit_at = last.map_or(1, |o| o + 1);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&a, 0, Offset::Offset(commit_at))?;
        let t0 = Instant::now();
        let r = c.commit(&tpl, CommitMode::Sync);
        println!(
            "  commit(Sync) offset {commit_at}: {:?} in {}",
            r.map_err(|e| describe_err(&e)),
            ms(t0.elapsed())
        );
        println!(
            "  committed(): {:?}",
            c.committed(Duration::from_secs(5))
                .map(|t| t.to_topic_map())
        );
        drop(c);
        let c = self.consumer("gc2", &extra)?;
        println!("  new consumer, committed_offsets(): {:?}", {
            let mut q = TopicPartitionList::new();
            q.add_partition(&a, 0);
            c.committed_offsets(q, Duration::from_secs(5))
                .map(|t| t.to_topic_map())
        });
        c.subscribe(&[&a])?;
        let t0 = Instant::now();
        let mut got = Vec::new();
        while !got.iter().any(|m: &Rec| m.partition == 0) && t0.elapsed() < Duration::from_secs(20)
        {
            got.extend(self.read(&c, 1, Duration::from_millis(200)));
        }
        let first_p0 = got.iter().find(|m| m.partition == 0).map(|m| m.offset);
        println!(
            "  restarted consumer: first offset on partition 0 {first_p0:?} (expected {commit_at}), after {} messages, {}",
            got.len(),
            ms(t0.elapsed())
        );
        let groups = c.fetch_group_list(Some(&group), Duration::from_secs(5));
        match groups {
            Ok(g) => {
                for g in g.groups() {
                    println!(
                        "  describe group {}: state {} protocol {} members {}",
                        g.name(),
                        g.state(),
                        g.protocol(),
                        g.members().len()
                    );
                }
            }
            Err(e) => println!("  fetch_group_list: {}", describe_err(&e)),
        }

        // read_committed in a group.
        let g = format!("probe.{}.rc", self.run);
        let c = self.consumer(
            "rc",
            &[
                ("group.id", g.as_str()),
                ("isolation.level", "read_committed"),
            ],
        )?;
        c.subscribe(&[&a])?;
        let got = self.read(&c, 6, Duration::from_secs(20));
        println!(
            "  isolation.level=read_committed (group): read {} messages",
            got.len()
        );
        Ok(())
    }

    // ---------------------------------------------------------------- 7
    fn s7_sizes(&self) -> Result<()> {
        let t = self.topic("c");
        let p = self.producer("p7", &[("message.max.bytes", "20000000")])?;
        let mut sent = Vec::new();
        for size in [100_000usize, 900_000, 1_100_000, 5_000_000, 12_000_000] {
            let payload = vec![b'x'; size];
            match self.send(&p, FutureRecord::to(&t).key("big").payload(&payload[..])) {
                Ok(d) => {
                    println!("  {size} bytes: delivered at offset {}", d.offset);
                    sent.push((size, d.offset));
                }
                Err(e) => println!("  {size} bytes: {}", describe_err(&e)),
            }
        }
        let c = self.consumer("c7", &[])?;
        for (size, offset) in sent {
            self.assign_at(&c, &t, 0, Offset::Offset(offset))?;
            let t0 = Instant::now();
            let got = self.read(&c, 1, Duration::from_secs(20));
            println!(
                "  read back {size} bytes at offset {offset} (default consumer fetch limits): {:?} in {}",
                got.first().map(|m| (m.offset, m.payload.as_ref().map_or(0, Vec::len))),
                ms(t0.elapsed())
            );
        }

        // One topic per codec, so that a codec the broker cannot serve does
        // not hide the others.
        let admin = self.admin()?;
        for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
            let p = match self.producer("p7c", &[("compression.type", codec), ("linger.ms", "20")])
            {
                Ok(p) => p,
                Err(e) => {
                    println!("  compression {codec}: producer not created: {e:#}");
                    continue;
                }
            };
            let t = self.topic(&format!("z.{codec}"));
            if self.cluster.is_none() {
                self.rt.block_on(admin.create_topics(
                    &[NewTopic::new(&t, 1, TopicReplication::Fixed(1))],
                    &AdminOptions::new(),
                ))?;
            }
            // A batch of compressible records.
            let payload = format!("{codec} {}", "metric=latency value=123 ".repeat(40));
            let futs: Vec<_> = (0..20)
                .map(|_| {
                    p.send(
                        FutureRecord::to(&t).key(codec).payload(&payload),
                        Duration::from_secs(15),
                    )
                })
                .collect();
            let res: Vec<_> = self.rt.block_on(async {
                let mut v = Vec::new();
                for f in futs {
                    v.push(f.await);
                }
                v
            });
            let ok = res.iter().filter(|r| r.is_ok()).count();
            let err = res
                .iter()
                .find_map(|r| r.as_ref().err().map(|(e, _)| describe_err(e)));
            let c = self.consumer("c7c", &[])?;
            self.assign_at(&c, &t, 0, Offset::Beginning)?;
            let got = self.read(&c, 20, Duration::from_secs(8));
            let intact = got
                .iter()
                .filter(|m| m.payload.as_deref() == Some(payload.as_bytes()))
                .count();
            println!(
                "  compression {codec}: {ok}/20 delivered{}, {intact}/20 read back intact",
                err.map(|e| format!(", error {e}")).unwrap_or_default()
            );
        }
        Ok(())
    }

    // ---------------------------------------------------------------- 8
    fn s8_latency(&self) -> Result<()> {
        let t = self.topic("e");
        let p = self.producer("p8", &[("linger.ms", "0")])?;
        for wait in ["10", "100", "500"] {
            let c = self.consumer("c8", &[("fetch.wait.max.ms", wait)])?;
            // Warm up: topic metadata and the connection.
            self.send(
                &p,
                FutureRecord::<str, str>::to(&t)
                    .partition(0)
                    .payload("warm"),
            )?;
            self.assign_at(&c, &t, 0, Offset::End)?;
            let _ = self.read(&c, 1, Duration::from_secs(1));
            let (mut acks, mut e2e) = (Vec::new(), Vec::new());
            for i in 0..30 {
                let payload = format!("lat-{wait}-{i}");
                let t0 = Instant::now();
                self.send(
                    &p,
                    FutureRecord::<str, str>::to(&t)
                        .partition(0)
                        .payload(&payload),
                )?;
                acks.push(t0.elapsed());
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    if let Some(Ok(m)) = c.poll(Duration::from_millis(1)) {
                        if m.payload() == Some(payload.as_bytes()) {
                            e2e.push(t0.elapsed());
                            break;
                        }
                    }
                    if Instant::now() > deadline {
                        println!("  fetch.wait.max.ms={wait}: record {i} not consumed within 5 s");
                        break;
                    }
                }
            }
            let stats = |v: &mut Vec<Duration>| {
                v.sort();
                if v.is_empty() {
                    return "n/a".to_string();
                }
                format!(
                    "min {} median {} p90 {} max {}",
                    ms(v[0]),
                    ms(v[v.len() / 2]),
                    ms(v[v.len() * 9 / 10]),
                    ms(v[v.len() - 1])
                )
            };
            println!(
                "  fetch.wait.max.ms={wait}: produce ack {}",
                stats(&mut acks)
            );
            println!(
                "  fetch.wait.max.ms={wait}: produce->consume {}",
                stats(&mut e2e)
            );
        }
        Ok(())
    }

    // ---------------------------------------------------------------- 9
    fn s9_misc(&self) -> Result<()> {
        let (v, s) = get_rdkafka_version();
        println!("  librdkafka {s} (0x{v:08x})");
        let first = self.brokers.split(',').next().unwrap_or_default();
        match api_versions(first) {
            Ok(apis) => {
                let list: Vec<_> = apis
                    .iter()
                    .map(|(k, lo, hi)| format!("{}({k}) v{lo}-{hi}", api_name(*k)))
                    .collect();
                println!("  ApiVersions: {} APIs: {}", apis.len(), list.join(", "));
                let missing: Vec<_> = [19, 20, 23, 26, 27, 32, 37, 42, 47, 68]
                    .iter()
                    .filter(|k| !apis.iter().any(|a| a.0 == **k))
                    .map(|k| format!("{}({k})", api_name(*k)))
                    .collect();
                println!("  not announced: {}", missing.join(", "));
            }
            Err(e) => println!("  ApiVersions v0: {e:#}"),
        }
        let c = self.consumer("c9", &[])?;
        let md = c.fetch_metadata(None, Duration::from_secs(5))?;
        println!(
            "  metadata: orig broker {} id {}, brokers {:?}, {} topics",
            md.orig_broker_name(),
            md.orig_broker_id(),
            md.brokers()
                .iter()
                .map(|b| format!("{}@{}:{}", b.id(), b.host(), b.port()))
                .collect::<Vec<_>>(),
            md.topics().len()
        );
        for t in md
            .topics()
            .iter()
            .filter(|t| t.name().starts_with(&format!("probe.{}.", self.run)))
        {
            println!(
                "    {}: partitions {:?}",
                t.name(),
                t.partitions()
                    .iter()
                    .map(|p| (p.id(), p.leader(), p.replicas().len(), p.isr().len()))
                    .collect::<Vec<_>>()
            );
        }
        // A topic that does not exist: produce error and metadata error.
        let missing = self.topic("missing");
        let md = c.fetch_metadata(Some(&missing), Duration::from_secs(5));
        println!(
            "  metadata for a missing topic: {:?}",
            md.map(|m| m
                .topics()
                .iter()
                .map(|t| (t.name().to_string(), t.error()))
                .collect::<Vec<_>>())
                .map_err(|e| describe_err(&e))
        );
        let p = self.producer("p9", &[("message.timeout.ms", "5000")])?;
        let t0 = Instant::now();
        let r = self.send(&p, FutureRecord::<str, str>::to(&missing).payload("x"));
        println!(
            "  produce to a missing topic: {} after {}",
            r.map_or_else(
                |e| describe_err(&e),
                |d| format!("delivered to {}", d.partition)
            ),
            ms(t0.elapsed())
        );
        // Older protocol paths.
        for extra in [
            &[
                ("api.version.request", "false"),
                ("broker.version.fallback", "0.10.0"),
            ][..],
            &[
                ("api.version.request", "false"),
                ("broker.version.fallback", "2.0.0"),
            ][..],
        ] {
            let p = self.producer("p9v", extra)?;
            let r = self.send(
                &p,
                FutureRecord::to(&self.topic("a"))
                    .key("v")
                    .payload("x")
                    .timestamp(self.base_ts),
            );
            println!(
                "  producer {extra:?}: {}",
                r.map_or_else(|e| describe_err(&e), |d| format!("ok offset {}", d.offset))
            );
        }
        // Subscribing before the topic exists: when does the consumer see it?
        if self.cluster.is_none() {
            for refresh in ["default (300000)", "1000"] {
                let late = self.topic(if refresh == "1000" { "late2" } else { "late1" });
                let group = format!("{late}.g");
                let mut extra = vec![("group.id", group.as_str())];
                if refresh == "1000" {
                    extra.push(("topic.metadata.refresh.interval.ms", "1000"));
                }
                let c = self.consumer("late", &extra)?;
                c.subscribe(&[&late])?;
                let _ = self.read(&c, 1, Duration::from_secs(2));
                let admin = self.admin()?;
                let r = self.rt.block_on(admin.create_topics(
                    &[NewTopic::new(&late, 1, TopicReplication::Fixed(1))],
                    &AdminOptions::new(),
                ))?;
                if r.iter().any(|r| r.is_err()) {
                    println!("  create {late}: {r:?}");
                }
                let p = self.producer("plate", &[])?;
                self.send(&p, FutureRecord::to(&late).key("k").payload("late"))?;
                let t0 = Instant::now();
                let got = self.read(&c, 1, Duration::from_secs(40));
                println!(
                    "  subscribed before the topic existed, topic.metadata.refresh.interval.ms={refresh}: {} after {}",
                    if got.is_empty() { "NOT consumed" } else { "consumed" },
                    ms(t0.elapsed())
                );
            }
        }
        Ok(())
    }

    fn cleanup(&self) {
        if self.cluster.is_some() {
            return; // the mock cluster has no DeleteTopics; it goes away with the process
        }
        let Ok(admin) = self.admin() else { return };
        let Ok(c) = self.consumer("clean", &[]) else {
            return;
        };
        let all_topics = || -> BTreeSet<String> {
            c.fetch_metadata(None, Duration::from_secs(5))
                .map(|md| md.topics().iter().map(|t| t.name().to_string()).collect())
                .unwrap_or_default()
        };
        // Every topic of this run, including those created along the way.
        let prefix = format!("probe.{}.", self.run);
        let before = all_topics();
        let mut names: BTreeSet<String> = self.topics.iter().map(|(n, _)| n.clone()).collect();
        names.extend(before.iter().filter(|n| n.starts_with(&prefix)).cloned());
        let others: BTreeSet<&String> = before.iter().filter(|n| !names.contains(*n)).collect();
        // One at a time, checking that the other topics are still there.
        for name in &names {
            let r = self.rt.block_on(admin.delete_topics(
                &[name.as_str()],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            ));
            let after = all_topics();
            let lost: Vec<_> = others.iter().filter(|n| !after.contains(**n)).collect();
            println!(
                "  delete_topics([{name}]): {}",
                match r {
                    Ok(v) => format!("{v:?}"),
                    Err(e) => describe_err(&e),
                }
            );
            if !lost.is_empty() {
                println!(
                    "  !! deleting {name} also removed {} other topics: {lost:?}",
                    lost.len()
                );
                break;
            }
        }
    }

    /// `--persist write|read`: data and committed offsets across a broker restart.
    fn persist(&self, phase: &str) -> Result<()> {
        let t = "probe.persist";
        let group = "probe.persist.group";
        match phase {
            "write" => {
                let admin = self.admin()?;
                let r = self.rt.block_on(admin.create_topics(
                    &[NewTopic::new(t, 1, TopicReplication::Fixed(1))],
                    &AdminOptions::new(),
                ));
                println!("  create {t}: {r:?}");
                let p = self.producer("pw", &[])?;
                for i in 0..10 {
                    let d =
                        self.send(&p, FutureRecord::to(t).key("k").payload(&format!("m{i}")))?;
                    println!("  sent m{i} at offset {}", d.offset);
                }
                let c = self.consumer("cw", &[("group.id", group)])?;
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(t, 0, Offset::Offset(4))?;
                c.commit(&tpl, CommitMode::Sync)?;
                println!("  committed offset 4 for {group}");
            }
            "read" => {
                let c = self.consumer("cr", &[("group.id", group)])?;
                println!(
                    "  watermarks: {:?}",
                    c.fetch_watermarks(t, 0, Duration::from_secs(5))
                        .map_err(|e| describe_err(&e))
                );
                let mut q = TopicPartitionList::new();
                q.add_partition(t, 0);
                println!(
                    "  committed: {:?}",
                    c.committed_offsets(q, Duration::from_secs(5))
                        .map(|t| t.to_topic_map())
                );
                self.assign_at(&c, t, 0, Offset::Beginning)?;
                let got = self.read(&c, 10, Duration::from_secs(10));
                let v: Vec<_> = got
                    .iter()
                    .map(|m| {
                        (
                            m.offset,
                            String::from_utf8_lossy(m.payload.as_deref().unwrap_or_default())
                                .to_string(),
                        )
                    })
                    .collect();
                println!("  read {v:?}");
            }
            other => bail!("--persist write|read, not {other}"),
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut brokers, mut mock, mut cleanup, mut only, mut persist) =
        (None, false, false, None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mock" => mock = true,
            "--cleanup" => cleanup = true,
            "--only" => only = Some(args.next().ok_or_else(|| anyhow!("--only 1,2,..."))?),
            "--persist" => {
                persist = Some(args.next().ok_or_else(|| anyhow!("--persist write|read"))?)
            }
            "-h" | "--help" => {
                println!("tansu_probe [--mock | HOST:PORT] [--only 1,2,...] [--cleanup] [--persist write|read]");
                return Ok(());
            }
            b if !b.starts_with('-') => brokers = Some(b.to_string()),
            other => bail!("unknown argument {other}"),
        }
    }
    let cluster = if mock {
        Some(MockCluster::new(1).context("creating the mock cluster")?)
    } else {
        None
    };
    let brokers = if let Some(cluster) = &cluster {
        cluster.bootstrap_servers()
    } else {
        brokers
            .or_else(|| std::env::var("SELFHEAL_BROKERS").ok())
            .ok_or_else(|| anyhow!("give HOST:PORT, --mock, or set SELFHEAL_BROKERS"))?
    };
    let now = now_ms();
    let mut probe = Probe {
        brokers,
        mock,
        cluster,
        rt: Runtime::new()?,
        run: format!("{}", now % 100_000_000),
        base_ts: now - 600_000,
        topics: Vec::new(),
    };
    println!(
        "probe run {} against {}{}",
        probe.run,
        probe.brokers,
        if mock { " (mock cluster)" } else { "" }
    );
    if let Some(phase) = persist {
        return probe.persist(&phase);
    }
    let only: Option<BTreeSet<u32>> =
        only.map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect());
    let wants = |n: u32| only.as_ref().is_none_or(|o| o.contains(&n));
    // Topics first (5), the other sections use them.
    println!("\n== 5. admin create_topics");
    if let Err(e) = probe.s5_admin() {
        println!("  FAILED: {e:#}");
    }
    type Section = fn(&Probe) -> Result<()>;
    let sections: [(u32, &str, Section); 8] = [
        (1, "keys, headers, CreateTime", Probe::s1_records),
        (
            4,
            "watermarks, assign+seek, offsets_for_times",
            Probe::s4_offsets,
        ),
        (6, "partitioners", Probe::s6_partitioner),
        (
            2,
            "idempotent and transactional producers",
            Probe::s2_transactions,
        ),
        (
            3,
            "consumer groups, commits, read_committed",
            Probe::s3_groups,
        ),
        (7, "message sizes and compression", Probe::s7_sizes),
        (8, "latency", Probe::s8_latency),
        (
            9,
            "metadata, missing topics, protocol fallbacks",
            Probe::s9_misc,
        ),
    ];
    for (n, title, f) in sections {
        // Section 4 reads what section 1 wrote.
        if !(wants(n) || n == 1 && wants(4)) {
            continue;
        }
        println!("\n== {n}. {title}");
        let t0 = Instant::now();
        match f(&probe) {
            Ok(()) => println!("  ({})", ms(t0.elapsed())),
            Err(e) => println!("  FAILED after {}: {e:#}", ms(t0.elapsed())),
        }
    }
    if cleanup {
        println!("\n== cleanup");
        probe.cleanup();
    }
    Ok(())
}
