//! Range planning for one download: which connection fetches which bytes.
//!
//! The missing bytes start as a queue of ranges split so every connection has one. An idle
//! connection takes the next queued range; when the queue is empty it takes half of the largest
//! remaining assignment (work stealing, down to a minimum split size); near the end it may
//! duplicate the slowest assignment (endgame) so one slow connection cannot hold the file hostage.
//! `Plan` is plain data, with no I/O and no clock, so it is property-tested in isolation.

use crate::ranges::RangeSet;
use std::ops::Range;

/// Splits are aligned to this many bytes (page-sized writes), unless the range is tiny.
const ALIGN: u64 = 4096;

/// What one connection is fetching now.
#[derive(Debug, Clone, PartialEq)]
struct Assignment {
    /// First byte of the assignment (bytes from here to `pos` are claimed, maybe not yet written).
    start: u64,
    /// Next byte this connection will receive; everything before it in the assignment is claimed.
    pos: u64,
    /// Exclusive end; shrinks when another connection steals the tail.
    end: u64,
    /// The other connection of an endgame pair, if any.
    partner: Option<usize>,
    /// Measured speed in bytes per second (0 = unknown).
    rate: f64,
    /// End of the request in flight: stealing prefers to split here, so the victim need not
    /// abandon its connection.
    req_end: u64,
}

impl Assignment {
    /// A new assignment of `r`, not yet started.
    fn fresh(r: &Range<u64>) -> Self {
        Assignment {
            start: r.start,
            pos: r.start,
            end: r.end,
            partner: None,
            rate: 0.0,
            req_end: 0,
        }
    }
}

/// The download's range plan. Worker ids are `0..workers`.
#[derive(Debug, Clone)]
pub struct Plan {
    len: u64,
    done: RangeSet,
    queue: Vec<Range<u64>>,
    active: Vec<Option<Assignment>>,
    min_split: u64,
    /// Only assignments expected to take longer than this (at their measured speed) are split.
    min_steal_secs: f64,
}

impl Plan {
    /// A plan for a file of `len` bytes of which `done` is already on disk, for `workers`
    /// connections; no range smaller than `min_split` is split further (except in endgame).
    pub fn new(len: u64, done: RangeSet, workers: usize, min_split: u64) -> Self {
        let min_split = min_split.max(1);
        let workers = workers.max(1);
        let mut queue = done.missing(len);
        // Split the largest missing range in halves until every connection has one.
        while queue.len() < workers {
            let (i, largest) = match queue
                .iter()
                .enumerate()
                .max_by_key(|(_, r)| r.end - r.start)
            {
                Some((i, r)) => (i, r.clone()),
                None => break,
            };
            if largest.end - largest.start < 2 * min_split {
                break;
            }
            let mid = split_point(largest.start, largest.end);
            queue[i] = largest.start..mid;
            queue.insert(i + 1, mid..largest.end);
        }
        Plan {
            len,
            done,
            queue,
            active: vec![None; workers],
            min_split,
            min_steal_secs: 0.0,
        }
    }

    /// Do not split an assignment that will finish within `secs` anyway: on a fast link the
    /// bytes are already in flight, and a split would only fetch them twice.
    pub fn with_min_steal_secs(mut self, secs: f64) -> Self {
        self.min_steal_secs = secs;
        self
    }

    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty (0 bytes: nothing to fetch).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes on disk: those the plan started with plus every committed range, less any
    /// reopened.
    pub fn done(&self) -> &RangeSet {
        &self.done
    }

    /// Whether every byte of the file is on disk.
    pub fn is_complete(&self) -> bool {
        self.done.contains_range(0..self.len)
    }

    /// Number of connections holding an assignment.
    pub fn active_count(&self) -> usize {
        self.active.iter().filter(|a| a.is_some()).count()
    }

