//! `deploy/` against the code it deploys: every `selfheal` command line in
//! the manifests and the compose file parses, every environment variable is
//! one the binary reads, the shipped policy and handlers load, probes and
//! scrapes point at ports that exist, and the dashboard and alert rules
//! query metrics the services export.
//!
//! Schema validation of the Kubernetes objects is `scripts/check-deploy.sh`
//! (kubernetes-validate, from PyPI), which CI runs beside these tests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml_docs(rel: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// Every Kubernetes object under `deploy/kubernetes`, with its file.
fn k8s_objects() -> Vec<(String, Yaml)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name == "kustomization.yaml" {
            continue;
        }
        for d in yaml_docs(&format!("deploy/kubernetes/{name}")) {
            out.push((name.clone(), d));
        }
    }
    out
}

fn s(y: &Yaml) -> &str {
    y.as_str().unwrap_or("")
}

fn list(y: &Yaml) -> &[Yaml] {
    y.as_vec().map_or(&[], Vec::as_slice)
}

fn kind_name(o: &Yaml) -> String {
    format!("{}/{}", s(&o["kind"]), s(&o["metadata"]["name"]))
}

/// Pod specs of the workloads, by object.
fn pod_specs(objs: &[(String, Yaml)]) -> Vec<(String, &Yaml, &Yaml)> {
    objs.iter()
        .filter(|(_, o)| s(&o["kind"]) == "Deployment")
        .map(|(_, o)| (kind_name(o), o, &o["spec"]["template"]["spec"]))
        .collect()
}

