//! Avro forms of the records: the schemas in `schemas/` (one per record
//! type, embedded at build time and parsed once), raw datum codecs, and the
//! framings a Kafka value may carry: Avro single-object encoding, the
//! Confluent wire format, or plain JSON.
//!
//! Field names and meanings are those of the JSON forms, so a record reads
//! the same in either; timestamps are RFC 3339 strings in both.

mod codec;
pub mod envelope;
mod rabin;
mod wire;

use std::sync::OnceLock;

use apache_avro::Schema;

use super::input::{DecodeError, Input, InputKind, MetricRef};
use super::labels::LabelBuf;
use super::output::Output;

pub use codec::MetricScan;
pub use rabin::fingerprint64;

/// One Avro schema per record type; the name is the schema's file stem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordType {
    MetricSample,
    Alert,
    Change,
    ActionResult,
    Approval,
    Control,
    Command,
    ApprovalRequest,
    Escalation,
    Incident,
    BurnAlert,
    Audit,
}

impl RecordType {
    /// Every record type, in declaration order.
    pub const ALL: [RecordType; 12] = [
        RecordType::MetricSample,
        RecordType::Alert,
        RecordType::Change,
        RecordType::ActionResult,
        RecordType::Approval,
        RecordType::Control,
        RecordType::Command,
        RecordType::ApprovalRequest,
        RecordType::Escalation,
        RecordType::Incident,
        RecordType::BurnAlert,
        RecordType::Audit,
    ];

    /// The schema's file stem in `schemas/`, e.g. `metric_sample`.
    pub fn name(self) -> &'static str {
        match self {
            RecordType::MetricSample => "metric_sample",
            RecordType::Alert => "alert",
            RecordType::Change => "change",
            RecordType::ActionResult => "action_result",
            RecordType::Approval => "approval",
            RecordType::Control => "control",
            RecordType::Command => "command",
            RecordType::ApprovalRequest => "approval_request",
            RecordType::Escalation => "escalation",
            RecordType::Incident => "incident",
            RecordType::BurnAlert => "burn_alert",
            RecordType::Audit => "audit",
        }
    }

    pub fn from_name(name: &str) -> Option<RecordType> {
        RecordType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The input kind this type is read as; `None` for output types.
    pub fn input_kind(self) -> Option<InputKind> {
        Some(match self {
            RecordType::MetricSample => InputKind::Metric,
            RecordType::Alert => InputKind::Alert,
            RecordType::Change => InputKind::Change,
            RecordType::ActionResult => InputKind::Result,
            RecordType::Approval => InputKind::Approval,
            RecordType::Control => InputKind::Control,
            _ => return None,
        })
    }

    fn source(self) -> &'static str {
        match self {
            RecordType::MetricSample => include_str!("../../../schemas/metric_sample.avsc"),
            RecordType::Alert => include_str!("../../../schemas/alert.avsc"),
            RecordType::Change => include_str!("../../../schemas/change.avsc"),
            RecordType::ActionResult => include_str!("../../../schemas/action_result.avsc"),
            RecordType::Approval => include_str!("../../../schemas/approval.avsc"),
            RecordType::Control => include_str!("../../../schemas/control.avsc"),
            RecordType::Command => include_str!("../../../schemas/command.avsc"),
            RecordType::ApprovalRequest => include_str!("../../../schemas/approval_request.avsc"),
            RecordType::Escalation => include_str!("../../../schemas/escalation.avsc"),
            RecordType::Incident => include_str!("../../../schemas/incident.avsc"),
            RecordType::BurnAlert => include_str!("../../../schemas/burn_alert.avsc"),
            RecordType::Audit => include_str!("../../../schemas/audit.avsc"),
        }
    }
}

impl std::fmt::Display for RecordType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a record could not be written as Avro.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AvroError {
    #[error("{0} records have no Avro form")]
    NoAvroForm(&'static str),
    #[error("field `{field}`: {value} does not fit an Avro {avro_type}")]
    OutOfRange {
        field: &'static str,
        value: String,
        avro_type: &'static str,
    },
}

struct Compiled {
    schema: Schema,
    fingerprint: u64,
}

fn compiled(t: RecordType) -> &'static Compiled {
    static ALL: OnceLock<[Compiled; 12]> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        RecordType::ALL.map(|t| {
            // The schemas are part of the build, not outside input; a broken
            // one is a bug the tests catch.
            let schema = Schema::parse_str(t.source())
                .unwrap_or_else(|e| panic!("schemas/{}.avsc does not parse: {e}", t.name()));
            let fingerprint = fingerprint64(schema.canonical_form().as_bytes());
            Compiled {
                schema,
                fingerprint,
            }
        })
    });
    &all[t as usize]
}

