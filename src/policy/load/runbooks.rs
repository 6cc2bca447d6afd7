//! The `runbooks:` section: matchers, actions, validation and safety.
//!
//! Besides shape, two checks here catch runbooks that would misbehave at
//! incident time rather than at load: a tier-1 runbook reaching a database,
//! the network or several services without an explicit `allow_tier1`, and
//! a burn-rate runbook whose templates need labels burn-rate incidents
//! never carry (its action could never be rendered).

use crate::time::Duration;

use super::super::matcher::{anchored, LabelMatcher, MatchOp};
use super::super::model::{ActionSpec, Domain, Guardrails, Runbook, Validate};
use super::super::template::Template;
use super::node::{Kind, Node};
use super::read::{self, index, Ctx, Fields};
use super::read_guardrails;

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
struct Site {
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
        .and_then(|n| read_action(cx, n, &f.path("action"), &mut sites));
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

fn read_action(cx: &mut Ctx, node: &Node, path: &str, sites: &mut Vec<Site>) -> Option<ActionSpec> {
    let f = Fields::read(cx, node, path, ACTION_KEYS)?;
    let kind = f
        .required(cx, "kind")
        .and_then(|n| read::nonempty(cx, n, &f.path("kind")));
    let target = f
        .required(cx, "target")
        .and_then(|n| template(cx, n, &f.path("target"), sites));
    let params = match f.get("params") {
        None => Some(Vec::new()),
        Some(n) => read_params(cx, n, &f.path("params"), sites),
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
) -> Option<Vec<(String, Template)>> {
    let f = Fields::read_open(cx, node, path)?;
    let mut out = Vec::new();
    let mut ok = true;
    for &(key, value) in f.entries() {
        match template(cx, value, &f.path(key), sites) {
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
        Kind::Map(_) => read_action(cx, node, path, sites).map(Some),
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
