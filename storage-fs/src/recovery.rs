//! The [`RecoveryLog`] of [`FsBlobStore`](crate::FsBlobStore): an append-only journal,
//! `root/recovery/journal`, with no index in memory.
//!
//! Why not one file per record, as distribution lays out its links: on ext4 each new
//! record then costs a few directory and inode creations and a rename, measured at
//! 0.2-0.45 ms of CPU each on the 2-core benchmark machine, and the registry writes two
//! records per manifest push, which took the push's CPU cost from about 1.3 to 2.2 ms. An
//! append costs about a microsecond.
//!
//! # No index
//! The journal is the only copy of the records: the store keeps its length and nothing
//! per record, so its memory does not grow with the records (an index of them took about
//! 200 bytes per record, 18 MB for 110,000, with no bound). Puts and deletes only append.
//! A lookup (`get_record`, `list_records`, `records_under`) reads the journal once from
//! the start, on a blocking thread, keeping only its answer. Measured (release build, the
//! 2-core benchmark machine, shared with other work): a journal of 110,000 records
//! (22 MB) takes 25-55 ms per `get_record` or `list_records`, about 1.2-2.5 ms per MB,
//! and 70-100 ms for a `records_under` of everything, contents included. Lookups are
//! rare: a rebuild of the metadata (one `records_under` for all of it) and deleting a
//! manifest by digest (the tags naming it).
//!
//! A lookup reads the journal up to the length it had when the lookup began, through a
//! descriptor opened under the store's lock: a compaction renames a new journal in under
//! that lock, and a descriptor opened before it still reads the old file, whose first
//! `len` bytes are whole entries that hold every record as of that moment.
//!
//! # Format
//! A header line, then one entry per change, in order:
//!
//! ```text
//! oci-registry recovery journal v1
//! + <path> <length>\n<content>\n      put
//! - <path>\n                          delete
//! ```
//!
//! Paths follow the record grammar (no spaces or newlines), so entries parse without
//! escaping. A record's state is its last entry.
//!
//! # Durability
//! No fsync on writes: records are only read when the metadata database is lost, and an
//! fsync per manifest push is what the registry avoids. A process crash loses nothing (the
//! bytes are in the page cache); a machine crash can lose the entries of the last seconds
//! (the kernel's writeback delay, about 30 s by default on Linux). Opening reads the
//! journal through and cuts it at the first entry that does not parse (a torn or
//! zero-filled tail after such a crash).
//!
//! # Compaction
//! When the journal has grown past 4 MiB and to more than twice its length after the last
//! compaction (or the length its live records take, measured when the store opens), it
//! is rewritten with only the live records, on a blocking thread: one pass finds the
//! offset of each path's last entry, a second copies the puts that are last to
//! `journal.new`, which is fsynced and renamed over the journal, whose directory is
//! fsynced; a crash leaves the old journal or the complete new one. It holds the store's
//! lock, so appends and lookups wait for it.
//!
//! The first pass keeps a 64-bit hash of each path (the first 8 bytes of its SHA-256) and
//! the offset of its last entry, sorted by hash (`Index`). When a hash comes again, the
//! entry at the offset kept for it is read back (a positioned read of its first line) to
//! tell the same path from a collision; colliding paths are kept apart by whole path, so
//! a collision costs reads, never a record. That index is the only memory that grows with
//! the records, and only while it is used: during compaction and while a journal larger
//! than 4 MiB is opened (to measure its live records), freed after. Computed from its
//! layout: 16 bytes per path in the journal (live or deleted), at most 2 more for the
//! entries not yet merged, plus about 200 KiB. Measured with heaptrack (110,000 paths,
//! none repeated): a 2.0 MB peak, 18 bytes per path, where the hash table of 128-bit
//! hashes it replaced peaked at 6.5 MB (59 bytes per path, two tables while it grew). The
//! read-backs, one per entry that a later one of its path replaces, cost some time: on a
//! 22 MB journal of 110,000 entries of 22,000 paths, opening it (both passes) took
//! 165-180 ms against 130 ms before; with no path repeated, no change beyond noise
//! (release build, the 2-core machine, shared).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::mem;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use storage_traits::recovery::{MAX_PATH_LEN, validate_record_dir, validate_record_path};
use storage_traits::{RecoveryLog, StorageError};
use tokio::sync::Mutex;

