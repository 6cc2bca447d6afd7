//! The demo fleet: real local service processes with injected faults, a
//! supervisor whose HTTP action handlers restart, scale, fail over and
//! invalidate caches, and a monitor that plays Prometheus and Alertmanager.
//!
//! * [`service`] — one service instance: an HTTP server with `/work`,
//!   `/health`, `/metrics` and `/admin/*` endpoints, run as
//!   `selfheal demo-service …` ([`run_service`]) or in-process.
//! * [`fleet`] — the supervisor ([`Fleet`]): spawns instances, serves the
//!   action handler API and a per-service proxy, generates load.
//! * [`monitor`] — scrapes every instance, emits metric samples and alert
//!   transitions as [`FleetEvent`]s.
//! * [`faults`] — fault kinds and the demo's fault schedule.
//!
//! Nothing here talks to Kafka: every event leaves over a
//! `tokio::sync::mpsc::Sender<FleetEvent>`.
//!
//! Wiring, as `selfheal demo` does it:
//!
//! ```no_run
//! # async fn wire() -> Result<(), selfheal::demo::DemoError> {
//! use std::time::Duration;
//! use selfheal::demo::{demo_schedule, Fleet, FleetConfig, FleetEvent, InstanceLauncher};
//!
//! let fleet = Fleet::start(FleetConfig::demo(InstanceLauncher::current_exe()?)).await?;
//! let (tx, mut rx) = tokio::sync::mpsc::channel::<FleetEvent>(4096);
//! fleet.monitor(Duration::from_secs(1), tx.clone());
//! let schedule = demo_schedule(Duration::from_secs(120));
//! let _steps = fleet.run_schedule(schedule, tx);
//! // Executors call `POST {fleet.handler_url()}/{kind}`; tier-2 `http`
//! // actions call `POST {fleet.proxy_url("search")}/admin/rebalance`.
//! while let Some(event) = rx.recv().await {
//!     // Metric → metrics topic, Alert → alerts, Change → changes (keyed by
//!     // `event.service()`), Note → the timeline.
//!     # let _ = event; break;
//! }
//! fleet.shutdown().await;
//! # Ok(()) }
//! ```

pub mod faults;
pub mod fleet;
mod http;
mod load;
pub mod monitor;
pub mod service;
#[cfg(test)]
mod tests;

pub use faults::{demo_schedule, ChangeStep, Fault, ScheduledFault};
pub use fleet::{
    ActionResponse, Fleet, FleetConfig, InstanceLauncher, InstanceState, InstanceStatus,
    ServiceSpec,
};
pub use service::{run_service, serve_instance, Role, ServiceExit, ServiceOpts, ServiceTuning};

/// Something the fleet reports to the orchestrator.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetEvent {
    /// A metric sample in the prometheus-kafka-adapter JSON shape.
    Metric(serde_json::Value),
    /// An alert transition in the Alertmanager webhook (v4) alert shape.
    Alert(serde_json::Value),
    /// A change event (`{"service","kind","state","id","at"}`).
    Change(serde_json::Value),
    /// A human-readable fleet happening for the timeline.
    Note(String),
}

impl FleetEvent {
    /// The `service` the event is about, used as the Kafka key.
    pub fn service(&self) -> Option<&str> {
        match self {
            FleetEvent::Metric(v) | FleetEvent::Alert(v) => {
                v.get("labels")?.get("service")?.as_str()
            }
            FleetEvent::Change(v) => v.get("service")?.as_str(),
            FleetEvent::Note(_) => None,
        }
    }
}

/// Why a demo fleet operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("instance {instance} did not come up: {reason}")]
    Startup { instance: String, reason: String },
    #[error("HTTP request to {url} failed: {reason}")]
    Http { url: String, reason: String },
    #[error("unknown target {0:?}")]
    UnknownTarget(String),
    #[error("unknown action {0:?} (expected restart, scale, failover or cache_invalidate)")]
    UnknownAction(String),
    #[error("unknown fault {0:?} (expected one of {list})", list = faults::Fault::NAMES.join(", "))]
    UnknownFault(String),
    #[error("bad parameters: {0}")]
    BadParams(String),
    #[error("{0}")]
    Action(String),
    #[error("invalid fleet configuration: {0}")]
    Config(String),
}

impl DemoError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> DemoError {
        DemoError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The current wall-clock time as an RFC 3339 UTC timestamp with a `Z`.
pub(crate) fn now_rfc3339() -> String {
    crate::time::Timestamp(now_millis()).to_string()
}

pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
