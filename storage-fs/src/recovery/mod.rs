//! The [`RecoveryLog`] of [`FsBlobStore`](crate::FsBlobStore): an append-only journal,
//! `root/recovery/journal`, with no index in memory.
//!
//! Why not one file per record, as distribution lays out its links: on ext4 each new
//! record then costs a few directory and inode creations and a rename, and the registry
//! writes two records per manifest push; that was most of a push's CPU, where an append
//! costs about a microsecond (docs/performance.md, "Figures moved out of the code").
//!
//! # No index
//! The journal is the only copy of the records: the store keeps its length and nothing
//! per record, so its memory does not grow with the records (an index of them took about
//! 200 bytes per record, 18 MB for 110,000, with no bound). Puts and deletes only append.
//! A lookup (`get_record`, `list_records`, `records_under`) reads the journal once from
//! the start, on a blocking thread, keeping only its answer: a cost that grows with the
//! journal, acceptable because lookups are rare: a rebuild of the metadata (one
//! `records_under` for all of it) and deleting a manifest by digest (the tags naming it).
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
//! escaping. A record's state is its last entry. Written, parsed and read in order by
//! [`entries`].
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
//! is rewritten with only the live records, on a blocking thread, in two parts:
//!
//! 1. Without the store's lock (appends and lookups go on): one pass over the journal as
//!    it was when the compaction began finds the offset of each path's last entry, a
//!    second copies the puts that are last to `journal.new`, which is fsynced. This is the
//!    part that grows with the journal.
//! 2. Under the lock: the entries appended since the compaction began are copied to the
//!    end of `journal.new` as they are (each record's state is still its last entry), it is
//!    fsynced again and renamed over the journal, whose directory is fsynced. Other appends
//!    and lookups wait only for this part; the append that started the compaction waits
//!    for both (and gets its error, though its own entry was written).
//!
//! A crash leaves the old journal or the complete new one (a leftover `journal.new` is
//! removed on open). One compaction runs at a time. In [`compaction`].
//!
//! Splitting the compaction this way cut the longest wait of a concurrent append about
//! tenfold (docs/performance.md, "Figures moved out of the code").
//!
//! The first pass keeps a 64-bit hash of each path (the first 8 bytes of its SHA-256) and
//! the offset of its last entry, sorted by hash ([`Index`]). When a hash comes again, the
//! entry at the offset kept for it is read back (a positioned read of its first line) to
//! tell the same path from a collision; colliding paths are kept apart by whole path, so
//! a collision costs reads, never a record. That index is the only memory that grows with
//! the records, and only while it is used: during compaction and while a journal larger
//! than 4 MiB is opened (to measure its live records), freed after. Computed from its
//! layout: 16 bytes per path in the journal (live or deleted), at most 2 more for the
//! entries not yet merged, plus about 200 KiB, a third of the hash table of 128-bit hashes
//! it replaced; the read-backs, one per entry that a later one of its path replaces, cost
//! some time when paths repeat (docs/performance.md, "Figures moved out of the code").

mod compaction;
mod entries;
mod index;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use storage_traits::recovery::{validate_record_dir, validate_record_path};
use storage_traits::{RecoveryLog, StorageError};
use tokio::sync::Mutex;

use crate::error::{BACKEND, blocking, io_error};
use crate::upload::sync_dir;
use entries::{Entries, HEADER, Head, Header, check_header, delete_entry, put_entry};
use index::{Index, PathHash, path_hash};

const JOURNAL: &str = "journal";
const COMPACTING: &str = "journal.new";
/// Below this size the journal is never compacted.
const COMPACT_MIN: u64 = 4 * 1024 * 1024;

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
    /// A compaction has begun and not finished: no other begins.
    compacting: bool,
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
            compacting: false,
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
        let source = {
            let mut state = self.state.lock().await;
            // A small write to the page cache, no fsync: cheaper than handing it to a
            // blocking thread (see the module docs).
            state.append(&entry)?;
            if !state.compaction_due() {
                return Ok(());
            }
            state.begin_compaction()
        };
        // The lock is free while the live records are copied: other appends and lookups go
        // on (this one waits for the whole compaction). One blocking task for all of it, so
        // it finishes, and a later one can begin, even if this request is dropped; a panic
        // while drafting ends it like an error, rather than leaving `compacting` set.
        let shared = Arc::clone(&self.state);
        blocking(move || {
            let draft = source.and_then(|source| {
                std::panic::catch_unwind(AssertUnwindSafe(|| source.draft(None, path_hash)))
                    .unwrap_or_else(|_| {
                        Err(StorageError::backend(
                            BACKEND,
                            "journal compaction panicked",
                        ))
                    })
            });
            shared.blocking_lock().finish_compaction(draft)
        })
        .await
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
        !self.compacting && self.len > COMPACT_MIN && self.len > 2 * self.base
    }
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
