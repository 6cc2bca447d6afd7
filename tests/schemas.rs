//! The Avro forms of the records: the files in `schemas/`, round trips
//! through the hand-written codecs, agreement with the JSON forms and with
//! apache_avro driven by the same files, the single-object and Confluent
//! framings, and refusal (never a panic) of malformed bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use proptest::prelude::*;
use serde_json::Value as Json;

use selfheal::records::avro::{self, Framing, RecordType};
use selfheal::records::{
    Alert, AlertStatus, ApprovalRequest, Audit, BurnAlert, BurnState, Command, DecodeError,
    Escalation, EscalationReason, Fixed, GuardrailCheck, Incident, IncidentState, Input, InputKind,
    Labels, MetricSample, Output, Severity, Tried, Trigger,
};
use selfheal::time::Timestamp;

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

fn schema_files() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(schema_dir()).expect("schemas/ exists") {
        let path = entry.expect("readable entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("avsc") {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("utf-8 name");
            let text = std::fs::read_to_string(&path).expect("readable schema");
            out.insert(stem.to_string(), text);
        }
    }
    out
}

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).expect("test timestamp")
}

// ---------------------------------------------------------------------------
// Generic bridges between the JSON form and apache_avro, driven only by the
// schema, so they check field names and types without knowing our codecs.

/// The Avro value of a JSON form under `schema`; a key the record lacks
/// takes the field's default. Panics (in tests) on anything that does not
/// fit, including a JSON key the schema has no field for.
fn to_avro(schema: &Schema, j: &Json, path: &str) -> Avro {
    match (schema, j) {
        (Schema::Null, Json::Null) => Avro::Null,
        (Schema::Boolean, Json::Bool(b)) => Avro::Boolean(*b),
        (Schema::Int, Json::Number(n)) => {
            let n = n.as_i64().and_then(|n| i32::try_from(n).ok());
            Avro::Int(n.unwrap_or_else(|| panic!("{path}: not an int")))
        }
        (Schema::Long, Json::Number(n)) => {
            Avro::Long(n.as_i64().unwrap_or_else(|| panic!("{path}: not a long")))
        }
        (Schema::Double, Json::Number(n)) => {
            Avro::Double(n.as_f64().unwrap_or_else(|| panic!("{path}: not a double")))
        }
        (Schema::String, Json::String(s)) => Avro::String(s.clone()),
        (Schema::Enum(e), Json::String(s)) => {
            let i = e.symbols.iter().position(|x| x == s);
            let i = i.unwrap_or_else(|| panic!("{path}: {s:?} is not a symbol"));
            Avro::Enum(i as u32, s.clone())
        }
        (Schema::Union(u), j) => {
            let variants = u.variants();
            assert_eq!(variants.len(), 2, "{path}: only [null, T] unions");
            assert_eq!(variants[0], Schema::Null, "{path}: null comes first");
            if j.is_null() {
                Avro::Union(0, Box::new(Avro::Null))
            } else {
                Avro::Union(1, Box::new(to_avro(&variants[1], j, path)))
            }
        }
        (Schema::Map(m), Json::Object(o)) => Avro::Map(
            o.iter()
                .map(|(k, v)| (k.clone(), to_avro(&m.types, v, &format!("{path}.{k}"))))
                .collect(),
        ),
        (Schema::Array(a), Json::Array(v)) => Avro::Array(
            v.iter()
                .enumerate()
                .map(|(i, x)| to_avro(&a.items, x, &format!("{path}[{i}]")))
                .collect(),
        ),
        (Schema::Record(r), Json::Object(o)) => {
            for k in o.keys() {
                assert!(
                    r.fields.iter().any(|f| &f.name == k),
                    "{path}: JSON key {k:?} has no Avro field"
                );
            }
            Avro::Record(
                r.fields
                    .iter()
                    .map(|f| {
                        let p = format!("{path}.{}", f.name);
                        let v = o.get(&f.name).or(f.default.as_ref());
                        let v = v.unwrap_or_else(|| panic!("{p}: missing and no default"));
                        (f.name.clone(), to_avro(&f.schema, v, &p))
                    })
                    .collect(),
            )
        }
        (s, j) => panic!("{path}: {j} does not fit {s:?}"),
    }
}

