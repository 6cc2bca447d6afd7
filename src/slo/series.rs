//! Counter series: Prometheus increase semantics and the selector index.
//!
//! Each series (metric name plus label set) remembers its last value. The
//! first sample is the baseline; after that the increase is the difference,
//! or the whole new value when the counter went down (a reset). Which SLOs
//! a series feeds, and in which role, is worked out once, the first time
//! the series is seen, through an index keyed by metric name and the
//! selector's `service="…"` matcher.

use rustc_hash::FxHashMap;

use crate::policy::{Selector, Slo};
use crate::records::{Fixed, Labels, LabelsRef};

/// How a series feeds an SLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Total,
    /// Errors (`bad`), or successes (`good`) when the SLO counts good events.
    Err,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feed {
    pub slo: u32,
    pub role: Role,
}

#[derive(Debug)]
struct SeriesState {
    name: Box<str>,
    labels: Labels,
    last: Fixed,
    feeds: Box<[Feed]>,
    /// The next series whose key hashes the same, if any.
    next: Option<usize>,
}

#[derive(Debug, Default)]
struct NameIndex {
    by_service: FxHashMap<String, Vec<(Feed, usize)>>,
    any_service: Vec<(Feed, usize)>,
}

/// Every selector of every SLO, indexed for first-sight matching.
#[derive(Debug, Default)]
struct SelectorIndex {
    selectors: Vec<Selector>,
    by_name: FxHashMap<String, NameIndex>,
    nameless: Vec<(Feed, usize)>,
}

impl SelectorIndex {
    fn build(slos: &[Slo]) -> SelectorIndex {
        let mut ix = SelectorIndex::default();
        for (i, slo) in slos.iter().enumerate() {
            let err = slo.bad.as_ref().or(slo.good.as_ref());
            let roles = [(Some(&slo.total), Role::Total), (err, Role::Err)];
            for (sel, role) in roles {
                let Some(sel) = sel else { continue };
                let feed = Feed {
                    slo: i as u32,
                    role,
                };
                let at = ix.selectors.len();
                ix.selectors.push(sel.clone());
                let entry = (feed, at);
                match &sel.metric {
                    None => ix.nameless.push(entry),
                    Some(name) => {
                        let n = ix.by_name.entry(name.clone()).or_default();
                        match sel.equality("service") {
                            Some(svc) => {
                                n.by_service.entry(svc.to_string()).or_default().push(entry)
                            }
                            None => n.any_service.push(entry),
                        }
                    }
                }
            }
        }
        ix
    }

    fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let entry = size_of::<(Feed, usize)>();
        let list = |v: &Vec<(Feed, usize)>| v.capacity() * entry;
        let names: usize = self
            .by_name
            .iter()
            .map(|(k, n)| {
                k.capacity()
                    + list(&n.any_service)
                    + n.by_service
                        .iter()
                        .map(|(s, v)| s.capacity() + list(v))
                        .sum::<usize>()
                    + n.by_service.capacity() * (size_of::<(String, Vec<(Feed, usize)>)>() + 1)
            })
            .sum();
        self.selectors.capacity() * size_of::<Selector>()
            + self
                .selectors
                .iter()
                .map(Selector::heap_bytes)
                .sum::<usize>()
            + names
            + self.by_name.capacity() * (size_of::<(String, NameIndex)>() + 1)
            + list(&self.nameless)
    }

    fn feeds(&self, name: &str, labels: &Labels) -> Box<[Feed]> {
        let mut out: Vec<Feed> = Vec::new();
        let mut consider = |list: &[(Feed, usize)]| {
            for (feed, sel) in list {
                if self.selectors[*sel].matches(name, labels) {
                    out.push(*feed);
                }
            }
        };
        if let Some(n) = self.by_name.get(name) {
            if let Some(svc) = labels.get("service") {
                if let Some(list) = n.by_service.get(svc) {
                    consider(list);
                }
            }
            consider(&n.any_service);
        }
        consider(&self.nameless);
        // Order by SLO then role so updates are applied deterministically.
        out.sort_by_key(|f| (f.slo, f.role == Role::Err));
        out.dedup();
        out.into_boxed_slice()
    }
}

/// All counter series seen so far.
///
/// Series are found by a hash of their name and label set's content hash,
/// so a sample whose labels are borrowed from a decoder's buffer is looked
/// up without building an owned label set; one is built only for a new
/// series.
#[derive(Debug, Default)]
pub struct SeriesStore {
    index: SelectorIndex,
    /// First series of each key hash; further ones are chained by `next`.
    by_hash: FxHashMap<u64, usize>,
    /// Series by the bytes a decoder read their name and labels from
    /// (an Avro datum's series part, see
    /// [`crate::records::avro::MetricScan`]): a sample of a known series
    /// is found without decoding its labels. A series may have more than
    /// one entry (labels written in another order); past
    /// [`SeriesStore::raw_limit`] entries the map starts again.
    by_raw: FxHashMap<Box<[u8]>, usize>,
    series: Vec<SeriesState>,
}

