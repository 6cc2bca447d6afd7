//! The live commands: `engine`, `executor`, the operator tools, `topics`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use rdkafka::Message;
use selfheal::live::engine::{EngineConfig, EngineCounters, Guarantee};
use selfheal::live::executor::{ExecutorConfig, ExecutorCounters};
use selfheal::live::tools::{self, ChainVerifier, Link};
use selfheal::live::wire::{self, Format};
use selfheal::live::KafkaArgs;
use selfheal::records::{Output, Scope, Verdict};
use selfheal::time::{Duration, Timestamp};

#[derive(Debug, clap::Args)]
pub struct EngineArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Policy file (YAML).
    #[arg(long, env = "SELFHEAL_POLICY")]
    pub policy: PathBuf,
    /// `exactly_once` needs Kafka transactions; `at_least_once` is for
    /// brokers without them.
    #[arg(
        long = "processing-guarantee",
        env = "SELFHEAL_PROCESSING_GUARANTEE",
        value_enum,
        default_value = "exactly_once"
    )]
    pub guarantee: Guarantee,
    /// Consumer group of the engine instances.
    #[arg(long, default_value = "selfheal-engine")]
    pub group: String,
    /// This instance's name (client.id, transactional.id); default
    /// `<host>-engine-<pid>`.
    #[arg(long, env = "SELFHEAL_INSTANCE")]
    pub instance: Option<String>,
    /// Value encoding of the records the engine writes.
    #[arg(long, value_enum, default_value = "avro")]
    pub format: Format,
    /// Clock tick interval when no records come.
    #[arg(long, default_value = "1s")]
    pub tick: String,
    /// Longest time a batch stays uncommitted.
    #[arg(long, default_value = "100ms")]
    pub commit_interval: String,
    /// A record further behind its partition's event time goes to the
    /// dead-letter topic.
    #[arg(long, default_value = "10m")]
    pub max_lateness: String,
    /// A record stamped further ahead of the clock goes to the dead-letter
    /// topic.
    #[arg(long, default_value = "5m")]
    pub max_future: String,
    /// A record value longer than this many bytes goes to the dead-letter
    /// topic (code `too_large`), cut to this length there.
    #[arg(long, default_value_t = selfheal::live::engine::DEFAULT_MAX_RECORD_BYTES)]
    pub max_record_bytes: usize,
    /// Approvals must be signed with the key in this file (HMAC-SHA256
    /// over command id, decision and approver); unsigned or badly signed
    /// ones go to the dead-letter topic as `unauthenticated`.
    #[arg(long, env = "SELFHEAL_APPROVAL_KEY_FILE")]
    pub approval_key_file: Option<std::path::PathBuf>,
    /// Where a partition with no committed offset starts.
    #[arg(long, value_parser = ["earliest", "latest"], default_value = "earliest")]
    pub start: String,
    /// Export OpenTelemetry traces over OTLP/HTTP (protobuf) to this
    /// endpoint, e.g. `http://127.0.0.1:4318` (`/v1/traces` is appended).
    /// Default: `OTEL_EXPORTER_OTLP_ENDPOINT`; unset, traces are off.
    #[arg(long, env = "SELFHEAL_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// How often the policy file's content is checked for a change, which
    /// is then applied to every partition at one batch boundary; `off`
    /// reloads only on a `reload-policy` control record.
    #[arg(long, default_value = "5s")]
    pub policy_reload: String,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// The metrics and health endpoints of a live service.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// Serve `/metrics` (Prometheus), `/healthz` and `/readyz` on this
    /// address, e.g. `0.0.0.0:9464`; off when absent.
    #[arg(long, env = "SELFHEAL_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

