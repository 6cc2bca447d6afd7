//! The policy file: SLOs, runbooks, guardrails and approvers.
//!
//! `load` reads YAML into the checked [`Policy`] model; `check` reports
//! every problem at once with its file, line and column.

pub mod load;
pub mod matcher;
pub mod model;
pub mod selector;
pub mod template;

pub use load::{parse, Problem, Problems};
pub use matcher::{LabelMatcher, MatchOp};
pub use model::*;
pub use selector::Selector;
pub use template::{Template, TemplateError};
