//! The `runbooks:` section: matchers, actions, validation and safety.
//!
//! Besides shape, two checks here catch runbooks that would misbehave at
//! incident time rather than at load: a tier-1 runbook reaching a database,
//! the network or several services without an explicit `allow_tier1`, and
//! a burn-rate runbook whose templates need labels burn-rate incidents
//! never carry (its action could never be rendered).

use crate::time::Duration;

use super::super::matcher::{anchored, LabelMatcher, MatchOp};
use super::super::model::{
    k8s_resource_kind, ActionSpec, Domain, Guardrails, Kubernetes, Runbook, Validate, K8S_ACTIONS,
};
use super::super::template::Template;
use super::node::{Kind, Node};
use super::read::{self, index, Ctx, Fields};
use super::{read_guardrails, read_kubernetes};

const RUNBOOK_KEYS: &[&str] = &[
    "name",
    "match",
    "tier",
    "action",
    "rollback",
    "validate",
    "guardrails",
    "domain",
    "allow_tier1",
    "allow_targets",
    "deadline",
    "kubernetes",
];
const ACTION_KEYS: &[&str] = &["kind", "target", "params", "args", "timeout"];
const VALIDATE_KEYS: &[&str] = &["within", "slo"];

const DATABASE_TOKENS: &[&str] = &[
    "db",
    "database",
    "postgres",
    "postgresql",
    "mysql",
    "mariadb",
    "mongo",
    "mongodb",
    "sql",
];
const NETWORK_TOKENS: &[&str] = &[
    "network",
    "dns",
    "lb",
    "loadbalancer",
    "firewall",
    "router",
    "vpc",
    "ingress",
];
/// Labels the engine puts on the incidents it opens for burning SLOs.
const BURN_LABELS: &[&str] = &["alertname", "service", "severity", "slo"];

/// Where a template sits and which labels it reads.
pub(super) struct Site {
    line: usize,
    col: usize,
    path: String,
    labels: Vec<String>,
}

pub(super) fn read_runbooks(
    cx: &mut Ctx,
    node: &Node,
    path: &str,
    slos: &[Option<String>],
    global: &Guardrails,
    kube: Option<&Option<Kubernetes>>,
) -> Vec<Runbook> {
    let mut out = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let Some(items) = read::list(cx, node, path) else {
        return out;
    };
    for (i, item) in items.iter().enumerate() {
        out.extend(read_runbook(
            cx,
            item,
            &index(path, i),
            &mut names,
            slos,
            global,
            kube,
        ));
    }
    out
}

fn read_runbook(
    cx: &mut Ctx,
    node: &Node,
    path: &str,
    names: &mut Vec<String>,
    slos: &[Option<String>],
    global: &Guardrails,
    global_kube: Option<&Option<Kubernetes>>,
) -> Option<Runbook> {
    let f = Fields::read(cx, node, path, RUNBOOK_KEYS)?;
    let name = f.required(cx, "name").and_then(|n| {
        let name = read::nonempty(cx, n, &f.path("name"))?;
        if names.contains(&name) {
            cx.report(
                n,
                &f.path("name"),
                format!("duplicate runbook name `{name}`"),
            );
        }
        names.push(name.clone());
        Some(name)
    });
    let matchers = f
        .required(cx, "match")
        .and_then(|n| read_matchers(cx, n, &f.path("match")));
    let tier = f
        .required(cx, "tier")
        .and_then(|n| read_tier(cx, n, &f.path("tier")));
    let mut sites = Vec::new();
    let action = f
        .required(cx, "action")
        .and_then(|n| read_action(cx, n, &f.path("action"), &mut sites, false));
    let rollback = match f.get("rollback") {
        None => Some(None),
        Some(n) => read_rollback(cx, n, &f.path("rollback"), &mut sites),
    };
    let validate = match f.get("validate") {
        None => Some(Validate {
            within: Duration::minutes(5),
            slo: None,
        }),
        Some(n) => read_validate(cx, n, &f.path("validate"), slos),
    };
    let guardrails = match f.get("guardrails") {
        None => global.clone(),
        Some(n) => read_guardrails(cx, n, &f.path("guardrails"), global.clone()),
    };
    let domain = match f.get("domain") {
        Some(n) => read_domain(cx, n, &f.path("domain")),
        None => action
            .as_ref()
            .zip(name.as_deref())
            .map(|(a, n)| infer_domain(n, a)),
    };
    let allow_tier1 = match f.get("allow_tier1") {
        None => Some(false),
        Some(n) => read::boolean(cx, n, &f.path("allow_tier1")),
    };
    let allow_targets = match f.get("allow_targets") {
        None => Some(Vec::new()),
        Some(n) => read_allow_targets(cx, n, &f.path("allow_targets")),
    };
    let deadline = match f.get("deadline") {
        None => Some(Duration::minutes(2)),
        Some(n) => read::positive_duration(cx, n, &f.path("deadline")),
    };
    // The runbook's section, else the global one: `Some(None)` when there
    // is none, `None` when the one that applies has problems (reported
    // already, so the actions are not blamed for it).
    let kubernetes: Option<Option<Kubernetes>> = match f.get("kubernetes") {
        Some(n) => read_kubernetes(cx, n, &f.path("kubernetes")).map(Some),
        None => global_kube.map_or(Some(None), |g| g.clone().map(Some)),
    };
    let rollback_spec = rollback.as_ref().and_then(Option::as_ref);
    for (key, spec) in [("action", action.as_ref()), ("rollback", rollback_spec)] {
        if let (Some(spec), Some(n)) = (spec, f.get(key)) {
            let k = kubernetes.as_ref().map(Option::as_ref);
            check_k8s_action(cx, n, &f.path(key), spec, k);
        }
    }
    if let (Some(1), Some(d), Some(false) | None, Some(n)) =
        (tier, domain, allow_tier1, f.get("tier"))
    {
        if d != Domain::Service {
            let msg = format!(
                "tier 1 on a {} action needs `allow_tier1: true` (database, network and multi-service actions are tier 2 or 3 by default)",
                domain_name(d)
            );
            cx.report(n, &f.path("tier"), msg);
        }
    }
    if matchers.iter().flatten().flatten().any(is_burn_rate) {
        check_burn_rate_labels(cx, &sites);
    }
    Some(Runbook {
        name: name?,
        matchers: matchers?.into_iter().collect::<Option<_>>()?,
        tier: tier?,
        action: action?,
        rollback: rollback?,
        validate: validate?,
        domain: domain?,
        allow_tier1: allow_tier1?,
        allow_targets: allow_targets?,
        deadline: deadline?,
        guardrails,
        kubernetes: kubernetes.flatten(),
    })
}

