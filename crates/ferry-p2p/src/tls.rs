//! TLS between two ferry peers, with no certificate authority: the sender makes a fresh
//! self-signed identity ([`self_signed`]) and prints its SHA-256 fingerprint in the ticket; the
//! receiver accepts exactly that certificate ([`pinned_client_config`]) and nothing else.
//!
//! The pin replaces both the CA chain and the hostname check (peers are reached by IP address),
//! and there is no trust-on-first-use. The handshake signature is still verified with the crypto
//! provider's algorithms, so only the holder of the pinned certificate's private key can complete
//! a handshake.
//!
//! Both configurations use the aws-lc-rs provider explicitly (the one reqwest's `rustls` feature
//! enables in this workspace), so the binary links a single TLS crypto library and nothing depends
//! on a process-wide default provider.

use ferry_core::tls::{CertificateCheck, CheckedVerifier};
use rustls::client::danger::ServerCertVerified;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The name in the self-signed certificate. Nothing checks it: the fingerprint pin does the job.
pub const CERT_NAME: &str = "ferry.invalid";

/// ALPN protocols offered by both sides, preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A sender's TLS identity: certificate and private key (both DER; the key is PKCS#8), and the
/// SHA-256 fingerprint of the certificate's DER, which goes into the ticket.
#[derive(Clone)]
pub struct Identity {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
    /// SHA-256 of `cert_der`.
    pub fingerprint: [u8; 32],
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &hex::encode(self.fingerprint))
            .finish_non_exhaustive()
    }
}

/// Why a TLS identity or configuration could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Generating the self-signed certificate failed.
    #[error("could not create a TLS certificate for this share: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the certificate and key.
    #[error("could not set up TLS with this certificate and key (are they a matching pair?): {0}")]
    Config(#[from] rustls::Error),
}

/// The SHA-256 fingerprint of a certificate's DER bytes (what a ticket pins).
pub fn fingerprint(cert_der: &[u8]) -> [u8; 32] {
    Sha256::digest(cert_der).into()
}

/// The crypto provider of every ferry TLS configuration: aws-lc-rs, the one reqwest uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A fresh self-signed certificate (ECDSA P-256) and key, named [`CERT_NAME`].
pub fn self_signed() -> Result<Identity, TlsError> {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec![CERT_NAME.to_owned()])?;
    let cert_der = cert.der().to_vec();
    Ok(Identity {
        fingerprint: fingerprint(&cert_der),
        cert_der,
        key_der: signing_key.serialize_der(),
    })
}

/// A server configuration presenting `id`, with no client authentication (the ticket's token does
/// that, at the HTTP level) and ALPN `h2` then `http/1.1`.
pub fn server_config(id: &Identity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_der.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(id.cert_der.clone())], key)?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration that accepts only the certificate whose DER has this SHA-256
/// `fingerprint`, whatever name or address the server was reached by, and offers ALPN `h2` then
/// `http/1.1`. A server presenting any other certificate fails the handshake with an error saying
/// that it is not the certificate the ticket names.
pub fn pinned_client_config(fingerprint: [u8; 32]) -> Arc<rustls::ClientConfig> {
    pinned_client_config_any(&[fingerprint])
}

/// Like [`pinned_client_config`], accepting any of several certificates: the senders named by
/// several tickets for the same content (a receiver talks to all of them with one
/// configuration; each was named by the user).
pub fn pinned_client_config_any(fingerprints: &[[u8; 32]]) -> Arc<rustls::ClientConfig> {
    let provider = provider();
    let verifier = Arc::new(CheckedVerifier::new(
        provider.clone(),
        pin_check(fingerprints.to_vec()),
    ));
    // The same protocols as ALPN (h2, then http/1.1).
    ferry_core::tls::client_config(provider, verifier)
}

/// The server's certificate is not the one the ticket pins.
///
/// rustls shows this error with `{:?}` inside its own message, so `Debug` prints the same
/// sentence as `Display`.
#[derive(thiserror::Error)]
#[error(
    "the peer's TLS certificate is not the one named in the ticket (fingerprint {actual}, \
     expected {expected}): this is not the sender the ticket came from, or the ticket is from an \
     earlier run of `ferry send`"
)]
pub struct PinMismatch {
    /// The pinned fingerprint, hex.
    pub expected: String,
    /// The presented certificate's fingerprint, hex.
    pub actual: String,
}