use crate::error::{BACKEND, blocking, io_error};
use crate::upload::sync_dir;

const HEADER: &[u8] = b"oci-registry recovery journal v1\n";
const JOURNAL: &str = "journal";
const COMPACTING: &str = "journal.new";
/// Below this size the journal is never compacted.
const COMPACT_MIN: u64 = 4 * 1024 * 1024;
/// The longest entry line that can parse: `+ <path> <u64>\n`.
const MAX_LINE: u64 = (2 + MAX_PATH_LEN + 1 + 20 + 1) as u64;
/// Read buffer of a scan.
const SCAN_BUFFER: usize = 64 * 1024;
/// Bytes of the first read of an entry's line read back.
const HEAD_READ: usize = 256;

#[derive(Debug, Clone)]
pub(crate) struct FsRecovery {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    dir: PathBuf,
    /// The journal, opened for appending.
    file: File,
    /// Bytes of the journal, header included; always the end of a whole entry.
    len: u64,
    /// `len` right after the last compaction, or what a compaction would leave when the
    /// store opened: compaction is due once `len` is twice this.
    base: u64,
    /// A failed append could not be undone: the journal's tail is unknown, so nothing more
    /// is appended until the store is opened again (which cuts the tail).
    broken: bool,
}

impl FsRecovery {
    /// Opens (or creates) the journal in `dir`, checks it through and cuts a torn tail.
    pub(crate) fn open(dir: PathBuf) -> Result<Self, StorageError> {
        fs::create_dir_all(&dir).map_err(io_error("mkdir", &dir))?;
        let leftover = dir.join(COMPACTING);
        match fs::remove_file(&leftover) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove", &leftover)(e)),
        }
        let path = dir.join(JOURNAL);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_error("open", &path))?;
        let size = file.metadata().map_err(io_error("stat", &path))?.len();
        // Only a journal that could be due for compaction is worth the index.
        let index_with = (size > COMPACT_MIN).then_some(path_hash as PathHash);
        let (good, index) = match check_header(&file, size).map_err(io_error("read", &path))? {
            Header::Ours => {
                let reader = file.try_clone().map_err(io_error("open", &path))?;
                replay(reader, size, index_with).map_err(io_error("read", &path))?
            }
            Header::Blank => (0, None),
            Header::Foreign => {
                return Err(StorageError::backend(
                    BACKEND,
                    format!(
                        "{} is not a recovery journal of this version (expected the header {:?})",
                        path.display(),
                        String::from_utf8_lossy(HEADER.trim_ascii_end())
                    ),
                ));
            }
        };
        if good < size {
            file.set_len(good).map_err(io_error("truncate", &path))?;
        }
        let good = if good == 0 {
            // New, or a crash right after creation left part of the header.
            file.write_all(HEADER).map_err(io_error("write", &path))?;
            sync_dir(&dir)?;
            HEADER.len() as u64
        } else {
            good
        };
        let mut state = State {
            dir,
            file,
            len: good,
            base: good,
            broken: false,
        };
        if let Some(index) = index {
            state.base = HEADER.len() as u64 + index.live;
            if state.compaction_due() {
                state.compact(Some(index))?;
            }
        }
        Ok(FsRecovery {
            state: Arc::new(Mutex::new(state)),
        })
    }

    async fn append(&self, entry: Vec<u8>) -> Result<(), StorageError> {
        let mut state = Arc::clone(&self.state).lock_owned().await;
        // A small write to the page cache, no fsync: cheaper than handing it to a blocking
        // thread (see the module docs).
        state.append(&entry)?;
        if state.compaction_due() {
            blocking(move || {
                let mut state = state;
                state.compact(None)
            })
            .await?;
        }
        Ok(())
    }

    /// Runs `scan` on a blocking thread over the journal's entries as they are now.
    async fn scan<T, F>(&self, scan: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Entries) -> io::Result<T> + Send + 'static,
    {
        let snapshot = self.snapshot().await?;
        blocking(move || snapshot.scan(scan)).await
    }

    /// The journal as it is now, to read on a blocking thread.
    async fn snapshot(&self) -> Result<Snapshot, StorageError> {
        let state = self.state.lock().await;
        let path = state.journal();
        // Opened under the lock, so it is the journal `len` belongs to even if a
        // compaction renames another in right after (see the module docs). One `open(2)`,
        // as cheap as the appends done inline.
        let file = File::open(&path).map_err(io_error("open", &path))?;
        Ok(Snapshot {
            file,
            len: state.len,
            path,
        })
    }
}

