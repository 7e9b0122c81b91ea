//! The pinned TLS configuration, end to end through reqwest: a tiny HTTPS server (tokio-rustls +
//! hyper, HTTP/1.1 and HTTP/2) presenting a fresh self-signed certificate on 127.0.0.1, reached by
//! IP address so no hostname could ever match. Pinned to its fingerprint, reqwest gets 200; pinned
//! to anything else, or not pinned at all, it cannot connect.

use bytes::Bytes;
use ferry_p2p::tls;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;

/// Starts the server; returns its address and its certificate's fingerprint.
async fn https_server() -> (SocketAddr, [u8; 32]) {
    let id = tls::self_signed().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(&id).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses our certificate ends the handshake here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let body = format!("hello over {:?}", req.version());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, id.fingerprint)
}

/// The error and all its sources, as one string.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[tokio::test]
async fn pinned_certificate_is_accepted_over_http2_and_http1_by_ip_address() {
    let (addr, fingerprint) = https_server().await;
    let url = format!("https://{addr}/");

    let client = ferry_p2p::reqwest_client_builder(fingerprint)
        .build()
        .unwrap();
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "ALPN picked h2");
    assert_eq!(resp.text().await.unwrap(), "hello over HTTP/2.0");

    // The HTTP version is what ALPN picks: the config decides it, not reqwest's `http1_only`.
    // Offering only http/1.1 gets HTTP/1.1 from the same server.
    let mut config = std::sync::Arc::unwrap_or_clone(tls::pinned_client_config(fingerprint));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .no_proxy()
        .build()
        .unwrap();
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "hello over HTTP/1.1");
}

#[tokio::test]
async fn another_fingerprint_is_refused() {
    let (addr, fingerprint) = https_server().await;
    let url = format!("https://{addr}/");

    let other = tls::self_signed().unwrap().fingerprint;
    let mut off_by_one_bit = fingerprint;
    off_by_one_bit[31] ^= 1;
    for pin in [other, off_by_one_bit, [0; 32]] {
        let client = ferry_p2p::reqwest_client_builder(pin).build().unwrap();
        let err = client.get(&url).send().await.unwrap_err();
        let msg = chain(&err);
        assert!(
            msg.contains("not the one named in the ticket"),
            "the error says why: {msg}"
        );
        assert!(
            msg.contains(&hex_of(&fingerprint)),
            "and names what was seen: {msg}"
        );
    }

    // reqwest's own verification (the platform's CAs) does not trust a self-signed certificate.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(plain.get(&url).send().await.is_err());
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