impl std::fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Accepts exactly the end-entity certificates with these fingerprints (handshake signatures
/// are checked by [`CheckedVerifier`]).
fn pin_check(fingerprints: Vec<[u8; 32]>) -> Box<CertificateCheck> {
    Box::new(move |end_entity, _, _, _, _| {
        let actual = fingerprint(end_entity);
        if fingerprints.contains(&actual) {
            Ok(ServerCertVerified::assertion())
        } else {
            let mismatch = PinMismatch {
                expected: fingerprints
                    .iter()
                    .map(hex::encode)
                    .collect::<Vec<_>>()
                    .join(" or "),
                actual: hex::encode(actual),
            };
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(mismatch))),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_fresh_and_fingerprinted() {
        let a = self_signed().unwrap();
        let b = self_signed().unwrap();
        assert_ne!(a.fingerprint, b.fingerprint);
        assert_ne!(a.key_der, b.key_der);
        assert_eq!(a.fingerprint, fingerprint(&a.cert_der));
        assert!(!format!("{a:?}").contains("key_der"), "no key in Debug");
    }

    #[test]
    fn configs_build_with_alpn() {
        let id = self_signed().unwrap();
        let server = server_config(&id).unwrap();
        assert_eq!(
            server.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let client = pinned_client_config(id.fingerprint);
        assert_eq!(client.alpn_protocols, server.alpn_protocols);
    }

    #[test]
    fn mismatched_key_is_refused() {
        let a = self_signed().unwrap();
        let b = self_signed().unwrap();
        let wrong = Identity {
            key_der: b.key_der,
            ..a
        };
        let err = server_config(&wrong).unwrap_err();
        assert!(err.to_string().contains("matching pair"), "{err}");
    }

    /// A full handshake in memory: the pinned certificate passes, any other one fails with a
    /// message that says so, and the handshake signature is checked (a server holding the right
    /// certificate but another key cannot finish the handshake).
    fn handshake(server: Arc<rustls::ServerConfig>, pin: [u8; 32]) -> Result<(), rustls::Error> {
        let mut client = rustls::ClientConnection::new(
            pinned_client_config(pin),
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
        )?;
        let mut server = rustls::ServerConnection::new(server)?;
        for _ in 0..10 {
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd).unwrap();
                server.process_new_packets()?;
            }
            let mut buf = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
                client.process_new_packets()?;
            }
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn pin_is_enforced_in_a_handshake() {
        let id = self_signed().unwrap();
        handshake(server_config(&id).unwrap(), id.fingerprint).unwrap();

        let other = self_signed().unwrap();
        let err = handshake(server_config(&id).unwrap(), other.fingerprint).unwrap_err();
        assert!(
            err.to_string().contains("not the one named in the ticket"),
            "{err}"
        );
    }

    #[test]
    fn handshake_signature_is_verified() {
        // A server that presents the pinned certificate but signs with another key: rustls's
        // server refuses such a pair at setup, so build the mismatch behind its back with a
        // custom certificate resolver.
        #[derive(Debug)]
        struct Impostor(Arc<rustls::sign::CertifiedKey>);
        impl rustls::server::ResolvesServerCert for Impostor {
            fn resolve(
                &self,
                _: rustls::server::ClientHello<'_>,
            ) -> Option<Arc<rustls::sign::CertifiedKey>> {
                Some(self.0.clone())
            }
        }
        let real = self_signed().unwrap();
        let thief = self_signed().unwrap();
        let key = provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(thief.key_der.into()))
            .unwrap();
        let certified = rustls::sign::CertifiedKey::new(vec![real.cert_der.into()], key);
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Impostor(Arc::new(certified))));
        server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        let err = handshake(Arc::new(server), real.fingerprint).unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
            ),
            "{err:?}"
        );
    }
}
