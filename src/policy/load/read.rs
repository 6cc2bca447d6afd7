//! Typed readers over the node tree that record problems instead of failing.
//!
//! Each reader returns `None` after recording why, so callers keep going
//! and one run of `check` lists every problem in the file. Maps are read
//! through [`Fields`], which reports unknown and duplicate keys up front.

use crate::records::Severity;
use crate::time::Duration;

use super::node::{Kind, Node, ScalarType};
use super::Problem;

/// Collects problems for one file.
pub(super) struct Ctx<'f> {
    pub file: &'f str,
    pub problems: Vec<Problem>,
}

impl Ctx<'_> {
    pub fn report(&mut self, node: &Node, path: &str, message: impl Into<String>) {
        self.report_at(node.line, node.col, path, message);
    }

    pub fn report_at(&mut self, line: usize, col: usize, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.to_string(),
            line,
            col,
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn expected(&mut self, node: &Node, path: &str, what: &str) {
        let found = node.type_name();
        self.report(node, path, format!("expected {what}, found {found}"));
    }
}

/// `a.b`, or `b` at the top level.
pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(super) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The checked keys of one YAML map.
pub(super) struct Fields<'n> {
    pub node: &'n Node,
    pub path: String,
    entries: Vec<(&'n str, &'n Node)>,
}

impl<'n> Fields<'n> {
    /// Reads `node` as a map whose keys must come from `allowed`.
    pub fn read(cx: &mut Ctx, node: &'n Node, path: &str, allowed: &[&str]) -> Option<Self> {
        Self::read_keys(cx, node, path, Some(allowed))
    }

    /// Reads `node` as a map with free-form keys (duplicates still refused).
    pub fn read_open(cx: &mut Ctx, node: &'n Node, path: &str) -> Option<Self> {
        Self::read_keys(cx, node, path, None)
    }

    fn read_keys(
        cx: &mut Ctx,
        node: &'n Node,
        path: &str,
        allowed: Option<&[&str]>,
    ) -> Option<Self> {
        let Kind::Map(pairs) = &node.kind else {
            cx.expected(node, path, "a map");
            return None;
        };
        let mut entries: Vec<(&'n str, &'n Node)> = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            let key = match &k.kind {
                Kind::Scalar { text, .. } => text.as_str(),
                _ => {
                    cx.report(k, path, "keys must be plain strings");
                    continue;
                }
            };
            let here = join(path, key);
            if let Some(allowed) = allowed.filter(|a| !a.contains(&key)) {
                let msg = format!(
                    "unknown key `{key}` (expected one of: {})",
                    allowed.join(", ")
                );
                cx.report(k, &here, msg);
            } else if let Some(first) = entries.iter().find(|(n, _)| *n == key) {
                let line = first.1.line;
                cx.report(
                    k,
                    &here,
                    format!("duplicate key `{key}` (first set on line {line})"),
                );
            } else {
                entries.push((key, v));
            }
        }
        Some(Fields {
            node,
            path: path.to_string(),
            entries,
        })
    }

    /// The value under `key`; an explicit null counts as absent.
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, v)| *k == key && !v.is_null())
            .map(|(_, v)| *v)
    }

    /// Every entry in file order, nulls included.
    pub fn entries(&self) -> &[(&'n str, &'n Node)] {
        &self.entries
    }

    pub fn required(&self, cx: &mut Ctx, key: &str) -> Option<&'n Node> {
        let v = self.get(key);
        if v.is_none() {
            cx.report(
                self.node,
                &self.path,
                format!("missing required key `{key}`"),
            );
        }
        v
    }

    pub fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

/// A string scalar; numbers and booleans are refused so that `yes`-style
/// surprises show up at load time.
pub(super) fn string(cx: &mut Ctx, node: &Node, path: &str) -> Option<String> {
    match (&node.kind, node.scalar_type()) {
        (Kind::Scalar { text, .. }, Some(ScalarType::String)) => Some(text.clone()),
        _ => {
            cx.expected(node, path, "a string");
            None
        }
    }
}

pub(super) fn nonempty(cx: &mut Ctx, node: &Node, path: &str) -> Option<String> {
    let s = string(cx, node, path)?;
    if s.trim().is_empty() {
        cx.report(node, path, "must not be empty");
        return None;
    }
    Some(s)
}

/// Any non-null scalar as its text, for values where `2` means `"2"`.
pub(super) fn text(cx: &mut Ctx, node: &Node, path: &str) -> Option<String> {
    match (&node.kind, node.scalar_type()) {
        (Kind::Scalar { text, .. }, Some(t)) if t != ScalarType::Null => Some(text.clone()),
        _ => {
            cx.expected(node, path, "a string");
            None
        }
    }
}

pub(super) fn list<'n>(cx: &mut Ctx, node: &'n Node, path: &str) -> Option<&'n [Node]> {
    match &node.kind {
        Kind::Seq(items) => Some(items),
        _ => {
            cx.expected(node, path, "a list");
            None
        }
    }
}

pub(super) fn boolean(cx: &mut Ctx, node: &Node, path: &str) -> Option<bool> {
    match (&node.kind, node.scalar_type()) {
        (Kind::Scalar { text, .. }, Some(ScalarType::Bool)) => {
            Some(text.eq_ignore_ascii_case("true"))
        }
        _ => {
            cx.expected(node, path, "true or false");
            None
        }
    }
}

