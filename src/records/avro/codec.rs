//! Hand-written Avro codecs of the record types, one pair per schema in
//! `schemas/`; fields are read and written in the schema's field order.
//!
//! Decoding first reads the whole datum (so a structurally broken record is
//! always `DecodeError::Avro`), then applies the same semantic checks, with
//! the same errors, as the JSON decoder in `input.rs`. The integration
//! tests check these codecs against apache_avro driven by the `.avsc` files.

use std::collections::BTreeMap;

use super::wire::{At, Reader, Result, Writer};
use super::AvroError;
use crate::records::input::{
    ActionResult, Alert, AlertStatus, Approval, Change, ChangeState, Control, DecodeError,
    MetricRef, MetricSample, ResultStatus, Scope, Verdict,
};
use crate::records::labels::{LabelBuf, Labels};
use crate::records::output::{
    ApprovalRequest, Audit, BurnAlert, BurnState, Command, Escalation, EscalationReason,
    GuardrailCheck, Incident, IncidentState, Severity, Tried, Trigger,
};
use crate::records::value::Fixed;
use crate::time::Timestamp;

fn invalid(field: &'static str, reason: impl ToString) -> DecodeError {
    DecodeError::Invalid {
        field,
        reason: reason.to_string(),
    }
}

fn time(field: &'static str, s: &str) -> Result<Timestamp> {
    Timestamp::parse(s).map_err(|e| invalid(field, e))
}

/// As the JSON decoder: empty text and Alertmanager's zero time mean
/// "no time".
fn opt_time(field: &'static str, s: Option<&str>) -> Result<Option<Timestamp>> {
    match s {
        None => Ok(None),
        Some(s) if s.is_empty() || Timestamp::is_zero_time(s) => Ok(None),
        Some(s) => time(field, s).map(Some),
    }
}

fn non_empty(field: &'static str, s: &str) -> Result<String> {
    if s.is_empty() {
        Err(DecodeError::Missing(field))
    } else {
        Ok(s.to_owned())
    }
}

/// Builds a label set without `skip`; a later duplicate name wins, as in
/// the JSON decoder.
fn labels(pairs: &[(&str, &str)], skip: Option<&str>) -> Labels {
    Labels::from_pairs(pairs.iter().filter(|(k, _)| Some(*k) != skip).copied())
}

fn string_map(pairs: Vec<(&str, &str)>) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn strings(r: &mut Reader<'_>) -> Result<Vec<String>> {
    r.array(|r| r.string())
}

fn write_labels(w: &mut Writer, l: &Labels) {
    w.map_str(l.len(), l.iter());
}

fn write_map(w: &mut Writer, m: &BTreeMap<String, String>) {
    w.map_str(m.len(), m.iter().map(|(k, v)| (k.as_str(), v.as_str())));
}

fn write_strings(w: &mut Writer, v: &[String]) {
    w.array(v, |w, s| w.str(s));
}

fn write_opt_time(w: &mut Writer, t: Option<Timestamp>) {
    w.opt(t, |w, t| w.display(&t));
}

fn write_opt_str(w: &mut Writer, s: Option<&String>) {
    w.opt(s, |w, s| w.str(s));
}

// Enum symbols in schema order; the index is what goes on the wire.

const ALERT_STATUS: [AlertStatus; 2] = [AlertStatus::Firing, AlertStatus::Resolved];
const CHANGE_STATE: [ChangeState; 2] = [ChangeState::Started, ChangeState::Finished];
const RESULT_STATUS: [ResultStatus; 3] = [
    ResultStatus::Succeeded,
    ResultStatus::Failed,
    ResultStatus::TimedOut,
];
const DECISION: [Verdict; 2] = [Verdict::Approve, Verdict::Reject];
const SEVERITY: [Severity; 2] = [Severity::Page, Severity::Ticket];
const BURN_STATE: [BurnState; 2] = [BurnState::Firing, BurnState::Resolved];
const INCIDENT_STATE: [IncidentState; 8] = [
    IncidentState::Opened,
    IncidentState::AwaitingApproval,
    IncidentState::Remediating,
    IncidentState::Validating,
    IncidentState::Resolved,
    IncidentState::RollingBack,
    IncidentState::Escalated,
    IncidentState::Suppressed,
];
const ESCALATION_REASON: [EscalationReason; 9] = [
    EscalationReason::FirstTime,
    EscalationReason::NoRunbook,
    EscalationReason::Tier3,
    EscalationReason::ActionFailed,
    EscalationReason::ValidationFailed,
    EscalationReason::ApprovalRejected,
    EscalationReason::ApprovalTimeout,
    EscalationReason::Guardrail,
    EscalationReason::StaleData,
];

