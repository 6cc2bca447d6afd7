//! The notify configuration file: which sinks, their endpoints, which
//! severities each takes, retries and the dedup window. Secrets are named
//! here (an environment variable or a file), never written here.

use std::fmt;
use std::path::Path;
use std::time::Duration as StdDuration;

use reqwest::Url;
use yaml_rust2::{Yaml, YamlLoader};

use crate::records::Severity;
use crate::yaml::{kind, place, present, Map};

/// PagerDuty Events API v2 endpoint.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// Opsgenie Alert API endpoint (EU accounts: `https://api.eu.opsgenie.com/v2/alerts`).
pub const OPSGENIE_URL: &str = "https://api.opsgenie.com/v2/alerts";

/// A secret value: never printed, not even by `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place it is sent.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where escalations go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SinkKind {
    PagerDuty,
    Opsgenie,
    Slack,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::PagerDuty => "pagerduty",
            SinkKind::Opsgenie => "opsgenie",
            SinkKind::Slack => "slack",
        }
    }
}

impl fmt::Display for SinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One configured sink.
#[derive(Clone)]
pub struct SinkConfig {
    pub kind: SinkKind,
    /// The endpoint; for Slack the webhook URL, which is itself secret.
    pub(crate) url: Url,
    /// PagerDuty's routing key, Opsgenie's API key, Slack's webhook URL.
    pub secret: Secret,
    /// The escalation severities this sink receives.
    pub severities: Vec<Severity>,
    /// Extra Opsgenie tags.
    pub tags: Vec<String>,
}

impl SinkConfig {
    /// A sink from its parts; `url` is the endpoint (PagerDuty, Opsgenie)
    /// or the webhook URL (Slack, then also the secret).
    pub fn new(kind: SinkKind, url: &str, secret: &str) -> Result<SinkConfig, String> {
        let parsed = parse_url(url)?;
        Ok(SinkConfig {
            kind,
            url: parsed,
            secret: Secret::new(secret),
            severities: vec![Severity::Page, Severity::Ticket],
            tags: Vec::new(),
        })
    }

    /// The endpoint as it may be shown: a Slack webhook URL only by its
    /// origin, any URL without user info or query.
    pub fn display_url(&self) -> String {
        let mut shown = format!(
            "{}://{}",
            self.url.scheme(),
            self.url.host_str().unwrap_or("")
        );
        if let Some(p) = self.url.port() {
            shown.push_str(&format!(":{p}"));
        }
        match self.kind {
            SinkKind::Slack => shown.push_str("/…"),
            _ => shown.push_str(self.url.path()),
        }
        shown
    }

    pub fn takes(&self, severity: Severity) -> bool {
        self.severities.contains(&severity)
    }
}

impl fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkConfig")
            .field("kind", &self.kind)
            .field("url", &self.display_url())
            .field("secret", &self.secret)
            .field("severities", &self.severities)
            .field("tags", &self.tags)
            .finish()
    }
}

/// Retries of one delivery: `attempts` in all, waits doubling from
/// `initial` up to `max`, each with jitter (between half and all of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub initial: StdDuration,
    pub max: StdDuration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 6,
            initial: StdDuration::from_secs(1),
            max: StdDuration::from_secs(60),
        }
    }
}

/// The whole notify configuration.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub sinks: Vec<SinkConfig>,
    pub retry: RetryPolicy,
    /// An incident already delivered to a sink is not sent to it again
    /// within this window (unless escalated from ticket to page).
    pub dedup_window: StdDuration,
    /// Time limit of one HTTP request.
    pub timeout: StdDuration,
}

impl NotifyConfig {
    pub fn new(sinks: Vec<SinkConfig>) -> NotifyConfig {
        NotifyConfig {
            sinks,
            retry: RetryPolicy::default(),
            dedup_window: StdDuration::from_secs(3600),
            timeout: StdDuration::from_secs(10),
        }
    }

