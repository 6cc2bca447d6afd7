//! A YAML node tree that remembers where each node starts.
//!
//! yaml-rust2's own `Yaml` tree drops positions, and `check` must point at
//! the offending line and column, so the tree is built here from the
//! marked event stream. Mapping entries stay a list of pairs in file order
//! so duplicate keys survive long enough to be reported.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

#[derive(Debug, Clone)]
pub(super) struct Node {
    pub kind: Kind,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub col: usize,
}

#[derive(Debug, Clone)]
pub(super) enum Kind {
    /// `quoted` covers every non-plain style: only plain scalars can be
    /// null, booleans or numbers.
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// What a plain scalar means under the YAML core schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ScalarType {
    Null,
    Bool,
    Number,
    String,
}

impl ScalarType {
    pub fn name(self) -> &'static str {
        match self {
            ScalarType::Null => "null",
            ScalarType::Bool => "a boolean",
            ScalarType::Number => "a number",
            ScalarType::String => "a string",
        }
    }
}

impl Node {
    pub fn scalar_type(&self) -> Option<ScalarType> {
        match &self.kind {
            Kind::Scalar { quoted: true, .. } => Some(ScalarType::String),
            Kind::Scalar { text, .. } => Some(plain_type(text)),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        self.scalar_type() == Some(ScalarType::Null)
    }

    /// For "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match (&self.kind, self.scalar_type()) {
            (Kind::Seq(_), _) => "a list",
            (Kind::Map(_), _) => "a map",
            (_, Some(t)) => t.name(),
            (_, None) => "a string",
        }
    }
}

fn plain_type(text: &str) -> ScalarType {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => ScalarType::Null,
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => ScalarType::Bool,
        ".inf" | ".Inf" | ".INF" | "-.inf" | "-.Inf" | "-.INF" | "+.inf" | ".nan" | ".NaN"
        | ".NAN" => ScalarType::Number,
        t if looks_numeric(t) => ScalarType::Number,
        _ => ScalarType::String,
    }
}

fn looks_numeric(t: &str) -> bool {
    let body = t.strip_prefix(['-', '+']).unwrap_or(t);
    if body.starts_with("0x") || body.starts_with("0o") {
        return body.len() > 2 && body[2..].chars().all(|c| c.is_ascii_hexdigit());
    }
    let mut digits = 0;
    for (i, c) in body.char_indices() {
        match c {
            '0'..='9' => digits += 1,
            '.' => {}
            'e' | 'E' if digits > 0 => return looks_exponent(&body[i + 1..]),
            _ => return false,
        }
    }
    digits > 0 && body.matches('.').count() <= 1
}

fn looks_exponent(t: &str) -> bool {
    let t = t.strip_prefix(['-', '+']).unwrap_or(t);
    !t.is_empty() && t.chars().all(|c| c.is_ascii_digit())
}

/// A YAML syntax error, or a second document, with its 1-based position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SyntaxError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Parses `src` into its single document's root (`None` for an empty file).
pub(super) fn parse_tree(src: &str) -> Result<Option<Node>, SyntaxError> {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(src);
    if let Err(e) = parser.load(&mut b, true) {
        let m = e.marker();
        return Err(SyntaxError {
            line: m.line(),
            col: m.col() + 1,
            message: format!("YAML syntax error: {}", e.info()),
        });
    }
    if let Some(err) = b.error {
        return Err(err);
    }
    Ok(b.root)
}

#[derive(Default)]
struct Builder {
    /// Open collections, each with a map's key still waiting for its value.
    stack: Vec<(Node, Option<Node>)>,
    anchors: HashMap<usize, Node>,
    /// Anchor ids of open collections, to register them when they close.
    open_anchors: Vec<usize>,
    root: Option<Node>,
    documents: usize,
    error: Option<SyntaxError>,
}

impl Builder {
    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some((parent, pending)) = self.stack.last_mut() else {
            self.root = Some(node);
            return;
        };
        match &mut parent.kind {
            Kind::Seq(items) => items.push(node),
            Kind::Map(entries) => match pending.take() {
                Some(key) => entries.push((key, node)),
                None => *pending = Some(node),
            },
            Kind::Scalar { .. } => {}
        }
    }

    fn open(&mut self, kind: Kind, anchor: usize, mark: Marker) {
        self.stack.push((at(kind, mark), None));
        self.open_anchors.push(anchor);
    }

    fn close(&mut self) {
        if let (Some((node, _)), Some(anchor)) = (self.stack.pop(), self.open_anchors.pop()) {
            self.push_value(node, anchor);
        }
    }
}

fn at(kind: Kind, mark: Marker) -> Node {
    Node {
        kind,
        line: mark.line(),
        // The scanner counts columns from 0.
        col: mark.col() + 1,
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents == 2 && self.error.is_none() {
                    self.error = Some(SyntaxError {
                        line: mark.line(),
                        col: mark.col() + 1,
                        message: "a policy file holds one YAML document; found a second one"
                            .to_string(),
                    });
                }
            }
            _ if self.documents > 1 => {}
            Event::Scalar(text, style, anchor, _) => {
                let quoted = style != TScalarStyle::Plain;
                self.push_value(at(Kind::Scalar { text, quoted }, mark), anchor);
            }
            Event::Alias(id) => {
                // The parser refuses unknown anchors, so the lookup only
                // misses for a collection aliased inside itself.
                let node = match self.anchors.get(&id) {
                    Some(n) => Node {
                        line: mark.line(),
                        col: mark.col() + 1,
                        ..n.clone()
                    },
                    None => at(
                        Kind::Scalar {
                            text: String::new(),
                            quoted: false,
                        },
                        mark,
                    ),
                };
                self.push_value(node, 0);
            }
            Event::SequenceStart(anchor, _) => self.open(Kind::Seq(Vec::new()), anchor, mark),
            Event::MappingStart(anchor, _) => self.open(Kind::Map(Vec::new()), anchor, mark),
            Event::SequenceEnd | Event::MappingEnd => self.close(),
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}
