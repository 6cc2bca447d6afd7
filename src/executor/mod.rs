//! Action runners: given one decoded [`Command`], carry it out and report
//! an [`Outcome`]. The Kafka side (consuming commands, deduplicating by
//! command id, publishing results) is built on top of [`run`].
//!
//! Action kinds:
//!
//! * `exec` — runs `cmd.args` as an argument vector, never through a
//!   shell: `args[0]` is the program (looked up on `PATH` when it has no
//!   `/`), the rest are its arguments, one each, verbatim. Exit status 0 is
//!   success. When the handler file sets `exec_allow`, `args[0]` must be on
//!   that list.
//! * `http` — a request to `params.url`, or to `cmd.target` when there is
//!   no `url` param. `params.method` (default POST; GET, POST, PUT, PATCH,
//!   DELETE), `params.body` (default empty), `params["header.NAME"]` as
//!   header `NAME`, `params.expect_status` (`200`, `2xx` (default),
//!   `200,204`, `2xx,304`).
//! * `probe` — a GET of `params.url` or `cmd.target`, with
//!   `params.expect_status` (default `2xx`), an optional
//!   `params.expect_body` substring, and `header.NAME` params.
//! * `k8s.rollout_restart`, `k8s.scale`, `k8s.delete_pod` — Kubernetes API
//!   calls on target `NAMESPACE/NAME`; see the `k8s` module.
//! * anything else (`restart`, `scale`, `failover`, `cache_invalidate`, …)
//!   — the [`Handler`] configured for that kind in [`Handlers`], or the
//!   default handler.
//!
//! The command's `timeout` (`30s`, `1m`, …; [`Runner::default_timeout`]
//! when empty or unreadable) bounds the whole action: a child process is
//! killed when it passes, an HTTP exchange abandoned. [`run`] never fails
//! and never panics on bad input: every problem is an [`Outcome`] with a
//! short, truncated, human-readable `detail`.
//!
//! Only plain `http://` is supported for now: the crate builds reqwest
//! without TLS, so an `https://` URL fails with a connection error until a
//! `tls` feature enables reqwest's TLS backend. Redirects are not followed
//! (a 3xx is reported as such) and proxy environment variables are ignored
//! unless a client configured otherwise is given to [`Runner::with_client`].
//!
//! The command's `deadline` (latest start) is not checked here; the caller
//! decides whether a command is still due before calling [`run`].

mod actions;
mod capture;
pub mod handlers;
mod http;
pub mod k8s;
mod process;
pub mod template;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::records::{ActionResult, Command, ResultStatus};
use crate::time::Timestamp;

pub use handlers::{
    ExecHandler, Handler, HandlerError, Handlers, HttpHandler, SpecError, BUILTIN_KINDS,
};
pub use k8s::K8sSettings;
pub use template::{RenderError, Template, TemplateSyntaxError, UrlTemplate, UrlTemplateError};

/// Output and body bytes kept for a detail, by default.
pub const DEFAULT_MAX_OUTPUT: usize = 4096;

/// Timeout for a command whose `timeout` is empty or unreadable, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How one command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: ResultStatus,
    pub detail: String,
    /// State the action replaced (see [`ActionResult::previous`]).
    pub previous: BTreeMap<String, String>,
}

impl Outcome {
    pub fn succeeded(detail: impl Into<String>) -> Outcome {
        Outcome {
            status: ResultStatus::Succeeded,
            detail: detail.into(),
            previous: BTreeMap::new(),
        }
    }

    pub fn failed(detail: impl Into<String>) -> Outcome {
        Outcome {
            status: ResultStatus::Failed,
            detail: detail.into(),
            previous: BTreeMap::new(),
        }
    }

    pub fn timed_out(detail: impl Into<String>) -> Outcome {
        Outcome {
            status: ResultStatus::TimedOut,
            detail: detail.into(),
            previous: BTreeMap::new(),
        }
    }

    /// The result record for the command with id `command_id`.
    pub fn to_result(&self, command_id: &str, at: Option<Timestamp>) -> ActionResult {
        ActionResult {
            command_id: command_id.to_string(),
            status: self.status,
            detail: self.detail.clone(),
            at,
            previous: self.previous.clone(),
        }
    }
}

