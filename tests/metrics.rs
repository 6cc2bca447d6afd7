//! `--metrics-listen`: the engine and an executor as processes serve
//! `/metrics`, `/healthz` and `/readyz`; the figures move while an
//! incident flows through, and readiness follows the broker.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use selfheal::live::KafkaArgs;

const POLICY: &str = r#"
slos:
  - name: web-availability
    service: web
    objective: 99.9
    sli:
      total: 'http_requests_total{service="web"}'
      bad:   'http_requests_total{service="web",code=~"5.."}'
runbooks:
  - name: restart-on-crash
    match: ['alertname="Crash"']
    tier: 1
    action: {kind: restart, target: '{{ labels.pod }}', timeout: 30s}
    validate: {within: 10m}
guardrails:
  first_time: page
"#;

/// Request counters of service `web` for the last few minutes, stamped in
/// the past, with 10 % errors: the engine's minute evaluations find the
/// SLO burning.
fn publish_metrics(k: &KafkaArgs) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let p: FutureProducer = k.producer_config().unwrap().create().unwrap();
        let now = selfheal::live::wall_ms();
        for m in 0..5i64 {
            let ts = now - (5 - m) * 60_000;
            for (code, v) in [("200", 900 * (m + 1)), ("500", 100 * (m + 1))] {
                let value = format!(
                    r#"{{"name":"http_requests_total","labels":{{"service":"web","code":"{code}"}},"value":"{v}"}}"#
                );
                p.send(
                    FutureRecord::to(&k.topics().metrics)
                        .key("web")
                        .payload(value.as_bytes())
                        .timestamp(ts),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
            }
        }
    });
}

