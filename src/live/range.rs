//! A time range of Kafka topics as a replay [`Source`].
//!
//! Every partition of the chosen topics (by default the engine's six input
//! topics) is read by assignment: no consumer group is joined and no
//! offset is committed. A partition is read from the offset for `since`
//! up to the high watermark captured when the range is opened, and stops
//! early at its first record stamped after `until`; records stamped
//! before `since` are skipped, so a wrong answer from the broker's
//! time index can only cost time, not records. Partitions are merged by
//! record timestamp; ties go to the earlier topic in the list, then the
//! lower partition, then the lower offset.
//!
//! A record's Kafka timestamp is its event time; its kind is the one its
//! topic carries (the `selfheal-kind` header for other topics), and its
//! value decodes as the live engine decodes it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use super::wire::{self, INPUT_KINDS};
use super::{Health, KafkaArgs, LiveError};
use crate::records::avro::decode_value;
use crate::records::{InputKind, Record};
use crate::replay::{BadLine, Item, Position, Source};
use crate::time::Timestamp;

/// What to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSpec {
    /// Topics in tie-break order.
    pub topics: Vec<String>,
    /// First event time included (milliseconds since the epoch).
    pub since: Option<Timestamp>,
    /// Last event time included.
    pub until: Option<Timestamp>,
}

impl RangeSpec {
    /// The engine's six input topics under `args`' prefix, whole.
    pub fn inputs(args: &KafkaArgs) -> RangeSpec {
        RangeSpec {
            topics: args
                .topics()
                .inputs()
                .iter()
                .map(|t| t.to_string())
                .collect(),
            since: None,
            until: None,
        }
    }

    /// Topics named on the command line: an input topic's short name
    /// (`metrics`, `alerts`, `changes`, `results`, `approvals`, `control`)
    /// is that topic under the prefix; any other name is a full topic name.
    pub fn named(args: &KafkaArgs, names: &[String]) -> RangeSpec {
        let topics = args.topics();
        let short = [
            "metrics",
            "alerts",
            "changes",
            "results",
            "approvals",
            "control",
        ];
        let topics = names
            .iter()
            .map(|n| match short.iter().position(|s| s == n) {
                Some(i) => topics.inputs()[i].to_string(),
                None => n.clone(),
            })
            .collect();
        RangeSpec {
            topics,
            since: None,
            until: None,
        }
    }
}

/// One record of a range, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The Kafka timestamp (milliseconds); the event time.
    pub ts: i64,
    /// The record kind, from the topic or the `selfheal-kind` header.
    pub kind: Option<InputKind>,
    pub value: Vec<u8>,
    /// Why the record cannot be used, when that is known before decoding.
    pub problem: Option<String>,
}

impl RangeRecord {
    /// Where the record is: `topic[partition]@offset`.
    pub fn place(&self) -> String {
        format!("{}[{}]@{}", self.topic, self.partition, self.offset)
    }

    /// The record as the live engine would decode it; the error names the
    /// record's place.
    pub fn decode(&self) -> Result<Record, String> {
        let fail = |why: &dyn std::fmt::Display| format!("{}: {why}", self.place());
        if let Some(p) = &self.problem {
            return Err(fail(p));
        }
        let kind = self.kind.ok_or_else(|| {
            fail(&format_args!(
                "unknown record kind: not an input topic and no valid {} header",
                wire::KIND_HEADER
            ))
        })?;
        let input = decode_value(kind, &self.value).map_err(|e| fail(&e))?;
        Ok(Record {
            ts: Timestamp(self.ts),
            input,
        })
    }

    /// The record as a replay line (`{"ts","kind","data"}`): JSON values
    /// verbatim, Avro values in their JSON form. The error is
    /// [`decode`](Self::decode)'s.
    pub fn replay_line(&self) -> Result<String, String> {
        let rec = self.decode()?;
        wire::replay_line(rec.ts, rec.input.kind(), &self.value).ok_or_else(|| {
            format!(
                "{}: the record has no JSON form as one replay line",
                self.place()
            )
        })
    }
}

