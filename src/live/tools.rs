//! Operator tools: publish alerts, approve or reject proposals, switch
//! the kill switch, follow and verify the audit topic, and the
//! Alertmanager webhook bridge.

use std::collections::HashMap;
use std::time::Duration as StdDuration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::wire::{self, Format};
use super::{wall_ms, KafkaArgs, LiveError};
use crate::engine::{check_link, compute_hash, ChainError, GENESIS};
use crate::records::{
    Approval, Audit, Control, DecodeError, Input, InputKind, Output, Scope, Verdict,
};
use crate::time::Timestamp;

/// A producer for the tools: acks from all replicas, no batching delay.
pub fn producer(args: &KafkaArgs) -> Result<FutureProducer, LiveError> {
    let mut c = args.producer_config()?;
    c.set("linger.ms", "0")
        .set("acks", "all")
        .set("message.timeout.ms", "15000");
    c.create()
        .map_err(LiveError::kafka("creating the producer"))
}

/// Publishes one record and waits for the broker's acknowledgement;
/// returns (partition, offset).
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    value: &[u8],
    kind: &str,
    partition: Option<i32>,
) -> Result<(i32, i64), LiveError> {
    let mut rec = FutureRecord::to(topic)
        .key(key)
        .payload(value)
        .timestamp(wall_ms())
        .headers(wire::kind_headers(kind));
    if let Some(p) = partition {
        rec = rec.partition(p);
    }
    let d = producer
        .send(rec, StdDuration::from_secs(15))
        .await
        .map_err(|(e, _)| LiveError::Kafka {
            context: format!("publishing to {topic}"),
            source: e,
        })?;
    Ok((d.partition, d.offset))
}

/// Splits an Alertmanager webhook payload (or one alert object) into its
/// alerts, each checked with the engine's own decoder. Returns each
/// alert's JSON text with the service it is keyed by.
pub fn split_alerts(body: &[u8]) -> Result<Vec<(String, String)>, DecodeError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string()))?;
    let alerts: Vec<serde_json::Value> = match v.get("alerts") {
        Some(serde_json::Value::Array(a)) => a.clone(),
        Some(_) => return Err(DecodeError::Json("`alerts` must be an array".into())),
        None => vec![v],
    };
    let mut out = Vec::with_capacity(alerts.len());
    for a in alerts {
        let text = a.to_string();
        let input = Input::from_json(InputKind::Alert, &text)?;
        let service = input.service().unwrap_or("unknown").to_string();
        out.push((service, text));
    }
    Ok(out)
}

/// Publishes every alert of a payload to the alerts topic, keyed by its
/// service; returns how many.
pub async fn publish_alerts(
    producer: &FutureProducer,
    args: &KafkaArgs,
    body: &[u8],
) -> Result<usize, ToolError> {
    let alerts = split_alerts(body).map_err(ToolError::BadInput)?;
    let topic = args.topics().alerts;
    for (service, text) in &alerts {
        publish(producer, &topic, service, text.as_bytes(), "alert", None).await?;
    }
    Ok(alerts.len())
}

/// Errors of the tools.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("invalid input: {0}")]
    BadInput(DecodeError),
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error("{0}")]
    Usage(String),
}

/// Finds the service of a proposed command from the approval requests
/// topic.
pub fn find_proposal_service(
    args: &KafkaArgs,
    command_id: &str,
) -> Result<Option<String>, LiveError> {
    let topic = args.topics().approval_requests;
    let mut found = None;
    scan_topic(args, &topic, false, |kind, value| {
        if let Ok(Output::ApprovalRequest(a)) = wire::decode_output(kind, value) {
            if a.command_id == command_id {
                found = Some(a.service);
            }
        }
        true
    })?;
    Ok(found)
}

/// Publishes an approval decision for a proposed command.
pub async fn decide(
    args: &KafkaArgs,
    command_id: &str,
    verdict: Verdict,
    by: &str,
    service: Option<String>,
    format: Format,
    key: Option<&super::signing::ApprovalKey>,
) -> Result<String, ToolError> {
    let service = match service {
        Some(s) => s,
        None => {
            let (a, id) = (args.clone(), command_id.to_string());
            tokio::task::spawn_blocking(move || find_proposal_service(&a, &id))
                .await
                .map_err(|e| ToolError::Usage(e.to_string()))??
                .ok_or_else(|| {
                    ToolError::Usage(format!(
                        "no approval request for command {command_id} on {}; pass --service \
                         if it is older than the topic's retention",
                        args.topics().approval_requests
                    ))
                })?
        }
    };
    let input = Input::Approval(Approval {
        command_id: command_id.to_string(),
        decision: verdict,
        by: by.to_string(),
        at: Some(Timestamp(wall_ms())),
        sig: key.map(|k| k.sign(command_id, verdict, by)),
    });
    let value = wire::encode_input(&input, format)
        .ok_or_else(|| ToolError::Usage("approval has no encoding".into()))?;
    let p = producer(args)?;
    publish(
        &p,
        &args.topics().approvals,
        &service,
        &value,
        "approval",
        None,
    )
    .await?;
    Ok(service)
}

