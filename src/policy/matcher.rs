//! Label matchers in Alertmanager's syntax (`env!="dev"`, `code=~"5.."`).
//!
//! Runbooks select incidents with these, and PromQL selectors reuse them for
//! their `{…}` part. Regexes are compiled once, fully anchored, because both
//! Alertmanager and Prometheus treat `=~"5.."` as "the whole value matches",
//! and an unanchored match would let `5..` select `5000`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use regex::Regex;

use crate::records::Labels;

/// How a matcher compares a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    Nre,
}

impl MatchOp {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::Nre => "!~",
        }
    }
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `name op "value"` condition on a label set.
#[derive(Debug, Clone)]
pub struct LabelMatcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    /// Compiled `^(?:value)$`, present for `=~` and `!~` only; shared by
    /// every matcher with the same value (see [`shared`]).
    re: Option<Arc<Regex>>,
}

impl LabelMatcher {
    /// Builds a matcher; a regex that does not compile is an error message.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<LabelMatcher, String> {
        let re = match op {
            MatchOp::Re | MatchOp::Nre => Some(shared(value)?),
            MatchOp::Eq | MatchOp::Ne => None,
        };
        Ok(LabelMatcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            re,
        })
    }

    /// Parses Alertmanager matcher syntax: a label name, an operator and a
    /// value that is either double-quoted (with `\"`, `\\` and `\n` escapes)
    /// or bare up to the end of the text.
    pub fn parse(s: &str) -> Result<LabelMatcher, String> {
        let t = s.trim();
        let name_len = label_name_len(t);
        if name_len == 0 {
            return Err(format!(
                "matcher {s:?} must start with a label name ([a-zA-Z_][a-zA-Z0-9_]*)"
            ));
        }
        let name = &t[..name_len];
        let rest = t[name_len..].trim_start();
        let (op, rest) = split_op(rest).ok_or_else(|| {
            format!("matcher {s:?}: expected one of =, !=, =~, !~ after label name `{name}`")
        })?;
        let rest = rest.trim_start();
        let value = if let Some(quoted) = rest.strip_prefix('"') {
            unquote_alertmanager(quoted).map_err(|e| format!("matcher {s:?}: {e}"))?
        } else if rest.contains('"') {
            return Err(format!(
                "matcher {s:?}: unquoted value must not contain `\"` (quote the whole value)"
            ));
        } else {
            rest.to_string()
        };
        LabelMatcher::new(name, op, &value).map_err(|e| format!("matcher {s:?}: {e}"))
    }

    /// A missing label matches as the empty string, as in Prometheus, so
    /// `env!="dev"` holds for an alert without `env`.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let v = value.unwrap_or("");
        match (self.op, &self.re) {
            (MatchOp::Eq, _) => v == self.value,
            (MatchOp::Ne, _) => v != self.value,
            (MatchOp::Re, Some(re)) => re.is_match(v),
            (MatchOp::Nre, Some(re)) => !re.is_match(v),
            // `new` always compiles a regex for these two operators.
            (MatchOp::Re | MatchOp::Nre, None) => false,
        }
    }

    pub fn matches_labels(&self, labels: &Labels) -> bool {
        self.matches(labels.get(&self.name))
    }
}

impl fmt::Display for LabelMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.name, self.op)?;
        write_quoted(f, &self.value)
    }
}

/// The compiled [`anchored`] regex of `value`, one per distinct value in
/// the process while any matcher holds it. A policy with ten thousand
/// `code=~"5.."` selectors compiles the pattern once (a few KiB of
/// automata each time), and the per-partition cores, which clone the
/// policy's selectors, share it: a `Regex` clone would carry a cache pool
/// of its own, about 1.5 KiB a clone.
fn shared(value: &str) -> Result<Arc<Regex>, String> {
    struct Compiled {
        by_value: HashMap<String, Weak<Regex>>,
        /// Dropped patterns are forgotten when the map grows past this.
        prune_at: usize,
    }
    static COMPILED: LazyLock<Mutex<Compiled>> = LazyLock::new(|| {
        Mutex::new(Compiled {
            by_value: HashMap::new(),
            prune_at: 64,
        })
    });
    let mut c = COMPILED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(re) = c.by_value.get(value).and_then(Weak::upgrade) {
        return Ok(re);
    }
    let re = Arc::new(anchored(value)?);
    c.by_value.insert(value.to_string(), Arc::downgrade(&re));
    if c.by_value.len() > c.prune_at {
        // Patterns of policies since replaced.
        c.by_value.retain(|_, w| w.strong_count() > 0);
        c.prune_at = (c.by_value.len() * 2).max(64);
    }
    Ok(re)
}

/// Compiles `value` so that it must match the whole input.
pub(crate) fn anchored(value: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{value})$")).map_err(|e| {
        // The syntax error's multi-line drawing points into the anchored
        // text, not the user's; keep its last line, which says what is wrong.
        let why = match &e {
            regex::Error::Syntax(s) => s
                .lines()
                .last()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_string(),
            other => other.to_string(),
        };
        format!("bad regex {value:?}: {why}")
    })
}

/// Length in bytes of the label name at the start of `s` (0 if none).
pub(crate) fn label_name_len(s: &str) -> usize {
    let mut n = 0;
    for (i, c) in s.char_indices() {
        let ok = c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit());
        if !ok {
            break;
        }
        n = i + c.len_utf8();
    }
    n
}