/// Every matcher that parsed; `None` in a slot marks one that did not, so
/// the burn-rate check can still run on the rest.
fn read_matchers(cx: &mut Ctx, node: &Node, path: &str) -> Option<Vec<Option<LabelMatcher>>> {
    let items = read::list(cx, node, path)?;
    if items.is_empty() {
        cx.report(
            node,
            path,
            "must list at least one matcher, e.g. 'alertname=\"PodOOMKilled\"'",
        );
        return None;
    }
    let parsed = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let p = index(path, i);
            let s = read::string(cx, item, &p)?;
            LabelMatcher::parse(&s)
                .map_err(|e| cx.report(item, &p, e))
                .ok()
        })
        .collect();
    Some(parsed)
}

fn read_tier(cx: &mut Ctx, node: &Node, path: &str) -> Option<u8> {
    match read::integer(cx, node, path)? {
        t @ 1..=3 => u8::try_from(t).ok(),
        other => {
            cx.report(node, path, format!("tier must be 1, 2 or 3, found {other}"));
            None
        }
    }
}

/// An action map; `rollback` allows `previous.NAME` placeholders.
fn read_action(
    cx: &mut Ctx,
    node: &Node,
    path: &str,
    sites: &mut Vec<Site>,
    rollback: bool,
) -> Option<ActionSpec> {
    let f = Fields::read(cx, node, path, ACTION_KEYS)?;
    let template = |cx: &mut Ctx, n: &Node, p: &str, sites: &mut Vec<Site>| {
        let t = template(cx, n, p, sites)?;
        if let (false, Some(name)) = (rollback, t.previous_refs().first()) {
            cx.report(
                n,
                p,
                format!("`previous.{name}` is only available in a rollback (it reads what the result of the command being undone recorded)"),
            );
            return None;
        }
        Some(t)
    };
    let kind = f
        .required(cx, "kind")
        .and_then(|n| read::nonempty(cx, n, &f.path("kind")));
    let target = f
        .required(cx, "target")
        .and_then(|n| template(cx, n, &f.path("target"), sites));
    let params = match f.get("params") {
        None => Some(Vec::new()),
        Some(n) => read_params(cx, n, &f.path("params"), sites, rollback),
    };
    let args = match f.get("args") {
        None => Some(Vec::new()),
        Some(n) => read::list(cx, n, &f.path("args")).and_then(|items| {
            let args: Vec<Option<Template>> = items
                .iter()
                .enumerate()
                .map(|(i, a)| template(cx, a, &index(&f.path("args"), i), sites))
                .collect();
            args.into_iter().collect()
        }),
    };
    let timeout = match f.get("timeout") {
        None => Some(Duration::minutes(1)),
        Some(n) => read::positive_duration(cx, n, &f.path("timeout")),
    };
    Some(ActionSpec {
        kind: kind?,
        target: target?,
        params: params?,
        args: args?,
        timeout: timeout?,
    })
}

