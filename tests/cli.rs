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
    let held = r["engine"]["held"]
        .as_u64()
        .expect("records held by pacing");
    assert!(held <= 20_010, "each record is held at most once: {held}");
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

// Settings: config file, SELFHEAL_* variables, flags.

/// `selfheal` with no inherited SELFHEAL_* settings.
fn clean_bin() -> Command {
    let mut c = bin();
    for (k, _) in std::env::vars() {
        if k.starts_with("SELFHEAL_") {
            c.env_remove(k);
        }
    }
    c
}

/// The `--print-config` line of one flag: `(value, source)`.
fn printed(out: &std::process::Output, flag: &str) -> (String, String) {
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{flag} = ")))
        .unwrap_or_else(|| panic!("no {flag} in:\n{text}"));
    let rest = &line[flag.len() + 3..];
    let (value, source) = rest.split_once("  (").expect("value  (source)");
    (value.to_string(), source.trim_end_matches(')').to_string())
}

#[test]
fn a_setting_comes_from_the_flag_then_the_environment_then_the_file_then_the_default() {
    let cfg = tmp("precedence.yaml");
    std::fs::write(&cfg, "executor:\n  concurrency: 8\n  group: from-file\n").expect("write");
    let run = |file: bool, env: bool, flag: bool| {
        let mut c = clean_bin();
        if file {
            c.arg("--config").arg(&cfg);
        }
        if env {
            c.env("SELFHEAL_CONCURRENCY", "4");
        }
        c.args(["executor", "--print-config"]);
        if flag {
            c.args(["--concurrency", "2"]);
        }
        c.output().expect("runs")
    };
    let src = cfg.display().to_string();
    assert_eq!(
        printed(&run(true, true, true), "concurrency"),
        ("2".into(), "flag".into())
    );
    assert_eq!(
        printed(&run(true, true, false), "concurrency"),
        ("4".into(), "env SELFHEAL_CONCURRENCY".into())
    );
    assert_eq!(
        printed(&run(true, false, false), "concurrency"),
        ("8".into(), format!("file {src}"))
    );
    assert_eq!(
        printed(&run(false, false, false), "concurrency"),
        ("16".into(), "default".into())
    );
    // The file also comes from SELFHEAL_CONFIG; other keys of its section
    // apply beside a flag.
    let out = clean_bin()
        .env("SELFHEAL_CONFIG", &cfg)
        .args(["executor", "--print-config", "--concurrency", "3"])
        .output()
        .expect("runs");
    assert_eq!(
        printed(&out, "group"),
        ("from-file".into(), format!("file {src}"))
    );
    assert_eq!(printed(&out, "concurrency").0, "3");
}

