//! Configured handlers: the default URL, exec and HTTP handlers, and the
//! handler file.

use axum::http::Method;

use super::{cmd, runner, serve, unique_path};
use crate::executor::{run, Handler, HandlerError, Handlers};
use crate::records::{Command, ResultStatus};

fn restart(target: &str) -> Command {
    let mut c = cmd("restart");
    c.target = target.into();
    c
}

fn one(kind: &str, h: Handler) -> Handlers {
    let mut hs = Handlers::new();
    hs.set(kind, h).expect("not a built-in kind");
    hs
}

#[tokio::test]
async fn the_default_url_handler_posts_the_command_and_reports_its_detail() {
    let (base, log) = serve().await;
    let h = Handlers::with_default_url(&format!("{base}/actions/")).expect("valid base");
    let r = runner(h);
    let mut c = restart("checkout-7d9f");
    c.params.insert("namespace".into(), "prod".into());
    let out = run(&c, &r).await;
    assert_eq!(out.status, ResultStatus::Succeeded, "{out:?}");
    assert_eq!(out.detail, "restarted checkout-7d9f");
    let seen = log.all();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::POST);
    assert_eq!(seen[0].path, "/actions/restart");
    assert_eq!(
        seen[0].headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    let posted: Command = serde_json::from_slice(&seen[0].body).expect("command JSON");
    assert_eq!(posted, c);

    let out = run(&cmd("fail"), &r).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert_eq!(
        out.detail,
        format!("HTTP 500 from POST {base}/actions/fail: supervisor says no")
    );
}

#[tokio::test]
async fn an_exec_handler_passes_each_value_as_one_literal_argument() {
    let h = Handler::exec(&[
        "printf",
        "%s|",
        "{{target}}",
        "{{params.namespace}}",
        "{{id}}",
    ])
    .expect("valid handler");
    let r = runner(one("restart", h));
    let mut c = restart("../../etc/passwd; reboot");
    c.params.insert("namespace".into(), "prod ns".into());
    let out = run(&c, &r).await;
    assert_eq!(out.status, ResultStatus::Succeeded, "{out:?}");
    assert_eq!(out.detail, "../../etc/passwd; reboot|prod ns|cmd-1|");

    // Single pass: a value that looks like a placeholder stays as it is.
    let mut c = restart("{{params.namespace}}");
    c.params.insert("namespace".into(), "prod".into());
    let out = run(&c, &r).await;
    assert_eq!(out.detail, "{{params.namespace}}|prod|cmd-1|");
}

#[tokio::test]
async fn an_exec_handler_refuses_values_that_would_become_options() {
    let h = Handler::exec(&["printf", "%s|", "{{target}}"]).expect("valid handler");
    let out = run(&restart("--force"), &runner(one("restart", h))).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert!(
        out.detail.starts_with(
            "handler for restart: the value of {{target}} (\"--force\") starts with `-`"
        ),
        "{}",
        out.detail
    );
    // After a literal `--` the program reads no more options.
    let h = Handler::exec(&["printf", "%s|", "--", "{{target}}"]).expect("valid handler");
    let out = run(&restart("--force"), &runner(one("restart", h))).await;
    assert_eq!(out.status, ResultStatus::Succeeded, "{out:?}");
    assert_eq!(out.detail, "--|--force|");
}

