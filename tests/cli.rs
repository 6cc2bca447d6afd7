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
