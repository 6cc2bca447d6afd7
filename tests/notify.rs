//! Paging: the request each sink receives, retries, dedup and redaction
//! against local HTTP servers; `selfheal notify` as a process against a
//! real broker (Tansu through `scripts/test.sh`) and the same servers.

mod common;

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use selfheal::notify::{Notifier, NotifyConfig, Outcome, RetryPolicy, SinkConfig, SinkKind};
use selfheal::records::{
    Escalation, EscalationReason, Incident, IncidentState, Labels, Severity, Tried, Trigger,
};
use serde_json::Value;

const PD_KEY: &str = "pdkey-R0UT1NG-5ecret";
const OG_KEY: &str = "og-8a7b6c5d-GENIE";
const SLACK_PATH: &str = "/services/T000/B000/XyZslackSecret";

/// One request a fake sink received.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
    body: Value,
    /// The status it was answered with.
    status: u16,
}

/// A scripted reply.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn reply(status: u16) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: String::new(),
    }
}

type Rule = Arc<dyn Fn(&Value) -> Option<Reply> + Send + Sync>;

/// A local HTTP server standing in for a sink: records every request and
/// answers from a script, then with a rule, then 202.
struct FakeSink {
    base: String,
    reqs: Arc<Mutex<Vec<Req>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    _rt: tokio::runtime::Runtime,
}

impl FakeSink {
    fn start() -> FakeSink {
        FakeSink::with_rule(Arc::new(|_| None))
    }

    fn with_rule(rule: Rule) -> FakeSink {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let reqs: Arc<Mutex<Vec<Req>>> = Arc::default();
        let script: Arc<Mutex<VecDeque<Reply>>> = Arc::default();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (r, s) = (reqs.clone(), script.clone());
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  body: axum::body::Bytes| {
                let (r, s, rule) = (r.clone(), s.clone(), rule.clone());
                async move {
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let answer = s
                        .lock()
                        .unwrap()
                        .pop_front()
                        .or_else(|| rule(&body))
                        .unwrap_or_else(|| reply(202));
                    r.lock().unwrap().push(Req {
                        method: method.to_string(),
                        path: uri.path().to_string(),
                        query: uri.query().unwrap_or("").to_string(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                            })
                            .collect(),
                        body,
                        status: answer.status,
                    });
                    let mut resp = axum::response::Response::builder().status(answer.status);
                    for (k, v) in answer.headers {
                        resp = resp.header(k, v);
                    }
                    resp.body(axum::body::Body::from(answer.body)).unwrap()
                }
            },
        );
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeSink {
            base: format!("http://{addr}"),
            reqs,
            script,
            _rt: rt,
        }
    }

    fn push(&self, r: Reply) {
        self.script.lock().unwrap().push_back(r);
    }

    fn requests(&self) -> Vec<Req> {
        self.reqs.lock().unwrap().clone()
    }

    /// How many accepted (2xx) requests named each incident, read by
    /// `id_of`.
    fn by_incident(&self, id_of: impl Fn(&Req) -> Option<String>) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for r in self.requests().into_iter().filter(|r| r.status / 100 == 2) {
            if let Some(id) = id_of(&r) {
                *m.entry(id).or_insert(0) += 1;
            }
        }
        m
    }
}

fn pd_incident(r: &Req) -> Option<String> {
    r.body["dedup_key"].as_str().map(str::to_string)
}

fn og_incident(r: &Req) -> Option<String> {
    r.body["alias"].as_str().map(str::to_string)
}

fn slack_incident(r: &Req) -> Option<String> {
    let t = r.body["text"].as_str()?;
    let rest = &t[t.find("(incident ")? + "(incident ".len()..];
    Some(rest[..rest.find(',')?].to_string())
}

fn escalation(incident: &str, severity: Severity) -> Escalation {
    Escalation {
        incident: incident.into(),
        service: "checkout".into(),
        severity,
        reason: EscalationReason::ActionFailed,
        summary: "restart of pod-7 failed; checkout 5xx above 2%".into(),
        tried: vec![Tried {
            command_id: "cmd-1".into(),
            action: "restart".into(),
            target: "pod-7".into(),
            outcome: "failed".into(),
        }],
        context: [("labels.pod".to_string(), "pod-7".to_string())].into(),
    }
}

