//! The landed tree in the bucket: an object as a [`Representation`] (HeadObject for its length
//! and validators; each range a GetObject with `Range` and `If-Match`, streamed as it arrives,
//! never buffered whole), folders as key prefixes (ListObjectsV2 with a `/` delimiter), and
//! whether a target is taken.

use super::S3Store;
use super::client::{is_not_found, to_io};
use crate::data::{DataError, Node, ReadError};
use crate::listing::{self, Entry};
use crate::safepath::{self, PathError, STATE_DIR};
use aws_sdk_s3::primitives::ByteStream;
use ferry_http::{ByteRange, RangeStream, Representation};
use futures_util::StreamExt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Most entries a folder listing gathers (10 pages of ListObjectsV2).
pub const MAX_LISTED: usize = 10_000;

/// One object of the bucket, read by ranges.
pub struct Object {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    len: u64,
    etag: String,
    /// Whether `etag` is the server's (sent as `If-Match` with every range).
    server_etag: bool,
    modified: Option<SystemTime>,
    content_type: &'static str,
}

impl Representation for Object {
    fn len(&self) -> u64 {
        self.len
    }

    fn etag(&self) -> &str {
        &self.etag
    }

    fn modified(&self) -> Option<SystemTime> {
        self.modified
    }

    fn content_type(&self) -> &str {
        self.content_type
    }

    fn read(self: Arc<Self>, range: ByteRange) -> RangeStream {
        let wanted = range.len();
        let fetch = async move {
            let got = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .range(format!("bytes={}-{}", range.start, range.end - 1))
                // The object replaced since the HEAD: the body ends in an error, not in other bytes.
                .set_if_match(self.server_etag.then(|| self.etag.clone()))
                .send()
                .await
                .map_err(to_io)?;
            Ok::<_, io::Error>(got.body)
        };
        let stream = futures_util::stream::once(fetch).flat_map(move |got| match got {
            Ok(body) => body_stream(body, wanted),
            Err(e) => futures_util::stream::once(async { Err(e) }).boxed(),
        });
        Box::pin(stream)
    }
}

/// The frames of a GetObject body; an error if it ends before `wanted` bytes.
fn body_stream(body: ByteStream, wanted: u64) -> RangeStream {
    Box::pin(futures_util::stream::unfold(
        (body, 0u64, false),
        move |(mut body, got, done)| async move {
            if done {
                return None;
            }
            match body.next().await {
                Some(Ok(frame)) => {
                    let got = got + frame.len() as u64;
                    Some((Ok(frame), (body, got, false)))
                }
                Some(Err(e)) => Some((Err(io::Error::other(e)), (body, got, true))),
                None if got < wanted => Some((
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the object ended after {got} of {wanted} bytes"),
                    )),
                    (body, got, true),
                )),
                None => None,
            }
        },
    ))
}

fn seconds(t: &aws_sdk_s3::primitives::DateTime) -> Option<SystemTime> {
    u64::try_from(t.secs())
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

impl S3Store {
    /// The key prefix of the folder at `path` (components checked).
    fn folder_prefix(&self, path: &[String]) -> String {
        if path.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}{}/", self.prefix, path.join("/"))
        }
    }

    /// Whether any key lies under `prefix`.
    async fn any_under(&self, prefix: &str) -> io::Result<bool> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(to_io)?;
        Ok(!page.contents().is_empty())
    }

    /// [`crate::data::DataStore::open`] for the bucket.
    pub(super) async fn open_path(&self, path: &[String]) -> Result<Node, ReadError> {
        if path.is_empty() {
            return Ok(Node::Dir);
        }
        if path.first().is_some_and(|p| p == STATE_DIR) {
            return Err(ReadError::Refused(PathError::Private));
        }
        let key = format!("{}{}", self.prefix, path.join("/"));
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(head) => {
                let name = path.last().map(String::as_str).unwrap_or_default();
                let len = head.content_length().unwrap_or(0).max(0) as u64;
                let modified = head.last_modified().and_then(seconds);
                // A server without entity tags: one made of the length and the date.
                let made = || {
                    let secs = modified.map_or(0, ferry_http::conditional::unix_secs);
                    format!("\"{len:x}-{secs:x}\"")
                };
                Ok(Node::File(Arc::new(Object {
                    client: self.client.clone(),
                    bucket: self.bucket.clone(),
                    key,
                    len,
                    etag: head.e_tag().map_or_else(made, str::to_owned),
                    server_etag: head.e_tag().is_some(),
                    modified,
                    content_type: crate::media::content_type(name),
                })))
            }
            Err(e) if is_not_found(&e) => {
                if self.any_under(&self.folder_prefix(path)).await? {
                    Ok(Node::Dir)
                } else {
                    Err(ReadError::Io(io::Error::from(io::ErrorKind::NotFound)))
                }
            }
            Err(e) => Err(ReadError::Io(to_io(e))),
        }
    }

    /// [`crate::data::DataStore::list`] for the bucket: folders first, then by name; the state
    /// prefix and names a request could not name left out; at most [`MAX_LISTED`] entries.
    pub(super) async fn list_folder(&self, path: &[String]) -> Result<Vec<Entry>, ReadError> {
        let prefix = self.folder_prefix(path);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .delimiter("/")
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(to_io)?;
            let plain = |name: &str| {
                !(path.is_empty() && name == STATE_DIR)
                    && matches!(safepath::components(name), Ok(p) if p == [name])
            };
            for p in page.common_prefixes() {
                let Some(name) = p
                    .prefix()
                    .and_then(|k| k.strip_prefix(&prefix))
                    .map(|n| n.trim_end_matches('/'))
                else {
                    continue;
                };
                if plain(name) {
                    out.push(Entry {
                        name: name.to_owned(),
                        kind: listing::Kind::Dir,
                        size: 0,
                        modified: 0,
                        etag: None,
                    });
                }
            }
            for o in page.contents() {
                let Some(name) = o.key().and_then(|k| k.strip_prefix(&prefix)) else {
                    continue;
                };
                if !plain(name) {
                    continue;
                }
                out.push(Entry {
                    name: name.to_owned(),
                    kind: listing::Kind::File,
                    size: o.size().unwrap_or(0).max(0) as u64,
                    modified: o
                        .last_modified()
                        .and_then(seconds)
                        .map_or(0, ferry_http::conditional::unix_secs),
                    etag: o.e_tag().map(str::to_owned),
                });
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) && out.len() < MAX_LISTED => {
                    token = Some(t.to_owned());
                }
                _ => break,
            }
        }
        if out.is_empty() && !path.is_empty() {
            return Err(ReadError::Io(io::Error::from(io::ErrorKind::NotFound)));
        }
        out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        Ok(out)
    }

    /// Whether a landed file is at `target`: an error for an unsafe path or a folder.
    pub(super) async fn target_exists_key(&self, target: &str) -> Result<bool, DataError> {
        safepath::target(target).map_err(|e| DataError::TargetPath(target.into(), e))?;
        let key = self.target_key(target);
        let exists = self.head_size(&key).await?.is_some();
        if !exists
            && self
                .any_under(&format!("{key}/"))
                .await
                .map_err(|e| DataError::io("looking at the target", e))?
        {
            return Err(DataError::TargetIsDirectory(target.to_owned()));
        }
        Ok(exists)
    }
}
