//! The engine and executors as processes against a broker: the
//! transactional path on librdkafka's mock cluster, the at-least-once
//! path with deduplication on a real broker (Tansu in CI, through
//! `scripts/test.sh`).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rdkafka::mocking::MockCluster;
use selfheal::live::KafkaArgs;
use selfheal::records::EscalationReason;

fn now_rfc3339() -> String {
    selfheal::time::Timestamp(selfheal::live::wall_ms()).to_string()
}

/// Waits, watching `eng`, until the actions topic holds commands for the
/// pods of `want` and for no other.
fn wait_for_targets(
    what: &str,
    limit: Duration,
    eng: &mut Proc,
    k: &KafkaArgs,
    want: &HashSet<String>,
) {
    wait_for_procs(what, limit, &mut [eng], || {
        let targets: HashSet<String> = commands(k).into_iter().map(|c| c.target).collect();
        (targets == *want).then_some(())
    });
}

/// Waits, watching `eng`, until its log holds every one of `needles`.
fn wait_for_logged(what: &str, limit: Duration, eng: &mut Proc, needles: &[&str]) {
    let log = eng.log.clone();
    wait_for_procs(what, limit, &mut [eng], || {
        let text = std::fs::read_to_string(&log).ok()?;
        needles.iter().all(|n| text.contains(n)).then_some(())
    });
}

/// Publishes `n` crash alerts for distinct pods from `from`, returning the
/// pods.
fn crash_alerts(k: &KafkaArgs, from: usize, n: usize) -> Vec<String> {
    let starts = now_rfc3339();
    (from..from + n)
        .map(|i| {
            let pod = format!("pod-{i}");
            alert(
                k,
                "Crash",
                &format!("svc-{}", i % 7),
                &format!(r#","pod":"{pod}""#),
                &starts,
            );
            pod
        })
        .collect()
}

fn count_by_id(cmds: &[selfheal::records::Command]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for c in cmds {
        *m.entry(c.id.clone()).or_insert(0) += 1;
    }
    m
}

/// A member whose heartbeats stop reaching the group coordinator loses
/// its partitions when its session times out (6 s here), and another
/// engine may own them by then. The engine writes nothing more for them,
/// says why, starts over from the journals, and once the coordinator is
/// back it owns the partitions again and decides what comes next.
#[test]
fn an_engine_whose_session_times_out_writes_nothing_more_and_starts_over() {
    use rdkafka::mocking::MockCoordinator;
    // Broker 1 leads every partition; broker 2 coordinates the group, so
    // only the group's requests fail while it is down.
    let cluster = MockCluster::new(2).unwrap();
    let k = KafkaArgs::local(&cluster.bootstrap_servers());
    for t in k.topics().all() {
        cluster.create_topic(t, 3, 1).unwrap();
        for p in 0..3 {
            cluster.partition_leader(t, p, Some(1)).unwrap();
        }
    }
    let group = format!("{}engine", k.topic_prefix);
    cluster
        .coordinator(MockCoordinator::Group(group.clone()), 2)
        .unwrap();
    let policy = policy_file("session-lost", RESTART_POLICY);
    let mut eng = engine_in(&k, &group, &policy, "at_least_once", &[]);
    eng.wait_log("partition assigned", 3, Duration::from_secs(60));
    let mut want: HashSet<String> = crash_alerts(&k, 0, 6).into_iter().collect();
    let first = Duration::from_secs(60);
    wait_for_targets("the first commands", first, &mut eng, &k, &want);
    cluster.broker_down(2).unwrap();
    wait_for_logged(
        "the engine to report its lost partitions",
        Duration::from_secs(60),
        &mut eng,
        &["the consumer group took back partitions [0, 1, 2]"],
    );
    cluster.broker_up(2).unwrap();
    want.extend(crash_alerts(&k, 6, 6));
    wait_for_targets(
        "every command after the coordinator came back",
        Duration::from_secs(90),
        &mut eng,
        &k,
        &want,
    );
    let restarts: Vec<String> = eng
        .log_text()
        .lines()
        .filter(|l| l.contains("restarting from the journals"))
        .map(str::to_string)
        .collect();
    assert!(
        restarts.iter().any(|l| l.contains("took back partitions")),
        "no restart for the lost partitions:\n{}",
        eng.log_text()
    );
}

#[test]
fn exactly_once_engine_killed_mid_stream_emits_each_command_once() {
    let cluster = MockCluster::new(1).unwrap();
    let k = KafkaArgs::local(&cluster.bootstrap_servers());
    for t in k.topics().all() {
        cluster.create_topic(t, 3, 1).unwrap();
    }
    let policy = policy_file("eos", RESTART_POLICY);
    let start = |k: &KafkaArgs| {
        let e = engine(k, &policy, "exactly_once", &["--instance", "eos-a"]);
        e.wait_log("partition assigned", 3, Duration::from_secs(60));
        e
    };
    let mut eng = start(&k);
    let mut pods = Vec::new();
    for round in 0..3 {
        // Kill while the batch is being processed and committed.
        pods.extend(crash_alerts(&k, round * 10, 10));
        std::thread::sleep(Duration::from_millis(50 + 150 * round as u64));
        eng.kill9();
        eng = start(&k);
    }
    pods.extend(crash_alerts(&k, 30, 10));
    let want = pods.len();
    let cmds = wait_for("a command for every alert", Duration::from_secs(90), || {
        let c = commands(&k);
        (count_by_id(&c).len() >= want).then_some(c)
    });
    // Give a zombie transaction time to show up if it could.
    std::thread::sleep(Duration::from_secs(2));
    let cmds = {
        let again = commands(&k);
        assert!(again.len() >= cmds.len());
        again
    };
    // Counted in committed transactions only (see `committed_commands`).
    let (copies, aborted) = committed_commands(&k);
    let dups: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "commands emitted twice: {dups:?}");
    let targets: HashSet<String> = cmds
        .iter()
        .filter(|c| copies.contains_key(&c.id))
        .map(|c| c.target.clone())
        .collect();
    for p in &pods {
        assert!(targets.contains(p), "no committed command for {p}");
    }
    assert_eq!(copies.len(), want, "committed commands: {copies:?}");
    assert_eq!(
        cmds.len(),
        want + aborted,
        "command records beside the committed ones and those of aborted transactions"
    );
    // The restarted engine rebuilt its state from the journal.
    let log = eng.log_text();
    let recovered = log
        .lines()
        .filter(|l| l.contains("state rebuilt from the journal"))
        .any(|l| !l.contains("entries=0"));
    assert!(
        recovered,
        "the last engine recovered nothing from the journal:\n{log}"
    );
}

