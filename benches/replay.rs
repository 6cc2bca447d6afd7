//! The 30-day backtest: replay throughput and memory from JSON Lines and
//! from an Avro object container file.
//!
//! What it measures: records per second through `replay::replay` (decoding,
//! the core, output writing) for a 30-day stream of 1,000 services with
//! one SLO each (SRE Workbook tiers) and two counter series each, total
//! and 5xx, sampled once a minute: 86.4 million metric records, plus a
//! trickle of incidents (error bursts that fire burn-rate tiers, OOM and
//! disk alerts, deploys and migrations) so the engine makes decisions.
//! The stream is generated on the fly, chunk by chunk, into an
//! `impl BufRead` (JSON Lines) or an `impl Read` producing the container
//! file's bytes as they are written (Avro), so nothing is stored on disk
//! and the generator's memory is a few chunks. Generation runs on the same
//! thread, so each phase also reports the generator alone (drained into a
//! sink) and the replay time net of it. Peak memory is VmHWM, reset after
//! the generator is built, so it is the replay's memory.
//!
//! A third phase runs the backtest (`selfheal replay --report`) over the
//! JSON Lines stream: shadow mode with assumed results and the what-if
//! report, whose per-incident rows grow with incidents ("outputs" counts
//! the decisions in the report).
//!
//! Why: replay is how policies are backtested against history, and its
//! memory must be bounded by the number of SLOs and open incidents, not by
//! the length of the stream; a month of a mid-size fleet must replay in
//! minutes on one core.
//!
//! `SELFHEAL_BENCH_DAYS` (default 30) shortens the stream;
//! `SELFHEAL_BENCH_SERVICES` (default 1000) changes the fleet.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, BufRead, Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use selfheal::backtest;
use selfheal::policy::parse;
use selfheal::records::{
    Alert, AlertStatus, Change, ChangeState, Fixed, Input, Labels, MetricRef, Record,
};
use selfheal::replay::{replay, AvroFile, AvroWriter, JsonLines, ReplayStats};
use selfheal::time::{Timestamp, DAY, MINUTE};

const T0: i64 = 1_772_323_200_000; // 2026-03-01T00:00:00Z
const OK_PER_MINUTE: u64 = 1000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn policy(services: usize) -> String {
    let mut s = String::with_capacity(services * 220 + 2000);
    s += "slos:\n";
    for i in 0..services {
        s += &format!(
            "  - name: s{i}\n    service: svc{i}\n    objective: 99.9\n    sli:\n      total: 'http_requests_total{{service=\"svc{i}\"}}'\n      bad: 'http_requests_total{{service=\"svc{i}\",code=~\"5..\"}}'\n"
        );
    }
    s += "runbooks:\n";
    s += "  - name: restart-on-oom\n    match: ['alertname=\"PodOOMKilled\"']\n    tier: 1\n    action: {kind: restart, target: '{{ labels.pod }}'}\n    validate: {within: 5m}\n";
    s += "  - name: scale-on-burn\n    match: ['alertname=\"SLOBurnRate\"', 'severity=\"page\"']\n    tier: 1\n    action: {kind: scale, target: '{{ labels.service }}', params: {replicas: '+2'}}\n    validate: {within: 10m}\n    rollback: {kind: scale, target: '{{ labels.service }}', params: {replicas: '-2'}}\n";
    s += "guardrails:\n  cooldown: 10m\n  max_actions_per_target: {count: 3, per: 1h}\n  freeze_on_changes: [migration]\n  first_time: page\n";
    s
}

/// splitmix64: a fixed, reproducible stream of pseudo-random numbers.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Error bursts and other events of the whole stream, decided up front.
struct Plan {
    services: usize,
    minutes: i64,
    /// (service, first minute, end minute, errors per minute).
    bursts: Vec<(usize, i64, i64, u64)>,
    /// Records other than metric samples, by minute; stamped 30 s in.
    events: BTreeMap<i64, Vec<Record>>,
}

fn alert(svc: usize, name: &str, status: AlertStatus, starts: i64, id: u64) -> Input {
    Input::Alerts(vec![Alert {
        status,
        labels: Labels::from_pairs([
            ("alertname", name.to_string()),
            ("service", format!("svc{svc}")),
            ("pod", format!("svc{svc}-{:x}", id % 0xfff)),
        ]),
        annotations: Labels::from_pairs([("summary", format!("{name} on svc{svc}"))]),
        starts_at: Some(Timestamp(T0 + starts * MINUTE + 30_000)),
        ends_at: None,
        fingerprint: Some(format!("{id:016x}")),
        generator_url: None,
    }])
}