impl MetricsArgs {
    /// Installs the recorder and starts the listener on `rt` when asked;
    /// true when serving.
    pub fn start(
        &self,
        rt: &tokio::runtime::Runtime,
        what: &str,
        status: &selfheal::live::telemetry::Status,
    ) -> anyhow::Result<bool> {
        use selfheal::live::telemetry;
        let Some(addr) = &self.metrics_listen else {
            return Ok(false);
        };
        let handle = telemetry::install()?;
        let bound = rt.block_on(async {
            telemetry::spawn_upkeep(handle.clone());
            telemetry::serve(addr, handle, status.clone()).await
        })?;
        eprintln!(
            "selfheal {what}: metrics on http://{bound}/metrics, health on /healthz and /readyz"
        );
        Ok(true)
    }
}

pub fn std_duration(s: &str) -> anyhow::Result<std::time::Duration> {
    if let Some(ms) = s.strip_suffix("ms") {
        return Ok(std::time::Duration::from_millis(
            ms.parse().with_context(|| format!("bad duration {s:?}"))?,
        ));
    }
    let d = Duration::parse(s).map_err(|e| anyhow::anyhow!("bad duration {s:?}: {e}"))?;
    Ok(std::time::Duration::from_millis(d.0.max(0) as u64))
}

fn load_policy(path: &std::path::Path) -> anyhow::Result<Arc<selfheal::policy::Policy>> {
    match selfheal::policy::load::load(path) {
        Ok(p) => Ok(Arc::new(p)),
        Err(problems) => {
            for p in &problems.0 {
                eprintln!("{p}");
            }
            bail!("{}: {} problem(s)", path.display(), problems.0.len())
        }
    }
}

/// Sets the flag on SIGINT or SIGTERM, saying on stderr what the command
/// does before it exits (`then`).
pub fn stop_on_signal(rt: &tokio::runtime::Runtime, then: &'static str) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    rt.spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
        eprintln!("selfheal: stopping ({then})");
        s.store(true, Ordering::Relaxed);
    });
    stop
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn engine(a: EngineArgs) -> anyhow::Result<i32> {
    let policy = load_policy(&a.policy)?;
    let mut cfg = EngineConfig::new(a.kafka, policy);
    cfg.policy_reload = match a.policy_reload.as_str() {
        "off" => None,
        s => Some(std_duration(s).context("--policy-reload")?).filter(|d| !d.is_zero()),
    };
    cfg.policy_file = Some(a.policy.clone());
    cfg.guarantee = a.guarantee;
    cfg.group = a.group;
    if let Some(i) = a.instance {
        cfg.instance = i;
    }
    cfg.format = a.format;
    cfg.tick = std_duration(&a.tick)?;
    cfg.commit_interval = std_duration(&a.commit_interval)?;
    cfg.max_lateness_ms = std_duration(&a.max_lateness)?.as_millis() as i64;
    cfg.max_future_ms = std_duration(&a.max_future)?.as_millis() as i64;
    cfg.max_record_bytes = a.max_record_bytes.max(1);
    cfg.approval_key = a
        .approval_key_file
        .as_deref()
        .map(selfheal::live::signing::ApprovalKey::load)
        .transpose()?;
    cfg.start_earliest = a.start == "earliest";
    cfg.traces = traces(a.otlp_endpoint, "selfheal-engine", &cfg.instance)?;
    let rt = runtime()?;
    cfg.telemetry = a.metrics.start(&rt, "engine", &cfg.status)?;
    let stop = stop_on_signal(&rt, "committing the current batch");
    let counters = Arc::new(EngineCounters::default());
    let res = selfheal::live::engine::run(&cfg, &stop, &counters);
    if let Some(t) = &cfg.traces {
        t.shutdown();
    }
    res?;
    let g = EngineCounters::get;
    eprintln!(
        "selfheal engine: stopped after {} records, {} commands, {} dead-lettered",
        g(&counters.consumed),
        g(&counters.commands),
        g(&counters.dead_lettered)
    );
    Ok(0)
}

