//! An alert storm: 10,000 firing alerts stamped within one second across
//! 1,000 services (10 instances each, known from their metric samples),
//! under a tier-1 runbook with a rate limit and a blast radius. Every alert
//! is decided (a command or an escalation, nothing lost), commands come in
//! SLO-impact order among decisions due at the same time, no service has
//! more unconfirmed commands than its blast radius allows, and rate limits
//! hold; first through the core (in-process replay), then through the live
//! engine on a real broker.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::producer::FutureRecord;
use selfheal::live::{wall_ms, wire};
use selfheal::policy::parse;
use selfheal::replay::replay_to_lines;
use selfheal::time::Timestamp;
use serde_json::Value;

const SERVICES: usize = 1000;
const INSTANCES: usize = 10;
/// Instances per service that alert, each with two alert names: 10 alerts
/// per service, two per target.
const ALERTING: usize = 5;
const NAMES: [&str; 2] = ["InstanceDown", "InstanceSlow"];
/// `max_share: 30%` of 10 instances.
const LIMIT: usize = 3;
/// OK requests per instance between the two samples.
const OK_PER_INSTANCE: u64 = 1000;

fn service(s: usize) -> String {
    format!("svc-{s:03}")
}

/// 5xx requests of service `s` between the two samples: 1 to 90 per
/// 10,000, spread so that impact is not the services' order.
fn errors(s: usize) -> u64 {
    1 + (s as u64 * 37) % 90
}

/// Impact as the engine defines it: the share of the remaining error
/// budget the 1h burn consumes per hour. With one interval of traffic the
/// burn rate is the same over every window, and the budget spent so far is
/// that burn rate (objective 99 %, period 30d).
fn impact(s: usize) -> f64 {
    let total = (OK_PER_INSTANCE * INSTANCES as u64 + errors(s)) as f64;
    let burn = errors(s) as f64 / total / 0.01;
    let remaining = (1.0 - burn).max(0.001);
    burn * (1.0 / 720.0) / remaining
}

fn burn(s: usize) -> f64 {
    let total = (OK_PER_INSTANCE * INSTANCES as u64 + errors(s)) as f64;
    errors(s) as f64 / total / 0.01
}

fn policy_text() -> String {
    let mut p = String::from("slos:\n");
    for s in 0..SERVICES {
        let svc = service(s);
        p.push_str(&format!(
            "  - name: {svc}-availability\n    service: {svc}\n    objective: 99\n    sli:\n      total: 'http_requests_total{{service=\"{svc}\"}}'\n      bad: 'http_requests_total{{service=\"{svc}\",code=\"500\"}}'\n"
        ));
    }
    p.push_str(
        r#"runbooks:
  - name: restart-instance
    match: ['alertname=~"InstanceDown|InstanceSlow"']
    tier: 1
    action: {kind: restart, target: '{{ labels.instance }}'}
    validate: {within: 10m}
guardrails:
  max_actions_per_target: {count: 1, per: 1h}
  blast_radius: {max_share: 30%, instance_label: instance}
"#,
    );
    p
}

/// One input record: event time, kind, key (service) and JSON value.
type Rec = (i64, &'static str, String, String);

/// Two samples of every instance's request counter (and one 5xx series
/// per service), 60 s apart, ending 90 s before `storm`.
fn metrics(storm: i64) -> Vec<Rec> {
    let mut out = Vec::new();
    for (k, ts) in [storm - 150_000, storm - 90_000].into_iter().enumerate() {
        for s in 0..SERVICES {
            let svc = service(s);
            for i in 0..INSTANCES {
                let v = OK_PER_INSTANCE * k as u64;
                out.push((ts, "metric", svc.clone(), format!(
                    r#"{{"name":"http_requests_total","labels":{{"service":"{svc}","instance":"{svc}-{i}","code":"200"}},"value":"{v}"}}"#
                )));
            }
            let v = errors(s) * k as u64;
            out.push((ts, "metric", svc.clone(), format!(
                r#"{{"name":"http_requests_total","labels":{{"service":"{svc}","instance":"{svc}-0","code":"500"}},"value":"{v}"}}"#
            )));
        }
    }
    out
}

/// The 10,000 alerts (service, instance, name) in a fixed shuffled order.
fn storm_alerts() -> Vec<(usize, usize, &'static str)> {
    let mut v: Vec<(usize, usize, &'static str)> = (0..SERVICES)
        .flat_map(|s| (0..ALERTING).flat_map(move |i| NAMES.map(|n| (s, i, n))))
        .collect();
    let mut x: u64 = 0x5eed;
    for i in (1..v.len()).rev() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v.swap(i, (x >> 33) as usize % (i + 1));
    }
    v
}

fn alert_json(s: usize, i: usize, name: &str, starts: i64) -> String {
    let svc = service(s);
    format!(
        r#"{{"status":"firing","labels":{{"alertname":"{name}","service":"{svc}","instance":"{svc}-{i}","severity":"page"}},"startsAt":"{}"}}"#,
        Timestamp(starts)
    )
}

fn replay_lines(recs: &[Rec]) -> String {
    let mut sorted: Vec<&Rec> = recs.iter().collect();
    sorted.sort_by_key(|r| r.0);
    sorted
        .iter()
        .map(|(ts, kind, _, json)| {
            format!(
                "{{\"ts\":\"{}\",\"kind\":\"{kind}\",\"data\":{json}}}\n",
                Timestamp(*ts)
            )
        })
        .collect()
}

/// Replays `input` under the storm policy; the output records as JSON.
fn replay(input: &str) -> Vec<Value> {
    let policy = Arc::new(parse(&policy_text(), "storm.yaml").expect("storm policy loads"));
    let (lines, bad) = replay_to_lines(policy, input);
    assert!(bad.is_empty(), "bad lines: {bad:?}");
    lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("output is JSON"))
        .collect()
}

