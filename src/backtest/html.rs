//! The what-if report as one self-contained HTML page: inline styles and
//! inline SVG charts, no scripts and no outside references, so it reads
//! the same offline and from an attachment.
//!
//! Every piece of text from the report (service names, labels, reasons)
//! comes from outside data and goes through [`escape`].

use std::fmt::Write as _;

use super::compare::Comparison;
use super::report::{BurnSeries, IncidentRow, Report};
use crate::time::Timestamp;

/// Incidents drawn on the timeline (those with the most budget spent).
const TIMELINE_ROWS: usize = 200;

/// Text made safe for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn dur(s: Option<f64>) -> String {
    match s {
        None => "–".into(),
        Some(s) if s >= 3600.0 => format!("{:.1}h", s / 3600.0),
        Some(s) if s >= 60.0 => format!("{:.1}m", s / 60.0),
        Some(s) => format!("{s:.0}s"),
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{:.2}%", x * 100.0))
}

fn ts(t: Option<Timestamp>) -> String {
    t.map_or("–".into(), |t| t.to_string())
}

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330;max-width:1300px}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dde6;padding-bottom:4px}\
.meta{color:#5a6270}.notes{background:#fff8e1;border:1px solid #f0d68a;padding:8px 14px;border-radius:6px}\
.notes li{margin:2px 0}table{border-collapse:collapse;margin:6px 0}th,td{padding:3px 9px;border-bottom:1px solid #e6e9ef;text-align:left;vertical-align:top}\
th{background:#f3f5f8;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.bar{display:inline-block;height:9px;background:#d9534f;border-radius:2px}.bar.p{background:#5cb85c}\
.promote{color:#1e7e34;font-weight:600}.demote{color:#b02a37;font-weight:600}.assumed{color:#8a6d00;font-style:italic}\
details{margin:0}summary{cursor:pointer}.charts{display:flex;flex-wrap:wrap;gap:14px}\
.chart{border:1px solid #e6e9ef;border-radius:6px;padding:6px}svg text{font:11px system-ui,sans-serif;fill:#5a6270}\
.legend span{display:inline-block;margin-right:14px}.sw{display:inline-block;width:12px;height:8px;margin-right:4px;vertical-align:middle}\
code{font-size:12px}.diff td{font-size:13px}";

/// The report as one HTML page.
pub fn render(r: &Report) -> String {
    let mut o = String::with_capacity(64 * 1024);
    let _ = write!(
        o,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>selfheal backtest {}</title><style>{STYLE}</style></head><body>",
        escape(&r.policy.version)
    );
    let _ = write!(
        o,
        "<h1>What policy {} would have done</h1><div class=\"meta\">{} records from <code>{}</code>, {} to {} · {} SLOs, {} runbooks · {} bad, {} late</div>",
        escape(&r.policy.version),
        r.source.records,
        escape(&r.source.name),
        ts(r.source.first),
        ts(r.source.last),
        r.policy.slos,
        r.policy.runbooks,
        r.source.bad,
        r.source.late
    );
    o.push_str("<h2>Assumptions</h2><ul class=\"notes\">");
    for n in &r.assumptions.notes {
        let _ = write!(o, "<li>{}</li>", escape(n));
    }
    o.push_str("</ul>");
    totals(&mut o, r);
    slos(&mut o, r);
    if !r.burn.is_empty() {
        o.push_str("<h2>Burn rate over time</h2><div class=\"charts\">");
        for b in &r.burn {
            burn_chart(&mut o, b);
        }
        o.push_str("</div>");
    }
    timeline(&mut o, r);
    incidents(&mut o, r);
    runbooks(&mut o, r);
    candidates(&mut o, r);
    if let Some(c) = &r.comparison {
        comparison(&mut o, r, c);
    }
    o.push_str("</body></html>\n");
    o
}

fn totals(o: &mut String, r: &Report) {
    let t = &r.totals;
    o.push_str("<h2>Totals</h2><table><tr><th></th><th>recorded</th><th>with the policy</th></tr>");
    let mut row = |k: &str, a: String, b: String| {
        let _ = write!(
            o,
            "<tr><td>{k}</td><td class=\"n\">{a}</td><td class=\"n\">{b}</td></tr>"
        );
    };
    row(
        "incidents",
        t.incidents.to_string(),
        format!("{} mitigated", t.mitigated_by_policy),
    );
    row(
        "MTTR (incidents resolved in the stream)",
        dur(t.mttr_recorded_s),
        dur(t.mttr_with_policy_s),
    );
    row(
        "pages",
        t.pages_recorded.to_string(),
        format!(
            "{} ({} avoided, {} added)",
            t.pages_with_policy, t.pages_avoided, t.pages_added
        ),
    );
    row(
        "manual interventions",
        String::new(),
        format!("{} avoided", t.manual_interventions_avoided),
    );
    let tiers: Vec<String> = t
        .actions_by_tier
        .iter()
        .map(|(k, v)| format!("tier {k}: {v}"))
        .collect();
    row("actions", String::new(), escape(&tiers.join(", ")));
    row(
        "approvals requested / rollbacks",
        String::new(),
        format!("{} / {}", t.approvals_requested, t.rollbacks),
    );
    let esc: Vec<String> = t
        .escalations_by_reason
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    row("escalations", String::new(), escape(&esc.join(", ")));
    let g: Vec<String> = t
        .guardrail_blocks
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    row("guardrail blocks", String::new(), escape(&g.join(", ")));
    row(
        "first-time failures",
        String::new(),
        t.first_time_failures.to_string(),
    );
    row(
        "results used",
        format!("{} recorded", t.results_recorded),
        format!(
            "<span class=\"assumed\">{} assumed</span>",
            t.results_assumed
        ),
    );
    o.push_str("</table>");
}

fn slos(o: &mut String, r: &Report) {
    let mut v: Vec<_> = r
        .slos
        .iter()
        .filter(|s| s.budget_spent_recorded.is_some())
        .collect();
    if v.is_empty() {
        return;
    }
    v.sort_by(|a, b| {
        b.budget_spent_recorded
            .unwrap_or(0.0)
            .total_cmp(&a.budget_spent_recorded.unwrap_or(0.0))
    });
    let max = v[0].budget_spent_recorded.unwrap_or(0.0).max(1e-12);
    o.push_str("<h2>Error budget spent</h2><table><tr><th>SLO</th><th>service</th><th>objective</th><th>page tiers fired</th><th>recorded</th><th>with the policy</th><th></th></tr>");
    for s in v.iter().take(50) {
        let a = s.budget_spent_recorded.unwrap_or(0.0);
        let b = s.budget_spent_with_policy.unwrap_or(0.0);
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{:.3}% / {}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td><span class=\"bar\" style=\"width:{:.0}px\"></span><br><span class=\"bar p\" style=\"width:{:.0}px\"></span></td></tr>",
            escape(&s.slo),
            escape(&s.service),
            s.objective * 100.0,
            escape(&s.period),
            s.page_tiers_fired,
            pct(Some(a)),
            pct(Some(b)),
            160.0 * a / max,
            160.0 * b / max
        );
    }
    if v.len() > 50 {
        let _ = write!(o, "<tr><td colspan=\"7\">… {} more</td></tr>", v.len() - 50);
    }
    o.push_str("</table><div class=\"legend\"><span><i class=\"sw\" style=\"background:#d9534f\"></i>recorded</span><span><i class=\"sw\" style=\"background:#5cb85c\"></i>with the policy</span></div>");
}

/// Round tick values for an axis from 0 to `max`.
fn ticks(max: f64) -> Vec<f64> {
    if max <= 0.0 {
        return vec![0.0];
    }
    let raw = max / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(raw);
    (0..=8)
        .map(|i| i as f64 * step)
        .take_while(|v| *v <= max * 1.0001)
        .collect()
}

fn time_label(ms: i64, span: i64) -> String {
    let t = Timestamp(ms).to_string();
    // 2026-03-01T10:00:00Z
    if span > 2 * crate::time::DAY {
        t.get(5..10).unwrap_or(&t).to_string()
    } else {
        t.get(5..16).unwrap_or(&t).replace('T', " ")
    }
}

fn burn_chart(o: &mut String, b: &BurnSeries) {
    let (w, h, l, rpad, top, bot) = (420.0, 180.0, 40.0, 10.0, 10.0, 24.0);
    let pts = &b.points;
    let t0 = pts.first().map_or(0, |p| p.0);
    let t1 = pts.last().map_or(1, |p| p.0).max(t0 + 1);
    let hi_threshold = b.thresholds.iter().map(|t| t.1).fold(0.0, f64::max);
    let data_max = pts.iter().map(|p| p.1).fold(0.0, f64::max);
    // Spikes far above the thresholds are clamped so the thresholds stay readable.
    let cap = (hi_threshold * 4.0).max(1.0);
    let ymax = (data_max.min(cap).max(hi_threshold) * 1.1).max(1.0);
    let x = |t: i64| l + (t - t0) as f64 / (t1 - t0) as f64 * (w - l - rpad);
    let y = |v: f64| top + (1.0 - v.min(ymax) / ymax) * (h - top - bot);
    let _ = write!(
        o,
        "<div class=\"chart\"><div><b>{}</b> burn rate over {}</div><svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\">",
        escape(&b.slo),
        escape(&b.window)
    );
    for v in ticks(ymax) {
        let _ = write!(
            o,
            "<line x1=\"{l}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eef0f4\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            w - rpad,
            l - 4.0,
            y(v) + 4.0,
            fmt_num(v),
            y = y(v)
        );
    }
    let span = t1 - t0;
    for i in 0..=3 {
        let t = t0 + span * i / 3;
        let anchor = match i {
            0 => "start",
            3 => "end",
            _ => "middle",
        };
        let _ = write!(
            o,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
            x(t),
            h - 6.0,
            time_label(t, span)
        );
    }
    for (sev, f) in &b.thresholds {
        let color = if sev == "page" { "#b02a37" } else { "#c77c02" };
        let _ = write!(
            o,
            "<line x1=\"{l}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"{color}\" stroke-dasharray=\"5 4\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" style=\"fill:{color}\">{} {}</text>",
            w - rpad,
            w - rpad - 2.0,
            y(*f) - 3.0,
            escape(sev),
            fmt_num(*f),
            yy = y(*f)
        );
    }
    if pts.len() == 1 {
        let _ = write!(
            o,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#2463eb\"/>",
            x(pts[0].0),
            y(pts[0].1)
        );
    } else if !pts.is_empty() {
        let path: Vec<String> = pts
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1)))
            .collect();
        let _ = write!(
            o,
            "<polyline fill=\"none\" stroke=\"#2463eb\" stroke-width=\"1.5\" points=\"{}\"/>",
            path.join(" ")
        );
    }
    if data_max > ymax {
        let _ = write!(
            o,
            "<text x=\"{}\" y=\"{}\" style=\"fill:#b02a37\">peak {} (clipped)</text>",
            l + 4.0,
            top + 10.0,
            fmt_num(data_max)
        );
    }
    o.push_str("</svg></div>");
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn end_of(r: &Report, i: &IncidentRow) -> Timestamp {
    i.recorded
        .resolved
        .or(r.source.last)
        .unwrap_or(i.first_signal)
}

fn timeline(o: &mut String, r: &Report) {
    if r.incidents.is_empty() {
        return;
    }
    let mut rows: Vec<&IncidentRow> = r.incidents.iter().collect();
    if rows.len() > TIMELINE_ROWS {
        rows.sort_by(|a, b| b.budget_recorded.total_cmp(&a.budget_recorded));
        rows.truncate(TIMELINE_ROWS);
    }
    rows.sort_by_key(|i| i.first_signal);
    let t0 = r
        .source
        .first
        .unwrap_or(rows[0].first_signal)
        .0
        .min(rows[0].first_signal.0);
    let t1 = rows
        .iter()
        .map(|i| end_of(r, i).0)
        .max()
        .unwrap_or(t0)
        .max(r.source.last.map_or(t0, |t| t.0))
        .max(t0 + 1);
    let (w, label, rpad, rh, top) = (1200.0, 260.0, 10.0, 16.0, 22.0);
    let h = top + rows.len() as f64 * rh + 8.0;
    let x = |t: i64| label + (t - t0) as f64 / (t1 - t0) as f64 * (w - label - rpad);
    o.push_str("<h2>Incident timeline</h2><div class=\"legend\"><span><i class=\"sw\" style=\"background:#e39a9a\"></i>recorded: first signal to resolution</span><span><i class=\"sw\" style=\"background:#f3d3d3\"></i>unresolved at the end of the stream</span><span><i class=\"sw\" style=\"background:#5cb85c\"></i>with the policy: to mitigation</span><span>◆ policy action</span><span>● human action</span><span style=\"color:#b02a37\">▲ page by the policy</span></div>");
    if r.incidents.len() > rows.len() {
        let _ = write!(
            o,
            "<p class=\"meta\">The {} incidents that spent the most budget are drawn; {} more are in the table.</p>",
            rows.len(),
            r.incidents.len() - rows.len()
        );
    }
    let _ = write!(
        o,
        "<svg width=\"{w}\" height=\"{h:.0}\" viewBox=\"0 0 {w} {h:.0}\" role=\"img\">"
    );
    let span = t1 - t0;
    for i in 0..=5 {
        let t = t0 + span * i / 5;
        let xx = x(t);
        let anchor = if i == 5 { "end" } else { "middle" };
        let _ = write!(
            o,
            "<line x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"{}\" y2=\"{h:.0}\" stroke=\"#eef0f4\"/><text x=\"{xx:.1}\" y=\"12\" text-anchor=\"{anchor}\">{}</text>",
            top - 4.0,
            time_label(t, span)
        );
    }
    for (k, i) in rows.iter().enumerate() {
        let yy = top + k as f64 * rh;
        let name = format!("{} {}", i.service, i.alertname);
        let _ = write!(
            o,
            "<text x=\"0\" y=\"{:.1}\">{}</text>",
            yy + 11.0,
            escape(&truncate(&name, 40))
        );
        let (a, b) = (x(i.first_signal.0), x(end_of(r, i).0));
        let fill = if i.recorded.resolved.is_some() {
            "#e39a9a"
        } else {
            "#f3d3d3"
        };
        let _ = write!(
            o,
            "<rect x=\"{a:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"6\" fill=\"{fill}\"><title>{} recorded: {} to {} ({})</title></rect>",
            yy + 2.0,
            (b - a).max(1.5),
            escape(&i.id),
            i.first_signal,
            ts(i.recorded.resolved),
            dur(i.ttr_recorded_s)
        );
        if let Some(m) = i.policy.mitigated {
            let _ = write!(
                o,
                "<rect x=\"{a:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"5\" fill=\"#5cb85c\"><title>with the policy: mitigated at {m} ({})</title></rect>",
                yy + 9.0,
                (x(m.0) - a).max(1.5),
                dur(i.ttm_with_policy_s)
            );
        }
        for c in i.policy.commands.iter() {
            let _ = write!(
                o,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" style=\"fill:#2463eb\">◆<title>{} {} {} (tier {})</title></text>",
                x(c.at.0),
                yy + 12.0,
                c.at,
                escape(&c.action),
                escape(&c.target),
                c.tier
            );
        }
        for h in &i.recorded.human_actions {
            let _ = write!(
                o,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#333\"><title>{} {} {}</title></circle>",
                x(h.at.0),
                yy + 5.0,
                h.at,
                escape(&h.kind),
                escape(&h.detail)
            );
        }
        for e in i.policy.escalations.iter().filter(|e| e.severity == "page") {
            let _ = write!(
                o,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" style=\"fill:#b02a37\">▲<title>{} page: {}</title></text>",
                x(e.at.0),
                yy + 13.0,
                e.at,
                escape(&e.reason)
            );
        }
    }
    o.push_str("</svg>");
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

fn policy_did(i: &IncidentRow) -> String {
    let p = &i.policy;
    let mut parts = Vec::new();
    if let (Some(rb), Some(t)) = (&p.runbook, p.tier) {
        parts.push(format!("tier {t} {rb}"));
    }
    if let Some(m) = p.mitigated {
        parts.push(format!("mitigated {m}"));
    }
    let reasons: Vec<&str> = p.escalations.iter().map(|e| e.reason.as_str()).collect();
    if !reasons.is_empty() {
        parts.push(format!("escalated: {}", reasons.join(", ")));
    }
    if !p.guardrail_blocks.is_empty() {
        parts.push(format!("blocked by {}", p.guardrail_blocks.join(", ")));
    }
    parts.push(format!("ended {}", p.state));
    parts.join("; ")
}

fn incidents(o: &mut String, r: &Report) {
    if r.incidents.is_empty() {
        o.push_str("<h2>Incidents</h2><p>None in the stream.</p>");
        return;
    }
    o.push_str("<h2>Incidents</h2><table><tr><th>incident</th><th>first signal</th><th>TTR recorded</th><th>TTM with the policy</th><th>pages</th><th>budget</th><th>what the policy did</th><th>human actions</th></tr>");
    for i in &r.incidents {
        let humans: Vec<String> = i
            .recorded
            .human_actions
            .iter()
            .map(|h| format!("{} {}", h.kind, h.detail))
            .collect();
        let _ = write!(
            o,
            "<tr><td><details><summary>{} <b>{}</b> {}</summary>",
            escape(&i.service),
            escape(&i.alertname),
            escape(&i.id)
        );
        o.push_str("<table>");
        for d in &i.policy.decisions {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                d.at,
                escape(&d.decision),
                escape(d.runbook.as_deref().unwrap_or("")),
                escape(&d.reasons.join("; "))
            );
        }
        for c in &i.policy.commands {
            let res = match &c.result {
                None => "no result".to_string(),
                Some(x) if x.assumed => format!(
                    "<span class=\"assumed\">{} at {} (assumed)</span>",
                    escape(&x.status),
                    x.at
                ),
                Some(x) => format!("{} at {} (recorded)", escape(&x.status), x.at),
            };
            let _ = write!(
                o,
                "<tr><td>{}</td><td>command</td><td>{}</td><td><code>{} {}</code>{} → {res}</td></tr>",
                c.at,
                escape(&c.runbook),
                escape(&c.action),
                escape(&c.target),
                if c.rollback_of.is_some() {
                    " (rollback)"
                } else {
                    ""
                }
            );
        }
        o.push_str("</table></details></td>");
        let _ = write!(
            o,
            "<td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{} → {}</td><td class=\"n\">{} → {}</td><td>{}</td><td>{}</td></tr>",
            i.first_signal,
            dur(i.ttr_recorded_s),
            dur(i.ttm_with_policy_s),
            if i.page_recorded { "page" } else { "–" },
            if i.page_with_policy { "page" } else { "–" },
            pct(Some(i.budget_recorded)),
            pct(Some(i.budget_with_policy)),
            escape(&policy_did(i)),
            escape(&humans.join(", "))
        );
    }
    o.push_str("</table>");
}

fn runbooks(o: &mut String, r: &Report) {
    if r.runbooks.is_empty() {
        return;
    }
    o.push_str("<h2>Promotion evidence</h2><table><tr><th>runbook</th><th>tier</th><th>matched</th><th>acted</th><th>validated (recorded)</th><th>validated (assumed)</th><th>failures</th><th>rollbacks</th><th>near misses</th><th>recommendation</th></tr>");
    for e in &r.runbooks {
        let _ = write!(
            o,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n assumed\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td><span class=\"{}\">{}</span> {}</td></tr>",
            escape(&e.runbook),
            e.tier,
            e.matched,
            e.acted,
            e.validated_recorded,
            e.validated_assumed,
            e.failures,
            e.rollbacks,
            e.near_misses,
            escape(&e.recommendation),
            escape(&e.recommendation),
            escape(&e.why)
        );
    }
    o.push_str("</table>");
}

fn candidates(o: &mut String, r: &Report) {
    o.push_str("<h2>Automation candidates</h2>");
    if r.candidates.is_empty() {
        o.push_str("<p>No recurring incident left to humans.</p>");
        return;
    }
    o.push_str("<table><tr><th>service</th><th>alert</th><th>occurrences</th><th>pattern</th><th>budget spent</th><th>pages</th><th>handled by</th><th>human actions recorded</th></tr>");
    for c in &r.candidates {
        let human: Vec<String> = c
            .human_actions
            .iter()
            .map(|(k, v)| format!("{k} ×{v}"))
            .collect();
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.service),
            escape(&c.alertname),
            c.occurrences,
            escape(&c.pattern),
            pct(Some(c.budget_spent)),
            c.pages,
            escape(&c.handled_by.join("; ")),
            escape(&human.join(", "))
        );
    }
    o.push_str("</table>");
}

