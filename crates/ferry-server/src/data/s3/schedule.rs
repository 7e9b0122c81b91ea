//! The part arithmetic of S3 multipart uploads, as pure functions: where each part of an
//! upload begins and ends (fixed when the upload is created, so a part's bytes never depend on
//! how the client cut its PATCHes), and how a concatenated upload is cut into parts that
//! server-side copies can make.
//!
//! S3's limits: at most [`MAX_PARTS`] parts, each at least [`MIN_PART`] except the last and at
//! most [`MAX_PART`]; objects up to [`MAX_OBJECT`]. A known length gets equal parts of
//! `max(PREFERRED_PART, length / MAX_PARTS rounded up to a MiB)`; a deferred length gets a
//! growing schedule (1,000 parts of 8 MiB, then 1,000 of 16 MiB, … doubling every 1,000 parts),
//! which covers [`MAX_OBJECT`] within [`MAX_PARTS`] parts whatever the final length.
//!
//! tusd's S3 store reached part number 10,001 after interrupted PATCHes (tus/tusd#1247) because
//! a PATCH's leftover of at least the minimum became a part of its own; here a part is only
//! ever the exact scheduled range, and a leftover waits as a tail (see `tail.rs`).

/// Fewest bytes in a part other than the last (S3: 5 MiB).
pub const MIN_PART: u64 = 5 << 20;
/// Most bytes in one part (S3: 5 GiB).
pub const MAX_PART: u64 = 5 << 30;
/// Most parts in one multipart upload (S3: 10,000).
pub const MAX_PARTS: u64 = 10_000;
/// Largest object (S3: 5 TiB).
pub const MAX_OBJECT: u64 = 5 << 40;
/// The part size of uploads small enough to have it: fewer requests than 5 MiB parts, and
/// what one part upload holds on the local spool disk.
pub const PREFERRED_PART: u64 = 8 << 20;
/// Parts of one size in a growing schedule before the size doubles.
const TIER_PARTS: u64 = 1_000;

/// How an upload is cut into parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Every part this many bytes (the last may be shorter): a length known at creation.
    Fixed(u64),
    /// [`PREFERRED_PART`], doubling every 1,000 parts: a deferred length.
    Growing,
}

impl Schedule {
    /// The schedule for an upload of `length` bytes (`None`: deferred).
    pub fn for_length(length: Option<u64>) -> Schedule {
        match length {
            Some(len) => {
                const MIB: u64 = 1 << 20;
                let needed = len.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
                Schedule::Fixed(needed.max(PREFERRED_PART))
            }
            None => Schedule::Growing,
        }
    }

    /// The byte range `start..end` of part `number` (1-based) before any length cuts it.
    pub fn part(self, number: u64) -> (u64, u64) {
        debug_assert!(number >= 1);
        match self {
            Schedule::Fixed(size) => ((number - 1) * size, number * size),
            Schedule::Growing => {
                let index = number - 1;
                let tier = index / TIER_PARTS;
                // Bytes in the whole tiers before: PREFERRED * TIER * (2^tier - 1).
                let before = PREFERRED_PART * TIER_PARTS * ((1u64 << tier) - 1);
                let size = PREFERRED_PART << tier;
                let start = before + (index % TIER_PARTS) * size;
                (start, start + size)
            }
        }
    }

    /// The part (1-based number and its range) holding byte `offset`.
    pub fn part_at(self, offset: u64) -> (u64, u64, u64) {
        let number = match self {
            Schedule::Fixed(size) => offset / size + 1,
            Schedule::Growing => {
                let mut tier = 0u64;
                let mut before = 0u64;
                loop {
                    let tier_bytes = (PREFERRED_PART << tier) * TIER_PARTS;
                    if offset < before + tier_bytes || tier >= 40 {
                        break tier * TIER_PARTS + (offset - before) / (PREFERRED_PART << tier) + 1;
                    }
                    before += tier_bytes;
                    tier += 1;
                }
            }
        };
        let (start, end) = self.part(number);
        (number, start, end)
    }

    /// The parts of a complete upload of `length` bytes: `(number, start, end)`.
    pub fn parts(self, length: u64) -> Vec<(u64, u64, u64)> {
        let mut out = Vec::new();
        let mut number = 1;
        loop {
            let (start, end) = self.part(number);
            if start >= length {
                break;
            }
            out.push((number, start, end.min(length)));
            number += 1;
        }
        out
    }
}

