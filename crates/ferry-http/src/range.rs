//! Byte ranges (RFC 9110 §14): parsing a `Range` header, resolving it against a representation's
//! length (with coalescing), and the `Content-Range` values of answers (formatting and parsing).
//!
//! Pure functions over strings and numbers: no I/O, so every rule is unit tested here.

/// More parts than this in one multipart answer are merged (sorted, gaps closed) until at most
/// this many remain: many tiny ranges are a known denial-of-service pattern (RFC 9110 §14.2).
pub const MAX_PARTS: usize = 32;

/// One `range-spec` of a `Range: bytes=…` header, before it meets a length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `first-last` or `first-` (`last: None`).
    Int {
        /// The first byte position.
        first: u64,
        /// The last byte position (inclusive), `None` for "to the end".
        last: Option<u64>,
    },
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

/// A satisfiable, non-empty byte range: `start..end` (end exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteRange {
    /// The first byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range (never zero).
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Always false: a resolved range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The `Content-Range` value for this range of a representation of `total` bytes.
    pub fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end - 1, total)
    }
}

/// The `Content-Range` value of a 416 answer.
pub fn unsatisfied_content_range(total: u64) -> String {
    format!("bytes */{total}")
}

/// What a `Range` header asks of a representation of a given length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Send the whole representation (200).
    Full,
    /// Send these ranges (206): one range plainly, several as `multipart/byteranges`.
    Partial(Vec<ByteRange>),
    /// No range overlaps the representation (416 with `Content-Range: bytes */LEN`).
    Unsatisfiable,
}

/// Parses a `Range` header value. `None` means the header must be ignored (a unit other than
/// `bytes`, or invalid syntax such as `last < first`): the answer is then the full 200.
/// Whitespace around items, `=` and `-` is tolerated, and so are empty list elements.
pub fn parse(value: &str) -> Option<Vec<RangeSpec>> {
    let (unit, set) = value.split_once('=')?;
    if !unit.trim_matches(OWS).eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    for item in set.split(',') {
        let item = item.trim_matches(OWS);
        if item.is_empty() {
            continue;
        }
        let (first, last) = item.split_once('-')?;
        let (first, last) = (first.trim_matches(OWS), last.trim_matches(OWS));
        if first.is_empty() {
            specs.push(RangeSpec::Suffix(number(last)?));
            continue;
        }
        let first = number(first)?;
        let last = if last.is_empty() {
            None
        } else {
            Some(number(last)?)
        };
        if last.is_some_and(|l| l < first) {
            return None;
        }
        specs.push(RangeSpec::Int { first, last });
    }
    if specs.is_empty() { None } else { Some(specs) }
}

/// Optional white space (RFC 9110 §5.6.3).
pub(crate) const OWS: &[char] = &[' ', '\t'];

/// A non-empty run of ASCII digits; values beyond `u64` saturate (they are past any length).
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// Resolves parsed specs against a representation of `len` bytes (RFC 9110 §14.1.1), then
/// [`coalesce`]s them. A suffix range on an empty representation selects the (empty) whole.
pub fn resolve(specs: &[RangeSpec], len: u64) -> Resolution {
    let mut out = Vec::new();
    let mut whole_empty = false;
    for spec in specs {
        match *spec {
            RangeSpec::Int { first, last } => {
                if first < len {
                    let end = last.map_or(len, |l| l.saturating_add(1).min(len));
                    out.push(ByteRange { start: first, end });
                }
            }
            RangeSpec::Suffix(n) if n > 0 => {
                if len == 0 {
                    whole_empty = true;
                } else {
                    out.push(ByteRange {
                        start: len - n.min(len),
                        end: len,
                    });
                }
            }
            RangeSpec::Suffix(_) => {}
        }
    }
    if out.is_empty() {
        return if whole_empty {
            Resolution::Full
        } else {
            Resolution::Unsatisfiable
        };
    }
    Resolution::Partial(coalesce(out))
}