/// Why a [`Runner`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// What [`run`] needs: an HTTP client, the handlers and the limits.
#[derive(Debug, Clone)]
pub struct Runner {
    client: reqwest::Client,
    handlers: Handlers,
    max_output: usize,
    default_timeout: Duration,
    k8s: Arc<k8s::K8s>,
}

impl Runner {
    /// A runner with its own HTTP client (no redirects, no proxy) and the
    /// default limits.
    pub fn new(handlers: Handlers) -> Result<Runner, ExecutorError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(ExecutorError::Client)?;
        Ok(Runner::with_client(client, handlers))
    }

    /// A runner with the given HTTP client and the default limits.
    pub fn with_client(client: reqwest::Client, handlers: Handlers) -> Runner {
        Runner {
            client,
            handlers,
            max_output: DEFAULT_MAX_OUTPUT,
            default_timeout: DEFAULT_TIMEOUT,
            k8s: Arc::default(),
        }
    }

    /// How Kubernetes actions reach the cluster. The client itself is
    /// built on the first Kubernetes command.
    pub fn k8s(mut self, settings: K8sSettings) -> Runner {
        self.k8s = Arc::new(k8s::K8s::new(settings));
        self
    }

    /// Bytes of stdout, stderr or response body kept for a detail.
    pub fn max_output(mut self, bytes: usize) -> Runner {
        self.max_output = bytes;
        self
    }

    /// The timeout for commands without a readable `timeout`.
    pub fn default_timeout(mut self, timeout: Duration) -> Runner {
        self.default_timeout = timeout;
        self
    }

    pub fn handlers(&self) -> &Handlers {
        &self.handlers
    }

    /// The command's `timeout`, or the default when it is empty, zero or
    /// not a duration.
    pub fn timeout_for(&self, cmd: &Command) -> Duration {
        let t = cmd.timeout.trim();
        if t.is_empty() {
            return self.default_timeout;
        }
        match crate::time::Duration::parse(t) {
            Ok(d) if d.millis() > 0 => Duration::from_millis(d.millis().unsigned_abs()),
            _ => {
                tracing::warn!(
                    command = %cmd.id,
                    timeout = %cmd.timeout,
                    default = %fmt_duration(self.default_timeout),
                    "unreadable command timeout; using the default"
                );
                self.default_timeout
            }
        }
    }
}

/// Why an action did not succeed; turned into an [`Outcome`] by [`run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ActionError {
    Failed(String),
    TimedOut(String),
}

/// Runs one command and reports how it ended. Never fails: errors of any
/// kind come back as a `failed` or `timed_out` outcome.
pub async fn run(cmd: &Command, ctx: &Runner) -> Outcome {
    let timeout = ctx.timeout_for(cmd);
    let mut previous = BTreeMap::new();
    let result = match cmd.action.as_str() {
        kind if kind.starts_with("k8s.") => {
            match tokio::time::timeout(timeout, k8s::run(cmd, &ctx.k8s)).await {
                Ok(Ok((detail, prev))) => {
                    previous = prev;
                    Ok(detail)
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(ActionError::TimedOut(format!(
                    "timed out after {}; the Kubernetes API call was abandoned",
                    fmt_duration(timeout)
                ))),
            }
        }
        "exec" => actions::exec(cmd, ctx, timeout).await,
        "http" => actions::http(cmd, ctx, timeout).await,
        "probe" => actions::probe(cmd, ctx, timeout).await,
        kind => match ctx.handlers.get(kind) {
            Some(h) => actions::handler(cmd, h, ctx, timeout).await,
            None => Err(ActionError::Failed(format!(
                "no handler configured for action kind {kind}"
            ))),
        },
    };
    let mut outcome = match result {
        Ok(detail) => Outcome::succeeded(detail),
        Err(ActionError::Failed(d)) => Outcome::failed(d),
        Err(ActionError::TimedOut(d)) => Outcome::timed_out(d),
    };
    outcome.previous = previous;
    tracing::info!(
        command = %cmd.id,
        action = %cmd.action,
        target = %cmd.target,
        status = outcome.status.as_str(),
        detail = %outcome.detail,
        "action finished"
    );
    outcome
}

/// `30s`, `1m`, `1500ms`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    crate::time::Duration(ms).to_string()
}
