//! The replay envelope as an Avro record (`schemas/replay_record.avsc`):
//! `ts` as timestamp-millis, `kind` as an enum, `data` as a union of the
//! input record schemas. Records are read back to back from a container
//! file block and written into one.

use std::sync::OnceLock;

use apache_avro::Schema;

use super::codec;
use super::wire::{At, Reader, Result, Writer};
use crate::records::input::{DecodeError, Input, InputKind, MetricRef, Record};
use crate::records::labels::LabelBuf;
use crate::records::value::Fixed;
use crate::time::Timestamp;

/// The text of `schemas/replay_record.avsc`.
pub const SCHEMA_TEXT: &str = include_str!("../../../schemas/replay_record.avsc");

/// The parsed replay record schema.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    // The schema is part of the build, not outside input; a broken one is
    // a bug the tests catch.
    SCHEMA.get_or_init(|| {
        Schema::parse_str(SCHEMA_TEXT)
            .unwrap_or_else(|e| panic!("schemas/replay_record.avsc does not parse: {e}"))
    })
}

/// `kind` symbols in schema order.
const KINDS: [InputKind; 7] = [
    InputKind::Metric,
    InputKind::Alert,
    InputKind::Change,
    InputKind::Result,
    InputKind::Approval,
    InputKind::Control,
    InputKind::Tick,
];

/// Branches of the `data` union, in schema order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Branch {
    Null,
    Metric,
    Alert,
    Alerts,
    Change,
    Result,
    Approval,
    Control,
}

const BRANCHES: [Branch; 8] = [
    Branch::Null,
    Branch::Metric,
    Branch::Alert,
    Branch::Alerts,
    Branch::Change,
    Branch::Result,
    Branch::Approval,
    Branch::Control,
];

impl Branch {
    fn name(self) -> &'static str {
        match self {
            Branch::Null => "null",
            Branch::Metric => "MetricSample",
            Branch::Alert => "Alert",
            Branch::Alerts => "array of Alert",
            Branch::Change => "Change",
            Branch::Result => "ActionResult",
            Branch::Approval => "Approval",
            Branch::Control => "Control",
        }
    }

    fn of_kind(self) -> Option<InputKind> {
        Some(match self {
            Branch::Null => InputKind::Tick,
            Branch::Metric => InputKind::Metric,
            Branch::Alert | Branch::Alerts => InputKind::Alert,
            Branch::Change => InputKind::Change,
            Branch::Result => InputKind::Result,
            Branch::Approval => InputKind::Approval,
            Branch::Control => InputKind::Control,
        })
    }
}

/// One replay record read from a block, its strings borrowed from it.
#[derive(Debug)]
pub enum Envelope<'a> {
    /// A metric sample: its event time, name, value and timestamp text;
    /// the labels are in the [`LabelBuf`] given to the reader.
    Metric {
        ts: Timestamp,
        name: &'a str,
        value: Fixed,
        timestamp: &'a str,
    },
    /// Any other record.
    Record(Record),
}

/// Reads replay records written back to back.
pub struct EnvelopeReader<'a> {
    r: Reader<'a>,
}

impl<'a> EnvelopeReader<'a> {
    pub fn new(block: &'a [u8]) -> EnvelopeReader<'a> {
        EnvelopeReader {
            r: Reader::new(block),
        }
    }

    /// Whether every byte has been read.
    pub fn at_end(&self) -> bool {
        self.r.at_end()
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.r.position()
    }

    /// The next record: `Err` when the bytes do not fit the schema (the
    /// rest of the block cannot be found then), `Ok(Err)` when the record
    /// is whole but refused (its data does not match its kind, or its
    /// content is invalid as the JSON decoder would find it).
    pub fn next(
        &mut self,
        labels: &mut LabelBuf,
    ) -> Result<std::result::Result<Envelope<'a>, DecodeError>> {
        let r = &mut self.r;
        let ts = r.long().at("ts")?;
        let kind = KINDS[r.symbol(KINDS.len()).at("kind")?];
        let branch = BRANCHES[r.symbol(BRANCHES.len()).at("data")?];
        let data: std::result::Result<Option<Input>, DecodeError> = match branch {
            Branch::Null => Ok(None),
            Branch::Metric => {
                let parts = codec::metric_ref_at(r, labels)?;
                if kind == InputKind::Metric {
                    return Ok(metric(ts, parts));
                }
                Ok(None)
            }
            Branch::Alert => codec::alert_at(r)?.map(|a| Some(Input::Alerts(vec![a]))),
            Branch::Alerts => {
                let alerts = r.array(codec::alert_at)?;
                if alerts.is_empty() {
                    Err(DecodeError::Invalid {
                        field: "alerts",
                        reason: "webhook payload has no alerts".into(),
                    })
                } else {
                    alerts
                        .into_iter()
                        .collect::<std::result::Result<Vec<_>, _>>()
                        .map(|a| Some(Input::Alerts(a)))
                }
            }
            Branch::Change => codec::change_at(r)?.map(|c| Some(Input::Change(c))),
            Branch::Result => {
                codec::result_at(r, codec::Previous::Always)?.map(|x| Some(Input::Result(x)))
            }
            Branch::Approval => codec::approval_at(r)?.map(|x| Some(Input::Approval(x))),
            Branch::Control => codec::control_at(r)?.map(|x| Some(Input::Control(x))),
        };
        Ok(envelope(ts, kind, branch, data))
    }
}