/// A series found by [`SeriesStore::find_raw`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesId(usize);

fn key_hash(name: &str, labels: LabelsRef<'_>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    name.hash(&mut h);
    h.write_u64(labels.content_hash());
    h.finish()
}

impl SeriesStore {
    pub fn new(slos: &[Slo]) -> SeriesStore {
        SeriesStore {
            index: SelectorIndex::build(slos),
            by_hash: FxHashMap::default(),
            by_raw: FxHashMap::default(),
            series: Vec::new(),
        }
    }

    /// Most entries of `by_raw`: two encodings of each series and a
    /// margin, so labels re-ordered by a hostile or careless writer cost
    /// bounded memory.
    fn raw_limit(&self) -> usize {
        2 * self.series.len() + 1024
    }

    /// The series whose name and labels a full decode read from `raw`
    /// before, and its metric name.
    pub fn find_raw(&self, raw: &[u8]) -> Option<(SeriesId, &str)> {
        let &i = self.by_raw.get(raw)?;
        Some((SeriesId(i), &self.series[i].name))
    }

    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Bytes held by the series and the selector index (capacities;
    /// hash tables at one key, value and control byte per bucket).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let series: usize = self
            .series
            .iter()
            .map(|s| s.name.len() + s.labels.heap_bytes() + std::mem::size_of_val(&*s.feeds))
            .sum::<usize>()
            + self.series.capacity() * size_of::<SeriesState>();
        let by_hash = self.by_hash.capacity() * (size_of::<(u64, usize)>() + 1);
        let by_raw = self.by_raw.capacity() * (size_of::<(Box<[u8]>, usize)>() + 1)
            + self.by_raw.keys().map(|k| k.len()).sum::<usize>();
        series + by_hash + by_raw + self.index.heap_bytes()
    }

    /// Records a sample and hands its increase (0 for a baseline) and the
    /// SLOs it feeds to `apply`. Series that feed no SLO are remembered
    /// with no feeds, so the selector match runs once per series, not once
    /// per sample.
    /// `raw`, when given, is the bytes the sample's name and labels were
    /// decoded from: [`SeriesStore::find_raw`] finds the series by them
    /// from then on.
    pub fn observe(
        &mut self,
        name: &str,
        labels: LabelsRef<'_>,
        value: Fixed,
        raw: Option<&[u8]>,
        apply: impl FnMut(&[Feed], u64),
    ) {
        let i = self.find_or_add(name, labels, value, apply);
        if let Some(raw) = raw {
            if self.by_raw.len() >= self.raw_limit() {
                self.by_raw.clear();
            }
            self.by_raw.insert(raw.into(), i);
        }
    }

    /// [`SeriesStore::observe`] for a series found by
    /// [`SeriesStore::find_raw`].
    pub fn observe_id(&mut self, id: SeriesId, value: Fixed, mut apply: impl FnMut(&[Feed], u64)) {
        let st = &mut self.series[id.0];
        let inc = increase(st.last, value);
        st.last = value;
        apply(&st.feeds, inc);
    }

    fn find_or_add(
        &mut self,
        name: &str,
        labels: LabelsRef<'_>,
        value: Fixed,
        mut apply: impl FnMut(&[Feed], u64),
    ) -> usize {
        let key = key_hash(name, labels);
        let head = self.by_hash.get(&key).copied();
        let mut at = head;
        while let Some(i) = at {
            let st = &mut self.series[i];
            if &*st.name == name && labels.same_as(&st.labels) {
                let inc = increase(st.last, value);
                st.last = value;
                apply(&st.feeds, inc);
                return i;
            }
            at = st.next;
        }
        let labels = labels.to_labels();
        let feeds = self.index.feeds(name, &labels);
        apply(&feeds, 0);
        let id = self.series.len();
        self.series.push(SeriesState {
            name: name.into(),
            labels,
            last: value,
            feeds,
            next: head,
        });
        self.by_hash.insert(key, id);
        id
    }
}

/// A counter's increase from `last` to `value`.
fn increase(last: Fixed, value: Fixed) -> u64 {
    if value.0 >= last.0 {
        (value.0 - last.0) as u64
    } else {
        // Counter reset: the new value is all increase since the reset.
        value.0.max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::LabelBuf;

    #[test]
    fn series_bytes_are_remembered_within_a_bound() {
        let mut store = SeriesStore::new(&[]);
        let mut buf = LabelBuf::new();
        buf.push("service", "api");
        let labels = buf.finish();
        // One series written in ever new ways (a writer that reorders or
        // pads labels): its entries are bounded, the newest is found.
        for i in 0..5000u32 {
            let raw = i.to_le_bytes();
            store.observe("m", labels, Fixed(i64::from(i)), Some(&raw), |_, _| {});
            assert!(store.by_raw.len() <= store.raw_limit());
            let (id, name) = store.find_raw(&raw).expect("just remembered");
            assert_eq!((id, name), (SeriesId(0), "m"));
        }
        assert_eq!(store.series_count(), 1);
        assert_eq!(store.find_raw(b"never seen"), None);
    }
}
