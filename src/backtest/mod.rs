//! Backtesting: what a policy would have done on a recorded stream.
//!
//! The core replays the stream in shadow mode: nothing is executed. Each
//! command it emits gets the result recorded in the stream when there is
//! one; otherwise an assumed result ([`Assumptions`]) arrives `action_time`
//! after the command. An assumed success also clears the alert that
//! triggered the incident at that moment (the counterfactual the stream
//! cannot show): the engine sees the alert resolve, and the recorded
//! re-sends of that alert are held back until the recorded resolution.
//! Tier-2 proposals are approved `approval_after` later by the first
//! approver of the policy, unless the stream holds the approval.
//!
//! Beside the decisions, the backtest keeps the recorded timeline of every
//! incident (first signal, human actions, recorded resolution) and the
//! error budget each SLO spent, and turns both into a [`report::Report`].

pub mod compare;
pub mod html;
pub mod report;
mod track;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Write};
use std::sync::Arc;

use crate::engine::Engine;
use crate::policy::Policy;
use crate::records::{
    ActionResult, Alert, AlertStatus, Approval, Emitted, Input, Labels, MetricRef, Record,
    ResultStatus, Verdict,
};
use crate::replay::{BadLine, Driver, Item, ItemRef, Position, ReplayStats, Source};
use crate::time::{Duration, Timestamp};

pub use report::{summary, Report};
use track::Tracker;

/// What to assume for a command the stream has no result for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultAssumption {
    /// Every action succeeds and clears its trigger.
    Success,
    /// Every action fails.
    Failure,
    /// Each runbook succeeds at the rate of the results recorded for it
    /// earlier in the stream (success while it has none); which commands
    /// succeed is drawn from a hash of the command id, so the same stream
    /// always gives the same report.
    History,
}

/// The assumptions of a backtest, stated in its report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assumptions {
    pub results: ResultAssumption,
    /// How long an action takes from its command to its result.
    pub action_time: Duration,
    /// When a tier-2 proposal is approved; `None`: never (proposals time out).
    pub approval_after: Option<Duration>,
}

impl Default for Assumptions {
    fn default() -> Self {
        Assumptions {
            results: ResultAssumption::Success,
            action_time: Duration(30_000),
            approval_after: Some(Duration::minutes(5)),
        }
    }
}

/// A record the backtest adds to the stream.
#[derive(Debug, Clone)]
enum Injected {
    Result(ActionResult),
    Approval(Approval),
    /// Clears the trigger of `command`'s incident, if its result was assumed.
    Resolve {
        command: String,
        alert: Alert,
    },
}

/// One backtest run: feed it the stream, then take its report.
pub struct Backtest {
    driver: Driver,
    policy: Arc<Policy>,
    assumptions: Assumptions,
    queue: BinaryHeap<Reverse<(Timestamp, u64)>>,
    injected: HashMap<u64, Injected>,
    seq: u64,
    tracker: Tracker,
    /// Recorded results per runbook so far: (succeeded, all).
    history: HashMap<String, (u64, u64)>,
    /// Commands whose results and approvals the stream holds: never assumed.
    recorded: Recorded,
    buf: Vec<Emitted>,
}

impl Backtest {
    /// A backtest of `policy`; records late by at most `max_lateness_ms`
    /// are handled at the event time already reached.
    pub fn new(policy: Arc<Policy>, assumptions: Assumptions, max_lateness_ms: i64) -> Backtest {
        let engine = Engine::new(policy.clone());
        Backtest {
            driver: Driver::new(engine, max_lateness_ms),
            tracker: Tracker::new(&policy),
            policy,
            assumptions,
            queue: BinaryHeap::new(),
            injected: HashMap::new(),
            seq: 0,
            history: HashMap::new(),
            recorded: Default::default(),
            buf: Vec::new(),
        }
    }

