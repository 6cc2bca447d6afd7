//! Built-in Kubernetes actions, through the Kubernetes API (`kube`).
//!
//! The target of every kind is `NAMESPACE/NAME`:
//!
//! * `k8s.rollout_restart` — what `kubectl rollout restart deployment`
//!   does: a strategic-merge PATCH of the Deployment setting the pod
//!   template annotation `kubectl.kubernetes.io/restartedAt` to now. The
//!   Deployment is read first; its previous annotation, if any, is
//!   recorded as `previous.restartedAt`.
//! * `k8s.scale` — reads the Deployment's `scale` subresource, computes
//!   the new count from `params.replicas` (`5`, `+2`, `-1`), refuses a
//!   count below 0 or above `params.max_replicas` (required), then
//!   merge-PATCHes the `scale` subresource. The count read is recorded as
//!   `previous.replicas`.
//! * `k8s.delete_pod` — deletes one Pod.
//!
//! With dry run (the executor's `--k8s-dry-run`, or `params.dry_run:
//! "true"`) every write carries `dryRun=All`: the API server validates it
//! and changes nothing, and the result says it was a dry run.
//!
//! The client is built on the first Kubernetes command an executor runs,
//! from `--kubeconfig` or else `kube::Config::infer` (in-cluster service
//! account, `KUBECONFIG`, `~/.kube/config`), and kept; a failure to build
//! it fails that command and is tried again on the next.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use super::capture::truncate;
use super::ActionError;
use crate::records::Command;

/// The pod template annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// The RBAC rules the `k8s.*` kinds need in each namespace they act in, as
/// (API group, resource, verbs): exactly the requests they send. The fake
/// API server of the tests refuses anything else with 403, and
/// `deploy/kubernetes/rbac.yaml` grants exactly these.
pub const RBAC_RULES: &[(&str, &str, &[&str])] = &[
    ("apps", "deployments", &["get", "patch"]),
    ("apps", "deployments/scale", &["get", "patch"]),
    ("", "pods", &["delete"]),
];

/// Field manager named on every write.
const FIELD_MANAGER: &str = "selfheal";

/// How an executor reaches Kubernetes.
#[derive(Debug, Clone, Default)]
pub struct K8sSettings {
    /// Kubeconfig file; `None` infers (in-cluster, `KUBECONFIG`, `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// Send every write with `dryRun=All`.
    pub dry_run: bool,
    /// Namespaces this executor may act in; `None` = any.
    pub namespaces: Option<Vec<String>>,
}

/// Settings and the client, built on first use.
#[derive(Default)]
pub(crate) struct K8s {
    pub(crate) settings: K8sSettings,
    client: tokio::sync::OnceCell<kube::Client>,
}

impl std::fmt::Debug for K8s {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("K8s")
            .field("settings", &self.settings)
            .field("connected", &self.client.initialized())
            .finish()
    }
}

impl K8s {
    pub(crate) fn new(settings: K8sSettings) -> K8s {
        K8s {
            settings,
            client: tokio::sync::OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<kube::Client, ActionError> {
        self.client
            .get_or_try_init(|| connect(self.settings.kubeconfig.clone()))
            .await
            .cloned()
    }
}

async fn connect(kubeconfig: Option<PathBuf>) -> Result<kube::Client, ActionError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(&path).map_err(|e| {
                failed(format!(
                    "cannot read kubeconfig {}: {e}",
                    path.to_string_lossy()
                ))
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| {
                    failed(format!(
                        "cannot use kubeconfig {}: {e}",
                        path.to_string_lossy()
                    ))
                })?
        }
        None => kube::Config::infer().await.map_err(|e| {
            failed(format!(
                "no Kubernetes credentials (in-cluster or kubeconfig): {e}"
            ))
        })?,
    };
    kube::Client::try_from(config)
        .map_err(|e| failed(format!("cannot build the Kubernetes client: {e}")))
}

fn failed(detail: impl Into<String>) -> ActionError {
    ActionError::Failed(detail.into())
}

/// What a Kubernetes action reports: its detail and the state it replaced.
pub(crate) type Done = (String, BTreeMap<String, String>);

