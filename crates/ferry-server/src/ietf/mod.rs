//! The IETF resumable-upload front end ("Resumable Uploads for HTTP",
//! draft-ietf-httpbis-resumable-upload): creation by a request with `Upload-Complete`, offset
//! retrieval by HEAD, appends by PATCH with `application/partial-upload`, cancellation by
//! DELETE, limits by OPTIONS; interop versions 6 and 8 and the final protocol. It shares
//! `/uploads/` and the upload core ([`crate::uploads`]) with the tus front end;
//! [`crate::protocol`] decides which one a request speaks. Handlers are thin: [`request`]
//! parses, the core works, [`response`] renders.
//!
//! `104 (Upload Resumption Supported)` is never sent: hyper 1 cannot send an informational
//! response other than `100 Continue` (see docs/server.md); the draft makes 104 optional.

pub mod request;
pub mod response;

use crate::auth::User;
use crate::data::{Incoming, body};
use crate::socket::RequestSocket;
use crate::uploads::{Refusal, Uploads};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::Response;
use axum::routing::{any, post};
use request::Dialect;
use response::Answering;
use std::sync::Arc;

/// The routes under `/uploads` for requests that speak the draft. The caller adds
/// authentication (a [`User`] extension).
pub fn router(uploads: Arc<Uploads>) -> Router {
    Router::new()
        .route("/uploads", post(create).options(options))
        .route("/uploads/", post(create).options(options))
        .route("/uploads/{id}", any(upload))
        .with_state(uploads)
}

/// The answer refusing a request in a dialect ferry does not speak.
fn unspoken(answering: Answering, e: &Refusal) -> Response {
    response::refusal(Dialect::Final, answering, e, None, None)
}

async fn options(State(u): State<Arc<Uploads>>, headers: HeaderMap) -> Response {
    match request::dialect(&headers) {
        Ok(d) => response::options(d, u.policy().max_size),
        Err(e) => unspoken(Answering::Creation, &e),
    }
}

async fn create(
    State(u): State<Arc<Uploads>>,
    axum::Extension(user): axum::Extension<User>,
    RequestSocket(socket): RequestSocket,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut body = Some(Incoming { body, socket });
    let max = u.policy().max_size;
    let dialect = match request::dialect(&headers) {
        Ok(d) => d,
        Err(e) => return drained(body, unspoken(Answering::Creation, &e)).await,
    };
    let result = match request::create(&headers) {
        Ok(req) => {
            let mut upload_body = if request::has_body(&headers) {
                body.take()
            } else {
                None
            };
            let created = u.create(&user, &req, &mut upload_body).await;
            body = body.or(upload_body);
            created.map(|c| response::created(dialect, &c, max))
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(res) => res,
        Err(e) => {
            let res = response::refusal(dialect, Answering::Creation, &e, max, None);
            drained(body, res).await
        }
    }
}

/// HEAD (and GET), PATCH, DELETE and OPTIONS of one upload resource (any other method: 405).
async fn upload(
    State(u): State<Arc<Uploads>>,
    axum::Extension(user): axum::Extension<User>,
    Path(id): Path<String>,
    method: Method,
    RequestSocket(socket): RequestSocket,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut body = Some(Incoming { body, socket });
    let max = u.policy().max_size;
    let dialect = match request::dialect(&headers) {
        Ok(d) => d,
        Err(e) => return drained(body, unspoken(Answering::Resource, &e)).await,
    };
    let strict = dialect == Dialect::Interop6;
    let result = match method {
        Method::HEAD | Method::GET => match strict.then(|| request::check_bare(&headers, true)) {
            Some(Err(e)) => Err(e),
            _ => u
                .status(&user, &id)
                .await
                .map(|s| response::status(dialect, &s, max)),
        },
        Method::PATCH => match request::append(&headers) {
            Ok(req) => append(&u, &user, &id, &req, &mut body).await,
            Err(e) => Err(e),
        }
        .map(|a| response::appended(dialect, &a, max)),
        Method::DELETE => match strict.then(|| request::check_bare(&headers, false)) {
            Some(Err(e)) => Err(e),
            _ => u
                .terminate(&user, &id)
                .await
                .map(|()| response::cancelled(dialect)),
        },
        Method::OPTIONS => return response::options(dialect, max),
        _ => Err(Refusal::Method("HEAD, GET, PATCH, DELETE and OPTIONS")),
    };
    match result {
        Ok(res) => res,
        Err(e) => {
            // Interop 6 MUST give the offset of an upload that is still active.
            let offset = match (strict, e.offset()) {
                (true, None) => u.status(&user, &id).await.ok().and_then(|s| s.offset),
                _ => None,
            };
            let res = response::refusal(dialect, Answering::Resource, &e, max, offset);
            drained(body, res).await
        }
    }
}

/// An append. One that would take the upload past its length ends the upload: the draft
/// says the resource is then invalid and every further interaction refused.
async fn append(
    u: &Uploads,
    user: &User,
    id: &str,
    req: &crate::uploads::AppendRequest,
    body: &mut Option<Incoming>,
) -> Result<crate::uploads::Appended, Refusal> {
    let result = u.append(user, id, req, body).await;
    if let Err(Refusal::BodyTooLong { .. } | Refusal::Overflow { .. }) =
        result.as_ref().map_err(inner)
        && let Err(e) = u.terminate(user, id).await
    {
        tracing::warn!(%id, "cannot end the upload that went past its length: {e}");
    }
    result
}

fn inner(r: &Refusal) -> &Refusal {
    match r {
        Refusal::BodyUnread(r) => inner(r),
        r => r,
    }
}

/// `res` after draining what is left of a refused request's body ([`body::drain`]); a body too
/// large to drain ends with `Connection: close`.
async fn drained(body: Option<Incoming>, mut res: Response) -> Response {
    if let Some(incoming) = body
        && !body::drain(&mut incoming.body.into_data_stream()).await
    {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}
