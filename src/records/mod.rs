//! Record types: inputs the engine consumes and outputs it produces, in
//! their JSON forms (DESIGN.md) and their Avro forms (`schemas/`).

pub mod avro;
pub mod input;
pub mod labels;
pub mod line;
pub mod output;
pub mod value;

pub use input::{
    ActionResult, Alert, AlertStatus, Approval, Change, ChangeState, Control, DecodeError, Input,
    InputKind, MetricRef, MetricSample, Record, ResultStatus, Scope, Verdict,
};
pub use labels::{LabelBuf, Labels, LabelsRef};
pub use output::{
    ApprovalRequest, Audit, BurnAlert, BurnState, Command, Emitted, Escalation, EscalationReason,
    GuardrailCheck, Incident, IncidentState, Output, Severity, Tried, Trigger,
};
pub use value::Fixed;
