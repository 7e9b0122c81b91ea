//! The S3 client: configuration from the standard `AWS_*` environment variables and AWS config
//! files (path-style addressing with `AWS_ENDPOINT_URL`, checksums only where an operation
//! requires them, as S3-compatible servers expect), the start-up check of the bucket (missing,
//! refused credentials, unreachable endpoint told apart), and the mapping of SDK errors to
//! I/O errors.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use std::io;

/// Where the data lives: `s3://BUCKET[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The bucket.
    pub bucket: String,
    /// The key prefix, empty or ending in `/`.
    pub prefix: String,
}

impl Location {
    /// Parses `s3://BUCKET[/PREFIX]`.
    pub fn parse(url: &str) -> Option<Location> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return None;
        }
        let prefix = prefix.trim_matches('/');
        Some(Location {
            bucket: bucket.to_owned(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// Why the bucket cannot be used, found at start-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The bucket does not exist.
    #[error(
        "bucket {bucket} does not exist at {endpoint}: create it (e.g. `aws s3 mb s3://{bucket}`) or fix the name"
    )]
    NoBucket {
        /// The bucket.
        bucket: String,
        /// The endpoint asked.
        endpoint: String,
    },
    /// The credentials were refused.
    #[error(
        "{endpoint} refused the credentials for bucket {bucket} ({code}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE and ~/.aws/credentials)"
    )]
    Credentials {
        /// The bucket.
        bucket: String,
        /// The endpoint asked.
        endpoint: String,
        /// The server's error code.
        code: String,
    },
    /// No credentials were found.
    #[error(
        "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials"
    )]
    NoCredentials(#[source] io::Error),
    /// The endpoint cannot be reached.
    #[error(
        "cannot reach the S3 endpoint {endpoint}: {source}; check AWS_ENDPOINT_URL (and AWS_REGION) and that the server is up"
    )]
    Unreachable {
        /// The endpoint asked.
        endpoint: String,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// Any other answer.
    #[error("checking bucket {bucket} at {endpoint} failed: {source}")]
    Other {
        /// The bucket.
        bucket: String,
        /// The endpoint asked.
        endpoint: String,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

/// A client configured from the environment, plus the endpoint it talks to (for messages).
pub async fn from_env() -> (Client, String) {
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let endpoint = shared.endpoint_url().map(str::to_owned);
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .force_path_style(endpoint.is_some())
        .build();
    let shown = endpoint.unwrap_or_else(|| {
        format!(
            "AWS S3 ({})",
            shared.region().map_or("no region", |r| r.as_ref())
        )
    });
    (Client::from_conf(config), shown)
}

/// Checks that `bucket` exists and the credentials may use it.
pub async fn check_bucket(client: &Client, bucket: &str, endpoint: &str) -> Result<(), StartError> {
    let Err(e) = client.head_bucket().bucket(bucket).send().await else {
        return Ok(());
    };
    let (bucket, endpoint) = (bucket.to_owned(), endpoint.to_owned());
    let status = status_of(&e);
    if let SdkError::DispatchFailure(d) = &e {
        if d.is_io() || d.is_timeout() {
            return Err(StartError::Unreachable {
                endpoint,
                source: to_io(e),
            });
        }
        if d.is_user() || d.is_other() {
            // Credentials that cannot be loaded or signed with end here.
            return Err(StartError::NoCredentials(to_io(e)));
        }
    }
    if matches!(e, SdkError::TimeoutError(_)) {
        return Err(StartError::Unreachable {
            endpoint,
            source: to_io(e),
        });
    }
    match status {
        Some(404) => Err(StartError::NoBucket { bucket, endpoint }),
        Some(401 | 403) => {
            // HEAD answers carry no error code: ask once more with a GET to learn it.
            let code = match client.get_bucket_location().bucket(&bucket).send().await {
                Err(e2) => e2.code().unwrap_or("AccessDenied").to_owned(),
                Ok(_) => "AccessDenied".to_owned(),
            };
            Err(StartError::Credentials {
                bucket,
                endpoint,
                code,
            })
        }
        _ => Err(StartError::Other {
            bucket,
            endpoint,
            source: to_io(e),
        }),
    }
}

/// The HTTP status of a failed call, when a response came.
pub fn status_of<E, R>(e: &SdkError<E, R>) -> Option<u16>
where
    R: HasStatus,
{
    e.raw_response().map(HasStatus::status)
}

/// Responses that have a status code.
pub trait HasStatus {
    /// The status.
    fn status(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Whether a failed call means "not there" (404, `NoSuchKey`, `NoSuchUpload`).
pub fn is_not_found<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> bool
where
    E: ProvideErrorMetadata,
{
    status_of(e) == Some(404)
        || matches!(
            e.code(),
            Some("NoSuchKey" | "NoSuchUpload" | "NotFound" | "NoSuchBucket")
        )
}

/// Whether a failed call means "a conditional write found the key taken" (412, 409).
pub fn is_precondition_failed<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> bool
where
    E: ProvideErrorMetadata,
{
    matches!(status_of(e), Some(412 | 409))
        || matches!(
            e.code(),
            Some("PreconditionFailed" | "ConditionalRequestConflict")
        )
}

/// An SDK error as an I/O error that says what the server said.
pub fn to_io<E>(e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> io::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let kind = match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            io::ErrorKind::ConnectionAborted
        }
        _ if status_of(&e) == Some(404) => io::ErrorKind::NotFound,
        _ if matches!(e.code(), Some("EntityTooLarge" | "QuotaExceeded")) => {
            io::ErrorKind::StorageFull
        }
        _ => io::ErrorKind::Other,
    };
    let text = match (e.code(), e.message()) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code.to_owned(),
        _ => match status_of(&e) {
            Some(status) => format!("the server answered HTTP {status}"),
            None => aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
        },
    };
    io::Error::new(kind, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let l = Location::parse("s3://b").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("b", ""));
        let l = Location::parse("s3://b/x/y/").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("b", "x/y/"));
        assert_eq!(l.to_string(), "s3://b/x/y/");
        assert!(Location::parse("s3:///x").is_none());
        assert!(Location::parse("http://b").is_none());
    }
}
