//! Policy comparison: the decisions two policies make on one stream.
//!
//! Both policies replay the same records side by side. Incidents are
//! matched by id (ids derive from the trigger, not the policy); an incident
//! differs when the sequence of its decisions (time, kind, runbook)
//! differs, and the difference shows both sides from the first decision
//! that differs, with each side's reasons from its audit.

use std::fmt::Write as _;

use serde::Serialize;

use super::report::{DecisionLine, PolicyInfo, Report, RunbookEvidence, Totals};
use crate::time::Timestamp;

/// The second policy of a comparison and how its decisions differ.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub policy: PolicyInfo,
    pub totals: Totals,
    pub runbooks: Vec<RunbookEvidence>,
    pub differences: Vec<Difference>,
}

/// One incident the two policies decide differently.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub incident: String,
    pub service: String,
    pub alertname: String,
    pub first_signal: Timestamp,
    /// Index of the first decision that differs.
    pub from: usize,
    /// Each side's decisions from that one on.
    pub a: Vec<DecisionLine>,
    pub b: Vec<DecisionLine>,
    pub a_outcome: String,
    pub b_outcome: String,
}

fn same(x: &DecisionLine, y: &DecisionLine) -> bool {
    x.at == y.at && x.decision == y.decision && x.runbook == y.runbook
}

fn outcome(r: Option<&super::report::IncidentRow>) -> String {
    match r {
        None => "no incident".into(),
        Some(r) => {
            let p = &r.policy;
            match (p.mitigated, p.escalations.last()) {
                (Some(m), _) => format!("mitigated at {m}"),
                (None, Some(e)) => format!("{} ({} {})", p.state, e.severity, e.reason),
                (None, None) => p.state.clone(),
            }
        }
    }
}

/// Every incident `a` and `b` decide differently, in first-signal order.
pub fn compare(a: &Report, b: &Report) -> Comparison {
    let by_id: std::collections::HashMap<&str, &super::report::IncidentRow> =
        b.incidents.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut seen = std::collections::HashSet::new();
    let mut diffs = Vec::new();
    for ra in &a.incidents {
        seen.insert(ra.id.as_str());
        let rb = by_id.get(ra.id.as_str()).copied();
        let (da, db) = (
            &ra.policy.decisions,
            rb.map_or(&[][..], |r| &r.policy.decisions[..]),
        );
        let from = da.iter().zip(db).take_while(|(x, y)| same(x, y)).count();
        if from == da.len() && from == db.len() {
            continue;
        }
        diffs.push(Difference {
            incident: ra.id.clone(),
            service: ra.service.clone(),
            alertname: ra.alertname.clone(),
            first_signal: ra.first_signal,
            from,
            a: da[from..].to_vec(),
            b: db[from..].to_vec(),
            a_outcome: outcome(Some(ra)),
            b_outcome: outcome(rb),
        });
    }
    for rb in b.incidents.iter().filter(|r| !seen.contains(r.id.as_str())) {
        diffs.push(Difference {
            incident: rb.id.clone(),
            service: rb.service.clone(),
            alertname: rb.alertname.clone(),
            first_signal: rb.first_signal,
            from: 0,
            a: Vec::new(),
            b: rb.policy.decisions.clone(),
            a_outcome: outcome(None),
            b_outcome: outcome(Some(rb)),
        });
    }
    diffs.sort_by(|x, y| {
        x.first_signal
            .cmp(&y.first_signal)
            .then(x.incident.cmp(&y.incident))
    });
    Comparison {
        policy: b.policy.clone(),
        totals: b.totals.clone(),
        runbooks: b.runbooks.clone(),
        differences: diffs,
    }
}

fn line(out: &mut String, side: &str, d: &DecisionLine) {
    let _ = writeln!(
        out,
        "  {side} {} {}{}: {}",
        d.at,
        d.decision,
        d.runbook
            .as_deref()
            .map(|r| format!(" [{r}]"))
            .unwrap_or_default(),
        d.reasons.join("; ")
    );
}

fn secs(v: Option<f64>) -> String {
    v.map_or("-".into(), |s| format!("{s:.0}s"))
}

/// The comparison as text: the differences, then the totals side by side.
pub fn render_text(a: &Report, c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "A = policy {}, B = policy {}: {} incident(s) decided differently",
        a.policy.version,
        c.policy.version,
        c.differences.len()
    );
    for d in &c.differences {
        let _ = writeln!(
            out,
            "\n{} {} {} (first signal {})",
            d.incident, d.service, d.alertname, d.first_signal
        );
        for x in &d.a {
            line(&mut out, "A", x);
        }
        if d.a.is_empty() {
            let _ = writeln!(out, "  A (no further decisions)");
        }
        for x in &d.b {
            line(&mut out, "B", x);
        }
        if d.b.is_empty() {
            let _ = writeln!(out, "  B (no further decisions)");
        }
        let _ = writeln!(out, "  outcome: A {} | B {}", d.a_outcome, d.b_outcome);
    }
    let (ta, tb) = (&a.totals, &c.totals);
    let rows: Vec<(&str, String, String)> = vec![
        (
            "incidents",
            ta.incidents.to_string(),
            tb.incidents.to_string(),
        ),
        (
            "MTTR recorded",
            secs(ta.mttr_recorded_s),
            secs(tb.mttr_recorded_s),
        ),
        (
            "MTTR with policy",
            secs(ta.mttr_with_policy_s),
            secs(tb.mttr_with_policy_s),
        ),
        (
            "mitigated by policy",
            ta.mitigated_by_policy.to_string(),
            tb.mitigated_by_policy.to_string(),
        ),
        (
            "manual interventions avoided",
            ta.manual_interventions_avoided.to_string(),
            tb.manual_interventions_avoided.to_string(),
        ),
        (
            "pages with policy",
            ta.pages_with_policy.to_string(),
            tb.pages_with_policy.to_string(),
        ),
        (
            "pages avoided",
            ta.pages_avoided.to_string(),
            tb.pages_avoided.to_string(),
        ),
        (
            "pages added",
            ta.pages_added.to_string(),
            tb.pages_added.to_string(),
        ),
        (
            "actions by tier",
            fmt_map(&ta.actions_by_tier),
            fmt_map(&tb.actions_by_tier),
        ),
        (
            "approvals requested",
            ta.approvals_requested.to_string(),
            tb.approvals_requested.to_string(),
        ),
        (
            "rollbacks",
            ta.rollbacks.to_string(),
            tb.rollbacks.to_string(),
        ),
        (
            "escalations",
            fmt_map(&ta.escalations_by_reason),
            fmt_map(&tb.escalations_by_reason),
        ),
        (
            "guardrail blocks",
            fmt_map(&ta.guardrail_blocks),
            fmt_map(&tb.guardrail_blocks),
        ),
    ];
    let _ = writeln!(out, "\n{:<30} {:<28} B", "totals", "A");
    for (k, x, y) in rows {
        let _ = writeln!(out, "{k:<30} {x:<28} {y}");
    }
    out
}

fn fmt_map(m: &std::collections::BTreeMap<String, usize>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
