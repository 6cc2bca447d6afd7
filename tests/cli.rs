//! The `selfheal` binary as a user runs it: exit codes, messages, files.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_selfheal"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("selfheal-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

#[test]
fn check_accepts_the_example_policy() {
    let out = bin()
        .args(["check", "--policy"])
        .arg(root().join("examples/policy.yaml"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ok (1 SLOs, 3 runbooks, version sha256:"),
        "{text}"
    );
}

#[test]
fn check_lists_every_problem_with_its_place() {
    let p = tmp("bad-policy.yaml");
    std::fs::write(
        &p,
        "runbooks:\n  - name: r\n    match: ['alertname=~\"(\"']\n    tier: 7\n    action: {kind: restart, target: '{{ lables.pod }}'}\n    validate: {within: 5 minutes}\nguardrails:\n  cooldwn: 5m\n",
    )
    .expect("write");
    let out = bin()
        .args(["check", "--policy"])
        .arg(&p)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "bad-policy.yaml:3:",
        "bad-policy.yaml:4:",
        "bad-policy.yaml:5:",
        "bad-policy.yaml:6:",
        "bad-policy.yaml:8:",
        "cooldwn",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn check_reports_kubernetes_problems_and_previous_outside_rollbacks() {
    let p = tmp("bad-k8s-policy.yaml");
    std::fs::write(
        &p,
        "kubernetes: {namespaces: [shop], resources: ['deployment/checkout'], max_replicas: 10}\nrunbooks:\n  - name: r\n    match: ['alertname=\"A\"']\n    tier: 1\n    action: {kind: k8s.scale, target: 'shop/checkout', params: {replicas: '{{ previous.replicas }}'}}\n    rollback: {kind: k8s.delete_pod, target: 'kube-system/dns-1'}\n",
    )
    .expect("write");
    let out = bin()
        .args(["check", "--policy"])
        .arg(&p)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "bad-k8s-policy.yaml:6:",
        "runbooks[0].action.params.replicas: `previous.replicas` is only available in a rollback",
        "bad-k8s-policy.yaml:7:",
        "runbooks[0].rollback.target: not allowed: namespace \"kube-system\"",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    // The same runbook reading `previous` in its rollback is fine.
    std::fs::write(
        &p,
        "kubernetes: {namespaces: [shop], resources: ['deployment/checkout'], max_replicas: 10}\nrunbooks:\n  - name: r\n    match: ['alertname=\"A\"']\n    tier: 1\n    action: {kind: k8s.scale, target: 'shop/checkout', params: {replicas: '+1'}}\n    rollback: {kind: k8s.scale, target: 'shop/checkout', params: {replicas: '{{ previous.replicas }}'}}\n",
    )
    .expect("write");
    let out = bin()
        .args(["check", "--policy"])
        .arg(&p)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

fn scenario(name: &str) -> PathBuf {
    root().join("tests/scenarios").join(name)
}

#[test]
fn replay_writes_outputs_and_exits_zero() {
    let dir = scenario("tier1_restart_validated");
    let out_file = tmp("tier1.jsonl");
    let out = bin()
        .args(["replay", "--quiet", "--policy"])
        .arg(dir.join("policy.yaml"))
        .arg("--input")
        .arg(dir.join("input.jsonl"))
        .arg("--out")
        .arg(&out_file)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let written = std::fs::read_to_string(&out_file).expect("output written");
    let expected = std::fs::read_to_string(dir.join("expected.jsonl")).expect("golden");
    assert_eq!(written, expected);
}

#[test]
fn replay_reports_bad_lines_with_numbers_and_exits_one() {
    let dir: &Path = &scenario("bad_lines");
    let out = bin()
        .args(["replay", "--quiet", "--policy"])
        .arg(dir.join("policy.yaml"))
        .arg("--input")
        .arg(dir.join("input.jsonl"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = std::fs::read_to_string(dir.join("expected_bad_lines.txt")).expect("golden");
    for line in expected.lines() {
        assert!(err.contains(line), "stderr lacks {line:?}:\n{err}");
    }
    // The good lines around the bad ones were still decided.
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#""kind":"command""#));
}

#[test]
fn replay_refuses_an_invalid_policy_with_exit_two() {
    let p = tmp("broken.yaml");
    std::fs::write(&p, "slos: [\n").expect("write");
    let out = bin()
        .args(["replay", "--policy"])
        .arg(&p)
        .args(["--input", "/dev/null"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not valid"));
}

#[test]
fn bench_measures_the_engine_beside_a_raw_consumer_on_the_embedded_broker() {
    let out = tmp("bench.json");
    let o = bin()
        .args([
            "bench",
            "--services",
            "50",
            "--slos",
            "100",
            "--runbooks",
            "5",
            "--samples",
            "20000",
            "--alert-every",
            "2000",
            "--loads",
            "0.5",
            "--load-seconds",
            "2",
            "--alerts-per-second",
            "10",
            "--out",
        ])
        .arg(&out)
        .env_remove("SELFHEAL_BROKERS")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(stdout, file, "stdout and --out carry the same report");
    let r = &stdout;
    // 20,000 samples and one alert per 2,000: every record read by both.
    assert_eq!(r["workload"]["alerts"], 10);
    assert_eq!(r["raw_consume"]["records"], 20_010);
    assert_eq!(r["engine"]["records"], 20_010);
    assert_eq!(r["engine"]["dead_lettered"], 0);
    assert_eq!(r["engine"]["commands"], 10, "one command per alert");
    for phase in ["raw_consume", "engine"] {
        assert!(r[phase]["records_per_s"].as_f64().unwrap() > 0.0, "{phase}");
    }
    let ratio = r["ratio_engine_to_raw"].as_f64().unwrap();
    let a = r["engine"]["records_per_s"].as_f64().unwrap();
    let b = r["raw_consume"]["records_per_s"].as_f64().unwrap();
    assert!((ratio - a / b).abs() < 0.01, "{ratio} vs {a}/{b}");
    // Every alert of the latency phase got its command, timed.
    let l = &r["latency"][0];
    assert_eq!(l["load"], 0.5);
    assert!(l["alerts"].as_u64().unwrap() >= 10);
    assert_eq!(l["commands"], l["alerts"]);
    let (p50, p99) = (l["p50_ms"].as_f64().unwrap(), l["p99_ms"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99, "{p50} {p99}");
    // A 30-day SLO's burn-rate state stays within its budget.
    let m = &r["memory"];
    assert!(m["slo_state_bytes_per_slo"].as_u64().unwrap() <= 32 * 1024);
    assert_eq!(r["settings"]["processing_guarantee"], "exactly_once");
}
