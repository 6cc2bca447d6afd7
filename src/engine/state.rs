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
    /// Closed incidents' start time by (service, fingerprint): an alert
    /// re-sent with the same or an older start does not reopen them.
    pub closed: HashMap<(String, String), Timestamp>,
    /// Incident id by command id, for results and approvals.
    pub commands: HashMap<String, String>,
    pub timers: BTreeSet<Timer>,
    /// (service, alertname) pairs ever seen, for first-time failures.
    pub seen: HashMap<String, BTreeSet<String>>,
    /// Changes in progress: service -> change id -> kind.
    pub changes: BTreeMap<String, BTreeMap<String, String>>,
    /// Kill switches on: scope -> until.
    pub kill: BTreeMap<Scope, Option<Timestamp>>,
    /// Commands emitted per (runbook, target), oldest first.
    pub actions: HashMap<(String, String), VecDeque<Timestamp>>,
}

impl State {
    pub fn close(&mut self, id: &str) -> Option<Inc> {
        let inc = self.incidents.remove(id)?;
        self.by_key.remove(&inc.key);
        self.closed.insert(inc.key.clone(), inc.last_starts_at);
        for c in &inc.commands {
            self.commands.remove(&c.id);
        }
        self.timers
            .retain(|(_, _, k)| k != id && !inc.commands.iter().any(|c| &c.id == k));
        Some(inc)
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