/// A descriptor of the journal and its length at one moment.
struct Snapshot {
    file: File,
    len: u64,
    path: PathBuf,
}

impl Snapshot {
    fn scan<T>(self, scan: impl FnOnce(&mut Entries) -> io::Result<T>) -> Result<T, StorageError> {
        let read = io_error("read", &self.path);
        let mut entries = match Entries::after_header(self.file, self.len) {
            Ok(entries) => entries,
            Err(e) => return Err(read(e)),
        };
        scan(&mut entries).map_err(read)
    }
}

impl State {
    fn journal(&self) -> PathBuf {
        self.dir.join(JOURNAL)
    }

    fn append(&mut self, entry: &[u8]) -> Result<(), StorageError> {
        let path = self.journal();
        if self.broken {
            return Err(StorageError::backend(
                BACKEND,
                format!(
                    "{}: an earlier append failed and could not be undone; reopen the store",
                    path.display()
                ),
            ));
        }
        if let Err(e) = self.file.write_all(entry) {
            // Cut what part of the entry got written, so the next entry follows a whole one.
            if self.file.set_len(self.len).is_err() {
                self.broken = true;
            }
            return Err(io_error("append", &path)(e));
        }
        self.len += entry.len() as u64;
        Ok(())
    }

    fn compaction_due(&self) -> bool {
        self.len > COMPACT_MIN && self.len > 2 * self.base
    }

    /// Rewrites the journal with its live records (see the module docs); `index` if the
    /// caller has it already.
    fn compact(&mut self, index: Option<Index>) -> Result<(), StorageError> {
        self.compact_hashed(index, path_hash)
    }

    /// [`compact`](Self::compact), indexing by `hash` if there is no `index` (tests pass
    /// one that collides).
    fn compact_hashed(&mut self, index: Option<Index>, hash: PathHash) -> Result<(), StorageError> {
        let result = self.try_compact(index, hash);
        if result.is_err() {
            let _ = fs::remove_file(self.dir.join(COMPACTING));
            // Not again on every append: once the journal has doubled again.
            self.base = self.len;
        }
        result
    }

    fn try_compact(&mut self, index: Option<Index>, hash: PathHash) -> Result<(), StorageError> {
        let journal = self.journal();
        let read = |op| io_error(op, &journal);
        let index = match index {
            Some(index) => index,
            None => {
                let file = File::open(&journal).map_err(read("open"))?;
                let mut entries = Entries::after_header(file, self.len).map_err(read("read"))?;
                index_entries(&mut entries, hash).map_err(read("read"))?
            }
        };
        let new = self.dir.join(COMPACTING);
        let mut out = BufWriter::with_capacity(
            SCAN_BUFFER,
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&new)
                .map_err(io_error("open", &new))?,
        );
        let file = File::open(&journal).map_err(read("open"))?;
        let mut entries = Entries::after_header(file, self.len).map_err(read("read"))?;
        let mut written = HEADER.len() as u64;
        out.write_all(HEADER).map_err(io_error("write", &new))?;
        let last = |offset: u64, path: &str| index.last_of(path) == Some(offset);
        while let Some(entry) = entries.next_entry(last).map_err(read("read"))? {
            if let Some(content) = entry.content {
                let put = put_entry(entry.head.path(), &content);
                out.write_all(&put).map_err(io_error("write", &new))?;
                written += put.len() as u64;
            }
        }
        let file = out
            .into_inner()
            .map_err(|e| io_error("write", &new)(e.into_error()))?;
        file.sync_data().map_err(io_error("fdatasync", &new))?;
        drop(file);
        // Until the new journal is open for appending, appends would go to the old file.
        self.broken = true;
        fs::rename(&new, &journal).map_err(io_error("rename", &new))?;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&journal)
            .map_err(read("open"))?;
        self.len = written;
        self.base = written;
        self.broken = false;
        Ok(())
    }
}

/// What a journal's first bytes say.
enum Header {
    Ours,
    /// Part of the header then zeros, or nothing: a journal a crash cut right after its
    /// creation, which starts over.
    Blank,
    /// Anything else, not ours to cut.
    Foreign,
}