/// Runs one `k8s.*` command.
pub(crate) async fn run(cmd: &Command, k: &K8s) -> Result<Done, ActionError> {
    let (ns, name) = parse_target(&cmd.target)?;
    if let Some(allowed) = &k.settings.namespaces {
        if !allowed.iter().any(|a| a == ns) {
            return Err(failed(format!(
                "namespace {ns} is not allow-listed on this executor (allowed: {})",
                allowed.join(", ")
            )));
        }
    }
    let dry_run = k.settings.dry_run
        || match cmd.params.get("dry_run").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(failed(format!(
                    "invalid dry_run {other:?} (expected \"true\" or \"false\")"
                )))
            }
        };
    // Check what can be checked before touching the network.
    let scale_to = match cmd.action.as_str() {
        "k8s.scale" => Some(scale_params(cmd)?),
        "k8s.rollout_restart" | "k8s.delete_pod" => None,
        other => return Err(failed(format!("unknown Kubernetes action kind {other}"))),
    };
    let client = k.client().await?;
    let (detail, previous) = match (cmd.action.as_str(), scale_to) {
        ("k8s.scale", Some((change, ceiling))) => {
            scale(client, ns, name, change, ceiling, dry_run).await?
        }
        ("k8s.rollout_restart", _) => rollout_restart(client, ns, name, dry_run).await?,
        _ => delete_pod(client, ns, name, dry_run).await?,
    };
    let detail = if dry_run {
        format!("dry run (dryRun=All, nothing changed): {detail}")
    } else {
        detail
    };
    Ok((detail, previous))
}

/// `NAMESPACE/NAME`, both valid Kubernetes names.
fn parse_target(target: &str) -> Result<(&str, &str), ActionError> {
    let bad = |why: &str| {
        failed(format!(
            "invalid Kubernetes target {:?}: {why} (expected NAMESPACE/NAME)",
            truncate(target, 128)
        ))
    };
    let (ns, name) = target.split_once('/').ok_or_else(|| bad("no `/`"))?;
    if !is_dns_label(ns) {
        return Err(bad("the namespace is not a DNS label"));
    }
    if !is_dns_subdomain(name) {
        return Err(bad("the name is not a DNS subdomain"));
    }
    Ok((ns, name))
}

/// RFC 1123 label: 1–63 of `a-z0-9-`, alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// RFC 1123 subdomain: labels joined by `.`, at most 253 bytes.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// How `params.replicas` changes the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    To(i64),
    By(i64),
}

fn scale_params(cmd: &Command) -> Result<(Change, i64), ActionError> {
    let raw = cmd
        .params
        .get("replicas")
        .ok_or_else(|| failed("k8s.scale needs params.replicas (5, +2 or -1)"))?;
    let r = raw.trim();
    let number = |s: &str| -> Option<i64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<i64>().ok())
            .flatten()
            .filter(|n| *n <= i64::from(i32::MAX))
    };
    let change = if let Some(n) = r.strip_prefix('+') {
        number(n).map(Change::By)
    } else if let Some(n) = r.strip_prefix('-') {
        number(n).map(|n| Change::By(-n))
    } else {
        number(r).map(Change::To)
    }
    .ok_or_else(|| {
        failed(format!(
            "invalid replicas {:?} (expected a count such as 5, or a change such as +2 or -1)",
            truncate(raw, 64)
        ))
    })?;
    let ceiling = match cmd.params.get("max_replicas") {
        None => {
            return Err(failed(
                "k8s.scale needs params.max_replicas, the ceiling (set from the policy's kubernetes.max_replicas)",
            ))
        }
        Some(m) => number(m.trim()).ok_or_else(|| {
            failed(format!("invalid max_replicas {:?}", truncate(m, 64)))
        })?,
    };
    Ok((change, ceiling))
}

/// A failed API call, described for the result.
fn api_failed(e: kube::Error, what: &str) -> ActionError {
    match e {
        kube::Error::Api(r) if r.code == 404 => failed(format!(
            "{what}: not found (HTTP 404{}){}",
            reason(&r.reason),
            message(&r.message)
        )),
        kube::Error::Api(r) => failed(format!(
            "{what}: HTTP {}{}{}",
            r.code,
            reason(&r.reason),
            message(&r.message)
        )),
        other => failed(format!(
            "{what}: {}",
            truncate(&other.to_string(), super::DEFAULT_MAX_OUTPUT)
        )),
    }
}

fn reason(r: &str) -> String {
    if r.is_empty() {
        String::new()
    } else {
        format!(" {r}")
    }
}

fn message(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(": {}", truncate(m, super::DEFAULT_MAX_OUTPUT))
    }
}

fn patch_params(dry_run: bool) -> PatchParams {
    PatchParams {
        dry_run,
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

async fn rollout_restart(
    client: kube::Client,
    ns: &str,
    name: &str,
    dry_run: bool,
) -> Result<Done, ActionError> {
    let api: Api<Deployment> = Api::namespaced(client, ns);
    let what = format!("deployment {ns}/{name}");
    let current = api
        .get(name)
        .await
        .map_err(|e| api_failed(e, &format!("reading {what}")))?;
    let before = current
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .and_then(|mut a| a.remove(RESTARTED_AT));
    let now = crate::time::Timestamp(wall_ms()).to_string();
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}});
    api.patch(name, &patch_params(dry_run), &Patch::Strategic(&patch))
        .await
        .map_err(|e| api_failed(e, &format!("restarting {what}")))?;
    let mut previous = BTreeMap::new();
    let was = match before {
        Some(b) => {
            let s = format!("; previous restart {b}");
            previous.insert("restartedAt".to_string(), b);
            s
        }
        None => String::new(),
    };
    Ok((
        format!("restarted {what} (restartedAt {now}{was})"),
        previous,
    ))
}

