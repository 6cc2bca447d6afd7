//! Guardrails: every check that stands between a matched runbook and a
//! command. All checks run and are recorded, even after one fails, so the
//! audit shows the whole picture.

use crate::policy::{Policy, Runbook};
use crate::records::{EscalationReason, GuardrailCheck};
use crate::slo::SloSet;
use crate::time::Timestamp;

use super::state::{digest, State};

/// The outcome of the guardrail checks for one prospective command.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub checks: Vec<GuardrailCheck>,
    /// Why the command is blocked, with the escalation reason to use.
    pub blocked: Option<(EscalationReason, String)>,
}

fn check(name: &str, passed: bool, detail: String) -> GuardrailCheck {
    GuardrailCheck {
        name: name.to_string(),
        passed,
        detail,
    }
}

/// Checks kill switch, change freeze, target allow-list, stale data,
/// cooldown, rate limit and blast radius for `runbook` acting on `target`
/// of `service` for incident `incident`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    policy: &Policy,
    state: &State,
    slos: &SloSet,
    runbook: &Runbook,
    service: &str,
    incident: &str,
    target: &str,
    now: Timestamp,
) -> Verdict {
    let g = &runbook.guardrails;
    let mut checks = Vec::with_capacity(6);
    checks.push(match state.kill_switch(service, &runbook.name, now) {
        Some(scope) => check("kill_switch", false, format!("kill switch on for {scope}")),
        None => check("kill_switch", true, "off".into()),
    });
    checks.push(freeze(state, &g.freeze_on_changes, service, target));
    let allowed = runbook.allow_targets.is_empty()
        || runbook.allow_targets.iter().any(|r| r.is_match(target));
    checks.push(check(
        "allow_list",
        allowed,
        if allowed {
            format!("target {target:?} allowed")
        } else {
            format!("target {target:?} is not in the runbook's allow_targets")
        },
    ));
    if runbook.action.kind.starts_with("k8s.") {
        let allowed = match &runbook.kubernetes {
            None => Err("no `kubernetes:` section allows Kubernetes actions".to_string()),
            Some(k) => k.allows(&runbook.action.kind, target),
        };
        checks.push(match allowed {
            Ok(()) => check(
                "kubernetes",
                true,
                format!("{} {target} allowed", runbook.action.kind),
            ),
            Err(e) => check("kubernetes", false, e),
        });
    }
    let stale = stale(policy, slos, runbook, now);
    let stale_failed = stale.as_ref().is_some_and(|c| !c.passed);
    if let Some(c) = stale {
        checks.push(c);
    }
    let history = state
        .actions
        .get(&runbook.name)
        .and_then(|targets| targets.get(&digest(&[target])));
    let last = history.and_then(|h| h.back()).copied();
    let cooling = g.cooldown.0 > 0 && last.is_some_and(|t| now.0 - t.0 < g.cooldown.0);
    checks.push(check(
        "cooldown",
        !cooling,
        match (cooling, last) {
            (true, Some(t)) => format!("last action on {target} at {t}, cooldown {}", g.cooldown),
            _ => format!("cooldown {}", g.cooldown),
        },
    ));
    if let Some(rl) = g.max_actions_per_target {
        let recent = history.map_or(0, |h| h.iter().filter(|t| now.0 - t.0 < rl.per.0).count());
        let ok = recent < rl.count as usize;
        checks.push(check(
            "rate_limit",
            ok,
            format!(
                "{recent} of {} actions on {target} in the last {}",
                rl.count, rl.per
            ),
        ));
    }
    if let Some(b) = &g.blast_radius {
        let window = super::state::window(g);
        let instances = state
            .instances
            .count(&b.instance_label, service, now, window);
        let limit = b.limit(instances);
        let acting = state.unconfirmed(service, incident);
        checks.push(check(
            "blast_radius",
            acting < limit,
            format!(
                "{acting} unconfirmed actions on {service}, limit {limit} ({} of {instances} instances by label {} seen in the last {})",
                b.max_share_text,
                b.instance_label,
                crate::time::Duration(window)
            ),
        ));
    }
    let blocked = checks.iter().find(|c| !c.passed && c.name != "stale_data");
    let blocked = match blocked {
        Some(c) => Some((
            EscalationReason::Guardrail,
            format!("{}: {}", c.name, c.detail),
        )),
        None if stale_failed => checks.iter().find(|c| c.name == "stale_data").map(|c| {
            (
                EscalationReason::StaleData,
                format!("{}: {}", c.name, c.detail),
            )
        }),
        None => None,
    };
    Verdict { checks, blocked }
}

