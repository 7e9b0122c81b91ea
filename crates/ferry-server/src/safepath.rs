//! Path safety for everything the server touches under its root directory: request paths and
//! upload targets are checked component by component, and resolved paths are re-checked after
//! symlinks so nothing outside the root (and nothing in the staging area) is ever read or written.

use std::io;
use std::path::{Component, Path, PathBuf};

/// The hidden directory inside the served root that holds upload staging data and server state.
/// It is never served, listed, or accepted as an upload target.
pub const STATE_DIR: &str = ".ferry";

/// Why a path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// No component is left (e.g. `""` or `./`) where a file must be named.
    #[error("the path is empty")]
    Empty,
    /// The path starts with `/`.
    #[error("the path must be relative to the served directory")]
    Absolute,
    /// A `..` component.
    #[error("the path may not contain '..'")]
    Parent,
    /// A component with a control character or a backslash.
    #[error("the path may not contain control characters or backslashes")]
    BadCharacter,
    /// The path is in [`STATE_DIR`] (at the root), directly or through a symlink.
    #[error("the path names the server's private state directory")]
    Private,
    /// After following symlinks, the path is outside the served root.
    #[error("the path leaves the served directory")]
    Escapes,
    /// A component longer than 255 bytes (what most filesystems allow).
    #[error("a path component is longer than 255 bytes")]
    TooLong,
}

/// Splits a `/`-separated relative path (already percent-decoded) into checked components.
/// Empty and `.` components are dropped; `..`, absolute paths, control characters, backslashes
/// and the private state directory are refused. An empty result is allowed (the root itself).
pub fn components(rel: &str) -> Result<Vec<&str>, PathError> {
    if rel.starts_with('/') {
        return Err(PathError::Absolute);
    }
    let mut out = Vec::new();
    for part in rel.split('/') {
        match part {
            "" | "." => continue,
            ".." => return Err(PathError::Parent),
            _ => {}
        }
        if part.chars().any(|c| c.is_control() || c == '\\') {
            return Err(PathError::BadCharacter);
        }
        if part.len() > 255 {
            return Err(PathError::TooLong);
        }
        if out.is_empty() && part == STATE_DIR {
            return Err(PathError::Private);
        }
        out.push(part);
    }
    Ok(out)
}

/// A checked relative path for reading (`""` is the root itself).
pub fn relative(rel: &str) -> Result<PathBuf, PathError> {
    Ok(components(rel)?.iter().collect())
}

/// A checked relative path naming a file (an upload target): must not be empty.
pub fn target(rel: &str) -> Result<PathBuf, PathError> {
    let parts = components(rel)?;
    if parts.is_empty() {
        return Err(PathError::Empty);
    }
    Ok(parts.iter().collect())
}

/// Resolves an existing path under `root` (which must be canonical) and proves, after following
/// symlinks, that it is still inside `root` and outside the state directory.
pub fn resolve_existing(root: &Path, rel: &Path) -> io::Result<Result<PathBuf, PathError>> {
    let joined = root.join(rel);
    let canonical = joined.canonicalize()?;
    Ok(check_inside(root, &canonical).map(|()| canonical))
}

/// Proves that `canonical` (a canonical path) lies inside `root` and outside its state directory.
pub fn check_inside(root: &Path, canonical: &Path) -> Result<(), PathError> {
    let Ok(rest) = canonical.strip_prefix(root) else {
        return Err(PathError::Escapes);
    };
    match rest.components().next() {
        Some(Component::Normal(first)) if first == STATE_DIR => Err(PathError::Private),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_checked() {
        assert_eq!(components("a/./b//c").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(components("").unwrap(), Vec::<&str>::new());
        assert_eq!(components("a/../b"), Err(PathError::Parent));
        assert_eq!(components("/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(components(".ferry/state.redb"), Err(PathError::Private));
        assert_eq!(components("x/.ferry").unwrap(), vec!["x", ".ferry"]);
        assert_eq!(components("a\\..\\b"), Err(PathError::BadCharacter));
        assert_eq!(components("a\nb"), Err(PathError::BadCharacter));
        assert_eq!(target("./"), Err(PathError::Empty));
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        let root = tempfile::tempdir().unwrap();
        let root_path = root.path().canonicalize().unwrap();
        std::os::unix::fs::symlink(outside.path(), root_path.join("link")).unwrap();
        std::fs::write(root_path.join("ok"), b"y").unwrap();
        std::fs::create_dir(root_path.join(STATE_DIR)).unwrap();
        std::os::unix::fs::symlink(root_path.join(STATE_DIR), root_path.join("state")).unwrap();
        let r = resolve_existing(&root_path, Path::new("link/secret")).unwrap();
        assert_eq!(r, Err(PathError::Escapes));
        let r = resolve_existing(&root_path, Path::new("state")).unwrap();
        assert_eq!(r, Err(PathError::Private));
        let r = resolve_existing(&root_path, Path::new("ok")).unwrap();
        assert_eq!(r, Ok(root_path.join("ok")));
    }
}
