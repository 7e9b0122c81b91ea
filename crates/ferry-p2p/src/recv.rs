//! The receiving side of a peer-to-peer transfer (`ferry recv`): reaches each ticket's sender
//! over TLS pinned to the ticket's certificate, checks the manifest against the ticket's hash,
//! then fetches every file with the download engine from all senders at once (ranges go to
//! whichever is faster), verifying each piece; a sender whose bytes fail verification is
//! dropped. A sent file arrives as `DIR/<name>`, a folder as `DIR/<folder>/…`.
//!
//! A sender is hostile until proven otherwise: its manifest is read up to a size cap and parsed
//! under an entry cap ([`ManifestLimits`]), its paths are validated and normalised by
//! [`Manifest::parse_with`], and no redirect is followed (neither for the manifest nor for a
//! file): a receive never talks to anyone but the pinned senders of its tickets.

use crate::manifest::{EntryKind, Manifest, ManifestError, ManifestLimits};
use crate::ticket::Ticket;
use crate::tls;
use ferry_core::source::{CustomTls, RedirectPolicy};
use ferry_core::{Download, Error, EventSink, Output, PieceHashes, RetryPolicy};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why a receive failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// No ticket was given.
    #[error("no ticket given")]
    NoTicket,
    /// The tickets name different manifests.
    #[error(
        "the tickets are for different content (ticket 1 names manifest {first}, ticket {n} names {other}); give tickets of one `ferry send` content only"
    )]
    DifferentContent {
        /// The first ticket's manifest hash (hex prefix).
        first: String,
        /// The position (from 1) of the ticket that differs.
        n: usize,
        /// Its manifest hash (hex prefix).
        other: String,
    },
    /// The HTTP client for the senders could not be set up.
    #[error(
        "cannot reach any sender: cannot set up TLS: {0}. Is `ferry send` still running, and is its address reachable from here?"
    )]
    Client(#[source] reqwest::Error),
    /// No sender answered; what each address said, joined.
    #[error(
        "cannot reach any sender: {0}. Is `ferry send` still running, and is its address reachable from here?"
    )]
    Unreachable(String),
    /// Every sender that answered gave a manifest that does not match the ticket.
    #[error(
        "the sender's content list does not match the ticket (its hash differs): the ticket was altered or belongs to another transfer"
    )]
    ManifestMismatch,
    /// The senders' manifest was refused.
    #[error("the sender's content list is invalid: {0}")]
    BadManifest(#[from] ManifestError),
    /// A sender answered in a way a ferry sender never does (a redirect, a content list over
    /// the size cap); it is not used.
    #[error("{sender}: {what}; this sender is not used")]
    Refused {
        /// The sender's address.
        sender: String,
        /// What it did.
        what: String,
    },
    /// A local folder or empty file could not be created.
    #[error("{}: {source}", path.display())]
    Io {
        /// The local path.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// Fetching a file failed.
    #[error("{file}: {source}")]
    File {
        /// The file's path in the manifest.
        file: String,
        /// What the download engine said.
        #[source]
        source: Error,
    },
}

impl RecvError {
    /// Whether a rerun of the same command can continue.
    pub fn is_resumable(&self) -> bool {
        match self {
            RecvError::File { source, .. } => source.is_resumable(),
            RecvError::Unreachable(_) | RecvError::Client(_) => true,
            _ => false,
        }
    }
}

/// What a finished receive did.
#[derive(Debug, Clone)]
pub struct Received {
    /// Files written (empty ones included).
    pub files: usize,
    /// Folders created.
    pub dirs: usize,
    /// Bytes of all files of the share.
    pub bytes: u64,
    /// Bytes fetched in this run.
    pub fetched: u64,
    /// Senders used.
    pub peers: usize,
}

/// A receive: tickets (one per sender of the same content), where to put it, connections.
pub struct Receive {
    /// One ticket per sender; all must name the same manifest.
    pub tickets: Vec<Ticket>,
    /// The folder what is sent arrives in.
    pub dir: PathBuf,
    /// Connections per file, over all senders.
    pub connections: usize,
    /// Retry policy of each file's download.
    pub retry: RetryPolicy,
    /// How long connecting to a sender may take.
    pub connect_timeout: Duration,
    /// Events per file: the file's index in the manifest and its event sink.
    pub events: Box<dyn Fn(usize) -> EventSink + Send + Sync>,
    /// Notes for people (e.g. a sender that could not be reached).
    pub note: Box<dyn Fn(&str) + Send + Sync>,
    /// What is accepted of a sender's manifest (bytes, entries).
    pub limits: ManifestLimits,
}

/// One reachable sender.
struct Peer {
    base: String,
    token: String,
}

impl Receive {
    /// A receive of `tickets` into `dir`, with default connections, retries and timeouts, no
    /// events and no notes.
    pub fn new(tickets: Vec<Ticket>, dir: impl Into<PathBuf>) -> Receive {
        Receive {
            tickets,
            dir: dir.into(),
            connections: 8,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(5),
            events: Box::new(|_| EventSink::default()),
            note: Box::new(|_| {}),
            limits: ManifestLimits::default(),
        }
    }

    fn tls(&self) -> CustomTls {
        let fps: Vec<[u8; 32]> = self.tickets.iter().map(|t| t.fingerprint).collect();
        CustomTls {
            key: format!(
                "ferry-peers:{}",
                fps.iter().map(hex::encode).collect::<Vec<_>>().join(",")
            ),
            config: tls::pinned_client_config_any(&fps),
            direct: true,
        }
    }

    /// Reaches the senders, checks the manifest, and fetches everything into `dir`.
    pub async fn run(&self, cancel: CancellationToken) -> Result<Received, RecvError> {
        let first = self.tickets.first().ok_or(RecvError::NoTicket)?;
        for (i, t) in self.tickets.iter().enumerate().skip(1) {
            if t.manifest != first.manifest {
                return Err(RecvError::DifferentContent {
                    first: hex::encode(&first.manifest[..8]),
                    n: i + 1,
                    other: hex::encode(&t.manifest[..8]),
                });
            }
        }
        let tls = self.tls();
        // The same pinned configuration (and no proxy) as the engine's clients use.
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls.config.as_ref().clone())
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .connect_timeout(self.connect_timeout)
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(RecvError::Client)?;

        // Reach every sender; keep the ones whose manifest is the ticket's.
        let mut peers = Vec::new();
        let mut manifest_bytes = None;
        let mut failures = Vec::new();
        let mut refused = None;
        let mut mismatch = false;
        for t in &self.tickets {
            match reach(&client, t, self.limits.max_bytes).await {
                Ok((peer, bytes)) => {
                    if Manifest::hash_of(&bytes) != t.manifest {
                        mismatch = true;
                        (self.note)(&format!(
                            "{}: its content list does not match the ticket; not using it",
                            peer.base
                        ));
                        continue;
                    }
                    manifest_bytes.get_or_insert(bytes);
                    peers.push(peer);
                }
                Err(Reach::Unreachable(e)) => failures.push(e),
                Err(Reach::Refused(e)) => {
                    (self.note)(&e.to_string());
                    refused.get_or_insert(e);
                }
            }
        }
        // Senders out of reach are worth a note when others were reached; when none was, the
        // error says it all (once).
        if manifest_bytes.is_some() {
            for e in &failures {
                (self.note)(&format!("cannot reach a sender: {e}"));
            }
        }
        let Some(bytes) = manifest_bytes else {
            if let Some(e) = refused {
                return Err(e);
            }
            return Err(if mismatch {
                RecvError::ManifestMismatch
            } else {
                RecvError::Unreachable(failures.join("; "))
            });
        };
        let manifest = Manifest::parse_with(&bytes, self.limits)?;

        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let mut out = Received {
            files: 0,
            dirs: 0,
            bytes: 0,
            fetched: 0,
            peers: peers.len(),
        };
        for (i, entry) in manifest.entries.iter().enumerate() {
            // Paths were validated by `parse`: relative, no `..`, no odd names.
            let dest = self.dir.join(&entry.path);
            match &entry.kind {
                EntryKind::Dir => {
                    std::fs::create_dir_all(&dest).map_err(|e| io(&dest, e))?;
                    out.dirs += 1;
                }
                EntryKind::File { size: 0, .. } => {
                    if let Some(parent) = dest.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
                    }
                    create_empty(&dest).map_err(|source| RecvError::File {
                        file: entry.path.clone(),
                        source,
                    })?;
                    out.files += 1;
                }
                EntryKind::File { size, .. } => {
                    if cancel.is_cancelled() {
                        return Err(RecvError::File {
                            file: entry.path.clone(),
                            source: Error::Cancelled,
                        });
                    }
                    let mut b = Download::builder()
                        .output(Output::File(dest.clone()))
                        .connections(self.connections)
                        .retry_policy(self.retry.clone())
                        .connect_timeout(self.connect_timeout)
                        .tls(tls.clone())
                        .redirects(RedirectPolicy {
                            follow: false,
                            ..RedirectPolicy::default()
                        })
                        .pieces(PieceHashes {
                            size: manifest.piece_size,
                            hashes: manifest.piece_hashes(i),
                        })
                        .events((self.events)(i));
                    for p in &peers {
                        b = b.url(format!("{}/f/{i}?token={}", p.base, p.token));
                    }
                    let download = b.build().map_err(|source| RecvError::File {
                        file: entry.path.clone(),
                        source,
                    })?;
                    let done =
                        download
                            .run(cancel.clone())
                            .await
                            .map_err(|source| RecvError::File {
                                file: entry.path.clone(),
                                source,
                            })?;
                    out.files += 1;
                    out.bytes += size;
                    out.fetched += done.fetched;
                }
            }
        }
        Ok(out)
    }
}