/// The schema's field names equal the keys of the JSON form, at every
/// level of nesting (map keys are data, not names).
fn assert_same_names(schema: &Schema, j: &Json, path: &str) {
    match (schema, j) {
        (Schema::Record(r), Json::Object(o)) => {
            let fields: BTreeSet<&str> = r.fields.iter().map(|f| f.name.as_str()).collect();
            let keys: BTreeSet<&str> = o.keys().map(String::as_str).collect();
            assert_eq!(fields, keys, "{path}: Avro field names vs JSON keys");
            for f in &r.fields {
                assert_same_names(&f.schema, &o[&f.name], &format!("{path}.{}", f.name));
            }
        }
        (Schema::Array(a), Json::Array(v)) => {
            for (i, x) in v.iter().enumerate() {
                assert_same_names(&a.items, x, &format!("{path}[{i}]"));
            }
        }
        (Schema::Union(u), j) if !j.is_null() => {
            assert_same_names(&u.variants()[1], j, path);
        }
        _ => {}
    }
}

/// apache_avro's reading of our bytes: must use them all.
fn library_decode(t: RecordType, datum: &[u8]) -> Avro {
    let mut rest = datum;
    let v = apache_avro::from_avro_datum(avro::schema(t), &mut rest, None)
        .unwrap_or_else(|e| panic!("{t}: apache_avro refuses our datum: {e}"));
    assert!(
        rest.is_empty(),
        "{t}: {} bytes left by apache_avro",
        rest.len()
    );
    v
}

fn library_encode(t: RecordType, v: Avro) -> Vec<u8> {
    apache_avro::to_avro_datum(avro::schema(t), v)
        .unwrap_or_else(|e| panic!("{t}: apache_avro cannot write the JSON form: {e}"))
}

// ---------------------------------------------------------------------------
// Schema files.

/// The replay envelope of Avro replay files: a container-file record, not
/// a Kafka record type.
const REPLAY_RECORD: &str = "replay_record";

#[test]
fn every_schema_file_parses_and_matches_a_record_type() {
    let mut files = schema_files();
    assert!(files.remove(REPLAY_RECORD).is_some());
    let names: BTreeSet<&str> = files.keys().map(String::as_str).collect();
    let types: BTreeSet<&str> = RecordType::ALL.iter().map(|t| t.name()).collect();
    assert_eq!(names, types, "schemas/*.avsc vs RecordType");
    for (name, text) in &files {
        let parsed = Schema::parse_str(text).unwrap_or_else(|e| panic!("{name}.avsc: {e}"));
        let t = RecordType::from_name(name).expect("checked above");
        // The embedded copy is the file on disk.
        assert_eq!(&parsed, avro::schema(t), "{name}");
    }
}

/// Walks the raw schema JSON: every named type has a doc, every field has
/// a doc, optional fields are `["null", T]` with default null.
fn check_schema_json(j: &Json, path: &str, problems: &mut Vec<String>) {
    match j {
        Json::Object(o) => {
            let ty = o.get("type").and_then(Json::as_str).unwrap_or("");
            if matches!(ty, "record" | "enum") && !o.contains_key("doc") {
                problems.push(format!("{path}: {ty} without doc"));
            }
            if let Some(Json::Array(fields)) = o.get("fields") {
                for f in fields {
                    let name = f.get("name").and_then(Json::as_str).unwrap_or("?");
                    let p = format!("{path}.{name}");
                    if f.get("doc").is_none() {
                        problems.push(format!("{p}: field without doc"));
                    }
                    if p == "replay_record.data" {
                        // The one required union: checked on its own below.
                    } else if let Some(Json::Array(branches)) = f.get("type") {
                        if branches.first() != Some(&Json::from("null")) || branches.len() != 2 {
                            problems.push(format!("{p}: union is not [\"null\", T]"));
                        }
                        if f.get("default") != Some(&Json::Null) {
                            problems.push(format!("{p}: optional field without default null"));
                        }
                    }
                    if let Some(t) = f.get("type") {
                        check_schema_json(t, &p, problems);
                    }
                }
            }
            for k in ["items", "values"] {
                if let Some(x) = o.get(k) {
                    check_schema_json(x, path, problems);
                }
            }
        }
        Json::Array(v) => v.iter().for_each(|x| check_schema_json(x, path, problems)),
        _ => {}
    }
}

