//! Signed approvals and secrets, through the live engine on the embedded
//! mock cluster.
//!
//! An engine started with `--approval-key-file` decides only on approvals
//! signed with that key: unsigned, forged and tampered ones go to the
//! dead-letter topic as `unauthenticated`, are logged, and never reach the
//! decision core; `selfheal approve --approval-key-file` signs. Neither the
//! approval key nor a SASL password given as `-X sasl.password=…` or
//! `SELFHEAL_KAFKA_SASL_PASSWORD` shows up in the debug log, the audit
//! records, the escalations, the dead letters or an error message.

mod common;

use std::process::{Command as Process, Stdio};
use std::time::Duration;

use common::*;
use rdkafka::mocking::MockCluster;
use selfheal::live::signing::ApprovalKey;
use selfheal::live::tools;
use selfheal::live::wire::{encode_input, Format};
use selfheal::live::KafkaArgs;
use selfheal::records::{Approval, Input, Output, Verdict};

const APPROVAL_KEY: &str = "k3y-Material-never-shown-4417";
const PASSWORD_FLAG: &str = "pw-from-flag-never-shown-9931";
const PASSWORD_ENV: &str = "pw-from-env-never-shown-2286";

const POLICY: &str = r#"
runbooks:
  - name: restart-on-crash
    match: ['alertname="Crash"']
    tier: 2
    action: {kind: restart, target: '{{ labels.pod }}', timeout: 1h}
    validate: {within: 1h}
approvers: [alice@example.com]
"#;

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!(
        "selfheal-approvals-{}-{name}-{}",
        std::process::id(),
        selfheal::live::wall_ms()
    ));
    std::fs::write(&p, text).unwrap();
    p
}

/// The engine at debug level, with the secrets in its settings.
fn engine_with_secrets(k: &KafkaArgs, policy: &std::path::Path, key: &std::path::Path) -> Proc {
    let log = temp_file("engine.log", "");
    let file = std::fs::File::create(&log).unwrap();
    let mut args = vec!["engine".to_string()];
    args.extend(kafka_flags(k));
    args.extend([
        "--policy".into(),
        policy.display().to_string(),
        "--processing-guarantee".into(),
        "at_least_once".into(),
        "--group".into(),
        format!("{}engine", k.topic_prefix),
        "--format".into(),
        "json".into(),
        "-X".into(),
        format!("sasl.password={PASSWORD_FLAG}"),
    ]);
    let child = Process::new(BIN)
        .args(&args)
        .env("RUST_LOG", "debug")
        .env("SELFHEAL_KAFKA_SASL_PASSWORD", PASSWORD_ENV)
        .env("SELFHEAL_APPROVAL_KEY_FILE", key)
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("starting selfheal");
    Proc {
        child,
        name: "engine".into(),
        log,
    }
}

fn publish_approval(k: &KafkaArgs, a: Approval, service: &str) {
    let value = encode_input(&Input::Approval(a), Format::Avro).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let p = tools::producer(k).unwrap();
        tools::publish(&p, &k.topics().approvals, service, &value, "approval", None)
            .await
            .unwrap();
    });
}

/// Dead letters as (code, reason, value).
fn dead_letters(k: &KafkaArgs) -> Vec<(String, String, Vec<u8>)> {
    let mut v = Vec::new();
    tools::scan_topic_from(k, &k.topics().dlq, false, None, |m| {
        use rdkafka::Message;
        let h = |key: &str| {
            selfheal::live::wire::header(m.headers(), key)
                .unwrap_or_default()
                .to_string()
        };
        v.push((
            h("selfheal-error-code"),
            h("selfheal-error"),
            m.payload().unwrap_or_default().to_vec(),
        ));
        true
    })
    .unwrap();
    v
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [APPROVAL_KEY, PASSWORD_FLAG, PASSWORD_ENV] {
        assert!(!text.contains(secret), "{what} shows a secret:\n{text}");
    }
}