#[derive(Debug, clap::Args)]
pub struct ExecutorArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Action handlers (YAML): how restart, scale, failover,
    /// cache_invalidate and other kinds are carried out.
    #[arg(long, env = "SELFHEAL_HANDLERS")]
    pub handlers: Option<PathBuf>,
    /// Handle every kind without a configured handler by POSTing the
    /// command as JSON to `URL/<kind>`.
    #[arg(long)]
    pub handler_url: Option<String>,
    /// Consumer group of the executors.
    #[arg(long, default_value = "selfheal-executor")]
    pub group: String,
    #[arg(long, env = "SELFHEAL_INSTANCE")]
    pub instance: Option<String>,
    /// Commands run at once, at most.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Value encoding of the results.
    #[arg(long, value_enum, default_value = "avro")]
    pub format: Format,
    /// Kubeconfig for the k8s.* actions; without it the in-cluster service
    /// account or the usual kubeconfig (KUBECONFIG, ~/.kube/config) is used.
    #[arg(long, env = "SELFHEAL_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Send every Kubernetes write with dryRun=All: the API server
    /// validates it and changes nothing.
    #[arg(long)]
    pub k8s_dry_run: bool,
    /// Namespaces the k8s.* actions may touch (comma-separated); any when
    /// not given.
    #[arg(long, value_delimiter = ',')]
    pub k8s_namespaces: Option<Vec<String>>,
    /// Export OpenTelemetry traces over OTLP/HTTP (protobuf) to this
    /// endpoint, e.g. `http://127.0.0.1:4318` (`/v1/traces` is appended).
    /// Default: `OTEL_EXPORTER_OTLP_ENDPOINT`; unset, traces are off.
    #[arg(long, env = "SELFHEAL_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

pub fn executor(a: ExecutorArgs) -> anyhow::Result<i32> {
    let runner = build_runner(a.handlers.as_ref(), a.handler_url.as_deref())?.k8s(
        selfheal::executor::K8sSettings {
            kubeconfig: a.kubeconfig,
            dry_run: a.k8s_dry_run,
            namespaces: a.k8s_namespaces,
        },
    );
    let mut cfg = ExecutorConfig::new(a.kafka);
    cfg.group = a.group;
    if let Some(i) = a.instance {
        cfg.instance = i;
    }
    cfg.concurrency = a.concurrency;
    cfg.format = a.format;
    cfg.traces = traces(a.otlp_endpoint, "selfheal-executor", &cfg.instance)?;
    let traces = cfg.traces.clone();
    let rt = runtime()?;
    cfg.telemetry = a.metrics.start(&rt, "executor", &cfg.status)?;
    let stop = stop_on_signal(&rt, "letting running commands finish and report");
    let counters = Arc::new(ExecutorCounters::default());
    let res = rt.block_on(selfheal::live::executor::run(
        cfg,
        Arc::new(runner),
        stop,
        counters,
    ));
    if let Some(t) = traces {
        t.shutdown();
    }
    res?;
    Ok(0)
}

/// The OTLP trace exporter, when an endpoint is configured.
fn traces(
    flag: Option<String>,
    service: &str,
    instance: &str,
) -> anyhow::Result<Option<selfheal::live::traces::Traces>> {
    use selfheal::live::traces::{self, Traces};
    let Some(endpoint) = traces::endpoint(flag) else {
        return Ok(None);
    };
    let t = Traces::otlp(&endpoint, service, instance)?;
    eprintln!(
        "selfheal: exporting traces to {}",
        traces::traces_url(&endpoint)
    );
    Ok(Some(t))
}

pub fn build_runner(
    handlers: Option<&PathBuf>,
    handler_url: Option<&str>,
) -> anyhow::Result<selfheal::executor::Runner> {
    let h = match (handlers, handler_url) {
        (Some(path), _) => selfheal::executor::Handlers::load(path)
            .with_context(|| format!("loading handlers from {}", path.display()))?,
        (None, Some(url)) => selfheal::executor::Handlers::with_default_url(url)
            .with_context(|| format!("--handler-url {url}"))?,
        (None, None) => selfheal::executor::Handlers::default(),
    };
    Ok(selfheal::executor::Runner::new(h)?)
}

#[derive(Debug, clap::Subcommand)]
pub enum AlertCmd {
    /// Publish an alert from flags, or every alert of an Alertmanager
    /// webhook payload file.
    Publish(AlertPublishArgs),
}

