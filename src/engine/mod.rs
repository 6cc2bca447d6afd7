//! The deterministic decision core.
//!
//! [`Engine::process`] takes one input record at a time, in event-time
//! order, and appends the output records it decides on. Before a record is
//! handled, event time advances to the record's `ts`: every minute boundary
//! crossed evaluates the SLO burn rates (over windows ending at that
//! boundary, so records stamped at or after it are not yet counted), and
//! every deadline reached fires (approval expiry, missing results,
//! validation). Decisions due at the same instant are taken in order of
//! SLO impact.
//!
//! There is no clock, no randomness and no hash-order iteration in here:
//! the same records and policy give the same outputs, byte for byte.

mod audit;
mod decide;
mod guardrails;
mod ids;
mod lifecycle;
mod reload;
mod state;

use std::sync::Arc;

use crate::policy::Policy;
use crate::records::{Audit, Emitted, Fixed, GuardrailCheck, Input, MetricRef, Output, Record};
use crate::slo::{SeriesId, SloSet};
use crate::time::{Timestamp, MINUTE};

pub use audit::{canonical_json, check_link, compute_hash, verify_chain, ChainError, GENESIS};
pub use decide::alert_severity;
pub use ids::{command_id, fingerprint, incident_id, rollback_id};
pub use reload::RELOADED_POLICY;

use audit::Chains;
use state::State;

/// How the reason of an incident resolved by a confirmed fix begins.
pub const FIX_CONFIRMED: &str = "fix confirmed";

/// Why the engine refused a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("record at {ts} is earlier than event time already reached ({now})")]
    Late { ts: Timestamp, now: Timestamp },
}

/// Counters a caller can show or export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub open_incidents: usize,
    pub series: usize,
    pub pending_timers: usize,
}

/// The decision core for one policy.
pub struct Engine {
    policy: Arc<Policy>,
    slos: SloSet,
    state: State,
    chains: Chains,
    now: Option<Timestamp>,
    next_boundary: i64,
    /// Event time of the next [`State::sweep`].
    next_sweep: i64,
    /// SLO indices by service, for impact ordering.
    slos_by_service: std::collections::HashMap<String, Vec<usize>>,
    /// Audit chain for decisions that belong to no service.
    global_chain: String,
}

/// One decision being assembled: its outputs and the audit that explains it.
pub(crate) struct Decision {
    ts: Timestamp,
    service: String,
    kind: &'static str,
    incident: Option<String>,
    runbook: Option<String>,
    inputs: Vec<String>,
    reasons: Vec<String>,
    guardrails: Vec<GuardrailCheck>,
    outputs: Vec<Output>,
}

impl Decision {
    pub(crate) fn new(ts: Timestamp, service: &str, kind: &'static str, input: String) -> Decision {
        Decision {
            ts,
            service: service.to_string(),
            kind,
            incident: None,
            runbook: None,
            inputs: vec![input],
            reasons: Vec::new(),
            guardrails: Vec::new(),
            outputs: Vec::new(),
        }
    }

    pub(crate) fn reason(&mut self, r: impl Into<String>) -> &mut Self {
        self.reasons.push(r.into());
        self
    }

    pub(crate) fn emit(&mut self, o: Output) -> &mut Self {
        self.outputs.push(o);
        self
    }
}

fn output_ref(o: &Output) -> String {
    match o {
        Output::BurnAlert(b) => format!("burn_alert:{}:{}:{}", b.slo, b.long_window, state_str(b)),
        Output::Incident(i) => format!("incident:{}:{}", i.id, i.state.as_str()),
        Output::Command(c) => format!("command:{}", c.id),
        Output::ApprovalRequest(a) => format!("approval_request:{}", a.command_id),
        Output::Escalation(e) => format!("escalation:{}:{}", e.incident, e.reason.as_str()),
        Output::Audit(a) => format!("audit:{}:{}", a.service, a.seq),
    }
}

fn state_str(b: &crate::records::BurnAlert) -> &'static str {
    match b.state {
        crate::records::BurnState::Firing => "firing",
        crate::records::BurnState::Resolved => "resolved",
    }
}

