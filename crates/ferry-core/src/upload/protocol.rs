//! The protocol seam of `ferry put`: the plan, the part tasks, retries and the journal speak
//! to a [`Client`], which is tus 1.0 ([`super::tus`], the default) or the IETF draft
//! ([`super::ietf`]); each request is one protocol's and answers the same types.

use super::ietf::IetfClient;
use super::tus::{Capabilities, RemoteState, TusClient, TusFailure};
use crate::limits::RateLimiter;
use crate::verify::Algorithm;
use bytes::Bytes;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use url::Url;

/// The upload protocol `ferry put` speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// tus 1.0 with its extensions (parallel parts by concatenation, checksums).
    #[default]
    Tus,
    /// "Resumable Uploads for HTTP" (the IETF draft, final text): one upload resource per
    /// file, over one connection.
    Ietf,
}

/// The client of one upload endpoint, in the protocol chosen.
#[derive(Debug, Clone)]
pub(crate) enum Client {
    Tus(TusClient),
    Ietf(IetfClient),
}

impl Client {
    /// What the server supports and allows.
    pub(crate) async fn options(&self) -> Result<Capabilities, TusFailure> {
        match self {
            Client::Tus(c) => c.options().await,
            Client::Ietf(c) => c.options().await,
        }
    }

    /// Whether the server already has a file at `remote`'s landing place.
    pub(crate) async fn target_exists(&self, remote: &str) -> Option<bool> {
        self.base().target_exists(remote).await
    }

    fn base(&self) -> &TusClient {
        match self {
            Client::Tus(c) => c,
            Client::Ietf(c) => &c.base,
        }
    }

    /// Creates an upload (`concat` is tus's; the draft has no parts). `name` is the file's name
    /// on the server, which the draft sends in `Content-Disposition`.
    pub(crate) async fn create(
        &self,
        length: Option<u64>,
        metadata: &str,
        concat: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<(Url, u64), TusFailure> {
        match self {
            Client::Tus(c) => c.create(length, metadata, concat, body).await,
            Client::Ietf(c) => {
                let name = metadata_filename(metadata).unwrap_or_default();
                c.create(length, metadata, &name, body).await
            }
        }
    }

    /// The upload's offset and length.
    pub(crate) async fn head(&self, upload: &Url) -> Result<RemoteState, TusFailure> {
        match self {
            Client::Tus(c) => c.head(upload).await,
            Client::Ietf(c) => c.head(upload).await,
        }
    }

    /// Ends an unfinished upload.
    pub(crate) async fn terminate(&self, upload: &Url) -> Result<(), TusFailure> {
        match self {
            Client::Tus(c) => c.terminate(upload).await,
            Client::Ietf(c) => c.terminate(upload).await,
        }
    }

    /// Sends `len` bytes of `file` from `file_offset` at the upload's `offset`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn patch(
        &self,
        upload: &Url,
        offset: u64,
        file: &Path,
        file_offset: u64,
        len: u64,
        checksum: Option<(Algorithm, String)>,
        sent: Arc<AtomicU64>,
        limiter: Option<Arc<RateLimiter>>,
    ) -> Result<u64, TusFailure> {
        match self {
            Client::Tus(c) => {
                c.patch(
                    upload,
                    offset,
                    file,
                    file_offset,
                    len,
                    checksum,
                    sent,
                    limiter,
                )
                .await
            }
            Client::Ietf(c) => {
                c.patch(
                    upload,
                    offset,
                    file,
                    file_offset,
                    len,
                    checksum,
                    sent,
                    limiter,
                )
                .await
            }
        }
    }
}

/// The `filename` of tus metadata (`key base64,…`).
fn metadata_filename(metadata: &str) -> Option<String> {
    use base64::Engine;
    metadata.split(',').find_map(|pair| {
        let (k, v) = pair.trim().split_once(' ')?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
        (k == "filename").then(|| String::from_utf8(bytes).ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filename_from_metadata() {
        let m = super::super::tus::metadata(&[("filename", "é.txt"), ("path", "a/é.txt")]);
        assert_eq!(metadata_filename(&m).as_deref(), Some("é.txt"));
        assert_eq!(metadata_filename("path YQ=="), None);
    }
}
