//! Behaviour tests for the action runners, against real local programs and
//! local HTTP servers on ephemeral ports.

mod exec;
mod handlers;
mod http;
mod k8s;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;

use super::{Handlers, Runner};
use crate::records::Command;
use crate::time::Timestamp;

/// A command of kind `action` with harmless defaults and a 10s timeout.
fn cmd(action: &str) -> Command {
    Command {
        id: "cmd-1".into(),
        incident: "inc-1".into(),
        runbook: "restart-on-oom".into(),
        action: action.into(),
        target: "checkout".into(),
        params: Default::default(),
        args: Vec::new(),
        tier: 1,
        deadline: Timestamp(0),
        timeout: "10s".into(),
        rollback_of: None,
        service: "checkout".into(),
    }
}

fn runner(h: Handlers) -> Runner {
    Runner::new(h).expect("HTTP client")
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A path in the temp dir no other test or run uses.
fn unique_path(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "selfheal-exec-{name}-{}-{nanos}",
        std::process::id()
    ))
}

/// One request as the test server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    /// Path as sent, still percent-encoded.
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Vec<u8>,
    /// The decoded `{t}` of `/scale/{t}`.
    segment: Option<String>,
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    fn all(&self) -> Vec<Seen> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn push(&self, s: Seen) {
        if let Ok(mut v) = self.0.lock() {
            v.push(s);
        }
    }
}

/// Routes:
/// * `/scale/{t}` — records the decoded segment, 200 `scaled`;
/// * `/created` — 201 `made`;
/// * `/status/{code}` — that status, body `status {code} body`;
/// * `/slow` — answers after 30 s;
/// * `/health` — 200 `status: ok`;
/// * `/actions/{kind}` — 200 `{"detail":"{kind}ed {target}"}` from the
///   posted command, except kind `fail`: 500 `{"detail":"supervisor says no"}`;
/// * anything else — 200 `ok`.
async fn serve() -> (String, Log) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let log = Log::default();
    let app = Router::new()
        .route("/scale/{t}", any(scale))
        .fallback(any(everything))
        .with_state(log.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), log)
}

fn seen(method: Method, uri: &Uri, headers: HeaderMap, body: &Bytes) -> Seen {
    Seen {
        method,
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers,
        body: body.to_vec(),
        segment: None,
    }
}

async fn scale(
    State(log): State<Log>,
    Path(t): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = seen(method, &uri, headers, &body);
    s.segment = Some(t);
    log.push(s);
    (StatusCode::OK, "scaled").into_response()
}

async fn everything(
    State(log): State<Log>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    log.push(seen(method, &uri, headers, &body));
    let path = uri.path();
    if path == "/created" {
        return (StatusCode::CREATED, "made").into_response();
    }
    if path == "/slow" {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        return (StatusCode::OK, "finally").into_response();
    }
    if path == "/health" {
        return (StatusCode::OK, "status: ok").into_response();
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let status = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        return (status, format!("status {code} body")).into_response();
    }
    if path == "/actions/fail" {
        let body = r#"{"detail":"supervisor says no"}"#;
        return (StatusCode::INTERNAL_SERVER_ERROR, body).into_response();
    }
    if let Some(kind) = path.strip_prefix("/actions/") {
        let target = serde_json::from_slice::<Command>(&body)
            .map(|c| c.target)
            .unwrap_or_else(|e| format!("<bad command JSON: {e}>"));
        let body = serde_json::json!({ "detail": format!("{kind}ed {target}") }).to_string();
        return (StatusCode::OK, body).into_response();
    }
    (StatusCode::OK, "ok").into_response()
}
