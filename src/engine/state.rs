//! The engine's state: incidents, commands, timers, changes, controls.
//!
//! Everything that is iterated is kept in ordered maps so that the order
//! of decisions never depends on hashing.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::records::{IncidentState, Labels, Scope, Tried, Trigger};
use crate::time::Timestamp;

/// Deadlines the engine acts on when event time reaches them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// A tier-2 proposal nobody answered (key: command id).
    ApprovalExpiry,
    /// A command with no result by its deadline plus timeout (key: command id).
    ResultTimeout,
    /// A fix not confirmed within `validate.within` (key: incident id).
    ValidationDeadline,
}

pub type Timer = (Timestamp, TimerKind, String);

/// A command proposed or emitted for an incident.
#[derive(Debug, Clone)]
pub struct CommandInfo {
    pub id: String,
    pub action: String,
    pub target: String,
    pub rollback_of: Option<String>,
    /// `pending`, `awaiting_approval`, a result status, or `no_result`.
    pub outcome: String,
    /// What its succeeded result recorded as the state it replaced.
    pub previous: BTreeMap<String, String>,
}

impl CommandInfo {
    pub fn of(cmd: &crate::records::Command, outcome: &str) -> CommandInfo {
        CommandInfo {
            id: cmd.id.clone(),
            action: cmd.action.clone(),
            target: cmd.target.clone(),
            rollback_of: cmd.rollback_of.clone(),
            outcome: outcome.to_string(),
            previous: BTreeMap::new(),
        }
    }

    pub fn tried(&self) -> Tried {
        Tried {
            command_id: self.id.clone(),
            action: self.action.clone(),
            target: self.target.clone(),
            outcome: self.outcome.clone(),
        }
    }
}

/// An open incident.
#[derive(Debug, Clone)]
pub struct Inc {
    pub id: String,
    pub service: String,
    pub key: (String, String),
    pub trigger: Trigger,
    pub annotations: Labels,
    pub state: IncidentState,
    pub runbook: Option<usize>,
    /// The SLO whose impact orders this incident among others.
    pub slo: Option<usize>,
    pub trigger_resolved: bool,
    /// Latest `startsAt` of any firing grouped into this incident.
    pub last_starts_at: Timestamp,
    pub commands: Vec<CommandInfo>,
    /// The tier-2 command waiting for approval, ready to emit.
    pub proposal: Option<crate::records::Command>,
    pub validate_until: Option<Timestamp>,
}

impl Inc {
    pub fn tried(&self) -> Vec<Tried> {
        self.commands.iter().map(CommandInfo::tried).collect()
    }

    pub fn command_mut(&mut self, id: &str) -> Option<&mut CommandInfo> {
        self.commands.iter_mut().find(|c| c.id == id)
    }
}

/// All mutable state besides the SLO windows.
#[derive(Debug, Default)]
pub struct State {
    /// Open incidents by id.
    pub incidents: BTreeMap<String, Inc>,
    /// Open incident id by (service, fingerprint).
    pub by_key: HashMap<(String, String), String>,
    /// Closed incidents' start time and close time by the [`digest`] of
    /// their (service, fingerprint): an alert re-sent with the same or an
    /// older start does not reopen them. Forgotten [`CLOSED_KEEP`] after
    /// the close; 24 bytes an entry, however long the labels.
    pub closed: HashMap<u64, (Timestamp, Timestamp)>,
    /// Incident id by command id, for results and approvals.
    pub commands: HashMap<String, String>,
    pub timers: BTreeSet<Timer>,
    /// (service, alertname) pairs ever seen, for first-time failures.
    pub seen: HashMap<String, BTreeSet<String>>,
    /// Changes in progress: service -> change id -> kind.
    pub changes: BTreeMap<String, BTreeMap<String, String>>,
    /// Kill switches on: scope -> until.
    pub kill: BTreeMap<Scope, Option<Timestamp>>,
    /// Commands emitted per runbook and [`digest`] of the target, oldest
    /// first; a target whose last command is older than every window that
    /// could count it is forgotten at the next [`State::sweep`].
    pub actions: HashMap<String, HashMap<u64, VecDeque<Timestamp>>>,
    /// Open incident ids by service, for the blast radius.
    pub by_service: HashMap<String, BTreeSet<String>>,
    /// Instances seen in metric samples, for the blast radius.
    pub instances: Instances,
}