fn freeze(state: &State, kinds: &[String], service: &str, target: &str) -> GuardrailCheck {
    if kinds.is_empty() {
        return check("change_freeze", true, "no freeze configured".into());
    }
    for svc in [service, target] {
        if let Some(changes) = state.changes.get(svc) {
            if let Some((id, kind)) = changes.iter().find(|(_, k)| kinds.contains(k)) {
                return check(
                    "change_freeze",
                    false,
                    format!("{kind} {id} in progress on {svc}"),
                );
            }
        }
    }
    check(
        "change_freeze",
        true,
        "no freezing change in progress".into(),
    )
}

fn stale(
    policy: &Policy,
    slos: &SloSet,
    runbook: &Runbook,
    now: Timestamp,
) -> Option<GuardrailCheck> {
    let after = runbook.guardrails.stale_after?;
    let slo = runbook.validate.slo?;
    let name = &policy.slos[slo].name;
    Some(match slos.last_seen(slo) {
        Some(t) if now.0 - t.0 <= after.0 => {
            check("stale_data", true, format!("{name}: last sample at {t}"))
        }
        Some(t) => check(
            "stale_data",
            false,
            format!("{name}: no SLI data since {t} (stale after {after})"),
        ),
        None => check(
            "stale_data",
            false,
            format!("{name}: no SLI data seen (stale after {after})"),
        ),
    })
}

/// How long a (runbook, target)'s past commands can still count: the
/// longer of the cooldown and the rate-limit window.
pub fn action_window(g: &crate::policy::Guardrails) -> i64 {
    g.max_actions_per_target
        .map_or(0, |r| r.per.0)
        .max(g.cooldown.0)
}

