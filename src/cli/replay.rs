//! `selfheal replay --policy P --input FILE --out FILE`.

use std::fs::File;
use std::io::{self, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use selfheal::replay::{self, AvroFile, JsonLines, Position, ReplayStats, Source};
use selfheal::{policy, time::Duration};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Policy file (YAML).
    #[arg(long, env = "SELFHEAL_POLICY")]
    pub policy: PathBuf,
    #[command(flatten)]
    pub input: InputArgs,
    /// Where to write the output records, JSON Lines (`-` for standard output).
    #[arg(long, default_value = "-")]
    pub out: PathBuf,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// Where a replay reads its records.
#[derive(Debug, Clone, clap::Args)]
pub struct InputArgs {
    /// Input stream: JSON Lines (`-` for standard input), or an Avro
    /// object container file of replay records when the name ends in `.avro`.
    #[arg(long)]
    pub input: PathBuf,
    /// A record at most this much earlier than the event time already
    /// reached is handled at that time, as the live engine does; an
    /// earlier one is a bad line. `0s` refuses every out-of-order record.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub max_lateness: Duration,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    Duration::parse(s).map_err(|e| e.to_string())
}

/// Opens the input named by `a` as a source of records.
pub fn open_source(a: &InputArgs) -> anyhow::Result<Box<dyn Source>> {
    if a.input.as_os_str() == "-" {
        return Ok(Box::new(JsonLines::new(io::stdin().lock(), None)));
    }
    let f =
        File::open(&a.input).with_context(|| format!("cannot open input {}", a.input.display()))?;
    let len = f.metadata().ok().map(|m| m.len());
    if a.input.extension().is_some_and(|e| e == "avro") {
        let src = AvroFile::new(f, len)
            .with_context(|| format!("cannot read Avro input {}", a.input.display()))?;
        return Ok(Box::new(src));
    }
    Ok(Box::new(JsonLines::new(
        BufReader::with_capacity(1 << 17, f),
        len,
    )))
}

/// Creates the output file, `-` for standard output.
pub fn create_output(path: &Path) -> anyhow::Result<Box<dyn Write>> {
    Ok(if path.as_os_str() == "-" {
        Box::new(io::stdout().lock())
    } else {
        Box::new(
            File::create(path)
                .with_context(|| format!("cannot create output {}", path.display()))?,
        )
    })
}

/// Exit code 0 when every line was good, 1 when some were skipped.
pub fn run(a: Args) -> anyhow::Result<i32> {
    let policy = policy::load::load(&a.policy)
        .map_err(|p| anyhow::anyhow!("policy {} is not valid:\n{p}", a.policy.display()))?;
    let mut source = open_source(&a.input)?;
    let out = create_output(&a.out)?;
    let started = Instant::now();
    let meter = std::cell::RefCell::new(Progress::new(a.quiet));
    let name = a.input.input.display().to_string();
    let stats = replay::replay(
        Arc::new(policy),
        &mut source,
        a.input.max_lateness.0,
        out,
        |bad| {
            meter.borrow_mut().clear();
            eprintln!("{name}: {bad}")
        },
        |s, p| meter.borrow_mut().show(s, p, started),
    )
    .context("replay failed")?;
    meter.borrow_mut().finish();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    if !a.quiet {
        eprintln!(
            "replayed {} records ({} bad, {} late within {}) into {} outputs in {:.2}s ({:.0} records/s)",
            stats.records,
            stats.bad,
            stats.late,
            a.input.max_lateness,
            stats.outputs,
            secs,
            stats.records as f64 / secs
        );
    }
    Ok(if stats.bad > 0 { 1 } else { 0 })
}

/// A progress line on stderr: percent, rate and ETA when the size is known.
pub struct Progress {
    quiet: bool,
    tty: bool,
    last: Option<Instant>,
    shown: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        Progress {
            quiet,
            tty: io::stderr().is_terminal(),
            last: None,
            shown: false,
        }
    }

    pub fn show(&mut self, s: &ReplayStats, p: Position, started: Instant) {
        let now = Instant::now();
        let every = if self.tty { 0.25 } else { 5.0 };
        if self.quiet || self.last.is_some_and(|l| (now - l).as_secs_f64() < every) {
            return;
        }
        self.last = Some(now);
        let secs = (now - started).as_secs_f64().max(1e-9);
        let rate = s.lines as f64 / secs;
        let mut line = format!("{} records, {:.0} records/s", s.lines, rate);
        if let Some(t) = p.total.filter(|t| *t > 0) {
            let done = (p.done as f64 / t as f64).min(1.0);
            let eta = if done > 0.0 {
                secs * (1.0 - done) / done
            } else {
                0.0
            };
            let width = 24;
            let filled = (done * width as f64) as usize;
            line = format!(
                "[{}{}] {:5.1}% {line}, ETA {eta:.0}s",
                "#".repeat(filled),
                " ".repeat(width - filled),
                done * 100.0
            );
        }
        if self.tty {
            eprint!("\r{line}   ");
            self.shown = true;
        } else {
            eprintln!("{line}");
        }
    }

    /// Ends the progress line so another message can be printed.
    pub fn clear(&mut self) {
        if self.shown {
            eprintln!();
            self.shown = false;
        }
    }

    pub fn finish(&mut self) {
        self.clear();
    }
}
