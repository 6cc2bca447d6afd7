//! The `k8s.*` actions against a fake Kubernetes API server on 127.0.0.1
//! (plain HTTP, reached through a kubeconfig) that records every request
//! and answers like the API server: Deployments, Scale objects, Status
//! for deletes, and 404/409/422 errors.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde_json::{json, Value};

use super::{cmd, unique_path};
use crate::executor::{run, Handlers, K8sSettings, Runner};
use crate::records::ResultStatus;

/// One request as the fake API server saw it.
#[derive(Debug, Clone, PartialEq)]
struct Req {
    method: String,
    path: String,
    /// The query's `&`-separated pairs in order, empty ones dropped (the
    /// client writes `?&fieldManager=…`, which the API server reads alike).
    query: String,
    content_type: String,
    authorization: String,
    body: Value,
}

#[derive(Default)]
struct Cluster {
    /// (namespace, name) → replicas.
    deployments: BTreeMap<(String, String), i64>,
    /// (namespace, name) → the pod template's restartedAt annotation.
    restarted_at: BTreeMap<(String, String), String>,
    pods: BTreeSet<(String, String)>,
    /// Deployments whose writes are refused with this status.
    refuse: BTreeMap<String, u16>,
    log: Vec<Req>,
}

type Shared = Arc<Mutex<Cluster>>;

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(body)).into_response()
}

fn deployment(ns: &str, name: &str, replicas: i64, restarted: Option<&String>) -> Value {
    let mut template = json!({"spec": {"containers": [{"name": "app", "image": "app:1"}]}});
    if let Some(r) = restarted {
        template["metadata"] = json!({"annotations": {"kubectl.kubernetes.io/restartedAt": r}});
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": template},
    })
}

fn scale(ns: &str, name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas}, "status": {"replicas": replicas},
    })
}

