//! Backtesting from Kafka: `selfheal record` of a time window, `replay
//! --brokers` of the same window, and `audit verify` of a live run, on a
//! real broker (Tansu through `scripts/test.sh`) and on librdkafka's mock
//! cluster.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::FutureRecord;
use selfheal::live::wire::{self, Format};
use selfheal::live::KafkaArgs;
use selfheal::records::{EscalationReason, Input, InputKind};
use selfheal::time::Timestamp;

/// Tansu answers a fetch after `fetch.wait.max.ms` even with records.
fn fast(k: &KafkaArgs) -> Vec<String> {
    let mut a = kafka_flags(k);
    a.extend(["-X".into(), "fetch.wait.max.ms=10".into()]);
    a
}

fn run(args: &[String]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("running selfheal")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One published input record and where it landed.
#[derive(Debug, Clone)]
struct Sent {
    ts: i64,
    topic_index: usize,
    partition: i32,
    offset: i64,
    line: Option<String>,
}

/// Publishes `value` to input topic `topic_index` with Kafka timestamp
/// `ts`; `line` is the replay line expected for it (None for a poison
/// record).
fn send(
    k: &KafkaArgs,
    topic_index: usize,
    key: &str,
    ts: i64,
    value: &[u8],
    kind: &str,
    line: Option<String>,
) -> Sent {
    let topics = k.topics();
    let topic = topics.inputs()[topic_index].to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (partition, offset) = rt.block_on(async {
        let p = selfheal::live::tools::producer(k).unwrap();
        let rec = FutureRecord::to(&topic)
            .key(key)
            .payload(value)
            .timestamp(ts)
            .headers(wire::kind_headers(kind));
        let d = p.send(rec, Duration::from_secs(15)).await.unwrap();
        (d.partition, d.offset)
    });
    Sent {
        ts,
        topic_index,
        partition,
        offset,
        line,
    }
}

fn json_input(k: &KafkaArgs, i: usize, key: &str, ts: i64, kind: InputKind, data: &str) -> Sent {
    let line = format!(
        r#"{{"ts":"{}","kind":"{}","data":{data}}}"#,
        Timestamp(ts),
        kind.as_str()
    );
    send(k, i, key, ts, data.as_bytes(), kind.as_str(), Some(line))
}

fn avro_input(k: &KafkaArgs, i: usize, key: &str, ts: i64, kind: InputKind, data: &str) -> Sent {
    let input = Input::from_json(kind, data).unwrap();
    let value = wire::encode_input(&input, Format::Avro).unwrap();
    let json = wire::input_json(&input).unwrap();
    let line = format!(
        r#"{{"ts":"{}","kind":"{}","data":{json}}}"#,
        Timestamp(ts),
        kind.as_str()
    );
    send(k, i, key, ts, &value, kind.as_str(), Some(line))
}

#[test]
fn a_recorded_window_holds_exactly_its_records_in_time_order_and_replays_as_the_topics_do() {
    let Some(b) = real_broker() else { return };
    record_a_window(&setup(&b, "record", 3));
}

#[test]
fn a_recorded_window_on_the_mock_cluster() {
    let cluster = MockCluster::new(1).unwrap();
    let k = KafkaArgs::local(&cluster.bootstrap_servers());
    for t in k.topics().all() {
        cluster.create_topic(t, 3, 1).unwrap();
    }
    record_a_window(&k);
}

fn record_a_window(k: &KafkaArgs) {
    // Whole seconds, an hour ago: the broker writes them now.
    let t0 = (selfheal::live::wall_ms() / 60_000 - 60) * 60_000;
    let s = |i: i64| t0 + i * 1000;
    // (ts, topic, key, kind, data, as Avro); published in time order, so
    // every partition's timestamps grow.
    let mut plan: Vec<(i64, usize, String, InputKind, String, bool)> = Vec::new();
    for i in 0..24i64 {
        let svc = format!("svc-{}", i % 6);
        let ts = s(10 * i);
        let starts = Timestamp(ts).to_string();
        let alert = format!(
            r#"{{"status":"firing","labels":{{"alertname":"Crash","service":"{svc}","pod":"{svc}-{i}"}},"startsAt":"{starts}"}}"#
        );
        plan.push(match i % 4 {
            0 => (ts, 1, svc, InputKind::Alert, alert, false),
            1 => {
                let m = format!(
                    r#"{{"name":"http_requests_total","labels":{{"service":"{svc}"}},"value":"{}"}}"#,
                    100 * i
                );
                (ts, 0, svc, InputKind::Metric, m, true)
            }
            2 => {
                let c = format!(
                    r#"{{"service":"{svc}","kind":"deploy","state":"started","id":"chg-{i}"}}"#
                );
                (ts, 2, svc, InputKind::Change, c, false)
            }
            _ => (ts, 1, svc, InputKind::Alert, alert, true),
        });
    }
    // Ties: the same instant on three topics goes in topic order.
    let tie = s(95);
    plan.push((
        tie,
        2,
        "svc-1".into(),
        InputKind::Change,
        r#"{"service":"svc-1","kind":"deploy","state":"finished","id":"chg-tie"}"#.into(),
        false,
    ));
    plan.push((
        tie,
        0,
        "svc-1".into(),
        InputKind::Metric,
        r#"{"name":"http_requests_total","labels":{"service":"svc-1"},"value":"7"}"#.into(),
        false,
    ));
    plan.push((
        tie,
        1,
        "svc-1".into(),
        InputKind::Alert,
        r#"{"status":"firing","labels":{"alertname":"Tie","service":"svc-1"}}"#.into(),
        false,
    ));
    plan.sort_by_key(|p| p.0);
    let mut sent = Vec::new();
    let mut poison = None;
    for (ts, topic, key, kind, data, avro) in &plan {
        let f = if *avro { avro_input } else { json_input };
        sent.push(f(k, *topic, key, *ts, *kind, data));
        if *ts == s(100) {
            // A poison record inside the window.
            poison = Some(send(k, 1, "svc-2", s(101), b"{not json", "alert", None));
        }
    }
    let poison = poison.unwrap();

    let (since, until) = (s(50), s(180));
    let mut want: Vec<&Sent> = sent
        .iter()
        .filter(|x| x.ts >= since && x.ts <= until)
        .collect();
    want.sort_by_key(|x| (x.ts, x.topic_index, x.partition, x.offset));
    let want: Vec<String> = want.iter().filter_map(|x| x.line.clone()).collect();
    assert!(want.len() >= 14, "{want:?}");

    let file = std::env::temp_dir().join(format!("selfheal-record-{}.jsonl", std::process::id()));
    let window = [
        "--since".to_string(),
        Timestamp(since).to_string(),
        "--until".into(),
        Timestamp(until).to_string(),
    ];
    let mut args = vec!["record".to_string()];
    args.extend(fast(k));
    args.extend(window.iter().cloned());
    args.extend(["--out".into(), file.display().to_string()]);
    let out = run(&args);
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a bad record was skipped: {err}"
    );
    let place = format!(
        "{}[{}]@{}",
        k.topics().alerts,
        poison.partition,
        poison.offset
    );
    assert!(err.contains(&place), "the bad record is named: {err}");
    assert!(
        err.contains(&format!("recorded {} records (1 bad", want.len())),
        "{err}"
    );
    let got: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(got, want);

    // Only some topics: the alerts of the window.
    let mut args = vec!["record".to_string()];
    args.extend(fast(k));
    args.extend(window.iter().cloned());
    args.extend([
        "--from-topics".into(),
        "alerts".into(),
        "--out".into(),
        "-".into(),
    ]);
    let out = run(&args);
    let alerts: Vec<String> = want
        .iter()
        .filter(|l| l.contains(r#""kind":"alert""#))
        .cloned()
        .collect();
    assert_eq!(text(&out.stdout).lines().collect::<Vec<_>>(), alerts);

    // `replay --brokers` on the range decides as `replay --input` on the file.
    let policy = policy_file("record", RESTART_POLICY);
    let replay = |source: Vec<String>| {
        let mut a = vec![
            "replay".to_string(),
            "--quiet".into(),
            "--policy".into(),
            policy.display().to_string(),
        ];
        a.extend(source);
        run(&a)
    };
    let from_file = replay(vec!["--input".into(), file.display().to_string()]);
    assert!(from_file.status.success(), "{}", text(&from_file.stderr));
    let mut source = fast(k);
    source.extend(window.iter().cloned());
    let from_kafka = replay(source);
    assert_eq!(
        from_kafka.status.code(),
        Some(1),
        "the poison record is a bad line: {}",
        text(&from_kafka.stderr)
    );
    assert!(text(&from_kafka.stderr).contains(&place));
    let outputs = text(&from_file.stdout);
    assert!(outputs.contains(r#""kind":"command""#), "{outputs}");
    assert_eq!(text(&from_kafka.stdout), outputs);

    // The same window recorded as an Avro object container file replays
    // to the same outputs.
    let avro = file.with_extension("avro");
    let mut args = vec!["record".to_string()];
    args.extend(fast(k));
    args.extend(window.iter().cloned());
    args.extend(["--out".into(), avro.display().to_string()]);
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let from_avro = replay(vec!["--input".into(), avro.display().to_string()]);
    assert!(from_avro.status.success(), "{}", text(&from_avro.stderr));
    assert_eq!(text(&from_avro.stdout), outputs);
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&avro);
}

#[test]
fn a_record_stamped_later_than_the_broker_wrote_it_is_in_the_window() {
    // A broker's time index may point past such a record (Tansu's memory
    // storage answers by write time); the range must still hold it.
    let Some(b) = real_broker() else { return };
    let k = setup(&b, "since", 1);
    let now = selfheal::live::wall_ms();
    let metric =
        |v: u32| format!(r#"{{"name":"up","labels":{{"service":"svc-0"}},"value":"{v}"}}"#);
    let ahead = json_input(&k, 0, "svc-0", now + 120_000, InputKind::Metric, &metric(1));
    std::thread::sleep(Duration::from_millis(1500));
    let since = selfheal::live::wall_ms();
    std::thread::sleep(Duration::from_millis(100));
    let _behind = json_input(&k, 0, "svc-0", now - 60_000, InputKind::Metric, &metric(2));
    let at_since = json_input(&k, 0, "svc-0", since + 500, InputKind::Metric, &metric(3));
    let mut args = vec!["record".to_string()];
    args.extend(fast(&k));
    args.extend([
        "--from-topics".into(),
        "metrics".into(),
        "--since".into(),
        Timestamp(since).to_string(),
        "--out".into(),
        "-".into(),
    ]);
    let out = run(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().collect::<Vec<_>>(),
        // One partition: its own order, whatever the timestamps.
        [ahead.line.unwrap(), at_since.line.unwrap()]
    );
}

/// A live run with tick-driven validation deadlines; returns the policy
/// it ran with.
fn live_run(k: &KafkaArgs, guarantee: &str) -> std::path::PathBuf {
    let policy = policy_file(
        "verify",
        r#"
runbooks:
  - name: restart-on-crash
    match: ['alertname="Crash"']
    tier: 1
    action: {kind: restart, target: '{{ labels.pod }}'}
    validate: {within: 3s}
    rollback: {kind: restart, target: '{{ labels.pod }}'}
"#,
    );
    let mut eng = engine(k, &policy, guarantee, &["-X", "fetch.wait.max.ms=10"]);
    eng.wait_log("partition assigned", 2, Duration::from_secs(60));
    let starts = Timestamp(selfheal::live::wall_ms()).to_string();
    for i in 0..5 {
        alert(
            k,
            "Crash",
            &format!("svc-{i}"),
            &format!(r#","pod":"pod-{i}""#),
            &starts,
        );
    }
    let cmds = wait_for("five commands", Duration::from_secs(60), || {
        let c = commands(k);
        (c.len() >= 5).then_some(c)
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let p = selfheal::live::tools::producer(k).unwrap();
        for c in &cmds {
            let r = Input::Result(selfheal::records::ActionResult {
                command_id: c.id.clone(),
                status: selfheal::records::ResultStatus::Succeeded,
                detail: "restarted".into(),
                at: None,
                previous: Default::default(),
            });
            let v = wire::encode_input(&r, Format::Avro).unwrap();
            selfheal::live::tools::publish(&p, &k.topics().results, &c.service, &v, "result", None)
                .await
                .unwrap();
        }
    });
    wait_for("five validation failures", Duration::from_secs(60), || {
        let n = escalations(k)
            .iter()
            .filter(|e| e.reason == EscalationReason::ValidationFailed)
            .count();
        (n >= 5).then_some(())
    });
    eng.terminate();
    policy
}

fn verify(k: &KafkaArgs, policy: &std::path::Path, guarantee: &str) -> Output {
    let mut a = vec!["audit".to_string(), "verify".into()];
    a.extend(fast(k));
    a.extend([
        "--policy".into(),
        policy.display().to_string(),
        "--processing-guarantee".into(),
        guarantee.into(),
    ]);
    run(&a)
}

fn live_run_verifies_and_another_policy_diverges(k: &KafkaArgs, guarantee: &str) {
    let policy = live_run(k, guarantee);
    let out = verify(k, &policy, guarantee);
    let so = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{so}{}", text(&out.stderr));
    assert!(so.contains("verified "), "{so}");

    // The first audit record of the run, by event time then service.
    let audits: Vec<selfheal::records::Audit> = outputs(k, &k.topics().audit)
        .into_iter()
        .filter_map(|o| match o {
            selfheal::records::Output::Audit(a) => Some(a),
            _ => None,
        })
        .collect();
    let first = audits
        .iter()
        .min_by(|a, b| (a.ts, &a.service, a.seq).cmp(&(b.ts, &b.service, b.seq)))
        .unwrap();
    let other = policy_file(
        "verify-other",
        &std::fs::read_to_string(&policy)
            .unwrap()
            .replace("tier: 1", "tier: 2"),
    );
    let out = verify(k, &other, guarantee);
    let so = text(&out.stdout);
    eprintln!("{so}");
    assert_eq!(out.status.code(), Some(1), "{so}{}", text(&out.stderr));
    assert!(
        so.contains(&format!(
            "DIVERGED: service {} seq {} ",
            first.service, first.seq
        )),
        "{so}"
    );
    assert!(so.contains("policy_version mismatch"), "{so}");
}

#[test]
fn audit_verify_passes_on_a_live_run_and_names_the_first_divergence_on_tansu() {
    let Some(b) = real_broker() else { return };
    let k = setup(&b, "verify", 2);
    live_run_verifies_and_another_policy_diverges(&k, "at_least_once");
}

#[test]
fn audit_verify_passes_on_a_transactional_live_run() {
    let cluster = MockCluster::new(1).unwrap();
    let k = KafkaArgs::local(&cluster.bootstrap_servers());
    for t in k.topics().all() {
        cluster.create_topic(t, 2, 1).unwrap();
    }
    live_run_verifies_and_another_policy_diverges(&k, "exactly_once");
}
