//! Input records: what arrives on the metrics, alerts, changes, results,
//! approvals and control topics, and the `{ts, kind, data}` envelope of
//! replay files.
//!
//! Decoding is strict about what the core needs (a required field missing,
//! a timestamp that is not RFC 3339, a value that is not a finite number is
//! a [`DecodeError`]) and lenient about everything else (unknown fields in
//! Alertmanager or adapter payloads are ignored).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::labels::{Labels, LabelsRef};
use super::value::{Fixed, ValueError};
use crate::time::{TimeError, Timestamp};

/// Why an input record was refused. Each refusal is data: it is counted,
/// reported with its reason and sent to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("malformed Avro: {0}")]
    Avro(String),
    #[error(
        "unknown kind {0:?} (expected metric, alert, change, result, approval, control or tick)"
    )]
    UnknownKind(String),
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("field `value`: {0}")]
    Value(#[from] ValueError),
}

impl DecodeError {
    /// A short stable code for counters and dead-letter headers.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Json(_) => "malformed_json",
            DecodeError::Avro(_) => "malformed_avro",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::Missing(_) => "missing_field",
            DecodeError::Invalid { .. } => "invalid_field",
            DecodeError::Value(_) => "invalid_value",
        }
    }

    fn time(field: &'static str, e: TimeError) -> DecodeError {
        DecodeError::Invalid {
            field,
            reason: e.to_string(),
        }
    }
}

/// The kind of an input record, as named in replay files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InputKind {
    Metric,
    Alert,
    Change,
    Result,
    Approval,
    Control,
    Tick,
}

impl InputKind {
    pub fn parse(s: &str) -> Result<InputKind, DecodeError> {
        Ok(match s {
            "metric" => InputKind::Metric,
            "alert" => InputKind::Alert,
            "change" => InputKind::Change,
            "result" => InputKind::Result,
            "approval" => InputKind::Approval,
            "control" => InputKind::Control,
            "tick" => InputKind::Tick,
            other => return Err(DecodeError::UnknownKind(other.to_string())),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InputKind::Metric => "metric",
            InputKind::Alert => "alert",
            InputKind::Change => "change",
            InputKind::Result => "result",
            InputKind::Approval => "approval",
            InputKind::Control => "control",
            InputKind::Tick => "tick",
        }
    }
}

/// A metric sample (prometheus-kafka-adapter shape).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSample {
    pub name: String,
    pub labels: Labels,
    pub value: Fixed,
    /// The sample's own timestamp; the envelope's `ts` is what the core uses.
    pub timestamp: Option<Timestamp>,
}

impl MetricSample {
    /// A borrowed view of this sample.
    pub fn as_ref(&self) -> MetricRef<'_> {
        MetricRef {
            name: &self.name,
            labels: self.labels.as_ref(),
            value: self.value,
            timestamp: self.timestamp,
        }
    }
}

/// A metric sample borrowed from a decoder's buffers: what the core needs
/// of a sample, without owning its strings.
#[derive(Debug, Clone, Copy)]
pub struct MetricRef<'a> {
    pub name: &'a str,
    pub labels: LabelsRef<'a>,
    pub value: Fixed,
    pub timestamp: Option<Timestamp>,
}

impl MetricRef<'_> {
    pub fn to_sample(&self) -> MetricSample {
        MetricSample {
            name: self.name.to_owned(),
            labels: self.labels.to_labels(),
            value: self.value,
            timestamp: self.timestamp,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// One Alertmanager alert (webhook version 4).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub status: AlertStatus,
    pub labels: Labels,
    pub annotations: Labels,
    pub starts_at: Option<Timestamp>,
    pub ends_at: Option<Timestamp>,
    pub fingerprint: Option<String>,
    pub generator_url: Option<String>,
}

impl Alert {
    pub fn alertname(&self) -> &str {
        self.labels.get("alertname").unwrap_or("")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeState {
    Started,
    Finished,
}

impl ChangeState {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeState::Started => "started",
            ChangeState::Finished => "finished",
        }
    }
}

/// A change event: deploy, migration, maintenance.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub service: String,
    pub kind: String,
    pub state: ChangeState,
    pub id: String,
    pub at: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultStatus {
    Succeeded,
    Failed,
    TimedOut,
}

impl ResultStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Succeeded => "succeeded",
            ResultStatus::Failed => "failed",
            ResultStatus::TimedOut => "timed_out",
        }
    }
}