fn service_of(v: &Value) -> usize {
    let s = v["data"]["service"].as_str().expect("service");
    s.trim_start_matches("svc-").parse().expect("svc-NNN")
}

#[test]
fn storm_through_the_core_decides_every_alert_in_impact_order_within_the_blast_radius() {
    let storm = Timestamp::parse("2026-03-01T10:03:00Z").unwrap().0;
    let mut recs = metrics(storm);
    // 100 webhook payloads of 100 alerts, 10 ms apart: all within one second.
    let alerts = storm_alerts();
    for (k, chunk) in alerts.chunks(100).enumerate() {
        let body: Vec<String> = chunk
            .iter()
            .map(|&(s, i, n)| alert_json(s, i, n, storm - 30_000))
            .collect();
        let json = format!(r#"{{"alerts":[{}]}}"#, body.join(","));
        recs.push((storm + 10 * k as i64, "alert", String::new(), json));
    }
    assert!(recs
        .iter()
        .filter(|r| r.1 == "alert")
        .all(|r| r.0 < storm + 1000));
    let out = replay(&replay_lines(&recs));
    let of = |kind: &'static str| out.iter().filter(move |v| v["kind"] == kind);

    // Every alert opened its own incident: one per distinct fingerprint.
    let opened: BTreeSet<&str> = of("incident")
        .filter(|v| v["data"]["state"] == "opened")
        .map(|v| v["data"]["id"].as_str().unwrap())
        .collect();
    let fingerprints: BTreeSet<&str> = of("incident")
        .map(|v| v["data"]["trigger"]["fingerprint"].as_str().unwrap())
        .collect();
    assert_eq!(opened.len(), alerts.len());
    assert_eq!(fingerprints.len(), alerts.len());

    // Each got exactly one command or one escalation.
    let mut decided: HashMap<&str, usize> = HashMap::new();
    for v in of("command").chain(of("escalation")) {
        let id = v["data"]["incident"].as_str().unwrap();
        *decided.entry(id).or_default() += 1;
    }
    assert_eq!(
        decided.len(),
        alerts.len(),
        "an incident was left undecided"
    );
    assert!(
        decided.values().all(|n| *n == 1),
        "an incident decided twice"
    );
    for e in of("escalation") {
        let d = &e["data"];
        assert_eq!(d["reason"], "guardrail", "{d}");
        let summary = d["summary"].as_str().unwrap();
        assert!(
            summary.contains("blast_radius") || summary.contains("rate_limit"),
            "{summary}"
        );
        // The engine's 1h burn rate is the one impact is computed from here.
        let s = service_of(e);
        let key = format!("slo.{}-availability.burn_rate", service(s));
        let seen: f64 = d["context"][&key].as_str().unwrap().parse().unwrap();
        assert!(
            (seen - burn(s)).abs() < 1e-3,
            "{key}: {seen} vs {}",
            burn(s)
        );
    }
    let blocked_by_radius = of("audit")
        .filter(|a| a["data"]["decision"] == "guardrail_blocked")
        .filter(|a| {
            a["data"]["guardrails"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == "blast_radius" && c["passed"] == false)
        })
        .count();
    assert!(blocked_by_radius > 0);

    // Blast radius: commands are never confirmed here (no results), so
    // every command of a service stays unconfirmed.
    let mut per_service: BTreeMap<usize, usize> = BTreeMap::new();
    let mut per_target: HashMap<String, usize> = HashMap::new();
    for c in of("command") {
        *per_service.entry(service_of(c)).or_default() += 1;
        *per_target
            .entry(c["data"]["target"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_service.len(), SERVICES);
    assert!(per_service.values().all(|n| *n == LIMIT), "{per_service:?}");
    // Rate limit: one command per target per hour.
    assert!(per_target.values().all(|n| *n == 1));
    assert_eq!(
        of("command").count() + of("escalation").count(),
        alerts.len()
    );

    // Impact order among decisions due at the same time.
    let mut by_ts: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for c in of("command") {
        by_ts
            .entry(c["ts"].as_str().unwrap())
            .or_default()
            .push(impact(service_of(c)));
    }
    // Later payloads may find every service at its limit already.
    assert!(by_ts.len() > 50, "{}", by_ts.len());
    for (ts, impacts) in &by_ts {
        assert!(
            impacts.windows(2).all(|w| w[0] >= w[1]),
            "commands at {ts} out of impact order: {impacts:?}"
        );
    }
    let mut decisions: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for a in of("audit").filter(|a| {
        matches!(
            a["data"]["decision"].as_str(),
            Some("act" | "guardrail_blocked")
        )
    }) {
        decisions
            .entry(a["ts"].as_str().unwrap())
            .or_default()
            .push(impact(service_of(a)));
    }
    assert_eq!(decisions.len(), 100);
    for (ts, impacts) in &decisions {
        assert_eq!(impacts.len(), 100);
        assert!(
            impacts.windows(2).all(|w| w[0] >= w[1]),
            "decisions at {ts} out of impact order"
        );
    }
}

#[test]
fn storm_through_the_live_engine_decides_every_alert_as_the_replay_does() {
    let Some(b) = real_broker() else { return };
    let k = setup(&b, "storm", 3);
    let policy = policy_file("storm", &policy_text());
    let eng = engine(&k, &policy, "at_least_once", &[]);
    eng.wait_log("partition assigned", 3, Duration::from_secs(60));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let producer = selfheal::live::tools::producer(&k).unwrap();
    let topics = k.topics();
    let send_all = |recs: &[Rec]| {
        rt.block_on(async {
            let mut pending = Vec::with_capacity(recs.len());
            for (ts, kind, key, json) in recs {
                let topic = if *kind == "alert" {
                    &topics.alerts
                } else {
                    &topics.metrics
                };
                let rec = FutureRecord::to(topic)
                    .key(key.as_str())
                    .payload(json.as_bytes())
                    .timestamp(*ts)
                    .headers(wire::kind_headers(kind));
                pending.push(producer.send_result(rec).expect("queueing a record"));
            }
            for p in pending {
                p.await
                    .expect("delivery")
                    .map_err(|(e, _)| e)
                    .expect("publishing an input record");
            }
        })
    };

    let storm = wall_ms();
    let mut recs = metrics(storm);
    send_all(&recs);
    // One record per alert (as the Alertmanager bridge publishes them),
    // stamped across one second from now.
    let alerts: Vec<Rec> = storm_alerts()
        .iter()
        .enumerate()
        .map(|(j, &(s, i, n))| {
            let ts = wall_ms().max(storm + (j as i64 * 1000) / 10_000);
            (ts, "alert", service(s), alert_json(s, i, n, storm - 30_000))
        })
        .collect();
    let started = Instant::now();
    send_all(&alerts);
    eprintln!(
        "published {} alerts in {:?}",
        alerts.len(),
        started.elapsed()
    );
    recs.extend(alerts.iter().cloned());

    let want = replay(&replay_lines(&recs));
    let want_cmds: BTreeSet<String> = want
        .iter()
        .filter(|v| v["kind"] == "command")
        .map(|v| v["data"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(want_cmds.len(), SERVICES * LIMIT);

    // Every alert decided: its incident remediating or suppressed.
    let decided = wait_for(
        "every storm incident decided",
        Duration::from_secs(90),
        || {
            let ids: BTreeSet<String> = outputs(&k, &topics.incidents)
                .into_iter()
                .filter_map(|o| match o {
                    selfheal::records::Output::Incident(i)
                        if matches!(
                            i.state,
                            selfheal::records::IncidentState::Remediating
                                | selfheal::records::IncidentState::Suppressed
                        ) =>
                    {
                        Some(i.id)
                    }
                    _ => None,
                })
                .collect();
            if ids.len() < alerts.len() {
                std::thread::sleep(Duration::from_secs(1));
            }
            (ids.len() >= alerts.len()).then_some(ids)
        },
    );
    assert_eq!(decided.len(), alerts.len());
    let got: BTreeSet<String> = commands(&k).into_iter().map(|c| c.id).collect();
    assert_eq!(got, want_cmds, "live commands differ from the replay's");
    let escalated: BTreeSet<String> = escalations(&k).into_iter().map(|e| e.incident).collect();
    assert_eq!(escalated.len() + got.len(), alerts.len());
    drop(eng);
}
