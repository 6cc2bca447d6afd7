//! The what-if report of a backtest, as written to `--report FILE.json`.
//!
//! Times are RFC 3339 UTC; durations are seconds (`*_s`); error budget
//! shares are fractions of the SLO's budget for its whole period (1.0 =
//! the period's budget), extrapolated from the stream's traffic.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ResultAssumption;
use crate::time::Timestamp;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub policy: PolicyInfo,
    pub source: SourceInfo,
    pub assumptions: AssumptionInfo,
    pub totals: Totals,
    pub slos: Vec<SloBudget>,
    pub incidents: Vec<IncidentRow>,
    pub runbooks: Vec<RunbookEvidence>,
    pub candidates: Vec<Candidate>,
    /// Burn rate over time for the SLOs that fired or spent most budget.
    pub burn: Vec<BurnSeries>,
    /// With `--compare`: the second policy and every decision that differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<super::compare::Comparison>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyInfo {
    pub version: String,
    pub slos: usize,
    pub runbooks: usize,
}

/// What was replayed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceInfo {
    pub name: String,
    pub records: usize,
    pub bad: usize,
    pub late: usize,
    pub first: Option<Timestamp>,
    pub last: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AssumptionInfo {
    pub results: ResultAssumption,
    pub action_time_s: f64,
    /// `None`: proposals are never approved unless the stream says so.
    pub approval_after_s: Option<f64>,
    /// The approver used for assumed approvals.
    pub approver: Option<String>,
    /// Success rates used per runbook under `history`.
    pub history: BTreeMap<String, HistoryRate>,
    /// Every assumption in words.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryRate {
    pub succeeded: u64,
    pub results: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub incidents: usize,
    /// Incidents whose recorded resolution is in the stream.
    pub resolved_in_stream: usize,
    /// Mean time to resolve as recorded, over incidents resolved in the stream.
    pub mttr_recorded_s: Option<f64>,
    /// Estimated mean time to mitigate with the policy, same incidents.
    pub mttr_with_policy_s: Option<f64>,
    pub mitigated_by_policy: usize,
    /// Incidents a human paged or acted on that the policy would have
    /// mitigated first.
    pub manual_interventions_avoided: usize,
    pub pages_recorded: usize,
    pub pages_with_policy: usize,
    pub pages_avoided: usize,
    pub pages_added: usize,
    /// Commands by tier (rollbacks not counted).
    pub actions_by_tier: BTreeMap<String, usize>,
    pub approvals_requested: usize,
    pub rollbacks: usize,
    pub escalations_by_reason: BTreeMap<String, usize>,
    pub guardrail_blocks: BTreeMap<String, usize>,
    pub first_time_failures: usize,
    /// Results recorded in the stream vs assumed.
    pub results_recorded: usize,
    pub results_assumed: usize,
}

/// Error budget of one SLO over the stream.
#[derive(Debug, Clone, Serialize)]
pub struct SloBudget {
    pub slo: String,
    pub service: String,
    pub objective: f64,
    pub period: String,
    /// Share of the period's budget the recorded stream spent.
    pub budget_spent_recorded: Option<f64>,
    /// Estimated share with the policy's actions.
    pub budget_spent_with_policy: Option<f64>,
    pub page_tiers_fired: usize,
}

