//! The monitor plays Prometheus and Alertmanager for the demo fleet: it
//! scrapes every instance's `/metrics` and `/health`, forwards the samples
//! and evaluates a small, data-driven set of alert rules ([`RULES`]).
//!
//! Alert semantics follow Prometheus and Alertmanager: a rule's condition
//! must hold for [`Rule::hold`] consecutive evaluations before the alert
//! fires; it resolves as soon as the condition stops holding, with the same
//! labels, `startsAt` and fingerprint. The fingerprint is a hex FNV-1a hash
//! of the sorted labels. A rule may be inhibited by others (Alertmanager's
//! `inhibit_rules`): while an inhibiting alert of the same service is
//! pending or firing, and for one evaluation window after, the inhibited
//! rule does not start firing, because its symptom has a known cause; an
//! inhibited alert that was already firing stays firing.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::faults::reasons;
use super::fleet::{Inner, InstanceState, InstanceStatus};
use super::http::Client;
use super::FleetEvent;

/// What an alert rule checks, per service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    /// An instance exited on its own with this code; holds until an
    /// instance of that name is running and healthy again. Alerts carry
    /// the instance as `pod`.
    ExitedWithCode(i32),
    /// Share of 5xx among the service's requests over the evaluation
    /// window; fires above `fire_above`, once firing holds until the share
    /// drops below `resolve_below`. Needs `min_requests` in the window.
    ErrorRatio {
        fire_above: f64,
        resolve_below: f64,
        min_requests: f64,
    },
    /// Mean request duration over the evaluation window, in seconds.
    MeanLatencyAbove(f64),
    /// A primary/replica service has no running primary answering
    /// `/health` with 200.
    PrimaryUnhealthy,
    /// Some instance reports the gauge at or above the value.
    GaugeAtLeast { metric: &'static str, value: f64 },
    /// Some running instance fails `/health` with this reason.
    HealthReason(&'static str),
}

/// One alert rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    pub alertname: &'static str,
    pub severity: &'static str,
    pub summary: &'static str,
    pub condition: Condition,
    /// Consecutive evaluations the condition must hold before firing.
    pub hold: u32,
    /// Alerts of the same service that suppress this one.
    pub inhibited_by: &'static [&'static str],
}

/// The demo's alert rules, in evaluation order (inhibiting rules first).
pub const RULES: &[Rule] = &[
    Rule {
        alertname: "PodOOMKilled",
        severity: "page",
        summary: "container OOM killed",
        condition: Condition::ExitedWithCode(137),
        hold: 1,
        inhibited_by: &[],
    },
    Rule {
        alertname: "PrimaryDown",
        severity: "page",
        summary: "the primary is down",
        condition: Condition::PrimaryUnhealthy,
        hold: 2,
        inhibited_by: &[],
    },
    Rule {
        alertname: "CachePoisoned",
        severity: "page",
        summary: "cache serves stale entries",
        condition: Condition::GaugeAtLeast {
            metric: "cache_poisoned",
            value: 1.0,
        },
        hold: 2,
        inhibited_by: &[],
    },
    Rule {
        alertname: "DBConnectionsExhausted",
        severity: "page",
        summary: "database connection pool exhausted",
        condition: Condition::HealthReason(reasons::DB_CONNECTIONS),
        hold: 2,
        inhibited_by: &[],
    },
    Rule {
        alertname: "DiskCorruption",
        severity: "page",
        summary: "disk corruption detected",
        condition: Condition::HealthReason(reasons::DISK_CORRUPTION),
        hold: 2,
        inhibited_by: &[],
    },
    Rule {
        alertname: "ShardImbalance",
        severity: "ticket",
        summary: "shards are unevenly spread",
        condition: Condition::HealthReason(reasons::SHARD_IMBALANCE),
        hold: 2,
        inhibited_by: &[],
    },
    Rule {
        alertname: "HighLatency",
        severity: "page",
        summary: "mean request latency above 200ms",
        condition: Condition::MeanLatencyAbove(0.2),
        hold: 2,
        inhibited_by: &[],
    },
    Rule {
        alertname: "HighErrorRate",
        severity: "page",
        summary: "more than 5% of requests fail",
        condition: Condition::ErrorRatio {
            fire_above: 0.05,
            resolve_below: 0.01,
            min_requests: 10.0,
        },
        hold: 2,
        inhibited_by: &[
            "PodOOMKilled",
            "PrimaryDown",
            "CachePoisoned",
            "DBConnectionsExhausted",
        ],
    },
];

