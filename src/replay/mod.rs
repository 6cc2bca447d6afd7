//! Replay: drive the core from a stream of input records.
//!
//! A [`Source`] yields records in event-time order. An item that does not
//! decode, or that is earlier than the event time already reached by more
//! than the allowed lateness, is a bad line: it is reported with its
//! position and skipped, and the rest of the stream is processed as if it
//! were absent. A record that is late by no more than the allowed lateness
//! is handled as the live engine handles it: at the event time already
//! reached. Outputs are written as JSON Lines in the same envelope, in
//! decision order.

pub mod avro;
pub mod source;

use std::io::{self, Write};
use std::sync::Arc;

use crate::engine::Engine;
use crate::policy::Policy;
use crate::records::{Emitted, MetricRef, Record};
use crate::time::Timestamp;

pub use avro::{AvroFile, AvroFileError, AvroWriter};
pub use source::{BadLine, Item, ItemRef, JsonLines, Position, Records, Source};

/// Totals of one replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Items read: records and bad items.
    pub lines: usize,
    pub records: usize,
    pub bad: usize,
    /// Records handled at a later event time than their own (late within
    /// the allowed lateness).
    pub late: usize,
    pub outputs: usize,
}

/// Progress callbacks come every this many items.
pub const PROGRESS_EVERY: usize = 1 << 16;

/// The core with replay's handling of event time: records late by no more
/// than `max_lateness` (milliseconds) are processed at the event time
/// already reached, as the live engine does; later ones are refused.
pub struct Driver {
    pub engine: Engine,
    max_lateness: i64,
}

impl Driver {
    pub fn new(engine: Engine, max_lateness_ms: i64) -> Driver {
        Driver {
            engine,
            max_lateness: max_lateness_ms.max(0),
        }
    }

    /// The event time a record stamped `ts` is handled at, and whether it
    /// is late within the allowed lateness.
    fn effective(&self, ts: Timestamp) -> (Timestamp, bool) {
        match self.engine.now() {
            Some(now) if ts < now && now.0 - ts.0 <= self.max_lateness => (now, true),
            _ => (ts, false),
        }
    }

    /// Processes one record. `Ok(true)` when it was late and handled at the
    /// event time already reached.
    pub fn feed(&mut self, mut rec: Record, out: &mut Vec<Emitted>) -> Result<bool, String> {
        let (ts, late) = self.effective(rec.ts);
        rec.ts = ts;
        self.engine
            .process(&rec, &mut *out)
            .map_err(|e| e.to_string())?;
        Ok(late)
    }

    /// [`Driver::feed`] for a metric sample stamped `ts`, which may borrow
    /// a source's buffers.
    pub fn feed_metric(
        &mut self,
        ts: Timestamp,
        m: MetricRef<'_>,
        out: &mut Vec<Emitted>,
    ) -> Result<bool, String> {
        let (ts, late) = self.effective(ts);
        self.engine
            .process_metric(ts, m, None, &mut *out)
            .map_err(|e| e.to_string())?;
        Ok(late)
    }

    /// Moves event time on to `ts` (a clock tick).
    pub fn advance(&mut self, ts: Timestamp, out: &mut Vec<Emitted>) -> Result<(), String> {
        self.engine.advance(ts, out).map_err(|e| e.to_string())
    }
}

/// Replays `source` through a fresh engine for `policy`, writing outputs to
/// `out` as JSON Lines. `on_bad` hears every skipped item; `progress` hears
/// the running totals every [`PROGRESS_EVERY`] items.
pub fn replay<S: Source, W: Write>(
    policy: Arc<Policy>,
    source: &mut S,
    max_lateness_ms: i64,
    out: W,
    mut on_bad: impl FnMut(BadLine),
    mut progress: impl FnMut(&ReplayStats, Position),
) -> io::Result<ReplayStats> {
    let mut driver = Driver::new(Engine::new(policy), max_lateness_ms);
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    let mut stats = ReplayStats::default();
    let mut emitted: Vec<Emitted> = Vec::new();
    while let Some(item) = source.next_ref()? {
        stats.lines += 1;
        let fed = match item {
            ItemRef::Metric(ts, m) => Ok(driver.feed_metric(ts, m, &mut emitted)),
            ItemRef::Item(Item::Record(rec)) => Ok(driver.feed(rec, &mut emitted)),
            ItemRef::Item(Item::Bad(b)) => Err(b),
        };
        let bad = match fed {
            Ok(Ok(late)) => {
                stats.records += 1;
                stats.late += usize::from(late);
                None
            }
            Ok(Err(reason)) => Some(BadLine {
                line: source.position().last,
                reason,
            }),
            Err(b) => Some(b),
        };
        if let Some(b) = bad {
            stats.bad += 1;
            on_bad(b);
        }
        for e in emitted.drain(..) {
            out.write_all(e.to_json_line().as_bytes())?;
            out.write_all(b"\n")?;
            stats.outputs += 1;
        }
        if stats.lines % PROGRESS_EVERY == 0 {
            progress(&stats, source.position());
        }
    }
    out.flush()?;
    Ok(stats)
}

/// Replays an in-memory JSON Lines stream and returns its output lines,
/// for tests.
pub fn replay_to_lines(policy: Arc<Policy>, input: &str) -> (Vec<String>, Vec<BadLine>) {
    let mut bad = Vec::new();
    let mut buf = Vec::new();
    let mut src = JsonLines::new(input.as_bytes(), None);
    // Writing to a Vec cannot fail.
    let _ = replay(policy, &mut src, 0, &mut buf, |b| bad.push(b), |_, _| {});
    let text = String::from_utf8_lossy(&buf);
    (text.lines().map(str::to_string).collect(), bad)
}
