//! [`LocalDir`]'s layouts (the `ferry-layout` extension, [`Placement`]): every part of a
//! layout writes into the staged file of the upload that opened it (`<host>`), at its base.
//! Beside that file: `<host>.layout`, the layout's length and its parts' ranges (changed under
//! an exclusive `flock`, so overlapping parts are refused even between server processes sharing
//! the directory), and for each placed part `<id>.place`: its host, base, length, offset, the
//! offset known to be on disk, and the boot it was written in. The offset is recorded after
//! each append without a sync: a killed server keeps its page cache, so the offset is right
//! after a kill -9. A machine crash loses the page cache; its reboot changes the boot id, and
//! then only the durable offset counts (the part's length once its last bytes were synced with
//! `fdatasync`, else 0), so an offset never claims bytes that are not on disk. Bytes written
//! past the offset are never counted and are sent again. The final upload of a whole layout
//! (its parts in order, nothing missing) is the host's file renamed; any other mixture of parts
//! is copied into a new file.

use super::body;
use super::local::{LocalDir, reserve};
use super::placement::{Placed, Placement};
use super::{AppendLimits, Appended, BodyEnd, Incoming};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

/// Where a placed upload's bytes are (`<id>.place`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    /// The upload whose staged file holds the layout.
    host: String,
    /// Where the upload's first byte is in that file.
    base: u64,
    /// The upload's length.
    length: u64,
    /// Bytes written from `base` on (the upload's offset, while the machine has not restarted).
    offset: u64,
    /// Bytes from `base` on known to be on disk.
    durable: u64,
    /// The boot id when `offset` was written (`-` where the system has none).
    boot: String,
}

impl Place {
    fn parse(text: &str) -> Option<Place> {
        let mut it = text.split_whitespace();
        let place = Place {
            host: it.next()?.to_owned(),
            base: it.next()?.parse().ok()?,
            length: it.next()?.parse().ok()?,
            offset: it.next()?.parse().ok()?,
            durable: it.next()?.parse().ok()?,
            boot: it.next()?.to_owned(),
        };
        it.next().is_none().then_some(place)
    }

    fn render(&self) -> String {
        format!(
            "{} {} {} {} {} {}\n",
            self.host, self.base, self.length, self.offset, self.durable, self.boot
        )
    }

    /// The offset to trust: the recorded one while the machine has not restarted since it was
    /// written (the page cache holds its bytes), else the one known to be on disk.
    fn trusted_offset(&self) -> u64 {
        match boot_id() {
            Some(boot) if boot == self.boot => self.offset,
            _ => self.durable.min(self.offset),
        }
    }
}

/// This boot's id (Linux), read once; `None` where the system has none (every offset is then
/// synced before it is recorded).
fn boot_id() -> Option<&'static str> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
    })
    .as_deref()
}

/// A layout (`<host>.layout`): its length, then one `id base length` line per part.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout {
    total: u64,
    parts: Vec<(String, u64, u64)>,
}

impl Layout {
    fn parse(text: &str) -> Option<Layout> {
        let mut lines = text.lines();
        let total = lines.next()?.trim().parse().ok()?;
        let mut parts = Vec::new();
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let mut it = line.split_whitespace();
            let id = it.next()?.to_owned();
            let base = it.next()?.parse().ok()?;
            let length = it.next()?.parse().ok()?;
            parts.push((id, base, length));
        }
        Some(Layout { total, parts })
    }

    fn render(&self) -> String {
        let mut s = format!("{}\n", self.total);
        for (id, base, length) in &self.parts {
            s.push_str(&format!("{id} {base} {length}\n"));
        }
        s
    }

    /// Adds part `id` at `base..base + length`: refused outside the layout or over another
    /// part.
    fn add(&mut self, id: &str, base: u64, length: u64) -> Result<(), String> {
        let end = base
            .checked_add(length)
            .filter(|&end| end <= self.total)
            .ok_or_else(|| {
                format!(
                    "ferry-layout: {length} bytes at {base} fall outside the layout's {} bytes",
                    self.total
                )
            })?;
        if let Some((other, b, n)) = self.parts.iter().find(|(_, b, n)| base < b + n && *b < end) {
            return Err(format!(
                "ferry-layout: bytes {base}..{end} overlap those of upload {other} ({b}..{})",
                b + n
            ));
        }
        self.parts.push((id.to_owned(), base, length));
        Ok(())
    }
}