/// Publishes a kill-switch control record. A service scope goes to that
/// service's partition; global and runbook scopes go to every partition
/// of the control topic, since each partition has its own core.
pub async fn kill_switch(
    args: &KafkaArgs,
    scope: Scope,
    on: bool,
    until: Option<Timestamp>,
    by: &str,
    format: Format,
) -> Result<usize, ToolError> {
    publish_control(
        args,
        Control {
            scope,
            kill_switch: on,
            until,
            by: Some(by.to_string()),
            reload_policy: false,
        },
        format,
    )
    .await
}

/// Publishes a control record: to its service's partition for a service
/// scope, to every partition of the control topic otherwise.
pub async fn publish_control(
    args: &KafkaArgs,
    control: Control,
    format: Format,
) -> Result<usize, ToolError> {
    let scope = control.scope.clone();
    let input = Input::Control(control);
    let value = wire::encode_input(&input, format)
        .ok_or_else(|| ToolError::Usage("control has no encoding".into()))?;
    let p = producer(args)?;
    let topic = args.topics().control;
    let key = scope.to_string();
    match &scope {
        Scope::Service(s) => {
            publish(&p, &topic, s, &value, "control", None).await?;
            Ok(1)
        }
        _ => {
            let md = p
                .client()
                .fetch_metadata(Some(&topic), StdDuration::from_secs(10))
                .map_err(LiveError::kafka("fetching control topic metadata"))?;
            let n = md
                .topics()
                .first()
                .map(|t| t.partitions().len())
                .unwrap_or(0);
            if n == 0 {
                return Err(LiveError::MissingTopic {
                    topic,
                    brokers: args.brokers.clone(),
                }
                .into());
            }
            for part in 0..n as i32 {
                publish(&p, &topic, &key, &value, "control", Some(part)).await?;
            }
            Ok(n)
        }
    }
}

/// Reads every partition of a topic from the beginning to its current
/// end (or on, when `follow`), calling `f` with each record's kind header
/// and value until it returns false.
pub fn scan_topic(
    args: &KafkaArgs,
    topic: &str,
    follow: bool,
    mut f: impl FnMut(Option<&str>, &[u8]) -> bool,
) -> Result<(), LiveError> {
    scan_topic_from(args, topic, follow, None, |m| {
        f(
            wire::header(m.headers(), wire::KIND_HEADER),
            m.payload().unwrap_or(&[]),
        )
    })
}

/// As [`scan_topic`], with the whole message and an optional stop flag.
pub fn scan_topic_from(
    args: &KafkaArgs,
    topic: &str,
    follow: bool,
    stop: Option<&std::sync::atomic::AtomicBool>,
    f: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> bool,
) -> Result<(), LiveError> {
    scan(args, topic, follow, stop, true, f)
}

/// Reads every partition of a topic from the beginning to its current
/// end, as [`scan_topic_from`]; `committed` reads only committed
/// transactions, otherwise everything written.
pub fn scan_topic_with(
    args: &KafkaArgs,
    topic: &str,
    committed: bool,
    f: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> bool,
) -> Result<(), LiveError> {
    scan(args, topic, false, None, committed, f)
}