fn check_header(file: &File, size: u64) -> io::Result<Header> {
    let mut reader = BufReader::with_capacity(SCAN_BUFFER, file);
    reader.seek(SeekFrom::Start(0))?;
    let mut start = Vec::with_capacity(HEADER.len());
    (&mut reader)
        .take(HEADER.len() as u64)
        .read_to_end(&mut start)?;
    if start == HEADER {
        return Ok(Header::Ours);
    }
    let matched = start.iter().zip(HEADER).take_while(|(a, b)| a == b).count();
    if start[matched..].iter().any(|&b| b != 0) {
        return Ok(Header::Foreign);
    }
    // The rest must be zeros too (a zero-filled tail); read in chunks, not at once.
    let mut rest = size.saturating_sub(start.len() as u64);
    while rest > 0 {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        if chunk.iter().any(|&b| b != 0) {
            return Ok(Header::Foreign);
        }
        let n = chunk.len();
        reader.consume(n);
        rest = rest.saturating_sub(n as u64);
    }
    Ok(Header::Blank)
}

/// Reads the entries of a journal whose header checked out, up to `size`: how many bytes
/// are whole entries (header included), and the index of them if `index_with` a hash.
fn replay(file: File, size: u64, index_with: Option<PathHash>) -> io::Result<(u64, Option<Index>)> {
    let mut entries = Entries::after_header(file, size)?;
    let mut index = index_with.map(Index::new);
    loop {
        match entries.next_entry(|_, _| false) {
            Ok(Some(entry)) => {
                if let Some(index) = &mut index {
                    index.add(entries.file(), &entry)?;
                }
            }
            Ok(None) => break,
            // A torn tail: everything before it is good.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => break,
            Err(e) => return Err(e),
        }
    }
    if let Some(index) = &mut index {
        index.finish(entries.file())?;
    }
    Ok((entries.pos, index))
}

fn index_entries(entries: &mut Entries, hash: PathHash) -> io::Result<Index> {
    let mut index = Index::new(hash);
    while let Some(entry) = entries.next_entry(|_, _| false)? {
        index.add(entries.file(), &entry)?;
    }
    index.finish(entries.file())?;
    Ok(index)
}

/// A 64-bit hash of a record path: [`path_hash`], or in tests one that collides.
type PathHash = fn(&str) -> u64;

