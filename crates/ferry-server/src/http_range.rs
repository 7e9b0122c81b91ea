//! HTTP range requests (RFC 9110 §14) and the validator comparisons they depend on: parsing a
//! `Range` header, resolving it against a representation's length (with coalescing), `If-Range`,
//! entity-tag lists for `If-Match`/`If-None-Match` (§13.1), and the exact framing of a
//! `multipart/byteranges` body (§14.6) with its length known before the first byte is sent.
//!
//! Pure functions over strings and numbers: no I/O, so every rule is unit tested here.

use std::time::{SystemTime, UNIX_EPOCH};

/// More parts than this in one multipart answer are merged (sorted, gaps closed) until at most
/// this many remain: many tiny ranges are a known denial-of-service pattern (RFC 9110 §14.2).
pub const MAX_PARTS: usize = 32;

/// One `range-spec` of a `Range: bytes=…` header, before it meets a length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `first-last` or `first-` (`last: None`).
    Int { first: u64, last: Option<u64> },
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

/// A satisfiable, non-empty byte range: `start..end` (end exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteRange {
    pub start: u64,
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

const OWS: &[char] = &[' ', '\t'];

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

/// Evaluates `If-Range` (RFC 9110 §13.1.5): true when the validator still matches, so the
/// `Range` header applies. An entity-tag must match `etag` by strong comparison (a weak tag
/// never matches); an HTTP-date must equal `last_modified` to the second. Anything else is
/// false (send the whole representation).
pub fn if_range_matches(value: &str, etag: &str, last_modified: SystemTime) -> bool {
    let v = value.trim_matches(OWS);
    if v.starts_with("W/") {
        return false;
    }
    if v.starts_with('"') {
        return !etag.starts_with("W/") && v == etag;
    }
    match httpdate::parse_http_date(v) {
        Ok(date) => unix_secs(date) == unix_secs(last_modified),
        Err(_) => false,
    }
}

/// Seconds since the Unix epoch (0 for earlier times): the resolution of HTTP dates.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// One entity-tag of a list: `opaque` includes its double quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntityTag<'a> {
    weak: bool,
    opaque: &'a str,
}

/// Parses `"*"` (returns `Ok(None)`) or a comma-separated list of entity-tags. Commas inside
/// quotes are part of the tag. `Err` on malformed input.
fn etag_list(value: &str) -> Result<Option<Vec<EntityTag<'_>>>, ()> {
    if value.trim_matches(OWS) == "*" {
        return Ok(None);
    }
    let mut tags = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches(|c| c == ',' || OWS.contains(&c));
        if rest.is_empty() {
            break;
        }
        let weak = rest.starts_with("W/");
        if weak {
            rest = &rest[2..];
        }
        if !rest.starts_with('"') {
            return Err(());
        }
        let close = rest[1..].find('"').ok_or(())? + 2;
        tags.push(EntityTag {
            weak,
            opaque: &rest[..close],
        });
        rest = &rest[close..];
        let after = rest.trim_start_matches(OWS);
        if !(after.is_empty() || after.starts_with(',')) {
            return Err(());
        }
    }
    Ok(Some(tags))
}

/// `If-Match` (RFC 9110 §13.1.1): `*` or any tag equal to the current strong `etag` by strong
/// comparison. A malformed header never matches.
pub fn if_match(value: &str, etag: &str) -> bool {
    match etag_list(value) {
        Ok(None) => true,
        Ok(Some(tags)) => tags.iter().any(|t| !t.weak && t.opaque == etag),
        Err(()) => false,
    }
}

/// `If-None-Match` (RFC 9110 §13.1.2): true when `*` or any tag equals `etag` by weak
/// comparison (the `W/` prefixes are ignored), i.e. when the request's condition is *false*
/// and a GET gets 304. A malformed header never matches.
pub fn none_match_hits(value: &str, etag: &str) -> bool {
    let current = etag.strip_prefix("W/").unwrap_or(etag);
    match etag_list(value) {
        Ok(None) => true,
        Ok(Some(tags)) => tags.iter().any(|t| t.opaque == current),
        Err(()) => false,
    }
}

/// A fresh random multipart boundary (not found in file data except by a 2^-128 accident).
pub fn boundary() -> String {
    format!("ferry-{:032x}", rand::random::<u128>())
}

