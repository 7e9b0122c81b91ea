//! Who is asking: bearer tokens mapped to user names (`--token`, `--users FILE`) or no
//! authentication at all (`--public`), and the middleware that resolves every request's user.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferry_http::token::{TOKEN_COOKIE as COOKIE, TokenSource, token_of};
use std::collections::HashMap;
use std::sync::Arc;

/// The authenticated user of a request (empty name in public mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User(pub Arc<str>);

/// How requests are authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Everyone is the same anonymous user.
    Public,
    /// Tokens (stored as BLAKE3 hashes) mapped to user names.
    Tokens(HashMap<[u8; 32], Arc<str>>),
}

/// A malformed users file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsersError {
    /// A line that is not exactly two words, a name and a token.
    #[error("line {line}: expected 'NAME TOKEN', got {got:?}")]
    Syntax {
        /// The line's number, counting from 1.
        line: usize,
        /// The line as found (trimmed).
        got: String,
    },
    /// Two users with the same token (a token must name one user).
    #[error("line {line}: the token of user {user:?} is already used by user {other:?}")]
    DuplicateToken {
        /// The number (from 1) of the later of the two lines.
        line: usize,
        /// The user on that line.
        user: String,
        /// The user an earlier line gave the same token.
        other: String,
    },
    /// A token shorter than 8 characters (too easy to guess).
    #[error("line {line}: the token of user {user:?} is shorter than 8 characters")]
    ShortToken {
        /// The line's number, counting from 1.
        line: usize,
        /// The user the token is for.
        user: String,
    },
    /// A file with no user at all (only blank lines and comments).
    #[error("no users defined")]
    Empty,
}

impl Auth {
    /// One user, named `user`, with one token.
    pub fn single(token: &str) -> Auth {
        Auth::Tokens(HashMap::from([(hash(token), Arc::from("user"))]))
    }

    /// Parses a users file: one `NAME TOKEN` per line; blank lines and `#` comments skipped.
    pub fn parse_users(text: &str) -> Result<Auth, UsersError> {
        let mut map: HashMap<[u8; 32], Arc<str>> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let mut words = content.split_whitespace();
            let (Some(name), Some(token), None) = (words.next(), words.next(), words.next()) else {
                return Err(UsersError::Syntax {
                    line,
                    got: content.to_owned(),
                });
            };
            if token.len() < 8 {
                return Err(UsersError::ShortToken {
                    line,
                    user: name.to_owned(),
                });
            }
            if let Some(other) = map.insert(hash(token), Arc::from(name)) {
                return Err(UsersError::DuplicateToken {
                    line,
                    user: name.to_owned(),
                    other: other.to_string(),
                });
            }
        }
        if map.is_empty() {
            return Err(UsersError::Empty);
        }
        Ok(Auth::Tokens(map))
    }

    /// Whether several distinct users exist (then files not landed by an upload are read-only
    /// to uploads).
    pub fn multi_user(&self) -> bool {
        match self {
            Auth::Public => false,
            Auth::Tokens(map) => {
                let mut names: Vec<&Arc<str>> = map.values().collect();
                names.sort();
                names.dedup();
                names.len() > 1
            }
        }
    }

    /// The user a token belongs to.
    pub fn user(&self, token: Option<&str>) -> Option<User> {
        match self {
            Auth::Public => Some(User(Arc::from(""))),
            Auth::Tokens(map) => map.get(&hash(token?)).cloned().map(User),
        }
    }
}

/// A fresh random token (32 bytes, hex).
pub fn generate_token() -> String {
    hex::encode(rand::random::<[u8; 24]>())
}

fn hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// The token a request carries (bearer header, `?token=`, or the cookie a `?token=` link set).
pub use ferry_http::token::request_token;

/// Middleware: puts the request's [`User`] into its extensions, or answers 401.
/// tus discovery (`OPTIONS`) needs no token.
pub async fn require_user(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    if req.method() == axum::http::Method::OPTIONS {
        req.extensions_mut().insert(User(Arc::from("")));
        return next.run(req).await;
    }
    let token = token_of(&req);
    match auth.user(token.as_ref().map(|(t, _)| t.as_str())) {
        Some(user) => {
            req.extensions_mut().insert(user);
            let mut res = next.run(req).await;
            if let Some((t, TokenSource::Query)) = token
                && let Ok(v) = HeaderValue::from_str(&format!(
                    "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
                    percent_encoding::utf8_percent_encode(&t, percent_encoding::NON_ALPHANUMERIC)
                ))
            {
                res.headers_mut().append(header::SET_COOKIE, v);
            }
            res
        }
        None => {
            let mut res = (
                StatusCode::UNAUTHORIZED,
                "a valid token is required: send 'Authorization: Bearer TOKEN' or add ?token=TOKEN\n",
            )
                .into_response();
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ferry\""),
            );
            res
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file() {
        let auth = Auth::parse_users("# team\nann  secret-ann\n\nbob secret-bob # no\n");
        assert!(matches!(auth, Err(UsersError::Syntax { line: 4, .. })));
        let auth = Auth::parse_users("# team\nann  secret-ann\n\nbob\tsecret-bob\n").unwrap();
        assert_eq!(auth.user(Some("secret-bob")).unwrap().0.as_ref(), "bob");
        assert!(auth.user(Some("secret")).is_none());
        assert!(auth.user(None).is_none());
        assert!(auth.multi_user());
        assert!(matches!(
            Auth::parse_users("a secret-xx\nb secret-xx\n"),
            Err(UsersError::DuplicateToken { line: 2, .. })
        ));
        assert!(matches!(
            Auth::parse_users("a short\n"),
            Err(UsersError::ShortToken { .. })
        ));
        assert!(matches!(
            Auth::parse_users("# none\n"),
            Err(UsersError::Empty)
        ));
        assert!(!Auth::single("tok").multi_user());
        assert_eq!(Auth::Public.user(None).unwrap().0.as_ref(), "");
    }
}