/// Keeps the client's order when its ranges are disjoint, not adjacent and at most
/// [`MAX_PARTS`]; otherwise sorts and merges overlapping or adjacent ranges, and if more than
/// [`MAX_PARTS`] remain, closes the smallest gaps (doubling the gap closed each round) until
/// they fit. Every requested byte stays covered (RFC 9110 §14.6 allows the merging).
pub fn coalesce(ranges: Vec<ByteRange>) -> Vec<ByteRange> {
    if ranges.len() <= 1 {
        return ranges;
    }
    let mut sorted = ranges.clone();
    sorted.sort_unstable();
    let touching = sorted.windows(2).any(|w| w[1].start <= w[0].end);
    if !touching && ranges.len() <= MAX_PARTS {
        return ranges;
    }
    let mut merged = merge_gaps(&sorted, 0);
    // Roughly one part's multipart header: closing gaps this small never costs bandwidth.
    let mut gap: u64 = 80;
    while merged.len() > MAX_PARTS {
        merged = merge_gaps(&merged, gap);
        gap = gap.saturating_mul(2);
    }
    merged
}

/// Merges sorted ranges separated by at most `gap` bytes.
fn merge_gaps(sorted: &[ByteRange], gap: u64) -> Vec<ByteRange> {
    let mut out: Vec<ByteRange> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match out.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(gap) => {
                last.end = last.end.max(r.end);
            }
            _ => out.push(*r),
        }
    }
    out
}

/// A parsed `Content-Range` header value (RFC 9110 §14.4), of the `bytes` unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentRange {
    /// `bytes first-last/complete`: the range this answer carries, and the length of the whole
    /// representation when known (`None` for `*`).
    Bytes {
        /// The range carried (end exclusive, never empty).
        range: ByteRange,
        /// The complete length, when the sender knows it.
        complete: Option<u64>,
    },
    /// `bytes */complete`: what a 416 answer says.
    Unsatisfied {
        /// The complete length.
        complete: u64,
    },
}

/// Parses a `Content-Range` value: `bytes first-last/complete`, `bytes first-last/*` or
/// `bytes */complete`. `None` for any other unit, malformed syntax, `last < first`, a `last` at
/// or past a known complete length, or numbers that do not fit in a `u64`.
pub fn parse_content_range(value: &str) -> Option<ContentRange> {
    let value = value.trim_matches(OWS);
    let (unit, rest) = value.split_once(' ')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (range, complete) = rest.trim_start_matches(OWS).split_once('/')?;
    let complete = match complete {
        "*" => None,
        c => Some(exact_number(c)?),
    };
    if range == "*" {
        return complete.map(|complete| ContentRange::Unsatisfied { complete });
    }
    let (first, last) = range.split_once('-')?;
    let (start, last) = (exact_number(first)?, exact_number(last)?);
    if last < start || complete.is_some_and(|c| last >= c) {
        return None;
    }
    Some(ContentRange::Bytes {
        range: ByteRange {
            start,
            end: last.checked_add(1)?,
        },
        complete,
    })
}