fn read_symbol<T: Copy>(r: &mut Reader<'_>, symbols: &[T]) -> Result<T> {
    r.symbol(symbols.len()).map(|i| symbols[i])
}

fn write_symbol<T: PartialEq>(w: &mut Writer, symbols: &[T], v: &T) {
    // Every variant is listed, so the fallback is unreachable in practice;
    // it writes an index the reader refuses rather than panicking.
    let i = symbols.iter().position(|s| s == v).unwrap_or(symbols.len());
    w.symbol(i);
}

// Inputs.

/// Reads a datum that must span `datum` exactly: its structure, then the
/// check that nothing is left over, then its content.
fn whole<'a, T>(
    datum: &'a [u8],
    read: impl FnOnce(&mut Reader<'a>) -> Result<Result<T>>,
) -> Result<T> {
    let mut r = Reader::new(datum);
    let checked = read(&mut r)?;
    r.finish()?;
    checked
}

pub(super) fn read_metric(datum: &[u8]) -> Result<MetricSample> {
    whole(datum, metric_at)
}

/// Reads one `MetricSample` datum at the reader's position: `Err` when the bytes
/// do not fit the schema (the position is then lost), `Ok(Err)` when the
/// datum is whole but its content is refused.
pub(super) fn metric_at(r: &mut Reader<'_>) -> Result<Result<MetricSample>> {
    let timestamp = r.str().at("timestamp")?;
    let value = r.str().at("value")?;
    let name = r.str().at("name")?;
    let pairs = r.map_str().at("labels")?;
    let check = || -> Result<MetricSample> {
        let value = Fixed::parse(value)?;
        // The adapter also carries the metric name as the `__name__` label.
        let dunder = pairs.iter().rev().find(|(k, _)| *k == "__name__");
        let name = match (name, dunder) {
            (n, _) if !n.is_empty() => n.to_owned(),
            (_, Some((_, n))) if !n.is_empty() => (*n).to_owned(),
            _ => return Err(DecodeError::Missing("name")),
        };
        crate::records::value::check_counter(&name, value)?;
        Ok(MetricSample {
            name,
            labels: labels(&pairs, Some("__name__")),
            value,
            timestamp: opt_time("timestamp", Some(timestamp))?,
        })
    };
    Ok(check())
}

/// Reads a whole `MetricSample` datum as [`read_metric`] does, with the
/// same errors in the same order, into `labels`' storage: nothing is
/// allocated once the buffer has grown to the label sets seen.
pub(super) fn read_metric_ref<'a>(
    datum: &'a [u8],
    labels: &'a mut LabelBuf,
) -> Result<MetricRef<'a>> {
    let (name, value, timestamp) = whole(datum, |r| metric_ref_at(r, labels))?;
    let timestamp = opt_time("timestamp", Some(timestamp))?;
    Ok(MetricRef {
        name,
        labels: labels.finish(),
        value,
        timestamp,
    })
}

/// What [`metric_at`] reads, borrowed from the datum: the name (or the
/// last `__name__` label when the name is empty), the value and the
/// timestamp text; the other labels are left in `labels`. Content errors
/// are those of [`metric_at`] before its timestamp check, in the same order.
pub(super) fn metric_ref_at<'a>(
    r: &mut Reader<'a>,
    labels: &mut LabelBuf,
) -> Result<Result<(&'a str, Fixed, &'a str)>> {
    let timestamp = r.str().at("timestamp")?;
    let value = r.str().at("value")?;
    let name = r.str().at("name")?;
    labels.clear();
    let mut dunder = None;
    r.map_str_each(|k, v| {
        if k == "__name__" {
            dunder = Some(v);
        } else {
            labels.push(k, v);
        }
    })
    .at("labels")?;
    let name = match (name, dunder) {
        (n, _) if !n.is_empty() => Some(n),
        (_, Some(n)) if !n.is_empty() => Some(n),
        _ => None,
    };
    Ok(check_metric(value, name).map(|(name, value)| (name, value, timestamp)))
}

