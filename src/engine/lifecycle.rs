//! After the decision: results, approvals, deadlines, resolution.
//!
//! opened → (awaiting_approval) → remediating → validating → resolved,
//! or, when validation runs out, rolling_back → escalated. Failed results,
//! rejected or expired approvals escalate at once.

use crate::records::{
    ActionResult, Approval, Change, ChangeState, Command, Control, Emitted, EscalationReason,
    IncidentState, Output, ResultStatus, Scope, Severity, Verdict,
};
use crate::time::Timestamp;

use super::decide::{incident_record, render};
use super::state::{CommandInfo, TimerKind};
use super::{ids, Decision, Engine};

impl Engine {
    fn cancel_timer(&mut self, kind: TimerKind, key: &str) {
        self.state
            .timers
            .retain(|(_, k, id)| !(*k == kind && id == key));
    }

    /// The trigger of an open incident resolved.
    pub(crate) fn resolve_trigger(
        &mut self,
        ts: Timestamp,
        key: &(String, String),
        input: &str,
        out: &mut Vec<Emitted>,
    ) {
        let Some(id) = self.state.by_key.get(key).cloned() else {
            return;
        };
        let Some(inc) = self.state.incidents.get_mut(&id) else {
            return;
        };
        inc.trigger_resolved = true;
        let state = inc.state;
        match state {
            IncidentState::Validating => self.try_confirm(ts, &id, input, out),
            IncidentState::Remediating => {
                let mut d = Decision::new(ts, &inc.service, "trigger_resolved", input.to_string());
                d.incident = Some(id.clone());
                d.runbook = inc.runbook.map(|r| self.policy.runbooks[r].name.clone());
                d.reason("trigger resolved while the action runs: waiting for its result");
                self.commit(d, out);
            }
            _ => {
                let why = match state {
                    IncidentState::AwaitingApproval => {
                        "trigger resolved before approval: proposal withdrawn"
                    }
                    _ => "trigger resolved",
                };
                let mut d = Decision::new(ts, &inc.service, "resolve", input.to_string());
                d.incident = Some(id.clone());
                d.reason(why);
                let rb = inc.runbook.map(|r| &self.policy.runbooks[r]);
                d.runbook = rb.map(|r| r.name.clone());
                d.emit(incident_record(inc, IncidentState::Resolved, why, rb));
                self.state.close(&id, ts);
                self.commit(d, out);
            }
        }
    }

    /// Confirms a fix when its trigger has resolved and the validating SLO
    /// has no page tier firing.
    pub(crate) fn try_confirm(
        &mut self,
        ts: Timestamp,
        id: &str,
        input: &str,
        out: &mut Vec<Emitted>,
    ) {
        let policy = self.policy.clone();
        let Some(inc) = self.state.incidents.get(id) else {
            return;
        };
        if inc.state != IncidentState::Validating || !inc.trigger_resolved {
            return;
        }
        let rb = inc.runbook.map(|r| &policy.runbooks[r]);
        let slo = rb.and_then(|r| r.validate.slo);
        let mut d = Decision::new(ts, &inc.service, "resolve", input.to_string());
        d.incident = Some(id.to_string());
        d.runbook = rb.map(|r| r.name.clone());
        if let Some(s) = slo {
            if self.slos.firing(s, &policy.slos, Severity::Page) {
                d.kind = "validation_pending";
                d.reason(format!(
                    "trigger resolved but SLO {} still has a page tier firing",
                    policy.slos[s].name
                ));
                self.commit(d, out);
                return;
            }
        }
        let why = match slo {
            Some(s) => format!(
                "{}: trigger resolved and SLO {} has no page tier firing",
                super::FIX_CONFIRMED,
                policy.slos[s].name
            ),
            None => format!("{}: trigger resolved", super::FIX_CONFIRMED),
        };
        d.reason(why.clone());
        d.emit(incident_record(inc, IncidentState::Resolved, &why, rb));
        self.state.close(id, ts);
        self.commit(d, out);
    }

