//! The range responder: `GET`/`HEAD` of one [`Representation`] with conditional requests
//! (304/412), single and multiple ranges, `If-Range`, 416 with `Content-Range: bytes */len`,
//! strong `ETag`, `Last-Modified` and `Accept-Ranges`, and a streamed body whose bytes are
//! counted once the connection has taken them.
//!
//! A representation only says how long it is, what its validators and type are, and how to
//! stream a range of it ([`Representation::read`]); local files are [`crate::LocalFile`].

use crate::conditional::{if_match, if_range_matches, none_match_hits, unix_secs};
use crate::multipart::{Multipart, boundary};
use crate::range::{self, ByteRange, Resolution};
use axum_core::body::Body;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// The frames of one range of a representation, in order; together exactly the range's bytes.
pub type RangeStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// A representation that can be read by ranges: a local file, or an object in a remote store
/// (read with ranged requests, streamed, never buffered whole).
pub trait Representation: Send + Sync + 'static {
    /// Its length in bytes.
    fn len(&self) -> u64;

    /// Whether it holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its strong entity-tag, quotes included (e.g. `"1a-2b"`).
    fn etag(&self) -> &str;

    /// When it last changed, if known (sent as `Last-Modified`, compared by the date
    /// conditionals).
    fn modified(&self) -> Option<SystemTime>;

    /// Its media type, sent as `Content-Type`.
    fn content_type(&self) -> &str;

    /// Streams the bytes of `range` (never empty, always inside [`Self::len`]). Reading starts
    /// when the stream is first polled. An item `Err` ends the body: the connection is cut
    /// short, so the client sees an incomplete answer rather than wrong data.
    fn read(self: Arc<Self>, range: ByteRange) -> RangeStream;
}

/// Counts body bytes once the connection has taken them.
pub trait ByteCounter: Send + Sync + 'static {
    /// Adds `n` bytes sent.
    fn add(&self, n: u64);
}

impl ByteCounter for AtomicU64 {
    fn add(&self, n: u64) {
        self.fetch_add(n, Ordering::Relaxed);
    }
}

