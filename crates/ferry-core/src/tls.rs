//! TLS trust for downloads and uploads: trusting the certificates of a PEM file (`--cacert`),
//! skipping verification (`--insecure`), and telling a certificate failure (permanent: retrying
//! cannot help) from a network one, in a plain sentence.

use crate::error::Error;
use crate::source::CustomTls;
use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use std::path::Path;
use std::sync::Arc;

/// The crypto provider of ferry's TLS configurations: aws-lc-rs, the one reqwest uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client configuration with `verifier`, offering HTTP/2 and HTTP/1.1 (ALPN) as reqwest does.
pub fn client_config(
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Trusts the certificates in the PEM file `path` (and only them, as curl's `--cacert`): a
/// server certificate must be signed by one of them, or be one of them itself (a self-signed
/// certificate such as `openssl req -x509` makes). The host name is checked either way.
pub fn trust_ca_file(path: &Path) -> Result<CustomTls, Error> {
    let pem = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            Error::Usage(format!(
                "--cacert {}: not a PEM certificate file ({e})",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::Usage(format!(
            "--cacert {}: no certificate in the file (it must be PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    let mut roots = rustls::RootCertStore::empty();
    // A certificate webpki cannot use as a root may still be a server's own (pinned below).
    let (_added, _ignored) = roots.add_parsable_certificates(certs.iter().cloned());
    let provider = provider();
    let inner = if roots.is_empty() {
        None
    } else {
        Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| {
                    Error::Usage(format!("--cacert {}: unusable ({e})", path.display()))
                })?,
        )
    };
    let verifier = Arc::new(CheckedVerifier::new(
        provider.clone(),
        ca_file_check(inner, certs),
    ));
    Ok(CustomTls {
        key: format!("cacert:{}", path.display()),
        config: client_config(provider, verifier),
        direct: false,
    })
}

/// Accepts any server certificate (`--insecure`): the connection is encrypted but the server
/// is not authenticated. Handshake signatures are still checked.
pub fn insecure() -> CustomTls {
    let provider = provider();
    let verifier = Arc::new(CheckedVerifier::new(
        provider.clone(),
        Box::new(|_, _, _, _, _| Ok(ServerCertVerified::assertion())),
    ));
    CustomTls {
        key: "insecure".into(),
        config: client_config(provider, verifier),
        direct: false,
    }
}

/// What a [`CheckedVerifier`] asks of the server's certificate: accept or refuse it, given the
/// end-entity certificate, the intermediates, the server name, the OCSP response and the time.
pub type CertificateCheck = dyn Fn(
        &CertificateDer<'_>,
        &[CertificateDer<'_>],
        &ServerName<'_>,
        &[u8],
        UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error>
    + Send
    + Sync;

/// A server certificate verifier made of a certificate check; handshake signatures are always
/// checked with the crypto provider's algorithms (only the certificate's key holder passes).
pub struct CheckedVerifier {
    check: Box<CertificateCheck>,
    provider: Arc<CryptoProvider>,
}

impl CheckedVerifier {
    /// A verifier that accepts the certificates `check` accepts.
    pub fn new(provider: Arc<CryptoProvider>, check: Box<CertificateCheck>) -> Self {
        CheckedVerifier { check, provider }
    }
}

impl std::fmt::Debug for CheckedVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckedVerifier")
    }
}

impl ServerCertVerifier for CheckedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        (self.check)(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The check of a `--cacert` file: a chain up to one of its certificates (`chains`, when any
/// can be a root), or the server presenting one of `own` itself, for the names it carries.
fn ca_file_check(
    chains: Option<Arc<WebPkiServerVerifier>>,
    own: Vec<CertificateDer<'static>>,
) -> Box<CertificateCheck> {
    Box::new(
        move |end_entity, intermediates, server_name, ocsp_response, now| {
            let chained = match &chains {
                Some(v) => {
                    v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                }
                None => Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer,
                )),
            };
            match chained {
                Ok(ok) => Ok(ok),
                Err(e) if own.iter().any(|c| c.as_ref() == end_entity.as_ref()) => {
                    let parsed = ParsedCertificate::try_from(end_entity).map_err(|_| e)?;
                    rustls::client::verify_server_name(&parsed, server_name)?;
                    Ok(ServerCertVerified::assertion())
                }
                Err(e) => Err(e),
            }
        },
    )
}

/// Why the server's certificate was refused, in plain words, when `e` failed for that reason
/// (retrying cannot help then); `None` for any other failure.
pub fn certificate_problem(e: &reqwest::Error) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(rustls::Error::InvalidCertificate(ce)) = rustls_error(c) {
            return Some(plain(ce));
        }
        cause = c.source();
    }
    None
}

/// The rustls error `e` is, or wraps in (possibly nested) I/O errors: an I/O error's
/// `source()` skips the error it wraps, so the chain alone does not reach it.
fn rustls_error<'a>(mut e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    loop {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
        e = inner;
    }
}

/// A certificate error as the end of "the server's certificate is not trusted: …".
fn plain(e: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match e {
        C::UnknownIssuer => "it is signed by an unknown authority".into(),
        C::Expired | C::ExpiredContext { .. } => "it has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "it is not valid for this host name".into()
        }
        C::Revoked => "it has been revoked".into(),
        C::BadSignature => "its signature is invalid".into(),
        C::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => {
            "it is a CA certificate used as the server's own (as `openssl req -x509` makes)".into()
        }
        C::Other(o) => o.to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = trust_ca_file(&empty).unwrap_err();
        assert!(matches!(e, Error::Usage(_)), "{e}");
        assert!(e.to_string().contains("no certificate"), "{e}");
        let e = trust_ca_file(&dir.path().join("missing.pem")).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
    }

    #[test]
    fn certificate_errors_read_plainly() {
        let ca = rustls::CertificateError::Other(rustls::OtherError(Arc::new(
            std::io::Error::other("CaUsedAsEndEntity"),
        )));
        assert!(plain(&ca).contains("openssl req -x509"));
        assert_eq!(
            plain(&rustls::CertificateError::UnknownIssuer),
            "it is signed by an unknown authority"
        );
    }
}