#[derive(Debug, clap::Args)]
pub struct AlertPublishArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Alertmanager webhook payload or single alert (JSON); `-` reads stdin.
    #[arg(long, conflicts_with_all = ["name", "label"])]
    pub file: Option<PathBuf>,
    /// The alert's `alertname`.
    #[arg(long)]
    pub name: Option<String>,
    /// The alert's `service` label.
    #[arg(long)]
    pub service: Option<String>,
    /// Another label (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// An annotation (repeatable).
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotation: Vec<String>,
    /// Publish the alert as resolved.
    #[arg(long)]
    pub resolved: bool,
    /// `startsAt` (RFC 3339); default now. Firing and resolved records of
    /// one alert should carry the same value.
    #[arg(long)]
    pub starts_at: Option<String>,
}

fn kv(s: &str) -> anyhow::Result<(String, String)> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .with_context(|| format!("expected KEY=VALUE, got {s:?}"))
}

pub fn alert(cmd: AlertCmd) -> anyhow::Result<i32> {
    let AlertCmd::Publish(a) = cmd;
    let body = match &a.file {
        Some(p) if p.as_os_str() == "-" => {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
            v
        }
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => {
            let name = a
                .name
                .clone()
                .context("give --name NAME (and --service) or --file PAYLOAD.json")?;
            let mut labels = serde_json::Map::new();
            labels.insert("alertname".into(), name.into());
            if let Some(s) = &a.service {
                labels.insert("service".into(), s.clone().into());
            }
            for l in &a.label {
                let (k, v) = kv(l)?;
                labels.insert(k, v.into());
            }
            let mut ann = serde_json::Map::new();
            for l in &a.annotation {
                let (k, v) = kv(l)?;
                ann.insert(k, v.into());
            }
            let starts = match &a.starts_at {
                Some(s) => Timestamp::parse(s).map_err(|e| anyhow::anyhow!("--starts-at: {e}"))?,
                None => Timestamp(selfheal::live::wall_ms()),
            };
            let mut v = serde_json::json!({
                "status": if a.resolved { "resolved" } else { "firing" },
                "labels": labels,
                "annotations": ann,
                "startsAt": starts.to_string(),
            });
            if a.resolved {
                v["endsAt"] = Timestamp(selfheal::live::wall_ms()).to_string().into();
            }
            v.to_string().into_bytes()
        }
    };
    let rt = runtime()?;
    let n = rt.block_on(async {
        let p = tools::producer(&a.kafka)?;
        tools::publish_alerts(&p, &a.kafka, &body).await
    })?;
    println!("published {n} alert(s) to {}", a.kafka.topics().alerts);
    Ok(0)
}

#[derive(Debug, clap::Args)]
pub struct DecideArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The proposed command's id (from the approval request).
    pub id: String,
    /// Who decides; must be one of the policy's approvers.
    #[arg(long, env = "SELFHEAL_APPROVER")]
    pub by: String,
    /// The service of the proposal; looked up in the approval requests
    /// topic when absent.
    #[arg(long)]
    pub service: Option<String>,
    #[arg(long, value_enum, default_value = "avro")]
    pub format: Format,
    /// Signs the decision with the key in this file, for an engine that
    /// requires signed approvals.
    #[arg(long, env = "SELFHEAL_APPROVAL_KEY_FILE")]
    pub approval_key_file: Option<std::path::PathBuf>,
}

pub fn decide(a: DecideArgs, verdict: Verdict) -> anyhow::Result<i32> {
    let key = a
        .approval_key_file
        .as_deref()
        .map(selfheal::live::signing::ApprovalKey::load)
        .transpose()?;
    let rt = runtime()?;
    let service = rt.block_on(tools::decide(
        &a.kafka,
        &a.id,
        verdict,
        &a.by,
        a.service,
        a.format,
        key.as_ref(),
    ))?;
    println!(
        "{} {} (service {service}) as {}",
        match verdict {
            Verdict::Approve => "approved",
            Verdict::Reject => "rejected",
        },
        a.id,
        a.by
    );
    Ok(0)
}

