//! Reads a policy file into the checked [`Policy`] model.
//!
//! Loading never stops at the first mistake: every problem in the file is
//! collected with its file, line, column and key path, the way `selfheal
//! check` prints them. YAML is read through yaml-rust2's marked event
//! parser into a small positioned tree (`node`), then each section is read
//! by its own module (`slos`, `runbooks`) over typed readers (`read`).

mod node;
mod read;
mod runbooks;
mod slos;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::model::{
    BlastRadius, Guardrails, Kubernetes, Policy, RateLimit, ResourcePattern, K8S_ACTIONS,
};
use node::Node;
use read::{index, Ctx, Fields};

const TOP_KEYS: &[&str] = &["slos", "runbooks", "guardrails", "approvers", "kubernetes"];
const KUBERNETES_KEYS: &[&str] = &["namespaces", "resources", "max_replicas"];
const GUARDRAIL_KEYS: &[&str] = &[
    "max_actions_per_target",
    "cooldown",
    "freeze_on_changes",
    "first_time",
    "stale_after",
    "approval_timeout",
    "blast_radius",
];
const BLAST_KEYS: &[&str] = &["max_share", "instance_label"];
const RATE_KEYS: &[&str] = &["count", "per"];

/// One thing wrong with a policy file. Lines and columns are 1-based; a
/// file that could not be read has line 0, column 0 and an empty path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub col: usize,
    /// Key path such as `runbooks[1].match[0]`; empty for the whole file.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.col)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one file, in file order.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Reads and checks the policy file at `path`.
pub fn load(path: &Path) -> Result<Policy, Problems> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(src) => parse(&src, &file),
        Err(e) => Err(Problems(vec![Problem {
            file,
            line: 0,
            col: 0,
            path: String::new(),
            message: format!("cannot read policy file: {e}"),
        }])),
    }
}

/// Checks policy text; `file` is only used to label problems.
pub fn parse(src: &str, file: &str) -> Result<Policy, Problems> {
    let root = node::parse_tree(src).map_err(|e| {
        Problems(vec![Problem {
            file: file.to_string(),
            line: e.line,
            col: e.col,
            path: String::new(),
            message: e.message,
        }])
    })?;
    let mut cx = Ctx {
        file,
        problems: Vec::new(),
    };
    let policy = root.and_then(|r| read_policy(&mut cx, &r, version(src)));
    if !cx.problems.is_empty() {
        // Sections are read in dependency order, not file order.
        cx.problems.sort_by_key(|p| (p.line, p.col));
        return Err(Problems(cx.problems));
    }
    Ok(policy.unwrap_or_else(|| Policy {
        version: version(src),
        slos: Vec::new(),
        runbooks: Vec::new(),
        guardrails: Guardrails::default(),
        approvers: Vec::new(),
        kubernetes: None,
    }))
}

/// The `policy_version` of policy text: `sha256:` and 16 hex digits.
pub fn version(src: &str) -> String {
    let digest = Sha256::digest(src.as_bytes());
    let hex = hex::encode(digest);
    format!("sha256:{}", &hex[..16])
}

fn read_policy(cx: &mut Ctx, root: &Node, version: String) -> Option<Policy> {
    let f = Fields::read(cx, root, "", TOP_KEYS)?;
    // Global guardrails first: runbooks start from them.
    let guardrails = match f.get("guardrails") {
        Some(n) => read_guardrails(cx, n, "guardrails", Guardrails::default()),
        None => Guardrails::default(),
    };
    // A section with problems is reported; runbooks are still read, and
    // not blamed for lacking one.
    let kubernetes = f
        .get("kubernetes")
        .map(|n| read_kubernetes(cx, n, "kubernetes"));
    let (slos, slo_names) = match f.get("slos") {
        Some(n) => slos::read_slos(cx, n, "slos"),
        None => (Vec::new(), Vec::new()),
    };
    let runbooks = match f.get("runbooks") {
        Some(n) => runbooks::read_runbooks(
            cx,
            n,
            "runbooks",
            &slo_names,
            &guardrails,
            kubernetes.as_ref(),
        ),
        None => Vec::new(),
    };
    let approvers = match f.get("approvers") {
        Some(n) => string_list(cx, n, "approvers"),
        None => Vec::new(),
    };
    Some(Policy {
        version,
        slos,
        runbooks,
        guardrails,
        approvers,
        kubernetes: kubernetes.flatten(),
    })
}

