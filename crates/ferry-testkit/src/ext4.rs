//! A small ext4 filesystem in a loop-mounted image for one test, unmounted on drop. Unlike
//! tmpfs (which undoes a failed `fallocate` itself), ext4 keeps the blocks a failed
//! `fallocate` got, so a test can see whether a program gives them back. Mounting needs root
//! and `mkfs.ext4` (e2fsprogs), as scripts/test.sh and CI have.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted ext4 image and the temporary directory that holds the image and mount point.
pub struct Ext4 {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl Ext4 {
    /// Makes and mounts an ext4 filesystem in an image of `mib` MiB (no blocks reserved for
    /// root); panics with the reason when it cannot.
    pub fn mount(mib: u64) -> Ext4 {
        let dir = tempfile::tempdir().expect("temp dir for the image");
        let image = dir.path().join("fs.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(mib << 20))
            .expect("create the image");
        let o = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image)
            .output()
            .expect("run mkfs.ext4 (e2fsprogs)");
        assert!(
            o.status.success(),
            "mkfs.ext4: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("create mount point");
        let o = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mnt)
            .output()
            .expect("run mount");
        assert!(
            o.status.success(),
            "cannot mount an ext4 image (this test needs root, as in scripts/test.sh): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Ext4 { _dir: dir, mnt }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// Bytes free for files now (`df`'s available bytes).
    pub fn free_bytes(&self) -> u64 {
        let o = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.mnt)
            .output()
            .expect("run df");
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df prints the available bytes")
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}
