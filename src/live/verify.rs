//! `selfheal audit verify`: replays every partition's journal through the
//! core and compares the audit records it gives with those on the audit
//! topic, chain by chain.
//!
//! The journal holds what each core consumed, in order and at the event
//! time it used, with its clock ticks ([`super::journal`]); replaying it
//! through a fresh core for the same policy, with the partition's global
//! chain named as the live engine names it (`global@P`), must give the
//! audit records the engine published, byte for byte. Exact repeats on the
//! topic (an `at_least_once` engine re-emitting a batch after a crash) are
//! not differences, nor, under `at_least_once`, records an engine sent
//! and stopped before journaling that the next owner decided again
//! ([`compare_superseding`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use rdkafka::consumer::Consumer;
use rdkafka::message::Message;

use super::journal;
use super::tools::scan_topic_with;
use super::wire;
use super::{Health, KafkaArgs, LiveError};
use crate::engine::{canonical_json, Engine};
use crate::policy::Policy;
use crate::records::{Audit, Output};

/// An audit record read from the audit topic, with where it was.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditAt {
    pub audit: Audit,
    pub partition: i32,
    pub offset: i64,
}

/// One field that differs between the replayed and the recorded record,
/// with both values as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDiff {
    pub field: String,
    pub expected: String,
    pub found: String,
}

/// The first place where the audit topic and the replay part ways.
#[derive(Debug, Clone, PartialEq)]
pub enum Divergence {
    /// Both have the record, with other content.
    Differs {
        service: String,
        seq: u64,
        partition: i32,
        offset: i64,
        /// Every differing field; `prev_hash` and `hash` only when nothing
        /// else differs.
        fields: Vec<FieldDiff>,
    },
    /// The replay gives a record the topic does not have.
    Missing { service: String, expected: Audit },
    /// The topic has a record the replay does not give.
    Extra {
        service: String,
        partition: i32,
        offset: i64,
        found: Audit,
    },
}

impl Divergence {
    pub fn service(&self) -> &str {
        match self {
            Divergence::Differs { service, .. }
            | Divergence::Missing { service, .. }
            | Divergence::Extra { service, .. } => service,
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            Divergence::Differs { seq, .. } => *seq,
            Divergence::Missing { expected, .. } => expected.seq,
            Divergence::Extra { found, .. } => found.seq,
        }
    }

    /// Whether the policy version differs: the engine ran another policy.
    pub fn policy_mismatch(&self) -> Option<&FieldDiff> {
        match self {
            Divergence::Differs { fields, .. } => {
                fields.iter().find(|f| f.field == "policy_version")
            }
            _ => None,
        }
    }
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Divergence::Differs {
                service,
                seq,
                partition,
                offset,
                fields,
            } => {
                write!(
                    f,
                    "service {service} seq {seq} (audit partition {partition}, offset {offset}) differs"
                )?;
                if let Some(p) = self.policy_mismatch() {
                    write!(
                        f,
                        "\n  policy_version mismatch: the engine ran policy {}, this replay uses {}",
                        p.found.trim_matches('"'),
                        p.expected.trim_matches('"')
                    )?;
                }
                for d in fields.iter().filter(|d| d.field != "policy_version") {
                    write!(
                        f,
                        "\n  {}:\n    expected {}\n    found    {}",
                        d.field, d.expected, d.found
                    )?;
                }
                Ok(())
            }
            Divergence::Missing { service, expected } => write!(
                f,
                "service {service} seq {} is missing from the audit topic; the replay gives: {}",
                expected.seq,
                canonical_json(expected)
            ),
            Divergence::Extra {
                service,
                partition,
                offset,
                found,
            } => write!(
                f,
                "service {service} seq {} (audit partition {partition}, offset {offset}) is on the \
                 audit topic but not in the replay: {}",
                found.seq,
                canonical_json(found)
            ),
        }
    }
}

/// What a comparison found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comparison {
    /// Service chains compared (on either side).
    pub chains: usize,
    /// Records found identical.
    pub matched: usize,
    /// Exact repeats on the topic, ignored.
    pub repeats: usize,
    /// Records decided by an engine that stopped before journaling them,
    /// decided again after them (see [`compare_superseding`]); ignored.
    pub superseded: usize,
    /// The first divergence of each diverging chain, earliest first (by
    /// the event time of the record concerned, then service).
    pub divergences: Vec<Divergence>,
}