/// The first 8 bytes of the path's SHA-256. Paths that share one are told apart by
/// reading their entries back (see [`Index`]), so a collision costs reads, not records.
fn path_hash(path: &str) -> u64 {
    let digest = Sha256::digest(path.as_bytes());
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// The offset an [`Index`] keeps for a hash that several paths have: their last entries
/// are in [`Index::shared`]. No entry starts there.
const SHARED: u64 = u64::MAX;
/// Slots of a block of [`Index::sorted`] (64 KiB), and the fewest of [`Index::recent`].
const BLOCK: usize = 4096;

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
struct Index {
    hash: PathHash,
    /// `(hash, offset)`, one per hash, sorted: the offset of the last entry of the path
    /// with that hash, or [`SHARED`]. In blocks of [`BLOCK`] slots (the last may hold
    /// fewer).
    sorted: Vec<Vec<(u64, u64)>>,
    sorted_len: usize,
    /// `(hash, offset)` of each entry added since the last merge.
    recent: Vec<(u64, u64)>,
    /// The paths whose hash another path of the journal has, with their last entry.
    shared: HashMap<String, Last>,
    /// Bytes of the puts no later entry of their path replaced: once finished, what a
    /// compaction would leave (without the header).
    live: u64,
    /// Buffer of read-back lines.
    line: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    offset: u64,
    /// The entry's length if it is a put, 0 for a delete.
    put_len: u64,
}

impl Index {
    fn new(hash: PathHash) -> Index {
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
    fn add(&mut self, file: &File, entry: &Entry) -> io::Result<()> {
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
    fn finish(&mut self, file: &File) -> io::Result<()> {
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
    fn last_of(&self, path: &str) -> Option<u64> {
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

#[derive(Debug)]
enum Head {
    Put { path: String, len: u64 },
    Delete { path: String },
}

impl Head {
    fn path(&self) -> &str {
        match self {
            Head::Put { path, .. } | Head::Delete { path } => path,
        }
    }
}

#[derive(Debug)]
struct Entry {
    offset: u64,
    /// Bytes of the whole entry.
    len: u64,
    head: Head,
    /// A put's content, when the caller asked for it.
    content: Option<Bytes>,
}

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

/// The entries of a journal, read in order from just after the header up to an end.
struct Entries {
    reader: BufReader<File>,
    /// Offset of the next entry.
    pos: u64,
    end: u64,
    line: Vec<u8>,
}

fn torn() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "an entry does not parse")
}

impl Entries {
    /// Entries of `file` (which starts with the header) up to `end`.
    fn after_header(mut file: File, end: u64) -> io::Result<Entries> {
        file.seek(SeekFrom::Start(HEADER.len() as u64))?;
        Ok(Entries {
            reader: BufReader::with_capacity(SCAN_BUFFER, file),
            pos: HEADER.len() as u64,
            end,
            line: Vec::new(),
        })
    }

    /// The journal, for positioned reads (which leave the scan's position alone).
    fn file(&self) -> &File {
        self.reader.get_ref()
    }

    /// The next entry; `None` at the end. A put's content is read if `want(offset, path)`
    /// and skipped otherwise. An entry that does not parse or does not end by `end` is an
    /// [`io::ErrorKind::InvalidData`] error.
    fn next_entry(&mut self, want: impl FnOnce(u64, &str) -> bool) -> io::Result<Option<Entry>> {
        let left = self.end.saturating_sub(self.pos);
        if left == 0 {
            return Ok(None);
        }
        self.line.clear();
        let n = (&mut self.reader)
            .take(left.min(MAX_LINE))
            .read_until(b'\n', &mut self.line)?;
        let Some(line) = self.line.strip_suffix(b"\n") else {
            return Err(torn());
        };
        let head = parse_head(line).ok_or_else(torn)?;
        let offset = self.pos;
        let mut len = n as u64;
        let mut content = None;
        if let Head::Put { path, len: size } = &head {
            // Content, then a newline, all before `end`.
            if len
                .checked_add(*size)
                .and_then(|l| l.checked_add(1))
                .is_none_or(|l| l > left)
            {
                return Err(torn());
            }
            if want(offset, path) {
                let mut data = Vec::new();
                (&mut self.reader).take(*size).read_to_end(&mut data)?;
                if data.len() as u64 != *size {
                    return Err(torn());
                }
                content = Some(Bytes::from(data));
            } else {
                let skip = i64::try_from(*size).map_err(|_| torn())?;
                self.reader.seek_relative(skip)?;
            }
            let mut newline = [0];
            match self.reader.read_exact(&mut newline) {
                Ok(()) if newline == *b"\n" => {}
                Ok(()) => return Err(torn()),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(torn()),
                Err(e) => return Err(e),
            }
            len += size + 1;
        }
        self.pos += len;
        Ok(Some(Entry {
            offset,
            len,
            head,
            content,
        }))
    }
}

/// An entry's first line, without its newline.
fn parse_head(line: &[u8]) -> Option<Head> {
    let (path, len) = split_line(line)?;
    validate_record_path(path).ok()?;
    let path = path.to_string();
    Some(match len {
        Some(len) => Head::Put { path, len },
        None => Head::Delete { path },
    })
}

/// An entry's first line, without its newline: the path (not checked), and the content's
/// length if it is a put.
fn split_line(line: &[u8]) -> Option<(&str, Option<u64>)> {
    let line = std::str::from_utf8(line).ok()?;
    if let Some(path) = line.strip_prefix("- ") {
        return Some((path, None));
    }
    let (path, len) = line.strip_prefix("+ ")?.rsplit_once(' ')?;
    Some((path, Some(len.parse().ok()?)))
}

fn put_entry(path: &str, content: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(path.len() + content.len() + 24);
    e.extend_from_slice(format!("+ {path} {}\n", content.len()).as_bytes());
    e.extend_from_slice(content);
    e.push(b'\n');
    e
}

fn delete_entry(path: &str) -> Vec<u8> {
    format!("- {path}\n").into_bytes()
}

/// `dir/`, or `""` for the top.
fn folder_prefix(dir: &str) -> String {
    if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    }
}

#[async_trait]
impl RecoveryLog for FsRecovery {
    async fn put_record(&self, path: &str, content: Bytes) -> Result<(), StorageError> {
        validate_record_path(path)?;
        self.append(put_entry(path, &content)).await
    }

    async fn get_record(&self, path: &str) -> Result<Option<Bytes>, StorageError> {
        validate_record_path(path)?;
        let path = path.to_string();
        self.scan(move |entries| {
            let mut found = None;
            while let Some(entry) = entries.next_entry(|_, p| p == path)? {
                if entry.head.path() == path {
                    found = entry.content;
                }
            }
            Ok(found)
        })
        .await
    }

    async fn list_records(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        validate_record_dir(dir)?;
        let prefix = folder_prefix(dir);
        self.scan(move |entries| {
            // Whether each path below `dir` is a record now.
            let mut live: BTreeMap<String, bool> = BTreeMap::new();
            while let Some(entry) = entries.next_entry(|_, _| false)? {
                let is_put = matches!(entry.head, Head::Put { .. });
                let path = match entry.head {
                    Head::Put { path, .. } | Head::Delete { path } => path,
                };
                if let Some(rest) = path.strip_prefix(&prefix) {
                    let rest = rest.to_string();
                    live.insert(rest, is_put);
                }
            }
            let names: BTreeSet<String> = live
                .into_iter()
                .filter(|(_, is)| *is)
                .map(|(rest, _)| match rest.split_once('/') {
                    Some((name, _)) => name.to_string(),
                    None => rest,
                })
                .collect();
            Ok(names.into_iter().collect())
        })
        .await
    }

    async fn delete_record(&self, path: &str) -> Result<(), StorageError> {
        validate_record_path(path)?;
        // Whether the record exists would take a scan; a delete of a missing one is a few
        // bytes that the next compaction drops.
        self.append(delete_entry(path)).await
    }

    async fn records_under(&self, dir: &str) -> Result<Vec<(String, Bytes)>, StorageError> {
        validate_record_dir(dir)?;
        let prefix = folder_prefix(dir);
        let dir = dir.to_string();
        self.scan(move |entries| {
            let below = |p: &str| p == dir || p.starts_with(&prefix);
            let mut records: BTreeMap<String, Option<Bytes>> = BTreeMap::new();
            while let Some(entry) = entries.next_entry(|_, p| below(p))? {
                if below(entry.head.path()) {
                    let path = match entry.head {
                        Head::Put { path, .. } | Head::Delete { path } => path,
                    };
                    records.insert(path, entry.content);
                }
            }
            Ok(records
                .into_iter()
                .filter_map(|(path, content)| Some((path, content?)))
                .collect())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries_of(data: &[u8]) -> Vec<io::Result<Option<Entry>>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        let mut all = HEADER.to_vec();
        all.extend_from_slice(data);
        fs::write(&path, &all).expect("write");
        let file = File::open(&path).expect("open");
        let mut entries = Entries::after_header(file, all.len() as u64).expect("entries");
        let mut out = Vec::new();
        loop {
            let next = entries.next_entry(|_, _| true);
            let stop = !matches!(next, Ok(Some(_)));
            out.push(next);
            if stop {
                return out;
            }
        }
    }

    #[test]
    fn entries_round_trip() {
        let mut data = put_entry("a/b", b"x\ny");
        data.extend_from_slice(&delete_entry("a/b"));
        let got = entries_of(&data);
        let [Ok(Some(put)), Ok(Some(del)), Ok(None)] = got.as_slice() else {
            panic!("{got:?}");
        };
        assert!(matches!(&put.head, Head::Put { path, len: 3 } if path == "a/b"));
        assert_eq!(put.content.as_deref(), Some(&b"x\ny"[..]));
        assert_eq!((put.offset, put.len), (HEADER.len() as u64, 12));
        assert!(matches!(&del.head, Head::Delete { path } if path == "a/b"));
        assert_eq!(del.offset, HEADER.len() as u64 + 12);
    }

    #[test]
    fn torn_entries_do_not_parse() {
        let e = put_entry("a/b", b"x\ny");
        for torn in [
            &e[..e.len() - 1],
            b"+ a/b 5\nab",
            b"+ a/b 2\nabc\n",
            b"\0\0\0\0",
            b"+ ../x 1\na\n",
            b"- a b\n",
            b"+ a/b 99999999999999999999999\n",
        ] {
            let got = entries_of(torn);
            assert!(
                matches!(got.as_slice(), [Err(e)] if e.kind() == io::ErrorKind::InvalidData),
                "{:?}: {got:?}",
                String::from_utf8_lossy(torn)
            );
        }
        // A line longer than any valid one is torn without being read whole.
        let long = vec![b'+'; 10 * MAX_LINE as usize];
        assert!(matches!(entries_of(&long).as_slice(), [Err(_)]));
    }

    /// Compaction keeps each live record's last put, in journal order, and nothing else,
    /// whether the paths' hashes differ, all collide, or some do (by length: `a/kept` and
    /// `a/back`).
    #[tokio::test]
    async fn compaction_keeps_exactly_the_live_records() {
        let hashes: [PathHash; 3] = [path_hash, |_| 7, |p| p.len() as u64];
        for hash in hashes {
            keeps_exactly_the_live_records(hash).await;
        }
    }

    async fn keeps_exactly_the_live_records(hash: PathHash) {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = FsRecovery::open(dir.path().to_path_buf()).expect("open");
        let put = |p: &'static str, c: &'static [u8]| {
            let log = log.clone();
            async move { log.put_record(p, Bytes::from_static(c)).await.expect("put") }
        };
        let delete = |p: &'static str| {
            let log = log.clone();
            async move { log.delete_record(p).await.expect("delete") }
        };
        put("a/kept", b"1").await;
        put("a/replaced", b"old").await;
        put("a/deleted", b"2").await;
        put("a/back", b"3").await;
        delete("a/back").await;
        put("a/replaced", b"new").await;
        delete("a/deleted").await;
        delete("a/never").await;
        put("a/back", b"4").await;
        let journal = dir.path().join(JOURNAL);
        let before = fs::metadata(&journal).expect("stat").len();

        log.state
            .lock()
            .await
            .compact_hashed(None, hash)
            .expect("compact");

        let mut expected = HEADER.to_vec();
        expected.extend_from_slice(&put_entry("a/kept", b"1"));
        expected.extend_from_slice(&put_entry("a/replaced", b"new"));
        expected.extend_from_slice(&put_entry("a/back", b"4"));
        let data = fs::read(&journal).expect("read");
        assert_eq!(
            String::from_utf8_lossy(&data),
            String::from_utf8_lossy(&expected)
        );
        assert!((data.len() as u64) < before);
        {
            let state = log.state.lock().await;
            assert_eq!(
                (state.len, state.base),
                (data.len() as u64, data.len() as u64)
            );
        }
        assert!(!dir.path().join(COMPACTING).exists());
        // Appends go on in the new journal.
        put("a/after", b"5").await;
        assert_eq!(
            log.records_under("a").await.expect("records_under"),
            [
                ("a/after".to_string(), Bytes::from_static(b"5")),
                ("a/back".to_string(), Bytes::from_static(b"4")),
                ("a/kept".to_string(), Bytes::from_static(b"1")),
                ("a/replaced".to_string(), Bytes::from_static(b"new")),
            ]
        );
        assert_eq!(log.get_record("a/deleted").await.expect("get"), None);
    }

    /// A lookup's snapshot taken before a compaction reads the old journal whole after
    /// the new one is renamed in (and appended to): the design lookups rely on.
    #[tokio::test]
    async fn a_snapshot_outlives_a_compaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = FsRecovery::open(dir.path().to_path_buf()).expect("open");
        for i in 0..20 {
            log.put_record(&format!("r/{}", i % 4), Bytes::from(format!("{i}")))
                .await
                .expect("put");
        }
        let before = log.snapshot().await.expect("snapshot");
        log.state.lock().await.compact(None).expect("compact");
        log.put_record("r/9", Bytes::from_static(b"late"))
            .await
            .expect("put");
        let after = log.snapshot().await.expect("snapshot");
        assert!(after.len < before.len, "the new journal is shorter");
        let all = |entries: &mut Entries| {
            let mut seen = BTreeMap::new();
            while let Some(e) = entries.next_entry(|_, _| true)? {
                seen.insert(e.head.path().to_string(), e.content);
            }
            Ok(seen)
        };
        let old = before.scan(all).expect("scan");
        let new = after.scan(all).expect("scan");
        let expected: BTreeMap<String, Option<Bytes>> = (16..20)
            .map(|i| (format!("r/{}", i % 4), Some(Bytes::from(format!("{i}")))))
            .collect();
        assert_eq!(old, expected);
        let mut expected = expected;
        expected.insert("r/9".to_string(), Some(Bytes::from_static(b"late")));
        assert_eq!(new, expected);
    }

    /// A journal opened above 4 MiB measures its live records: mostly dead, it is
    /// compacted right away, and a later one is due at twice the live size.
    #[test]
    fn open_compacts_a_mostly_dead_journal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut data = HEADER.to_vec();
        let content = vec![b'x'; 1000];
        while data.len() as u64 <= COMPACT_MIN {
            data.extend_from_slice(&put_entry("churn/link", &content));
        }
        data.extend_from_slice(&put_entry("kept/link", b"k"));
        fs::write(dir.path().join(JOURNAL), &data).expect("write");
        let log = FsRecovery::open(dir.path().to_path_buf()).expect("open");
        let mut expected = HEADER.to_vec();
        expected.extend_from_slice(&put_entry("churn/link", &content));
        expected.extend_from_slice(&put_entry("kept/link", b"k"));
        assert_eq!(fs::read(dir.path().join(JOURNAL)).expect("read"), expected);
        let state = log.state.try_lock().expect("unlocked");
        assert_eq!(state.base, expected.len() as u64);
    }

    /// Over entries enough for several merges of the index, with hashes that collide: in
    /// groups from the start (`p/`), and a path that first meets its hash's slot after a
    /// merge (`g/two`). The index finds each path's last entry and the live bytes, and
    /// compaction keeps exactly the last puts, in journal order.
    #[test]
    fn colliding_hashes_over_many_merges() {
        let hash: PathHash = |p| {
            if p.starts_with("g/") {
                100
            } else if p.starts_with("p/") {
                (p.len() % 3) as u64
            } else {
                path_hash(p)
            }
        };
        let mut paths: Vec<String> = (0..30)
            .map(|i| format!("p/{}{i}", "k".repeat(i % 4)))
            .chain((0..20).map(|i| format!("x/{i}")))
            .chain(["g/one".to_string()])
            .collect();
        let mut data = HEADER.to_vec();
        // Each path's last entry: its offset, and the entry if it is a put.
        let mut last: BTreeMap<String, (u64, Option<Vec<u8>>)> = BTreeMap::new();
        let mut r: u64 = 1;
        for step in 0..3 * BLOCK {
            if step == 2 * BLOCK {
                paths.push("g/two".to_string());
            }
            r = r
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let pick = (r >> 33) as usize;
            let path = &paths[pick % paths.len()];
            let entry = if pick.is_multiple_of(5) {
                (delete_entry(path), None)
            } else {
                let put = put_entry(path, format!("{step}").as_bytes());
                (put.clone(), Some(put))
            };
            last.insert(path.clone(), (data.len() as u64, entry.1));
            data.extend_from_slice(&entry.0);
        }
        assert!(last.contains_key("g/two") && last.len() == paths.len());
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = dir.path().join(JOURNAL);
        fs::write(&journal, &data).expect("write");

        let file = File::open(&journal).expect("open");
        let (good, index) = replay(file, data.len() as u64, Some(hash)).expect("replay");
        let index = index.expect("indexed");
        assert_eq!(good, data.len() as u64);
        for (path, (offset, _)) in &last {
            assert_eq!(index.last_of(path), Some(*offset), "{path}");
        }
        assert_eq!(index.last_of("p/never"), None);
        assert_eq!(index.last_of("x/never"), None);
        assert!(index.shared.contains_key("g/one") && index.shared.contains_key("g/two"));
        let mut live: Vec<(u64, Vec<u8>)> = last
            .into_values()
            .filter_map(|(offset, put)| Some((offset, put?)))
            .collect();
        assert_eq!(
            index.live,
            live.iter().map(|(_, put)| put.len() as u64).sum::<u64>()
        );

        let log = FsRecovery::open(dir.path().to_path_buf()).expect("open");
        log.state
            .try_lock()
            .expect("unlocked")
            .compact_hashed(None, hash)
            .expect("compact");
        live.sort();
        let mut expected = HEADER.to_vec();
        for (_, put) in live {
            expected.extend_from_slice(&put);
        }
        assert_eq!(
            String::from_utf8_lossy(&fs::read(&journal).expect("read")),
            String::from_utf8_lossy(&expected)
        );
    }
}
