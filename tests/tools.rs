//! The operator tools as a user runs them, against a real broker with a
//! running engine: `alert publish`, the Alertmanager bridge, `approve`,
//! `kill-switch` and `audit tail --verify`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use selfheal::records::{EscalationReason, Output};

const POLICY: &str = r#"
runbooks:
  - name: restart-on-crash
    match: ['alertname="Crash"']
    tier: 1
    action: {kind: restart, target: '{{ labels.pod }}'}
    validate: {within: 10m}
  - name: failover-primary
    match: ['alertname="PrimaryDown"']
    tier: 2
    action: {kind: failover, target: '{{ labels.service }}'}
    validate: {within: 10m}
approvers: [alice@example.com]
"#;

fn selfheal(k: &selfheal::live::KafkaArgs, args: &[&str]) -> std::process::Output {
    let out = Command::new(BIN)
        .args(args)
        .args(kafka_flags(k))
        .output()
        .unwrap();
    eprintln!(
        "selfheal {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn operators_publish_approve_switch_and_verify_through_the_command_line() {
    let Some(b) = real_broker() else { return };
    let k = setup(&b, "tools", 3);
    let policy = policy_file("tools", POLICY);
    let _eng = engine(&k, &policy, "at_least_once", &[]);

    // An alert from flags becomes a tier-1 command.
    let out = selfheal(
        &k,
        &[
            "alert",
            "publish",
            "--name",
            "Crash",
            "--service",
            "checkout",
            "--label",
            "pod=checkout-7",
        ],
    );
    assert!(out.status.success());
    let cmd = wait_for("the restart command", Duration::from_secs(60), || {
        commands(&k).into_iter().find(|c| c.target == "checkout-7")
    });
    assert_eq!(cmd.tier, 1);

    // The bridge takes a whole Alertmanager payload.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut bridge_args = vec![
        "bridge".to_string(),
        "alertmanager".into(),
        "--listen".into(),
        addr.to_string(),
    ];
    bridge_args.extend(kafka_flags(&k));
    let _bridge = spawn("bridge", &bridge_args);
    let payload = r#"{"version":"4","status":"firing","receiver":"selfheal","alerts":[
        {"status":"firing","labels":{"alertname":"PrimaryDown","service":"orders"},"startsAt":"2026-11-21T10:00:00Z"},
        {"status":"firing","labels":{"alertname":"Crash","service":"search","pod":"search-2"},"startsAt":"2026-11-21T10:00:00Z"}]}"#;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("http://{addr}/alerts");
    let client = reqwest::Client::new();
    let status = wait_for("the bridge to answer", Duration::from_secs(30), || {
        rt.block_on(client.post(&url).body(payload).send())
            .ok()
            .map(|r| r.status().as_u16())
    });
    assert_eq!(status, 200);
    let bad = rt
        .block_on(
            client
                .post(&url)
                .body(r#"{"alerts":[{"status":"firing","labels":{}}]}"#)
                .send(),
        )
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    // The tier-2 proposal waits; `approve` looks its service up and lets it run.
    let req = wait_for("the approval request", Duration::from_secs(60), || {
        outputs(&k, &k.topics().approval_requests)
            .into_iter()
            .find_map(|o| match o {
                Output::ApprovalRequest(r) => Some(r),
                _ => None,
            })
    });
    assert!(commands(&k).iter().all(|c| c.action != "failover"));
    let out = selfheal(
        &k,
        &["approve", &req.command_id, "--by", "alice@example.com"],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("service orders"));
    let failover = wait_for("the approved failover", Duration::from_secs(60), || {
        commands(&k).into_iter().find(|c| c.action == "failover")
    });
    assert_eq!(failover.id, req.command_id);
    assert_eq!(failover.tier, 2);
    assert!(commands(&k).iter().any(|c| c.target == "search-2"));

    // The kill switch for one service blocks its actions only.
    let out = selfheal(
        &k,
        &[
            "kill-switch",
            "on",
            "--scope",
            "service:checkout",
            "--by",
            "bob",
        ],
    );
    assert!(out.status.success());
    std::thread::sleep(Duration::from_secs(1));
    let out = selfheal(
        &k,
        &[
            "alert",
            "publish",
            "--name",
            "Crash",
            "--service",
            "checkout",
            "--label",
            "pod=checkout-8",
        ],
    );
    assert!(out.status.success());
    wait_for("the guardrail escalation", Duration::from_secs(60), || {
        escalations(&k)
            .into_iter()
            .find(|e| e.service == "checkout" && e.reason == EscalationReason::Guardrail)
    });
    assert!(commands(&k).iter().all(|c| c.target != "checkout-8"));

    // Every decision is in the audit topic, and the chains verify.
    let out = selfheal(&k, &["audit", "tail", "--verify", "--no-follow"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("kill_switch"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 break(s)"));

    // A forged audit record breaks the chain, and verification says so.
    let forged = outputs(&k, &k.topics().audit)
        .into_iter()
        .find_map(|o| match o {
            Output::Audit(mut a) if a.service == "checkout" => {
                a.seq += 1000;
                a.reasons = vec!["nothing to see".into()];
                Some(a)
            }
            _ => None,
        })
        .unwrap();
    rt.block_on(async {
        let p = selfheal::live::tools::producer(&k).unwrap();
        let v = selfheal::live::wire::encode_output(
            &Output::Audit(forged),
            selfheal::live::wire::Format::Json,
        );
        selfheal::live::tools::publish(&p, &k.topics().audit, "checkout", &v, "audit", None)
            .await
            .unwrap();
    });
    let out = selfheal(
        &k,
        &[
            "audit",
            "tail",
            "--verify",
            "--no-follow",
            "--service",
            "checkout",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CHAIN BROKEN"));
}
