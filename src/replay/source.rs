//! Where replayed records come from.
//!
//! A [`Source`] yields input records in event-time order, or bad items
//! (with their position and why) that the replay reports and skips. Files
//! (JSON Lines, Avro object container files) and Kafka topic ranges are
//! sources; the replay loop does not care which.

use std::io::{self, BufRead};

use crate::records::line::{Decoded, LineDecoder};
use crate::records::{Input, MetricRef, Record};
use crate::time::Timestamp;

/// One item of a source: a record, or a bad item to report and skip.
#[derive(Debug)]
pub enum Item {
    Record(Record),
    Bad(BadLine),
}

/// An item that may borrow the source's buffers: file sources hand out
/// metric samples this way, without allocating.
#[derive(Debug)]
pub enum ItemRef<'a> {
    Item(Item),
    /// A metric sample at its event time.
    Metric(Timestamp, MetricRef<'a>),
}

impl ItemRef<'_> {
    /// The owned item.
    pub fn into_item(self) -> Item {
        match self {
            ItemRef::Item(i) => i,
            ItemRef::Metric(ts, m) => Item::Record(Record {
                ts,
                input: Input::Metric(m.to_sample()),
            }),
        }
    }
}

/// An item that was skipped, with where it was and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based position in the source: the line of a JSON Lines file, the
    /// record number of an Avro file or of a Kafka range.
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// How far a source has got, for progress reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// Items read (records and bad items, not blank lines).
    pub items: usize,
    /// Where the last item was, as [`BadLine::line`] counts.
    pub last: usize,
    /// Bytes (or, for Kafka, records) read so far.
    pub done: u64,
    /// Bytes (or records) in all, when known.
    pub total: Option<u64>,
}

/// A stream of input records in event-time order.
pub trait Source {
    /// The next item, `None` at the end.
    fn next_item(&mut self) -> io::Result<Option<Item>>;
    /// How far the source has got.
    fn position(&self) -> Position;
    /// The next item, possibly borrowed from the source's buffers; the
    /// same items as [`Source::next_item`], which is what it defaults to.
    fn next_ref(&mut self) -> io::Result<Option<ItemRef<'_>>> {
        Ok(self.next_item()?.map(ItemRef::Item))
    }
}

impl<S: Source + ?Sized> Source for Box<S> {
    fn next_item(&mut self) -> io::Result<Option<Item>> {
        (**self).next_item()
    }
    fn position(&self) -> Position {
        (**self).position()
    }
    fn next_ref(&mut self) -> io::Result<Option<ItemRef<'_>>> {
        (**self).next_ref()
    }
}

/// A JSON Lines replay file: one `{"ts","kind","data"}` record per line.
pub struct JsonLines<R> {
    input: R,
    line: String,
    decoder: LineDecoder,
    lineno: usize,
    pos: Position,
}

impl<R: BufRead> JsonLines<R> {
    /// `total` is the input's size in bytes when known (for progress).
    pub fn new(input: R, total: Option<u64>) -> JsonLines<R> {
        JsonLines {
            input,
            line: String::new(),
            decoder: LineDecoder::new(),
            lineno: 0,
            pos: Position {
                total,
                ..Position::default()
            },
        }
    }

    /// Reads up to the next non-blank line into `self.line`; its trimmed
    /// range, or `None` at the end.
    fn read(&mut self) -> io::Result<Option<(usize, usize)>> {
        loop {
            self.line.clear();
            let n = self.input.read_line(&mut self.line)?;
            if n == 0 {
                return Ok(None);
            }
            self.lineno += 1;
            self.pos.done += n as u64;
            let text = self.line.trim_start();
            let start = self.line.len() - text.len();
            let end = start + text.trim_end().len();
            if start == end {
                continue;
            }
            self.pos.items += 1;
            self.pos.last = self.lineno;
            return Ok(Some((start, end)));
        }
    }
}

impl<R: BufRead> Source for JsonLines<R> {
    fn next_item(&mut self) -> io::Result<Option<Item>> {
        Ok(self.next_ref()?.map(ItemRef::into_item))
    }

    fn next_ref(&mut self) -> io::Result<Option<ItemRef<'_>>> {
        let Some((start, end)) = self.read()? else {
            return Ok(None);
        };
        let lineno = self.lineno;
        Ok(Some(match self.decoder.decode(&self.line[start..end]) {
            Decoded::Metric(ts, m) => ItemRef::Metric(ts, m),
            Decoded::Record(Ok(r)) => ItemRef::Item(Item::Record(r)),
            Decoded::Record(Err(e)) => ItemRef::Item(Item::Bad(BadLine {
                line: lineno,
                reason: e.to_string(),
            })),
        }))
    }

    fn position(&self) -> Position {
        self.pos
    }
}

/// Records already in memory, in order (tests, generated streams).
pub struct Records<I> {
    iter: I,
    pos: Position,
}

impl<I: Iterator<Item = Record>> Records<I> {
    pub fn new(iter: I) -> Records<I> {
        Records {
            iter,
            pos: Position::default(),
        }
    }
}

impl<I: Iterator<Item = Record>> Source for Records<I> {
    fn next_item(&mut self) -> io::Result<Option<Item>> {
        Ok(self.iter.next().map(|r| {
            self.pos.items += 1;
            self.pos.last = self.pos.items;
            self.pos.done += 1;
            Item::Record(r)
        }))
    }

    fn position(&self) -> Position {
        self.pos
    }
}
