//! One demo service instance: a small HTTP server whose behaviour depends
//! on the faults injected into it.
//!
//! Endpoints:
//! * `GET /work` — one unit of user traffic; 200, or 500 / slow under faults.
//! * `GET /health` — `200 ok`, or 503 with the failing reasons.
//! * `GET /metrics` — Prometheus text format.
//! * `POST /admin/fault` with `{"kind": "…"}` — inject a [`Fault`].
//! * `POST /admin/cache/invalidate`, `/admin/promote`, `/admin/demote`,
//!   `/admin/rebalance` — the operations remediation uses.
//! * `GET /admin/state` — role and active faults as JSON.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::future::Future;
use std::io::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};

use super::faults::Fault;
use super::DemoError;

/// Role of an instance of a primary/replica service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

pub const DEFAULT_CAPACITY_RPS: u32 = 15;
pub const DEFAULT_LEAK_BYTES_PER_REQUEST: u64 = 1_310_720;
pub const DEFAULT_MEMORY_LIMIT_BYTES: u64 = 512 * 1024 * 1024;
pub const DEFAULT_SLOW_MS: u64 = 300;
/// Simulated resident memory of a fresh instance.
pub const BASELINE_MEMORY_BYTES: u64 = 64 * 1024 * 1024;

/// How strongly faults bite. The defaults fit the demo's load of 30
/// requests per second per service: under `errors` one instance answers
/// half its requests with 500 and three instances answer none; under
/// `leak` an instance is OOM killed about 12 s later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct ServiceTuning {
    /// Requests per second an instance serves under the `errors` fault.
    #[arg(long, default_value_t = DEFAULT_CAPACITY_RPS)]
    pub capacity_rps: u32,
    /// Simulated memory added by each `/work` request under `leak`.
    #[arg(long, default_value_t = DEFAULT_LEAK_BYTES_PER_REQUEST)]
    pub leak_bytes_per_request: u64,
    /// Simulated memory past which the instance is OOM killed.
    #[arg(long, default_value_t = DEFAULT_MEMORY_LIMIT_BYTES)]
    pub memory_limit_bytes: u64,
    /// Duration of a `/work` request under `slow_dependency`.
    #[arg(long, default_value_t = DEFAULT_SLOW_MS)]
    pub slow_ms: u64,
}

impl Default for ServiceTuning {
    fn default() -> Self {
        ServiceTuning {
            capacity_rps: DEFAULT_CAPACITY_RPS,
            leak_bytes_per_request: DEFAULT_LEAK_BYTES_PER_REQUEST,
            memory_limit_bytes: DEFAULT_MEMORY_LIMIT_BYTES,
            slow_ms: DEFAULT_SLOW_MS,
        }
    }
}

impl ServiceTuning {
    /// Command-line flags for the values that differ from the defaults.
    pub fn to_args(&self) -> Vec<String> {
        let d = ServiceTuning::default();
        let mut args = Vec::new();
        let mut flag = |name: &str, value: u64, default: u64| {
            if value != default {
                args.push(format!("--{name}"));
                args.push(value.to_string());
            }
        };
        flag(
            "capacity-rps",
            u64::from(self.capacity_rps),
            u64::from(d.capacity_rps),
        );
        flag(
            "leak-bytes-per-request",
            self.leak_bytes_per_request,
            d.leak_bytes_per_request,
        );
        flag(
            "memory-limit-bytes",
            self.memory_limit_bytes,
            d.memory_limit_bytes,
        );
        flag("slow-ms", self.slow_ms, d.slow_ms);
        args
    }
}