/// Records an emitted command for cooldowns and rate limits, forgetting
/// entries older than any window that could still count them. A runbook
/// with neither keeps no history: nothing would read it, and one entry a
/// target would otherwise pile up between two sweeps.
pub fn record_action(state: &mut State, runbook: &Runbook, target: &str, now: Timestamp) {
    let keep = action_window(&runbook.guardrails);
    if keep == 0 {
        return;
    }
    if !state.actions.contains_key(&runbook.name) {
        state
            .actions
            .insert(runbook.name.clone(), Default::default());
    }
    let h = state
        .actions
        .get_mut(&runbook.name)
        .expect("inserted above")
        .entry(digest(&[target]))
        .or_default();
    h.push_back(now);
    while h.front().is_some_and(|t| now.0 - t.0 >= keep) && h.len() > 1 {
        h.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::engine::Engine;
    use crate::records::{Emitted, Output, Record};

    const FAILOVER: &str = r#"
runbooks:
  - name: failover-instance
    match: ['alertname="Down"']
    tier: 2
    action: {kind: failover, target: '{{ labels.instance }}'}
    validate: {within: 5m}
    guardrails:
      blast_radius: {max_share: 25%}
      stale_after: 2m
approvers: [alice@example.com]
"#;

    fn core(text: &str) -> Engine {
        Engine::new(Arc::new(
            crate::policy::load::parse(text, "p.yaml").unwrap(),
        ))
    }

    fn rec(line: String) -> Record {
        Record::from_json_line(&line).unwrap()
    }

    fn sample(ts: &str, instance: &str) -> Record {
        rec(format!(
            r#"{{"ts":"{ts}","kind":"metric","data":{{"name":"up","labels":{{"service":"db","instance":"{instance}"}},"value":"1"}}}}"#
        ))
    }

    fn down(ts: &str, instance: &str) -> Record {
        rec(format!(
            r#"{{"ts":"{ts}","kind":"alert","data":{{"status":"firing","labels":{{"alertname":"Down","service":"db","instance":"{instance}"}}}}}}"#
        ))
    }

    fn blast_check(out: &[Emitted]) -> Vec<(String, bool)> {
        out.iter()
            .filter_map(|e| match &e.output {
                Output::Audit(a) => a.guardrails.iter().find(|c| c.name == "blast_radius"),
                _ => None,
            })
            .map(|c| (c.detail.clone(), c.passed))
            .collect()
    }

    #[test]
    fn a_proposal_counts_against_others_but_not_against_its_own_approval() {
        let mut e = core(FAILOVER);
        let mut out = Vec::new();
        for i in 0..4 {
            e.process(
                &sample("2026-03-01T10:00:00Z", &format!("db-{i}")),
                &mut out,
            )
            .unwrap();
        }
        e.process(&down("2026-03-01T10:00:10Z", "db-0"), &mut out)
            .unwrap();
        let cmd = out
            .iter()
            .find_map(|e| match &e.output {
                Output::ApprovalRequest(a) => Some(a.command_id.clone()),
                _ => None,
            })
            .expect("a proposal");
        // 4 instances at 25%: one unconfirmed action at a time, and the
        // proposal waiting for approval is one.
        out.clear();
        e.process(&down("2026-03-01T10:00:20Z", "db-1"), &mut out)
            .unwrap();
        let checks = blast_check(&out);
        assert_eq!(checks.len(), 1);
        assert!(!checks[0].1, "{checks:?}");
        assert!(checks[0].0.contains("1 unconfirmed actions on db, limit 1"));
        assert!(out.iter().any(|e| matches!(&e.output,
            Output::Escalation(x) if x.reason == crate::records::EscalationReason::Guardrail)));
        out.clear();
        e.process(
            &rec(format!(
                r#"{{"ts":"2026-03-01T10:00:30Z","kind":"approval","data":{{"command_id":"{cmd}","decision":"approve","by":"alice@example.com","at":"2026-03-01T10:00:30Z"}}}}"#
            )),
            &mut out,
        )
        .unwrap();
        assert!(
            out.iter()
                .any(|e| matches!(&e.output, Output::Command(c) if c.id == cmd)),
            "{out:?}"
        );
    }

    #[test]
    fn instances_count_within_stale_after_and_from_a_reloaded_policy() {
        let plain = FAILOVER.replace("      blast_radius: {max_share: 25%}\n", "");
        let mut e = core(&plain);
        let mut out = Vec::new();
        // Without the guardrail nothing is tracked.
        e.process(&sample("2026-03-01T10:00:00Z", "db-9"), &mut out)
            .unwrap();
        assert!(!e.state.instances.active());
        e.reload_policy(
            crate::time::Timestamp::parse("2026-03-01T10:00:01Z").unwrap(),
            FAILOVER,
            &mut out,
        )
        .unwrap();
        assert!(e.state.instances.active());
        for i in 0..8 {
            e.process(
                &sample("2026-03-01T10:00:05Z", &format!("db-{i}")),
                &mut out,
            )
            .unwrap();
        }
        out.clear();
        e.process(&down("2026-03-01T10:01:00Z", "db-0"), &mut out)
            .unwrap();
        let checks = blast_check(&out);
        assert!(
            checks[0].0.contains("limit 2 (25% of 8 instances"),
            "{checks:?}"
        );
        // Past stale_after (2m) no instance counts: the limit falls to 1.
        out.clear();
        e.process(&down("2026-03-01T10:02:30Z", "db-1"), &mut out)
            .unwrap();
        let checks = blast_check(&out);
        assert!(
            checks[0].0.contains("limit 1 (25% of 0 instances"),
            "{checks:?}"
        );
        assert!(!checks[0].1);
    }
}