/// A sorted stream feeding a [`Merge`].
pub trait Lane {
    type Item;
    type Error;
    /// The next item with its timestamp; timestamps need not be monotonic,
    /// the merge takes heads as they come.
    fn pull(&mut self) -> Result<Option<(i64, Self::Item)>, Self::Error>;
}

impl<T> Lane for std::vec::IntoIter<(i64, T)> {
    type Item = T;
    type Error = std::convert::Infallible;
    fn pull(&mut self) -> Result<Option<(i64, T)>, Self::Error> {
        Ok(self.next())
    }
}

/// A k-way merge of lanes by timestamp; ties go to the lane listed first,
/// and within a lane items keep their order.
pub struct Merge<L: Lane> {
    lanes: Vec<L>,
    heads: Vec<Option<L::Item>>,
    heap: BinaryHeap<Reverse<(i64, usize)>>,
    /// Lanes whose head was taken and must be refilled before the next pop.
    refill: Vec<usize>,
}

impl<L: Lane> Merge<L> {
    pub fn new(lanes: Vec<L>) -> Merge<L> {
        let n = lanes.len();
        Merge {
            lanes,
            heads: (0..n).map(|_| None).collect(),
            heap: BinaryHeap::with_capacity(n),
            refill: (0..n).collect(),
        }
    }

    pub fn lanes(&self) -> &[L] {
        &self.lanes
    }

    /// The next item of all lanes, with the index of its lane.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<(usize, L::Item)>, L::Error> {
        while let Some(&i) = self.refill.last() {
            if let Some((ts, item)) = self.lanes[i].pull()? {
                self.heads[i] = Some(item);
                self.heap.push(Reverse((ts, i)));
            }
            self.refill.pop();
        }
        let Some(Reverse((_, i))) = self.heap.pop() else {
            return Ok(None);
        };
        self.refill.push(i);
        Ok(self.heads[i].take().map(|item| (i, item)))
    }
}

/// How long a partition may deliver nothing before its range is abandoned.
const STALL: StdDuration = StdDuration::from_secs(60);

/// Messages fetched into the consumer's main queue before their
/// partition got its own queue, by lane. Every one of them precedes what
/// arrives on that partition's queue.
#[derive(Default)]
struct EarlyQueues {
    lanes: HashMap<(String, i32), usize>,
    queues: Vec<VecDeque<OwnedMessage>>,
}

type Early = Arc<Mutex<EarlyQueues>>;

/// Polls the consumer's main queue (which serves the client's events) and
/// moves every message found there to its lane's early messages.
fn drain_main(consumer: &BaseConsumer<Health>, early: &Early) {
    while let Some(r) = consumer.poll(StdDuration::ZERO) {
        match r {
            Ok(m) => {
                if let Ok(mut e) = early.lock() {
                    let key = (m.topic().to_string(), m.partition());
                    if let Some(&i) = e.lanes.get(&key) {
                        e.queues[i].push_back(m.detach());
                    }
                }
            }
            Err(KafkaError::PartitionEOF(_)) => {}
            Err(e) => tracing::warn!(error = %e, "reading a range"),
        }
    }
}

/// What a lane makes of one message.
enum Step {
    /// Before the lane's position (a repeat) or before `since`.
    Skip,
    Yield(i64, RangeRecord),
    End,
}

/// Where a partition's reading stands.
struct Cursor {
    topic: String,
    partition: i32,
    kind: Option<InputKind>,
    /// Next offset expected.
    next: i64,
    /// Offset where the range ends (the high watermark at start).
    end: i64,
    since: Option<i64>,
    until: Option<i64>,
    /// Offsets read or passed.
    read: u64,
    last_ts: i64,
}

