//! Plain HTTP requests for the `http` and `probe` actions and for HTTP
//! handlers: method and header checks, expected statuses, bounded bodies.

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};

use super::capture::Capture;
use super::{fmt_duration, ActionError};

/// How many body bytes past the kept ones are read (and counted) at most.
const DISCARD_MAX: u64 = 1 << 20;

/// Methods accepted for actions and handlers.
pub(crate) const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Parses a method name (any case) from [`METHODS`].
pub(crate) fn method(name: &str) -> Option<Method> {
    let upper = name.trim().to_ascii_uppercase();
    METHODS
        .contains(&upper.as_str())
        .then(|| Method::from_bytes(upper.as_bytes()).ok())
        .flatten()
}

/// The statuses that count as success: `200`, `2xx`, `200,204`, `2xx,304`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExpectStatus(Vec<(u16, bool)>);

impl ExpectStatus {
    pub fn success() -> ExpectStatus {
        ExpectStatus(vec![(2, true)])
    }

    pub fn parse(s: &str) -> Option<ExpectStatus> {
        let mut items = Vec::new();
        for item in s.split(',') {
            let item = item.trim().to_ascii_lowercase();
            let b = item.as_bytes();
            if b.len() != 3 || !(b'1'..=b'5').contains(&b[0]) {
                return None;
            }
            if &b[1..] == b"xx" {
                items.push((u16::from(b[0] - b'0'), true));
            } else {
                let code: u16 = item.parse().ok()?;
                items.push((code, false));
            }
        }
        Some(ExpectStatus(items))
    }

    pub fn matches(&self, status: StatusCode) -> bool {
        let code = status.as_u16();
        self.0.iter().any(
            |&(v, class)| {
                if class {
                    code / 100 == v
                } else {
                    code == v
                }
            },
        )
    }
}

/// One request to send.
pub(crate) struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: Method, url: Url) -> Request {
        Request {
            method,
            url,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header; names must be valid tokens and values may not hold
    /// CR, LF or other control characters (no header injection).
    pub fn header(&mut self, name: &str, value: &str) -> Result<(), ActionError> {
        if value.contains(['\r', '\n']) || name.contains(['\r', '\n']) {
            return Err(ActionError::Failed(format!(
                "header {:?} contains a line break; refused",
                name.trim()
            )));
        }
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ActionError::Failed(format!("invalid header name {name:?}")))?;
        let v = HeaderValue::from_str(value)
            .map_err(|_| ActionError::Failed(format!("invalid value for header {name:?}")))?;
        self.headers.push((n, v));
        Ok(())
    }

    /// `POST http://host/path` with any password in the URL hidden.
    pub fn describe(&self) -> String {
        format!("{} {}", self.method, display_url(&self.url))
    }
}

/// A response: status and the first bytes of the body.
pub(crate) struct Response {
    pub status: StatusCode,
    pub body: Capture,
}

/// Checks the scheme of a URL given by a command.
pub(crate) fn parse_url(s: &str) -> Result<Url, ActionError> {
    let url =
        Url::parse(s.trim()).map_err(|e| ActionError::Failed(format!("invalid URL {s:?}: {e}")))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(ActionError::Failed(format!(
            "URL scheme {other:?} is not allowed (only http and https)"
        ))),
    }
}

/// The URL without its password, for details and logs.
pub(crate) fn display_url(url: &Url) -> String {
    if url.password().is_none() {
        return url.to_string();
    }
    let mut u = url.clone();
    // Only fails for URLs that cannot have credentials at all.
    let _ = u.set_password(Some("***"));
    u.to_string()
}

/// Sends `req` and reads up to `body_limit` bytes of the response, all
/// within `timeout`.
pub(crate) async fn send(
    client: &reqwest::Client,
    req: Request,
    timeout: Duration,
    body_limit: usize,
) -> Result<Response, ActionError> {
    let what = req.describe();
    let exchange = async {
        let mut builder = client.request(req.method, req.url);
        for (n, v) in req.headers {
            builder = builder.header(n, v);
        }
        if !req.body.is_empty() {
            builder = builder.body(req.body);
        }
        let mut resp = builder.send().await?;
        let status = resp.status();
        let mut body = Capture::new(body_limit);
        while let Some(chunk) = resp.chunk().await? {
            body.push(&chunk);
            if body.total() > body_limit as u64 + DISCARD_MAX {
                // The rest is counted no further.
                body.mark_more();
                break;
            }
        }
        Ok::<_, reqwest::Error>(Response { status, body })
    };
    let timed_out =
        || ActionError::TimedOut(format!("timed out after {}: {what}", fmt_duration(timeout)));
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Err(timed_out()),
        Ok(Err(e)) if e.is_timeout() => Err(timed_out()),
        Ok(Err(e)) => Err(ActionError::Failed(format!(
            "{what} failed: {}",
            error_chain(&e)
        ))),
        Ok(Ok(r)) => Ok(r),
    }
}

/// The causes of a reqwest error, innermost last, without the URL that
/// reqwest repeats in its own message.
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        parts.push(s.to_string());
        src = s.source();
    }
    if parts.is_empty() {
        return e.to_string();
    }
    parts.join(": ")
}
