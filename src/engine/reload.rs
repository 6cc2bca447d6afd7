//! Changing the policy of a running core.
//!
//! A reload is an input like any other: it happens at an event time, the
//! core decides on it (apply or refuse) and audits the decision, and the
//! same text at the same point of the journal gives the same decision on
//! replay. SLOs, runbooks and incidents refer to each other by index into
//! the policy, so those indices are carried over by name.

use std::sync::Arc;

use super::{Decision, Engine, EngineError};
use crate::policy::Policy;
use crate::records::Emitted;
use crate::time::Timestamp;

/// How reload problems name the policy text (replays must say the same
/// whatever file the text came from).
pub const RELOADED_POLICY: &str = "policy";

impl Engine {
    /// Replaces the policy by `text` at event time `ts`, or refuses it.
    ///
    /// Valid text: every open incident keeps its runbook and SLO when a
    /// runbook or SLO of the same name is in the new policy. An incident
    /// whose runbook is gone stays open without a runbook, as one no
    /// runbook matched: no further command is decided for it, a proposal
    /// awaiting approval can no longer be approved and escalates at its
    /// approval deadline, and it closes when its trigger resolves. SLO windows carry over as [`crate::slo::SloSet::reloaded`]
    /// says. The audit record (`policy_reloaded`, on the core's global
    /// chain) carries the new `policy_version` and names the old one.
    ///
    /// Invalid text: the policy stays, and the audit record
    /// (`policy_reload_refused`) lists the problems.
    pub fn reload_policy(
        &mut self,
        ts: Timestamp,
        text: &str,
        out: &mut Vec<Emitted>,
    ) -> Result<(), EngineError> {
        self.advance(ts, out)?;
        let old = self.policy.clone();
        let new_version = crate::policy::load::version(text);
        let service = self.global_chain.clone();
        let input = format!("policy@{ts}:{new_version}");
        match crate::policy::load::parse(text, RELOADED_POLICY) {
            Err(problems) => {
                let mut d = Decision::new(ts, &service, "policy_reload_refused", input);
                d.reason(format!(
                    "policy {new_version} refused ({} problem(s)); policy {} stays",
                    problems.0.len(),
                    old.version
                ));
                for p in &problems.0 {
                    d.reason(p.to_string());
                }
                self.commit(d, out);
            }
            Ok(new) => {
                let new = Arc::new(new);
                let mut d = Decision::new(ts, &service, "policy_reloaded", input);
                d.reason(format!(
                    "policy {} replaced by {}",
                    old.version, new.version
                ));
                self.switch(&old, new, &mut d);
                self.commit(d, out);
            }
        }
        Ok(())
    }

    fn switch(&mut self, old: &Policy, new: Arc<Policy>, d: &mut Decision) {
        let slo_index = |i: Option<usize>| {
            let name = &old.slos.get(i?)?.name;
            new.slos.iter().position(|s| &s.name == name)
        };
        for inc in self.state.incidents.values_mut() {
            inc.slo = slo_index(inc.slo);
            let Some(r) = inc.runbook else { continue };
            let name = old.runbooks[r].name.clone();
            inc.runbook = new.runbooks.iter().position(|x| x.name == name);
            if inc.runbook.is_none() {
                d.reason(format!(
                    "incident {}: runbook {name} is not in the new policy; it stays open without a runbook",
                    inc.id
                ));
            }
        }
        let kept = new
            .slos
            .iter()
            .filter(|s| old.slos.iter().any(|o| o.name == s.name))
            .count();
        d.reason(format!(
            "{} of {} SLOs and {} of {} runbooks carried over by name",
            kept,
            new.slos.len(),
            new.runbooks
                .iter()
                .filter(|r| old.runbooks.iter().any(|o| o.name == r.name))
                .count(),
            new.runbooks.len()
        ));
        let slos = std::mem::replace(&mut self.slos, crate::slo::SloSet::new(&new));
        self.slos = slos.reloaded(&old.slos, &new);
        self.slos_by_service.clear();
        for (i, s) in new.slos.iter().enumerate() {
            self.slos_by_service
                .entry(s.service.clone())
                .or_default()
                .push(i);
        }
        self.state.instances.configure(&new);
        self.policy = new;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Audit, Command, Output, Record};

    pub(crate) const RESTART: &str = r#"
runbooks:
  - name: restart-on-crash
    match: ['alertname="Crash"']
    tier: 1
    action: {kind: restart, target: '{{ labels.pod }}'}
    validate: {within: 5m}
"#;

    pub(crate) const FAILOVER: &str = r#"
runbooks:
  - name: failover-on-crash
    match: ['alertname="Crash"']
    tier: 1
    action: {kind: failover, target: '{{ labels.pod }}'}
    validate: {within: 5m}
"#;

    fn alert(min: u32, service: &str) -> Record {
        Record::from_json_line(&format!(
            r#"{{"ts":"2026-03-01T10:{min:02}:00Z","kind":"alert","data":{{"status":"firing","labels":{{"alertname":"Crash","service":"{service}","pod":"{service}-1"}}}}}}"#
        ))
        .unwrap()
    }

    fn at(min: u32) -> Timestamp {
        Timestamp::parse(&format!("2026-03-01T10:{min:02}:00Z")).unwrap()
    }

    fn core(text: &str) -> Engine {
        Engine::new(Arc::new(
            crate::policy::load::parse(text, "p.yaml").unwrap(),
        ))
    }

