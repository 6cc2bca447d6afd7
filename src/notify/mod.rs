//! Paging: escalations delivered to PagerDuty, Opsgenie and Slack.
//!
//! A [`Notifier`] sends one escalation to every configured sink that takes
//! its severity, in parallel, each with its own retries: connection
//! errors, timeouts, 408, 429 and 5xx are retried with exponential backoff
//! and jitter (a `Retry-After` in seconds is honoured as given); any other
//! status is final. Every sink's outcome is returned, so the caller
//! (`selfheal notify`, in [`crate::live::notify`]) can dead-letter what a
//! sink gave up on and commit the record only then.
//!
//! Deduplication: an incident delivered to a sink is not delivered to
//! that sink again within the dedup window of this process, unless it
//! comes back as a page after a ticket. PagerDuty's `dedup_key` and
//! Opsgenie's `alias` are the incident id, so those services also merge
//! what this process cannot remember (after a restart).
//!
//! Resolving: an incident this process delivered to a sink that later
//! resolves (its trigger cleared) is resolved there too: PagerDuty gets a
//! `resolve` event for the same `dedup_key`, Opsgenie a close of the alert
//! by its alias, Slack a "resolved" message, with the same retries. What
//! was delivered before a restart is not remembered, and its page is then
//! resolved by hand.
//!
//! Secrets (routing key, API key, Slack webhook URL) appear only in the
//! request that carries them: errors, logs and outcomes are redacted.

pub mod config;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::{json, Value};

pub use config::{ConfigError, NotifyConfig, RetryPolicy, Secret, SinkConfig, SinkKind};

use crate::records::{Escalation, Incident, Severity};

/// How long a `Retry-After` may make a sink wait, at most.
const RETRY_AFTER_CAP: StdDuration = StdDuration::from_secs(600);
/// Response body bytes kept in a failure reason.
const BODY_SHOWN: usize = 300;
/// Incidents remembered for their resolve, at most (over all sinks);
/// past it, those delivered more than a week ago are forgotten first.
const OPEN_CAP: usize = 65_536;

/// Why a notifier could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("building the HTTP client: {0}")]
    Client(String),
}

/// What happened to one escalation at one sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The sink accepted it (2xx) after this many attempts.
    Delivered { attempts: u32 },
    /// Already delivered to this sink within the dedup window; not sent.
    Duplicate,
    /// The sink does not take this severity.
    NotSubscribed,
    /// Not delivered: a final status, or the retries ran out. The reason
    /// is redacted.
    GaveUp { attempts: u32, reason: String },
}

/// One sink's outcome, with the waits before each retry.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub sink: SinkKind,
    pub outcome: Outcome,
    pub waits: Vec<StdDuration>,
}

/// Counters of one sink.
#[derive(Debug, Default)]
pub struct SinkCounters {
    pub delivered: AtomicU64,
    pub retries: AtomicU64,
    pub gave_up: AtomicU64,
    pub duplicates: AtomicU64,
    /// Resolves the sink took.
    pub resolved: AtomicU64,
}

