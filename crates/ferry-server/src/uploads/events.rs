//! Live upload events: every committed append (its new offset) and every landing is broadcast
//! to subscribers in the same process (the browser page's Server-Sent Events stream). Nothing is
//! stored: a subscriber that falls behind loses the oldest events, and one that connects late
//! asks [`Uploads::unfinished_of`] for where things stand.

use super::{Uploads, now};
use crate::store::{Phase, UploadRecord};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

/// Events kept for a subscriber that has not read them yet (older ones are dropped for it).
const BACKLOG: usize = 256;

/// Something that happened to an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
#[non_exhaustive]
pub enum UploadEvent {
    /// Bytes were committed: the upload is at `offset` of `length`.
    Progress {
        /// The user the upload belongs to (not sent to browsers).
        #[serde(skip)]
        owner: String,
        /// The upload id.
        id: String,
        /// Where the upload lands (relative to the served directory), if it has a target.
        target: Option<String>,
        /// Bytes staged so far.
        offset: u64,
        /// The upload's length, when known.
        length: Option<u64>,
        /// Unix seconds of the event.
        at: u64,
    },
    /// The upload landed at its target.
    Landed {
        /// The user the upload belongs to (not sent to browsers).
        #[serde(skip)]
        owner: String,
        /// The upload id.
        id: String,
        /// The landed file's path relative to the served directory.
        target: String,
        /// The file's length.
        length: u64,
        /// Unix seconds of the event.
        at: u64,
    },
    /// The upload ended unfinished: terminated by its owner or expired.
    Ended {
        /// The user the upload belongs to (not sent to browsers).
        #[serde(skip)]
        owner: String,
        /// The upload id.
        id: String,
        /// Where it would have landed.
        target: String,
        /// `terminated` or `expired`.
        reason: &'static str,
        /// Unix seconds of the event.
        at: u64,
    },
}

impl UploadEvent {
    /// The user the event concerns.
    pub fn owner(&self) -> &str {
        match self {
            UploadEvent::Progress { owner, .. }
            | UploadEvent::Landed { owner, .. }
            | UploadEvent::Ended { owner, .. } => owner,
        }
    }

    /// The event's name in an event stream (`progress`, `landed`, `ended`).
    pub fn name(&self) -> &'static str {
        match self {
            UploadEvent::Progress { .. } => "progress",
            UploadEvent::Landed { .. } => "landed",
            UploadEvent::Ended { .. } => "ended",
        }
    }

    /// The progress of an upload as its record says, with `offset` bytes staged.
    pub fn progress(rec: &UploadRecord, offset: u64) -> UploadEvent {
        UploadEvent::Progress {
            owner: rec.owner.clone(),
            id: rec.id.clone(),
            target: rec.target.clone(),
            offset,
            length: rec.length,
            at: now(),
        }
    }
}

/// The broadcast channel of one upload service, and whether it is closing.
pub(super) struct EventHub {
    tx: broadcast::Sender<UploadEvent>,
    closing: watch::Sender<bool>,
}

impl EventHub {
    pub(super) fn new() -> EventHub {
        EventHub {
            tx: broadcast::channel(BACKLOG).0,
            closing: watch::channel(false).0,
        }
    }
}

/// A subscription to an upload service's events.
pub struct Subscription {
    /// The events, in order (a slow reader gets `Lagged` and loses the oldest).
    pub events: broadcast::Receiver<UploadEvent>,
    /// Becomes `true` when the server shuts down: streams should end.
    pub closing: watch::Receiver<bool>,
}

impl Uploads {
    /// Subscribes to the events of every upload from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            events: self.events.tx.subscribe(),
            closing: self.events.closing.subscribe(),
        }
    }

    /// Tells subscribers that the server is shutting down (their streams end).
    pub fn close_events(&self) {
        self.events.closing.send_replace(true);
    }

    /// Publishes the committed offset of `rec`: uploads with a target only (a partial upload
    /// is an implementation detail of its client). Costs nothing while nobody listens.
    pub(super) fn publish_progress(&self, rec: &UploadRecord, offset: u64) {
        if rec.target.is_some() && self.events.tx.receiver_count() > 0 {
            let _ = self.events.tx.send(UploadEvent::progress(rec, offset));
        }
    }

    /// Publishes that `rec` landed at its target.
    pub(super) fn publish_landed(&self, rec: &UploadRecord) {
        if let Some(target) = &rec.target
            && self.events.tx.receiver_count() > 0
        {
            let _ = self.events.tx.send(UploadEvent::Landed {
                owner: rec.owner.clone(),
                id: rec.id.clone(),
                target: target.clone(),
                length: rec.length.unwrap_or(rec.offset),
                at: now(),
            });
        }
    }

    /// Publishes that unfinished `rec` ended (`reason`: `terminated` or `expired`).
    pub(super) fn publish_ended(&self, rec: &UploadRecord, reason: &'static str) {
        if let Some(target) = &rec.target
            && self.events.tx.receiver_count() > 0
        {
            let _ = self.events.tx.send(UploadEvent::Ended {
                owner: rec.owner.clone(),
                id: rec.id.clone(),
                target: target.clone(),
                reason,
                at: now(),
            });
        }
    }

    /// Where `owner`'s unfinished uploads stand now, as progress events (for a subscriber that
    /// just connected). Uploads whose staged data cannot be read are left out.
    pub async fn unfinished_of(
        &self,
        owner: &str,
    ) -> Result<Vec<UploadEvent>, crate::store::StoreError> {
        let mut out = Vec::new();
        for rec in self.state.all().await? {
            if rec.owner != owner || rec.phase != Phase::Active || rec.target.is_none() {
                continue;
            }
            if let Ok(Some(offset)) = self.offset_of(&rec).await {
                out.push(UploadEvent::progress(&rec, offset));
            }
        }
        Ok(out)
    }
}