/// Options of `selfheal demo-service`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ServiceOpts {
    /// Service name, e.g. `checkout`.
    #[arg(long)]
    pub service: String,
    /// Instance number; the instance is named `SERVICE-N`.
    #[arg(long)]
    pub instance: u32,
    /// Port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Role in a primary/replica service.
    #[arg(long, value_enum)]
    pub role: Option<Role>,
    /// A fault active from the start (repeatable).
    #[arg(long = "fault", value_name = "KIND")]
    pub faults: Vec<String>,
    /// Exit when stdin reaches end of file: a supervisor that holds the
    /// other end of a pipe takes its instances down with it, however it
    /// ends.
    #[arg(long)]
    pub exit_with_stdin: bool,
    #[command(flatten)]
    pub tuning: ServiceTuning,
}

impl ServiceOpts {
    pub fn new(service: &str, instance: u32) -> ServiceOpts {
        ServiceOpts {
            service: service.to_string(),
            instance,
            port: 0,
            role: None,
            faults: Vec::new(),
            exit_with_stdin: false,
            tuning: ServiceTuning::default(),
        }
    }

    /// The instance name used in labels and by the supervisor: `checkout-0`.
    pub fn instance_name(&self) -> String {
        format!("{}-{}", self.service, self.instance)
    }

    /// The flags that reproduce these options after `demo-service`.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--service".to_string(),
            self.service.clone(),
            "--instance".to_string(),
            self.instance.to_string(),
            "--port".to_string(),
            self.port.to_string(),
        ];
        if let Some(role) = self.role {
            args.push("--role".to_string());
            args.push(role.as_str().to_string());
        }
        for fault in &self.faults {
            args.push("--fault".to_string());
            args.push(fault.clone());
        }
        if self.exit_with_stdin {
            args.push("--exit-with-stdin".to_string());
        }
        args.extend(self.tuning.to_args());
        args
    }
}

/// How [`serve_instance`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceExit {
    /// The shutdown signal arrived.
    Shutdown,
    /// Simulated memory passed the limit: the process must die with 137.
    OomKilled,
}

impl ServiceExit {
    pub fn exit_code(self) -> i32 {
        match self {
            ServiceExit::Shutdown => 0,
            ServiceExit::OomKilled => 137,
        }
    }
}

/// Runs `selfheal demo-service`: binds 127.0.0.1:`port`, prints
/// `listening 127.0.0.1:PORT` as the first stdout line and serves until
/// SIGINT or SIGTERM (or, with `--exit-with-stdin`, until stdin closes).
/// When the simulated memory passes its limit the process exits at once
/// with code 137, as a kernel OOM kill would end it.
pub async fn run_service(opts: ServiceOpts) -> Result<(), DemoError> {
    let listener = TcpListener::bind(("127.0.0.1", opts.port))
        .await
        .map_err(|e| DemoError::io(format!("cannot bind 127.0.0.1:{}", opts.port), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| DemoError::io("cannot read the bound address", e))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {addr}")
            .and_then(|()| out.flush())
            .map_err(|e| DemoError::io("cannot write to stdout", e))?;
    }
    let watch_stdin = opts.exit_with_stdin;
    let stop = async move {
        if watch_stdin {
            tokio::select! {
                () = termination() => {}
                () = stdin_closed() => {}
            }
        } else {
            termination().await;
        }
    };
    let exit = serve_instance(listener, opts, stop).await?;
    if exit == ServiceExit::OomKilled {
        std::process::exit(exit.exit_code());
    }
    Ok(())
}

async fn stdin_closed() {
    let (tx, rx) = oneshot::channel::<()>();
    // A plain thread: reading stdin blocks.
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 256];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(());
    });
    let _ = rx.await;
}

async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Serves one instance on `listener` until `shutdown` completes or the
/// instance is OOM killed. The listener is closed on return and open
/// connections are told to close, so the instance stops answering as a
/// killed process would.
pub async fn serve_instance(
    listener: TcpListener,
    opts: ServiceOpts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ServiceExit, DemoError> {
    let instance = Arc::new(Instance::new(&opts)?);
    let oom = instance.oom.clone();
    let app = router(instance);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop_rx.await;
    });
    let server = std::future::IntoFuture::into_future(server);
    tokio::pin!(server);
    tokio::pin!(shutdown);
    let exit = tokio::select! {
        result = &mut server => {
            result.map_err(|e| DemoError::io("service stopped", e))?;
            ServiceExit::Shutdown
        }
        () = &mut shutdown => ServiceExit::Shutdown,
        () = oom.notified() => ServiceExit::OomKilled,
    };
    let _ = stop_tx.send(());
    Ok(exit)
}

