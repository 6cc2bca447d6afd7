//! Handlers: how this executor carries out action kinds it has no built-in
//! runner for (`restart`, `scale`, `failover`, `cache_invalidate`, …).
//!
//! The handler file (YAML):
//!
//! ```yaml
//! default: {http: {url: "http://127.0.0.1:9000/actions/{{action}}"}}   # optional
//! handlers:
//!   restart: {exec: {argv: ["systemctl", "restart", "{{target}}.service"]}}
//!   scale:   {http: {url: "http://autoscaler.local/scale/{{target}}", method: POST}}
//! exec_allow: ["systemctl", "kubectl"]                                   # optional
//! ```
//!
//! A handler is a map with exactly one key:
//!
//! * `http: {url, method}` — sends the command as JSON to `url` (`method`
//!   defaults to POST; GET, POST, PUT, PATCH, DELETE). Placeholders may
//!   appear in the path, query and fragment, never in the scheme or host;
//!   their values are percent-encoded.
//! * `exec: {argv}` — runs the argument vector without a shell; each
//!   element is templated on its own and stays one argument. `argv[0]`
//!   must be a literal program name.
//!
//! Placeholders: `{{id}}`, `{{action}}`, `{{target}}`, `{{service}}`,
//! `{{runbook}}`, `{{incident}}`, `{{params.NAME}}`.
//!
//! `exec`, `http` and `probe` are built-in kinds and cannot be given a
//! handler. `exec_allow`, when present, lists the only programs an `exec`
//! command may run (its `args[0]`, compared as written).

use std::collections::BTreeMap;
use std::path::Path;

use reqwest::Method;
use yaml_rust2::{Yaml, YamlLoader};

use super::http;
use super::template::{Template, TemplateSyntaxError, UrlTemplate, UrlTemplateError};
use crate::yaml::{kind, place, present, Map};

/// Action kinds with a built-in runner.
pub const BUILTIN_KINDS: &[&str] = &["exec", "http", "probe"];

/// How one action kind is carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    Http(HttpHandler),
    Exec(ExecHandler),
}

/// Sends the command as JSON to a templated URL; success is a 2xx status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpHandler {
    pub url: UrlTemplate,
    pub method: Method,
}

/// Runs a templated argument vector; success is exit status 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecHandler {
    pub argv: Vec<Template>,
}

/// Why a handler definition is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Url(#[from] UrlTemplateError),
    #[error(transparent)]
    Template(#[from] TemplateSyntaxError),
    #[error("invalid HTTP method {0:?} (expected one of GET, POST, PUT, PATCH, DELETE)")]
    Method(String),
    #[error("argv is empty")]
    EmptyArgv,
    #[error("argv[0] must be a literal program name, not a template: {0:?}")]
    ProgramTemplate(String),
    #[error("argv[0] is an empty string")]
    EmptyProgram,
    #[error("`{0}` is a built-in action kind and cannot have a handler")]
    Builtin(String),
}

impl Handler {
    /// An HTTP handler; `method` is case-insensitive.
    pub fn http(url: &str, method: &str) -> Result<Handler, SpecError> {
        let url = UrlTemplate::parse(url)?;
        let method = http::method(method).ok_or_else(|| SpecError::Method(method.to_string()))?;
        Ok(Handler::Http(HttpHandler { url, method }))
    }

    /// An exec handler.
    pub fn exec<S: AsRef<str>>(argv: &[S]) -> Result<Handler, SpecError> {
        let argv = argv
            .iter()
            .map(|a| Template::parse(a.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let program = argv.first().ok_or(SpecError::EmptyArgv)?;
        if !program.is_literal() {
            return Err(SpecError::ProgramTemplate(program.as_str().to_string()));
        }
        if program.as_str().is_empty() {
            return Err(SpecError::EmptyProgram);
        }
        Ok(Handler::Exec(ExecHandler { argv }))
    }
}

/// Why a handler file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("{file}: cannot read the handler file: {source}")]
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
    #[error("default handler URL: {0}")]
    DefaultUrl(#[source] UrlTemplateError),
}

/// The handler configuration of one executor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handlers {
    /// Used for every non-built-in kind without its own handler.
    pub default: Option<Handler>,
    /// By action kind.
    pub kinds: BTreeMap<String, Handler>,
    /// When set, the only programs `exec` commands may run.
    pub exec_allow: Option<Vec<String>>,
}

impl Handlers {
    /// No handlers and no allow-list: only `exec`, `http` and `probe` run.
    pub fn new() -> Handlers {
        Handlers::default()
    }