/// Paces a body (e.g. a rate limit): awaited before each frame is handed to the connection.
pub trait Pacer: Send + Sync + 'static {
    /// Waits until `n` more bytes may be sent.
    fn pace(&self, n: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// How the responder answers, beyond what the representation says.
#[derive(Clone)]
pub struct Options {
    /// Where body bytes are counted (none: not counted).
    pub counter: Option<Arc<dyn ByteCounter>>,
    /// What paces the body (none: as fast as the connection takes it).
    pub pacer: Option<Arc<dyn Pacer>>,
    /// Several ranges get a `multipart/byteranges` answer when true, the whole representation
    /// (200, allowed by RFC 9110 §14.2) when false.
    pub multipart: bool,
}

impl Default for Options {
    /// Not counted, not paced, multipart answers.
    fn default() -> Self {
        Options {
            counter: None,
            pacer: None,
            multipart: true,
        }
    }
}

/// Answers `GET` (or `HEAD` when `head`) of `rep`, given the request's `headers`.
///
/// Preconditions are evaluated in the order of RFC 9110 §13.2.2 (412, then 304); `Range`
/// applies to `GET` only and only when `If-Range` (if any) holds. Every answer carries
/// `Accept-Ranges`, `ETag` and `Last-Modified` (when known); answers with a body also
/// `X-Content-Type-Options: nosniff`, plus `Content-Security-Policy: sandbox` for types a
/// browser would run scripts in.
pub fn respond(
    rep: Arc<dyn Representation>,
    head: bool,
    headers: &HeaderMap,
    options: &Options,
) -> Response<Body> {
    let len = rep.len();
    let etag = rep.etag().to_owned();
    let mtime = rep.modified();

    let mut res = Response::new(Body::empty());
    {
        let h = res.headers_mut();
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        insert(h, header::ETAG, &etag);
        if let Some(t) = mtime {
            insert(h, header::LAST_MODIFIED, &httpdate::fmt_http_date(t));
        }
    }

    // Preconditions, in the order of RFC 9110 §13.2.2. Date conditions need a modification
    // time; without one they are ignored (§13.1.4).
    let one = |name: HeaderName| joined(headers, name);
    let date = |v: &str| httpdate::parse_http_date(v.trim()).ok().map(unix_secs);
    let precondition_failed = match (one(header::IF_MATCH), one(header::IF_UNMODIFIED_SINCE)) {
        (Some(v), _) => !if_match(&v, &etag),
        (None, Some(v)) => match (date(&v), mtime) {
            (Some(d), Some(m)) => unix_secs(m) > d,
            _ => false,
        },
        (None, None) => false,
    };
    if precondition_failed {
        *res.status_mut() = StatusCode::PRECONDITION_FAILED;
        set_text(&mut res, "precondition failed: the file has changed");
        return res;
    }
    let not_modified = match (one(header::IF_NONE_MATCH), one(header::IF_MODIFIED_SINCE)) {
        (Some(v), _) => none_match_hits(&v, &etag),
        (None, Some(v)) => match (date(&v), mtime) {
            (Some(d), Some(m)) => unix_secs(m) <= d,
            _ => false,
        },
        (None, None) => false,
    };
    if not_modified {
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        return res;
    }

    // Range applies to GET only (RFC 9110 §14.2), and only when If-Range (if any) holds.
    let range = match headers.get_all(header::RANGE).iter().collect::<Vec<_>>()[..] {
        [v] if !head => v.to_str().ok().and_then(range::parse),
        _ => None,
    };
    let range = range.filter(|_| match one(header::IF_RANGE) {
        Some(v) => if_range_matches(&v, &etag, mtime),
        None => true,
    });
    let resolution = match range {
        Some(specs) => match range::resolve(&specs, len) {
            Resolution::Partial(ranges) if ranges.len() > 1 && !options.multipart => {
                Resolution::Full
            }
            other => other,
        },
        None => Resolution::Full,
    };

    let content_type = rep.content_type();
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if runs_scripts(content_type) {
        // HTML must not run in the server's origin (where its pages and tokens live).
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        );
    }
    let (body_len, parts) = match resolution {
        Resolution::Unsatisfiable => {
            *res.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            insert(
                res.headers_mut(),
                header::CONTENT_RANGE,
                &range::unsatisfied_content_range(len),
            );
            set_text(
                &mut res,
                &format!("range not satisfiable: the file has {len} bytes"),
            );
            return res;
        }
        Resolution::Full => {
            insert(h, header::CONTENT_TYPE, content_type);
            let parts = if len == 0 {
                VecDeque::new()
            } else {
                VecDeque::from([Part::Range(ByteRange { start: 0, end: len })])
            };
            (len, parts)
        }
        Resolution::Partial(ranges) => {
            *res.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = res.headers_mut();
            match &ranges[..] {
                [r] => {
                    insert(h, header::CONTENT_TYPE, content_type);
                    insert(h, header::CONTENT_RANGE, &r.content_range(len));
                    (r.len(), VecDeque::from([Part::Range(*r)]))
                }
                _ => {
                    let m = Multipart::new(&ranges, len, content_type, &boundary());
                    insert(h, header::CONTENT_TYPE, &m.content_type);
                    let mut parts = VecDeque::with_capacity(ranges.len() * 2 + 1);
                    for (head, r) in m.parts {
                        parts.push_back(Part::Bytes(Bytes::from(head)));
                        parts.push_back(Part::Range(r));
                    }
                    parts.push_back(Part::Bytes(Bytes::from(m.trailer)));
                    (m.content_length, parts)
                }
            }
        }
    };
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    if !head {
        *res.body_mut() = body(Some(rep), parts, body_len, options);
    }
    res
}

/// A body of fixed bytes, counted and paced like a representation's.
pub fn counted_bytes(bytes: Bytes, options: &Options) -> Body {
    let len = bytes.len() as u64;
    body(None, VecDeque::from([Part::Bytes(bytes)]), len, options)
}

/// Types a browser would run scripts in.
pub fn runs_scripts(content_type: &str) -> bool {
    content_type.starts_with("text/html")
        || content_type == "image/svg+xml"
        || content_type.ends_with("xml")
}

/// All values of a header joined with `, ` (list headers may be split over several lines);
/// `None` when absent or not text.
fn joined(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<_>>()?;
    if values.is_empty() {
        None
    } else {
        Some(values.join(", "))
    }
}

