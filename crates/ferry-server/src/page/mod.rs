//! The browser upload page at `/`: the root listing plus an upload area (files and folders,
//! progress, pause, resume, cancel, resume after a reload), all embedded in the binary. This
//! module owns the page's routes: the page itself ([`index`]; JSON clients still get the
//! listing), its static assets, the pre-upload check ([`target`]), the live event stream
//! ([`events`]) and the sign-in form shown to a browser without a token. The page uploads
//! through the ordinary tus endpoint (`/uploads/`) with a small hand-written tus client
//! (`app.js`): the page needs only core tus, creation and termination, and owns the
//! pre-upload check, so a 100 KB third-party bundle would bring more than it gives.

pub mod events;
pub mod target;

use crate::data::DataStore;
use crate::listing;
use crate::metrics::Metrics;
use crate::uploads::Uploads;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;

/// The page's HTML; `{{listing}}` becomes the root listing's table.
const INDEX_HTML: &str = include_str!("index.html");
/// The page's script: the tus client, the pre-upload check, the queue and the live view.
const APP_JS: &str = include_str!("app.js");
/// The page's style sheet.
const APP_CSS: &str = include_str!("app.css");
/// The sign-in form a browser gets instead of a bare 401 at `/`.
const SIGN_IN_HTML: &str = include_str!("signin.html");

/// The content security policy of the page: its own script, style and connections only.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// What the page's handlers read.
pub struct PageState {
    /// The served files (for the listing).
    pub data: Arc<dyn DataStore>,
    /// The counters (listing bytes are counted as served).
    pub metrics: Arc<Metrics>,
    /// The upload core (pre-upload checks and events).
    pub uploads: Arc<Uploads>,
}

/// The page's routes: `/` (the page, or the JSON listing), `/page/app.js`, `/page/app.css`,
/// `/page/target?path=…` and `/page/events`. The caller adds authentication (a
/// [`User`](crate::auth::User) extension).
pub fn router(state: Arc<PageState>) -> Router {
    Router::new()
        .route("/", get(index).head(index))
        .route("/page/app.js", get(app_js))
        .route("/page/app.css", get(app_css))
        .route("/page/target", get(target::target))
        .route("/page/events", get(events::events))
        .with_state(state)
}

/// Whether the client asked for JSON (then `/` answers with the listing, as before the page).
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("application/json"))
}

/// `/`: the upload page with the root listing in it; JSON clients get the listing alone.
pub async fn index(
    State(s): State<Arc<PageState>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if wants_json(&headers) {
        return crate::files::respond(&*s.data, "", &method, &headers, &s.metrics, "/files/").await;
    }
    let entries = match s.data.list(&[]).await {
        Ok(entries) => entries,
        // The file side knows how to answer an unreadable root.
        Err(_) => {
            return crate::files::respond(&*s.data, "", &method, &headers, &s.metrics, "/files/")
                .await;
        }
    };
    let page = INDEX_HTML.replace("{{listing}}", &listing_table(&entries));
    let mut res = html_response(StatusCode::OK, page, method == Method::HEAD);
    res.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    res
}

/// The `<table>` of the root listing, as the file side renders it.
fn listing_table(entries: &[listing::Entry]) -> String {
    let full = listing::html(entries, &[] as &[&str], "/files/");
    match (full.find("<table>"), full.rfind("</table>")) {
        (Some(start), Some(end)) => full[start..end + "</table>".len()].replace(
            "<table>",
            "<table id=\"listing\" aria-label=\"Files on the server\">",
        ),
        _ => String::new(),
    }
}

/// An HTML answer with the page's security headers; `head` leaves the body out.
fn html_response(status: StatusCode, page: String, head: bool) -> Response {
    let len = page.len();
    let mut res = if head {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(page))
    };
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

/// A static asset of the page.
fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

/// Middleware outside authentication: a browser asking for `/` without a valid token gets a
/// small sign-in form (still 401, with the same `WWW-Authenticate`) instead of a bare refusal.
/// The form sends the token as `?token=`, which signs the browser in by cookie.
pub async fn sign_in_form(req: Request, next: Next) -> Response {
    let wants_form = req.method() == Method::GET
        && req.uri().path() == "/"
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
    let tried = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("token=")));
    let res = next.run(req).await;
    if !wants_form || res.status() != StatusCode::UNAUTHORIZED {
        return res;
    }
    let note = if tried {
        "<p class=\"error\" role=\"alert\">That token was not accepted.</p>"
    } else {
        ""
    };
    let mut form = html_response(
        StatusCode::UNAUTHORIZED,
        SIGN_IN_HTML.replace("{{note}}", note),
        false,
    );
    if let Some(v) = res.headers().get(header::WWW_AUTHENTICATE) {
        form.headers_mut()
            .insert(header::WWW_AUTHENTICATE, v.clone());
    }
    form
}
