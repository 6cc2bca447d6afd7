//! Action templates: `{{ labels.pod }}` and `{{ annotations.summary }}`,
//! and in a rollback `{{ previous.replicas }}`: a value the result of the
//! command being undone recorded (the state that command replaced).
//!
//! Deliberately not a template language. A placeholder names one label or
//! annotation and is replaced by its raw value in a single pass, so a value
//! that itself looks like a placeholder (or like shell syntax) is inserted
//! verbatim and never interpreted; quoting is the executor's business.
//! Typos such as `{{ lables.pod }}` are load-time errors rather than empty
//! strings at three in the morning.

use std::fmt;

use crate::records::Labels;

use super::matcher::label_name_len;

/// Why a template could not be filled for one incident.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("label `{0}` is missing")]
    MissingLabel(String),
    #[error("annotation `{0}` is missing")]
    MissingAnnotation(String),
    #[error("previous value `{0}` is missing (the result of the command being undone did not record it)")]
    MissingPrevious(String),
    #[error(
        "argument {0:?} starts with the value of `{1}`, which begins with `-` and would be read \
         as an option; refused (put a literal `--` argument before it to allow such values)"
    )]
    OptionLike(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Label(String),
    Annotation(String),
    Previous(String),
}

/// A parsed template and the text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses `s`; the error names the placeholder source it could not read.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| {
                format!(
                    "unclosed `{{{{` in template {s:?} (at `{{{{{}`)",
                    truncate(after, 24)
                )
            })?;
            parts.push(placeholder(after[..close].trim())?);
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

    /// A template that renders to `s` whatever the labels.
    pub fn literal(s: &str) -> Template {
        let parts = if s.is_empty() {
            Vec::new()
        } else {
            vec![Part::Literal(s.to_string())]
        };
        Template {
            source: s.to_string(),
            parts,
        }
    }

    pub fn render(&self, labels: &Labels, annotations: &Labels) -> Result<String, TemplateError> {
        self.render_with(labels, annotations, None)
    }

    /// Renders with the `previous` values of the command a rollback
    /// undoes; without them a `previous.NAME` placeholder is missing.
    pub fn render_with(
        &self,
        labels: &Labels,
        annotations: &Labels,
        previous: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(self.source.len());
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Label(n) => out.push_str(
                    labels
                        .get(n)
                        .ok_or_else(|| TemplateError::MissingLabel(n.clone()))?,
                ),
                Part::Annotation(n) => out.push_str(
                    annotations
                        .get(n)
                        .ok_or_else(|| TemplateError::MissingAnnotation(n.clone()))?,
                ),
                Part::Previous(n) => out.push_str(
                    previous
                        .and_then(|p| p.get(n))
                        .ok_or_else(|| TemplateError::MissingPrevious(n.clone()))?,
                ),
            }
        }
        Ok(out)
    }

    /// The `labels.NAME` or `annotations.NAME` placeholder the template
    /// begins with, if it begins with one.
    pub fn leading_placeholder(&self) -> Option<String> {
        match self.parts.first() {
            Some(Part::Label(n)) => Some(format!("labels.{n}")),
            Some(Part::Annotation(n)) => Some(format!("annotations.{n}")),
            _ => None,
        }
    }

    /// Label names this template reads, each once, in order of appearance.
    pub fn label_refs(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for part in &self.parts {
            if let Part::Label(n) = part {
                if !out.contains(&n.as_str()) {
                    out.push(n);
                }
            }
        }
        out
    }

    /// Annotation names this template reads, each once, in order of appearance.
    pub fn annotation_refs(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for part in &self.parts {
            if let Part::Annotation(n) = part {
                if !out.contains(&n.as_str()) {
                    out.push(n);
                }
            }
        }
        out
    }

    /// `previous` names this template reads, each once, in order of appearance.
    pub fn previous_refs(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for part in &self.parts {
            if let Part::Previous(n) = part {
                if !out.contains(&n.as_str()) {
                    out.push(n);
                }
            }
        }
        out
    }

    /// Whether it renders to its source text whatever the incident.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn placeholder(src: &str) -> Result<Part, String> {
    let bad = || {
        format!("unknown template source `{src}` (expected `labels.NAME`, `annotations.NAME`, or in a rollback `previous.NAME`)")
    };
    let (kind, name) = src.split_once('.').ok_or_else(bad)?;
    if name.is_empty() || label_name_len(name) != name.len() {
        return Err(bad());
    }
    match kind {
        "labels" => Ok(Part::Label(name.to_string())),
        "annotations" => Ok(Part::Annotation(name.to_string())),
        "previous" => Ok(Part::Previous(name.to_string())),
        _ => Err(bad()),
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Template {
        Template::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn renders_labels_and_annotations() {
        let l = Labels::from_pairs([("pod", "web-1"), ("ns", "prod")]);
        let a = Labels::from_pairs([("summary", "OOM")]);
        let tpl = t(
            "kubectl -n {{labels.ns}} delete pod {{ labels.pod }} # {{  annotations.summary  }}",
        );
        assert_eq!(
            tpl.render(&l, &a),
            Ok("kubectl -n prod delete pod web-1 # OOM".to_string())
        );
        assert_eq!(tpl.label_refs(), vec!["ns", "pod"]);
        assert_eq!(tpl.annotation_refs(), vec!["summary"]);
        assert_eq!(
            t("{{ labels.pod }}{{labels.pod}}").label_refs(),
            vec!["pod"]
        );
    }

    #[test]
    fn inserts_raw_values_verbatim() {
        let tpl = t("restart {{ labels.pod }}!");
        for raw in ["$(rm -rf /)", "{{ labels.x }}", "a\"b'c`d", "}}{{", ""] {
            let l = Labels::from_pairs([("pod", raw), ("x", "EXPANDED")]);
            assert_eq!(
                tpl.render(&l, &Labels::new()),
                Ok(format!("restart {raw}!"))
            );
        }
    }

    #[test]
    fn missing_values_are_errors() {
        let tpl = t("{{ labels.pod }}");
        assert_eq!(
            tpl.render(&Labels::new(), &Labels::new()),
            Err(TemplateError::MissingLabel("pod".into()))
        );
        let ann = t("{{ annotations.runbook_url }}");
        let err = ann.render(&Labels::new(), &Labels::new());
        assert_eq!(
            err,
            Err(TemplateError::MissingAnnotation("runbook_url".into()))
        );
        assert_eq!(
            TemplateError::MissingLabel("pod".into()).to_string(),
            "label `pod` is missing"
        );
    }

    #[test]
    fn rejects_unknown_sources() {
        for (src, named) in [
            ("{{ lables.pod }}", "lables.pod"),
            ("{{ .Labels.pod }}", ".Labels.pod"),
            ("{{ labels }}", "labels"),
            ("{{ labels.}}", "labels."),
            ("{{ labels.a-b }}", "labels.a-b"),
            ("{{}}", "``"),
            ("x {{ labels.pod ", "unclosed"),
        ] {
            match Template::parse(src) {
                Ok(_) => panic!("{src:?} parsed"),
                Err(e) => assert!(e.contains(named), "{src:?}: {e:?} lacks {named:?}"),
            }
        }
    }

    #[test]
    fn previous_values_render_only_when_given() {
        let tpl = t("{{ previous.replicas }}");
        assert_eq!(tpl.previous_refs(), vec!["replicas"]);
        assert!(!tpl.is_literal());
        let prev = std::collections::BTreeMap::from([("replicas".to_string(), "3".to_string())]);
        assert_eq!(
            tpl.render_with(&Labels::new(), &Labels::new(), Some(&prev)),
            Ok("3".into())
        );
        assert_eq!(
            tpl.render(&Labels::new(), &Labels::new()),
            Err(TemplateError::MissingPrevious("replicas".into()))
        );
        let empty = std::collections::BTreeMap::new();
        assert_eq!(
            tpl.render_with(&Labels::new(), &Labels::new(), Some(&empty)),
            Err(TemplateError::MissingPrevious("replicas".into()))
        );
    }

    #[test]
    fn literals_and_source() {
        let l = Template::literal("{{ labels.pod }}");
        assert_eq!(
            l.render(&Labels::new(), &Labels::new()),
            Ok("{{ labels.pod }}".into())
        );
        assert!(l.label_refs().is_empty());
        assert_eq!(l.as_str(), "{{ labels.pod }}");
        let p = t("a }} b {{labels.x}}");
        assert_eq!(p.as_str(), "a }} b {{labels.x}}");
        assert_eq!(
            p.render(&Labels::from_pairs([("x", "1")]), &Labels::new()),
            Ok("a }} b 1".into())
        );
    }
}
