//! [`PackedSet`]: one set's elements as fixed-size records in one buffer.
//!
//! A full sync at 100,000 services plans about 300,000 elements. As
//! [`SetElement`]s they cost three heap allocations and about 120 bytes
//! each; packed, a record is the key (for an interval set, its first and
//! last key) followed by the data: 16 to 40 bytes, one allocation per set.

use podnet_kernel::nftables::SetElement;

use crate::layout::SetId;

/// One set's elements, packed; sorted by key once [`PackedSet::finish`]ed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedSet {
    /// Bytes of one key (of each of an interval's two keys).
    key_len: usize,
    /// Whether records hold a last key too.
    interval: bool,
    /// Bytes of one element's data (0 for a set).
    data_len: usize,
    bytes: Vec<u8>,
}

impl PackedSet {
    /// An empty set shaped as `set`'s elements are.
    pub fn for_set(set: &SetId) -> Self {
        let spec = set.spec();
        PackedSet {
            key_len: spec.key_len as usize,
            interval: !spec.range_fields.is_empty(),
            data_len: spec.data.map_or(0, |(_, len)| len as usize),
            bytes: Vec::new(),
        }
    }

    /// Bytes of the part a record is found by: the key, and an interval's end.
    fn content_len(&self) -> usize {
        if self.interval {
            2 * self.key_len
        } else {
            self.key_len
        }
    }

    fn record_len(&self) -> usize {
        (self.content_len() + self.data_len).max(1)
    }

    /// How many elements it holds.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.record_len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Adds an element (each field cut or zero-padded to the set's sizes,
    /// which the encodings already have).
    pub fn push(&mut self, e: &SetElement) {
        let mut put = |bytes: &[u8], len: usize| {
            let start = self.bytes.len();
            self.bytes.extend(bytes.iter().take(len));
            self.bytes.resize(start + len, 0);
        };
        put(&e.key, self.key_len);
        if self.interval {
            put(e.key_end.as_deref().unwrap_or(&e.key), self.key_len);
        }
        put(e.data.as_deref().unwrap_or_default(), self.data_len);
    }

    /// Record `i`: its content (key and interval end) and its data.
    fn record(&self, i: usize) -> (&[u8], &[u8]) {
        let r = &self.bytes[i * self.record_len()..(i + 1) * self.record_len()];
        r.split_at(self.content_len())
    }

    /// Sorts the records by key; of records with one key the last added stays.
    pub fn finish(&mut self) {
        let n = self.len();
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by(|a, b| self.record(*a as usize).0.cmp(self.record(*b as usize).0));
        let mut out: Vec<u8> = Vec::with_capacity(self.bytes.len());
        let len = self.record_len();
        let mut i = 0;
        while i < order.len() {
            // The run of records with this key: keep the one added last.
            let mut last = order[i];
            let mut j = i + 1;
            while j < order.len()
                && self.record(order[j] as usize).0 == self.record(last as usize).0
            {
                last = last.max(order[j]);
                j += 1;
            }
            let at = last as usize * len;
            out.extend_from_slice(&self.bytes[at..at + len]);
            i = j;
        }
        self.bytes = out;
    }

    /// The data of the element with content `key` (sorted sets only).
    fn find(&self, key: &[u8]) -> Option<(usize, &[u8])> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.record(mid).0.cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some((mid, self.record(mid).1)),
            }
        }
        None
    }

    /// Element `i` as the kernel takes it.
    pub fn element(&self, i: usize) -> SetElement {
        let (content, data) = self.record(i);
        let (key, end) = content.split_at(self.key_len);
        SetElement {
            key: key.to_vec(),
            data: (self.data_len > 0).then(|| data.to_vec()),
            key_end: self.interval.then(|| end.to_vec()),
        }
    }

    /// Elements `range` (at most the set's length).
    pub fn elements(&self, range: std::ops::Range<usize>) -> Vec<SetElement> {
        range
            .filter(|i| *i < self.len())
            .map(|i| self.element(i))
            .collect()
    }

    /// Every element.
    pub fn all(&self) -> Vec<SetElement> {
        self.elements(0..self.len())
    }

    /// What `have` (the kernel's elements) lacks of this set, and which of
    /// its elements are stale (absent here, or with other data).
    pub fn compare(&self, have: &[SetElement]) -> (Vec<SetElement>, PackedSet) {
        let mut matched = vec![false; self.len()];
        let mut stale = Vec::new();
        // One record-sized buffer, refilled for each element looked up.
        let mut probe = PackedSet {
            bytes: Vec::with_capacity(self.record_len()),
            ..*self
        };
        for e in have {
            probe.bytes.clear();
            probe.push(e);
            let (content, data) = probe.record(0);
            match self.find(content) {
                Some((i, want)) if want == data => matched[i] = true,
                _ => stale.push(e.clone()),
            }
        }
        let mut missing = PackedSet {
            bytes: Vec::new(),
            ..*self
        };
        let len = self.record_len();
        for (i, _) in matched.iter().enumerate().filter(|(_, m)| !**m) {
            missing
                .bytes
                .extend_from_slice(&self.bytes[i * len..(i + 1) * len]);
        }
        (stale, missing)
    }
}
