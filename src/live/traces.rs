//! OpenTelemetry traces of the live services: one trace per incident.
//!
//! Off unless an OTLP endpoint is configured. The trace id of an incident
//! is the first 16 bytes of the SHA-256 of its id, so every engine
//! instance, a restarted one and the executors put their spans in the same
//! trace without sharing state. The spans of the incident's opening and of
//! each command have ids derived the same way (from the incident id, from
//! the command id), so a span made elsewhere can name them as parent.
//!
//! * engine: `incident.open` (the root), `decide` (a child of it),
//!   `command.emit` and `escalate` (children of the decision that emitted
//!   them) and `validate` (a decision on a command's result, or on its
//!   fix being confirmed or not);
//! * executor: `execute`, a child of the command's span.
//!
//! The engine writes a W3C `traceparent` header (the `command.emit` span)
//! on every command record; the executor reads it, and writes the
//! `traceparent` of its `execute` span (and the `tracestate` it got) on
//! the result record, which the engine's `validate` span continues from.
//! Spans are telemetry: their times are the live process's wall clock and
//! nothing in them feeds back into a decision; replay and backtest make
//! none.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue, StringValue, Value};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use sha2::{Digest, Sha256};

use crate::policy::Policy;
use crate::records::{Command, Emitted, IncidentState, Output, ResultStatus};

/// Header carrying the W3C trace context of a record.
pub const TRACEPARENT: &str = "traceparent";
/// Header carrying vendor trace state, forwarded as received.
pub const TRACESTATE: &str = "tracestate";

/// Errors setting up the exporter.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    #[error("OTLP endpoint {endpoint:?}: {message}")]
    Exporter { endpoint: String, message: String },
}

/// A live service's tracer; cheap to clone.
#[derive(Clone)]
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: Arc<SdkTracer>,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Traces")
    }
}

/// The OTLP endpoint to export to, if tracing is on: the flag (or
/// `SELFHEAL_OTLP_ENDPOINT`), else `OTEL_EXPORTER_OTLP_ENDPOINT`. Empty
/// values count as unset.
pub fn endpoint(flag: Option<String>) -> Option<String> {
    flag.filter(|s| !s.trim().is_empty()).or_else(|| {
        std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|s| !s.trim().is_empty())
    })
}

/// The traces URL of an OTLP/HTTP endpoint: `/v1/traces` is appended
/// unless the URL already ends with it.
pub fn traces_url(endpoint: &str) -> String {
    let e = endpoint.trim().trim_end_matches('/');
    if e.ends_with("/v1/traces") {
        e.to_string()
    } else {
        format!("{e}/v1/traces")
    }
}