/// Sends escalations to the configured sinks.
pub struct Notifier {
    sinks: Vec<SinkConfig>,
    retry: RetryPolicy,
    window: StdDuration,
    client: reqwest::Client,
    redactor: Redactor,
    /// (sink index, incident) → highest severity delivered and when.
    sent: Mutex<HashMap<(usize, String), (Severity, Instant)>>,
    /// (sink index, incident) delivered and not resolved yet → when.
    open: Mutex<HashMap<(usize, String), Instant>>,
    counters: Vec<SinkCounters>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("sinks", &self.sinks)
            .field("retry", &self.retry)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

fn rank(s: Severity) -> u8 {
    match s {
        Severity::Page => 2,
        Severity::Ticket => 1,
    }
}

impl Notifier {
    pub fn new(cfg: NotifyConfig) -> Result<Notifier, NotifyError> {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("selfheal/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifyError::Client(e.to_string()))?;
        let redactor = Redactor::new(&cfg.sinks);
        Ok(Notifier {
            counters: cfg.sinks.iter().map(|_| SinkCounters::default()).collect(),
            sinks: cfg.sinks,
            retry: cfg.retry,
            window: cfg.dedup_window,
            client,
            redactor,
            sent: Mutex::default(),
            open: Mutex::default(),
        })
    }

    pub fn sinks(&self) -> &[SinkConfig] {
        &self.sinks
    }

    /// The counters of each sink, in the order of [`Notifier::sinks`].
    pub fn counters(&self) -> &[SinkCounters] {
        &self.counters
    }

    /// Removes every secret from a text.
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// Delivers one escalation to every sink that takes its severity, in
    /// parallel; returns each sink's outcome in configuration order.
    pub async fn deliver(self: &Arc<Self>, esc: &Escalation) -> Vec<Delivery> {
        let esc = Arc::new(esc.clone());
        self.each_sink(0..self.sinks.len(), "delivery", move |me, i| {
            let esc = esc.clone();
            async move { me.deliver_to(i, &esc).await }
        })
        .await
    }

    /// Runs `job` for each of `sinks` (indices), in parallel; returns
    /// what each finished with, in configuration order. A task that
    /// panicked is logged as a failed `what` and left out.
    async fn each_sink<F, Fut>(
        self: &Arc<Self>,
        sinks: impl IntoIterator<Item = usize>,
        what: &str,
        job: F,
    ) -> Vec<Delivery>
    where
        F: Fn(Arc<Self>, usize) -> Fut,
        Fut: std::future::Future<Output = Delivery> + Send + 'static,
    {
        let mut tasks = tokio::task::JoinSet::new();
        for i in sinks {
            let run = job(self.clone(), i);
            tasks.spawn(async move { (i, run.await) });
        }
        let mut out: Vec<(usize, Delivery)> = Vec::with_capacity(self.sinks.len());
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(d) => out.push(d),
                Err(e) => tracing::error!(error = %e, "a sink {what} task failed"),
            }
        }
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, d)| d).collect()
    }

    async fn deliver_to(&self, i: usize, esc: &Escalation) -> Delivery {
        let sink = &self.sinks[i];
        let mut d = Delivery {
            sink: sink.kind,
            outcome: Outcome::NotSubscribed,
            waits: Vec::new(),
        };
        if !sink.takes(esc.severity) {
            return d;
        }
        if self.already_sent(i, esc) {
            self.counters[i].duplicates.fetch_add(1, Ordering::Relaxed);
            tracing::info!(sink = %sink.kind, incident = %esc.incident, "already delivered within the dedup window; not sent again");
            d.outcome = Outcome::Duplicate;
            return d;
        }
        let (body, auth) = request_body(sink, esc);
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let what = esc.severity.as_str();
        let (outcome, waits) = self
            .send_retrying(i, &sink.url, &body, auth.as_deref(), &esc.incident, what)
            .await;
        if let Outcome::Delivered { .. } = outcome {
            self.counters[i].delivered.fetch_add(1, Ordering::Relaxed);
            self.remember(i, esc);
        }
        d.outcome = outcome;
        d.waits = waits;
        d
    }

    /// Resolves `incident` at every sink this process delivered it to
    /// (and has not resolved it at yet), in parallel; returns the outcome
    /// of each such sink, in configuration order. A sink that gave up
    /// keeps the incident, so that a redelivered record tries again.
    pub async fn resolve(self: &Arc<Self>, incident: &Incident) -> Vec<Delivery> {
        let open: Vec<usize> = match self.open.lock() {
            Ok(open) => (0..self.sinks.len())
                .filter(|&i| open.contains_key(&(i, incident.id.clone())))
                .collect(),
            Err(_) => Vec::new(),
        };
        let inc = Arc::new(incident.clone());
        self.each_sink(open, "resolve", move |me, i| {
            let inc = inc.clone();
            async move { me.resolve_at(i, &inc).await }
        })
        .await
    }

    async fn resolve_at(&self, i: usize, inc: &Incident) -> Delivery {
        let sink = &self.sinks[i];
        let (url, body, auth) = resolve_request(sink, inc);
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let (outcome, waits) = self
            .send_retrying(i, &url, &body, auth.as_deref(), &inc.id, "resolve")
            .await;
        if let Outcome::Delivered { .. } = outcome {
            self.counters[i].resolved.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut open) = self.open.lock() {
                open.remove(&(i, inc.id.clone()));
            }
        }
        Delivery {
            sink: sink.kind,
            outcome,
            waits,
        }
    }

    /// Sends one request to sink `i`, retrying as configured: the outcome
    /// (never `Duplicate` or `NotSubscribed`) and the waits before each
    /// retry. `what` names the request in the logs.
    async fn send_retrying(
        &self,
        i: usize,
        url: &reqwest::Url,
        body: &[u8],
        auth: Option<&str>,
        incident: &str,
        what: &str,
    ) -> (Outcome, Vec<StdDuration>) {
        let sink = &self.sinks[i];
        let mut waits = Vec::new();
        let attempts = self.retry.attempts.max(1);
        for attempt in 1..=attempts {
            let failure = match self.send_once(url, body, auth).await {
                Ok(()) => {
                    tracing::info!(sink = %sink.kind, incident, what, attempts = attempt, "delivered");
                    return (Outcome::Delivered { attempts: attempt }, waits);
                }
                Err(f) => f,
            };
            let reason = self.redactor.redact(&failure.reason);
            let wait = match failure.retry {
                Some(retry_after) if attempt < attempts => {
                    retry_after.unwrap_or_else(|| self.backoff(attempt, incident))
                }
                retryable => {
                    self.counters[i].gave_up.fetch_add(1, Ordering::Relaxed);
                    let reason = if retryable.is_some() {
                        format!(
                            "{reason} (gave up after {attempt} attempt{})",
                            if attempt == 1 { "" } else { "s" }
                        )
                    } else {
                        format!("{reason} (not retried)")
                    };
                    tracing::error!(sink = %sink.kind, incident, what, attempts = attempt, %reason, "not delivered");
                    let outcome = Outcome::GaveUp {
                        attempts: attempt,
                        reason,
                    };
                    return (outcome, waits);
                }
            };
            self.counters[i].retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(sink = %sink.kind, incident, what, attempt, %reason, wait_ms = wait.as_millis() as u64, "delivery failed; retrying");
            waits.push(wait);
            tokio::time::sleep(wait).await;
        }
        unreachable!("the last attempt returns")
    }

    fn already_sent(&self, i: usize, esc: &Escalation) -> bool {
        let Ok(sent) = self.sent.lock() else {
            return false;
        };
        sent.get(&(i, esc.incident.clone()))
            .is_some_and(|(sev, at)| at.elapsed() < self.window && rank(*sev) >= rank(esc.severity))
    }

    fn remember(&self, i: usize, esc: &Escalation) {
        if let Ok(mut sent) = self.sent.lock() {
            if sent.len() >= 4096 {
                let w = self.window;
                sent.retain(|_, (_, at)| at.elapsed() < w);
            }
            sent.insert((i, esc.incident.clone()), (esc.severity, Instant::now()));
        }
        if let Ok(mut open) = self.open.lock() {
            if open.len() >= OPEN_CAP {
                let week = StdDuration::from_secs(7 * 24 * 3600);
                open.retain(|_, at| at.elapsed() < week);
            }
            if open.len() < OPEN_CAP {
                open.insert((i, esc.incident.clone()), Instant::now());
            } else {
                tracing::warn!(incident = %esc.incident, "too many open incidents remembered; this one will not be resolved at its sinks");
            }
        }
    }

    /// The wait before retry `attempt` (1 for the first retry): doubling
    /// from `initial`, at most `max`, then between half and all of it.
    fn backoff(&self, attempt: u32, salt: &str) -> StdDuration {
        let base = self
            .retry
            .initial
            .saturating_mul(1u32 << (attempt - 1).min(20))
            .min(self.retry.max);
        let half = base / 2;
        let spread = (base - half).as_millis() as u64;
        let jitter = if spread == 0 {
            0
        } else {
            random(salt, attempt) % (spread + 1)
        };
        half + StdDuration::from_millis(jitter)
    }

    async fn send_once(
        &self,
        url: &reqwest::Url,
        body: &[u8],
        auth: Option<&str>,
    ) -> Result<(), Failure> {
        let mut req = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Err(Failure {
                    retry: Some(None),
                    reason: error_chain(&e.without_url()),
                })
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = retry_after(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        let reason = format!("HTTP {status}: {}", shorten(text.trim(), BODY_SHOWN));
        let retryable = status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error();
        Err(Failure {
            retry: retryable.then_some(retry_after),
            reason,
        })
    }
}

