//! Loader tests over inline YAML: the DESIGN.md example, derived tiers, and
//! files with many problems that must all be reported at their places.

use super::*;
use crate::policy::model::{Domain, Ratio};
use crate::records::{Labels, Severity};
use crate::time::Duration;

const DESIGN: &str = r#"slos:
  - name: checkout-availability
    service: checkout
    objective: 99.9            # percent
    period: 30d
    sli:
      total: 'http_requests_total{service="checkout"}'
      bad:   'http_requests_total{service="checkout",code=~"5.."}'
runbooks:
  - name: restart-on-oom
    match: ['alertname="PodOOMKilled"']          # Alertmanager matcher syntax
    tier: 1
    action: {kind: restart, target: '{{ labels.pod }}'}
    validate: {slo: checkout-availability, within: 5m}
    rollback: none
  - name: scale-on-saturation
    match: ['alertname="HighCPU"', 'env!="dev"']
    tier: 1
    action: {kind: scale, target: '{{ labels.service }}', params: {replicas: "+2"}}
    validate: {within: 5m}
    rollback: {kind: scale, target: '{{ labels.service }}', params: {replicas: "-2"}}
  - name: failover-primary
    match: ['alertname="PrimaryDown"']
    tier: 2                    # propose, wait for an approver
    action: {kind: failover, target: '{{ labels.service }}'}
    validate: {within: 5m}
guardrails:
  max_actions_per_target: {count: 3, per: 1h}
  cooldown: 10m
  freeze_on_changes: [migration]
  first_time: page
  stale_after: 5m
approvers: [alice@example.com]
"#;

fn ok(src: &str) -> Policy {
    parse(src, "p.yaml").unwrap_or_else(|e| panic!("unexpected problems:\n{e}"))
}

fn problems(src: &str) -> Vec<Problem> {
    match parse(src, "p.yaml") {
        Ok(_) => panic!("expected problems"),
        Err(Problems(ps)) => ps,
    }
}

/// 1-based column of `needle` on 1-based `line` of `src`.
fn col(src: &str, line: usize, needle: &str) -> usize {
    let text = src.lines().nth(line - 1).unwrap_or_default();
    text.find(needle).map_or(0, |i| i + 1)
}

fn ratio(num: i128, den: i128) -> Ratio {
    Ratio { num, den }
}