fn scan(
    args: &KafkaArgs,
    topic: &str,
    follow: bool,
    stop: Option<&std::sync::atomic::AtomicBool>,
    committed: bool,
    mut f: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> bool,
) -> Result<(), LiveError> {
    let mut cc = args.consumer_config()?;
    cc.set("group.id", "selfheal-tools")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set(
            "isolation.level",
            if committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        );
    let c: BaseConsumer<super::Health> = cc
        .create_with_context(super::Health::default())
        .map_err(LiveError::kafka("creating a reader"))?;
    let md = c
        .fetch_metadata(Some(topic), StdDuration::from_secs(10))
        .map_err(LiveError::kafka(format!("fetching {topic} metadata")))?;
    let parts: Vec<i32> = md
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if parts.is_empty() {
        return Err(LiveError::MissingTopic {
            topic: topic.to_string(),
            brokers: args.brokers.clone(),
        });
    }
    let mut tpl = TopicPartitionList::new();
    let mut open = 0;
    for &p in &parts {
        let (low, high) = c
            .fetch_watermarks(topic, p, StdDuration::from_secs(10))
            .map_err(LiveError::kafka(format!("reading {topic} watermarks")))?;
        tpl.add_partition_offset(topic, p, Offset::Offset(low))
            .map_err(LiveError::kafka("assigning"))?;
        if high > low {
            open += 1;
        }
    }
    c.assign(&tpl).map_err(LiveError::kafka("assigning"))?;
    let mut at_end: std::collections::HashSet<i32> = Default::default();
    let _ = open;
    loop {
        if stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed)) {
            return Ok(());
        }
        match c.poll(StdDuration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                if !follow && at_end.len() >= parts.len() {
                    return Ok(());
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "reading {topic}"),
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                if !f(&m) {
                    return Ok(());
                }
            }
        }
    }
}

/// Checks audit records one at a time, per service chain. Exact repeats
/// of a record already seen (an `at_least_once` engine re-emitting a
/// batch after a crash) are reported as repeats, not as breaks. Under
/// `at_least_once` an engine can also stop after sending records it had
/// not journaled yet; the next owner of the partition decides them again
/// from the journal, possibly otherwise, and its records then carry seqs
/// already seen. Such a record, linked to the record before its seq, is
/// reported as *re-decided*, and the chain goes on from it (within the
/// last [`RECENT`] seqs of a chain).
#[derive(Debug, Default)]
pub struct ChainVerifier {
    chains: HashMap<String, std::collections::VecDeque<(u64, String)>>,
    pub verified: u64,
    pub duplicates: u64,
    pub redecided: u64,
}

/// Seqs of each chain whose hashes the verifier keeps for re-decisions.
pub const RECENT: usize = 64;

/// What the verifier made of one record.
#[derive(Debug, PartialEq, Eq)]
pub enum Link {
    Ok,
    Duplicate,
    /// Another record for a seq already seen, linked to the record
    /// before it: the chain was decided again from there.
    Redecided,
}

impl ChainVerifier {
    pub fn check(&mut self, a: &Audit) -> Result<Link, ChainError> {
        let chain = self.chains.entry(a.service.clone()).or_default();
        let (seq, prev) = chain.back().map_or((0, GENESIS), |(s, h)| (*s, h.as_str()));
        if a.seq <= seq {
            let hash_of = |s: u64| chain.iter().find(|(x, _)| *x == s).map(|(_, h)| h.as_str());
            let before = match a.seq {
                1 => Some(GENESIS),
                s => hash_of(s - 1),
            };
            let sound = compute_hash(a) == a.hash;
            match (hash_of(a.seq), before) {
                (Some(h), _) if h == a.hash && sound => {}
                (Some(_), Some(before)) => {
                    check_link(a, a.seq - 1, before)?;
                    chain.retain(|(s, _)| *s < a.seq);
                    chain.push_back((a.seq, a.hash.clone()));
                    self.redecided += 1;
                    return Ok(Link::Redecided);
                }
                // Older than the seqs kept: a repeat if it is sound.
                (None, _) if sound => {}
                _ => {
                    return Err(ChainError::Tampered {
                        service: a.service.clone(),
                        seq: a.seq,
                    })
                }
            }
            self.duplicates += 1;
            return Ok(Link::Duplicate);
        }
        check_link(a, seq, prev)?;
        chain.push_back((a.seq, a.hash.clone()));
        if chain.len() > RECENT {
            chain.pop_front();
        }
        self.verified += 1;
        Ok(Link::Ok)
    }
}

/// One audit record as a readable line.
pub fn pretty_audit(a: &Audit) -> String {
    let mut s = format!(
        "{} {:<16} #{:<4} {:<22}",
        a.ts, a.service, a.seq, a.decision
    );
    if let Some(i) = &a.incident {
        s.push_str(&format!(" incident={i}"));
    }
    if let Some(r) = &a.runbook {
        s.push_str(&format!(" runbook={r}"));
    }
    for r in &a.reasons {
        s.push_str(&format!("\n    why: {r}"));
    }
    for g in &a.guardrails {
        s.push_str(&format!(
            "\n    guardrail {}: {}{}",
            g.name,
            if g.passed { "passed" } else { "BLOCKED" },
            if g.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", g.detail)
            }
        ));
    }
    for o in &a.outputs {
        s.push_str(&format!("\n    -> {o}"));
    }
    s
}

