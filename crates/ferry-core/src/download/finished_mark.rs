//! The mark ferry leaves on a file it finished downloading: an extended attribute holding the
//! remote file's validators. A rerun trusts a file of the right length as complete only with
//! this mark (or when it can verify the file); a file ferry did not make is left alone.

use crate::journal::Validators;
use std::path::Path;

/// The extended attribute's name.
const NAME: &str = "user.ferry.finished";

/// Marks `path` (the finished `.part`, before its rename) as the download of the remote file
/// with `validators`. Best effort: on a filesystem without extended attributes the file stays
/// unmarked, and a rerun refuses it instead of trusting it.
pub(crate) fn set(path: &Path, validators: &Validators) {
    if let Ok(json) = serde_json::to_vec(validators) {
        let _ = rustix::fs::setxattr(path, NAME, &json, rustix::fs::XattrFlags::empty());
    }
}

/// Whether `path` carries the mark at all.
pub(crate) fn present(path: &Path) -> bool {
    rustix::fs::getxattr(path, NAME, &mut [0u8; 0][..]).is_ok()
}

/// Whether `path` carries the mark of a download of the remote file that has `now` as its
/// validators (same length; an ETag or Last-Modified known on both sides agrees).
pub(crate) fn vouches_for(path: &Path, now: &Validators) -> bool {
    let mut buf = vec![0u8; 4096];
    let Ok(n) = rustix::fs::getxattr(path, NAME, &mut buf[..]) else {
        return false;
    };
    let Ok(marked) = serde_json::from_slice::<Validators>(&buf[..n]) else {
        return false;
    };
    marked.length.is_some() && marked.length == now.length && marked.difference(now).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_marked_file_of_the_same_remote_file_is_vouched_for() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f.bin");
        std::fs::write(&f, b"abc").unwrap();
        let v = Validators {
            length: Some(3),
            etag: Some("\"e1\"".into()),
            last_modified: None,
        };
        assert!(!vouches_for(&f, &v) && !present(&f), "an unmarked file");
        set(&f, &v);
        if rustix::fs::getxattr(&f, NAME, &mut [0u8; 1][..]).is_err() && !vouches_for(&f, &v) {
            eprintln!("skipped: no extended attributes on this filesystem");
            return;
        }
        assert!(vouches_for(&f, &v) && present(&f));
        let changed = Validators {
            etag: Some("\"e2\"".into()),
            ..v.clone()
        };
        assert!(!vouches_for(&f, &changed));
        let longer = Validators {
            length: Some(4),
            ..v
        };
        assert!(!vouches_for(&f, &longer));
    }
}