/// Earlier versions of our schemas, still read from single-object values:
/// each differs from the current one only by fields added at the end
/// with defaults, so its datums are the current datum's prefix and the
/// codecs fill in the defaults.
const LEGACY: [(RecordType, &str); 1] = [(
    RecordType::ActionResult,
    include_str!("legacy/action_result.v1.avsc"),
)];

/// Fingerprints of the [`LEGACY`] schemas.
pub fn legacy_fingerprints() -> &'static [(RecordType, u64)] {
    static ALL: OnceLock<Vec<(RecordType, u64)>> = OnceLock::new();
    ALL.get_or_init(|| {
        LEGACY
            .iter()
            .map(|&(t, text)| {
                let schema = Schema::parse_str(text)
                    .unwrap_or_else(|e| panic!("legacy {} schema does not parse: {e}", t.name()));
                (t, fingerprint64(schema.canonical_form().as_bytes()))
            })
            .collect()
    })
}

/// The Approval schema before its `sig` field. Single-object values written
/// with it (by an earlier `selfheal approve`) still decode, unsigned.
const APPROVAL_V1: &str = r#"{"type":"record","name":"Approval","namespace":"io.selfheal","fields":[
  {"name":"command_id","type":"string"},
  {"name":"decision","type":{"type":"enum","name":"Decision","symbols":["approve","reject"]}},
  {"name":"by","type":"string"},
  {"name":"at","type":["null","string"],"default":null}]}"#;

fn approval_v1_fingerprint() -> u64 {
    static FP: OnceLock<u64> = OnceLock::new();
    *FP.get_or_init(|| {
        let schema = Schema::parse_str(APPROVAL_V1).expect("the v1 approval schema parses");
        fingerprint64(schema.canonical_form().as_bytes())
    })
}

/// The parsed schema of a record type.
pub fn schema(t: RecordType) -> &'static Schema {
    &compiled(t).schema
}

/// CRC-64-AVRO fingerprint of the schema's parsing canonical form, as used
/// in single-object encoding (where it is written little-endian).
pub fn fingerprint(t: RecordType) -> u64 {
    compiled(t).fingerprint
}

/// The record type of an input kind; ticks have none.
pub fn input_type(kind: InputKind) -> Option<RecordType> {
    Some(match kind {
        InputKind::Metric => RecordType::MetricSample,
        InputKind::Alert => RecordType::Alert,
        InputKind::Change => RecordType::Change,
        InputKind::Result => RecordType::ActionResult,
        InputKind::Approval => RecordType::Approval,
        InputKind::Control => RecordType::Control,
        InputKind::Tick => return None,
    })
}

pub fn output_type(out: &Output) -> RecordType {
    match out {
        Output::BurnAlert(_) => RecordType::BurnAlert,
        Output::Incident(_) => RecordType::Incident,
        Output::Command(_) => RecordType::Command,
        Output::ApprovalRequest(_) => RecordType::ApprovalRequest,
        Output::Escalation(_) => RecordType::Escalation,
        Output::Audit(_) => RecordType::Audit,
    }
}

/// Raw Avro datums (binary, no header) of an input. An Alertmanager
/// payload becomes one datum per alert, since the schema is per alert.
pub fn encode_input(input: &Input) -> Result<Vec<Vec<u8>>, AvroError> {
    Ok(match input {
        Input::Metric(m) => vec![codec::write_metric(m)],
        Input::Alerts(a) => a.iter().map(codec::write_alert).collect(),
        Input::Change(c) => vec![codec::write_change(c)],
        Input::Result(r) => vec![codec::write_result(r)],
        Input::Approval(a) => vec![codec::write_approval(a)],
        Input::Control(c) => vec![codec::write_control(c)],
        Input::Tick => return Err(AvroError::NoAvroForm("tick")),
    })
}