/// The content checks of a metric datum before its timestamp's, in
/// [`metric_at`]'s order: the value, then the name (`None`: neither the
/// `name` field nor a `__name__` label gives one), then the counter sign.
fn check_metric<'a>(value: &str, name: Option<&'a str>) -> Result<(&'a str, Fixed)> {
    let value = Fixed::parse(value)?;
    let name = name.ok_or(DecodeError::Missing("name"))?;
    crate::records::value::check_counter(name, value)?;
    Ok((name, value))
}

/// A `MetricSample` datum read only as far as a sample of a known series
/// needs: the bytes of its series part (the `name` field and the `labels`
/// map, as written) and the text of its value and timestamp. The series
/// part's text is stepped over, not checked, so the bytes can only stand
/// for a series that a full decode of the same bytes found before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricScan<'a> {
    /// The `name` and `labels` fields' bytes.
    pub series: &'a [u8],
    value: &'a str,
    timestamp: &'a str,
}

impl MetricScan<'_> {
    /// The rest of [`read_metric_ref`]'s checks, in its order, for a
    /// datum whose series part decoded before to a series named `name`:
    /// the value, the counter sign, the timestamp. The result is what a
    /// full decode gives, errors included.
    pub fn check(&self, name: &str) -> std::result::Result<Fixed, DecodeError> {
        let (_, value) = check_metric(self.value, Some(name))?;
        opt_time("timestamp", Some(self.timestamp))?;
        Ok(value)
    }
}

/// Scans a whole `MetricSample` datum into a [`MetricScan`]; `None` when
/// the bytes do not fit the schema (a full decode says why).
pub(super) fn scan_metric(datum: &[u8]) -> Option<MetricScan<'_>> {
    let mut r = Reader::new(datum);
    let timestamp = r.str().ok()?;
    let value = r.str().ok()?;
    let from = r.position();
    r.skip_str().ok()?;
    r.skip_map_str().ok()?;
    let series = r.since(from);
    r.finish().ok()?;
    Some(MetricScan {
        series,
        value,
        timestamp,
    })
}

pub(super) fn write_metric(m: &MetricSample) -> Vec<u8> {
    let mut w = Writer::default();
    metric_to(&mut w, m.as_ref());
    w.into_bytes()
}

/// Appends a metric datum to `w`.
pub(super) fn metric_to(w: &mut Writer, m: MetricRef<'_>) {
    match m.timestamp {
        Some(t) => w.time(t),
        None => w.str(""),
    }
    w.display(&m.value);
    w.str(m.name);
    w.map_str(m.labels.len(), m.labels.iter());
}

pub(super) fn read_alert(datum: &[u8]) -> Result<Alert> {
    whole(datum, alert_at)
}

/// Reads one `Alert` datum at the reader's position: `Err` when the bytes
/// do not fit the schema (the position is then lost), `Ok(Err)` when the
/// datum is whole but its content is refused.
pub(super) fn alert_at(r: &mut Reader<'_>) -> Result<Result<Alert>> {
    let status = read_symbol(r, &ALERT_STATUS).at("status")?;
    let label_pairs = r.map_str().at("labels")?;
    let annotation_pairs = r.map_str().at("annotations")?;
    let starts_at = r.opt_str().at("startsAt")?;
    let ends_at = r.opt_str().at("endsAt")?;
    let fingerprint = r.opt_str().at("fingerprint")?;
    let generator_url = r.opt_str().at("generatorURL")?;
    let check = || -> Result<Alert> {
        let alert_labels = labels(&label_pairs, None);
        if alert_labels.get("alertname").is_none_or(str::is_empty) {
            return Err(DecodeError::Missing("labels.alertname"));
        }
        Ok(Alert {
            status,
            labels: alert_labels,
            annotations: labels(&annotation_pairs, None),
            starts_at: opt_time("startsAt", starts_at)?,
            ends_at: opt_time("endsAt", ends_at)?,
            fingerprint: fingerprint.filter(|f| !f.is_empty()).map(str::to_owned),
            generator_url: generator_url.map(str::to_owned),
        })
    };
    Ok(check())
}