/// Writes `v` double-quoted, escaping what `parse` unescapes.
pub(crate) fn write_quoted(f: &mut fmt::Formatter<'_>, v: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in v.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

fn split_op(s: &str) -> Option<(MatchOp, &str)> {
    // Two-character operators first, so `=~` is not read as `=` and `~…`.
    for op in [MatchOp::Re, MatchOp::Nre, MatchOp::Ne, MatchOp::Eq] {
        if let Some(rest) = s.strip_prefix(op.as_str()) {
            return Some((op, rest));
        }
    }
    None
}

/// Reads a quoted value whose opening quote is already consumed; only
/// whitespace may follow the closing quote. Unknown escapes keep their
/// backslash, as Alertmanager does, so `"5\d\d"` reaches the regex intact.
fn unquote_alertmanager(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let tail = s[i + 1..].trim();
                if !tail.is_empty() {
                    return Err(format!("unexpected {tail:?} after the closing quote"));
                }
                return Ok(out);
            }
            '\\' => match chars.next() {
                Some((_, '"')) => out.push('"'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("unterminated quoted value (missing closing `\"`)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> LabelMatcher {
        LabelMatcher::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_all_operators_quoted_and_bare() {
        let a = m(r#"alertname="PodOOMKilled""#);
        assert_eq!(
            (a.name.as_str(), a.op, a.value.as_str()),
            ("alertname", MatchOp::Eq, "PodOOMKilled")
        );
        let b = m(r#"  env  !=  "dev"  "#);
        assert_eq!(
            (b.name.as_str(), b.op, b.value.as_str()),
            ("env", MatchOp::Ne, "dev")
        );
        let c = m("code=~5..");
        assert_eq!((c.op, c.value.as_str()), (MatchOp::Re, "5.."));
        let d = m(r#"x!~"a|b""#);
        assert_eq!((d.op, d.value.as_str()), (MatchOp::Nre, "a|b"));
        let e = m("env=");
        assert_eq!(e.value, "");
    }

    #[test]
    fn unescapes_quoted_values() {
        let a = m(r#"msg="say \"hi\"\\n\n""#);
        assert_eq!(a.value, "say \"hi\"\\n\n");
        // Unknown escapes survive for the regex engine.
        let b = m(r#"code=~"5\d\d""#);
        assert!(b.matches(Some("503")));
        assert!(!b.matches(Some("5xx")));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            r#"a="x\"y""#,
            r#"b!~"1|2""#,
            r#"c=~"\\d""#,
            "d=\"line\\nbreak\"",
        ] {
            let once = m(s);
            let again = m(&once.to_string());
            assert_eq!((once.op, &once.value), (again.op, &again.value), "{s}");
        }
        assert_eq!(m("env!=dev").to_string(), r#"env!="dev""#);
    }

    #[test]
    fn equal_patterns_share_one_compiled_regex() {
        let re = |m: &LabelMatcher| m.re.clone().expect("a regex matcher");
        let (a, b) = (m(r#"code=~"5..""#), m(r#"status!~"5..""#));
        let c = a.clone();
        assert!(Arc::ptr_eq(&re(&a), &re(&b)), "same pattern, two compiles");
        assert!(Arc::ptr_eq(&re(&a), &re(&c)), "a clone compiled again");
        let other = m(r#"code=~"4..""#);
        assert!(!Arc::ptr_eq(&re(&a), &re(&other)));
        // Sharing changes nothing about what matches.
        assert!(b.matches(Some("404")) && !b.matches(Some("503")));
        assert!(other.matches(Some("404")) && !other.matches(Some("503")));
    }

    #[test]
    fn regexes_are_fully_anchored() {
        let c = m(r#"code=~"5..""#);
        assert!(c.matches(Some("503")));
        assert!(!c.matches(Some("5000")));
        assert!(!c.matches(Some("1503")));
        let n = m(r#"code!~"5..""#);
        assert!(n.matches(Some("5000")));
        assert!(!n.matches(Some("500")));
        let alt = m(r#"x=~"a|b""#);
        assert!(alt.matches(Some("a")));
        assert!(!alt.matches(Some("ab")));
    }

    #[test]
    fn missing_label_is_the_empty_string() {
        assert!(m(r#"env!="dev""#).matches(None));
        assert!(!m(r#"env="dev""#).matches(None));
        assert!(m(r#"env="""#).matches(None));
        assert!(m(r#"env=~".*""#).matches(None));
        assert!(!m(r#"env=~".+""#).matches(None));
        let labels = Labels::from_pairs([("env", "prod")]);
        assert!(m(r#"env!="dev""#).matches_labels(&labels));
        assert!(!m(r#"team="x""#).matches_labels(&labels));
    }

    #[test]
    fn rejects_malformed_matchers() {
        for bad in [
            "",
            "=\"x\"",
            "1abc=\"x\"",
            "alertname",
            "alertname ~ \"x\"",
            "alertname=\"x",
            "alertname=\"x\" y",
            "alertname=a\"b",
            "code=~\"5(\"",
        ] {
            assert!(LabelMatcher::parse(bad).is_err(), "{bad:?} should fail");
        }
        let e = LabelMatcher::parse("code=~\"5(\"")
            .err()
            .unwrap_or_default();
        assert!(e.contains("bad regex"), "{e}");
    }
}