fn same(a: &Audit, b: &Audit) -> bool {
    a.hash == b.hash && canonical_json(a) == canonical_json(b)
}

fn field_diffs(expected: &Audit, found: &Audit) -> Vec<FieldDiff> {
    let to_map = |a: &Audit| match serde_json::to_value(a) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let (e, f) = (to_map(expected), to_map(found));
    let mut keys: Vec<&String> = e.keys().chain(f.keys()).collect();
    keys.sort();
    keys.dedup();
    let null = serde_json::Value::Null;
    let diff = |k: &String| {
        let (x, y) = (e.get(k).unwrap_or(&null), f.get(k).unwrap_or(&null));
        (x != y).then(|| FieldDiff {
            field: k.clone(),
            expected: x.to_string(),
            found: y.to_string(),
        })
    };
    let derived = |k: &String| k == "hash" || k == "prev_hash";
    let content: Vec<FieldDiff> = keys
        .iter()
        .filter(|k| !derived(k))
        .filter_map(|k| diff(k))
        .collect();
    if !content.is_empty() {
        return content;
    }
    keys.iter()
        .filter(|k| derived(k))
        .filter_map(|k| diff(k))
        .collect()
}

/// Compares the replayed audit records with those of the topic, per
/// service chain in seq order.
pub fn compare(replayed: &[Audit], recorded: &[AuditAt]) -> Comparison {
    compare_with(replayed, recorded, false)
}

/// [`compare`] for an `at_least_once` engine's topic. Such an engine
/// sends its outputs as it decides them and journals them at the batch
/// commit; when it stops in between (a crash, a kill), the next owner of
/// the partition decides those records again from the journal, and can
/// decide them otherwise: the event time of a record is its timestamp
/// held back to the core's clock, and the clock of the engine that
/// stopped had moved on with records it never journaled. Its records
/// then stay on the topic ahead of the ones the journal explains. A
/// record that is not the replay's is *superseded* when a later record of
/// its chain (same partition, higher offset) with the same or a lower seq
/// is the replay's: the chain was decided again from there. Superseded
/// records are counted, not divergences; anything else is compared as by
/// [`compare`].
pub fn compare_superseding(replayed: &[Audit], recorded: &[AuditAt]) -> Comparison {
    compare_with(replayed, recorded, true)
}

fn compare_with(replayed: &[Audit], recorded: &[AuditAt], superseding: bool) -> Comparison {
    let mut want: BTreeMap<&str, Vec<&Audit>> = BTreeMap::new();
    for a in replayed {
        want.entry(&a.service).or_default().push(a);
    }
    let mut have: BTreeMap<&str, Vec<&AuditAt>> = BTreeMap::new();
    let mut repeats = 0;
    for r in recorded {
        let chain = have.entry(&r.audit.service).or_default();
        if chain
            .iter()
            .any(|x| x.audit.seq == r.audit.seq && same(&x.audit, &r.audit))
        {
            repeats += 1;
        } else {
            chain.push(r);
        }
    }
    let mut superseded = 0;
    if superseding {
        for (s, chain) in have.iter_mut() {
            let by_seq: HashMap<u64, &Audit> = want
                .get(s)
                .map(|w| w.iter().map(|a| (a.seq, *a)).collect())
                .unwrap_or_default();
            let explained =
                |r: &AuditAt| by_seq.get(&r.audit.seq).is_some_and(|a| same(a, &r.audit));
            // From the end of each partition: the lowest seq of a later
            // record that the replay explains.
            let mut order: Vec<usize> = (0..chain.len()).collect();
            order.sort_by_key(|&i| std::cmp::Reverse((chain[i].partition, chain[i].offset)));
            let mut lowest: HashMap<i32, u64> = HashMap::new();
            let mut keep = vec![true; chain.len()];
            for i in order {
                let r = chain[i];
                if explained(r) {
                    let l = lowest.entry(r.partition).or_insert(r.audit.seq);
                    *l = (*l).min(r.audit.seq);
                } else if lowest.get(&r.partition).is_some_and(|&l| l <= r.audit.seq) {
                    keep[i] = false;
                    superseded += 1;
                }
            }
            let mut k = keep.into_iter();
            chain.retain(|_| k.next().unwrap_or(true));
        }
    }
    let mut services: Vec<&str> = want.keys().chain(have.keys()).copied().collect();
    services.sort_unstable();
    services.dedup();
    let mut out = Comparison {
        chains: services.len(),
        repeats,
        superseded,
        ..Comparison::default()
    };
    let mut found: Vec<(i64, Divergence)> = Vec::new();
    for s in services {
        let mut w = want.remove(s).unwrap_or_default();
        let mut h = have.remove(s).unwrap_or_default();
        w.sort_by_key(|a| a.seq);
        h.sort_by_key(|r| r.audit.seq);
        let missing = |a: &Audit| {
            (
                a.ts.0,
                Divergence::Missing {
                    service: s.to_string(),
                    expected: a.clone(),
                },
            )
        };
        let (mut i, mut j) = (0, 0);
        let div = loop {
            match (w.get(i), h.get(j)) {
                (None, None) => break None,
                (Some(a), Some(r)) if a.seq == r.audit.seq => {
                    if same(a, &r.audit) {
                        out.matched += 1;
                        i += 1;
                        j += 1;
                        continue;
                    }
                    break Some((
                        a.ts.0,
                        Divergence::Differs {
                            service: s.to_string(),
                            seq: a.seq,
                            partition: r.partition,
                            offset: r.offset,
                            fields: field_diffs(a, &r.audit),
                        },
                    ));
                }
                (Some(a), None) => break Some(missing(a)),
                (Some(a), Some(r)) if a.seq < r.audit.seq => break Some(missing(a)),
                (_, Some(r)) => {
                    break Some((
                        r.audit.ts.0,
                        Divergence::Extra {
                            service: s.to_string(),
                            partition: r.partition,
                            offset: r.offset,
                            found: r.audit.clone(),
                        },
                    ))
                }
            }
        };
        found.extend(div);
    }
    found.sort_by(|(t1, d1), (t2, d2)| (t1, d1.service()).cmp(&(t2, d2.service())));
    out.divergences = found.into_iter().map(|(_, d)| d).collect();
    out
}