#[tokio::test]
async fn a_url_handler_percent_encodes_values_into_one_segment() {
    let (base, log) = serve().await;
    let url = format!("{base}/scale/{{{{target}}}}?replicas={{{{params.replicas}}}}");
    let h = Handler::http(&url, "post").expect("valid handler");
    let r = runner(one("scale", h));
    let mut c = cmd("scale");
    c.target = "a/../../etc passwd".into();
    c.params.insert("replicas".into(), "+2&x=1".into());
    let out = run(&c, &r).await;
    assert_eq!(out.status, ResultStatus::Succeeded, "{out:?}");
    let seen = log.all();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].segment.as_deref(), Some("a/../../etc passwd"));
    assert_eq!(seen[0].path, "/scale/a%2F..%2F..%2Fetc%20passwd");
    assert_eq!(seen[0].query.as_deref(), Some("replicas=%2B2%26x%3D1"));

    // A value that is a whole dot segment would climb out of the path.
    let mut c = cmd("scale");
    c.target = "..".into();
    c.params.insert("replicas".into(), "1".into());
    let out = run(&c, &r).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert!(out.detail.contains("`.` or `..` segment"), "{}", out.detail);
    assert_eq!(log.all().len(), 1, "the request was sent");
}

#[tokio::test]
async fn missing_params_and_kinds_without_handlers_are_reported() {
    let h = Handler::exec(&[
        "kubectl",
        "-n",
        "{{params.namespace}}",
        "rollout",
        "restart",
    ])
    .expect("valid handler");
    let out = run(&restart("checkout"), &runner(one("restart", h))).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert_eq!(
        out.detail,
        "handler for restart uses params.namespace, which the command lacks"
    );

    let out = run(&restart("checkout"), &runner(Handlers::new())).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert_eq!(out.detail, "no handler configured for action kind restart");
}

#[tokio::test]
async fn a_handler_file_is_loaded_and_used() {
    let (base, log) = serve().await;
    let path = unique_path("handlers.yaml");
    let yaml = format!(
        r#"
default: {{http: {{url: "{base}/actions/{{{{action}}}}"}}}}
handlers:
  restart: {{exec: {{argv: ["printf", "%s", "{{{{target}}}}.service"]}}}}
  scale:
    http: {{url: "{base}/scale/{{{{target}}}}", method: put}}
exec_allow: ["echo", "kubectl"]
"#
    );
    std::fs::write(&path, yaml).expect("write handler file");
    let loaded = Handlers::load(&path);
    let _ = std::fs::remove_file(&path);
    let h = loaded.expect("valid handler file");
    assert_eq!(
        h.exec_allow,
        Some(vec!["echo".to_string(), "kubectl".to_string()])
    );
    let r = runner(h);

    let out = run(&restart("checkout"), &r).await;
    assert_eq!(out.status, ResultStatus::Succeeded, "{out:?}");
    assert_eq!(out.detail, "checkout.service");

    let mut c = cmd("scale");
    c.target = "orders".into();
    let out = run(&c, &r).await;
    assert_eq!(out.status, ResultStatus::Succeeded, "{out:?}");

    let out = run(&cmd("failover"), &r).await;
    assert_eq!(out.status, ResultStatus::Succeeded, "{out:?}");
    assert_eq!(out.detail, "failovered checkout");

    let seen = log.all();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (seen[0].method.clone(), seen[0].path.as_str()),
        (Method::PUT, "/scale/orders")
    );
    assert_eq!(seen[1].path, "/actions/failover");

    // The allow-list covers `exec` commands.
    let mut c = cmd("exec");
    c.args = vec!["printf".into(), "x".into()];
    let out = run(&c, &r).await;
    assert_eq!(
        out.detail,
        "program printf is not allow-listed on this executor"
    );
}