#[test]
fn engine_and_executor_metrics_move_with_an_incident() {
    let Some(b) = real_broker() else { return };
    let k = setup(&b, "metrics", 3);
    let policy = policy_file("metrics", POLICY);
    publish_metrics(&k);
    let handler = Handler::start(Duration::from_millis(20));
    let mut exec_args = vec!["executor".to_string()];
    exec_args.extend(kafka_flags(&k));
    exec_args.extend(
        [
            "--handler-url",
            &handler.url,
            "--group",
            &format!("{}executor", k.topic_prefix),
            "-X",
            "consumer.session.timeout.ms=6000",
            "--metrics-listen",
            "127.0.0.1:0",
        ]
        .map(String::from),
    );
    let exec = spawn("executor", &exec_args);
    let eng = engine(
        &k,
        &policy,
        "at_least_once",
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let (ea, xa) = (metrics_addr(&eng), metrics_addr(&exec));
    for (what, addr) in [("engine", &ea), ("executor", &xa)] {
        wait_for(
            &format!("{what} /readyz 200"),
            Duration::from_secs(60),
            || get(addr, "/readyz").filter(|(c, _)| *c == 200),
        );
        assert_eq!(get(addr, "/healthz").map(|r| r.0), Some(200), "{what}");
    }
    let metrics_topic = format!("topic=\"{}\"", k.topics().metrics);
    wait_for(
        "the metric samples consumed",
        Duration::from_secs(60),
        || {
            (value(
                &scrape(&ea),
                "selfheal_records_consumed_total",
                &[&metrics_topic],
            ) >= 10.0)
                .then_some(())
        },
    );
    let before = scrape(&ea);
    alert(
        &k,
        "Crash",
        "web",
        r#","pod":"web-1""#,
        &selfheal::time::Timestamp(selfheal::live::wall_ms()).to_string(),
    );
    wait_for("the restart carried out", Duration::from_secs(60), || {
        (!handler.counts().is_empty()).then_some(())
    });
    let results_topic = format!("topic=\"{}\"", k.topics().results);
    let after = wait_for(
        "the engine to count the result",
        Duration::from_secs(60),
        || {
            let t = scrape(&ea);
            (value(
                &t,
                "selfheal_action_results_total",
                &["status=\"succeeded\""],
            ) >= 1.0)
                .then_some(t)
        },
    );
    let alerts_topic = format!("topic=\"{}\"", k.topics().alerts);
    let consumed = |t: &str, topic: &str| value(t, "selfheal_records_consumed_total", &[topic]);
    assert!(consumed(&after, &alerts_topic) > consumed(&before, &alerts_topic));
    assert!(consumed(&after, &results_topic) >= 1.0);
    assert_eq!(
        value(
            &after,
            "selfheal_commands_total",
            &["runbook=\"restart-on-crash\"", "tier=\"1\""]
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        value(&after, "selfheal_signal_to_command_seconds_count", &[]),
        1.0
    );
    assert!(value(&after, "selfheal_commit_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(value(&after, "selfheal_broker_up", &[]), 1.0);
    // The burning SLO paged (no runbook for it: a first-time escalation),
    // and its gauges show the burn: 10 % errors is a burn rate of 100.
    assert!(
        value(&after, "selfheal_escalations_total", &["severity=\"page\""]) >= 1.0,
        "{after}"
    );
    for w in ["1h", "5m", "6h", "30m", "1d", "2h", "3d"] {
        let series = format!("selfheal_slo_burn_rate{{slo=\"web-availability\",window=\"{w}\"}}");
        assert!(after.contains(&series), "no {series} in\n{after}");
    }
    let burn = value(
        &after,
        "selfheal_slo_burn_rate",
        &["slo=\"web-availability\"", "window=\"1h\""],
    );
    assert!((burn - 100.0).abs() < 1.0, "burn {burn}");
    let budget = value(
        &after,
        "selfheal_slo_error_budget_remaining_ratio",
        &["slo=\"web-availability\""],
    );
    assert!(budget < 0.0, "budget {budget}");
    // The incident waits for validation (state gauges follow each second).
    wait_for("one incident validating", Duration::from_secs(10), || {
        (value(
            &scrape(&ea),
            "selfheal_incidents_open",
            &["state=\"validating\""],
        ) == 1.0)
            .then_some(())
    });

    let x = wait_for(
        "the executor to count the command",
        Duration::from_secs(30),
        || {
            let t = scrape(&xa);
            (value(&t, "selfheal_executor_commands_total", &[]) >= 1.0).then_some(t)
        },
    );
    assert_eq!(
        value(
            &x,
            "selfheal_executor_commands_total",
            &["action=\"restart\"", "status=\"succeeded\""]
        ),
        1.0,
        "{x}"
    );
    assert_eq!(
        value(
            &x,
            "selfheal_executor_command_duration_seconds_count",
            &["action=\"restart\""]
        ),
        1.0
    );
    assert_eq!(value(&x, "selfheal_executor_in_flight", &[]), 0.0);
    let actions_topic = format!("topic=\"{}\"", k.topics().actions);
    assert_eq!(
        value(&x, "selfheal_records_consumed_total", &[&actions_topic]),
        1.0
    );
    for (what, addr) in [("engine", &ea), ("executor", &xa)] {
        assert_eq!(get(addr, "/healthz").map(|r| r.0), Some(200), "{what}");
        assert_eq!(get(addr, "/readyz").map(|r| r.0), Some(200), "{what}");
    }
    // Consumer lag from the statistics (every 5 s): every record consumed.
    for (what, addr, topic) in [
        ("engine", &ea, &metrics_topic),
        ("executor", &xa, &actions_topic),
    ] {
        let t = wait_for(
            &format!("{what} consumer lag of {topic}"),
            Duration::from_secs(30),
            || {
                let t = scrape(addr);
                t.contains(&format!("selfheal_consumer_lag_records{{{topic}"))
                    .then_some(t)
            },
        );
        // Partitions that have delivered nothing have no position yet.
        assert_eq!(
            value(&t, "selfheal_consumer_lag_records", &[topic]),
            0.0,
            "{t}"
        );
    }
}

#[test]
fn readyz_is_503_while_the_broker_is_down_and_200_when_it_is_back() {
    let cluster = MockCluster::new(1).unwrap();
    let k = KafkaArgs::local(&cluster.bootstrap_servers());
    for t in k.topics().all() {
        cluster.create_topic(t, 1, 1).unwrap();
    }
    let policy = policy_file("readyz", RESTART_POLICY);
    let eng = engine(
        &k,
        &policy,
        "at_least_once",
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let addr = metrics_addr(&eng);
    wait_for("/readyz 200", Duration::from_secs(60), || {
        get(&addr, "/readyz").filter(|(c, _)| *c == 200)
    });
    cluster.broker_down(1).unwrap();
    let (_, why) = wait_for("/readyz 503", Duration::from_secs(60), || {
        get(&addr, "/readyz").filter(|(c, _)| *c == 503)
    });
    assert!(why.contains("broker"), "{why}");
    assert_eq!(value(&scrape(&addr), "selfheal_broker_up", &[]), 0.0);
    // Still alive: the loop turns while the broker is away.
    assert_eq!(get(&addr, "/healthz").map(|r| r.0), Some(200));
    cluster.broker_up(1).unwrap();
    wait_for("/readyz 200 again", Duration::from_secs(60), || {
        get(&addr, "/readyz").filter(|(c, _)| *c == 200)
    });
    assert_eq!(value(&scrape(&addr), "selfheal_broker_up", &[]), 1.0);
}

#[test]
fn consumer_lag_reaches_zero_under_exactly_once() {
    let cluster = MockCluster::new(1).unwrap();
    let k = KafkaArgs::local(&cluster.bootstrap_servers());
    for t in k.topics().all() {
        cluster.create_topic(t, 2, 1).unwrap();
    }
    let policy = policy_file("lag", RESTART_POLICY);
    let eng = engine(
        &k,
        &policy,
        "exactly_once",
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let addr = metrics_addr(&eng);
    eng.wait_log("partition assigned", 2, Duration::from_secs(60));
    let starts = selfheal::time::Timestamp(selfheal::live::wall_ms()).to_string();
    for i in 0..6 {
        alert(&k, "Crash", &format!("svc-{i}"), r#","pod":"p""#, &starts);
    }
    let alerts = format!("topic=\"{}\"", k.topics().alerts);
    // Offsets are committed in transactions; the lag still comes down to
    // 0 on every partition that delivered records.
    wait_for(
        "the alerts consumed and no lag left",
        Duration::from_secs(60),
        || {
            let t = scrape(&addr);
            (value(&t, "selfheal_records_consumed_total", &[&alerts]) == 6.0
                && t.contains(&format!("selfheal_consumer_lag_records{{{alerts}"))
                && value(&t, "selfheal_consumer_lag_records", &[&alerts]) == 0.0)
                .then_some(())
        },
    );
    assert!(value(&scrape(&addr), "selfheal_commands_total", &[]) >= 6.0);
}
