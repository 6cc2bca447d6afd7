//! Properties of the core over generated streams:
//! * records sharing a timestamp but belonging to different services can
//!   arrive in any order without changing any service's decisions;
//! * replaying the same stream twice is byte-identical.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use selfheal::engine::{command_id, incident_id};
use selfheal::policy::parse;
use selfheal::records::Labels;
use selfheal::replay::replay_to_lines;
use selfheal::time::{Timestamp, MINUTE};

const T0: &str = "2026-03-01T10:00:00Z";

fn policy(services: usize) -> String {
    let mut s = String::from("slos:\n");
    for i in 0..services {
        s += &format!(
            "  - name: svc{i}-avail\n    service: svc{i}\n    objective: 99\n    sli:\n      total: 'req{{service=\"svc{i}\"}}'\n      bad: 'req{{service=\"svc{i}\",code=\"500\"}}'\n"
        );
    }
    s += "runbooks:\n";
    s += "  - name: restart\n    match: ['alertname=\"Crash\"']\n    tier: 1\n    action: {kind: restart, target: '{{ labels.service }}'}\n    validate: {within: 3m}\n    rollback: {kind: restart, target: '{{ labels.service }}'}\n";
    s += "  - name: page-burn\n    match: ['alertname=\"SLOBurnRate\"']\n    tier: 1\n    action: {kind: scale, target: '{{ labels.service }}', params: {replicas: '+1'}}\n    validate: {within: 5m}\n";
    s += "guardrails:\n  cooldown: 2m\n  max_actions_per_target: {count: 2, per: 30m}\n";
    s
}

#[derive(Debug, Clone)]
struct ServicePlan {
    error_from: i64,
    error_to: i64,
    alert_at: i64,
    resolve_after: i64,
    result: u8,
}

fn plan() -> impl Strategy<Value = ServicePlan> {
    (0i64..20, 1i64..15, 0i64..25, 1i64..10, 0u8..4).prop_map(|(f, len, a, r, result)| {
        ServicePlan {
            error_from: f,
            error_to: f + len,
            alert_at: a,
            resolve_after: r,
            result,
        }
    })
}

fn at(min: i64, sec: i64) -> String {
    let t0 = Timestamp::parse(T0).unwrap();
    Timestamp(t0.0 + min * MINUTE + sec * 1000).to_string()
}

/// One service's records as (ts, line), in the order the service emits them.
fn service_records(i: usize, p: &ServicePlan) -> Vec<(String, String)> {
    let svc = format!("svc{i}");
    let mut v = Vec::new();
    let (mut ok, mut bad) = (0u64, 0u64);
    for m in 0..40 {
        if m > 0 {
            ok += 100;
            if (p.error_from..p.error_to).contains(&m) {
                bad += 30;
            }
        }
        for (code, val) in [("200", ok), ("500", bad)] {
            v.push((at(m, 0), format!(
                r#"{{"ts":"{}","kind":"metric","data":{{"name":"req","labels":{{"service":"{svc}","code":"{code}"}},"value":"{val}"}}}}"#,
                at(m, 0)
            )));
        }
        if m == p.alert_at {
            let starts = at(m, 0);
            v.push((starts.clone(), format!(
                r#"{{"ts":"{starts}","kind":"alert","data":{{"status":"firing","labels":{{"alertname":"Crash","service":"{svc}"}},"startsAt":"{starts}","fingerprint":"fp-{svc}"}}}}"#
            )));
            let inc = incident_id(
                &svc,
                &format!("fp-{svc}"),
                Timestamp::parse(&starts).unwrap(),
            );
            let cmd = command_id(&inc, "restart", 1);
            let status = ["succeeded", "failed", "timed_out", "succeeded"][p.result as usize];
            let rt = at(m + 1, 0);
            if p.result != 3 {
                v.push((rt.clone(), format!(
                    r#"{{"ts":"{rt}","kind":"result","data":{{"command_id":"{cmd}","status":"{status}"}}}}"#
                )));
            }
            let end = at(m + p.resolve_after, 0);
            v.push((end.clone(), format!(
                r#"{{"ts":"{end}","kind":"alert","data":{{"status":"resolved","labels":{{"alertname":"Crash","service":"{svc}"}},"startsAt":"{starts}","fingerprint":"fp-{svc}"}}}}"#
            )));
        }
    }
    v
}

/// Merges services by timestamp; `order` decides, among records with the
/// same timestamp, which service goes first (each service keeps its order).
fn merge(per_service: &[Vec<(String, String)>], order: &[usize]) -> String {
    let mut all: Vec<(String, usize, usize, &str)> = Vec::new();
    for (s, recs) in per_service.iter().enumerate() {
        for (k, (ts, line)) in recs.iter().enumerate() {
            all.push((ts.clone(), order[s], k, line.as_str()));
        }
    }
    all.sort_by(|a, b| (a.0.as_str(), a.1, a.2).cmp(&(b.0.as_str(), b.1, b.2)));
    all.iter().map(|r| format!("{}\n", r.3)).collect()
}

fn by_service(lines: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let svc = v["data"]["service"].as_str().unwrap_or("").to_string();
        m.entry(svc).or_default().push(l.clone());
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn same_timestamp_order_across_services_does_not_matter(
        plans in prop::collection::vec(plan(), 2..5),
        perm_seed in any::<u64>(),
    ) {
        let n = plans.len();
        let p = Arc::new(parse(&policy(n), "generated.yaml").unwrap());
        let recs: Vec<_> = plans.iter().enumerate().map(|(i, pl)| service_records(i, pl)).collect();
        let identity: Vec<usize> = (0..n).collect();
        let mut shuffled = identity.clone();
        let mut x = perm_seed | 1;
        for i in (1..n).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let (a, bad_a) = replay_to_lines(p.clone(), &merge(&recs, &identity));
        let (b, bad_b) = replay_to_lines(p.clone(), &merge(&recs, &shuffled));
        prop_assert!(bad_a.is_empty() && bad_b.is_empty());
        prop_assert!(a.iter().any(|l| l.contains(r#""kind":"command""#)));
        prop_assert_eq!(by_service(&a), by_service(&b));
        let (again, _) = replay_to_lines(p, &merge(&recs, &identity));
        prop_assert_eq!(a, again);
    }
}

#[test]
fn labels_order_in_input_does_not_change_ids() {
    let a = Labels::from_pairs([("service", "a"), ("alertname", "X")]);
    let b = Labels::from_pairs([("alertname", "X"), ("service", "a")]);
    assert_eq!(
        selfheal::engine::fingerprint(&a),
        selfheal::engine::fingerprint(&b)
    );
}
