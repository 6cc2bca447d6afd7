//! The per-partition journal: what a core consumed, in the order and at
//! the event time it consumed it.
//!
//! A live engine runs one core per partition. Input records reach it from
//! six topics, interleaved as the broker delivers them, and its event time
//! is the Kafka timestamp clamped so it never goes backwards; clock ticks
//! advance it when no records come. That order and those times are not
//! recoverable from the input topics alone, so every batch the engine
//! commits also writes one journal record to partition `p` of the journal
//! topic: each entry is one input record as consumed (topic, offset, the
//! event time the core used, the value bytes as received), a tick, or a
//! record that went to the dead-letter topic instead. In `exactly_once`
//! mode the journal record is part of the batch's transaction.
//!
//! State is rebuilt by replaying the journal through a fresh core with
//! its outputs discarded (they were emitted when the batch committed); the
//! input positions to resume from are the journal's last offsets plus one.
//! The journal is also the exact replay input of a live run.

use std::time::Duration as StdDuration;

use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;

use crate::records::avro::decode_value;
use crate::records::{DecodeError, Input, Record};
use crate::time::Timestamp;

use super::wire::{self, INPUT_KINDS};
use super::{Health, KafkaArgs, LiveError};

const MAGIC: &[u8; 4] = b"SHJ1";
/// A journal record with no entries (written by the transaction probe).
pub const EMPTY: [u8; 4] = *MAGIC;
/// Journal records are split before they reach this size.
pub const MAX_RECORD_BYTES: usize = 512 * 1024;

const TAG_RECORD: u8 = 0x00;
const TAG_DROPPED: u8 = 0x10;
const TAG_TICK: u8 = 0x20;
const TAG_POLICY: u8 = 0x30;

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// An input record the core processed at `ts`.
    Record {
        topic: u8,
        offset: i64,
        ts: i64,
        value: Vec<u8>,
    },
    /// An input record that went to the dead-letter topic.
    Dropped { topic: u8, offset: i64 },
    /// A clock tick at `ts`.
    Tick { ts: i64 },
    /// The engine read its policy file again at event time `ts`: the core
    /// applies `text` there, or refuses it if invalid
    /// ([`crate::engine::Engine::reload_policy`]).
    Policy { ts: i64, text: String },
}

impl Entry {
    /// The record the core processed, decoded as live mode decoded it;
    /// `None` for dropped records.
    pub fn to_record(&self) -> Option<Result<Record, DecodeError>> {
        match self {
            Entry::Record {
                topic, ts, value, ..
            } => {
                let kind = *INPUT_KINDS.get(*topic as usize)?;
                Some(decode_value(kind, value).map(|input| Record {
                    ts: Timestamp(*ts),
                    input,
                }))
            }
            Entry::Tick { ts } => Some(Ok(Record {
                ts: Timestamp(*ts),
                input: Input::Tick,
            })),
            Entry::Dropped { .. } | Entry::Policy { .. } => None,
        }
    }

    /// Feeds this entry to a core as the live engine did: a record or a
    /// tick is processed, a policy is applied (or refused); dead-lettered
    /// records are skipped. `Ok(false)` for a journaled record that no
    /// longer decodes (also skipped).
    pub fn replay(
        &self,
        core: &mut crate::engine::Engine,
        out: &mut Vec<crate::records::Emitted>,
    ) -> Result<bool, ReplayError> {
        if let Entry::Policy { ts, text } = self {
            core.reload_policy(Timestamp(*ts), text, out)?;
            return Ok(true);
        }
        match self.to_record() {
            None => Ok(true),
            Some(Ok(rec)) => {
                core.process(&rec, out)?;
                Ok(true)
            }
            Some(Err(e)) => Err(ReplayError::Undecodable(e)),
        }
    }

    /// The input position this entry accounts for.
    pub fn position(&self) -> Option<(u8, i64)> {
        match self {
            Entry::Record { topic, offset, .. } | Entry::Dropped { topic, offset } => {
                Some((*topic, *offset))
            }
            Entry::Tick { .. } | Entry::Policy { .. } => None,
        }
    }
}