/// The framing of a `multipart/byteranges` body: before each range comes its header block,
/// after the last one the closing delimiter. `content_length` is the exact body length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multipart {
    /// The value of the response's `Content-Type` header.
    pub content_type: String,
    /// Each range with the bytes that precede its data.
    pub parts: Vec<(String, ByteRange)>,
    /// The bytes after the last part's data.
    pub trailer: String,
    /// Header blocks, data and trailer together.
    pub content_length: u64,
}

impl Multipart {
    /// Frames `ranges` of a representation of `total` bytes whose type is `part_type`.
    pub fn new(ranges: &[ByteRange], total: u64, part_type: &str, boundary: &str) -> Multipart {
        let parts: Vec<(String, ByteRange)> = ranges
            .iter()
            .map(|r| {
                let head = format!(
                    "\r\n--{boundary}\r\nContent-Type: {part_type}\r\nContent-Range: {}\r\n\r\n",
                    r.content_range(total)
                );
                (head, *r)
            })
            .collect();
        let trailer = format!("\r\n--{boundary}--\r\n");
        let content_length = parts
            .iter()
            .map(|(h, r)| h.len() as u64 + r.len())
            .sum::<u64>()
            + trailer.len() as u64;
        Multipart {
            content_type: format!("multipart/byteranges; boundary={boundary}"),
            parts,
            trailer,
            content_length,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

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

    #[test]
    fn if_range_uses_strong_etags_and_exact_dates() {
        let etag = "\"abc\"";
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_nanos(123);
        let date = httpdate::fmt_http_date(t);
        assert!(if_range_matches("\"abc\"", etag, t));
        assert!(if_range_matches(" \"abc\" ", etag, t));
        assert!(!if_range_matches("W/\"abc\"", etag, t));
        assert!(!if_range_matches("\"abd\"", etag, t));
        assert!(!if_range_matches("\"abc\"", "W/\"abc\"", t));
        assert!(if_range_matches(&date, etag, t));
        let earlier = httpdate::fmt_http_date(t - Duration::from_secs(1));
        assert!(!if_range_matches(&earlier, etag, t));
        assert!(!if_range_matches("yesterday", etag, t));
        assert!(!if_range_matches("", etag, t));
    }

    #[test]
    fn etag_lists() {
        let e = "\"x1\"";
        assert!(if_match("*", e));
        assert!(if_match("\"x1\"", e));
        assert!(if_match("\"a\", \"x1\"", e));
        assert!(if_match("\"a,b\",\"x1\"", e));
        assert!(!if_match("W/\"x1\"", e));
        assert!(!if_match("\"x2\"", e));
        assert!(!if_match("x1", e));
        assert!(!if_match("\"x1", e));
        assert!(none_match_hits("*", e));
        assert!(none_match_hits("W/\"x1\"", e));
        assert!(none_match_hits("\"q\" , W/\"x1\"", e));
        assert!(!none_match_hits("\"x2\"", e));
        assert!(!none_match_hits("\"x1\"junk", e));
        assert!(!none_match_hits("", e));
    }

    #[test]
    fn multipart_framing() {
        let m = Multipart::new(&[r(0, 2), r(5, 6)], 10, "text/plain", "B");
        assert_eq!(m.content_type, "multipart/byteranges; boundary=B");
        let data = b"0123456789";
        let mut body = Vec::new();
        for (head, range) in &m.parts {
            body.extend_from_slice(head.as_bytes());
            body.extend_from_slice(&data[range.start as usize..range.end as usize]);
        }
        body.extend_from_slice(m.trailer.as_bytes());
        assert_eq!(
            String::from_utf8(body.clone()).unwrap(),
            "\r\n--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\n01\
             \r\n--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 5-5/10\r\n\r\n5\
             \r\n--B--\r\n"
        );
        assert_eq!(m.content_length, body.len() as u64);
        let b = boundary();
        assert!(
            b.len() > 30 && b.len() <= 70,
            "RFC 2046 limits boundaries to 70 chars"
        );
        assert_ne!(b, boundary());
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
        fn multipart_length_is_exact(
            len in 1u64..5000,
            cuts in proptest::collection::vec((0u64..5000, 1u64..300), 1..40),
        ) {
            let ranges: Vec<ByteRange> = cuts.iter()
                .filter(|(a, _)| *a < len)
                .map(|&(a, n)| ByteRange { start: a, end: (a + n).min(len) })
                .collect();
            let m = Multipart::new(&ranges, len, "application/octet-stream", &boundary());
            let framed: u64 = m.parts.iter().map(|(h, r)| h.len() as u64 + r.len()).sum();
            prop_assert_eq!(m.content_length, framed + m.trailer.len() as u64);
        }
    }
}