    pub(crate) fn on_result(&mut self, ts: Timestamp, r: &ActionResult, out: &mut Vec<Emitted>) {
        let input = format!("result@{ts}:{} {}", r.command_id, r.status.as_str());
        let Some(id) = self.state.commands.get(&r.command_id).cloned() else {
            let global = self.global_chain.clone();
            let mut d = Decision::new(ts, &global, "result_ignored", input);
            d.reason(format!("no open incident has command {}", r.command_id));
            return self.commit(d, out);
        };
        let policy = self.policy.clone();
        let Some(inc) = self.state.incidents.get_mut(&id) else {
            return;
        };
        let service = inc.service.clone();
        let state = inc.state;
        let mut d = Decision::new(ts, &service, "result", input);
        d.incident = Some(id.clone());
        d.runbook = inc.runbook.map(|r| policy.runbooks[r].name.clone());
        let Some(cmd) = inc.command_mut(&r.command_id) else {
            return;
        };
        if cmd.outcome != "pending" {
            d.kind = "result_ignored";
            d.reason(format!("command already has outcome {}", cmd.outcome));
            return self.commit(d, out);
        }
        cmd.outcome = r.status.as_str().to_string();
        if r.status == ResultStatus::Succeeded {
            cmd.previous = r.previous.clone();
        }
        let rollback_of = cmd.rollback_of.clone();
        let what = format!("{} {}", cmd.action, cmd.target);
        self.cancel_timer(TimerKind::ResultTimeout, &r.command_id);
        let detail = if r.detail.is_empty() {
            String::new()
        } else {
            format!(": {}", r.detail)
        };
        if rollback_of.is_some() {
            d.kind = "rollback_result";
            if r.status == ResultStatus::Succeeded {
                d.reason(format!("rollback {what} succeeded"));
            } else {
                let why = format!("rollback {what} {}{detail}", r.status.as_str());
                d.reason(why.clone());
                self.page_only(&id, EscalationReason::ActionFailed, &why, &mut d);
            }
            return self.commit(d, out);
        }
        if state != IncidentState::Remediating {
            d.kind = "late_result";
            d.reason(format!(
                "{what} {} after the incident became {}",
                r.status.as_str(),
                state.as_str()
            ));
            return self.commit(d, out);
        }
        if r.status != ResultStatus::Succeeded {
            let why = format!("{what} {}{detail}", r.status.as_str());
            d.kind = "escalate";
            d.reason(why.clone());
            self.escalate(
                &id,
                EscalationReason::ActionFailed,
                Severity::Page,
                &why,
                &mut d,
            );
            return self.commit(d, out);
        }
        let Some(inc) = self.state.incidents.get_mut(&id) else {
            return;
        };
        let within = inc.runbook.map_or(crate::time::Duration::minutes(5), |r| {
            policy.runbooks[r].validate.within
        });
        let until = ts.plus(within);
        inc.state = IncidentState::Validating;
        inc.validate_until = Some(until);
        let why = format!("{what} succeeded{detail}; validating until {until}");
        d.kind = "validate";
        d.reason(why.clone());
        let rb = inc.runbook.map(|r| &policy.runbooks[r]);
        d.emit(incident_record(inc, IncidentState::Validating, &why, rb));
        let resolved = inc.trigger_resolved;
        self.state
            .timers
            .insert((until, TimerKind::ValidationDeadline, id.clone()));
        self.commit(d, out);
        if resolved {
            let input = format!("result@{ts}:{} succeeded", r.command_id);
            self.try_confirm(ts, &id, &input, out);
        }
    }