fn insert(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// Makes `res` a plain-text answer saying `msg` (a line: `msg` and a newline), keeping its
/// status and other headers.
pub fn set_text(res: &mut Response<Body>, msg: &str) {
    let body = format!("{msg}\n");
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    *res.body_mut() = Body::from(body);
}

/// One stretch of a response body.
enum Part {
    Bytes(Bytes),
    Range(ByteRange),
}

/// Produces a body's frames in order: fixed bytes, and the ranges streamed from the
/// representation (each checked to yield exactly its length).
struct Frames {
    rep: Option<Arc<dyn Representation>>,
    parts: VecDeque<Part>,
    /// The range being streamed, and how many of its bytes are still due.
    current: Option<(RangeStream, u64)>,
    /// Body bytes not yet handed out.
    left: u64,
    /// Bytes of the frame last handed out: counted once the connection asks for the next one
    /// (it has taken them), or at once for the last frame (hyper stops polling a body whose
    /// `Content-Length` is reached).
    uncounted: u64,
    counter: Option<Arc<dyn ByteCounter>>,
    pacer: Option<Arc<dyn Pacer>>,
    done: bool,
}

impl Frames {
    async fn next_frame(&mut self) -> Option<io::Result<Bytes>> {
        let taken = std::mem::take(&mut self.uncounted);
        self.count(taken);
        if self.done {
            return None;
        }
        let chunk = loop {
            if let Some((stream, due)) = &mut self.current {
                match stream.next().await {
                    Some(Ok(b)) if b.len() as u64 <= *due => {
                        *due -= b.len() as u64;
                        if b.is_empty() {
                            continue;
                        }
                        break b;
                    }
                    Some(Ok(_)) => {
                        return self.fail(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "the representation gave more bytes than the range holds",
                        ));
                    }
                    Some(Err(e)) => return self.fail(e),
                    None if *due > 0 => {
                        return self.fail(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the representation ended before the range did",
                        ));
                    }
                    None => self.current = None,
                }
            }
            match self.parts.pop_front() {
                Some(Part::Bytes(b)) => break b,
                Some(Part::Range(r)) => match &self.rep {
                    Some(rep) => self.current = Some((Arc::clone(rep).read(r), r.len())),
                    None => return self.fail(io::Error::other("a range without a representation")),
                },
                None => {
                    self.done = true;
                    return None;
                }
            }
        };
        if let Some(p) = &self.pacer {
            p.pace(chunk.len() as u64).await;
        }
        let n = chunk.len() as u64;
        self.left = self.left.saturating_sub(n);
        if self.left == 0 {
            self.done = true;
            self.count(n);
        } else {
            self.uncounted = n;
        }
        Some(Ok(chunk))
    }

    fn count(&self, n: u64) {
        if let Some(c) = &self.counter
            && n > 0
        {
            c.add(n);
        }
    }

    fn fail(&mut self, e: io::Error) -> Option<io::Result<Bytes>> {
        tracing::warn!("sending a body: {e}");
        self.done = true;
        self.current = None;
        self.parts.clear();
        Some(Err(e))
    }
}