/// One incident: the recorded timeline beside what the policy did.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentRow {
    pub id: String,
    pub service: String,
    /// `alert` or `burn_rate`.
    pub source: String,
    pub alertname: String,
    pub severity: String,
    pub first_signal: Timestamp,
    pub recorded: RecordedTimeline,
    pub policy: PolicyTimeline,
    /// Recorded time to resolve, when resolved in the stream.
    pub ttr_recorded_s: Option<f64>,
    /// Estimated time to mitigate with the policy.
    pub ttm_with_policy_s: Option<f64>,
    pub page_recorded: bool,
    pub page_with_policy: bool,
    /// Error budget this incident spent (share of the period's budget,
    /// summed over the service's SLOs) as recorded and with the policy.
    pub budget_recorded: f64,
    pub budget_with_policy: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RecordedTimeline {
    pub resolved: Option<Timestamp>,
    pub human_actions: Vec<HumanAction>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HumanAction {
    pub at: Timestamp,
    /// `change:<kind>` or `approval`.
    pub kind: String,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PolicyTimeline {
    pub runbook: Option<String>,
    pub tier: Option<u8>,
    pub first_action: Option<Timestamp>,
    /// When the policy's action mitigated the incident.
    pub mitigated: Option<Timestamp>,
    /// Last incident state the engine reached.
    pub state: String,
    pub decisions: Vec<DecisionLine>,
    pub commands: Vec<CommandLine>,
    pub escalations: Vec<EscalationLine>,
    pub guardrail_blocks: Vec<String>,
    pub first_time: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionLine {
    pub at: Timestamp,
    pub decision: String,
    pub runbook: Option<String>,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommandLine {
    pub id: String,
    pub at: Timestamp,
    pub runbook: String,
    pub tier: u8,
    pub action: String,
    pub target: String,
    pub rollback_of: Option<String>,
    pub result: Option<ResultLine>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResultLine {
    pub at: Timestamp,
    pub status: String,
    /// True when the backtest assumed it; false when the stream held it.
    pub assumed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct EscalationLine {
    pub at: Timestamp,
    pub reason: String,
    pub severity: String,
}

/// Promotion evidence for one runbook.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunbookEvidence {
    pub runbook: String,
    pub tier: u8,
    /// Incidents whose decisions named this runbook.
    pub matched: usize,
    /// Commands it would have sent (rollbacks not counted).
    pub acted: usize,
    /// Fixes confirmed after a recorded success.
    pub validated_recorded: usize,
    /// Fixes confirmed after an assumed success.
    pub validated_assumed: usize,
    /// `action_failed` and `validation_failed` escalations.
    pub failures: usize,
    pub rollbacks: usize,
    /// Actions a change freeze or the kill switch blocked.
    pub near_misses: usize,
    /// `promote`, `demote` or `none`.
    pub recommendation: String,
    pub why: String,
}

/// A recurring incident pattern that no tier-1 runbook handles.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub service: String,
    pub alertname: String,
    pub occurrences: usize,
    /// `daily around 03:00 UTC`, `weekly on Monday`, or `recurring`.
    pub pattern: String,
    pub budget_spent: f64,
    pub pages: usize,
    /// What the policy did instead (escalation reasons, tier-2 runbooks).
    pub handled_by: Vec<String>,
    /// Human actions recorded during these incidents, by kind.
    pub human_actions: BTreeMap<String, usize>,
}

/// Burn rate over the first tier's long window, sampled over time.
#[derive(Debug, Clone, Serialize)]
pub struct BurnSeries {
    pub slo: String,
    pub window: String,
    /// Tier factors over that window's tiers: (severity, factor).
    pub thresholds: Vec<(String, f64)>,
    /// (time in ms since the epoch, burn rate); the highest value of each
    /// step is kept.
    pub points: Vec<(i64, f64)>,
}

fn secs(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(s) if s >= 3600.0 => format!("{:.1}h", s / 3600.0),
        Some(s) if s >= 60.0 => format!("{:.1}m", s / 60.0),
        Some(s) => format!("{s:.0}s"),
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
}

/// The report in a few lines of text, for the terminal.
pub fn summary(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let t = &r.totals;
    let _ = writeln!(
        o,
        "backtest of policy {} over {} records ({} to {})",
        r.policy.version,
        r.source.records,
        r.source.first.map_or("-".into(), |t| t.to_string()),
        r.source.last.map_or("-".into(), |t| t.to_string()),
    );
    let _ = writeln!(
        o,
        "incidents {} (resolved in stream {}), mitigated by policy {}, manual interventions avoided {}",
        t.incidents, t.resolved_in_stream, t.mitigated_by_policy, t.manual_interventions_avoided
    );
    let _ = writeln!(
        o,
        "MTTR recorded {} -> with policy {}; pages {} -> {} (avoided {}, added {})",
        secs(t.mttr_recorded_s),
        secs(t.mttr_with_policy_s),
        t.pages_recorded,
        t.pages_with_policy,
        t.pages_avoided,
        t.pages_added
    );
    let tiers: Vec<String> = t
        .actions_by_tier
        .iter()
        .map(|(k, v)| format!("tier {k}: {v}"))
        .collect();
    let _ = writeln!(
        o,
        "actions {}; approvals requested {}; rollbacks {}; first-time failures {}",
        if tiers.is_empty() {
            "none".into()
        } else {
            tiers.join(", ")
        },
        t.approvals_requested,
        t.rollbacks,
        t.first_time_failures
    );
    if !t.guardrail_blocks.is_empty() {
        let g: Vec<String> = t
            .guardrail_blocks
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(o, "guardrail blocks: {}", g.join(", "));
    }
    let mut slos: Vec<&SloBudget> = r
        .slos
        .iter()
        .filter(|s| s.budget_spent_recorded.unwrap_or(0.0) > 0.0)
        .collect();
    slos.sort_by(|a, b| {
        b.budget_spent_recorded
            .unwrap_or(0.0)
            .total_cmp(&a.budget_spent_recorded.unwrap_or(0.0))
    });
    if !slos.is_empty() {
        let _ = writeln!(o, "error budget spent (recorded -> with policy):");
        for s in slos.iter().take(10) {
            let _ = writeln!(
                o,
                "  {:<32} {:>8} -> {:>8}",
                s.slo,
                pct(s.budget_spent_recorded),
                pct(s.budget_spent_with_policy)
            );
        }
    }
    let ev: Vec<&RunbookEvidence> = r.runbooks.iter().filter(|e| e.matched > 0).collect();
    if !ev.is_empty() {
        let _ = writeln!(
            o,
            "runbooks (matched/acted/validated/failed/rolled back/near misses):"
        );
        for e in ev {
            let _ = writeln!(
                o,
                "  {:<28} tier {} {}/{}/{}+{}a/{}/{}/{}  {}{}",
                e.runbook,
                e.tier,
                e.matched,
                e.acted,
                e.validated_recorded,
                e.validated_assumed,
                e.failures,
                e.rollbacks,
                e.near_misses,
                e.recommendation,
                if e.why.is_empty() {
                    String::new()
                } else {
                    format!(": {}", e.why)
                }
            );
        }
    }
    if !r.candidates.is_empty() {
        let _ = writeln!(o, "automation candidates:");
        for c in r.candidates.iter().take(5) {
            let _ = writeln!(
                o,
                "  {} {}: {}x, {}, budget {}, pages {}",
                c.service,
                c.alertname,
                c.occurrences,
                c.pattern,
                pct(Some(c.budget_spent)),
                c.pages
            );
        }
    }
    o
}