struct Failure {
    /// `None`: final. `Some(wait)`: retry, after `wait` if the server said.
    retry: Option<Option<StdDuration>>,
    reason: String,
}

/// A `Retry-After` in seconds (HTTP dates are not followed: the backoff
/// applies then).
fn retry_after(h: &HeaderMap) -> Option<StdDuration> {
    let secs: u64 = h.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(StdDuration::from_secs(secs).min(RETRY_AFTER_CAP))
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// A pseudo-random number for jitter: the clock's nanoseconds mixed with
/// the incident id and attempt (splitmix64).
fn random(salt: &str, attempt: u32) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let mut x = nanos ^ (u64::from(attempt) << 32);
    for b in salt.bytes() {
        x = x.rotate_left(5) ^ u64::from(b);
    }
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// At most `max` bytes of `s`, cut at a character boundary, with `…` when
/// cut.
fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Replaces every secret (and a Slack webhook URL's path) by `[redacted]`.
#[derive(Clone)]
struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    fn new(sinks: &[SinkConfig]) -> Redactor {
        let mut secrets = Vec::new();
        for s in sinks {
            secrets.push(s.secret.expose().to_string());
            if s.kind == SinkKind::Slack {
                let path = s.url.path();
                if path.len() > 1 {
                    secrets.push(path.to_string());
                }
            }
        }
        // Longest first, so a secret containing another goes whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.retain(|s| !s.is_empty());
        Redactor { secrets }
    }

    fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "[redacted]");
            }
        }
        out
    }
}