/// The evaluation window spans this many scrape intervals.
const WINDOW_SCRAPES: u32 = 5;
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// Alertmanager's "no end time".
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A scraped sample.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// The value as written by the instance.
    pub text: String,
}

/// What one scrape round saw of one instance.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Observation {
    pub service: String,
    pub instance: String,
    pub state: InstanceState,
    /// `None` when the instance is not running or `/metrics` failed.
    pub samples: Option<Vec<Sample>>,
    /// `/health` status and body; `None` when it did not answer.
    pub health: Option<(u16, String)>,
}

impl Observation {
    fn healthy(&self) -> bool {
        self.state == InstanceState::Running && matches!(&self.health, Some((200, _)))
    }

    fn sample<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .flatten()
            .filter(move |s| s.name == name)
    }
}

/// Scrapes, forwards and evaluates every `interval` until `tx` closes.
pub(crate) async fn run(inner: Arc<Inner>, interval: Duration, tx: mpsc::Sender<FleetEvent>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut evaluator = Evaluator::new(interval * WINDOW_SCRAPES);
    loop {
        ticker.tick().await;
        let instances = inner.snapshot();
        let replicated = inner.replicated_services();
        let observations = scrape_all(&inner.client, instances).await;
        let at = super::now_rfc3339();
        for obs in &observations {
            for sample in obs.samples.iter().flatten() {
                let event = json!({
                    "timestamp": at,
                    "value": sample.text,
                    "name": sample.name,
                    "labels": sample.labels,
                });
                if tx.send(FleetEvent::Metric(event)).await.is_err() {
                    return;
                }
            }
            let up = json!({
                "timestamp": at,
                "value": if obs.samples.is_some() { "1" } else { "0" },
                "name": "up",
                "labels": {"service": obs.service, "instance": obs.instance},
            });
            if tx.send(FleetEvent::Metric(up)).await.is_err() {
                return;
            }
        }
        for alert in evaluator.evaluate(Instant::now(), &at, &observations, &replicated) {
            if tx.send(FleetEvent::Alert(alert)).await.is_err() {
                return;
            }
        }
    }
}

async fn scrape_all(client: &Client, instances: Vec<InstanceStatus>) -> Vec<Observation> {
    let mut set = JoinSet::new();
    for (position, inst) in instances.into_iter().enumerate() {
        let client = client.clone();
        set.spawn(async move {
            let mut obs = Observation {
                service: inst.service.clone(),
                instance: inst.name.clone(),
                state: inst.state,
                samples: None,
                health: None,
            };
            if inst.state == InstanceState::Running {
                let metrics_url = format!("{}/metrics", inst.url());
                let health_url = format!("{}/health", inst.url());
                let (metrics, health) = tokio::join!(
                    client.get(&metrics_url, SCRAPE_TIMEOUT),
                    client.get(&health_url, SCRAPE_TIMEOUT)
                );
                obs.samples = metrics
                    .ok()
                    .filter(|a| a.status == 200)
                    .map(|a| parse_exposition(&a.body));
                obs.health = health.ok().map(|a| (a.status, a.body));
            }
            (position, obs)
        });
    }
    let mut observed = Vec::new();
    while let Some(joined) = set.join_next().await {
        if let Ok(pair) = joined {
            observed.push(pair);
        }
    }
    observed.sort_by_key(|(position, _)| *position);
    observed.into_iter().map(|(_, obs)| obs).collect()
}

/// Parses the Prometheus text format (the subset the instances write:
/// `name{label="value",…} value`, comments skipped).
pub(crate) fn parse_exposition(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_sample_line).collect()
}

fn parse_sample_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let mut key = String::new();
        let close;
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    close = i;
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        let (_, c) = chars.next()?;
                        match c {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                other => key.push(other),
            }
        }
        rest = &body[close + 1..];
    }
    let text = rest.split_whitespace().next()?;
    let value = text.parse::<f64>().ok()?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
        text: text.to_string(),
    })
}

/// Alertmanager-style fingerprint: FNV-1a 64 over the labels sorted by
/// name, each name and value followed by a 0xff separator, in hex.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for (name, value) in labels {
        feed(name.as_bytes());
        feed(&[0xff]);
        feed(value.as_bytes());
        feed(&[0xff]);
    }
    format!("{hash:016x}")
}

