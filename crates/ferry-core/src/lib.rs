//! ferry's transfer engine: segmented, resumable, verified HTTP(S) downloads, and resumable
//! parallel uploads to tus servers ([`upload`]).
//!
//! A download is a set of byte ranges to fill from one or more sources (mirrors) over many
//! connections, written in place into `<name>.part`, recorded in a crash-safe journal
//! `<name>.ferry`, verified, and renamed to `<name>`. See [`Download`] for the API.

pub mod download;
pub mod error;
pub mod events;
pub mod journal;
pub mod limits;
pub mod naming;
pub mod pieces;
pub mod plan;
pub mod ranges;
pub mod sink;
pub mod source;
pub mod tls;
pub mod upload;
pub mod verify;

pub use download::{Download, DownloadBuilder, Outcome, Output};
pub use error::Error;
pub use events::{Event, EventSink};
pub use journal::{Journal, Validators};
pub use limits::{RateLimiter, RetryPolicy};
pub use pieces::PieceHashes;
pub use ranges::RangeSet;
pub use verify::{Algorithm, Expected};