fn ts_of(ms: i64) -> std::result::Result<Timestamp, DecodeError> {
    Timestamp::from_millis(ms).map_err(|e| DecodeError::Invalid {
        field: "ts",
        reason: e.to_string(),
    })
}

fn metric<'a>(
    ts: i64,
    parts: std::result::Result<(&'a str, Fixed, &'a str), DecodeError>,
) -> std::result::Result<Envelope<'a>, DecodeError> {
    let ts = ts_of(ts)?;
    let (name, value, timestamp) = parts?;
    Ok(Envelope::Metric {
        ts,
        name,
        value,
        timestamp,
    })
}

/// A record of any kind but a metric's, once its data has been read.
fn envelope(
    ts: i64,
    kind: InputKind,
    branch: Branch,
    data: std::result::Result<Option<Input>, DecodeError>,
) -> std::result::Result<Envelope<'static>, DecodeError> {
    let ts = ts_of(ts)?;
    if kind == InputKind::Tick {
        // As in JSON Lines, a tick's data is read and ignored.
        return Ok(Envelope::Record(Record {
            ts,
            input: Input::Tick,
        }));
    }
    if branch.of_kind() != Some(kind) {
        return Err(if branch == Branch::Null {
            DecodeError::Missing("data")
        } else {
            DecodeError::Invalid {
                field: "data",
                reason: format!(
                    "a {} record where a {} record belongs",
                    branch.name(),
                    kind.as_str()
                ),
            }
        });
    }
    match data? {
        Some(input) => Ok(Envelope::Record(Record { ts, input })),
        None => Err(DecodeError::Missing("data")),
    }
}

/// Appends replay records to a block.
#[derive(Default)]
pub struct EnvelopeWriter {
    w: Writer,
}

impl EnvelopeWriter {
    pub fn new() -> EnvelopeWriter {
        EnvelopeWriter::default()
    }

    /// The block written so far.
    pub fn bytes(&self) -> &[u8] {
        self.w.bytes()
    }

    /// Starts a new block, keeping the storage.
    pub fn clear(&mut self) {
        self.w.clear();
    }

    fn head(&mut self, ts: Timestamp, kind: InputKind, branch: Branch) {
        self.w.long(ts.0);
        self.w
            .symbol(KINDS.iter().position(|k| *k == kind).unwrap_or(0));
        self.w
            .symbol(BRANCHES.iter().position(|b| *b == branch).unwrap_or(0));
    }

    /// Appends a metric sample stamped `ts`.
    pub fn metric(&mut self, ts: Timestamp, m: MetricRef<'_>) {
        self.head(ts, InputKind::Metric, Branch::Metric);
        codec::metric_to(&mut self.w, m);
    }

    /// Appends a record. An Alertmanager payload with several alerts is
    /// written as an array of alerts.
    pub fn record(&mut self, rec: &Record) {
        match &rec.input {
            Input::Metric(m) => self.metric(rec.ts, m.as_ref()),
            Input::Alerts(a) if a.len() == 1 => {
                self.head(rec.ts, InputKind::Alert, Branch::Alert);
                codec::alert_to(&mut self.w, &a[0]);
            }
            Input::Alerts(a) => {
                self.head(rec.ts, InputKind::Alert, Branch::Alerts);
                self.w.array(a, codec::alert_to);
            }
            Input::Change(c) => {
                self.head(rec.ts, InputKind::Change, Branch::Change);
                codec::change_to(&mut self.w, c);
            }
            Input::Result(x) => {
                self.head(rec.ts, InputKind::Result, Branch::Result);
                codec::result_to(&mut self.w, x);
            }
            Input::Approval(x) => {
                self.head(rec.ts, InputKind::Approval, Branch::Approval);
                codec::approval_to(&mut self.w, x);
            }
            Input::Control(x) => {
                self.head(rec.ts, InputKind::Control, Branch::Control);
                codec::control_to(&mut self.w, x);
            }
            Input::Tick => self.head(rec.ts, InputKind::Tick, Branch::Null),
        }
    }
}
