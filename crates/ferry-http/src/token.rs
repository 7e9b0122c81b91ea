//! The token a request carries: `Authorization: Bearer T`, else the `token` query parameter,
//! else the cookie an earlier `?token=` link set (so the links a browser follows next work
//! without the token in every URL).

use http::{Request, header};

/// The name of the cookie that carries a token set after a `?token=` link.
pub const TOKEN_COOKIE: &str = "ferry_token";

/// Where a request's token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenSource {
    /// `Authorization: Bearer T`.
    Header,
    /// The `token` query parameter.
    Query,
    /// The [`TOKEN_COOKIE`] cookie.
    Cookie,
}

/// The token of a request and where it came from: `Authorization: Bearer T`, else the `token`
/// query parameter (percent-decoded, `+` as space), else the [`TOKEN_COOKIE`] cookie.
pub fn token_of<B>(req: &Request<B>) -> Option<(String, TokenSource)> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION)
        && let Ok(value) = value.to_str()
        && let Some((scheme, token)) = value.trim().split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
    {
        return Some((token.trim().to_owned(), TokenSource::Header));
    }
    if let Some(query) = req.uri().query()
        && let Some(t) = query_value(query, "token")
    {
        return Some((t, TokenSource::Query));
    }
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(TOKEN_COOKIE)?.strip_prefix('='))
        .map(|t| {
            (
                percent_encoding::percent_decode_str(t)
                    .decode_utf8_lossy()
                    .into_owned(),
                TokenSource::Cookie,
            )
        })
}

/// The token a request carries (bearer header, `?token=`, or the cookie a `?token=` link set).
pub fn request_token<B>(req: &Request<B>) -> Option<String> {
    token_of(req).map(|(t, _)| t)
}

/// The first value of `key` in an `application/x-www-form-urlencoded` query.
fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn query_token() {
        assert_eq!(
            query_value("a=1&token=x%2By+z", "token").as_deref(),
            Some("x+y z")
        );
        assert_eq!(query_value("a=1", "token"), None);
    }

    #[test]
    fn header_then_query_then_cookie() {
        let all = req(
            "/x?token=q",
            &[
                ("authorization", "Bearer  h "),
                ("cookie", "a=b; ferry_token=c%21"),
            ],
        );
        assert_eq!(token_of(&all), Some(("h".into(), TokenSource::Header)));
        let no_header = req("/x?token=q", &[("cookie", "ferry_token=c")]);
        assert_eq!(token_of(&no_header), Some(("q".into(), TokenSource::Query)));
        let cookie = req("/x", &[("cookie", "a=b; ferry_token=c%21")]);
        assert_eq!(request_token(&cookie).as_deref(), Some("c!"));
        let basic = req("/x", &[("authorization", "Basic abc")]);
        assert_eq!(request_token(&basic), None);
    }

    proptest! {
        #[test]
        fn any_query_or_header_never_panics(query in ".*", auth in ".*", cookie in ".*") {
            let _ = query_value(&query, "token");
            let mut r = Request::new(());
            if let Ok(v) = http::HeaderValue::from_str(&auth) {
                r.headers_mut().insert(header::AUTHORIZATION, v);
            }
            if let Ok(v) = http::HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::COOKIE, v);
            }
            let _ = token_of(&r);
        }

        #[test]
        fn encoded_query_tokens_round_trip(token in "\\PC{1,40}") {
            let enc = percent_encoding::utf8_percent_encode(&token, percent_encoding::NON_ALPHANUMERIC);
            let r = req(&format!("/x?a=1&token={enc}"), &[]);
            prop_assert_eq!(token_of(&r), Some((token, TokenSource::Query)));
        }
    }
}
