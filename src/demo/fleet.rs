//! The fleet supervisor: starts service instances, runs the action handler
//! API the executor calls, proxies admin calls to services whose instances
//! move between ports, generates load and runs the fault schedule.
//!
//! Supervisor HTTP API (on `127.0.0.1`, see [`Fleet::supervisor_url`]):
//! * `POST /actions/{kind}` — kind is `restart`, `scale`, `failover` or
//!   `cache_invalidate`; the body is a remediation command (`target`,
//!   `params`, other fields ignored). Answers `{"detail": "…"}` with 200 on
//!   success, 400 for bad parameters, 404 for an unknown kind or target and
//!   500 when the action failed.
//! * `POST /svc/{target}/{path…}` — forwards the request to `/{path…}` of
//!   every running instance of service `target`, or of instance `target`
//!   (`search-1`), and answers `{"detail": "…"}`: 200 when every instance
//!   answered 2xx, 502 otherwise. Admin operations such as
//!   `/admin/rebalance` act on service-wide state, so every instance gets
//!   them.
//! * `GET /svc/{target}/{path…}` — forwards to the first running instance
//!   and relays its status and body.
//! * `GET /fleet` — every instance's [`InstanceStatus`] as JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};

use super::faults::{Fault, ScheduledFault};
use super::http::{Answer, Client};
use super::service::{serve_instance, Role, ServiceExit, ServiceOpts, ServiceTuning};
use super::{DemoError, FleetEvent};

/// How instances are started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceLauncher {
    /// A child process: `program args… --service NAME --instance N --port 0
    /// [--role ROLE] [--fault KIND…] --exit-with-stdin [tuning flags]`. The
    /// child must print `listening 127.0.0.1:PORT` on a stdout line
    /// (earlier lines are skipped), exit with code 137 when OOM killed and
    /// exit when its stdin pipe closes.
    Process { program: PathBuf, args: Vec<String> },
    /// A task on the current tokio runtime serving the same endpoints, for
    /// tests and for running without the `selfheal` binary.
    InProcess,
}

impl InstanceLauncher {
    /// `selfheal demo-service` from the running executable.
    pub fn current_exe() -> Result<InstanceLauncher, DemoError> {
        let program = std::env::current_exe()
            .map_err(|e| DemoError::io("cannot locate the current executable", e))?;
        Ok(InstanceLauncher::Process {
            program,
            args: vec!["demo-service".to_string()],
        })
    }
}

/// One service of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    /// Instances started at the beginning.
    pub instances: u32,
    /// Instance 0 is the primary and the others are replicas; traffic goes
    /// to the primary only.
    pub replicated: bool,
}

impl ServiceSpec {
    pub fn new(name: &str, instances: u32) -> ServiceSpec {
        ServiceSpec {
            name: name.to_string(),
            instances,
            replicated: false,
        }
    }

    /// A primary (instance 0) with one replica (instance 1).
    pub fn primary_replica(name: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.to_string(),
            instances: 2,
            replicated: true,
        }
    }
}

/// What [`Fleet::start`] starts.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    pub services: Vec<ServiceSpec>,
    pub launcher: InstanceLauncher,
    pub tuning: ServiceTuning,
    /// Requests per second the load generator sends to each service's
    /// `/work`, spread over its instances; 0 turns load off.
    pub load_per_service: f64,
    /// How long a new instance may take to listen and answer `/health`.
    pub startup_timeout: Duration,
    /// The most instances `scale` starts for one service.
    pub max_instances: u32,
}

/// Requests per second per service in the demo.
pub const DEFAULT_LOAD_PER_SERVICE: f64 = 30.0;

impl FleetConfig {
    /// The demo's fleet: checkout, search, orders (primary and replica),
    /// catalog, recommendations, orders-db and inventory.
    pub fn demo(launcher: InstanceLauncher) -> FleetConfig {
        FleetConfig {
            services: FleetConfig::demo_services(),
            launcher,
            tuning: ServiceTuning::default(),
            load_per_service: DEFAULT_LOAD_PER_SERVICE,
            startup_timeout: Duration::from_secs(10),
            max_instances: 8,
        }
    }

    pub fn demo_services() -> Vec<ServiceSpec> {
        vec![
            ServiceSpec::new("checkout", 1),
            ServiceSpec::new("search", 1),
            ServiceSpec::primary_replica("orders"),
            ServiceSpec::new("catalog", 1),
            ServiceSpec::new("recommendations", 1),
            ServiceSpec::new("orders-db", 1),
            ServiceSpec::new("inventory", 1),
        ]
    }