pub(super) fn integer(cx: &mut Ctx, node: &Node, path: &str) -> Option<i64> {
    let parsed = match (&node.kind, node.scalar_type()) {
        (Kind::Scalar { text, .. }, Some(ScalarType::Number)) => text.parse::<i64>().ok(),
        _ => None,
    };
    match (&node.kind, parsed) {
        (_, Some(_)) => {}
        (Kind::Scalar { text, .. }, None) if node.scalar_type() == Some(ScalarType::Number) => {
            cx.report(node, path, format!("expected an integer, found {text}"));
        }
        _ => cx.expected(node, path, "an integer"),
    }
    parsed
}

pub(super) fn duration(cx: &mut Ctx, node: &Node, path: &str) -> Option<Duration> {
    let t = text(cx, node, path)?;
    match Duration::parse(&t) {
        Ok(d) => Some(d),
        Err(_) => {
            let msg = format!(
                "bad duration {t:?} (expected <integer><unit> with unit ms, s, m, h, d or w, e.g. 30s, 5m, 1h30m)"
            );
            cx.report(node, path, msg);
            None
        }
    }
}

pub(super) fn positive_duration(cx: &mut Ctx, node: &Node, path: &str) -> Option<Duration> {
    let d = duration(cx, node, path)?;
    if d.millis() <= 0 {
        cx.report(node, path, "must be longer than 0s");
        return None;
    }
    Some(d)
}

pub(super) fn severity(cx: &mut Ctx, node: &Node, path: &str) -> Option<Severity> {
    match string(cx, node, path)?.as_str() {
        "page" => Some(Severity::Page),
        "ticket" => Some(Severity::Ticket),
        other => {
            cx.report(
                node,
                path,
                format!("unknown severity `{other}` (expected page or ticket)"),
            );
            None
        }
    }
}

/// A non-negative decimal read exactly from its text as `num / 10^scale`,
/// with at most `max_decimals` digits after the point; reduced.
pub(super) fn decimal(
    cx: &mut Ctx,
    node: &Node,
    path: &str,
    max_decimals: u32,
) -> Option<(i128, i128)> {
    let plain = match (&node.kind, node.scalar_type()) {
        (Kind::Scalar { text, .. }, Some(ScalarType::Number)) => Some(text.as_str()),
        _ => None,
    };
    let Some(t) = plain else {
        cx.expected(node, path, "a number");
        return None;
    };
    match exact_decimal(t, max_decimals) {
        Ok(r) => Some(r),
        Err(why) => {
            cx.report(node, path, why);
            None
        }
    }
}

/// A percentage written `25%` (a decimal followed by `%`), read exactly as
/// the reduced `num / den` of the number before the sign.
pub(super) fn percent(cx: &mut Ctx, node: &Node, path: &str) -> Option<(i128, i128)> {
    let t = text(cx, node, path)?;
    let Some(body) = t.trim().strip_suffix('%') else {
        cx.report(
            node,
            path,
            format!("expected a percentage such as 25%, found {t}"),
        );
        return None;
    };
    match exact_decimal(body.trim(), 6) {
        Ok(r) => Some(r),
        Err(why) => {
            cx.report(node, path, why);
            None
        }
    }
}

fn exact_decimal(t: &str, max_decimals: u32) -> Result<(i128, i128), String> {
    let body = t.strip_prefix('+').unwrap_or(t);
    if body.starts_with('-') {
        return Err(format!("must be positive, found {t}"));
    }
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits_only = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if whole.is_empty() || !digits_only(whole) || !digits_only(frac) {
        return Err(format!(
            "expected a plain decimal number such as 99.9, found {t}"
        ));
    }
    if frac.len() > max_decimals as usize {
        return Err(format!(
            "at most {max_decimals} digits after the decimal point, found {t}"
        ));
    }
    if whole.trim_start_matches('0').len() > 12 {
        return Err(format!("number too large: {t}"));
    }
    let scale = 10i128.pow(frac.len() as u32);
    let mut num: i128 = 0;
    for c in whole.chars().chain(frac.chars()) {
        num = num * 10 + i128::from(c as u8 - b'0');
    }
    Ok(reduce(num, scale))
}

pub(super) fn reduce(num: i128, den: i128) -> (i128, i128) {
    let g = gcd(num.abs(), den.abs()).max(1);
    (num / g, den / g)
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact_and_reduced() {
        assert_eq!(exact_decimal("99.9", 6), Ok((999, 10)));
        assert_eq!(exact_decimal("99.95", 6), Ok((1999, 20)));
        assert_eq!(exact_decimal("14.4", 6), Ok((72, 5)));
        assert_eq!(exact_decimal("0.000001", 6), Ok((1, 1_000_000)));
        assert_eq!(exact_decimal("007", 6), Ok((7, 1)));
        assert!(exact_decimal("0.0000001", 6).is_err());
        assert!(exact_decimal("-1", 6).is_err());
        assert!(exact_decimal("1e3", 6).is_err());
        assert!(exact_decimal(".5", 6).is_err());
        assert!(exact_decimal("1234567890123.5", 6).is_err());
    }

    #[test]
    fn join_paths() {
        assert_eq!(join("", "slos"), "slos");
        assert_eq!(join(&index("slos", 0), "name"), "slos[0].name");
    }
}