    /// Gives worker `w` (which must be idle) the next queued range, or steals half of the largest
    /// remaining assignment. `None` when there is nothing worth taking.
    pub fn assign(&mut self, w: usize) -> Option<Range<u64>> {
        debug_assert!(self.active[w].is_none(), "worker {w} is already assigned");
        if !self.queue.is_empty() {
            let r = self.queue.remove(0);
            self.active[w] = Some(Assignment::fresh(&r));
            return Some(r);
        }
        let (victim, _) = self
            .active
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.as_ref().map(|a| (i, a)))
            .filter(|(_, a)| a.partner.is_none() && a.end - a.pos >= 2 * self.min_split)
            .filter(|(_, a)| {
                self.min_steal_secs <= 0.0
                    || (a.rate > 0.0 && (a.end - a.pos) as f64 / a.rate > self.min_steal_secs)
            })
            .max_by_key(|(_, a)| a.end - a.pos)?;
        let a = self.active[victim].as_mut().expect("victim is active");
        let mut mid = split_point(a.pos, a.end);
        if a.req_end > mid && a.req_end < a.end && a.end - a.req_end >= self.min_split {
            mid = a.req_end;
        }
        let r = mid..a.end;
        a.end = mid;
        self.active[w] = Some(Assignment::fresh(&r));
        Some(r)
    }

    /// Gives worker `w` (idle) the queued range that starts at `start`, if there is one: used to
    /// hand the body of the first request to the connection that made it.
    pub fn assign_at(&mut self, w: usize, start: u64) -> Option<Range<u64>> {
        debug_assert!(self.active[w].is_none(), "worker {w} is already assigned");
        let i = self.queue.iter().position(|q| q.start == start)?;
        let r = self.queue.remove(i);
        self.active[w] = Some(Assignment::fresh(&r));
        Some(r)
    }

    /// Endgame: lets idle worker `w` fetch the same bytes as the assignment that is expected to
    /// finish last, when that is more than `min_eta_secs` away. Each assignment gets at most one
    /// duplicate. Returns the duplicated range.
    pub fn assign_duplicate(&mut self, w: usize, min_eta_secs: f64) -> Option<Range<u64>> {
        debug_assert!(self.active[w].is_none(), "worker {w} is already assigned");
        let (victim, _) = self
            .active
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.as_ref().map(|a| (i, a)))
            .filter(|(_, a)| {
                a.partner.is_none() && a.rate > 0.0 && self.done.run_end(a.pos) < a.end
            })
            .map(|(i, a)| {
                let eta = (a.end - a.pos) as f64 / a.rate;
                (i, eta)
            })
            .filter(|&(_, eta)| eta > min_eta_secs)
            .max_by(|x, y| x.1.total_cmp(&y.1))?;
        let a = self.active[victim].as_mut().expect("victim is active");
        a.partner = Some(w);
        // Bytes the victim already has are not fetched twice.
        let r = self.done.run_end(a.pos)..a.end;
        self.active[w] = Some(Assignment {
            partner: Some(victim),
            ..Assignment::fresh(&r)
        });
        Some(r)
    }

    /// Worker `w` has `n` more bytes in hand, starting at its position. Returns how many of them
    /// belong to its assignment (the rest must be discarded) and advances its position.
    pub fn claim(&mut self, w: usize, n: u64) -> u64 {
        let Some(a) = self.active[w].as_mut() else {
            return 0;
        };
        let take = n.min(a.end.saturating_sub(a.pos));
        a.pos += take;
        take
    }

    /// Marks `r` as written to disk.
    pub fn commit(&mut self, r: Range<u64>) {
        debug_assert!(r.end <= self.len);
        self.done.insert(r);
    }

    /// Marks `r` as missing again (its bytes failed verification) and queues it first.
    pub fn reopen(&mut self, r: Range<u64>) {
        self.done.remove(r.clone());
        self.queue.insert(0, r);
    }

    /// Current position (next byte) and end of worker `w`'s assignment.
    pub fn assignment(&self, w: usize) -> Option<Range<u64>> {
        self.active[w].as_ref().map(|a| a.pos..a.end)
    }

    /// True while worker `w` still has bytes to fetch that nobody has written yet.
    pub fn has_more(&self, w: usize) -> bool {
        match &self.active[w] {
            Some(a) => a.pos < a.end && !self.done.contains_range(a.pos..a.end),
            None => false,
        }
    }

    /// Records where worker `w`'s current request ends.
    pub fn set_request_end(&mut self, w: usize, end: u64) {
        if let Some(a) = self.active[w].as_mut() {
            a.req_end = end;
        }
    }

    /// Records worker `w`'s measured speed (bytes per second), used by the endgame.
    pub fn set_rate(&mut self, w: usize, rate: f64) {
        if let Some(a) = self.active[w].as_mut() {
            a.rate = rate;
        }
    }

    /// Ends worker `w`'s assignment (finished, failed or cancelled). Bytes of it that are neither
    /// done nor covered by another connection go back to the queue.
    pub fn release(&mut self, w: usize) {
        let Some(a) = self.active[w].take() else {
            return;
        };
        if let Some(p) = a.partner
            && let Some(pa) = self.active[p].as_mut()
        {
            pa.partner = None;
        }
        // Claimed bytes before `pos` may never have been written (a failed write), so look at
        // the whole span the assignment ever covered.
        let mut leftover = RangeSet::new();
        for r in self.done.missing_within(a.start..a.end) {
            leftover.insert(r);
        }
        for (i, other) in self.active.iter().enumerate() {
            if i == w {
                continue;
            }
            if let Some(o) = other {
                let mut kept = RangeSet::new();
                for r in leftover.iter() {
                    // keep the parts of r outside [o.pos, o.end)
                    if r.end <= o.pos || r.start >= o.end {
                        kept.insert(r);
                    } else {
                        kept.insert(r.start..o.pos.max(r.start));
                        kept.insert(o.end.min(r.end)..r.end);
                    }
                }
                leftover = kept;
            }
        }
        for r in leftover.iter() {
            let i = self.queue.partition_point(|q| q.start < r.start);
            self.queue.insert(i, r);
        }
    }
}