async fn api(
    State(c): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |h: &str| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let req = Req {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("&"),
        content_type: header("content-type"),
        authorization: header("authorization"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let dry = req.query.split('&').any(|q| q == "dryRun=All");
    let mut c = c.lock().unwrap();
    c.log.push(req.clone());
    let parts: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    if !rbac_allows(&req.method, &parts) {
        return status(403, "Forbidden", "forbidden by the executor's RBAC rules");
    }
    match parts.as_slice() {
        ["apis", "apps", "v1", "namespaces", ns, "deployments", name, rest @ ..] => {
            let key = (ns.to_string(), name.to_string());
            let Some(&replicas) = c.deployments.get(&key) else {
                return status(
                    404,
                    "NotFound",
                    &format!("deployments.apps \"{name}\" not found"),
                );
            };
            if req.method == "PATCH" {
                if let Some(&code) = c.refuse.get(*name) {
                    let reason = if code == 409 { "Conflict" } else { "Invalid" };
                    return status(
                        code,
                        reason,
                        &format!("deployments.apps \"{name}\" refused"),
                    );
                }
            }
            match (req.method.as_str(), rest) {
                ("GET", []) => axum::Json(deployment(ns, name, replicas, c.restarted_at.get(&key)))
                    .into_response(),
                ("PATCH", []) => {
                    let r = req.body["spec"]["template"]["metadata"]["annotations"]
                        ["kubectl.kubernetes.io/restartedAt"]
                        .as_str()
                        .map(str::to_string);
                    if let (Some(r), false) = (r, dry) {
                        c.restarted_at.insert(key.clone(), r);
                    }
                    axum::Json(deployment(ns, name, replicas, c.restarted_at.get(&key)))
                        .into_response()
                }
                ("GET", ["scale"]) => axum::Json(scale(ns, name, replicas)).into_response(),
                ("PATCH", ["scale"]) => {
                    let Some(n) = req.body["spec"]["replicas"].as_i64() else {
                        return status(422, "Invalid", "spec.replicas: Required value");
                    };
                    if !dry {
                        c.deployments.insert(key, n);
                    }
                    axum::Json(scale(ns, name, n)).into_response()
                }
                _ => status(405, "MethodNotAllowed", "not supported by the fake"),
            }
        }
        ["api", "v1", "namespaces", ns, "pods", name] if req.method == "DELETE" => {
            let key = (ns.to_string(), name.to_string());
            if !c.pods.contains(&key) {
                return status(404, "NotFound", &format!("pods \"{name}\" not found"));
            }
            if !dry {
                c.pods.remove(&key);
            }
            axum::Json(json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Success", "details": {"name": name, "kind": "pods"},
            }))
            .into_response()
        }
        _ => status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

/// Whether `RBAC_RULES` grant a request, as the API server's authorizer
/// would: the verb from the method, the group and resource from the path.
fn rbac_allows(method: &str, parts: &[&str]) -> bool {
    let (group, rest) = match parts {
        ["api", "v1", "namespaces", _, rest @ ..] => ("", rest),
        ["apis", group, _, "namespaces", _, rest @ ..] => (*group, rest),
        _ => return false,
    };
    let resource = match rest {
        [kind, _name] => kind.to_string(),
        [kind, _name, sub] => format!("{kind}/{sub}"),
        _ => return false,
    };
    let verb = match method {
        "GET" => "get",
        "PATCH" => "patch",
        "PUT" => "update",
        "DELETE" => "delete",
        "POST" => "create",
        _ => return false,
    };
    crate::executor::k8s::RBAC_RULES
        .iter()
        .any(|(g, r, verbs)| *g == group && *r == resource && verbs.contains(&verb))
}

/// A fake API server with checkout at 3 replicas (restarted once), a
/// checkout pod, and a `locked` deployment whose writes get 409.
struct Fake {
    cluster: Shared,
    kubeconfig: std::path::PathBuf,
}

impl Fake {
    async fn start() -> Fake {
        let mut c = Cluster::default();
        let shop = |n: &str| ("shop".to_string(), n.to_string());
        c.deployments.insert(shop("checkout"), 3);
        c.deployments.insert(shop("cart"), 2);
        c.deployments.insert(shop("locked"), 1);
        c.deployments.insert(shop("strict"), 1);
        c.restarted_at
            .insert(shop("checkout"), "2026-03-01T09:00:00Z".into());
        c.pods.insert(shop("checkout-7f9c"));
        c.refuse.insert("locked".into(), 409);
        c.refuse.insert("strict".into(), 422);
        let cluster = Arc::new(Mutex::new(c));
        let app = Router::new().fallback(any(api)).with_state(cluster.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let kubeconfig = unique_path("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: selfheal\ncurrent-context: fake\nusers:\n- name: selfheal\n  user:\n    token: fake-token\n"
            ),
        )
        .unwrap();
        Fake {
            cluster,
            kubeconfig,
        }
    }

    fn runner(&self, dry_run: bool, namespaces: Option<Vec<String>>) -> Runner {
        Runner::new(Handlers::default())
            .expect("HTTP client")
            .k8s(K8sSettings {
                kubeconfig: Some(self.kubeconfig.clone()),
                dry_run,
                namespaces,
            })
    }

    fn log(&self) -> Vec<Req> {
        self.cluster.lock().unwrap().log.clone()
    }

    fn replicas(&self, name: &str) -> i64 {
        self.cluster.lock().unwrap().deployments[&("shop".to_string(), name.to_string())]
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

fn k8s_cmd(action: &str, target: &str, params: &[(&str, &str)]) -> crate::records::Command {
    let mut c = cmd(action);
    c.target = target.into();
    c.params = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    c
}

fn prev(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// (method, path, query) of each request.
fn calls(log: &[Req]) -> Vec<(String, String, String)> {
    log.iter()
        .map(|r| (r.method.clone(), r.path.clone(), r.query.clone()))
        .collect()
}

fn call(m: &str, p: &str, q: &str) -> (String, String, String) {
    (m.to_string(), p.to_string(), q.to_string())
}

const DEPLOY: &str = "/apis/apps/v1/namespaces/shop/deployments";

#[tokio::test]
async fn rollout_restart_patches_the_restarted_at_annotation() {
    let fake = Fake::start().await;
    let r = fake.runner(false, None);
    let before = crate::time::Timestamp(crate::live::wall_ms() - 1000);
    let out = run(&k8s_cmd("k8s.rollout_restart", "shop/checkout", &[]), &r).await;
    assert_eq!(out.status, ResultStatus::Succeeded, "{}", out.detail);
    let log = fake.log();
    assert_eq!(
        calls(&log),
        [
            call("GET", &format!("{DEPLOY}/checkout"), ""),
            call(
                "PATCH",
                &format!("{DEPLOY}/checkout"),
                "fieldManager=selfheal"
            ),
        ]
    );
    let patch = &log[1];
    assert_eq!(patch.content_type, "application/strategic-merge-patch+json");
    assert_eq!(patch.authorization, "Bearer fake-token");
    let annotations = &patch.body["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        patch.body,
        json!({"spec": {"template": {"metadata": {"annotations": annotations.clone()}}}})
    );
    let at = annotations["kubectl.kubernetes.io/restartedAt"]
        .as_str()
        .expect("restartedAt is a string");
    let at = crate::time::Timestamp::parse(at).expect("restartedAt is RFC 3339");
    assert!(at >= before, "{at} before {before}");
    assert!(
        out.detail.contains("restarted deployment shop/checkout"),
        "{}",
        out.detail
    );
    // The annotation it replaced, for a rollback.
    assert_eq!(
        out.previous,
        prev(&[("restartedAt", "2026-03-01T09:00:00Z")])
    );
    // A deployment never restarted has no previous annotation.
    let out = run(&k8s_cmd("k8s.rollout_restart", "shop/cart", &[]), &r).await;
    assert_eq!(out.status, ResultStatus::Succeeded, "{}", out.detail);
    assert!(out.previous.is_empty());
}

#[tokio::test]
async fn scale_to_an_absolute_count_patches_the_scale_subresource() {
    let fake = Fake::start().await;
    let r = fake.runner(false, None);
    let c = k8s_cmd(
        "k8s.scale",
        "shop/checkout",
        &[("replicas", "5"), ("max_replicas", "10")],
    );
    let out = run(&c, &r).await;
    assert_eq!(out.status, ResultStatus::Succeeded, "{}", out.detail);
    assert_eq!(
        out.detail,
        "scaled deployment shop/checkout from 3 to 5 replicas"
    );
    assert_eq!(out.previous, prev(&[("replicas", "3")]));
    let log = fake.log();
    assert_eq!(
        calls(&log),
        [
            call("GET", &format!("{DEPLOY}/checkout/scale"), ""),
            call(
                "PATCH",
                &format!("{DEPLOY}/checkout/scale"),
                "fieldManager=selfheal"
            ),
        ]
    );
    assert_eq!(log[1].content_type, "application/merge-patch+json");
    assert_eq!(log[1].body, json!({"spec": {"replicas": 5}}));
    assert_eq!(fake.replicas("checkout"), 5);
    // The result record carries the previous count.
    let result = out.to_result(&c.id, None);
    assert_eq!(result.previous, prev(&[("replicas", "3")]));
}

#[tokio::test]
async fn scale_by_a_relative_count() {
    let fake = Fake::start().await;
    let r = fake.runner(false, None);
    let up = k8s_cmd(
        "k8s.scale",
        "shop/checkout",
        &[("replicas", "+2"), ("max_replicas", "10")],
    );
    let out = run(&up, &r).await;
    assert_eq!(out.status, ResultStatus::Succeeded, "{}", out.detail);
    assert_eq!(fake.replicas("checkout"), 5);
    assert_eq!(fake.log()[1].body, json!({"spec": {"replicas": 5}}));
    let down = k8s_cmd(
        "k8s.scale",
        "shop/checkout",
        &[("replicas", "-1"), ("max_replicas", "10")],
    );
    let out = run(&down, &r).await;
    assert_eq!(out.status, ResultStatus::Succeeded, "{}", out.detail);
    assert_eq!(out.previous, prev(&[("replicas", "5")]));
    assert_eq!(fake.log()[3].body, json!({"spec": {"replicas": 4}}));
    assert_eq!(fake.replicas("checkout"), 4);
}

#[tokio::test]
async fn scale_above_the_ceiling_or_below_zero_is_refused_without_a_patch() {
    let fake = Fake::start().await;
    let r = fake.runner(false, None);
    let c = k8s_cmd(
        "k8s.scale",
        "shop/checkout",
        &[("replicas", "+8"), ("max_replicas", "10")],
    );
    let out = run(&c, &r).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert!(
        out.detail.contains("above the ceiling max_replicas 10"),
        "{}",
        out.detail
    );
    let c = k8s_cmd(
        "k8s.scale",
        "shop/checkout",
        &[("replicas", "-4"), ("max_replicas", "10")],
    );
    let out = run(&c, &r).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert!(out.detail.contains("below 0"), "{}", out.detail);
    // Only the reads went out.
    let log = fake.log();
    assert!(log.iter().all(|q| q.method == "GET"), "{:?}", calls(&log));
    assert_eq!(log.len(), 2);
    assert_eq!(fake.replicas("checkout"), 3);
    // Without a ceiling nothing is sent at all.
    let c = k8s_cmd("k8s.scale", "shop/checkout", &[("replicas", "4")]);
    let out = run(&c, &r).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert!(out.detail.contains("max_replicas"), "{}", out.detail);
    assert_eq!(fake.log().len(), 2);
}

#[tokio::test]
async fn delete_pod_sends_one_delete() {
    let fake = Fake::start().await;
    let r = fake.runner(false, None);
    let out = run(&k8s_cmd("k8s.delete_pod", "shop/checkout-7f9c", &[]), &r).await;
    assert_eq!(out.status, ResultStatus::Succeeded, "{}", out.detail);
    assert_eq!(out.detail, "deleted pod shop/checkout-7f9c");
    let log = fake.log();
    assert_eq!(
        calls(&log),
        [call(
            "DELETE",
            "/api/v1/namespaces/shop/pods/checkout-7f9c",
            ""
        )]
    );
    assert!(log[0].body.get("dryRun").is_none(), "{}", log[0].body);
    assert!(fake.cluster.lock().unwrap().pods.is_empty());
    // Gone now: the API server's 404 becomes a clear failure.
    let out = run(&k8s_cmd("k8s.delete_pod", "shop/checkout-7f9c", &[]), &r).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert!(
        out.detail
            .starts_with("deleting pod shop/checkout-7f9c: not found (HTTP 404 NotFound)"),
        "{}",
        out.detail
    );
}

#[tokio::test]
async fn dry_run_sends_dry_run_all_and_changes_nothing() {
    let fake = Fake::start().await;
    // The executor flag.
    let r = fake.runner(true, None);
    let c = k8s_cmd(
        "k8s.scale",
        "shop/checkout",
        &[("replicas", "6"), ("max_replicas", "10")],
    );
    let out = run(&c, &r).await;
    assert_eq!(out.status, ResultStatus::Succeeded, "{}", out.detail);
    assert!(out.detail.starts_with("dry run"), "{}", out.detail);
    assert!(out.detail.contains("from 3 to 6"), "{}", out.detail);
    let restart = run(&k8s_cmd("k8s.rollout_restart", "shop/checkout", &[]), &r).await;
    assert_eq!(
        restart.status,
        ResultStatus::Succeeded,
        "{}",
        restart.detail
    );
    assert!(restart.detail.starts_with("dry run"), "{}", restart.detail);
    let log = fake.log();
    assert_eq!(
        calls(&log),
        [
            call("GET", &format!("{DEPLOY}/checkout/scale"), ""),
            call(
                "PATCH",
                &format!("{DEPLOY}/checkout/scale"),
                "dryRun=All&fieldManager=selfheal"
            ),
            call("GET", &format!("{DEPLOY}/checkout"), ""),
            call(
                "PATCH",
                &format!("{DEPLOY}/checkout"),
                "dryRun=All&fieldManager=selfheal"
            ),
        ]
    );
    assert_eq!(fake.replicas("checkout"), 3);
    // The command param, on an executor without the flag.
    let r = fake.runner(false, None);
    let c = k8s_cmd(
        "k8s.delete_pod",
        "shop/checkout-7f9c",
        &[("dry_run", "true")],
    );
    let out = run(&c, &r).await;
    assert_eq!(out.status, ResultStatus::Succeeded, "{}", out.detail);
    assert!(out.detail.starts_with("dry run"), "{}", out.detail);
    let del = fake.log().pop().unwrap();
    assert_eq!(
        (del.method.as_str(), del.path.as_str(), del.query.as_str()),
        (
            "DELETE",
            "/api/v1/namespaces/shop/pods/checkout-7f9c",
            "dryRun=All"
        )
    );
    assert_eq!(del.body["dryRun"], json!(["All"]));
    assert!(!fake.cluster.lock().unwrap().pods.is_empty());
    let bad = k8s_cmd(
        "k8s.delete_pod",
        "shop/checkout-7f9c",
        &[("dry_run", "yes")],
    );
    assert_eq!(run(&bad, &r).await.status, ResultStatus::Failed);
}

#[tokio::test]
async fn api_errors_become_clear_failed_results() {
    let fake = Fake::start().await;
    let r = fake.runner(false, None);
    let c = k8s_cmd(
        "k8s.scale",
        "shop/missing",
        &[("replicas", "2"), ("max_replicas", "10")],
    );
    let out = run(&c, &r).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert_eq!(
        out.detail,
        "reading the scale of deployment shop/missing: not found (HTTP 404 NotFound): deployments.apps \"missing\" not found"
    );
    assert!(out.previous.is_empty());
    let out = run(&k8s_cmd("k8s.rollout_restart", "shop/locked", &[]), &r).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert!(
        out.detail
            .starts_with("restarting deployment shop/locked: HTTP 409 Conflict"),
        "{}",
        out.detail
    );
    let c = k8s_cmd(
        "k8s.scale",
        "shop/strict",
        &[("replicas", "2"), ("max_replicas", "10")],
    );
    let out = run(&c, &r).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert!(
        out.detail
            .starts_with("scaling deployment shop/strict: HTTP 422 Invalid"),
        "{}",
        out.detail
    );
}

#[tokio::test]
async fn targets_and_namespaces_are_checked_before_any_request() {
    let fake = Fake::start().await;
    let r = fake.runner(false, Some(vec!["shop".into()]));
    for (action, target, why) in [
        (
            "k8s.delete_pod",
            "kube-system/coredns-1",
            "not allow-listed",
        ),
        ("k8s.rollout_restart", "checkout", "NAMESPACE/NAME"),
        ("k8s.rollout_restart", "shop/../../api", "NAMESPACE/NAME"),
        (
            "k8s.cordon",
            "shop/node-1",
            "unknown Kubernetes action kind",
        ),
    ] {
        let out = run(&k8s_cmd(action, target, &[]), &r).await;
        assert_eq!(out.status, ResultStatus::Failed, "{target}");
        assert!(out.detail.contains(why), "{target}: {}", out.detail);
    }
    assert!(fake.log().is_empty(), "{:?}", calls(&fake.log()));
}

#[tokio::test]
async fn an_unreadable_kubeconfig_fails_the_command_only() {
    let r = Runner::new(Handlers::default())
        .expect("HTTP client")
        .k8s(K8sSettings {
            kubeconfig: Some(unique_path("no-such-kubeconfig")),
            ..K8sSettings::default()
        });
    let out = run(&k8s_cmd("k8s.rollout_restart", "shop/checkout", &[]), &r).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert!(
        out.detail.contains("cannot read kubeconfig"),
        "{}",
        out.detail
    );
}
