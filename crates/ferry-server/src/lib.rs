//! ferry's server (`ferry serve`): a directory served with full HTTP Range support, and a tus 1.0
//! resumable upload endpoint with users, ownership, locking and expiry.
//!
//! Layers, top to bottom: [`app`] (the router, authentication, CORS, shutdown); the front ends
//! [`files`] (GET/HEAD with ranges) and [`tus`] (uploads: typed requests in, responses out); the
//! upload core [`uploads`] (the life of an upload, one [`uploads::Refusal`] type mapped to HTTP
//! status in one place); and two storage traits: [`store::StateStore`] (records, reservations,
//! owners, leased locks; redb or in memory) and [`data::DataStore`] (staged bytes and landing;
//! a local directory).
//!
//! URL layout: `GET/HEAD /files/<path>` serves the directory, `/uploads/` is the tus endpoint,
//! `/` is the browser upload page with the root listing ([`page`]) and `/metrics` the Prometheus
//! counters.

pub mod app;
pub mod auth;
pub mod connections;
pub mod data;
pub mod files;
pub mod ietf;
pub mod listing;
pub mod media;
pub mod metrics;
pub mod page;
pub mod protocol;
pub mod safepath;
pub mod socket;
pub mod store;
pub mod tus;
pub mod uploads;

pub use app::{Server, ServerConfig, ServerError};
pub use auth::Auth;
