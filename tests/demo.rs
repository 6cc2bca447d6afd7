//! `selfheal demo` end to end against a real broker: every scenario of the
//! demo must have its expected outcome, with the engine at least once (the
//! broker has no transactions) and the tier-2 proposal approved
//! automatically.

mod common;

use common::*;

#[test]
fn the_demo_scenarios_have_their_expected_outcomes_on_a_real_broker() {
    let Some(b) = real_broker() else { return };
    let report = std::env::temp_dir().join(format!("selfheal-demo-{}.json", std::process::id()));
    let out = std::process::Command::new(BIN)
        .args([
            "demo",
            "--brokers",
            &b,
            "--topic-prefix",
            &unique_prefix("demo"),
            "--processing-guarantee",
            "at_least_once",
            "--auto-approve",
            "--duration",
            "90s",
            "--report",
            &report.display().to_string(),
        ])
        .output()
        .expect("running selfheal demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["passed"], true);
    let scenarios = r["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 8);
    for s in scenarios {
        assert_eq!(s["passed"], true, "{s}");
    }
    // Tier-1 fixes were validated; the failed fix was rolled back.
    assert!(r["actions_by_tier"]["tier1"].as_u64().unwrap() >= 6);
    assert_eq!(r["actions_by_tier"]["tier2"], 1);
    for reason in ["validation_failed", "guardrail", "first_time"] {
        assert!(
            r["escalations_by_reason"][reason].as_u64().unwrap_or(0) >= 1,
            "{reason}"
        );
    }
    assert!(r["executor"]["duplicates_skipped"].as_u64().is_some());
    assert!(stdout.contains("incident opened: PodOOMKilled"));
}