fn incident(id: &str, state: IncidentState) -> Incident {
    Incident {
        id: id.into(),
        service: "checkout".into(),
        state,
        trigger: Trigger {
            source: "alert".into(),
            alertname: "CheckoutErrors".into(),
            fingerprint: "f00d".into(),
            starts_at: selfheal::time::Timestamp(1_772_359_200_000),
            labels: Labels::from_pairs([("alertname", "CheckoutErrors")]),
        },
        reason: "trigger resolved".into(),
        runbook: None,
    }
}

fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        initial: Duration::from_millis(10),
        max: Duration::from_millis(40),
    }
}

fn pd_sink(s: &FakeSink) -> SinkConfig {
    SinkConfig::new(
        SinkKind::PagerDuty,
        &format!("{}/v2/enqueue", s.base),
        PD_KEY,
    )
    .unwrap()
}

fn og_sink(s: &FakeSink) -> SinkConfig {
    SinkConfig::new(SinkKind::Opsgenie, &format!("{}/v2/alerts", s.base), OG_KEY).unwrap()
}

fn slack_sink(s: &FakeSink) -> SinkConfig {
    let url = format!("{}{SLACK_PATH}", s.base);
    SinkConfig::new(SinkKind::Slack, &url, &url).unwrap()
}

fn notifier(sinks: Vec<SinkConfig>, retry: RetryPolicy) -> Arc<Notifier> {
    let mut cfg = NotifyConfig::new(sinks);
    cfg.retry = retry;
    Arc::new(Notifier::new(cfg).unwrap())
}

/// Runs `f` on a current-thread runtime with every log line of every
/// crate (trace level) captured; returns its value and the logs.
fn with_logs<T>(f: impl std::future::Future<Output = T>) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let b = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || b.clone())
        .with_ansi(false)
        .finish();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = tracing::subscriber::with_default(sub, || rt.block_on(f));
    let logs = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    (out, logs)
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

