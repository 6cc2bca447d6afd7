//! Record framing on topics.
//!
//! Inputs are accepted as JSON, Avro single-object or Confluent framing
//! ([`decode_value`](crate::records::avro::decode_value)). Outputs and the
//! records selfheal's own tools publish are written as Avro single-object
//! by default, or JSON; either way the `selfheal-kind` header names the
//! record kind, so a reader can tell JSON outputs apart.

use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::records::avro::{self, detect_framing, Framing, RecordType};
use crate::records::{
    ActionResult, Approval, Control, DecodeError, Input, InputKind, Output, Verdict,
};
use crate::time::Timestamp;

/// Header naming the record kind (`command`, `audit`, `result`, …).
pub const KIND_HEADER: &str = "selfheal-kind";
/// Names the engine batch that wrote a record: outputs, dead letters and
/// the journal record of one batch carry the same value
/// (`INSTANCE.START.PID-N`, START in hexadecimal milliseconds), so an
/// output leads to the journal record holding the inputs it was decided
/// from. Under `exactly_once` a batch is one transaction.
pub const BATCH_HEADER: &str = "selfheal-batch";

/// Value encoding of the records selfheal writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Avro single-object encoding (schemas in `schemas/`).
    #[default]
    Avro,
    /// The JSON forms of DESIGN.md.
    Json,
}

/// Encodes an output record's value.
pub fn encode_output(out: &Output, format: Format) -> Vec<u8> {
    match format {
        Format::Json => out.to_json_value().to_string().into_bytes(),
        Format::Avro => match avro::encode_output(out) {
            Ok(datum) => avro::single_object_encode(avro::output_type(out), &datum),
            // Only records that cannot be represented in Avro fail (none
            // of ours do); JSON keeps them readable rather than lost.
            Err(_) => out.to_json_value().to_string().into_bytes(),
        },
    }
}

/// Decodes an output record's value, in either framing; `kind` is the
/// `selfheal-kind` header, needed for JSON values.
pub fn decode_output(kind: Option<&str>, bytes: &[u8]) -> Result<Output, DecodeError> {
    match detect_framing(bytes)? {
        (Framing::SingleObject(t), datum) => avro::decode_output(t, datum),
        (Framing::Confluent(_), datum) => {
            let t = kind
                .and_then(output_type_of)
                .ok_or(DecodeError::Missing(KIND_HEADER))?;
            avro::decode_output(t, datum)
        }
        (Framing::Json, text) => {
            let kind = kind.ok_or(DecodeError::Missing(KIND_HEADER))?;
            let de = |e: serde_json::Error| DecodeError::Json(e.to_string());
            Ok(match kind {
                "burn_alert" => Output::BurnAlert(serde_json::from_slice(text).map_err(de)?),
                "incident" => Output::Incident(serde_json::from_slice(text).map_err(de)?),
                "command" => Output::Command(serde_json::from_slice(text).map_err(de)?),
                "approval_request" => {
                    Output::ApprovalRequest(serde_json::from_slice(text).map_err(de)?)
                }
                "escalation" => Output::Escalation(serde_json::from_slice(text).map_err(de)?),
                "audit" => Output::Audit(serde_json::from_slice(text).map_err(de)?),
                other => return Err(DecodeError::UnknownKind(other.to_string())),
            })
        }
    }
}

fn output_type_of(kind: &str) -> Option<RecordType> {
    Some(match kind {
        "burn_alert" => RecordType::BurnAlert,
        "incident" => RecordType::Incident,
        "command" => RecordType::Command,
        "approval_request" => RecordType::ApprovalRequest,
        "escalation" => RecordType::Escalation,
        "audit" => RecordType::Audit,
        _ => return None,
    })
}

/// Encodes an input record's value (results, approvals, controls,
/// changes and metrics that selfheal itself publishes). An alert payload
/// with several alerts must be split first; `None` for ticks.
pub fn encode_input(input: &Input, format: Format) -> Option<Vec<u8>> {
    let kind = input.kind();
    match format {
        Format::Avro => {
            let t = avro::input_type(kind)?;
            let mut datums = avro::encode_input(input).ok()?;
            (datums.len() == 1).then(|| avro::single_object_encode(t, &datums.remove(0)))
        }
        Format::Json => input_json(input).map(|v| v.to_string().into_bytes()),
    }
}