/// Parameters in key order, so equal policies produce equal commands
/// whatever order the file lists them in.
fn read_params(
    cx: &mut Ctx,
    node: &Node,
    path: &str,
    sites: &mut Vec<Site>,
    rollback: bool,
) -> Option<Vec<(String, Template)>> {
    let f = Fields::read_open(cx, node, path)?;
    let mut out = Vec::new();
    let mut ok = true;
    for &(key, value) in f.entries() {
        let t = template(cx, value, &f.path(key), sites);
        if let (false, Some(t)) = (rollback, &t) {
            if let Some(name) = t.previous_refs().first() {
                cx.report(
                    value,
                    &f.path(key),
                    format!("`previous.{name}` is only available in a rollback (it reads what the result of the command being undone recorded)"),
                );
                ok = false;
                continue;
            }
        }
        match t {
            Some(t) => out.push((key.to_string(), t)),
            None => ok = false,
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    ok.then_some(out)
}

fn read_rollback(
    cx: &mut Ctx,
    node: &Node,
    path: &str,
    sites: &mut Vec<Site>,
) -> Option<Option<ActionSpec>> {
    match &node.kind {
        Kind::Scalar { text, .. } if text == "none" => Some(None),
        Kind::Map(_) => read_action(cx, node, path, sites, true).map(Some),
        _ => {
            let found = node.type_name();
            cx.report(
                node,
                path,
                format!("expected `none` or an action map, found {found}"),
            );
            None
        }
    }
}

fn read_validate(
    cx: &mut Ctx,
    node: &Node,
    path: &str,
    slos: &[Option<String>],
) -> Option<Validate> {
    let f = Fields::read(cx, node, path, VALIDATE_KEYS)?;
    let within = match f.get("within") {
        None => Some(Duration::minutes(5)),
        Some(n) => read::positive_duration(cx, n, &f.path("within")),
    };
    let slo = match f.get("slo") {
        None => Some(None),
        Some(n) => read::string(cx, n, &f.path("slo")).and_then(|name| {
            let found = slos
                .iter()
                .position(|s| s.as_deref() == Some(name.as_str()));
            if found.is_none() {
                let declared: Vec<&str> = slos.iter().flatten().map(String::as_str).collect();
                let msg = if declared.is_empty() {
                    format!("unknown slo `{name}` (no slos are declared)")
                } else {
                    format!("unknown slo `{name}` (declared: {})", declared.join(", "))
                };
                cx.report(n, &f.path("slo"), msg);
            }
            found.map(Some)
        }),
    };
    Some(Validate {
        within: within?,
        slo: slo?,
    })
}

fn read_domain(cx: &mut Ctx, node: &Node, path: &str) -> Option<Domain> {
    match read::string(cx, node, path)?.as_str() {
        "service" => Some(Domain::Service),
        "database" => Some(Domain::Database),
        "network" => Some(Domain::Network),
        "multi_service" => Some(Domain::MultiService),
        other => {
            let msg = format!("unknown domain `{other}` (expected one of: service, database, network, multi_service)");
            cx.report(node, path, msg);
            None
        }
    }
}

fn read_allow_targets(cx: &mut Ctx, node: &Node, path: &str) -> Option<Vec<regex::Regex>> {
    let items = read::list(cx, node, path)?;
    let res: Vec<Option<regex::Regex>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let p = index(path, i);
            let s = read::string(cx, item, &p)?;
            anchored(&s).map_err(|e| cx.report(item, &p, e)).ok()
        })
        .collect();
    res.into_iter().collect()
}

