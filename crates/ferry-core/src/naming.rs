//! Choosing a local file name for a download: from `Content-Disposition`, else the URL's last
//! path segment, sanitised so it can never name a path outside the target directory.

use percent_encoding::percent_decode_str;

/// Name used when neither the header nor the URL gives one.
pub const FALLBACK_NAME: &str = "index.html";

/// A safe single path component made from `raw`, or `None` if nothing usable is left:
/// no directories, no `..`, no control characters, no invisible characters ([`is_invisible`]:
/// a server could make `invoice\u{202E}fdp.exe` look like `invoiceexe.pdf`), no leading dots,
/// at most 255 bytes.
pub fn sanitize(raw: &str) -> Option<String> {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .filter(|&c| !c.is_control() && !is_invisible(c))
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim();
    if cleaned.is_empty() {
        return None;
    }
    let mut out = String::new();
    for c in cleaned.chars() {
        if out.len() + c.len_utf8() > 255 {
            break;
        }
        out.push(c);
    }
    Some(out)
}

/// Whether `c` is an invisible character that can make a name read as another: the
/// bidirectional text controls (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069), the
/// zero-width characters (U+200B–U+200D, U+2060–U+2065, U+FEFF) and the line and paragraph
/// separators (U+2028, U+2029). The same set `ferry serve` refuses in upload names.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// The file name a `Content-Disposition` value asks for (RFC 6266; `filename*` wins).
pub fn from_content_disposition(value: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    for param in split_params(value).into_iter().skip(1) {
        let Some((key, val)) = param.split_once('=') else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let val = val.trim();
        if key == "filename*" {
            // charset'lang'percent-encoded
            let mut parts = val.splitn(3, '\'');
            let charset = parts.next().unwrap_or_default();
            let _lang = parts.next();
            if let Some(enc) = parts.next()
                && (charset.eq_ignore_ascii_case("utf-8")
                    || charset.eq_ignore_ascii_case("iso-8859-1"))
            {
                extended = Some(percent_decode_str(enc).decode_utf8_lossy().into_owned());
            }
        } else if key == "filename" {
            plain = Some(unquote(val));
        }
    }
    extended.or(plain).and_then(|n| sanitize(&n))
}

/// The last non-empty path segment of a URL, percent-decoded.
pub fn from_url(url: &url::Url) -> Option<String> {
    let seg = url.path_segments()?.rev().find(|s| !s.is_empty())?;
    sanitize(&percent_decode_str(seg).decode_utf8_lossy())
}

/// Splits on `;` outside double quotes.
fn split_params(value: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(String::new());
                continue;
            }
            _ => {}
        }
        out.last_mut().expect("never empty").push(c);
    }
    out
}

fn unquote(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return v.to_string();
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes() {
        assert_eq!(sanitize("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(sanitize("..").as_deref(), None);
        assert_eq!(sanitize("/").as_deref(), None);
        assert_eq!(sanitize("a\\b\\..\\c.txt").as_deref(), Some("c.txt"));
        assert_eq!(sanitize(".bashrc").as_deref(), Some("bashrc"));
        assert_eq!(sanitize("x\u{0}y\n").as_deref(), Some("xy"));
        assert_eq!(
            sanitize("invoice\u{202E}fdp.exe").as_deref(),
            Some("invoicefdp.exe")
        );
        assert_eq!(
            sanitize("a\u{2066}b\u{2028}c\u{200F}").as_deref(),
            Some("abc")
        );
        assert_eq!(sanitize(&"é".repeat(300)).unwrap().len(), 254);
    }

    #[test]
    fn content_disposition() {
        assert_eq!(
            from_content_disposition("attachment; filename=\"a b.iso\"").as_deref(),
            Some("a b.iso")
        );
        assert_eq!(
            from_content_disposition(
                "attachment; filename=\"x.bin\"; filename*=UTF-8''%E2%82%AC%20rates.txt"
            )
            .as_deref(),
            Some("€ rates.txt")
        );
        assert_eq!(
            from_content_disposition("attachment; filename=\"../../x;y\"").as_deref(),
            Some("x;y")
        );
        assert_eq!(from_content_disposition("inline").as_deref(), None);
        assert_eq!(
            from_content_disposition("attachment; filename=plain.txt").as_deref(),
            Some("plain.txt")
        );
    }

    #[test]
    fn url_names() {
        let u = url::Url::parse("http://h/a/b%20c.iso?x=1").unwrap();
        assert_eq!(from_url(&u).as_deref(), Some("b c.iso"));
        let u = url::Url::parse("http://h/dir/").unwrap();
        assert_eq!(from_url(&u).as_deref(), Some("dir"));
        let u = url::Url::parse("http://h/").unwrap();
        assert_eq!(from_url(&u), None);
        let u = url::Url::parse("http://h/%2e%2e%2fsecret").unwrap();
        assert_eq!(from_url(&u).as_deref(), Some("secret"));
    }
}
