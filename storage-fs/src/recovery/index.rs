//! The index of a compaction (see [Compaction](super#compaction)): for each path of a
//! journal, the offset of its last entry, in about 16 bytes per path.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::mem;
use std::os::unix::fs::FileExt as _;

use sha2::{Digest as _, Sha256};

use super::entries::{Entry, Head, MAX_LINE, split_line, torn};

/// Bytes of the first read of an entry's line read back.
const HEAD_READ: usize = 256;

/// A 64-bit hash of a record path: [`path_hash`], or in tests one that collides.
pub(super) type PathHash = fn(&str) -> u64;

/// The first 8 bytes of the path's SHA-256. Paths that share one are told apart by
/// reading their entries back (see [`Index`]), so a collision costs reads, not records.
pub(super) fn path_hash(path: &str) -> u64 {
    let digest = Sha256::digest(path.as_bytes());
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// The offset an [`Index`] keeps for a hash that several paths have: their last entries
/// are in [`Index::shared`]. No entry starts there.
const SHARED: u64 = u64::MAX;
/// Slots of a block of [`Index::sorted`] (64 KiB), and the fewest of [`Index::recent`].
pub(super) const BLOCK: usize = 4096;

/// For each path of a journal, the offset of its last entry; built by [`Index::add`] of
/// each entry in order, then [`Index::finish`].
///
/// `sorted` has one `(hash, offset)` slot per hash. An entry whose hash has a slot reads
/// back the path of the entry at the slot's offset (a positioned read of its first line)
/// and compares: the same path's later entry takes the slot; a different path (a
/// collision of the 64-bit hashes) moves both to `shared`, keyed by the whole path, and
/// the slot says [`SHARED`] from then on. Other entries go to `recent`, which when full is
/// sorted and merged into `sorted`, its entries of one hash told apart the same way.
/// `sorted` is in blocks, so a merge frees each old block as it is consumed instead of
/// holding two copies, and `recent` holds an eighth of it (at least a block), so merges
/// cost O(1) per entry amortized and a lookup O(log n): 16 bytes per path in `sorted`, at
/// most 2 in `recent`, plus a few blocks.
#[derive(Debug)]
pub(super) struct Index {
    hash: PathHash,
    /// `(hash, offset)`, one per hash, sorted: the offset of the last entry of the path
    /// with that hash, or [`SHARED`]. In blocks of [`BLOCK`] slots (the last may hold
    /// fewer).
    sorted: Vec<Vec<(u64, u64)>>,
    sorted_len: usize,
    /// `(hash, offset)` of each entry added since the last merge.
    recent: Vec<(u64, u64)>,
    /// The paths whose hash another path of the journal has, with their last entry.
    pub(super) shared: HashMap<String, Last>,
    /// Bytes of the puts no later entry of their path replaced: once finished, what a
    /// compaction would leave (without the header).
    pub(super) live: u64,
    /// Buffer of read-back lines.
    line: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Last {
    offset: u64,
    /// The entry's length if it is a put, 0 for a delete.
    put_len: u64,
}

/// What an [`Index`] keeps of an entry.
impl Entry {
    fn last(&self) -> Last {
        Last {
            offset: self.offset,
            put_len: match self.head {
                Head::Put { .. } => self.len,
                Head::Delete { .. } => 0,
            },
        }
    }
}

impl Index {
    pub(super) fn new(hash: PathHash) -> Index {
        Index {
            hash,
            sorted: Vec::new(),
            sorted_len: 0,
            recent: Vec::with_capacity(BLOCK),
            shared: HashMap::new(),
            live: 0,
            line: Vec::new(),
        }
    }

    /// Adds `entry`, the next of the journal `file`.
    pub(super) fn add(&mut self, file: &File, entry: &Entry) -> io::Result<()> {
        if self.recent.len() >= self.recent.capacity() {
            self.merge(file)?;
            let want = (self.sorted_len / 8).max(BLOCK);
            if self.recent.capacity() < want {
                // Empty: dropped before the larger one is allocated.
                self.recent = Vec::new();
                self.recent.reserve_exact(want);
            }
        }
        let path = entry.head.path();
        let hash = (self.hash)(path);
        let last = entry.last();
        self.live += last.put_len;
        // Merged first, so a hash is in `sorted` or in `recent`, never both: an entry left
        // in `recent` while later ones of its hash went to a slot would override them.
        if let Some((block, slot)) = find_slot(&self.sorted, hash) {
            let Index {
                sorted,
                shared,
                live,
                line,
                ..
            } = self;
            if let Some(slot) = sorted.get_mut(block).and_then(|b| b.get_mut(slot)) {
                let mut reads = ReadBack {
                    file,
                    line,
                    shared,
                    live,
                };
                slot.1 = reads.follow(slot.1, path, last)?;
                return Ok(());
            }
        }
        self.recent.push((hash, entry.offset));
        Ok(())
    }

    /// Merges what is left; lookups come after.
    pub(super) fn finish(&mut self, file: &File) -> io::Result<()> {
        if !self.recent.is_empty() {
            self.merge(file)?;
        }
        self.recent = Vec::new();
        self.line = Vec::new();
        Ok(())
    }

    fn merge(&mut self, file: &File) -> io::Result<()> {
        let Index {
            sorted,
            sorted_len,
            recent,
            shared,
            live,
            line,
            ..
        } = self;
        // By hash, then offset: a hash's entries in journal order. None of them has a slot
        // in `sorted` (see `add`).
        recent.sort_unstable();
        let mut old = mem::take(sorted).into_iter().flatten().peekable();
        let mut new = recent.drain(..).peekable();
        let mut reads = ReadBack {
            file,
            line,
            shared,
            live,
        };
        *sorted_len = 0;
        let mut run: Option<(u64, Run)> = None;
        loop {
            let next = match (old.peek(), new.peek()) {
                (Some(o), Some(n)) if n.0 < o.0 => new.next(),
                (Some(_), _) => old.next(),
                (None, _) => new.next(),
            };
            match (&mut run, next) {
                (Some((hash, run)), Some((next_hash, offset))) if *hash == next_hash => {
                    reads.add(run, offset)?;
                }
                (_, next) => {
                    if let Some((hash, run)) = run.take() {
                        push_slot(sorted, (hash, run.offset()));
                        *sorted_len += 1;
                    }
                    match next {
                        Some((hash, offset)) => run = Some((hash, Run::One(offset))),
                        None => break,
                    }
                }
            }
        }
        Ok(())
    }

    /// The offset of the last entry of `path`.
    pub(super) fn last_of(&self, path: &str) -> Option<u64> {
        let (block, slot) = find_slot(&self.sorted, (self.hash)(path))?;
        match self.sorted.get(block)?.get(slot)?.1 {
            SHARED => self.shared.get(path).map(|last| last.offset),
            offset => Some(offset),
        }
    }
}

/// Where `hash` is in `sorted`: its block and its slot in the block.
fn find_slot(sorted: &[Vec<(u64, u64)>], hash: u64) -> Option<(usize, usize)> {
    let block = sorted.partition_point(|b| b.last().is_some_and(|&(h, _)| h < hash));
    let slot = sorted
        .get(block)?
        .binary_search_by_key(&hash, |&(h, _)| h)
        .ok()?;
    Some((block, slot))
}

fn push_slot(sorted: &mut Vec<Vec<(u64, u64)>>, slot: (u64, u64)) {
    match sorted.last_mut() {
        Some(block) if block.len() < BLOCK => block.push(slot),
        _ => {
            let mut block = Vec::with_capacity(BLOCK);
            block.push(slot);
            sorted.push(block);
        }
    }
}

/// What a merge knows of the entries of one hash met so far, in journal order.
enum Run {
    /// One entry (or [`SHARED`]), not read back.
    One(u64),
    /// The last entry, read back; all the entries met have its path.
    Read {
        offset: u64,
        path: String,
        put_len: u64,
    },
    /// Entries of more than one path: they are in `shared`.
    Shared,
}

impl Run {
    fn offset(&self) -> u64 {
        match self {
            Run::One(offset) | Run::Read { offset, .. } => *offset,
            Run::Shared => SHARED,
        }
    }
}

/// What it takes to tell apart the entries of one hash.
struct ReadBack<'a> {
    file: &'a File,
    line: &'a mut Vec<u8>,
    shared: &'a mut HashMap<String, Last>,
    live: &'a mut u64,
}

impl ReadBack<'_> {
    /// The slot of a hash whose last entry so far is at `before` (or [`SHARED`]) once
    /// `path`'s entry `last` follows.
    fn follow(&mut self, before: u64, path: &str, last: Last) -> io::Result<u64> {
        if before != SHARED {
            let (before_path, before_len) = read_head(self.file, before, self.line)?;
            if before_path == path {
                *self.live = self.live.saturating_sub(before_len);
                return Ok(last.offset);
            }
            share(self.shared, self.live, before_path, before, before_len);
        }
        share(self.shared, self.live, path, last.offset, last.put_len);
        Ok(SHARED)
    }

    /// `run` followed by the entry at `offset`.
    fn add(&mut self, run: &mut Run, offset: u64) -> io::Result<()> {
        let before = match run {
            Run::One(SHARED) | Run::Shared => None,
            Run::One(first) => {
                let first = *first;
                let (path, put_len) = read_head(self.file, first, self.line)?;
                Some((first, path.to_string(), put_len))
            }
            Run::Read {
                offset,
                path,
                put_len,
            } => Some((*offset, mem::take(path), *put_len)),
        };
        let (path, put_len) = read_head(self.file, offset, self.line)?;
        *run = match before {
            Some((_, before_path, before_len)) if before_path == path => {
                *self.live = self.live.saturating_sub(before_len);
                Run::Read {
                    offset,
                    path: before_path,
                    put_len,
                }
            }
            Some((before, before_path, before_len)) => {
                share(self.shared, self.live, &before_path, before, before_len);
                share(self.shared, self.live, path, offset, put_len);
                Run::Shared
            }
            None => {
                share(self.shared, self.live, path, offset, put_len);
                Run::Shared
            }
        };
        Ok(())
    }
}

