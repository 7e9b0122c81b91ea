//! Test certificates made with the `openssl` command: a private CA and a server certificate
//! for `localhost` and `127.0.0.1` signed by it (the shape of a real deployment's chain).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The PEM files [`private_ca`] writes.
pub struct PrivateCa {
    /// The CA's certificate (what a client trusts: `--cacert`, `SSL_CERT_FILE`).
    pub ca: PathBuf,
    /// The server's certificate, signed by the CA.
    pub cert: PathBuf,
    /// The server certificate's private key.
    pub key: PathBuf,
}

/// Makes a private CA and a server certificate for `localhost` and `127.0.0.1` in `dir`.
/// `None` (after a SKIPPED line) when the `openssl` command is missing; under `CI=true` that
/// fails the test instead (scripts/test.sh installs openssl).
pub fn private_ca(dir: &Path) -> Option<PrivateCa> {
    let openssl = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
    };
    if openssl(&["version"]).is_err() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "no openssl");
        eprintln!("SKIPPED: no openssl to make a test CA");
        return None;
    }
    std::fs::write(
        dir.join("leaf.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write leaf.cnf");
    let ca = [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=ferry test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ];
    let request = [
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=localhost",
    ];
    let sign = [
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.cnf",
    ];
    for args in [&ca[..], &request[..], &sign[..]] {
        let o = openssl(args).expect("run openssl");
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Some(PrivateCa {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    })
}
