//! Malformed input through the live engine: thousands of bad records
//! (undecodable bytes, truncated and oversized values, the wrong Avro
//! schema, JSON of the wrong kind, NaN, infinities and negative counters,
//! timestamps far in the future and the past, missing fields) interleaved
//! with a valid stream of alerts. Every bad record must land on the
//! dead-letter topic with its reason, and the valid records must be
//! decided exactly as in a run without the bad ones.
//!
//! Runs on the embedded mock cluster, and on the real broker of
//! `SELFHEAL_TEST_BROKERS` when there is one.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use selfheal::live::wire::{encode_output, Format};
use selfheal::live::{wall_ms, KafkaArgs};
use selfheal::records::avro::{encode_input, single_object_encode, RecordType};
use selfheal::records::{Change, ChangeState, Input};

const POLICY: &str = r#"
runbooks:
  - name: restart-on-crash
    match: ['alertname="Crash"']
    tier: 1
    action: {kind: restart, target: '{{ labels.pod }}', timeout: 1h}
    validate: {within: 1h}
"#;

/// Valid alerts in the stream.
const VALID: usize = 40;
/// Bad records between two valid ones.
const BAD_PER_GAP: usize = 60;

/// One record to publish: topic (by input kind), key, value, timestamp.
struct Rec {
    topic: &'static str,
    key: String,
    value: Vec<u8>,
    ts: i64,
}

fn valid_alert(i: usize, base: i64) -> Rec {
    let svc = format!("svc-{}", i % 4);
    let body = if i % 3 == 2 {
        // No runbook: escalated.
        format!(
            r#"{{"status":"firing","labels":{{"alertname":"Mystery","service":"{svc}","n":"{i}"}},"fingerprint":"m{i:04}"}}"#
        )
    } else {
        format!(
            r#"{{"status":"firing","labels":{{"alertname":"Crash","service":"{svc}","pod":"pod-{i}"}},"fingerprint":"c{i:04}"}}"#
        )
    };
    Rec {
        topic: "alerts",
        key: svc,
        value: body.into_bytes(),
        ts: base + i as i64 * 1000,
    }
}

fn avro(input: &Input, t: RecordType) -> Vec<u8> {
    let datum = encode_input(input).expect("encodes").remove(0);
    single_object_encode(t, &datum)
}