    pub(crate) fn on_approval(&mut self, ts: Timestamp, a: &Approval, out: &mut Vec<Emitted>) {
        let input = format!(
            "approval@{ts}:{} {} by {}",
            a.command_id,
            a.decision.as_str(),
            a.by
        );
        let inc = self
            .state
            .commands
            .get(&a.command_id)
            .and_then(|id| self.state.incidents.get(id))
            .filter(|i| i.proposal.as_ref().is_some_and(|p| p.id == a.command_id));
        let Some(inc) = inc else {
            let known = self.state.commands.get(&a.command_id);
            let known = known.and_then(|id| self.state.incidents.get(id));
            let service = known
                .map_or(self.global_chain.as_str(), |i| i.service.as_str())
                .to_string();
            let mut d = Decision::new(ts, &service, "approval_ignored", input);
            d.incident = known.map(|i| i.id.clone());
            d.reason(format!(
                "no approval is pending for command {}",
                a.command_id
            ));
            return self.commit(d, out);
        };
        let (id, service) = (inc.id.clone(), inc.service.clone());
        let mut d = Decision::new(ts, &service, "approval_ignored", input);
        d.incident = Some(id.clone());
        let Some(r) = inc.runbook else {
            // Its runbook left the policy in a reload.
            d.reason(format!(
                "the runbook of {} is no longer in the policy: ignored; it escalates at its approval deadline",
                a.command_id
            ));
            return self.commit(d, out);
        };
        d.runbook = Some(self.policy.runbooks[r].name.clone());
        if !self.policy.approvers.iter().any(|x| x == &a.by) {
            d.reason(format!(
                "{} is not a listed approver: ignored, still waiting",
                a.by
            ));
            return self.commit(d, out);
        }
        self.cancel_timer(TimerKind::ApprovalExpiry, &a.command_id);
        match a.decision {
            Verdict::Reject => {
                if let Some(inc) = self.state.incidents.get_mut(&id) {
                    inc.proposal = None;
                    if let Some(c) = inc.command_mut(&a.command_id) {
                        c.outcome = "rejected".into();
                    }
                }
                let why = format!("rejected by {}", a.by);
                d.kind = "escalate";
                d.reason(why.clone());
                self.escalate(
                    &id,
                    EscalationReason::ApprovalRejected,
                    Severity::Page,
                    &why,
                    &mut d,
                );
                self.commit(d, out);
            }
            Verdict::Approve => self.propose_or_act(ts, &id, r, Some(&a.by), d, out),
        }
    }

    pub(crate) fn on_control(&mut self, ts: Timestamp, c: &Control, out: &mut Vec<Emitted>) {
        let service = match &c.scope {
            Scope::Service(s) => s.clone(),
            _ => self.global_chain.clone(),
        };
        let by = c.by.as_deref().unwrap_or("unknown");
        if c.reload_policy {
            let input = format!("control@{ts}:{} reload_policy by {by}", c.scope);
            let mut d = Decision::new(ts, &service, "policy_reload_requested", input);
            d.reason(format!(
                "{by} asked for the policy file to be read again (applied at a batch boundary when it changed)"
            ));
            return self.commit(d, out);
        }
        let input = format!(
            "control@{ts}:{} kill_switch={} by {by}",
            c.scope, c.kill_switch
        );
        let mut d = Decision::new(ts, &service, "kill_switch", input);
        if c.kill_switch {
            self.state.kill.insert(c.scope.clone(), c.until);
            d.reason(match c.until {
                Some(u) => format!("kill switch on for {} until {u}", c.scope),
                None => format!("kill switch on for {} until switched off", c.scope),
            });
        } else {
            self.state.kill.remove(&c.scope);
            d.reason(format!("kill switch off for {}", c.scope));
        }
        self.commit(d, out);
    }

    pub(crate) fn on_change(&mut self, c: &Change) {
        match c.state {
            ChangeState::Started => {
                self.state
                    .changes
                    .entry(c.service.clone())
                    .or_default()
                    .insert(c.id.clone(), c.kind.clone());
            }
            ChangeState::Finished => {
                if let Some(m) = self.state.changes.get_mut(&c.service) {
                    m.remove(&c.id);
                    if m.is_empty() {
                        self.state.changes.remove(&c.service);
                    }
                }
            }
        }
    }