    /// Every non-built-in kind goes to `POST {base}/{kind}` (kind
    /// percent-encoded), e.g. base `http://127.0.0.1:9000/actions`.
    pub fn with_default_url(base: &str) -> Result<Handlers, HandlerError> {
        let url = UrlTemplate::action_under(base).map_err(HandlerError::DefaultUrl)?;
        Ok(Handlers {
            default: Some(Handler::Http(HttpHandler {
                url,
                method: Method::POST,
            })),
            ..Handlers::default()
        })
    }

    /// Adds or replaces the handler for `kind`. Built-in kinds are refused.
    pub fn set(&mut self, kind: &str, handler: Handler) -> Result<(), SpecError> {
        if BUILTIN_KINDS.contains(&kind) || kind.starts_with("k8s.") {
            return Err(SpecError::Builtin(kind.to_string()));
        }
        self.kinds.insert(kind.to_string(), handler);
        Ok(())
    }

    /// The handler for a non-built-in `kind`.
    pub fn get(&self, kind: &str) -> Option<&Handler> {
        if BUILTIN_KINDS.contains(&kind) || kind.starts_with("k8s.") {
            return None;
        }
        self.kinds.get(kind).or(self.default.as_ref())
    }

    /// Reads a handler file (format in the module documentation).
    pub fn load(path: impl AsRef<Path>) -> Result<Handlers, HandlerError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| HandlerError::Read {
            file: file.clone(),
            source,
        })?;
        Handlers::parse(&text, &file)
    }

    /// Parses handler YAML; `file` names the source in errors.
    pub fn parse(text: &str, file: &str) -> Result<Handlers, HandlerError> {
        let docs = YamlLoader::load_from_str(text).map_err(|e| HandlerError::Syntax {
            file: file.to_string(),
            line: e.marker().line(),
            col: e.marker().col() + 1,
            message: e.info().to_string(),
        })?;
        let cx = Cx { file };
        let root = match docs.as_slice() {
            [] => return Ok(Handlers::default()),
            [root] => root,
            _ => return Err(cx.err("", "a handler file holds one YAML document")),
        };
        if matches!(root, Yaml::Null) {
            return Ok(Handlers::default());
        }
        let top = cx.map(root, "", &["default", "handlers", "exec_allow"])?;
        let mut out = Handlers::default();
        if let Some(d) = present(top.get("default")) {
            out.default = Some(cx.handler(d, "default")?);
        }
        if let Some(h) = present(top.get("handlers")) {
            let Yaml::Hash(entries) = h else {
                return Err(cx.err("handlers", format!("expected a map, found {}", kind(h))));
            };
            for (k, v) in entries {
                let name = cx.string(k, "handlers")?;
                let path = format!("handlers.{name}");
                if name.trim().is_empty() {
                    return Err(cx.err(&path, "an action kind must not be empty"));
                }
                if BUILTIN_KINDS.contains(&name.as_str()) {
                    return Err(builtin_error(file, &path, &name));
                }
                out.kinds.insert(name, cx.handler(v, &path)?);
            }
        }
        if let Some(a) = present(top.get("exec_allow")) {
            let Yaml::Array(items) = a else {
                return Err(cx.err("exec_allow", format!("expected a list, found {}", kind(a))));
            };
            let mut allow = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let p = cx.string(item, &format!("exec_allow[{i}]"))?;
                if p.is_empty() {
                    return Err(cx.err(&format!("exec_allow[{i}]"), "empty program name"));
                }
                allow.push(p);
            }
            out.exec_allow = Some(allow);
        }
        Ok(out)
    }
}