fn io(path: &Path, source: std::io::Error) -> RecvError {
    RecvError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates the empty file `dest` where nothing is (never through a link); an empty regular
/// file there already (an earlier run's) is fine, anything else is [`Error::Exists`].
fn create_empty(dest: &Path) -> Result<(), Error> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            match std::fs::symlink_metadata(dest) {
                Ok(m) if m.is_file() && m.len() == 0 => Ok(()),
                _ => Err(Error::Exists {
                    path: dest.to_owned(),
                }),
            }
        }
        Err(e) => Err(Error::io(dest, e)),
    }
}

/// Why a sender gave no manifest.
enum Reach {
    /// None of its addresses answered (what each said).
    Unreachable(String),
    /// It answered in a way a ferry sender never does.
    Refused(RecvError),
}

/// Tries the ticket's addresses in order; the first that answers gives the manifest bytes (at
/// most `max_bytes`).
async fn reach(
    client: &reqwest::Client,
    t: &Ticket,
    max_bytes: u64,
) -> Result<(Peer, Vec<u8>), Reach> {
    let token = t.token_hex();
    let mut errors = Vec::new();
    for addr in &t.addrs {
        let base = match addr {
            std::net::IpAddr::V4(a) => format!("https://{a}:{}", t.port),
            std::net::IpAddr::V6(a) => format!("https://[{a}]:{}", t.port),
        };
        let url = format!("{base}/manifest?token={token}");
        let refused = |what: String| {
            Reach::Refused(RecvError::Refused {
                sender: base.clone(),
                what,
            })
        };
        match client.get(&url).send().await {
            Ok(r) if r.status().is_redirection() => {
                let to = r
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_default();
                return Err(refused(format!(
                    "it redirected to {to:?}; ferry recv talks only to the sender its ticket names"
                )));
            }
            Ok(r) if r.status().is_success() => match read_capped(r, max_bytes).await {
                Ok(Some(b)) => {
                    return Ok((
                        Peer {
                            base,
                            token: token.clone(),
                        },
                        b,
                    ));
                }
                Ok(None) => {
                    return Err(refused(format!(
                        "its content list is larger than the limit of {max_bytes} bytes"
                    )));
                }
                Err(e) => errors.push(format!("{base}: {}", ferry_core::source::describe(&e))),
            },
            Ok(r) => errors.push(format!("{base}: the sender answered {}", r.status())),
            Err(e) => errors.push(format!("{base}: {}", ferry_core::source::describe(&e))),
        }
    }
    Err(Reach::Unreachable(errors.join(", ")))
}

/// The body of `r`, or `None` as soon as it is known to be longer than `max` bytes.
async fn read_capped(
    mut r: reqwest::Response,
    max: u64,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if r.content_length().is_some_and(|n| n > max) {
        return Ok(None);
    }
    let mut out = Vec::new();
    while let Some(chunk) = r.chunk().await? {
        if (out.len() + chunk.len()) as u64 > max {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}
