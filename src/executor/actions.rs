//! The runners behind [`super::run`]: built-in `exec`, `http` and `probe`
//! actions, and configured handlers.

use std::time::Duration;

use reqwest::Method;

use super::capture::truncate;
use super::handlers::Handler;
use super::http::{self, ExpectStatus, Request, Response};
use super::process::{self, ProcError};
use super::template::{render_argv, RenderError};
use super::{fmt_duration, ActionError, Runner};
use crate::records::Command;

/// Body bytes a probe searches for `expect_body`, at least.
const PROBE_SCAN: usize = 64 * 1024;

fn failed(detail: impl Into<String>) -> ActionError {
    ActionError::Failed(detail.into())
}

/// The built-in `exec` action: `cmd.args` as an argument vector.
pub(crate) async fn exec(
    cmd: &Command,
    r: &Runner,
    timeout: Duration,
) -> Result<String, ActionError> {
    let Some(program) = cmd.args.first() else {
        return Err(failed("exec command has no argument vector"));
    };
    if program.is_empty() {
        return Err(failed("exec command has an empty program name"));
    }
    if let Some(allow) = &r.handlers.exec_allow {
        if !allow.iter().any(|p| p == program) {
            return Err(failed(format!(
                "program {program} is not allow-listed on this executor"
            )));
        }
    }
    run_argv(&cmd.args, timeout, r.max_output).await
}