pub(super) fn write_alert(a: &Alert) -> Vec<u8> {
    let mut w = Writer::default();
    alert_to(&mut w, a);
    w.into_bytes()
}

/// Appends a `Alert` datum to `w`.
pub(super) fn alert_to(w: &mut Writer, a: &Alert) {
    write_symbol(w, &ALERT_STATUS, &a.status);
    write_labels(w, &a.labels);
    write_labels(w, &a.annotations);
    write_opt_time(w, a.starts_at);
    write_opt_time(w, a.ends_at);
    write_opt_str(w, a.fingerprint.as_ref());
    write_opt_str(w, a.generator_url.as_ref());
}

pub(super) fn read_change(datum: &[u8]) -> Result<Change> {
    whole(datum, change_at)
}

/// Reads one `Change` datum at the reader's position: `Err` when the bytes
/// do not fit the schema (the position is then lost), `Ok(Err)` when the
/// datum is whole but its content is refused.
pub(super) fn change_at(r: &mut Reader<'_>) -> Result<Result<Change>> {
    let service = r.str().at("service")?;
    let kind = r.str().at("kind")?;
    let state = read_symbol(r, &CHANGE_STATE).at("state")?;
    let id = r.str().at("id")?;
    let at = r.opt_str().at("at")?;
    let check = || -> Result<Change> {
        Ok(Change {
            service: non_empty("service", service)?,
            kind: non_empty("kind", kind)?,
            state,
            id: non_empty("id", id)?,
            at: opt_time("at", at)?,
        })
    };
    Ok(check())
}

pub(super) fn write_change(c: &Change) -> Vec<u8> {
    let mut w = Writer::default();
    change_to(&mut w, c);
    w.into_bytes()
}

/// Appends a `Change` datum to `w`.
pub(super) fn change_to(w: &mut Writer, c: &Change) {
    w.str(&c.service);
    w.str(&c.kind);
    write_symbol(w, &CHANGE_STATE, &c.state);
    w.str(&c.id);
    write_opt_time(w, c.at);
}

pub(super) fn read_result(datum: &[u8]) -> Result<ActionResult> {
    // A datum written with the schema before `previous` existed ends after
    // `at`: the field takes its default, the empty map.
    whole(datum, |r| result_at(r, Previous::IfPresent))
}

/// Whether an `ActionResult` datum carries the `previous` map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Previous {
    /// Always (the datum sits inside a larger one written with our schema).
    Always,
    /// When bytes remain after `at` (a whole datum, old or new schema).
    IfPresent,
}