    fn validate(&self) -> Result<(), DemoError> {
        let mut seen = BTreeSet::new();
        for s in &self.services {
            let valid_name = !s.name.is_empty()
                && s.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid_name {
                return Err(DemoError::Config(format!(
                    "service name {:?} must be lowercase letters, digits and '-'",
                    s.name
                )));
            }
            if !seen.insert(s.name.as_str()) {
                return Err(DemoError::Config(format!(
                    "service {} listed twice",
                    s.name
                )));
            }
            if s.instances == 0 || s.instances > self.max_instances {
                return Err(DemoError::Config(format!(
                    "service {} needs 1 to {} instances",
                    s.name, self.max_instances
                )));
            }
            if s.replicated && s.instances < 2 {
                return Err(DemoError::Config(format!(
                    "service {} needs a primary and at least one replica",
                    s.name
                )));
            }
        }
        for (a, b) in seen.iter().flat_map(|a| seen.iter().map(move |b| (a, b))) {
            // `orders` and `orders-1` would make `orders-1` ambiguous
            // between a service and an instance.
            if let Some(rest) = b.strip_prefix(a).and_then(|r| r.strip_prefix('-')) {
                if rest.parse::<u32>().is_ok() {
                    return Err(DemoError::Config(format!(
                        "service {b} looks like an instance of {a}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Lifecycle state of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum InstanceState {
    Running,
    /// Being stopped by the supervisor.
    Stopping,
    /// Ended without being stopped (a crash, e.g. code 137 after an OOM
    /// kill), or stopped and not yet replaced. `code` is the exit code, or
    /// 128 + signal for a process killed by a signal; `None` when the
    /// supervisor stopped it.
    Exited {
        code: Option<i32>,
    },
}

/// One instance as the supervisor sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceStatus {
    pub service: String,
    /// `checkout-0`.
    pub name: String,
    pub index: u32,
    pub role: Option<Role>,
    pub port: u16,
    /// Process id; `None` for in-process instances.
    pub pid: Option<u32>,
    #[serde(flatten)]
    pub state: InstanceState,
}

impl InstanceStatus {
    /// Base URL, e.g. `http://127.0.0.1:4567`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The body of every action handler answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResponse {
    pub detail: String,
}

/// The running fleet. Dropping it kills every instance and stops every
/// background task; [`Fleet::shutdown`] does the same and waits for the
/// instances to exit.
pub struct Fleet {
    inner: Arc<Inner>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

pub(crate) struct Inner {
    launcher: InstanceLauncher,
    tuning: ServiceTuning,
    startup_timeout: Duration,
    max_instances: u32,
    pub(crate) client: Client,
    table: Mutex<BTreeMap<String, ServiceEntry>>,
    service_locks: BTreeMap<String, tokio::sync::Mutex<()>>,
    events: Mutex<Option<mpsc::Sender<FleetEvent>>>,
    tasks: Mutex<Vec<AbortHandle>>,
    generation: AtomicU64,
}

struct ServiceEntry {
    spec: ServiceSpec,
    slots: BTreeMap<u32, Slot>,
    fleet_faults: BTreeSet<Fault>,
}

struct Slot {
    name: String,
    role: Option<Role>,
    port: u16,
    pid: Option<u32>,
    generation: u64,
    state: InstanceState,
    /// Sending or dropping it kills the instance.
    kill: Option<oneshot::Sender<()>>,
    exit: watch::Receiver<Option<Exited>>,
}

#[derive(Debug, Clone, Copy)]
struct Exited {
    code: Option<i32>,
}

struct Launched {
    port: u16,
    pid: Option<u32>,
    kill: oneshot::Sender<()>,
    exit: watch::Receiver<Option<Exited>>,
}

const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

impl Fleet {
    /// Starts every instance (waiting until each answers `/health`), the
    /// supervisor API and, when configured, the load generator.
    pub async fn start(cfg: FleetConfig) -> Result<Fleet, DemoError> {
        cfg.validate()?;
        let table = cfg
            .services
            .iter()
            .map(|spec| {
                let entry = ServiceEntry {
                    spec: spec.clone(),
                    slots: BTreeMap::new(),
                    fleet_faults: BTreeSet::new(),
                };
                (spec.name.clone(), entry)
            })
            .collect();
        let service_locks = cfg
            .services
            .iter()
            .map(|s| (s.name.clone(), tokio::sync::Mutex::new(())))
            .collect();
        let inner = Arc::new(Inner {
            launcher: cfg.launcher.clone(),
            tuning: cfg.tuning,
            startup_timeout: cfg.startup_timeout,
            max_instances: cfg.max_instances,
            client: Client::new()?,
            table: Mutex::new(table),
            service_locks,
            events: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
        });
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| DemoError::io("cannot bind the supervisor API", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| DemoError::io("cannot read the supervisor address", e))?;
        let (stop, mut stop_rx) = watch::channel(false);
        // From here on, dropping `fleet` on an error cleans up.
        let fleet = Fleet { inner, addr, stop };
        let app = api_router(fleet.inner.clone());
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_rx.wait_for(|stopped| *stopped).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!("supervisor API stopped: {e}");
            }
        });
        fleet.inner.track(server.abort_handle());
        for spec in &cfg.services {
            for index in 0..spec.instances {
                let role = spec.replicated.then_some(if index == 0 {
                    Role::Primary
                } else {
                    Role::Replica
                });
                fleet.inner.spawn_slot(&spec.name, index, role).await?;
            }
        }
        if cfg.load_per_service > 0.0 {
            let load = tokio::spawn(super::load::run(fleet.inner.clone(), cfg.load_per_service));
            fleet.inner.track(load.abort_handle());
        }
        Ok(fleet)
    }

    /// The supervisor's base URL, e.g. `http://127.0.0.1:4100`.
    pub fn supervisor_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The action handler API: `POST {handler_url}/{kind}`.
    pub fn handler_url(&self) -> String {
        format!("http://{}/actions", self.addr)
    }

    /// The stable proxy base for a service (or instance):
    /// `POST {proxy_url}/admin/rebalance` reaches every running instance
    /// wherever restarts have moved it. Prefer this over
    /// [`Fleet::instance_url`] in actions.
    pub fn proxy_url(&self, target: &str) -> String {
        format!("http://{}/svc/{target}", self.addr)
    }

    /// The base URL of the service's first running instance that answers
    /// `/health` with 200, or else of its first running instance. Ports
    /// change on restart, so the URL is only good until then.
    pub async fn instance_url(&self, service: &str) -> Result<String, DemoError> {
        let (service, index) = self.inner.resolve(service)?;
        let running = self.inner.running(&service, index);
        for slot in &running {
            let health = format!("{}/health", slot.url());
            if let Ok(answer) = self.inner.client.get(&health, ADMIN_TIMEOUT).await {
                if answer.status == 200 {
                    return Ok(slot.url());
                }
            }
        }
        running
            .first()
            .map(InstanceStatus::url)
            .ok_or_else(|| DemoError::Action(format!("no running instance of {service}")))
    }

    /// Every instance, by service and index.
    pub fn status(&self) -> Vec<InstanceStatus> {
        self.inner.snapshot()
    }

    /// Injects a fault (a [`Fault`] name) into every running instance of a
    /// service, or into one instance. Fleet-level faults injected into a
    /// service are also given to every instance started later, until
    /// cleared; `clear` clears them. Returns each instance's answer.
    pub async fn inject(&self, target: &str, fault: &str) -> Result<String, DemoError> {
        self.inner.inject(target, fault).await
    }

    /// Clears every fault of a service (or instance).
    pub async fn clear(&self, target: &str) -> Result<String, DemoError> {
        self.inner.inject(target, Fault::Clear.as_str()).await
    }

    /// Runs an action as `POST /actions/{kind}` does; returns its detail.
    pub async fn act(
        &self,
        kind: &str,
        target: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<String, DemoError> {
        self.inner.act(kind, target, params).await
    }

    /// Starts the monitor: every `interval` it scrapes each instance and
    /// sends metric samples and alert transitions on `tx`. Fleet notes
    /// (crashes, restarts, scaling, failovers) go to `tx` from now on too.
    pub fn monitor(&self, interval: Duration, tx: mpsc::Sender<FleetEvent>) {
        *lock(&self.inner.events) = Some(tx.clone());
        let task = tokio::spawn(super::monitor::run(self.inner.clone(), interval, tx));
        self.inner.track(task.abort_handle());
    }

    /// Runs a fault schedule in the background, with offsets counted from
    /// now: at each step emits its change event, injects its fault and
    /// emits a note. The task ends after the last step.
    pub fn run_schedule(
        &self,
        schedule: Vec<ScheduledFault>,
        tx: mpsc::Sender<FleetEvent>,
    ) -> JoinHandle<()> {
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut schedule = schedule;
            schedule.sort_by_key(|s| s.at);
            for step in schedule {
                tokio::time::sleep_until(start + step.at).await;
                if let Some(change) = &step.change {
                    let event = serde_json::json!({
                        "service": step.service,
                        "kind": change.kind,
                        "state": change.state,
                        "id": change.id,
                        "at": super::now_rfc3339(),
                    });
                    if tx.send(FleetEvent::Change(event)).await.is_err() {
                        return;
                    }
                }
                let (fault, service) = (&step.fault, &step.service);
                let outcome = if fault.is_empty() {
                    String::new()
                } else {
                    match inner.inject(service, fault).await {
                        Ok(_) if fault == Fault::Clear.as_str() => {
                            format!(" (cleared the faults of {service})")
                        }
                        Ok(_) => format!(" (injected {fault} into {service})"),
                        Err(e) => format!(" (injecting {fault} into {service} failed: {e})"),
                    }
                };
                let note = format!("{}{outcome}", step.note);
                if tx.send(FleetEvent::Note(note)).await.is_err() {
                    return;
                }
            }
        });
        self.inner.track(task.abort_handle());
        task
    }

    /// Kills every instance, waits for them to exit and stops the
    /// background tasks.
    pub async fn shutdown(self) {
        let stopping: Vec<_> = {
            let mut table = lock(&self.inner.table);
            table
                .values_mut()
                .flat_map(|entry| entry.slots.values_mut())
                .filter_map(|slot| {
                    let kill = slot.kill.take()?;
                    slot.state = InstanceState::Stopping;
                    Some((kill, slot.exit.clone()))
                })
                .collect()
        };
        let mut exits = Vec::new();
        for (kill, exit) in stopping {
            let _ = kill.send(());
            exits.push(exit);
        }
        for mut exit in exits {
            let _ = tokio::time::timeout(STOP_TIMEOUT, exit.wait_for(Option::is_some)).await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        {
            let mut table = lock(&self.inner.table);
            for slot in table.values_mut().flat_map(|e| e.slots.values_mut()) {
                // Dropping the sender kills the instance.
                slot.kill = None;
            }
        }
        for task in lock(&self.inner.tasks).drain(..) {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent between statements; a panic
    // elsewhere must not take the supervisor down.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn track(&self, task: AbortHandle) {
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    pub(crate) async fn note(&self, text: String) {
        let tx = lock(&self.events).clone();
        if let Some(tx) = tx {
            let _ = tx.send(FleetEvent::Note(text)).await;
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<InstanceStatus> {
        let table = lock(&self.table);
        table
            .iter()
            .flat_map(|(service, entry)| {
                entry.slots.iter().map(move |(index, slot)| InstanceStatus {
                    service: service.clone(),
                    name: slot.name.clone(),
                    index: *index,
                    role: slot.role,
                    port: slot.port,
                    pid: slot.pid,
                    state: slot.state,
                })
            })
            .collect()
    }

    pub(crate) fn replicated_services(&self) -> BTreeSet<String> {
        lock(&self.table)
            .values()
            .filter(|e| e.spec.replicated)
            .map(|e| e.spec.name.clone())
            .collect()
    }

    /// Per service, the ports traffic goes to: the running primary of a
    /// replicated service, every running instance of the others.
    pub(crate) fn load_targets(&self) -> Vec<(String, Vec<u16>)> {
        let table = lock(&self.table);
        table
            .iter()
            .map(|(service, entry)| {
                let ports = entry
                    .slots
                    .values()
                    .filter(|s| s.state == InstanceState::Running)
                    .filter(|s| !entry.spec.replicated || s.role == Some(Role::Primary))
                    .map(|s| s.port)
                    .collect();
                (service.clone(), ports)
            })
            .collect()
    }

    /// A service name, or an instance name `SERVICE-N` of an existing
    /// instance.
    fn resolve(&self, target: &str) -> Result<(String, Option<u32>), DemoError> {
        let table = lock(&self.table);
        if table.contains_key(target) {
            return Ok((target.to_string(), None));
        }
        if let Some((service, index)) = target.rsplit_once('-') {
            if let (Some(entry), Ok(index)) = (table.get(service), index.parse::<u32>()) {
                if entry.slots.contains_key(&index) {
                    return Ok((service.to_string(), Some(index)));
                }
            }
        }
        Err(DemoError::UnknownTarget(target.to_string()))
    }

    /// Running instances of a service, or the one instance when `index`.
    fn running(&self, service: &str, index: Option<u32>) -> Vec<InstanceStatus> {
        self.snapshot()
            .into_iter()
            .filter(|s| s.service == service && index.is_none_or(|i| s.index == i))
            .filter(|s| s.state == InstanceState::Running)
            .collect()
    }

    async fn lock_service(&self, service: &str) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.service_locks.get(service) {
            Some(m) => Some(m.lock().await),
            None => None,
        }
    }

    async fn launch(&self, opts: ServiceOpts) -> Result<Launched, DemoError> {
        match &self.launcher {
            InstanceLauncher::InProcess => {
                let listener = TcpListener::bind(("127.0.0.1", 0))
                    .await
                    .map_err(|e| DemoError::io("cannot bind an instance port", e))?;
                let port = listener
                    .local_addr()
                    .map_err(|e| DemoError::io("cannot read an instance address", e))?
                    .port();
                let (kill, kill_rx) = oneshot::channel::<()>();
                let (exit_tx, exit) = watch::channel(None);
                let task = tokio::spawn(async move {
                    let killed = async move {
                        let _ = kill_rx.await;
                    };
                    let code = match serve_instance(listener, opts, killed).await {
                        Ok(ServiceExit::Shutdown) => None,
                        Ok(other) => Some(other.exit_code()),
                        Err(e) => {
                            tracing::warn!("in-process instance failed: {e}");
                            Some(1)
                        }
                    };
                    let _ = exit_tx.send(Some(Exited { code }));
                });
                self.track(task.abort_handle());
                Ok(Launched {
                    port,
                    pid: None,
                    kill,
                    exit,
                })
            }
            InstanceLauncher::Process { program, args } => {
                self.launch_process(program, args, opts).await
            }
        }
    }

    async fn launch_process(
        &self,
        program: &PathBuf,
        args: &[String],
        opts: ServiceOpts,
    ) -> Result<Launched, DemoError> {
        let name = opts.instance_name();
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .args(opts.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| DemoError::Spawn {
                program: program.display().to_string(),
                source,
            })?;
        let pid = child.id();
        // Held until the instance is stopped: if the supervisor dies
        // without cleaning up, the pipe closes and the instance exits.
        let stdin = child.stdin.take();
        let startup = |reason: String| DemoError::Startup {
            instance: name.clone(),
            reason,
        };
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| startup("no stdout pipe".to_string()))?;
        if let Some(stderr) = child.stderr.take() {
            let name = name.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(instance = %name, "{line}");
                }
            });
        }
        let mut lines = BufReader::new(stdout).lines();
        let listening = tokio::time::timeout(self.startup_timeout, async {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        if let Some(port) = parse_listening(&line) {
                            return Ok(port);
                        }
                    }
                    Ok(None) => return Err("exited before listening".to_string()),
                    Err(e) => return Err(format!("cannot read its stdout: {e}")),
                }
            }
        })
        .await;
        let port = match listening {
            Ok(Ok(port)) => port,
            Ok(Err(reason)) => return Err(startup(reason)),
            Err(_) => {
                return Err(startup(format!(
                    "no `listening` line within {:?}",
                    self.startup_timeout
                )))
            }
        };
        // Keep the pipe drained so the child never blocks on stdout.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (kill, kill_rx) = oneshot::channel::<()>();
        let (exit_tx, exit) = watch::channel(None);
        let task = tokio::spawn(async move {
            let ended = tokio::select! {
                status = child.wait() => Some(status),
                _ = kill_rx => None,
            };
            drop(stdin);
            let code = match ended {
                Some(Ok(status)) => exit_code(status),
                Some(Err(_)) => None,
                None => {
                    let _ = child.kill().await;
                    None
                }
            };
            let _ = exit_tx.send(Some(Exited { code }));
        });
        self.track(task.abort_handle());
        Ok(Launched {
            port,
            pid,
            kill,
            exit,
        })
    }

