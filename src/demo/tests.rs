//! Fleet behaviour end to end: instances, the action handler API, the
//! proxy, the monitor's metrics and alerts, and the schedule runner.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::service::BASELINE_MEMORY_BYTES;
use super::*;

const SCRAPE: Duration = Duration::from_millis(250);
/// Generous: the machine running the tests may be busy.
const PATIENCE: Duration = Duration::from_secs(30);

struct Harness {
    fleet: Fleet,
    events: Arc<Mutex<Vec<FleetEvent>>>,
    http: reqwest::Client,
}

fn config(services: Vec<ServiceSpec>) -> FleetConfig {
    FleetConfig {
        services,
        launcher: InstanceLauncher::InProcess,
        tuning: ServiceTuning::default(),
        load_per_service: 30.0,
        startup_timeout: Duration::from_secs(10),
        max_instances: 8,
    }
}

async fn harness(cfg: FleetConfig) -> Harness {
    let fleet = Fleet::start(cfg).await.expect("fleet starts");
    let (tx, mut rx) = mpsc::channel(4096);
    fleet.monitor(SCRAPE, tx);
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            sink.lock().expect("events").push(event);
        }
    });
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    Harness {
        fleet,
        events,
        http,
    }
}

impl Harness {
    fn events(&self) -> Vec<FleetEvent> {
        self.events.lock().expect("events").clone()
    }