/// Why a journal entry could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0}")]
    Late(#[from] crate::engine::EngineError),
    #[error("a journaled record no longer decodes: {0}")]
    Undecodable(DecodeError),
}

/// Builds journal records for one partition's batch.
#[derive(Debug, Default)]
pub struct Writer {
    chunks: Vec<Vec<u8>>,
    entries: usize,
}

impl Writer {
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Journals an input record; the same as pushing an
    /// [`Entry::Record`], without building one.
    pub fn push_record(&mut self, topic: u8, offset: i64, ts: i64, value: &[u8]) {
        let buf = self.chunk_for(value.len() + 32);
        buf.push(TAG_RECORD | topic);
        put_varint(buf, offset as u64);
        put_varint(buf, zigzag(ts));
        put_varint(buf, value.len() as u64);
        buf.extend_from_slice(value);
        self.entries += 1;
    }

    /// The chunk the next entry of `need` bytes goes into.
    fn chunk_for(&mut self, need: usize) -> &mut Vec<u8> {
        let start_new = match self.chunks.last() {
            None => true,
            Some(c) => c.len() + need > MAX_RECORD_BYTES && c.len() > MAGIC.len(),
        };
        if start_new {
            let mut c = Vec::with_capacity(64 * 1024);
            c.extend_from_slice(MAGIC);
            self.chunks.push(c);
        }
        self.chunks.last_mut().expect("a chunk was just ensured")
    }

    pub fn push(&mut self, e: &Entry) {
        let need = match e {
            Entry::Record { value, .. } => value.len() + 32,
            Entry::Policy { text, .. } => text.len() + 32,
            _ => 32,
        };
        let buf = self.chunk_for(need);
        match e {
            Entry::Record {
                topic,
                offset,
                ts,
                value,
            } => {
                buf.push(TAG_RECORD | topic);
                put_varint(buf, *offset as u64);
                put_varint(buf, zigzag(*ts));
                put_varint(buf, value.len() as u64);
                buf.extend_from_slice(value);
            }
            Entry::Dropped { topic, offset } => {
                buf.push(TAG_DROPPED | topic);
                put_varint(buf, *offset as u64);
            }
            Entry::Tick { ts } => {
                buf.push(TAG_TICK);
                put_varint(buf, zigzag(*ts));
            }
            Entry::Policy { ts, text } => {
                buf.push(TAG_POLICY);
                put_varint(buf, zigzag(*ts));
                put_varint(buf, text.len() as u64);
                buf.extend_from_slice(text.as_bytes());
            }
        }
        self.entries += 1;
    }

    /// The journal record values, each under [`MAX_RECORD_BYTES`] unless a
    /// single input value is larger.
    pub fn take(&mut self) -> Vec<Vec<u8>> {
        self.entries = 0;
        std::mem::take(&mut self.chunks)
    }
}

/// Decodes one journal record value.
pub fn decode(value: &[u8]) -> Result<Vec<Entry>, String> {
    let mut r = value
        .strip_prefix(MAGIC.as_slice())
        .ok_or("not a journal record (bad magic)")?;
    let mut out = Vec::new();
    while let Some((&tag, rest)) = r.split_first() {
        r = rest;
        let topic = tag & 0x0f;
        match tag & 0xf0 {
            TAG_RECORD => {
                let offset = get_varint(&mut r)? as i64;
                let ts = unzigzag(get_varint(&mut r)?);
                let len = get_varint(&mut r)? as usize;
                if len > r.len() {
                    return Err("truncated record value".into());
                }
                let (v, rest) = r.split_at(len);
                r = rest;
                out.push(Entry::Record {
                    topic,
                    offset,
                    ts,
                    value: v.to_vec(),
                });
            }
            TAG_DROPPED => {
                let offset = get_varint(&mut r)? as i64;
                out.push(Entry::Dropped { topic, offset });
            }
            TAG_TICK => {
                let ts = unzigzag(get_varint(&mut r)?);
                out.push(Entry::Tick { ts });
            }
            TAG_POLICY => {
                let ts = unzigzag(get_varint(&mut r)?);
                let len = get_varint(&mut r)? as usize;
                if len > r.len() {
                    return Err("truncated policy text".into());
                }
                let (v, rest) = r.split_at(len);
                r = rest;
                let text = String::from_utf8(v.to_vec())
                    .map_err(|_| "policy text is not UTF-8".to_string())?;
                out.push(Entry::Policy { ts, text });
            }
            _ => return Err(format!("unknown entry tag {tag:#04x}")),
        }
    }
    Ok(out)
}