/// The selfheal binary's `--help` for a subcommand path.
fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(args)
        .arg("--help")
        .output()
        .expect("runs selfheal");
    assert!(out.status.success(), "selfheal {args:?} --help: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Parses a command line the way the binary will, without running it:
/// `--help` after every given argument makes clap check them all first.
fn assert_parses(argv: &[String], place: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(argv)
        .arg("--help")
        .output()
        .expect("runs selfheal");
    assert!(
        out.status.success(),
        "{place}: `selfheal {}` does not parse:\n{}",
        argv.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Environment variables the binary reads for a subcommand: those its help
/// names, the librdkafka pass-through prefix and the logging switches.
fn known_env(argv: &[String]) -> impl Fn(&str) -> bool {
    // The subcommand path: the words before the first option.
    let path: Vec<&str> = argv
        .iter()
        .map(String::as_str)
        .take_while(|a| !a.starts_with('-'))
        .collect();
    let text = help(&path);
    let named: BTreeSet<String> = text
        .split("[env: ")
        .skip(1)
        .filter_map(|t| t.split(['=', ']']).next())
        .map(str::to_string)
        .collect();
    move |v: &str| {
        named.contains(v)
            || v.starts_with("SELFHEAL_KAFKA_")
            || v == "SELFHEAL_LOG_FORMAT"
            || v == "RUST_LOG"
    }
}

fn strings(y: &Yaml) -> Vec<String> {
    list(y).iter().map(|a| s(a).to_string()).collect()
}

#[test]
fn kubernetes_workloads_run_command_lines_the_binary_accepts() {
    let objs = k8s_objects();
    let pods = pod_specs(&objs);
    assert!(pods.len() >= 2, "engine and executor Deployments");
    for (name, _, pod) in pods {
        for c in list(&pod["containers"]) {
            let args = strings(&c["args"]);
            assert!(!args.is_empty(), "{name}: container without args");
            assert_parses(&args, &name);
            let known = known_env(&args);
            for e in list(&c["env"]) {
                let v = s(&e["name"]);
                assert!(known(v), "{name}: selfheal {} reads no {v}", args[0]);
            }
        }
    }
}

#[test]
fn shared_settings_are_variables_the_services_read() {
    let objs = k8s_objects();
    let (_, env) = objs
        .iter()
        .find(|(_, o)| kind_name(o) == "ConfigMap/selfheal-env")
        .expect("ConfigMap selfheal-env");
    let engine = known_env(&["engine".to_string()]);
    let executor = known_env(&["executor".to_string()]);
    for (k, _) in env["data"].as_hash().expect("data") {
        let k = s(k);
        assert!(
            engine(k) && executor(k),
            "selfheal-env sets {k}, which the engine or executor does not read"
        );
    }
}

#[test]
fn probes_and_scrapes_point_at_ports_that_exist() {
    let objs = k8s_objects();
    let services: Vec<&Yaml> = objs
        .iter()
        .map(|(_, o)| o)
        .filter(|o| s(&o["kind"]) == "Service")
        .collect();
    for (name, dep, pod) in pod_specs(&objs) {
        let labels = &dep["spec"]["template"]["metadata"]["labels"];
        let selector = &dep["spec"]["selector"]["matchLabels"];
        for (k, v) in selector.as_hash().expect("matchLabels") {
            assert_eq!(&labels[s(k)], v, "{name}: selector {k:?} not on pods");
        }
        for c in list(&pod["containers"]) {
            let ports: BTreeSet<&str> = list(&c["ports"]).iter().map(|p| s(&p["name"])).collect();
            for probe in ["livenessProbe", "readinessProbe"] {
                let get = &c[probe]["httpGet"];
                assert!(!get.is_badvalue(), "{name}: no {probe}");
                assert!(ports.contains(s(&get["port"])), "{name}: {probe} port");
                assert!(
                    ["/healthz", "/readyz"].contains(&s(&get["path"])),
                    "{name}: {probe} path"
                );
            }
            let args = strings(&c["args"]);
            let listen = args
                .iter()
                .position(|a| a == "--metrics-listen")
                .map(|i| args[i + 1].clone())
                .unwrap_or_else(|| panic!("{name}: no --metrics-listen"));
            let port: i64 = listen.rsplit(':').next().unwrap().parse().unwrap();
            let declared = list(&c["ports"])
                .iter()
                .find(|p| s(&p["name"]) == "metrics")
                .and_then(|p| p["containerPort"].as_i64());
            assert_eq!(declared, Some(port), "{name}: metrics port");
        }
        // A Service in front of the pods, with the metrics port.
        let svc = services
            .iter()
            .find(|svc| {
                svc["spec"]["selector"]
                    .as_hash()
                    .is_some_and(|sel| sel.iter().all(|(k, v)| &labels[s(k)] == v))
            })
            .unwrap_or_else(|| panic!("{name}: no Service selects its pods"));
        assert!(list(&svc["spec"]["ports"])
            .iter()
            .any(|p| s(&p["name"]) == "metrics"));
        // The ServiceMonitor selects that Service.
        let sm = objs
            .iter()
            .map(|(_, o)| o)
            .find(|o| s(&o["kind"]) == "ServiceMonitor")
            .expect("ServiceMonitor");
        let svc_labels = &svc["metadata"]["labels"];
        for e in list(&sm["spec"]["selector"]["matchExpressions"]) {
            assert_eq!(s(&e["operator"]), "In");
            let v = s(&svc_labels[s(&e["key"])]);
            assert!(
                list(&e["values"]).iter().any(|x| s(x) == v),
                "ServiceMonitor misses {}",
                kind_name(svc)
            );
        }
        // A disruption budget.
        assert!(objs
            .iter()
            .any(|(_, o)| s(&o["kind"]) == "PodDisruptionBudget"
                && o["spec"]["selector"]["matchLabels"] == *selector));
    }
}

#[test]
fn the_shipped_policy_and_handlers_load() {
    let objs = k8s_objects();
    let (_, cm) = objs
        .iter()
        .find(|(_, o)| kind_name(o) == "ConfigMap/selfheal-policy")
        .expect("ConfigMap selfheal-policy");
    let dir = std::env::temp_dir().join(format!("selfheal-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, s(&cm["data"]["policy.yaml"])).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(["check", "--policy"])
        .arg(&policy)
        .output()
        .unwrap();
    assert!(out.status.success(), "ConfigMap policy: {out:?}");
    let handlers = dir.join("handlers.yaml");
    std::fs::write(&handlers, s(&cm["data"]["handlers.yaml"])).unwrap();
    selfheal::executor::Handlers::load(&handlers).expect("ConfigMap handlers");
    selfheal::executor::Handlers::load(root().join("deploy/compose/handlers.yaml"))
        .expect("compose handlers");
    // The notifier's config loads, its secrets from the environment.
    let (_, ncm) = objs
        .iter()
        .find(|(_, o)| kind_name(o) == "ConfigMap/selfheal-notify")
        .expect("ConfigMap selfheal-notify");
    let notify = dir.join("notify.yaml");
    std::fs::write(&notify, s(&ncm["data"]["notify.yaml"])).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(["notify", "--check", "--notify-config"])
        .arg(&notify)
        .env("PD_ROUTING_KEY", "R0UTINGKEY")
        .env(
            "SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T/B/X",
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "ConfigMap notify.yaml: {out:?}");
    // The image ships examples/policy.yaml, which the compose engine uses.
    assert!(
        read("deploy/Dockerfile").contains("COPY examples/policy.yaml /etc/selfheal/policy.yaml")
    );
}

/// A compose mapping with its YAML merge keys (`<<: *anchor`) applied,
/// recursively, as docker compose reads it: its own keys win.
fn merged(y: &Yaml) -> Yaml {
    let Some(h) = y.as_hash() else {
        return y.clone();
    };
    let mut out = yaml_rust2::yaml::Hash::new();
    if let Some(base) = h.get(&Yaml::String("<<".into())) {
        if let Yaml::Hash(b) = merged(base) {
            out.extend(b);
        }
    }
    for (k, v) in h {
        if s(k) != "<<" {
            out.insert(k.clone(), merged(v));
        }
    }
    Yaml::Hash(out)
}

#[test]
fn compose_services_run_command_lines_the_binary_accepts() {
    let doc = &yaml_docs("deploy/docker-compose.yaml")[0];
    let services = doc["services"].as_hash().expect("services");
    let mut ran = 0;
    for (name, svc) in services {
        let name = s(name);
        let svc = &merged(svc);
        if s(&svc["image"]) != "selfheal:0.1.0" {
            continue;
        }
        let cmd = strings(&svc["command"]);
        assert_parses(&cmd, &format!("compose service {name}"));
        let known = known_env(&cmd);
        if let Some(env) = svc["environment"].as_hash() {
            for (k, _) in env {
                assert!(known(s(k)), "compose {name}: selfheal reads no {}", s(k));
            }
        }
        if let Some(i) = cmd.iter().position(|a| a == "--metrics-listen") {
            let port = cmd[i + 1].rsplit(':').next().unwrap().to_string();
            let scrape = read("deploy/compose/prometheus.yaml");
            assert!(
                scrape.contains(&format!("\"{name}:{port}\"")),
                "Prometheus does not scrape {name}:{port}"
            );
        }
        ran += 1;
    }
    assert!(ran >= 3, "engine, executor and bridge in compose");
    // Every file the compose file mounts exists.
    let text = read("deploy/docker-compose.yaml");
    for line in text.lines() {
        if let Some(src) = line.trim().strip_prefix("- ./") {
            let file = src.split(':').next().unwrap();
            assert!(
                Path::new(&root().join("deploy").join(file)).exists(),
                "compose mounts missing {file}"
            );
        }
    }
}

/// `selfheal_…` metric names in a PromQL text, without histogram suffixes.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("selfheal_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suf| name.strip_suffix(suf))
            .unwrap_or(name);
        out.insert(base.to_string());
        rest = &tail[end..];
    }
    out
}

/// Every metric the dashboard and rules query, with where.
fn queried_metrics() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dash: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/selfheal-dashboard.json"))
            .expect("dashboard JSON");
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            for m in metric_names(t["expr"].as_str().unwrap_or("")) {
                out.push((m, format!("dashboard panel {:?}", p["title"])));
            }
        }
    }
    let rules = &yaml_docs("deploy/prometheus/alerts.yaml")[0];
    for g in list(&rules["groups"]) {
        for r in list(&g["rules"]) {
            for m in metric_names(s(&r["expr"])) {
                out.push((m, format!("alert {}", s(&r["alert"]))));
            }
        }
    }
    out
}

