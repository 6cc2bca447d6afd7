//! Golden scenarios: each folder in `tests/scenarios/` holds a policy, an
//! input stream and the exact output records the core must produce. The
//! files document decisions; a change that alters one shows in the diff.
//!
//! `UPDATE_GOLDEN=1 cargo test --test scenarios` rewrites the expected
//! files from the current behaviour (review the diff before committing).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use selfheal::policy::load::load;
use selfheal::replay::replay_to_lines;

fn scenario_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .expect("tests/scenarios exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("input.jsonl").exists())
        .collect();
    dirs.sort();
    dirs
}

/// Replays one scenario; returns a description of any mismatch.
fn run(dir: &Path) -> Option<String> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let policy = match load(&dir.join("policy.yaml")) {
        Ok(p) => Arc::new(p),
        Err(e) => return Some(format!("{name}: policy does not load:\n{e}")),
    };
    let input = fs::read_to_string(dir.join("input.jsonl")).ok()?;
    let (lines, bad) = replay_to_lines(policy, &input);
    let mut actual = lines.join("\n");
    actual.push('\n');
    let bad_text: String = bad.iter().map(|b| format!("{b}\n")).collect();
    let expected_path = dir.join("expected.jsonl");
    let bad_path = dir.join("expected_bad_lines.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::write(&expected_path, &actual).ok()?;
        if bad.is_empty() {
            let _ = fs::remove_file(&bad_path);
        } else {
            fs::write(&bad_path, &bad_text).ok()?;
        }
        return None;
    }
    let expected = fs::read_to_string(&expected_path).unwrap_or_default();
    let expected_bad = fs::read_to_string(&bad_path).unwrap_or_default();
    if expected_bad != bad_text {
        return Some(format!(
            "{name}: bad lines differ\nexpected:\n{expected_bad}actual:\n{bad_text}"
        ));
    }
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    for i in 0..e.len().max(a.len()) {
        let (x, y) = (e.get(i), a.get(i));
        if x != y {
            return Some(format!(
                "{name}: output line {} differs\nexpected: {}\nactual:   {}",
                i + 1,
                x.unwrap_or(&"<none>"),
                y.unwrap_or(&"<none>")
            ));
        }
    }
    None
}

#[test]
fn golden_scenarios() {
    let dirs = scenario_dirs();
    assert!(!dirs.is_empty(), "no scenarios found");
    let failures: Vec<String> = dirs.iter().filter_map(|d| run(d)).collect();
    assert!(
        failures.is_empty(),
        "{} of {} scenarios differ:\n\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n\n")
    );
}

#[test]
fn replay_is_byte_identical_across_runs() {
    for dir in scenario_dirs() {
        let policy = Arc::new(load(&dir.join("policy.yaml")).expect("policy loads"));
        let input = fs::read_to_string(dir.join("input.jsonl")).expect("input");
        let a = replay_to_lines(policy.clone(), &input);
        let b = replay_to_lines(policy, &input);
        assert_eq!(a, b, "{}", dir.display());
    }
}