fn comparison(o: &mut String, r: &Report, c: &Comparison) {
    let _ = write!(
        o,
        "<h2>Comparison: A = {} , B = {}</h2>",
        escape(&r.policy.version),
        escape(&c.policy.version)
    );
    let (a, b) = (&r.totals, &c.totals);
    o.push_str("<table><tr><th></th><th>A</th><th>B</th></tr>");
    let mut row = |k: &str, x: String, y: String| {
        let _ = write!(
            o,
            "<tr><td>{k}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&x),
            escape(&y)
        );
    };
    row(
        "MTTR with the policy",
        dur(a.mttr_with_policy_s),
        dur(b.mttr_with_policy_s),
    );
    row(
        "mitigated",
        a.mitigated_by_policy.to_string(),
        b.mitigated_by_policy.to_string(),
    );
    row(
        "pages",
        a.pages_with_policy.to_string(),
        b.pages_with_policy.to_string(),
    );
    row(
        "manual interventions avoided",
        a.manual_interventions_avoided.to_string(),
        b.manual_interventions_avoided.to_string(),
    );
    let tiers = |m: &std::collections::BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, v)| format!("tier {k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    row(
        "actions",
        tiers(&a.actions_by_tier),
        tiers(&b.actions_by_tier),
    );
    row(
        "approvals requested",
        a.approvals_requested.to_string(),
        b.approvals_requested.to_string(),
    );
    row(
        "rollbacks",
        a.rollbacks.to_string(),
        b.rollbacks.to_string(),
    );
    o.push_str("</table>");
    let _ = write!(
        o,
        "<p>{} incident(s) decided differently.</p>",
        c.differences.len()
    );
    for d in &c.differences {
        let _ = write!(
            o,
            "<details open><summary>{} <b>{}</b> {} — first signal {}</summary><table class=\"diff\"><tr><th></th><th>time</th><th>decision</th><th>runbook</th><th>reasons</th></tr>",
            escape(&d.service),
            escape(&d.alertname),
            escape(&d.incident),
            d.first_signal
        );
        for (side, lines) in [("A", &d.a), ("B", &d.b)] {
            if lines.is_empty() {
                let _ = write!(
                    o,
                    "<tr><td>{side}</td><td colspan=\"4\">no further decisions</td></tr>"
                );
            }
            for l in lines {
                let _ = write!(
                    o,
                    "<tr><td>{side}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    l.at,
                    escape(&l.decision),
                    escape(l.runbook.as_deref().unwrap_or("")),
                    escape(&l.reasons.join("; "))
                );
            }
        }
        let _ = write!(
            o,
            "<tr><td colspan=\"5\">outcome: A {} · B {}</td></tr></table></details>",
            escape(&d.a_outcome),
            escape(&d.b_outcome)
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backtest::{run, Assumptions, Recorded};
    use crate::policy::parse;
    use crate::replay::JsonLines;

    fn report(input: &str, policy: &str) -> Report {
        let policy = Arc::new(parse(policy, "p.yaml").expect("policy"));
        let mut src = JsonLines::new(input.as_bytes(), None);
        run(
            policy,
            None,
            &Assumptions::default(),
            0,
            &mut src,
            "test.jsonl",
            Recorded::default(),
            None,
            |_| {},
            |_, _| {},
        )
        .expect("backtest")
    }

    const SCENARIO: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/backtest/tier1_saves_mttr"
    );

    #[test]
    fn the_page_is_self_contained_with_charts_and_notes() {
        let input = std::fs::read_to_string(format!("{SCENARIO}/input.jsonl")).expect("input");
        let policy = std::fs::read_to_string(format!("{SCENARIO}/policy.yaml")).expect("policy");
        let r = report(&input, &policy);
        let page = render(&r);
        assert!(!page.contains("http://") && !page.contains("https://"));
        assert!(!page.contains("<script") && !page.contains("<link"));
        // One chart per burn series plus the incident timeline.
        assert_eq!(page.matches("<svg").count(), r.burn.len() + 1);
        assert!(!r.burn.is_empty());
        assert!(page.contains(&r.incidents[0].id));
        assert!(page.contains("Nothing was executed"));
        assert!(page.contains("(assumed)"));
    }

    #[test]
    fn text_from_the_stream_is_escaped() {
        let input = concat!(
            r#"{"ts":"2026-03-01T10:00:00Z","kind":"alert","data":{"status":"firing","labels":{"alertname":"<script>alert(1)</script>","service":"a&b\"<img>"},"startsAt":"2026-03-01T10:00:00Z"}}"#,
            "\n"
        );
        let page = render(&report(input, "runbooks: []\n"));
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("<img>"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("a&amp;b&quot;&lt;img&gt;"));
    }

    #[test]
    fn axis_ticks_are_round() {
        assert_eq!(ticks(15.84), vec![0.0, 5.0, 10.0, 15.0]);
        assert_eq!(ticks(1.1), vec![0.0, 0.5, 1.0]);
    }
}
