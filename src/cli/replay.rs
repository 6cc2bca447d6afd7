//! `selfheal replay --policy P (--input FILE | --brokers B) --out FILE`.

use std::fs::File;
use std::io::{self, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use selfheal::live::KafkaArgs;
use selfheal::replay::{self, AvroFile, JsonLines, Position, ReplayStats, Source};
use selfheal::{backtest, policy, time::Duration};

use super::record::RangeArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Policy file (YAML).
    #[arg(long, env = "SELFHEAL_POLICY")]
    pub policy: PathBuf,
    #[command(flatten)]
    pub input: InputArgs,
    /// Where to write the output records, JSON Lines (`-` for standard
    /// output). Default: standard output, or nowhere when a backtest report
    /// is asked for.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub backtest: BacktestArgs,
}

/// Backtesting: shadow mode with a what-if report.
#[derive(Debug, clap::Args)]
pub struct BacktestArgs {
    /// Write the what-if report as JSON (shadow mode: nothing executes).
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Write the what-if report as one self-contained HTML page.
    #[arg(long, value_name = "FILE.html")]
    pub html: Option<PathBuf>,
    /// A second policy: every decision that differs, with both sides'
    /// reasons, and the totals side by side.
    #[arg(long, value_name = "POLICY")]
    pub compare: Option<PathBuf>,
    /// Commands with no recorded result succeed (the default) and clear
    /// their trigger.
    #[arg(long, group = "assume")]
    pub assume_success: bool,
    /// Commands with no recorded result fail.
    #[arg(long, group = "assume")]
    pub assume_failure: bool,
    /// Commands with no recorded result succeed at the rate of their
    /// runbook's results recorded earlier in the stream.
    #[arg(long, group = "assume")]
    pub assume_history: bool,
    /// Time from an assumed command to its result.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub action_time: Duration,
    /// When a tier-2 proposal with no recorded approval is approved (by
    /// the policy's first approver), or `never`.
    #[arg(long, default_value = "5m")]
    pub approve_after: String,
}

impl BacktestArgs {
    fn wanted(&self) -> bool {
        self.report.is_some() || self.html.is_some() || self.compare.is_some()
    }

    fn assumptions(&self) -> anyhow::Result<backtest::Assumptions> {
        let results = if self.assume_failure {
            backtest::ResultAssumption::Failure
        } else if self.assume_history {
            backtest::ResultAssumption::History
        } else {
            backtest::ResultAssumption::Success
        };
        let approval_after = match self.approve_after.as_str() {
            "never" => None,
            s => Some(parse_duration(s).map_err(|e| {
                anyhow::anyhow!("--approve-after {s:?}: {e} (a duration such as 5m, or never)")
            })?),
        };
        Ok(backtest::Assumptions {
            results,
            action_time: self.action_time,
            approval_after,
        })
    }
}

/// Where a replay reads its records: a file, or a time range of topics on
/// a broker.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["input", "brokers"])))]
pub struct InputArgs {
    /// Input stream: JSON Lines (`-` for standard input), or an Avro
    /// object container file of replay records when the name ends in `.avro`.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Read the records from the input topics on these Kafka brokers
    /// (comma separated) instead of a file, merged by record timestamp.
    #[arg(long, value_name = "BROKERS")]
    pub brokers: Option<String>,
    /// Prefix of the topic names (with --brokers).
    #[arg(long, env = "SELFHEAL_TOPIC_PREFIX", default_value = "selfheal.")]
    pub topic_prefix: String,
    /// A librdkafka setting (repeatable; with --brokers), as for `engine`.
    #[arg(short = 'X', long = "kafka", value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    #[command(flatten)]
    pub range: RangeArgs,
    /// A record at most this much earlier than the event time already
    /// reached is handled at that time, as the live engine does; an
    /// earlier one is a bad line. `0s` refuses every out-of-order record.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub max_lateness: Duration,
}

impl InputArgs {
    /// The broker to read from, when the input is a topic range.
    pub fn kafka(&self) -> Option<KafkaArgs> {
        self.brokers.as_ref().map(|b| KafkaArgs {
            brokers: b.clone(),
            topic_prefix: self.topic_prefix.clone(),
            settings: self.settings.clone(),
        })
    }