    /// Fires every deadline due at `t`, highest SLO impact first.
    pub(crate) fn on_timers(&mut self, t: Timestamp, out: &mut Vec<Emitted>) {
        let mut due = Vec::new();
        while let Some(first) = self.state.timers.first() {
            if first.0 != t {
                break;
            }
            if let Some(x) = self.state.timers.pop_first() {
                due.push(x);
            }
        }
        let mut ranked: Vec<(f64, _)> = due
            .into_iter()
            .map(|timer| {
                let inc_id = match timer.1 {
                    TimerKind::ValidationDeadline => Some(timer.2.clone()),
                    _ => self.state.commands.get(&timer.2).cloned(),
                };
                let impact = inc_id
                    .and_then(|i| self.state.incidents.get(&i))
                    .map_or(0.0, |i| self.impact(&i.service, i.slo));
                (impact, timer)
            })
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, (_, kind, key)) in ranked {
            match kind {
                TimerKind::ApprovalExpiry => self.approval_expired(t, &key, out),
                TimerKind::ResultTimeout => self.result_missing(t, &key, out),
                TimerKind::ValidationDeadline => self.validation_expired(t, &key, out),
            }
        }
    }

    fn approval_expired(&mut self, t: Timestamp, cmd: &str, out: &mut Vec<Emitted>) {
        let Some(id) = self.state.commands.get(cmd).cloned() else {
            return;
        };
        let Some(inc) = self.state.incidents.get_mut(&id) else {
            return;
        };
        if inc.state != IncidentState::AwaitingApproval {
            return;
        }
        inc.proposal = None;
        if let Some(c) = inc.command_mut(cmd) {
            c.outcome = "approval_timeout".into();
        }
        let mut d = Decision::new(
            t,
            &inc.service.clone(),
            "escalate",
            format!("deadline@{t}:approval {cmd}"),
        );
        d.incident = Some(id.clone());
        d.runbook = inc.runbook.map(|r| self.policy.runbooks[r].name.clone());
        let why = format!("no approver answered for {cmd} by {t}");
        d.reason(why.clone());
        self.escalate(
            &id,
            EscalationReason::ApprovalTimeout,
            Severity::Page,
            &why,
            &mut d,
        );
        self.commit(d, out);
    }

    fn result_missing(&mut self, t: Timestamp, cmd: &str, out: &mut Vec<Emitted>) {
        let Some(id) = self.state.commands.get(cmd).cloned() else {
            return;
        };
        let Some(inc) = self.state.incidents.get_mut(&id) else {
            return;
        };
        let service = inc.service.clone();
        let state = inc.state;
        let runbook = inc.runbook.map(|r| self.policy.runbooks[r].name.clone());
        let Some(c) = inc.command_mut(cmd) else {
            return;
        };
        if c.outcome != "pending" {
            return;
        }
        c.outcome = "no_result".into();
        let is_rollback = c.rollback_of.is_some();
        let why = format!("no result for {} {} ({cmd}) by {t}", c.action, c.target);
        let mut d = Decision::new(
            t,
            &service,
            "escalate",
            format!("deadline@{t}:result {cmd}"),
        );
        d.incident = Some(id.clone());
        d.runbook = runbook;
        d.reason(why.clone());
        if is_rollback || state != IncidentState::Remediating {
            self.page_only(&id, EscalationReason::ActionFailed, &why, &mut d);
        } else {
            self.escalate(
                &id,
                EscalationReason::ActionFailed,
                Severity::Page,
                &why,
                &mut d,
            );
        }
        self.commit(d, out);
    }

    fn validation_expired(&mut self, t: Timestamp, id: &str, out: &mut Vec<Emitted>) {
        let policy = self.policy.clone();
        let Some(inc) = self.state.incidents.get_mut(id) else {
            return;
        };
        if inc.state != IncidentState::Validating {
            return;
        }
        let Some(r) = inc.runbook else { return };
        let rb = &policy.runbooks[r];
        let main = inc
            .commands
            .iter_mut()
            .rev()
            .find(|c| c.rollback_of.is_none() && c.outcome == "succeeded");
        let Some(main) = main else { return };
        main.outcome = "succeeded_unconfirmed".into();
        let main_id = main.id.clone();
        let previous = main.previous.clone();
        let service = inc.service.clone();
        let mut d = Decision::new(
            t,
            &service,
            "escalate",
            format!("deadline@{t}:validation {id}"),
        );
        d.incident = Some(id.to_string());
        d.runbook = Some(rb.name.clone());
        let why = format!("fix not confirmed within {}", rb.validate.within);
        d.reason(why.clone());
        if let Some(spec) = &rb.rollback {
            let labels = inc.trigger.labels.clone();
            let rendered = render(
                spec,
                &labels,
                &inc.annotations,
                Some(&previous),
                rb.kubernetes.as_ref(),
            );
            let k8s_refusal = match &rendered {
                Ok(r) if spec.kind.starts_with("k8s.") => match &rb.kubernetes {
                    None => Some("no `kubernetes:` section allows it".to_string()),
                    Some(k) => k.allows(&spec.kind, &r.target).err(),
                },
                _ => None,
            };
            match rendered {
                Err(e) => {
                    d.reason(format!("rollback not possible: {e}"));
                }
                Ok(_) if k8s_refusal.is_some() => {
                    let why = k8s_refusal.unwrap_or_default();
                    d.reason(format!("rollback not possible: {why}"));
                }
                Ok(_) if self.state.kill_switch(&service, &rb.name, t).is_some() => {
                    d.reason("rollback blocked by the kill switch");
                }
                Ok(r) => {
                    d.kind = "rollback";
                    self.emit_rollback(t, id, &main_id, rb, r, &mut d);
                }
            }
        }
        self.escalate(
            id,
            EscalationReason::ValidationFailed,
            Severity::Page,
            &why,
            &mut d,
        );
        self.commit(d, out);
    }

    fn emit_rollback(
        &mut self,
        t: Timestamp,
        id: &str,
        main_id: &str,
        rb: &crate::policy::Runbook,
        r: super::decide::Rendered,
        d: &mut Decision,
    ) {
        let super::decide::Rendered {
            target,
            params,
            args,
        } = r;
        let Some(spec) = &rb.rollback else { return };
        let Some(inc) = self.state.incidents.get_mut(id) else {
            return;
        };
        let rid = ids::rollback_id(main_id);
        let cmd = Command {
            id: rid.clone(),
            incident: id.to_string(),
            runbook: rb.name.clone(),
            action: spec.kind.clone(),
            target: target.clone(),
            params,
            args,
            tier: rb.tier,
            deadline: t.plus(rb.deadline),
            timeout: spec.timeout.to_string(),
            rollback_of: Some(main_id.to_string()),
            service: inc.service.clone(),
        };
        inc.state = IncidentState::RollingBack;
        inc.commands.push(CommandInfo::of(&cmd, "pending"));
        let why = format!("rolling back {main_id}: {} {target}", spec.kind);
        d.reason(why.clone());
        d.emit(incident_record(
            inc,
            IncidentState::RollingBack,
            &why,
            Some(rb),
        ));
        let wait = cmd.deadline.plus(spec.timeout);
        d.emit(Output::Command(cmd));
        self.state.commands.insert(rid.clone(), id.to_string());
        self.state
            .timers
            .insert((wait, TimerKind::ResultTimeout, rid));
        super::guardrails::record_action(&mut self.state, rb, &target, t);
    }

    /// An escalation without a state change (the incident is already with
    /// a human, e.g. a failed rollback).
    fn page_only(&mut self, id: &str, reason: EscalationReason, why: &str, d: &mut Decision) {
        let context = self.context(id);
        let Some(inc) = self.state.incidents.get(id) else {
            return;
        };
        d.emit(Output::Escalation(crate::records::Escalation {
            incident: id.to_string(),
            service: inc.service.clone(),
            severity: Severity::Page,
            reason,
            summary: why.to_string(),
            tried: inc.tried(),
            context,
        }));
    }
}