/// A non-empty run of ASCII digits that fits in a `u64`.
fn exact_number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    fn partial(v: &str, len: u64) -> Vec<ByteRange> {
        match resolve(&parse(v).unwrap(), len) {
            Resolution::Partial(p) => p,
            other => panic!("{v}: {other:?}"),
        }
    }

    #[test]
    fn parses_the_forms_of_the_rfc() {
        use RangeSpec::*;
        assert_eq!(
            parse("bytes=0-499").unwrap(),
            vec![Int {
                first: 0,
                last: Some(499)
            }]
        );
        assert_eq!(
            parse("bytes=9500-").unwrap(),
            vec![Int {
                first: 9500,
                last: None
            }]
        );
        assert_eq!(parse("bytes=-500").unwrap(), vec![Suffix(500)]);
        assert_eq!(
            parse(" BYTES = 0-0 , -1 ,, 5 - 7 ,").unwrap(),
            vec![
                Int {
                    first: 0,
                    last: Some(0)
                },
                Suffix(1),
                Int {
                    first: 5,
                    last: Some(7)
                }
            ]
        );
        assert_eq!(
            parse("bytes=0-99999999999999999999999").unwrap(),
            vec![Int {
                first: 0,
                last: Some(u64::MAX)
            }]
        );
        assert_eq!(parse("bytes=-0").unwrap(), vec![Suffix(0)]);
    }

    #[test]
    fn ignores_what_it_does_not_understand() {
        for bad in [
            "",
            "bytes",
            "bytes=",
            "bytes=,",
            "items=0-1",
            "bytes=5",
            "bytes=5-4",
            "bytes=0-1,5-4",
            "bytes=a-b",
            "bytes=--5",
            "bytes=-",
            "bytes=1-2-3",
            "bytes=+1-2",
            "bytes=0x10-",
            "bytes=0-1;2-3",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn content_range_values() {
        let b = |start, end, complete| {
            Some(ContentRange::Bytes {
                range: r(start, end),
                complete,
            })
        };
        assert_eq!(
            parse_content_range("bytes 0-499/1234"),
            b(0, 500, Some(1234))
        );
        assert_eq!(parse_content_range(" BYTES 5-5/* "), b(5, 6, None));
        assert_eq!(
            parse_content_range("bytes */7"),
            Some(ContentRange::Unsatisfied { complete: 7 })
        );
        for bad in [
            "",
            "bytes",
            "bytes */*",
            "bytes 5-4/10",
            "bytes 0-10/10",
            "bytes 0-1",
            "items 0-1/2",
            "bytes 0-18446744073709551615/*",
            "bytes 0-99999999999999999999/*",
            "bytes -1/2",
            "bytes 1-/2",
            "bytes +1-2/3",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn resolves_against_the_length() {
        assert_eq!(partial("bytes=0-499", 10_000), vec![r(0, 500)]);
        assert_eq!(partial("bytes=9500-", 10_000), vec![r(9500, 10_000)]);
        assert_eq!(partial("bytes=-500", 10_000), vec![r(9500, 10_000)]);
        assert_eq!(partial("bytes=-50000", 10_000), vec![r(0, 10_000)]);
        assert_eq!(partial("bytes=9000-20000", 10_000), vec![r(9000, 10_000)]);
        assert_eq!(partial("bytes=0-", 1), vec![r(0, 1)]);
        // Unsatisfiable specs are dropped when others are satisfiable.
        assert_eq!(partial("bytes=20000-,0-0,-0", 10_000), vec![r(0, 1)]);
        let unsat = |v: &str, len| resolve(&parse(v).unwrap(), len);
        assert_eq!(unsat("bytes=10000-", 10_000), Resolution::Unsatisfiable);
        assert_eq!(unsat("bytes=-0", 10_000), Resolution::Unsatisfiable);
        assert_eq!(unsat("bytes=0-", 0), Resolution::Unsatisfiable);
        assert_eq!(unsat("bytes=-5", 0), Resolution::Full);
        assert_eq!(unsat("bytes=-5,3-", 0), Resolution::Full);
    }

    #[test]
    fn keeps_disjoint_order_and_merges_overlaps() {
        assert_eq!(
            partial("bytes=500-599,0-99", 1000),
            vec![r(500, 600), r(0, 100)]
        );
        // Overlapping: sorted and merged.
        assert_eq!(
            partial("bytes=500-599,0-99,50-149", 1000),
            vec![r(0, 150), r(500, 600)]
        );
        // Adjacent ranges are merged too.
        assert_eq!(partial("bytes=0-9,10-19", 1000), vec![r(0, 20)]);
        assert_eq!(partial("bytes=0-,-10,5-5", 1000), vec![r(0, 1000)]);
        // Many small ranges: at most MAX_PARTS parts, every byte still covered.
        let many: Vec<String> = (0..100)
            .map(|i| format!("{}-{}", i * 10, i * 10 + 1))
            .collect();
        let got = partial(&format!("bytes={}", many.join(",")), 5000);
        assert!(got.len() <= MAX_PARTS, "{}", got.len());
        for i in 0..100u64 {
            assert!(got.iter().any(|g| g.start <= i * 10 && i * 10 + 2 <= g.end));
        }
        assert!(got.windows(2).all(|w| w[0].end < w[1].start));
    }

    fn spec() -> impl Strategy<Value = RangeSpec> {
        prop_oneof![
            (0u64..1200, proptest::option::of(0u64..1200)).prop_map(|(a, b)| RangeSpec::Int {
                first: a,
                last: b.map(|b| a + b)
            }),
            (0u64..1200).prop_map(RangeSpec::Suffix),
        ]
    }

    fn covered(len: u64, specs: &[RangeSpec]) -> Vec<bool> {
        let mut v = vec![false; len as usize];
        for s in specs {
            let (a, b) = match *s {
                RangeSpec::Int { first, last } => (first, last.map_or(len, |l| l + 1)),
                RangeSpec::Suffix(n) => (len.saturating_sub(n), len),
            };
            for i in a.min(len)..b.min(len) {
                v[i as usize] = true;
            }
        }
        v
    }

    proptest! {
        #[test]
        fn resolution_covers_exactly_what_was_asked(
            len in 0u64..1000,
            specs in proptest::collection::vec(spec(), 1..60),
        ) {
            // Round trip through the header syntax.
            let header = specs.iter().map(|s| match *s {
                RangeSpec::Int { first, last: Some(l) } => format!("{first}-{l}"),
                RangeSpec::Int { first, last: None } => format!("{first}-"),
                RangeSpec::Suffix(n) => format!("-{n}"),
            }).collect::<Vec<_>>().join(" ,");
            prop_assert_eq!(parse(&format!("bytes={header}")), Some(specs.clone()));
            let want = covered(len, &specs);
            match resolve(&specs, len) {
                Resolution::Unsatisfiable => prop_assert!(want.iter().all(|b| !b)),
                Resolution::Full => prop_assert_eq!(len, 0),
                Resolution::Partial(ranges) => {
                    prop_assert!(!ranges.is_empty() && ranges.len() <= MAX_PARTS);
                    let mut got = vec![false; len as usize];
                    for g in &ranges {
                        prop_assert!(g.start < g.end && g.end <= len);
                        for i in g.start..g.end {
                            prop_assert!(!got[i as usize], "parts overlap");
                            got[i as usize] = true;
                        }
                    }
                    for i in 0..len as usize {
                        prop_assert!(!want[i] || got[i], "byte {} asked but not sent", i);
                    }
                    // Without gap closing, exactly the requested bytes are sent.
                    let runs = want.windows(2).filter(|w| w[1] && !w[0]).count()
                        + usize::from(want.first() == Some(&true));
                    if runs <= MAX_PARTS {
                        prop_assert_eq!(got, want);
                    }
                }
            }
        }

        #[test]
        fn arbitrary_headers_never_panic(value in "\\PC*", len in any::<u64>()) {
            if let Some(specs) = parse(&value) {
                prop_assert!(!specs.is_empty());
                let _ = resolve(&specs, len);
            }
            let _ = parse_content_range(&value);
        }

        #[test]
        fn resolved_ranges_lie_inside_and_are_not_empty(
            len in prop_oneof![0u64..100, any::<u64>()],
            specs in proptest::collection::vec(
                prop_oneof![
                    (any::<u64>(), proptest::option::of(any::<u64>())).prop_map(|(a, b)| RangeSpec::Int {
                        first: a,
                        last: b.map(|b| a.saturating_add(b)),
                    }),
                    any::<u64>().prop_map(RangeSpec::Suffix),
                ],
                1..50,
            ),
        ) {
            if let Resolution::Partial(ranges) = resolve(&specs, len) {
                prop_assert!(!ranges.is_empty() && ranges.len() <= MAX_PARTS);
                for r in &ranges {
                    prop_assert!(r.start < r.end && r.end <= len, "{:?} of {}", r, len);
                    prop_assert!(!r.is_empty());
                }
            }
        }

        #[test]
        fn coalesce_keeps_the_covered_bytes(
            cuts in proptest::collection::vec((0u64..2000, 1u64..200), 0..100),
        ) {
            let ranges: Vec<ByteRange> = cuts.iter().map(|&(a, n)| ByteRange { start: a, end: a + n }).collect();
            let merged = coalesce(ranges.clone());
            prop_assert!(merged.len() <= MAX_PARTS);
            for r in &ranges {
                prop_assert!(merged.iter().any(|m| m.start <= r.start && r.end <= m.end), "{:?} lost", r);
            }
            // Merged parts never overlap, and only gap bytes are added.
            let mut sorted = merged.clone();
            sorted.sort_unstable();
            prop_assert!(sorted.windows(2).all(|w| w[0].end <= w[1].start));
            let asked = |i: u64| ranges.iter().any(|r| r.start <= i && i < r.end);
            for m in &merged {
                prop_assert!(asked(m.start) && asked(m.end - 1));
            }
        }

        #[test]
        fn content_range_round_trips(start in any::<u64>(), n in 1u64..1 << 40, extra in 0u64..1 << 40) {
            let end = start.saturating_add(n);
            prop_assume!(start < end);
            let total = end.saturating_add(extra);
            let r = ByteRange { start, end };
            prop_assert_eq!(
                parse_content_range(&r.content_range(total)),
                Some(ContentRange::Bytes { range: r, complete: Some(total) })
            );
            prop_assert_eq!(
                parse_content_range(&unsatisfied_content_range(total)),
                Some(ContentRange::Unsatisfied { complete: total })
            );
            let unknown = format!("bytes {}-{}/*", start, end - 1);
            prop_assert_eq!(
                parse_content_range(&unknown),
                Some(ContentRange::Bytes { range: r, complete: None })
            );
        }

    }
}