/// One instance's state, shared by its handlers.
struct Instance {
    service: String,
    name: String,
    tuning: ServiceTuning,
    state: Mutex<InstanceState>,
    oom: Arc<Notify>,
}

struct InstanceState {
    role: Option<Role>,
    faults: BTreeSet<Fault>,
    ok: u64,
    errors: u64,
    duration_sum_us: u64,
    duration_count: u64,
    memory: u64,
    work_seq: u64,
    /// Token bucket enforcing `capacity_rps` under the `errors` fault.
    tokens: f64,
    refilled: Instant,
    oom_killed: bool,
}

impl Instance {
    fn new(opts: &ServiceOpts) -> Result<Instance, DemoError> {
        let mut state = InstanceState {
            role: opts.role,
            faults: BTreeSet::new(),
            ok: 0,
            errors: 0,
            duration_sum_us: 0,
            duration_count: 0,
            memory: BASELINE_MEMORY_BYTES,
            work_seq: 0,
            tokens: 0.0,
            refilled: Instant::now(),
            oom_killed: false,
        };
        for name in &opts.faults {
            state.apply(Fault::parse(name)?, &opts.tuning);
        }
        Ok(Instance {
            service: opts.service.clone(),
            name: opts.instance_name(),
            tuning: opts.tuning,
            state: Mutex::new(state),
            oom: Arc::new(Notify::new()),
        })
    }

    fn state(&self) -> MutexGuard<'_, InstanceState> {
        // A handler that panicked mid-update leaves counters that are still
        // meaningful; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn labels(&self) -> String {
        format!("service=\"{}\",instance=\"{}\"", self.service, self.name)
    }
}

impl InstanceState {
    /// Applies a fault; returns what happened, for the admin response.
    fn apply(&mut self, fault: Fault, tuning: &ServiceTuning) -> String {
        match fault {
            Fault::Clear => {
                self.faults.clear();
                "faults cleared".to_string()
            }
            Fault::PrimaryDown if self.role != Some(Role::Primary) => {
                "primary_down ignored: not the primary".to_string()
            }
            Fault::Errors => {
                self.tokens = burst(tuning);
                self.refilled = Instant::now();
                self.faults.insert(fault);
                format!("fault {fault} active")
            }
            _ => {
                self.faults.insert(fault);
                format!("fault {fault} active")
            }
        }
    }

    /// Takes one request's worth of capacity, refilling at `capacity_rps`.
    fn take_token(&mut self, tuning: &ServiceTuning) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * f64::from(tuning.capacity_rps)).min(burst(tuning));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn health_reasons(&self) -> Vec<&'static str> {
        self.faults
            .iter()
            .filter_map(|f| f.health_reason())
            .collect()
    }
}

fn burst(tuning: &ServiceTuning) -> f64 {
    (f64::from(tuning.capacity_rps) / 3.0).max(1.0)
}

fn router(instance: Arc<Instance>) -> Router {
    Router::new()
        .route("/work", get(work))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/admin/fault", post(inject_fault))
        .route("/admin/cache/invalidate", post(invalidate_cache))
        .route("/admin/promote", post(promote))
        .route("/admin/demote", post(demote))
        .route("/admin/rebalance", post(rebalance))
        .route("/admin/state", get(admin_state))
        .with_state(instance)
}