/// Decodes one raw datum of the given kind, written with our schema.
/// Structural problems (truncation, bad varints or UTF-8, trailing bytes)
/// are `DecodeError::Avro`; semantic ones are the JSON decoder's errors.
pub fn decode_input(kind: InputKind, datum: &[u8]) -> Result<Input, DecodeError> {
    Ok(match kind {
        InputKind::Metric => Input::Metric(codec::read_metric(datum)?),
        InputKind::Alert => Input::Alerts(vec![codec::read_alert(datum)?]),
        InputKind::Change => Input::Change(codec::read_change(datum)?),
        InputKind::Result => Input::Result(codec::read_result(datum)?),
        InputKind::Approval => Input::Approval(codec::read_approval(datum)?),
        InputKind::Control => Input::Control(codec::read_control(datum)?),
        InputKind::Tick => return Err(DecodeError::Avro("tick records have no Avro form".into())),
    })
}

/// The raw Avro datum of an output.
pub fn encode_output(out: &Output) -> Result<Vec<u8>, AvroError> {
    Ok(match out {
        Output::BurnAlert(x) => codec::write_burn_alert(x),
        Output::Incident(x) => codec::write_incident(x),
        Output::Command(x) => codec::write_command(x),
        Output::ApprovalRequest(x) => codec::write_approval_request(x),
        Output::Escalation(x) => codec::write_escalation(x),
        Output::Audit(x) => codec::write_audit(x)?,
    })
}

/// Decodes one raw datum of an output type.
pub fn decode_output(t: RecordType, datum: &[u8]) -> Result<Output, DecodeError> {
    Ok(match t {
        RecordType::BurnAlert => Output::BurnAlert(codec::read_burn_alert(datum)?),
        RecordType::Incident => Output::Incident(codec::read_incident(datum)?),
        RecordType::Command => Output::Command(codec::read_command(datum)?),
        RecordType::ApprovalRequest => {
            Output::ApprovalRequest(codec::read_approval_request(datum)?)
        }
        RecordType::Escalation => Output::Escalation(codec::read_escalation(datum)?),
        RecordType::Audit => Output::Audit(codec::read_audit(datum)?),
        input => {
            return Err(DecodeError::Avro(format!(
                "{input} is an input record type, not an output"
            )))
        }
    })
}

/// First two bytes of an Avro single-object encoded value.
pub const SINGLE_OBJECT_MARKER: [u8; 2] = [0xc3, 0x01];
/// First byte of a Confluent wire-format value.
pub const CONFLUENT_MAGIC: u8 = 0x00;

const SINGLE_OBJECT_HEADER: usize = 10;
const CONFLUENT_HEADER: usize = 5;

/// Avro single-object encoding: marker, the schema's fingerprint
/// (little-endian), datum.
pub fn single_object_encode(t: RecordType, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SINGLE_OBJECT_HEADER + datum.len());
    out.extend_from_slice(&SINGLE_OBJECT_MARKER);
    out.extend_from_slice(&fingerprint(t).to_le_bytes());
    out.extend_from_slice(datum);
    out
}

/// The samples of one metric series, written without the general
/// encoder: a single-object-encoded `MetricSample` of the series split
/// around its two leading fields, `timestamp` and `value`; what follows
/// them (name, labels) is the same for every sample of the series. For
/// load generators; [`decode_value`] reads the result as any sample.
pub struct MetricTemplate {
    head: Vec<u8>,
    tail: Vec<u8>,
}

/// The reusable buffer of [`MetricTemplate::encode`]; it keeps the last
/// timestamp's text, as consecutive samples usually share it.
#[derive(Default)]
pub struct MetricTemplateWriter(wire::Writer);

impl MetricTemplate {
    /// From one sample of the series as [`single_object_encode`] wrote
    /// it; `None` when `encoded` does not start with two strings after the
    /// header.
    pub fn new(encoded: &[u8]) -> Option<MetricTemplate> {
        let mut r = wire::Reader::new(encoded.get(SINGLE_OBJECT_HEADER..)?);
        r.str().ok()?;
        r.str().ok()?;
        let rest = SINGLE_OBJECT_HEADER + r.position();
        Some(MetricTemplate {
            head: encoded[..SINGLE_OBJECT_HEADER].to_vec(),
            tail: encoded[rest..].to_vec(),
        })
    }