/// One part of a concatenated upload: copied server-side from one source, or put together from
/// pieces of several sources (read and uploaded again: each piece is small).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Composed {
    /// `UploadPartCopy` of `start..end` of source `source`.
    Copy {
        /// Index of the source.
        source: usize,
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// The pieces `(source, start, end)`, read and uploaded as one part.
    Gather(Vec<(usize, u64, u64)>),
}

impl Composed {
    /// Bytes in the part.
    pub fn len(&self) -> u64 {
        match self {
            Composed::Copy { start, end, .. } => end - start,
            Composed::Gather(pieces) => pieces.iter().map(|(_, s, e)| e - s).sum(),
        }
    }

    /// Whether the part holds no bytes (never, for a planned part).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Cuts the concatenation of sources of `lengths` into parts: a source (or what is left of it)
/// of at least [`MIN_PART`] is copied server-side (in pieces of at most [`MAX_PART`]); shorter
/// sources are gathered, with the head of the next source if needed, until a part reaches
/// [`MIN_PART`]. Every part but the last has at least [`MIN_PART`] bytes; at most [`MIN_PART`]
/// bytes of each source are read back. `None` when the parts would be more than [`MAX_PARTS`].
pub fn compose(lengths: &[u64]) -> Option<Vec<Composed>> {
    let mut parts = Vec::new();
    let mut gathering: Vec<(usize, u64, u64)> = Vec::new();
    let mut gathered = 0u64;
    for (source, &len) in lengths.iter().enumerate() {
        let mut pos = 0;
        if gathered > 0 {
            let take = (MIN_PART - gathered).min(len);
            if take > 0 {
                gathering.push((source, 0, take));
                gathered += take;
                pos = take;
            }
            if gathered >= MIN_PART {
                parts.push(Composed::Gather(std::mem::take(&mut gathering)));
                gathered = 0;
            }
        }
        let rest = len - pos;
        if rest == 0 {
            continue;
        }
        if rest < MIN_PART {
            gathering.push((source, pos, len));
            gathered += rest;
            continue;
        }
        let pieces = rest.div_ceil(MAX_PART);
        let size = rest.div_ceil(pieces);
        let mut start = pos;
        while start < len {
            let end = (start + size).min(len);
            parts.push(Composed::Copy { source, start, end });
            start = end;
        }
    }
    if !gathering.is_empty() {
        parts.push(Composed::Gather(gathering));
    }
    (parts.len() as u64 <= MAX_PARTS).then_some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_parts(schedule: Schedule, length: u64) {
        let parts = schedule.parts(length);
        assert!(
            parts.len() as u64 <= MAX_PARTS,
            "{length}: {} parts",
            parts.len()
        );
        let mut at = 0;
        for (i, &(number, start, end)) in parts.iter().enumerate() {
            assert_eq!(number, i as u64 + 1);
            assert_eq!(start, at);
            assert!(end > start && end - start <= MAX_PART);
            if i + 1 < parts.len() {
                assert!(end - start >= MIN_PART, "part {number} of {length}");
            }
            assert_eq!(
                schedule.part_at(start),
                (number, start, schedule.part(number).1)
            );
            assert_eq!(schedule.part_at(end - 1).0, number);
            at = end;
        }
        assert_eq!(at, length);
    }

    #[test]
    fn the_edges() {
        for len in [
            0,
            1,
            MIN_PART,
            PREFERRED_PART,
            PREFERRED_PART + 1,
            PREFERRED_PART * MAX_PARTS,
            PREFERRED_PART * MAX_PARTS + 1,
            MAX_OBJECT - 1,
            MAX_OBJECT,
        ] {
            check_parts(Schedule::for_length(Some(len)), len);
        }
        assert_eq!(
            Schedule::for_length(Some(1 << 30)),
            Schedule::Fixed(PREFERRED_PART)
        );
        // 5 TiB in 10,000 parts: 525 MiB each (524.288 MiB rounded up to a MiB).
        assert_eq!(
            Schedule::for_length(Some(MAX_OBJECT)),
            Schedule::Fixed(525 << 20)
        );
        assert_eq!(
            Schedule::for_length(Some(MAX_OBJECT))
                .parts(MAX_OBJECT)
                .len(),
            9987
        );
        // The growing schedule: 10,000 parts hold more than 5 TiB, none over 5 GiB.
        let (_, end) = Schedule::Growing.part(MAX_PARTS);
        assert!(end >= MAX_OBJECT, "{end}");
        let (start, end) = Schedule::Growing.part(MAX_PARTS);
        assert!(end - start <= MAX_PART);
        assert_eq!(Schedule::Growing.part(1001), (8000 << 20, 8016 << 20));
        assert_eq!(Schedule::Growing.part_at(8000 << 20).0, 1001);
        check_parts(Schedule::Growing, MAX_OBJECT);
        check_parts(Schedule::Growing, 12345);
    }

    #[test]
    fn compose_copies_large_and_gathers_small() {
        const M: u64 = 1 << 20;
        // Four quarters of 40 MiB: four copies.
        let p = compose(&[10 * M; 4]).unwrap();
        assert_eq!(p.len(), 4);
        assert!(p.iter().all(|c| matches!(c, Composed::Copy { .. })));
        // Small parts: gathered into one.
        let p = compose(&[100, 200, 300]).unwrap();
        assert_eq!(
            p,
            vec![Composed::Gather(vec![
                (0, 0, 100),
                (1, 0, 200),
                (2, 0, 300)
            ])]
        );
        // A small head borrows the start of the next source, the rest is copied.
        let p = compose(&[M, 20 * M]).unwrap();
        assert_eq!(
            p,
            vec![
                Composed::Gather(vec![(0, 0, M), (1, 0, 4 * M)]),
                Composed::Copy {
                    source: 1,
                    start: 4 * M,
                    end: 20 * M
                }
            ]
        );
        // A source over 5 GiB is copied in pieces.
        let p = compose(&[11 << 30]).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(compose(&[]).unwrap(), vec![]);
        assert_eq!(compose(&[0, 0]).unwrap(), vec![]);
    }

    proptest! {
        #[test]
        fn any_length_fits(len in 0u64..=MAX_OBJECT) {
            check_parts(Schedule::for_length(Some(len)), len);
        }

        #[test]
        fn growing_fits(len in 0u64..=MAX_OBJECT) {
            let parts = Schedule::Growing.parts(len);
            prop_assert!(parts.len() as u64 <= MAX_PARTS);
            for (i, &(_, s, e)) in parts.iter().enumerate() {
                prop_assert!(e - s <= MAX_PART);
                prop_assert!(i + 1 == parts.len() || e - s >= MIN_PART);
            }
        }

        #[test]
        fn part_at_is_the_inverse(offset in 0u64..MAX_OBJECT, size in (5u64..600).prop_map(|m| m << 20)) {
            for s in [Schedule::Fixed(size), Schedule::Growing] {
                let (n, start, end) = s.part_at(offset);
                prop_assert!(start <= offset && offset < end);
                prop_assert_eq!(s.part(n), (start, end));
            }
        }

        #[test]
        fn composed_parts_are_valid(lengths in proptest::collection::vec(
            prop_oneof![0u64..(6 << 20), 0u64..(12 << 30)], 0..12)) {
            let parts = compose(&lengths).unwrap();
            let total: u64 = parts.iter().map(Composed::len).sum();
            prop_assert_eq!(total, lengths.iter().sum::<u64>());
            // In order, without gaps or overlaps.
            let mut at = (0usize, 0u64);
            for (i, p) in parts.iter().enumerate() {
                prop_assert!(p.len() <= MAX_PART);
                prop_assert!(i + 1 == parts.len() || p.len() >= MIN_PART);
                let pieces = match p {
                    Composed::Copy { source, start, end } => vec![(*source, *start, *end)],
                    Composed::Gather(g) => g.clone(),
                };
                for (src, s, e) in pieces {
                    while at.0 < src {
                        prop_assert_eq!(at.1, lengths[at.0]);
                        at = (at.0 + 1, 0);
                    }
                    prop_assert_eq!((src, s), at);
                    at.1 = e;
                }
            }
        }
    }
}
