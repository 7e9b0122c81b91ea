//! A size-limited tmpfs mounted for one test (a real full disk), unmounted on drop.
//! Mounting needs root, as scripts/test.sh and CI have.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs and the temporary directory that holds its mount point.
pub struct Tmpfs {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB; panics with the reason when it cannot.
    pub fn mount(mib: usize) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir for the mount point");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("create mount point");
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&mnt)
            .output()
            .expect("run mount");
        assert!(
            o.status.success(),
            "cannot mount a small tmpfs (this test needs root, as in scripts/test.sh): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Tmpfs { _dir: dir, mnt }
    }

    /// The mount point: files written under it count against the tmpfs's size.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// Grows or shrinks the filesystem.
    pub fn resize(&self, mib: usize) {
        let o = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.mnt)
            .output()
            .expect("run mount");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}
