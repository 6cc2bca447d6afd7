//! Hostile alerts: label values crafted to inject into commands must reach
//! the program as inert literal arguments, byte for byte, through the real
//! path (policy → engine decision → command record → executor), and targets
//! outside a runbook's `allow_targets` must be refused, escalated and
//! audited.
//!
//! The program is a recorder written by the test: a `sh` script that writes
//! each argument it received, NUL-terminated, to a file. Payloads that try
//! to create canary files do so in a directory that must stay empty.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use selfheal::engine::Engine;
use selfheal::executor::{run, Handlers, Runner};
use selfheal::records::{
    Audit, Command, Emitted, Escalation, EscalationReason, Output, Record, ResultStatus,
};
use selfheal::time::Timestamp;

/// A fresh directory under the system temp dir.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "selfheal-hostile-{}-{name}-{}",
        std::process::id(),
        selfheal::live::wall_ms()
    ));
    std::fs::create_dir_all(&dir).expect("creating a scratch dir");
    dir
}

/// Writes the recorder script and returns its path and the file it writes.
fn recorder(dir: &Path) -> (String, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let out = dir.join("argv.bin");
    let script = dir.join("record-argv");
    let text = format!("#!/bin/sh\nprintf '%s\\0' \"$@\" > '{}'\n", out.display());
    assert!(!out.display().to_string().contains('\''));
    std::fs::write(&script, text).expect("writing the recorder");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .expect("making the recorder executable");
    (script.display().to_string(), out)
}

/// The arguments the recorder received on its last run, if it ran.
fn recorded(out: &Path) -> Option<Vec<Vec<u8>>> {
    let bytes = std::fs::read(out).ok()?;
    let _ = std::fs::remove_file(out);
    let mut args: Vec<Vec<u8>> = bytes.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
    // printf ends every argument with a NUL, so the last piece is empty.
    assert_eq!(
        args.pop(),
        Some(Vec::new()),
        "recorder output not NUL-ended"
    );
    Some(args)
}

fn policy(program: &str) -> Arc<selfheal::policy::Policy> {
    let src = format!(
        r#"
runbooks:
  - name: restart-pod
    match: ['alertname="PodCrashLooping"']
    tier: 1
    action:
      kind: restart
      target: '{{{{ labels.pod }}}}'
      params: {{payload: '{{{{ labels.payload }}}}', note: 'note {{{{ labels.payload }}}}'}}
    allow_targets: ['pod-[0-9]+']
    validate: {{within: 5m}}
  - name: run-tool
    match: ['alertname="ToolNeeded"']
    tier: 1
    action:
      kind: exec
      target: '{{{{ labels.service }}}}'
      args: ['{program}', '--', '{{{{ labels.payload }}}}', '--payload={{{{ labels.payload }}}}']
    allow_targets: ['worker']
    validate: {{within: 5m}}
  - name: run-tool-unseparated
    match: ['alertname="ToolNoSeparator"']
    tier: 1
    action:
      kind: exec
      target: '{{{{ labels.service }}}}'
      args: ['{program}', '{{{{ labels.payload }}}}']
    validate: {{within: 5m}}
"#
    );
    Arc::new(selfheal::policy::parse(&src, "hostile.yaml").unwrap_or_else(|e| panic!("{e}")))
}

fn handlers(program: &str) -> Handlers {
    let src = format!(
        r#"
handlers:
  restart: {{exec: {{argv: ["{program}", "--", "{{{{target}}}}", "{{{{params.payload}}}}", "{{{{params.note}}}}"]}}}}
  scale: {{exec: {{argv: ["{program}", "{{{{params.payload}}}}"]}}}}
exec_allow: ["{program}"]
"#
    );
    Handlers::parse(&src, "handlers.yaml").unwrap_or_else(|e| panic!("{e}"))
}

/// One firing alert as the engine reads it, `n` minutes into the run.
fn alert(n: usize, labels: &[(&str, &str)]) -> Record {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    let ts = format!("2026-03-01T{:02}:{:02}:00Z", 10 + n / 60, n % 60);
    let line = serde_json::json!({
        "ts": ts,
        "kind": "alert",
        "data": {
            "status": "firing",
            "labels": labels,
            "annotations": {"summary": "hostile"},
            "startsAt": ts,
            "fingerprint": format!("{n:016x}"),
        }
    });
    Record::from_json_line(&line.to_string()).unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// Feeds one alert and returns everything the engine decided on it.
fn decide(engine: &mut Engine, rec: &Record) -> Vec<Output> {
    let mut out: Vec<Emitted> = Vec::new();
    engine.process(rec, &mut out).expect("records are in order");
    out.into_iter().map(|e| e.output).collect()
}

fn commands(outs: &[Output]) -> Vec<&Command> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Command(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn escalations(outs: &[Output]) -> Vec<&Escalation> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Escalation(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn audits(outs: &[Output]) -> Vec<&Audit> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Audit(a) => Some(a),
            _ => None,
        })
        .collect()
}