/// One partition of a range.
pub struct KafkaLane {
    consumer: Arc<BaseConsumer<Health>>,
    queue: PartitionQueue<Health>,
    early: Early,
    /// This lane's index among the early queues.
    index: usize,
    cur: Cursor,
    done: bool,
    /// Offsets in the range.
    total: u64,
}

impl KafkaLane {
    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.cur.read = self.total;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&self.cur.topic, self.cur.partition);
            // Only saves fetching what will not be read.
            let _ = self.consumer.pause(&tpl);
        }
    }

    fn early_message(&self) -> Option<OwnedMessage> {
        self.early
            .lock()
            .ok()?
            .queues
            .get_mut(self.index)?
            .pop_front()
    }
}

impl Cursor {
    fn step<M: Message>(&mut self, m: &M) -> Step {
        let off = m.offset();
        if off < self.next {
            return Step::Skip;
        }
        if off >= self.end {
            return Step::End;
        }
        self.read += (off + 1 - self.next) as u64;
        self.next = off + 1;
        let (ts, problem) = match m.timestamp().to_millis() {
            Some(ts) => (ts, None),
            None => (
                self.last_ts,
                Some("the record has no timestamp".to_string()),
            ),
        };
        if problem.is_none() {
            if self.since.is_some_and(|s| ts < s) {
                return Step::Skip;
            }
            if self.until.is_some_and(|u| ts > u) {
                return Step::End;
            }
            self.last_ts = ts;
        }
        let kind = self.kind.or_else(|| {
            wire::header(m.headers(), wire::KIND_HEADER)
                .and_then(|k| InputKind::parse(k).ok())
                .filter(|k| *k != InputKind::Tick)
        });
        Step::Yield(
            ts,
            RangeRecord {
                topic: self.topic.clone(),
                partition: self.partition,
                offset: off,
                ts,
                kind,
                value: m.payload().unwrap_or(&[]).to_vec(),
                problem,
            },
        )
    }
}

impl Lane for KafkaLane {
    type Item = RangeRecord;
    type Error = LiveError;

    fn pull(&mut self) -> Result<Option<(i64, RangeRecord)>, LiveError> {
        let mut quiet_since = Instant::now();
        loop {
            if self.done {
                return Ok(None);
            }
            if self.cur.next >= self.cur.end {
                self.finish();
                return Ok(None);
            }
            drain_main(&self.consumer, &self.early);
            let step = if let Some(m) = self.early_message() {
                self.cur.step(&m)
            } else {
                match self.queue.poll(StdDuration::from_millis(100)) {
                    None => {
                        if quiet_since.elapsed() > STALL {
                            return Err(LiveError::Other(format!(
                                "{}[{}]: nothing read at offset {} (range ends at {}) for {}s",
                                self.cur.topic,
                                self.cur.partition,
                                self.cur.next,
                                self.cur.end,
                                STALL.as_secs()
                            )));
                        }
                        continue;
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) => {
                        // The end as this reader sees it (the last stable
                        // offset, under read_committed).
                        Step::End
                    }
                    Some(Err(e)) if super::transient(&e) => {
                        // Bounded by STALL: nothing read for that long fails.
                        tracing::warn!(
                            error = %e,
                            "reading {}[{}]; retrying",
                            self.cur.topic,
                            self.cur.partition
                        );
                        continue;
                    }
                    Some(Err(e)) => {
                        return Err(LiveError::Kafka {
                            context: format!("reading {}[{}]", self.cur.topic, self.cur.partition),
                            source: e,
                        })
                    }
                    Some(Ok(m)) => self.cur.step(&m),
                }
            };
            quiet_since = Instant::now();
            match step {
                Step::Skip => {}
                Step::End => {
                    self.finish();
                    return Ok(None);
                }
                Step::Yield(ts, r) => return Ok(Some((ts, r))),
            }
        }
    }
}

/// A range of Kafka topics, merged by timestamp.
pub struct KafkaRange {
    merge: Merge<KafkaLane>,
    items: usize,
    partitions: usize,
}

