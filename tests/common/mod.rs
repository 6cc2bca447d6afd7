//! Shared harness of the live integration tests: brokers, topics, the
//! `selfheal` binary as engine and executor processes, and a handler
//! server that counts how often each command was carried out.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use selfheal::live::{tools, wire, KafkaArgs};
use selfheal::records::Output;

pub const BIN: &str = env!("CARGO_BIN_EXE_selfheal");

/// The real broker of the integration tests, from `SELFHEAL_TEST_BROKERS`
/// (set by `scripts/test.sh`, which starts Tansu). Without it the test is
/// skipped with a notice, unless `SELFHEAL_REQUIRE_BROKER=1` (as in CI),
/// where a missing broker fails the test.
pub fn real_broker() -> Option<String> {
    match std::env::var("SELFHEAL_TEST_BROKERS") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            assert!(
                std::env::var("SELFHEAL_REQUIRE_BROKER").as_deref() != Ok("1"),
                "SELFHEAL_REQUIRE_BROKER=1 but SELFHEAL_TEST_BROKERS is not set"
            );
            eprintln!("skipped: no real broker; run scripts/test.sh, which starts Tansu");
            None
        }
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A topic prefix no other test or run uses.
pub fn unique_prefix(name: &str) -> String {
    format!(
        "t{}-{}-{}-{}.",
        std::process::id(),
        name,
        SEQ.fetch_add(1, Ordering::Relaxed),
        selfheal::live::wall_ms() % 1_000_000
    )
}

/// Kafka settings for a test on `brokers` under a fresh prefix, with its
/// topics created (`partitions` each).
pub fn setup(brokers: &str, name: &str, partitions: i32) -> KafkaArgs {
    let mut k = KafkaArgs::local(brokers);
    k.topic_prefix = unique_prefix(name);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(selfheal::live::create_topics(&k, partitions))
        .expect("creating the test topics");
    // Metadata of new topics can take a moment to reach every client.
    wait_for("topics to be visible", Duration::from_secs(20), || {
        let p = tools::producer(&k).ok()?;
        selfheal::live::check_topics(
            rdkafka::producer::Producer::client(&p),
            &k.topics(),
            brokers,
            &[],
        )
        .ok()
    });
    k
}

