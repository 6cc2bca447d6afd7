//! Signals to incidents: alerts and burn-rate tiers open, update or
//! resolve incidents; a new incident is matched against the runbooks and
//! handled by tier, through the guardrails.

use std::collections::BTreeMap;

use crate::policy::{ActionSpec, Runbook};
use crate::records::{
    Alert, AlertStatus, ApprovalRequest, BurnAlert, BurnState, Command, Emitted, Escalation,
    EscalationReason, Incident, IncidentState, Labels, Output, Severity, Trigger,
};
use crate::slo::BurnChange;
use crate::time::Timestamp;

use super::guardrails;
use super::ids;
use super::state::{CommandInfo, Inc, TimerKind};
use super::{Decision, Engine};

/// Something that can open an incident: an alert or a firing burn tier.
pub(crate) struct Signal {
    pub service: String,
    pub fingerprint: String,
    pub labels: Labels,
    pub annotations: Labels,
    pub starts_at: Timestamp,
    pub source: &'static str,
    pub severity: Severity,
    pub slo: Option<usize>,
    pub input: String,
}

impl Signal {
    fn from_alert(ts: Timestamp, a: &Alert) -> Signal {
        let service = a.labels.get("service").unwrap_or("unknown").to_string();
        let fingerprint = a
            .fingerprint
            .clone()
            .unwrap_or_else(|| ids::fingerprint(&a.labels));
        let severity = alert_severity(&a.labels);
        let input = format!(
            "alert@{ts}:{}:{} fingerprint={fingerprint}",
            a.alertname(),
            a.status.as_str()
        );
        Signal {
            service,
            fingerprint,
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_at: a.starts_at.unwrap_or(ts),
            source: "alert",
            severity,
            slo: None,
            input,
        }
    }

    fn key(&self) -> (String, String) {
        (self.service.clone(), self.fingerprint.clone())
    }
}

/// How urgent an alert is: `severity` of ticket, warning, info or low is a
/// ticket; anything else, or none, pages.
pub fn alert_severity(labels: &Labels) -> Severity {
    match labels.get("severity") {
        Some("ticket" | "warning" | "info" | "low") => Severity::Ticket,
        _ => Severity::Page,
    }
}

/// An action with its templates filled in.
pub(crate) struct Rendered {
    pub target: String,
    pub params: BTreeMap<String, String>,
    pub args: Vec<String>,
}

/// Renders an action's target, params and args from the trigger's labels
/// and, for a rollback, the `previous` values the result of the command it
/// undoes recorded. A `k8s.scale` command gets the runbook's
/// `kubernetes.max_replicas` as its `max_replicas` param.
pub(crate) fn render(
    spec: &ActionSpec,
    labels: &Labels,
    annotations: &Labels,
    previous: Option<&BTreeMap<String, String>>,
    kubernetes: Option<&crate::policy::Kubernetes>,
) -> Result<Rendered, crate::policy::TemplateError> {
    let target = spec.target.render_with(labels, annotations, previous)?;
    let mut params = BTreeMap::new();
    for (k, t) in &spec.params {
        params.insert(k.clone(), t.render_with(labels, annotations, previous)?);
    }
    if spec.kind == "k8s.scale" {
        if let Some(m) = kubernetes.and_then(|k| k.max_replicas) {
            params.insert("max_replicas".to_string(), m.to_string());
        }
    }
    let args = render_args(&spec.args, labels, annotations, previous)?;
    Ok(Rendered {
        target,
        params,
        args,
    })
}

/// Renders an argument vector, one element per template. Until a literal
/// `--` element, an element that begins with a placeholder whose value
/// begins with `-` is refused, so a label such as `--kubeconfig=/tmp/x`
/// cannot become an option of the program.
fn render_args(
    args: &[crate::policy::Template],
    labels: &Labels,
    annotations: &Labels,
    previous: Option<&BTreeMap<String, String>>,
) -> Result<Vec<String>, crate::policy::TemplateError> {
    let mut out = Vec::with_capacity(args.len());
    let mut options_ended = false;
    for t in args {
        let rendered = t.render_with(labels, annotations, previous)?;
        if !options_ended && rendered.starts_with('-') {
            if let Some(name) = t.leading_placeholder() {
                return Err(crate::policy::TemplateError::OptionLike(rendered, name));
            }
        }
        if t.as_str() == "--" {
            options_ended = true;
        }
        out.push(rendered);
    }
    Ok(out)
}

