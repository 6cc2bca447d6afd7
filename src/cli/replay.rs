//! `selfheal replay --policy P --input FILE --out FILE`.

use std::fs::File;
use std::io::{self, BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use selfheal::{policy, replay};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Policy file (YAML).
    #[arg(long, env = "SELFHEAL_POLICY")]
    pub policy: PathBuf,
    /// Input stream, JSON Lines (`-` for standard input).
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the output records, JSON Lines (`-` for standard output).
    #[arg(long, default_value = "-")]
    pub out: PathBuf,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// Exit code 0 when every line was good, 1 when some were skipped.
pub fn run(a: Args) -> anyhow::Result<i32> {
    let policy = policy::load::load(&a.policy)
        .map_err(|p| anyhow::anyhow!("policy {} is not valid:\n{p}", a.policy.display()))?;
    let (input, total): (Box<dyn io::BufRead>, Option<u64>) = if a.input.as_os_str() == "-" {
        (Box::new(io::stdin().lock()), None)
    } else {
        let f = File::open(&a.input)
            .with_context(|| format!("cannot open input {}", a.input.display()))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(BufReader::with_capacity(1 << 20, f)), len)
    };
    let out: Box<dyn Write> = if a.out.as_os_str() == "-" {
        Box::new(io::stdout().lock())
    } else {
        Box::new(
            File::create(&a.out)
                .with_context(|| format!("cannot create output {}", a.out.display()))?,
        )
    };
    let started = Instant::now();
    let mut meter = Progress::new(total, a.quiet);
    let stats = replay::replay(
        Arc::new(policy),
        input,
        out,
        |bad| eprintln!("{}: {bad}", a.input.display()),
        |s| meter.show(s, started),
    )
    .context("replay failed")?;
    meter.finish();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    if !a.quiet {
        eprintln!(
            "replayed {} records ({} bad lines) into {} outputs in {:.2}s ({:.0} records/s)",
            stats.records,
            stats.bad,
            stats.outputs,
            secs,
            stats.records as f64 / secs
        );
    }
    Ok(if stats.bad > 0 { 1 } else { 0 })
}

/// A progress line on stderr: percent, rate and ETA when the size is known.
struct Progress {
    total: Option<u64>,
    quiet: bool,
    tty: bool,
    last: Option<Instant>,
}

impl Progress {
    fn new(total: Option<u64>, quiet: bool) -> Progress {
        Progress {
            total,
            quiet,
            tty: io::stderr().is_terminal(),
            last: None,
        }
    }

    fn show(&mut self, s: &replay::ReplayStats, started: Instant) {
        let now = Instant::now();
        let every = if self.tty { 0.25 } else { 5.0 };
        if self.quiet || self.last.is_some_and(|l| (now - l).as_secs_f64() < every) {
            return;
        }
        self.last = Some(now);
        let secs = (now - started).as_secs_f64().max(1e-9);
        let rate = s.lines as f64 / secs;
        let mut line = format!("{} lines, {:.0} lines/s", s.lines, rate);
        if let Some(t) = self.total.filter(|t| *t > 0) {
            let done = s.bytes as f64 / t as f64;
            let eta = if done > 0.0 {
                secs * (1.0 - done) / done
            } else {
                0.0
            };
            line = format!("{:5.1}% {line}, ETA {eta:.0}s", done * 100.0);
        }
        if self.tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    }

    fn finish(&self) {
        if self.tty && !self.quiet && self.last.is_some() {
            eprintln!();
        }
    }
}