#[test]
fn schemas_are_documented_and_namespaced() {
    let mut problems = Vec::new();
    for (name, text) in schema_files() {
        let j: Json = serde_json::from_str(&text).expect("JSON");
        if j.get("namespace").and_then(Json::as_str) != Some("io.selfheal") {
            problems.push(format!("{name}: namespace is not io.selfheal"));
        }
        check_schema_json(&j, &name, &mut problems);
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn replay_record_embeds_the_input_schemas() {
    use apache_avro::schema::UnionSchema;
    use selfheal::records::avro::envelope;

    let text = &schema_files()[REPLAY_RECORD];
    let parsed = Schema::parse_str(text).expect("replay_record.avsc parses");
    assert_eq!(&parsed, envelope::schema(), "the embedded copy is the file");
    let Schema::Record(r) = &parsed else {
        panic!("not a record")
    };
    let fields: Vec<&str> = r.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(fields, ["ts", "kind", "data"]);
    assert_eq!(r.fields[0].schema, Schema::TimestampMillis);
    let Schema::Enum(kinds) = &r.fields[1].schema else {
        panic!("kind is not an enum")
    };
    let all = [
        InputKind::Metric,
        InputKind::Alert,
        InputKind::Change,
        InputKind::Result,
        InputKind::Approval,
        InputKind::Control,
        InputKind::Tick,
    ];
    let names: Vec<&str> = all.iter().map(|k| k.as_str()).collect();
    assert_eq!(kinds.symbols, names);
    let Schema::Union(u): &Schema = &r.fields[2].schema else {
        panic!("data is not a union")
    };
    let u: &UnionSchema = u;
    let branches = u.variants();
    assert_eq!(branches[0], Schema::Null);
    let inputs = [
        RecordType::MetricSample,
        RecordType::Alert,
        RecordType::Change,
        RecordType::ActionResult,
        RecordType::Approval,
        RecordType::Control,
    ];
    // Each input schema, as in its own file; an array of alerts after Alert.
    let mut expected = vec![Schema::Null];
    for t in inputs {
        expected.push(avro::schema(t).clone());
        if t == RecordType::Alert {
            let Schema::Array(a) = &branches[3] else {
                panic!("branch 3 is not an array")
            };
            assert!(
                matches!(&*a.items, Schema::Ref { name } if name.name == "Alert"),
                "{:?}",
                a.items
            );
            expected.push(branches[3].clone());
        }
    }
    assert_eq!(branches, expected.as_slice());
    // Required, documented, in our namespace.
    assert!(r
        .fields
        .iter()
        .all(|f| f.default.is_none() && f.doc.is_some()));
    assert_eq!(r.name.namespace.as_deref(), Some("io.selfheal"));
}

#[test]
fn metric_schema_reads_the_adapters_datums() {
    // prometheus-kafka-adapter's schema: same fields, order and types.
    let adapter = Schema::parse_str(
        r#"{"namespace":"io.prometheus","type":"record","name":"Metric","fields":[
            {"name":"timestamp","type":"string"},{"name":"value","type":"string"},
            {"name":"name","type":"string"},
            {"name":"labels","type":{"type":"map","values":"string"}}]}"#,
    )
    .expect("adapter schema");
    let v = Avro::Record(vec![
        (
            "timestamp".into(),
            Avro::String("2026-03-01T10:00:00Z".into()),
        ),
        ("value".into(), Avro::String("42".into())),
        ("name".into(), Avro::String("up".into())),
        (
            "labels".into(),
            Avro::Map(
                [("__name__", "up"), ("service", "checkout")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), Avro::String(v.to_string())))
                    .collect(),
            ),
        ),
    ]);
    let datum = apache_avro::to_avro_datum(&adapter, v).expect("adapter datum");
    let got = avro::decode_value(InputKind::Metric, &avro::confluent_encode(7, &datum));
    let want = Input::Metric(MetricSample {
        name: "up".into(),
        labels: Labels::from_pairs([("service", "checkout")]),
        value: Fixed::from_units(42),
        timestamp: Some(ts("2026-03-01T10:00:00Z")),
    });
    assert_eq!(got, Ok(want));
}

// ---------------------------------------------------------------------------
// Inputs: representative JSON forms, each with every key (optional ones
// present) or with the optional keys left out.

