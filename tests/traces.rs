//! OpenTelemetry traces of the live services: one trace per incident from
//! the signal to the validation, W3C trace context on the command and
//! result records, and nothing of it when tracing is off. The engine and
//! executor run in-process with in-memory span exporters, on librdkafka's
//! mock cluster (and the header trip also on a real broker when
//! `SELFHEAL_TEST_BROKERS` is set).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use selfheal::live::engine::{EngineConfig, EngineCounters, Guarantee};
use selfheal::live::executor::{ExecutorConfig, ExecutorCounters};
use selfheal::live::traces::{self, Traces};
use selfheal::live::{wire, KafkaArgs};
use selfheal::records::{Command, Input, Output};

/// A record as read back: its headers and value.
struct Rec {
    headers: HashMap<String, String>,
    value: Vec<u8>,
    ts: Option<i64>,
}

fn records(k: &KafkaArgs, topic: &str) -> Vec<Rec> {
    let mut v = Vec::new();
    selfheal::live::tools::scan_topic_with(k, topic, true, |m| {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or(&[])).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.push(Rec {
            headers,
            value: m.payload().unwrap_or(&[]).to_vec(),
            ts: m.timestamp().to_millis(),
        });
        true
    })
    .expect("reading a topic");
    v
}

fn mock(
    partitions: i32,
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    KafkaArgs,
) {
    let cluster = MockCluster::new(1).unwrap();
    let mut k = KafkaArgs::local(&cluster.bootstrap_servers());
    k.topic_prefix = unique_prefix("traces");
    for t in k.topics().all() {
        cluster.create_topic(t, partitions, 1).unwrap();
    }
    (cluster, k)
}

/// A tracer exporting to memory. The exporter forgets its spans when its
/// provider shuts down, which the last clone of the `Traces` does: keep
/// one until the spans are read.
fn in_memory() -> (Traces, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    (Traces::with_provider(provider), exporter)
}

/// An alert, stamped `ts` (ms), published as JSON and acknowledged.
fn alert_at(k: &KafkaArgs, name: &str, service: &str, pod: &str, ts: i64) {
    let starts = selfheal::time::Timestamp(ts).to_string();
    let body = format!(
        r#"{{"status":"firing","labels":{{"alertname":"{name}","service":"{service}","pod":"{pod}"}},"startsAt":"{starts}"}}"#
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let p: FutureProducer = k.producer_config().unwrap().create().unwrap();
        p.send(
            FutureRecord::to(&k.topics().alerts)
                .key(service)
                .payload(body.as_bytes())
                .timestamp(ts),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    });
}

/// A live engine (and optionally an executor) in this process.
struct Live {
    stop: Arc<AtomicBool>,
    engine: Option<std::thread::JoinHandle<Result<(), selfheal::live::LiveError>>>,
    executor: Option<tokio::task::JoinHandle<Result<(), selfheal::live::LiveError>>>,
    rt: tokio::runtime::Runtime,
}

