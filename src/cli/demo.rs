//! `selfheal demo`: the whole loop on one machine.
//!
//! An embedded broker (librdkafka's mock cluster, unless `--brokers` names
//! a real one), the engine, an executor, and a fleet of real local service
//! processes with faults injected on a schedule. The fleet's monitor plays
//! Prometheus and Alertmanager: its samples and alerts are published to
//! the metrics and alerts topics like any producer's. The timeline is read
//! back from the output topics, and the run ends with a report.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use selfheal::demo::{demo_schedule, Fleet, FleetConfig, FleetEvent, InstanceLauncher};
use selfheal::live::engine::{EngineConfig, EngineCounters, Guarantee};
use selfheal::live::executor::{ExecutorConfig, ExecutorCounters};
use selfheal::live::{tools, wall_ms, wire, KafkaArgs};
use selfheal::records::avro::decode_value;
use selfheal::records::{
    Command, Escalation, Incident, IncidentState, Input, InputKind, Output, Verdict,
};
use selfheal::time::Timestamp;

const DEMO_POLICY: &str = include_str!("../../examples/demo-policy.yaml");
const APPROVER: &str = "alice@example.com";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long the fleet runs with faults; the report follows.
    #[arg(long, default_value = "120s")]
    pub duration: String,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Use this broker instead of the embedded one (its topics are
    /// created when missing).
    #[arg(long, env = "SELFHEAL_BROKERS")]
    pub brokers: Option<String>,
    /// Approve the tier-2 proposal automatically (as alice@example.com)
    /// instead of waiting for `selfheal approve` from another terminal.
    #[arg(long)]
    pub auto_approve: bool,
    /// `exactly_once` (default; the embedded broker has transactions) or
    /// `at_least_once` for brokers without them.
    #[arg(long = "processing-guarantee", value_enum)]
    pub guarantee: Option<Guarantee>,
    /// Partitions per topic when the demo creates them.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// Prefix of every topic name (use a fresh one to rerun on a real
    /// broker from a clean slate).
    #[arg(long)]
    pub topic_prefix: Option<String>,
    /// Pass-through librdkafka settings for `--brokers`.
    #[arg(short = 'X', long = "kafka", value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
}