impl Plan {
    fn new(days: usize, services: usize) -> Plan {
        let minutes = days as i64 * DAY / MINUTE;
        let mut bursts = Vec::new();
        let mut events: BTreeMap<i64, Vec<Record>> = BTreeMap::new();
        let mut add = |m: i64, input: Input| {
            if m < minutes {
                events.entry(m).or_default().push(Record {
                    ts: Timestamp(T0 + m * MINUTE + 30_000),
                    input,
                });
            }
        };
        for d in 0..days as u64 {
            let day = d as i64 * 1440;
            let r = |k: u64| mix(d * 1000 + k);
            for k in 0..4 {
                let svc = (r(k) % services as u64) as usize;
                let start = day + (r(k + 10) % 1380) as i64;
                let len = 20 + (r(k + 20) % 40) as i64;
                bursts.push((svc, start, start + len, 20 + r(k + 30) % 80));
            }
            for k in 0..6 {
                let svc = (r(k + 100) % services as u64) as usize;
                let at = day + (r(k + 110) % 1400) as i64;
                let id = r(k + 120);
                add(at, alert(svc, "PodOOMKilled", AlertStatus::Firing, at, id));
                let resolved = alert(svc, "PodOOMKilled", AlertStatus::Resolved, at, id);
                add(at + 3, resolved);
            }
            for k in 0..2 {
                let svc = (r(k + 200) % services as u64) as usize;
                let at = day + (r(k + 210) % 1400) as i64;
                let id = r(k + 220);
                add(at, alert(svc, "DiskFull", AlertStatus::Firing, at, id));
                add(
                    at + 30,
                    alert(svc, "DiskFull", AlertStatus::Resolved, at, id),
                );
            }
            for k in 0..4 {
                let svc = (r(k + 300) % services as u64) as usize;
                let at = day + (r(k + 310) % 1400) as i64;
                let kind = if k == 0 { "migration" } else { "deploy" };
                for (state, m) in [(ChangeState::Started, at), (ChangeState::Finished, at + 15)] {
                    add(
                        m,
                        Input::Change(Change {
                            service: format!("svc{svc}"),
                            kind: kind.into(),
                            state,
                            id: format!("chg-{d}-{k}"),
                            at: None,
                        }),
                    );
                }
            }
        }
        Plan {
            services,
            minutes,
            bursts,
            events,
        }
    }

    /// Errors per minute of every service at minute `m`.
    fn errors(&self, m: i64, out: &mut [u64]) {
        for (i, e) in out.iter_mut().enumerate() {
            *e = u64::from(i % 3 == 0);
        }
        for &(svc, start, end, rate) in &self.bursts {
            if (start..end).contains(&m) {
                out[svc] = rate;
            }
        }
    }

    fn records(&self) -> usize {
        self.minutes as usize * self.services * 2
            + self.events.values().map(Vec::len).sum::<usize>()
    }
}

/// Services per generated chunk.
const CHUNK_SERVICES: usize = 100;

/// Walks the stream: counters and position.
struct Walk<'p> {
    plan: &'p Plan,
    minute: i64,
    next_service: usize,
    ok: Vec<u64>,
    err: Vec<u64>,
    rate: Vec<u64>,
    ts_text: String,
}

/// One step of the walk.
enum Step<'w> {
    /// Samples of services `from..to` at the current minute.
    Samples {
        from: usize,
        to: usize,
    },
    /// The minute's other records.
    Events(&'w [Record]),
    End,
}

impl<'p> Walk<'p> {
    fn new(plan: &'p Plan) -> Walk<'p> {
        let n = plan.services;
        let mut w = Walk {
            plan,
            minute: 0,
            next_service: 0,
            ok: vec![0; n],
            err: vec![0; n],
            rate: vec![0; n],
            ts_text: String::new(),
        };
        w.start_minute();
        w
    }

    fn start_minute(&mut self) {
        self.plan.errors(self.minute, &mut self.rate);
        self.ts_text = Timestamp(T0 + self.minute * MINUTE).to_string();
    }

    fn ts(&self) -> Timestamp {
        Timestamp(T0 + self.minute * MINUTE)
    }

    fn step(&mut self) -> Step<'p> {
        if self.minute >= self.plan.minutes {
            return Step::End;
        }
        if self.next_service < self.plan.services {
            let from = self.next_service;
            let to = (from + CHUNK_SERVICES).min(self.plan.services);
            if self.minute > 0 {
                for i in from..to {
                    self.ok[i] += OK_PER_MINUTE - self.rate[i].min(OK_PER_MINUTE);
                    self.err[i] += self.rate[i];
                }
            }
            self.next_service = to;
            return Step::Samples { from, to };
        }
        let events = self.plan.events.get(&self.minute);
        self.minute += 1;
        self.next_service = 0;
        if self.minute < self.plan.minutes {
            self.start_minute();
        }
        match events {
            Some(e) => Step::Events(e),
            None => self.step(),
        }
    }
}