#[test]
fn only_signed_approvals_reach_the_core_and_secrets_never_show() {
    let cluster = MockCluster::new(1).unwrap();
    let mut k = KafkaArgs::local(&cluster.bootstrap_servers());
    k.topic_prefix = unique_prefix("signed");
    for t in k.topics().all() {
        cluster.create_topic(t, 1, 1).unwrap();
    }
    let policy = policy_file("signed", POLICY);
    let key_file = temp_file("key", &format!("{APPROVAL_KEY}\n"));
    let key = ApprovalKey::load(&key_file).unwrap();
    let mut eng = engine_with_secrets(&k, &policy, &key_file);
    eng.wait_log("partition assigned", 1, Duration::from_secs(60));

    alert(
        &k,
        "Crash",
        "checkout",
        r#","pod":"checkout-1""#,
        "2026-03-01T10:00:00Z",
    );
    let request = wait_for("the approval request", Duration::from_secs(60), || {
        outputs(&k, &k.topics().approval_requests)
            .into_iter()
            .find_map(|o| match o {
                Output::ApprovalRequest(r) => Some(r),
                _ => None,
            })
    });
    let id = request.command_id.clone();
    let approval = |by: &str, decision: Verdict, sig: Option<String>| Approval {
        command_id: id.clone(),
        decision,
        by: by.into(),
        at: None,
        sig,
    };
    let alice_sig = key.sign(&id, Verdict::Approve, "alice@example.com");
    let forged = ApprovalKey::from_bytes(b"guessed").unwrap();
    let refused = [
        // No signature at all.
        approval("alice@example.com", Verdict::Approve, None),
        // Signed with another key.
        approval(
            "alice@example.com",
            Verdict::Approve,
            Some(forged.sign(&id, Verdict::Approve, "alice@example.com")),
        ),
        // Alice's signature on a record claiming another decision.
        approval(
            "alice@example.com",
            Verdict::Reject,
            Some(alice_sig.clone()),
        ),
        // Alice's signature under another approver's name.
        approval("bob@example.com", Verdict::Approve, Some(alice_sig.clone())),
        // Not hex.
        approval("alice@example.com", Verdict::Approve, Some("xyz".into())),
    ];
    for a in &refused {
        publish_approval(&k, a.clone(), "checkout");
    }
    let dead = wait_for("five dead letters", Duration::from_secs(60), || {
        let d = dead_letters(&k);
        (d.len() >= refused.len()).then_some(d)
    });
    assert_eq!(dead.len(), refused.len(), "{dead:?}");
    for (code, reason, _) in &dead {
        assert_eq!(code, "unauthenticated", "{reason}");
        assert!(reason.contains(&id), "{reason}");
    }
    assert!(dead[0].1.ends_with("has no signature"), "{:?}", dead[0].1);
    assert!(dead[1].1.ends_with("does not match"), "{:?}", dead[1].1);
    eng.wait_log("unauthenticated", 1, Duration::from_secs(10));
    // None of them was decided on: no command, and no audit of them.
    assert!(commands(&k).is_empty(), "{:?}", commands(&k));
    let audits = |k: &KafkaArgs| -> Vec<selfheal::records::Audit> {
        outputs(k, &k.topics().audit)
            .into_iter()
            .filter_map(|o| match o {
                Output::Audit(a) => Some(a),
                _ => None,
            })
            .collect()
    };
    assert!(
        audits(&k)
            .iter()
            .all(|a| a.inputs.iter().all(|i| !i.starts_with("approval@"))),
        "{:?}",
        audits(&k)
    );

    // `selfheal approve` signs with the key file and is decided on.
    let mut args = vec!["approve".to_string(), id.clone()];
    args.extend(kafka_flags(&k));
    args.extend([
        "--by".into(),
        "alice@example.com".into(),
        "--service".into(),
        "checkout".into(),
        "--approval-key-file".into(),
        key_file.display().to_string(),
    ]);
    let out = Process::new(BIN).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cmd = wait_for("the approved command", Duration::from_secs(60), || {
        commands(&k).into_iter().next()
    });
    assert_eq!(cmd.id, id);
    assert_eq!(dead_letters(&k).len(), refused.len());

    // A bad setting is reported without its text.
    let out = Process::new(BIN)
        .args([
            "topics",
            "create",
            "--brokers",
            &cluster.bootstrap_servers(),
        ])
        .args(["-X", PASSWORD_FLAG])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid Kafka setting"), "{err}");
    assert_no_secret("an error message", &err);

    eng.terminate();
    let log = eng.log_text();
    assert!(
        log.contains("DEBUG"),
        "the engine did not log at debug level"
    );
    assert_no_secret("the engine log", &log);
    for a in audits(&k) {
        assert_no_secret(
            "an audit record",
            &serde_json::to_string(&a.reasons).unwrap(),
        );
        assert_no_secret("an audit record", &format!("{a:?}"));
    }
    for e in escalations(&k) {
        assert_no_secret("an escalation", &format!("{e:?}"));
    }
    for (code, reason, value) in dead_letters(&k) {
        assert_no_secret("a dead letter", &format!("{code} {reason}"));
        assert_no_secret("a dead letter", &String::from_utf8_lossy(&value));
    }
    let _ = std::fs::remove_file(&key_file);
}