#[test]
fn at_least_once_engine_killed_and_restarted_executes_each_command_once() {
    let Some(b) = real_broker() else { return };
    let k = setup(&b, "alo", 3);
    let policy = policy_file("alo", RESTART_POLICY);
    let handler = Handler::start(Duration::from_millis(50));
    let _exec = executor(&k, &handler.url);
    let start = |k: &KafkaArgs| engine(k, &policy, "at_least_once", &[]);
    let mut eng = start(&k);
    let mut pods = Vec::new();
    for round in 0..3 {
        pods.extend(crash_alerts(&k, round * 8, 8));
        std::thread::sleep(Duration::from_millis(400 + 300 * round as u64));
        eng.kill9();
        eng = start(&k);
    }
    let want: HashSet<String> = pods.iter().cloned().collect();
    let counts = wait_for("every command executed", Duration::from_secs(120), || {
        let c = handler.counts();
        (c.len() >= want.len()).then_some(c)
    });
    std::thread::sleep(Duration::from_secs(3));
    let counts_after = handler.counts();
    assert_eq!(counts, counts_after, "a command ran again later");
    let twice: Vec<_> = counts_after.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "executed more than once: {twice:?}");
    // Every executed command is one the engine decided for one of our pods.
    let cmds = commands(&k);
    let by_id: HashMap<_, _> = cmds
        .iter()
        .map(|c| (c.id.clone(), c.target.clone()))
        .collect();
    let targets: HashSet<String> = counts_after
        .keys()
        .map(|id| by_id.get(id).cloned().unwrap_or_default())
        .collect();
    assert_eq!(targets, want);
    drop(eng);
}

