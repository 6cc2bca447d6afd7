//! Handler templates: `{{target}}`, `{{params.namespace}}` and friends.
//!
//! A placeholder names one field of the command and is replaced by its
//! value in a single pass: a value that itself contains `{{target}}` is
//! inserted as it is and never expanded again. How a value is inserted
//! depends on where it goes:
//!
//! * into an argument vector element: verbatim, and the element stays one
//!   argument whatever the value holds (spaces, `;`, `$(…)`, quotes);
//! * into a URL: percent-encoded, every byte except the unreserved
//!   characters `A-Z a-z 0-9 - . _ ~`, so a value can add neither a path
//!   segment (`/`), nor a query (`?`, `&`, `=`), nor a fragment (`#`).

use std::fmt;

use crate::records::Command;

/// A command field a placeholder can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    Id,
    Action,
    Target,
    Service,
    Runbook,
    Incident,
    /// `params.NAME`
    Param(String),
}

impl Var {
    fn parse(name: &str) -> Option<Var> {
        Some(match name {
            "id" => Var::Id,
            "action" => Var::Action,
            "target" => Var::Target,
            "service" => Var::Service,
            "runbook" => Var::Runbook,
            "incident" => Var::Incident,
            _ => {
                let p = name.strip_prefix("params.")?;
                if p.is_empty() || p.contains(char::is_whitespace) {
                    return None;
                }
                Var::Param(p.to_string())
            }
        })
    }

    /// The value of this field in `cmd`; `None` for a param it lacks.
    fn value<'c>(&self, cmd: &'c Command) -> Option<&'c str> {
        Some(match self {
            Var::Id => &cmd.id,
            Var::Action => &cmd.action,
            Var::Target => &cmd.target,
            Var::Service => &cmd.service,
            Var::Runbook => &cmd.runbook,
            Var::Incident => &cmd.incident,
            Var::Param(p) => return cmd.params.get(p).map(String::as_str),
        })
    }
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Var::Id => f.write_str("id"),
            Var::Action => f.write_str("action"),
            Var::Target => f.write_str("target"),
            Var::Service => f.write_str("service"),
            Var::Runbook => f.write_str("runbook"),
            Var::Incident => f.write_str("incident"),
            Var::Param(p) => write!(f, "params.{p}"),
        }
    }
}

/// Why a handler template could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateSyntaxError {
    #[error("unclosed `{{{{` in {0:?}")]
    Unclosed(String),
    #[error(
        "unknown placeholder `{{{{{0}}}}}` (expected id, action, target, service, runbook, \
         incident or params.NAME)"
    )]
    Unknown(String),
}

/// Why a template could not be filled from one command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("uses params.{0}, which the command lacks")]
    MissingParam(String),
    #[error(
        "the value of {{{{{0}}}}} ({1:?}) starts with `-` and would be read as an option; \
         refused (put a literal `--` argument before it to allow such values)"
    )]
    OptionLike(Var, String),
    #[error("the rendered URL path has a `.` or `..` segment; refused: {0:?}")]
    DotSegment(String),
    #[error("the rendered URL {0:?} is not valid: {1}")]
    BadUrl(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(Var),
}

/// A parsed handler template and the text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses `{{name}}` placeholders (spaces inside the braces allowed).
    pub fn parse(s: &str) -> Result<Template, TemplateSyntaxError> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| TemplateSyntaxError::Unclosed(s.to_string()))?;
            let name = after[..close].trim();
            let var =
                Var::parse(name).ok_or_else(|| TemplateSyntaxError::Unknown(name.to_string()))?;
            parts.push(Part::Var(var));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Template {
            source: s.to_string(),
            parts,
        })
    }

    /// The text the template was parsed from.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the template has no placeholder.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// The literal text before the first placeholder.
    fn literal_prefix(&self) -> &str {
        match self.parts.first() {
            Some(Part::Literal(l)) => l,
            _ => "",
        }
    }

    /// The template with `value` in place of every placeholder.
    fn stand_in(&self, value: &str) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.as_str(),
                Part::Var(_) => value,
            })
            .collect()
    }

    /// Fills the template, passing each value through `insert`.
    fn render_with(
        &self,
        cmd: &Command,
        mut insert: impl FnMut(&str, &mut String),
    ) -> Result<String, RenderError> {
        let mut out = String::with_capacity(self.source.len());
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Var(v) => {
                    let value = v.value(cmd).ok_or_else(|| match v {
                        Var::Param(name) => RenderError::MissingParam(name.clone()),
                        // Only params can be missing.
                        other => RenderError::MissingParam(other.to_string()),
                    })?;
                    insert(value, &mut out);
                }
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Renders an argument vector: every element separately, values inserted
/// verbatim. Until a literal `--` element, an element that begins with a
/// placeholder whose value begins with `-` is refused, so a target such as
/// `--kubeconfig=/tmp/x` cannot turn into an option of the program.
pub fn render_argv(argv: &[Template], cmd: &Command) -> Result<Vec<String>, RenderError> {
    let mut out = Vec::with_capacity(argv.len());
    let mut options_ended = false;
    for t in argv {
        let rendered = t.render_with(cmd, |v, s| s.push_str(v))?;
        if !options_ended && rendered.starts_with('-') {
            if let Some(Part::Var(v)) = t.parts.first() {
                return Err(RenderError::OptionLike(v.clone(), rendered));
            }
        }
        if t.is_literal() && t.source == "--" {
            options_ended = true;
        }
        out.push(rendered);
    }
    Ok(out)
}

/// Why a URL template is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlTemplateError {
    #[error(transparent)]
    Syntax(#[from] TemplateSyntaxError),
    #[error("{0:?} is not an http:// or https:// URL")]
    Scheme(String),
    #[error(
        "placeholders may appear only in the path, query or fragment, after `scheme://host/`: \
         {0:?}"
    )]
    PlaceholderInAuthority(String),
    #[error("{url:?} is not a valid URL: {reason}")]
    Invalid { url: String, reason: String },
}