/// Reads partition `p` of the journal topic from its start to its current
/// end, calling `f` with every entry in order; returns the offsets read.
/// `committed` reads only committed transactions (what an `exactly_once`
/// engine wrote); otherwise everything.
///
/// The end is as [`super::read_to_end`] finds it, not the high watermark
/// listed first: a journal read short of its end would leave the
/// partition's state without the last batch the previous owner committed.
pub fn read(
    args: &KafkaArgs,
    group: &str,
    p: i32,
    committed: bool,
    mut f: impl FnMut(Entry),
) -> Result<super::Span, LiveError> {
    let topic = args.topics().journal;
    let mut cc = args.consumer_config()?;
    // Under at_least_once nothing is written in transactions, and a
    // transaction left open on a broker that cannot end it (the start
    // probe, or an earlier exactly_once run) must not hide the journal.
    cc.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set(
            "isolation.level",
            if committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .set("auto.offset.reset", "earliest");
    let reader: BaseConsumer<Health> = cc
        .create_with_context(Health::default())
        .map_err(LiveError::kafka("creating the journal reader"))?;
    let late = |next, high| LiveError::Journal {
        partition: p,
        message: format!("not read to its end within 300s (at offset {next}, listed end {high})"),
    };
    super::read_to_end(&reader, &topic, p, StdDuration::from_secs(300), late, |m| {
        let batch = decode(m.payload().unwrap_or(&[])).map_err(|message| LiveError::Journal {
            partition: p,
            message: format!("offset {}: {message}", m.offset()),
        })?;
        batch.into_iter().for_each(&mut f);
        Ok(())
    })
}

/// One entry as a replay line (`{"ts","kind","data"}`), exactly as the
/// core saw it: JSON values verbatim, Avro values in their JSON form.
/// `None` for dead-lettered records.
pub fn replay_line(e: &Entry) -> Option<String> {
    match e {
        Entry::Dropped { .. } | Entry::Policy { .. } => None,
        Entry::Tick { ts } => Some(format!(
            r#"{{"ts":"{}","kind":"tick","data":{{}}}}"#,
            Timestamp(*ts)
        )),
        Entry::Record {
            topic, ts, value, ..
        } => wire::replay_line(Timestamp(*ts), *INPUT_KINDS.get(*topic as usize)?, value),
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn get_varint(r: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = r.split_first().ok_or("truncated varint")?;
        *r = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_large_batches_split() {
        let mut w = Writer::default();
        let mut want = Vec::new();
        for i in 0..3000i64 {
            let e = match i % 3 {
                0 => Entry::Record {
                    topic: (i % 6) as u8,
                    offset: i * 1000,
                    ts: 1_772_359_200_000 + i,
                    value: vec![b'x'; 1000],
                },
                1 => Entry::Dropped {
                    topic: 5,
                    offset: i,
                },
                2 if i % 300 == 2 => Entry::Policy {
                    ts: 1_772_359_200_000 + i,
                    text: format!("slos: []\n# rev {i} é\n"),
                },
                _ => Entry::Tick { ts: -i },
            };
            w.push(&e);
            want.push(e);
        }
        let chunks = w.take();
        assert!(chunks.len() > 1, "a 1 MB batch is split");
        assert!(chunks.iter().all(|c| c.len() <= MAX_RECORD_BYTES));
        let got: Vec<Entry> = chunks.iter().flat_map(|c| decode(c).unwrap()).collect();
        assert_eq!(got, want);
        assert!(w.is_empty());
    }

    #[test]
    fn corrupt_journal_records_are_refused() {
        assert!(decode(b"nope").is_err());
        assert!(decode(b"SHJ1\x00\xff").is_err());
        assert!(decode(b"SHJ1\x00\x01\x02\x09ab").is_err());
        assert!(decode(b"SHJ1\x7f").is_err());
    }
}