/// Request counts and durations added in one scrape round.
#[derive(Debug, Clone, Copy, Default)]
struct Increase {
    at: Option<Instant>,
    ok: f64,
    errors: f64,
    duration_sum: f64,
    duration_count: f64,
}

#[derive(Debug, Clone)]
struct AlertState {
    labels: BTreeMap<String, String>,
    summary: &'static str,
    description: String,
    active_since: String,
    rounds: u32,
    firing: bool,
}

/// The rule engine's state between evaluations.
pub(crate) struct Evaluator {
    window: Duration,
    previous: HashMap<(String, String), f64>,
    history: HashMap<String, VecDeque<Increase>>,
    alerts: BTreeMap<String, AlertState>,
    /// When each (service, alertname) was last pending or firing.
    last_active: HashMap<(String, &'static str), Instant>,
}

impl Evaluator {
    pub(crate) fn new(window: Duration) -> Evaluator {
        Evaluator {
            window,
            previous: HashMap::new(),
            history: HashMap::new(),
            alerts: BTreeMap::new(),
            last_active: HashMap::new(),
        }
    }

    /// Takes one round of observations; returns the alert transitions.
    pub(crate) fn evaluate(
        &mut self,
        now: Instant,
        at: &str,
        observations: &[Observation],
        replicated: &BTreeSet<String>,
    ) -> Vec<Value> {
        self.record_increases(now, observations);
        let services: BTreeSet<&str> = observations.iter().map(|o| o.service.as_str()).collect();
        let mut seen = BTreeSet::new();
        let mut transitions = Vec::new();
        for service in services {
            let of_service: Vec<&Observation> = observations
                .iter()
                .filter(|o| o.service == service)
                .collect();
            let window = self.window_totals(service, now);
            for rule in RULES {
                let inhibited = rule.inhibited_by.iter().any(|name| {
                    self.last_active
                        .get(&(service.to_string(), *name))
                        .is_some_and(|t| now.duration_since(*t) <= self.window)
                });
                if inhibited {
                    // Inhibition keeps a symptom from firing; an alert that
                    // already fired stays as it is until the cause clears.
                    let firing = self.alerts.iter().filter(|(_, a)| {
                        a.firing
                            && a.labels.get("alertname").map(String::as_str) == Some(rule.alertname)
                            && a.labels.get("service").map(String::as_str) == Some(service)
                    });
                    seen.extend(firing.map(|(fp, _)| fp.clone()));
                    continue;
                }
                let active = self.active(rule, service, &of_service, &window, replicated);
                if !active.is_empty() {
                    self.last_active
                        .insert((service.to_string(), rule.alertname), now);
                }
                for (extra, description) in active {
                    let labels = alert_labels(rule, service, extra);
                    let fp = fingerprint(&labels);
                    let state = self.alerts.entry(fp.clone()).or_insert_with(|| AlertState {
                        labels,
                        summary: rule.summary,
                        description: description.clone(),
                        active_since: at.to_string(),
                        rounds: 0,
                        firing: false,
                    });
                    state.rounds += 1;
                    if !state.firing && state.rounds >= rule.hold {
                        state.firing = true;
                        state.description = description;
                        transitions.push(alert_json(state, &fp, "firing", ZERO_TIME));
                    }
                    seen.insert(fp);
                }
            }
        }
        let gone: Vec<String> = self
            .alerts
            .keys()
            .filter(|fp| !seen.contains(*fp))
            .cloned()
            .collect();
        for fp in gone {
            if let Some(state) = self.alerts.remove(&fp) {
                if state.firing {
                    transitions.push(alert_json(&state, &fp, "resolved", at));
                }
            }
        }
        transitions
    }

