//! selfheal: a self-healing platform for SRE teams, built as an
//! event-stream processor.
//!
//! Metric samples, alerts and change events come in; commands, approval
//! requests, escalations and audit records go out. The crate is a
//! deterministic core with thin edges around it:
//!
//! * [`time`] — event time: RFC 3339 timestamps and `5m` durations. The core
//!   reads time only from records.
//! * [`records`] — input and output record types, their JSON forms and
//!   their Avro forms (one schema per type in `schemas/`).
//! * [`policy`] — the policy file: SLOs with PromQL selectors, runbooks with
//!   Alertmanager matchers and templates, guardrails, approvers; loaded and
//!   checked with every problem reported at its line.
//! * [`slo`] — exact multi-window, multi-burn-rate evaluation over bounded
//!   counter windows.
//! * [`engine`] — the decision core: incidents, runbook matching, safety
//!   tiers, guardrails, validation and rollback, hash-chained audit.
//! * [`replay`] — drives the core from a JSON Lines stream, as `selfheal
//!   replay` does; live mode drives the same core from Kafka.
//! * [`notify`] — escalations delivered to PagerDuty, Opsgenie and Slack.

pub mod backtest;
pub mod demo;
pub mod engine;
pub mod executor;
pub mod live;
pub mod notify;
pub mod policy;
pub mod records;
pub mod replay;
pub mod slo;
pub mod time;
mod yaml;