#[test]
fn the_dashboard_and_alert_rules_query_metrics_the_services_export() {
    let exported: BTreeSet<&str> = selfheal::live::telemetry::names::ALL.into_iter().collect();
    let queried = queried_metrics();
    for (m, place) in &queried {
        assert!(
            exported.contains(m.as_str()),
            "{place} queries {m}, which nothing exports"
        );
    }
    // And the dashboard shows every metric there is.
    let shown: BTreeSet<&str> = queried.iter().map(|(m, _)| m.as_str()).collect();
    for m in exported {
        assert!(shown.contains(m), "the dashboard and rules never query {m}");
    }
}

#[test]
fn dashboard_is_well_formed() {
    let dash: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/selfheal-dashboard.json")).unwrap();
    assert_eq!(dash["uid"], "selfheal");
    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        assert!(
            ids.insert(p["id"].as_i64().expect("panel id")),
            "duplicate id"
        );
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_i64().unwrap(), g["w"].as_i64().unwrap());
        assert!(x + w <= 24, "panel {:?} overflows the grid", p["title"]);
        if p["type"] != "row" {
            assert!(!p["targets"].as_array().unwrap().is_empty());
        }
    }
    let rules = &yaml_docs("deploy/prometheus/alerts.yaml")[0];
    for g in list(&rules["groups"]) {
        for r in list(&g["rules"]) {
            let sev = s(&r["labels"]["severity"]);
            assert!(["page", "ticket"].contains(&sev), "{}", s(&r["alert"]));
            assert!(!s(&r["annotations"]["summary"]).is_empty());
        }
    }
    assert!(queried_metrics().len() > 20);
}

