//! The [`RecoveryLog`] of [`FsBlobStore`](crate::FsBlobStore): an append-only journal,
//! `root/recovery/journal`, replayed into memory when the store opens.
//!
//! Why not one file per record, as distribution lays out its links: on ext4 each new
//! record then costs a few directory and inode creations and a rename, measured at
//! 0.2-0.45 ms of CPU each on the 2-core benchmark machine, and the registry writes two
//! records per manifest push, which took the push's CPU cost from about 1.3 to 2.2 ms. An
//! append costs about a microsecond. Records are few and small (a path and a digest), so
//! the whole set lives in memory (roughly 250 bytes per record) and lookups and listings
//! need no I/O.
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
//! escaping.
//!
//! # Durability
//! No fsync on writes: records are only read when the metadata database is lost, and an
//! fsync per manifest push is what the registry avoids. A process crash loses nothing (the
//! bytes are in the page cache); a machine crash can lose the entries of the last seconds
//! (the kernel's writeback delay, about 30 s by default on Linux). Replay stops at the
//! first entry that does not parse (a torn or zero-filled tail after such a crash) and
//! cuts the journal there. When the journal has grown to more than twice its live
//! records (and past 4 MiB) it is compacted: the live records are written to
//! `journal.new`, fsynced, and renamed over the journal, whose directory is fsynced, so a
//! crash during compaction leaves the old journal or the complete new one.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use storage_traits::recovery::{validate_record_dir, validate_record_path};
use storage_traits::{RecoveryLog, StorageError};
use tokio::sync::Mutex;

use crate::error::{BACKEND, blocking, io_error};
use crate::upload::sync_dir;

const HEADER: &[u8] = b"oci-registry recovery journal v1\n";
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
    file: File,
    /// Bytes of the journal, header included.
    len: u64,
    /// Bytes the live records would take in a compacted journal.
    live: u64,
    records: BTreeMap<String, Bytes>,
    /// A failed append could not be undone: the journal's tail is unknown, so nothing more
    /// is appended until the store is opened again (replay then cuts the tail).
    broken: bool,
}

impl FsRecovery {
    /// Opens (or creates) the journal in `dir` and replays it.
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
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(io_error("read", &path))?;
        let (records, good) = if data.is_empty() {
            file.write_all(HEADER).map_err(io_error("write", &path))?;
            sync_dir(&dir)?;
            (BTreeMap::new(), HEADER.len())
        } else {
            replay(&data, &path)?
        };
        if good < data.len() {
            file.set_len(good as u64)
                .map_err(io_error("truncate", &path))?;
        }
        let live = records.iter().map(|(p, c)| entry_len(p, c)).sum();
        let mut state = State {
            dir,
            file,
            len: good as u64,
            live,
            records,
            broken: false,
        };
        if state.compaction_due() {
            state.compact()?;
        }
        Ok(FsRecovery {
            state: Arc::new(Mutex::new(state)),
        })
    }

    async fn append(&self, entry: Vec<u8>, change: Change) -> Result<(), StorageError> {
        let mut state = Arc::clone(&self.state).lock_owned().await;
        // A small write to the page cache, no fsync: cheaper than handing it to a blocking
        // thread (see the module docs).
        state.append(&entry)?;
        match change {
            Change::Put(path, content) => {
                state.live += entry.len() as u64;
                if let Some(old) = state.records.insert(path.clone(), content) {
                    state.live -= entry_len(&path, &old);
                }
            }
            Change::Delete(path) => {
                if let Some(old) = state.records.remove(&path) {
                    state.live -= entry_len(&path, &old);
                }
            }
        }
        if state.compaction_due() {
            blocking(move || {
                let mut state = state;
                state.compact()
            })
            .await?;
        }
        Ok(())
    }
}

enum Change {
    Put(String, Bytes),
    Delete(String),
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
        self.len > COMPACT_MIN && self.len > 2 * (self.live + HEADER.len() as u64)
    }

    /// Writes the live records to a new journal and renames it over the old one (see the
    /// module docs for why this one is fsynced).
    fn compact(&mut self) -> Result<(), StorageError> {
        let new = self.dir.join(COMPACTING);
        let mut data = Vec::with_capacity(self.live as usize + HEADER.len());
        data.extend_from_slice(HEADER);
        for (path, content) in &self.records {
            data.extend_from_slice(&put_entry(path, content));
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&new)
            .map_err(io_error("open", &new))?;
        file.write_all(&data).map_err(io_error("write", &new))?;
        file.sync_data().map_err(io_error("fdatasync", &new))?;
        drop(file);
        let journal = self.journal();
        fs::rename(&new, &journal).map_err(io_error("rename", &new))?;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&journal)
            .map_err(io_error("open", &journal))?;
        self.len = data.len() as u64;
        self.broken = false;
        Ok(())
    }
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

