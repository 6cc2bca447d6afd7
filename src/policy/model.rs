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
    /// The global `kubernetes:` section (runbooks carry their own or this).
    pub kubernetes: Option<Kubernetes>,
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
    /// The runbook's `kubernetes:` section, else the global one.
    pub kubernetes: Option<Kubernetes>,
}

/// Action kinds that act on Kubernetes, with the resource kind each
/// touches (the `KIND/` of a `kubernetes.resources` entry).
pub const K8S_ACTIONS: &[(&str, &str)] = &[
    ("k8s.rollout_restart", "deployment"),
    ("k8s.scale", "deployment"),
    ("k8s.delete_pod", "pod"),
];

/// The resource kind a `k8s.*` action touches; `None` for other kinds.
pub fn k8s_resource_kind(action: &str) -> Option<&'static str> {
    K8S_ACTIONS
        .iter()
        .find(|(a, _)| *a == action)
        .map(|&(_, k)| k)
}

/// What `k8s.*` commands may touch: the `kubernetes:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubernetes {
    /// Namespaces a target may be in; never empty.
    pub namespaces: Vec<String>,
    /// `KIND/NAME` patterns (`*` matches any run of characters); empty =
    /// any resource in the namespaces.
    pub resources: Vec<ResourcePattern>,
    /// Ceiling for `k8s.scale`, passed to the executor as `max_replicas`.
    pub max_replicas: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePattern {
    /// `deployment` or `pod`.
    pub kind: String,
    /// Name glob: `*` matches any run of characters.
    pub name: String,
}

impl ResourcePattern {
    pub fn matches(&self, kind: &str, name: &str) -> bool {
        self.kind == kind && glob(&self.name, name)
    }
}

impl std::fmt::Display for ResourcePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &str, s: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = s.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for p in middle {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl Kubernetes {
    /// Whether a `k8s.*` command with this rendered target may run: the
    /// target is `NAMESPACE/NAME`, the namespace is listed, and the
    /// resource matches `resources` when there are any. The error says
    /// why not.
    pub fn allows(&self, action: &str, target: &str) -> Result<(), String> {
        let kind = k8s_resource_kind(action)
            .ok_or_else(|| format!("unknown Kubernetes action kind {action}"))?;
        let (ns, name) = target
            .split_once('/')
            .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
            .ok_or_else(|| format!("target {target:?} is not NAMESPACE/NAME"))?;
        if !self.namespaces.iter().any(|n| n == ns) {
            return Err(format!(
                "namespace {ns:?} is not in kubernetes.namespaces ({})",
                self.namespaces.join(", ")
            ));
        }
        if !self.resources.is_empty() && !self.resources.iter().any(|r| r.matches(kind, name)) {
            let listed: Vec<String> = self.resources.iter().map(|r| r.to_string()).collect();
            return Err(format!(
                "{kind}/{name} is not in kubernetes.resources ({})",
                listed.join(", ")
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod kube_tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("checkout", "checkout"));
        assert!(!glob("checkout", "checkout2"));
        assert!(glob("checkout-*", "checkout-7f9c-x2"));
        assert!(!glob("checkout-*", "cart-1"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "a-b-b-c"));
        assert!(!glob("a*b*c", "a-c-b"));
        assert!(!glob("ab*ba", "aba"));
    }

    #[test]
    fn allow_list() {
        let k = Kubernetes {
            namespaces: vec!["shop".into()],
            resources: vec![
                ResourcePattern {
                    kind: "deployment".into(),
                    name: "checkout".into(),
                },
                ResourcePattern {
                    kind: "pod".into(),
                    name: "checkout-*".into(),
                },
            ],
            max_replicas: Some(20),
        };
        assert!(k.allows("k8s.scale", "shop/checkout").is_ok());
        assert!(k.allows("k8s.delete_pod", "shop/checkout-7f9c").is_ok());
        assert!(k.allows("k8s.delete_pod", "shop/checkout").is_err());
        assert!(k.allows("k8s.scale", "shop/checkout-7f9c").is_err());
        let e = k.allows("k8s.scale", "kube-system/checkout").unwrap_err();
        assert!(e.contains("kube-system"), "{e}");
        assert!(k.allows("k8s.scale", "checkout").is_err());
        assert!(k.allows("k8s.scale", "shop/a/b").is_err());
        assert!(k.allows("k8s.exec", "shop/checkout").is_err());
    }
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
    pub blast_radius: Option<BlastRadius>,
}

/// `blast_radius`: never more than `max_share` of a service's instances
/// acted on at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlastRadius {
    /// Share of the service's instances, as a fraction of 1 (25 % is 1/4).
    pub max_share: Ratio,
    /// `max_share` as written, e.g. `25%`.
    pub max_share_text: String,
    /// The metric label whose distinct values are the service's instances.
    pub instance_label: String,
}

impl BlastRadius {
    /// How many of `instances` may be acted on at once: at least 1.
    pub fn limit(&self, instances: usize) -> usize {
        let n = self.max_share.num * instances as i128 / self.max_share.den;
        usize::try_from(n).unwrap_or(usize::MAX).max(1)
    }
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
            blast_radius: None,
        }
    }
}
