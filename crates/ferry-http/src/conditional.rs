//! Validators and the conditional headers that compare them (RFC 9110 §13.1): `If-Range`, and
//! entity-tag lists for `If-Match` / `If-None-Match`.

use crate::range::OWS;
use std::time::{SystemTime, UNIX_EPOCH};

/// Evaluates `If-Range` (RFC 9110 §13.1.5): true when the validator still matches, so the
/// `Range` header applies. An entity-tag must match `etag` by strong comparison (a weak tag
/// never matches); an HTTP-date must equal `last_modified` to the second (never, when the
/// modification time is unknown). Anything else is false (send the whole representation).
pub fn if_range_matches(value: &str, etag: &str, last_modified: Option<SystemTime>) -> bool {
    let v = value.trim_matches(OWS);
    if v.starts_with("W/") {
        return false;
    }
    if v.starts_with('"') {
        return !etag.starts_with("W/") && v == etag;
    }
    match httpdate::parse_http_date(v) {
        Ok(date) => last_modified.is_some_and(|m| unix_secs(date) == unix_secs(m)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    #[test]
    fn if_range_uses_strong_etags_and_exact_dates() {
        let etag = "\"abc\"";
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_nanos(123);
        let date = httpdate::fmt_http_date(t);
        assert!(!if_range_matches(&date, etag, None));
        let (t0, t) = (t, Some(t));
        assert!(if_range_matches("\"abc\"", etag, t));
        assert!(if_range_matches(" \"abc\" ", etag, t));
        assert!(!if_range_matches("W/\"abc\"", etag, t));
        assert!(!if_range_matches("\"abd\"", etag, t));
        assert!(!if_range_matches("\"abc\"", "W/\"abc\"", t));
        assert!(if_range_matches(&date, etag, t));
        let earlier = httpdate::fmt_http_date(t0 - Duration::from_secs(1));
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

    /// An entity-tag's opaque part: visible ASCII except `"` (RFC 9110 §8.8.3).
    fn opaque() -> impl Strategy<Value = String> {
        "[!#-~]{0,20}".prop_map(|s| format!("\"{s}\""))
    }

    proptest! {
        #[test]
        fn arbitrary_headers_never_panic(value in "\\PC*", etag in "\\PC*", secs in 0u64..5_000_000_000) {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            let _ = if_range_matches(&value, &etag, Some(t));
            let _ = if_range_matches(&value, &etag, None);
            let _ = if_match(&value, &etag);
            let _ = none_match_hits(&value, &etag);
        }

        #[test]
        fn a_tag_in_a_list_is_found(
            etag in opaque(),
            others in proptest::collection::vec(opaque(), 0..5),
            at in 0usize..6,
            sep in "[ \t]{0,2},[ \t]{0,2}",
        ) {
            let mut list = others.clone();
            list.insert(at.min(list.len()), etag.clone());
            let header = list.join(&sep);
            prop_assert!(if_match(&header, &etag));
            prop_assert!(none_match_hits(&header, &etag));
            // A weak tag matches If-None-Match (weak comparison), never If-Match or If-Range.
            let weak = format!("W/{etag}");
            let weak_list = others.iter().chain([&weak]).cloned().collect::<Vec<_>>().join(&sep);
            prop_assert!(none_match_hits(&weak_list, &etag));
            prop_assert_eq!(if_match(&weak_list, &etag), others.contains(&etag));
            prop_assert!(!if_range_matches(&weak, &etag, None));
            prop_assert!(if_range_matches(&etag, &etag, None));
            // Tags absent from the list never match.
            let absent = others.iter().filter(|o| **o != etag).cloned().collect::<Vec<_>>();
            if !absent.is_empty() {
                prop_assert!(!if_match(&absent.join(&sep), &etag));
                prop_assert!(!none_match_hits(&absent.join(&sep), &etag));
            }
        }

        #[test]
        fn if_range_dates_match_to_the_second(secs in 0u64..5_000_000_000, nanos in 0u32..1_000_000_000, delta in 1u64..1_000_000) {
            let t = UNIX_EPOCH + Duration::new(secs, nanos);
            let tag = "\"t\"";
            prop_assert!(if_range_matches(&httpdate::fmt_http_date(t), tag, Some(t)));
            let other = UNIX_EPOCH + Duration::from_secs(secs + delta);
            prop_assert!(!if_range_matches(&httpdate::fmt_http_date(other), tag, Some(t)));
        }
    }
}