/// The distinct values of each `blast_radius.instance_label` seen per
/// service in metric samples, with when each was last seen (event time).
/// Empty, and never touched by a sample, when no runbook has a blast radius.
#[derive(Debug, Default)]
pub struct Instances {
    /// label -> service -> instance -> last seen.
    seen: Vec<(String, ByService)>,
    /// Entries older than this are forgotten.
    keep: i64,
    next_sweep: i64,
}

/// service -> instance -> last seen.
type ByService = HashMap<String, HashMap<String, Timestamp>>;

/// How long a closed incident's alert key is remembered (event time), so
/// that a late re-send of its alert (an Alertmanager retry, an HA pair)
/// does not reopen it. A key with one incident per distinct label set
/// (a pod name) would otherwise stay for the life of the process.
pub const CLOSED_KEEP: i64 = crate::time::DAY;

/// The 64-bit key under which the maps that outlive an incident
/// (`closed`, `actions`) remember a label-derived name: a name built from
/// a pod's labels can be long, and one incident per pod means one entry
/// per pod. The digest never leaves the process (state is rebuilt from the
/// journal), so it need not be stable across builds; two names sharing a
/// digest is a chance of about one in 10^13 per lookup at a million
/// entries.
pub fn digest(parts: &[&str]) -> u64 {
    use std::hash::{Hash, Hasher};
    // `new()`, unlike a map's random state, is the same hasher every time:
    // a replay decides as the live run did.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

/// The key of [`State::closed`] for an alert key (service, fingerprint):
/// one encoding for where a close is remembered and where a re-sent alert
/// looks it up.
fn closed_key(key: &(String, String)) -> u64 {
    digest(&[&key.0, &key.1])
}

/// Event time between two [`State::sweep`]s.
pub const SWEEP_EVERY: i64 = 10 * crate::time::MINUTE;

/// How far back instances count when `stale_after` is unset.
pub const INSTANCE_WINDOW: i64 = 5 * crate::time::MINUTE;

impl Instances {
    /// Tracks the instance labels of `policy`'s blast-radius guardrails,
    /// keeping what was seen for labels still tracked.
    pub fn configure(&mut self, policy: &crate::policy::Policy) {
        let mut seen = Vec::new();
        let mut keep = 0;
        for rb in &policy.runbooks {
            let Some(b) = &rb.guardrails.blast_radius else {
                continue;
            };
            keep = keep.max(window(&rb.guardrails));
            if seen.iter().any(|(l, _)| l == &b.instance_label) {
                continue;
            }
            let old = self
                .seen
                .iter_mut()
                .find(|(l, _)| l == &b.instance_label)
                .map(|(_, m)| std::mem::take(m))
                .unwrap_or_default();
            seen.push((b.instance_label.clone(), old));
        }
        self.seen = seen;
        self.keep = keep;
    }

    /// Whether any label is tracked.
    #[inline]
    pub fn active(&self) -> bool {
        !self.seen.is_empty()
    }

    /// Notes the instance of a metric sample stamped `ts`.
    pub fn observe(&mut self, ts: Timestamp, labels: crate::records::LabelsRef<'_>) {
        let Some(service) = labels.get("service") else {
            return;
        };
        for (label, services) in &mut self.seen {
            let Some(instance) = labels.get(label) else {
                continue;
            };
            let per = match services.get_mut(service) {
                Some(m) => m,
                None => services.entry(service.to_string()).or_default(),
            };
            match per.get_mut(instance) {
                Some(t) => *t = (*t).max(ts),
                None => {
                    per.insert(instance.to_string(), ts);
                }
            }
        }
        if ts.0 >= self.next_sweep {
            let keep = self.keep;
            for (_, services) in &mut self.seen {
                services.retain(|_, m| {
                    m.retain(|_, t| ts.0 - t.0 <= keep);
                    !m.is_empty()
                });
            }
            self.next_sweep = ts.0 + keep.max(crate::time::MINUTE);
        }
    }

    /// Distinct `label` values of `service` seen within `window` before `now`.
    pub fn count(&self, label: &str, service: &str, now: Timestamp, window: i64) -> usize {
        self.seen
            .iter()
            .find(|(l, _)| l == label)
            .and_then(|(_, s)| s.get(service))
            .map_or(0, |m| m.values().filter(|t| now.0 - t.0 <= window).count())
    }
}

/// The window instances count over for these guardrails, in milliseconds.
pub fn window(g: &crate::policy::Guardrails) -> i64 {
    g.stale_after.map_or(INSTANCE_WINDOW, |d| d.0)
}

impl State {
    pub fn close(&mut self, id: &str, now: Timestamp) -> Option<Inc> {
        let inc = self.incidents.remove(id)?;
        self.by_key.remove(&inc.key);
        if let Some(ids) = self.by_service.get_mut(&inc.service) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_service.remove(&inc.service);
            }
        }
        self.closed
            .insert(closed_key(&inc.key), (inc.last_starts_at, now));
        for c in &inc.commands {
            self.commands.remove(&c.id);
        }
        self.timers
            .retain(|(_, _, k)| k != id && !inc.commands.iter().any(|c| &c.id == k));
        Some(inc)
    }

    /// The latest `startsAt` of the closed incident with alert key `key`,
    /// while it is remembered.
    pub fn closed_start(&self, key: &(String, String)) -> Option<Timestamp> {
        self.closed
            .get(&closed_key(key))
            .map(|(starts_at, _)| *starts_at)
    }

    /// Forgets what can no longer change a decision: closed incidents'
    /// keys [`CLOSED_KEEP`] after their close, and the command history of
    /// a (runbook, target) whose last command is older than the runbook's
    /// cooldown and rate-limit windows. Runs on event time, so a replay
    /// sweeps at the same points.
    pub fn sweep(&mut self, now: Timestamp, policy: &crate::policy::Policy) {
        self.closed
            .retain(|_, (_, closed_at)| now.0 - closed_at.0 < CLOSED_KEEP);
        let windows: HashMap<&str, i64> = policy
            .runbooks
            .iter()
            .map(|rb| {
                (
                    rb.name.as_str(),
                    super::guardrails::action_window(&rb.guardrails),
                )
            })
            .collect();
        self.actions.retain(|runbook, targets| {
            let window = windows.get(runbook.as_str()).copied().unwrap_or(0);
            targets.retain(|_, history| history.back().is_some_and(|t| now.0 - t.0 < window));
            !targets.is_empty()
        });
    }

    /// The service's incidents other than `except` with a command not yet
    /// confirmed: remediating, validating, rolling back or awaiting approval.
    pub fn unconfirmed(&self, service: &str, except: &str) -> usize {
        self.by_service.get(service).map_or(0, |ids| {
            ids.iter()
                .filter(|id| id.as_str() != except)
                .filter_map(|id| self.incidents.get(id))
                .filter(|i| {
                    matches!(
                        i.state,
                        IncidentState::Remediating
                            | IncidentState::Validating
                            | IncidentState::RollingBack
                            | IncidentState::AwaitingApproval
                    )
                })
                .count()
        })
    }

    /// The kill switch that blocks `service`/`runbook` at `now`, if any.
    pub fn kill_switch(&self, service: &str, runbook: &str, now: Timestamp) -> Option<Scope> {
        let scopes = [
            Scope::Global,
            Scope::Service(service.to_string()),
            Scope::Runbook(runbook.to_string()),
        ];
        scopes.into_iter().find(|s| {
            self.kill
                .get(s)
                .is_some_and(|until| until.is_none_or(|u| now < u))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{HOUR, MINUTE};

    const POLICY: &str = r#"
runbooks:
  - name: restart-pod
    match: ['alertname="Down"']
    tier: 1
    action: {kind: restart, target: '{{ labels.pod }}'}
    validate: {within: 5m}
    guardrails:
      cooldown: 10m
      max_actions_per_target: {count: 3, per: 1h}
"#;

    /// Whether `target`'s command history under `runbook` is remembered.
    fn acted(s: &State, runbook: &str, target: &str) -> bool {
        s.actions
            .get(runbook)
            .is_some_and(|t| t.contains_key(&digest(&[target])))
    }

    fn record(s: &mut State, runbook: &str, target: &str, at: i64) {
        s.actions
            .entry(runbook.to_string())
            .or_default()
            .insert(digest(&[target]), VecDeque::from([Timestamp(at)]));
    }

    /// One incident per pod name, for a day: what the engine remembers
    /// about closed incidents and acted-on targets stays bounded.
    #[test]
    fn sweep_forgets_what_can_no_longer_change_a_decision() {
        let policy = crate::policy::load::parse(POLICY, "p.yaml").unwrap();
        let mut s = State::default();
        let t0 = 1_800_000_000_000i64;
        s.closed.insert(
            closed_key(&("api".into(), "pod-1".into())),
            (Timestamp(t0 - HOUR), Timestamp(t0)),
        );
        record(&mut s, "restart-pod", "pod-1", t0);
        record(&mut s, "restart-pod", "pod-2", t0 + 30 * MINUTE);
        record(&mut s, "removed-runbook", "pod-3", t0 + 30 * MINUTE);

        // 59 minutes on: pod-1's command still counts for the hourly rate
        // limit; the runbook no longer in the policy has no window.
        s.sweep(Timestamp(t0 + 59 * MINUTE), &policy);
        assert!(acted(&s, "restart-pod", "pod-1"));
        assert!(acted(&s, "restart-pod", "pod-2"));
        assert!(!acted(&s, "removed-runbook", "pod-3"));
        assert!(!s.actions.contains_key("removed-runbook"));
        assert_eq!(s.closed.len(), 1);

        // An hour after its command, pod-1 is forgotten; pod-2 is not yet.
        s.sweep(Timestamp(t0 + HOUR), &policy);
        assert!(!acted(&s, "restart-pod", "pod-1"));
        assert!(acted(&s, "restart-pod", "pod-2"));

        // A closed incident's key is kept a day after its close.
        s.sweep(Timestamp(t0 + CLOSED_KEEP - 1), &policy);
        assert_eq!(s.closed.len(), 1);
        s.sweep(Timestamp(t0 + CLOSED_KEEP), &policy);
        assert!(s.closed.is_empty());
        assert!(s.actions.is_empty());
    }

    /// A runbook with a cooldown or a rate limit remembers each target it
    /// acted on; one with neither remembers none, for nothing reads it.
    #[test]
    fn only_runbooks_with_a_window_remember_their_targets() {
        const NO_WINDOW: &str = r#"
  - name: no-window
    match: ['alertname="Up"']
    tier: 1
    action: {kind: restart, target: '{{ labels.pod }}'}
    validate: {within: 5m}
"#;
        let text = format!("{}{}", POLICY.trim_end(), NO_WINDOW);
        let policy = crate::policy::load::parse(&text, "p.yaml").unwrap();
        let rb = |name: &str| policy.runbooks.iter().find(|r| r.name == name).unwrap();
        let mut s = State::default();
        let t0 = Timestamp(1_800_000_000_000);
        super::super::guardrails::record_action(&mut s, rb("restart-pod"), "pod-1", t0);
        super::super::guardrails::record_action(&mut s, rb("no-window"), "pod-2", t0);
        assert!(acted(&s, "restart-pod", "pod-1"));
        assert!(!acted(&s, "no-window", "pod-2"));
        assert!(!s.actions.contains_key("no-window"));
    }

    /// The digest is the same for the same names and tells different
    /// ones apart, including names that only differ in where one part
    /// ends and the next begins.
    #[test]
    fn digest_separates_names() {
        assert_eq!(digest(&["api", "pod-1"]), digest(&["api", "pod-1"]));
        assert_ne!(digest(&["api", "pod-1"]), digest(&["api", "pod-2"]));
        assert_ne!(digest(&["ap", "ipod-1"]), digest(&["api", "pod-1"]));
        assert_ne!(digest(&["api-pod-1"]), digest(&["api", "-pod-1"]));
    }
}
