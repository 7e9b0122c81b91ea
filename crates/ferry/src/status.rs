//! `ferry status`: prints what a resume journal holds (source, validators, done and missing),
//! for one file or every partial download under a folder.

use crate::cli::StatusArgs;
use crate::outcome::{self, Command, Ending, exit_code};
use ferry_core::Journal;
use ferry_core::journal::with_suffix;
use indicatif::HumanBytes;
use std::path::{Path, PathBuf};

pub fn run(args: StatusArgs) -> u8 {
    let path = args.path;
    if path.is_dir() {
        let mut journals = Vec::new();
        if let Err(e) = find_journals(&path, &mut journals) {
            eprintln!("ferry: cannot read {}: {e}", path.display());
            return exit_code(Ending::Failed);
        }
        journals.sort();
        if journals.is_empty() {
            println!("{}: no partial downloads", path.display());
            return exit_code(Ending::Done);
        }
        let mut code = exit_code(Ending::Done);
        for j in journals {
            let target = j.with_extension("");
            if show(&target) != exit_code(Ending::Done) {
                code = exit_code(Ending::Failed);
            }
            println!();
        }
        return code;
    }
    show(&target_of(&path))
}

/// Every download journal (`*.ferry` file) under `dir`, in subfolders too; symbolic links are
/// not followed and unreadable subfolders are skipped.
fn find_journals(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(ty) = entry.file_type() else { continue };
        let p = entry.path();
        if ty.is_dir() {
            let _ = find_journals(&p, out);
        } else if ty.is_file() && p.extension().is_some_and(|x| x == "ferry") {
            out.push(p);
        }
    }
    Ok(())
}

/// A URL as shown: the value of a `token` query parameter (a ferry sender's secret) hidden.
fn shown_url(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("token", _)) => "token=…".to_owned(),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// `x.iso.part` or `x.iso.ferry` → `x.iso`.
fn target_of(path: &Path) -> PathBuf {
    let s = path.to_string_lossy();
    for suffix in [".part", ".ferry"] {
        if let Some(stripped) = s.strip_suffix(suffix) {
            return PathBuf::from(stripped);
        }
    }
    path.to_owned()
}

fn show(target: &Path) -> u8 {
    let jpath = Journal::path_for(target);
    let journal = match Journal::load(&jpath) {
        Ok(Some(j)) => j,
        Ok(None) => {
            if ferry_core::download::finished_by_ferry(target) {
                println!("{}: complete (downloaded by ferry)", target.display());
                return exit_code(Ending::Done);
            }
            if target.exists() {
                eprintln!(
                    "ferry: {}: not a ferry download (no journal, and ferry did not finish it)",
                    target.display()
                );
                return exit_code(Ending::Failed);
            }
            eprintln!(
                "ferry: {}: no download here (no {} journal)",
                target.display(),
                jpath.display()
            );
            return exit_code(Ending::Failed);
        }
        Err(e) => {
            // A journal belongs to a `ferry get` download: the advice is get's.
            eprintln!("ferry: {}", outcome::message(Command::Get, &e));
            return exit_code(Ending::Failed);
        }
    };
    let v = &journal.validators;
    let done = journal.done.covered();
    println!("file:          {}", target.display());
    println!(
        "state:         partial ({})",
        with_suffix(target, ".part").display()
    );
    for (i, u) in journal.urls.iter().enumerate() {
        println!(
            "{}{}",
            if i == 0 {
                "source:        "
            } else {
                "mirror:        "
            },
            shown_url(u)
        );
    }
    match v.length {
        Some(len) => {
            let pct = if len == 0 {
                100.0
            } else {
                done as f64 * 100.0 / len as f64
            };
            println!("length:        {len} bytes ({})", HumanBytes(len));
            println!("done:          {done} bytes ({pct:.1}%)");
            let missing = journal.done.missing(len);
            let shown: Vec<String> = missing
                .iter()
                .take(8)
                .map(|r| format!("{}-{}", r.start, r.end - 1))
                .collect();
            let more = if missing.len() > 8 {
                format!(" and {} more", missing.len() - 8)
            } else {
                String::new()
            };
            println!(
                "missing:       {} range(s): {}{more}",
                missing.len(),
                shown.join(", ")
            );
        }
        None => println!("length:        unknown; done {done} bytes"),
    }
    println!("etag:          {}", v.etag.as_deref().unwrap_or("-"));
    println!(
        "last-modified: {}",
        v.last_modified.as_deref().unwrap_or("-")
    );
    let updated = std::time::UNIX_EPOCH + std::time::Duration::from_secs(journal.updated);
    println!(
        "journal:       {} (format {}, updated {})",
        jpath.display(),
        journal.version,
        httpdate::fmt_http_date(updated)
    );
    exit_code(Ending::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_in_a_url_is_hidden() {
        assert_eq!(
            shown_url("https://10.0.0.2:7000/f/0?token=s3cret&x=1"),
            "https://10.0.0.2:7000/f/0?token=…&x=1"
        );
        assert_eq!(shown_url("http://h/f.bin"), "http://h/f.bin");
    }

    #[test]
    fn journals_in_subfolders_are_found() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("top.bin.ferry"), b"").unwrap();
        std::fs::write(dir.path().join("a/b/deep.bin.ferry"), b"").unwrap();
        std::fs::write(dir.path().join("a/other.txt"), b"").unwrap();
        let mut found = Vec::new();
        find_journals(dir.path(), &mut found).unwrap();
        found.sort();
        assert_eq!(
            found,
            vec![
                dir.path().join("a/b/deep.bin.ferry"),
                dir.path().join("top.bin.ferry")
            ]
        );
    }
}