/// Payloads that would do something if any layer handed them to a shell,
/// a template engine or an option parser. `{C}` is the canary directory.
fn payloads(canary: &Path) -> Vec<String> {
    let c = canary.display().to_string();
    [
        "; rm -rf /",
        "; touch {C}/semicolon",
        "$(touch {C}/dollar)",
        "`touch {C}/backtick`",
        "x\ntouch {C}/newline",
        "x\r\ntouch {C}/crlf",
        "&& touch {C}/and || touch {C}/or",
        "| tee {C}/pipe",
        "> {C}/redirect",
        "\"; touch {C}/dquote; echo \"",
        "'; touch {C}/squote; echo '",
        "../../etc/passwd",
        "{{ labels.secret }}",
        "{{ annotations.summary }}",
        "{{target}}",
        "{{ params.payload }}",
        "-rf",
        "--kubeconfig=/tmp/evil",
        "$HOME * ~ ${IFS}",
        "\u{202e}evil\u{1b}[31m\u{7}\u{7f}\u{200b}\u{feff}",
        "ünïcødé 🚒 \u{85}\u{2028}",
        "",
    ]
    .iter()
    .map(|p| p.replace("{C}", &c))
    .collect()
}

fn assert_no_canary(canary: &Path) {
    let left: Vec<_> = std::fs::read_dir(canary)
        .expect("canary dir exists")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert!(left.is_empty(), "payloads created {left:?}");
}

fn bytes(args: &[&str]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_bytes().to_vec()).collect()
}