    /// Reads a config file; secrets come from the environment variables
    /// or files it names.
    pub fn load(path: impl AsRef<Path>) -> Result<NotifyConfig, ConfigError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        NotifyConfig::parse(&text, &file, &|name| std::env::var(name).ok())
    }

    /// Parses config YAML; `file` names the source in errors, `env`
    /// looks up environment variables.
    pub fn parse(
        text: &str,
        file: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<NotifyConfig, ConfigError> {
        let docs = YamlLoader::load_from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_string(),
            line: e.marker().line(),
            col: e.marker().col() + 1,
            message: e.info().to_string(),
        })?;
        let cx = Cx { file, env };
        let root = match docs.as_slice() {
            [root] if !matches!(root, Yaml::Null) => root,
            [] | [_] => return Err(cx.err("", NO_SINK)),
            _ => return Err(cx.err("", "a notify config holds one YAML document")),
        };
        let top = cx.map(
            root,
            "",
            &[
                "pagerduty",
                "opsgenie",
                "slack",
                "retry",
                "dedup_window",
                "timeout",
            ],
        )?;
        let mut cfg = NotifyConfig::new(Vec::new());
        for (kind, secret_key) in [
            (SinkKind::PagerDuty, "routing_key"),
            (SinkKind::Opsgenie, "api_key"),
            (SinkKind::Slack, "webhook_url"),
        ] {
            if let Some(y) = present(top.get(kind.as_str())) {
                cfg.sinks.push(cx.sink(kind, secret_key, y)?);
            }
        }
        if cfg.sinks.is_empty() {
            return Err(cx.err("", NO_SINK));
        }
        if let Some(y) = present(top.get("retry")) {
            let m = cx.map(y, "retry", &["attempts", "initial", "max"])?;
            if let Some(a) = present(m.get("attempts")) {
                cfg.retry.attempts = match a {
                    Yaml::Integer(n) if (1..=100).contains(n) => *n as u32,
                    _ => {
                        return Err(cx.err(
                            "retry.attempts",
                            "expected a whole number from 1 to 100 (attempts in all, the first included)",
                        ))
                    }
                };
            }
            if let Some(d) = present(m.get("initial")) {
                cfg.retry.initial = cx.duration(d, "retry.initial")?;
            }
            if let Some(d) = present(m.get("max")) {
                cfg.retry.max = cx.duration(d, "retry.max")?;
            }
            if cfg.retry.max < cfg.retry.initial {
                return Err(cx.err("retry.max", "must not be shorter than retry.initial"));
            }
        }
        if let Some(d) = present(top.get("dedup_window")) {
            cfg.dedup_window = cx.duration(d, "dedup_window")?;
        }
        if let Some(d) = present(top.get("timeout")) {
            cfg.timeout = cx.duration(d, "timeout")?;
            if cfg.timeout.is_zero() {
                return Err(cx.err("timeout", "must be longer than 0"));
            }
        }
        Ok(cfg)
    }
}

const NO_SINK: &str = "no sink configured: set at least one of pagerduty, opsgenie, slack";

/// Why a notify config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the notify config: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{col}: YAML syntax error: {message}")]
    Syntax {
        file: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{file}: {path}: {message}")]
    Invalid {
        file: String,
        path: String,
        message: String,
    },
}

fn parse_url(s: &str) -> Result<Url, String> {
    let u = Url::parse(s.trim()).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err("expected an http:// or https:// URL".into());
    }
    Ok(u)
}