    /// The series' sample at `ts` with `value`.
    pub fn encode(
        &self,
        w: &mut MetricTemplateWriter,
        ts: crate::time::Timestamp,
        value: &super::Fixed,
    ) -> Vec<u8> {
        let w = &mut w.0;
        w.clear();
        w.time(ts);
        w.display(value);
        let fields = w.bytes();
        let mut out = Vec::with_capacity(self.head.len() + fields.len() + self.tail.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(fields);
        out.extend_from_slice(&self.tail);
        out
    }
}

/// Confluent wire format: magic byte, registry schema id (big-endian),
/// datum.
pub fn confluent_encode(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CONFLUENT_HEADER + datum.len());
    out.push(CONFLUENT_MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// How a Kafka value is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Avro single-object encoding with the fingerprint of one of our
    /// schemas.
    SingleObject(RecordType),
    /// Confluent wire format with this registry schema id.
    Confluent(u32),
    /// A JSON object.
    Json,
}

/// Tells the framing of a Kafka value from its first bytes and returns it
/// with the payload: the raw datum for Avro, the whole value for JSON.
/// A single-object value must carry the fingerprint of one of our schemas;
/// the three framings cannot be confused, since JSON starts with `{` (after
/// whitespace) and the two Avro headers with 0xC3 and 0x00.
pub fn detect_framing(bytes: &[u8]) -> Result<(Framing, &[u8]), DecodeError> {
    let first = bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    match (bytes, first) {
        (_, Some(b'{')) => Ok((Framing::Json, bytes)),
        ([0xc3, 0x01, ..], _) => {
            let (head, datum) = bytes
                .split_at_checked(SINGLE_OBJECT_HEADER)
                .ok_or_else(|| {
                    DecodeError::Avro(format!(
                        "single-object header truncated to {} bytes",
                        bytes.len()
                    ))
                })?;
            let mut fp = [0u8; 8];
            fp.copy_from_slice(&head[2..]);
            let fp = u64::from_le_bytes(fp);
            let t = RecordType::ALL
                .into_iter()
                .find(|&t| fingerprint(t) == fp)
                .or_else(|| {
                    legacy_fingerprints()
                        .iter()
                        .find(|&&(_, f)| f == fp)
                        .map(|&(t, _)| t)
                })
                .ok_or_else(|| {
                    DecodeError::Avro(format!(
                        "single-object schema fingerprint {fp:#018x} is none of ours"
                    ))
                })?;
            Ok((Framing::SingleObject(t), datum))
        }
        ([CONFLUENT_MAGIC, ..], _) => {
            let (head, datum) = bytes.split_at_checked(CONFLUENT_HEADER).ok_or_else(|| {
                DecodeError::Avro(format!(
                    "Confluent header truncated to {} bytes",
                    bytes.len()
                ))
            })?;
            let id = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
            Ok((Framing::Confluent(id), datum))
        }
        ([], _) => Err(DecodeError::Avro("empty value".into())),
        ([b, ..], _) => Err(DecodeError::Avro(format!(
            "unknown framing: first byte {b:#04x} (expected '{{' for JSON, \
             0xC3 0x01 for Avro single-object or 0x00 for Confluent)"
        ))),
    }
}

/// Decodes a Kafka value of the given kind in any framing. A Confluent
/// value is decoded with our own schema for the kind: without a registry
/// the writer's schema cannot be looked up, and producers are expected to
/// use ours. A single-object value must carry the schema of `kind`.
pub fn decode_value(kind: InputKind, bytes: &[u8]) -> Result<Input, DecodeError> {
    if kind == InputKind::Approval && bytes.len() >= SINGLE_OBJECT_HEADER {
        let (head, datum) = bytes.split_at(SINGLE_OBJECT_HEADER);
        if head[..2] == [0xc3, 0x01] && head[2..] == approval_v1_fingerprint().to_le_bytes() {
            // The v1 datum is the current one without its last field,
            // `sig`, whose `null` branch is the single byte 0.
            let mut current = datum.to_vec();
            current.push(0);
            return decode_input(kind, &current);
        }
    }
    match detect_framing(bytes)? {
        (Framing::Json, text) => {
            let text = std::str::from_utf8(text)
                .map_err(|e| DecodeError::Json(format!("invalid UTF-8: {e}")))?;
            Input::from_json(kind, text)
        }
        (Framing::SingleObject(t), datum) => {
            expect_schema(kind, t)?;
            decode_input(kind, datum)
        }
        (Framing::Confluent(_), datum) => decode_input(kind, datum),
    }
}

/// A single-object value must carry the schema of the topic's kind.
fn expect_schema(kind: InputKind, t: RecordType) -> Result<(), DecodeError> {
    if input_type(kind) == Some(t) {
        Ok(())
    } else {
        Err(DecodeError::Avro(format!(
            "single-object value has the {t} schema, expected a {} record",
            kind.as_str()
        )))
    }
}

/// Decodes a metric sample's Kafka value as [`decode_value`] does, with
/// the same errors, but borrowed from `bytes` and `labels` (whose storage
/// is reused from record to record): the engine's per-record path, which
/// allocates nothing for a sample of a series it has seen. `None` for a
/// JSON value, which [`decode_value`] decodes.
pub fn decode_metric_value<'a>(
    bytes: &'a [u8],
    labels: &'a mut LabelBuf,
) -> Option<Result<MetricRef<'a>, DecodeError>> {
    Some(metric_datum(bytes)?.and_then(|datum| codec::read_metric_ref(datum, labels)))
}

