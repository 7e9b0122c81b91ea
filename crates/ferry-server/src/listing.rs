//! Directory listings of the file side: reading a directory under the served root (symlinks
//! followed only when they stay inside it, the state directory never shown, names that cannot be
//! requested left out) and rendering it as JSON or as an HTML page with percent-encoded links
//! relative to the URL `base`.

use crate::files;
use crate::safepath::{self, PathError};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use std::fmt::Write;
use std::io;
use std::path::Path;

/// A file or a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A directory (sorted before files).
    Dir,
    /// A regular file.
    File,
}

/// One listed entry. In JSON: `{"name", "type": "file"|"dir", "size", "modified", "etag"}`,
/// `modified` in Unix seconds (the instant of `Last-Modified`), `size` 0 and `etag` null for
/// directories; a file's `etag` is the one its `GET` answers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The entry's name in its directory (one component, not percent-encoded).
    pub name: String,
    /// File or directory (what a symlink points to, for a symlink).
    #[serde(rename = "type")]
    pub kind: Kind,
    /// The file's size in bytes; 0 for a directory.
    pub size: u64,
    /// Last modification, in seconds since the Unix epoch.
    pub modified: u64,
    /// The file's strong ETag (with quotes), as its `GET` sends it; `None` for a directory.
    pub etag: Option<String>,
}

/// Reads the directory `dir` (canonical, inside `root`), directories first, then by name.
/// Blocking. Symlinks are listed as what they point to when that stays inside `root`, and left
/// out otherwise; so are special files, names that are not UTF-8 or that
/// [`safepath::components`] refuses, and the state directory (however it is reached).
pub fn read_dir(root: &Path, dir: &Path) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        // One plain component that a request could name (the state directory is judged by
        // where it is, below).
        match safepath::components(&name) {
            Ok(parts) if parts == [name.as_str()] => {}
            Err(PathError::Private) => {}
            _ => continue,
        }
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        // `dir` is canonical, so `dir/name` is too unless it is a symlink.
        let mut target = dir.join(&name);
        if file_type.is_symlink() {
            let Ok(t) = target.canonicalize() else {
                continue;
            };
            target = t;
        }
        if safepath::check_inside(root, &target).is_err() {
            continue;
        }
        let meta = if file_type.is_symlink() {
            std::fs::metadata(&target)
        } else {
            entry.metadata()
        };
        let Ok(meta) = meta else { continue };
        let modified = ferry_http::conditional::unix_secs(files::modified(&meta));
        let e = if meta.is_dir() {
            Entry {
                name,
                kind: Kind::Dir,
                size: 0,
                modified,
                etag: None,
            }
        } else if meta.is_file() {
            Entry {
                name,
                kind: Kind::File,
                size: meta.len(),
                modified,
                etag: Some(files::strong_etag(&meta)),
            }
        } else {
            continue;
        };
        out.push(e);
    }
    out.sort_by(|a, b| a.kind.cmp(&b.kind).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}

/// The JSON array of the entries.
pub fn json(entries: &[Entry]) -> String {
    serde_json::to_string(entries).unwrap_or_else(|_| "[]".to_owned())
}

/// Everything but unreserved characters is percent-encoded in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The URL path of `parts` under `base`: `base` + the percent-encoded segments joined by `/`
/// (without a trailing slash; `base` itself, slash-terminated, for no parts).
pub fn href(base: &str, parts: &[impl AsRef<str>]) -> String {
    let mut out = base.to_owned();
    if !out.ends_with('/') {
        out.push('/');
    }
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.extend(utf8_percent_encode(p.as_ref(), SEGMENT));
    }
    out
}