    fn commands(out: &[Emitted]) -> Vec<&Command> {
        out.iter()
            .filter_map(|e| match &e.output {
                Output::Command(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    fn audits<'a>(out: &'a [Emitted], decision: &str) -> Vec<&'a Audit> {
        out.iter()
            .filter_map(|e| match &e.output {
                Output::Audit(a) if a.decision == decision => Some(a),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_next_incident_is_decided_by_the_new_policy_and_the_change_is_audited() {
        let mut e = core(RESTART);
        let mut out = Vec::new();
        e.process(&alert(0, "checkout"), &mut out).unwrap();
        assert_eq!(commands(&out)[0].action, "restart");
        let old = e.policy().version.clone();

        out.clear();
        e.reload_policy(at(1), FAILOVER, &mut out).unwrap();
        let new = crate::policy::load::version(FAILOVER);
        let a = audits(&out, "policy_reloaded");
        assert_eq!(a.len(), 1, "{out:?}");
        assert_eq!(a[0].policy_version, new);
        assert!(a[0].reasons[0].contains(&old) && a[0].reasons[0].contains(&new));
        // The open incident's runbook is gone: said so, and it stays open.
        assert!(
            a[0].reasons
                .iter()
                .any(|r| r.contains("restart-on-crash")
                    && r.contains("stays open without a runbook")),
            "{:?}",
            a[0].reasons
        );
        assert_eq!(e.stats().open_incidents, 1);

        out.clear();
        e.process(&alert(2, "search"), &mut out).unwrap();
        let c = commands(&out);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].action, "failover");
        assert_eq!(c[0].runbook, "failover-on-crash");
        assert!(out.iter().all(|x| match &x.output {
            Output::Audit(a) => a.policy_version == new,
            _ => true,
        }));
    }

    #[test]
    fn an_invalid_policy_is_refused_and_the_old_one_keeps_deciding() {
        let mut e = core(RESTART);
        let old = e.policy().version.clone();
        let mut out = Vec::new();
        let bad = "runbooks:\n  - name: r\n    tier: 7\n";
        e.reload_policy(at(0), bad, &mut out).unwrap();
        let a = audits(&out, "policy_reload_refused");
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].policy_version, old);
        assert!(
            a[0].reasons.len() > 1,
            "problems listed: {:?}",
            a[0].reasons
        );
        assert!(a[0].reasons.iter().any(|r| r.starts_with("policy:")));
        assert_eq!(e.policy().version, old);

        out.clear();
        e.process(&alert(1, "checkout"), &mut out).unwrap();
        assert_eq!(commands(&out)[0].action, "restart");
    }

    #[test]
    fn incidents_keep_a_runbook_that_survives_by_name() {
        let mut e = core(RESTART);
        let mut out = Vec::new();
        e.process(&alert(0, "checkout"), &mut out).unwrap();
        // Same runbook name, another rule placed before it: indices move.
        let moved = format!(
            "{}\n  - name: restart-on-crash\n    match: ['alertname=\"Crash\"']\n    tier: 1\n    action: {{kind: restart, target: '{{{{ labels.pod }}}}'}}\n    validate: {{within: 5m}}\n",
            "runbooks:\n  - name: other\n    match: ['alertname=\"Other\"']\n    tier: 3\n    action: {kind: restart, target: x}\n"
        );
        out.clear();
        e.reload_policy(at(1), &moved, &mut out).unwrap();
        let a = audits(&out, "policy_reloaded");
        assert_eq!(a.len(), 1, "{out:?}");
        assert!(!a[0].reasons.iter().any(|r| r.contains("without a runbook")));
        let inc = e.state.incidents.values().next().unwrap();
        assert_eq!(inc.runbook, Some(1));
    }

    fn slo(name: &str, period: &str) -> String {
        format!(
            "  - name: {name}\n    service: checkout\n    objective: 99.9\n    period: {period}\n    sli:\n      total: 'http_requests_total{{service=\"checkout\"}}'\n      bad:   'http_requests_total{{service=\"checkout\",code=~\"5..\"}}'\n"
        )
    }

    #[test]
    fn slo_windows_survive_a_reload_by_name_and_shape() {
        let a = format!("slos:\n{}", slo("avail", "30d"));
        let mut e = core(&a);
        let mut out = Vec::new();
        for min in 0..6u32 {
            for (code, v) in [("200", 1000 * min), ("500", 10 * min)] {
                let line = format!(
                    r#"{{"ts":"2026-03-01T10:{min:02}:00Z","kind":"metric","data":{{"name":"http_requests_total","labels":{{"service":"checkout","code":"{code}"}},"value":"{v}"}}}}"#
                );
                e.process(&Record::from_json_line(&line).unwrap(), &mut out)
                    .unwrap();
            }
        }
        let seen = e.slos().last_seen(0);
        let budget = e.slos().budget_remaining(0);
        assert!(
            seen.is_some() && budget.is_some_and(|b| b < 1.0),
            "{budget:?}"
        );

        // Another SLO first: `avail` moves to index 1 and keeps its state.
        let b = format!("slos:\n{}{}", slo("fresh", "30d"), slo("avail", "30d"));
        e.reload_policy(at(7), &b, &mut out).unwrap();
        assert_eq!(e.slos().last_seen(1), seen);
        assert_eq!(e.slos().budget_remaining(1), budget);
        assert_eq!(e.slos().last_seen(0), None);

        // Another period is another window: it starts empty.
        let c = format!("slos:\n{}", slo("avail", "7d"));
        e.reload_policy(at(8), &c, &mut out).unwrap();
        assert_eq!(e.slos().last_seen(0), None);
        assert_eq!(e.slos().budget_remaining(0), None);
    }
}