impl Live {
    fn start(
        k: &KafkaArgs,
        guarantee: Guarantee,
        engine_traces: Option<Traces>,
        executor: Option<(&Handler, Option<Traces>)>,
    ) -> Live {
        let policy = selfheal::policy::parse(RESTART_POLICY, "policy.yaml").unwrap();
        let mut ecfg = EngineConfig::new(k.clone(), Arc::new(policy));
        ecfg.guarantee = guarantee;
        ecfg.group = format!("{}engine", k.topic_prefix);
        ecfg.traces = engine_traces;
        let stop = Arc::new(AtomicBool::new(false));
        let engine = {
            let (s, c) = (stop.clone(), Arc::new(EngineCounters::default()));
            std::thread::spawn(move || selfheal::live::engine::run(&ecfg, &s, &c))
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        let executor = executor.map(|(handler, traces)| {
            let mut xcfg = ExecutorConfig::new(k.clone());
            xcfg.group = format!("{}executor", k.topic_prefix);
            xcfg.traces = traces;
            let handlers = selfheal::executor::Handlers::with_default_url(&handler.url).unwrap();
            let runner = selfheal::executor::Runner::new(handlers).unwrap();
            rt.spawn(selfheal::live::executor::run(
                xcfg,
                Arc::new(runner),
                stop.clone(),
                Arc::new(ExecutorCounters::default()),
            ))
        });
        Live {
            stop,
            engine: Some(engine),
            executor,
            rt,
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(e) = self.engine.take() {
            e.join().unwrap().unwrap();
        }
        if let Some(x) = self.executor.take() {
            self.rt.block_on(x).unwrap().unwrap();
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn spans(e: &InMemorySpanExporter) -> Vec<SpanData> {
    e.get_finished_spans().unwrap()
}

fn attr<'a>(s: &'a SpanData, key: &str) -> Option<&'a Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let v = named(spans, name);
    assert_eq!(v.len(), 1, "spans named {name}: {v:#?}");
    v[0]
}

fn the_command(k: &KafkaArgs) -> (Command, HashMap<String, String>) {
    let recs = records(k, &k.topics().actions);
    assert_eq!(recs.len(), 1, "one command expected");
    let r = &recs[0];
    let kind = r.headers.get(wire::KIND_HEADER).map(String::as_str);
    match wire::decode_output(kind, &r.value).unwrap() {
        Output::Command(c) => (c, r.headers.clone()),
        o => panic!("not a command: {o:?}"),
    }
}

fn results(k: &KafkaArgs) -> Vec<Rec> {
    records(k, &k.topics().results)
}

#[test]
fn one_incident_is_one_trace_from_signal_to_validation() {
    let (_cluster, k) = mock(1);
    let handler = Handler::start(Duration::ZERO);
    let (etr, engine_spans) = in_memory();
    let (xtr, executor_spans) = in_memory();
    let live = Live::start(
        &k,
        Guarantee::ExactlyOnce,
        Some(etr.clone()),
        Some((&handler, Some(xtr.clone()))),
    );
    let now = selfheal::live::wall_ms();
    alert_at(&k, "Crash", "checkout", "pod-1", now);
    alert_at(&k, "NeverSeen", "billing", "pod-9", now);
    wait_for(
        "the result to be validated",
        Duration::from_secs(60),
        || (!named(&spans(&engine_spans), "validate").is_empty()).then_some(()),
    );
    live.stop();

    let (cmd, _) = the_command(&k);
    let trace = traces::trace_id(&cmd.incident);
    let engine = spans(&engine_spans);
    let executor = spans(&executor_spans);
    let ours: Vec<SpanData> = engine
        .iter()
        .chain(&executor)
        .filter(|s| s.span_context.trace_id() == trace)
        .cloned()
        .collect();
    let mut names: Vec<&str> = ours.iter().map(|s| s.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "command.emit",
            "decide",
            "execute",
            "incident.open",
            "validate"
        ]
    );

    let open = one(&ours, "incident.open");
    let decide = one(&ours, "decide");
    let emit = one(&ours, "command.emit");
    let execute = one(&ours, "execute");
    let validate = one(&ours, "validate");
    // signal → decision → action → result → validation
    assert_eq!(open.parent_span_id, SpanId::INVALID);
    assert_eq!(decide.parent_span_id, open.span_context.span_id());
    assert_eq!(emit.parent_span_id, decide.span_context.span_id());
    assert_eq!(execute.parent_span_id, emit.span_context.span_id());
    assert_eq!(validate.parent_span_id, execute.span_context.span_id());
    assert!(executor.iter().all(|s| s.name == "execute"));

    assert_eq!(
        attr(open, "selfheal.incident"),
        Some(&Value::from(cmd.incident.clone()))
    );
    assert_eq!(
        attr(decide, "selfheal.runbook"),
        Some(&Value::from("restart-on-crash"))
    );
    assert_eq!(attr(decide, "selfheal.tier"), Some(&Value::I64(1)));
    assert_eq!(attr(decide, "selfheal.decision"), Some(&Value::from("act")));
    assert!(attr(decide, "selfheal.policy_version").is_some());
    match attr(decide, "selfheal.reasons") {
        Some(Value::Array(a)) => {
            assert!(
                a.to_string().contains("matched runbook restart-on-crash"),
                "{a}"
            )
        }
        other => panic!("reasons: {other:?}"),
    }
    assert_eq!(
        attr(emit, "selfheal.command"),
        Some(&Value::from(cmd.id.clone()))
    );
    assert_eq!(
        attr(execute, "selfheal.action"),
        Some(&Value::from("restart"))
    );
    assert_eq!(
        attr(execute, "selfheal.target"),
        Some(&Value::from("pod-1"))
    );
    assert_eq!(
        attr(execute, "selfheal.status"),
        Some(&Value::from("succeeded"))
    );
    assert!(matches!(attr(execute, "selfheal.duration_ms"), Some(Value::I64(ms)) if *ms >= 0));
    assert_eq!(
        attr(validate, "selfheal.outcome"),
        Some(&Value::from("validating"))
    );

    // The alert without a runbook: its own trace, opened and escalated.
    let other: Vec<SpanData> = engine
        .iter()
        .filter(|s| s.span_context.trace_id() != trace)
        .cloned()
        .collect();
    let esc = one(&other, "escalate");
    assert_eq!(
        attr(esc, "selfheal.reason"),
        Some(&Value::from("first_time"))
    );
    let d = one(&other, "decide");
    assert_eq!(esc.parent_span_id, d.span_context.span_id());
    assert_eq!(
        d.parent_span_id,
        one(&other, "incident.open").span_context.span_id()
    );
    assert!(other
        .iter()
        .all(|s| s.span_context.trace_id() == esc.span_context.trace_id()));
}

/// The engine's command carries the `command.emit` span's traceparent;
/// the executor's result carries its `execute` span's, in the same trace.
fn traceparent_trip(k: &KafkaArgs, guarantee: Guarantee) {
    let handler = Handler::start(Duration::ZERO);
    let (etr, engine_spans) = in_memory();
    let (xtr, executor_spans) = in_memory();
    let live = Live::start(
        k,
        guarantee,
        Some(etr.clone()),
        Some((&handler, Some(xtr.clone()))),
    );
    alert_at(k, "Crash", "checkout", "pod-1", selfheal::live::wall_ms());
    wait_for(
        "the result to be validated",
        Duration::from_secs(60),
        || (!named(&spans(&engine_spans), "validate").is_empty()).then_some(()),
    );
    live.stop();

    let (cmd, headers) = the_command(k);
    let tp = headers
        .get(traces::TRACEPARENT)
        .expect("traceparent on the command");
    let sent = traces::parse(Some(tp), None).expect("a valid traceparent");
    assert_eq!(sent.trace_id(), traces::trace_id(&cmd.incident));
    assert_eq!(
        sent.span_id(),
        traces::command_span(&cmd.incident, &cmd.id).span_id()
    );
    assert!(sent.is_sampled());

    let res = results(k);
    assert_eq!(res.len(), 1);
    let back = traces::parse(
        res[0].headers.get(traces::TRACEPARENT).map(String::as_str),
        None,
    )
    .expect("traceparent on the result");
    assert_eq!(back.trace_id(), sent.trace_id());
    let execute = one(&spans(&executor_spans), "execute").clone();
    assert_eq!(execute.parent_span_id, sent.span_id());
    assert_eq!(back.span_id(), execute.span_context.span_id());
    let validate = one(&spans(&engine_spans), "validate").clone();
    assert_eq!(validate.parent_span_id, back.span_id());
    assert_eq!(validate.span_context.trace_id(), sent.trace_id());
}

#[test]
fn traceparent_survives_engine_actions_executor_results() {
    match std::env::var("SELFHEAL_TEST_BROKERS") {
        Ok(b) if !b.is_empty() => {
            let k = setup(&b, "traces", 1);
            traceparent_trip(&k, Guarantee::AtLeastOnce);
        }
        _ => {
            let (_cluster, k) = mock(1);
            traceparent_trip(&k, Guarantee::ExactlyOnce);
        }
    }
}

/// A command published by hand, with the given trace headers.
fn publish_command(k: &KafkaArgs, id: &str, headers: &[(&str, &str)]) -> Command {
    let cmd = Command {
        id: id.into(),
        incident: format!("inc-{id}"),
        runbook: "restart-on-crash".into(),
        action: "restart".into(),
        target: format!("pod-{id}"),
        params: Default::default(),
        args: Vec::new(),
        tier: 1,
        deadline: selfheal::time::Timestamp(selfheal::live::wall_ms() + 120_000),
        timeout: "30s".into(),
        rollback_of: None,
        service: "checkout".into(),
    };
    let value = wire::encode_output(&Output::Command(cmd.clone()), wire::Format::Avro);
    let mut h = wire::kind_headers("command");
    for (key, v) in headers {
        h = h.insert(rdkafka::message::Header {
            key,
            value: Some(*v),
        });
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let p: FutureProducer = k.producer_config().unwrap().create().unwrap();
        p.send(
            FutureRecord::to(&k.topics().actions)
                .key("checkout")
                .payload(value.as_slice())
                .headers(h),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    });
    cmd
}

fn result_for(res: &[Rec], id: &str) -> HashMap<String, String> {
    res.iter()
        .find(|r| {
            match selfheal::records::avro::decode_value(
                selfheal::records::InputKind::Result,
                &r.value,
            ) {
                Ok(Input::Result(x)) => x.command_id == id,
                _ => false,
            }
        })
        .map(|r| r.headers.clone())
        .unwrap_or_else(|| panic!("no result for {id}"))
}

#[test]
fn the_executor_keeps_tracestate_and_survives_bad_traceparents() {
    let (_cluster, k) = mock(1);
    let handler = Handler::start(Duration::ZERO);
    let (xtr, executor_spans) = in_memory();
    // No engine traces needed: commands are published by hand.
    let live = Live::start(
        &k,
        Guarantee::ExactlyOnce,
        None,
        Some((&handler, Some(xtr.clone()))),
    );
    let upstream = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let good = publish_command(
        &k,
        "c-good",
        &[
            (traces::TRACEPARENT, upstream),
            (traces::TRACESTATE, "vendor=opaque"),
        ],
    );
    let bad = publish_command(&k, "c-bad", &[(traces::TRACEPARENT, "00-not-a-trace-01")]);
    let none = publish_command(&k, "c-none", &[]);
    wait_for("three results", Duration::from_secs(60), || {
        (results(&k).len() >= 3).then_some(())
    });
    live.stop();
    assert_eq!(handler.counts().len(), 3, "every command ran");
    let res = results(&k);
    let spans = spans(&executor_spans);

    let h = result_for(&res, &good.id);
    let sc = traces::parse(h.get(traces::TRACEPARENT).map(String::as_str), None).unwrap();
    assert_eq!(
        sc.trace_id(),
        TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap()
    );
    assert_eq!(
        h.get(traces::TRACESTATE).map(String::as_str),
        Some("vendor=opaque")
    );
    let span = spans
        .iter()
        .find(|s| s.span_context.span_id() == sc.span_id())
        .expect("the execute span of the result");
    assert_eq!(
        span.parent_span_id,
        SpanId::from_hex("b7ad6b7169203331").unwrap()
    );

    // Without a usable traceparent: the command's own span, in its
    // incident's trace.
    for c in [&bad, &none] {
        let h = result_for(&res, &c.id);
        let sc = traces::parse(h.get(traces::TRACEPARENT).map(String::as_str), None).unwrap();
        assert_eq!(sc.trace_id(), traces::trace_id(&c.incident));
        assert!(!h.contains_key(traces::TRACESTATE));
        let span = spans
            .iter()
            .find(|s| s.span_context.span_id() == sc.span_id())
            .unwrap();
        assert_eq!(
            span.parent_span_id,
            traces::command_span(&c.incident, &c.id).span_id()
        );
    }
}

/// An output record: its topic's short name, value, timestamp and header
/// names.
type OutRec = (String, Vec<u8>, Option<i64>, Vec<String>);

/// The engine's output records on the output topics after deciding the
/// same two alerts, with or without traces.
fn engine_outputs(traced: bool, ts: i64) -> Vec<OutRec> {
    let (_cluster, k) = mock(1);
    let (tr, exporter) = in_memory();
    let live = Live::start(&k, Guarantee::ExactlyOnce, traced.then(|| tr.clone()), None);
    alert_at(&k, "Crash", "checkout", "pod-1", ts);
    alert_at(&k, "NeverSeen", "billing", "pod-9", ts);
    wait_for("two decisions audited", Duration::from_secs(60), || {
        (records(&k, &k.topics().audit).len() >= 2).then_some(())
    });
    live.stop();
    assert_eq!(spans(&exporter).is_empty(), !traced);
    let t = k.topics();
    let mut out = Vec::new();
    for (name, topic) in [
        ("actions", &t.actions),
        ("audit", &t.audit),
        ("incidents", &t.incidents),
        ("escalations", &t.escalations),
        ("approval_requests", &t.approval_requests),
    ] {
        for r in records(&k, topic) {
            let mut h: Vec<String> = r.headers.keys().cloned().collect();
            h.sort();
            out.push((name.to_string(), r.value, r.ts, h));
        }
    }
    out
}

#[test]
fn tracing_changes_no_output_and_off_leaves_no_trace_headers() {
    // Ahead of the clock, so that no clock tick moves event time past it
    // in either run.
    let ts = selfheal::live::wall_ms() + 60_000;
    let off = engine_outputs(false, ts);
    let on = engine_outputs(true, ts);
    assert_eq!(off.len(), on.len());
    assert!(off.iter().any(|o| o.0 == "actions"));
    for (a, b) in off.iter().zip(&on) {
        assert_eq!((&a.0, &a.1, a.2), (&b.0, &b.1, b.2), "outputs differ");
        // Off: the batch and kind headers only, everywhere. On: commands
        // also carry their traceparent.
        assert_eq!(a.3, [wire::BATCH_HEADER, wire::KIND_HEADER]);
        if b.0 == "actions" {
            assert_eq!(
                b.3,
                [wire::BATCH_HEADER, wire::KIND_HEADER, traces::TRACEPARENT]
            );
        } else {
            assert_eq!(b.3, [wire::BATCH_HEADER, wire::KIND_HEADER]);
        }
    }
}

/// Requests received: path, content type, body.
type Requests = Arc<std::sync::Mutex<Vec<(String, String, Vec<u8>)>>>;

/// An OTLP/HTTP collector stand-in: keeps every request's path,
/// content type and body.
struct Collector {
    url: String,
    requests: Requests,
    _rt: tokio::runtime::Runtime,
}

impl Collector {
    fn start() -> Collector {
        use axum::http::HeaderMap;
        let rt = tokio::runtime::Runtime::new().unwrap();
        let requests: Requests = Arc::default();
        let r = requests.clone();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let r = r.clone();
                async move {
                    let ct = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    r.lock()
                        .unwrap()
                        .push((uri.path().to_string(), ct, body.to_vec()));
                    ""
                }
            },
        );
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Collector {
            url: format!("http://{addr}"),
            requests,
            _rt: rt,
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_engine_exports_its_spans_over_otlp_http_when_given_an_endpoint() {
    let (_cluster, k) = mock(1);
    let collector = Collector::start();
    let policy = policy_file("traces", RESTART_POLICY);
    let mut eng = engine(
        &k,
        &policy,
        "exactly_once",
        &["--otlp-endpoint", &collector.url],
    );
    eng.wait_log("partition assigned", 1, Duration::from_secs(60));
    alert_at(&k, "Crash", "checkout", "pod-1", selfheal::live::wall_ms());
    let cmd = wait_for("the command", Duration::from_secs(60), || {
        commands(&k).into_iter().next()
    });
    // A graceful stop exports what is pending.
    eng.terminate();
    let reqs = collector.requests.lock().unwrap().clone();
    assert!(!reqs.is_empty(), "nothing exported:\n{}", eng.log_text());
    assert!(reqs
        .iter()
        .all(|(path, ct, _)| path == "/v1/traces" && ct == "application/x-protobuf"));
    let body: Vec<u8> = reqs.iter().flat_map(|r| r.2.clone()).collect();
    let trace = traces::trace_id(&cmd.incident).to_bytes();
    assert!(contains(&body, &trace), "no span in the incident's trace");
    for name in ["incident.open", "decide", "command.emit", "selfheal-engine"] {
        assert!(contains(&body, name.as_bytes()), "{name} not exported");
    }
}
