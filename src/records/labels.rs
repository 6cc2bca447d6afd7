//! Label sets: sorted `(name, value)` pairs, cheap to hash and compare.

use std::collections::BTreeMap;

/// A label set sorted by name, without duplicates. Sorting once at decode
/// time makes equality, hashing and serialisation order-independent of the
/// input, which the core's determinism relies on. The content hash is
/// computed once too: series lookups hash every sample's labels, and a
/// cached `u64` makes that (and most unequal comparisons) one word.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    pairs: Vec<(String, String)>,
    hash: u64,
}

impl PartialEq for Labels {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.pairs == other.pairs
    }
}

impl Eq for Labels {}

impl std::hash::Hash for Labels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Labels {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.pairs.cmp(&other.pairs)
    }
}

fn content_hash(pairs: &[(String, String)]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    pairs.hash(&mut h);
    h.finish()
}

impl Labels {
    /// Heap bytes held (capacities).
    pub fn heap_bytes(&self) -> usize {
        self.pairs.capacity() * std::mem::size_of::<(String, String)>()
            + self
                .pairs
                .iter()
                .map(|(k, v)| k.capacity() + v.capacity())
                .sum::<usize>()
    }

    pub fn new() -> Labels {
        Labels::from_sorted(Vec::new())
    }

    fn from_sorted(pairs: Vec<(String, String)>) -> Labels {
        let hash = content_hash(&pairs);
        Labels { pairs, hash }
    }

    /// Builds a label set from pairs in any order; a later duplicate name wins.
    pub fn from_pairs<I, K, V>(pairs: I) -> Labels
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let map: BTreeMap<String, String> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Labels::from_sorted(map.into_iter().collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| self.pairs[i].1.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Sets one label, keeping the order.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        match self.pairs.binary_search_by(|(k, _)| k.cmp(&name)) {
            Ok(i) => self.pairs[i].1 = value.into(),
            Err(i) => self.pairs.insert(i, (name, value.into())),
        }
        self.hash = content_hash(&self.pairs);
    }

    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.pairs.iter().cloned().collect()
    }

    /// A borrowed view of this label set.
    pub fn as_ref(&self) -> LabelsRef<'_> {
        LabelsRef {
            pairs: &self.pairs,
            hash: self.hash,
        }
    }
}

/// A borrowed label set: sorted by name, without duplicates, with the same
/// content hash as the [`Labels`] holding the same pairs. Decoders hand
/// these out from reusable buffers, so a sample of a known series is
/// looked up without allocating.
#[derive(Debug, Clone, Copy)]
pub struct LabelsRef<'a> {
    pairs: &'a [(String, String)],
    hash: u64,
}

impl<'a> LabelsRef<'a> {
    /// The content hash, equal to that of the owned label set.
    pub fn content_hash(&self) -> u64 {
        self.hash
    }

    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| self.pairs[i].1.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Whether `owned` holds the same pairs.
    pub fn same_as(&self, owned: &Labels) -> bool {
        self.hash == owned.hash && self.pairs == owned.pairs.as_slice()
    }

    pub fn to_labels(&self) -> Labels {
        Labels {
            pairs: self.pairs.to_vec(),
            hash: self.hash,
        }
    }
}

/// A reusable label set builder for decoders: pairs are copied into
/// strings kept from earlier samples, so building the labels of a sample
/// allocates only when a name or value is longer than any seen before in
/// its slot.
#[derive(Debug, Default)]
pub struct LabelBuf {
    pairs: Vec<(String, String)>,
    len: usize,
}

impl LabelBuf {
    pub fn new() -> LabelBuf {
        LabelBuf::default()
    }

    /// Empties the set, keeping the strings' storage.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Adds a pair; a later duplicate name wins, as in [`Labels::from_pairs`].
    pub fn push(&mut self, name: &str, value: &str) {
        if let Some((_, v)) = self.pairs[..self.len].iter_mut().find(|(k, _)| k == name) {
            v.clear();
            v.push_str(value);
            return;
        }
        if self.len == self.pairs.len() {
            self.pairs.push((name.to_owned(), value.to_owned()));
        } else {
            let (k, v) = &mut self.pairs[self.len];
            k.clear();
            k.push_str(name);
            v.clear();
            v.push_str(value);
        }
        self.len += 1;
    }

    /// Sorts the pairs by name and returns the set.
    pub fn finish(&mut self) -> LabelsRef<'_> {
        let pairs = &mut self.pairs[..self.len];
        // Label sets are small: an insertion sort of swapped pointers,
        // comparing first bytes before whole names.
        let after = |a: &str, b: &str| match (a.as_bytes().first(), b.as_bytes().first()) {
            (Some(x), Some(y)) if x != y => x > y,
            _ => a > b,
        };
        for i in 1..pairs.len() {
            let mut j = i;
            while j > 0 && after(&pairs[j - 1].0, &pairs[j].0) {
                pairs.swap(j - 1, j);
                j -= 1;
            }
        }
        let pairs = &self.pairs[..self.len];
        LabelsRef {
            pairs,
            hash: content_hash(pairs),
        }
    }
}

impl serde::Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.pairs.len()))?;
        for (k, v) in &self.pairs {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> serde::Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, String>::deserialize(d)?;
        Ok(Labels::from_sorted(map.into_iter().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_of_input_does_not_matter() {
        let a = Labels::from_pairs([("b", "2"), ("a", "1")]);
        let b = Labels::from_pairs([("a", "1"), ("b", "2")]);
        assert_eq!(a, b);
        assert_eq!(a.get("a"), Some("1"));
        assert_eq!(a.get("c"), None);
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"a":"1","b":"2"}"#);
    }

    #[test]
    fn label_buf_builds_the_same_set() {
        let mut buf = LabelBuf::new();
        for round in 0..3 {
            buf.clear();
            let input = [
                ("zone", "eu"),
                ("b", "2"),
                ("ab", "0"),
                ("a", "1"),
                ("", "e"),
                ("aa", "0"),
                ("b", "3"),
            ];
            for (k, v) in &input[round..] {
                buf.push(k, v);
            }
            let want = Labels::from_pairs(input[round..].iter().copied());
            let got = buf.finish();
            assert!(got.same_as(&want), "{round}");
            assert_eq!(got.content_hash(), want.as_ref().content_hash());
            assert_eq!(got.to_labels(), want);
            assert_eq!(got.get("b"), Some("3"));
        }
    }
}