    /// Starts instance `index` of `service` with the service's fleet-level
    /// faults, puts it in the table (replacing what was there) and waits
    /// until it answers `/health`. Returns its pid and port.
    async fn spawn_slot(
        self: &Arc<Self>,
        service: &str,
        index: u32,
        role: Option<Role>,
    ) -> Result<(Option<u32>, u16), DemoError> {
        let faults = {
            let table = lock(&self.table);
            let entry = table
                .get(service)
                .ok_or_else(|| DemoError::UnknownTarget(service.to_string()))?;
            entry
                .fleet_faults
                .iter()
                .map(|f| f.as_str().to_string())
                .collect()
        };
        let opts = ServiceOpts {
            service: service.to_string(),
            instance: index,
            port: 0,
            role,
            faults,
            exit_with_stdin: matches!(self.launcher, InstanceLauncher::Process { .. }),
            tuning: self.tuning,
        };
        let name = opts.instance_name();
        let launched = self.launch(opts).await?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let (port, pid) = (launched.port, launched.pid);
        {
            let mut table = lock(&self.table);
            let entry = table
                .get_mut(service)
                .ok_or_else(|| DemoError::UnknownTarget(service.to_string()))?;
            entry.slots.insert(
                index,
                Slot {
                    name: name.clone(),
                    role,
                    port,
                    pid,
                    generation,
                    state: InstanceState::Running,
                    kill: Some(launched.kill),
                    exit: launched.exit.clone(),
                },
            );
        }
        let reporter = tokio::spawn(report_exit(
            self.clone(),
            service.to_string(),
            index,
            generation,
            launched.exit,
        ));
        self.track(reporter.abort_handle());
        if let Err(reason) = self.wait_answering(port).await {
            self.stop_slot(service, index).await;
            return Err(DemoError::Startup {
                instance: name,
                reason,
            });
        }
        Ok((pid, port))
    }

