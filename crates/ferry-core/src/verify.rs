//! Whole-file verification: `--checksum ALGO=HEX`, and the digests servers announce in
//! `Repr-Digest` (RFC 9530) or `Digest` (RFC 3230) headers.

use crate::error::Error;
use base64::Engine;
use sha2::Digest as _;
use std::fmt;
use std::io::Read;
use std::path::Path;

/// A digest algorithm ferry can check a file with. Displayed in the RFC 9530 spelling
/// (`sha-256`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// SHA-256 (32-byte digest).
    Sha256,
    /// SHA-512 (64-byte digest).
    Sha512,
    /// SHA-1 (20-byte digest; weak against deliberate collisions, fine against corruption).
    Sha1,
    /// MD5 (16-byte digest; weak against deliberate collisions, fine against corruption).
    Md5,
    /// BLAKE3 (32-byte digest).
    Blake3,
}

impl Algorithm {
    /// Accepts the usual spellings: `sha-256`, `sha256`, `SHA-256`, `md5`, `blake3`…
    pub fn parse(name: &str) -> Option<Algorithm> {
        match name.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            "sha1" | "sha" => Some(Algorithm::Sha1),
            "md5" => Some(Algorithm::Md5),
            "blake3" => Some(Algorithm::Blake3),
            _ => None,
        }
    }

    /// The name in tus's `Upload-Checksum` and `Tus-Checksum-Algorithm` (no dash: `sha256`).
    pub fn tus_name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
            Algorithm::Sha1 => "sha1",
            Algorithm::Md5 => "md5",
            Algorithm::Blake3 => "blake3",
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Algorithm::Sha256 | Algorithm::Blake3 => 32,
            Algorithm::Sha512 => 64,
            Algorithm::Sha1 => 20,
            Algorithm::Md5 => 16,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Sha256 => "sha-256",
            Algorithm::Sha512 => "sha-512",
            Algorithm::Sha1 => "sha-1",
            Algorithm::Md5 => "md5",
            Algorithm::Blake3 => "blake3",
        })
    }
}

/// An expected digest and where it came from (shown in messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The algorithm the digest was made with.
    pub algo: Algorithm,
    /// The digest's raw bytes ([`Algorithm::digest_len`] of them).
    pub digest: Vec<u8>,
    /// Where it came from, for messages: `--checksum`, `Repr-Digest header` or `Digest header`.
    pub origin: String,
}

impl Expected {
    /// Parses `ALGO=HEX` as given to `--checksum`.
    pub fn parse_spec(spec: &str) -> Result<Expected, Error> {
        let usage = |why: &str| {
            Error::Usage(format!(
                "invalid checksum {spec:?}: {why}; expected ALGO=HEX with ALGO one of sha-256, sha-512, sha-1, md5, blake3"
            ))
        };
        let (name, hex_digest) = spec.split_once('=').ok_or_else(|| usage("no '='"))?;
        let algo = Algorithm::parse(name.trim()).ok_or_else(|| usage("unknown algorithm"))?;
        let digest =
            hex::decode(hex_digest.trim()).map_err(|_| usage("the digest is not hexadecimal"))?;
        if digest.len() != algo.digest_len() {
            return Err(usage(&format!(
                "a {algo} digest has {} hex digits",
                algo.digest_len() * 2
            )));
        }
        Ok(Expected {
            algo,
            digest,
            origin: "--checksum".into(),
        })
    }
}

/// Digests announced by the server. `Repr-Digest` wins over `Digest`; unknown algorithms are ignored.
pub fn from_headers(headers: &reqwest::header::HeaderMap) -> Vec<Expected> {
    let mut out = Vec::new();
    for value in headers.get_all("repr-digest") {
        if let Ok(v) = value.to_str() {
            out.extend(parse_repr_digest(v));
        }
    }
    if out.is_empty() {
        for value in headers.get_all("digest") {
            if let Ok(v) = value.to_str() {
                out.extend(parse_legacy_digest(v));
            }
        }
    }
    out
}

/// RFC 9530: a structured-field dictionary, `sha-256=:BASE64:, sha-512=:BASE64:`.
pub fn parse_repr_digest(value: &str) -> Vec<Expected> {
    value
        .split(',')
        .filter_map(|item| {
            let (key, val) = item.trim().split_once('=')?;
            let algo = Algorithm::parse(key.trim())?;
            let b64 = val.trim().strip_prefix(':')?.strip_suffix(':')?;
            let digest = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            (digest.len() == algo.digest_len()).then(|| Expected {
                algo,
                digest,
                origin: "Repr-Digest header".into(),
            })
        })
        .collect()
}