/// The first divergence between the replayed audit records and those of
/// the topic, `None` when every chain is identical.
pub fn first_divergence(replayed: &[Audit], recorded: &[AuditAt]) -> Option<Divergence> {
    compare(replayed, recorded).divergences.into_iter().next()
}

/// What replaying the journals gave.
#[derive(Debug, Default)]
pub struct Replayed {
    pub audits: Vec<Audit>,
    pub partitions: usize,
    /// Journal entries replayed (records and ticks).
    pub entries: u64,
    /// Dead-lettered records the journals list (not replayed, as live).
    pub dead_lettered: u64,
    /// Policy reloads (applied or refused) among the entries.
    pub reloads: u64,
}

/// Replays partition `p`'s journal through a fresh core, as the live
/// engine rebuilds it, keeping every audit record.
pub fn replay_journal(
    args: &KafkaArgs,
    policy: &Arc<Policy>,
    p: i32,
    committed: bool,
    into: &mut Replayed,
) -> Result<(), LiveError> {
    let mut core = Engine::new(policy.clone()).with_global_chain(format!("global@{p}"));
    let mut out = Vec::new();
    let mut failed: Option<String> = None;
    journal::read(args, "selfheal-tools", p, committed, |e| {
        if failed.is_some() {
            return;
        }
        match e.replay(&mut core, &mut out) {
            Ok(_) if matches!(e, journal::Entry::Dropped { .. }) => into.dead_lettered += 1,
            Ok(_) => {
                into.entries += 1;
                if matches!(e, journal::Entry::Policy { .. }) {
                    into.reloads += 1;
                }
            }
            Err(journal::ReplayError::Undecodable(err)) => {
                failed = Some(format!(
                "a journaled record no longer decodes ({err}); the decoder changed since the run"
            ))
            }
            Err(err) => failed = Some(format!("replaying the journal: {err}")),
        }
        into.audits
            .extend(out.drain(..).filter_map(|x| match x.output {
                Output::Audit(a) => Some(a),
                _ => None,
            }));
    })?;
    match failed {
        Some(message) => Err(LiveError::Journal {
            partition: p,
            message,
        }),
        None => Ok(()),
    }
}