#[test]
fn design_example_loads_with_expected_values() {
    let p = ok(DESIGN);
    assert!(
        p.version.starts_with("sha256:") && p.version.len() == 7 + 16,
        "{}",
        p.version
    );
    assert_eq!(p.slos.len(), 1);
    let slo = &p.slos[0];
    assert_eq!(
        (slo.name.as_str(), slo.service.as_str()),
        ("checkout-availability", "checkout")
    );
    assert_eq!(slo.objective, ratio(999, 1000));
    assert_eq!(slo.period, Duration::days(30));
    assert_eq!(slo.total.equality("service"), Some("checkout"));
    assert!(slo.good.is_none());
    let bad = slo.bad.as_ref().map(|b| b.to_string());
    assert_eq!(
        bad.as_deref(),
        Some(r#"http_requests_total{service="checkout",code=~"5.."}"#)
    );
    let tiers: Vec<_> = slo
        .tiers
        .iter()
        .map(|t| (t.severity, t.long, t.short, t.factor))
        .collect();
    let (m, h, d) = (Duration::minutes, Duration::hours, Duration::days);
    assert_eq!(
        tiers,
        vec![
            (Severity::Page, h(1), m(5), ratio(72, 5)),
            (Severity::Page, h(6), m(30), ratio(6, 1)),
            (Severity::Ticket, d(1), h(2), ratio(3, 1)),
            (Severity::Ticket, d(3), h(6), ratio(1, 1)),
        ]
    );

    assert_eq!(p.runbooks.len(), 3);
    let oom = &p.runbooks[0];
    assert_eq!(
        (oom.name.as_str(), oom.tier, oom.domain),
        ("restart-on-oom", 1, Domain::Service)
    );
    assert_eq!(oom.matchers[0].to_string(), r#"alertname="PodOOMKilled""#);
    assert_eq!(
        (oom.action.kind.as_str(), oom.action.target.as_str()),
        ("restart", "{{ labels.pod }}")
    );
    assert_eq!((oom.validate.within, oom.validate.slo), (m(5), Some(0)));
    assert!(oom.rollback.is_none());
    assert_eq!(
        (oom.deadline, oom.action.timeout, oom.allow_tier1),
        (m(2), m(1), false)
    );
    assert!(oom.allow_targets.is_empty());

    let scale = &p.runbooks[1];
    assert_eq!(scale.matchers.len(), 2);
    let params: Vec<_> = scale
        .action
        .params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(params, vec![("replicas", "+2")]);
    let rb = scale.rollback.as_ref().map(|r| r.params[0].1.as_str());
    assert_eq!(rb, Some("-2"));
    assert_eq!(scale.validate.slo, None);
    assert_eq!(
        (p.runbooks[2].tier, p.runbooks[2].domain),
        (2, Domain::Service)
    );

    let g = &p.guardrails;
    assert_eq!(
        g.max_actions_per_target.map(|r| (r.count, r.per)),
        Some((3, h(1)))
    );
    assert_eq!(
        (g.cooldown, g.stale_after, g.approval_timeout),
        (m(10), Some(m(5)), m(15))
    );
    assert_eq!(
        (g.freeze_on_changes.clone(), g.first_time),
        (vec!["migration".to_string()], Severity::Page)
    );
    assert_eq!(oom.guardrails, *g);
    assert_eq!(p.approvers, vec!["alice@example.com"]);
}

#[test]
fn example_file_loads() {
    let p = ok(include_str!("../../../examples/policy.yaml"));
    assert_eq!((p.slos.len(), p.runbooks.len()), (1, 3));
    assert_eq!(p.slos[0].tiers[0].factor, ratio(72, 5));
}

#[test]
fn seven_day_period_derives_factors() {
    let src = DESIGN.replace("period: 30d", "period: 7d");
    let p = ok(&src);
    let f: Vec<Ratio> = p.slos[0].tiers.iter().map(|t| t.factor).collect();
    assert_eq!(
        f,
        vec![ratio(84, 25), ratio(7, 5), ratio(7, 10), ratio(7, 30)]
    );
    let short = ok(&DESIGN.replace("period: 30d", "period: 2d"));
    assert_eq!(short.slos[0].tiers.len(), 3);
    assert_eq!(
        ok(&DESIGN.replace("    period: 30d\n", "")).slos[0].period,
        Duration::days(30)
    );
}

#[test]
fn explicit_tiers() {
    let src = r#"slos:
  - name: a
    service: a
    objective: 99.5
    period: 28d
    sli: {total: 'req{service="a"}', good: 'req{service="a",ok="true"}'}
    tiers:
      - {severity: page, long: 1h, short: 5m}
      - {severity: page, long: 2h, short: 10m, factor: 10.5}
      - {severity: ticket, long: 1d, short: 2h, budget_percent: 20}
"#;
    let p = ok(src);
    let slo = &p.slos[0];
    assert_eq!(slo.objective, ratio(199, 200));
    assert!(slo.bad.is_none() && slo.good.is_some());
    let f: Vec<Ratio> = slo.tiers.iter().map(|t| t.factor).collect();
    // 2 % × 672h / 1h; 10.5 as written; 20 % × 28d / 1d.
    assert_eq!(f, vec![ratio(336, 25), ratio(21, 2), ratio(28, 5)]);
    assert_eq!(slo.tiers[2].severity, Severity::Ticket);
}

#[test]
fn window_and_tier_problems() {
    let src = r#"slos:
  - name: a
    service: a
    objective: 100
    period: 90m
    sli: {total: 'req', bad: 'err', good: 'ok'}
    tiers:
      - {severity: page, long: 2h, short: 10m}
      - {severity: page, long: 1h, short: 1h, factor: 1, budget_percent: 5}
      - {severity: ticket, long: 7h5m, short: 30s, factor: 0}
      - {severity: soon, long: 4d, short: 1h, budget_percent: 101}
"#;
    let got: Vec<(usize, String, String)> = problems(src)
        .into_iter()
        .map(|p| (p.line, p.path, p.message))
        .collect();
    let want: &[(usize, &str, &str)] = &[
        (4, "slos[0].objective", "strictly between 0 and 100"),
        (5, "slos[0].period", "whole number of hours"),
        (6, "slos[0].sli", "`bad` and `good` are mutually exclusive"),
        (8, "slos[0].tiers[0]", "factor or budget_percent required"),
        (
            9,
            "slos[0].tiers[1]",
            "`factor` and `budget_percent` are mutually exclusive",
        ),
        (
            9,
            "slos[0].tiers[1].short",
            "must be shorter than the long window 1h",
        ),
        (10, "slos[0].tiers[2].long", "multiple of 10m"),
        (10, "slos[0].tiers[2].short", "whole number of minutes"),
        (10, "slos[0].tiers[2].factor", "greater than 0"),
        (11, "slos[0].tiers[3].severity", "unknown severity `soon`"),
        (11, "slos[0].tiers[3].long", "longer than 3d"),
        (11, "slos[0].tiers[3].budget_percent", "at most 100"),
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for ((line, path, msg), (wl, wp, wm)) in got.iter().zip(want) {
        assert_eq!((line, path.as_str()), (wl, *wp), "{msg}");
        assert!(msg.contains(wm), "{path}: {msg:?} lacks {wm:?}");
    }
}

#[test]
fn many_problems_are_all_reported_in_place() {
    let src = r#"slos:
  - name: api
    service: api
    objective: 99.9
    period: 30x
    colour: blue
    sli:
      total: 'http_requests_total{service="api"}'
      bad: 'http_requests_total{service="api",code=~"5(.."}'
runbooks:
  - name: restart-pod
    match: ['alertname="PodOOMKilled"', 'pod=~"web-[0-9"']
    tier: 1
    action: {kind: restart, target: '{{ lables.pod }}'}
  - name: burn
    match: ['alertname="SLOBurnRate"']
    tier: 2
    action: {kind: restart, target: '{{ labels.pod }}', params: {slo: '{{ labels.slo }}'}}
  - name: failover-db
    match: ['alertname="PrimaryDown"']
    tier: 1
    action: {kind: failover, target: '{{ labels.service }}'}
    validate: {slo: api-latency}
guardrails:
  cooldown: soon
"#;
    let got = problems(src);
    let want: &[(usize, &str, &str, &str)] = &[
        (5, "30x", "slos[0].period", "bad duration \"30x\""),
        (6, "colour", "slos[0].colour", "unknown key `colour` (expected one of: name, service, objective, period, sli, tiers)"),
        (9, "'http", "slos[0].sli.bad", "bad regex"),
        (12, "'pod", "runbooks[0].match[1]", "bad regex"),
        (14, "'{{", "runbooks[0].action.target", "unknown template source `lables.pod`"),
        (18, "'{{", "runbooks[1].action.target", "template names label `pod`, which burn-rate incidents do not carry (they have alertname, service, severity, slo)"),
        (21, "1", "runbooks[2].tier", "tier 1 on a database action needs `allow_tier1: true`"),
        (23, "api-latency", "runbooks[2].validate.slo", "unknown slo `api-latency` (declared: api)"),
        (25, "soon", "guardrails.cooldown", "bad duration"),
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (p, (line, needle, path, msg)) in got.iter().zip(want) {
        assert_eq!((p.line, p.col), (*line, col(src, *line, needle)), "{p}");
        assert_eq!(p.path, *path, "{p}");
        assert!(p.message.contains(msg), "{p} lacks {msg:?}");
        assert_eq!(p.file, "p.yaml");
    }
    let text = Problems(got).to_string();
    assert_eq!(text.lines().count(), want.len());
    assert!(
        text.starts_with("p.yaml:5:13: slos[0].period: bad duration"),
        "{text}"
    );
}

#[test]
fn shape_problems() {
    let src = r#"slo: []
slos:
  - name: a
    name: b
    service: 7
    objective: "99.9"
    sli: {total: '{}', bad: 'x'}
  - name: a
    service: a
    objective: 99.9
    sli: {total: 'x'}
runbooks:
  - match: []
    tier: 4
    action: {kind: "", target: '{{ labels.x', args: [1, '{{ labels.y }}'], timeout: 0s}
    rollback: maybe
    domain: storage
    allow_tier1: yes
    allow_targets: ['web-(']
    deadline: 2
    guardrails: {max_actions_per_target: {count: 0}, first_time: never, stale_after: 0s}
approvers: [alice, ""]
"#;
    let got: Vec<(usize, String, String)> = problems(src)
        .into_iter()
        .map(|p| (p.line, p.path, p.message))
        .collect();
    let want: &[(usize, &str, &str)] = &[
        (
            1,
            "slo",
            "unknown key `slo` (expected one of: slos, runbooks, guardrails, approvers, kubernetes)",
        ),
        (
            4,
            "slos[0].name",
            "duplicate key `name` (first set on line 3)",
        ),
        (5, "slos[0].service", "expected a string, found a number"),
        (6, "slos[0].objective", "expected a number, found a string"),
        (7, "slos[0].sli.total", "at least one non-empty matcher"),
        (8, "slos[1].name", "duplicate slo name `a`"),
        (11, "slos[1].sli", "one of `bad` or `good` is required"),
        (13, "runbooks[0]", "missing required key `name`"),
        (13, "runbooks[0].match", "at least one matcher"),
        (14, "runbooks[0].tier", "tier must be 1, 2 or 3, found 4"),
        (15, "runbooks[0].action.kind", "must not be empty"),
        (15, "runbooks[0].action.target", "unclosed `{{`"),
        (15, "runbooks[0].action.timeout", "longer than 0s"),
        (
            16,
            "runbooks[0].rollback",
            "expected `none` or an action map",
        ),
        (17, "runbooks[0].domain", "unknown domain `storage`"),
        (
            18,
            "runbooks[0].allow_tier1",
            "expected true or false, found a string",
        ),
        (19, "runbooks[0].allow_targets[0]", "bad regex"),
        (20, "runbooks[0].deadline", "bad duration \"2\""),
        (
            21,
            "runbooks[0].guardrails.max_actions_per_target",
            "missing required key `per`",
        ),
        (
            21,
            "runbooks[0].guardrails.max_actions_per_target.count",
            "at least 1",
        ),
        (
            21,
            "runbooks[0].guardrails.first_time",
            "unknown severity `never`",
        ),
        (21, "runbooks[0].guardrails.stale_after", "longer than 0s"),
        (22, "approvers[1]", "must not be empty"),
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for ((line, path, msg), (wl, wp, wm)) in got.iter().zip(want) {
        assert_eq!((line, path.as_str()), (wl, *wp), "{msg}");
        assert!(msg.contains(wm), "{path}: {msg:?} lacks {wm:?}");
    }
}

#[test]
fn overrides_defaults_and_text_params() {
    let src = r#"guardrails: {cooldown: 10m, first_time: ticket}
runbooks:
  - name: purge-cache
    match: ['alertname="Stale"', 'env=~"prod|staging"']
    tier: 1
    action:
      kind: cache_invalidate
      target: '{{ labels.service }}'
      params: {ttl: 30, all: true, by: '{{ annotations.owner }}'}
      args: [--force, 3]
      timeout: 30s
    guardrails: {cooldown: 1h, approval_timeout: 5m}
    allow_targets: ['checkout|cart']
    deadline: 90s
  - name: shift-traffic
    match: ['alertname="Down"']
    tier: 1
    allow_tier1: true
    action: {kind: shift, target: x, params: {services: 'a,b'}}
"#;
    let p = ok(src);
    let r = &p.runbooks[0];
    let params: Vec<_> = r
        .action
        .params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        params,
        vec![
            ("all", "true"),
            ("by", "{{ annotations.owner }}"),
            ("ttl", "30")
        ]
    );
    let args: Vec<_> = r.action.args.iter().map(|a| a.as_str()).collect();
    assert_eq!(args, vec!["--force", "3"]);
    assert_eq!(
        (r.action.timeout, r.deadline),
        (Duration(30_000), Duration(90_000))
    );
    assert_eq!(r.guardrails.cooldown, Duration::hours(1));
    assert_eq!(r.guardrails.approval_timeout, Duration::minutes(5));
    assert_eq!(r.guardrails.first_time, Severity::Ticket);
    assert_eq!(p.guardrails.cooldown, Duration::minutes(10));
    assert!(r.allow_targets[0].is_match("cart") && !r.allow_targets[0].is_match("cart2"));
    let labels = Labels::from_pairs([("alertname", "Stale"), ("env", "staging")]);
    assert!(r.matchers.iter().all(|m| m.matches_labels(&labels)));
    assert_eq!(
        (p.runbooks[1].domain, p.runbooks[1].allow_tier1),
        (Domain::MultiService, true)
    );
}

#[test]
fn syntax_errors_and_unreadable_files() {
    let ps = problems("slos:\n  - name: a\n   bad: [\n");
    assert_eq!(ps.len(), 1);
    assert!(
        ps[0].line >= 2 && ps[0].message.starts_with("YAML syntax error"),
        "{}",
        ps[0]
    );
    assert_eq!(
        ps[0].to_string().split(": ").next(),
        Some(&*format!("p.yaml:{}:{}", ps[0].line, ps[0].col))
    );
    let two = problems("slos: []\n---\nrunbooks: []\n");
    assert_eq!((two.len(), two[0].line), (1, 2));
    let empty = ok("");
    assert!(empty.slos.is_empty() && empty.guardrails == Guardrails::default());
    let top = problems("- a\n");
    assert!(top[0].message.contains("expected a map, found a list"));
    let missing = load(Path::new("/nonexistent/policy.yaml"));
    let e = missing.err().map(|e| e.0).unwrap_or_default();
    assert_eq!((e.len(), e[0].line, e[0].col), (1, 0, 0));
    assert!(
        e[0].to_string()
            .starts_with("/nonexistent/policy.yaml:0:0: cannot read"),
        "{}",
        e[0]
    );
}

#[test]
fn anchors_and_aliases_are_followed() {
    let src = r#"guardrails: &g {cooldown: 5m}
runbooks:
  - name: a
    match: ['alertname="A"']
    tier: 2
    action: &act {kind: restart, target: '{{ labels.pod }}'}
    rollback: *act
    guardrails: *g
"#;
    let p = ok(src);
    let r = &p.runbooks[0];
    assert_eq!(
        r.rollback.as_ref().map(|a| a.kind.as_str()),
        Some("restart")
    );
    assert_eq!(r.guardrails.cooldown, Duration::minutes(5));
}

#[test]
fn kubernetes_section_global_and_per_runbook() {
    let src = r#"kubernetes:
  namespaces: [shop]
  resources: ['deployment/checkout', 'pod/checkout-*']
  max_replicas: 20
runbooks:
  - name: scale-checkout
    match: ['alertname="HighCPU"']
    tier: 1
    action: {kind: k8s.scale, target: 'shop/checkout', params: {replicas: "+2"}}
    rollback: {kind: k8s.scale, target: 'shop/checkout', params: {replicas: '{{ previous.replicas }}'}}
  - name: restart-web
    match: ['alertname="WebStuck"']
    tier: 1
    action: {kind: k8s.rollout_restart, target: '{{ labels.namespace }}/web'}
    kubernetes: {namespaces: [web, web-canary]}
"#;
    let p = ok(src);
    let global = p.kubernetes.as_ref().expect("global section");
    assert_eq!(global.namespaces, ["shop"]);
    assert_eq!(global.max_replicas, Some(20));
    assert_eq!(global.resources.len(), 2);
    assert_eq!(p.runbooks[0].kubernetes.as_ref(), Some(global));
    let own = p.runbooks[1].kubernetes.as_ref().expect("own section");
    assert_eq!(own.namespaces, ["web", "web-canary"]);
    assert!(own.resources.is_empty() && own.max_replicas.is_none());
    let rb = p.runbooks[0].rollback.as_ref().expect("rollback");
    assert_eq!(rb.params[0].1.previous_refs(), ["replicas"]);
}

#[test]
fn kubernetes_problems_are_reported_in_place() {
    let src = r#"kubernetes:
  namespaces: [shop, Shop_2]
  resources: ['deployment/checkout', 'service/x', 'pod/Bad', 'checkout']
  max_replicas: -1
runbooks:
  - name: a
    match: ['alertname="A"']
    tier: 1
    action: {kind: k8s.scale, target: 'shop/{{ previous.replicas }}', params: {replicas: '{{ previous.replicas }}'}}
  - name: b
    match: ['alertname="B"']
    tier: 1
    action: {kind: k8s.drain, target: 'shop/node'}
  - name: c
    match: ['alertname="C"']
    tier: 1
    action: {kind: k8s.delete_pod, target: 'kube-system/coredns-1'}
    rollback: {kind: k8s.scale, target: 'shop/checkout', params: {replicas: "1", max_replicas: "99"}}
    kubernetes: {namespaces: [shop], resources: ['pod/x-*']}
  - name: d
    match: ['alertname="D"']
    tier: 1
    action: {kind: k8s.delete_pod, target: 'shop/{{ labels.pod }}'}
    kubernetes: {namespaces: []}
"#;
    let got: Vec<(usize, String, String)> = problems(src)
        .into_iter()
        .map(|p| (p.line, p.path, p.message))
        .collect();
    let want: &[(usize, &str, &str)] = &[
        (
            2,
            "kubernetes.namespaces[1]",
            "`Shop_2` is not a namespace name",
        ),
        (
            3,
            "kubernetes.resources[1]",
            "unknown resource kind `service`",
        ),
        (
            3,
            "kubernetes.resources[2]",
            "`Bad` is not a resource name pattern",
        ),
        (3, "kubernetes.resources[3]", "is not KIND/NAME"),
        (4, "kubernetes.max_replicas", "0 or more, found -1"),
        (
            9,
            "runbooks[0].action.target",
            "`previous.replicas` is only available in a rollback",
        ),
        (
            9,
            "runbooks[0].action.params.replicas",
            "`previous.replicas` is only available in a rollback",
        ),
        (
            13,
            "runbooks[1].action.kind",
            "unknown Kubernetes action kind `k8s.drain`",
        ),
        (
            17,
            "runbooks[2].action.target",
            "namespace \"kube-system\" is not in kubernetes.namespaces",
        ),
        (
            18,
            "runbooks[2].rollback.params.max_replicas",
            "set from `kubernetes.max_replicas`",
        ),
        (
            18,
            "runbooks[2].rollback",
            "k8s.scale needs `kubernetes.max_replicas`",
        ),
        (
            18,
            "runbooks[2].rollback.target",
            "deployment/checkout is not in kubernetes.resources",
        ),
        (
            24,
            "runbooks[3].kubernetes.namespaces",
            "at least one namespace",
        ),
    ];
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0, g.1.as_str()), (w.0, w.1), "{got:#?}");
        assert!(g.2.contains(w.2), "{}: {:?} lacks {:?}", g.1, g.2, w.2);
    }
    assert_eq!(got.len(), want.len(), "{got:#?}");
}

#[test]
fn kubernetes_actions_need_a_section() {
    let src = r#"runbooks:
  - name: a
    match: ['alertname="A"']
    tier: 1
    action: {kind: k8s.delete_pod, target: 'shop/{{ labels.pod }}'}
"#;
    let got = problems(src);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(
        (got[0].line, got[0].path.as_str()),
        (5, "runbooks[0].action")
    );
    assert!(got[0]
        .message
        .contains("k8s.delete_pod needs a `kubernetes:` section"));
}

#[test]
fn blast_radius_global_and_per_runbook() {
    let src = r#"runbooks:
  - name: a
    match: ['alertname="A"']
    tier: 1
    action: {kind: restart, target: '{{ labels.pod }}'}
    validate: {within: 5m}
  - name: b
    match: ['alertname="B"']
    tier: 1
    action: {kind: restart, target: '{{ labels.pod }}'}
    validate: {within: 5m}
    guardrails: {blast_radius: {max_share: 12.5%, instance_label: pod}}
guardrails:
  blast_radius: {max_share: 25%}
"#;
    let p = ok(src);
    let a = p.runbooks[0]
        .guardrails
        .blast_radius
        .clone()
        .expect("global");
    assert_eq!(a.max_share, Ratio { num: 1, den: 4 });
    assert_eq!(a.instance_label, "instance");
    assert_eq!(
        (a.limit(0), a.limit(3), a.limit(8), a.limit(10)),
        (1, 1, 2, 2)
    );
    let b = p.runbooks[1]
        .guardrails
        .blast_radius
        .clone()
        .expect("override");
    assert_eq!(b.max_share, Ratio { num: 1, den: 8 });
    assert_eq!(b.instance_label, "pod");
    assert_eq!(b.limit(16), 2);
}

#[test]
fn blast_radius_problems_have_places() {
    let src = r#"guardrails:
  blast_radius: {max_share: 25, instance_label: ''}
runbooks:
  - name: a
    match: ['alertname="A"']
    tier: 1
    action: {kind: restart, target: x}
    validate: {within: 5m}
    guardrails:
      blast_radius: {max_share: 150%, label: pod}
"#;
    let ps = problems(src);
    let at = |path: &str| {
        ps.iter()
            .find(|p| p.path == path)
            .unwrap_or_else(|| panic!("no problem at {path}: {ps:#?}"))
    };
    let share = at("guardrails.blast_radius.max_share");
    assert_eq!((share.line, share.col), (2, col(src, 2, "25")));
    assert!(share.message.contains("percentage"), "{}", share.message);
    assert_eq!(at("guardrails.blast_radius.instance_label").line, 2);
    let over = at("runbooks[0].guardrails.blast_radius.max_share");
    assert_eq!(over.line, 10);
    assert!(over.message.contains("at most 100%"), "{}", over.message);
    let unknown = at("runbooks[0].guardrails.blast_radius.label");
    assert!(
        unknown.message.contains("unknown key"),
        "{}",
        unknown.message
    );
}