/// Midpoint of `[start, end)`, aligned down to `ALIGN` when that keeps both halves non-empty.
fn split_point(start: u64, end: u64) -> u64 {
    let mid = start + (end - start) / 2;
    let aligned = mid - mid % ALIGN;
    if aligned > start { aligned } else { mid }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Drives a plan with `workers` simulated connections taking turns; each step a connection
    /// receives `chunk` bytes (or a failure), and checks that the ranges cover `[0, len)` exactly.
    fn simulate(len: u64, workers: usize, min_split: u64, script: &[(usize, u64, bool)]) {
        let mut plan = Plan::new(len, RangeSet::new(), workers, min_split);
        check_partition(&plan);
        let mut idle: Vec<bool> = vec![true; workers];
        let mut steps = script.iter().cycle();
        let mut guard = 0u64;
        while !plan.is_complete() {
            guard += 1;
            assert!(guard < 1_000_000, "plan made no progress");
            let &(w, chunk, fail) = steps.next().unwrap();
            let w = w % workers;
            if idle[w] {
                if plan.assign(w).is_some() || plan.assign_duplicate(w, 0.0).is_some() {
                    idle[w] = false;
                }
                check_partition(&plan);
                continue;
            }
            if fail && guard < 10_000 {
                plan.release(w);
                idle[w] = true;
                check_partition(&plan);
                continue;
            }
            let start = plan.assignment(w).unwrap().start;
            let got = plan.claim(w, chunk.max(1));
            plan.set_rate(w, got as f64 + 1.0);
            plan.commit(start..start + got);
            if !plan.has_more(w) {
                plan.release(w);
                idle[w] = true;
            }
            check_partition(&plan);
        }
        assert_eq!(
            plan.done().iter().collect::<Vec<_>>(),
            if len == 0 {
                Vec::new()
            } else {
                std::iter::once(0..len).collect::<Vec<_>>()
            }
        );
    }

    /// done ∪ queue ∪ (un-duplicated active tails) covers [0, len), and queue is disjoint from the rest.
    fn check_partition(plan: &Plan) {
        let mut cover = plan.done.clone();
        for q in &plan.queue {
            assert!(
                q.start < q.end && q.end <= plan.len,
                "bad queued range {q:?}"
            );
            for d in plan.done.iter() {
                assert!(
                    q.end <= d.start || q.start >= d.end,
                    "queued {q:?} overlaps done {d:?}"
                );
            }
            for a in plan.active.iter().flatten() {
                assert!(
                    q.end <= a.pos || q.start >= a.end,
                    "queued {q:?} overlaps active {a:?}"
                );
            }
            assert_eq!(
                cover.missing_within(q.clone()),
                vec![q.clone()],
                "queue overlaps itself"
            );
            cover.insert(q.clone());
        }
        for a in plan.active.iter().flatten() {
            assert!(a.pos <= a.end && a.end <= plan.len);
            cover.insert(a.pos..a.end);
        }
        assert!(
            cover.contains_range(0..plan.len),
            "lost bytes: {:?}",
            cover.missing(plan.len)
        );
    }

    #[test]
    fn initial_split_gives_every_worker_a_range() {
        let plan = Plan::new(100 << 20, RangeSet::new(), 8, 1 << 20);
        assert_eq!(plan.queue.len(), 8);
        let plan = Plan::new(3 << 20, RangeSet::new(), 8, 1 << 20);
        assert!(plan.queue.len() <= 3);
    }

    #[test]
    fn steal_takes_half_of_the_largest() {
        let mut plan = Plan::new(64 << 20, RangeSet::new(), 2, 1 << 20);
        let a = plan.assign(0).unwrap();
        let b = plan.assign(1).unwrap();
        assert_eq!((a.start, a.end, b.end), (0, 32 << 20, 64 << 20));
        plan.claim(1, 32 << 20);
        plan.commit(b.clone());
        plan.release(1);
        let stolen = plan.assign(1).unwrap();
        assert_eq!(stolen, 16 << 20..32 << 20);
        assert_eq!(plan.assignment(0).unwrap(), 0..16 << 20);
    }

    #[test]
    fn endgame_duplicates_the_slowest() {
        let mut plan = Plan::new(3 << 20, RangeSet::new(), 2, 4 << 20);
        assert_eq!(plan.assign(0), Some(0..3 << 20));
        plan.set_rate(0, 1000.0);
        assert_eq!(plan.assign(1), None, "too small to split");
        assert_eq!(plan.assign_duplicate(1, 1e9), None, "not slow enough");
        plan.set_rate(0, 0.0);
        assert_eq!(
            plan.assign_duplicate(1, 1.0),
            None,
            "unknown speed: the read timeout handles it"
        );
        plan.set_rate(0, 1000.0);
        assert_eq!(plan.assign_duplicate(1, 1.0), Some(0..3 << 20));
        // the duplicate finishes first; the original then has nothing left
        plan.claim(1, 3 << 20);
        plan.commit(0..3 << 20);
        assert!(!plan.has_more(0));
        plan.release(1);
        plan.release(0);
        assert!(plan.is_complete());
        assert!(plan.queue.is_empty());
    }

    #[test]
    fn failed_worker_returns_its_bytes() {
        let mut plan = Plan::new(10 << 20, RangeSet::new(), 1, 1 << 20);
        let r = plan.assign(0).unwrap();
        plan.claim(0, 1 << 20);
        plan.commit(r.start..r.start + (1 << 20));
        plan.release(0);
        assert_eq!(plan.queue, vec![1 << 20..10 << 20]);
    }

    #[test]
    fn resume_plans_only_missing_bytes() {
        let done = RangeSet::from_ranges([0..100, 200..300]);
        let plan = Plan::new(400, done, 2, 1000);
        assert_eq!(plan.queue, vec![100..200, 300..400]);
    }

    #[test]
    fn boundary_sizes() {
        let split = 64 * 1024;
        for len in [
            0,
            1,
            split - 1,
            split,
            split + 1,
            2 * split - 1,
            2 * split,
            2 * split + 1,
            10 * split + 7,
        ] {
            for workers in [1, 2, 3, 16] {
                simulate(
                    len,
                    workers,
                    split,
                    &[
                        (0, 4096, false),
                        (1, 10_000, false),
                        (2, 1, false),
                        (3, 65_536, false),
                    ],
                );
            }
        }
    }

    #[test]
    fn huge_file() {
        let len = 1u64 << 50;
        simulate(
            len,
            4,
            1 << 20,
            &[
                (0, 1 << 48, false),
                (1, 1 << 47, false),
                (2, 1 << 49, false),
                (3, 1 << 46, false),
            ],
        );
    }

    proptest! {
        #[test]
        fn ranges_cover_the_file_exactly(
            len in prop_oneof![Just(0u64), Just(1u64), 0u64..5_000_000, Just(u64::MAX / 4)],
            workers in 1usize..20,
            min_split in prop_oneof![Just(1u64), 1u64..100_000],
            script in prop::collection::vec((0usize..20, 1u64..3_000_000, prop::bool::weighted(0.05)), 1..50),
        ) {
            // huge files need huge chunks to finish
            let script: Vec<_> = if len > 1 << 40 {
                script.into_iter().map(|(w, c, f)| (w, c << 40, f)).collect()
            } else { script };
            // a script of only failures would never finish
            let mut script = script;
            script.push((0, 1_000_000, false));
            simulate(len, workers, min_split, &script);
        }
    }
}