/// An executor's report on one command.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionResult {
    pub command_id: String,
    pub status: ResultStatus,
    pub detail: String,
    pub at: Option<Timestamp>,
    /// State the command replaced, for a rollback to restore (e.g.
    /// `replicas` → `3` for a scale); empty when the action records none.
    pub previous: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Approve,
    Reject,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Reject => "reject",
        }
    }
}

/// A human's answer to an approval request.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub command_id: String,
    pub decision: Verdict,
    pub by: String,
    pub at: Option<Timestamp>,
    /// HMAC-SHA256 (hex) of the command id, decision and approver, when
    /// the approver signed (see `selfheal::live::signing`).
    pub sig: Option<String>,
}

/// What a control record applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Global,
    Service(String),
    Runbook(String),
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        if s == "global" {
            return Some(Scope::Global);
        }
        let (k, v) = s.split_once(':')?;
        if v.is_empty() {
            return None;
        }
        match k {
            "service" => Some(Scope::Service(v.to_string())),
            "runbook" => Some(Scope::Runbook(v.to_string())),
            _ => None,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Service(s) => write!(f, "service:{s}"),
            Scope::Runbook(r) => write!(f, "runbook:{r}"),
        }
    }
}

/// A runtime control: the kill switch, by scope, with an optional expiry;
/// or, with `reload_policy`, a request to the engine to read its policy
/// file again (`kill_switch` is then false and means nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct Control {
    pub scope: Scope,
    pub kill_switch: bool,
    pub until: Option<Timestamp>,
    pub by: Option<String>,
    pub reload_policy: bool,
}

/// A decoded input record.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Metric(MetricSample),
    /// One alert or a whole webhook payload's alerts, in payload order.
    Alerts(Vec<Alert>),
    Change(Change),
    Result(ActionResult),
    Approval(Approval),
    Control(Control),
    Tick,
}

impl Input {
    pub fn kind(&self) -> InputKind {
        match self {
            Input::Metric(_) => InputKind::Metric,
            Input::Alerts(_) => InputKind::Alert,
            Input::Change(_) => InputKind::Change,
            Input::Result(_) => InputKind::Result,
            Input::Approval(_) => InputKind::Approval,
            Input::Control(_) => InputKind::Control,
            Input::Tick => InputKind::Tick,
        }
    }

    /// Decodes the JSON form of one record of the given kind.
    pub fn from_json(kind: InputKind, data: &str) -> Result<Input, DecodeError> {
        fn de<'a, T: Deserialize<'a>>(s: &'a str) -> Result<T, DecodeError> {
            serde_json::from_str(s).map_err(|e| DecodeError::Json(e.to_string()))
        }
        Ok(match kind {
            InputKind::Metric => Input::Metric(de::<MetricWire>(data)?.into_sample()?),
            InputKind::Alert => Input::Alerts(de::<AlertOrPayload>(data)?.into_alerts()?),
            InputKind::Change => Input::Change(de::<ChangeWire>(data)?.into_change()?),
            InputKind::Result => Input::Result(de::<ResultWire>(data)?.into_result()?),
            InputKind::Approval => Input::Approval(de::<ApprovalWire>(data)?.into_approval()?),
            InputKind::Control => Input::Control(de::<ControlWire>(data)?.into_control()?),
            InputKind::Tick => {
                de::<serde::de::IgnoredAny>(data)?;
                Input::Tick
            }
        })
    }

    /// The service a record belongs to, when the record names one
    /// (results and approvals are routed by their command id instead).
    pub fn service(&self) -> Option<&str> {
        match self {
            Input::Metric(m) => m.labels.get("service"),
            Input::Alerts(a) => a.first().and_then(|a| a.labels.get("service")),
            Input::Change(c) => Some(&c.service),
            Input::Control(Control {
                scope: Scope::Service(s),
                ..
            }) => Some(s),
            _ => None,
        }
    }
}

/// An input with its event time.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub ts: Timestamp,
    pub input: Input,
}