    async fn wait_answering(&self, port: u16) -> Result<(), String> {
        let url = format!("http://127.0.0.1:{port}/health");
        let deadline = tokio::time::Instant::now() + self.startup_timeout;
        loop {
            let last = match self.client.get(&url, Duration::from_secs(1)).await {
                Ok(_) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "/health did not answer within {:?}: {last}",
                    self.startup_timeout
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills a running instance and waits for it to exit. Returns false
    /// when it was not running.
    async fn stop_slot(&self, service: &str, index: u32) -> bool {
        let stopping = {
            let mut table = lock(&self.table);
            let slot = table.get_mut(service).and_then(|e| e.slots.get_mut(&index));
            match slot {
                Some(slot) if slot.state == InstanceState::Running => {
                    slot.state = InstanceState::Stopping;
                    Some((slot.kill.take(), slot.exit.clone()))
                }
                _ => None,
            }
        };
        let Some((kill, mut exit)) = stopping else {
            return false;
        };
        if let Some(kill) = kill {
            let _ = kill.send(());
        }
        let _ = tokio::time::timeout(STOP_TIMEOUT, exit.wait_for(Option::is_some)).await;
        true
    }

    async fn post_admin(&self, port: u16, path: &str, body: Vec<u8>) -> Result<Answer, DemoError> {
        let url = format!("http://127.0.0.1:{port}{path}");
        self.client.post(&url, body, ADMIN_TIMEOUT).await
    }

    async fn inject(&self, target: &str, fault: &str) -> Result<String, DemoError> {
        let fault = Fault::parse(fault)?;
        let (service, index) = self.resolve(target)?;
        let _guard = self.lock_service(&service).await;
        if index.is_none() {
            let mut table = lock(&self.table);
            if let Some(entry) = table.get_mut(&service) {
                if fault == Fault::Clear {
                    entry.fleet_faults.clear();
                } else if fault.is_fleet_level() {
                    entry.fleet_faults.insert(fault);
                }
            }
        }
        let running = self.running(&service, index);
        if running.is_empty() {
            return Ok(format!(
                "{target}: no running instance (fault {fault} recorded)"
            ));
        }
        let body = serde_json::json!({ "kind": fault.as_str() }).to_string();
        let mut answers = Vec::new();
        for inst in running {
            let answer = self
                .post_admin(inst.port, "/admin/fault", body.clone().into_bytes())
                .await;
            answers.push(match answer {
                Ok(a) if a.ok() => a.body,
                Ok(a) => format!("{}: answered {} {}", inst.name, a.status, a.body),
                Err(e) => format!("{}: {e}", inst.name),
            });
        }
        Ok(answers.join("; "))
    }

    async fn act(
        self: &Arc<Self>,
        kind: &str,
        target: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<String, DemoError> {
        let outcome = match kind {
            "restart" => self.restart(target).await,
            "scale" => {
                let replicas = params.get("replicas").map(String::as_str);
                self.scale(target, replicas).await
            }
            "failover" => self.failover(target).await,
            "cache_invalidate" => self.cache_invalidate(target).await,
            other => Err(DemoError::UnknownAction(other.to_string())),
        };
        match &outcome {
            Ok(detail) => self.note(detail.clone()).await,
            Err(e) => self.note(format!("{kind} {target} failed: {e}")).await,
        }
        outcome
    }

    async fn restart(self: &Arc<Self>, target: &str) -> Result<String, DemoError> {
        let (service, index) = self.resolve(target)?;
        let _guard = self.lock_service(&service).await;
        let old: Vec<InstanceStatus> = self
            .snapshot()
            .into_iter()
            .filter(|s| s.service == service && index.is_none_or(|i| s.index == i))
            .collect();
        let mut parts = Vec::new();
        for before in old {
            self.stop_slot(&service, before.index).await;
            let (pid, port) = self
                .spawn_slot(&service, before.index, before.role)
                .await
                .map_err(|e| {
                    DemoError::Action(format!("restart of {} failed: {e}", before.name))
                })?;
            let was = match before.state {
                InstanceState::Exited { code: Some(code) } => {
                    format!(
                        "{}, exited with code {code}",
                        describe(before.pid, before.port)
                    )
                }
                _ => describe(before.pid, before.port),
            };
            parts.push(format!(
                "{} ({was} -> {})",
                before.name,
                describe(pid, port)
            ));
        }
        Ok(format!("restarted {}", parts.join(", ")))
    }

    async fn scale(
        self: &Arc<Self>,
        target: &str,
        replicas: Option<&str>,
    ) -> Result<String, DemoError> {
        let (service, index) = self.resolve(target)?;
        if index.is_some() {
            return Err(DemoError::BadParams(format!(
                "scale targets a service, not the instance {target}"
            )));
        }
        let spec = replicas.ok_or_else(|| {
            DemoError::BadParams("params.replicas is required (+N, -N or N)".to_string())
        })?;
        let _guard = self.lock_service(&service).await;
        let (current, replicated, mut next_index) = {
            let table = lock(&self.table);
            let entry = table
                .get(&service)
                .ok_or_else(|| DemoError::UnknownTarget(service.clone()))?;
            let next = entry.slots.keys().next_back().map_or(0, |i| i + 1);
            (entry.slots.len() as u32, entry.spec.replicated, next)
        };
        let asked = parse_replicas(spec, current)?;
        let wanted = asked.clamp(1, self.max_instances);
        if wanted > current {
            for _ in current..wanted {
                let role = replicated.then_some(Role::Replica);
                self.spawn_slot(&service, next_index, role)
                    .await
                    .map_err(|e| DemoError::Action(format!("scaling {service} failed: {e}")))?;
                next_index += 1;
            }
        } else if wanted < current {
            let victims: Vec<u32> = {
                let table = lock(&self.table);
                table
                    .get(&service)
                    .map(|e| {
                        e.slots
                            .iter()
                            .rev()
                            .filter(|(_, s)| s.role != Some(Role::Primary))
                            .map(|(i, _)| *i)
                            .take((current - wanted) as usize)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            for index in victims {
                self.stop_slot(&service, index).await;
                if let Some(entry) = lock(&self.table).get_mut(&service) {
                    entry.slots.remove(&index);
                }
            }
        }
        let now = {
            let table = lock(&self.table);
            table.get(&service).map_or(0, |e| e.slots.len())
        };
        let mut detail = format!("scaled {service} from {current} to {now} instances");
        if asked != wanted {
            detail.push_str(&format!(
                " (asked for {asked}; limits are 1 to {})",
                self.max_instances
            ));
        }
        Ok(detail)
    }

    async fn failover(self: &Arc<Self>, target: &str) -> Result<String, DemoError> {
        let (service, index) = self.resolve(target)?;
        if index.is_some() {
            return Err(DemoError::BadParams(format!(
                "failover targets a service, not the instance {target}"
            )));
        }
        if !self.replicated_services().contains(&service) {
            return Err(DemoError::BadParams(format!(
                "{service} has no primary/replica pair"
            )));
        }
        let _guard = self.lock_service(&service).await;
        let instances: Vec<InstanceStatus> = self
            .snapshot()
            .into_iter()
            .filter(|s| s.service == service)
            .collect();
        let mut promoted = None;
        for replica in instances
            .iter()
            .filter(|s| s.role == Some(Role::Replica) && s.state == InstanceState::Running)
        {
            let health = format!("{}/health", replica.url());
            if matches!(self.client.get(&health, ADMIN_TIMEOUT).await, Ok(a) if a.status == 200) {
                promoted = Some(replica.clone());
                break;
            }
        }
        let promoted = promoted.ok_or_else(|| {
            DemoError::Action(format!("no healthy replica of {service} to promote"))
        })?;
        let mut demoted = Vec::new();
        for primary in instances.iter().filter(|s| s.role == Some(Role::Primary)) {
            let why = if primary.state == InstanceState::Running {
                let health = format!("{}/health", primary.url());
                let why = match self.client.get(&health, ADMIN_TIMEOUT).await {
                    Ok(a) if a.status == 200 => "was healthy".to_string(),
                    Ok(a) => format!("failing: {}", a.body),
                    Err(e) => format!("unreachable: {e}"),
                };
                if let Err(e) = self
                    .post_admin(primary.port, "/admin/demote", Vec::new())
                    .await
                {
                    tracing::warn!("demoting {} failed: {e}", primary.name);
                }
                why
            } else {
                "not running".to_string()
            };
            self.set_role(&service, primary.index, Role::Replica);
            demoted.push(format!("demoted {} ({why})", primary.name));
        }
        let answer = self
            .post_admin(promoted.port, "/admin/promote", Vec::new())
            .await?;
        if !answer.ok() {
            return Err(DemoError::Action(format!(
                "promoting {} failed: {} {}",
                promoted.name, answer.status, answer.body
            )));
        }
        self.set_role(&service, promoted.index, Role::Primary);
        let mut detail = format!(
            "failed over {service}: promoted {} to primary",
            promoted.name
        );
        for d in demoted {
            detail.push_str(", ");
            detail.push_str(&d);
        }
        Ok(detail)
    }

    fn set_role(&self, service: &str, index: u32, role: Role) {
        let mut table = lock(&self.table);
        if let Some(slot) = table.get_mut(service).and_then(|e| e.slots.get_mut(&index)) {
            slot.role = Some(role);
        }
    }

    async fn cache_invalidate(self: &Arc<Self>, target: &str) -> Result<String, DemoError> {
        let (service, index) = self.resolve(target)?;
        let _guard = self.lock_service(&service).await;
        let running = self.running(&service, index);
        if running.is_empty() {
            return Err(DemoError::Action(format!(
                "no running instance of {target}"
            )));
        }
        let mut done = Vec::new();
        for inst in running {
            let answer = self
                .post_admin(inst.port, "/admin/cache/invalidate", Vec::new())
                .await?;
            if !answer.ok() {
                return Err(DemoError::Action(format!(
                    "invalidating the cache of {} failed: {} {}",
                    inst.name, answer.status, answer.body
                )));
            }
            done.push(inst.name);
        }
        Ok(format!("invalidated the cache of {}", done.join(", ")))
    }
}

/// Marks an instance that ended on its own as exited and reports it.
async fn report_exit(
    inner: Arc<Inner>,
    service: String,
    index: u32,
    generation: u64,
    mut exit: watch::Receiver<Option<Exited>>,
) {
    let exited = match exit.wait_for(Option::is_some).await {
        Ok(value) => *value,
        Err(_) => return,
    };
    let Some(exited) = exited else {
        return;
    };
    let crashed = {
        let mut table = lock(&inner.table);
        let slot = table
            .get_mut(&service)
            .and_then(|e| e.slots.get_mut(&index))
            .filter(|s| s.generation == generation);
        match slot {
            Some(slot) => {
                let crashed = slot.state == InstanceState::Running;
                slot.state = InstanceState::Exited { code: exited.code };
                slot.kill = None;
                crashed.then(|| (slot.name.clone(), slot.pid, slot.port))
            }
            None => None,
        }
    };
    if let Some((name, pid, port)) = crashed {
        let how = match exited.code {
            Some(137) => "exited with code 137 (OOM killed)".to_string(),
            Some(code) => format!("exited with code {code}"),
            None => "was killed".to_string(),
        };
        inner
            .note(format!("{name} ({}) {how}", describe(pid, port)))
            .await;
    }
}

fn describe(pid: Option<u32>, port: u16) -> String {
    match pid {
        Some(pid) => format!("pid {pid}, port {port}"),
        None => format!("port {port}"),
    }
}

#[cfg(unix)]
fn exit_code(status: std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s))
}

#[cfg(not(unix))]
fn exit_code(status: std::process::ExitStatus) -> Option<i32> {
    status.code()
}

fn parse_listening(line: &str) -> Option<u16> {
    let addr = line.trim().strip_prefix("listening ")?;
    addr.parse::<SocketAddr>().ok().map(|a| a.port())
}

/// `+N` adds, `-N` removes, `N` sets the count.
fn parse_replicas(spec: &str, current: u32) -> Result<u32, DemoError> {
    let bad = || DemoError::BadParams(format!("replicas {spec:?} is not +N, -N or N"));
    let spec = spec.trim();
    if let Some(n) = spec.strip_prefix('+') {
        let n: u32 = n.parse().map_err(|_| bad())?;
        Ok(current.saturating_add(n))
    } else if let Some(n) = spec.strip_prefix('-') {
        let n: u32 = n.parse().map_err(|_| bad())?;
        Ok(current.saturating_sub(n))
    } else {
        spec.parse().map_err(|_| bad())
    }
}

fn api_router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/actions/{kind}", post(action))
        .route("/svc/{target}/{*path}", get(proxy).post(proxy))
        .route("/fleet", get(fleet_status))
        .with_state(inner)
}

#[derive(Deserialize)]
struct ActionBody {
    target: String,
    #[serde(default)]
    params: BTreeMap<String, serde_json::Value>,
}

fn detail(status: StatusCode, detail: String) -> Response {
    let body = serde_json::to_string(&ActionResponse { detail }).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error_status(e: &DemoError) -> StatusCode {
    match e {
        DemoError::UnknownTarget(_) | DemoError::UnknownAction(_) => StatusCode::NOT_FOUND,
        DemoError::BadParams(_) | DemoError::UnknownFault(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn action(
    State(inner): State<Arc<Inner>>,
    Path(kind): Path<String>,
    body: Bytes,
) -> Response {
    let request: ActionBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return detail(
                StatusCode::BAD_REQUEST,
                format!("the body is not a remediation command with a target: {e}"),
            )
        }
    };
    let mut params = BTreeMap::new();
    for (name, value) in request.params {
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Null => continue,
            other => {
                return detail(
                    StatusCode::BAD_REQUEST,
                    format!("params.{name} must be a string, not {other}"),
                )
            }
        };
        params.insert(name, text);
    }
    match inner.act(&kind, &request.target, &params).await {
        Ok(text) => detail(StatusCode::OK, text),
        Err(e) => detail(error_status(&e), e.to_string()),
    }
}

async fn proxy(
    State(inner): State<Arc<Inner>>,
    method: Method,
    Path((target, path)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (service, index) = match inner.resolve(&target) {
        Ok(t) => t,
        Err(e) => return detail(StatusCode::NOT_FOUND, e.to_string()),
    };
    let running = inner.running(&service, index);
    let Some(first) = running.first() else {
        return detail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no running instance of {target}"),
        );
    };
    let path = format!("/{}", path.trim_start_matches('/'));
    if method == Method::GET {
        let url = format!("{}{path}", first.url());
        return match inner.client.get(&url, ADMIN_TIMEOUT).await {
            Ok(a) => (
                StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY),
                a.body,
            )
                .into_response(),
            Err(e) => detail(StatusCode::BAD_GATEWAY, e.to_string()),
        };
    }
    let mut all_ok = true;
    let mut answers = Vec::new();
    for inst in &running {
        match inner.post_admin(inst.port, &path, body.to_vec()).await {
            Ok(a) => {
                all_ok &= a.ok();
                answers.push(if a.ok() {
                    a.body
                } else {
                    format!("{}: {} {}", inst.name, a.status, a.body)
                });
            }
            Err(e) => {
                all_ok = false;
                answers.push(format!("{}: {e}", inst.name));
            }
        }
    }
    let status = if all_ok {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    detail(status, answers.join("; "))
}

async fn fleet_status(State(inner): State<Arc<Inner>>) -> Response {
    let body = serde_json::to_string(&inner.snapshot()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