/// Runs an argument vector and describes how it ended.
async fn run_argv(argv: &[String], timeout: Duration, limit: usize) -> Result<String, ActionError> {
    let program = argv.first().map_or("", String::as_str);
    match process::run(argv, timeout, limit).await {
        Ok(f) if f.status.success() => {
            let out = f.stdout.text();
            Ok(if out.is_empty() {
                "exit status 0".to_string()
            } else {
                out
            })
        }
        Ok(f) => {
            let status = process::describe(f.status);
            Err(failed(if !f.stderr.is_empty() {
                format!("{status}; stderr: {}", f.stderr.text())
            } else if !f.stdout.is_empty() {
                format!("{status}; stdout: {}", f.stdout.text())
            } else {
                status
            }))
        }
        Err(ProcError::Spawn(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(failed(format!("program {program} not found")))
        }
        Err(ProcError::Spawn(e)) => Err(failed(format!("could not start {program}: {e}"))),
        Err(ProcError::Wait(e)) => Err(failed(format!("lost track of {program}: {e}"))),
        Err(ProcError::TimedOut) => Err(ActionError::TimedOut(format!(
            "timed out after {}; process killed",
            fmt_duration(timeout)
        ))),
    }
}

/// `params.url`, else the target.
fn url_of(cmd: &Command) -> &str {
    cmd.params.get("url").unwrap_or(&cmd.target)
}

fn expect_status(cmd: &Command) -> Result<ExpectStatus, ActionError> {
    match cmd.params.get("expect_status") {
        None => Ok(ExpectStatus::success()),
        Some(s) => ExpectStatus::parse(s).ok_or_else(|| {
            failed(format!(
                "invalid expect_status {s:?} (expected codes or classes such as 200, 2xx, 200,204)"
            ))
        }),
    }
}

/// Adds every `header.NAME` param as header `NAME`.
fn add_headers(cmd: &Command, req: &mut Request) -> Result<(), ActionError> {
    for (k, v) in &cmd.params {
        if let Some(name) = k.strip_prefix("header.") {
            req.header(name, v)?;
        }
    }
    Ok(())
}

/// `HTTP 503 from POST http://…`, with `; body: …` when there is one.
fn status_line(resp: &Response, what: &str, body: &str) -> String {
    let mut s = format!("HTTP {} from {what}", resp.status.as_u16());
    if !body.is_empty() {
        s.push_str("; body: ");
        s.push_str(body);
    }
    s
}

/// The built-in `http` action.
pub(crate) async fn http(
    cmd: &Command,
    r: &Runner,
    timeout: Duration,
) -> Result<String, ActionError> {
    let url = http::parse_url(url_of(cmd))?;
    let method = match cmd.params.get("method") {
        None => Method::POST,
        Some(m) => http::method(m).ok_or_else(|| {
            failed(format!(
                "invalid HTTP method {m:?} (expected one of {})",
                http::METHODS.join(", ")
            ))
        })?,
    };
    let expect = expect_status(cmd)?;
    let mut req = Request::new(method, url);
    add_headers(cmd, &mut req)?;
    if let Some(body) = cmd.params.get("body") {
        req.body = body.as_bytes().to_vec();
    }
    let what = req.describe();
    let resp = http::send(&r.client, req, timeout, r.max_output).await?;
    let body = resp.body.text();
    if expect.matches(resp.status) {
        Ok(status_line(&resp, &what, &body))
    } else {
        Err(failed(status_line(&resp, &unexpected(&what, cmd), &body)))
    }
}

/// `GET http://… (expected 2xx)`, for a status that was not expected.
fn unexpected(what: &str, cmd: &Command) -> String {
    let expected = cmd
        .params
        .get("expect_status")
        .map_or("2xx", String::as_str);
    format!("{what} (expected {expected})")
}

/// The built-in `probe` action: a GET whose status and body are checked.
pub(crate) async fn probe(
    cmd: &Command,
    r: &Runner,
    timeout: Duration,
) -> Result<String, ActionError> {
    let url = http::parse_url(url_of(cmd))?;
    let expect = expect_status(cmd)?;
    let mut req = Request::new(Method::GET, url);
    add_headers(cmd, &mut req)?;
    let what = req.describe();
    let scan = r.max_output.max(PROBE_SCAN);
    let resp = http::send(&r.client, req, timeout, scan).await?;
    let body = resp.body.text_up_to(r.max_output);
    if !expect.matches(resp.status) {
        return Err(failed(status_line(&resp, &unexpected(&what, cmd), &body)));
    }
    let Some(needle) = cmd.params.get("expect_body") else {
        return Ok(format!("HTTP {} from {what}", resp.status.as_u16()));
    };
    let found = String::from_utf8_lossy(resp.body.bytes()).contains(needle.as_str());
    if found {
        Ok(format!(
            "HTTP {} from {what}; body contains {}",
            resp.status.as_u16(),
            quoted(needle, r.max_output)
        ))
    } else {
        let lacks = format!(
            "{what}, but the body lacks {}",
            quoted(needle, r.max_output)
        );
        Err(failed(status_line(&resp, &lacks, &body)))
    }
}

fn quoted(s: &str, limit: usize) -> String {
    format!("{:?}", truncate(s, limit))
}

/// A configured handler.
pub(crate) async fn handler(
    cmd: &Command,
    h: &Handler,
    r: &Runner,
    timeout: Duration,
) -> Result<String, ActionError> {
    let kind = &cmd.action;
    let render_failed = |e: RenderError| match e {
        RenderError::MissingParam(_) => failed(format!("handler for {kind} {e}")),
        other => failed(format!("handler for {kind}: {other}")),
    };
    match h {
        Handler::Exec(e) => {
            let argv = render_argv(&e.argv, cmd).map_err(render_failed)?;
            run_argv(&argv, timeout, r.max_output).await
        }
        Handler::Http(h) => {
            let url = h.url.render(cmd).map_err(render_failed)?;
            let mut req = Request::new(h.method.clone(), url);
            req.header("content-type", "application/json")?;
            req.body = serde_json::to_vec(cmd)
                .map_err(|e| failed(format!("cannot encode the command as JSON: {e}")))?;
            let what = req.describe();
            let resp = http::send(&r.client, req, timeout, r.max_output).await?;
            let detail = response_detail(&resp, r.max_output);
            if resp.status.is_success() {
                Ok(if detail.is_empty() {
                    format!("HTTP {} from {what}", resp.status.as_u16())
                } else {
                    detail
                })
            } else {
                let mut s = format!("HTTP {} from {what}", resp.status.as_u16());
                if !detail.is_empty() {
                    s.push_str(": ");
                    s.push_str(&detail);
                }
                Err(failed(s))
            }
        }
    }
}

/// The `detail` field of a JSON response, else the body text.
fn response_detail(resp: &Response, limit: usize) -> String {
    if let Ok(serde_json::Value::Object(m)) =
        serde_json::from_slice::<serde_json::Value>(resp.body.bytes())
    {
        match m.get("detail") {
            Some(serde_json::Value::String(s)) => return truncate(s.trim(), limit),
            Some(serde_json::Value::Null) | None => {}
            Some(other) => return truncate(&other.to_string(), limit),
        }
    }
    resp.body.text()
}