    /// Commands whose results and approvals the stream holds (from a
    /// first pass over it): those are waited for instead of assumed.
    pub fn with_recorded(mut self, recorded: Recorded) -> Backtest {
        self.recorded = recorded;
        self
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Feeds one recorded record, after every injected record due before
    /// it. The engine's outputs, injected ones included, are appended to
    /// `out`. An error is a record the engine refused (too late).
    /// `Ok(true)` when the record was late and handled at the event time
    /// already reached.
    pub fn feed(&mut self, rec: Record, out: &mut Vec<Emitted>) -> Result<bool, String> {
        self.inject_until(rec.ts, out);
        let ts = rec.ts.max(self.driver.engine.now().unwrap_or(rec.ts));
        if ts == rec.ts {
            // Deadlines and boundaries due first, so that a result or
            // approval finds the command a deadline emitted just before it.
            self.driver.advance(ts, &mut self.buf)?;
            self.after(out);
        }
        let Some(rec) = self.observe(rec) else {
            // Held back entirely; time still moves on.
            self.driver.advance(ts, &mut self.buf)?;
            self.after(out);
            return Ok(false);
        };
        let late = self.driver.feed(rec, &mut self.buf);
        self.after(out);
        late
    }

    /// [`Backtest::feed`] for a metric sample stamped `ts`, which may
    /// borrow a source's buffers.
    pub fn feed_metric(
        &mut self,
        ts: Timestamp,
        m: MetricRef<'_>,
        out: &mut Vec<Emitted>,
    ) -> Result<bool, String> {
        self.inject_until(ts, out);
        let late = self.driver.feed_metric(ts, m, &mut self.buf);
        self.after(out);
        late
    }

    /// Ends the stream: the report of everything seen. Injections due after
    /// the last record are dropped: the stream does not say what happened
    /// then.
    pub fn finish(self, source: report::SourceInfo) -> Report {
        let end = self.driver.engine.now();
        let complete = self.recorded.complete;
        let mut report = self.tracker.finish(
            end,
            &self.driver.engine,
            &self.policy,
            &self.assumptions,
            &self.history,
            source,
        );
        if !complete {
            report.assumptions.notes.push(
                "The stream was read once (no first pass): a result or approval recorded later than its assumed time was superseded by the assumption.".into(),
            );
        }
        report
    }

    /// Feeds every injected record due at or before `until`.
    fn inject_until(&mut self, until: Timestamp, out: &mut Vec<Emitted>) {
        while let Some(Reverse((ts, seq))) = self.queue.peek().copied() {
            if ts > until {
                break;
            }
            self.queue.pop();
            let Some(inj) = self.injected.remove(&seq) else {
                continue;
            };
            let input = match inj {
                Injected::Result(r) => {
                    if self.tracker.has_result(&r.command_id) {
                        continue;
                    }
                    self.tracker.assumed_result(ts, &r);
                    Input::Result(r)
                }
                Injected::Approval(a) => {
                    if self.tracker.has_approval(&a.command_id) {
                        continue;
                    }
                    self.tracker.assumed_approval(ts, &a);
                    Input::Approval(a)
                }
                Injected::Resolve { command, alert } => {
                    if !self.tracker.result_assumed(&command) {
                        continue;
                    }
                    let service = alert.labels.get("service").unwrap_or("unknown").to_string();
                    let fp = alert.fingerprint.clone().unwrap_or_default();
                    self.tracker.hold_back(&service, &fp);
                    Input::Alerts(vec![alert])
                }
            };
            let ts = ts.max(self.driver.engine.now().unwrap_or(ts));
            // Injected records are never late: the queue is drained in
            // time order before each recorded record.
            let _ = self.driver.feed(Record { ts, input }, &mut self.buf);
            self.after(out);
        }
    }

    /// Notes a recorded record and filters what the engine should see.
    fn observe(&mut self, mut rec: Record) -> Option<Record> {
        match &mut rec.input {
            Input::Alerts(alerts) => {
                alerts.retain(|a| self.tracker.recorded_alert(rec.ts, a));
                if alerts.is_empty() {
                    return None;
                }
            }
            Input::Change(c) => self.tracker.recorded_change(rec.ts, c),
            Input::Result(r) => {
                if let Some(rb) = self.tracker.recorded_result(rec.ts, r) {
                    let h = self.history.entry(rb).or_default();
                    h.0 += u64::from(r.status == ResultStatus::Succeeded);
                    h.1 += 1;
                }
            }
            Input::Approval(a) => self.tracker.recorded_approval(rec.ts, a),
            _ => {}
        }
        Some(rec)
    }

    /// Handles the engine's outputs: tracking, injections, then `out`.
    fn after(&mut self, out: &mut Vec<Emitted>) {
        if self.buf.is_empty() {
            self.tracker.close_resolved(&self.driver.engine);
            self.tracker.sample(&self.driver.engine);
            return;
        }
        let outputs = std::mem::take(&mut self.buf);
        for e in &outputs {
            self.tracker.output(e, &self.driver.engine, &self.policy);
            match &e.output {
                crate::records::Output::Command(c) => self.schedule_result(e.ts, c),
                crate::records::Output::ApprovalRequest(r)
                    if !self.recorded.approvals.contains(&r.command_id) =>
                {
                    if let (Some(after), Some(by)) = (
                        self.assumptions.approval_after,
                        self.policy.approvers.first(),
                    ) {
                        self.push(
                            e.ts.plus(after),
                            Injected::Approval(Approval {
                                command_id: r.command_id.clone(),
                                decision: Verdict::Approve,
                                by: by.clone(),
                                at: Some(e.ts.plus(after)),
                                sig: None,
                            }),
                        );
                    }
                }
                _ => {}
            }
        }
        self.tracker.close_resolved(&self.driver.engine);
        self.tracker.sample(&self.driver.engine);
        out.extend(outputs);
    }

    fn schedule_result(&mut self, ts: Timestamp, c: &crate::records::Command) {
        if self.recorded.results.contains(&c.id) {
            return;
        }
        let at = ts.plus(self.assumptions.action_time);
        let ok = match self.assumptions.results {
            ResultAssumption::Success => true,
            ResultAssumption::Failure => false,
            ResultAssumption::History => match self.history.get(&c.runbook) {
                Some(&(s, n)) if n > 0 => draw(&c.id) * (n as f64) < (s as f64),
                _ => true,
            },
        };
        let status = if ok {
            ResultStatus::Succeeded
        } else {
            ResultStatus::Failed
        };
        self.push(
            at,
            Injected::Result(ActionResult {
                command_id: c.id.clone(),
                status,
                detail: "assumed by backtest".into(),
                at: Some(at),
                previous: Default::default(),
            }),
        );
        // An assumed success clears the trigger of a first action (not of
        // a rollback: undoing a fix does not fix anything).
        if ok && c.rollback_of.is_none() {
            if let Some(t) = self.tracker.alert_trigger(&c.incident) {
                let alert = Alert {
                    status: AlertStatus::Resolved,
                    labels: t.labels.clone(),
                    annotations: Labels::new(),
                    starts_at: Some(t.starts_at),
                    ends_at: Some(at),
                    fingerprint: Some(t.fingerprint.clone()),
                    generator_url: None,
                };
                self.push(
                    at,
                    Injected::Resolve {
                        command: c.id.clone(),
                        alert,
                    },
                );
            }
        }
    }

    fn push(&mut self, ts: Timestamp, inj: Injected) {
        self.seq += 1;
        self.injected.insert(self.seq, inj);
        self.queue.push(Reverse((ts, self.seq)));
    }
}

/// A number in [0, 1) drawn from a command id, the same every run.
fn draw(id: &str) -> f64 {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(id.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    (u64::from_be_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs a backtest of `policy` (and, side by side, of `compare`) over
/// `source`. Outputs of `policy` go to `out` as JSON Lines when given;
/// `on_bad` hears every skipped item and `progress` the running totals.
#[allow(clippy::too_many_arguments)]
pub fn run<S: Source + ?Sized>(
    policy: Arc<Policy>,
    compare: Option<Arc<Policy>>,
    assumptions: &Assumptions,
    max_lateness_ms: i64,
    source: &mut S,
    name: &str,
    recorded: Recorded,
    mut out: Option<&mut dyn Write>,
    mut on_bad: impl FnMut(BadLine),
    mut progress: impl FnMut(&ReplayStats, Position),
) -> io::Result<Report> {
    let mut a =
        Backtest::new(policy, assumptions.clone(), max_lateness_ms).with_recorded(recorded.clone());
    let mut b = compare.map(|p| {
        Backtest::new(p, assumptions.clone(), max_lateness_ms).with_recorded(recorded.clone())
    });
    let mut stats = ReplayStats::default();
    let mut emitted = Vec::new();
    let mut first = None;
    let mut scratch = Vec::new();
    while let Some(item) = source.next_ref()? {
        stats.lines += 1;
        let fed = match item {
            ItemRef::Metric(ts, m) => {
                first.get_or_insert(ts);
                if let Some(b) = &mut b {
                    let _ = b.feed_metric(ts, m, &mut scratch);
                    scratch.clear();
                }
                a.feed_metric(ts, m, &mut emitted)
            }
            ItemRef::Item(Item::Record(rec)) => {
                first.get_or_insert(rec.ts);
                if let Some(b) = &mut b {
                    let _ = b.feed(rec.clone(), &mut scratch);
                    scratch.clear();
                }
                a.feed(rec, &mut emitted)
            }
            ItemRef::Item(Item::Bad(x)) => {
                stats.bad += 1;
                on_bad(x);
                continue;
            }
        };
        match fed {
            Ok(late) => {
                stats.records += 1;
                stats.late += usize::from(late);
            }
            Err(reason) => {
                stats.bad += 1;
                on_bad(BadLine {
                    line: source.position().last,
                    reason,
                });
            }
        }
        if let Some(w) = out.as_mut() {
            for e in &emitted {
                w.write_all(e.to_json_line().as_bytes())?;
                w.write_all(b"\n")?;
            }
        }
        stats.outputs += emitted.len();
        emitted.clear();
        if stats.lines % crate::replay::PROGRESS_EVERY == 0 {
            progress(&stats, source.position());
        }
    }
    if let Some(w) = out.as_mut() {
        w.flush()?;
    }
    let info = report::SourceInfo {
        name: name.to_string(),
        records: stats.records,
        bad: stats.bad,
        late: stats.late,
        first,
        last: None,
    };
    let mut report = a.finish(info.clone());
    if let Some(b) = b {
        let rb = b.finish(info);
        report.comparison = Some(compare::compare(&report, &rb));
    }
    Ok(report)
}

/// The command ids the stream holds results and approvals for.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    pub results: std::collections::HashSet<String>,
    pub approvals: std::collections::HashSet<String>,
    /// True when a first pass over the whole stream filled the sets.
    pub complete: bool,
}

impl Recorded {
    fn note(&mut self, input: Input) {
        match input {
            Input::Result(r) => {
                self.results.insert(r.command_id);
            }
            Input::Approval(a) => {
                self.approvals.insert(a.command_id);
            }
            _ => {}
        }
    }
}

/// A first pass over `source` for the results and approvals it holds, so
/// that the backtest waits for them instead of assuming them.
pub fn recorded<S: Source + ?Sized>(source: &mut S) -> io::Result<Recorded> {
    let mut r = Recorded {
        complete: true,
        ..Recorded::default()
    };
    while let Some(item) = source.next_item()? {
        if let Item::Record(rec) = item {
            r.note(rec.input);
        }
    }
    Ok(r)
}

/// [`recorded`] for a JSON Lines stream: only the lines that mention a
/// result or an approval are parsed, found by a byte search over large
/// chunks.
pub fn recorded_jsonl<R: io::Read>(mut input: R) -> io::Result<Recorded> {
    use memchr::memmem::Finder;
    let finders = [Finder::new(b"\"result\""), Finder::new(b"\"approval\"")];
    let mut r = Recorded {
        complete: true,
        ..Recorded::default()
    };
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut chunk)?;
        buf.extend_from_slice(&chunk[..n]);
        // Whole lines only, unless the input has ended.
        let upto = if n == 0 {
            buf.len()
        } else {
            match memchr::memrchr(b'\n', &buf) {
                Some(i) => i + 1,
                None => continue,
            }
        };
        let data = &buf[..upto];
        let mut hits: Vec<usize> = finders
            .iter()
            .flat_map(|f| f.find_iter(data).collect::<Vec<_>>())
            .collect();
        hits.sort_unstable();
        let mut done_to = 0;
        for h in hits {
            if h < done_to {
                continue;
            }
            let start = memchr::memrchr(b'\n', &data[..h]).map_or(0, |i| i + 1);
            let end = memchr::memchr(b'\n', &data[h..]).map_or(data.len(), |i| h + i);
            done_to = end;
            if let Ok(rec) = std::str::from_utf8(&data[start..end])
                .map_err(|e| e.to_string())
                .and_then(|l| Record::from_json_line(l.trim()).map_err(|e| e.to_string()))
            {
                r.note(rec.input);
            }
        }
        buf.drain(..upto);
        if n == 0 {
            return Ok(r);
        }
    }
}