/// JSON Lines of the stream, generated as they are read.
struct JsonGen<'p> {
    walk: Walk<'p>,
    /// Per series, the line between the timestamp and the value.
    middles: Vec<[String; 2]>,
    buf: Vec<u8>,
    pos: usize,
}

impl<'p> JsonGen<'p> {
    fn new(plan: &'p Plan) -> JsonGen<'p> {
        let middles = (0..plan.services)
            .map(|i| {
                ["200", "500"].map(|code| {
                    format!(
                        r#"","kind":"metric","data":{{"name":"http_requests_total","labels":{{"__name__":"http_requests_total","service":"svc{i}","code":"{code}","instance":"10.0.{}.{}:9090"}},"value":""#,
                        i / 250,
                        i % 250
                    )
                })
            })
            .collect();
        JsonGen {
            walk: Walk::new(plan),
            middles,
            buf: Vec::with_capacity(64 * 1024),
            pos: 0,
        }
    }

    fn generate(&mut self) {
        self.buf.clear();
        self.pos = 0;
        match self.walk.step() {
            Step::End => {}
            Step::Events(recs) => {
                for r in recs {
                    self.buf.extend_from_slice(r.to_json_line().as_bytes());
                    self.buf.push(b'\n');
                }
            }
            Step::Samples { from, to } => {
                let ts = self.walk.ts_text.as_bytes();
                for i in from..to {
                    for (k, value) in [self.walk.ok[i], self.walk.err[i]].into_iter().enumerate() {
                        self.buf.extend_from_slice(br#"{"ts":""#);
                        self.buf.extend_from_slice(ts);
                        self.buf.extend_from_slice(self.middles[i][k].as_bytes());
                        // Writing into a Vec cannot fail.
                        let _ = write!(self.buf, "{value}");
                        self.buf.extend_from_slice(br#"","timestamp":""#);
                        self.buf.extend_from_slice(ts);
                        self.buf.extend_from_slice(b"\"}}\n");
                    }
                }
            }
        }
    }
}

impl Read for JsonGen<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = {
            let buf = self.fill_buf()?;
            let n = buf.len().min(out.len());
            out[..n].copy_from_slice(&buf[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for JsonGen<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        // A step may produce nothing (a minute without events); the walk
        // ends with an empty step at `Step::End`.
        while self.pos == self.buf.len() {
            let ended = self.walk.minute >= self.walk.plan.minutes;
            self.generate();
            if ended {
                break;
            }
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

/// A `Write` whose bytes the generator hands on.
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The stream as an Avro container file, written as it is read.
struct AvroGen<'p> {
    walk: Walk<'p>,
    labels: Vec<[Labels; 2]>,
    writer: Option<AvroWriter<Shared>>,
    out: Shared,
    buf: Vec<u8>,
    pos: usize,
}

impl<'p> AvroGen<'p> {
    fn new(plan: &'p Plan) -> AvroGen<'p> {
        let labels = (0..plan.services)
            .map(|i| {
                ["200", "500"].map(|code| {
                    Labels::from_pairs([
                        ("service", format!("svc{i}")),
                        ("code", code.to_string()),
                        ("instance", format!("10.0.{}.{}:9090", i / 250, i % 250)),
                    ])
                })
            })
            .collect();
        let out = Shared::default();
        let writer = AvroWriter::new(out.clone()).expect("writes to memory");
        AvroGen {
            walk: Walk::new(plan),
            labels,
            writer: Some(writer),
            out,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// Writes records until some bytes come out (or the stream ends).
    fn generate(&mut self) -> io::Result<()> {
        self.buf.clear();
        self.pos = 0;
        while self.out.0.borrow().is_empty() {
            let Some(w) = self.writer.as_mut() else {
                break;
            };
            match self.walk.step() {
                Step::End => {
                    if let Some(w) = self.writer.take() {
                        w.finish().map_err(io::Error::from)?;
                    }
                }
                Step::Events(recs) => {
                    for r in recs {
                        w.write(r).map_err(io::Error::from)?;
                    }
                }
                Step::Samples { from, to } => {
                    let ts = self.walk.ts();
                    for i in from..to {
                        for (k, value) in
                            [self.walk.ok[i], self.walk.err[i]].into_iter().enumerate()
                        {
                            let m = MetricRef {
                                name: "http_requests_total",
                                labels: self.labels[i][k].as_ref(),
                                value: Fixed::from_units(value as i64),
                                timestamp: Some(ts),
                            };
                            w.write_metric(ts, m).map_err(io::Error::from)?;
                        }
                    }
                }
            }
        }
        std::mem::swap(&mut self.buf, &mut self.out.0.borrow_mut());
        Ok(())
    }
}

impl Read for AvroGen<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            self.generate()?;
        }
        let n = (self.buf.len() - self.pos).min(out.len());
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Peak resident set (VmHWM) in KiB.
fn peak_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets VmHWM to the current resident set (Linux 4.0 and later).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

struct Phase {
    stats: ReplayStats,
    seconds: f64,
    generate_seconds: f64,
    peak_kib: Option<u64>,
    peak_reset: bool,
}

impl Phase {
    fn json(&self, name: &str) -> String {
        let rate = |s: f64| self.stats.records as f64 / s.max(1e-9);
        let net = (self.seconds - self.generate_seconds).max(1e-9);
        format!(
            r#""{name}":{{"records":{},"bad":{},"outputs":{},"seconds":{:.2},"records_per_s":{:.0},"generate_seconds":{:.2},"replay_seconds_net":{:.2},"records_per_s_net":{:.0},"peak_rss_mib":{},"peak_reset":{}}}"#,
            self.stats.records,
            self.stats.bad,
            self.stats.outputs,
            self.seconds,
            rate(self.seconds),
            self.generate_seconds,
            net,
            rate(net),
            self.peak_kib
                .map_or("null".to_string(), |k| format!("{:.1}", k as f64 / 1024.0)),
            self.peak_reset,
        )
    }
}

fn drain(mut r: impl Read) -> f64 {
    let started = Instant::now();
    // Reading into a sink cannot fail.
    let _ = io::copy(&mut r, &mut io::sink());
    started.elapsed().as_secs_f64()
}

fn main() {
    let days = env_usize("SELFHEAL_BENCH_DAYS", 30);
    let services = env_usize("SELFHEAL_BENCH_SERVICES", 1000);
    let policy = Arc::new(parse(&policy(services), "bench.yaml").expect("bench policy is valid"));
    // The Avro source wants a 'static reader; the plan lives to the end.
    let plan: &'static Plan = Box::leak(Box::new(Plan::new(days, services)));

    // The generators alone, for the net figures.
    let json_gen = drain(JsonGen::new(plan));
    let avro_gen = drain(AvroGen::new(plan));

    let mut phases = Vec::new();
    let mut incidents = 0;
    for (name, generate_seconds) in [
        ("json_lines", json_gen),
        ("avro", avro_gen),
        ("backtest", json_gen),
    ] {
        let (peak_reset, started, stats) = if name == "backtest" {
            // The what-if report of the same JSON Lines stream: shadow
            // mode with assumed results, every incident tracked.
            let mut src = JsonLines::new(JsonGen::new(plan), None);
            let reset = reset_peak();
            let started = Instant::now();
            let mut outputs = 0usize;
            let mut count = |_: &ReplayStats, _| {};
            let report = backtest::run(
                policy.clone(),
                None,
                &backtest::Assumptions::default(),
                0,
                &mut src,
                "generated",
                backtest::Recorded::default(),
                None,
                |_| {},
                &mut count,
            )
            .map(|r| {
                incidents = r.incidents.len();
                outputs = r.incidents.iter().map(|i| i.policy.decisions.len()).sum();
                ReplayStats {
                    lines: r.source.records + r.source.bad,
                    records: r.source.records,
                    bad: r.source.bad,
                    late: r.source.late,
                    outputs,
                }
            });
            (reset, started, report)
        } else if name == "json_lines" {
            let mut src = JsonLines::new(JsonGen::new(plan), None);
            let reset = reset_peak();
            let started = Instant::now();
            let stats = replay(policy.clone(), &mut src, 0, io::sink(), |_| {}, |_, _| {});
            (reset, started, stats)
        } else {
            let mut src = AvroFile::new(AvroGen::new(plan), None).expect("generated header");
            let reset = reset_peak();
            let started = Instant::now();
            let stats = replay(policy.clone(), &mut src, 0, io::sink(), |_| {}, |_, _| {});
            (reset, started, stats)
        };
        let stats = stats.expect("replay of a generated stream");
        let seconds = started.elapsed().as_secs_f64();
        phases.push(
            Phase {
                stats,
                seconds,
                generate_seconds,
                peak_kib: peak_kib(),
                peak_reset,
            }
            .json(name),
        );
    }
    println!(
        r#"{{"days":{days},"services":{services},"slos":{},"records":{},"backtest_incidents":{incidents},{}}}"#,
        policy.slos.len(),
        plan.records(),
        phases.join(",")
    );
}