/// The JSON body of an escalation for a sink, and its `Authorization`
/// header value if the sink needs one.
pub fn request_body(sink: &SinkConfig, esc: &Escalation) -> (Value, Option<String>) {
    match sink.kind {
        SinkKind::PagerDuty => (pagerduty_body(sink.secret.expose(), esc), None),
        SinkKind::Opsgenie => (
            opsgenie_body(esc, &sink.tags),
            Some(format!("GenieKey {}", sink.secret.expose())),
        ),
        SinkKind::Slack => (slack_body(esc), None),
    }
}

/// The request that resolves `inc` at a sink: its URL, JSON body and
/// `Authorization` header value if the sink needs one. PagerDuty: a
/// `resolve` event for the incident's `dedup_key`; Opsgenie: the close
/// of the alert whose alias is the incident id
/// (`<url>/<id>/close?identifierType=alias`); Slack: a message.
pub fn resolve_request(sink: &SinkConfig, inc: &Incident) -> (reqwest::Url, Value, Option<String>) {
    match sink.kind {
        SinkKind::PagerDuty => (
            sink.url.clone(),
            json!({
                "routing_key": sink.secret.expose(),
                "event_action": "resolve",
                "dedup_key": inc.id,
                "client": "selfheal",
            }),
            None,
        ),
        SinkKind::Opsgenie => {
            let mut url = sink.url.clone();
            if let Ok(mut path) = url.path_segments_mut() {
                path.pop_if_empty().push(&inc.id).push("close");
            }
            url.query_pairs_mut().append_pair("identifierType", "alias");
            (
                url,
                json!({
                    "source": "selfheal",
                    "note": shorten(&format!("resolved: {}", inc.reason), 25_000),
                }),
                Some(format!("GenieKey {}", sink.secret.expose())),
            )
        }
        SinkKind::Slack => {
            let text = format!(
                "[RESOLVED] {}: incident {} ({})",
                inc.service, inc.id, inc.reason
            );
            (
                sink.url.clone(),
                json!({"text": shorten(&slack_escape(&text), 2900)}),
                None,
            )
        }
    }
}

fn tried_json(esc: &Escalation) -> Value {
    Value::Array(
        esc.tried
            .iter()
            .map(|t| {
                json!({"command_id": t.command_id, "action": t.action,
                       "target": t.target, "outcome": t.outcome})
            })
            .collect(),
    )
}

fn tried_lines(esc: &Escalation) -> Vec<String> {
    esc.tried
        .iter()
        .map(|t| {
            format!(
                "{} {} → {} ({})",
                t.action, t.target, t.outcome, t.command_id
            )
        })
        .collect()
}

/// PagerDuty Events API v2 trigger; summary at most 1024 characters.
fn pagerduty_body(routing_key: &str, esc: &Escalation) -> Value {
    let severity = match esc.severity {
        Severity::Page => "critical",
        Severity::Ticket => "warning",
    };
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": esc.incident,
        "client": "selfheal",
        "payload": {
            "summary": shorten(&esc.summary, 1020),
            "source": esc.service,
            "severity": severity,
            "class": esc.reason.as_str(),
            "custom_details": {
                "incident": esc.incident,
                "reason": esc.reason.as_str(),
                "escalation_severity": esc.severity.as_str(),
                "tried": tried_json(esc),
                "context": esc.context,
            }
        }
    })
}