/// The JSON form of an input record.
pub fn input_json(input: &Input) -> Option<serde_json::Value> {
    use serde_json::json;
    let opt = |t: Option<crate::time::Timestamp>| t.map(|t| t.to_string());
    Some(match input {
        Input::Result(ActionResult {
            command_id,
            status,
            detail,
            at,
            previous,
        }) => {
            let mut v = json!({"command_id": command_id, "status": status.as_str(),
                               "detail": detail, "at": opt(*at)});
            if !previous.is_empty() {
                v["previous"] = json!(previous);
            }
            v
        }
        Input::Approval(Approval {
            command_id,
            decision,
            by,
            at,
            sig,
        }) => json!({"command_id": command_id,
                     "decision": match decision { Verdict::Approve => "approve", Verdict::Reject => "reject" },
                     "by": by, "at": opt(*at), "sig": sig}),
        Input::Control(Control {
            scope,
            kill_switch,
            until,
            by,
            reload_policy,
        }) => json!({"scope": scope.to_string(), "kill_switch": kill_switch,
                     "until": opt(*until), "by": by, "reload_policy": reload_policy}),
        Input::Change(c) => json!({"service": c.service, "kind": c.kind,
                                   "state": c.state.as_str(), "id": c.id, "at": opt(c.at)}),
        Input::Metric(m) => json!({"name": m.name, "labels": m.labels,
                                   "value": m.value.to_string(), "timestamp": opt(m.timestamp)}),
        Input::Alerts(a) if a.len() == 1 => {
            let a = &a[0];
            json!({"status": a.status.as_str(), "labels": a.labels,
                   "annotations": a.annotations, "startsAt": opt(a.starts_at),
                   "endsAt": opt(a.ends_at), "fingerprint": a.fingerprint,
                   "generatorURL": a.generator_url})
        }
        Input::Alerts(_) | Input::Tick => return None,
    })
}

/// An input record's value as a replay line (`{"ts","kind","data"}`):
/// JSON values verbatim (compacted to one line), Avro values in their JSON
/// form. `None` when the value does not decode as `kind`.
pub fn replay_line(ts: Timestamp, kind: InputKind, value: &[u8]) -> Option<String> {
    let data = match detect_framing(value) {
        Ok((Framing::Json, text)) => {
            let text = std::str::from_utf8(text).ok()?;
            if text.contains(['\n', '\r']) {
                // One line per record: compact a multi-line value.
                serde_json::from_str::<serde_json::Value>(text)
                    .ok()?
                    .to_string()
            } else {
                text.trim().to_string()
            }
        }
        _ => input_json(&avro::decode_value(kind, value).ok()?)?.to_string(),
    };
    Some(format!(
        r#"{{"ts":"{ts}","kind":"{}","data":{data}}}"#,
        kind.as_str()
    ))
}

/// Headers carrying the record kind.
pub fn kind_headers(kind: &str) -> OwnedHeaders {
    OwnedHeaders::new().insert(Header {
        key: KIND_HEADER,
        value: Some(kind),
    })
}

/// `headers` with `selfheal-batch`, for a record an engine batch writes.
pub fn with_batch(headers: OwnedHeaders, batch: &str) -> OwnedHeaders {
    headers.insert(Header {
        key: BATCH_HEADER,
        value: Some(batch),
    })
}

/// Headers of a dead-letter record: why it was refused and where it came
/// from.
pub fn dead_letter_headers(
    reason: &str,
    code: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> OwnedHeaders {
    let (partition, offset) = (partition.to_string(), offset.to_string());
    [
        ("selfheal-error", reason),
        ("selfheal-error-code", code),
        ("selfheal-source-topic", topic),
        ("selfheal-source-partition", partition.as_str()),
        ("selfheal-source-offset", offset.as_str()),
    ]
    .into_iter()
    .fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(value),
        })
    })
}

/// The value of a UTF-8 header, if present.
pub fn header<'a, H: Headers>(headers: Option<&'a H>, key: &str) -> Option<&'a str> {
    let h = headers?;
    h.iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The input kind a topic carries, by its position among the input topics.
pub const INPUT_KINDS: [InputKind; 6] = [
    InputKind::Metric,
    InputKind::Alert,
    InputKind::Change,
    InputKind::Result,
    InputKind::Approval,
    InputKind::Control,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{ResultStatus, Scope};
    use crate::time::Timestamp;

    #[test]
    fn inputs_written_by_the_tools_decode_as_they_were_in_both_formats() {
        let at = Some(Timestamp::parse("2026-03-01T10:00:00Z").unwrap());
        let inputs = [
            Input::Result(ActionResult {
                command_id: "c1".into(),
                status: ResultStatus::TimedOut,
                detail: "timed out after 30s".into(),
                at,
                previous: Default::default(),
            }),
            Input::Result(ActionResult {
                command_id: "c3".into(),
                status: ResultStatus::Succeeded,
                detail: "scaled shop/checkout from 3 to 5 replicas".into(),
                at,
                previous: [("replicas".to_string(), "3".to_string())].into(),
            }),
            Input::Approval(Approval {
                command_id: "c2".into(),
                decision: Verdict::Reject,
                by: "alice@example.com".into(),
                at,
                sig: Some("ab".repeat(32)),
            }),
            Input::Control(Control {
                scope: Scope::Service("checkout".into()),
                kill_switch: true,
                until: at,
                by: Some("bob".into()),
                reload_policy: false,
            }),
            Input::Control(Control {
                scope: Scope::Global,
                kill_switch: false,
                until: None,
                by: Some("carol".into()),
                reload_policy: true,
            }),
        ];
        for input in inputs {
            for f in [Format::Avro, Format::Json] {
                let bytes = encode_input(&input, f).unwrap();
                let back = avro::decode_value(input.kind(), &bytes).unwrap();
                assert_eq!(back, input, "{f:?}");
            }
        }
    }
}