/// The `n`th bad record, on a topic, with the dead-letter code it must get.
fn bad(n: usize, ts: i64) -> (Rec, &'static str) {
    let change = Input::Change(Change {
        service: "svc-1".into(),
        kind: "deploy".into(),
        state: ChangeState::Started,
        id: format!("chg-{n}"),
        at: None,
    });
    let alert_json = format!(
        r#"{{"status":"firing","labels":{{"alertname":"Crash","service":"svc-0","pod":"pod-bad-{n}"}}}}"#
    );
    let (topic, value, code): (&str, Vec<u8>, &str) = match n % 30 {
        // Undecodable bytes.
        0 => ("alerts", vec![0xff, 0xfe, (n % 251) as u8, 0x00, 0x9c], "malformed_avro"),
        1 => ("metrics", Vec::new(), "malformed_avro"),
        2 => ("results", b"{\"command_id\":\"x\xff\xfe\"}".to_vec(), "malformed_json"),
        3 => ("alerts", b"\x00\x00\x00\x00\x07garbage".to_vec(), "malformed_avro"),
        // Truncated values.
        4 => ("alerts", alert_json.as_bytes()[..alert_json.len() / 2].to_vec(), "malformed_json"),
        5 => {
            let whole = avro(&change, RecordType::Change);
            ("changes", whole[..whole.len() - 3].to_vec(), "malformed_avro")
        }
        6 => ("changes", vec![0xc3, 0x01, 0x12], "malformed_avro"),
        // The wrong Avro schema for the topic, or none of ours.
        7 => ("alerts", avro(&change, RecordType::Change), "malformed_avro"),
        8 => {
            let mut v = avro(&change, RecordType::Change);
            v[2] ^= 0x55;
            ("changes", v, "malformed_avro")
        }
        // JSON of the wrong kind.
        9 => ("alerts", br#"{"service":"svc-0","kind":"deploy","state":"started"}"#.to_vec(), "missing_field"),
        10 => ("approvals", br#"{"status":"firing","labels":{"alertname":"X"}}"#.to_vec(), "missing_field"),
        11 => ("control", b"[1,2,3]".to_vec(), "malformed_avro"),
        12 => ("metrics", b"\"just a string\"".to_vec(), "malformed_avro"),
        13 => ("results", br#"{"command_id":"c","status":"exploded"}"#.to_vec(), "invalid_field"),
        14 => ("approvals", br#"{"command_id":"c","decision":"maybe","by":"a"}"#.to_vec(), "invalid_field"),
        15 => ("alerts", br#"{"status":"firing","labels":{"alertname":7}}"#.to_vec(), "malformed_json"),
        16 => {
            // Valid JSON nested 10 000 deep, without the fields.
            let deep = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
            ("metrics", deep.into_bytes(), "missing_field")
        }
        // Values no sample can have.
        17 => ("metrics", br#"{"name":"up","value":"NaN","labels":{"service":"svc-0"}}"#.to_vec(), "invalid_value"),
        18 => ("metrics", br#"{"name":"up","value":"+Inf","labels":{"service":"svc-0"}}"#.to_vec(), "invalid_value"),
        19 => ("metrics", br#"{"name":"up","value":"-Inf","labels":{"service":"svc-0"}}"#.to_vec(), "invalid_value"),
        20 => ("metrics", br#"{"name":"http_requests_total","value":-5,"labels":{"service":"svc-0"}}"#.to_vec(), "invalid_value"),
        21 => ("metrics", br#"{"name":"up","value":"1e999","labels":{"service":"svc-0"}}"#.to_vec(), "invalid_value"),
        // Timestamps in the payload that are no time.
        22 => ("alerts", br#"{"status":"firing","labels":{"alertname":"Crash","service":"svc-0","pod":"pod-x"},"startsAt":"99999-01-01T00:00:00Z"}"#.to_vec(), "invalid_field"),
        23 => ("changes", br#"{"service":"svc-0","kind":"deploy","state":"started","id":"c","at":"yesterday"}"#.to_vec(), "invalid_field"),
        // Missing required fields.
        24 => ("alerts", br#"{"labels":{"alertname":"Crash","service":"svc-0"}}"#.to_vec(), "missing_field"),
        25 => ("metrics", br#"{"value":"1","labels":{"service":"svc-0"}}"#.to_vec(), "missing_field"),
        26 => ("results", br#"{"status":"succeeded"}"#.to_vec(), "missing_field"),
        27 => ("control", br#"{"kill_switch":true}"#.to_vec(), "missing_field"),
        28 => ("approvals", br#"{"command_id":"c","by":"a"}"#.to_vec(), "missing_field"),
        // A valid alert stamped far ahead of the clock.
        _ => {
            let rec = Rec {
                topic: "alerts",
                key: "svc-0".into(),
                value: alert_json.into_bytes(),
                ts: wall_ms() + 400 * 24 * 3_600_000,
            };
            return (rec, "future_timestamp");
        }
    };
    let rec = Rec {
        topic,
        key: format!("svc-{}", n % 4),
        value,
        ts,
    };
    (rec, code)
}

/// Valid alerts far in the past (after the stream has started), and
/// values of 2 MB.
fn extreme(n: usize, ts: i64) -> (Rec, &'static str) {
    let alert = |pod: &str, pad: &str| {
        format!(
            r#"{{"status":"firing","labels":{{"alertname":"Crash","service":"svc-0","pod":"{pod}","pad":"{pad}"}}}}"#
        )
        .into_bytes()
    };
    match n % 3 {
        0 => (
            Rec {
                topic: "alerts",
                key: "svc-0".into(),
                value: alert(&format!("pod-old-{n}"), ""),
                ts: 86_400_000,
            },
            "late",
        ),
        1 => (
            Rec {
                topic: "alerts",
                key: "svc-0".into(),
                value: alert(&format!("pod-big-{n}"), &"x".repeat(2 << 20)),
                ts,
            },
            "too_large",
        ),
        _ => (
            Rec {
                topic: "metrics",
                key: "svc-0".into(),
                value: vec![b'{'; 2 << 20],
                ts,
            },
            "too_large",
        ),
    }
}

/// The valid stream alone, or with bad records between its records;
/// also the dead-letter codes expected, counted by source topic and code.
fn stream(base: i64, with_bad: bool) -> (Vec<Rec>, BTreeMap<(String, String), usize>) {
    let mut recs = Vec::new();
    let mut expected: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut n = 0;
    for i in 0..VALID {
        let v = valid_alert(i, base);
        let ts = v.ts;
        recs.push(v);
        if !with_bad {
            continue;
        }
        let mut push = |(r, code): (Rec, &'static str), recs: &mut Vec<Rec>| {
            *expected
                .entry((r.topic.to_string(), code.to_string()))
                .or_default() += 1;
            recs.push(r);
        };
        for j in 0..BAD_PER_GAP {
            push(bad(n, ts + j as i64), &mut recs);
            n += 1;
        }
        if i % 8 == 3 {
            push(extreme(i / 8, ts + 500), &mut recs);
        }
    }
    (recs, expected)
}

fn publish(k: &KafkaArgs, recs: &[Rec]) {
    let mut cc = k.producer_config().unwrap();
    cc.set("message.max.bytes", "8000000")
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "5")
        .set("acks", "all");
    let p: FutureProducer = cc.create().unwrap();
    let topics = k.topics();
    let topic_of = |t: &str| -> &str {
        match t {
            "metrics" => &topics.metrics,
            "alerts" => &topics.alerts,
            "changes" => &topics.changes,
            "results" => &topics.results,
            "approvals" => &topics.approvals,
            "control" => &topics.control,
            other => panic!("no input topic {other}"),
        }
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut pending = Vec::new();
        for r in recs {
            let topic = topic_of(r.topic);
            let headers = OwnedHeaders::new().insert(Header {
                key: "selfheal-kind",
                value: Some("test"),
            });
            let rec = FutureRecord::to(topic)
                .key(&r.key)
                .payload(&r.value)
                .timestamp(r.ts)
                .headers(headers);
            pending.push(p.send(rec, Duration::from_secs(30)));
            if pending.len() >= 200 {
                for f in pending.drain(..) {
                    f.await.map_err(|(e, _)| e).expect("publishing");
                }
            }
        }
        for f in pending {
            f.await.map_err(|(e, _)| e).expect("publishing");
        }
    });
}

/// What a run decided: the output records of each topic as JSON, and the
/// dead letters as (source topic, code, reason, value length).
#[derive(Debug)]
struct Run {
    outputs: BTreeMap<&'static str, Vec<String>>,
    dead: Vec<(String, String, String, usize)>,
}

fn short_topic(k: &KafkaArgs, topic: &str) -> String {
    topic
        .strip_prefix(&k.topic_prefix)
        .unwrap_or(topic)
        .to_string()
}

fn dead_letters(k: &KafkaArgs) -> Vec<(String, String, String, usize)> {
    let mut v = Vec::new();
    selfheal::live::tools::scan_topic_from(k, &k.topics().dlq, false, None, |m| {
        use rdkafka::Message;
        let h = |key: &str| {
            selfheal::live::wire::header(m.headers(), key)
                .unwrap_or_default()
                .to_string()
        };
        v.push((
            short_topic(k, &h("selfheal-source-topic")),
            h("selfheal-error-code"),
            h("selfheal-error"),
            m.payload().map_or(0, <[u8]>::len),
        ));
        true
    })
    .unwrap();
    v
}

fn output_lines(k: &KafkaArgs) -> BTreeMap<&'static str, Vec<String>> {
    let t = k.topics();
    [
        ("actions", t.actions),
        ("escalations", t.escalations),
        ("audit", t.audit),
        ("incidents", t.incidents),
    ]
    .into_iter()
    .map(|(name, topic)| {
        let lines = outputs(k, &topic)
            .iter()
            .map(|o| String::from_utf8_lossy(&encode_output(o, Format::Json)).into_owned())
            .collect();
        (name, lines)
    })
    .collect()
}

/// Runs the engine over `recs` until it has decided `expect_outputs`
/// records on the output topics and dead-lettered `expect_dead`.
fn run(k: &KafkaArgs, recs: &[Rec], expect_outputs: Option<usize>, expect_dead: usize) -> Run {
    let policy = policy_file("malformed", POLICY);
    publish(k, recs);
    let mut eng = engine(k, &policy, "at_least_once", &[]);
    let count = |o: &BTreeMap<&str, Vec<String>>| o.values().map(Vec::len).sum::<usize>();
    let end = std::time::Instant::now() + Duration::from_secs(300);
    // Without an expected count (the clean run), until the last valid
    // alert is decided; then until nothing changes for a few polls.
    let mut last = ((usize::MAX, 0), 0);
    loop {
        let out = output_lines(k);
        let dead = dead_letters(k);
        let n = count(&out);
        let reached = match expect_outputs {
            Some(e) => n >= e && dead.len() >= expect_dead,
            None => out["audit"].iter().any(|a| {
                a.contains(&format!("c{:04}", VALID - 1))
                    || a.contains(&format!("m{:04}", VALID - 1))
            }),
        };
        // Settled: the same counts for three polls in a row.
        if reached && (n, dead.len()) == last.0 {
            last.1 += 1;
        } else {
            last = ((n, dead.len()), 0);
        }
        let done = last.1 >= 3;
        if done {
            let text = eng.log_text();
            assert!(!text.contains("panicked"), "the engine panicked:\n{text}");
            assert!(
                eng.child.try_wait().unwrap().is_none(),
                "the engine exited:\n{text}"
            );
            eng.terminate();
            return Run { outputs: out, dead };
        }
        assert!(
            std::time::Instant::now() < end,
            "timed out: {n} outputs (want {expect_outputs:?}), {} dead letters (want {expect_dead}); engine log:\n{}",
            dead.len(),
            eng.log_text()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn bad_records_are_dead_lettered_and_valid_ones_decided_as_without_them(
    clean: &KafkaArgs,
    dirty: &KafkaArgs,
) {
    let base = wall_ms() - 120_000;
    let (valid, none) = stream(base, false);
    assert!(none.is_empty());
    let (mixed, expected) = stream(base, true);
    let bad_total: usize = expected.values().sum();
    assert!(bad_total >= 2000, "{bad_total} bad records");

    let reference = run(clean, &valid, None, 0);
    assert!(reference.dead.is_empty(), "{:?}", reference.dead);
    let n_ref: usize = reference.outputs.values().map(Vec::len).sum();
    assert!(
        reference.outputs["actions"].len() >= VALID / 2,
        "{:?}",
        reference.outputs
    );
    assert!(!reference.outputs["escalations"].is_empty());

    let got = run(dirty, &mixed, Some(n_ref), bad_total);

    // Every bad record is on the dead-letter topic, with its reason.
    let mut counted: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (topic, code, reason, len) in &got.dead {
        assert!(!reason.is_empty(), "{topic} {code}: no reason");
        assert!(*len <= selfheal::live::engine::DEFAULT_MAX_RECORD_BYTES);
        *counted.entry((topic.clone(), code.clone())).or_default() += 1;
    }
    assert_eq!(counted, expected, "dead letters by (source topic, code)");
    assert!(got
        .dead
        .iter()
        .filter(|d| d.1 == "too_large")
        .all(|d| d.3 == selfheal::live::engine::DEFAULT_MAX_RECORD_BYTES
            && d.2.contains("larger than")));

    // The valid records are decided exactly as without the bad ones.
    for (topic, lines) in &reference.outputs {
        assert_eq!(
            &got.outputs[topic], lines,
            "{topic} differ from the run without bad records"
        );
    }
}

#[test]
fn bad_records_on_the_mock_cluster() {
    let cluster = MockCluster::new(1).unwrap();
    let mk = |name: &str| {
        let mut k = KafkaArgs::local(&cluster.bootstrap_servers());
        k.topic_prefix = unique_prefix(name);
        for t in k.topics().all() {
            cluster.create_topic(t, 1, 1).unwrap();
        }
        k
    };
    let (clean, dirty) = (mk("clean"), mk("dirty"));
    bad_records_are_dead_lettered_and_valid_ones_decided_as_without_them(&clean, &dirty);
}

#[test]
fn bad_records_on_a_real_broker() {
    let Some(b) = real_broker() else { return };
    let clean = setup(&b, "clean", 1);
    let dirty = setup(&b, "dirty", 1);
    bad_records_are_dead_lettered_and_valid_ones_decided_as_without_them(&clean, &dirty);
}

#[test]
fn deeply_nested_json_is_refused_without_exhausting_the_stack() {
    use selfheal::records::avro::decode_value;
    use selfheal::records::InputKind;
    let deep = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    for kind in [InputKind::Metric, InputKind::Alert, InputKind::Result] {
        // Refused, never a crash: either the nesting passes the JSON
        // reader's recursion limit, or the value lacks required fields.
        let e = decode_value(kind, deep.as_bytes()).unwrap_err();
        assert!(
            ["malformed_json", "missing_field"].contains(&e.code()),
            "{kind:?}: {e}"
        );
    }
}