/// A `kubernetes:` section (global or a runbook's).
fn read_kubernetes(cx: &mut Ctx, node: &Node, path: &str) -> Option<Kubernetes> {
    let f = Fields::read(cx, node, path, KUBERNETES_KEYS)?;
    let namespaces = f.required(cx, "namespaces").and_then(|n| {
        let p = f.path("namespaces");
        let items = read::list(cx, n, &p)?;
        if items.is_empty() {
            cx.report(n, &p, "must list at least one namespace");
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let ip = index(&p, i);
            match read::string(cx, item, &ip) {
                Some(ns) if crate::executor::k8s::is_dns_label(&ns) => out.push(ns),
                Some(ns) => {
                    cx.report(
                        item,
                        &ip,
                        format!("`{ns}` is not a namespace name (lowercase letters, digits and `-`, at most 63)"),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    });
    let resources = match f.get("resources") {
        None => Some(Vec::new()),
        Some(n) => {
            let p = f.path("resources");
            read::list(cx, n, &p).and_then(|items| {
                let parsed: Vec<Option<ResourcePattern>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let ip = index(&p, i);
                        let s = read::string(cx, item, &ip)?;
                        resource_pattern(&s)
                            .map_err(|e| cx.report(item, &ip, e))
                            .ok()
                    })
                    .collect();
                parsed.into_iter().collect()
            })
        }
    };
    let max_replicas = match f.get("max_replicas") {
        None => Some(None),
        Some(n) => {
            let p = f.path("max_replicas");
            read::integer(cx, n, &p).and_then(|m| {
                let ok = u32::try_from(m).ok().filter(|m| i32::try_from(*m).is_ok());
                if ok.is_none() {
                    cx.report(n, &p, format!("max_replicas must be 0 or more, found {m}"));
                }
                ok.map(Some)
            })
        }
    };
    Some(Kubernetes {
        namespaces: namespaces?,
        resources: resources?,
        max_replicas: max_replicas?,
    })
}

/// `KIND/NAME`, NAME a glob of name characters and `*`.
fn resource_pattern(s: &str) -> Result<ResourcePattern, String> {
    let kinds: Vec<&str> = {
        let mut k: Vec<&str> = K8S_ACTIONS.iter().map(|&(_, k)| k).collect();
        k.dedup();
        k
    };
    let (kind, name) = s.split_once('/').ok_or_else(|| {
        format!("`{s}` is not KIND/NAME (e.g. deployment/checkout, pod/checkout-*)")
    })?;
    if !kinds.contains(&kind) {
        return Err(format!(
            "unknown resource kind `{kind}` (expected one of: {})",
            kinds.join(", ")
        ));
    }
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'.' | b'*')
        });
    if !name_ok {
        return Err(format!(
            "`{name}` is not a resource name pattern (lowercase letters, digits, `-`, `.`, and `*` for any run)"
        ));
    }
    Ok(ResourcePattern {
        kind: kind.to_string(),
        name: name.to_string(),
    })
}

/// Reads guardrail keys over `base`: the defaults for the global section,
/// the global guardrails for a runbook's override.
fn read_guardrails(cx: &mut Ctx, node: &Node, path: &str, base: Guardrails) -> Guardrails {
    let mut g = base;
    let Some(f) = Fields::read(cx, node, path, GUARDRAIL_KEYS) else {
        return g;
    };
    if let Some(n) = f.get("max_actions_per_target") {
        if let Some(r) = rate_limit(cx, n, &f.path("max_actions_per_target")) {
            g.max_actions_per_target = Some(r);
        }
    }
    if let Some(d) = f
        .get("cooldown")
        .and_then(|n| read::duration(cx, n, &f.path("cooldown")))
    {
        g.cooldown = d;
    }
    if let Some(n) = f.get("freeze_on_changes") {
        g.freeze_on_changes = string_list(cx, n, &f.path("freeze_on_changes"));
    }
    if let Some(s) = f
        .get("first_time")
        .and_then(|n| read::severity(cx, n, &f.path("first_time")))
    {
        g.first_time = s;
    }
    if let Some(n) = f.get("stale_after") {
        if let Some(d) = read::positive_duration(cx, n, &f.path("stale_after")) {
            g.stale_after = Some(d);
        }
    }
    if let Some(n) = f.get("approval_timeout") {
        if let Some(d) = read::positive_duration(cx, n, &f.path("approval_timeout")) {
            g.approval_timeout = d;
        }
    }
    if let Some(n) = f.get("blast_radius") {
        if let Some(b) = blast_radius(cx, n, &f.path("blast_radius")) {
            g.blast_radius = Some(b);
        }
    }
    g
}

/// `blast_radius: {max_share: 25%, instance_label: instance}`; the label
/// defaults to `instance`.
fn blast_radius(cx: &mut Ctx, node: &Node, path: &str) -> Option<BlastRadius> {
    let f = Fields::read(cx, node, path, BLAST_KEYS)?;
    let share = f.required(cx, "max_share").and_then(|n| {
        let p = f.path("max_share");
        let (num, den) = read::percent(cx, n, &p)?;
        if num <= 0 || num > 100 * den {
            cx.report(
                n,
                &p,
                "max_share is a percentage above 0% and at most 100%, e.g. 25%",
            );
            return None;
        }
        let text = read::text(cx, n, &p)?;
        let (num, den) = read::reduce(num, den * 100);
        Some((super::model::Ratio { num, den }, text))
    });
    let label = match f.get("instance_label") {
        None => Some("instance".to_string()),
        Some(n) => read::nonempty(cx, n, &f.path("instance_label")),
    };
    let (max_share, max_share_text) = share?;
    Some(BlastRadius {
        max_share,
        max_share_text,
        instance_label: label?,
    })
}

fn rate_limit(cx: &mut Ctx, node: &Node, path: &str) -> Option<RateLimit> {
    let f = Fields::read(cx, node, path, RATE_KEYS)?;
    let count = f.required(cx, "count").and_then(|n| {
        let c = read::integer(cx, n, &f.path("count"))?;
        let ok = u32::try_from(c).ok().filter(|c| *c >= 1);
        if ok.is_none() {
            cx.report(
                n,
                &f.path("count"),
                format!("count must be at least 1, found {c}"),
            );
        }
        ok
    });
    let per = f
        .required(cx, "per")
        .and_then(|n| read::positive_duration(cx, n, &f.path("per")));
    Some(RateLimit {
        count: count?,
        per: per?,
    })
}

/// A list of non-empty strings; bad entries are reported and skipped.
fn string_list(cx: &mut Ctx, node: &Node, path: &str) -> Vec<String> {
    let Some(items) = read::list(cx, node, path) else {
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| read::nonempty(cx, item, &index(path, i)))
        .collect()
}