    /// Polls until `check` finds something in the events, or panics with
    /// the alerts and notes seen so far.
    async fn wait_for<T>(&self, what: &str, check: impl Fn(&[FleetEvent]) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(found) = check(&self.events()) {
                return found;
            }
            if tokio::time::Instant::now() > deadline {
                let seen: Vec<String> = self
                    .events()
                    .iter()
                    .filter(|e| !matches!(e, FleetEvent::Metric(_)))
                    .map(|e| format!("{e:?}"))
                    .collect();
                panic!("timed out waiting for {what}; saw:\n{}", seen.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_alert(&self, alertname: &str, service: &str, status: &str) -> Value {
        self.wait_for(&format!("{alertname} {status} for {service}"), |events| {
            find_alert(events, alertname, service, status)
        })
        .await
    }

    async fn post(&self, url: &str, body: &str) -> (u16, String) {
        let r = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    /// Calls the action handler API; returns the status and the detail.
    async fn action(&self, kind: &str, body: Value) -> (u16, String) {
        let url = format!("{}/{kind}", self.fleet.handler_url());
        let (status, text) = self.post(&url, &body.to_string()).await;
        let answer: ActionResponse =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        (status, answer.detail)
    }

    fn instance(&self, name: &str) -> InstanceStatus {
        self.fleet
            .status()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} in the fleet"))
    }

    /// Latest cumulative `http_requests_total` per (instance, code) of a
    /// service.
    fn request_counters(&self, service: &str) -> BTreeMap<(String, String), f64> {
        let mut latest = BTreeMap::new();
        for event in self.events() {
            let FleetEvent::Metric(m) = event else {
                continue;
            };
            if m["name"] != "http_requests_total" || m["labels"]["service"] != service {
                continue;
            }
            let key = (
                m["labels"]["instance"].as_str().unwrap_or("").to_string(),
                m["labels"]["code"].as_str().unwrap_or("").to_string(),
            );
            let value: f64 = m["value"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .expect("numeric string value");
            latest.insert(key, value);
        }
        latest
    }

    /// The highest value seen of an instance's `http_requests_total`.
    fn peak_counter(&self, instance: &str, code: &str) -> f64 {
        self.events()
            .iter()
            .filter_map(|e| match e {
                FleetEvent::Metric(m)
                    if m["name"] == "http_requests_total"
                        && m["labels"]["instance"] == instance
                        && m["labels"]["code"] == code =>
                {
                    m["value"].as_str().and_then(|v| v.parse::<f64>().ok())
                }
                _ => None,
            })
            .fold(0.0, f64::max)
    }

    /// The 500 share of a service's requests over `span`, from the
    /// monitor's metric events.
    async fn error_ratio(&self, service: &str, span: Duration) -> f64 {
        // Let a few scrapes pass so the first reading is fresh.
        tokio::time::sleep(SCRAPE * 3).await;
        let before = self.request_counters(service);
        tokio::time::sleep(span).await;
        let after = self.request_counters(service);
        let (mut ok, mut errors) = (0.0, 0.0);
        for ((instance, code), value) in &after {
            let base = before
                .get(&(instance.clone(), code.clone()))
                .copied()
                .unwrap_or(0.0);
            let increase = if *value >= base { value - base } else { *value };
            if code.starts_with('5') {
                errors += increase;
            } else {
                ok += increase;
            }
        }
        assert!(ok + errors > 10.0, "{service} got traffic: {after:?}");
        errors / (ok + errors)
    }
}

fn find_alert(
    events: &[FleetEvent],
    alertname: &str,
    service: &str,
    status: &str,
) -> Option<Value> {
    events.iter().find_map(|e| match e {
        FleetEvent::Alert(a)
            if a["labels"]["alertname"] == alertname
                && a["labels"]["service"] == service
                && a["status"] == status =>
        {
            Some(a.clone())
        }
        _ => None,
    })
}

fn notes(events: &[FleetEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            FleetEvent::Note(n) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

fn assert_same_alert(firing: &Value, resolved: &Value) {
    assert_eq!(firing["labels"], resolved["labels"]);
    assert_eq!(firing["startsAt"], resolved["startsAt"]);
    assert_eq!(firing["fingerprint"], resolved["fingerprint"]);
    assert_eq!(firing["endsAt"], "0001-01-01T00:00:00Z");
    let ends = resolved["endsAt"].as_str().expect("endsAt");
    assert!(crate::time::Timestamp::parse(ends).is_ok(), "{ends}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_fault_fails_one_instance_and_scaling_to_three_fixes_it() {
    let h = harness(config(vec![ServiceSpec::new("search", 1)])).await;
    h.fleet.inject("search", "errors").await.expect("inject");
    let firing = h.wait_alert("HighErrorRate", "search", "firing").await;
    assert_eq!(firing["labels"]["severity"], "page");
    let ratio = h.error_ratio("search", Duration::from_secs(2)).await;
    assert!(ratio > 0.2, "one instance fails {ratio:.2} of requests");

    let (status, detail) = h
        .action(
            "scale",
            json!({"id": "cmd-1", "target": "search", "params": {"replicas": "+2"},
                   "runbook": "scale-on-errors", "action": "scale", "tier": 1}),
        )
        .await;
    assert_eq!(
        (status, detail.as_str()),
        (200, "scaled search from 1 to 3 instances")
    );
    assert_eq!(
        h.fleet
            .status()
            .iter()
            .filter(|s| s.service == "search")
            .count(),
        3
    );
    let resolved = h.wait_alert("HighErrorRate", "search", "resolved").await;
    assert_same_alert(&firing, &resolved);
    let ratio = h.error_ratio("search", Duration::from_secs(2)).await;
    assert!(ratio < 0.05, "three instances fail {ratio:.2} of requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_brings_back_an_oom_killed_instance() {
    let mut cfg = config(vec![ServiceSpec::new("checkout", 1)]);
    cfg.tuning.leak_bytes_per_request = 8 * 1024 * 1024;
    cfg.tuning.memory_limit_bytes = BASELINE_MEMORY_BYTES + 320 * 1024 * 1024;
    let h = harness(cfg).await;
    let before = h.instance("checkout-0");
    h.fleet.inject("checkout", "leak").await.expect("inject");

    let firing = h.wait_alert("PodOOMKilled", "checkout", "firing").await;
    assert_eq!(firing["labels"]["pod"], "checkout-0");
    assert_eq!(firing["labels"]["severity"], "page");
    assert_eq!(
        h.instance("checkout-0").state,
        InstanceState::Exited { code: Some(137) }
    );
    assert!(
        notes(&h.events())
            .iter()
            .any(|n| n.contains("checkout-0") && n.contains("137")),
        "the crash is noted"
    );
    // Crashed instances stay down until remediation restarts them.
    tokio::time::sleep(SCRAPE * 4).await;
    assert!(matches!(
        h.instance("checkout-0").state,
        InstanceState::Exited { .. }
    ));

    let events_len = h.events().len();
    let (status, detail) = h
        .action(
            "restart",
            json!({"id": "cmd-7", "incident": "inc-1", "target": "checkout-0", "params": {},
                   "runbook": "restart-on-oom", "action": "restart", "service": "checkout"}),
        )
        .await;
    assert_eq!(status, 200, "{detail}");
    let after = h.instance("checkout-0");
    assert_eq!(after.state, InstanceState::Running);
    assert_ne!(after.port, before.port, "a fresh instance on a new port");
    assert_eq!(
        detail,
        format!(
            "restarted checkout-0 (port {}, exited with code 137 -> port {})",
            before.port, after.port
        )
    );
    let resolved = h.wait_alert("PodOOMKilled", "checkout", "resolved").await;
    assert_same_alert(&firing, &resolved);
    // The new instance starts from scratch: its memory is back to the
    // baseline and its first scrape shows counters below their pre-crash
    // value (a counter reset).
    let peak = h.peak_counter("checkout-0", "200");
    assert!(peak > 0.0);
    let restarted_at = events_len;
    let (memory, served) = h
        .wait_for("scrapes of the new checkout-0", |events| {
            let latest = |name: &str| {
                events[restarted_at..].iter().find_map(|e| match e {
                    FleetEvent::Metric(m)
                        if m["name"] == name
                            && m["labels"]["instance"] == "checkout-0"
                            && m["labels"]["code"] != "500" =>
                    {
                        m["value"].as_str().map(str::to_string)
                    }
                    _ => None,
                })
            };
            Some((
                latest("process_resident_memory_bytes")?,
                latest("http_requests_total")?,
            ))
        })
        .await;
    assert_eq!(memory, BASELINE_MEMORY_BYTES.to_string());
    let served: f64 = served.parse().expect("numeric");
    assert!(served < peak, "{served} restarts below {peak}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_promotes_the_replica_and_primary_down_resolves() {
    let h = harness(config(vec![ServiceSpec::primary_replica("orders")])).await;
    assert_eq!(h.instance("orders-0").role, Some(Role::Primary));
    let injected = h
        .fleet
        .inject("orders", "primary_down")
        .await
        .expect("inject");
    assert!(
        injected.contains("ignored"),
        "the replica ignores it: {injected}"
    );
    let firing = h.wait_alert("PrimaryDown", "orders", "firing").await;

    let (status, detail) = h.action("failover", json!({"target": "orders"})).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(
        detail,
        "failed over orders: promoted orders-1 to primary, demoted orders-0 (failing: primary down)"
    );
    let resolved = h.wait_alert("PrimaryDown", "orders", "resolved").await;
    assert_same_alert(&firing, &resolved);
    assert_eq!(h.instance("orders-0").role, Some(Role::Replica));
    assert_eq!(h.instance("orders-1").role, Some(Role::Primary));
    // Traffic moved to the new primary: its counters grow.
    let counters = h.request_counters("orders");
    let served = |c: &BTreeMap<(String, String), f64>| {
        c.get(&("orders-1".to_string(), "200".to_string()))
            .copied()
            .unwrap_or(0.0)
    };
    h.wait_for("the new primary to serve traffic", |_| {
        (served(&h.request_counters("orders")) > served(&counters) + 10.0).then_some(())
    })
    .await;
    // The failed primary's 500s were a symptom of PrimaryDown: no separate
    // HighErrorRate alert, even after the inhibition window.
    tokio::time::sleep(SCRAPE * 10).await;
    assert_eq!(
        find_alert(&h.events(), "HighErrorRate", "orders", "firing"),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_invalidate_clears_cache_poisoned() {
    let h = harness(config(vec![ServiceSpec::new("catalog", 1)])).await;
    h.fleet
        .inject("catalog", "cache_poison")
        .await
        .expect("inject");
    let firing = h.wait_alert("CachePoisoned", "catalog", "firing").await;
    let (status, detail) = h
        .action(
            "cache_invalidate",
            json!({"target": "catalog", "params": {}}),
        )
        .await;
    assert_eq!(
        (status, detail.as_str()),
        (200, "invalidated the cache of catalog-0")
    );
    let resolved = h.wait_alert("CachePoisoned", "catalog", "resolved").await;
    assert_same_alert(&firing, &resolved);
    let url = h.fleet.instance_url("catalog").await.expect("url");
    let health = h
        .http
        .get(format!("{url}/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_events_are_cumulative_per_instance() {
    let h = harness(config(vec![ServiceSpec::new("checkout", 1)])).await;
    let series = |events: &[FleetEvent]| -> Vec<Value> {
        events
            .iter()
            .filter_map(|e| match e {
                FleetEvent::Metric(m)
                    if m["name"] == "http_requests_total"
                        && m["labels"]["code"] == "200"
                        && m["labels"]["instance"] == "checkout-0" =>
                {
                    Some(m.clone())
                }
                _ => None,
            })
            .collect()
    };
    let samples = h
        .wait_for("six scrapes of checkout-0", |events| {
            let s = series(events);
            (s.len() >= 6).then_some(s)
        })
        .await;
    let values: Vec<f64> = samples
        .iter()
        .map(|m| {
            m["value"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .expect("value is a numeric string")
        })
        .collect();
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");
    assert!(values[values.len() - 1] > values[0], "{values:?}");
    for m in &samples {
        assert_eq!(m["labels"]["service"], "checkout");
        let ts = m["timestamp"].as_str().expect("timestamp");
        assert!(ts.ends_with('Z'), "{ts}");
        assert!(crate::time::Timestamp::parse(ts).is_ok(), "{ts}");
        let event = FleetEvent::Metric(m.clone());
        assert_eq!(event.service(), Some("checkout"));
    }
    let events = h.events();
    for name in [
        "http_requests_total",
        "http_request_duration_seconds_sum",
        "http_request_duration_seconds_count",
        "process_resident_memory_bytes",
        "cache_poisoned",
        "up",
    ] {
        assert!(
            events.iter().any(|e| matches!(e, FleetEvent::Metric(m)
                if m["name"] == name && m["labels"]["instance"] == "checkout-0")),
            "{name} is forwarded with the instance label"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_handler_requests_get_400_or_404_with_a_detail() {
    let mut cfg = config(vec![
        ServiceSpec::new("search", 1),
        ServiceSpec::primary_replica("orders"),
    ]);
    cfg.load_per_service = 0.0;
    let h = harness(cfg).await;
    let cases = [
        ("restart", json!({"target": "nope-0"}), 404, "nope-0"),
        ("restart", json!({"target": "search-7"}), 404, "search-7"),
        ("reboot", json!({"target": "search"}), 404, "reboot"),
        (
            "scale",
            json!({"target": "search", "params": {"replicas": "lots"}}),
            400,
            "lots",
        ),
        ("scale", json!({"target": "search"}), 400, "replicas"),
        (
            "scale",
            json!({"target": "search-0", "params": {"replicas": "+1"}}),
            400,
            "search-0",
        ),
        (
            "failover",
            json!({"target": "search"}),
            400,
            "primary/replica",
        ),
        ("restart", json!({"params": {}}), 400, "target"),
    ];
    for (kind, body, want_status, want_in_detail) in cases {
        let (status, detail) = h.action(kind, body.clone()).await;
        assert_eq!(status, want_status, "{kind} {body}: {detail}");
        assert!(
            detail.contains(want_in_detail),
            "{kind} {body}: {detail:?} mentions {want_in_detail:?}"
        );
    }
    let (status, text) = h
        .post(&format!("{}/restart", h.fleet.handler_url()), "not json")
        .await;
    assert_eq!(status, 400, "{text}");
    let (status, text) = h
        .post(
            &format!("{}/svc/nope/admin/rebalance", h.fleet.supervisor_url()),
            "",
        )
        .await;
    assert_eq!(status, 404, "{text}");

    // Scaling never goes below one instance.
    let (status, detail) = h
        .action(
            "scale",
            json!({"target": "search", "params": {"replicas": "-5"}}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        detail.starts_with("scaled search from 1 to 1 instances"),
        "{detail}"
    );
    // Numbers are accepted as well as strings; absolute counts work.
    let (status, detail) = h
        .action(
            "scale",
            json!({"target": "search", "params": {"replicas": 2}}),
        )
        .await;
    assert_eq!(
        (status, detail.as_str()),
        (200, "scaled search from 1 to 2 instances")
    );
    let (status, detail) = h
        .action(
            "scale",
            json!({"target": "search", "params": {"replicas": "-1"}}),
        )
        .await;
    assert_eq!(
        (status, detail.as_str()),
        (200, "scaled search from 2 to 1 instances")
    );
    assert_eq!(
        h.fleet
            .inject("search", "meteor")
            .await
            .err()
            .map(|e| e.to_string()),
        Some(DemoError::UnknownFault("meteor".to_string()).to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_reaches_every_instance_wherever_it_moved() {
    let h = harness(config(vec![ServiceSpec::new("search", 1)])).await;
    h.fleet
        .act(
            "scale",
            "search",
            &BTreeMap::from([("replicas".to_string(), "2".to_string())]),
        )
        .await
        .expect("scale");
    h.fleet
        .inject("search", "shard_imbalance")
        .await
        .expect("inject");
    let firing = h.wait_alert("ShardImbalance", "search", "firing").await;
    assert_eq!(firing["labels"]["severity"], "ticket");

    // Ports move on restart; the proxy path stays.
    let old_port = h.instance("search-0").port;
    let (status, _) = h.action("restart", json!({"target": "search-0"})).await;
    assert_eq!(status, 200);
    assert_ne!(h.instance("search-0").port, old_port);
    // A fresh instance starts balanced; search-1 still is not.
    let (status, text) = h
        .post(
            &format!("{}/admin/rebalance", h.fleet.proxy_url("search")),
            "",
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let answer: ActionResponse = serde_json::from_str(&text).expect("json detail");
    assert_eq!(
        answer.detail,
        "search-0: shards already balanced; search-1: shards rebalanced"
    );
    let resolved = h.wait_alert("ShardImbalance", "search", "resolved").await;
    assert_same_alert(&firing, &resolved);
    let health = h
        .http
        .get(format!("{}/health", h.fleet.proxy_url("search-1")))
        .send()
        .await
        .expect("GET through the proxy");
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_level_faults_survive_restart_and_scale_until_cleared() {
    let mut cfg = config(vec![ServiceSpec::new("recommendations", 1)]);
    cfg.tuning.slow_ms = 250;
    let h = harness(cfg).await;
    h.fleet
        .inject("recommendations", "slow_dependency")
        .await
        .expect("inject");
    let firing = h
        .wait_alert("HighLatency", "recommendations", "firing")
        .await;
    let health = |h: &Harness| {
        let url = format!("{}/health", h.fleet.proxy_url("recommendations"));
        let http = h.http.clone();
        async move {
            let r = http.get(url).send().await.expect("health");
            (r.status().as_u16(), r.text().await.expect("body"))
        }
    };
    let (status, _) = h
        .action("restart", json!({"target": "recommendations"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(health(&h).await, (503, "dependency latency".to_string()));
    let (status, _) = h
        .action(
            "scale",
            json!({"target": "recommendations", "params": {"replicas": "+1"}}),
        )
        .await;
    assert_eq!(status, 200);
    let fresh = h
        .http
        .get(format!("{}/health", h.instance("recommendations-1").url()))
        .send()
        .await
        .expect("health");
    assert_eq!(fresh.status().as_u16(), 503);

    h.fleet.clear("recommendations").await.expect("clear");
    let resolved = h
        .wait_alert("HighLatency", "recommendations", "resolved")
        .await;
    assert_same_alert(&firing, &resolved);
    assert_eq!(health(&h).await, (200, "ok".to_string()));
    // Cleared faults are not given to later instances.
    h.fleet
        .act("restart", "recommendations-1", &BTreeMap::new())
        .await
        .expect("restart");
    let again = h
        .http
        .get(format!("{}/health", h.instance("recommendations-1").url()))
        .send()
        .await
        .expect("health");
    assert_eq!(again.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_announces_the_change_before_the_fault() {
    let h = harness(config(vec![ServiceSpec::new("orders-db", 1)])).await;
    let migration = |state: &str| {
        Some(ChangeStep {
            kind: "migration".to_string(),
            state: state.to_string(),
            id: "chg-7".to_string(),
        })
    };
    let schedule = vec![
        ScheduledFault {
            at: Duration::ZERO,
            service: "orders-db".to_string(),
            fault: String::new(),
            note: "migration starts".to_string(),
            change: migration("started"),
        },
        ScheduledFault {
            at: Duration::from_millis(300),
            service: "orders-db".to_string(),
            fault: "db_connections".to_string(),
            note: "pool exhausted".to_string(),
            change: None,
        },
    ];
    let (tx, mut rx) = mpsc::channel(16);
    h.fleet
        .run_schedule(schedule, tx)
        .await
        .expect("schedule runs");
    let mut steps = Vec::new();
    while let Ok(event) = rx.try_recv() {
        steps.push(event);
    }
    assert_eq!(steps.len(), 3, "{steps:?}");
    let FleetEvent::Change(change) = &steps[0] else {
        panic!("the change comes first: {steps:?}");
    };
    assert_eq!(change["service"], "orders-db");
    assert_eq!(change["kind"], "migration");
    assert_eq!(change["state"], "started");
    assert_eq!(change["id"], "chg-7");
    assert!(crate::time::Timestamp::parse(change["at"].as_str().expect("at")).is_ok());
    assert_eq!(steps[1], FleetEvent::Note("migration starts".to_string()));
    assert_eq!(
        steps[2],
        FleetEvent::Note("pool exhausted (injected db_connections into orders-db)".to_string())
    );
    let firing = h
        .wait_alert("DBConnectionsExhausted", "orders-db", "firing")
        .await;
    h.fleet.clear("orders-db").await.expect("clear");
    let resolved = h
        .wait_alert("DBConnectionsExhausted", "orders-db", "resolved")
        .await;
    assert_same_alert(&firing, &resolved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_fleet_stops_its_instances() {
    let mut cfg = config(vec![ServiceSpec::new("inventory", 2)]);
    cfg.load_per_service = 0.0;
    let fleet = Fleet::start(cfg).await.expect("fleet starts");
    let urls: Vec<String> = fleet.status().iter().map(InstanceStatus::url).collect();
    let supervisor = fleet.supervisor_url();
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    for url in &urls {
        assert!(http.get(format!("{url}/health")).send().await.is_ok());
    }
    drop(fleet);
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for url in urls.iter().chain([&supervisor]) {
        while fresh.get(format!("{url}/health")).send().await.is_ok() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{url} still answers"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The libtest name of [`child_service_entry`], for re-running this test
/// binary as a service process.
fn child_test_name() -> String {
    let path = concat!(module_path!(), "::child_service_entry");
    path.split_once("::")
        .map_or(path, |(_, rest)| rest)
        .to_string()
}

/// Runs `run_service` when this test binary is started by
/// [`process_launcher_runs_real_child_processes`]: the service options follow a
/// `--` on the command line.
#[test]
#[ignore = "entry point of child processes started by another test"]
fn child_service_entry() {
    #[derive(clap::Parser)]
    struct Child {
        #[command(flatten)]
        opts: ServiceOpts,
    }
    let args: Vec<String> = std::env::args().collect();
    let Some(separator) = args.iter().position(|a| a == "--") else {
        return;
    };
    let child = <Child as clap::Parser>::try_parse_from(
        std::iter::once("demo-service".to_string()).chain(args[separator + 1..].iter().cloned()),
    )
    .expect("service options");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run_service(child.opts)).expect("service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_launcher_runs_real_child_processes() {
    let program = std::env::current_exe().expect("test binary");
    let args = [
        child_test_name().as_str(),
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
        "-q",
        "--",
    ]
    .map(String::from)
    .to_vec();
    let mut cfg = config(vec![ServiceSpec::new("checkout", 1)]);
    cfg.launcher = InstanceLauncher::Process { program, args };
    cfg.tuning.leak_bytes_per_request = 8 * 1024 * 1024;
    cfg.tuning.memory_limit_bytes = BASELINE_MEMORY_BYTES + 80 * 1024 * 1024;
    let h = harness(cfg).await;
    let first = h.instance("checkout-0");
    let first_pid = first.pid.expect("a child process has a pid");
    assert_eq!(first.state, InstanceState::Running);

    let (status, detail) = h.action("restart", json!({"target": "checkout"})).await;
    assert_eq!(status, 200, "{detail}");
    let second = h.instance("checkout-0");
    let second_pid = second.pid.expect("pid");
    assert_ne!(second_pid, first_pid);
    assert_eq!(
        detail,
        format!(
            "restarted checkout-0 (pid {first_pid}, port {} -> pid {second_pid}, port {})",
            first.port, second.port
        )
    );

    h.fleet.inject("checkout-0", "leak").await.expect("inject");
    let firing = h.wait_alert("PodOOMKilled", "checkout", "firing").await;
    assert_eq!(firing["labels"]["pod"], "checkout-0");
    assert_eq!(
        h.instance("checkout-0").state,
        InstanceState::Exited { code: Some(137) }
    );
    let (status, detail) = h.action("restart", json!({"target": "checkout-0"})).await;
    assert_eq!(status, 200, "{detail}");
    h.wait_alert("PodOOMKilled", "checkout", "resolved").await;

    let url = h.instance("checkout-0").url();
    h.fleet.shutdown().await;
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    assert!(fresh.get(format!("{url}/health")).send().await.is_err());
}