pub(crate) fn incident_record(
    inc: &Inc,
    state: IncidentState,
    reason: &str,
    rb: Option<&Runbook>,
) -> Output {
    Output::Incident(Incident {
        id: inc.id.clone(),
        service: inc.service.clone(),
        state,
        trigger: inc.trigger.clone(),
        reason: reason.to_string(),
        runbook: rb.map(|r| r.name.clone()),
    })
}

impl Engine {
    pub(crate) fn on_alerts(&mut self, ts: Timestamp, alerts: &[Alert], out: &mut Vec<Emitted>) {
        for a in alerts.iter().filter(|a| a.status == AlertStatus::Resolved) {
            let sig = Signal::from_alert(ts, a);
            self.resolve_trigger(ts, &sig.key(), &sig.input, out);
        }
        let mut firing: Vec<(f64, usize, Signal)> = alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Firing)
            .enumerate()
            .map(|(i, a)| {
                let sig = Signal::from_alert(ts, a);
                (self.impact(&sig.service, None), i, sig)
            })
            .collect();
        firing.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, _, sig) in firing {
            self.fire(ts, sig, out);
        }
    }

    pub(crate) fn on_boundary(&mut self, at: Timestamp, out: &mut Vec<Emitted>) {
        let mut changes = Vec::new();
        let policy = self.policy.clone();
        self.slos.evaluate(at, &policy.slos, &mut changes);
        if changes.is_empty() {
            return;
        }
        for c in &changes {
            self.burn_alert(at, c, out);
        }
        // Tiers that started firing, one signal per (SLO, severity), highest impact first.
        let mut firing: Vec<(f64, usize, Severity)> = Vec::new();
        for c in changes.iter().filter(|c| c.firing) {
            let sev = policy.slos[c.slo].tiers[c.tier].severity;
            if !firing.iter().any(|f| f.1 == c.slo && f.2 == sev) {
                firing.push((
                    self.slos.impact(c.slo, policy.slos[c.slo].period),
                    c.slo,
                    sev,
                ));
            }
        }
        firing.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        for (_, slo, sev) in firing {
            let sig = self.burn_signal(at, slo, sev);
            self.fire(at, sig, out);
        }
        let mut resolved_slos: Vec<usize> = Vec::new();
        for c in changes.iter().filter(|c| !c.firing) {
            let sev = policy.slos[c.slo].tiers[c.tier].severity;
            if !self.slos.firing(c.slo, &policy.slos, sev) {
                let sig = self.burn_signal(at, c.slo, sev);
                self.resolve_trigger(at, &sig.key(), &sig.input, out);
            }
            if sev == Severity::Page && !resolved_slos.contains(&c.slo) {
                resolved_slos.push(c.slo);
            }
        }
        // A page tier resolving may confirm fixes validated on that SLO.
        for slo in resolved_slos {
            let waiting: Vec<String> = self
                .state
                .incidents
                .values()
                .filter(|i| i.state == IncidentState::Validating && i.trigger_resolved)
                .filter(|i| {
                    i.runbook
                        .is_some_and(|r| policy.runbooks[r].validate.slo == Some(slo))
                })
                .map(|i| i.id.clone())
                .collect();
            for id in waiting {
                let input = format!(
                    "minute@{at}:slo {} page tiers resolved",
                    policy.slos[slo].name
                );
                self.try_confirm(at, &id, &input, out);
            }
        }
    }

    fn burn_alert(&mut self, at: Timestamp, c: &BurnChange, out: &mut Vec<Emitted>) {
        let slo = &self.policy.slos[c.slo];
        let tier = &slo.tiers[c.tier];
        let factor = tier.factor.to_f64();
        let fmt = |b: Option<f64>| b.map_or("no traffic".to_string(), |v| format!("{v:.3}"));
        let mut d = Decision::new(at, &slo.service, "burn_alert", format!("minute@{at}"));
        d.reason(format!(
            "burn rate over {} is {} and over {} is {}; factor {}",
            tier.long,
            fmt(c.burn_long),
            tier.short,
            fmt(c.burn_short),
            factor
        ));
        d.reason(if c.firing {
            "both windows above the factor: tier fires".to_string()
        } else {
            "no longer both above the factor: tier resolves".to_string()
        });
        d.emit(Output::BurnAlert(BurnAlert {
            slo: slo.name.clone(),
            service: slo.service.clone(),
            severity: tier.severity,
            long_window: tier.long.to_string(),
            short_window: tier.short.to_string(),
            factor,
            burn_long: c.burn_long,
            burn_short: c.burn_short,
            state: if c.firing {
                BurnState::Firing
            } else {
                BurnState::Resolved
            },
            budget_remaining: c.budget_remaining,
        }));
        self.commit(d, out);
    }

    fn burn_signal(&self, at: Timestamp, slo: usize, severity: Severity) -> Signal {
        let s = &self.policy.slos[slo];
        let labels = Labels::from_pairs([
            ("alertname", "SLOBurnRate"),
            ("service", s.service.as_str()),
            ("severity", severity.as_str()),
            ("slo", s.name.as_str()),
        ]);
        Signal {
            service: s.service.clone(),
            fingerprint: ids::fingerprint(&labels),
            labels,
            annotations: Labels::new(),
            starts_at: at,
            source: "burn_rate",
            severity,
            slo: Some(slo),
            input: format!("minute@{at}:slo {} {} tier", s.name, severity.as_str()),
        }
    }

    /// A signal fired: update its open incident or open a new one.
    fn fire(&mut self, ts: Timestamp, sig: Signal, out: &mut Vec<Emitted>) {
        let key = sig.key();
        if let Some(id) = self.state.by_key.get(&key).cloned() {
            let Some(inc) = self.state.incidents.get_mut(&id) else {
                return;
            };
            inc.last_starts_at = inc.last_starts_at.max(sig.starts_at);
            let mut d = Decision::new(ts, &sig.service, "incident_updated", sig.input);
            d.incident = Some(id);
            d.reason(format!(
                "{} fired again while its incident is {}: grouped, no new incident",
                sig.labels.get("alertname").unwrap_or(""),
                inc.state.as_str()
            ));
            if inc.trigger_resolved {
                inc.trigger_resolved = false;
                d.reason("trigger is firing again: the fix is not confirmed");
            }
            self.commit(d, out);
            return;
        }
        if self
            .state
            .closed_start(&key)
            .is_some_and(|t| sig.starts_at <= t)
        {
            let mut d = Decision::new(ts, &sig.service, "alert_ignored", sig.input);
            d.reason(format!(
                "repeat of an alert (startsAt {}) whose incident is already resolved",
                sig.starts_at
            ));
            self.commit(d, out);
            return;
        }
        self.open_incident(ts, sig, out);
    }

    fn open_incident(&mut self, ts: Timestamp, sig: Signal, out: &mut Vec<Emitted>) {
        let alertname = sig.labels.get("alertname").unwrap_or("").to_string();
        let first_seen = self
            .state
            .seen
            .entry(sig.service.clone())
            .or_default()
            .insert(alertname.clone());
        let policy = self.policy.clone();
        let rb_index = policy.runbook_for(&sig.labels);
        let id = ids::incident_id(&sig.service, &sig.fingerprint, sig.starts_at);
        let slo = sig
            .slo
            .or_else(|| rb_index.and_then(|r| policy.runbooks[r].validate.slo));
        let inc = Inc {
            id: id.clone(),
            service: sig.service.clone(),
            key: sig.key(),
            trigger: Trigger {
                source: sig.source.to_string(),
                alertname: alertname.clone(),
                fingerprint: sig.fingerprint.clone(),
                starts_at: sig.starts_at,
                labels: sig.labels.clone(),
            },
            annotations: sig.annotations.clone(),
            state: IncidentState::Opened,
            runbook: rb_index,
            slo,
            trigger_resolved: false,
            last_starts_at: sig.starts_at,
            commands: Vec::new(),
            proposal: None,
            validate_until: None,
        };
        let mut d = Decision::new(ts, &sig.service, "escalate", sig.input);
        d.incident = Some(id.clone());
        let rb = rb_index.map(|r| &policy.runbooks[r]);
        d.emit(incident_record(
            &inc,
            IncidentState::Opened,
            &format!("{alertname} fired"),
            rb,
        ));
        self.state.by_key.insert(inc.key.clone(), id.clone());
        self.state
            .by_service
            .entry(inc.service.clone())
            .or_default()
            .insert(id.clone());
        self.state.incidents.insert(id.clone(), inc);
        let Some(r) = rb_index else {
            let (reason, sev, why) = if first_seen {
                let sev = policy.guardrails.first_time;
                (
                    EscalationReason::FirstTime,
                    sev,
                    format!(
                        "{alertname} never seen before on {} and no runbook matches",
                        sig.service
                    ),
                )
            } else {
                (
                    EscalationReason::NoRunbook,
                    sig.severity,
                    format!("no runbook matches {alertname}"),
                )
            };
            d.reason(why.clone());
            self.escalate(&id, reason, sev, &why, &mut d);
            self.commit(d, out);
            return;
        };
        let rb = &policy.runbooks[r];
        d.runbook = Some(rb.name.clone());
        d.reason(format!("matched runbook {} (tier {})", rb.name, rb.tier));
        if rb.tier >= 3 {
            let why = format!("runbook {} is tier 3: a human decides", rb.name);
            d.reason(why.clone());
            self.escalate(&id, EscalationReason::Tier3, sig.severity, &why, &mut d);
            self.commit(d, out);
            return;
        }
        self.propose_or_act(ts, &id, r, None, d, out);
    }

    /// Renders the runbook's action and runs the guardrails; then emits the
    /// command (tier 1, or tier 2 once approved) or the approval request.
    pub(crate) fn propose_or_act(
        &mut self,
        ts: Timestamp,
        id: &str,
        r: usize,
        approved_by: Option<&str>,
        mut d: Decision,
        out: &mut Vec<Emitted>,
    ) {
        let policy = self.policy.clone();
        let rb = &policy.runbooks[r];
        let Some(inc) = self.state.incidents.get(id) else {
            return;
        };
        let service = inc.service.clone();
        let rendered = render(
            &rb.action,
            &inc.trigger.labels,
            &inc.annotations,
            None,
            rb.kubernetes.as_ref(),
        );
        let Rendered {
            target,
            params,
            args,
        } = match rendered {
            Ok(x) => x,
            Err(e) => {
                let why = format!("cannot render the action of runbook {}: {e}", rb.name);
                self.suppress(id, EscalationReason::Guardrail, &why, &mut d);
                self.commit(d, out);
                return;
            }
        };
        let verdict = guardrails::evaluate(
            &policy,
            &self.state,
            &self.slos,
            rb,
            &service,
            id,
            &target,
            ts,
        );
        d.guardrails = verdict.checks;
        if let Some((reason, why)) = verdict.blocked {
            d.kind = "guardrail_blocked";
            let why = format!("automation blocked by guardrail {why}");
            self.suppress(id, reason, &why, &mut d);
            self.commit(d, out);
            return;
        }
        let cmd_id = ids::command_id(id, &rb.name, 1);
        let cmd = Command {
            id: cmd_id.clone(),
            incident: id.to_string(),
            runbook: rb.name.clone(),
            action: rb.action.kind.clone(),
            target: target.clone(),
            params,
            args,
            tier: rb.tier,
            deadline: ts.plus(rb.deadline),
            timeout: rb.action.timeout.to_string(),
            rollback_of: None,
            service: service.clone(),
        };
        self.state.commands.insert(cmd_id.clone(), id.to_string());
        let Some(inc) = self.state.incidents.get_mut(id) else {
            return;
        };
        if rb.tier == 2 && approved_by.is_none() {
            let expires = ts.plus(rb.guardrails.approval_timeout);
            inc.state = IncidentState::AwaitingApproval;
            inc.commands
                .push(CommandInfo::of(&cmd, "awaiting_approval"));
            let summary = format!(
                "{} {} for {} ({})",
                cmd.action, target, inc.trigger.alertname, service
            );
            let why = format!("tier 2: {summary} waits for an approver until {expires}");
            d.kind = "propose";
            d.reason(why.clone());
            d.emit(incident_record(
                inc,
                IncidentState::AwaitingApproval,
                &why,
                Some(rb),
            ));
            d.emit(Output::ApprovalRequest(ApprovalRequest {
                command_id: cmd_id.clone(),
                incident: id.to_string(),
                runbook: rb.name.clone(),
                summary,
                expires,
                service,
                action: cmd.action.clone(),
                target,
                approvers: policy.approvers.clone(),
            }));
            inc.proposal = Some(cmd);
            self.state
                .timers
                .insert((expires, TimerKind::ApprovalExpiry, cmd_id));
            self.commit(d, out);
            return;
        }
        inc.state = IncidentState::Remediating;
        inc.proposal = None;
        match inc.command_mut(&cmd_id) {
            Some(c) => c.outcome = "pending".into(),
            None => inc.commands.push(CommandInfo::of(&cmd, "pending")),
        }
        let why = match approved_by {
            Some(by) => format!("approved by {by}: {} {target}", cmd.action),
            None => format!("tier 1: {} {target} at once", cmd.action),
        };
        d.kind = "act";
        d.reason(why.clone());
        d.emit(incident_record(
            inc,
            IncidentState::Remediating,
            &why,
            Some(rb),
        ));
        let wait_until = cmd.deadline.plus(rb.action.timeout);
        d.emit(Output::Command(cmd));
        guardrails::record_action(&mut self.state, rb, &target, ts);
        self.state
            .timers
            .insert((wait_until, TimerKind::ResultTimeout, cmd_id));
        self.commit(d, out);
    }

    /// Moves an incident to `escalated` and adds the escalation record.
    pub(crate) fn escalate(
        &mut self,
        id: &str,
        reason: EscalationReason,
        severity: Severity,
        summary: &str,
        d: &mut Decision,
    ) {
        self.hand_over(id, IncidentState::Escalated, reason, severity, summary, d);
    }

    /// A guardrail blocked automation: the incident is `suppressed` and a
    /// human is paged with the reason. Never silence.
    pub(crate) fn suppress(
        &mut self,
        id: &str,
        reason: EscalationReason,
        why: &str,
        d: &mut Decision,
    ) {
        d.reason(why.to_string());
        self.hand_over(
            id,
            IncidentState::Suppressed,
            reason,
            Severity::Page,
            why,
            d,
        );
    }

    fn hand_over(
        &mut self,
        id: &str,
        state: IncidentState,
        reason: EscalationReason,
        severity: Severity,
        summary: &str,
        d: &mut Decision,
    ) {
        let context = self.context(id);
        let policy = self.policy.clone();
        let Some(inc) = self.state.incidents.get_mut(id) else {
            return;
        };
        inc.state = state;
        let rb = inc.runbook.map(|r| &policy.runbooks[r]);
        d.emit(incident_record(inc, state, summary, rb));
        d.emit(Output::Escalation(Escalation {
            incident: id.to_string(),
            service: inc.service.clone(),
            severity,
            reason,
            summary: summary.to_string(),
            tried: inc.tried(),
            context,
        }));
    }

    /// Diagnosis context for a human: the trigger and the SLOs' state.
    pub(crate) fn context(&self, id: &str) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let Some(inc) = self.state.incidents.get(id) else {
            return m;
        };
        for (k, v) in inc.trigger.labels.iter() {
            m.insert(format!("label.{k}"), v.to_string());
        }
        for (k, v) in inc.annotations.iter() {
            m.insert(format!("annotation.{k}"), v.to_string());
        }
        if let Some(r) = inc.runbook {
            m.insert("runbook".into(), self.policy.runbooks[r].name.clone());
        }
        let mut slos: Vec<usize> = self
            .slos_by_service
            .get(&inc.service)
            .cloned()
            .unwrap_or_default();
        slos.extend(inc.slo.filter(|i| !slos.contains(i)));
        for i in slos {
            let s = &self.policy.slos[i];
            if let Some(b) = self.slos.fast_burn(i) {
                m.insert(format!("slo.{}.burn_rate", s.name), format!("{b:.4}"));
            }
            if let Some(b) = self.slos.budget_remaining(i) {
                m.insert(
                    format!("slo.{}.budget_remaining", s.name),
                    format!("{b:.4}"),
                );
            }
        }
        m
    }
}