    fn is_firing(&self, rule: &Rule, service: &str, extra: &[(&str, &str)]) -> bool {
        let labels = alert_labels(
            rule,
            service,
            extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self.alerts
            .get(&fingerprint(&labels))
            .is_some_and(|s| s.firing)
    }

    /// The label sets (beyond alertname, service and severity) for which
    /// the rule's condition holds, each with a description.
    fn active(
        &self,
        rule: &Rule,
        service: &str,
        obs: &[&Observation],
        window: &Increase,
        replicated: &BTreeSet<String>,
    ) -> Vec<(Vec<(String, String)>, String)> {
        let service_level = |holds: bool, description: String| {
            if holds {
                vec![(Vec::new(), description)]
            } else {
                Vec::new()
            }
        };
        match rule.condition {
            Condition::ExitedWithCode(code) => obs
                .iter()
                .filter(|o| {
                    o.state == (InstanceState::Exited { code: Some(code) })
                        || (!o.healthy() && self.is_firing(rule, service, &[("pod", &o.instance)]))
                })
                .map(|o| {
                    (
                        vec![("pod".to_string(), o.instance.clone())],
                        format!("{} exited with code {code}", o.instance),
                    )
                })
                .collect(),
            Condition::ErrorRatio {
                fire_above,
                resolve_below,
                min_requests,
            } => {
                let total = window.ok + window.errors;
                let ratio = if total > 0.0 {
                    window.errors / total
                } else {
                    0.0
                };
                let holds = total >= min_requests
                    && if self.is_firing(rule, service, &[]) {
                        ratio >= resolve_below
                    } else {
                        ratio > fire_above
                    };
                service_level(
                    holds,
                    format!(
                        "{:.0}% of {total} requests failed in the last {}s",
                        ratio * 100.0,
                        self.window.as_secs_f64()
                    ),
                )
            }
            Condition::MeanLatencyAbove(limit) => {
                let mean = if window.duration_count > 0.0 {
                    window.duration_sum / window.duration_count
                } else {
                    0.0
                };
                service_level(mean > limit, format!("mean latency {:.0}ms", mean * 1000.0))
            }
            Condition::PrimaryUnhealthy => {
                if !replicated.contains(service) {
                    return Vec::new();
                }
                let is_primary = |o: &Observation| {
                    o.sample("role").any(|s| {
                        s.value >= 1.0 && s.labels.get("role").is_some_and(|r| r == "primary")
                    })
                };
                let healthy_primary = obs.iter().any(|o| o.healthy() && is_primary(o));
                let why = obs
                    .iter()
                    .find(|o| is_primary(o))
                    .map(|o| match &o.health {
                        Some((_, body)) => format!("{}: {body}", o.instance),
                        None => format!("{}: /health does not answer", o.instance),
                    })
                    .unwrap_or_else(|| "no primary answers".to_string());
                service_level(!healthy_primary, why)
            }
            Condition::GaugeAtLeast { metric, value } => {
                let hit = obs
                    .iter()
                    .find(|o| o.sample(metric).any(|s| s.value >= value));
                service_level(
                    hit.is_some(),
                    hit.map(|o| format!("{} reports {metric} >= {value}", o.instance))
                        .unwrap_or_default(),
                )
            }
            Condition::HealthReason(reason) => {
                let hit = obs.iter().find(|o| {
                    o.state == InstanceState::Running
                        && matches!(&o.health, Some((status, body)) if *status != 200 && body.contains(reason))
                });
                service_level(
                    hit.is_some(),
                    hit.map(|o| format!("{} /health: {reason}", o.instance))
                        .unwrap_or_default(),
                )
            }
        }
    }

    /// Adds this round's counter increases per service. The first sample
    /// of a series is its baseline; a drop is a counter reset.
    fn record_increases(&mut self, now: Instant, observations: &[Observation]) {
        let mut rounds: BTreeMap<&str, Increase> = BTreeMap::new();
        for obs in observations {
            let Some(samples) = &obs.samples else {
                continue;
            };
            let round = rounds.entry(obs.service.as_str()).or_default();
            round.at = Some(now);
            for sample in samples {
                let slot = match sample.name.as_str() {
                    "http_requests_total" => {
                        let code = sample.labels.get("code").map_or("", String::as_str);
                        if code.starts_with('5') {
                            &mut round.errors
                        } else {
                            &mut round.ok
                        }
                    }
                    "http_request_duration_seconds_sum" => &mut round.duration_sum,
                    "http_request_duration_seconds_count" => &mut round.duration_count,
                    _ => continue,
                };
                let key = (obs.instance.clone(), series_key(sample));
                let increase = match self.previous.insert(key, sample.value) {
                    None => 0.0,
                    Some(prev) if sample.value < prev => sample.value,
                    Some(prev) => sample.value - prev,
                };
                *slot += increase;
            }
        }
        for (service, round) in rounds {
            self.history
                .entry(service.to_string())
                .or_default()
                .push_back(round);
        }
        for entries in self.history.values_mut() {
            while entries
                .front()
                .and_then(|e| e.at)
                .is_some_and(|t| now.duration_since(t) > self.window)
            {
                entries.pop_front();
            }
        }
    }

    fn window_totals(&self, service: &str, now: Instant) -> Increase {
        let mut total = Increase::default();
        for e in self.history.get(service).into_iter().flatten() {
            if e.at.is_some_and(|t| now.duration_since(t) <= self.window) {
                total.ok += e.ok;
                total.errors += e.errors;
                total.duration_sum += e.duration_sum;
                total.duration_count += e.duration_count;
            }
        }
        total
    }
}

fn series_key(sample: &Sample) -> String {
    let mut key = sample.name.clone();
    for (k, v) in &sample.labels {
        key.push('\u{1f}');
        key.push_str(k);
        key.push('=');
        key.push_str(v);
    }
    key
}

fn alert_labels(
    rule: &Rule,
    service: &str,
    extra: Vec<(String, String)>,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert("alertname".to_string(), rule.alertname.to_string());
    labels.insert("service".to_string(), service.to_string());
    labels.insert("severity".to_string(), rule.severity.to_string());
    labels.extend(extra);
    labels
}

fn alert_json(state: &AlertState, fp: &str, status: &str, ends_at: &str) -> Value {
    json!({
        "status": status,
        "labels": state.labels,
        "annotations": {"summary": state.summary, "description": state.description},
        "startsAt": state.active_since,
        "endsAt": ends_at,
        "fingerprint": fp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "# TYPE http_requests_total counter\n\
        http_requests_total{service=\"search\",instance=\"search-0\",code=\"200\"} 90\n\
        http_requests_total{service=\"search\",instance=\"search-0\",code=\"500\"} 10\n\
        http_request_duration_seconds_sum{service=\"search\",instance=\"search-0\"} 1.500000\n\
        role{service=\"search\",instance=\"search-0\",role=\"primary\"} 1\n";

    #[test]
    fn parses_the_exposition_format() {
        let samples = parse_exposition(METRICS);
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[1].name, "http_requests_total");
        assert_eq!(samples[1].labels["code"], "500");
        assert_eq!(samples[1].labels["instance"], "search-0");
        assert_eq!(samples[1].value, 10.0);
        assert_eq!(samples[2].text, "1.500000");
        assert_eq!(samples[3].labels["role"], "primary");
        let odd = parse_exposition("up 1\nx{a=\"q\\\"uote\"} 2\ngarbage{\n");
        assert_eq!(odd.len(), 2);
        assert!(odd[0].labels.is_empty());
        assert_eq!(odd[1].labels["a"], "q\"uote");
    }

    #[test]
    fn fingerprint_is_a_stable_hash_of_the_labels() {
        let labels = |service: &str| {
            BTreeMap::from([
                ("alertname".to_string(), "PodOOMKilled".to_string()),
                ("service".to_string(), service.to_string()),
            ])
        };
        let fp = fingerprint(&labels("checkout"));
        assert_eq!(fp.len(), 16);
        assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(fp, fingerprint(&labels("checkout")));
        assert_ne!(fp, fingerprint(&labels("search")));
        // FNV-1a 64 of nothing is its offset basis.
        assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325");
    }

    fn observation(service: &str, ok: u64, errors: u64, health: (u16, &str)) -> Observation {
        let text = format!(
            "http_requests_total{{service=\"{service}\",instance=\"{service}-0\",code=\"200\"}} {ok}\n\
             http_requests_total{{service=\"{service}\",instance=\"{service}-0\",code=\"500\"}} {errors}\n\
             role{{service=\"{service}\",instance=\"{service}-0\",role=\"primary\"}} 1\n"
        );
        Observation {
            service: service.to_string(),
            instance: format!("{service}-0"),
            state: InstanceState::Running,
            samples: Some(parse_exposition(&text)),
            health: Some((health.0, health.1.to_string())),
        }
    }

    fn statuses(alerts: &[Value]) -> Vec<(String, String)> {
        alerts
            .iter()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                    a["status"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn error_rate_fires_after_holding_and_resolves_below_one_percent() {
        let mut ev = Evaluator::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let none = BTreeSet::new();
        let mut round = |s: u64, ok: u64, errors: u64| {
            let obs = [observation("search", ok, errors, (200, "ok"))];
            statuses(&ev.evaluate(at(s), &format!("T{s}"), &obs, &none))
        };
        assert!(round(0, 0, 0).is_empty(), "baseline");
        assert!(round(1, 20, 5).is_empty(), "pending");
        let fired = round(2, 40, 10);
        assert_eq!(fired, [("HighErrorRate".to_string(), "firing".to_string())]);
        // 2% is below the firing threshold but above the resolving one.
        for s in 3..9 {
            assert!(round(s, 40 + (s - 2) * 49, 10 + (s - 2)).is_empty(), "t{s}");
        }
        // Once the window holds only successes, it resolves.
        let mut resolved = Vec::new();
        for s in 9..20 {
            resolved.extend(round(s, 400 + s * 50, 16));
        }
        assert_eq!(
            resolved,
            [("HighErrorRate".to_string(), "resolved".to_string())]
        );
    }

    #[test]
    fn resolved_alert_repeats_labels_start_and_fingerprint() {
        let mut ev = Evaluator::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let none = BTreeSet::new();
        let bad = [observation(
            "catalog",
            0,
            0,
            (503, "stale cache; disk corruption"),
        )];
        ev.evaluate(t0, "T0", &bad, &none);
        let fired = ev.evaluate(t0 + Duration::from_secs(1), "T1", &bad, &none);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0]["labels"]["alertname"], "DiskCorruption");
        assert_eq!(fired[0]["startsAt"], "T0");
        let good = [observation("catalog", 0, 0, (200, "ok"))];
        let resolved = ev.evaluate(t0 + Duration::from_secs(2), "T2", &good, &none);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0]["status"], "resolved");
        assert_eq!(resolved[0]["labels"], fired[0]["labels"]);
        assert_eq!(resolved[0]["fingerprint"], fired[0]["fingerprint"]);
        assert_eq!(resolved[0]["startsAt"], "T0");
        assert_eq!(resolved[0]["endsAt"], "T2");
    }

