//! The tus 1.0 front end (`/uploads/`): core protocol plus creation, creation-with-upload,
//! creation-defer-length, expiration, checksum, termination and concatenation(-unfinished).
//! Handlers are thin: [`request`] parses headers into the upload core's typed requests, the
//! core ([`crate::uploads`]) does the work, and [`response`] renders its answers.

pub mod headers;
pub mod request;
pub mod response;

use crate::auth::User;
use crate::data::Incoming;
use crate::data::body;
use crate::socket::RequestSocket;
use crate::uploads::{Refusal, Uploads};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use headers::TUS_VERSION;
use std::sync::Arc;

pub use crate::uploads::PREFIX;

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");

/// The routes under `/uploads`. The caller adds authentication (a [`User`] extension).
pub fn router(uploads: Arc<Uploads>) -> Router {
    Router::new()
        .route("/uploads", post(create).options(options))
        .route("/uploads/", post(create).options(options))
        .route("/uploads/{id}", any(upload))
        .route_layer(middleware::from_fn(tus_version))
        .with_state(uploads)
}

/// Every tus request except OPTIONS must speak version 1.0.0 (412 otherwise); every response
/// carries `Tus-Resumable`.
async fn tus_version(req: Request, next: Next) -> Response {
    let ok = req.method() == Method::OPTIONS
        || req
            .headers()
            .get(&TUS_RESUMABLE)
            .is_some_and(|v| v.as_bytes() == TUS_VERSION.as_bytes());
    let mut res = if ok {
        next.run(req).await
    } else {
        response::refusal(&Refusal::Version(TUS_VERSION))
    };
    res.headers_mut()
        .insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    res
}

async fn options(State(u): State<Arc<Uploads>>) -> Response {
    response::options(u.policy().max_size)
}

/// HEAD, PATCH and DELETE of one upload (any other method: 405).
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
    let result = match method {
        Method::HEAD => u.status(&user, &id).await.map(|s| response::status(&s)),
        Method::PATCH => match request::append(&headers) {
            Ok(req) => u
                .append(&user, &id, &req, &mut body)
                .await
                .map(|a| response::appended(&a)),
            Err(e) => Err(e),
        },
        Method::DELETE => u
            .terminate(&user, &id)
            .await
            .map(|()| axum::http::StatusCode::NO_CONTENT.into_response()),
        Method::OPTIONS => return response::options(u.policy().max_size),
        _ => Err(Refusal::Method("HEAD, PATCH and DELETE")),
    };
    match result {
        Ok(res) => res,
        Err(e) => drain_then(body, e).await,
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
    let result = match request::create(&headers) {
        Ok(req) => {
            let mut upload_body = if request::has_body(&headers) {
                body.take()
            } else {
                None
            };
            let created = u.create(&user, &req, &mut upload_body).await;
            body = body.or(upload_body);
            created.map(|c| response::created(&c))
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(res) => res,
        Err(e) => drain_then(body, e).await,
    }
}

/// Answers with `refusal` after draining what is left of a refused request's body
/// ([`body::drain`]); a body too large to drain ends with `Connection: close`.
async fn drain_then(body: Option<Incoming>, refusal: Refusal) -> Response {
    let mut res = response::refusal(&refusal);
    if let Some(incoming) = body
        && !body::drain(&mut incoming.body.into_data_stream()).await
    {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}