/// Escapes text for HTML content and double- or single-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An HTML page listing `entries` of the directory `parts` (its path segments under the root),
/// with links under `base` and a link to the parent directory when there is one.
pub fn html(entries: &[Entry], parts: &[impl AsRef<str>], base: &str) -> String {
    let shown: String = parts.iter().fold(String::from("/"), |mut s, p| {
        s.push_str(p.as_ref());
        s.push('/');
        s
    });
    let title = escape(&shown);
    let mut page = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>Index of {title}</title>\n<style>\
         body{{font-family:system-ui,sans-serif;margin:2em}}\
         td{{padding:.15em 1.5em .15em 0}}td.n{{text-align:right;font-variant-numeric:tabular-nums}}\
         a{{text-decoration:none}}</style></head>\n<body><h1>Index of {title}</h1>\n<table>\n\
         <tr><th align=left>Name</th><th align=right>Size</th><th align=left>Modified</th></tr>\n"
    );
    let dir_href = if parts.is_empty() {
        href(base, parts)
    } else {
        format!("{}/", href(base, parts))
    };
    if let Some((_, parent)) = parts.split_last() {
        let up = if parent.is_empty() {
            href(base, parent)
        } else {
            format!("{}/", href(base, parent))
        };
        let _ = writeln!(
            page,
            "<tr><td><a href=\"{}\">../</a></td><td></td><td></td></tr>",
            escape(&up)
        );
    }
    for e in entries {
        let dir = e.kind == Kind::Dir;
        let link = format!(
            "{dir_href}{}{}",
            utf8_percent_encode(&e.name, SEGMENT),
            if dir { "/" } else { "" }
        );
        let size = if dir {
            "-".to_owned()
        } else {
            human_size(e.size)
        };
        let when = httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(e.modified),
        );
        let _ = writeln!(
            page,
            "<tr><td><a href=\"{}\">{}{}</a></td><td class=n title=\"{} bytes\">{}</td><td>{}</td></tr>",
            escape(&link),
            escape(&e.name),
            if dir { "/" } else { "" },
            e.size,
            size,
            when
        );
    }
    page.push_str("</table>\n</body></html>\n");
    page
}

/// `1.5 GiB`-style sizes (bytes below 1 KiB).
fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safepath::STATE_DIR;

    #[test]
    fn links_are_encoded_and_names_escaped() {
        let entries = vec![
            Entry {
                name: "a dir".into(),
                kind: Kind::Dir,
                size: 0,
                modified: 0,
                etag: None,
            },
            Entry {
                name: "<b>&\"x'#?%.txt".into(),
                kind: Kind::File,
                size: 1536,
                modified: 1_700_000_000,
                etag: Some("\"1-2-3\"".into()),
            },
            Entry {
                name: "é.bin".into(),
                kind: Kind::File,
                size: 5,
                modified: 0,
                etag: Some("\"4\"".into()),
            },
        ];
        let page = html(&entries, &["top", "we ird"], "/files/");
        assert!(
            page.contains("<title>Index of /top/we ird/</title>"),
            "{page}"
        );
        assert!(page.contains("href=\"/files/top/\">../</a>"), "{page}");
        assert!(page.contains("href=\"/files/top/we%20ird/a%20dir/\">a dir/</a>"));
        assert!(page.contains(
            "href=\"/files/top/we%20ird/%3Cb%3E%26%22x%27%23%3F%25.txt\">&lt;b&gt;&amp;&quot;x&#39;#?%.txt</a>"
        ), "{page}");
        assert!(page.contains("href=\"/files/top/we%20ird/%C3%A9.bin\">é.bin</a>"));
        assert!(page.contains("1.5 KiB"));
        assert!(!page.contains("<b>"));

        let root_page = html(&entries, &[] as &[&str], "/files/");
        assert!(!root_page.contains("../"));
        assert!(root_page.contains("href=\"/files/a%20dir/\""));
        let one = html(&entries, &["top"], "/files");
        assert!(one.contains("href=\"/files/\">../</a>"), "{one}");

        let v: serde_json::Value = serde_json::from_str(&json(&entries)).unwrap();
        assert_eq!(v[0]["type"], "dir");
        assert_eq!(v[0]["etag"], serde_json::Value::Null);
        assert_eq!(v[1]["type"], "file");
        assert_eq!(v[1]["size"], 1536);
        assert_eq!(v[1]["modified"], 1_700_000_000);
        assert_eq!(v[1]["etag"], "\"1-2-3\"");
    }

    #[test]
    fn reads_a_directory_safely() {
        let outside = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        std::fs::create_dir(root.join(STATE_DIR)).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::create_dir(root.join("sub").join(STATE_DIR)).unwrap();
        std::fs::write(root.join("f"), b"12345").unwrap();
        std::fs::write(root.join("back\\slash"), b"").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("f"), root.join("in")).unwrap();
        std::os::unix::fs::symlink(root.join(STATE_DIR), root.join("state")).unwrap();
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("broken")).unwrap();
        let got = read_dir(&root, &root).unwrap();
        let names: Vec<_> = got.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["sub", "f", "in"]);
        assert_eq!(got[1].size, 5);
        assert_eq!(got[1].etag, got[2].etag);
        let sub = read_dir(&root, &root.join("sub")).unwrap();
        assert_eq!(sub.len(), 1, "a nested .ferry is ordinary");
        // The root reached through a symlink: still no state directory.
        std::os::unix::fs::symlink(&root, root.join("sub/up")).unwrap();
        let through = read_dir(&root, &root.join("sub/up").canonicalize().unwrap()).unwrap();
        assert_eq!(through.len(), 3);
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1 << 30), "1.0 GiB");
    }
}