#[derive(Debug, clap::Args)]
pub struct KillSwitchArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// `on` stops automated actions in the scope; `off` resumes them.
    #[arg(value_parser = ["on", "off"])]
    pub state: String,
    /// `global`, `service:NAME` or `runbook:NAME`.
    #[arg(long)]
    pub scope: String,
    /// When the switch turns itself off (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Who switched it.
    #[arg(long, env = "USER", default_value = "operator")]
    pub by: String,
    #[arg(long, value_enum, default_value = "avro")]
    pub format: Format,
}

pub fn kill_switch(a: KillSwitchArgs) -> anyhow::Result<i32> {
    let scope = Scope::parse(&a.scope).with_context(|| {
        format!(
            "bad --scope {:?}: expected global, service:NAME or runbook:NAME",
            a.scope
        )
    })?;
    let until = a
        .until
        .as_deref()
        .map(Timestamp::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--until: {e}"))?;
    let on = a.state == "on";
    let rt = runtime()?;
    let n = rt.block_on(tools::kill_switch(
        &a.kafka,
        scope.clone(),
        on,
        until,
        &a.by,
        a.format,
    ))?;
    println!(
        "kill switch {} for {scope}{} ({n} partition(s) of {})",
        a.state,
        until.map(|u| format!(" until {u}")).unwrap_or_default(),
        a.kafka.topics().control
    );
    Ok(0)
}

#[derive(Debug, clap::Args)]
pub struct ReloadPolicyArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Who asks.
    #[arg(long, env = "USER", default_value = "operator")]
    pub by: String,
    #[arg(long, value_enum, default_value = "avro")]
    pub format: Format,
}

pub fn reload_policy(a: ReloadPolicyArgs) -> anyhow::Result<i32> {
    let rt = runtime()?;
    let n = rt.block_on(tools::publish_control(
        &a.kafka,
        selfheal::records::Control {
            scope: Scope::Global,
            kill_switch: false,
            until: None,
            by: Some(a.by.clone()),
            reload_policy: true,
        },
        a.format,
    ))?;
    println!(
        "policy reload requested ({n} partition(s) of {})",
        a.kafka.topics().control
    );
    Ok(0)
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCmd {
    /// Print audit records as they arrive; `--verify` checks each
    /// service's hash chain.
    Tail(AuditTailArgs),
    /// Replay every partition's journal through the core and check that
    /// it gives the audit records on the audit topic, byte for byte. Exit
    /// 0 when identical, 1 at the first divergence (printed).
    Verify(AuditVerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct AuditVerifyArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The policy file the engine ran with.
    #[arg(long, env = "SELFHEAL_POLICY")]
    pub policy: PathBuf,
    /// The guarantee the engine ran with: `exactly_once` journals and
    /// audit records are read committed-only.
    #[arg(
        long = "processing-guarantee",
        env = "SELFHEAL_PROCESSING_GUARANTEE",
        value_enum,
        default_value = "exactly_once"
    )]
    pub guarantee: Guarantee,
}

