//! What a backtest keeps while the stream flows: one row per incident with
//! its recorded timeline and the policy's decisions, per-SLO budget
//! readings, and sampled burn rates. Memory grows with incidents and SLOs,
//! never with records.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use super::report::*;
use super::{Assumptions, ResultAssumption};
use crate::engine::{alert_severity, fingerprint, Engine};
use crate::policy::Policy;
use crate::records::{
    ActionResult, Alert, AlertStatus, Approval, BurnState, Change, ChangeState, Emitted, Labels,
    Output, Severity,
};
use crate::slo::window::Sums;
use crate::time::{Timestamp, MINUTE};

/// Changes remembered per service, for the human actions of an incident.
const CHANGES_KEPT: usize = 64;
/// Burn-rate points kept per SLO before the step doubles.
const BURN_POINTS: usize = 480;
/// Burn-rate series in the report.
const BURN_SERIES: usize = 12;
/// Validated successes (on recorded results) before a tier-2 runbook is
/// listed for promotion.
pub const PROMOTE_AFTER: usize = 5;
/// Automation candidates listed.
const CANDIDATES: usize = 20;

/// An incident's trigger, for clearing it after an assumed success.
pub struct TriggerRef {
    pub fingerprint: String,
    pub starts_at: Timestamp,
    pub labels: Labels,
}

struct Row {
    out: IncidentRow,
    key: (String, String),
    labels: Labels,
    starts_at: Timestamp,
    slos: Vec<usize>,
    open: Vec<Sums>,
    mitigated: Option<Vec<Sums>>,
    /// Errors spent and saved per SLO (millionths), set at the recorded end.
    spent: Vec<u64>,
    saved: Vec<u64>,
    closed: bool,
}

struct Cmd {
    row: usize,
    runbook: String,
}

pub struct Tracker {
    rows: Vec<Row>,
    by_id: HashMap<String, usize>,
    /// Rows whose recorded resolution has not been seen, by (service, fingerprint).
    awaiting: HashMap<(String, String), usize>,
    held_back: HashSet<(String, String)>,
    /// Rows whose recorded resolution arrived, to close.
    resolved: Vec<usize>,
    cmds: HashMap<String, Cmd>,
    approved: HashSet<String>,
    changes: HashMap<String, VecDeque<(Timestamp, String, String)>>,
    freeze_kinds: Vec<String>,
    slos_by_service: HashMap<String, Vec<usize>>,
    slo_by_name: HashMap<String, usize>,
    page_tiers_fired: Vec<usize>,
    guardrail_blocks: BTreeMap<String, usize>,
    near_misses: HashMap<String, usize>,
    approvals_requested: usize,
    results_recorded: usize,
    results_assumed: usize,
    burn: Vec<Vec<(i64, f64)>>,
    burn_step: i64,
    next_sample: Option<i64>,
    first: Option<Timestamp>,
}

