//! `ferry status`: prints what a resume journal holds (source, validators, done and missing).

use crate::cli::StatusArgs;
use crate::outcome::{self, Command, Ending, exit_code};
use ferry_core::Journal;
use ferry_core::journal::with_suffix;
use indicatif::HumanBytes;
use std::path::{Path, PathBuf};

pub fn run(args: StatusArgs) -> u8 {
    let path = args.path;
    if path.is_dir() {
        let mut journals: Vec<PathBuf> = match std::fs::read_dir(&path) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "ferry"))
                .collect(),
            Err(e) => {
                eprintln!("ferry: cannot read {}: {e}", path.display());
                return exit_code(Ending::Failed);
            }
        };
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
            if target.exists() {
                println!("{}: complete (no journal)", target.display());
                return exit_code(Ending::Done);
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
            "{}{u}",
            if i == 0 {
                "source:        "
            } else {
                "mirror:        "
            }
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
