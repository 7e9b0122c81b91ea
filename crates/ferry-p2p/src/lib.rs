//! ferry's peer-to-peer building blocks, used by `ferry send` and `ferry recv`:
//!
//! - [`manifest`]: what a sender shares (files and folders, sizes, a BLAKE3 hash per piece), how it
//!   is built from local paths with every core, and how a received one is validated before any of
//!   its paths touches the disk;
//! - [`ticket`]: the short copy-pasteable string that tells a receiver where to connect, which
//!   certificate to expect, which token to present and which manifest to accept;
//! - [`tls`]: the sender's throwaway self-signed identity, and a client configuration that trusts
//!   exactly that one certificate (pinned by fingerprint) and nothing else;
//! - [`send`]: a share served over TLS (manifest and files, with ranges);
//! - [`recv`]: fetching a share from one or more senders with the engine, verifying every piece.

#![warn(missing_docs)]

pub mod manifest;
pub mod recv;
pub mod send;
pub mod ticket;
pub mod tls;

/// A `reqwest` client builder whose TLS trusts exactly the certificate with this SHA-256
/// `fingerprint` (see [`tls::pinned_client_config`]), and that connects directly to peers,
/// ignoring any system or environment proxy (peers are usually on a local network that a proxy
/// cannot reach; the pin keeps the connection safe either way).
///
/// This is `reqwest::ClientBuilder::tls_backend_preconfigured(rustls::ClientConfig)` (the 0.13
/// name of 0.12's `use_preconfigured_tls`, which remains as a deprecated alias) given the pinned
/// config by value. Set timeouts and the like on the returned builder, but no TLS option: any
/// `tls_*` call would replace the pinned configuration. The HTTP version is chosen by the
/// config's ALPN (`h2`, else `http/1.1`), not by `http1_only()`/`http2_prior_knowledge()`; to
/// force HTTP/1.1, build from a config whose `alpn_protocols` is only `http/1.1`.
pub fn reqwest_client_builder(fingerprint: [u8; 32]) -> reqwest::ClientBuilder {
    let config = std::sync::Arc::unwrap_or_clone(tls::pinned_client_config(fingerprint));
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .no_proxy()
}