    #[test]
    fn primary_down_inhibits_the_error_rate_it_causes() {
        let mut ev = Evaluator::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let replicated = BTreeSet::from(["orders".to_string()]);
        let mut all = Vec::new();
        for s in 0..6u64 {
            let obs = [observation("orders", 10, s * 30, (503, "primary down"))];
            all.extend(statuses(&ev.evaluate(
                t0 + Duration::from_secs(s),
                "T",
                &obs,
                &replicated,
            )));
        }
        assert_eq!(all, [("PrimaryDown".to_string(), "firing".to_string())]);
        // The same errors without a known cause page on their own.
        let mut ev = Evaluator::new(Duration::from_secs(5));
        let mut all = Vec::new();
        for s in 0..6u64 {
            let obs = [observation("search", 10, s * 30, (200, "ok"))];
            all.extend(statuses(&ev.evaluate(
                t0 + Duration::from_secs(s),
                "T",
                &obs,
                &BTreeSet::new(),
            )));
        }
        assert_eq!(all, [("HighErrorRate".to_string(), "firing".to_string())]);
    }

    #[test]
    fn a_firing_alert_stays_firing_while_inhibited() {
        let mut ev = Evaluator::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let none = BTreeSet::new();
        let mut round = |s: u64, errors: u64, health: (u16, &str)| {
            let obs = [observation("catalog", 10 * s, errors, health)];
            statuses(&ev.evaluate(t0 + Duration::from_secs(s), "T", &obs, &none))
        };
        round(0, 0, (200, "ok"));
        round(1, 30, (200, "ok"));
        assert_eq!(
            round(2, 60, (200, "ok")),
            [("HighErrorRate".to_string(), "firing".to_string())]
        );
        // The cause shows up later: no resolution of the symptom meanwhile.
        let poisoned = |s: u64| {
            let mut o = observation("catalog", 10 * s, 60 + 30 * s, (503, "stale cache"));
            if let Some(samples) = o.samples.as_mut() {
                samples.extend(parse_exposition(
                    "cache_poisoned{service=\"catalog\",instance=\"catalog-0\"} 1\n",
                ));
            }
            o
        };
        let mut all = Vec::new();
        for s in 3..6 {
            all.extend(statuses(&ev.evaluate(
                t0 + Duration::from_secs(s),
                "T",
                &[poisoned(s)],
                &none,
            )));
        }
        assert_eq!(all, [("CachePoisoned".to_string(), "firing".to_string())]);
    }
}