#[derive(Deserialize)]
struct EnvelopeWire<'a> {
    #[serde(borrow)]
    ts: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

impl Input {
    /// The JSON form [`Input::from_json`] reads back to the same input: an
    /// Alertmanager payload with several alerts as `{"alerts":[…]}`, a tick
    /// as `{}`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let opt = |t: Option<Timestamp>| t.map(|t| t.to_string());
        let alert = |a: &Alert| {
            json!({"status": a.status.as_str(), "labels": a.labels,
                   "annotations": a.annotations, "startsAt": opt(a.starts_at),
                   "endsAt": opt(a.ends_at), "fingerprint": a.fingerprint,
                   "generatorURL": a.generator_url})
        };
        match self {
            Input::Metric(m) => json!({"name": m.name, "labels": m.labels,
                                       "value": m.value.to_string(), "timestamp": opt(m.timestamp)}),
            Input::Alerts(a) if a.len() == 1 => alert(&a[0]),
            Input::Alerts(a) => json!({"alerts": a.iter().map(alert).collect::<Vec<_>>()}),
            Input::Change(c) => json!({"service": c.service, "kind": c.kind,
                                       "state": c.state.as_str(), "id": c.id, "at": opt(c.at)}),
            Input::Result(r) => {
                let mut v = json!({"command_id": r.command_id, "status": r.status.as_str(),
                                   "detail": r.detail, "at": opt(r.at)});
                if !r.previous.is_empty() {
                    v["previous"] = json!(r.previous);
                }
                v
            }
            Input::Approval(a) => {
                json!({"command_id": a.command_id, "decision": a.decision.as_str(),
                       "by": a.by, "at": opt(a.at), "sig": a.sig})
            }
            Input::Control(c) => json!({"scope": c.scope.to_string(), "kill_switch": c.kill_switch,
                                        "until": opt(c.until), "by": c.by,
                                        "reload_policy": c.reload_policy}),
            Input::Tick => json!({}),
        }
    }
}

impl Record {
    /// The replay line of this record, `{"ts":…,"kind":…,"data":{…}}`
    /// without a line break; [`Record::from_json_line`] reads it back to
    /// the same record.
    pub fn to_json_line(&self) -> String {
        format!(
            r#"{{"ts":"{}","kind":"{}","data":{}}}"#,
            self.ts,
            self.input.kind().as_str(),
            self.input.to_json()
        )
    }

    /// Decodes one replay line: `{"ts":…,"kind":…,"data":{…}}`.
    pub fn from_json_line(line: &str) -> Result<Record, DecodeError> {
        let env: EnvelopeWire<'_> =
            serde_json::from_str(line).map_err(|e| DecodeError::Json(e.to_string()))?;
        let ts = env.ts.ok_or(DecodeError::Missing("ts"))?;
        let ts = Timestamp::parse(&ts).map_err(|e| DecodeError::time("ts", e))?;
        let kind = InputKind::parse(&env.kind.ok_or(DecodeError::Missing("kind"))?)?;
        let data = match env.data {
            Some(d) => d.get(),
            None if kind == InputKind::Tick => "{}",
            None => return Err(DecodeError::Missing("data")),
        };
        Ok(Record {
            ts,
            input: Input::from_json(kind, data)?,
        })
    }
}

fn opt_time(
    field: &'static str,
    s: Option<Cow<'_, str>>,
) -> Result<Option<Timestamp>, DecodeError> {
    match s {
        None => Ok(None),
        Some(s) if s.is_empty() || Timestamp::is_zero_time(&s) => Ok(None),
        Some(s) => Timestamp::parse(&s)
            .map(Some)
            .map_err(|e| DecodeError::time(field, e)),
    }
}

fn required<T>(field: &'static str, v: Option<T>) -> Result<T, DecodeError> {
    v.ok_or(DecodeError::Missing(field))
}

/// A sample value as the adapter writes it: a string or a number.
enum RawNumber {
    Text(String),
    Float(f64),
    Int(i64),
}