fn entry_len(path: &str, content: &[u8]) -> u64 {
    // "+ " path " " digits "\n" content "\n"
    (path.len() + content.len() + content.len().to_string().len() + 5) as u64
}

/// The records a journal holds, and how many of its bytes parsed (the rest is a torn
/// tail). A journal of another format is an error, not something to cut.
fn replay(data: &[u8], path: &Path) -> Result<(BTreeMap<String, Bytes>, usize), StorageError> {
    if !data.starts_with(HEADER) {
        // A crash right after creation can leave a partial header; anything else is not
        // ours to cut.
        if HEADER.starts_with(data) || data.iter().all(|&b| b == 0) {
            return Ok((BTreeMap::new(), 0));
        }
        return Err(StorageError::backend(
            BACKEND,
            format!(
                "{} is not a recovery journal of this version (expected the header {:?})",
                path.display(),
                String::from_utf8_lossy(HEADER.trim_ascii_end())
            ),
        ));
    }
    let mut records = BTreeMap::new();
    let mut pos = HEADER.len();
    while pos < data.len() {
        match parse_entry(&data[pos..]) {
            Some((used, Change::Put(p, c))) => {
                records.insert(p, c);
                pos += used;
            }
            Some((used, Change::Delete(p))) => {
                records.remove(&p);
                pos += used;
            }
            None => break,
        }
    }
    Ok((records, pos))
}

/// One entry at the start of `data`: the change and its length in bytes.
fn parse_entry(data: &[u8]) -> Option<(usize, Change)> {
    let line_end = data.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&data[..line_end]).ok()?;
    if let Some(path) = line.strip_prefix("- ") {
        validate_record_path(path).ok()?;
        return Some((line_end + 1, Change::Delete(path.to_string())));
    }
    let (path, len) = line.strip_prefix("+ ")?.rsplit_once(' ')?;
    validate_record_path(path).ok()?;
    let len: usize = len.parse().ok()?;
    let start = line_end + 1;
    let end = start.checked_add(len)?;
    if data.get(end) != Some(&b'\n') {
        return None;
    }
    let content = Bytes::copy_from_slice(&data[start..end]);
    Some((end + 1, Change::Put(path.to_string(), content)))
}

#[async_trait]
impl RecoveryLog for FsRecovery {
    async fn put_record(&self, path: &str, content: Bytes) -> Result<(), StorageError> {
        validate_record_path(path)?;
        let entry = put_entry(path, &content);
        self.append(entry, Change::Put(path.to_string(), content))
            .await
    }

    async fn get_record(&self, path: &str) -> Result<Option<Bytes>, StorageError> {
        validate_record_path(path)?;
        Ok(self.state.lock().await.records.get(path).cloned())
    }

    async fn list_records(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        validate_record_dir(dir)?;
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let state = self.state.lock().await;
        let mut names: Vec<String> = Vec::new();
        let range = state
            .records
            .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded));
        for (path, _) in range {
            let Some(rest) = path.strip_prefix(&prefix) else {
                break; // past the folder: keys are sorted
            };
            let name = rest.split('/').next().unwrap_or(rest);
            if names.last().map(String::as_str) != Some(name) {
                names.push(name.to_string());
            }
        }
        // `b.c` sorts between `b-x` and `b/x` as a key, but after `b` as a name.
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn delete_record(&self, path: &str) -> Result<(), StorageError> {
        validate_record_path(path)?;
        if !self.state.lock().await.records.contains_key(path) {
            return Ok(());
        }
        self.append(delete_entry(path), Change::Delete(path.to_string()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let e = put_entry("a/b", b"x\ny");
        assert_eq!(e.len() as u64, entry_len("a/b", b"x\ny"));
        let Some((used, Change::Put(p, c))) = parse_entry(&e) else {
            panic!("put entry does not parse");
        };
        assert_eq!(
            (used, p.as_str(), c.as_ref()),
            (e.len(), "a/b", &b"x\ny"[..])
        );
        let d = delete_entry("a/b");
        assert!(matches!(parse_entry(&d), Some((n, Change::Delete(_))) if n == d.len()));
        // Torn entries do not parse.
        assert!(parse_entry(&e[..e.len() - 1]).is_none());
        assert!(parse_entry(b"+ a/b 5\nab").is_none());
        assert!(parse_entry(b"\0\0\0\0").is_none());
        assert!(parse_entry(b"+ ../x 1\na\n").is_none());
    }
}