fn builtin_error(file: &str, path: &str, kind: &str) -> HandlerError {
    HandlerError::Invalid {
        file: file.to_string(),
        path: path.to_string(),
        message: SpecError::Builtin(kind.to_string()).to_string(),
    }
}

/// Readers that name the file and the key path in their errors.
struct Cx<'f> {
    file: &'f str,
}

impl Cx<'_> {
    fn err(&self, path: &str, message: impl Into<String>) -> HandlerError {
        HandlerError::Invalid {
            file: self.file.to_string(),
            path: place(path),
            message: message.into(),
        }
    }

    fn map<'y>(&self, y: &'y Yaml, path: &str, allowed: &[&str]) -> Result<Map<'y>, HandlerError> {
        let Yaml::Hash(h) = y else {
            return Err(self.err(path, format!("expected a map, found {}", kind(y))));
        };
        let mut entries = Vec::with_capacity(h.len());
        for (k, v) in h {
            let key = self.string(k, path)?;
            if !allowed.contains(&key.as_str()) {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                return Err(self.err(
                    &here,
                    format!("unknown key `{key}` (expected {})", allowed.join(", ")),
                ));
            }
            entries.push((key, v));
        }
        Ok(Map(entries))
    }

    /// A scalar as text: strings as they are, numbers and booleans as written.
    fn string(&self, y: &Yaml, path: &str) -> Result<String, HandlerError> {
        match y {
            Yaml::String(s) | Yaml::Real(s) => Ok(s.clone()),
            Yaml::Integer(i) => Ok(i.to_string()),
            Yaml::Boolean(b) => Ok(b.to_string()),
            other => Err(self.err(path, format!("expected a string, found {}", kind(other)))),
        }
    }

    fn handler(&self, y: &Yaml, path: &str) -> Result<Handler, HandlerError> {
        let Yaml::Hash(h) = y else {
            return Err(self.err(
                path,
                format!(
                    "expected a map with one key, `http` or `exec`, found {}",
                    kind(y)
                ),
            ));
        };
        let mut entries = h.iter();
        let (Some((k, v)), None) = (entries.next(), entries.next()) else {
            return Err(self.err(
                path,
                format!(
                    "a handler has exactly one key, `http` or `exec`; found {}",
                    h.len()
                ),
            ));
        };
        let name = self.string(k, path)?;
        let here = format!("{path}.{name}");
        let spec = |r: Result<Handler, SpecError>| r.map_err(|e| self.err(&here, e.to_string()));
        match name.as_str() {
            "http" => {
                let m = self.map(v, &here, &["url", "method"])?;
                let url = match present(m.get("url")) {
                    Some(u) => self.string(u, &format!("{here}.url"))?,
                    None => return Err(self.err(&here, "missing `url`")),
                };
                let method = match present(m.get("method")) {
                    Some(x) => self.string(x, &format!("{here}.method"))?,
                    None => "POST".to_string(),
                };
                spec(Handler::http(&url, &method))
            }
            "exec" => {
                let m = self.map(v, &here, &["argv"])?;
                let Some(argv) = present(m.get("argv")) else {
                    return Err(self.err(&here, "missing `argv`"));
                };
                let Yaml::Array(items) = argv else {
                    return Err(self.err(
                        &format!("{here}.argv"),
                        format!("expected a list of strings, found {}", kind(argv)),
                    ));
                };
                let argv = items
                    .iter()
                    .enumerate()
                    .map(|(i, a)| self.string(a, &format!("{here}.argv[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                spec(Handler::exec(&argv))
            }
            other => Err(self.err(
                &here,
                format!("unknown handler kind `{other}` (expected `http` or `exec`)"),
            )),
        }
    }
}
