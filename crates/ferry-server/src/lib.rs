//! ferry's server (`ferry serve`): a directory served with full HTTP Range support, and a tus 1.0
//! resumable upload endpoint with users, ownership, locking and expiry, its state kept in an
//! embedded store behind a trait.
//!
//! URL layout: `GET/HEAD /files/<path>` serves the directory, `/uploads/` is the tus endpoint,
//! `/` is an HTML listing and `/metrics` the Prometheus counters.

pub mod app;
pub mod auth;
pub mod files;
pub mod listing;
pub mod metrics;
pub mod safepath;
pub mod socket;
pub mod staging;
pub mod store;
pub mod tus;

pub use app::{Server, ServerConfig, ServerError};
pub use auth::Auth;