impl KafkaRange {
    /// Looks up the partitions, their watermarks and the offsets for
    /// `since`, and starts reading.
    pub fn open(args: &KafkaArgs, spec: &RangeSpec) -> Result<KafkaRange, LiveError> {
        let mut cc = args.consumer_config()?;
        // librdkafka wants a group id even for assigned partitions; the
        // group is never joined and nothing is committed.
        cc.set("group.id", "selfheal-range")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed");
        // Each partition has its own queue, and librdkafka's prefetch
        // limit then holds per partition.
        if cc.get("queued.max.messages.kbytes").is_none() {
            cc.set("queued.max.messages.kbytes", "8192");
        }
        let consumer: Arc<BaseConsumer<Health>> = Arc::new(
            cc.create_with_context(Health::default())
                .map_err(LiveError::kafka("creating the range reader"))?,
        );
        let timeout = StdDuration::from_secs(10);
        let inputs = args.topics();
        let inputs = inputs.inputs();
        let since = spec.since.map(|t| t.0);
        let until = spec.until.map(|t| t.0);

        // Every partition with its watermarks, in tie-break order.
        let mut parts: Vec<(String, i32, Option<InputKind>, i64, i64)> = Vec::new();
        for topic in &spec.topics {
            let md = consumer
                .fetch_metadata(Some(topic), timeout)
                .map_err(LiveError::kafka(format!("fetching {topic} metadata")))?;
            let mut ids: Vec<i32> = md
                .topics()
                .iter()
                .filter(|t| t.name() == topic && t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            if ids.is_empty() {
                return Err(LiveError::MissingTopic {
                    topic: topic.clone(),
                    brokers: args.brokers.clone(),
                });
            }
            ids.sort_unstable();
            let kind = inputs
                .iter()
                .position(|t| t == topic)
                .map(|i| INPUT_KINDS[i]);
            for p in ids {
                let (low, high) = consumer
                    .fetch_watermarks(topic, p, timeout)
                    .map_err(LiveError::kafka(format!("reading {topic}[{p}] watermarks")))?;
                parts.push((topic.clone(), p, kind, low, high));
            }
        }

        let starts = match since {
            Some(s) => start_offsets(args, &consumer, &parts, s)?,
            None => parts.iter().map(|p| p.3).collect(),
        };

        let mut tpl = TopicPartitionList::new();
        for ((topic, p, ..), &start) in parts.iter().zip(&starts) {
            tpl.add_partition_offset(topic, *p, Offset::Offset(start))
                .map_err(LiveError::kafka("assigning the range"))?;
        }
        consumer
            .assign(&tpl)
            .map_err(LiveError::kafka("assigning the range"))?;
        let early: Early = Arc::new(Mutex::new(EarlyQueues {
            lanes: parts
                .iter()
                .enumerate()
                .map(|(i, p)| ((p.0.clone(), p.1), i))
                .collect(),
            queues: vec![VecDeque::new(); parts.len()],
        }));
        let mut lanes = Vec::with_capacity(parts.len());
        for ((topic, p, kind, low, high), &start) in parts.into_iter().zip(&starts) {
            tracing::debug!(topic, partition = p, low, high, start, "range partition");
            let queue = consumer.split_partition_queue(&topic, p).ok_or_else(|| {
                LiveError::Other(format!("cannot read {topic}[{p}] on its own queue"))
            })?;
            let total = (high - start).max(0) as u64;
            lanes.push(KafkaLane {
                consumer: consumer.clone(),
                queue,
                early: early.clone(),
                index: lanes.len(),
                cur: Cursor {
                    topic,
                    partition: p,
                    kind,
                    next: start,
                    end: high,
                    since,
                    until,
                    read: 0,
                    last_ts: since.unwrap_or(i64::MIN),
                },
                done: false,
                total,
            });
        }
        // What was fetched before the partition queues were split off.
        drain_main(&consumer, &early);
        let partitions = lanes.len();
        Ok(KafkaRange {
            merge: Merge::new(lanes),
            items: 0,
            partitions,
        })
    }

    /// The next record of the range in merged order.
    pub fn next_record(&mut self) -> Result<Option<RangeRecord>, LiveError> {
        let r = self.merge.next()?.map(|(_, r)| r);
        self.items += usize::from(r.is_some());
        Ok(r)
    }

    /// Partitions read.
    pub fn partitions(&self) -> usize {
        self.partitions
    }
}

impl Source for KafkaRange {
    fn next_item(&mut self) -> io::Result<Option<Item>> {
        let Some(r) = self.next_record().map_err(io::Error::other)? else {
            return Ok(None);
        };
        Ok(Some(match r.decode() {
            Ok(rec) => Item::Record(rec),
            Err(reason) => Item::Bad(BadLine {
                line: self.items,
                reason,
            }),
        }))
    }

