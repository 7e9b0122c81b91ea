//! `GET /page/events`: Server-Sent Events with the live progress of the signed-in user's
//! uploads, wherever they run (another tab, another device, `ferry put`). On connect: one
//! `progress` event per unfinished upload, then `ready`; then `progress` after every committed
//! append and `landed` when a file lands. The stream ends when the server shuts down.

use super::PageState;
use crate::auth::User;
use crate::uploads::{Subscription, UploadEvent};
use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// The event stream of the signed-in user.
pub async fn events(State(s): State<Arc<PageState>>, Extension(user): Extension<User>) -> Response {
    // Subscribe before taking the snapshot: an event in between is sent twice, never lost.
    let sub = s.uploads.subscribe();
    let snapshot = match s.uploads.unfinished_of(&user.0).await {
        Ok(events) => events,
        Err(e) => {
            tracing::warn!("page events: {e}");
            Vec::new()
        }
    };
    let initial = stream::iter(
        snapshot
            .iter()
            .map(to_sse)
            .chain(std::iter::once(Event::default().event("ready").data("{}")))
            .map(Ok::<Event, Infallible>)
            .collect::<Vec<_>>(),
    );
    let mut res = Sse::new(initial.chain(live(sub, user)))
        .keep_alive(KeepAlive::default())
        .into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

/// The user's events as they happen, until the server shuts down.
fn live(sub: Subscription, user: User) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold((sub, user), |(mut sub, user)| async move {
        loop {
            if *sub.closing.borrow() {
                return None;
            }
            tokio::select! {
                changed = sub.closing.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                got = sub.events.recv() => match got {
                    Ok(ev) if ev.owner() == user.0.as_ref() => {
                        return Some((Ok(to_sse(&ev)), (sub, user)));
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    })
}

/// One event in the stream: named by its kind, its JSON as data.
fn to_sse(ev: &UploadEvent) -> Event {
    Event::default()
        .event(ev.name())
        .data(serde_json::to_string(ev).unwrap_or_default())
}