const INPUTS: &[(InputKind, &str)] = &[
    (
        InputKind::Metric,
        r#"{"timestamp":"2026-03-01T10:00:00.250Z","value":"1234.5","name":"http_requests_total",
            "labels":{"service":"checkout","code":"200","région":"Zürich ☃ 東京"}}"#,
    ),
    (
        InputKind::Metric,
        r#"{"value":"-0.000001","name":"up","labels":{}}"#,
    ),
    (
        InputKind::Alert,
        r#"{"status":"firing","labels":{"alertname":"PodOOMKilled","service":"checkout","pod":"checkout-7d9f"},
            "annotations":{"summary":"conteneur tué (OOM) — ошибка"},"startsAt":"2026-03-01T10:00:00Z",
            "endsAt":"2026-03-01T11:00:00Z","fingerprint":"a1b2c3","generatorURL":"http://prom/graph?g0.expr=up"}"#,
    ),
    (
        InputKind::Alert,
        r#"{"status":"resolved","labels":{"alertname":"Ünïcødé"}}"#,
    ),
    (
        InputKind::Change,
        r#"{"service":"orders-db","kind":"migration","state":"started","id":"chg-42","at":"2026-03-01T10:00:00Z"}"#,
    ),
    (
        InputKind::Change,
        r#"{"service":"orders","kind":"deploy","state":"finished","id":"d-1"}"#,
    ),
    (
        InputKind::Result,
        r#"{"command_id":"cmd-1","status":"timed_out","detail":"no answer in 5m","at":"2026-03-01T10:05:00Z","previous":{"replicas":"3","restartedAt":"2026-03-01T09:00:00Z"}}"#,
    ),
    (
        InputKind::Result,
        r#"{"command_id":"cmd-2","status":"succeeded","detail":""}"#,
    ),
    (
        InputKind::Approval,
        r#"{"command_id":"cmd-1","decision":"approve","by":"alice@example.com","at":"2026-03-01T10:01:00Z","sig":"5d41402abc4b2a76b9719d911017c592ae5dcaad2e9fe2c5b1e4d7b7e9f0a1b2"}"#,
    ),
    (
        InputKind::Approval,
        r#"{"command_id":"cmd-3","decision":"reject","by":"bob"}"#,
    ),
    (
        InputKind::Control,
        r#"{"scope":"service:checkout","kill_switch":true,"until":"2026-03-02T00:00:00Z","by":"oncall","reload_policy":false}"#,
    ),
    (
        InputKind::Control,
        r#"{"scope":"global","kill_switch":false}"#,
    ),
    (
        InputKind::Control,
        r#"{"scope":"global","reload_policy":true,"by":"carol"}"#,
    ),
];

fn record_type(kind: InputKind) -> RecordType {
    avro::input_type(kind).expect("not a tick")
}