#[test]
fn each_sink_receives_its_documented_request() {
    let (pd, og, slack) = (FakeSink::start(), FakeSink::start(), FakeSink::start());
    let mut og_cfg = og_sink(&og);
    og_cfg.tags = vec!["team-payments".into()];
    let n = notifier(
        vec![pd_sink(&pd), og_cfg, slack_sink(&slack)],
        fast_retry(3),
    );
    let out = block_on(n.deliver(&escalation("inc-42", Severity::Page)));
    assert!(
        out.iter()
            .all(|d| d.outcome == Outcome::Delivered { attempts: 1 }),
        "{out:?}"
    );

    let r = &pd.requests()[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v2/enqueue")
    );
    assert_eq!(r.headers["content-type"], "application/json");
    let b = &r.body;
    assert_eq!(b["routing_key"], PD_KEY);
    assert_eq!(b["event_action"], "trigger");
    assert_eq!(b["dedup_key"], "inc-42");
    assert_eq!(
        b["payload"]["summary"],
        "restart of pod-7 failed; checkout 5xx above 2%"
    );
    assert_eq!(b["payload"]["source"], "checkout");
    assert_eq!(b["payload"]["severity"], "critical");
    assert_eq!(b["payload"]["custom_details"]["reason"], "action_failed");
    assert_eq!(
        b["payload"]["custom_details"]["tried"][0]["action"],
        "restart"
    );
    assert_eq!(
        b["payload"]["custom_details"]["tried"][0]["outcome"],
        "failed"
    );
    assert!(!r.headers.contains_key("authorization"));

    let r = &og.requests()[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v2/alerts"));
    assert_eq!(r.headers["authorization"], format!("GenieKey {OG_KEY}"));
    assert_eq!(r.headers["content-type"], "application/json");
    let b = &r.body;
    assert_eq!(b["alias"], "inc-42");
    assert_eq!(b["priority"], "P1");
    assert!(b["message"]
        .as_str()
        .unwrap()
        .starts_with("checkout: restart of pod-7 failed"));
    assert!(b["description"]
        .as_str()
        .unwrap()
        .contains("restart pod-7 → failed"));
    let tags: Vec<&str> = b["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tags.contains(&"selfheal") && tags.contains(&"team-payments"),
        "{tags:?}"
    );
    assert_eq!(b["details"]["reason"], "action_failed");
    assert_eq!(b["details"]["service"], "checkout");
    assert_eq!(b["details"]["labels.pod"], "pod-7");

    let r = &slack.requests()[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", SLACK_PATH));
    assert_eq!(r.headers["content-type"], "application/json");
    let text = r.body["text"].as_str().unwrap();
    assert!(
        text.starts_with("[PAGE] checkout: restart of pod-7 failed"),
        "{text}"
    );
    assert!(text.contains("incident inc-42"), "{text}");
    let blocks = r.body["blocks"].as_array().unwrap();
    assert!(blocks
        .iter()
        .any(|b| b.to_string().contains("restart pod-7 → failed")));

    // A ticket: warning at PagerDuty, P3 at Opsgenie.
    block_on(n.deliver(&escalation("inc-43", Severity::Ticket)));
    assert_eq!(pd.requests()[1].body["payload"]["severity"], "warning");
    assert_eq!(og.requests()[1].body["priority"], "P3");
    assert!(slack.requests()[1].body["text"]
        .as_str()
        .unwrap()
        .starts_with("[TICKET]"));
}

#[test]
fn a_sink_only_gets_the_severities_it_takes() {
    let (pd, slack) = (FakeSink::start(), FakeSink::start());
    let mut p = pd_sink(&pd);
    p.severities = vec![Severity::Page];
    let n = notifier(vec![p, slack_sink(&slack)], fast_retry(3));
    let out = block_on(n.deliver(&escalation("inc-t", Severity::Ticket)));
    assert_eq!(out[0].outcome, Outcome::NotSubscribed);
    assert_eq!(out[1].outcome, Outcome::Delivered { attempts: 1 });
    assert!(pd.requests().is_empty());
    assert_eq!(slack.requests().len(), 1);
}

#[test]
fn a_500_is_retried_and_the_escalation_delivered_once() {
    let pd = FakeSink::start();
    pd.push(reply(500));
    pd.push(reply(503));
    let n = notifier(vec![pd_sink(&pd)], fast_retry(4));
    let out = block_on(n.deliver(&escalation("inc-5", Severity::Page)));
    assert_eq!(out[0].outcome, Outcome::Delivered { attempts: 3 });
    assert_eq!(out[0].waits.len(), 2);
    let reqs = pd.requests();
    assert_eq!(reqs.len(), 3);
    assert!(
        reqs.iter().all(|r| r.body == reqs[0].body),
        "every attempt sends the same event"
    );
    assert_eq!(
        n.counters()[0]
            .delivered
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn a_429_waits_as_long_as_retry_after_says() {
    let og = FakeSink::start();
    og.push(Reply {
        status: 429,
        headers: vec![("retry-after", "1".into())],
        body: r#"{"message":"rate limited"}"#.into(),
    });
    // Backoff alone would wait at most 40 ms.
    let n = notifier(vec![og_sink(&og)], fast_retry(3));
    let out = block_on(n.deliver(&escalation("inc-429", Severity::Page)));
    assert_eq!(out[0].outcome, Outcome::Delivered { attempts: 2 });
    assert_eq!(out[0].waits, vec![Duration::from_secs(1)]);
    assert_eq!(og.requests().len(), 2);
}

#[test]
fn a_400_is_not_retried_and_gives_up_without_the_secret() {
    let (pd, slack) = (FakeSink::start(), FakeSink::start());
    // A service that echoes the key back in its error.
    pd.push(Reply {
        status: 400,
        headers: vec![],
        body: format!(r#"{{"status":"invalid event","errors":["bad routing_key {PD_KEY}"]}}"#),
    });
    slack.push(Reply {
        status: 404,
        headers: vec![],
        body: format!("no_service for {}{SLACK_PATH}", slack.base),
    });
    let n = notifier(vec![pd_sink(&pd), slack_sink(&slack)], fast_retry(5));
    let (out, logs) = with_logs(n.deliver(&escalation("inc-400", Severity::Page)));
    for d in &out {
        let Outcome::GaveUp { attempts, reason } = &d.outcome else {
            panic!("{d:?}");
        };
        assert_eq!(*attempts, 1, "{d:?}");
        assert!(reason.contains("not retried"), "{reason}");
        assert!(reason.contains("[redacted]"), "{reason}");
        assert!(
            !reason.contains(PD_KEY) && !reason.contains(SLACK_PATH),
            "{reason}"
        );
    }
    assert!(out[0].outcome.clone() != Outcome::Delivered { attempts: 1 });
    assert_eq!(pd.requests().len(), 1);
    assert_eq!(slack.requests().len(), 1);
    assert!(logs.contains("not delivered"), "{logs}");
    assert!(!logs.contains(PD_KEY), "{logs}");
    assert!(!logs.contains("XyZslackSecret"), "{logs}");
    assert_eq!(
        n.counters()[0]
            .gave_up
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn an_unreachable_sink_is_retried_then_given_up_without_the_secret() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}{SLACK_PATH}");
    let slack = SinkConfig::new(SinkKind::Slack, &url, &url).unwrap();
    let og = SinkConfig::new(
        SinkKind::Opsgenie,
        &format!("http://127.0.0.1:{port}/v2/alerts"),
        OG_KEY,
    )
    .unwrap();
    let n = notifier(vec![og, slack], fast_retry(3));
    let (out, logs) = with_logs(n.deliver(&escalation("inc-down", Severity::Page)));
    for d in &out {
        let Outcome::GaveUp { attempts, reason } = &d.outcome else {
            panic!("{d:?}");
        };
        assert_eq!(*attempts, 3);
        assert_eq!(d.waits.len(), 2);
        assert!(reason.contains("gave up after 3 attempts"), "{reason}");
        assert!(!reason.contains("XyZslackSecret"), "{reason}");
    }
    assert!(logs.contains("retrying"), "{logs}");
    for secret in [OG_KEY, "XyZslackSecret"] {
        assert!(!logs.contains(secret), "{secret} in {logs}");
    }
    assert!(!format!("{n:?}").contains("XyZslackSecret"));
}

#[test]
fn the_same_incident_twice_reaches_each_sink_once_and_a_page_after_a_ticket_goes_through() {
    let (pd, og, slack) = (FakeSink::start(), FakeSink::start(), FakeSink::start());
    let n = notifier(
        vec![pd_sink(&pd), og_sink(&og), slack_sink(&slack)],
        fast_retry(3),
    );
    let e = escalation("inc-dup", Severity::Ticket);
    let first = block_on(n.deliver(&e));
    let again = block_on(n.deliver(&e));
    assert!(first
        .iter()
        .all(|d| d.outcome == Outcome::Delivered { attempts: 1 }));
    assert!(
        again.iter().all(|d| d.outcome == Outcome::Duplicate),
        "{again:?}"
    );
    for s in [&pd, &og, &slack] {
        assert_eq!(s.requests().len(), 1);
    }
    // The same incident raised to a page is news.
    let page = block_on(n.deliver(&escalation("inc-dup", Severity::Page)));
    assert!(page
        .iter()
        .all(|d| d.outcome == Outcome::Delivered { attempts: 1 }));
    assert_eq!(pd.requests()[1].body["payload"]["severity"], "critical");
    // A sink that failed the first time is tried again on redelivery.
    og.push(reply(400));
    let other = escalation("inc-retry-later", Severity::Page);
    let out = block_on(n.deliver(&other));
    assert!(matches!(out[1].outcome, Outcome::GaveUp { .. }));
    let out = block_on(n.deliver(&other));
    assert_eq!(out[0].outcome, Outcome::Duplicate);
    assert_eq!(out[1].outcome, Outcome::Delivered { attempts: 1 });
}

/// An incident delivered to a sink is resolved there once, with each
/// sink's own resolve request; one never delivered is resolved nowhere,
/// and a sink that refused the resolve keeps it for the next try.
#[test]
fn a_delivered_incident_is_resolved_at_each_sink_and_only_there() {
    let (pd, og, slack) = (FakeSink::start(), FakeSink::start(), FakeSink::start());
    let mut pd_cfg = pd_sink(&pd);
    pd_cfg.severities = vec![Severity::Page];
    let n = notifier(
        vec![pd_cfg, og_sink(&og), slack_sink(&slack)],
        fast_retry(2),
    );
    // A ticket: PagerDuty does not take it, so it has nothing to resolve.
    block_on(n.deliver(&escalation("inc-t", Severity::Ticket)));
    block_on(n.deliver(&escalation("inc-p", Severity::Page)));
    let before = (
        pd.requests().len(),
        og.requests().len(),
        slack.requests().len(),
    );

    assert!(block_on(n.resolve(&incident("inc-never", IncidentState::Resolved))).is_empty());
    let out = block_on(n.resolve(&incident("inc-t", IncidentState::Resolved)));
    let sinks: Vec<SinkKind> = out.iter().map(|d| d.sink).collect();
    assert_eq!(sinks, [SinkKind::Opsgenie, SinkKind::Slack], "{out:?}");
    assert_eq!(pd.requests().len(), before.0);

    og.push(reply(400));
    let out = block_on(n.resolve(&incident("inc-p", IncidentState::Resolved)));
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out[0].outcome, Outcome::Delivered { attempts: 1 });
    assert!(matches!(out[1].outcome, Outcome::GaveUp { .. }), "{out:?}");
    assert_eq!(out[2].outcome, Outcome::Delivered { attempts: 1 });

    let r = pd.requests().pop().unwrap();
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v2/enqueue")
    );
    assert_eq!(r.body["routing_key"], PD_KEY);
    assert_eq!(r.body["event_action"], "resolve");
    assert_eq!(r.body["dedup_key"], "inc-p");
    let r = og.requests().pop().unwrap();
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.query.as_str()),
        ("POST", "/v2/alerts/inc-p/close", "identifierType=alias")
    );
    assert_eq!(r.headers["authorization"], format!("GenieKey {OG_KEY}"));
    assert_eq!(r.body["note"], "resolved: trigger resolved");
    let r = slack.requests().pop().unwrap();
    assert_eq!(
        r.body["text"],
        "[RESOLVED] checkout: incident inc-p (trigger resolved)"
    );

    // Resolved where it was taken; Opsgenie's refusal is tried again.
    let again = block_on(n.resolve(&incident("inc-p", IncidentState::Resolved)));
    let sinks: Vec<SinkKind> = again.iter().map(|d| d.sink).collect();
    assert_eq!(sinks, [SinkKind::Opsgenie], "{again:?}");
    assert_eq!(again[0].outcome, Outcome::Delivered { attempts: 1 });
    assert!(block_on(n.resolve(&incident("inc-p", IncidentState::Resolved))).is_empty());
}

// ---- `selfheal notify` against a real broker ----

/// Starts `selfheal notify` with the sinks' secrets in its environment.
fn notify_proc(k: &selfheal::live::KafkaArgs, config: &std::path::Path, slack_url: &str) -> Proc {
    let log = std::env::temp_dir().join(format!(
        "selfheal-test-{}-notify-{}.log",
        std::process::id(),
        selfheal::live::wall_ms()
    ));
    let file = std::fs::File::create(&log).unwrap();
    let mut args = vec!["notify".to_string()];
    args.extend(kafka_flags(k));
    args.extend([
        "--notify-config".into(),
        config.display().to_string(),
        "--group".into(),
        format!("{}notify", k.topic_prefix),
        "-X".into(),
        "consumer.session.timeout.ms=6000".into(),
        "--metrics-listen".into(),
        "127.0.0.1:0".into(),
    ]);
    let child = Command::new(BIN)
        .args(&args)
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .env("RUST_LOG", "debug")
        .env("TEST_PD_KEY", PD_KEY)
        .env("TEST_OG_KEY", OG_KEY)
        .env("TEST_SLACK_URL", slack_url)
        .spawn()
        .expect("starting selfheal notify");
    Proc {
        child,
        name: "notify".into(),
        log,
    }
}

/// Publishes `out` to `topic`, keyed by its service, as `selfheal engine`
/// would.
fn publish_output(
    k: &selfheal::live::KafkaArgs,
    topic: &str,
    out: selfheal::records::Output,
    format: selfheal::live::wire::Format,
    partition: Option<i32>,
) {
    use selfheal::live::{tools, wire};
    let value = wire::encode_output(&out, format);
    block_on(async {
        let p = tools::producer(k).unwrap();
        tools::publish(&p, topic, out.key(), &value, out.kind(), partition)
            .await
            .unwrap();
    });
}

fn publish_escalation(
    k: &selfheal::live::KafkaArgs,
    e: &Escalation,
    format: selfheal::live::wire::Format,
    partition: Option<i32>,
) {
    let out = selfheal::records::Output::Escalation(e.clone());
    publish_output(k, &k.topics().escalations, out, format, partition);
}

fn publish_incident(
    k: &selfheal::live::KafkaArgs,
    i: &Incident,
    format: selfheal::live::wire::Format,
) {
    let out = selfheal::records::Output::Incident(i.clone());
    publish_output(k, &k.topics().incidents, out, format, None);
}

/// The dead-letter records: (sink header, reason header).
fn dead_letters(k: &selfheal::live::KafkaArgs) -> Vec<(String, String)> {
    use rdkafka::Message;
    let mut v = Vec::new();
    selfheal::live::tools::scan_topic_from(k, &k.topics().dlq, false, None, |m| {
        let h = |key| {
            selfheal::live::wire::header(m.headers(), key)
                .unwrap_or("")
                .to_string()
        };
        v.push((h("selfheal-sink"), h("selfheal-error")));
        true
    })
    .unwrap();
    v
}

#[test]
fn selfheal_notify_pages_each_escalation_once_and_does_not_resend_after_a_restart() {
    use selfheal::live::wire::Format;
    let Some(brokers) = real_broker() else {
        return;
    };
    let k = setup(&brokers, "notify", 3);
    let pd = FakeSink::start();
    // Opsgenie refuses one incident for good.
    let og = FakeSink::with_rule(Arc::new(|b: &Value| {
        (b["alias"] == "inc-refused").then(|| Reply {
            status: 422,
            headers: vec![],
            body: format!(r#"{{"message":"key {OG_KEY} may not create this alert"}}"#),
        })
    }));
    let slack = FakeSink::start();
    slack.push(reply(500)); // the first Slack post is retried
    let slack_url = format!("{}{SLACK_PATH}", slack.base);
    let config = policy_file(
        "notify",
        &format!(
            "pagerduty: {{routing_key_env: TEST_PD_KEY, url: '{}/v2/enqueue', severities: [page]}}\n\
             opsgenie: {{api_key_env: TEST_OG_KEY, url: '{}/v2/alerts'}}\n\
             slack: {{webhook_url_env: TEST_SLACK_URL}}\n\
             retry: {{attempts: 4, initial: 50ms, max: 200ms}}\n",
            pd.base, og.base
        ),
    );

    // Before the notifier starts: JSON and Avro, pages and tickets, one
    // record delivered twice by an at-least-once producer, one refused.
    let mut first: Vec<(String, Severity)> = Vec::new();
    for i in 0..6 {
        let (id, sev) = (
            format!("inc-{i}"),
            if i % 2 == 0 {
                Severity::Page
            } else {
                Severity::Ticket
            },
        );
        let format = if i < 3 { Format::Json } else { Format::Avro };
        publish_escalation(&k, &escalation(&id, sev), format, None);
        first.push((id, sev));
    }
    publish_escalation(&k, &escalation("inc-0", Severity::Page), Format::Avro, None);
    publish_escalation(
        &k,
        &escalation("inc-refused", Severity::Page),
        Format::Json,
        None,
    );
    first.push(("inc-refused".into(), Severity::Page));

    let mut n = notify_proc(&k, &config, &slack_url);
    let pages = |v: &[(String, Severity)]| v.iter().filter(|(_, s)| *s == Severity::Page).count();
    wait_for(
        "every sink to get every escalation",
        Duration::from_secs(60),
        || {
            (pd.by_incident(pd_incident).len() == pages(&first)
                && og.by_incident(og_incident).len() == first.len() - 1
                && slack.by_incident(slack_incident).len() == first.len()
                && dead_letters(&k).len() == 1)
                .then_some(())
        },
    );
    // Its metrics and health endpoints say what it did.
    let addr = metrics_addr(&n);
    assert_eq!(get(&addr, "/healthz").map(|r| r.0), Some(200));
    // Ready once librdkafka's first statistics show the broker connection.
    wait_for("notify to be ready", Duration::from_secs(30), || {
        (get(&addr, "/readyz").map(|r| r.0) == Some(200)).then_some(())
    });
    let text = scrape(&addr);
    let deliveries = |sink: &str, outcome: &str| {
        value(
            &text,
            "selfheal_notify_deliveries_total",
            &[
                &format!("sink=\"{sink}\""),
                &format!("outcome=\"{outcome}\""),
            ],
        )
    };
    assert_eq!(
        deliveries("pagerduty", "delivered"),
        pages(&first) as f64,
        "{text}"
    );
    assert_eq!(deliveries("pagerduty", "duplicate"), 1.0, "{text}");
    assert_eq!(deliveries("opsgenie", "gave_up"), 1.0, "{text}");
    assert_eq!(
        deliveries("slack", "delivered"),
        first.len() as f64,
        "{text}"
    );
    assert_eq!(
        value(&text, "selfheal_records_consumed_total", &[]),
        first.len() as f64 + 1.0,
        "{text}"
    );
    n.terminate();

    // After the restart: one new escalation in each partition, behind
    // whatever of the first batch a restart would replay.
    let mut second: Vec<(String, Severity)> = Vec::new();
    for p in 0..3 {
        let id = format!("inc-after-{p}");
        let format = if p == 1 { Format::Avro } else { Format::Json };
        publish_escalation(&k, &escalation(&id, Severity::Page), format, Some(p));
        second.push((id, Severity::Page));
    }
    let mut n2 = notify_proc(&k, &config, &slack_url);
    let all: Vec<(String, Severity)> = first.iter().chain(&second).cloned().collect();
    wait_for(
        "every sink to get the new escalations",
        Duration::from_secs(60),
        || {
            (pd.by_incident(pd_incident).len() == pages(&all)
                && og.by_incident(og_incident).len() == all.len() - 1
                && slack.by_incident(slack_incident).len() == all.len())
            .then_some(())
        },
    );
    n2.terminate();

    let (pdc, ogc, slc) = (
        pd.by_incident(pd_incident),
        og.by_incident(og_incident),
        slack.by_incident(slack_incident),
    );
    for (id, sev) in &all {
        let want_pd = usize::from(*sev == Severity::Page);
        assert_eq!(
            pdc.get(id).copied().unwrap_or(0),
            want_pd,
            "pagerduty {id}: {pdc:?}"
        );
        let want_og = usize::from(id != "inc-refused");
        assert_eq!(
            ogc.get(id).copied().unwrap_or(0),
            want_og,
            "opsgenie {id}: {ogc:?}"
        );
        assert_eq!(slc.get(id), Some(&1), "slack {id}: {slc:?}");
    }
    // Slack's first post failed once and was sent again: one more request
    // than incidents, one delivery each.
    assert_eq!(slack.requests().len(), all.len() + 1);
    // Opsgenie's refusal is final: asked once, never again.
    let refused = og
        .requests()
        .iter()
        .filter(|r| r.body["alias"] == "inc-refused")
        .count();
    assert_eq!(refused, 1);
    // The refused one is dead-lettered once, with its reason, redacted.
    let dl = dead_letters(&k);
    assert_eq!(dl.len(), 1, "{dl:?}");
    assert_eq!(dl[0].0, "opsgenie");
    assert!(
        dl[0].1.contains("inc-refused") && dl[0].1.contains("422"),
        "{}",
        dl[0].1
    );
    assert!(!dl[0].1.contains(OG_KEY), "{}", dl[0].1);
    let logs = n.log_text() + &n2.log_text();
    assert!(logs.contains("delivered"), "{logs}");
    for secret in [PD_KEY, OG_KEY, "XyZslackSecret"] {
        assert!(!logs.contains(secret), "{secret} in the notifier's logs");
    }
}

/// `selfheal notify` reads the incidents topic too: an incident it paged
/// that resolves is resolved at PagerDuty, closed at Opsgenie and
/// announced on Slack; other states, and incidents it never paged,
/// send nothing.
#[test]
fn selfheal_notify_resolves_what_it_paged_when_the_incident_resolves() {
    use selfheal::live::wire::Format;
    let Some(brokers) = real_broker() else {
        return;
    };
    let k = setup(&brokers, "notify-resolve", 3);
    let (pd, og, slack) = (FakeSink::start(), FakeSink::start(), FakeSink::start());
    let slack_url = format!("{}{SLACK_PATH}", slack.base);
    let config = policy_file(
        "notify-resolve",
        &format!(
            "pagerduty: {{routing_key_env: TEST_PD_KEY, url: '{}/v2/enqueue'}}\n\
             opsgenie: {{api_key_env: TEST_OG_KEY, url: '{}/v2/alerts'}}\n\
             slack: {{webhook_url_env: TEST_SLACK_URL}}\n\
             retry: {{attempts: 3, initial: 50ms, max: 200ms}}\n",
            pd.base, og.base
        ),
    );
    publish_escalation(&k, &escalation("inc-r", Severity::Page), Format::Json, None);
    let mut n = notify_proc(&k, &config, &slack_url);
    wait_for("the page at every sink", Duration::from_secs(60), || {
        (pd.requests().len() == 1 && og.requests().len() == 1 && slack.requests().len() == 1)
            .then_some(())
    });
    publish_incident(
        &k,
        &incident("inc-r", IncidentState::Escalated),
        Format::Avro,
    );
    publish_incident(
        &k,
        &incident("inc-never", IncidentState::Resolved),
        Format::Json,
    );
    publish_incident(
        &k,
        &incident("inc-r", IncidentState::Resolved),
        Format::Avro,
    );
    wait_for("the resolve at every sink", Duration::from_secs(60), || {
        (pd.requests().len() == 2 && og.requests().len() == 2 && slack.requests().len() == 2)
            .then_some(())
    });
    let r = pd.requests().pop().unwrap();
    assert_eq!(
        (
            r.body["event_action"].as_str(),
            r.body["dedup_key"].as_str()
        ),
        (Some("resolve"), Some("inc-r"))
    );
    let r = og.requests().pop().unwrap();
    assert_eq!(
        (r.path.as_str(), r.query.as_str()),
        ("/v2/alerts/inc-r/close", "identifierType=alias")
    );
    assert!(slack.requests()[1].body["text"]
        .as_str()
        .is_some_and(|t| t.starts_with("[RESOLVED] checkout: incident inc-r")));
    let addr = metrics_addr(&n);
    wait_for("the resolves counted", Duration::from_secs(10), || {
        let text = scrape(&addr);
        ["pagerduty", "opsgenie", "slack"]
            .iter()
            .all(|sink| {
                value(
                    &text,
                    "selfheal_notify_deliveries_total",
                    &[&format!("sink=\"{sink}\""), "outcome=\"resolved\""],
                ) == 1.0
            })
            .then_some(())
    });
    // The other two records went before the resolve in its partition (one
    // key): they were handled, and sent nothing.
    assert_eq!(
        (
            pd.requests().len(),
            og.requests().len(),
            slack.requests().len()
        ),
        (2, 2, 2)
    );
    n.terminate();
}

#[test]
fn https_sink_urls_are_spoken_with_tls() {
    // A plain-HTTP server behind an https:// URL: the client opens a TLS
    // handshake, which the server cannot answer.
    let plain = FakeSink::start();
    let url = plain.base.replace("http://", "https://");
    let pd = SinkConfig::new(SinkKind::PagerDuty, &format!("{url}/v2/enqueue"), PD_KEY).unwrap();
    let n = notifier(vec![pd], fast_retry(1));
    let out = block_on(n.deliver(&escalation("inc-tls", Severity::Page)));
    let Outcome::GaveUp { reason, .. } = &out[0].outcome else {
        panic!("{out:?}");
    };
    assert!(
        !reason.contains("scheme"),
        "https is not supported: {reason}"
    );
    assert!(plain.requests().is_empty());
}

#[test]
fn notify_check_prints_the_sinks_without_secrets_and_bad_config_names_its_place() {
    let good = policy_file(
        "notify-check",
        "pagerduty: {routing_key_env: TEST_PD_KEY, severities: [page]}\nslack: {webhook_url_env: TEST_SLACK_URL}\n",
    );
    let out = Command::new(BIN)
        .args([
            "notify",
            "--notify-config",
            &good.display().to_string(),
            "--check",
        ])
        .env("TEST_PD_KEY", PD_KEY)
        .env(
            "TEST_SLACK_URL",
            format!("https://hooks.slack.com{SLACK_PATH}"),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "pagerduty https://events.pagerduty.com/v2/enqueue [page]\nslack https://hooks.slack.com/… [page, ticket]\n"
    );

    // A key written into the file is refused, and not repeated.
    let bad = policy_file("notify-bad", &format!("opsgenie: {{api_key: {OG_KEY}}}\n"));
    let out = Command::new(BIN)
        .args([
            "notify",
            "--notify-config",
            &bad.display().to_string(),
            "--check",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("opsgenie.api_key: secrets are not written in the config file"),
        "{stderr}"
    );
    assert!(!stderr.contains(OG_KEY), "{stderr}");

    // A missing variable is named, its place given.
    let out = Command::new(BIN)
        .args([
            "notify",
            "--notify-config",
            &good.display().to_string(),
            "--check",
        ])
        .env_remove("TEST_PD_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pagerduty.routing_key_env: environment variable TEST_PD_KEY is not set"),
        "{stderr}"
    );
}