impl Tracker {
    pub fn new(policy: &Policy) -> Tracker {
        let mut slos_by_service: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in policy.slos.iter().enumerate() {
            slos_by_service
                .entry(s.service.clone())
                .or_default()
                .push(i);
        }
        Tracker {
            rows: Vec::new(),
            by_id: HashMap::new(),
            awaiting: HashMap::new(),
            held_back: HashSet::new(),
            resolved: Vec::new(),
            cmds: HashMap::new(),
            approved: HashSet::new(),
            changes: HashMap::new(),
            freeze_kinds: policy.guardrails.freeze_on_changes.clone(),
            slos_by_service,
            slo_by_name: policy
                .slos
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.clone(), i))
                .collect(),
            page_tiers_fired: vec![0; policy.slos.len()],
            guardrail_blocks: BTreeMap::new(),
            near_misses: HashMap::new(),
            approvals_requested: 0,
            results_recorded: 0,
            results_assumed: 0,
            burn: vec![Vec::new(); policy.slos.len()],
            burn_step: MINUTE,
            next_sample: None,
            first: None,
        }
    }

    pub fn has_result(&self, command: &str) -> bool {
        self.result_of(command).is_some()
    }

    /// True when the command's result is one the backtest assumed.
    pub fn result_assumed(&self, command: &str) -> bool {
        self.result_of(command).is_some_and(|r| r.assumed)
    }

    fn result_of(&self, command: &str) -> Option<&ResultLine> {
        let c = self.cmds.get(command)?;
        self.rows[c.row]
            .out
            .policy
            .commands
            .iter()
            .find(|l| l.id == command)?
            .result
            .as_ref()
    }

    fn set_result(&mut self, ts: Timestamp, r: &ActionResult, assumed: bool) -> Option<String> {
        let c = self.cmds.get(&r.command_id)?;
        let line = self.rows[c.row]
            .out
            .policy
            .commands
            .iter_mut()
            .find(|l| l.id == r.command_id)?;
        if line.result.is_some() {
            return None;
        }
        line.result = Some(ResultLine {
            at: ts,
            status: r.status.as_str().to_string(),
            assumed,
        });
        if assumed {
            self.results_assumed += 1;
        } else {
            self.results_recorded += 1;
        }
        Some(c.runbook.clone())
    }

    pub fn assumed_result(&mut self, ts: Timestamp, r: &ActionResult) {
        self.set_result(ts, r, true);
    }

    /// A result recorded in the stream; the command's runbook when the
    /// command is one of this policy's.
    pub fn recorded_result(&mut self, ts: Timestamp, r: &ActionResult) -> Option<String> {
        self.set_result(ts, r, false)
    }

    pub fn has_approval(&self, command: &str) -> bool {
        self.approved.contains(command)
    }

    pub fn assumed_approval(&mut self, _ts: Timestamp, a: &Approval) {
        self.approved.insert(a.command_id.clone());
    }

    pub fn recorded_approval(&mut self, ts: Timestamp, a: &Approval) {
        self.approved.insert(a.command_id.clone());
        if let Some(c) = self.cmds.get(&a.command_id) {
            self.rows[c.row]
                .out
                .recorded
                .human_actions
                .push(HumanAction {
                    at: ts,
                    kind: "approval".into(),
                    detail: format!("{} {} by {}", a.decision.as_str(), a.command_id, a.by),
                });
        }
    }

    pub fn recorded_change(&mut self, ts: Timestamp, c: &Change) {
        if c.state != ChangeState::Started || self.freeze_kinds.contains(&c.kind) {
            return;
        }
        let ring = self.changes.entry(c.service.clone()).or_default();
        if ring.len() == CHANGES_KEPT {
            ring.pop_front();
        }
        ring.push_back((ts, c.kind.clone(), c.id.clone()));
    }

    /// Notes a recorded alert; false when the engine must not see it (a
    /// re-send or the resolution of an alert an assumed fix cleared).
    pub fn recorded_alert(&mut self, ts: Timestamp, a: &Alert) -> bool {
        let service = a.labels.get("service").unwrap_or("unknown").to_string();
        let fp = a
            .fingerprint
            .clone()
            .unwrap_or_else(|| fingerprint(&a.labels));
        let key = (service, fp);
        match a.status {
            AlertStatus::Firing => !self.held_back.contains(&key),
            AlertStatus::Resolved => {
                if let Some(row) = self.awaiting.remove(&key) {
                    self.rows[row].out.recorded.resolved = Some(ts);
                    self.resolved.push(row);
                }
                !self.held_back.remove(&key)
            }
        }
    }

    /// The alert that opened an incident (none for burn-rate incidents).
    pub fn alert_trigger(&self, incident: &str) -> Option<TriggerRef> {
        let row = &self.rows[*self.by_id.get(incident)?];
        (row.out.source == "alert").then(|| TriggerRef {
            fingerprint: row.key.1.clone(),
            starts_at: row.starts_at,
            labels: row.labels.clone(),
        })
    }

    /// Holds back recorded firings of an alert until its recorded resolution.
    pub fn hold_back(&mut self, service: &str, fingerprint: &str) {
        self.held_back
            .insert((service.to_string(), fingerprint.to_string()));
    }

    fn running(&self, engine: &Engine, slos: &[usize]) -> Vec<Sums> {
        slos.iter().map(|&i| engine.slos().running(i)).collect()
    }

    /// Closes the recorded side of rows whose resolution has arrived:
    /// their budget spent and their human actions.
    pub fn close_resolved(&mut self, engine: &Engine) {
        if self.resolved.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.resolved);
        self.close_rows(engine, rows.into_iter(), None);
    }

    fn close_rows(
        &mut self,
        engine: &Engine,
        rows: impl Iterator<Item = usize>,
        end: Option<Timestamp>,
    ) {
        for r in rows {
            let row = &self.rows[r];
            if row.closed {
                continue;
            }
            let until = match (row.out.recorded.resolved, end) {
                (Some(t), _) => t,
                (None, Some(e)) => e,
                (None, None) => continue,
            };
            let now = self.running(engine, &row.slos);
            let mut spent = Vec::with_capacity(row.slos.len());
            let mut saved = Vec::with_capacity(row.slos.len());
            for (k, &slo) in row.slos.iter().enumerate() {
                let set = engine.slos();
                let inc = set.between(slo, row.open[k], now[k]);
                spent.push(inc.err);
                let s = match &row.mitigated {
                    Some(m) => {
                        let base = set.between(slo, Sums::default(), row.open[k]);
                        let after = set.between(slo, m[k], now[k]);
                        let ratio = if base.total == 0 {
                            0.0
                        } else {
                            base.err as f64 / base.total as f64
                        };
                        (after.err as f64 - ratio * after.total as f64).max(0.0) as u64
                    }
                    None => 0,
                };
                saved.push(s.min(inc.err));
            }
            let mut actions = Vec::new();
            if let Some(ring) = self.changes.get(&row.out.service) {
                for (t, kind, id) in ring {
                    if *t >= row.out.first_signal && *t <= until {
                        actions.push(HumanAction {
                            at: *t,
                            kind: format!("change:{kind}"),
                            detail: id.clone(),
                        });
                    }
                }
            }
            let row = &mut self.rows[r];
            row.spent = spent;
            row.saved = saved;
            row.out.recorded.human_actions.extend(actions);
            row.out.recorded.human_actions.sort_by_key(|h| h.at);
            row.closed = true;
        }
    }

    /// Samples burn rates when event time has passed the next sample.
    pub fn sample(&mut self, engine: &Engine) {
        let Some(now) = engine.now() else { return };
        if self.first.is_none() {
            self.first = Some(now);
        }
        let next = *self
            .next_sample
            .get_or_insert_with(|| now.floor(self.burn_step).0 + self.burn_step);
        if now.0 < next {
            return;
        }
        let at = now.floor(self.burn_step).0;
        for (i, pts) in self.burn.iter_mut().enumerate() {
            if let Some(b) = engine.slos().fast_burn(i) {
                pts.push((at, b));
            }
        }
        if self.burn.iter().any(|p| p.len() > BURN_POINTS) {
            self.burn_step *= 2;
            let step = self.burn_step;
            for pts in &mut self.burn {
                let mut merged: Vec<(i64, f64)> = Vec::with_capacity(pts.len() / 2 + 1);
                for &(t, b) in pts.iter() {
                    let t = t.div_euclid(step) * step;
                    match merged.last_mut() {
                        Some(last) if last.0 == t => last.1 = last.1.max(b),
                        _ => merged.push((t, b)),
                    }
                }
                *pts = merged;
            }
        }
        self.next_sample = Some(at + self.burn_step);
    }

    /// Notes one output of the engine.
    pub fn output(&mut self, e: &Emitted, engine: &Engine, policy: &Policy) {
        match &e.output {
            Output::Incident(i) => {
                let r = match self.by_id.get(&i.id) {
                    Some(&r) => r,
                    None => self.open_row(e.ts, i, engine),
                };
                let row = &mut self.rows[r];
                row.out.policy.state = i.state.as_str().to_string();
                if i.runbook.is_some() && row.out.policy.runbook.is_none() {
                    row.out.policy.runbook.clone_from(&i.runbook);
                }
                if i.state == crate::records::IncidentState::Resolved
                    && row.out.policy.mitigated.is_none()
                    && row.out.policy.commands.iter().any(|c| {
                        c.rollback_of.is_none()
                            && c.result.as_ref().is_some_and(|r| r.status == "succeeded")
                    })
                {
                    row.out.policy.mitigated = Some(e.ts);
                    let slos = row.slos.clone();
                    let now = self.running(engine, &slos);
                    self.rows[r].mitigated = Some(now);
                }
            }
            Output::Command(c) => {
                let Some(&r) = self.by_id.get(&c.incident) else {
                    return;
                };
                let p = &mut self.rows[r].out.policy;
                if c.rollback_of.is_none() {
                    p.first_action.get_or_insert(e.ts);
                    p.tier.get_or_insert(c.tier);
                    p.runbook.get_or_insert_with(|| c.runbook.clone());
                }
                p.commands.push(CommandLine {
                    id: c.id.clone(),
                    at: e.ts,
                    runbook: c.runbook.clone(),
                    tier: c.tier,
                    action: c.action.clone(),
                    target: c.target.clone(),
                    rollback_of: c.rollback_of.clone(),
                    result: None,
                });
                self.cmds.insert(
                    c.id.clone(),
                    Cmd {
                        row: r,
                        runbook: c.runbook.clone(),
                    },
                );
            }
            Output::ApprovalRequest(a) => {
                self.approvals_requested += 1;
                if let Some(&r) = self.by_id.get(&a.incident) {
                    let p = &mut self.rows[r].out.policy;
                    p.tier.get_or_insert(2);
                    p.runbook.get_or_insert_with(|| a.runbook.clone());
                    // So that a recorded approval finds its incident.
                    self.cmds.insert(
                        a.command_id.clone(),
                        Cmd {
                            row: r,
                            runbook: a.runbook.clone(),
                        },
                    );
                }
            }
            Output::Escalation(x) => {
                if let Some(&r) = self.by_id.get(&x.incident) {
                    let p = &mut self.rows[r].out.policy;
                    p.first_time |= x.reason == crate::records::EscalationReason::FirstTime;
                    p.escalations.push(EscalationLine {
                        at: e.ts,
                        reason: x.reason.as_str().to_string(),
                        severity: x.severity.as_str().to_string(),
                    });
                }
            }
            Output::Audit(a) => {
                let blocked: Vec<String> = a
                    .guardrails
                    .iter()
                    .filter(|g| !g.passed)
                    .map(|g| g.name.clone())
                    .collect();
                for b in &blocked {
                    *self.guardrail_blocks.entry(b.clone()).or_default() += 1;
                    if let Some(rb) = &a.runbook {
                        if b == "change_freeze" || b == "kill_switch" {
                            *self.near_misses.entry(rb.clone()).or_default() += 1;
                        }
                    }
                }
                let Some(&r) = a.incident.as_ref().and_then(|i| self.by_id.get(i)) else {
                    return;
                };
                let p = &mut self.rows[r].out.policy;
                p.guardrail_blocks.extend(blocked);
                p.decisions.push(DecisionLine {
                    at: e.ts,
                    decision: a.decision.clone(),
                    runbook: a.runbook.clone(),
                    reasons: a.reasons.clone(),
                });
            }
            Output::BurnAlert(b) => {
                let Some(&slo) = self.slo_by_name.get(&b.slo) else {
                    return;
                };
                match b.state {
                    BurnState::Firing if b.severity == Severity::Page => {
                        self.page_tiers_fired[slo] += 1;
                    }
                    BurnState::Resolved if !engine.slos().firing(slo, &policy.slos, b.severity) => {
                        let labels = burn_labels(&b.service, b.severity, &b.slo);
                        let key = (b.service.clone(), fingerprint(&labels));
                        if let Some(row) = self.awaiting.remove(&key) {
                            self.rows[row].out.recorded.resolved = Some(e.ts);
                            self.resolved.push(row);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn open_row(&mut self, ts: Timestamp, i: &crate::records::Incident, engine: &Engine) -> usize {
        let t = &i.trigger;
        let slos = match (t.source.as_str(), t.labels.get("slo")) {
            ("burn_rate", Some(name)) => self.slo_by_name.get(name).map(|i| vec![*i]),
            _ => None,
        }
        .or_else(|| self.slos_by_service.get(&i.service).cloned())
        .unwrap_or_default();
        let open = self.running(engine, &slos);
        let key = (i.service.clone(), t.fingerprint.clone());
        let r = self.rows.len();
        self.rows.push(Row {
            out: IncidentRow {
                id: i.id.clone(),
                service: i.service.clone(),
                source: t.source.clone(),
                alertname: t.alertname.clone(),
                severity: alert_severity(&t.labels).as_str().to_string(),
                first_signal: ts,
                recorded: RecordedTimeline::default(),
                policy: PolicyTimeline::default(),
                ttr_recorded_s: None,
                ttm_with_policy_s: None,
                page_recorded: false,
                page_with_policy: false,
                budget_recorded: 0.0,
                budget_with_policy: 0.0,
            },
            key: key.clone(),
            labels: t.labels.clone(),
            starts_at: t.starts_at,
            slos,
            open,
            mitigated: None,
            spent: Vec::new(),
            saved: Vec::new(),
            closed: false,
        });
        self.by_id.insert(i.id.clone(), r);
        self.awaiting.insert(key, r);
        r
    }

    /// The report of everything seen; `end` is the last event time.
    pub fn finish(
        mut self,
        end: Option<Timestamp>,
        engine: &Engine,
        policy: &Policy,
        assumptions: &Assumptions,
        history: &HashMap<String, (u64, u64)>,
        mut source: SourceInfo,
    ) -> Report {
        let all = 0..self.rows.len();
        self.close_rows(engine, all, end.or(Some(Timestamp(0))));
        source.first = source.first.or(self.first);
        source.last = source.last.or(end);
        let span = match (source.first, source.last) {
            (Some(a), Some(b)) if b.0 > a.0 => (b.0 - a.0) as f64,
            _ => MINUTE as f64,
        };
        // Share of the period's budget that `err` errors spend, given the
        // SLO's traffic over the stream.
        let totals_by_slo: Vec<u64> = (0..policy.slos.len())
            .map(|i| {
                engine
                    .slos()
                    .between(i, Sums::default(), engine.slos().running(i))
                    .total
            })
            .collect();
        let share = |slo: usize, err: u64| -> Option<f64> {
            let s = &policy.slos[slo];
            let total = totals_by_slo[slo];
            let budget = 1.0 - s.objective.to_f64();
            (total > 0 && budget > 0.0)
                .then(|| err as f64 * span / (budget * total as f64 * s.period.0 as f64))
        };

        let mut totals = Totals {
            incidents: self.rows.len(),
            approvals_requested: self.approvals_requested,
            guardrail_blocks: self.guardrail_blocks.clone(),
            results_recorded: self.results_recorded,
            results_assumed: self.results_assumed,
            ..Totals::default()
        };
        let mut saved_by_slo = vec![0u64; policy.slos.len()];
        let (mut ttr_sum, mut ttm_sum) = (0.0, 0.0);
        let mut rows = Vec::with_capacity(self.rows.len());
        for row in self.rows {
            let mut out = row.out;
            let first = out.first_signal;
            let secs = |t: Timestamp| (t.0 - first.0) as f64 / 1000.0;
            out.ttr_recorded_s = out.recorded.resolved.map(secs);
            let mitigated = out
                .policy
                .mitigated
                .filter(|m| out.recorded.resolved.is_none_or(|r| *m < r));
            out.ttm_with_policy_s = mitigated.map(secs).or(out.ttr_recorded_s);
            out.page_recorded = out.severity == "page";
            out.page_with_policy = out.policy.escalations.iter().any(|e| e.severity == "page");
            for (k, &slo) in row.slos.iter().enumerate() {
                let spent = row.spent.get(k).copied().unwrap_or(0);
                let saved = if mitigated.is_some() {
                    row.saved.get(k).copied().unwrap_or(0)
                } else {
                    0
                };
                saved_by_slo[slo] += saved;
                out.budget_recorded += share(slo, spent).unwrap_or(0.0);
                out.budget_with_policy += share(slo, spent - saved).unwrap_or(0.0);
            }
            if let (Some(r), Some(m)) = (out.ttr_recorded_s, out.ttm_with_policy_s) {
                totals.resolved_in_stream += 1;
                ttr_sum += r;
                ttm_sum += m;
            }
            if mitigated.is_some() {
                totals.mitigated_by_policy += 1;
                if out.page_recorded || !out.recorded.human_actions.is_empty() {
                    totals.manual_interventions_avoided += 1;
                }
            }
            totals.pages_recorded += usize::from(out.page_recorded);
            totals.pages_with_policy += usize::from(out.page_with_policy);
            totals.pages_avoided += usize::from(out.page_recorded && !out.page_with_policy);
            totals.pages_added += usize::from(!out.page_recorded && out.page_with_policy);
            for c in &out.policy.commands {
                if c.rollback_of.is_some() {
                    totals.rollbacks += 1;
                } else {
                    *totals
                        .actions_by_tier
                        .entry(c.tier.to_string())
                        .or_default() += 1;
                }
            }
            for e in &out.policy.escalations {
                *totals
                    .escalations_by_reason
                    .entry(e.reason.clone())
                    .or_default() += 1;
            }
            totals.first_time_failures += usize::from(out.policy.first_time);
            rows.push(out);
        }
        if totals.resolved_in_stream > 0 {
            let n = totals.resolved_in_stream as f64;
            totals.mttr_recorded_s = Some(ttr_sum / n);
            totals.mttr_with_policy_s = Some(ttm_sum / n);
        }

        let slos: Vec<SloBudget> = policy
            .slos
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let err = engine
                    .slos()
                    .between(i, Sums::default(), engine.slos().running(i))
                    .err;
                SloBudget {
                    slo: s.name.clone(),
                    service: s.service.clone(),
                    objective: s.objective.to_f64(),
                    period: s.period.to_string(),
                    budget_spent_recorded: share(i, err),
                    budget_spent_with_policy: share(i, err - saved_by_slo[i].min(err)),
                    page_tiers_fired: self.page_tiers_fired[i],
                }
            })
            .collect();

        let runbooks = evidence(policy, &rows, &self.near_misses);
        let candidates = candidates(&rows);
        let burn = burn_series(policy, &slos, &self.burn);
        let notes = notes(policy, assumptions, &totals);
        Report {
            policy: PolicyInfo {
                version: policy.version.clone(),
                slos: policy.slos.len(),
                runbooks: policy.runbooks.len(),
            },
            source,
            assumptions: AssumptionInfo {
                results: assumptions.results,
                action_time_s: assumptions.action_time.0 as f64 / 1000.0,
                approval_after_s: assumptions.approval_after.map(|d| d.0 as f64 / 1000.0),
                approver: policy.approvers.first().cloned(),
                history: history
                    .iter()
                    .map(|(k, &(s, n))| {
                        (
                            k.clone(),
                            HistoryRate {
                                succeeded: s,
                                results: n,
                            },
                        )
                    })
                    .collect(),
                notes,
            },
            totals,
            slos,
            incidents: rows,
            runbooks,
            candidates,
            burn,
            comparison: None,
        }
    }
}

fn burn_labels(service: &str, severity: Severity, slo: &str) -> Labels {
    Labels::from_pairs([
        ("alertname", "SLOBurnRate"),
        ("service", service),
        ("severity", severity.as_str()),
        ("slo", slo),
    ])
}

fn notes(policy: &Policy, a: &Assumptions, totals: &Totals) -> Vec<String> {
    let mut n = vec![
        "Nothing was executed: decisions were replayed in shadow mode.".to_string(),
        format!(
            "Results recorded in the stream were used ({}); {} were assumed.",
            totals.results_recorded, totals.results_assumed
        ),
    ];
    n.push(match a.results {
        ResultAssumption::Success => format!(
            "Assumed results: every action succeeds {} after its command and clears the alert that triggered it.",
            a.action_time
        ),
        ResultAssumption::Failure => format!(
            "Assumed results: every action fails {} after its command.",
            a.action_time
        ),
        ResultAssumption::History => format!(
            "Assumed results: each runbook succeeds at the rate of its results recorded earlier in the stream (success while it has none), {} after its command; a success clears the triggering alert.",
            a.action_time
        ),
    });
    n.push(match (a.approval_after, policy.approvers.first()) {
        (Some(d), Some(by)) => format!(
            "Tier-2 proposals without a recorded approval are approved by {by} {d} after the request."
        ),
        (Some(_), None) => {
            "The policy lists no approvers: tier-2 proposals time out unless the stream holds their approval.".to_string()
        }
        (None, _) => "Tier-2 proposals time out unless the stream holds their approval.".to_string(),
    });
    n.push("Burn-rate incidents and SLO validation use the recorded metrics: an assumed fix does not change them.".to_string());
    n.push("A recorded page is an incident whose trigger has a page severity (no severity label counts as page). Human actions are change events (not freeze kinds) on the service and approvals between the first signal and the recorded resolution.".to_string());
    n.push("Budget saved: errors after the policy's mitigation up to the recorded resolution, above the SLO's error ratio before the incident. Budget shares extrapolate the stream's traffic to the SLO period.".to_string());
    n
}

fn evidence(
    policy: &Policy,
    rows: &[IncidentRow],
    near_misses: &HashMap<String, usize>,
) -> Vec<RunbookEvidence> {
    let mut ev: Vec<RunbookEvidence> = policy
        .runbooks
        .iter()
        .map(|r| RunbookEvidence {
            runbook: r.name.clone(),
            tier: r.tier,
            near_misses: near_misses.get(&r.name).copied().unwrap_or(0),
            ..RunbookEvidence::default()
        })
        .collect();
    let index: HashMap<&str, usize> = policy
        .runbooks
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    for row in rows {
        let p = &row.policy;
        let mut named: Vec<&str> = p
            .decisions
            .iter()
            .filter_map(|d| d.runbook.as_deref())
            .collect();
        named.sort_unstable();
        named.dedup();
        for rb in named {
            if let Some(&i) = index.get(rb) {
                ev[i].matched += 1;
            }
        }
        for c in &p.commands {
            let Some(&i) = index.get(c.runbook.as_str()) else {
                continue;
            };
            if c.rollback_of.is_some() {
                ev[i].rollbacks += 1;
            } else {
                ev[i].acted += 1;
            }
        }
        let Some(i) = p.runbook.as_deref().and_then(|rb| index.get(rb).copied()) else {
            continue;
        };
        ev[i].failures += p
            .escalations
            .iter()
            .filter(|e| e.reason == "action_failed" || e.reason == "validation_failed")
            .count();
        if p.mitigated.is_some() {
            let assumed = p
                .commands
                .iter()
                .filter(|c| c.rollback_of.is_none())
                .filter_map(|c| c.result.as_ref())
                .any(|r| r.status == "succeeded" && r.assumed);
            if assumed {
                ev[i].validated_assumed += 1;
            } else {
                ev[i].validated_recorded += 1;
            }
        }
    }
    for e in &mut ev {
        (e.recommendation, e.why) = if e.tier >= 2 && e.failures == 0 {
            if e.validated_recorded >= PROMOTE_AFTER {
                (
                    "promote".to_string(),
                    format!(
                        "{} fixes validated on recorded results, no failures",
                        e.validated_recorded
                    ),
                )
            } else if e.validated_recorded + e.validated_assumed >= PROMOTE_AFTER {
                (
                    "none".to_string(),
                    format!(
                        "{} validated fixes, but {} rest on assumed results: record real results first",
                        e.validated_recorded + e.validated_assumed,
                        e.validated_assumed
                    ),
                )
            } else {
                (
                    "none".to_string(),
                    format!(
                        "{} of {PROMOTE_AFTER} validated fixes needed",
                        e.validated_recorded
                    ),
                )
            }
        } else if e.tier == 1 && e.failures > 0 {
            (
                "demote".to_string(),
                format!("{} failed or unconfirmed fixes", e.failures),
            )
        } else if e.failures > 0 {
            (
                "none".to_string(),
                format!("{} failed or unconfirmed fixes", e.failures),
            )
        } else {
            ("none".to_string(), String::new())
        };
    }
    ev
}

const WEEKDAYS: [&str; 7] = [
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
];

/// How a set of incident times recurs.
fn pattern(times: &[Timestamp]) -> String {
    let n = times.len();
    let day = crate::time::DAY;
    let span =
        times.iter().map(|t| t.0).max().unwrap_or(0) - times.iter().map(|t| t.0).min().unwrap_or(0);
    let days: HashSet<i64> = times.iter().map(|t| t.0.div_euclid(day)).collect();
    if n >= 3 && days.len() >= 3 {
        // Most incidents within an hour either side of the commonest hour.
        let mut per_hour = [0usize; 24];
        for t in times {
            per_hour[(t.0.rem_euclid(day) / (60 * MINUTE)) as usize] += 1;
        }
        let near = |h: usize| per_hour[(h + 23) % 24] + per_hour[h] + per_hour[(h + 1) % 24];
        let best = (0..24)
            .max_by_key(|&h| (near(h), per_hour[h], std::cmp::Reverse(h)))
            .unwrap_or(0);
        if near(best) * 10 >= n * 6 {
            return format!("daily around {best:02}:00 UTC");
        }
    }
    if n >= 2 && span >= 13 * day {
        let mut by_day = [0usize; 7];
        for t in times {
            by_day[(t.0.div_euclid(day)).rem_euclid(7) as usize] += 1;
        }
        if let Some((d, c)) = by_day.iter().enumerate().max_by_key(|(_, c)| **c) {
            if c * 10 >= n * 6 {
                return format!("weekly on {}", WEEKDAYS[d]);
            }
        }
    }
    "recurring".to_string()
}

fn candidates(rows: &[IncidentRow]) -> Vec<Candidate> {
    let mut groups: BTreeMap<(&str, &str), Vec<&IncidentRow>> = BTreeMap::new();
    for r in rows {
        let tier1 = r.policy.tier == Some(1) && r.policy.mitigated.is_some();
        if !tier1 {
            groups
                .entry((r.service.as_str(), r.alertname.as_str()))
                .or_default()
                .push(r);
        }
    }
    let mut out: Vec<Candidate> = groups
        .into_iter()
        .filter(|(_, v)| v.len() >= 2)
        .map(|((service, alertname), v)| {
            let times: Vec<Timestamp> = v.iter().map(|r| r.first_signal).collect();
            let mut handled: Vec<String> = Vec::new();
            let mut human: BTreeMap<String, usize> = BTreeMap::new();
            for r in &v {
                let h = match (&r.policy.runbook, r.policy.tier) {
                    (Some(rb), Some(t)) if r.policy.mitigated.is_some() => {
                        format!("tier {t} runbook {rb}")
                    }
                    _ => match r.policy.escalations.first() {
                        Some(e) => format!("escalated: {}", e.reason),
                        None => format!("ended {}", r.policy.state),
                    },
                };
                if !handled.contains(&h) {
                    handled.push(h);
                }
                for a in &r.recorded.human_actions {
                    *human.entry(a.kind.clone()).or_default() += 1;
                }
            }
            Candidate {
                service: service.to_string(),
                alertname: alertname.to_string(),
                occurrences: v.len(),
                pattern: pattern(&times),
                budget_spent: v.iter().map(|r| r.budget_recorded).sum(),
                pages: v.iter().filter(|r| r.page_recorded).count(),
                handled_by: handled,
                human_actions: human,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.budget_spent
            .total_cmp(&a.budget_spent)
            .then(b.pages.cmp(&a.pages))
            .then(b.occurrences.cmp(&a.occurrences))
            .then(a.service.cmp(&b.service))
            .then(a.alertname.cmp(&b.alertname))
    });
    out.truncate(CANDIDATES);
    out
}

fn burn_series(
    policy: &Policy,
    budgets: &[SloBudget],
    burn: &[Vec<(i64, f64)>],
) -> Vec<BurnSeries> {
    let mut order: Vec<usize> = (0..policy.slos.len())
        .filter(|&i| !burn[i].is_empty())
        .collect();
    order.sort_by(|&a, &b| {
        budgets[b]
            .page_tiers_fired
            .cmp(&budgets[a].page_tiers_fired)
            .then(
                budgets[b]
                    .budget_spent_recorded
                    .unwrap_or(0.0)
                    .total_cmp(&budgets[a].budget_spent_recorded.unwrap_or(0.0)),
            )
            .then(a.cmp(&b))
    });
    order.truncate(BURN_SERIES);
    order
        .into_iter()
        .filter_map(|i| {
            let s = &policy.slos[i];
            let first = s.tiers.first()?;
            Some(BurnSeries {
                slo: s.name.clone(),
                window: first.long.to_string(),
                thresholds: s
                    .tiers
                    .iter()
                    .filter(|t| t.long == first.long)
                    .map(|t| (t.severity.as_str().to_string(), t.factor.to_f64()))
                    .collect(),
                points: burn[i].clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).expect("time")
    }

    #[test]
    fn daily_pattern_is_found_around_its_hour() {
        let t: Vec<Timestamp> = (1..=5)
            .map(|d| at(&format!("2026-03-0{d}T03:{:02}:00Z", d * 7)))
            .collect();
        assert_eq!(pattern(&t), "daily around 03:00 UTC");
    }

    #[test]
    fn weekly_pattern_needs_two_weeks() {
        // 2026-03-02 is a Monday.
        let t = vec![
            at("2026-03-02T10:00:00Z"),
            at("2026-03-09T16:00:00Z"),
            at("2026-03-16T22:00:00Z"),
        ];
        assert_eq!(pattern(&t), "weekly on Monday");
        let short = vec![at("2026-03-02T10:00:00Z"), at("2026-03-03T16:00:00Z")];
        assert_eq!(pattern(&short), "recurring");
    }
}
