//! HTTP pieces shared by ferry's server (`ferry serve`) and its peer sender (`ferry send`):
//!
//! - [`range`]: `Range` parsing and resolution (with coalescing), `Content-Range` values;
//! - [`conditional`]: validators and `If-Range` / `If-Match` / `If-None-Match`;
//! - [`multipart`]: the exact framing of `multipart/byteranges` bodies;
//! - [`responder`]: one range responder over any [`Representation`] (conditional requests,
//!   single and multiple ranges, 416, `HEAD`, a counted and optionally paced streamed body);
//! - [`local`]: a local file as a [`Representation`], read in pooled chunks from the page cache
//!   or the blocking pool;
//! - [`token`]: the token a request carries (bearer header, `?token=`, cookie).

#![warn(missing_docs)]

pub mod conditional;
pub mod local;
pub mod multipart;
pub mod range;
pub mod responder;
pub mod token;

pub use local::LocalFile;
pub use range::{ByteRange, Resolution};
pub use responder::{ByteCounter, Options, Pacer, RangeStream, Representation, respond};
pub use token::request_token;