/// Two engines owning one partition at once (a group coordinator that
/// let a new member in before the old owner gave the partition up) both
/// write its journal. Under at_least_once nothing fences them, so the
/// engine watches its journal's offsets: a record it did not write, found
/// between its own, stops it; it restarts from the journals, rejoining the
/// group, and goes on deciding. The other writer here is the test, with a
/// journal record of no entries in every partition.
#[test]
fn an_engine_that_finds_another_writer_in_its_journal_restarts_from_the_journals() {
    let Some(b) = real_broker() else { return };
    let k = setup(&b, "journal-writer", 3);
    let policy = policy_file("journal-writer", RESTART_POLICY);
    let mut eng = engine(&k, &policy, "at_least_once", &[]);
    eng.wait_log("partition assigned", 3, Duration::from_secs(60));
    let mut want: HashSet<String> = crash_alerts(&k, 0, 6).into_iter().collect();
    let first = Duration::from_secs(60);
    wait_for_targets("the first commands", first, &mut eng, &k, &want);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let producer = selfheal::live::tools::producer(&k).unwrap();
    for p in 0..3 {
        rt.block_on(selfheal::live::tools::publish(
            &producer,
            &k.topics().journal,
            &p.to_string(),
            &selfheal::live::journal::EMPTY,
            "journal",
            Some(p),
        ))
        .unwrap();
    }
    // The next batch's journal record lands after the other writer's.
    want.extend(crash_alerts(&k, 6, 6));
    wait_for_logged(
        "the engine to find the other writer and restart",
        Duration::from_secs(60),
        &mut eng,
        &["another writer", "restarting from the journals"],
    );
    // Restarted, it decides what comes next, and nothing was lost.
    want.extend(crash_alerts(&k, 12, 6));
    wait_for_targets(
        "every pod's command after the restart",
        Duration::from_secs(60),
        &mut eng,
        &k,
        &want,
    );
    // Other restarts (a broker hiccup) are not this test's business; a
    // second one for the same other writer would be a restart loop.
    let restarted = eng
        .log_text()
        .lines()
        .filter(|l| l.contains("restarting from the journals") && l.contains("another writer"))
        .count();
    assert_eq!(
        restarted,
        1,
        "one restart, for the one other writer:\n{}",
        eng.log_text()
    );
}

#[test]
fn a_poison_record_goes_to_the_dlq_and_later_records_are_decided() {
    let Some(b) = real_broker() else { return };
    let k = setup(&b, "dlq", 1);
    let policy = policy_file("dlq", RESTART_POLICY);
    let _eng = engine(&k, &policy, "at_least_once", &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let p = selfheal::live::tools::producer(&k).unwrap();
        let t = k.topics();
        for (topic, value) in [
            (&t.alerts, &b"{not json"[..]),
            (
                &t.metrics,
                &br#"{"name":"x","value":"NaN","labels":{"service":"a"}}"#[..],
            ),
            (&t.alerts, &br#"{"status":"firing","labels":{}}"#[..]),
            (&t.results, &[0xc3u8, 0x01, 0xde, 0xad][..]),
        ] {
            selfheal::live::tools::publish(&p, topic, "svc-0", value, "x", None)
                .await
                .unwrap();
        }
    });
    crash_alerts(&k, 0, 1);
    let cmd = wait_for("the valid alert's command", Duration::from_secs(60), || {
        commands(&k).into_iter().next()
    });
    assert_eq!(cmd.target, "pod-0");
    let dead = wait_for("four dead letters", Duration::from_secs(30), || {
        let mut v = Vec::new();
        selfheal::live::tools::scan_topic_from(&k, &k.topics().dlq, false, None, |m| {
            use rdkafka::Message;
            let h = |key: &str| {
                selfheal::live::wire::header(m.headers(), key)
                    .unwrap_or_default()
                    .to_string()
            };
            v.push((
                h("selfheal-error-code"),
                h("selfheal-error"),
                h("selfheal-source-topic"),
            ));
            true
        })
        .unwrap();
        (v.len() >= 4).then_some(v)
    });
    // Topics are consumed side by side, so only the set is fixed.
    let mut codes: Vec<&str> = dead.iter().map(|d| d.0.as_str()).collect();
    codes.sort_unstable();
    assert_eq!(
        codes,
        [
            "invalid_value",
            "malformed_avro",
            "malformed_json",
            "missing_field"
        ],
        "{dead:?}"
    );
    assert!(dead.iter().all(|d| !d.1.is_empty() && !d.2.is_empty()));
}