/// Hidden: one service of the demo fleet.
pub fn service(opts: selfheal::demo::ServiceOpts) -> anyhow::Result<i32> {
    let rt = super::live::runtime()?;
    rt.block_on(selfheal::demo::run_service(opts))?;
    Ok(0)
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    let duration = super::live::std_duration(&a.duration)?;
    let rt = super::live::runtime()?;
    let started = Instant::now();
    // The embedded broker lives as long as this function.
    let (_cluster, brokers) = match &a.brokers {
        Some(b) => (None, b.clone()),
        None => {
            let c =
                rdkafka::mocking::MockCluster::new(1).context("starting the embedded broker")?;
            let b = c.bootstrap_servers();
            (Some(c), b)
        }
    };
    let mut kafka = KafkaArgs::local(&brokers);
    kafka.settings = a.settings.clone();
    if let Some(p) = &a.topic_prefix {
        kafka.topic_prefix = p.clone();
    }
    match &_cluster {
        Some(c) => super::live::create_embedded_topics(c, &kafka, a.partitions)?,
        None => rt.block_on(selfheal::live::create_topics(&kafka, a.partitions))?,
    }
    let guarantee = a.guarantee.unwrap_or(Guarantee::ExactlyOnce);
    println!(
        "selfheal demo: {} for {}s",
        match &_cluster {
            Some(_) => format!("embedded broker at {brokers}"),
            None => format!("broker {brokers}"),
        },
        duration.as_secs()
    );

    // The fleet and its action handler API.
    let fleet = rt.block_on(Fleet::start(FleetConfig::demo(
        InstanceLauncher::current_exe()?,
    )))?;
    let supervisor = fleet.supervisor_url();
    let supervisor = supervisor.trim_start_matches("http://").to_string();
    let policy_text = DEMO_POLICY.replace("${SUPERVISOR}", &supervisor);
    let policy = selfheal::policy::parse(&policy_text, "demo-policy.yaml")
        .map_err(|p| anyhow::anyhow!("demo policy: {p}"))?;
    let policy = Arc::new(policy);
    println!(
        "fleet: {} services, supervisor at http://{supervisor}; policy {}",
        FleetConfig::demo_services().len(),
        policy.version
    );

    let stop = Arc::new(AtomicBool::new(false));
    // Engine.
    let mut ecfg = EngineConfig::new(kafka.clone(), policy.clone());
    ecfg.guarantee = guarantee;
    ecfg.group = format!("{}engine", kafka.topic_prefix);
    let ecount = Arc::new(EngineCounters::default());
    let engine = {
        let (s, c) = (stop.clone(), ecount.clone());
        std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || selfheal::live::engine::run(&ecfg, &s, &c))?
    };
    // Executor.
    let mut xcfg = ExecutorConfig::new(kafka.clone());
    xcfg.group = format!("{}executor", kafka.topic_prefix);
    let xcount = Arc::new(ExecutorCounters::default());
    let runner = super::live::build_runner(None, Some(&fleet.handler_url()))?;
    let executor = rt.spawn(selfheal::live::executor::run(
        xcfg,
        Arc::new(runner),
        stop.clone(),
        xcount.clone(),
    ));

    // Fleet events to topics.
    let (ftx, mut frx) = tokio::sync::mpsc::channel::<FleetEvent>(4096);
    let (ttx, mut trx) = tokio::sync::mpsc::unbounded_channel::<Seen>();
    let mut budget = Budget::default();
    for s in &policy.slos {
        budget
            .objectives
            .insert(s.service.clone(), (s.name.clone(), s.objective.to_f64()));
    }
    let schedule = demo_schedule(duration);
    println!("fault schedule:");
    for s in &schedule {
        println!("  {s}");
    }
    let _schedule_task = {
        let _guard = rt.enter();
        fleet.monitor(StdDuration::from_secs(1), ftx.clone());
        fleet.run_schedule(schedule, ftx.clone())
    };
    // Output topics back to the timeline.
    let follower = {
        let (k, s) = (kafka.clone(), stop.clone());
        std::thread::Builder::new()
            .name("timeline".into())
            .spawn(move || follow(&k, &s, ttx))?
    };
    println!();
    println!("timeline (t = seconds since start):");

    let mut report = Timeline::new(started);
    let producer = tools::producer(&kafka)?;
    let end = started + duration;
    let auto = a.auto_approve;
    rt.block_on(async {
        let mut ticker = tokio::time::interval(StdDuration::from_millis(250));
        loop {
            tokio::select! {
                ev = frx.recv() => {
                    let Some(ev) = ev else { break };
                    publish_fleet_event(&producer, &kafka, &ev, &mut budget, &report).await?;
                }
                seen = trx.recv() => {
                    let Some(seen) = seen else { continue };
                    if let Some(req) = report.record(&seen) {
                        if auto {
                            let (k, id) = (kafka.clone(), req.clone());
                            tokio::spawn(async move {
                                tokio::time::sleep(StdDuration::from_secs(2)).await;
                                if let Err(e) = tools::decide(&k, &id.0, Verdict::Approve, APPROVER, Some(id.1), wire::Format::Json, None).await {
                                    eprintln!("auto-approve failed: {e}");
                                }
                            });
                        } else {
                            report.say(&req.1, &format!(
                                "approve from another terminal: selfheal approve {} --by {APPROVER} --brokers {brokers}{}",
                                req.0,
                                if kafka.topic_prefix != "selfheal." { format!(" --topic-prefix {}", kafka.topic_prefix) } else { String::new() }
                            ));
                        }
                    }
                }
                _ = ticker.tick() => {
                    if Instant::now() >= end { break; }
                }
                _ = tokio::signal::ctrl_c() => { println!("interrupted"); break; }
            }
        }
        anyhow::Ok(())
    })?;
    // Let decisions already made reach the timeline.
    let drain_until = Instant::now() + StdDuration::from_secs(3);
    while Instant::now() < drain_until {
        match trx.try_recv() {
            Ok(seen) => {
                report.record(&seen);
            }
            Err(_) => std::thread::sleep(StdDuration::from_millis(100)),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let engine_result = engine
        .join()
        .map_err(|_| anyhow::anyhow!("engine thread panicked"))?;
    let _ = rt.block_on(executor);
    let _ = follower.join();
    rt.block_on(fleet.shutdown());
    engine_result?;

    let out = report.finish(
        &budget, duration, auto, &ecount, &xcount, &brokers, guarantee,
    );
    print_report(&out);
    if let Some(path) = &a.report {
        std::fs::write(path, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    Ok(if out.passed { 0 } else { 1 })
}

async fn publish_fleet_event(
    producer: &rdkafka::producer::FutureProducer,
    kafka: &KafkaArgs,
    ev: &FleetEvent,
    budget: &mut Budget,
    report: &Timeline,
) -> anyhow::Result<()> {
    let topics = kafka.topics();
    let key = ev.service().unwrap_or("unknown").to_string();
    let (topic, kind, value) = match ev {
        FleetEvent::Note(n) => {
            report.note(n);
            return Ok(());
        }
        FleetEvent::Metric(v) => {
            budget.observe(v);
            (&topics.metrics, "metric", v)
        }
        FleetEvent::Alert(v) => (&topics.alerts, "alert", v),
        FleetEvent::Change(v) => {
            report.note(&format!(
                "{} change: {} {} ({})",
                key,
                v.get("kind").and_then(|x| x.as_str()).unwrap_or("?"),
                v.get("state").and_then(|x| x.as_str()).unwrap_or("?"),
                v.get("id").and_then(|x| x.as_str()).unwrap_or("?"),
            ));
            (&topics.changes, "change", v)
        }
    };
    tools::publish(producer, topic, &key, v_bytes(value).as_slice(), kind, None).await?;
    Ok(())
}

fn v_bytes(v: &serde_json::Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// A record read back from the topics.
#[derive(Debug, Clone)]
enum Seen {
    Output(Timestamp, Box<Output>),
    Result(selfheal::records::ActionResult),
    Approval(selfheal::records::Approval),
}

fn follow(
    kafka: &KafkaArgs,
    stop: &AtomicBool,
    tx: tokio::sync::mpsc::UnboundedSender<Seen>,
) -> anyhow::Result<()> {
    let t = kafka.topics();
    let names = [
        t.incidents.clone(),
        t.actions.clone(),
        t.approval_requests.clone(),
        t.escalations.clone(),
        t.audit.clone(),
        t.results.clone(),
        t.approvals.clone(),
    ];
    let mut cc = kafka.consumer_config()?;
    cc.set("group.id", format!("{}demo-timeline", kafka.topic_prefix))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    let c: BaseConsumer<selfheal::live::Health> =
        cc.create_with_context(selfheal::live::Health::default())?;
    let mut tpl = TopicPartitionList::new();
    for n in &names {
        let md = c.fetch_metadata(Some(n), StdDuration::from_secs(10))?;
        let parts = md
            .topics()
            .first()
            .map(|x| x.partitions().len())
            .unwrap_or(0);
        for p in 0..parts as i32 {
            tpl.add_partition_offset(n, p, Offset::Beginning)?;
        }
    }
    c.assign(&tpl)?;
    while !stop.load(Ordering::Relaxed) {
        let Some(m) = c.poll(StdDuration::from_millis(100)) else {
            continue;
        };
        let Ok(m) = m else { continue };
        let ts = Timestamp(m.timestamp().to_millis().unwrap_or_else(wall_ms));
        let value = m.payload().unwrap_or(&[]);
        let seen = if m.topic() == t.results {
            match decode_value(InputKind::Result, value) {
                Ok(Input::Result(r)) => Some(Seen::Result(r)),
                _ => None,
            }
        } else if m.topic() == t.approvals {
            match decode_value(InputKind::Approval, value) {
                Ok(Input::Approval(r)) => Some(Seen::Approval(r)),
                _ => None,
            }
        } else {
            let kind = wire::header(m.headers(), wire::KIND_HEADER);
            wire::decode_output(kind, value)
                .ok()
                .map(|o| Seen::Output(ts, Box::new(o)))
        };
        if let Some(s) = seen {
            if tx.send(s).is_err() {
                break;
            }
        }
    }
    Ok(())
}

/// Error budget per SLO from the samples the fleet published.
#[derive(Default)]
struct Budget {
    /// service -> (slo name, objective as a fraction)
    objectives: BTreeMap<String, (String, f64)>,
    last: HashMap<String, f64>,
    /// service -> (total, bad)
    counts: BTreeMap<String, (f64, f64)>,
}

impl Budget {
    fn observe(&mut self, v: &serde_json::Value) {
        if v.get("name").and_then(|n| n.as_str()) != Some("http_requests_total") {
            return;
        }
        let Some(labels) = v.get("labels").and_then(|l| l.as_object()) else {
            return;
        };
        let service = labels.get("service").and_then(|s| s.as_str()).unwrap_or("");
        let code = labels.get("code").and_then(|s| s.as_str()).unwrap_or("");
        let value = match v.get("value") {
            Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0.0),
            Some(serde_json::Value::Number(n)) => n.as_f64().unwrap_or(0.0),
            _ => return,
        };
        let mut key: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        key.sort();
        let key = key.join(",");
        let inc = match self.last.insert(key, value) {
            None => 0.0,
            Some(prev) if value >= prev => value - prev,
            Some(_) => value,
        };
        let e = self.counts.entry(service.to_string()).or_default();
        e.0 += inc;
        if code.starts_with('5') {
            e.1 += inc;
        }
    }
}

#[derive(Debug, Serialize)]
struct IncidentReport {
    id: String,
    service: String,
    trigger: String,
    opened: String,
    /// When a human was paged or the incident was suppressed.
    escalated: Option<String>,
    resolved: Option<String>,
    state: String,
    /// Time from opened to resolved (validated fix, or the trigger
    /// resolving after an escalation).
    mttr_seconds: Option<f64>,
    actions: Vec<ActionReport>,
    approval_requested: bool,
    approved_by: Option<String>,
    escalations: Vec<String>,
}

#[derive(Debug, Serialize, Clone)]
struct ActionReport {
    command: String,
    tier: u8,
    action: String,
    target: String,
    runbook: String,
    rollback_of: Option<String>,
    result: Option<String>,
    detail: Option<String>,
}

#[derive(Debug, Serialize)]
struct ScenarioReport {
    name: &'static str,
    service: &'static str,
    alert: &'static str,
    expected: String,
    observed: String,
    passed: bool,
}

#[derive(Debug, Serialize)]
struct BudgetReport {
    slo: String,
    service: String,
    objective_percent: f64,
    requests: f64,
    errors: f64,
    error_ratio: f64,
    mean_burn_rate: f64,
    budget_consumed_percent_of_30d: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    passed: bool,
    broker: String,
    processing_guarantee: String,
    duration_seconds: u64,
    auto_approve: bool,
    scenarios: Vec<ScenarioReport>,
    incidents: Vec<IncidentReport>,
    actions_by_tier: BTreeMap<String, u64>,
    escalations_by_reason: BTreeMap<String, u64>,
    error_budget: Vec<BudgetReport>,
    engine: BTreeMap<String, u64>,
    executor: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Inc {
    service: String,
    trigger: String,
    opened: Option<Timestamp>,
    resolved: Option<Timestamp>,
    escalated: Option<Timestamp>,
    state: String,
    actions: Vec<ActionReport>,
    approval_requested: bool,
    approved_by: Option<String>,
    escalations: Vec<String>,
}

struct Timeline {
    started: Instant,
    incidents: BTreeMap<String, Inc>,
    order: Vec<String>,
    commands: HashMap<String, String>,
    proposals: HashMap<String, String>,
    early_results: HashMap<String, selfheal::records::ActionResult>,
}

impl Timeline {
    fn new(started: Instant) -> Timeline {
        Timeline {
            started,
            incidents: BTreeMap::new(),
            order: Vec::new(),
            commands: HashMap::new(),
            proposals: HashMap::new(),
            early_results: HashMap::new(),
        }
    }

    fn line(&self, who: &str, what: &str) {
        let t = self.started.elapsed().as_secs_f64();
        println!("[{t:6.1}] {who:<16} {what}");
    }

    fn say(&self, who: &str, what: &str) {
        self.line(who, what);
    }

    fn note(&self, n: &str) {
        self.line("fleet", n);
    }

    /// Takes one record; returns (command id, service) of a new approval
    /// request.
    fn record(&mut self, s: &Seen) -> Option<(String, String)> {
        match s {
            Seen::Output(ts, o) => return self.output(*ts, o),
            Seen::Result(r) => {
                let id = self.commands.get(&r.command_id).cloned();
                if id.is_none() {
                    // The command record has not been read yet.
                    self.early_results.insert(r.command_id.clone(), r.clone());
                }
                if let Some(inc) = id.as_ref().and_then(|i| self.incidents.get_mut(i)) {
                    let service = inc.service.clone();
                    if let Some(a) = inc.actions.iter_mut().find(|a| a.command == r.command_id) {
                        a.result = Some(r.status.as_str().to_string());
                        a.detail = Some(r.detail.clone());
                    }
                    self.line(
                        &service,
                        &format!("result {}: {}", r.status.as_str(), r.detail),
                    );
                }
            }
            Seen::Approval(a) => {
                if let Some(inc) = self
                    .proposals
                    .get(&a.command_id)
                    .cloned()
                    .and_then(|i| self.incidents.get_mut(&i))
                {
                    if a.decision == Verdict::Approve {
                        inc.approved_by = Some(a.by.clone());
                    }
                    let service = inc.service.clone();
                    self.line(&service, &format!("{} by {}", a.decision.as_str(), a.by));
                }
            }
        }
        None
    }

    /// Takes one output record.
    fn output(&mut self, ts: Timestamp, o: &Output) -> Option<(String, String)> {
        match o {
            Output::Incident(i) => return self.incident(ts, i),
            Output::Command(c) => return self.command(c),
            Output::Escalation(e) => return self.escalation(e),
            Output::ApprovalRequest(r) => {
                if self
                    .proposals
                    .insert(r.command_id.clone(), r.incident.clone())
                    .is_none()
                {
                    self.entry(&r.incident, &r.service).approval_requested = true;
                    self.line(
                        &r.service,
                        &format!(
                            "tier 2 proposal {} {} (runbook {}), waiting for an approver until {}",
                            r.action, r.target, r.runbook, r.expires
                        ),
                    );
                    return Some((r.command_id.clone(), r.service.clone()));
                }
            }
            Output::Audit(a) => {
                let acted = a
                    .outputs
                    .iter()
                    .any(|o| o.starts_with("command:") || o.starts_with("escalation:"));
                if acted {
                    for r in &a.reasons {
                        self.line(&a.service, &format!("  why: {r}"));
                    }
                    for g in a.guardrails.iter().filter(|g| !g.passed) {
                        self.line(
                            &a.service,
                            &format!("  blocked by {}: {}", g.name, g.detail),
                        );
                    }
                }
            }
            Output::BurnAlert(b) => self.line(
                &b.service,
                &format!(
                    "burn rate {} {:?} over {}/{} (factor {}, burn {:.1}/{:.1})",
                    b.slo,
                    b.state,
                    b.long_window,
                    b.short_window,
                    b.factor,
                    b.burn_long.unwrap_or(0.0),
                    b.burn_short.unwrap_or(0.0)
                )
                .to_lowercase(),
            ),
        }
        None
    }

    /// The incident's entry, created by whichever of its records arrives
    /// first (topics are read side by side, so a command can come before
    /// the incident record that announced it).
    fn entry(&mut self, id: &str, service: &str) -> &mut Inc {
        if !self.incidents.contains_key(id) {
            self.order.push(id.to_string());
        }
        let inc = self.incidents.entry(id.to_string()).or_default();
        if inc.service.is_empty() {
            inc.service = service.to_string();
        }
        inc
    }

    fn incident(&mut self, ts: Timestamp, i: &Incident) -> Option<(String, String)> {
        let inc = self.entry(&i.id, &i.service);
        let new = inc.trigger.is_empty();
        inc.trigger = i.trigger.alertname.clone();
        // A later state never goes back to an earlier one in the report.
        let terminal = |s: &str| matches!(s, "resolved");
        if !terminal(&inc.state) {
            inc.state = i.state.as_str().to_string();
        }
        if i.state == IncidentState::Opened || inc.opened.is_none() {
            inc.opened = Some(inc.opened.map_or(ts, |o| o.min(ts)));
        }
        match i.state {
            IncidentState::Resolved => inc.resolved = Some(ts),
            IncidentState::Escalated | IncidentState::Suppressed => {
                inc.escalated.get_or_insert(ts);
            }
            _ => {}
        }
        let mttr = match (i.state, inc.opened) {
            (IncidentState::Resolved, Some(o)) => {
                format!(" (time to resolve {:.1}s)", (ts.0 - o.0) as f64 / 1000.0)
            }
            _ => String::new(),
        };
        let labels: Vec<String> = i
            .trigger
            .labels
            .iter()
            .filter(|(k, _)| !matches!(*k, "alertname" | "service" | "severity"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let what = if new {
            format!(
                "incident opened: {} {}",
                i.trigger.alertname,
                labels.join(" ")
            )
        } else {
            format!("incident {}: {}{mttr}", i.state.as_str(), i.reason)
        };
        self.line(&i.service, what.trim_end());
        None
    }

    fn command(&mut self, c: &Command) -> Option<(String, String)> {
        if self
            .commands
            .insert(c.id.clone(), c.incident.clone())
            .is_some()
        {
            return None;
        }
        self.entry(&c.incident, &c.service);
        let early = self.early_results.remove(&c.id);
        let a = ActionReport {
            command: c.id.clone(),
            tier: c.tier,
            action: c.action.clone(),
            target: c.target.clone(),
            runbook: c.runbook.clone(),
            rollback_of: c.rollback_of.clone(),
            result: early.as_ref().map(|r| r.status.as_str().to_string()),
            detail: early.as_ref().map(|r| r.detail.clone()),
        };
        if let Some(inc) = self.incidents.get_mut(&c.incident) {
            inc.actions.push(a);
        }
        let params: Vec<String> = c.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.line(
            &c.service,
            &format!(
                "{}tier {} {} {} {}(runbook {})",
                if c.rollback_of.is_some() {
                    "ROLLBACK "
                } else {
                    ""
                },
                c.tier,
                c.action,
                c.target,
                if params.is_empty() {
                    String::new()
                } else {
                    format!("{} ", params.join(" "))
                },
                c.runbook
            ),
        );
        None
    }

    fn escalation(&mut self, e: &Escalation) -> Option<(String, String)> {
        self.entry(&e.incident, &e.service)
            .escalations
            .push(e.reason.as_str().to_string());
        self.line(
            &e.service,
            &format!(
                "{} ({}): {}",
                e.severity.as_str().to_uppercase(),
                e.reason.as_str(),
                e.summary
            ),
        );
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        self,
        budget: &Budget,
        duration: StdDuration,
        auto: bool,
        e: &EngineCounters,
        x: &selfheal::live::executor::ExecutorCounters,
        brokers: &str,
        guarantee: Guarantee,
    ) -> Report {
        let incidents: Vec<IncidentReport> = self
            .order
            .iter()
            .filter_map(|id| self.incidents.get(id).map(|i| (id, i)))
            .map(|(id, i)| IncidentReport {
                id: id.clone(),
                service: i.service.clone(),
                trigger: i.trigger.clone(),
                opened: i.opened.map(|t| t.to_string()).unwrap_or_default(),
                escalated: i.escalated.map(|t| t.to_string()),
                resolved: i.resolved.map(|t| t.to_string()),
                state: i.state.clone(),
                mttr_seconds: match (i.opened, i.resolved) {
                    (Some(o), Some(c)) => Some((c.0 - o.0) as f64 / 1000.0),
                    _ => None,
                },
                actions: i.actions.clone(),
                approval_requested: i.approval_requested,
                approved_by: i.approved_by.clone(),
                escalations: i.escalations.clone(),
            })
            .collect();
        let scenarios = scenarios(&incidents, auto);
        let mut actions_by_tier = BTreeMap::new();
        let mut escalations_by_reason = BTreeMap::new();
        for i in &incidents {
            for a in &i.actions {
                *actions_by_tier
                    .entry(format!("tier{}", a.tier))
                    .or_insert(0) += 1;
            }
            for r in &i.escalations {
                *escalations_by_reason.entry(r.clone()).or_insert(0) += 1;
            }
        }
        let period = 30.0 * 86_400.0;
        let error_budget = budget
            .objectives
            .iter()
            .map(|(service, (slo, objective))| {
                let (total, bad) = budget.counts.get(service).copied().unwrap_or_default();
                let ratio = if total > 0.0 { bad / total } else { 0.0 };
                let burn = ratio / (1.0 - objective);
                BudgetReport {
                    slo: slo.clone(),
                    service: service.clone(),
                    objective_percent: objective * 100.0,
                    requests: total,
                    errors: bad,
                    error_ratio: ratio,
                    mean_burn_rate: burn,
                    budget_consumed_percent_of_30d: burn * duration.as_secs_f64() / period * 100.0,
                }
            })
            .collect();
        let g = EngineCounters::get;
        let engine = BTreeMap::from([
            ("records_consumed".to_string(), g(&e.consumed)),
            ("dead_lettered".to_string(), g(&e.dead_lettered)),
            ("ticks".to_string(), g(&e.ticks)),
            ("outputs".to_string(), g(&e.outputs)),
            ("commands".to_string(), g(&e.commands)),
            ("batches".to_string(), g(&e.batches)),
            ("restarts".to_string(), g(&e.restarts)),
        ]);
        let executor = BTreeMap::from([
            ("received".to_string(), g(&x.received)),
            ("started".to_string(), g(&x.started)),
            ("succeeded".to_string(), g(&x.succeeded)),
            ("failed".to_string(), g(&x.failed)),
            ("timed_out".to_string(), g(&x.timed_out)),
            ("not_started_past_deadline".to_string(), g(&x.expired)),
            ("duplicates_skipped".to_string(), g(&x.duplicates)),
        ]);
        Report {
            passed: scenarios.iter().all(|s| s.passed),
            broker: brokers.to_string(),
            processing_guarantee: match guarantee {
                Guarantee::ExactlyOnce => "exactly_once",
                Guarantee::AtLeastOnce => "at_least_once",
            }
            .into(),
            duration_seconds: duration.as_secs(),
            auto_approve: auto,
            scenarios,
            incidents,
            actions_by_tier,
            escalations_by_reason,
            error_budget,
            engine,
            executor,
        }
    }
}

fn scenarios(incidents: &[IncidentReport], auto: bool) -> Vec<ScenarioReport> {
    let find = |service: &str, alert: &str| {
        incidents
            .iter()
            .filter(|i| i.service == service && i.trigger == alert)
            .collect::<Vec<_>>()
    };
    let describe = |v: &[&IncidentReport]| -> String {
        if v.is_empty() {
            return "no incident".into();
        }
        v.iter()
            .map(|i| {
                let acts: Vec<String> = i
                    .actions
                    .iter()
                    .map(|a| {
                        format!(
                            "{}tier {} {} -> {}",
                            if a.rollback_of.is_some() {
                                "rollback "
                            } else {
                                ""
                            },
                            a.tier,
                            a.action,
                            a.result.as_deref().unwrap_or("no result")
                        )
                    })
                    .collect();
                format!(
                    "{}; actions [{}]; escalations [{}]",
                    i.state,
                    acts.join(", "),
                    i.escalations.join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let fixed_by = |v: &[&IncidentReport], action: &str| {
        v.iter().any(|i| {
            i.state == "resolved"
                && i.escalations.is_empty()
                && i.actions.iter().any(|a| {
                    a.tier == 1
                        && a.action == action
                        && a.rollback_of.is_none()
                        && a.result.as_deref() == Some("succeeded")
                })
        })
    };
    let mut out = Vec::new();
    let mut push =
        |name, service, alert, expected: &str, pass: &dyn Fn(&[&IncidentReport]) -> bool| {
            let v = find(service, alert);
            out.push(ScenarioReport {
                name,
                service,
                alert,
                expected: expected.to_string(),
                observed: describe(&v),
                passed: pass(&v),
            });
        };
    push(
        "memory leak ends in a crash",
        "checkout",
        "PodOOMKilled",
        "tier 1 restart, validated, resolved",
        &|v| fixed_by(v, "restart"),
    );
    push(
        "error spike under load",
        "search",
        "HighErrorRate",
        "tier 1 scale-up, validated, resolved",
        &|v| fixed_by(v, "scale"),
    );
    push(
        "primary failure",
        "orders",
        "PrimaryDown",
        "tier 1 failover, validated, resolved",
        &|v| fixed_by(v, "failover"),
    );
    push(
        "poisoned cache",
        "catalog",
        "CachePoisoned",
        "tier 1 cache invalidation, validated, resolved",
        &|v| fixed_by(v, "cache_invalidate"),
    );
    push(
        "a fix that does not work",
        "recommendations",
        "HighLatency",
        "tier 1 scale-up, not confirmed: rolled back and paged (validation_failed)",
        &|v| {
            v.iter().any(|i| {
                i.actions.iter().any(|a| a.rollback_of.is_some())
                    && i.escalations.iter().any(|e| e == "validation_failed")
            })
        },
    );
    push(
        "database fault during a migration",
        "orders-db",
        "DBConnectionsExhausted",
        "no action (change freeze), paged (guardrail)",
        &|v| {
            !v.is_empty()
                && v.iter().all(|i| i.actions.is_empty())
                && v.iter()
                    .any(|i| i.escalations.iter().any(|e| e == "guardrail"))
        },
    );
    push(
        "a failure never seen before",
        "inventory",
        "DiskCorruption",
        "no action, paged (first_time)",
        &|v| {
            !v.is_empty()
                && v.iter().all(|i| i.actions.is_empty())
                && v.iter()
                    .any(|i| i.escalations.iter().any(|e| e == "first_time"))
        },
    );
    let expected = if auto {
        "tier 2 proposal, approved (auto), acted, resolved"
    } else {
        "tier 2 proposal; nothing runs without an approver: approved from the command line and resolved, or paged on approval_timeout (or left alone until its trigger resolved)"
    };
    push(
        "tier 2 action needs an approver",
        "search",
        "ShardImbalance",
        expected,
        &|v| {
            v.iter().any(|i| {
                let acted = i.actions.iter().any(|a| a.tier == 2);
                let approved = i.approved_by.is_some();
                i.approval_requested
                    && if auto {
                        approved && acted && i.state == "resolved"
                    } else {
                        (approved && acted && i.state == "resolved")
                            || (!approved
                                && !acted
                                && (i.escalations.iter().any(|e| e == "approval_timeout")
                                    || i.state == "resolved"))
                    }
            })
        },
    );
    out
}

fn print_report(r: &Report) {
    println!();
    println!("== report ==");
    println!("scenarios:");
    for s in &r.scenarios {
        println!(
            "  [{}] {:<36} expected: {}",
            if s.passed { "ok" } else { "FAILED" },
            s.name,
            s.expected
        );
        println!("  {:>6}{:<36} observed: {}", "", "", s.observed);
    }
    println!("incidents:");
    for i in &r.incidents {
        println!(
            "  {:<16} {:<24} {:<10} {}",
            i.service,
            i.trigger,
            i.state,
            i.mttr_seconds
                .map(|m| format!("MTTR {m:.1}s"))
                .unwrap_or_default()
        );
    }
    println!("actions by tier: {:?}", r.actions_by_tier);
    println!("escalations by reason: {:?}", r.escalations_by_reason);
    println!("error budget consumed (share of the 30-day budget):");
    for b in &r.error_budget {
        println!(
            "  {:<30} {:>7} requests {:>6} errors  mean burn rate {:>6.2}  {:.4}% of the budget",
            b.slo, b.requests, b.errors, b.mean_burn_rate, b.budget_consumed_percent_of_30d
        );
    }
    println!(
        "result: {}",
        if r.passed {
            "every scenario had its expected outcome"
        } else {
            "some scenarios did not have their expected outcome"
        }
    );
}