/// The Avro datum of a metric sample's Kafka value, or why its framing
/// is refused (as [`decode_value`] refuses it); `None` for JSON.
fn metric_datum(bytes: &[u8]) -> Option<Result<&[u8], DecodeError>> {
    Some(match detect_framing(bytes) {
        Err(e) => Err(e),
        Ok((Framing::Json, _)) => return None,
        Ok((Framing::SingleObject(t), datum)) => {
            expect_schema(InputKind::Metric, t).map(|()| datum)
        }
        Ok((Framing::Confluent(_), datum)) => Ok(datum),
    })
}

/// Reads an Avro metric sample's Kafka value only as far as a sample of a
/// series seen before needs (see [`MetricScan`]): `None` for JSON, and for
/// any value that [`decode_metric_value`] would refuse for its framing or
/// its shape, whose error the full decode then gives. A value it scans is
/// decoded, when its series part is new, by [`decode_metric_value`].
pub fn scan_metric_value(bytes: &[u8]) -> Option<MetricScan<'_>> {
    codec::scan_metric(metric_datum(bytes)?.ok()?)
}

/// A `MetricSample` datum written field by field, labels in the order
/// given, so broken and unusual ones can be made (tests).
#[cfg(test)]
pub(crate) fn write_metric_datum(
    ts: &str,
    value: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> Vec<u8> {
    let mut w = wire::Writer::default();
    w.str(ts);
    w.str(value);
    w.str(name);
    w.map_str(labels.len(), labels.iter().copied());
    w.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_match_apache_avro() {
        use apache_avro::rabin::Rabin;
        for t in RecordType::ALL {
            let theirs = schema(t).fingerprint::<Rabin>().bytes;
            assert_eq!(theirs, fingerprint(t).to_le_bytes().to_vec(), "{t}");
        }
    }

    #[test]
    fn approvals_written_before_the_sig_field_still_decode() {
        use crate::records::{Approval, Verdict};
        let a = Approval {
            command_id: "cmd-1".into(),
            decision: Verdict::Reject,
            by: "alice".into(),
            at: None,
            sig: None,
        };
        let mut datum = codec::write_approval(&a);
        // The new schema's last field: the `null` branch of `sig`.
        assert_eq!(datum.pop(), Some(0));
        let mut v1 = vec![0xc3, 0x01];
        v1.extend_from_slice(&approval_v1_fingerprint().to_le_bytes());
        v1.extend_from_slice(&datum);
        assert_ne!(approval_v1_fingerprint(), fingerprint(RecordType::Approval));
        assert_eq!(
            decode_value(InputKind::Approval, &v1),
            Ok(Input::Approval(a))
        );
    }

    #[test]
    fn borrowed_metric_decoding_agrees_with_decode_value() {
        let ok = [("service", "api"), ("code", "500")];
        let mut values = vec![
            write_metric_datum("2026-01-01T00:00:00Z", "12.5", "http_requests_total", &ok),
            write_metric_datum("", "3", "", &[("__name__", "up"), ("job", "x")]),
            write_metric_datum("", "3", "m", &[("a", "1"), ("a", "2"), ("__name__", "n")]),
            write_metric_datum("0001-01-01T00:00:00Z", "1", "m", &[]),
            write_metric_datum("yesterday", "1", "m", &ok),
            write_metric_datum("", "NaN", "m", &ok),
            write_metric_datum("", "-4", "requests_total", &ok),
            write_metric_datum("", "1", "", &ok),
            write_metric_datum("", "1e400", "m", &ok),
        ];
        let mut trailing = write_metric_datum("", "1", "m", &ok);
        trailing.push(0);
        values.push(trailing);
        let mut cut = write_metric_datum("", "1", "m", &ok);
        cut.truncate(cut.len() - 2);
        values.push(cut);
        let mut framed: Vec<Vec<u8>> = values
            .iter()
            .flat_map(|d| {
                [
                    single_object_encode(RecordType::MetricSample, d),
                    confluent_encode(7, d),
                ]
            })
            .collect();
        framed.push(single_object_encode(RecordType::Alert, &values[0]));
        framed.push(vec![0xc3, 0x01, 1, 2]);
        framed.push(vec![0x7f, 1]);
        framed.push(Vec::new());
        let mut labels = LabelBuf::new();
        let mut seen_ok = 0;
        for bytes in &framed {
            let owned = decode_value(InputKind::Metric, bytes);
            let borrowed = decode_metric_value(bytes, &mut labels)
                .expect("an Avro value")
                .map(|m| Input::Metric(m.to_sample()));
            assert_eq!(borrowed, owned, "{bytes:?}");
            seen_ok += usize::from(owned.is_ok());
        }
        assert_eq!(seen_ok, 8, "the valid samples decode in both framings");
        let json = br#"{"name":"m","labels":{},"value":1}"#;
        assert!(decode_metric_value(json, &mut labels).is_none());
    }

    #[test]
    fn a_scanned_sample_checks_as_its_full_decode() {
        // Series parts (name, labels) crossed with value and timestamp
        // texts: wherever a full decode of a series part succeeds, a scan
        // of any sample with those series bytes, checked with the name
        // that decode found, gives the full decode's value or error.
        let series: Vec<(&str, Vec<(&str, &str)>)> = vec![
            (
                "http_requests_total",
                vec![("service", "api"), ("code", "500")],
            ),
            (
                "http_requests_total",
                vec![("code", "500"), ("service", "api")],
            ),
            ("", vec![("__name__", "requests_total"), ("job", "x")]),
            ("m", vec![("a", "1"), ("a", "2"), ("__name__", "n")]),
            ("up", vec![]),
            ("", vec![("job", "x")]),
            ("m", vec![("bad", "zz")]),
        ];
        let values = ["12.5", "-4", "NaN", "1e400", " 7 ", "x"];
        let stamps = [
            "",
            "2026-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "yesterday",
        ];
        let (mut checked, mut refused, mut unknown) = (0, 0, 0);
        let mut labels = LabelBuf::new();
        for (name, pairs) in &series {
            let mut part = write_metric_datum("", "1", name, pairs);
            if let Some(at) = part.windows(2).position(|w| w == b"zz") {
                part[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
            }
            let framed = single_object_encode(RecordType::MetricSample, &part);
            let Ok(Input::Metric(m)) = decode_value(InputKind::Metric, &framed) else {
                // Never remembered by the core, so never looked up.
                unknown += 1;
                continue;
            };
            let raw = scan_metric_value(&framed)
                .expect("a sample that decodes scans")
                .series;
            for v in values {
                for ts in stamps {
                    let mut d = write_metric_datum(ts, v, name, pairs);
                    if let Some(at) = d.windows(2).position(|w| w == b"zz") {
                        d[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
                    }
                    for bytes in [
                        single_object_encode(RecordType::MetricSample, &d),
                        confluent_encode(7, &d),
                    ] {
                        let full = decode_metric_value(&bytes, &mut labels)
                            .expect("Avro")
                            .map(|m| m.value);
                        let scan = scan_metric_value(&bytes).expect("the same shape");
                        assert_eq!(scan.series, raw, "{bytes:?}");
                        assert_eq!(scan.check(&m.name), full, "{name} {pairs:?} {v} {ts}");
                        checked += 1;
                        refused += usize::from(full.is_err());
                    }
                }
            }
        }
        assert_eq!(unknown, 2, "a missing name and bad UTF-8 never decode");
        assert_eq!(checked, 5 * 6 * 4 * 2);
        assert!(refused > checked / 2, "errors of every kind are compared");
        // What a full decode refuses for its shape or framing, a scan
        // leaves to it.
        let ok = write_metric_datum("", "1", "m", &[("a", "1")]);
        let mut trailing = ok.clone();
        trailing.push(0);
        let mut cut = ok.clone();
        cut.truncate(cut.len() - 2);
        for bytes in [
            single_object_encode(RecordType::MetricSample, &trailing),
            single_object_encode(RecordType::MetricSample, &cut),
            single_object_encode(RecordType::Alert, &ok),
            br#"{"name":"m","labels":{},"value":1}"#.to_vec(),
            vec![0xc3, 0x01, 1, 2],
            Vec::new(),
        ] {
            assert_eq!(scan_metric_value(&bytes), None, "{bytes:?}");
        }
    }

    #[test]
    fn fingerprints_are_distinct() {
        let mut fps: Vec<u64> = RecordType::ALL.iter().map(|&t| fingerprint(t)).collect();
        fps.sort_unstable();
        fps.dedup();
        assert_eq!(fps.len(), RecordType::ALL.len());
    }

    #[test]
    fn legacy_action_results_still_decode() {
        // A result written with the first ActionResult schema (no
        // `previous`): its own fingerprint, a datum that ends after `at`.
        let (t, fp) = legacy_fingerprints()[0];
        assert_eq!(t, RecordType::ActionResult);
        assert_ne!(fp, fingerprint(RecordType::ActionResult));
        let old = apache_avro::types::Value::Record(vec![
            (
                "command_id".into(),
                apache_avro::types::Value::String("c1".into()),
            ),
            (
                "status".into(),
                apache_avro::types::Value::Enum(1, "failed".into()),
            ),
            (
                "detail".into(),
                apache_avro::types::Value::String("boom".into()),
            ),
            (
                "at".into(),
                apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null)),
            ),
        ]);
        let v1 = Schema::parse_str(LEGACY[0].1).unwrap();
        let datum = apache_avro::to_avro_datum(&v1, old).unwrap();
        let mut value = SINGLE_OBJECT_MARKER.to_vec();
        value.extend_from_slice(&fp.to_le_bytes());
        value.extend_from_slice(&datum);
        let Input::Result(r) = decode_value(InputKind::Result, &value).unwrap() else {
            panic!("not a result")
        };
        assert_eq!((r.command_id.as_str(), r.detail.as_str()), ("c1", "boom"));
        assert!(r.previous.is_empty());
        // The same datum under the Confluent framing (writer schema unknown).
        let Input::Result(r) =
            decode_value(InputKind::Result, &confluent_encode(7, &datum)).unwrap()
        else {
            panic!("not a result")
        };
        assert!(r.previous.is_empty());
        // New datums carry the map, and a trailing byte past it is refused.
        let mut new = r.clone();
        new.previous.insert("replicas".into(), "3".into());
        let bytes = single_object_encode(
            RecordType::ActionResult,
            &encode_input(&Input::Result(new.clone())).unwrap()[0],
        );
        assert_eq!(
            decode_value(InputKind::Result, &bytes).unwrap(),
            Input::Result(new)
        );
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(decode_value(InputKind::Result, &padded).is_err());
    }

    #[test]
    fn single_object_header() {
        let v = single_object_encode(RecordType::Alert, &[7]);
        assert_eq!(v[..2], SINGLE_OBJECT_MARKER);
        assert_eq!(v[2..10], fingerprint(RecordType::Alert).to_le_bytes());
        assert_eq!(
            detect_framing(&v).unwrap(),
            (Framing::SingleObject(RecordType::Alert), &[7u8][..])
        );
    }

    #[test]
    fn names_and_kinds_are_consistent() {
        for t in RecordType::ALL {
            assert_eq!(RecordType::from_name(t.name()), Some(t));
            // `compiled` indexes by discriminant.
            assert_eq!(RecordType::ALL[t as usize], t);
            if let Some(k) = t.input_kind() {
                assert_eq!(input_type(k), Some(t));
            }
        }
        assert_eq!(input_type(InputKind::Tick), None);
    }
}