impl Engine {
    pub fn new(policy: Arc<Policy>) -> Engine {
        let mut slos_by_service: std::collections::HashMap<String, Vec<usize>> = Default::default();
        for (i, s) in policy.slos.iter().enumerate() {
            slos_by_service
                .entry(s.service.clone())
                .or_default()
                .push(i);
        }
        let mut state = State::default();
        state.instances.configure(&policy);
        Engine {
            slos: SloSet::new(&policy),
            policy,
            state,
            chains: Chains::default(),
            now: None,
            next_boundary: 0,
            next_sweep: i64::MIN,
            slos_by_service,
            global_chain: "global".to_string(),
        }
    }

    /// Names the audit chain of decisions that belong to no service
    /// (unknown command ids, global and runbook kill switches); `global` by
    /// default. Live engines use one chain per partition, since each
    /// partition's core sees its own copy of broadcast control records.
    /// Keeps every SLO tier window's burn rate at each minute evaluation
    /// for metrics ([`SloSet::last_burn_rates`]); outputs are unchanged.
    pub fn with_burn_rate_report(mut self) -> Engine {
        self.slos.report_burn_rates();
        self
    }

    pub fn with_global_chain(mut self, name: impl Into<String>) -> Engine {
        self.global_chain = name.into();
        self
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Event time reached so far.
    pub fn now(&self) -> Option<Timestamp> {
        self.now
    }

    pub fn slos(&self) -> &SloSet {
        &self.slos
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            open_incidents: self.state.incidents.len(),
            series: self.slos.series_count(),
            pending_timers: self.state.timers.len(),
        }
    }

    /// Incidents open (not yet resolved or closed).
    pub fn open_incidents(&self) -> usize {
        self.state.incidents.len()
    }

    /// Entries kept after their incident closed, each forgotten at a sweep
    /// once it can no longer change a decision: closed incidents' alert
    /// keys (kept [`state::CLOSED_KEEP`]) and the targets in the guardrails'
    /// command history (kept for the longest window that counts them).
    pub fn remembered(&self) -> usize {
        self.state.closed.len() + self.state.actions.values().map(|t| t.len()).sum::<usize>()
    }