/// Polls `f` until it gives a value or the time is up.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// [`wait_for`], but a timeout also shows how each of `procs` is (running
/// or exited, with its status) and the last lines of its log: a fault
/// test that fails on a CI machine leaves nothing else behind.
pub fn wait_for_procs<T>(
    what: &str,
    limit: Duration,
    procs: &mut [&mut Proc],
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= end {
            let state: Vec<String> = procs.iter_mut().map(|p| p.describe(40)).collect();
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                state.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A `selfheal` child process that is killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: std::path::PathBuf,
}

impl Proc {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the process has logged `needle` `times` times.
    pub fn wait_log(&self, needle: &str, times: usize, limit: Duration) {
        wait_for(&format!("{} to log {needle:?}", self.name), limit, || {
            (self.log_text().matches(needle).count() >= times).then_some(())
        });
    }

    /// Whether it still runs (or how it ended), and the last `lines`
    /// lines of its log.
    pub fn describe(&mut self, lines: usize) -> String {
        let state = match self.child.try_wait() {
            Ok(None) => "running".to_string(),
            Ok(Some(s)) => format!("exited ({s})"),
            Err(e) => format!("unknown ({e})"),
        };
        let log = self.log_text();
        let all: Vec<&str> = log.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!(
            "--- {} (pid {}), {state}; last {} of {} log lines ({}):\n{tail}",
            self.name,
            self.child.id(),
            all.len().min(lines),
            all.len(),
            self.log.display()
        )
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops with SIGTERM (a graceful stop) and waits.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill9();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn kafka_flags(k: &KafkaArgs) -> Vec<String> {
    vec![
        "--brokers".into(),
        k.brokers.clone(),
        "--topic-prefix".into(),
        k.topic_prefix.clone(),
    ]
}

pub fn spawn(name: &str, args: &[String]) -> Proc {
    let log = std::env::temp_dir().join(format!(
        "selfheal-test-{}-{name}-{}.log",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .env("RUST_LOG", "info")
        .spawn()
        .expect("starting selfheal");
    eprintln!("started {name} (pid {}), log {}", child.id(), log.display());
    Proc {
        child,
        name: name.into(),
        log,
    }
}

pub fn engine(k: &KafkaArgs, policy: &std::path::Path, guarantee: &str, extra: &[&str]) -> Proc {
    engine_in(
        k,
        &format!("{}engine", k.topic_prefix),
        policy,
        guarantee,
        extra,
    )
}

/// [`engine`] in consumer group `group`.
pub fn engine_in(
    k: &KafkaArgs,
    group: &str,
    policy: &std::path::Path,
    guarantee: &str,
    extra: &[&str],
) -> Proc {
    let mut a = vec!["engine".to_string()];
    a.extend(kafka_flags(k));
    a.extend([
        "--policy".into(),
        policy.display().to_string(),
        "--processing-guarantee".into(),
        guarantee.into(),
        "--group".into(),
        group.to_string(),
        "--format".into(),
        "json".into(),
    ]);
    a.extend(["-X".into(), "consumer.session.timeout.ms=6000".into()]);
    a.extend(extra.iter().map(|s| s.to_string()));
    spawn("engine", &a)
}

pub fn executor(k: &KafkaArgs, handler_url: &str) -> Proc {
    executor_with(k, handler_url, &[])
}

/// An executor with extra flags.
pub fn executor_with(k: &KafkaArgs, handler_url: &str, extra: &[&str]) -> Proc {
    let mut a = vec!["executor".to_string()];
    a.extend(kafka_flags(k));
    a.extend([
        "--handler-url".into(),
        handler_url.into(),
        "--group".into(),
        format!("{}executor", k.topic_prefix),
        "-X".into(),
        "consumer.session.timeout.ms=6000".into(),
    ]);
    a.extend(extra.iter().map(|s| s.to_string()));
    spawn("executor", &a)
}

/// Writes a policy file for a test.
pub fn policy_file(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!(
        "selfheal-test-{}-{name}-{}.yaml",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&p, text).unwrap();
    p
}

/// Every output record of a topic so far (read_committed).
pub fn outputs(k: &KafkaArgs, topic: &str) -> Vec<Output> {
    let mut v = Vec::new();
    tools::scan_topic(k, topic, false, |kind, value| {
        if let Ok(o) = wire::decode_output(kind, value) {
            v.push(o);
        }
        true
    })
    .expect("reading a topic");
    v
}

pub fn commands(k: &KafkaArgs) -> Vec<selfheal::records::Command> {
    outputs(k, &k.topics().actions)
        .into_iter()
        .filter_map(|o| match o {
            Output::Command(c) => Some(c),
            _ => None,
        })
        .collect()
}

/// Under `exactly_once`, the command records of committed transactions:
/// copies per command id, and how many records were left out.
///
/// librdkafka's mock cluster keeps no transaction markers: a killed
/// engine's open transaction is never aborted, and whatever of it reached
/// the broker reads as committed. A transaction is all or nothing on a
/// real broker, so a command counts as committed only if the journal
/// record of its batch (`selfheal-batch`) is there too; the records left
/// out are of transactions a real broker would abort.
pub fn committed_commands(k: &KafkaArgs) -> (BTreeMap<String, usize>, usize) {
    use rdkafka::Message;
    let mut journaled = BTreeSet::new();
    tools::scan_topic_from(k, &k.topics().journal, false, None, |m| {
        if let Some(b) = wire::header(m.headers(), wire::BATCH_HEADER) {
            journaled.insert(b.to_string());
        }
        true
    })
    .expect("reading the journal");
    let (mut copies, mut left_out) = (BTreeMap::new(), 0);
    tools::scan_topic_from(k, &k.topics().actions, false, None, |m| {
        let kind = wire::header(m.headers(), wire::KIND_HEADER);
        if let Ok(Output::Command(c)) = wire::decode_output(kind, m.payload().unwrap_or_default()) {
            match wire::header(m.headers(), wire::BATCH_HEADER) {
                Some(b) if journaled.contains(b) => *copies.entry(c.id).or_insert(0) += 1,
                _ => left_out += 1,
            }
        }
        true
    })
    .expect("reading the actions topic");
    (copies, left_out)
}

pub fn escalations(k: &KafkaArgs) -> Vec<selfheal::records::Escalation> {
    outputs(k, &k.topics().escalations)
        .into_iter()
        .filter_map(|o| match o {
            Output::Escalation(e) => Some(e),
            _ => None,
        })
        .collect()
}

/// Publishes one alert (JSON) and waits for the broker's ack.
pub fn alert(k: &KafkaArgs, name: &str, service: &str, extra: &str, starts: &str) {
    let body = format!(
        r#"{{"status":"firing","labels":{{"alertname":"{name}","service":"{service}"{extra}}},"startsAt":"{starts}"}}"#
    );
    publish_alert_body(k, body.as_bytes());
}

pub fn publish_alert_body(k: &KafkaArgs, body: &[u8]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let p = tools::producer(k).unwrap();
        tools::publish_alerts(&p, k, body).await.unwrap();
    });
}

/// A local action handler: answers `POST /actions/{kind}` after an
/// optional delay and counts the calls per command id.
pub struct Handler {
    pub url: String,
    pub calls: Arc<Mutex<HashMap<String, u32>>>,
    _rt: tokio::runtime::Runtime,
}

impl Handler {
    pub fn start(delay: Duration) -> Handler {
        use axum::routing::post;
        let rt = tokio::runtime::Runtime::new().unwrap();
        let calls: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let c = calls.clone();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/actions/{kind}",
            post(move |body: axum::body::Bytes| {
                let c = c.clone();
                async move {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let id = v["id"].as_str().unwrap_or("?").to_string();
                    *c.lock().unwrap().entry(id).or_insert(0) += 1;
                    tokio::time::sleep(delay).await;
                    axum::Json(serde_json::json!({"detail": "done"}))
                }
            }),
        );
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Handler {
            url: format!("http://{addr}/actions"),
            calls,
            _rt: rt,
        }
    }

    pub fn counts(&self) -> HashMap<String, u32> {
        self.calls.lock().unwrap().clone()
    }
}

/// A tier-1 restart runbook for every alert named `Crash`.
pub const RESTART_POLICY: &str = r#"
runbooks:
  - name: restart-on-crash
    match: ['alertname="Crash"']
    tier: 1
    action: {kind: restart, target: '{{ labels.pod }}', timeout: 30s}
    validate: {within: 10m}
guardrails:
  first_time: page
"#;

// --- Scraping the metrics and health endpoints (`--metrics-listen`) ---

/// `GET path` on `addr`: (status code, body).
pub fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    use std::io::{Read, Write};
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((code, body))
}

/// The address a process logged for its metrics listener.
pub fn metrics_addr(p: &Proc) -> String {
    wait_for(
        &format!("{} to log its metrics address", p.name),
        Duration::from_secs(30),
        || {
            let log = p.log_text();
            let at = log.find("metrics on http://")? + "metrics on http://".len();
            let rest = &log[at..];
            Some(rest[..rest.find("/metrics")?].to_string())
        },
    )
}

/// The value of the sample `name` whose labels include every `labels`
/// pair (`k="v"`), or 0 when absent.
pub fn value(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let n = series.split('{').next().unwrap_or("");
            n == name && labels.iter().all(|want| series.contains(want))
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

pub fn scrape(addr: &str) -> String {
    let (code, body) = get(addr, "/metrics").expect("scraping /metrics");
    assert_eq!(code, 200, "{body}");
    body
}