/// RFC 3230: `SHA-256=BASE64, MD5=BASE64` (algorithm names are case-insensitive).
pub fn parse_legacy_digest(value: &str) -> Vec<Expected> {
    value
        .split(',')
        .filter_map(|item| {
            let (key, val) = item.trim().split_once('=')?;
            let algo = Algorithm::parse(key.trim())?;
            let digest = base64::engine::general_purpose::STANDARD
                .decode(val.trim())
                .ok()?;
            (digest.len() == algo.digest_len()).then(|| Expected {
                algo,
                digest,
                origin: "Digest header".into(),
            })
        })
        .collect()
}

/// An incremental digest in any of the [`Algorithm`]s (whole-file checks, tus chunk checksums).
pub enum Hasher {
    /// A SHA-256 digest in progress.
    Sha256(sha2::Sha256),
    /// A SHA-512 digest in progress.
    Sha512(sha2::Sha512),
    /// A SHA-1 digest in progress.
    Sha1(sha1::Sha1),
    /// An MD5 digest in progress.
    Md5(md5::Md5),
    /// A BLAKE3 digest in progress (boxed: its state is far larger than the others').
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    /// A fresh digest in `algo`, over no bytes yet.
    pub fn new(algo: Algorithm) -> Hasher {
        match algo {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Md5 => Hasher::Md5(md5::Md5::new()),
            Algorithm::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    /// Feeds `data` into the digest (the bytes that follow those fed so far).
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
            Hasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    /// The digest of every byte fed, as raw bytes ([`Algorithm::digest_len`] of them).
    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Blake3(h) => h.finalize().as_bytes().to_vec(),
        }
    }
}

/// Computes the given digests of a file in one pass (blocking; run it off the async runtime).
pub fn digest_file(path: &Path, algos: &[Algorithm]) -> Result<Vec<Vec<u8>>, Error> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hashers: Vec<Hasher> = algos.iter().map(|&a| Hasher::new(a)).collect();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        for h in &mut hashers {
            h.update(&buf[..n]);
        }
    }
    Ok(hashers.into_iter().map(Hasher::finish).collect())
}

/// Checks `path` against every expected digest (one pass); the first mismatch is an error.
pub fn verify_file(path: &Path, expected: &[Expected]) -> Result<(), Error> {
    if expected.is_empty() {
        return Ok(());
    }
    let algos: Vec<Algorithm> = expected.iter().map(|e| e.algo).collect();
    let actual = digest_file(path, &algos)?;
    for (exp, act) in expected.iter().zip(actual) {
        if exp.digest != act {
            return Err(Error::ChecksumMismatch {
                algo: format!("{} ({})", exp.algo, exp.origin),
                expected: hex::encode(&exp.digest),
                actual: hex::encode(act),
                part: path.to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs_and_headers() {
        let e = Expected::parse_spec(
            "sha-256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        )
        .unwrap();
        assert_eq!(e.algo, Algorithm::Sha256);
        assert!(Expected::parse_spec("sha256=abc").is_err());
        assert!(Expected::parse_spec("crc9=00").is_err());
        assert!(Expected::parse_spec("md5").is_err());
        let r = parse_repr_digest(
            "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:, unknown=:AAAA:",
        );
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].digest, e.digest);
        let d = parse_legacy_digest("SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
        assert_eq!(d[0].digest, e.digest);
    }

    #[test]
    fn digests_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let all = [
            Algorithm::Sha256,
            Algorithm::Sha512,
            Algorithm::Sha1,
            Algorithm::Md5,
            Algorithm::Blake3,
        ];
        let d = digest_file(&p, &all).unwrap();
        assert_eq!(
            hex::encode(&d[0]),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex::encode(&d[2]),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(hex::encode(&d[3]), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(hex::encode(&d[4]), blake3::hash(b"abc").to_hex().as_str());
        let bad = Expected {
            algo: Algorithm::Md5,
            digest: vec![0; 16],
            origin: "test".into(),
        };
        assert!(matches!(
            verify_file(&p, &[bad]),
            Err(Error::ChecksumMismatch { .. })
        ));
    }
}