async fn work(State(inst): State<Arc<Instance>>) -> Response {
    let started = Instant::now();
    let (failure, slow) = {
        let mut s = inst.state();
        if s.oom_killed {
            return (StatusCode::INTERNAL_SERVER_ERROR, "out of memory").into_response();
        }
        s.work_seq += 1;
        if s.faults.contains(&Fault::Leak) {
            s.memory = s.memory.saturating_add(inst.tuning.leak_bytes_per_request);
            if s.memory > inst.tuning.memory_limit_bytes {
                s.oom_killed = true;
                inst.oom.notify_one();
                return (StatusCode::INTERNAL_SERVER_ERROR, "out of memory").into_response();
            }
        }
        let failure = if s.faults.contains(&Fault::PrimaryDown) {
            Some("primary down")
        } else if s.faults.contains(&Fault::CachePoison) && s.work_seq % 5 == 0 {
            Some("stale cache entry")
        } else if s.faults.contains(&Fault::Errors) && !s.take_token(&inst.tuning) {
            Some("overloaded")
        } else {
            None
        };
        (failure, s.faults.contains(&Fault::SlowDependency))
    };
    if slow {
        tokio::time::sleep(Duration::from_millis(inst.tuning.slow_ms)).await;
    }
    let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let mut s = inst.state();
    s.duration_sum_us = s.duration_sum_us.saturating_add(elapsed_us);
    s.duration_count += 1;
    match failure {
        Some(reason) => {
            s.errors += 1;
            (StatusCode::INTERNAL_SERVER_ERROR, reason).into_response()
        }
        None => {
            s.ok += 1;
            (StatusCode::OK, "done").into_response()
        }
    }
}

async fn health(State(inst): State<Arc<Instance>>) -> Response {
    let reasons = inst.state().health_reasons();
    if reasons.is_empty() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, reasons.join("; ")).into_response()
    }
}