#[test]
fn the_executor_role_grants_exactly_what_the_kubernetes_actions_send() {
    let objs = k8s_objects();
    let want: BTreeSet<(String, String, String)> = selfheal::executor::k8s::RBAC_RULES
        .iter()
        .flat_map(|(g, r, verbs)| {
            verbs
                .iter()
                .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect();
    let roles: Vec<&Yaml> = objs
        .iter()
        .map(|(_, o)| o)
        .filter(|o| s(&o["kind"]) == "Role")
        .collect();
    assert!(!roles.is_empty(), "no Role for the executor");
    assert!(
        !objs.iter().any(|(_, o)| s(&o["kind"]) == "ClusterRole"),
        "the executor gets no cluster-wide rights"
    );
    for role in roles {
        let mut got = BTreeSet::new();
        for rule in list(&role["rules"]) {
            for g in list(&rule["apiGroups"]) {
                for r in list(&rule["resources"]) {
                    for v in list(&rule["verbs"]) {
                        got.insert((s(g).to_string(), s(r).to_string(), s(v).to_string()));
                    }
                }
            }
        }
        assert_eq!(got, want, "{}", kind_name(role));
        // Bound to the executor's service account, in a namespace the
        // shipped policy allows and the executor is limited to.
        let ns = s(&role["metadata"]["namespace"]);
        let binding = objs
            .iter()
            .map(|(_, o)| o)
            .find(|o| s(&o["kind"]) == "RoleBinding" && s(&o["metadata"]["namespace"]) == ns)
            .expect("RoleBinding");
        assert_eq!(s(&binding["roleRef"]["name"]), s(&role["metadata"]["name"]));
        let subject = &list(&binding["subjects"])[0];
        assert_eq!(s(&subject["name"]), "selfheal-executor");
        let (_, cm) = objs
            .iter()
            .find(|(_, o)| kind_name(o) == "ConfigMap/selfheal-policy")
            .unwrap();
        let policy = &YamlLoader::load_from_str(s(&cm["data"]["policy.yaml"])).unwrap()[0];
        assert!(list(&policy["kubernetes"]["namespaces"])
            .iter()
            .any(|n| s(n) == ns));
        let (_, exec, _) = pod_specs(&objs)
            .into_iter()
            .find(|(n, _, _)| n == "Deployment/selfheal-executor")
            .unwrap();
        let args = strings(&exec["spec"]["template"]["spec"]["containers"][0]["args"]);
        let i = args
            .iter()
            .position(|a| a == "--k8s-namespaces")
            .expect("--k8s-namespaces");
        assert!(args[i + 1].split(',').any(|n| n == ns));
    }
}