#[tokio::test]
async fn hostile_label_values_reach_the_program_as_literal_arguments() {
    let dir = scratch("literal");
    let canary = dir.join("canary");
    std::fs::create_dir_all(&canary).unwrap();
    let (program, out) = recorder(&dir);
    let mut engine = Engine::new(policy(&program));
    let runner = Runner::new(handlers(&program)).expect("a runner");

    let mut n = 0;
    for payload in payloads(&canary) {
        // A configured handler (`restart` → exec argv) ...
        n += 1;
        let target = format!("pod-{n}");
        let outs = decide(
            &mut engine,
            &alert(
                n,
                &[
                    ("alertname", "PodCrashLooping"),
                    ("service", "checkout"),
                    ("pod", &target),
                    ("payload", &payload),
                    ("secret", "EXPANDED"),
                ],
            ),
        );
        let cmds = commands(&outs);
        assert_eq!(cmds.len(), 1, "{payload:?}: {outs:?}");
        let cmd = cmds[0];
        assert_eq!(cmd.params["payload"], payload);
        // The command record survives its wire encoding unchanged.
        let json = serde_json::to_string(cmd).unwrap();
        assert_eq!(&serde_json::from_str::<Command>(&json).unwrap(), cmd);
        let done = run(cmd, &runner).await;
        assert_eq!(
            done.status,
            ResultStatus::Succeeded,
            "{payload:?}: {done:?}"
        );
        let note = format!("note {payload}");
        assert_eq!(
            recorded(&out),
            Some(bytes(&["--", &target, &payload, &note])),
            "handler argv for {payload:?}"
        );

        // ... and the built-in `exec` kind with an argument vector.
        n += 1;
        let outs = decide(
            &mut engine,
            &alert(
                n,
                &[
                    ("alertname", "ToolNeeded"),
                    ("service", "worker"),
                    ("payload", &payload),
                    ("secret", "EXPANDED"),
                ],
            ),
        );
        let cmds = commands(&outs);
        assert_eq!(cmds.len(), 1, "{payload:?}: {outs:?}");
        let flag = format!("--payload={payload}");
        assert_eq!(
            cmds[0].args,
            vec![program.clone(), "--".into(), payload.clone(), flag.clone()]
        );
        let done = run(cmds[0], &runner).await;
        assert_eq!(
            done.status,
            ResultStatus::Succeeded,
            "{payload:?}: {done:?}"
        );
        assert_eq!(
            recorded(&out),
            Some(bytes(&["--", &payload, &flag])),
            "exec args for {payload:?}"
        );
    }
    assert_no_canary(&canary);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_nul_byte_never_reaches_a_program_and_fails_the_action() {
    let dir = scratch("nul");
    let (program, out) = recorder(&dir);
    let mut engine = Engine::new(policy(&program));
    let runner = Runner::new(handlers(&program)).expect("a runner");
    let payload = "a\u{0}b";
    let outs = decide(
        &mut engine,
        &alert(
            1,
            &[
                ("alertname", "ToolNeeded"),
                ("service", "worker"),
                ("payload", payload),
            ],
        ),
    );
    let cmds = commands(&outs);
    assert_eq!(cmds.len(), 1, "{outs:?}");
    assert_eq!(cmds[0].args[2], payload);
    let done = run(cmds[0], &runner).await;
    assert_eq!(done.status, ResultStatus::Failed, "{done:?}");
    assert!(done.detail.contains("could not start"), "{done:?}");
    assert_eq!(recorded(&out), None, "the program ran");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_value_that_would_be_an_option_is_refused_before_a_separator() {
    let dir = scratch("option");
    let (program, out) = recorder(&dir);
    let mut engine = Engine::new(policy(&program));
    let runner = Runner::new(handlers(&program)).expect("a runner");
    for (i, payload) in ["-rf", "--kubeconfig=/tmp/evil", "-"]
        .into_iter()
        .enumerate()
    {
        // The engine refuses to emit a built-in exec command with it.
        let outs = decide(
            &mut engine,
            &alert(
                i,
                &[
                    ("alertname", "ToolNoSeparator"),
                    ("service", "worker"),
                    ("payload", payload),
                ],
            ),
        );
        assert!(commands(&outs).is_empty(), "{payload:?}: {outs:?}");
        let esc = escalations(&outs);
        assert_eq!(esc.len(), 1, "{outs:?}");
        assert_eq!(esc[0].reason, EscalationReason::Guardrail);
        assert!(
            esc[0].summary.contains("would be read as an option"),
            "{esc:?}"
        );
        let audit = audits(&outs);
        assert_eq!(audit.len(), 1, "{outs:?}");
        assert!(
            audit[0]
                .reasons
                .iter()
                .any(|r| r.contains("would be read as an option")),
            "{audit:?}"
        );

        // An executor handler refuses to render such a value at the start
        // of an argument too, and runs nothing.
        let cmd = Command {
            id: format!("cmd-{i}"),
            incident: "inc-1".into(),
            runbook: "scale-out".into(),
            action: "scale".into(),
            target: "worker".into(),
            params: [("payload".to_string(), payload.to_string())].into(),
            args: Vec::new(),
            tier: 1,
            deadline: Timestamp(0),
            timeout: String::new(),
            rollback_of: None,
            service: "worker".into(),
        };
        let done = run(&cmd, &runner).await;
        assert_eq!(done.status, ResultStatus::Failed, "{done:?}");
        assert!(
            done.detail.contains("would be read as an option"),
            "{done:?}"
        );
        assert_eq!(recorded(&out), None, "the program ran for {payload:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn targets_outside_allow_targets_are_refused_escalated_and_audited() {
    let mut engine = Engine::new(policy("/bin/true"));
    let hostile = [
        "pod-1; touch /tmp/selfheal-canary",
        "pod-1\n--all",
        "../../etc/passwd",
        "pod-1/../../etc/passwd",
        "-pod-1",
        "$(reboot)",
        "{{ labels.pod }}",
        "pod-1\u{0}",
        "pod-\u{661}",
    ];
    for (i, target) in hostile.iter().enumerate() {
        let outs = decide(
            &mut engine,
            &alert(
                i,
                &[
                    ("alertname", "PodCrashLooping"),
                    ("service", "checkout"),
                    ("pod", target),
                    ("payload", "x"),
                ],
            ),
        );
        assert!(commands(&outs).is_empty(), "{target:?}: {outs:?}");
        let esc = escalations(&outs);
        assert_eq!(esc.len(), 1, "{target:?}: {outs:?}");
        assert_eq!(esc[0].reason, EscalationReason::Guardrail);
        assert!(esc[0].summary.contains("allow_targets"), "{esc:?}");
        let audit = audits(&outs);
        assert_eq!(audit.len(), 1, "{target:?}: {outs:?}");
        assert_eq!(audit[0].decision, "guardrail_blocked");
        let allow = audit[0]
            .guardrails
            .iter()
            .find(|g| g.name == "allow_list")
            .expect("the allow_list check is audited");
        assert!(!allow.passed, "{allow:?}");
        // The hostile value is recorded as data, quoted.
        assert!(
            allow.detail.contains(&format!("{target:?}")),
            "{allow:?} lacks {target:?}"
        );
    }
    // The control: an allowed target gets its command.
    let outs = decide(
        &mut engine,
        &alert(
            hostile.len(),
            &[
                ("alertname", "PodCrashLooping"),
                ("service", "checkout"),
                ("pod", "pod-7"),
                ("payload", "x"),
            ],
        ),
    );
    assert_eq!(commands(&outs).len(), 1, "{outs:?}");
}
