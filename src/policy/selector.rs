//! PromQL instant-vector selectors: `metric{label="v",code=~"5.."}`.
//!
//! SLIs name their series with these. Only the selector grammar is needed
//! (no functions, ranges or offsets), so this is a small hand-written
//! parser that reports the character offset of what it could not read.

use std::fmt;

use crate::records::Labels;

use super::matcher::{label_name_len, write_quoted, LabelMatcher, MatchOp};

/// A metric name and/or label matchers. A `__name__="x"` matcher is folded
/// into `metric` so selectors can be indexed by name; other `__name__`
/// matchers stay in `matchers` and apply to the series name.
#[derive(Debug, Clone)]
pub struct Selector {
    pub metric: Option<String>,
    pub matchers: Vec<LabelMatcher>,
}

impl Selector {
    /// Heap bytes of the names and values (capacities); compiled regexes
    /// are shared with the policy and not counted.
    pub fn heap_bytes(&self) -> usize {
        self.metric.as_ref().map_or(0, String::capacity)
            + self.matchers.capacity() * std::mem::size_of::<LabelMatcher>()
            + self
                .matchers
                .iter()
                .map(|m| m.name.capacity() + m.value.capacity())
                .sum::<usize>()
    }

    pub fn parse(s: &str) -> Result<Selector, String> {
        let mut p = Lexer {
            chars: s.chars().collect(),
            pos: 0,
        };
        p.skip_ws();
        let metric = p.metric_name();
        let mut matchers = Vec::new();
        p.skip_ws();
        if p.peek() == Some('{') {
            p.pos += 1;
            matchers = p.matcher_list()?;
        }
        p.skip_ws();
        if let Some(c) = p.peek() {
            return Err(format!("unexpected `{c}` at offset {}", p.pos));
        }
        if metric.is_none() && matchers.is_empty() && p.chars.iter().all(|c| c.is_whitespace()) {
            return Err("empty selector".to_string());
        }
        finish(metric, matchers)
    }

    /// Whether a series with this name and labels is selected.
    pub fn matches(&self, name: &str, labels: &Labels) -> bool {
        if self.metric.as_deref().is_some_and(|m| m != name) {
            return false;
        }
        self.matchers.iter().all(|m| {
            if m.name == "__name__" {
                m.matches(Some(name))
            } else {
                m.matches_labels(labels)
            }
        })
    }

    /// The value of an `=` matcher on `label`, if the selector has one.
    pub fn equality(&self, label: &str) -> Option<&str> {
        self.matchers
            .iter()
            .find(|m| m.op == MatchOp::Eq && m.name == label)
            .map(|m| m.value.as_str())
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(m) = &self.metric {
            f.write_str(m)?;
        }
        if self.matchers.is_empty() {
            return Ok(());
        }
        f.write_str("{")?;
        for (i, m) in self.matchers.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}{}", m.name, m.op)?;
            write_quoted(f, &m.value)?;
        }
        f.write_str("}")
    }
}