impl<'de> Deserialize<'de> for RawNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawNumber;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number or a decimal string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawNumber, E> {
                Ok(RawNumber::Text(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<RawNumber, E> {
                Ok(RawNumber::Float(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawNumber, E> {
                Ok(RawNumber::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawNumber, E> {
                i64::try_from(v)
                    .map(RawNumber::Int)
                    .map_err(|_| E::custom("value out of range"))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct MetricWire<'a> {
    #[serde(borrow)]
    timestamp: Option<Cow<'a, str>>,
    value: Option<RawNumber>,
    name: Option<String>,
    labels: Option<Labels>,
}

impl MetricWire<'_> {
    fn into_sample(self) -> Result<MetricSample, DecodeError> {
        let value = match required("value", self.value)? {
            RawNumber::Text(s) => Fixed::parse(&s)?,
            RawNumber::Float(f) => Fixed::from_f64(f)?,
            RawNumber::Int(i) => {
                if i.abs() > super::value::MAX_UNITS {
                    return Err(ValueError::OutOfRange(i.to_string()).into());
                }
                Fixed::from_units(i)
            }
        };
        let mut labels = self.labels.unwrap_or_default();
        // The adapter also carries the metric name as the `__name__` label.
        let name = match (self.name, labels.get("__name__")) {
            (Some(n), _) if !n.is_empty() => n,
            (_, Some(n)) if !n.is_empty() => n.to_string(),
            _ => return Err(DecodeError::Missing("name")),
        };
        super::value::check_counter(&name, value)?;
        if labels.get("__name__").is_some() {
            labels = Labels::from_pairs(labels.iter().filter(|(k, _)| *k != "__name__"));
        }
        Ok(MetricSample {
            name,
            labels,
            value,
            timestamp: opt_time("timestamp", self.timestamp)?,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlertWire<'a> {
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    labels: Option<Labels>,
    annotations: Option<Labels>,
    #[serde(borrow)]
    starts_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ends_at: Option<Cow<'a, str>>,
    fingerprint: Option<String>,
    #[serde(rename = "generatorURL")]
    generator_url: Option<String>,
}

#[derive(Deserialize)]
struct AlertOrPayload<'a> {
    #[serde(flatten, borrow)]
    alert: AlertWire<'a>,
    #[serde(borrow)]
    alerts: Option<Vec<AlertWire<'a>>>,
}

impl AlertOrPayload<'_> {
    fn into_alerts(self) -> Result<Vec<Alert>, DecodeError> {
        match self.alerts {
            Some(list) => {
                if list.is_empty() {
                    return Err(DecodeError::Invalid {
                        field: "alerts",
                        reason: "webhook payload has no alerts".into(),
                    });
                }
                list.into_iter().map(AlertWire::into_alert).collect()
            }
            None => Ok(vec![self.alert.into_alert()?]),
        }
    }
}

impl AlertWire<'_> {
    fn into_alert(self) -> Result<Alert, DecodeError> {
        let status = match required("status", self.status)?.as_ref() {
            "firing" => AlertStatus::Firing,
            "resolved" => AlertStatus::Resolved,
            other => {
                return Err(DecodeError::Invalid {
                    field: "status",
                    reason: format!("{other:?} is not firing or resolved"),
                })
            }
        };
        let labels = required("labels", self.labels)?;
        if labels.get("alertname").is_none_or(str::is_empty) {
            return Err(DecodeError::Missing("labels.alertname"));
        }
        Ok(Alert {
            status,
            labels,
            annotations: self.annotations.unwrap_or_default(),
            starts_at: opt_time("startsAt", self.starts_at)?,
            ends_at: opt_time("endsAt", self.ends_at)?,
            fingerprint: self.fingerprint.filter(|f| !f.is_empty()),
            generator_url: self.generator_url,
        })
    }
}

#[derive(Deserialize)]
struct ChangeWire<'a> {
    service: Option<String>,
    kind: Option<String>,
    #[serde(borrow)]
    state: Option<Cow<'a, str>>,
    id: Option<String>,
    #[serde(borrow)]
    at: Option<Cow<'a, str>>,
}

fn non_empty(field: &'static str, v: Option<String>) -> Result<String, DecodeError> {
    match v {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(DecodeError::Missing(field)),
    }
}

impl ChangeWire<'_> {
    fn into_change(self) -> Result<Change, DecodeError> {
        let state = match required("state", self.state)?.as_ref() {
            "started" => ChangeState::Started,
            "finished" => ChangeState::Finished,
            other => {
                return Err(DecodeError::Invalid {
                    field: "state",
                    reason: format!("{other:?} is not started or finished"),
                })
            }
        };
        Ok(Change {
            service: non_empty("service", self.service)?,
            kind: non_empty("kind", self.kind)?,
            state,
            id: non_empty("id", self.id)?,
            at: opt_time("at", self.at)?,
        })
    }
}

#[derive(Deserialize)]
struct ResultWire<'a> {
    command_id: Option<String>,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    detail: Option<String>,
    #[serde(borrow)]
    at: Option<Cow<'a, str>>,
    #[serde(default)]
    previous: Option<BTreeMap<String, String>>,
}

impl ResultWire<'_> {
    fn into_result(self) -> Result<ActionResult, DecodeError> {
        let status = match required("status", self.status)?.as_ref() {
            "succeeded" => ResultStatus::Succeeded,
            "failed" => ResultStatus::Failed,
            "timed_out" => ResultStatus::TimedOut,
            other => {
                return Err(DecodeError::Invalid {
                    field: "status",
                    reason: format!("{other:?} is not succeeded, failed or timed_out"),
                })
            }
        };
        Ok(ActionResult {
            command_id: non_empty("command_id", self.command_id)?,
            status,
            detail: self.detail.unwrap_or_default(),
            at: opt_time("at", self.at)?,
            previous: self.previous.unwrap_or_default(),
        })
    }
}

#[derive(Deserialize)]
struct ApprovalWire<'a> {
    command_id: Option<String>,
    #[serde(borrow)]
    decision: Option<Cow<'a, str>>,
    by: Option<String>,
    #[serde(borrow)]
    at: Option<Cow<'a, str>>,
    sig: Option<String>,
}

impl ApprovalWire<'_> {
    fn into_approval(self) -> Result<Approval, DecodeError> {
        let decision = match required("decision", self.decision)?.as_ref() {
            "approve" => Verdict::Approve,
            "reject" => Verdict::Reject,
            other => {
                return Err(DecodeError::Invalid {
                    field: "decision",
                    reason: format!("{other:?} is not approve or reject"),
                })
            }
        };
        Ok(Approval {
            command_id: non_empty("command_id", self.command_id)?,
            decision,
            by: non_empty("by", self.by)?,
            at: opt_time("at", self.at)?,
            sig: self.sig.filter(|s| !s.is_empty()),
        })
    }
}

#[derive(Deserialize)]
struct ControlWire<'a> {
    #[serde(borrow)]
    scope: Option<Cow<'a, str>>,
    kill_switch: Option<bool>,
    #[serde(borrow)]
    until: Option<Cow<'a, str>>,
    by: Option<String>,
    reload_policy: Option<bool>,
}

