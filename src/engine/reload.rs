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
                d.reason(format!("policy {} replaced by {}", old.version, new.version));
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
        self.policy = new;
    }
}
