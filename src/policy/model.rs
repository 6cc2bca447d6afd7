//! The loaded, validated policy: what the engine decides with.
//!
//! Everything here is already checked: durations parsed, regexes compiled,
//! templates split into literal and label parts, per-runbook guardrails
//! merged over the global ones.

use crate::records::{Labels, Severity};
use crate::time::Duration;

use super::matcher::LabelMatcher;
use super::selector::Selector;
use super::template::Template;

/// An exact rational number `num / den` with `den > 0`, used for
/// objectives and burn-rate factors so comparisons are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ratio {
    pub num: i128,
    pub den: i128,
}

impl Ratio {
    pub fn to_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }
}

#[derive(Debug, Clone)]
pub struct Policy {
    /// `sha256:` and the first 16 hex digits of the SHA-256 of the file's bytes.
    pub version: String,
    pub slos: Vec<Slo>,
    pub runbooks: Vec<Runbook>,
    /// Global guardrails (runbooks carry their merged copy).
    pub guardrails: Guardrails,
    pub approvers: Vec<String>,
}

impl Policy {
    /// The runbook an incident with these trigger labels is handled by: the
    /// first in file order whose `match` matchers all hold.
    pub fn runbook_for(&self, labels: &Labels) -> Option<usize> {
        self.runbooks
            .iter()
            .position(|r| r.matchers.iter().all(|m| m.matches_labels(labels)))
    }
}

#[derive(Debug, Clone)]
pub struct Slo {
    pub name: String,
    pub service: String,
    /// Objective as a fraction of 1 (99.9 % is 999/1000).
    pub objective: Ratio,
    pub period: Duration,
    pub total: Selector,
    /// Exactly one of `bad` and `good` is set.
    pub bad: Option<Selector>,
    pub good: Option<Selector>,
    /// Burn-rate tiers, in file order (the defaults when the file has none).
    pub tiers: Vec<BurnTier>,
}

#[derive(Debug, Clone)]
pub struct BurnTier {
    pub severity: Severity,
    pub long: Duration,
    pub short: Duration,
    /// Fires when burn over both windows is strictly greater than this.
    pub factor: Ratio,
}

/// Where a runbook's action reaches: the engine never acts at tier 1 on
/// anything but `service` unless the runbook says `allow_tier1: true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    Service,
    Database,
    Network,
    MultiService,
}

#[derive(Debug, Clone)]
pub struct ActionSpec {
    /// `restart`, `scale`, `failover`, `cache_invalidate`, `exec`, `http`, `probe`, …
    pub kind: String,
    pub target: Template,
    /// In key order.
    pub params: Vec<(String, Template)>,
    /// Argument vector for `exec`.
    pub args: Vec<Template>,
    /// How long the executor may let it run (default 1m).
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Validate {
    pub within: Duration,
    /// Index into `Policy::slos`.
    pub slo: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Runbook {
    pub name: String,
    pub matchers: Vec<LabelMatcher>,
    pub tier: u8,
    pub action: ActionSpec,
    pub rollback: Option<ActionSpec>,
    pub validate: Validate,
    pub domain: Domain,
    pub allow_tier1: bool,
    /// Anchored regexes a rendered target must match; empty = any target.
    pub allow_targets: Vec<regex::Regex>,
    /// Latest start for an executor, counted from the command's emission (default 2m).
    pub deadline: Duration,
    /// Global guardrails with this runbook's overrides applied.
    pub guardrails: Guardrails,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guardrails {
    pub max_actions_per_target: Option<RateLimit>,
    pub cooldown: Duration,
    pub freeze_on_changes: Vec<String>,
    pub first_time: Severity,
    pub stale_after: Option<Duration>,
    pub approval_timeout: Duration,
}

impl Default for Guardrails {
    fn default() -> Self {
        Guardrails {
            max_actions_per_target: None,
            cooldown: Duration::ZERO,
            freeze_on_changes: Vec::new(),
            first_time: Severity::Page,
            stale_after: None,
            approval_timeout: Duration::minutes(15),
        }
    }
}