/// A URL template whose placeholders are percent-encoded when filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate(Template);

impl UrlTemplate {
    /// Parses and checks a URL template: http or https, a literal host, and
    /// placeholders only after the first `/` of the path.
    pub fn parse(s: &str) -> Result<UrlTemplate, UrlTemplateError> {
        let t = Template::parse(s)?;
        let prefix = t.literal_prefix();
        let lower = prefix.to_ascii_lowercase();
        let after_scheme = if lower.starts_with("http://") {
            &prefix[7..]
        } else if lower.starts_with("https://") {
            &prefix[8..]
        } else {
            return Err(UrlTemplateError::Scheme(s.to_string()));
        };
        // URL parsers end the authority at any of these (`\` counts as `/`
        // in http URLs); it must be complete, and not empty, before the
        // first placeholder.
        let authority = after_scheme
            .find(['/', '?', '#', '\\'])
            .map(|end| &after_scheme[..end]);
        if !t.is_literal() && authority.is_none_or(str::is_empty) {
            return Err(UrlTemplateError::PlaceholderInAuthority(s.to_string()));
        }
        // Check the literal structure with stand-ins for the values, and
        // that what they are cannot move the request to another origin.
        let x = check_url(s, &t.stand_in("x"))?;
        let y = check_url(s, &t.stand_in("y"))?;
        if x.origin() != y.origin() || x.username() != y.username() {
            return Err(UrlTemplateError::PlaceholderInAuthority(s.to_string()));
        }
        Ok(UrlTemplate(t))
    }

    /// `{base}/{{action}}`, with `base` taken literally (braces included).
    pub fn action_under(base: &str) -> Result<UrlTemplate, UrlTemplateError> {
        let base = base.trim_end_matches('/');
        let lower = base.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(UrlTemplateError::Scheme(base.to_string()));
        }
        if base.contains(['?', '#']) {
            return Err(UrlTemplateError::Invalid {
                url: base.to_string(),
                reason: "a base URL has no query or fragment".to_string(),
            });
        }
        check_url(base, &format!("{base}/x"))?;
        Ok(UrlTemplate(Template {
            source: format!("{base}/{{{{action}}}}"),
            parts: vec![Part::Literal(format!("{base}/")), Part::Var(Var::Action)],
        }))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Fills the template with percent-encoded values and parses the result.
    pub fn render(&self, cmd: &Command) -> Result<reqwest::Url, RenderError> {
        let s = self.0.render_with(cmd, percent_encode)?;
        check_dot_segments(&s)?;
        reqwest::Url::parse(&s).map_err(|e| RenderError::BadUrl(s, e.to_string()))
    }
}

impl fmt::Display for UrlTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Parses `probe` (a template's shape) and checks it has a host.
fn check_url(template: &str, probe: &str) -> Result<reqwest::Url, UrlTemplateError> {
    let invalid = |reason: String| UrlTemplateError::Invalid {
        url: template.to_string(),
        reason,
    };
    let url = reqwest::Url::parse(probe).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlTemplateError::Scheme(template.to_string()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host".to_string()));
    }
    Ok(url)
}

/// Appends `value` with every byte but `A-Z a-z 0-9 - . _ ~` as `%XX`.
pub fn percent_encode(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

/// URL parsers resolve `.` and `..` segments (also spelt `%2e`), so a value
/// of `..` would climb out of the path the template fixes; such a URL is
/// refused rather than normalised.
fn check_dot_segments(url: &str) -> Result<(), RenderError> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = match rest.find('/') {
        Some(i) => &rest[i..],
        None => return Ok(()),
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let dotty = path.split('/').any(|seg| {
        let s = seg.to_ascii_lowercase().replace("%2e", ".");
        s == "." || s == ".."
    });
    if dotty {
        return Err(RenderError::DotSegment(url.to_string()));
    }
    Ok(())
}