pub fn audit_verify(a: AuditVerifyArgs) -> anyhow::Result<i32> {
    use selfheal::live::verify;
    let policy = load_policy(&a.policy)?;
    let committed = a.guarantee == Guarantee::ExactlyOnce;
    let topics = a.kafka.topics();
    // The journal first: every batch's outputs are produced before its
    // journal records, so what the journal holds is on the audit topic.
    let replayed = verify::replay_journals(&a.kafka, &policy, committed)
        .with_context(|| format!("replaying the journals of {}", topics.journal))?;
    let (recorded, undecodable) = verify::read_audit_topic(&a.kafka, committed)
        .with_context(|| format!("reading {}", topics.audit))?;
    // Under at_least_once, records an engine decided and then stopped
    // before journaling are decided again after them: superseded.
    let c = if committed {
        verify::compare(&replayed.audits, &recorded)
    } else {
        verify::compare_superseding(&replayed.audits, &recorded)
    };
    for u in &undecodable {
        println!("UNREADABLE {u}");
    }
    println!(
        "replayed {} journal entries of {} partitions ({} dead-lettered records left out, {} policy reloads) starting with policy {}",
        replayed.entries,
        replayed.partitions,
        replayed.dead_lettered,
        replayed.reloads,
        policy.version
    );
    if let Some(first) = c.divergences.first() {
        println!("DIVERGED: {first}");
        println!(
            "{} of {} chains diverge; {} records identical before the first divergence of each",
            c.divergences.len(),
            c.chains,
            c.matched
        );
        return Ok(1);
    }
    println!(
        "verified {} chains, {} audit records identical to the replay ({} exact repeats on {})",
        c.chains, c.matched, c.repeats, topics.audit
    );
    if c.superseded > 0 {
        println!(
            "{} records on {} superseded: decided by an engine that stopped before journaling \
             them, and decided again after them from the journal",
            c.superseded, topics.audit
        );
    }
    Ok(if undecodable.is_empty() { 0 } else { 1 })
}

#[derive(Debug, clap::Args)]
pub struct AuditTailArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Check every service's hash chain; a break is reported and the exit
    /// code is 1.
    #[arg(long)]
    pub verify: bool,
    /// Stop at the end of the topic instead of following it.
    #[arg(long)]
    pub no_follow: bool,
    /// Only this service's records.
    #[arg(long)]
    pub service: Option<String>,
    /// One JSON object per line instead of the readable form.
    #[arg(long)]
    pub json: bool,
}

pub fn audit(cmd: AuditCmd) -> anyhow::Result<i32> {
    let a = match cmd {
        AuditCmd::Tail(a) => a,
        AuditCmd::Verify(a) => return audit_verify(a),
    };
    let rt = runtime()?;
    let stop = stop_on_signal(&rt, "no more records are printed");
    let topic = a.kafka.topics().audit;
    let mut v = ChainVerifier::default();
    let mut broken = 0u64;
    let mut bad = 0u64;
    tools::scan_topic_from(&a.kafka, &topic, !a.no_follow, Some(&stop), |m| {
        let kind = wire::header(m.headers(), wire::KIND_HEADER);
        let audit = match wire::decode_output(kind.or(Some("audit")), m.payload().unwrap_or(&[])) {
            Ok(Output::Audit(x)) => x,
            Ok(_) => return true,
            Err(e) => {
                bad += 1;
                eprintln!(
                    "{topic}[{}]@{}: undecodable: {e}",
                    m.partition(),
                    m.offset()
                );
                return true;
            }
        };
        let mut mark = "";
        if a.verify {
            match v.check(&audit) {
                Ok(Link::Ok) => mark = " ✓",
                Ok(Link::Duplicate) => mark = " (repeat)",
                Ok(Link::Redecided) => {
                    mark = " ✓ (decided again: the engine before stopped unjournaled)"
                }
                Err(e) => {
                    broken += 1;
                    eprintln!(
                        "CHAIN BROKEN at {topic}[{}]@{}: {e}",
                        m.partition(),
                        m.offset()
                    );
                }
            }
        }
        if a.service.as_deref().is_none_or(|s| s == audit.service) {
            if a.json {
                println!("{}", serde_json::to_string(&audit).unwrap_or_default());
            } else {
                println!("{}{mark}", tools::pretty_audit(&audit));
            }
        }
        true
    })?;
    if a.verify {
        eprintln!(
            "verified {} audit record(s), {} repeat(s), {} decided again, {broken} break(s), {bad} undecodable",
            v.verified, v.duplicates, v.redecided
        );
        return Ok(if broken > 0 || bad > 0 { 1 } else { 0 });
    }
    Ok(0)
}

#[derive(Debug, clap::Subcommand)]
pub enum BridgeCmd {
    /// Receive Alertmanager webhooks and publish every alert.
    Alertmanager(BridgeArgs),
}