/// Replays every partition's journal.
pub fn replay_journals(
    args: &KafkaArgs,
    policy: &Arc<Policy>,
    committed: bool,
) -> Result<Replayed, LiveError> {
    let n = partitions(args, &args.topics().journal)?;
    let mut r = Replayed {
        partitions: n,
        ..Replayed::default()
    };
    let mut owner: HashMap<String, i32> = HashMap::new();
    for p in 0..n as i32 {
        let from = r.audits.len();
        replay_journal(args, policy, p, committed, &mut r)?;
        for a in &r.audits[from..] {
            if let Some(q) = owner.insert(a.service.clone(), p).filter(|q| *q != p) {
                return Err(LiveError::Other(format!(
                    "service {} has audit records from the cores of partitions {q} and {p}: \
                     its input records were not all keyed by service",
                    a.service
                )));
            }
        }
    }
    Ok(r)
}

/// Every audit record of the audit topic, per partition in offset order;
/// undecodable records are listed with their place.
pub fn read_audit_topic(
    args: &KafkaArgs,
    committed: bool,
) -> Result<(Vec<AuditAt>, Vec<String>), LiveError> {
    let topic = args.topics().audit;
    let mut found = Vec::new();
    let mut bad = Vec::new();
    scan_topic_with(args, &topic, committed, |m| {
        let kind = wire::header(m.headers(), wire::KIND_HEADER);
        match wire::decode_output(kind.or(Some("audit")), m.payload().unwrap_or(&[])) {
            Ok(Output::Audit(audit)) => found.push(AuditAt {
                audit,
                partition: m.partition(),
                offset: m.offset(),
            }),
            Ok(o) => bad.push(format!(
                "{topic}[{}]@{}: a {} record, not an audit record",
                m.partition(),
                m.offset(),
                o.kind()
            )),
            Err(e) => bad.push(format!(
                "{topic}[{}]@{}: undecodable: {e}",
                m.partition(),
                m.offset()
            )),
        }
        true
    })?;
    Ok((found, bad))
}

