//! Output records: what the core decides, in the JSON forms of DESIGN.md.
//!
//! Field order in these structs is the order on the wire; the core's
//! byte-for-byte determinism depends on it, so reorder nothing casually.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::labels::Labels;
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Page,
    Ticket,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BurnState {
    Firing,
    Resolved,
}

/// A burn-rate tier changed state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BurnAlert {
    pub slo: String,
    pub service: String,
    pub severity: Severity,
    pub long_window: String,
    pub short_window: String,
    pub factor: f64,
    pub burn_long: Option<f64>,
    pub burn_short: Option<f64>,
    pub state: BurnState,
    /// Share of the period's error budget left, 1.0 = untouched.
    pub budget_remaining: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    Opened,
    AwaitingApproval,
    Remediating,
    Validating,
    Resolved,
    RollingBack,
    Escalated,
    Suppressed,
}

impl IncidentState {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Opened => "opened",
            IncidentState::AwaitingApproval => "awaiting_approval",
            IncidentState::Remediating => "remediating",
            IncidentState::Validating => "validating",
            IncidentState::Resolved => "resolved",
            IncidentState::RollingBack => "rolling_back",
            IncidentState::Escalated => "escalated",
            IncidentState::Suppressed => "suppressed",
        }
    }
}

/// What opened an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// `alert` or `burn_rate`.
    pub source: String,
    pub alertname: String,
    pub fingerprint: String,
    pub starts_at: Timestamp,
    pub labels: Labels,
}

/// An incident lifecycle change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub service: String,
    pub state: IncidentState,
    pub trigger: Trigger,
    pub reason: String,
    pub runbook: Option<String>,
}

/// A remediation command for the executors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub id: String,
    pub incident: String,
    pub runbook: String,
    pub action: String,
    pub target: String,
    pub params: BTreeMap<String, String>,
    /// Argument vector for `exec` actions; never joined into a shell string.
    pub args: Vec<String>,
    pub tier: u8,
    pub deadline: Timestamp,
    /// How long the executor may let the action run.
    pub timeout: String,
    pub rollback_of: Option<String>,
    pub service: String,
}

/// A tier-2 proposal waiting for an approver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    pub command_id: String,
    pub incident: String,
    pub runbook: String,
    pub summary: String,
    pub expires: Timestamp,
    pub service: String,
    pub action: String,
    pub target: String,
    pub approvers: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationReason {
    FirstTime,
    NoRunbook,
    Tier3,
    ActionFailed,
    ValidationFailed,
    ApprovalRejected,
    ApprovalTimeout,
    Guardrail,
    StaleData,
}

impl EscalationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EscalationReason::FirstTime => "first_time",
            EscalationReason::NoRunbook => "no_runbook",
            EscalationReason::Tier3 => "tier3",
            EscalationReason::ActionFailed => "action_failed",
            EscalationReason::ValidationFailed => "validation_failed",
            EscalationReason::ApprovalRejected => "approval_rejected",
            EscalationReason::ApprovalTimeout => "approval_timeout",
            EscalationReason::Guardrail => "guardrail",
            EscalationReason::StaleData => "stale_data",
        }
    }
}

/// One thing tried for an incident, as listed in an escalation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tried {
    pub command_id: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
}

/// A page or ticket for a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    pub incident: String,
    pub service: String,
    pub severity: Severity,
    pub reason: EscalationReason,
    pub summary: String,
    pub tried: Vec<Tried>,
    /// Diagnosis context: the trigger's labels and annotations, SLO state.
    pub context: BTreeMap<String, String>,
}

/// One guardrail evaluated for a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardrailCheck {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// One audit record per decision, hash-chained per service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Audit {
    pub seq: u64,
    pub ts: Timestamp,
    pub service: String,
    pub decision: String,
    pub incident: Option<String>,
    pub runbook: Option<String>,
    pub inputs: Vec<String>,
    pub reasons: Vec<String>,
    pub guardrails: Vec<GuardrailCheck>,
    pub outputs: Vec<String>,
    pub policy_version: String,
    pub prev_hash: String,
    pub hash: String,
}

/// A decoded output record.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    BurnAlert(BurnAlert),
    Incident(Incident),
    Command(Command),
    ApprovalRequest(ApprovalRequest),
    Escalation(Escalation),
    Audit(Audit),
}

impl Output {
    pub fn kind(&self) -> &'static str {
        match self {
            Output::BurnAlert(_) => "burn_alert",
            Output::Incident(_) => "incident",
            Output::Command(_) => "command",
            Output::ApprovalRequest(_) => "approval_request",
            Output::Escalation(_) => "escalation",
            Output::Audit(_) => "audit",
        }
    }

    /// The Kafka key: the service (the target service for commands).
    pub fn key(&self) -> &str {
        match self {
            Output::BurnAlert(b) => &b.service,
            Output::Incident(i) => &i.service,
            Output::Command(c) => &c.service,
            Output::ApprovalRequest(a) => &a.service,
            Output::Escalation(e) => &e.service,
            Output::Audit(a) => &a.service,
        }
    }

    /// The record's JSON form (the `data` of an output line).
    pub fn to_json_value(&self) -> serde_json::Value {
        let v = match self {
            Output::BurnAlert(x) => serde_json::to_value(x),
            Output::Incident(x) => serde_json::to_value(x),
            Output::Command(x) => serde_json::to_value(x),
            Output::ApprovalRequest(x) => serde_json::to_value(x),
            Output::Escalation(x) => serde_json::to_value(x),
            Output::Audit(x) => serde_json::to_value(x),
        };
        v.unwrap_or(serde_json::Value::Null)
    }
}

/// An output with the event time of the decision that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    pub ts: Timestamp,
    pub output: Output,
}

impl Emitted {
    /// One JSON Lines line (without the newline) in the replay envelope.
    pub fn to_json_line(&self) -> String {
        #[derive(Serialize)]
        struct Line<'a, T: Serialize> {
            ts: Timestamp,
            kind: &'a str,
            data: &'a T,
        }
        fn line<T: Serialize>(ts: Timestamp, kind: &str, data: &T) -> String {
            serde_json::to_string(&Line { ts, kind, data }).unwrap_or_default()
        }
        let k = self.output.kind();
        match &self.output {
            Output::BurnAlert(x) => line(self.ts, k, x),
            Output::Incident(x) => line(self.ts, k, x),
            Output::Command(x) => line(self.ts, k, x),
            Output::ApprovalRequest(x) => line(self.ts, k, x),
            Output::Escalation(x) => line(self.ts, k, x),
            Output::Audit(x) => line(self.ts, k, x),
        }
    }
}