/// Opsgenie create-alert request: message at most 130 characters,
/// details as strings.
fn opsgenie_body(esc: &Escalation, extra_tags: &[String]) -> Value {
    let priority = match esc.severity {
        Severity::Page => "P1",
        Severity::Ticket => "P3",
    };
    let mut description = format!(
        "{}\n\nService: {}\nIncident: {}\nReason: {}",
        esc.summary,
        esc.service,
        esc.incident,
        esc.reason.as_str()
    );
    let lines = tried_lines(esc);
    if !lines.is_empty() {
        description.push_str("\nTried:\n");
        for l in &lines {
            description.push_str(&format!("- {l}\n"));
        }
    }
    let mut details = serde_json::Map::new();
    for (k, v) in &esc.context {
        details.insert(k.clone(), Value::String(shorten(v, 1000)));
    }
    for (k, v) in [
        ("incident", esc.incident.clone()),
        ("service", esc.service.clone()),
        ("severity", esc.severity.as_str().to_string()),
        ("reason", esc.reason.as_str().to_string()),
        ("tried", lines.join("; ")),
    ] {
        details.insert(k.to_string(), Value::String(v));
    }
    let mut tags = vec![
        "selfheal".to_string(),
        esc.severity.as_str().to_string(),
        esc.reason.as_str().to_string(),
    ];
    tags.extend(extra_tags.iter().cloned());
    json!({
        "message": shorten(&format!("{}: {}", esc.service, esc.summary), 128),
        "alias": esc.incident,
        "description": shorten(&description, 14_000),
        "priority": priority,
        "source": "selfheal",
        "entity": esc.service,
        "tags": tags,
        "details": details,
    })
}

/// Escapes Slack's control characters in mrkdwn text.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Slack incoming-webhook message: a plain `text` fallback and blocks.
fn slack_body(esc: &Escalation) -> Value {
    let label = match esc.severity {
        Severity::Page => "PAGE",
        Severity::Ticket => "TICKET",
    };
    let text = format!(
        "[{label}] {}: {} (incident {}, reason {})",
        esc.service,
        esc.summary,
        esc.incident,
        esc.reason.as_str()
    );
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": shorten(&format!(
            "*{label}* · *{}* · {}\n{}",
            slack_escape(&esc.service),
            esc.reason.as_str(),
            slack_escape(&esc.summary)
        ), 2900)}
    })];
    let lines = tried_lines(esc);
    if !lines.is_empty() {
        let list: Vec<String> = lines
            .iter()
            .map(|l| format!("• {}", slack_escape(l)))
            .collect();
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": shorten(&format!("*Tried*\n{}", list.join("\n")), 2900)}
        }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": shorten(&format!("incident {}", slack_escape(&esc.incident)), 2900)}]
    }));
    json!({"text": slack_escape(&text), "blocks": blocks})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{EscalationReason, Tried};

    fn esc(sev: Severity) -> Escalation {
        Escalation {
            incident: "inc-1".into(),
            service: "checkout".into(),
            severity: sev,
            reason: EscalationReason::ActionFailed,
            summary: "restart <pod-1> failed & 5xx".into(),
            tried: vec![Tried {
                command_id: "c1".into(),
                action: "restart".into(),
                target: "pod-1".into(),
                outcome: "failed".into(),
            }],
            context: [("labels.pod".to_string(), "pod-1".to_string())].into(),
        }
    }

    #[test]
    fn the_backoff_doubles_up_to_max_with_jitter_between_half_and_all() {
        let mut cfg = NotifyConfig::new(vec![SinkConfig::new(
            SinkKind::Slack,
            "http://127.0.0.1:1/x",
            "http://127.0.0.1:1/x",
        )
        .unwrap()]);
        cfg.retry = RetryPolicy {
            attempts: 6,
            initial: StdDuration::from_millis(1000),
            max: StdDuration::from_millis(5000),
        };
        let n = Notifier::new(cfg).unwrap();
        for (attempt, full) in [(1, 1000), (2, 2000), (3, 4000), (4, 5000), (5, 5000)] {
            let w = n.backoff(attempt, "inc").as_millis() as u64;
            assert!((full / 2..=full).contains(&w), "attempt {attempt}: {w}");
        }
    }

    #[test]
    fn slack_text_escapes_markup_from_the_record() {
        let b = slack_body(&esc(Severity::Page));
        let text = b["text"].as_str().unwrap();
        assert!(
            text.contains("restart &lt;pod-1&gt; failed &amp; 5xx"),
            "{text}"
        );
        assert!(text.starts_with("[PAGE] checkout"), "{text}");
    }

    #[test]
    fn the_redactor_removes_keys_and_the_slack_webhook_path() {
        let sinks = vec![
            SinkConfig::new(SinkKind::PagerDuty, "http://127.0.0.1:1/", "routing-abc").unwrap(),
            SinkConfig::new(
                SinkKind::Slack,
                "https://hooks.slack.com/services/T/B/xyz",
                "https://hooks.slack.com/services/T/B/xyz",
            )
            .unwrap(),
        ];
        let r = Redactor::new(&sinks);
        let out = r.redact(
            "key routing-abc url https://hooks.slack.com/services/T/B/xyz path /services/T/B/xyz",
        );
        assert_eq!(out, "key [redacted] url [redacted] path [redacted]");
    }
}