/// Records that `path`'s last entry so far is the one at `offset`.
fn share(
    shared: &mut HashMap<String, Last>,
    live: &mut u64,
    path: &str,
    offset: u64,
    put_len: u64,
) {
    let last = Last { offset, put_len };
    match shared.get_mut(path) {
        Some(before) => {
            *live = live.saturating_sub(before.put_len);
            *before = last;
        }
        None => {
            shared.insert(path.to_string(), last);
        }
    }
}

/// The path and put length ([`Last::put_len`]) of the entry at `offset` of `file`, read
/// with a positioned read into `line`.
fn read_head<'a>(file: &File, offset: u64, line: &'a mut Vec<u8>) -> io::Result<(&'a str, u64)> {
    // Most lines fit the first read; a longer one takes another, up to the longest.
    line.resize(HEAD_READ, 0);
    let mut got = 0;
    let end = loop {
        if let Some(end) = line[..got].iter().position(|&b| b == b'\n') {
            break end;
        }
        if got == line.len() {
            if got as u64 >= MAX_LINE {
                return Err(torn());
            }
            line.resize(MAX_LINE as usize, 0);
        }
        match file.read_at(&mut line[got..], offset + got as u64) {
            Ok(0) => return Err(torn()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    // Parsed and checked when it was first read.
    let (path, len) = split_line(&line[..end]).ok_or_else(torn)?;
    let put_len = match len {
        // The line, its newline, the content and its newline.
        Some(len) => (end as u64 + 2).saturating_add(len),
        None => 0,
    };
    Ok((path, put_len))
}
