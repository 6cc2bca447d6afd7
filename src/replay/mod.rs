//! Replay: drive the core from a JSON Lines stream of input records.
//!
//! Each line is `{"ts":…,"kind":…,"data":{…}}` in event-time order. A line
//! that does not decode, or is earlier than the event time already
//! reached, is a bad line: it is reported with its number and skipped, and
//! the rest of the stream is processed as if it were absent. Outputs are
//! written as JSON Lines in the same envelope, in decision order.

use std::io::{self, BufRead, Write};
use std::sync::Arc;

use crate::engine::Engine;
use crate::policy::Policy;
use crate::records::{Emitted, Record};

/// A line that was skipped, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Totals of one replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    pub lines: usize,
    pub records: usize,
    pub bad: usize,
    pub outputs: usize,
    pub bytes: u64,
}

/// Progress callbacks come every this many lines.
pub const PROGRESS_EVERY: usize = 1 << 16;

/// Replays `input` through a fresh engine for `policy`, writing outputs to
/// `out`. `on_bad` hears every skipped line; `progress` hears the running
/// totals every [`PROGRESS_EVERY`] lines.
pub fn replay<R: BufRead, W: Write>(
    policy: Arc<Policy>,
    mut input: R,
    out: W,
    mut on_bad: impl FnMut(BadLine),
    mut progress: impl FnMut(&ReplayStats),
) -> io::Result<ReplayStats> {
    let mut engine = Engine::new(policy);
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    let mut stats = ReplayStats::default();
    let mut line = String::new();
    let mut emitted: Vec<Emitted> = Vec::new();
    loop {
        line.clear();
        let n = input.read_line(&mut line)?;
        if n == 0 {
            break;
        }
        stats.lines += 1;
        stats.bytes += n as u64;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let result = Record::from_json_line(text)
            .map_err(|e| e.to_string())
            .and_then(|rec| {
                engine
                    .process(&rec, &mut emitted)
                    .map_err(|e| e.to_string())
            });
        match result {
            Ok(()) => stats.records += 1,
            Err(reason) => {
                stats.bad += 1;
                on_bad(BadLine {
                    line: stats.lines,
                    reason,
                });
            }
        }
        for e in emitted.drain(..) {
            out.write_all(e.to_json_line().as_bytes())?;
            out.write_all(b"\n")?;
            stats.outputs += 1;
        }
        if stats.lines % PROGRESS_EVERY == 0 {
            progress(&stats);
        }
    }
    out.flush()?;
    Ok(stats)
}

/// Replays an in-memory stream and returns its output lines, for tests.
pub fn replay_to_lines(policy: Arc<Policy>, input: &str) -> (Vec<String>, Vec<BadLine>) {
    let mut bad = Vec::new();
    let mut buf = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = replay(policy, input.as_bytes(), &mut buf, |b| bad.push(b), |_| {});
    let text = String::from_utf8_lossy(&buf);
    (text.lines().map(str::to_string).collect(), bad)
}