/// Reads one `ActionResult` datum at the reader's position: `Err` when the bytes
/// do not fit the schema (the position is then lost), `Ok(Err)` when the
/// datum is whole but its content is refused.
pub(super) fn result_at(r: &mut Reader<'_>, previous: Previous) -> Result<Result<ActionResult>> {
    let command_id = r.str().at("command_id")?;
    let status = read_symbol(r, &RESULT_STATUS).at("status")?;
    let detail = r.string().at("detail")?;
    let at = r.opt_str().at("at")?;
    let prev = if previous == Previous::Always || !r.at_end() {
        r.map_str().at("previous")?
    } else {
        Vec::new()
    };
    let check = || -> Result<ActionResult> {
        Ok(ActionResult {
            command_id: non_empty("command_id", command_id)?,
            status,
            detail,
            at: opt_time("at", at)?,
            previous: prev
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    };
    Ok(check())
}

pub(super) fn write_result(x: &ActionResult) -> Vec<u8> {
    let mut w = Writer::default();
    result_to(&mut w, x);
    w.into_bytes()
}

/// Appends a `ActionResult` datum to `w`.
pub(super) fn result_to(w: &mut Writer, x: &ActionResult) {
    w.str(&x.command_id);
    write_symbol(w, &RESULT_STATUS, &x.status);
    w.str(&x.detail);
    write_opt_time(w, x.at);
    w.map_str(
        x.previous.len(),
        x.previous.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
}

pub(super) fn read_approval(datum: &[u8]) -> Result<Approval> {
    whole(datum, approval_at)
}

/// Reads one `Approval` datum at the reader's position: `Err` when the bytes
/// do not fit the schema (the position is then lost), `Ok(Err)` when the
/// datum is whole but its content is refused.
pub(super) fn approval_at(r: &mut Reader<'_>) -> Result<Result<Approval>> {
    let command_id = r.str().at("command_id")?;
    let decision = read_symbol(r, &DECISION).at("decision")?;
    let by = r.str().at("by")?;
    let at = r.opt_str().at("at")?;
    let sig = r.opt_str().at("sig")?;
    let check = || -> Result<Approval> {
        Ok(Approval {
            command_id: non_empty("command_id", command_id)?,
            decision,
            by: non_empty("by", by)?,
            at: opt_time("at", at)?,
            sig: sig.filter(|s| !s.is_empty()).map(str::to_owned),
        })
    };
    Ok(check())
}

pub(super) fn write_approval(x: &Approval) -> Vec<u8> {
    let mut w = Writer::default();
    approval_to(&mut w, x);
    w.into_bytes()
}

/// Appends a `Approval` datum to `w`.
pub(super) fn approval_to(w: &mut Writer, x: &Approval) {
    w.str(&x.command_id);
    write_symbol(w, &DECISION, &x.decision);
    w.str(&x.by);
    write_opt_time(w, x.at);
    write_opt_str(w, x.sig.as_ref());
}

/// A datum of the `Control` schema before `reload_policy` (no last
/// field) reads as a kill switch.
pub(super) fn read_control(datum: &[u8]) -> Result<Control> {
    whole(datum, |r| control_fields(r, true))
}

/// Reads one `Control` datum at the reader's position: `Err` when the bytes
/// do not fit the schema (the position is then lost), `Ok(Err)` when the
/// datum is whole but its content is refused.
pub(super) fn control_at(r: &mut Reader<'_>) -> Result<Result<Control>> {
    control_fields(r, false)
}

fn control_fields(r: &mut Reader<'_>, tail_optional: bool) -> Result<Result<Control>> {
    let scope = r.str().at("scope")?;
    let kill_switch = r.boolean().at("kill_switch")?;
    let until = r.opt_str().at("until")?;
    let by = r.opt_str().at("by")?;
    let reload_policy = if tail_optional && r.at_end() {
        false
    } else {
        r.boolean().at("reload_policy")?
    };
    let check = || -> Result<Control> {
        let scope = Scope::parse(scope).ok_or_else(|| {
            invalid(
                "scope",
                format!("{scope:?} is not global, service:NAME or runbook:NAME"),
            )
        })?;
        let kill_switch = if reload_policy {
            crate::records::input::reload_only(kill_switch)?
        } else {
            kill_switch
        };
        Ok(Control {
            scope,
            kill_switch,
            until: opt_time("until", until)?,
            by: by.map(str::to_owned),
            reload_policy,
        })
    };
    Ok(check())
}

pub(super) fn write_control(x: &Control) -> Vec<u8> {
    let mut w = Writer::default();
    control_to(&mut w, x);
    w.into_bytes()
}

/// Appends a `Control` datum to `w`.
pub(super) fn control_to(w: &mut Writer, x: &Control) {
    w.display(&x.scope);
    w.boolean(x.kill_switch);
    write_opt_time(w, x.until);
    write_opt_str(w, x.by.as_ref());
    w.boolean(x.reload_policy);
}

// Outputs.

pub(super) fn read_burn_alert(datum: &[u8]) -> Result<BurnAlert> {
    let mut r = Reader::new(datum);
    let b = BurnAlert {
        slo: r.string().at("slo")?,
        service: r.string().at("service")?,
        severity: read_symbol(&mut r, &SEVERITY).at("severity")?,
        long_window: r.string().at("long_window")?,
        short_window: r.string().at("short_window")?,
        factor: r.double().at("factor")?,
        burn_long: r.opt_double().at("burn_long")?,
        burn_short: r.opt_double().at("burn_short")?,
        state: read_symbol(&mut r, &BURN_STATE).at("state")?,
        budget_remaining: r.opt_double().at("budget_remaining")?,
    };
    r.finish()?;
    Ok(b)
}

pub(super) fn write_burn_alert(b: &BurnAlert) -> Vec<u8> {
    let mut w = Writer::default();
    w.str(&b.slo);
    w.str(&b.service);
    write_symbol(&mut w, &SEVERITY, &b.severity);
    w.str(&b.long_window);
    w.str(&b.short_window);
    w.double(b.factor);
    w.opt(b.burn_long, Writer::double);
    w.opt(b.burn_short, Writer::double);
    write_symbol(&mut w, &BURN_STATE, &b.state);
    w.opt(b.budget_remaining, Writer::double);
    w.into_bytes()
}

pub(super) fn read_incident(datum: &[u8]) -> Result<Incident> {
    let mut r = Reader::new(datum);
    let id = r.string().at("id")?;
    let service = r.string().at("service")?;
    let state = read_symbol(&mut r, &INCIDENT_STATE).at("state")?;
    let source = r.string().at("trigger.source")?;
    let alertname = r.string().at("trigger.alertname")?;
    let fingerprint = r.string().at("trigger.fingerprint")?;
    let starts_at = r.str().at("trigger.starts_at")?;
    let trigger_labels = r.map_str().at("trigger.labels")?;
    let reason = r.string().at("reason")?;
    let runbook = r.opt_str().at("runbook")?;
    r.finish()?;
    Ok(Incident {
        id,
        service,
        state,
        trigger: Trigger {
            source,
            alertname,
            fingerprint,
            starts_at: time("trigger.starts_at", starts_at)?,
            labels: labels(&trigger_labels, None),
        },
        reason,
        runbook: runbook.map(str::to_owned),
    })
}

pub(super) fn write_incident(i: &Incident) -> Vec<u8> {
    let mut w = Writer::default();
    w.str(&i.id);
    w.str(&i.service);
    write_symbol(&mut w, &INCIDENT_STATE, &i.state);
    w.str(&i.trigger.source);
    w.str(&i.trigger.alertname);
    w.str(&i.trigger.fingerprint);
    w.display(&i.trigger.starts_at);
    write_labels(&mut w, &i.trigger.labels);
    w.str(&i.reason);
    write_opt_str(&mut w, i.runbook.as_ref());
    w.into_bytes()
}

pub(super) fn read_command(datum: &[u8]) -> Result<Command> {
    let mut r = Reader::new(datum);
    let id = r.string().at("id")?;
    let incident = r.string().at("incident")?;
    let runbook = r.string().at("runbook")?;
    let action = r.string().at("action")?;
    let target = r.string().at("target")?;
    let params = r.map_str().at("params")?;
    let args = strings(&mut r).at("args")?;
    let tier = r.int().at("tier")?;
    let deadline = r.str().at("deadline")?;
    let timeout = r.string().at("timeout")?;
    let rollback_of = r.opt_str().at("rollback_of")?;
    let service = r.string().at("service")?;
    r.finish()?;
    Ok(Command {
        id,
        incident,
        runbook,
        action,
        target,
        params: string_map(params),
        args,
        tier: u8::try_from(tier).map_err(|_| invalid("tier", format!("{tier} is not 0..=255")))?,
        deadline: time("deadline", deadline)?,
        timeout,
        rollback_of: rollback_of.map(str::to_owned),
        service,
    })
}

pub(super) fn write_command(c: &Command) -> Vec<u8> {
    let mut w = Writer::default();
    w.str(&c.id);
    w.str(&c.incident);
    w.str(&c.runbook);
    w.str(&c.action);
    w.str(&c.target);
    write_map(&mut w, &c.params);
    write_strings(&mut w, &c.args);
    w.int(i32::from(c.tier));
    w.display(&c.deadline);
    w.str(&c.timeout);
    write_opt_str(&mut w, c.rollback_of.as_ref());
    w.str(&c.service);
    w.into_bytes()
}

pub(super) fn read_approval_request(datum: &[u8]) -> Result<ApprovalRequest> {
    let mut r = Reader::new(datum);
    let command_id = r.string().at("command_id")?;
    let incident = r.string().at("incident")?;
    let runbook = r.string().at("runbook")?;
    let summary = r.string().at("summary")?;
    let expires = r.str().at("expires")?;
    let service = r.string().at("service")?;
    let action = r.string().at("action")?;
    let target = r.string().at("target")?;
    let approvers = strings(&mut r).at("approvers")?;
    r.finish()?;
    Ok(ApprovalRequest {
        command_id,
        incident,
        runbook,
        summary,
        expires: time("expires", expires)?,
        service,
        action,
        target,
        approvers,
    })
}

pub(super) fn write_approval_request(a: &ApprovalRequest) -> Vec<u8> {
    let mut w = Writer::default();
    w.str(&a.command_id);
    w.str(&a.incident);
    w.str(&a.runbook);
    w.str(&a.summary);
    w.display(&a.expires);
    w.str(&a.service);
    w.str(&a.action);
    w.str(&a.target);
    write_strings(&mut w, &a.approvers);
    w.into_bytes()
}

pub(super) fn read_escalation(datum: &[u8]) -> Result<Escalation> {
    let mut r = Reader::new(datum);
    let e = Escalation {
        incident: r.string().at("incident")?,
        service: r.string().at("service")?,
        severity: read_symbol(&mut r, &SEVERITY).at("severity")?,
        reason: read_symbol(&mut r, &ESCALATION_REASON).at("reason")?,
        summary: r.string().at("summary")?,
        tried: r
            .array(|r| {
                Ok(Tried {
                    command_id: r.string()?,
                    action: r.string()?,
                    target: r.string()?,
                    outcome: r.string()?,
                })
            })
            .at("tried")?,
        context: string_map(r.map_str().at("context")?),
    };
    r.finish()?;
    Ok(e)
}

pub(super) fn write_escalation(e: &Escalation) -> Vec<u8> {
    let mut w = Writer::default();
    w.str(&e.incident);
    w.str(&e.service);
    write_symbol(&mut w, &SEVERITY, &e.severity);
    write_symbol(&mut w, &ESCALATION_REASON, &e.reason);
    w.str(&e.summary);
    w.array(&e.tried, |w, t| {
        w.str(&t.command_id);
        w.str(&t.action);
        w.str(&t.target);
        w.str(&t.outcome);
    });
    write_map(&mut w, &e.context);
    w.into_bytes()
}

pub(super) fn read_audit(datum: &[u8]) -> Result<Audit> {
    let mut r = Reader::new(datum);
    let seq = r.long().at("seq")?;
    let ts = r.str().at("ts")?;
    let service = r.string().at("service")?;
    let decision = r.string().at("decision")?;
    let incident = r.opt_str().at("incident")?;
    let runbook = r.opt_str().at("runbook")?;
    let inputs = strings(&mut r).at("inputs")?;
    let reasons = strings(&mut r).at("reasons")?;
    let guardrails = r
        .array(|r| {
            Ok(GuardrailCheck {
                name: r.string()?,
                passed: r.boolean()?,
                detail: r.string()?,
            })
        })
        .at("guardrails")?;
    let outputs = strings(&mut r).at("outputs")?;
    let policy_version = r.string().at("policy_version")?;
    let prev_hash = r.string().at("prev_hash")?;
    let hash = r.string().at("hash")?;
    r.finish()?;
    Ok(Audit {
        seq: u64::try_from(seq).map_err(|_| invalid("seq", format!("{seq} is negative")))?,
        ts: time("ts", ts)?,
        service,
        decision,
        incident: incident.map(str::to_owned),
        runbook: runbook.map(str::to_owned),
        inputs,
        reasons,
        guardrails,
        outputs,
        policy_version,
        prev_hash,
        hash,
    })
}

pub(super) fn write_audit(a: &Audit) -> std::result::Result<Vec<u8>, AvroError> {
    let seq = i64::try_from(a.seq).map_err(|_| AvroError::OutOfRange {
        field: "seq",
        value: a.seq.to_string(),
        avro_type: "long",
    })?;
    let mut w = Writer::default();
    w.long(seq);
    w.display(&a.ts);
    w.str(&a.service);
    w.str(&a.decision);
    write_opt_str(&mut w, a.incident.as_ref());
    write_opt_str(&mut w, a.runbook.as_ref());
    write_strings(&mut w, &a.inputs);
    write_strings(&mut w, &a.reasons);
    w.array(&a.guardrails, |w, g| {
        w.str(&g.name);
        w.boolean(g.passed);
        w.str(&g.detail);
    });
    write_strings(&mut w, &a.outputs);
    w.str(&a.policy_version);
    w.str(&a.prev_hash);
    w.str(&a.hash);
    Ok(w.into_bytes())
}