#[test]
fn a_required_flag_can_come_from_the_config_file() {
    let cfg = tmp("check.yaml");
    std::fs::write(
        &cfg,
        format!(
            "check:\n  policy: {}\n",
            root().join("examples/policy.yaml").display()
        ),
    )
    .expect("write");
    let out = clean_bin()
        .arg("--config")
        .arg(&cfg)
        .arg("check")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 SLOs, 3 runbooks"));
    // The existing variable names keep working, and win over the file.
    let out = clean_bin()
        .arg("--config")
        .arg(&cfg)
        .env("SELFHEAL_POLICY", "/nonexistent/policy.yaml")
        .arg("check")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn config_file_mistakes_are_named_with_their_place() {
    let cases = [
        (
            "engine:\n  polcy: p.yaml\n",
            "engine: unknown key `polcy` (did you mean `policy`?)",
        ),
        (
            "engin:\n  policy: p.yaml\n",
            "unknown section `engin` (did you mean `engine`?)",
        ),
        (
            "kafka:\n  brokerz: k:9092\n",
            "kafka: unknown key `brokerz` (did you mean `brokers`?)",
        ),
        (
            "audit:\n  verfy: {policy: p}\n",
            "audit: unknown subcommand `verfy` (did you mean `verify`?)",
        ),
        (
            "executor:\n  concurrency: lots\n",
            "executor.concurrency: invalid value 'lots'",
        ),
        (
            "engine:\n  processing-guarantee: twice\n",
            "engine.processing-guarantee: invalid value 'twice'",
        ),
        (
            "executor:\n  group: [a, b]\n",
            "executor.group: takes one value, got a list",
        ),
        (
            "kafka:\n  settings: {sasl.password_env: SELFHEAL_NOT_SET_ANYWHERE}\n",
            "kafka.settings.sasl.password_env: variable SELFHEAL_NOT_SET_ANYWHERE is not set",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let cfg = tmp(&format!("bad-config-{i}.yaml"));
        std::fs::write(&cfg, text).expect("write");
        let out = clean_bin()
            .arg("--config")
            .arg(&cfg)
            .args(["executor", "--print-config"])
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{text}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{}: {needle}", cfg.display())),
            "{text}: missing {needle:?} in {err}"
        );
    }
}

#[test]
fn print_config_redacts_secrets_whatever_their_source() {
    let pw_file = tmp("kafka-password");
    std::fs::write(&pw_file, "file-secret-1\n").expect("write");
    let cfg = tmp("secrets.yaml");
    std::fs::write(
        &cfg,
        format!(
            "kafka:\n  brokers: kafka-1:9092\n  settings:\n    security.protocol: SASL_SSL\n    sasl.username: selfheal\n    sasl.password_file: {}\n    ssl.key.password_env: KEY_PW\nengine:\n  settings: {{sasl.oauthbearer.client.secret: inline-secret-3}}\n",
            pw_file.display()
        ),
    )
    .expect("write");
    let out = clean_bin()
        .arg("--config")
        .arg(&cfg)
        .env("KEY_PW", "env-secret-2")
        .env(
            "SELFHEAL_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
            "env-secret-4",
        )
        .args(["engine", "--policy", "p.yaml", "--print-config"])
        .args(["-X", "ssl.keystore.password=flag-secret-5"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for secret in [
        "file-secret-1",
        "env-secret-2",
        "inline-secret-3",
        "env-secret-4",
        "flag-secret-5",
    ] {
        assert!(!text.contains(secret), "{secret} shown:\n{text}");
    }
    let src = cfg.display().to_string();
    for line in [
        format!("-X sasl.password = ***  (file {src}, from file {})", pw_file.display()),
        format!("-X ssl.key.password = ***  (file {src}, from env KEY_PW)"),
        "-X sasl.oauthbearer.client.secret = ***  (env SELFHEAL_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET)".to_string(),
        "-X ssl.keystore.password = ***  (flag -X)".to_string(),
        format!("-X sasl.username = selfheal  (file {src})"),
        format!("brokers = kafka-1:9092  (file {src})"),
        "policy = p.yaml  (flag)".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
}

#[test]
fn the_shared_kafka_section_leaves_replay_reading_its_file() {
    let cfg = tmp("shared-kafka.yaml");
    std::fs::write(
        &cfg,
        "kafka:\n  brokers: 127.0.0.1:1\n  topic-prefix: team.\n  settings: {security.protocol: SASL_SSL}\n",
    )
    .expect("write");
    let dir = scenario("tier1_restart_validated");
    let out = clean_bin()
        .arg("--config")
        .arg(&cfg)
        .args(["replay", "--quiet", "--policy"])
        .arg(dir.join("policy.yaml"))
        .arg("--input")
        .arg(dir.join("input.jsonl"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = clean_bin()
        .arg("--config")
        .arg(&cfg)
        .args([
            "replay",
            "--input",
            "x.jsonl",
            "--policy",
            "p.yaml",
            "--print-config",
        ])
        .output()
        .expect("runs");
    assert_eq!(printed(&out, "brokers").1, "unset");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("security.protocol"));
    // The live commands take it.
    let out = clean_bin()
        .arg("--config")
        .arg(&cfg)
        .args(["topics", "create", "--print-config"])
        .output()
        .expect("runs");
    let src = cfg.display().to_string();
    assert_eq!(
        printed(&out, "brokers"),
        ("127.0.0.1:1".into(), format!("file {src}"))
    );
    assert_eq!(
        printed(&out, "topic-prefix"),
        ("team.".into(), format!("file {src}"))
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l == format!("-X security.protocol = SASL_SSL  (file {src})")));
}

/// `selfheal broker` runs the embedded broker in its own process; the
/// bench's soak against it reports memory and lag every 30 s and that the
/// engine consumed every record.
#[test]
fn the_broker_command_serves_topics_and_the_bench_soaks_against_it() {
    use std::io::{BufRead, BufReader};
    let mut broker = clean_bin()
        .args(["broker", "--partitions", "16", "--topic-prefix", "soak."])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    let mut line = String::new();
    BufReader::new(broker.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("reads the address");
    let brokers = line
        .trim()
        .strip_prefix("SELFHEAL_BROKERS=")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .to_string();
    let stop = |mut b: std::process::Child| {
        // SIGTERM: the broker stops cleanly.
        Command::new("kill")
            .arg(b.id().to_string())
            .status()
            .expect("kill");
        b.wait().expect("waits")
    };

    // Its topics exist: `topics create` keeps them without the admin API
    // the embedded broker lacks.
    let t = clean_bin()
        .args(["topics", "create", "--brokers", &brokers])
        .args(["--topic-prefix", "soak.", "--partitions", "16"])
        .output()
        .unwrap();
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));

    let o = clean_bin()
        .args(["bench", "--brokers", &brokers, "--topic-prefix", "soak."])
        .args(["--partitions", "16", "--broker-name", "own process"])
        .args(["--services", "50", "--slos", "100", "--runbooks", "5"])
        .args(["--samples", "20000", "--alert-every", "2000"])
        .args(["--loads", "0.5", "--load-seconds", "2"])
        .args([
            "--alerts-per-second",
            "10",
            "--soak",
            "31s",
            "--soak-load",
            "0.1",
        ])
        .output()
        .unwrap();
    let status = stop(broker);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        status.success(),
        "the broker exits 0 on SIGTERM: {status:?}"
    );
    assert!(
        stderr.contains("soak: 30 s,"),
        "progress every 30 s:\n{stderr}"
    );
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["broker"]["kind"], "own process");
    assert_eq!(r["engine"]["records"], 20_010);
    let s = &r["soak"];
    assert_eq!(s["load"], 0.1);
    assert!(s["records"].as_u64().unwrap() > 0);
    assert_eq!(s["commands"], s["alerts"], "every soak incident decided");
    assert!(s["alerts"].as_u64().unwrap() >= 300);
    assert_eq!(s["lag_after_drain"], 0, "every record consumed");
    assert_eq!(s["dead_lettered"], 0);
    assert_eq!(s["rss_mib"].as_array().unwrap().len(), 1);
    assert_eq!(s["lag"].as_array().unwrap().len(), 1);
    assert!(s["rss_mib"][0].as_f64().unwrap() > 1.0);
}