    /// The input in words, for messages.
    pub fn name(&self) -> String {
        match (&self.input, self.kafka()) {
            (Some(p), _) => p.display().to_string(),
            (None, Some(k)) => format!("{} on {}", self.range.describe(&k), k.brokers),
            (None, None) => String::new(),
        }
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    Duration::parse(s).map_err(|e| e.to_string())
}

/// Opens the input named by `a` as a source of records.
pub fn open_source(a: &InputArgs) -> anyhow::Result<Box<dyn Source>> {
    let path = match (&a.input, a.kafka()) {
        (_, Some(k)) => return Ok(Box::new(a.range.open(&k)?)),
        (Some(p), None) => p,
        (None, None) => anyhow::bail!("give --input FILE or --brokers B"),
    };
    let r = &a.range;
    if !r.from_topics.is_empty() || r.since.is_some() || r.until.is_some() {
        anyhow::bail!("--from-topics, --since and --until select Kafka records: give them with --brokers, not --input");
    }
    if path.as_os_str() == "-" {
        return Ok(Box::new(JsonLines::new(io::stdin().lock(), None)));
    }
    let f = File::open(path).with_context(|| format!("cannot open input {}", path.display()))?;
    let len = f.metadata().ok().map(|m| m.len());
    if path.extension().is_some_and(|e| e == "avro") {
        let src = AvroFile::new(f, len)
            .with_context(|| format!("cannot read Avro input {}", path.display()))?;
        return Ok(Box::new(src));
    }
    Ok(Box::new(JsonLines::new(
        BufReader::with_capacity(1 << 17, f),
        len,
    )))
}

/// The command ids the input holds results and approvals for, from a
/// first pass over it; `None` for standard input, which cannot be read
/// twice.
fn recorded(a: &InputArgs) -> anyhow::Result<Option<backtest::Recorded>> {
    let ids = match &a.input {
        Some(p) if p.as_os_str() == "-" => return Ok(None),
        Some(p) if p.extension().is_some_and(|e| e == "jsonl" || e == "ndjson") => {
            let f = File::open(p).with_context(|| format!("cannot open input {}", p.display()))?;
            backtest::recorded_jsonl(f)
        }
        _ => backtest::recorded(&mut open_source(a)?),
    };
    Ok(Some(
        ids.with_context(|| format!("cannot read {}", a.name()))?,
    ))
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
    let policy = load_policy(&a.policy)?;
    if a.backtest.wanted() {
        return run_backtest(a, policy);
    }
    if a.backtest.assume_failure || a.backtest.assume_history || a.backtest.assume_success {
        anyhow::bail!("--assume-* applies to backtests: add --report, --html or --compare");
    }
    let mut source = open_source(&a.input)?;
    let out = create_output(a.out.as_deref().unwrap_or(Path::new("-")))?;
    let started = Instant::now();
    let meter = std::cell::RefCell::new(Progress::new(a.quiet));
    let name = a.input.name();
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

fn load_policy(path: &Path) -> anyhow::Result<policy::Policy> {
    policy::load::load(path)
        .map_err(|p| anyhow::anyhow!("policy {} is not valid:\n{p}", path.display()))
}

/// Shadow replay with a what-if report. Exit code 0 when every line was
/// good, 1 when some were skipped.
fn run_backtest(a: Args, policy: policy::Policy) -> anyhow::Result<i32> {
    let assumptions = a.backtest.assumptions()?;
    let other = match &a.backtest.compare {
        Some(p) => Some(Arc::new(load_policy(p)?)),
        None => None,
    };
    // Fail before the replay, not after it, on an unwritable report.
    let report_file = a
        .backtest
        .report
        .as_deref()
        .map(create_output)
        .transpose()?;
    let html_file = a.backtest.html.as_deref().map(create_output).transpose()?;
    let recorded = recorded(&a.input)?;
    let mut source = open_source(&a.input)?;
    let mut out = a.out.as_deref().map(create_output).transpose()?;
    let started = Instant::now();
    let meter = std::cell::RefCell::new(Progress::new(a.quiet));
    let name = a.input.name();
    let report = backtest::run(
        Arc::new(policy),
        other,
        &assumptions,
        a.input.max_lateness.0,
        &mut source,
        &name,
        recorded.unwrap_or_default(),
        out.as_mut().map(|w| w.as_mut() as &mut dyn Write),
        |bad| {
            meter.borrow_mut().clear();
            eprintln!("{name}: {bad}")
        },
        |s, p| meter.borrow_mut().show(s, p, started),
    )
    .context("backtest failed")?;
    meter.borrow_mut().finish();
    if let Some(mut f) = report_file {
        serde_json::to_writer_pretty(&mut f, &report).context("cannot write the report")?;
        f.write_all(b"\n")?;
        f.flush()?;
    }
    if let Some(mut f) = html_file {
        f.write_all(backtest::html::render(&report).as_bytes())
            .and_then(|_| f.flush())
            .context("cannot write the HTML report")?;
    }
    let text = backtest::summary(&report);
    let to_stdout = a.out.as_deref().is_none_or(|p| p.as_os_str() != "-");
    let mut text = text;
    if let Some(c) = &report.comparison {
        text.push('\n');
        text.push_str(&backtest::compare::render_text(&report, c));
    }
    if to_stdout {
        print!("{text}");
    } else {
        eprint!("{text}");
    }
    if !a.quiet {
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        eprintln!(
            "backtested {} records ({} bad, {} late) in {:.2}s ({:.0} records/s)",
            report.source.records,
            report.source.bad,
            report.source.late,
            secs,
            report.source.records as f64 / secs
        );
    }
    Ok(if report.source.bad > 0 { 1 } else { 0 })
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