async fn scale(
    client: kube::Client,
    ns: &str,
    name: &str,
    change: Change,
    ceiling: i64,
    dry_run: bool,
) -> Result<Done, ActionError> {
    let api: Api<Deployment> = Api::namespaced(client, ns);
    let what = format!("deployment {ns}/{name}");
    let current = api
        .get_scale(name)
        .await
        .map_err(|e| api_failed(e, &format!("reading the scale of {what}")))?;
    let from = i64::from(current.spec.and_then(|s| s.replicas).unwrap_or(0));
    let to = match change {
        Change::To(n) => n,
        Change::By(d) => from + d,
    };
    if to < 0 {
        return Err(failed(format!(
            "refused: scaling {what} from {from} by {} would go below 0 replicas",
            to - from
        )));
    }
    if to > ceiling {
        return Err(failed(format!(
            "refused: {to} replicas for {what} is above the ceiling max_replicas {ceiling} (now {from})"
        )));
    }
    let patch = json!({"spec": {"replicas": to}});
    api.patch_scale(name, &patch_params(dry_run), &Patch::Merge(&patch))
        .await
        .map_err(|e| api_failed(e, &format!("scaling {what}")))?;
    let previous = BTreeMap::from([("replicas".to_string(), from.to_string())]);
    Ok((
        format!("scaled {what} from {from} to {to} replicas"),
        previous,
    ))
}

async fn delete_pod(
    client: kube::Client,
    ns: &str,
    name: &str,
    dry_run: bool,
) -> Result<Done, ActionError> {
    let what = format!("pod {ns}/{name}");
    let dp = DeleteParams {
        dry_run,
        ..DeleteParams::default()
    };
    // Built by hand so that dry run is in the query as well as in the
    // body's DeleteOptions.
    let mut req =
        kube::core::Request::new(Api::<Pod>::namespaced(client.clone(), ns).resource_url())
            .delete(name, &dp)
            .map_err(|e| failed(format!("deleting {what}: {e}")))?;
    if dry_run {
        let uri = req.uri().to_string();
        let sep = match uri.find('?') {
            None => "?",
            Some(i) if i + 1 == uri.len() || uri.ends_with('&') => "",
            Some(_) => "&",
        };
        let uri = format!("{uri}{sep}dryRun=All");
        *req.uri_mut() = uri
            .parse()
            .map_err(|e| failed(format!("deleting {what}: {e}")))?;
    }
    client
        .request::<serde_json::Value>(req)
        .await
        .map_err(|e| api_failed(e, &format!("deleting {what}")))?;
    Ok((format!("deleted {what}"), BTreeMap::new()))
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(params: &[(&str, &str)]) -> Command {
        Command {
            id: "c1".into(),
            incident: "i1".into(),
            runbook: "r".into(),
            action: "k8s.scale".into(),
            target: "shop/checkout".into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            args: Vec::new(),
            tier: 1,
            deadline: crate::time::Timestamp(0),
            timeout: String::new(),
            rollback_of: None,
            service: "checkout".into(),
        }
    }

    #[test]
    fn targets_are_namespace_slash_name() {
        assert_eq!(
            parse_target("shop/checkout-7f9c").ok(),
            Some(("shop", "checkout-7f9c"))
        );
        assert_eq!(parse_target("shop/web.v2").ok(), Some(("shop", "web.v2")));
        for bad in [
            "checkout",
            "/checkout",
            "shop/",
            "Shop/checkout",
            "shop/a/b",
            "shop/../x",
            "shop/x?dryRun=None",
            "shop/-x",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn replicas_are_absolute_or_relative() {
        let p = |r: &str| scale_params(&cmd(&[("replicas", r), ("max_replicas", "20")]));
        assert_eq!(p("5").ok(), Some((Change::To(5), 20)));
        assert_eq!(p("+2").ok(), Some((Change::By(2), 20)));
        assert_eq!(p("-1").ok(), Some((Change::By(-1), 20)));
        assert_eq!(p(" 0 ").ok(), Some((Change::To(0), 20)));
        for bad in ["", "+", "--1", "1.5", "five", "+-1", "99999999999"] {
            assert!(p(bad).is_err(), "{bad}");
        }
        assert!(scale_params(&cmd(&[("replicas", "3")])).is_err());
        assert!(scale_params(&cmd(&[("max_replicas", "3")])).is_err());
    }
}