/// Checks a `k8s.*` action (`node` is the action map at `path`): a known
/// kind, a `kubernetes:` section to allow it, a ceiling for `k8s.scale`,
/// and a literal target inside the allow-list. `kube` is `None` when the
/// section that applies has problems: only the kind is checked then.
fn check_k8s_action(
    cx: &mut Ctx,
    node: &Node,
    path: &str,
    spec: &ActionSpec,
    kube: Option<Option<&Kubernetes>>,
) {
    if !spec.kind.starts_with("k8s.") {
        return;
    }
    if k8s_resource_kind(&spec.kind).is_none() {
        let known: Vec<&str> = K8S_ACTIONS.iter().map(|&(a, _)| a).collect();
        cx.report(
            node,
            &format!("{path}.kind"),
            format!(
                "unknown Kubernetes action kind `{}` (expected one of: {})",
                spec.kind,
                known.join(", ")
            ),
        );
        return;
    }
    if spec.params.iter().any(|(p, _)| p == "max_replicas") {
        cx.report(
            node,
            &format!("{path}.params.max_replicas"),
            "max_replicas is set from `kubernetes.max_replicas`, not from params",
        );
    }
    let Some(kube) = kube else { return };
    let Some(k) = kube else {
        cx.report(
            node,
            path,
            format!(
                "{} needs a `kubernetes:` section (global or in the runbook) listing the namespaces it may touch",
                spec.kind
            ),
        );
        return;
    };
    if spec.kind == "k8s.scale" && k.max_replicas.is_none() {
        cx.report(
            node,
            path,
            "k8s.scale needs `kubernetes.max_replicas`, the ceiling the executor enforces",
        );
    }
    if spec.target.is_literal() {
        if let Err(e) = k.allows(&spec.kind, spec.target.as_str()) {
            cx.report(node, &format!("{path}.target"), format!("not allowed: {e}"));
        }
    }
}

fn template(cx: &mut Ctx, node: &Node, path: &str, sites: &mut Vec<Site>) -> Option<Template> {
    let s = read::text(cx, node, path)?;
    match Template::parse(&s) {
        Ok(t) => {
            sites.push(Site {
                line: node.line,
                col: node.col,
                path: path.to_string(),
                labels: t.label_refs().iter().map(|l| l.to_string()).collect(),
            });
            Some(t)
        }
        Err(e) => {
            cx.report(node, path, format!("bad template: {e}"));
            None
        }
    }
}

/// Database first: a database behind a load balancer is still a database.
fn infer_domain(name: &str, action: &ActionSpec) -> Domain {
    let texts = [name, action.kind.as_str(), action.target.as_str()];
    let has = |set: &[&str]| {
        texts.iter().any(|t| {
            t.split(|c: char| !c.is_ascii_alphanumeric())
                .any(|tok| set.iter().any(|s| s.eq_ignore_ascii_case(tok)))
        })
    };
    if has(DATABASE_TOKENS) {
        Domain::Database
    } else if has(NETWORK_TOKENS) {
        Domain::Network
    } else if action.params.iter().any(|(k, _)| k == "services") {
        Domain::MultiService
    } else {
        Domain::Service
    }
}

fn domain_name(d: Domain) -> &'static str {
    match d {
        Domain::Service => "service",
        Domain::Database => "database",
        Domain::Network => "network",
        Domain::MultiService => "multi-service",
    }
}

fn is_burn_rate(m: &LabelMatcher) -> bool {
    m.name == "alertname" && m.op == MatchOp::Eq && m.value == "SLOBurnRate"
}

fn check_burn_rate_labels(cx: &mut Ctx, sites: &[Site]) {
    for site in sites {
        for label in site
            .labels
            .iter()
            .filter(|l| !BURN_LABELS.contains(&l.as_str()))
        {
            let msg = format!(
                "template names label `{label}`, which burn-rate incidents do not carry (they have {})",
                BURN_LABELS.join(", ")
            );
            cx.report_at(site.line, site.col, &site.path, msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(kind: &str, target: &str, params: &[&str]) -> ActionSpec {
        ActionSpec {
            kind: kind.to_string(),
            target: Template::literal(target),
            params: params
                .iter()
                .map(|k| (k.to_string(), Template::literal("x")))
                .collect(),
            args: Vec::new(),
            timeout: Duration::minutes(1),
        }
    }

    #[test]
    fn domains_are_inferred_from_whole_tokens() {
        assert_eq!(
            infer_domain(
                "failover-primary",
                &action("failover", "{{ labels.service }}", &[])
            ),
            Domain::Service
        );
        assert_eq!(
            infer_domain("failover-db", &action("failover", "x", &[])),
            Domain::Database
        );
        assert_eq!(
            infer_domain("x", &action("vacuum", "Postgres/main", &[])),
            Domain::Database
        );
        assert_eq!(
            infer_domain("x", &action("restart", "{{ labels.db_host }}", &[])),
            Domain::Database
        );
        assert_eq!(
            infer_domain("flush-DNS", &action("exec", "x", &[])),
            Domain::Network
        );
        // "dbx" and "lbs" are not tokens of either set.
        assert_eq!(
            infer_domain("dbx-lbs", &action("restart", "x", &[])),
            Domain::Service
        );
        assert_eq!(
            infer_domain("x", &action("restart", "x", &["services"])),
            Domain::MultiService
        );
        assert_eq!(
            infer_domain("lb-db", &action("restart", "x", &["services"])),
            Domain::Database
        );
    }
}