fn from_json(kind: InputKind, text: &str) -> Input {
    Input::from_json(kind, text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// The single-record inputs one datum decodes to.
fn per_datum(input: &Input) -> Vec<Input> {
    match input {
        Input::Alerts(a) => a.iter().map(|a| Input::Alerts(vec![a.clone()])).collect(),
        other => vec![other.clone()],
    }
}

#[test]
fn inputs_round_trip_rust_avro_rust() {
    for &(kind, text) in INPUTS {
        let input = from_json(kind, text);
        let datums = avro::encode_input(&input).expect("encodes");
        assert_eq!(datums.len(), per_datum(&input).len());
        for (datum, want) in datums.iter().zip(per_datum(&input)) {
            assert_eq!(avro::decode_input(kind, datum), Ok(want), "{text}");
        }
    }
}

#[test]
fn inputs_agree_with_their_json_form() {
    for &(kind, text) in INPUTS {
        let t = record_type(kind);
        let json: Json = serde_json::from_str(text).expect("JSON");
        let expected = to_avro(avro::schema(t), &json, t.name());
        let input = from_json(kind, text);
        let datums = avro::encode_input(&input).expect("encodes");
        // Our bytes, read by apache_avro, are the JSON form field by field.
        assert_eq!(library_decode(t, &datums[0]), expected, "{text}");
        // apache_avro's bytes of the JSON form decode to what the JSON
        // decoder makes of it.
        let theirs = library_encode(t, expected);
        assert_eq!(avro::decode_input(kind, &theirs), Ok(input), "{text}");
    }
    // The full forms name every field.
    for (kind, text) in [
        INPUTS[0], INPUTS[2], INPUTS[4], INPUTS[6], INPUTS[8], INPUTS[10],
    ] {
        let t = record_type(kind);
        let json: Json = serde_json::from_str(text).expect("JSON");
        assert_same_names(avro::schema(t), &json, t.name());
    }
}

#[test]
fn webhook_payload_becomes_one_datum_per_alert() {
    let a = r#"{"status":"firing","labels":{"alertname":"A"}}"#;
    let b = r#"{"status":"resolved","labels":{"alertname":"B"},"fingerprint":"f"}"#;
    let input = from_json(InputKind::Alert, &format!(r#"{{"alerts":[{a},{b}]}}"#));
    let datums = avro::encode_input(&input).expect("encodes");
    assert_eq!(datums.len(), 2);
    assert_eq!(
        avro::decode_input(InputKind::Alert, &datums[1]),
        Ok(from_json(InputKind::Alert, b))
    );
    assert!(avro::encode_input(&Input::Tick).is_err());
    assert!(avro::decode_input(InputKind::Tick, &[]).is_err());
}

/// Semantic problems give the JSON decoder's errors, whichever form.
#[test]
fn semantic_errors_match_the_json_decoder() {
    let cases: &[(InputKind, &str)] = &[
        (
            InputKind::Metric,
            r#"{"timestamp":"","value":"NaN","name":"x","labels":{}}"#,
        ),
        (
            InputKind::Metric,
            r#"{"timestamp":"","value":"+Inf","name":"x","labels":{}}"#,
        ),
        (
            InputKind::Metric,
            r#"{"timestamp":"","value":"12a","name":"x","labels":{}}"#,
        ),
        (
            InputKind::Metric,
            r#"{"timestamp":"","value":"1","name":"","labels":{}}"#,
        ),
        (
            InputKind::Metric,
            r#"{"timestamp":"yesterday","value":"1","name":"x","labels":{}}"#,
        ),
        (
            InputKind::Alert,
            r#"{"status":"firing","labels":{"service":"a"}}"#,
        ),
        (
            InputKind::Alert,
            r#"{"status":"firing","labels":{"alertname":""}}"#,
        ),
        (
            InputKind::Alert,
            r#"{"status":"firing","labels":{"alertname":"A"},"startsAt":"soon"}"#,
        ),
        (
            InputKind::Change,
            r#"{"service":"","kind":"deploy","state":"started","id":"1"}"#,
        ),
        (
            InputKind::Change,
            r#"{"service":"a","kind":"deploy","state":"started","id":""}"#,
        ),
        (
            InputKind::Result,
            r#"{"command_id":"","status":"failed","detail":""}"#,
        ),
        (
            InputKind::Approval,
            r#"{"command_id":"c","decision":"approve","by":""}"#,
        ),
        (
            InputKind::Control,
            r#"{"scope":"team:x","kill_switch":true}"#,
        ),
        (
            InputKind::Control,
            r#"{"scope":"service:","kill_switch":true}"#,
        ),
        (
            InputKind::Control,
            r#"{"scope":"global","kill_switch":true,"reload_policy":true}"#,
        ),
    ];
    for &(kind, text) in cases {
        let t = record_type(kind);
        let json: Json = serde_json::from_str(text).expect("JSON");
        let datum = library_encode(t, to_avro(avro::schema(t), &json, t.name()));
        let json_err = Input::from_json(kind, text).expect_err(text);
        assert_eq!(avro::decode_input(kind, &datum), Err(json_err), "{text}");
    }
}

#[test]
fn metric_name_may_come_from_the_name_label() {
    let text = r#"{"timestamp":"","value":"3","name":"","labels":{"__name__":"up","job":"x"}}"#;
    let json: Json = serde_json::from_str(text).expect("JSON");
    let t = RecordType::MetricSample;
    let datum = library_encode(t, to_avro(avro::schema(t), &json, "metric"));
    let Ok(Input::Metric(m)) = avro::decode_input(InputKind::Metric, &datum) else {
        panic!("not a metric")
    };
    assert_eq!(m.name, "up");
    assert_eq!(m.labels, Labels::from_pairs([("job", "x")]));
    assert_eq!(
        Ok(Input::Metric(m)),
        Input::from_json(InputKind::Metric, text)
    );
}

// ---------------------------------------------------------------------------
// Outputs: representative values, optional fields present and absent.

fn outputs() -> Vec<Output> {
    let labels = Labels::from_pairs([
        ("alertname", "PodOOMKilled"),
        ("pod", "checkout-7d9f"),
        ("zone", "São Paulo 🌧"),
    ]);
    let trigger = Trigger {
        source: "alert".into(),
        alertname: "PodOOMKilled".into(),
        fingerprint: "a1b2c3".into(),
        starts_at: ts("2026-03-01T10:00:00Z"),
        labels: labels.clone(),
    };
    vec![
        Output::BurnAlert(BurnAlert {
            slo: "checkout-availability".into(),
            service: "checkout".into(),
            severity: Severity::Page,
            long_window: "1h".into(),
            short_window: "5m".into(),
            factor: 14.4,
            burn_long: Some(15.2),
            burn_short: Some(20.0),
            state: BurnState::Firing,
            budget_remaining: Some(0.75),
        }),
        Output::BurnAlert(BurnAlert {
            slo: "s".into(),
            service: "svc".into(),
            severity: Severity::Ticket,
            long_window: "3d".into(),
            short_window: "6h".into(),
            factor: 1.0,
            burn_long: None,
            burn_short: None,
            state: BurnState::Resolved,
            budget_remaining: None,
        }),
        Output::Incident(Incident {
            id: "inc-1".into(),
            service: "checkout".into(),
            state: IncidentState::AwaitingApproval,
            trigger: trigger.clone(),
            reason: "runbook matched — tier 2".into(),
            runbook: Some("oom-restart".into()),
        }),
        Output::Incident(Incident {
            id: "inc-2".into(),
            service: "checkout".into(),
            state: IncidentState::Suppressed,
            trigger: Trigger {
                labels: Labels::new(),
                ..trigger
            },
            reason: String::new(),
            runbook: None,
        }),
        Output::Command(Command {
            id: "cmd-1".into(),
            incident: "inc-1".into(),
            runbook: "oom-restart".into(),
            action: "exec".into(),
            target: "checkout-7d9f".into(),
            params: [("namespace", "prod"), ("note", "redémarrage")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            args: vec![
                "kubectl".into(),
                "delete".into(),
                "pod".into(),
                "a b; rm -rf /".into(),
            ],
            tier: 1,
            deadline: ts("2026-03-01T10:02:00.500Z"),
            timeout: "5m".into(),
            rollback_of: Some("cmd-0".into()),
            service: "checkout".into(),
        }),
        Output::Command(Command {
            id: "cmd-2".into(),
            incident: "inc-1".into(),
            runbook: "r".into(),
            action: "restart".into(),
            target: "t".into(),
            params: BTreeMap::new(),
            args: Vec::new(),
            tier: 255,
            deadline: ts("2026-03-01T10:02:00Z"),
            timeout: "30s".into(),
            rollback_of: None,
            service: "checkout".into(),
        }),
        Output::ApprovalRequest(ApprovalRequest {
            command_id: "cmd-1".into(),
            incident: "inc-1".into(),
            runbook: "oom-restart".into(),
            summary: "Restart checkout-7d9f? ✔/✘".into(),
            expires: ts("2026-03-01T10:15:00Z"),
            service: "checkout".into(),
            action: "restart_pod".into(),
            target: "checkout-7d9f".into(),
            approvers: vec!["alice@example.com".into(), "Zoë".into()],
        }),
        Output::ApprovalRequest(ApprovalRequest {
            command_id: "c".into(),
            incident: "i".into(),
            runbook: "r".into(),
            summary: String::new(),
            expires: ts("1970-01-01T00:00:00Z"),
            service: "s".into(),
            action: "a".into(),
            target: "t".into(),
            approvers: Vec::new(),
        }),
        Output::Escalation(Escalation {
            incident: "inc-1".into(),
            service: "checkout".into(),
            severity: Severity::Page,
            reason: EscalationReason::ValidationFailed,
            summary: "restart did not help".into(),
            tried: vec![Tried {
                command_id: "cmd-1".into(),
                action: "restart_pod".into(),
                target: "checkout-7d9f".into(),
                outcome: "not validated".into(),
            }],
            context: [("slo", "checkout-availability"), ("résumé", "…")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }),
        Output::Escalation(Escalation {
            incident: "inc-3".into(),
            service: "db".into(),
            severity: Severity::Ticket,
            reason: EscalationReason::StaleData,
            summary: String::new(),
            tried: Vec::new(),
            context: BTreeMap::new(),
        }),
        Output::Audit(Audit {
            seq: 42,
            ts: ts("2026-03-01T10:00:00Z"),
            service: "checkout".into(),
            decision: "act".into(),
            incident: Some("inc-1".into()),
            runbook: Some("oom-restart".into()),
            inputs: vec!["alert PodOOMKilled a1b2c3".into()],
            reasons: vec!["tier 1".into(), "garde-fou passé ✓".into()],
            guardrails: vec![
                GuardrailCheck {
                    name: "rate_limit".into(),
                    passed: true,
                    detail: "1/3 in 1h".into(),
                },
                GuardrailCheck {
                    name: "change_freeze".into(),
                    passed: false,
                    detail: String::new(),
                },
            ],
            outputs: vec!["command cmd-1".into()],
            policy_version: "sha256:abc".into(),
            prev_hash: "0".repeat(64),
            hash: "f".repeat(64),
        }),
        Output::Audit(Audit {
            seq: 0,
            ts: ts("2026-03-01T10:00:00Z"),
            service: "s".into(),
            decision: "suppress".into(),
            incident: None,
            runbook: None,
            inputs: Vec::new(),
            reasons: Vec::new(),
            guardrails: Vec::new(),
            outputs: Vec::new(),
            policy_version: String::new(),
            prev_hash: String::new(),
            hash: String::new(),
        }),
    ]
}

#[test]
fn every_output_type_is_represented() {
    let covered: BTreeSet<RecordType> = outputs().iter().map(avro::output_type).collect();
    let all: BTreeSet<RecordType> = RecordType::ALL
        .into_iter()
        .filter(|t| t.input_kind().is_none())
        .collect();
    assert_eq!(covered, all);
}

#[test]
fn outputs_round_trip_rust_avro_rust() {
    for out in outputs() {
        let t = avro::output_type(&out);
        let datum = avro::encode_output(&out).expect("encodes");
        assert_eq!(avro::decode_output(t, &datum), Ok(out));
    }
}

#[test]
fn outputs_agree_with_their_json_form() {
    for out in outputs() {
        let t = avro::output_type(&out);
        let json = out.to_json_value();
        assert_same_names(avro::schema(t), &json, t.name());
        let expected = to_avro(avro::schema(t), &json, t.name());
        let datum = avro::encode_output(&out).expect("encodes");
        assert_eq!(library_decode(t, &datum), expected, "{t}");
        let theirs = library_encode(t, expected);
        assert_eq!(avro::decode_output(t, &theirs), Ok(out), "{t}");
    }
}

#[test]
fn outputs_refuse_out_of_range_values() {
    let Some(Output::Audit(mut a)) = outputs().pop() else {
        panic!("last output is an audit")
    };
    a.seq = u64::MAX;
    assert!(avro::encode_output(&Output::Audit(a)).is_err());
    assert!(avro::decode_output(RecordType::Alert, &[]).is_err());
}

// ---------------------------------------------------------------------------
// Framing.

#[test]
fn single_object_and_confluent_round_trip() {
    for &(kind, text) in INPUTS {
        let input = from_json(kind, text);
        let t = record_type(kind);
        let datum = &avro::encode_input(&input).expect("encodes")[0];
        let so = avro::single_object_encode(t, datum);
        assert_eq!(
            avro::detect_framing(&so),
            Ok((Framing::SingleObject(t), &datum[..]))
        );
        assert_eq!(avro::decode_value(kind, &so), Ok(input.clone()), "{text}");
        let cf = avro::confluent_encode(0xdead_beef, datum);
        assert_eq!(
            avro::detect_framing(&cf),
            Ok((Framing::Confluent(0xdead_beef), &datum[..]))
        );
        assert_eq!(avro::decode_value(kind, &cf), Ok(input.clone()), "{text}");
        let js = format!(" \n{text}");
        assert_eq!(
            avro::detect_framing(js.as_bytes()).map(|f| f.0),
            Ok(Framing::Json)
        );
        assert_eq!(avro::decode_value(kind, js.as_bytes()), Ok(input), "{text}");
    }
    for out in outputs() {
        let t = avro::output_type(&out);
        let so = avro::single_object_encode(t, &avro::encode_output(&out).expect("encodes"));
        let Ok((Framing::SingleObject(found), datum)) = avro::detect_framing(&so) else {
            panic!("{t}: not single-object")
        };
        assert_eq!(found, t);
        assert_eq!(avro::decode_output(found, datum), Ok(out));
    }
}

fn avro_error(r: Result<Input, DecodeError>) -> String {
    match r {
        Err(DecodeError::Avro(m)) => m,
        other => panic!("expected an Avro error, got {other:?}"),
    }
}

#[test]
fn framing_errors() {
    let datum = &avro::encode_input(&from_json(InputKind::Alert, INPUTS[3].1)).expect("encodes")[0];
    // A fingerprint that is none of ours is named in the error.
    let mut so = avro::single_object_encode(RecordType::Alert, datum);
    so[2..10].copy_from_slice(&0x0123_4567_89ab_cdefu64.to_le_bytes());
    let m = avro_error(avro::decode_value(InputKind::Alert, &so));
    assert!(m.contains("0x0123456789abcdef"), "{m}");
    // One of ours, but for another kind.
    let so = avro::single_object_encode(RecordType::Alert, datum);
    let m = avro_error(avro::decode_value(InputKind::Metric, &so));
    assert!(m.contains("alert"), "{m}");
    // Truncated headers, empty and unknown framings.
    for bad in [
        &so[..5],
        &[0x00, 1, 2][..],
        &[][..],
        &[0x7f, 1][..],
        &b"  "[..],
    ] {
        avro_error(avro::decode_value(InputKind::Alert, bad));
    }
    // Not UTF-8 after a brace.
    assert!(matches!(
        avro::decode_value(InputKind::Alert, b"{\xff}"),
        Err(DecodeError::Json(_))
    ));
}

/// Length of the part of an ActionResult datum written by the first schema
/// (everything before the `previous` map): the datum re-encoded with an
/// empty map, less the map's one end byte.
fn legacy_result_len(datum: &[u8]) -> usize {
    let Ok(Input::Result(mut r)) = avro::decode_input(InputKind::Result, datum) else {
        panic!("not a result datum")
    };
    r.previous.clear();
    let empty = avro::encode_input(&Input::Result(r))
        .expect("encodes")
        .remove(0);
    assert_eq!(empty.last(), Some(&0));
    empty.len() - 1
}

#[test]
fn truncated_and_padded_datums_are_refused() {
    let mut all: Vec<(Option<InputKind>, RecordType, Vec<u8>)> = Vec::new();
    for &(kind, text) in INPUTS {
        let datum = avro::encode_input(&from_json(kind, text))
            .expect("encodes")
            .remove(0);
        all.push((Some(kind), record_type(kind), datum));
    }
    for out in outputs() {
        let t = avro::output_type(&out);
        all.push((None, t, avro::encode_output(&out).expect("encodes")));
    }
    for (kind, t, datum) in all {
        let decode = |b: &[u8]| match kind {
            Some(k) => avro::decode_input(k, b).map(drop),
            None => avro::decode_output(t, b).map(drop),
        };
        // Reading is deterministic and the whole datum is needed, so every
        // proper prefix runs out of bytes; except that an action result
        // cut right after `at` is a datum of the schema before `previous`,
        // read with the empty map.
        let legacy = match kind {
            Some(InputKind::Result) => Some(legacy_result_len(&datum)),
            _ => None,
        };
        for n in 0..datum.len() {
            if Some(n) == legacy {
                let Ok(Input::Result(r)) = avro::decode_input(InputKind::Result, &datum[..n])
                else {
                    panic!("{t}: the legacy prefix of {n} bytes does not decode")
                };
                assert!(r.previous.is_empty());
                continue;
            }
            if t == RecordType::Control && n == datum.len() - 1 {
                // A control datum of the schema before `reload_policy`
                // (its last field) reads as a kill switch.
                let Ok(Input::Control(c)) = avro::decode_input(InputKind::Control, &datum[..n])
                else {
                    panic!("control: the datum without reload_policy is refused")
                };
                assert!(!c.reload_policy);
                continue;
            }
            assert!(
                matches!(decode(&datum[..n]), Err(DecodeError::Avro(_))),
                "{t}: prefix of {n} bytes"
            );
        }
        let mut padded = datum.clone();
        padded.push(0);
        let e = decode(&padded);
        assert!(
            matches!(&e, Err(DecodeError::Avro(m)) if m.contains("trailing")),
            "{t}: {e:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Properties.

fn label_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(any::<String>(), any::<String>(), 0..8)
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    // Years 1970..=9999, what Timestamp accepts from outside.
    (0i64..=253_402_300_799_999).prop_map(Timestamp)
}

fn alert() -> impl Strategy<Value = Alert> {
    (
        prop_oneof![Just(AlertStatus::Firing), Just(AlertStatus::Resolved)],
        label_map(),
        ".+",
        label_map(),
        prop::option::of(timestamp()),
        prop::option::of(timestamp()),
        prop::option::of(".+"),
        prop::option::of(any::<String>()),
    )
        .prop_map(
            |(status, mut labels, alertname, annotations, s, e, fp, url)| {
                labels.insert("alertname".into(), alertname);
                Alert {
                    status,
                    labels: Labels::from_pairs(labels),
                    annotations: Labels::from_pairs(annotations),
                    starts_at: s,
                    ends_at: e,
                    fingerprint: fp,
                    generator_url: url,
                }
            },
        )
}

fn metric() -> impl Strategy<Value = MetricSample> {
    (
        ".+",
        label_map(),
        any::<i64>(),
        prop::option::of(timestamp()),
    )
        .prop_map(|(name, mut labels, v, timestamp)| {
            labels.remove("__name__");
            MetricSample {
                name,
                labels: Labels::from_pairs(labels),
                value: Fixed(v),
                timestamp,
            }
        })
}

proptest! {
    #[test]
    fn alerts_round_trip(a in alert()) {
        let input = Input::Alerts(vec![a]);
        let datums = avro::encode_input(&input).expect("encodes");
        prop_assert_eq!(datums.len(), 1);
        library_decode(RecordType::Alert, &datums[0]);
        let framed = avro::single_object_encode(RecordType::Alert, &datums[0]);
        prop_assert_eq!(avro::decode_value(InputKind::Alert, &framed), Ok(input));
    }

    #[test]
    fn metrics_round_trip(m in metric()) {
        let input = Input::Metric(m);
        let datums = avro::encode_input(&input).expect("encodes");
        library_decode(RecordType::MetricSample, &datums[0]);
        let framed = avro::confluent_encode(1, &datums[0]);
        prop_assert_eq!(avro::decode_value(InputKind::Metric, &framed), Ok(input));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        for t in RecordType::ALL {
            match t.input_kind() {
                Some(k) => {
                    let _ = avro::decode_input(k, &bytes);
                    let _ = avro::decode_value(k, &avro::confluent_encode(0, &bytes));
                    let _ = avro::decode_value(k, &avro::single_object_encode(t, &bytes));
                }
                None => {
                    let _ = avro::decode_output(t, &bytes);
                }
            }
        }
    }
}