/// Applies PromQL's rules once the text is read: one metric name at most,
/// and at least one matcher that does not match the empty string, since a
/// selector that matches everything is almost always a mistake.
fn finish(mut metric: Option<String>, matchers: Vec<LabelMatcher>) -> Result<Selector, String> {
    let mut rest = Vec::with_capacity(matchers.len());
    for m in matchers {
        if m.name == "__name__" && m.op == MatchOp::Eq {
            if metric.is_some() {
                return Err("metric name must not be set twice".to_string());
            }
            metric = Some(m.value);
        } else {
            rest.push(m);
        }
    }
    if metric.as_deref() == Some("") {
        return Err("metric name must not be empty".to_string());
    }
    if metric.is_none() && rest.iter().all(|m| m.matches(None)) {
        return Err("selector must contain at least one non-empty matcher".to_string());
    }
    Ok(Selector {
        metric,
        matchers: rest,
    })
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
}

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn metric_name(&mut self) -> Option<String> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            let ok = c == '_' || c == ':' || c.is_ascii_alphabetic();
            if !(ok || (self.pos > start && c.is_ascii_digit())) {
                break;
            }
            self.pos += 1;
        }
        (self.pos > start).then(|| self.chars[start..self.pos].iter().collect())
    }

    /// Reads `name op "value", …}` after the opening brace; a trailing comma
    /// is allowed, as in PromQL.
    fn matcher_list(&mut self) -> Result<Vec<LabelMatcher>, String> {
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some('}') {
                self.pos += 1;
                return Ok(out);
            }
            out.push(self.matcher()?);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some('}') => {}
                Some(c) => {
                    return Err(format!(
                        "expected `,` or `}}` at offset {}, found `{c}`",
                        self.pos
                    ))
                }
                None => return Err(format!("missing `}}` at offset {}", self.pos)),
            }
        }
    }

    fn matcher(&mut self) -> Result<LabelMatcher, String> {
        let at = self.pos;
        let rest: String = self.chars[self.pos..].iter().collect();
        let len = label_name_len(&rest);
        if len == 0 {
            return Err(format!("expected a label name at offset {at}"));
        }
        let name = rest[..len].to_string();
        self.pos += rest[..len].chars().count();
        self.skip_ws();
        let op = self.op()?;
        self.skip_ws();
        let value = self.string()?;
        LabelMatcher::new(&name, op, &value).map_err(|e| format!("{e} (matcher at offset {at})"))
    }

    fn op(&mut self) -> Result<MatchOp, String> {
        let two = (self.peek(), self.chars.get(self.pos + 1).copied());
        let (op, len) = match two {
            (Some('='), Some('~')) => (MatchOp::Re, 2),
            (Some('!'), Some('~')) => (MatchOp::Nre, 2),
            (Some('!'), Some('=')) => (MatchOp::Ne, 2),
            (Some('='), _) => (MatchOp::Eq, 1),
            _ => {
                return Err(format!(
                    "expected one of =, !=, =~, !~ at offset {}",
                    self.pos
                ))
            }
        };
        self.pos += len;
        Ok(op)
    }

    /// A PromQL string: `"…"` or `'…'` with Go escapes, or raw `` `…` ``.
    fn string(&mut self) -> Result<String, String> {
        let start = self.pos;
        let quote = match self.peek() {
            Some(q @ ('"' | '\'' | '`')) => q,
            _ => return Err(format!("expected a quoted string at offset {start}")),
        };
        self.pos += 1;
        let mut out = String::new();
        while let Some(c) = self.peek() {
            self.pos += 1;
            if c == quote {
                return Ok(out);
            }
            if c == '\\' && quote != '`' {
                out.push(self.escape()?);
            } else if c == '\n' && quote != '`' {
                return Err(format!("newline in string at offset {}", self.pos - 1));
            } else {
                out.push(c);
            }
        }
        Err(format!("unterminated string starting at offset {start}"))
    }

    fn escape(&mut self) -> Result<char, String> {
        let at = self.pos - 1;
        let c = self
            .peek()
            .ok_or_else(|| format!("unterminated escape at offset {at}"))?;
        self.pos += 1;
        let simple = match c {
            'a' => Some('\x07'),
            'b' => Some('\x08'),
            'f' => Some('\x0c'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\x0b'),
            '\\' | '"' | '\'' => Some(c),
            _ => None,
        };
        if let Some(s) = simple {
            return Ok(s);
        }
        let (digits, radix) = match c {
            'x' => (2, 16),
            'u' => (4, 16),
            'U' => (8, 16),
            '0'..='7' => {
                self.pos -= 1;
                (3, 8)
            }
            _ => {
                // PromQL rejects these; a regex escape needs a doubled backslash.
                return Err(format!(
                    "unknown escape `\\{c}` at offset {at} (write `\\\\{c}` for a regex escape)"
                ));
            }
        };
        let end = self.pos + digits;
        let text: String = self
            .chars
            .get(self.pos..end)
            .unwrap_or(&[])
            .iter()
            .collect();
        self.pos = end.min(self.chars.len());
        u32::from_str_radix(&text, radix)
            .ok()
            .filter(|_| text.chars().count() == digits)
            .and_then(char::from_u32)
            .ok_or_else(|| format!("bad escape at offset {at}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_name_and_matchers() {
        let s = sel(r#"http_requests_total{service="checkout",code=~"5.."}"#);
        assert_eq!(s.metric.as_deref(), Some("http_requests_total"));
        assert_eq!(s.matchers.len(), 2);
        assert_eq!(s.equality("service"), Some("checkout"));
        assert_eq!(s.equality("code"), None);
        let l = Labels::from_pairs([("service", "checkout"), ("code", "503")]);
        assert!(s.matches("http_requests_total", &l));
        assert!(!s.matches("other", &l));
        let l2 = Labels::from_pairs([("service", "checkout"), ("code", "5000")]);
        assert!(!s.matches("http_requests_total", &l2));
        assert_eq!(
            s.to_string(),
            r#"http_requests_total{service="checkout",code=~"5.."}"#
        );
    }

    #[test]
    fn bare_name_and_name_matcher() {
        let s = sel("  up  ");
        assert_eq!(s.metric.as_deref(), Some("up"));
        assert!(s.matchers.is_empty());
        let n = sel(r#"{__name__="x", service='a',}"#);
        assert_eq!(n.metric.as_deref(), Some("x"));
        assert_eq!(n.equality("service"), Some("a"));
        assert!(n.matches("x", &Labels::from_pairs([("service", "a")])));
        let re = sel(r#"{__name__=~"http_.*"}"#);
        assert!(re.metric.is_none());
        assert!(re.matches("http_x", &Labels::new()));
        assert!(!re.matches("grpc_x", &Labels::new()));
        let colon = sel("job:rate5m{ a = \"b\" }");
        assert_eq!(colon.metric.as_deref(), Some("job:rate5m"));
        assert_eq!(sel("m{}").matchers.len(), 0);
    }

    #[test]
    fn strings_follow_promql() {
        let s = sel(r#"m{a="5\\d\\d", b=`raw\d`, c="\x41\u00e9\n"}"#);
        assert_eq!(s.matchers[0].value, r"5\d\d");
        assert_eq!(s.matchers[1].value, r"raw\d");
        assert_eq!(s.matchers[2].value, "Aé\n");
        let again = sel(&s.to_string());
        assert_eq!(again.matchers[2].value, "Aé\n");
    }

    #[test]
    fn errors_say_what_and_where() {
        let cases = [
            ("", "empty"),
            ("{}", "non-empty matcher"),
            (r#"{a=""}"#, "non-empty matcher"),
            (r#"{a=~".*"}"#, "non-empty matcher"),
            (r#"m{service="a""#, "offset 13"),
            (r#"m{service="a" code="5"}"#, "offset 14"),
            (r#"m{service "a"}"#, "offset 10"),
            (r#"m{service=a}"#, "offset 10"),
            (r#"m{9x="a"}"#, "offset 2"),
            (r#"m{a="5\d"}"#, "unknown escape"),
            (
                r#"m{a="unterminated}"#,
                "unterminated string starting at offset 4",
            ),
            (r#"m{a=~"("}"#, "bad regex"),
            (r#"m{__name__="x"}"#, "twice"),
            ("m extra", "offset 2"),
        ];
        for (src, want) in cases {
            match Selector::parse(src) {
                Ok(s) => panic!("{src:?} parsed as {s}"),
                Err(e) => assert!(e.contains(want), "{src:?}: {e:?} lacks {want:?}"),
            }
        }
    }
}