struct Cx<'a> {
    file: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Cx<'_> {
    fn err(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_string(),
            path: place(path),
            message: message.into(),
        }
    }

    fn map<'y>(&self, y: &'y Yaml, path: &str, allowed: &[&str]) -> Result<Map<'y>, ConfigError> {
        let Yaml::Hash(h) = y else {
            return Err(self.err(path, format!("expected a map, found {}", kind(y))));
        };
        let mut out = Vec::with_capacity(h.len());
        for (k, v) in h {
            let Yaml::String(k) = k else {
                return Err(self.err(path, format!("keys must be strings, found {}", kind(k))));
            };
            if !allowed.contains(&k.as_str()) {
                return Err(self.err(
                    &join(path, k),
                    format!("unknown key; expected one of {}", allowed.join(", ")),
                ));
            }
            out.push((k.clone(), v));
        }
        Ok(Map(out))
    }

    fn string(&self, y: &Yaml, path: &str) -> Result<String, ConfigError> {
        match y {
            Yaml::String(s) => Ok(s.clone()),
            other => Err(self.err(path, format!("expected a string, found {}", kind(other)))),
        }
    }

    fn duration(&self, y: &Yaml, path: &str) -> Result<StdDuration, ConfigError> {
        let s = self.string(y, path)?;
        let d = crate::time::Duration::parse(&s).map_err(|_| {
            self.err(
                path,
                format!("{s:?} is not a duration such as 500ms, 1s, 1m"),
            )
        })?;
        Ok(StdDuration::from_millis(d.millis().max(0) as u64))
    }

    fn sink(&self, kind: SinkKind, secret_key: &str, y: &Yaml) -> Result<SinkConfig, ConfigError> {
        let path = kind.as_str();
        let env_key = format!("{secret_key}_env");
        let file_key = format!("{secret_key}_file");
        let mut allowed = vec![
            env_key.as_str(),
            file_key.as_str(),
            "severities",
            secret_key,
        ];
        if kind != SinkKind::Slack {
            allowed.push("url");
        }
        if kind == SinkKind::Opsgenie {
            allowed.push("tags");
        }
        let m = self.map(y, path, &allowed)?;
        if m.get(secret_key).is_some() {
            return Err(self.err(
                &join(path, secret_key),
                format!(
                    "secrets are not written in the config file; name an environment \
                     variable with {env_key} or a file with {file_key}"
                ),
            ));
        }
        let secret = match (present(m.get(&env_key)), present(m.get(&file_key))) {
            (Some(_), Some(_)) => {
                return Err(self.err(path, format!("give one of {env_key} and {file_key}")))
            }
            (None, None) => {
                return Err(self.err(path, format!("missing {env_key} (or {file_key})")))
            }
            (Some(v), None) => {
                let p = join(path, &env_key);
                let name = self.string(v, &p)?;
                (self.env)(&name)
                    .ok_or_else(|| self.err(&p, format!("environment variable {name} is not set")))?
                    .trim()
                    .to_string()
            }
            (None, Some(v)) => {
                let p = join(path, &file_key);
                let name = self.string(v, &p)?;
                std::fs::read_to_string(&name)
                    .map_err(|e| self.err(&p, format!("cannot read {name}: {e}")))?
                    .trim()
                    .to_string()
            }
        };
        if secret.is_empty() {
            return Err(self.err(path, format!("the {secret_key} is empty")));
        }
        let url = match kind {
            SinkKind::PagerDuty | SinkKind::Opsgenie => {
                let default = if kind == SinkKind::PagerDuty {
                    PAGERDUTY_URL
                } else {
                    OPSGENIE_URL
                };
                let u = match present(m.get("url")) {
                    Some(u) => self.string(u, &join(path, "url"))?,
                    None => default.to_string(),
                };
                parse_url(&u).map_err(|e| self.err(&join(path, "url"), e))?
            }
            // The message must not repeat the URL: it is the secret.
            SinkKind::Slack => parse_url(&secret).map_err(|e| {
                self.err(
                    &join(path, &env_key),
                    format!("the webhook URL is {}", e.replace(&secret, "[redacted]")),
                )
            })?,
        };
        let mut sink = SinkConfig {
            kind,
            url,
            secret: Secret::new(secret),
            severities: vec![Severity::Page, Severity::Ticket],
            tags: Vec::new(),
        };
        if let Some(s) = present(m.get("severities")) {
            let p = join(path, "severities");
            let Yaml::Array(items) = s else {
                return Err(self.err(
                    &p,
                    format!("expected a list, found {}", crate::yaml::kind(s)),
                ));
            };
            sink.severities.clear();
            for (i, item) in items.iter().enumerate() {
                let ip = format!("{p}[{i}]");
                let sev = match self.string(item, &ip)?.as_str() {
                    "page" => Severity::Page,
                    "ticket" => Severity::Ticket,
                    other => {
                        return Err(self.err(
                            &ip,
                            format!("unknown severity {other:?}; expected page or ticket"),
                        ))
                    }
                };
                if !sink.severities.contains(&sev) {
                    sink.severities.push(sev);
                }
            }
            if sink.severities.is_empty() {
                return Err(self.err(
                    &p,
                    "an empty list would send nothing; remove the sink instead",
                ));
            }
        }
        if let Some(t) = present(m.get("tags")) {
            let p = join(path, "tags");
            let Yaml::Array(items) = t else {
                return Err(self.err(
                    &p,
                    format!("expected a list, found {}", crate::yaml::kind(t)),
                ));
            };
            for (i, item) in items.iter().enumerate() {
                sink.tags.push(self.string(item, &format!("{p}[{i}]"))?);
            }
        }
        Ok(sink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PD" => Some("pd-routing-key-123".into()),
            "OG" => Some("og-key-456".into()),
            "SLACK" => Some("https://hooks.slack.com/services/T0/B0/sekrit".into()),
            "BAD_SLACK" => Some("hooks.slack.com/services/T0/B0/sekrit".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<NotifyConfig, ConfigError> {
        NotifyConfig::parse(text, "notify.yaml", &env)
    }

    #[test]
    fn a_full_config_reads_every_sink_with_secrets_from_the_environment() {
        let c = parse(
            "pagerduty: {routing_key_env: PD, url: 'http://127.0.0.1:1/v2/enqueue', severities: [page]}\n\
             opsgenie: {api_key_env: OG, severities: [page, ticket], tags: [team-a]}\n\
             slack: {webhook_url_env: SLACK}\n\
             retry: {attempts: 3, initial: 200ms, max: 2s}\n\
             dedup_window: 30m\n",
        )
        .unwrap();
        assert_eq!(c.sinks.len(), 3);
        assert_eq!(c.sinks[0].secret.expose(), "pd-routing-key-123");
        assert_eq!(c.sinks[0].severities, vec![Severity::Page]);
        assert_eq!(c.sinks[1].url.as_str(), OPSGENIE_URL);
        assert_eq!(c.sinks[1].tags, vec!["team-a".to_string()]);
        assert_eq!(
            c.retry,
            RetryPolicy {
                attempts: 3,
                initial: StdDuration::from_millis(200),
                max: StdDuration::from_secs(2)
            }
        );
        assert_eq!(c.dedup_window, StdDuration::from_secs(1800));
        let shown = format!("{c:?}");
        for s in ["pd-routing-key-123", "og-key-456", "sekrit", "/services/"] {
            assert!(!shown.contains(s), "{s} in {shown}");
        }
        assert!(shown.contains("https://hooks.slack.com/…"), "{shown}");
    }

    #[test]
    fn the_example_config_loads() {
        let text = include_str!("../../examples/notify.yaml");
        let env = |name: &str| match name {
            "SLACK_WEBHOOK_URL" => Some("https://hooks.slack.com/services/T/B/x".to_string()),
            _ => Some("key".to_string()),
        };
        let c = NotifyConfig::parse(text, "examples/notify.yaml", &env).unwrap();
        let kinds: Vec<SinkKind> = c.sinks.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [SinkKind::PagerDuty, SinkKind::Opsgenie, SinkKind::Slack]
        );
        assert_eq!(c.sinks[0].url.as_str(), PAGERDUTY_URL);
        assert_eq!(c.retry, RetryPolicy::default());
    }

    #[test]
    fn bad_configs_are_refused_with_the_place() {
        let cases = [
            (
                "pagerduty: {routing_key: abc}\n",
                "pagerduty.routing_key: secrets are not written",
            ),
            (
                "pagerduty: {routing_key_env: NOPE}\n",
                "pagerduty.routing_key_env: environment variable NOPE is not set",
            ),
            (
                "opsgenie: {api_key_env: OG, severities: [urgent]}\n",
                "opsgenie.severities[0]: unknown severity \"urgent\"",
            ),
            (
                "slack: {webhook_url_env: SLACK, url: x}\n",
                "slack.url: unknown key",
            ),
            (
                "slack: {webhook_url_env: BAD_SLACK}\n",
                "slack.webhook_url_env: the webhook URL is not a URL",
            ),
            (
                "pagerduty: {routing_key_env: PD}\nretry: {attempts: 0}\n",
                "retry.attempts: expected a whole number",
            ),
            (
                "pagerduty: {routing_key_env: PD}\nretry: {initial: soon}\n",
                "retry.initial: \"soon\" is not a duration",
            ),
            ("retry: {attempts: 2}\n", "(top level): no sink configured"),
            ("", "(top level): no sink configured"),
            ("pagerduty: [\n", "notify.yaml:"),
        ];
        for (text, want) in cases {
            let e = parse(text)
                .err()
                .unwrap_or_else(|| panic!("accepted {text:?}"))
                .to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains("sekrit"), "{e}");
        }
    }
}
