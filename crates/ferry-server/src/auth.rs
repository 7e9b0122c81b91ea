//! Who is asking: bearer tokens mapped to user names (`--token`, `--users FILE`) or no
//! authentication at all (`--public`), and the middleware that resolves every request's user.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferry_http::token::{TOKEN_COOKIE as COOKIE, TokenSource, token_of};
use std::collections::HashMap;
use std::sync::Arc;

/// The authenticated user of a request: a name (empty in public mode) and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User(pub Arc<str>, pub Role);

/// What a user may do beyond its own uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// No token (`--public`, or tus discovery): never replaces an existing file.
    Anonymous,
    /// A token holder: replaces only the files it landed.
    Member,
    /// A users-file line marked `admin`: may replace any file.
    Admin,
}

impl User {
    /// The anonymous user of `--public` (and of token-free requests such as tus discovery).
    pub fn anonymous() -> User {
        User(Arc::from(""), Role::Anonymous)
    }

    /// Whether this is the anonymous user.
    pub fn is_anonymous(&self) -> bool {
        self.1 == Role::Anonymous
    }

    /// Whether this user is an admin.
    pub fn is_admin(&self) -> bool {
        self.1 == Role::Admin
    }
}

/// How requests are authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Everyone is the same anonymous user.
    Public,
    /// Tokens (stored as BLAKE3 hashes) mapped to users.
    Tokens(HashMap<[u8; 32], User>),
}

/// A malformed users file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsersError {
    /// A line that is not a name, a token and optionally the word `admin`.
    #[error("line {line}: expected 'NAME TOKEN' or 'NAME TOKEN admin', got {got:?}")]
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

/// The fewest characters a `--token` may have (a users file's tokens need 8, as before).
pub const MIN_TOKEN_CHARS: usize = 16;

/// A single token (`--token`) too short to resist guessing.
#[derive(Debug, thiserror::Error)]
#[error(
    "--token has {chars} characters; use at least {MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 16`), or leave --token out and use the generated one"
)]
pub struct ShortToken {
    /// How many characters it has.
    pub chars: usize,
}

impl Auth {
    /// One user, named `user`, with a token of at least [`MIN_TOKEN_CHARS`] characters.
    pub fn token(token: &str) -> Result<Auth, ShortToken> {
        let chars = token.trim().chars().count();
        if chars < MIN_TOKEN_CHARS {
            return Err(ShortToken { chars });
        }
        Ok(Auth::single(token))
    }

    /// One user, named `user`, with one token (any length: see [`Auth::token`]).
    pub fn single(token: &str) -> Auth {
        Auth::Tokens(HashMap::from([(
            hash(token),
            User(Arc::from("user"), Role::Member),
        )]))
    }

    /// Parses a users file: one `NAME TOKEN` per line, or `NAME TOKEN admin` for a user who
    /// may replace any file; blank lines and `#` comments skipped.
    pub fn parse_users(text: &str) -> Result<Auth, UsersError> {
        let mut map: HashMap<[u8; 32], User> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let mut words = content.split_whitespace();
            let syntax = || UsersError::Syntax {
                line,
                got: content.to_owned(),
            };
            let (Some(name), Some(token)) = (words.next(), words.next()) else {
                return Err(syntax());
            };
            let role = match (words.next(), words.next()) {
                (None, _) => Role::Member,
                (Some("admin"), None) => Role::Admin,
                _ => return Err(syntax()),
            };
            if token.len() < 8 {
                return Err(UsersError::ShortToken {
                    line,
                    user: name.to_owned(),
                });
            }
            if let Some(other) = map.insert(hash(token), User(Arc::from(name), role)) {
                return Err(UsersError::DuplicateToken {
                    line,
                    user: name.to_owned(),
                    other: other.0.to_string(),
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
                let mut names: Vec<&Arc<str>> = map.values().map(|u| &u.0).collect();
                names.sort();
                names.dedup();
                names.len() > 1
            }
        }
    }

    /// The user a token belongs to.
    pub fn user(&self, token: Option<&str>) -> Option<User> {
        match self {
            Auth::Public => Some(User::anonymous()),
            Auth::Tokens(map) => map.get(&hash(token?)).cloned(),
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
        req.extensions_mut().insert(User::anonymous());
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
        let auth = Auth::parse_users("ann secret-ann\nroot secret-root admin\n").unwrap();
        assert!(auth.user(Some("secret-root")).unwrap().is_admin());
        assert!(!auth.user(Some("secret-ann")).unwrap().is_admin());
        assert!(matches!(
            Auth::parse_users("root secret-root superuser\n"),
            Err(UsersError::Syntax { line: 1, .. })
        ));
        assert!(Auth::Public.user(None).unwrap().is_anonymous());
        assert!(Auth::token("short").is_err());
        assert!(Auth::token("sixteen-chars-ok").is_ok());
        assert_eq!(Auth::Public.user(None).unwrap().0.as_ref(), "");
    }
}