impl ControlWire<'_> {
    fn into_control(self) -> Result<Control, DecodeError> {
        let raw = required("scope", self.scope)?;
        let scope = Scope::parse(&raw).ok_or_else(|| DecodeError::Invalid {
            field: "scope",
            reason: format!("{raw:?} is not global, service:NAME or runbook:NAME"),
        })?;
        let reload_policy = self.reload_policy.unwrap_or(false);
        let kill_switch = if reload_policy {
            reload_only(self.kill_switch.unwrap_or(false))?
        } else {
            required("kill_switch", self.kill_switch)?
        };
        Ok(Control {
            scope,
            kill_switch,
            until: opt_time("until", self.until)?,
            by: self.by,
            reload_policy,
        })
    }
}

/// A reload request switches nothing: `kill_switch` must be false.
pub(crate) fn reload_only(kill_switch: bool) -> Result<bool, DecodeError> {
    if kill_switch {
        return Err(DecodeError::Invalid {
            field: "kill_switch",
            reason: "a control record either sets the kill switch or reloads the policy, not both"
                .into(),
        });
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(kind: &str, data: &str) -> Result<Record, DecodeError> {
        Record::from_json_line(&format!(
            r#"{{"ts":"2026-03-01T10:00:00Z","kind":"{kind}","data":{data}}}"#
        ))
    }

    #[test]
    fn metric_value_as_string_or_number() {
        for v in [r#""1234""#, "1234", "1234.0"] {
            let r = line(
                "metric",
                &format!(
                    r#"{{"timestamp":"2026-03-01T10:00:00Z","value":{v},"name":"http_requests_total","labels":{{"service":"checkout","code":"200"}}}}"#
                ),
            )
            .unwrap();
            let Input::Metric(m) = r.input else { panic!() };
            assert_eq!(m.value, Fixed::from_units(1234));
            assert_eq!(m.labels.get("code"), Some("200"));
        }
    }

    #[test]
    fn metric_refuses_nan_and_missing_name() {
        let e = line("metric", r#"{"value":"NaN","name":"x","labels":{}}"#).unwrap_err();
        assert_eq!(e.code(), "invalid_value");
        let e = line("metric", r#"{"value":"1","labels":{}}"#).unwrap_err();
        assert_eq!(e, DecodeError::Missing("name"));
    }

    #[test]
    fn metric_refuses_a_negative_counter_and_keeps_negative_gauges() {
        for (name, value) in [
            ("http_requests_total", r#""-5""#),
            ("http_requests_total", "-5"),
            ("rpc_duration_seconds_count", "-0.5"),
            ("rpc_duration_seconds_bucket", r#""-1e3""#),
        ] {
            let data = format!(r#"{{"value":{value},"name":"{name}","labels":{{}}}}"#);
            let e = line("metric", &data).unwrap_err();
            assert_eq!(e.code(), "invalid_value", "{data}");
            assert!(e.to_string().contains("negative"), "{e}");
            let avro = crate::records::avro::encode_input(&Input::Metric(MetricSample {
                name: name.into(),
                labels: Labels::new(),
                value: Fixed(-1),
                timestamp: None,
            }))
            .unwrap();
            let bytes = crate::records::avro::single_object_encode(
                crate::records::avro::RecordType::MetricSample,
                &avro[0],
            );
            let e = crate::records::avro::decode_value(InputKind::Metric, &bytes).unwrap_err();
            assert_eq!(e.code(), "invalid_value", "avro {name}");
        }
        for data in [
            r#"{"value":"-5","name":"temperature_celsius","labels":{}}"#,
            r#"{"value":"5","name":"http_requests_total","labels":{}}"#,
        ] {
            assert!(line("metric", data).is_ok(), "{data}");
        }
    }

    #[test]
    fn alert_single_and_webhook_payload() {
        let one = r#"{"status":"firing","labels":{"alertname":"PodOOMKilled","service":"checkout"},"startsAt":"2026-03-01T10:00:00Z","endsAt":"0001-01-01T00:00:00Z","fingerprint":"a1"}"#;
        let Input::Alerts(a) = line("alert", one).unwrap().input else {
            panic!()
        };
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].ends_at, None);
        let payload = format!(
            r#"{{"version":"4","status":"firing","receiver":"selfheal","alerts":[{one},{one}]}}"#
        );
        let Input::Alerts(a) = line("alert", &payload).unwrap().input else {
            panic!()
        };
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn alert_needs_status_and_alertname() {
        let e = line("alert", r#"{"labels":{"alertname":"X"}}"#).unwrap_err();
        assert_eq!(e, DecodeError::Missing("status"));
        let e = line("alert", r#"{"status":"firing","labels":{"service":"a"}}"#).unwrap_err();
        assert_eq!(e, DecodeError::Missing("labels.alertname"));
    }

    #[test]
    fn envelope_errors_are_typed() {
        assert_eq!(line("bogus", "{}").unwrap_err().code(), "unknown_kind");
        assert_eq!(
            Record::from_json_line("{not json").unwrap_err().code(),
            "malformed_json"
        );
        assert!(Record::from_json_line(r#"{"ts":"2026-03-01T10:00:00Z","kind":"tick"}"#).is_ok());
    }

    #[test]
    fn control_scopes() {
        let r = line(
            "control",
            r#"{"scope":"service:checkout","kill_switch":true}"#,
        )
        .unwrap();
        let Input::Control(c) = r.input else { panic!() };
        assert_eq!(c.scope, Scope::Service("checkout".into()));
        assert!(line("control", r#"{"scope":"team:x","kill_switch":true}"#).is_err());
    }
}
