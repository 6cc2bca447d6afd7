//! The built-in `http` and `probe` actions against a local server.

use std::time::{Duration, Instant};

use axum::http::Method;

use super::{cmd, runner, serve};
use crate::executor::{run, Handlers};
use crate::records::{Command, ResultStatus};

fn with(action: &str, target: &str, params: &[(&str, &str)]) -> Command {
    let mut c = cmd(action);
    c.target = target.into();
    for (k, v) in params {
        c.params.insert(k.to_string(), v.to_string());
    }
    c
}

#[tokio::test]
async fn http_action_sends_the_method_headers_and_body_it_is_given() {
    let (base, log) = serve().await;
    let url = format!("{base}/created");
    let c = with(
        "http",
        "checkout",
        &[
            ("url", &url),
            ("method", "put"),
            ("header.X-Token", "s3cret"),
            ("body", "hello"),
            ("expect_status", "201"),
        ],
    );
    let out = run(&c, &runner(Handlers::new())).await;
    assert_eq!(out.status, ResultStatus::Succeeded, "{out:?}");
    assert_eq!(out.detail, format!("HTTP 201 from PUT {url}; body: made"));
    let seen = log.all();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::PUT);
    assert_eq!(
        seen[0].headers.get("x-token").map(|v| v.as_bytes()),
        Some(&b"s3cret"[..])
    );
    assert_eq!(seen[0].body, b"hello");
}

#[tokio::test]
async fn http_action_defaults_to_post_and_any_2xx() {
    let (base, log) = serve().await;
    let c = with("http", &format!("{base}/created"), &[]);
    let out = run(&c, &runner(Handlers::new())).await;
    assert_eq!(out.status, ResultStatus::Succeeded, "{out:?}");
    let seen = log.all();
    assert_eq!(seen[0].method, Method::POST);
    assert!(seen[0].body.is_empty());
}

#[tokio::test]
async fn an_unexpected_status_fails_with_the_status_and_body() {
    let (base, _log) = serve().await;
    let r = runner(Handlers::new());
    let out = run(&with("http", &format!("{base}/status/503"), &[]), &r).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert_eq!(
        out.detail,
        format!("HTTP 503 from POST {base}/status/503 (expected 2xx); body: status 503 body")
    );
    let c = with(
        "http",
        &format!("{base}/created"),
        &[("expect_status", "200,204")],
    );
    let out = run(&c, &r).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert!(
        out.detail.starts_with("HTTP 201 from POST"),
        "{}",
        out.detail
    );
    assert!(out.detail.contains("(expected 200,204)"), "{}", out.detail);
}

#[tokio::test]
async fn a_slow_endpoint_times_out_quickly() {
    let (base, _log) = serve().await;
    let r = runner(Handlers::new());
    for action in ["http", "probe"] {
        let mut c = with(action, &format!("{base}/slow"), &[]);
        c.timeout = "1s".into();
        let started = Instant::now();
        let out = run(&c, &r).await;
        assert_eq!(out.status, ResultStatus::TimedOut, "{action}: {out:?}");
        assert!(
            out.detail.starts_with("timed out after 1s"),
            "{}",
            out.detail
        );
        assert!(started.elapsed() < Duration::from_secs(15));
    }
}

#[tokio::test]
async fn a_refused_connection_fails() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let out = run(
        &with("http", &format!("http://{addr}/x"), &[]),
        &runner(Handlers::new()),
    )
    .await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert!(
        out.detail
            .starts_with(&format!("POST http://{addr}/x failed: ")),
        "{}",
        out.detail
    );
}

#[tokio::test]
async fn header_values_with_line_breaks_and_other_schemes_are_refused() {
    let (base, log) = serve().await;
    let r = runner(Handlers::new());
    let c = with(
        "http",
        &format!("{base}/created"),
        &[("header.X-Evil", "a\r\nX-Injected: 1")],
    );
    let out = run(&c, &r).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert_eq!(
        out.detail,
        "header \"X-Evil\" contains a line break; refused"
    );
    assert!(log.all().is_empty(), "the request was sent");

    let out = run(&with("http", "file:///etc/passwd", &[]), &r).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert_eq!(
        out.detail,
        "URL scheme \"file\" is not allowed (only http and https)"
    );
    let out = run(&with("probe", "not a url", &[]), &r).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert!(
        out.detail.starts_with("invalid URL \"not a url\""),
        "{}",
        out.detail
    );
}

#[tokio::test]
async fn probe_checks_status_and_body() {
    let (base, log) = serve().await;
    let r = runner(Handlers::new());
    let health = format!("{base}/health");
    let out = run(&with("probe", &health, &[("expect_body", "ok")]), &r).await;
    assert_eq!(out.status, ResultStatus::Succeeded, "{out:?}");
    assert_eq!(
        out.detail,
        format!("HTTP 200 from GET {health}; body contains \"ok\"")
    );
    assert_eq!(log.all()[0].method, Method::GET);

    let out = run(&with("probe", &health, &[("expect_body", "ready")]), &r).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert_eq!(
        out.detail,
        format!("HTTP 200 from GET {health}, but the body lacks \"ready\"; body: status: ok")
    );

    let out = run(&with("probe", &format!("{base}/status/503"), &[]), &r).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert!(
        out.detail.starts_with("HTTP 503 from GET"),
        "{}",
        out.detail
    );

    let c = with(
        "probe",
        &format!("{base}/status/404"),
        &[("expect_status", "4xx")],
    );
    let out = run(&c, &r).await;
    assert_eq!(out.status, ResultStatus::Succeeded, "{out:?}");
}