    fn position(&self) -> Position {
        let lanes = self.merge.lanes();
        Position {
            items: self.items,
            last: self.items,
            done: lanes.iter().map(|l| l.cur.read).sum(),
            total: Some(lanes.iter().map(|l| l.total).sum()),
        }
    }
}

/// Where each partition starts for `since`: the broker's answer from its
/// time index when the record just before that offset is older than
/// `since` (so the answer holds up), else the partition's beginning.
fn start_offsets(
    args: &KafkaArgs,
    consumer: &BaseConsumer<Health>,
    parts: &[(String, i32, Option<InputKind>, i64, i64)],
    since: i64,
) -> Result<Vec<i64>, LiveError> {
    let mut q = TopicPartitionList::new();
    for (topic, p, ..) in parts {
        q.add_partition_offset(topic, *p, Offset::Offset(since))
            .map_err(LiveError::kafka("looking up offsets for --since"))?;
    }
    let answer = consumer
        .offsets_for_times(q, StdDuration::from_secs(10))
        .map_err(LiveError::kafka("looking up offsets for --since"))?;
    let mut starts = Vec::with_capacity(parts.len());
    // Partitions whose answer is checked by reading the record before it.
    let mut check = Vec::new();
    for (i, (topic, p, _, low, high)) in parts.iter().enumerate() {
        let found = answer
            .find_partition(topic, *p)
            .filter(|e| e.error().is_ok())
            .map(|e| e.offset());
        tracing::debug!(topic, partition = p, since, answer = ?found, "offset for --since");
        let start = match found {
            Some(Offset::Offset(o)) if o > *low && o <= *high => {
                check.push(i);
                o
            }
            // Nothing at or after `since`; reading from the beginning
            // costs only time if that is wrong.
            _ => *low,
        };
        starts.push(start);
    }
    if check.is_empty() {
        return Ok(starts);
    }
    let before = read_one_each(
        args,
        check
            .iter()
            .map(|&i| (parts[i].0.as_str(), parts[i].1, starts[i] - 1)),
    )?;
    for (&i, ts) in check.iter().zip(before) {
        if ts.is_none_or(|ts| ts >= since) {
            starts[i] = parts[i].3;
        }
    }
    Ok(starts)
}

/// The timestamp of the record at each (topic, partition, offset), `None`
/// when it cannot be read (a gap, a control record, a stall).
fn read_one_each<'a>(
    args: &KafkaArgs,
    at: impl Iterator<Item = (&'a str, i32, i64)>,
) -> Result<Vec<Option<i64>>, LiveError> {
    let at: Vec<(&str, i32, i64)> = at.collect();
    let mut cc = args.consumer_config()?;
    cc.set("group.id", "selfheal-range")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_uncommitted");
    let c: BaseConsumer<Health> = cc
        .create_with_context(Health::default())
        .map_err(LiveError::kafka("creating the range probe"))?;
    let mut tpl = TopicPartitionList::new();
    for &(t, p, o) in &at {
        tpl.add_partition_offset(t, p, Offset::Offset(o))
            .map_err(LiveError::kafka("assigning the range probe"))?;
    }
    c.assign(&tpl)
        .map_err(LiveError::kafka("assigning the range probe"))?;
    let mut got: Vec<Option<Option<i64>>> = vec![None; at.len()];
    let deadline = Instant::now() + StdDuration::from_secs(30);
    while got.iter().any(Option::is_none) && Instant::now() < deadline {
        match c.poll(StdDuration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                if let Some(i) = at
                    .iter()
                    .position(|&(t, p, _)| t == m.topic() && p == m.partition())
                {
                    let ts = (m.offset() == at[i].2)
                        .then(|| m.timestamp().to_millis())
                        .flatten();
                    got[i].get_or_insert(ts);
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                for (i, &(_, q, _)) in at.iter().enumerate() {
                    if q == p {
                        got[i].get_or_insert(None);
                    }
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "probing offsets for --since"),
        }
    }
    Ok(got.into_iter().map(Option::flatten).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(lanes: Vec<Vec<(i64, &'static str)>>) -> Vec<&'static str> {
        let mut m = Merge::new(lanes.into_iter().map(Vec::into_iter).collect());
        let mut out = Vec::new();
        while let Some((_, x)) = m.next().unwrap() {
            out.push(x);
        }
        out
    }

    #[test]
    fn lanes_merge_by_timestamp_with_ties_to_the_earlier_lane_then_lane_order() {
        let got = merged(vec![
            vec![(10, "a1"), (20, "a2"), (20, "a3"), (40, "a4")],
            vec![(5, "b1"), (20, "b2"), (30, "b3")],
            vec![],
            vec![(20, "d1"), (50, "d2")],
        ]);
        assert_eq!(got, ["b1", "a1", "a2", "a3", "b2", "d1", "b3", "a4", "d2"]);
    }

    #[test]
    fn a_lane_out_of_order_is_taken_as_it_comes() {
        // A partition's timestamps need not grow; its order is kept.
        let got = merged(vec![
            vec![(30, "a1"), (10, "a2")],
            vec![(20, "b1"), (25, "b2")],
        ]);
        assert_eq!(got, ["b1", "b2", "a1", "a2"]);
    }

    #[test]
    fn an_empty_merge_ends_at_once() {
        assert!(merged(vec![]).is_empty());
        assert!(merged(vec![vec![], vec![]]).is_empty());
    }

    #[test]
    fn short_topic_names_are_input_topics_under_the_prefix() {
        let mut k = KafkaArgs::local("x:1");
        k.topic_prefix = "p.".into();
        let s = RangeSpec::named(&k, &["alerts".into(), "other.topic".into()]);
        assert_eq!(s.topics, ["p.alerts", "other.topic"]);
        assert_eq!(RangeSpec::inputs(&k).topics.len(), 6);
    }

    #[test]
    fn undecodable_records_name_their_place() {
        let r = RangeRecord {
            topic: "p.alerts".into(),
            partition: 2,
            offset: 17,
            ts: 0,
            kind: Some(InputKind::Alert),
            value: b"{not json".to_vec(),
            problem: None,
        };
        let e = r.decode().unwrap_err();
        assert!(e.starts_with("p.alerts[2]@17: "), "{e}");
        assert_eq!(r.replay_line(), Err(e));
        let r = RangeRecord {
            kind: None,
            value: br#"{"status":"firing","labels":{"alertname":"A"}}"#.to_vec(),
            ..r
        };
        assert!(r.decode().unwrap_err().contains("unknown record kind"));
        let r = RangeRecord {
            kind: Some(InputKind::Alert),
            ..r
        };
        assert_eq!(
            r.replay_line().unwrap(),
            r#"{"ts":"1970-01-01T00:00:00Z","kind":"alert","data":{"status":"firing","labels":{"alertname":"A"}}}"#
        );
    }
}