async fn metrics(State(inst): State<Arc<Instance>>) -> Response {
    let labels = inst.labels();
    let s = inst.state();
    let mut out = String::new();
    let _ = writeln!(out, "# TYPE http_requests_total counter");
    let _ = writeln!(out, "http_requests_total{{{labels},code=\"200\"}} {}", s.ok);
    let _ = writeln!(
        out,
        "http_requests_total{{{labels},code=\"500\"}} {}",
        s.errors
    );
    let _ = writeln!(out, "# TYPE http_request_duration_seconds summary");
    let _ = writeln!(
        out,
        "http_request_duration_seconds_sum{{{labels}}} {}.{:06}",
        s.duration_sum_us / 1_000_000,
        s.duration_sum_us % 1_000_000
    );
    let _ = writeln!(
        out,
        "http_request_duration_seconds_count{{{labels}}} {}",
        s.duration_count
    );
    let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge");
    let _ = writeln!(
        out,
        "process_resident_memory_bytes{{{labels}}} {}",
        s.memory
    );
    let _ = writeln!(out, "# TYPE cache_poisoned gauge");
    let _ = writeln!(
        out,
        "cache_poisoned{{{labels}}} {}",
        u8::from(s.faults.contains(&Fault::CachePoison))
    );
    if let Some(role) = s.role {
        let _ = writeln!(out, "# TYPE role gauge");
        let _ = writeln!(out, "role{{{labels},role=\"{}\"}} 1", role.as_str());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[derive(serde::Deserialize)]
struct FaultBody {
    kind: String,
}

async fn inject_fault(State(inst): State<Arc<Instance>>, body: Bytes) -> Response {
    let kind = match serde_json::from_slice::<FaultBody>(&body) {
        Ok(b) => b.kind,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("expected {{\"kind\": \"...\"}}: {e}"),
            )
                .into_response()
        }
    };
    match Fault::parse(&kind) {
        Ok(fault) => {
            let detail = inst.state().apply(fault, &inst.tuning);
            (StatusCode::OK, format!("{}: {detail}", inst.name)).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn invalidate_cache(State(inst): State<Arc<Instance>>) -> Response {
    let was = inst.state().faults.remove(&Fault::CachePoison);
    let detail = if was {
        "cache invalidated: stale entries dropped"
    } else {
        "cache invalidated"
    };
    (StatusCode::OK, format!("{}: {detail}", inst.name)).into_response()
}

async fn promote(State(inst): State<Arc<Instance>>) -> Response {
    inst.state().role = Some(Role::Primary);
    (
        StatusCode::OK,
        format!("{}: promoted to primary", inst.name),
    )
        .into_response()
}

async fn demote(State(inst): State<Arc<Instance>>) -> Response {
    inst.state().role = Some(Role::Replica);
    (StatusCode::OK, format!("{}: demoted to replica", inst.name)).into_response()
}

async fn rebalance(State(inst): State<Arc<Instance>>) -> Response {
    let was = inst.state().faults.remove(&Fault::ShardImbalance);
    let detail = if was {
        "shards rebalanced"
    } else {
        "shards already balanced"
    };
    (StatusCode::OK, format!("{}: {detail}", inst.name)).into_response()
}

async fn admin_state(State(inst): State<Arc<Instance>>) -> Response {
    let s = inst.state();
    let body = serde_json::json!({
        "instance": inst.name,
        "role": s.role,
        "faults": s.faults.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
        "memory_bytes": s.memory,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Running {
        base: String,
        client: reqwest::Client,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<Result<ServiceExit, DemoError>>,
    }

    async fn start(opts: ServiceOpts) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_instance(listener, opts, async move {
            let _ = stop_rx.await;
        }));
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        Running {
            base,
            client,
            stop: Some(stop),
            task,
        }
    }

    impl Running {
        async fn get(&self, path: &str) -> (u16, String) {
            let r = self
                .client
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .expect("GET");
            (r.status().as_u16(), r.text().await.expect("body"))
        }

        async fn post(&self, path: &str, body: &str) -> (u16, String) {
            let r = self
                .client
                .post(format!("{}{path}", self.base))
                .body(body.to_string())
                .send()
                .await
                .expect("POST");
            (r.status().as_u16(), r.text().await.expect("body"))
        }
    }

    fn metric(text: &str, line_start: &str) -> String {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or_else(|| panic!("{line_start} in\n{text}"))
            .to_string()
    }

    #[tokio::test]
    async fn serves_work_health_and_prometheus_metrics() {
        let mut opts = ServiceOpts::new("orders", 1);
        opts.role = Some(Role::Replica);
        let svc = start(opts).await;
        for _ in 0..3 {
            assert_eq!(svc.get("/work").await.0, 200);
        }
        assert_eq!(svc.get("/health").await, (200, "ok".to_string()));
        let (code, text) = svc.get("/metrics").await;
        assert_eq!(code, 200);
        let labels = "service=\"orders\",instance=\"orders-1\"";
        assert_eq!(
            metric(
                &text,
                &format!("http_requests_total{{{labels},code=\"200\"}}")
            ),
            "3"
        );
        assert_eq!(
            metric(
                &text,
                &format!("http_requests_total{{{labels},code=\"500\"}}")
            ),
            "0"
        );
        assert_eq!(
            metric(
                &text,
                &format!("http_request_duration_seconds_count{{{labels}}}")
            ),
            "3"
        );
        assert_eq!(
            metric(&text, &format!("process_resident_memory_bytes{{{labels}}}")),
            BASELINE_MEMORY_BYTES.to_string()
        );
        assert_eq!(metric(&text, &format!("cache_poisoned{{{labels}}}")), "0");
        assert_eq!(
            metric(&text, &format!("role{{{labels},role=\"replica\"}}")),
            "1"
        );
        // A replica ignores primary_down; once promoted it takes it.
        let (_, detail) = svc.post("/admin/fault", r#"{"kind":"primary_down"}"#).await;
        assert!(detail.contains("ignored"), "{detail}");
        assert_eq!(svc.get("/health").await.0, 200);
        assert_eq!(svc.post("/admin/promote", "").await.0, 200);
        svc.post("/admin/fault", r#"{"kind":"primary_down"}"#).await;
        assert_eq!(svc.get("/health").await, (503, "primary down".to_string()));
        assert_eq!(svc.get("/work").await.0, 500);
    }

    #[tokio::test]
    async fn admin_endpoints_clear_their_faults() {
        let svc = start(ServiceOpts::new("catalog", 0)).await;
        svc.post("/admin/fault", r#"{"kind":"cache_poison"}"#).await;
        svc.post("/admin/fault", r#"{"kind":"shard_imbalance"}"#)
            .await;
        assert_eq!(
            svc.get("/health").await,
            (503, "stale cache; shard imbalance".to_string())
        );
        let codes: Vec<u16> = {
            let mut v = Vec::new();
            for _ in 0..10 {
                v.push(svc.get("/work").await.0);
            }
            v
        };
        assert_eq!(codes.iter().filter(|c| **c == 500).count(), 2, "{codes:?}");
        let (_, text) = svc.get("/metrics").await;
        assert!(text.contains("cache_poisoned{service=\"catalog\",instance=\"catalog-0\"} 1"));
        svc.post("/admin/cache/invalidate", "").await;
        assert_eq!(
            svc.get("/health").await,
            (503, "shard imbalance".to_string())
        );
        svc.post("/admin/rebalance", "").await;
        assert_eq!(svc.get("/health").await.0, 200);
    }

    #[tokio::test]
    async fn bad_fault_requests_are_refused() {
        let svc = start(ServiceOpts::new("search", 0)).await;
        let (code, detail) = svc.post("/admin/fault", r#"{"kind":"meteor"}"#).await;
        assert_eq!(code, 400);
        assert!(detail.contains("meteor"), "{detail}");
        assert_eq!(svc.post("/admin/fault", "not json").await.0, 400);
        assert_eq!(svc.get("/health").await.0, 200);
    }

    #[tokio::test]
    async fn leak_ends_in_an_oom_exit_and_the_port_closes() {
        let mut opts = ServiceOpts::new("checkout", 0);
        opts.tuning.leak_bytes_per_request = 16 * 1024 * 1024;
        opts.tuning.memory_limit_bytes = BASELINE_MEMORY_BYTES + 64 * 1024 * 1024;
        opts.faults = vec!["leak".to_string()];
        let mut svc = start(opts).await;
        for _ in 0..4 {
            assert_eq!(svc.get("/work").await.0, 200);
        }
        let (_, text) = svc.get("/metrics").await;
        assert!(text.contains(&format!(
            "process_resident_memory_bytes{{service=\"checkout\",instance=\"checkout-0\"}} {}",
            BASELINE_MEMORY_BYTES + 64 * 1024 * 1024
        )));
        let _ = svc.client.get(format!("{}/work", svc.base)).send().await;
        let exit = tokio::time::timeout(Duration::from_secs(10), &mut svc.task)
            .await
            .expect("instance stops")
            .expect("task")
            .expect("serve");
        assert_eq!(exit, ServiceExit::OomKilled);
        assert_eq!(exit.exit_code(), 137);
        let fresh = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        assert!(fresh
            .get(format!("{}/health", svc.base))
            .send()
            .await
            .is_err());
        drop(svc.stop.take());
    }

    #[test]
    fn options_round_trip_through_the_command_line() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            opts: ServiceOpts,
        }
        let mut opts = ServiceOpts::new("orders", 1);
        opts.role = Some(Role::Replica);
        opts.faults = vec!["errors".to_string()];
        opts.exit_with_stdin = true;
        opts.tuning.capacity_rps = 7;
        let args = opts.to_args();
        let parsed = <Cli as clap::Parser>::try_parse_from(
            std::iter::once("demo-service".to_string()).chain(args),
        )
        .expect("parses");
        assert_eq!(parsed.opts, opts);
        // Default tuning adds no flags.
        assert_eq!(
            ServiceOpts::new("checkout", 0).to_args(),
            ["--service", "checkout", "--instance", "0", "--port", "0"]
        );
    }
}
