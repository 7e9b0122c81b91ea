//! `RangeSet`: a sorted set of disjoint, non-adjacent half-open byte ranges `[start, end)`.
//! It records which bytes of a file are done, and answers what is still missing.

use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Sorted, disjoint, non-adjacent half-open ranges. Empty ranges are never stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RangeSet {
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a set from arbitrary (possibly overlapping, unsorted) ranges.
    pub fn from_ranges<I: IntoIterator<Item = Range<u64>>>(iter: I) -> Self {
        let mut set = Self::new();
        for r in iter {
            set.insert(r);
        }
        set
    }

    /// Adds `[r.start, r.end)`, merging with neighbours it touches or overlaps.
    pub fn insert(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        // First range whose end reaches r.start (touching counts), last whose start <= r.end.
        let lo = self.ranges.partition_point(|&(_, e)| e < r.start);
        let hi = self.ranges.partition_point(|&(s, _)| s <= r.end);
        if lo == hi {
            self.ranges.insert(lo, (r.start, r.end));
            return;
        }
        let start = r.start.min(self.ranges[lo].0);
        let end = r.end.max(self.ranges[hi - 1].1);
        self.ranges.splice(lo..hi, [(start, end)]);
    }

    /// Removes `[r.start, r.end)` from the set.
    pub fn remove(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        for &(s, e) in &self.ranges {
            if e <= r.start || s >= r.end {
                out.push((s, e));
                continue;
            }
            if s < r.start {
                out.push((s, r.start));
            }
            if e > r.end {
                out.push((r.end, e));
            }
        }
        self.ranges = out;
    }

    /// Total number of bytes covered.
    pub fn covered(&self) -> u64 {
        self.ranges.iter().map(|&(s, e)| e - s).sum()
    }

    /// True when every byte of `r` is in the set.
    pub fn contains_range(&self, r: Range<u64>) -> bool {
        if r.start >= r.end {
            return true;
        }
        let i = self.ranges.partition_point(|&(_, e)| e <= r.start);
        self.ranges
            .get(i)
            .is_some_and(|&(s, e)| s <= r.start && r.end <= e)
    }

    /// End of the done run that contains `pos` (or `pos` itself when `pos` is not done).
    pub fn run_end(&self, pos: u64) -> u64 {
        let i = self.ranges.partition_point(|&(_, e)| e <= pos);
        match self.ranges.get(i) {
            Some(&(s, e)) if s <= pos => e,
            _ => pos,
        }
    }

    /// The parts of `[0, len)` not in the set, in order.
    pub fn missing(&self, len: u64) -> Vec<Range<u64>> {
        self.missing_within(0..len)
    }

    /// The parts of `within` not in the set, in order.
    pub fn missing_within(&self, within: Range<u64>) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let mut cur = within.start;
        for &(s, e) in &self.ranges {
            if e <= cur {
                continue;
            }
            if s >= within.end {
                break;
            }
            if s > cur {
                out.push(cur..s.min(within.end));
            }
            cur = cur.max(e);
            if cur >= within.end {
                break;
            }
        }
        if cur < within.end {
            out.push(cur..within.end);
        }
        out
    }

    /// The ranges in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges.iter().map(|&(s, e)| s..e)
    }

    /// Whether the set holds no byte at all.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Checks the invariants (sorted, disjoint, non-adjacent, non-empty); used after deserialising.
    pub fn is_well_formed(&self) -> bool {
        self.ranges.iter().all(|&(s, e)| s < e) && self.ranges.windows(2).all(|w| w[0].1 < w[1].0)
    }

    /// Largest end offset covered (0 when empty).
    pub fn max_end(&self) -> u64 {
        self.ranges.last().map_or(0, |&(_, e)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn merges_touching_and_overlapping() {
        let mut s = RangeSet::new();
        s.insert(10..20);
        s.insert(30..40);
        s.insert(20..30);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![10..40]);
        s.insert(0..5);
        s.insert(3..12);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..40]);
        s.insert(50..60);
        assert_eq!(s.missing(70), vec![40..50, 60..70]);
        assert!(s.contains_range(0..40));
        assert!(!s.contains_range(39..41));
        assert_eq!(s.run_end(5), 40);
        assert_eq!(s.run_end(45), 45);
    }

    proptest! {
        #[test]
        fn set_matches_a_bitmap(ops in prop::collection::vec((0u64..200, 0u64..40), 0..40)) {
            let mut s = RangeSet::new();
            let mut bits = [false; 256];
            for (start, len) in ops {
                s.insert(start..start + len);
                for b in &mut bits[start as usize..(start + len) as usize] { *b = true; }
            }
            prop_assert!(s.is_well_formed());
            prop_assert_eq!(s.covered(), bits.iter().filter(|b| **b).count() as u64);
            let missing = s.missing(256);
            let mut covered = 0;
            for r in &missing {
                for i in r.clone() { prop_assert!(!bits[i as usize]); }
                covered += r.end - r.start;
            }
            prop_assert_eq!(covered + s.covered(), 256);
        }
    }
}
