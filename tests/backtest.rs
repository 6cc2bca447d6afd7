//! Backtesting as a user runs it: `selfheal replay --report` on recorded
//! streams. Each folder of `tests/backtest/` holds a policy (its header
//! says what the backtest must show), an input stream, optional extra
//! arguments (`args`) and a second policy (`compare.yaml`), and the exact
//! report expected (`expected.json`). The tests below also check the
//! figures a reader relies on, so a golden file cannot drift silently.
//!
//! `UPDATE_GOLDEN=1 cargo test --test backtest` rewrites the expected
//! reports (review the diff before committing).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/backtest")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("selfheal-backtest-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

/// Runs the backtest of one folder; returns the report and stdout.
fn backtest(name: &str) -> (Value, String) {
    let dir = root().join(name);
    let report = tmp(&format!("{name}.json"));
    let html = tmp(&format!("{name}.html"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_selfheal"));
    cmd.arg("replay")
        .arg("--policy")
        .arg(dir.join("policy.yaml"))
        .arg("--input")
        .arg(dir.join("input.jsonl"))
        .arg("--report")
        .arg(&report)
        .arg("--html")
        .arg(&html)
        .arg("--quiet");
    if dir.join("compare.yaml").exists() {
        cmd.arg("--compare").arg(dir.join("compare.yaml"));
    }
    if let Ok(args) = fs::read_to_string(dir.join("args")) {
        cmd.args(args.split_whitespace());
    }
    let out = cmd.output().expect("selfheal runs");
    assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
    let text = fs::read_to_string(&report).expect("report written");
    let page = fs::read_to_string(&html).expect("html written");
    assert!(page.starts_with("<!doctype html>"), "{name}: html report");
    (
        serde_json::from_str(&text).expect("report is JSON"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn golden(name: &str) -> (Value, String) {
    let (mut report, stdout) = backtest(name);
    // The source is named by the path given, which depends on the checkout.
    report["source"]["name"] = Value::from("input.jsonl");
    let path = root().join(name).join("expected.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let mut s = serde_json::to_string_pretty(&report).expect("json");
        s.push('\n');
        fs::write(&path, s).expect("write golden");
    }
    let expected: Value =
        serde_json::from_str(&fs::read_to_string(&path).expect("expected.json exists"))
            .expect("expected.json is JSON");
    if expected != report {
        panic!(
            "{name}: report differs from expected.json\nexpected:\n{}\nactual:\n{}",
            serde_json::to_string_pretty(&expected).unwrap_or_default(),
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    }
    (report, stdout)
}

fn incident<'a>(r: &'a Value, alertname: &str) -> &'a Value {
    r["incidents"]
        .as_array()
        .and_then(|v| v.iter().find(|i| i["alertname"] == alertname))
        .unwrap_or_else(|| panic!("no {alertname} incident in {r:#}"))
}

/// The backtest report of one golden scenario of `tests/scenarios/`.
fn scenario_report(scenario: &str, extra: &[&str]) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios")
        .join(scenario);
    let report = tmp(&format!("{scenario}.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .arg("replay")
        .arg("--policy")
        .arg(dir.join("policy.yaml"))
        .arg("--input")
        .arg(dir.join("input.jsonl"))
        .arg("--report")
        .arg(&report)
        .arg("--quiet")
        .args(extra)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    serde_json::from_str(&fs::read_to_string(&report).expect("report")).expect("json")
}

#[test]
fn tier1_restart_mitigates_in_thirty_seconds_instead_of_forty_minutes() {
    let (r, stdout) = golden("tier1_saves_mttr");
    let oom = incident(&r, "PodOOMKilled");
    assert_eq!(oom["ttr_recorded_s"], 2400.0);
    assert_eq!(oom["ttm_with_policy_s"], 30.0);
    assert_eq!(oom["page_recorded"], true);
    assert_eq!(oom["page_with_policy"], false);
    assert_eq!(oom["policy"]["commands"][0]["result"]["assumed"], true);
    let human = &oom["recorded"]["human_actions"];
    assert_eq!(human[0]["kind"], "change:restart", "{human}");
    assert_eq!(r["totals"]["manual_interventions_avoided"], 1);
    assert_eq!(r["assumptions"]["results"], "success");
    let slo = &r["slos"][0];
    let (before, after) = (
        slo["budget_spent_recorded"].as_f64().unwrap_or(0.0),
        slo["budget_spent_with_policy"].as_f64().unwrap_or(1.0),
    );
    assert!(after < before / 5.0, "budget {before} -> {after}");
    assert!(stdout.contains("MTTR recorded"), "{stdout}");
}

#[test]
fn assumed_failure_escalates_and_lists_the_runbook_for_demotion() {
    let (r, _) = golden("tier1_assume_failure");
    let oom = incident(&r, "PodOOMKilled");
    assert_eq!(oom["policy"]["escalations"][0]["reason"], "action_failed");
    assert_eq!(oom["ttm_with_policy_s"], oom["ttr_recorded_s"]);
    assert_eq!(r["runbooks"][0]["recommendation"], "demote");
    assert_eq!(r["totals"]["mitigated_by_policy"], 0);
}

#[test]
fn comparison_shows_the_decisions_that_differ_with_their_reasons() {
    let (r, stdout) = golden("compare_tier1_vs_tier2");
    let c = &r["comparison"];
    let diffs = c["differences"].as_array().expect("differences");
    assert_eq!(diffs.len(), 1, "{c:#}");
    let d = &diffs[0];
    assert_eq!(d["alertname"], "PodOOMKilled");
    assert_eq!(d["a"][0]["decision"], "act");
    assert_eq!(d["b"][0]["decision"], "propose");
    assert!(
        d["b"][0]["reasons"][1]
            .as_str()
            .is_some_and(|s| s.contains("waits for an approver")),
        "{d:#}"
    );
    assert_eq!(r["totals"]["actions_by_tier"]["1"], 1);
    assert_eq!(c["totals"]["actions_by_tier"]["2"], 1);
    assert!(
        stdout.contains("1 incident(s) decided differently"),
        "{stdout}"
    );
    assert!(stdout.contains("MTTR with policy"), "{stdout}");
}

#[test]
fn recurring_unhandled_incidents_are_automation_candidates() {
    let (r, _) = golden("recurring_candidates");
    let c = &r["candidates"][0];
    assert_eq!(c["alertname"], "DiskFull");
    assert_eq!(c["occurrences"], 4);
    assert_eq!(c["pattern"], "daily around 03:00 UTC");
    assert_eq!(c["pages"], 4);
    assert_eq!(c["human_actions"]["change:cleanup"], 4);
    let rb = &r["runbooks"][0];
    assert_eq!(rb["runbook"], "failover-primary");
    assert_eq!(rb["validated_assumed"], 2);
    assert_eq!(rb["recommendation"], "none");
}

#[test]
fn results_recorded_in_the_stream_are_used_not_assumed() {
    let r = scenario_report("tier1_restart_validated", &[]);
    let result = &r["incidents"][0]["policy"]["commands"][0]["result"];
    assert_eq!(result["assumed"], false, "{result}");
    assert_eq!(result["at"], "2026-03-01T10:02:10Z");
    assert_eq!(r["totals"]["results_recorded"], 1);
    assert_eq!(r["totals"]["results_assumed"], 0);
}

#[test]
fn out_of_order_records_within_the_allowed_lateness_are_decided() {
    let dir = root().join("tier1_saves_mttr");
    let input = fs::read_to_string(dir.join("input.jsonl")).expect("input");
    let mut lines: Vec<&str> = input.lines().collect();
    // The OOM alert arrives 40s after the metric sample that follows it.
    let i = lines
        .iter()
        .position(|l| l.contains("PodOOMKilled"))
        .expect("alert line");
    lines.swap(i, i + 1);
    let shuffled = tmp("late.jsonl");
    fs::write(&shuffled, lines.join("\n")).expect("write");
    let run = |lateness: &str| {
        Command::new(env!("CARGO_BIN_EXE_selfheal"))
            .arg("replay")
            .arg("--policy")
            .arg(dir.join("policy.yaml"))
            .arg("--input")
            .arg(&shuffled)
            .args(["--max-lateness", lateness])
            .output()
            .expect("runs")
    };
    let strict = run("0s");
    assert_eq!(strict.status.code(), Some(1), "{strict:?}");
    let err = String::from_utf8_lossy(&strict.stderr);
    assert!(err.contains(&format!("line {}: record at", i + 2)), "{err}");
    // Refused, the alert is only acted on when it is re-sent at 10:35:30.
    let first_command = |stdout: &[u8]| {
        String::from_utf8_lossy(stdout)
            .lines()
            .find(|l| l.contains("\"kind\":\"command\""))
            .map(|l| l[7..27].to_string())
    };
    assert_eq!(
        first_command(&strict.stdout).as_deref(),
        Some("2026-03-02T10:35:30Z")
    );
    let lenient = run("1m");
    assert_eq!(lenient.status.code(), Some(0), "{lenient:?}");
    // Late by 30s, it is decided at the event time already reached.
    assert_eq!(
        first_command(&lenient.stdout).as_deref(),
        Some("2026-03-02T10:21:00Z")
    );
    assert!(String::from_utf8_lossy(&lenient.stderr).contains("1 late within 1m"));
}

#[test]
fn assumptions_apply_only_to_backtests() {
    let dir = root().join("tier1_saves_mttr");
    let out = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .arg("replay")
        .arg("--policy")
        .arg(dir.join("policy.yaml"))
        .arg("--input")
        .arg(dir.join("input.jsonl"))
        .arg("--assume-failure")
        .output()
        .expect("runs");
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--assume-* applies to backtests"));
}

#[test]
fn recorded_approvals_are_human_actions_and_are_not_assumed() {
    let r = scenario_report("tier2_approved", &["--approve-after", "1s"]);
    let inc = incident(&r, "PrimaryDown");
    let human = inc["recorded"]["human_actions"]
        .as_array()
        .expect("human actions");
    let approvals: Vec<&str> = human
        .iter()
        .filter(|h| h["kind"] == "approval")
        .filter_map(|h| h["detail"].as_str())
        .collect();
    // mallory's approval is recorded too: a human acted, even if refused.
    assert!(
        approvals.iter().any(|d| d.contains("by alice@example.com")),
        "{human:?}"
    );
    // The command went out at alice's recorded approval, not 1s after the
    // request as the assumption would have had it.
    let cmd = &inc["policy"]["commands"][0];
    let approved_at = human
        .iter()
        .find(|h| h["detail"].as_str().is_some_and(|d| d.contains("alice")))
        .map(|h| h["at"].clone());
    assert_eq!(Some(cmd["at"].clone()), approved_at, "{inc:#}");
    assert_eq!(cmd["result"]["assumed"], false);
}

#[test]
fn a_policy_compared_with_itself_differs_nowhere() {
    let dir = root().join("recurring_candidates");
    let out = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .arg("replay")
        .arg("--policy")
        .arg(dir.join("policy.yaml"))
        .arg("--compare")
        .arg(dir.join("policy.yaml"))
        .arg("--input")
        .arg(dir.join("input.jsonl"))
        .arg("--quiet")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0 incident(s) decided differently"), "{text}");
}

#[test]
fn a_recorded_result_reaches_the_rollback_a_deadline_emitted_just_before_it() {
    let r = scenario_report("validation_failed_rollback", &[]);
    let cmds = r["incidents"][0]["policy"]["commands"]
        .as_array()
        .expect("commands");
    let rollback = cmds
        .iter()
        .find(|c| !c["rollback_of"].is_null())
        .expect("a rollback");
    assert_eq!(rollback["result"]["assumed"], false, "{rollback}");
    assert_eq!(r["totals"]["results_assumed"], 0);
}