/// The Alertmanager webhook receiver: every alert of every POSTed payload
/// goes to the alerts topic. Answers 200 once the broker has acknowledged
/// them all, 400 for a payload the engine would refuse, 503 when the
/// broker cannot be reached.
pub async fn bridge(
    args: KafkaArgs,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), LiveError> {
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    use std::sync::Arc;

    struct St {
        args: KafkaArgs,
        producer: FutureProducer,
    }
    async fn receive(
        State(st): State<Arc<St>>,
        body: axum::body::Bytes,
    ) -> (StatusCode, axum::Json<serde_json::Value>) {
        match publish_alerts(&st.producer, &st.args, &body).await {
            Ok(n) => (
                StatusCode::OK,
                axum::Json(serde_json::json!({"published": n})),
            ),
            Err(ToolError::BadInput(e)) => (
                StatusCode::BAD_REQUEST,
                axum::Json(serde_json::json!({"error": e.to_string()})),
            ),
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"error": e.to_string()})),
            ),
        }
    }
    let st = Arc::new(St {
        producer: producer(&args)?,
        args,
    });
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/", post(receive))
        .route("/{*path}", post(receive))
        .with_state(st);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| LiveError::Other(format!("bridge server: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_payload_splits_into_its_alerts_keyed_by_service() {
        let body = br#"{"version":"4","status":"firing","alerts":[
            {"status":"firing","labels":{"alertname":"PodOOMKilled","service":"checkout"}},
            {"status":"resolved","labels":{"alertname":"HighCPU"}}]}"#;
        let got = split_alerts(body).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "checkout");
        assert_eq!(got[1].0, "unknown");
        assert!(got[1].1.contains("HighCPU"));
    }

    #[test]
    fn payloads_the_engine_would_refuse_are_refused_whole() {
        assert!(split_alerts(b"not json").is_err());
        let missing = br#"{"alerts":[{"status":"firing","labels":{"alertname":"A"}},
                                     {"status":"firing","labels":{}}]}"#;
        assert!(matches!(
            split_alerts(missing),
            Err(DecodeError::Missing(_)) | Err(DecodeError::Invalid { .. })
        ));
    }

    /// The checkout chain of a fresh core given alerts `names`, one a
    /// minute.
    fn checkout_chain(names: &[&str]) -> Vec<Audit> {
        let alerts: Vec<(&str, &str)> = names.iter().map(|n| (*n, "checkout")).collect();
        crate::live::verify::tests::audits("runbooks: []\n", &alerts)
    }

    #[test]
    fn a_chain_decided_again_from_a_seq_already_seen_goes_on_from_there() {
        // An engine decided A, B, C and stopped before journaling C; the
        // next owner decided A, B again (repeats) and then D, E.
        let first = checkout_chain(&["A", "B", "C"]);
        let second = checkout_chain(&["A", "B", "D", "E"]);
        let fork = first.iter().zip(&second).position(|(a, b)| a != b).unwrap();
        assert!(fork > 0 && second.len() > fork + 1);
        let mut v = ChainVerifier::default();
        for a in first.iter().chain(&second[..fork]) {
            assert_ne!(v.check(a).unwrap(), Link::Redecided);
        }
        assert_eq!(v.check(&second[fork]).unwrap(), Link::Redecided);
        for a in &second[fork + 1..] {
            assert_eq!(v.check(a).unwrap(), Link::Ok, "the chain goes on");
        }
        assert_eq!(v.redecided, 1);
        // The first engine's record is the one that no longer links.
        let mut after = first[fork].clone();
        after.seq = second.last().unwrap().seq + 1;
        assert!(v.check(&after).is_err());
    }

    #[test]
    fn the_verifier_accepts_a_chain_skips_repeats_and_finds_tampering() {
        let audits = checkout_chain(&["A", "B", "C"]);
        assert!(audits.len() >= 3);
        let mut v = ChainVerifier::default();
        for a in &audits {
            assert_eq!(v.check(a).unwrap(), Link::Ok);
        }
        assert_eq!(v.check(&audits[1]).unwrap(), Link::Duplicate);
        // A repeat that is not the record seen, and not linked: tampered.
        let mut edited = audits[1].clone();
        edited.reasons.push("edited".into());
        assert!(v.check(&edited).is_err());
        let mut forged = audits[2].clone();
        forged.seq = audits.len() as u64 + 1;
        forged.prev_hash = audits.last().unwrap().hash.clone();
        forged.reasons.push("edited".into());
        assert!(matches!(v.check(&forged), Err(ChainError::Tampered { .. })));
    }
}