#[test]
fn an_executor_killed_mid_command_does_not_run_it_again() {
    let Some(b) = real_broker() else { return };
    let k = setup(&b, "exec", 1);
    let policy = policy_file("exec", RESTART_POLICY);
    let handler = Handler::start(Duration::from_secs(6));
    let _eng = engine(&k, &policy, "at_least_once", &[]);
    let mut exec = executor(&k, &handler.url);
    crash_alerts(&k, 0, 1);
    wait_for("the command to start", Duration::from_secs(60), || {
        (handler.counts().len() == 1).then_some(())
    });
    exec.kill9();
    let _exec2 = executor(&k, &handler.url);
    // The replacement reads the ledger, finds the claim and leaves it; the
    // command's result never comes, so the engine escalates once its
    // deadline and timeout pass (not waited for here).
    std::thread::sleep(Duration::from_secs(15));
    let counts = handler.counts();
    assert_eq!(counts.len(), 1);
    assert!(counts.values().all(|n| *n == 1), "ran again: {counts:?}");
}

#[test]
fn the_kill_switch_stops_actions_within_a_second() {
    let Some(b) = real_broker() else { return };
    let k = setup(&b, "kill", 3);
    let policy = policy_file("kill", RESTART_POLICY);
    let handler = Handler::start(Duration::from_millis(10));
    let _eng = engine(&k, &policy, "at_least_once", &[]);
    let _exec = executor(&k, &handler.url);
    // Actions flow before the switch.
    crash_alerts(&k, 0, 1);
    wait_for("the first command to run", Duration::from_secs(60), || {
        (handler.counts().len() == 1).then_some(())
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(selfheal::live::tools::kill_switch(
        &k,
        selfheal::records::Scope::Global,
        true,
        None,
        "test",
        selfheal::live::wire::Format::Json,
    ))
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    crash_alerts(&k, 1, 6);
    let blocked = wait_for("six guardrail escalations", Duration::from_secs(60), || {
        let e: Vec<_> = escalations(&k)
            .into_iter()
            .filter(|e| e.reason == EscalationReason::Guardrail)
            .collect();
        (e.len() >= 6).then_some(e)
    });
    assert!(
        blocked
            .iter()
            .all(|e| e.summary.contains("kill") || e.context.values().any(|v| v.contains("kill"))),
        "{blocked:?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        handler.counts().len(),
        1,
        "an action ran with the kill switch on"
    );
    assert_eq!(commands(&k).len(), 1);
}

#[test]
fn a_live_run_replays_exactly_from_its_journal() {
    let cluster = MockCluster::new(1).unwrap();
    let k = KafkaArgs::local(&cluster.bootstrap_servers());
    for t in k.topics().all() {
        cluster.create_topic(t, 2, 1).unwrap();
    }
    // Validation ends 3s after a success: only clock ticks get it there.
    let policy = policy_file(
        "replay",
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
    let mut eng = engine(&k, &policy, "exactly_once", &[]);
    eng.wait_log("partition assigned", 2, Duration::from_secs(60));
    crash_alerts(&k, 0, 5);
    let cmds = wait_for("five commands", Duration::from_secs(60), || {
        let c = commands(&k);
        (c.len() >= 5).then_some(c)
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let p = selfheal::live::tools::producer(&k).unwrap();
        for c in &cmds {
            let r = selfheal::records::Input::Result(selfheal::records::ActionResult {
                command_id: c.id.clone(),
                status: selfheal::records::ResultStatus::Succeeded,
                detail: "restarted".into(),
                at: None,
                previous: Default::default(),
            });
            let v =
                selfheal::live::wire::encode_input(&r, selfheal::live::wire::Format::Avro).unwrap();
            selfheal::live::tools::publish(&p, &k.topics().results, &c.service, &v, "result", None)
                .await
                .unwrap();
        }
    });
    wait_for("five validation failures", Duration::from_secs(60), || {
        let n = escalations(&k)
            .iter()
            .filter(|e| e.reason == EscalationReason::ValidationFailed)
            .count();
        (n >= 5).then_some(())
    });
    eng.terminate();

    let chains = |audits: &mut dyn Iterator<Item = (String, String)>| {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for (service, hash) in audits {
            m.entry(service).or_default().push(hash);
        }
        m
    };
    let live = chains(
        &mut outputs(&k, &k.topics().audit)
            .into_iter()
            .filter_map(|o| match o {
                selfheal::records::Output::Audit(a) => Some((a.service, a.hash)),
                _ => None,
            }),
    );
    let mut replayed = Vec::new();
    for p in 0..2 {
        let file =
            std::env::temp_dir().join(format!("selfheal-journal-{}-{p}.jsonl", std::process::id()));
        let mut args = vec![
            "journal".to_string(),
            "export".into(),
            "--partition".into(),
            p.to_string(),
        ];
        args.extend(kafka_flags(&k));
        args.extend(["--out".into(), file.display().to_string()]);
        let st = std::process::Command::new(BIN)
            .args(&args)
            .status()
            .unwrap();
        assert!(st.success());
        let out = std::process::Command::new(BIN)
            .args([
                "replay",
                "--quiet",
                "--policy",
                &policy.display().to_string(),
                "--input",
                &file.display().to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["kind"] == "audit" {
                replayed.push((
                    v["data"]["service"].as_str().unwrap().to_string(),
                    v["data"]["hash"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    let replayed = chains(&mut replayed.into_iter());
    assert!(live.values().map(Vec::len).sum::<usize>() >= 15, "{live:?}");
    assert_eq!(
        replayed, live,
        "replaying the journals gives other audit records"
    );
}

#[test]
fn an_executor_does_not_start_a_command_past_its_deadline() {
    let Some(b) = real_broker() else { return };
    let k = setup(&b, "deadline", 1);
    let handler = Handler::start(Duration::from_millis(10));
    let _exec = executor(&k, &handler.url);
    let now = selfheal::live::wall_ms();
    let cmd = |id: &str, deadline: i64| selfheal::records::Command {
        id: id.into(),
        incident: "inc-1".into(),
        runbook: "restart-on-crash".into(),
        action: "restart".into(),
        target: "pod-1".into(),
        params: Default::default(),
        args: Vec::new(),
        tier: 1,
        deadline: selfheal::time::Timestamp(deadline),
        timeout: "30s".into(),
        rollback_of: None,
        service: "svc-1".into(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let p = selfheal::live::tools::producer(&k).unwrap();
        for c in [cmd("cmd-late", now - 60_000), cmd("cmd-due", now + 600_000)] {
            let v = selfheal::live::wire::encode_output(
                &selfheal::records::Output::Command(c),
                selfheal::live::wire::Format::Avro,
            );
            selfheal::live::tools::publish(&p, &k.topics().actions, "svc-1", &v, "command", None)
                .await
                .unwrap();
        }
    });
    let results = wait_for("two results", Duration::from_secs(60), || {
        let mut v = Vec::new();
        selfheal::live::tools::scan_topic(&k, &k.topics().results, false, |_, value| {
            if let Ok(selfheal::records::Input::Result(r)) =
                selfheal::records::avro::decode_value(selfheal::records::InputKind::Result, value)
            {
                v.push(r);
            }
            true
        })
        .unwrap();
        (v.len() >= 2).then_some(v)
    });
    let late = results.iter().find(|r| r.command_id == "cmd-late").unwrap();
    assert_eq!(late.status, selfheal::records::ResultStatus::TimedOut);
    assert!(late.detail.contains("not started"), "{}", late.detail);
    let due = results.iter().find(|r| r.command_id == "cmd-due").unwrap();
    assert_eq!(due.status, selfheal::records::ResultStatus::Succeeded);
    let counts = handler.counts();
    assert_eq!(counts.get("cmd-due"), Some(&1));
    assert!(!counts.contains_key("cmd-late"));
}

/// A fake Kubernetes API server with deployment shop/checkout at 3
/// replicas; returns its kubeconfig and the bodies of the PATCHes it got.
fn fake_kube_api(rt: &tokio::runtime::Runtime) -> (std::path::PathBuf, Arc<Mutex<Vec<String>>>) {
    use axum::routing::get;
    let patches: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = patches.clone();
    let scale = |n: i64| {
        axum::Json(serde_json::json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "checkout", "namespace": "shop"},
            "spec": {"replicas": n}, "status": {"replicas": n},
        }))
    };
    let app = axum::Router::new().route(
        "/apis/apps/v1/namespaces/shop/deployments/checkout/scale",
        get(move || async move { scale(3) }).patch(move |body: String| async move {
            let n = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["spec"]["replicas"].as_i64())
                .unwrap_or(-1);
            seen.lock().unwrap().push(body);
            scale(n)
        }),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let kubeconfig = policy_file(
        "kubeconfig",
        &format!("apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: u\ncurrent-context: fake\nusers:\n- name: u\n  user:\n    token: t\n"),
    );
    (kubeconfig, patches)
}

#[test]
fn an_executor_scales_a_deployment_and_reports_the_previous_count() {
    let Some(b) = real_broker() else { return };
    let k = setup(&b, "k8s-scale", 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (kubeconfig, patches) = fake_kube_api(&rt);
    let mut a = vec!["executor".to_string()];
    a.extend(kafka_flags(&k));
    a.extend([
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--k8s-namespaces".into(),
        "shop,web".into(),
        "--group".into(),
        format!("{}executor", k.topic_prefix),
        "-X".into(),
        "consumer.session.timeout.ms=6000".into(),
    ]);
    let _exec = spawn("executor", &a);
    let cmd = selfheal::records::Command {
        id: "cmd-scale".into(),
        incident: "inc-1".into(),
        runbook: "scale-checkout".into(),
        action: "k8s.scale".into(),
        target: "shop/checkout".into(),
        params: [("replicas", "+2"), ("max_replicas", "20")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        args: Vec::new(),
        tier: 1,
        deadline: selfheal::time::Timestamp(selfheal::live::wall_ms() + 600_000),
        timeout: "30s".into(),
        rollback_of: None,
        service: "checkout".into(),
    };
    rt.block_on(async {
        let p = selfheal::live::tools::producer(&k).unwrap();
        let v = selfheal::live::wire::encode_output(
            &selfheal::records::Output::Command(cmd),
            selfheal::live::wire::Format::Avro,
        );
        selfheal::live::tools::publish(&p, &k.topics().actions, "checkout", &v, "command", None)
            .await
            .unwrap();
    });
    let result = wait_for("the result", Duration::from_secs(60), || {
        let mut found = None;
        selfheal::live::tools::scan_topic(&k, &k.topics().results, false, |_, value| {
            if let Ok(selfheal::records::Input::Result(r)) =
                selfheal::records::avro::decode_value(selfheal::records::InputKind::Result, value)
            {
                found = Some(r);
            }
            true
        })
        .unwrap();
        found
    });
    assert_eq!(result.command_id, "cmd-scale");
    assert_eq!(
        result.status,
        selfheal::records::ResultStatus::Succeeded,
        "{}",
        result.detail
    );
    assert_eq!(
        result.previous.get("replicas").map(String::as_str),
        Some("3")
    );
    assert_eq!(*patches.lock().unwrap(), [r#"{"spec":{"replicas":5}}"#]);
    let _ = std::fs::remove_file(kubeconfig);
}

const BACKLOG_POLICY: &str = r#"
slos:
  - name: api-availability
    service: svc-0
    objective: 99.9
    sli:
      total: 'http_requests_total{service="svc-0"}'
      bad: 'http_requests_total{service="svc-0",code=~"5.."}'
runbooks:
  - name: restart-on-crash
    match: ['alertname="Crash"']
    tier: 1
    action: {kind: restart, target: '{{ labels.pod }}', timeout: 30s}
    validate: {within: 10m}
"#;

/// Writes 30 minutes of metric samples (every 10 s, two series) and two
/// alerts 20 and 2 minutes ago, each stamped with its event time, before
/// any engine runs: a backlog to catch up on.
fn write_backlog(k: &KafkaArgs) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let now = selfheal::live::wall_ms();
    let t = k.topics();
    let mut records: Vec<(String, i64, Vec<u8>)> = Vec::new();
    for i in 0..180i64 {
        let ts = now - 30 * 60_000 + i * 10_000;
        for (code, per) in [("200", 100), ("500", 0)] {
            let value = format!(
                r#"{{"name":"http_requests_total","value":"{}","labels":{{"service":"svc-0","code":"{code}"}}}}"#,
                i * per
            );
            records.push((t.metrics.clone(), ts, value.into_bytes()));
        }
    }
    for (pod, ago) in [("pod-early", 20), ("pod-late", 2)] {
        let ts = now - ago * 60_000;
        let value = format!(
            r#"{{"status":"firing","labels":{{"alertname":"Crash","service":"svc-0","pod":"{pod}"}},"startsAt":"{}"}}"#,
            selfheal::time::Timestamp(ts)
        );
        records.push((t.alerts.clone(), ts, value.into_bytes()));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let p: FutureProducer = k.producer_config().unwrap().create().unwrap();
        for (topic, ts, value) in &records {
            p.send(
                FutureRecord::to(topic)
                    .key("svc-0")
                    .payload(value.as_slice())
                    .timestamp(*ts),
                Duration::from_secs(15),
            )
            .await
            .unwrap();
        }
    });
}

/// The consumer reads topics side by side: the two alerts arrive long
/// before the metrics between them. Without the engine's pacing by
/// timestamp, the later alert would move the partition's event time 28
/// minutes ahead and every metric sample in between would be dead-lettered
/// as later than `--max-lateness 1m`.
fn backlog_is_decided_in_timestamp_order(k: &KafkaArgs, guarantee: &str) {
    write_backlog(k);
    let policy = policy_file("backlog", BACKLOG_POLICY);
    let _eng = engine(k, &policy, guarantee, &["--max-lateness", "1m"]);
    let cmds = wait_for("both alerts' commands", Duration::from_secs(60), || {
        let c = commands(k);
        (c.len() >= 2).then_some(c)
    });
    let mut targets: Vec<&str> = cmds.iter().map(|c| c.target.as_str()).collect();
    targets.sort_unstable();
    assert_eq!(targets, ["pod-early", "pod-late"]);
    // The samples up to now are consumed well before the engine idles.
    std::thread::sleep(Duration::from_secs(3));
    let mut dead = Vec::new();
    selfheal::live::tools::scan_topic_from(k, &k.topics().dlq, false, None, |m| {
        use rdkafka::Message;
        dead.push(
            selfheal::live::wire::header(m.headers(), "selfheal-error")
                .unwrap_or_default()
                .to_string(),
        );
        true
    })
    .unwrap();
    assert!(
        dead.is_empty(),
        "{} dead letters, first: {:?}",
        dead.len(),
        dead.first()
    );
    // Once the engine idles, its group's committed offsets reach the end
    // of every input it read: no lag shows for what it has decided. Under
    // at_least_once a batch's offsets follow its journal's delivery, after
    // the batch itself. (The mock cluster does not store offsets committed
    // in a transaction, so exactly_once is not checked here.)
    if guarantee != "at_least_once" {
        return;
    }
    let group = format!("{}engine", k.topic_prefix);
    wait_for(
        "the group's offsets at the inputs' ends",
        Duration::from_secs(30),
        || {
            let lag = group_lag(k, &group, &[&k.topics().metrics, &k.topics().alerts]);
            (lag == 0).then_some(())
        },
    );
}

/// Records of `topics` (partition 0) past `group`'s committed offsets.
fn group_lag(k: &KafkaArgs, group: &str, topics: &[&str]) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let mut cc = k.consumer_config().unwrap();
    cc.set("group.id", group);
    let c: BaseConsumer = cc.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        tpl.add_partition(t, 0);
    }
    let Ok(committed) = c.committed_offsets(tpl, Duration::from_secs(10)) else {
        return i64::MAX;
    };
    topics
        .iter()
        .map(|t| {
            let (_, high) = c.fetch_watermarks(t, 0, Duration::from_secs(10)).unwrap();
            match committed.find_partition(t, 0).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => high - o,
                _ => high,
            }
        })
        .sum()
}

#[test]
fn a_backlog_across_topics_is_decided_in_timestamp_order_on_a_real_broker() {
    let Some(b) = real_broker() else { return };
    let k = setup(&b, "backlog", 1);
    backlog_is_decided_in_timestamp_order(&k, "at_least_once");
}

#[test]
fn a_backlog_across_topics_is_decided_in_timestamp_order_with_transactions() {
    let cluster = MockCluster::new(1).unwrap();
    let k = KafkaArgs::local(&cluster.bootstrap_servers());
    for t in k.topics().all() {
        cluster.create_topic(t, 1, 1).unwrap();
    }
    backlog_is_decided_in_timestamp_order(&k, "exactly_once");
}

fn audits_of(k: &KafkaArgs, decision: &str) -> Vec<selfheal::records::Audit> {
    outputs(k, &k.topics().audit)
        .into_iter()
        .filter_map(|o| match o {
            selfheal::records::Output::Audit(a) if a.decision == decision => Some(a),
            _ => None,
        })
        .collect()
}

#[test]
fn an_edited_policy_file_decides_the_next_incident_under_a_running_engine() {
    let Some(b) = real_broker() else { return };
    let k = setup(&b, "reload", 3);
    policy_reload_under_a_running_engine(&k, "at_least_once");
}

#[test]
fn a_policy_reload_commits_with_transactions() {
    let cluster = MockCluster::new(1).unwrap();
    let k = KafkaArgs::local(&cluster.bootstrap_servers());
    for t in k.topics().all() {
        cluster.create_topic(t, 3, 1).unwrap();
    }
    policy_reload_under_a_running_engine(&k, "exactly_once");
}

/// A running engine takes an edited policy file for the next incident,
/// refuses an invalid one, hears a reload control record, and its
/// journals replay to the same audit records.
fn policy_reload_under_a_running_engine(k: &KafkaArgs, guarantee: &str) {
    let k = k.clone();
    let policy = policy_file("reload", RESTART_POLICY);
    let first = policy_file("reload-first", RESTART_POLICY);
    let mut eng = engine(&k, &policy, guarantee, &["--policy-reload", "1s"]);
    eng.wait_log("partition assigned", 3, Duration::from_secs(60));
    crash_alerts(&k, 0, 1);
    let c = wait_for("the first command", Duration::from_secs(60), || {
        commands(&k).into_iter().next()
    });
    assert_eq!(
        (c.action.as_str(), c.runbook.as_str()),
        ("restart", "restart-on-crash")
    );

    // A new runbook for the same alerts.
    let failover = RESTART_POLICY
        .replace("restart-on-crash", "failover-on-crash")
        .replace("kind: restart", "kind: failover");
    std::fs::write(&policy, &failover).unwrap();
    eng.wait_log("policy file changed", 1, Duration::from_secs(30));
    crash_alerts(&k, 1, 1);
    let c = wait_for("a command for pod-1", Duration::from_secs(60), || {
        commands(&k).into_iter().find(|c| c.target == "pod-1")
    });
    assert_eq!(
        (c.action.as_str(), c.runbook.as_str()),
        ("failover", "failover-on-crash")
    );
    let new = selfheal::policy::load::version(&failover);
    let reloaded = wait_for("every core's reload audit", Duration::from_secs(30), || {
        let a = audits_of(&k, "policy_reloaded");
        (a.len() >= 3).then_some(a)
    });
    assert!(
        reloaded.iter().all(|a| a.policy_version == new),
        "{reloaded:?}"
    );
    let old = selfheal::policy::load::version(RESTART_POLICY);
    assert!(reloaded.iter().all(|a| a.reasons[0].contains(&old)));

    // An invalid file is refused; the last good policy keeps deciding.
    std::fs::write(&policy, "runbooks:\n  - name: broken\n    tier: 9\n").unwrap();
    eng.wait_log(
        "policy file refused; the policy stays",
        1,
        Duration::from_secs(30),
    );
    let refused = wait_for(
        "every core's refusal audit",
        Duration::from_secs(30),
        || {
            let a = audits_of(&k, "policy_reload_refused");
            (a.len() >= 3).then_some(a)
        },
    );
    assert!(
        refused.iter().all(|a| a.policy_version == new),
        "{refused:?}"
    );
    crash_alerts(&k, 2, 1);
    let c = wait_for("a command for pod-2", Duration::from_secs(60), || {
        commands(&k).into_iter().find(|c| c.target == "pod-2")
    });
    assert_eq!(c.action, "failover");

    // A reload control record reaches the engine.
    let mut a = vec!["reload-policy".to_string(), "--by".into(), "test".into()];
    a.extend(kafka_flags(&k));
    let st = std::process::Command::new(BIN).args(&a).status().unwrap();
    assert!(st.success());
    eng.wait_log(
        "reload requested; the policy file is unchanged",
        1,
        Duration::from_secs(30),
    );
    // A graceful stop commits the batch holding the reload request. (An
    // `at_least_once` engine killed before that commit has published the
    // batch's audit records without journaling them; its restart decides
    // those records again.)
    eng.terminate();

    // The journals replay to the same audit records, reloads included,
    // from the policy the engine started with.
    let mut a = vec!["audit".to_string(), "verify".into()];
    a.extend(kafka_flags(&k));
    a.extend([
        "--policy".into(),
        first.display().to_string(),
        "--processing-guarantee".into(),
        guarantee.into(),
    ]);
    let out = std::process::Command::new(BIN).args(&a).output().unwrap();
    let so = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{so}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        so.contains(" policy reloads)") && !so.contains("(0 policy reloads)"),
        "{so}"
    );
}