impl Traces {
    /// Exports over OTLP/HTTP (protobuf) to `endpoint`, in batches from a
    /// background thread. The service name is `OTEL_SERVICE_NAME` when set,
    /// else `service`; `instance` is `service.instance.id`.
    pub fn otlp(endpoint: &str, service: &str, instance: &str) -> Result<Traces, TracesError> {
        use opentelemetry_otlp::{Protocol, WithExportConfig};
        let url = traces_url(endpoint);
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(TracesError::Exporter {
                endpoint: url,
                message: "expected an http:// or https:// URL".into(),
            });
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .build()
            .map_err(|e| TracesError::Exporter {
                endpoint: url,
                message: e.to_string(),
            })?;
        // The default resource reads OTEL_SERVICE_NAME and
        // OTEL_RESOURCE_ATTRIBUTES.
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").map_or(true, |s| s.is_empty()) {
            resource = resource.with_service_name(service.to_string());
        }
        let resource = resource
            .with_attribute(KeyValue::new("service.instance.id", instance.to_string()))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(Traces::with_provider(provider))
    }

    /// Spans go to `provider`'s processors (tests use an in-memory one).
    pub fn with_provider(provider: SdkTracerProvider) -> Traces {
        use opentelemetry::trace::TracerProvider as _;
        let tracer = Arc::new(provider.tracer("selfheal"));
        Traces { provider, tracer }
    }

    /// Exports what is pending and stops the exporter.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "stopping the trace exporter");
        }
    }

    fn span(
        &self,
        name: &'static str,
        kind: SpanKind,
        parent: &SpanContext,
        span_id: Option<SpanId>,
        times: (SystemTime, SystemTime),
        attributes: Vec<KeyValue>,
    ) -> opentelemetry_sdk::trace::Span {
        let mut b = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_start_time(times.0)
            .with_end_time(times.1)
            .with_attributes(attributes);
        if let Some(id) = span_id {
            b = b.with_span_id(id);
        }
        let cx = if parent.is_valid() {
            Context::new().with_remote_span_context(parent.clone())
        } else {
            Context::new()
        };
        self.tracer.build_with_context(b, &cx)
    }

    /// Spans of the decisions in `outputs` (what one input record or tick
    /// made the core emit), from `started` to now. `result_parent` is the
    /// trace context of the result record being decided, when it had one.
    pub fn decisions(
        &self,
        policy: &Policy,
        outputs: &[Emitted],
        result_parent: Option<&SpanContext>,
        result_command: Option<&str>,
        started: SystemTime,
    ) {
        let times = (started, SystemTime::now());
        let mut from = 0;
        for (i, e) in outputs.iter().enumerate() {
            if let Output::Audit(a) = &e.output {
                let group = &outputs[from..i];
                from = i + 1;
                let Some(incident) = a.incident.as_deref() else {
                    continue;
                };
                let root = incident_span(incident);
                for o in group {
                    if let Output::Incident(inc) = &o.output {
                        if inc.state == IncidentState::Opened {
                            let attrs = vec![
                                KeyValue::new("selfheal.incident", inc.id.clone()),
                                KeyValue::new("selfheal.service", inc.service.clone()),
                                KeyValue::new("selfheal.alertname", inc.trigger.alertname.clone()),
                                KeyValue::new(
                                    "selfheal.fingerprint",
                                    inc.trigger.fingerprint.clone(),
                                ),
                                KeyValue::new("selfheal.trigger", inc.trigger.source.clone()),
                                KeyValue::new("selfheal.reason", inc.reason.clone()),
                            ];
                            // The root: no parent, the incident's trace id.
                            let b = self
                                .tracer
                                .span_builder("incident.open")
                                .with_kind(SpanKind::Internal)
                                .with_trace_id(root.trace_id())
                                .with_span_id(root.span_id())
                                .with_start_time(times.0)
                                .with_end_time(times.1)
                                .with_attributes(attrs);
                            self.tracer.build_with_context(b, &Context::new()).end();
                        }
                    }
                }
                let outcome = validation_outcome(&a.decision, &a.inputs, group);
                let name = if outcome.is_some() {
                    "validate"
                } else {
                    "decide"
                };
                let parent = match (name, result_parent, result_command) {
                    ("validate", Some(p), _) if p.trace_id() == root.trace_id() => p.clone(),
                    ("validate", _, Some(cmd)) => command_span(incident, cmd),
                    _ => root.clone(),
                };
                let runbook = a.runbook.clone().unwrap_or_default();
                let tier = policy
                    .runbooks
                    .iter()
                    .find(|r| r.name == runbook)
                    .map_or(-1, |r| i64::from(r.tier));
                let mut attrs = vec![
                    KeyValue::new("selfheal.incident", incident.to_string()),
                    KeyValue::new("selfheal.service", a.service.clone()),
                    KeyValue::new("selfheal.decision", a.decision.clone()),
                    KeyValue::new("selfheal.runbook", runbook),
                    KeyValue::new("selfheal.tier", tier),
                    KeyValue::new("selfheal.reasons", strings(&a.reasons)),
                    KeyValue::new("selfheal.policy_version", a.policy_version.clone()),
                    KeyValue::new("selfheal.audit.seq", a.seq as i64),
                    KeyValue::new("selfheal.audit.hash", a.hash.clone()),
                ];
                if let Some(o) = outcome {
                    attrs.push(KeyValue::new("selfheal.outcome", o));
                }
                if let Some(cmd) = result_command.filter(|_| name == "validate") {
                    attrs.push(KeyValue::new("selfheal.command", cmd.to_string()));
                }
                let mut span = self.span(name, SpanKind::Consumer, &parent, None, times, attrs);
                let decision = span.span_context().clone();
                span.end();
                for o in group {
                    match &o.output {
                        Output::Command(c) => {
                            let id = command_span(incident, &c.id).span_id();
                            let mut attrs = command_attributes(c);
                            attrs.push(KeyValue::new("selfheal.deadline", c.deadline.to_string()));
                            if let Some(r) = &c.rollback_of {
                                attrs.push(KeyValue::new("selfheal.rollback_of", r.clone()));
                            }
                            self.span(
                                "command.emit",
                                SpanKind::Producer,
                                &decision,
                                Some(id),
                                times,
                                attrs,
                            )
                            .end();
                        }
                        Output::Escalation(x) => {
                            let attrs = vec![
                                KeyValue::new("selfheal.incident", incident.to_string()),
                                KeyValue::new("selfheal.reason", x.reason.as_str()),
                                KeyValue::new("selfheal.severity", x.severity.as_str()),
                                KeyValue::new("selfheal.summary", x.summary.clone()),
                            ];
                            self.span(
                                "escalate",
                                SpanKind::Producer,
                                &decision,
                                None,
                                times,
                                attrs,
                            )
                            .end();
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// The `execute` span of a command the executor ran (or reported
    /// without running), under `parent` (the command record's trace
    /// context; the command's own span when the record had none or a
    /// malformed one). Returns the span's context, for the result record.
    pub fn execute(
        &self,
        cmd: &Command,
        parent: Option<SpanContext>,
        status: ResultStatus,
        detail: &str,
        times: (SystemTime, SystemTime),
    ) -> SpanContext {
        let parent = parent
            .filter(SpanContext::is_valid)
            .unwrap_or_else(|| command_span(&cmd.incident, &cmd.id));
        let ms = times
            .1
            .duration_since(times.0)
            .map_or(0, |d| d.as_millis() as i64);
        let mut attrs = command_attributes(cmd);
        attrs.push(KeyValue::new("selfheal.status", status.as_str()));
        attrs.push(KeyValue::new("selfheal.duration_ms", ms));
        let mut span = self.span("execute", SpanKind::Consumer, &parent, None, times, attrs);
        if status != ResultStatus::Succeeded {
            span.set_status(Status::error(detail.to_string()));
        }
        let sc = span.span_context().clone();
        span.end();
        sc
    }
}

fn command_attributes(c: &Command) -> Vec<KeyValue> {
    vec![
        KeyValue::new("selfheal.incident", c.incident.clone()),
        KeyValue::new("selfheal.command", c.id.clone()),
        KeyValue::new("selfheal.runbook", c.runbook.clone()),
        KeyValue::new("selfheal.action", c.action.clone()),
        KeyValue::new("selfheal.target", c.target.clone()),
        KeyValue::new("selfheal.tier", i64::from(c.tier)),
    ]
}

fn strings(v: &[String]) -> Value {
    Value::Array(
        v.iter()
            .map(|s| StringValue::from(s.clone()))
            .collect::<Vec<_>>()
            .into(),
    )
}

/// `Some(outcome)` when a decision is about a command's result or its
/// validation: a result, a result or validation deadline, or the fix
/// being confirmed.
fn validation_outcome(decision: &str, inputs: &[String], group: &[Emitted]) -> Option<String> {
    let input = inputs.first().map(String::as_str).unwrap_or("");
    let deadline = input.starts_with("deadline@")
        && (input.contains(":result ") || input.contains(":validation "));
    let confirmed = group.iter().any(|o| {
        matches!(&o.output, Output::Incident(i)
            if i.state == IncidentState::Resolved && i.reason.starts_with("fix confirmed"))
    });
    if !(input.starts_with("result@") || deadline || confirmed || decision == "validation_pending")
    {
        return None;
    }
    let escalated = group.iter().find_map(|o| match &o.output {
        Output::Escalation(e) => Some(e.reason.as_str()),
        _ => None,
    });
    Some(match (decision, escalated) {
        ("validate", _) => "validating".to_string(),
        ("validation_pending", _) => "pending".to_string(),
        (_, _) if confirmed => "confirmed".to_string(),
        (_, Some(reason)) => reason.to_string(),
        (d, None) => d.to_string(),
    })
}

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize().into()
}

/// The trace id of an incident: the first 16 bytes of the SHA-256 of its
/// id.
pub fn trace_id(incident: &str) -> TraceId {
    let d: [u8; 32] = Sha256::digest(incident.as_bytes()).into();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    if b == [0u8; 16] {
        b[15] = 1;
    }
    TraceId::from_bytes(b)
}

fn span_id(what: &str, id: &str) -> SpanId {
    let d = digest(&["selfheal", what, id]);
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    if b == [0u8; 8] {
        b[7] = 1;
    }
    SpanId::from_bytes(b)
}

/// The context of an incident's `incident.open` span.
pub fn incident_span(incident: &str) -> SpanContext {
    SpanContext::new(
        trace_id(incident),
        span_id("incident", incident),
        TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    )
}

/// The context of a command's `command.emit` span.
pub fn command_span(incident: &str, command: &str) -> SpanContext {
    SpanContext::new(
        trace_id(incident),
        span_id("command", command),
        TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    )
}

/// The `traceparent` header value of a span context.
pub fn traceparent(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// The trace context of a record's `traceparent` (and `tracestate`)
/// headers; `None` when absent or malformed.
pub fn parse(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<SpanContext> {
    struct Map<'a>(HashMap<&'static str, &'a str>);
    impl Extractor for Map<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).copied()
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().copied().collect()
        }
    }
    let mut m = HashMap::new();
    m.insert(TRACEPARENT, traceparent?);
    if let Some(s) = tracestate {
        m.insert(TRACESTATE, s);
    }
    let cx = TraceContextPropagator::new().extract(&Map(m));
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_derive_from_the_incident_id_alone() {
        let a = trace_id("inc-1");
        assert_eq!(a, trace_id("inc-1"));
        assert_ne!(a, trace_id("inc-2"));
        let sha = Sha256::digest(b"inc-1");
        assert_eq!(a.to_string(), hex::encode(&sha[..16]));
        let c = command_span("inc-1", "cmd-1");
        assert_eq!(c.trace_id(), a);
        assert_ne!(c.span_id(), incident_span("inc-1").span_id());
    }

    #[test]
    fn traceparent_round_trips_and_bad_ones_are_refused() {
        let sc = command_span("inc-1", "cmd-1");
        let tp = traceparent(&sc);
        assert_eq!(tp.len(), 55);
        let back = parse(Some(&tp), Some("vendor=abc")).unwrap();
        assert_eq!(back.trace_id(), sc.trace_id());
        assert_eq!(back.span_id(), sc.span_id());
        assert!(back.is_sampled());
        assert_eq!(back.trace_state().get("vendor"), Some("abc"));
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-0000000000000001-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(parse(Some(bad), None).is_none(), "{bad:?}");
        }
        assert!(parse(None, Some("vendor=abc")).is_none());
    }

    #[test]
    fn an_endpoint_that_is_not_http_is_refused() {
        for bad in ["127.0.0.1:4318", "grpc://collector:4317", "not a url"] {
            let e = Traces::otlp(bad, "selfheal-engine", "i").unwrap_err();
            assert!(
                e.to_string()
                    .contains("expected an http:// or https:// URL"),
                "{e}"
            );
        }
        let e = Traces::otlp("http://[bad", "selfheal-engine", "i").unwrap_err();
        assert!(e.to_string().contains("http://[bad/v1/traces"), "{e}");
    }

    #[test]
    fn traces_url_appends_the_signal_path_once() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://127.0.0.1:4318/v1/traces/"),
            "http://127.0.0.1:4318/v1/traces"
        );
    }
}
