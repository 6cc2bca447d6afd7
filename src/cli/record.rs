//! `selfheal record`: a time range of the input topics as a replay file;
//! and the range flags shared with `selfheal replay --brokers`.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use selfheal::live::range::{KafkaRange, RangeRecord, RangeSpec};
use selfheal::live::KafkaArgs;
use selfheal::replay::{AvroWriter, ReplayStats, Source};
use selfheal::time::Timestamp;

use super::replay::{create_output, Progress};

/// Which records of the topics to read.
#[derive(Debug, Clone, clap::Args)]
pub struct RangeArgs {
    /// Topics to read, comma separated: `metrics`, `alerts`, `changes`,
    /// `results`, `approvals`, `control` (under the topic prefix) or full
    /// topic names, whose records need a `selfheal-kind` header. Default:
    /// the six input topics. Equal timestamps go to the topic listed first.
    #[arg(long, value_delimiter = ',', value_name = "TOPICS")]
    pub from_topics: Vec<String>,
    /// First record time included (RFC 3339); default the topics' start.
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    pub since: Option<Timestamp>,
    /// Last record time included (RFC 3339); default the topics' end when
    /// the command starts.
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    pub until: Option<Timestamp>,
}

pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    Timestamp::parse(s).map_err(|e| e.to_string())
}

impl RangeArgs {
    pub fn spec(&self, kafka: &KafkaArgs) -> RangeSpec {
        let mut s = if self.from_topics.is_empty() {
            RangeSpec::inputs(kafka)
        } else {
            RangeSpec::named(kafka, &self.from_topics)
        };
        s.since = self.since;
        s.until = self.until;
        s
    }

    /// Opens the range on the broker.
    pub fn open(&self, kafka: &KafkaArgs) -> anyhow::Result<KafkaRange> {
        if let (Some(s), Some(u)) = (self.since, self.until) {
            anyhow::ensure!(s <= u, "--since {s} is after --until {u}");
        }
        let spec = self.spec(kafka);
        KafkaRange::open(kafka, &spec)
            .with_context(|| format!("cannot read {} on {}", spec.topics.join(","), kafka.brokers))
    }

    /// The range in words, for messages.
    pub fn describe(&self, kafka: &KafkaArgs) -> String {
        let spec = self.spec(kafka);
        let t = |t: Option<Timestamp>, none: &str| t.map_or(none.to_string(), |t| t.to_string());
        format!(
            "{} [{} .. {}]",
            spec.topics.join(","),
            t(spec.since, "start"),
            t(spec.until, "end")
        )
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub range: RangeArgs,
    /// The replay file to write (`-` for standard output).
    #[arg(long)]
    pub out: PathBuf,
    /// Format of the replay file (default: `avro` when the file name ends
    /// in `.avro`, else `json-lines`).
    #[arg(long, value_enum)]
    pub format: Option<FileFormat>,
    /// No progress line or summary on stderr (bad records are still
    /// reported).
    #[arg(long)]
    pub quiet: bool,
}

/// Formats `record` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    /// `{"ts","kind","data"}` per line, as DESIGN.md describes.
    JsonLines,
    /// An Avro object container file of `schemas/replay_record.avsc`.
    Avro,
}

/// Why a record was not written.
pub enum WriteError {
    /// The record cannot be used; it is skipped with this reason.
    Bad(String),
    Io(io::Error),
}

/// Where recorded records go.
pub trait RecordSink {
    fn write(&mut self, r: &RangeRecord) -> Result<(), WriteError>;
    fn finish(&mut self) -> io::Result<()>;
}

/// JSON Lines: JSON values verbatim, Avro values in their JSON form.
pub struct JsonLinesSink<W: Write>(io::BufWriter<W>);

impl<W: Write> JsonLinesSink<W> {
    pub fn new(w: W) -> Self {
        JsonLinesSink(io::BufWriter::with_capacity(1 << 16, w))
    }
}

impl<W: Write> RecordSink for JsonLinesSink<W> {
    fn write(&mut self, r: &RangeRecord) -> Result<(), WriteError> {
        let line = r.replay_line().map_err(WriteError::Bad)?;
        self.0
            .write_all(line.as_bytes())
            .and_then(|()| self.0.write_all(b"\n"))
            .map_err(WriteError::Io)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// An Avro object container file: each value decoded, then written in
/// the replay schema.
pub struct AvroSink<W: Write>(Option<AvroWriter<io::BufWriter<W>>>);

impl<W: Write> RecordSink for AvroSink<W> {
    fn write(&mut self, r: &RangeRecord) -> Result<(), WriteError> {
        let rec = r.decode().map_err(WriteError::Bad)?;
        match &mut self.0 {
            Some(w) => w
                .write(&rec)
                .map_err(|e| WriteError::Io(io::Error::other(e.to_string()))),
            None => Err(WriteError::Io(io::Error::other("file already finished"))),
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        match self.0.take() {
            Some(w) => w
                .finish()
                .map_err(|e| io::Error::other(e.to_string()))
                .and_then(|mut out| out.flush()),
            None => Ok(()),
        }
    }
}

pub fn sink(format: FileFormat, out: Box<dyn Write>) -> anyhow::Result<Box<dyn RecordSink>> {
    Ok(match format {
        FileFormat::JsonLines => Box::new(JsonLinesSink::new(out)),
        FileFormat::Avro => {
            let w = AvroWriter::new(io::BufWriter::with_capacity(1 << 16, out))
                .map_err(|e| anyhow::anyhow!("cannot start the Avro file: {e}"))?;
            Box::new(AvroSink(Some(w)))
        }
    })
}

/// Exit code 0 when every record was written, 1 when some were skipped.
pub fn run(a: Args) -> anyhow::Result<i32> {
    let started = Instant::now();
    let mut range = a.range.open(&a.kafka)?;
    let format = a
        .format
        .unwrap_or(if a.out.extension().is_some_and(|e| e == "avro") {
            FileFormat::Avro
        } else {
            FileFormat::JsonLines
        });
    let mut sink = sink(format, create_output(&a.out)?)?;
    let mut meter = Progress::new(a.quiet);
    let mut stats = ReplayStats::default();
    while let Some(r) = range
        .next_record()
        .with_context(|| format!("reading {}", a.range.describe(&a.kafka)))?
    {
        stats.lines += 1;
        match sink.write(&r) {
            Ok(()) => stats.records += 1,
            Err(WriteError::Bad(reason)) => {
                stats.bad += 1;
                meter.clear();
                eprintln!("record {}: skipped: {reason}", stats.lines);
            }
            Err(WriteError::Io(e)) => {
                return Err(e).with_context(|| format!("writing {}", a.out.display()))
            }
        }
        if stats.lines % 4096 == 0 {
            meter.show(&stats, range.position(), started);
        }
    }
    sink.finish()
        .with_context(|| format!("writing {}", a.out.display()))?;
    meter.finish();
    if !a.quiet {
        eprintln!(
            "recorded {} records ({} bad, skipped) from {} partitions of {} into {} in {:.2}s",
            stats.records,
            stats.bad,
            range.partitions(),
            a.range.describe(&a.kafka),
            a.out.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(if stats.bad > 0 { 1 } else { 0 })
}