#[derive(Debug, clap::Args)]
pub struct BridgeArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Address to listen on, e.g. 0.0.0.0:9095.
    #[arg(long, default_value = "127.0.0.1:9095")]
    pub listen: String,
}

pub fn bridge(cmd: BridgeCmd) -> anyhow::Result<i32> {
    let BridgeCmd::Alertmanager(a) = cmd;
    let rt = runtime()?;
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind(&a.listen)
            .await
            .with_context(|| format!("listening on {}", a.listen))?;
        eprintln!(
            "selfheal bridge: Alertmanager webhooks on http://{} -> {}",
            l.local_addr()?,
            a.kafka.topics().alerts
        );
        tools::bridge(a.kafka, l, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        anyhow::Ok(())
    })?;
    Ok(0)
}

#[derive(Debug, clap::Subcommand)]
pub enum TopicsCmd {
    /// Create every topic selfheal uses (existing ones are kept).
    Create(TopicsArgs),
}

#[derive(Debug, clap::Args)]
pub struct TopicsArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Partitions of each topic; all input topics need the same count.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
}

/// Creates every topic of `kafka`'s prefix on the embedded broker
/// (librdkafka's mock cluster, which has no CreateTopics API).
pub fn create_embedded_topics<C: rdkafka::ClientContext>(
    cluster: &rdkafka::mocking::MockCluster<'_, C>,
    kafka: &KafkaArgs,
    partitions: i32,
) -> anyhow::Result<()> {
    for t in kafka.topics().all() {
        cluster
            .create_topic(t, partitions, 1)
            .with_context(|| format!("creating {t}"))?;
    }
    Ok(())
}

pub fn topics(cmd: TopicsCmd) -> anyhow::Result<i32> {
    let TopicsCmd::Create(a) = cmd;
    let rt = runtime()?;
    rt.block_on(selfheal::live::create_topics(&a.kafka, a.partitions))?;
    println!(
        "topics ready on {} ({} partitions each): {}",
        a.kafka.brokers,
        a.partitions,
        a.kafka.topics().all().join(" ")
    );
    Ok(0)
}

#[derive(Debug, clap::Subcommand)]
pub enum JournalCmd {
    /// Write a partition's journal as a replay file: the records its core
    /// consumed, at the event time it used, with its clock ticks.
    /// `selfheal replay` of that file reproduces the partition's outputs.
    Export(JournalExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct JournalExportArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The partition.
    #[arg(long)]
    pub partition: i32,
    /// Where to write the replay lines (default stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The guarantee the engine ran with: `exactly_once` journals are read
    /// committed-only.
    #[arg(
        long = "processing-guarantee",
        value_enum,
        default_value = "exactly_once"
    )]
    pub guarantee: Guarantee,
}

pub fn journal(cmd: JournalCmd) -> anyhow::Result<i32> {
    use std::io::Write;
    let JournalCmd::Export(a) = cmd;
    let mut out: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let (mut lines, mut dropped, mut reloads) = (0u64, 0u64, 0u64);
    let mut err = None;
    selfheal::live::journal::read(
        &a.kafka,
        "selfheal-tools",
        a.partition,
        a.guarantee == Guarantee::ExactlyOnce,
        |e| match selfheal::live::journal::replay_line(&e) {
            None if matches!(e, selfheal::live::journal::Entry::Policy { .. }) => reloads += 1,
            Some(l) => {
                if err.is_none() {
                    err = writeln!(out, "{l}").err();
                }
                lines += 1;
            }
            None => dropped += 1,
        },
    )?;
    if let Some(e) = err {
        return Err(e).context("writing the replay file");
    }
    out.flush()?;
    eprintln!(
        "journal {}[{}]: {lines} record(s) and tick(s), {dropped} dead-lettered record(s) left out",
        a.kafka.topics().journal,
        a.partition
    );
    if reloads > 0 {
        eprintln!(
            "warning: {reloads} policy reload(s) in the journal are not in the replay file; replay it in pieces, one per policy"
        );
    }
    Ok(0)
}