fn partitions(args: &KafkaArgs, topic: &str) -> Result<usize, LiveError> {
    let c: rdkafka::consumer::BaseConsumer<Health> = args
        .client_config()?
        .create_with_context(Health::default())
        .map_err(LiveError::kafka("creating a metadata client"))?;
    let md = c
        .fetch_metadata(Some(topic), StdDuration::from_secs(10))
        .map_err(LiveError::kafka(format!("fetching {topic} metadata")))?;
    md.topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0)
        .ok_or_else(|| LiveError::MissingTopic {
            topic: topic.to_string(),
            brokers: args.brokers.clone(),
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::records::Record;
    use crate::time::Timestamp;

    const POLICY: &str = r#"
runbooks:
  - name: restart-on-crash
    match: ['alertname="Crash"']
    tier: 1
    action: {kind: restart, target: '{{ labels.pod }}'}
    validate: {within: 5m}
"#;

    /// The audit records of a fresh core given one firing alert a minute,
    /// `(alertname, service)`, each for pod `{service}-1`.
    pub(crate) fn audits(policy: &str, alerts: &[(&str, &str)]) -> Vec<Audit> {
        let policy = Arc::new(crate::policy::parse(policy, "p.yaml").unwrap());
        let mut e = Engine::new(policy);
        let mut out = Vec::new();
        for (i, (name, service)) in alerts.iter().enumerate() {
            let line = format!(
                r#"{{"ts":"2026-03-01T10:0{i}:00Z","kind":"alert","data":{{"status":"firing","labels":{{"alertname":"{name}","service":"{service}","pod":"{service}-1"}}}}}}"#
            );
            e.process(&Record::from_json_line(&line).unwrap(), &mut out)
                .unwrap();
        }
        out.into_iter()
            .filter_map(|x| match x.output {
                Output::Audit(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    fn on_topic(a: &[Audit]) -> Vec<AuditAt> {
        a.iter()
            .enumerate()
            .map(|(i, a)| AuditAt {
                audit: a.clone(),
                partition: 0,
                offset: 100 + i as i64,
            })
            .collect()
    }

    const STREAM: [(&str, &str); 4] = [
        ("Crash", "checkout"),
        ("Other", "search"),
        ("Crash", "search"),
        ("Crash", "checkout"),
    ];

    #[test]
    fn identical_chains_have_no_divergence_and_repeats_are_not_one() {
        let a = audits(POLICY, &STREAM);
        assert!(a.len() >= 4);
        let mut topic = on_topic(&a);
        topic.push(topic[1].clone());
        let c = compare(&a, &topic);
        assert_eq!(c.divergences, vec![]);
        assert_eq!((c.chains, c.matched, c.repeats), (2, a.len(), 1));
        assert_eq!(first_divergence(&a, &topic), None);
    }

    #[test]
    fn the_first_differing_record_is_named_with_its_fields() {
        let a = audits(POLICY, &STREAM);
        let mut topic = on_topic(&a);
        // An edited record later on, and an earlier one in another chain.
        let last = topic.len() - 1;
        topic[last].audit.reasons.push("edited".into());
        let k = topic
            .iter()
            .position(|r| r.audit.service == "search")
            .unwrap();
        topic[k].audit.decision = "forged".into();
        let d = first_divergence(&a, &topic).unwrap();
        let Divergence::Differs {
            service,
            seq,
            offset,
            fields,
            ..
        } = &d
        else {
            panic!("{d:?}")
        };
        assert_eq!(
            (service.as_str(), *seq, *offset),
            ("search", 1, 100 + k as i64)
        );
        assert_eq!(fields.len(), 1, "{fields:?}");
        assert_eq!(fields[0].field, "decision");
        let text = d.to_string();
        assert!(text.contains("service search seq 1"), "{text}");
        assert!(text.contains(r#"found    "forged""#), "{text}");
        assert_eq!(compare(&a, &topic).divergences.len(), 2);
    }

    /// The topic with `extra` records put in before position `at`,
    /// offsets renumbered in topic order.
    fn with_inserted(topic: &[AuditAt], at: usize, extra: &[AuditAt]) -> Vec<AuditAt> {
        let mut t = topic[..at].to_vec();
        t.extend_from_slice(extra);
        t.extend_from_slice(&topic[at..]);
        for (i, r) in t.iter_mut().enumerate() {
            r.offset = 100 + i as i64;
        }
        t
    }

    #[test]
    fn at_least_once_records_decided_again_after_them_are_superseded_not_divergent() {
        let a = audits(POLICY, &STREAM);
        let topic = on_topic(&a);
        // An engine decided checkout's last record otherwise (and one
        // more after it), was killed before journaling them, and the
        // next owner decided that record again from the journal.
        let last = topic
            .iter()
            .rposition(|r| r.audit.service == "checkout")
            .unwrap();
        let mut orphan = topic[last].clone();
        orphan
            .audit
            .reasons
            .push("decided by an engine that stopped".into());
        let mut next = orphan.clone();
        next.audit.seq += 1;
        let t = with_inserted(&topic, last, &[orphan.clone(), next]);
        let c = compare_superseding(&a, &t);
        assert_eq!(c.divergences, vec![]);
        assert_eq!((c.matched, c.superseded), (a.len(), 2));
        // Strictly (exactly_once), they are what they are: divergences.
        let d = first_divergence(&a, &t).unwrap();
        assert!(matches!(d, Divergence::Differs { .. }), "{d:?}");

        // A record nothing decided again after it is still a divergence:
        // here the other version comes after the journaled one.
        let t = with_inserted(&topic, last + 1, &[orphan]);
        let c = compare_superseding(&a, &t);
        assert_eq!(c.superseded, 0);
        assert!(
            matches!(c.divergences.as_slice(), [Divergence::Extra { service, .. }] if service == "checkout"),
            "{:?}",
            c.divergences
        );
    }

    #[test]
    fn a_tampered_hash_alone_is_reported_as_the_hash() {
        let a = audits(POLICY, &STREAM);
        let mut topic = on_topic(&a);
        topic[0].audit.hash = "0".repeat(64);
        let d = first_divergence(&a, &topic).unwrap();
        let Divergence::Differs { fields, .. } = &d else {
            panic!("{d:?}")
        };
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].field, "hash");
    }

    #[test]
    fn missing_and_extra_records_are_named() {
        let a = audits(POLICY, &STREAM);
        let topic = on_topic(&a);
        let last = a.last().unwrap();
        let d = first_divergence(&a, &topic[..topic.len() - 1]).unwrap();
        assert!(
            matches!(&d, Divergence::Missing { service, expected } if *service == last.service && expected.seq == last.seq),
            "{d:?}"
        );
        assert!(d.to_string().contains("missing from the audit topic"));
        let d = first_divergence(&a[..a.len() - 1], &topic).unwrap();
        assert!(
            matches!(&d, Divergence::Extra { offset, found, .. } if *offset == topic.last().unwrap().offset && found.seq == last.seq),
            "{d:?}"
        );
        assert!(d.to_string().contains("not in the replay"));
    }

    #[test]
    fn another_policy_is_stated_as_a_policy_version_mismatch() {
        let a = audits(POLICY, &STREAM);
        let other = POLICY.replace("tier: 1", "tier: 2");
        let b = audits(&other, &STREAM);
        let d = first_divergence(&b, &on_topic(&a)).unwrap();
        assert_eq!((d.service(), d.seq()), ("checkout", 1));
        let p = d.policy_mismatch().unwrap();
        assert_ne!(p.expected, p.found);
        let text = d.to_string();
        assert!(text.contains("policy_version mismatch"), "{text}");
    }

    #[test]
    fn a_journal_with_a_policy_reload_replays_to_the_same_audit_records() {
        use crate::live::journal::{decode, Entry, Writer};
        let failover = POLICY.replace("kind: restart", "kind: failover");
        let alert = |min: u32, service: &str| {
            Entry::Record {
            topic: 1,
            offset: min as i64,
            ts: Timestamp::parse(&format!("2026-03-01T10:{min:02}:00Z")).unwrap().0,
            value: format!(
                r#"{{"status":"firing","labels":{{"alertname":"Crash","service":"{service}","pod":"{service}-1"}}}}"#
            )
            .into_bytes(),
        }
        };
        let entries = vec![
            alert(0, "checkout"),
            Entry::Policy {
                ts: Timestamp::parse("2026-03-01T10:01:00Z").unwrap().0,
                text: "runbooks: [".into(),
            },
            alert(2, "search"),
            Entry::Policy {
                ts: Timestamp::parse("2026-03-01T10:03:00Z").unwrap().0,
                text: failover.clone(),
            },
            alert(4, "cart"),
        ];
        let policy = Arc::new(crate::policy::parse(POLICY, "p.yaml").unwrap());
        // As the live engine decided: straight through the core.
        let mut live = Engine::new(policy.clone()).with_global_chain("global@0");
        let mut out = Vec::new();
        let mut w = Writer::default();
        for e in &entries {
            match e {
                Entry::Policy { ts, text } => {
                    live.reload_policy(Timestamp(*ts), text, &mut out).unwrap()
                }
                _ => live
                    .process(&e.to_record().unwrap().unwrap(), &mut out)
                    .unwrap(),
            }
            w.push(e);
        }
        let recorded: Vec<Audit> = out
            .iter()
            .filter_map(|x| match &x.output {
                Output::Audit(a) => Some(a.clone()),
                _ => None,
            })
            .collect();
        let decisions: Vec<&str> = recorded.iter().map(|a| a.decision.as_str()).collect();
        assert!(
            decisions.contains(&"policy_reload_refused"),
            "{decisions:?}"
        );
        assert!(decisions.contains(&"policy_reloaded"), "{decisions:?}");
        // As `audit verify` replays it: from the journal's bytes.
        let read: Vec<Entry> = w.take().iter().flat_map(|c| decode(c).unwrap()).collect();
        assert_eq!(read, entries);
        let mut replay = Engine::new(policy.clone()).with_global_chain("global@0");
        let mut out2 = Vec::new();
        for e in &read {
            e.replay(&mut replay, &mut out2).unwrap();
        }
        let replayed: Vec<Audit> = out2
            .into_iter()
            .filter_map(|x| match x.output {
                Output::Audit(a) => Some(a),
                _ => None,
            })
            .collect();
        let c = compare(&replayed, &on_topic(&recorded));
        assert!(
            c.divergences.is_empty(),
            "{:?}",
            c.divergences.first().map(|d| d.to_string())
        );
        assert_eq!(c.matched, recorded.len());
        // Replaying without the reloads diverges where the policy changed.
        let mut plain = Engine::new(policy).with_global_chain("global@0");
        let mut out3 = Vec::new();
        for e in read.iter().filter(|e| !matches!(e, Entry::Policy { .. })) {
            e.replay(&mut plain, &mut out3).unwrap();
        }
        let without: Vec<Audit> = out3
            .into_iter()
            .filter_map(|x| match x.output {
                Output::Audit(a) => Some(a),
                _ => None,
            })
            .collect();
        assert!(!compare(&without, &on_topic(&recorded))
            .divergences
            .is_empty());
    }
}
