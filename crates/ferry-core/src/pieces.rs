//! Per-piece BLAKE3 verification for downloads whose content is known in advance (a ferry
//! peer's manifest): which pieces are verified, which sources wrote into each unverified piece
//! (so a bad piece can be blamed on the peer that sent it), and the check itself.

use crate::ranges::RangeSet;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;

/// The expected BLAKE3 hash of every piece of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceHashes {
    /// Bytes per piece (the last piece may be shorter).
    pub size: u64,
    /// The BLAKE3 hash of each piece, in file order.
    pub hashes: Vec<[u8; 32]>,
}

impl PieceHashes {
    /// Byte range of piece `i` in a file of `len` bytes.
    pub fn range(&self, i: usize, len: u64) -> Range<u64> {
        let start = i as u64 * self.size;
        start..(start + self.size).min(len)
    }

    /// Pieces that overlap `r`.
    pub fn overlapping(&self, r: &Range<u64>) -> Range<usize> {
        if r.start >= r.end {
            return 0..0;
        }
        let first = (r.start / self.size) as usize;
        let last = ((r.end - 1) / self.size) as usize;
        first..(last + 1).min(self.hashes.len())
    }

    /// Whether the piece count fits a file of `len` bytes.
    pub fn fits(&self, len: u64) -> bool {
        self.size > 0 && self.hashes.len() as u64 == len.div_ceil(self.size)
    }

    /// Reads piece `i` from `file` and compares its hash.
    pub fn check(&self, file: &File, i: usize, len: u64) -> std::io::Result<bool> {
        let r = self.range(i, len);
        let mut buf = vec![0u8; (r.end - r.start) as usize];
        file.read_exact_at(&mut buf, r.start)?;
        Ok(blake3::hash(&buf).as_bytes() == &self.hashes[i])
    }
}

/// Verification state of one download.
#[derive(Debug)]
pub struct PieceTracker {
    /// What each piece must hash to.
    pub hashes: PieceHashes,
    /// The file's length in bytes (the hashes fit it).
    pub len: u64,
    /// Verified pieces, as byte ranges (what the journal records).
    pub verified: RangeSet,
    checking: HashSet<usize>,
    /// Bit `s` set: source `s` wrote bytes into this (unverified) piece.
    writers: HashMap<usize, u64>,
    /// Failed pieces each source took part in.
    pub strikes: Vec<u32>,
}

impl PieceTracker {
    /// `verified` comes from the journal: it only ever records verified pieces.
    pub fn new(hashes: PieceHashes, len: u64, verified: RangeSet, sources: usize) -> Self {
        PieceTracker {
            hashes,
            len,
            verified,
            checking: HashSet::new(),
            writers: HashMap::new(),
            strikes: vec![0; sources],
        }
    }

    /// Records that `source` wrote `r`, and returns the pieces it touched that are now fully
    /// written (per `done`) and need checking; they are marked as being checked.
    pub fn wrote(&mut self, r: &Range<u64>, source: usize, done: &RangeSet) -> Vec<usize> {
        let mut ready = Vec::new();
        for i in self.hashes.overlapping(r) {
            let pr = self.hashes.range(i, self.len);
            if self.verified.contains_range(pr.clone()) {
                continue;
            }
            *self.writers.entry(i).or_default() |= 1u64 << source.min(63);
            if !self.checking.contains(&i) && done.contains_range(pr) {
                self.checking.insert(i);
                ready.push(i);
            }
        }
        ready
    }

    /// Records a check's result. On failure returns the sources that wrote the piece.
    pub fn checked(&mut self, i: usize, ok: bool) -> Vec<usize> {
        self.checking.remove(&i);
        let mask = self.writers.remove(&i).unwrap_or(0);
        if ok {
            self.verified.insert(self.hashes.range(i, self.len));
            return Vec::new();
        }
        let blamed: Vec<usize> = (0..64).filter(|b| mask & (1u64 << b) != 0).collect();
        for &s in &blamed {
            if let Some(n) = self.strikes.get_mut(s) {
                *n += 1;
            }
        }
        blamed
    }

    /// Every piece verified.
    pub fn complete(&self) -> bool {
        self.verified.contains_range(0..self.len)
    }

    /// Fully written pieces not yet verified nor being checked (e.g. at the very end).
    pub fn unverified_written(&mut self, done: &RangeSet) -> Vec<usize> {
        let mut out = Vec::new();
        for i in 0..self.hashes.hashes.len() {
            let pr = self.hashes.range(i, self.len);
            if !self.verified.contains_range(pr.clone())
                && !self.checking.contains(&i)
                && done.contains_range(pr)
            {
                self.checking.insert(i);
                out.push(i);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(data: &[u8], size: u64) -> PieceHashes {
        PieceHashes {
            size,
            hashes: data
                .chunks(size as usize)
                .map(|c| *blake3::hash(c).as_bytes())
                .collect(),
        }
    }

    #[test]
    fn pieces_are_tracked_checked_and_blamed() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let h = hashes(&data, 4096);
        assert!(h.fits(10_000));
        assert_eq!(h.range(2, 10_000), 8192..10_000);
        assert_eq!(h.overlapping(&(4000..4097)), 0..2);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, &data).unwrap();
        let f = File::open(&p).unwrap();
        assert!(h.check(&f, 1, 10_000).unwrap());

        let mut t = PieceTracker::new(h.clone(), 10_000, RangeSet::new(), 2);
        let mut done = RangeSet::new();
        done.insert(0..5000);
        assert_eq!(t.wrote(&(0..5000), 0, &done), vec![0]);
        done.insert(5000..10_000);
        assert_eq!(t.wrote(&(5000..10_000), 1, &done), vec![1, 2]);
        assert!(t.checked(0, true).is_empty());
        assert_eq!(t.checked(1, false), vec![0, 1], "both wrote into piece 1");
        assert!(t.checked(2, true).is_empty());
        assert_eq!(t.strikes, vec![1, 1]);
        assert!(!t.complete());
        assert_eq!(t.unverified_written(&done), vec![1]);
        assert!(t.checked(1, true).is_empty());
        assert!(t.complete());
    }
}