#[test]
fn handler_file_errors_name_the_file_the_place_and_the_problem() {
    let cases: &[(&str, &str)] = &[
        (
            "handlers: {restart: {shell: {argv: [x]}}}",
            "handlers.yaml: handlers.restart.shell: unknown handler kind `shell` (expected `http` or `exec`)",
        ),
        (
            "handlers: {scale: {http: {method: POST}}}",
            "handlers.yaml: handlers.scale.http: missing `url`",
        ),
        (
            "handlers: {restart: {exec: {}}}",
            "handlers.yaml: handlers.restart.exec: missing `argv`",
        ),
        (
            "handlers: {restart: {exec: {argv: []}}}",
            "handlers.yaml: handlers.restart.exec: argv is empty",
        ),
        (
            "handlers: {scale: {http: {url: 'http://h/x', method: FETCH}}}",
            "handlers.yaml: handlers.scale.http: invalid HTTP method \"FETCH\"",
        ),
        (
            "handlers: {scale: {http: {url: 'http://{{target}}/x'}}}",
            "handlers.yaml: handlers.scale.http: placeholders may appear only in the path",
        ),
        (
            "handlers: {scale: {http: {url: 'http:///{{target}}/x'}}}",
            "handlers.yaml: handlers.scale.http: placeholders may appear only in the path",
        ),
        (
            "handlers: {scale: {http: {url: 'http://user@{{target}}/x'}}}",
            "handlers.yaml: handlers.scale.http: placeholders may appear only in the path",
        ),
        (
            "handlers: {restart: {exec: {argv: ['{{target}}']}}}",
            "handlers.yaml: handlers.restart.exec: argv[0] must be a literal program name",
        ),
        (
            "handlers: {restart: {exec: {argv: [kubectl, '{{labels.pod}}']}}}",
            "handlers.yaml: handlers.restart.exec: unknown placeholder `{{labels.pod}}`",
        ),
        (
            "handlers: {restart: {exec: {argv: [kubectl, '{{target']}}}",
            "handlers.yaml: handlers.restart.exec: unclosed `{{`",
        ),
        (
            "handlers: {exec: {exec: {argv: [x]}}}",
            "handlers.yaml: handlers.exec: `exec` is a built-in action kind",
        ),
        (
            "default: {http: {url: 'ftp://h/{{action}}'}}",
            "handlers.yaml: default.http: \"ftp://h/{{action}}\" is not an http:// or https:// URL",
        ),
        (
            "handler: {}",
            "handlers.yaml: handler: unknown key `handler` (expected default, handlers, exec_allow)",
        ),
        (
            "handlers: {restart: {exec: {argv: [x]}, http: {url: 'http://h/'}}}",
            "handlers.yaml: handlers.restart: a handler has exactly one key",
        ),
        (
            "handlers: {scale: {http: {url: 'http://h/', timeout: 5s}}}",
            "handlers.yaml: handlers.scale.http.timeout: unknown key `timeout`",
        ),
        (
            "exec_allow: kubectl",
            "handlers.yaml: exec_allow: expected a list, found a string",
        ),
    ];
    for (yaml, want) in cases {
        match Handlers::parse(yaml, "handlers.yaml") {
            Ok(h) => panic!("{yaml} was accepted: {h:?}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.starts_with(want),
                    "{yaml}\n  got:  {msg}\n  want: {want}"
                );
            }
        }
    }
}

#[test]
fn unreadable_and_malformed_files_are_reported_with_their_name() {
    let missing = unique_path("missing.yaml");
    let err = Handlers::load(&missing).expect_err("no such file");
    assert!(matches!(err, HandlerError::Read { .. }), "{err:?}");
    assert!(err
        .to_string()
        .starts_with(&format!("{}: cannot read", missing.display())));

    let err = Handlers::parse("handlers: [unclosed", "h.yaml").expect_err("bad YAML");
    assert!(matches!(err, HandlerError::Syntax { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("h.yaml:") && msg.contains("YAML syntax error"),
        "{msg}"
    );

    let twice = "handlers:\n  restart: {exec: {argv: [a]}}\n  restart: {exec: {argv: [b]}}\n";
    let err = Handlers::parse(twice, "h.yaml").expect_err("duplicate key");
    assert!(err.to_string().contains("duplicate"), "{err}");

    assert!(Handlers::with_default_url("ftp://127.0.0.1/actions").is_err());
    assert!(Handlers::with_default_url("not a url").is_err());
    assert_eq!(
        Handlers::parse("", "empty.yaml").expect("empty is fine"),
        Handlers::new()
    );
}