fn bad_record(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn remove_if_present(path: &std::path::Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl LocalDir {
    fn place_path(&self, id: &str) -> PathBuf {
        self.data_path(&format!("{id}.place"))
    }

    fn layout_path(&self, host: &str) -> PathBuf {
        self.data_path(&format!("{host}.layout"))
    }

    /// Whether upload `id` is a placed part (its bytes live in a layout).
    pub(super) fn is_placed(&self, id: &str) -> bool {
        self.place_path(id).exists()
    }

    fn place_of(&self, id: &str) -> io::Result<Option<Place>> {
        match std::fs::read_to_string(self.place_path(id)) {
            Ok(text) => Place::parse(&text)
                .map(Some)
                .ok_or_else(|| bad_record("a damaged placement record")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the record whole (a rename), so a crash leaves the old one or the new one.
    fn write_place(&self, id: &str, place: &Place) -> io::Result<()> {
        let tmp = self.data_path(&format!("{id}.place.tmp"));
        std::fs::write(&tmp, place.render())?;
        std::fs::rename(&tmp, self.place_path(id))
    }

    fn read_layout(&self, host: &str) -> io::Result<Option<Layout>> {
        match std::fs::read_to_string(self.layout_path(host)) {
            Ok(text) => Layout::parse(&text)
                .map(Some)
                .ok_or_else(|| bad_record("a damaged layout record")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Changes the layout of `host` under an exclusive lock; `f`'s changes are written back
    /// when it succeeds. `None` when there is no such layout.
    fn change_layout<T>(
        &self,
        host: &str,
        f: impl FnOnce(&mut Layout) -> Result<T, String>,
    ) -> io::Result<Option<Result<T, String>>> {
        use rustix::fs::{FlockOperation, flock};
        let mut file = match OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.layout_path(host))
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        // Released when the file is closed.
        flock(&file, FlockOperation::LockExclusive)?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let mut layout = Layout::parse(&text).ok_or_else(|| bad_record("a damaged layout"))?;
        let result = f(&mut layout);
        if result.is_ok() {
            let text = layout.render();
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(text.as_bytes())?;
        }
        Ok(Some(result))
    }

    /// Creates placed part `id` (`length` bytes) at `place` (the caller checked that a host
    /// is this user's partial upload).
    pub(super) fn create_placed_sync(
        &self,
        id: &str,
        length: u64,
        place: &Placement,
    ) -> io::Result<Placed> {
        if length == 0 {
            return Ok(Placed::Refused(
                "ferry-layout: a placed part has at least one byte".into(),
            ));
        }
        let record = match place {
            Placement::Host { total } => {
                if length > *total {
                    return Ok(Placed::Refused(format!(
                        "ferry-layout: a part of {length} bytes does not fit a layout of {total}"
                    )));
                }
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(self.data_path(id))?;
                if let Err(e) = reserve(&file, *total) {
                    drop(file);
                    let _ = std::fs::remove_file(self.data_path(id));
                    return Err(e);
                }
                let layout = Layout {
                    total: *total,
                    parts: vec![(id.to_owned(), 0, length)],
                };
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(self.layout_path(id))?;
                f.write_all(layout.render().as_bytes())?;
                Place {
                    host: id.to_owned(),
                    base: 0,
                    length,
                    offset: 0,
                    durable: 0,
                    boot: boot_id().unwrap_or("-").to_owned(),
                }
            }
            Placement::Member { host, base } => {
                let gone = || Placed::Refused(format!("ferry-layout: upload {host} has no layout"));
                if !self.data_path(host).exists() {
                    return Ok(gone());
                }
                match self.change_layout(host, |l| l.add(id, *base, length))? {
                    None => return Ok(gone()),
                    Some(Err(why)) => return Ok(Placed::Refused(why)),
                    Some(Ok(())) => {}
                }
                Place {
                    host: host.clone(),
                    base: *base,
                    length,
                    offset: 0,
                    durable: 0,
                    boot: boot_id().unwrap_or("-").to_owned(),
                }
            }
        };
        self.write_place(id, &record)?;
        Ok(Placed::Placed)
    }

    /// The offset of placed part `id`; `None` when its layout's file is gone.
    pub(super) fn placed_offset(&self, id: &str) -> io::Result<Option<u64>> {
        let Some(place) = self.place_of(id)? else {
            return Ok(None);
        };
        Ok(self
            .data_path(&place.host)
            .exists()
            .then(|| place.trusted_offset()))
    }

    /// Appends a body to placed part `id`: written at its place in the layout, then counted in
    /// its record; the part's last bytes are synced first (and where the system has no boot id,
    /// every append's).
    pub(super) async fn append_placed(
        &self,
        id: &str,
        incoming: Incoming,
        limits: AppendLimits<'_>,
    ) -> Appended {
        let refused = |e: io::Error| Appended {
            received: 0,
            kept: 0,
            verified: None,
            end: BodyEnd::Disk(e),
            drained: false,
        };
        let place = match self.place_of(id) {
            Ok(Some(p)) => p,
            Ok(None) => return refused(io::Error::from(io::ErrorKind::NotFound)),
            Err(e) => {
                let drained = body::drain(&mut incoming.body.into_data_stream()).await;
                return Appended {
                    drained,
                    ..refused(e)
                };
            }
        };
        let host_file = self.data_path(&place.host);
        // Bytes of a body whose checksum fails stay in the file, uncounted: the next append
        // writes over them.
        let mut appended = body::append_at(
            incoming,
            host_file.clone(),
            place.base + limits.offset,
            &limits,
        )
        .await;
        if appended.kept > 0 {
            let offset = limits.offset + appended.kept;
            let sync = offset == place.length || boot_id().is_none();
            let record = Place {
                offset,
                durable: if sync { offset } else { place.durable },
                boot: boot_id().unwrap_or("-").to_owned(),
                ..place
            };
            let dir = self.clone();
            let id = id.to_owned();
            let saved = tokio::task::spawn_blocking(move || {
                if sync {
                    File::open(&host_file)?.sync_data()?;
                }
                dir.write_place(&id, &record)
            })
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)));
            if let Err(e) = saved {
                appended.kept = 0;
                appended.end = BodyEnd::Disk(e);
            }
        }
        appended
    }

    /// Deletes placed part `id`: its record, its range in the layout, and the layout's file
    /// with the last part.
    pub(super) fn delete_placed(&self, id: &str) -> io::Result<()> {
        let Some(place) = self.place_of(id)? else {
            return Ok(());
        };
        let left = self
            .change_layout(&place.host, |l| {
                l.parts.retain(|(p, _, _)| p != id);
                Ok(l.parts.len())
            })?
            .and_then(Result::ok)
            .unwrap_or(0);
        if left == 0 {
            remove_if_present(&self.data_path(&place.host))?;
            remove_if_present(&self.layout_path(&place.host))?;
        }
        remove_if_present(&self.place_path(id))
    }

    /// The host of the layout that `parts` (with `places`) are exactly, in order: every byte
    /// of it, nothing else. `None` for any other mixture.
    fn whole_layout(
        &self,
        parts: &[String],
        places: &[Option<Place>],
    ) -> io::Result<Option<String>> {
        let Some(Some(first)) = places.first() else {
            return Ok(None);
        };
        if first.base != 0 || first.host != parts[0] {
            return Ok(None);
        }
        let mut at = 0u64;
        for place in places {
            match place {
                Some(p) if p.host == first.host && p.base == at => at += p.length,
                _ => return Ok(None),
            }
        }
        Ok(self
            .read_layout(&first.host)?
            .filter(|l| l.total == at)
            .map(|_| first.host.clone()))
    }

    /// Assembles final upload `id` when any of `parts` is placed (else `None`: the caller
    /// appends the parts' own files): the host's file renamed for a whole layout, else every
    /// part copied, from wherever its bytes are, into a new file. Redoable after a crash.
    pub(super) fn assemble_placed(
        &self,
        id: &str,
        parts: &[String],
        lengths: &[u64],
    ) -> io::Result<Option<u64>> {
        let places = parts
            .iter()
            .map(|p| self.place_of(p))
            .collect::<io::Result<Vec<_>>>()?;
        if places.iter().all(Option::is_none) {
            return Ok(None);
        }
        let total = lengths
            .iter()
            .try_fold(0u64, |sum, &len| sum.checked_add(len))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "lengths overflow"))?;
        let dest = self.data_path(id);
        if std::fs::metadata(&dest).is_ok_and(|m| m.len() == total) {
            return Ok(Some(total)); // done before a crash
        }
        let lengths_agree = places
            .iter()
            .zip(lengths)
            .all(|(p, &len)| p.as_ref().is_some_and(|p| p.length == len));
        if lengths_agree && let Some(host) = self.whole_layout(parts, &places)? {
            let file = OpenOptions::new().write(true).open(self.data_path(&host))?;
            file.set_len(total)?;
            drop(file);
            std::fs::rename(self.data_path(&host), &dest)?;
            return Ok(Some(total));
        }
        let tmp = self.data_path(&format!("{id}.assembling"));
        let mut out = File::create(&tmp)?;
        for ((part, &len), place) in parts.iter().zip(lengths).zip(&places) {
            let (src, start) = match place {
                Some(p) => (self.data_path(&p.host), p.base),
                None => (self.data_path(part), 0),
            };
            let mut input = File::open(src)?;
            input.seek(SeekFrom::Start(start))?;
            let copied = io::copy(&mut (&mut input).take(len), &mut out)?;
            if copied != len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("part {part} has {copied} of its {len} bytes"),
                ));
            }
        }
        drop(out);
        std::fs::rename(&tmp, &dest)?;
        Ok(Some(total))
    }

    /// Undoes [`LocalDir::assemble_placed`] when any of `parts` is placed (`false` otherwise):
    /// a whole layout's file goes back to its host, a copy is deleted.
    pub(super) fn unassemble_placed(&self, id: &str, parts: &[String]) -> io::Result<bool> {
        let places = parts
            .iter()
            .map(|p| self.place_of(p))
            .collect::<io::Result<Vec<_>>>()?;
        if places.iter().all(Option::is_none) {
            return Ok(false);
        }
        let dest = self.data_path(id);
        if dest.exists() {
            match self.whole_layout(parts, &places)? {
                Some(host) => std::fs::rename(&dest, self.data_path(&host))?,
                None => std::fs::remove_file(&dest)?,
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LocalDir) {
        let root = tempfile::tempdir().unwrap();
        let s = LocalDir::open(&root.path().canonicalize().unwrap()).unwrap();
        (root, s)
    }

    fn member(host: &str, base: u64) -> Placement {
        Placement::Member {
            host: host.into(),
            base,
        }
    }

    /// Writes `data` as placed part `id`'s bytes and records them, as an append does.
    fn fill(s: &LocalDir, id: &str, data: &[u8]) {
        let place = s.place_of(id).unwrap().unwrap();
        let f = OpenOptions::new()
            .write(true)
            .open(s.data_path(&place.host))
            .unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(data, place.base).unwrap();
        s.write_place(
            id,
            &Place {
                offset: data.len() as u64,
                durable: data.len() as u64,
                ..place
            },
        )
        .unwrap();
    }

    #[test]
    fn ranges_outside_or_overlapping_are_refused() {
        let (_root, s) = store();
        let host = Placement::Host { total: 10 };
        assert_eq!(
            s.create_placed_sync("h", 11, &host).unwrap(),
            Placed::Refused("ferry-layout: a part of 11 bytes does not fit a layout of 10".into())
        );
        assert_eq!(s.create_placed_sync("h", 4, &host).unwrap(), Placed::Placed);
        let refused = |r: Placed| matches!(r, Placed::Refused(_));
        assert!(refused(
            s.create_placed_sync("a", 2, &member("h", 3)).unwrap()
        ));
        assert!(refused(
            s.create_placed_sync("a", 7, &member("h", 4)).unwrap()
        ));
        assert!(refused(
            s.create_placed_sync("a", 1, &member("h", u64::MAX))
                .unwrap()
        ));
        assert!(refused(
            s.create_placed_sync("a", 0, &member("h", 4)).unwrap()
        ));
        assert!(refused(
            s.create_placed_sync("a", 1, &member("nope", 4)).unwrap()
        ));
        assert_eq!(
            s.create_placed_sync("a", 3, &member("h", 4)).unwrap(),
            Placed::Placed
        );
        assert!(refused(
            s.create_placed_sync("b", 3, &member("h", 6)).unwrap()
        ));
        assert_eq!(
            s.create_placed_sync("b", 3, &member("h", 7)).unwrap(),
            Placed::Placed
        );
        assert_eq!(s.read_layout("h").unwrap().unwrap().parts.len(), 3);
        // A deleted part frees its range.
        s.delete_placed("b").unwrap();
        assert_eq!(
            s.create_placed_sync("c", 3, &member("h", 7)).unwrap(),
            Placed::Placed
        );
    }

    #[test]
    fn a_whole_layout_is_renamed_and_a_mixture_copied() {
        let (_root, s) = store();
        s.create_placed_sync("h", 4, &Placement::Host { total: 10 })
            .unwrap();
        s.create_placed_sync("b", 3, &member("h", 7)).unwrap();
        s.create_placed_sync("a", 3, &member("h", 4)).unwrap();
        fill(&s, "b", b"789");
        fill(&s, "h", b"0123");
        fill(&s, "a", b"456");
        assert_eq!(s.placed_offset("a").unwrap(), Some(3));
        // After a reboot only the durable offset counts.
        let mut p = s.place_of("a").unwrap().unwrap();
        p.durable = 1;
        assert_eq!(p.trusted_offset(), 3);
        p.boot = "another-boot".into();
        assert_eq!(p.trusted_offset(), 1);
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Out of order: copied, the layout untouched.
        let mixed = ids(&["a", "h"]);
        assert_eq!(s.assemble_placed("m", &mixed, &[3, 4]).unwrap(), Some(7));
        assert_eq!(std::fs::read(s.data_path("m")).unwrap(), b"4560123");
        assert!(s.unassemble_placed("m", &mixed).unwrap());
        assert!(!s.data_path("m").exists());
        // In order: the host's file is the result, and goes back on undo.
        let whole = ids(&["h", "a", "b"]);
        assert_eq!(
            s.assemble_placed("f", &whole, &[4, 3, 3]).unwrap(),
            Some(10)
        );
        assert!(!s.data_path("h").exists(), "renamed, not copied");
        assert_eq!(std::fs::read(s.data_path("f")).unwrap(), b"0123456789");
        // Redone after a crash: recognised by its length.
        assert_eq!(
            s.assemble_placed("f", &whole, &[4, 3, 3]).unwrap(),
            Some(10)
        );
        assert!(s.unassemble_placed("f", &whole).unwrap());
        assert_eq!(std::fs::read(s.data_path("h")).unwrap(), b"0123456789");
        // Plain parts are not this module's.
        assert_eq!(s.assemble_placed("g", &ids(&["x"]), &[1]).unwrap(), None);
        // The layout's file goes with its last part.
        for p in ["a", "h", "b"] {
            assert!(s.data_path("h").exists());
            s.delete_placed(p).unwrap();
        }
        assert!(!s.data_path("h").exists());
        assert!(!s.layout_path("h").exists());
    }

    #[test]
    fn the_orphan_sweep_keeps_a_layout_until_its_last_part_goes() {
        let (_root, s) = store();
        let (host, part) = ("a".repeat(32), "b".repeat(32));
        s.create_placed_sync(&host, 4, &Placement::Host { total: 8 })
            .unwrap();
        s.create_placed_sync(&part, 4, &member(&host, 4)).unwrap();
        fill(&s, &host, b"0123");
        fill(&s, &part, b"4567");
        // Both parts are listed (by their place records), the layout's file is not on its own.
        let listed = s.staged_sync(std::time::Duration::ZERO).unwrap();
        assert_eq!(listed, vec![host.clone(), part.clone()]);
        // The host's record is gone (terminated), its part lives on: the bytes stay.
        s.delete_placed(&host).unwrap();
        assert_eq!(
            s.staged_sync(std::time::Duration::ZERO).unwrap(),
            vec![part.clone()]
        );
        assert!(s.data_path(&host).exists());
        // The sweep deletes the orphaned part: the layout goes with it.
        s.delete_placed(&part).unwrap();
        assert!(s.staged_sync(std::time::Duration::ZERO).unwrap().is_empty());
        assert!(!s.data_path(&host).exists());
        assert!(!s.layout_path(&host).exists());
    }
}