fn body(
    rep: Option<Arc<dyn Representation>>,
    parts: VecDeque<Part>,
    len: u64,
    options: &Options,
) -> Body {
    let frames = Frames {
        rep,
        parts,
        current: None,
        left: len,
        uncounted: 0,
        counter: options.counter.clone(),
        pacer: options.pacer.clone(),
        done: false,
    };
    Body::from_stream(futures_util::stream::unfold(frames, |mut f| async move {
        f.next_frame().await.map(|frame| (frame, f))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::Mutex;

    /// An in-memory representation streamed in small pieces, like a remote object would be;
    /// `short` drops that many bytes from the end of every range (a broken store).
    struct Memory {
        data: Bytes,
        piece: usize,
        modified: Option<SystemTime>,
        short: usize,
    }

    impl Representation for Memory {
        fn len(&self) -> u64 {
            self.data.len() as u64
        }
        fn etag(&self) -> &str {
            "\"m1\""
        }
        fn modified(&self) -> Option<SystemTime> {
            self.modified
        }
        fn content_type(&self) -> &str {
            "text/plain"
        }
        fn read(self: Arc<Self>, range: ByteRange) -> RangeStream {
            let end = (range.end as usize).saturating_sub(self.short);
            let slice = self
                .data
                .slice(range.start as usize..end.max(range.start as usize));
            let pieces: Vec<io::Result<Bytes>> = slice
                .chunks(self.piece)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            Box::pin(futures_util::stream::iter(pieces))
        }
    }

    fn memory(short: usize, modified: Option<SystemTime>) -> Arc<dyn Representation> {
        Arc::new(Memory {
            data: Bytes::from_static(b"0123456789abcdefghij"),
            piece: 3,
            modified,
            short,
        })
    }

    #[derive(Default)]
    struct Paced(Mutex<Vec<u64>>);

    impl Pacer for Paced {
        fn pace(&self, n: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
            self.0.lock().unwrap().push(n);
            Box::pin(async {})
        }
    }

    fn headers(list: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    async fn body_of(res: Response<Body>) -> io::Result<Vec<u8>> {
        match res.into_body().collect().await {
            Ok(b) => Ok(b.to_bytes().to_vec()),
            Err(e) => Err(io::Error::other(e.to_string())),
        }
    }

    #[tokio::test]
    async fn ranges_of_a_streamed_representation_are_counted_and_paced() {
        let counter = Arc::new(AtomicU64::new(0));
        let pacer = Arc::new(Paced::default());
        let options = Options {
            counter: Some(counter.clone()),
            pacer: Some(pacer.clone()),
            multipart: true,
        };
        let rep = memory(0, None);
        let res = respond(
            rep.clone(),
            false,
            &headers(&[("range", "bytes=2-9")]),
            &options,
        );
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(res.headers()["content-range"], "bytes 2-9/20");
        assert_eq!(res.headers()["content-length"], "8");
        assert!(res.headers().get("last-modified").is_none());
        assert_eq!(body_of(res).await.unwrap(), b"23456789");
        assert_eq!(counter.load(Ordering::Relaxed), 8);
        assert_eq!(pacer.0.lock().unwrap().iter().sum::<u64>(), 8);

        let res = respond(
            rep.clone(),
            false,
            &headers(&[("range", "bytes=0-0,-2")]),
            &options,
        );
        let len: u64 = res.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = body_of(res).await.unwrap();
        assert_eq!(body.len() as u64, len);
        let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"Content-Range: bytes 0-0/20\r\n\r\n0\r\n--"));
        assert!(has(b"Content-Range: bytes 18-19/20\r\n\r\nij\r\n--"));
        assert_eq!(counter.load(Ordering::Relaxed), 8 + len);

        // HEAD sends and counts nothing.
        let res = respond(rep, true, &HeaderMap::new(), &options);
        assert_eq!(res.headers()["content-length"], "20");
        assert!(body_of(res).await.unwrap().is_empty());
        assert_eq!(counter.load(Ordering::Relaxed), 8 + len);
    }

    #[tokio::test]
    async fn without_multipart_several_ranges_get_the_whole() {
        let options = Options {
            multipart: false,
            ..Options::default()
        };
        let res = respond(
            memory(0, None),
            false,
            &headers(&[("range", "bytes=0-1,5-6")]),
            &options,
        );
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_of(res).await.unwrap(), b"0123456789abcdefghij");
    }

    #[tokio::test]
    async fn without_a_modification_time_date_conditions_are_ignored() {
        let epoch = "Thu, 01 Jan 1970 00:00:00 GMT";
        let rep = memory(0, None);
        let o = Options::default();
        for h in [
            vec![("if-modified-since", epoch)],
            vec![("if-unmodified-since", epoch)],
            vec![("range", "bytes=0-1"), ("if-range", epoch)],
        ] {
            let res = respond(rep.clone(), false, &headers(&h), &o);
            assert_eq!(res.status(), StatusCode::OK, "{h:?}");
        }
        let dated = memory(0, Some(SystemTime::UNIX_EPOCH));
        let res = respond(dated, false, &headers(&[("if-modified-since", epoch)]), &o);
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        let res = respond(rep, false, &headers(&[("range", "bytes=20-")]), &o);
        assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(res.headers()["content-range"], "bytes */20");
    }

    #[tokio::test]
    async fn a_representation_that_ends_early_cuts_the_body() {
        let res = respond(
            memory(2, None),
            false,
            &HeaderMap::new(),
            &Options::default(),
        );
        assert_eq!(res.headers()["content-length"], "20");
        assert!(body_of(res).await.is_err());
    }
}