    /// The state of every open incident (for metrics; read-only).
    pub fn open_incident_states(&self) -> impl Iterator<Item = crate::records::IncidentState> + '_ {
        self.state.incidents.values().map(|i| i.state)
    }

    /// The kill switches on at the event time reached (for metrics;
    /// read-only).
    pub fn active_kill_switches(&self) -> impl Iterator<Item = &crate::records::Scope> + '_ {
        let now = self.now;
        self.state
            .kill
            .iter()
            .filter(move |(_, until)| match (until, now) {
                (Some(u), Some(n)) => n < *u,
                _ => true,
            })
            .map(|(s, _)| s)
    }

    /// Handles one record; outputs are appended to `out` in decision order.
    pub fn process(&mut self, rec: &Record, out: &mut Vec<Emitted>) -> Result<(), EngineError> {
        self.advance(rec.ts, out)?;
        match &rec.input {
            Input::Metric(m) => {
                if self.state.instances.active() {
                    self.state.instances.observe(rec.ts, m.labels.as_ref());
                }
                self.slos.observe(rec.ts, m)
            }
            Input::Alerts(alerts) => self.on_alerts(rec.ts, alerts, out),
            Input::Change(c) => self.on_change(c),
            Input::Result(r) => self.on_result(rec.ts, r, out),
            Input::Approval(a) => self.on_approval(rec.ts, a, out),
            Input::Control(c) => self.on_control(rec.ts, c, out),
            Input::Tick => {}
        }
        Ok(())
    }

    /// Handles one metric sample at event time `ts`, as [`Engine::process`]
    /// handles a metric record; the sample may borrow a decoder's buffers.
    /// `raw`, when given, is the bytes its name and labels were decoded
    /// from (an Avro datum's series part): [`Engine::known_series`] finds
    /// the series by them from then on.
    pub fn process_metric(
        &mut self,
        ts: Timestamp,
        m: MetricRef<'_>,
        raw: Option<&[u8]>,
        out: &mut Vec<Emitted>,
    ) -> Result<(), EngineError> {
        self.advance(ts, out)?;
        // While instances are counted every sample takes this path
        // (`known_series` finds nothing), so its bytes are not kept.
        let raw = if self.state.instances.active() {
            self.state.instances.observe(ts, m.labels);
            None
        } else {
            raw
        };
        self.slos.observe_ref(ts, m, raw);
        Ok(())
    }

    /// The series whose name and labels were decoded from `raw` by an
    /// earlier [`Engine::process_metric`], and its metric name: a sample
    /// with the same series bytes can go to [`Engine::process_series`]
    /// without its labels being decoded. `None` while a blast radius
    /// counts instances, which needs every sample's labels.
    pub fn known_series(&self, raw: &[u8]) -> Option<(SeriesId, &str)> {
        if self.state.instances.active() {
            return None;
        }
        self.slos.find_raw(raw)
    }

    /// Handles a sample of a series found by [`Engine::known_series`] with
    /// value `value` at event time `ts`: the same as [`Engine::process_metric`]
    /// with the decoded sample.
    pub fn process_series(
        &mut self,
        ts: Timestamp,
        id: SeriesId,
        value: Fixed,
        out: &mut Vec<Emitted>,
    ) -> Result<(), EngineError> {
        self.advance(ts, out)?;
        self.slos.observe_id(ts, id, value);
        Ok(())
    }

    /// Moves event time to `ts`, firing every boundary and deadline on the way.
    pub fn advance(&mut self, ts: Timestamp, out: &mut Vec<Emitted>) -> Result<(), EngineError> {
        let Some(now) = self.now else {
            self.now = Some(ts);
            self.next_boundary = ts.floor(MINUTE).0 + MINUTE;
            return Ok(());
        };
        if ts < now {
            return Err(EngineError::Late { ts, now });
        }
        loop {
            if !self.slos.any_active() && self.next_boundary <= ts.0 {
                // No SLO has traffic in its windows or a tier firing, so no
                // boundary up to `ts` can change anything: skip them.
                self.next_boundary = ts.floor(MINUTE).0 + MINUTE;
            }
            let timer = self.state.timers.first().map(|t| t.0).filter(|t| *t <= ts);
            let boundary = Some(Timestamp(self.next_boundary)).filter(|b| *b <= ts);
            match (boundary, timer) {
                (Some(b), t) if t.is_none_or(|t| b <= t) => {
                    self.now = Some(b);
                    self.next_boundary += MINUTE;
                    self.on_boundary(b, out);
                }
                (_, Some(t)) => {
                    self.now = Some(t);
                    self.on_timers(t, out);
                }
                _ => break,
            }
        }
        self.now = Some(ts);
        if ts.0 >= self.next_sweep {
            self.state.sweep(ts, &self.policy);
            self.next_sweep = ts.0 + state::SWEEP_EVERY;
        }
        Ok(())
    }

    /// Seals a decision: its outputs, then its audit record.
    pub(crate) fn commit(&mut self, d: Decision, out: &mut Vec<Emitted>) {
        let refs = d.outputs.iter().map(output_ref).collect();
        for o in d.outputs {
            out.push(Emitted {
                ts: d.ts,
                output: o,
            });
        }
        let audit = self.chains.seal(Audit {
            seq: 0,
            ts: d.ts,
            service: d.service,
            decision: d.kind.to_string(),
            incident: d.incident,
            runbook: d.runbook,
            inputs: d.inputs,
            reasons: d.reasons,
            guardrails: d.guardrails,
            outputs: refs,
            policy_version: self.policy.version.clone(),
            prev_hash: String::new(),
            hash: String::new(),
        });
        out.push(Emitted {
            ts: d.ts,
            output: Output::Audit(audit),
        });
    }

    /// SLO impact of an incident on `service`, preferring its own SLO.
    pub(crate) fn impact(&self, service: &str, slo: Option<usize>) -> f64 {
        let slos = &self.policy.slos;
        let of = |i: usize| self.slos.impact(i, slos[i].period);
        match slo {
            Some(i) => of(i),
            None => self
                .slos_by_service
                .get(service)
                .map_or(0.0, |v| v.iter().map(|i| of(*i)).fold(0.0, f64::max)),
        }
    }
}
