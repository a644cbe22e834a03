//! Compaction (see [Compaction](super#compaction)): the journal rewritten with only its
//! live records.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use storage_traits::StorageError;

use super::entries::{Entries, HEADER, SCAN_BUFFER, put_entry};
use super::index::{Index, PathHash, path_hash};
use super::{COMPACTING, State};
use crate::error::io_error;
use crate::upload::sync_dir;

/// The journal as a compaction found it when it began: what its draft is made from.
pub(super) struct Source {
    dir: PathBuf,
    journal: PathBuf,
    /// Opened under the store's lock, so it reads the journal `len` belongs to.
    file: File,
    len: u64,
}

/// `journal.new` holding the live records of a [`Source`], written and synced; the entries
/// appended since the source was taken are copied in when it is swapped in.
pub(super) struct Draft {
    new: PathBuf,
    file: File,
    /// The journal's length the draft covers.
    upto: u64,
    /// Bytes in the draft, header included.
    written: u64,
}

impl State {
    /// Starts a compaction: no other starts until [`finish_compaction`](Self::finish_compaction).
    /// Under the store's lock.
    pub(super) fn begin_compaction(&mut self) -> Result<Source, StorageError> {
        let journal = self.journal();
        let file = File::open(&journal).map_err(io_error("open", &journal))?;
        self.compacting = true;
        Ok(Source {
            dir: self.dir.clone(),
            journal,
            file,
            len: self.len,
        })
    }

    /// Ends a compaction, swapping its draft in if it got one (see the [module
    /// docs](super#compaction)). Under the store's lock.
    pub(super) fn finish_compaction(
        &mut self,
        draft: Result<Draft, StorageError>,
    ) -> Result<(), StorageError> {
        self.compacting = false;
        let result = draft.and_then(|draft| self.swap_in(draft));
        if result.is_err() {
            let _ = fs::remove_file(self.dir.join(COMPACTING));
            // Not again on every append: once the journal has doubled again.
            self.base = self.len;
        }
        result
    }

    /// A whole compaction at once, the lock held throughout: when the store opens;
    /// `index` if the caller has it already.
    pub(super) fn compact(&mut self, index: Option<Index>) -> Result<(), StorageError> {
        self.compact_hashed(index, path_hash)
    }

    /// [`compact`](Self::compact), indexing by `hash` if there is no `index` (tests pass
    /// one that collides).
    fn compact_hashed(&mut self, index: Option<Index>, hash: PathHash) -> Result<(), StorageError> {
        let draft = self
            .begin_compaction()
            .and_then(|source| source.draft(index, hash));
        self.finish_compaction(draft)
    }

    /// Appends to the draft what the journal got since its source was taken, then renames
    /// it over the journal and appends there from now on.
    fn swap_in(&mut self, draft: Draft) -> Result<(), StorageError> {
        let Draft {
            new,
            mut file,
            upto,
            mut written,
        } = draft;
        let journal = self.journal();
        if self.len > upto {
            // Whole entries: `len` only ever stops at the end of one.
            let mut tail = File::open(&journal).map_err(io_error("open", &journal))?;
            tail.seek(SeekFrom::Start(upto))
                .map_err(io_error("seek", &journal))?;
            let copied = io::copy(&mut tail.take(self.len - upto), &mut file)
                .map_err(io_error("copy", &new))?;
            written += copied;
            file.sync_data().map_err(io_error("fdatasync", &new))?;
        }
        drop(file);
        fs::rename(&new, &journal).map_err(io_error("rename", &new))?;
        // The journal is the new file now: lookups read it up to `len`. Until it is open for
        // appending, `self.file` is the old one, so appends wait for a reopen of the store
        // if what follows fails.
        self.len = written;
        self.base = written;
        self.broken = true;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&journal)
            .map_err(io_error("open", &journal))?;
        self.broken = false;
        Ok(())
    }
}

impl Source {
    /// Writes the live records to `journal.new` and syncs it: the long part of a
    /// compaction, which runs without the store's lock.
    pub(super) fn draft(self, index: Option<Index>, hash: PathHash) -> Result<Draft, StorageError> {
        let read = |op| io_error(op, &self.journal);
        let index = match index {
            Some(index) => index,
            None => {
                let file = self.file.try_clone().map_err(read("open"))?;
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
        let mut entries = Entries::after_header(self.file, self.len).map_err(read("read"))?;
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
        Ok(Draft {
            new,
            file,
            upto: self.len,
            written,
        })
    }
}

fn index_entries(entries: &mut Entries, hash: PathHash) -> io::Result<Index> {
    let mut index = Index::new(hash);
    while let Some(entry) = entries.next_entry(|_, _| false)? {
        index.add(entries.file(), &entry)?;
    }
    index.finish(entries.file())?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use storage_traits::RecoveryLog as _;

    use super::*;
    use crate::recovery::entries::delete_entry;
    use crate::recovery::index::BLOCK;
    use crate::recovery::{COMPACT_MIN, FsRecovery, JOURNAL, replay};

    /// `(path, content)` pairs as `records_under` returns them.
    fn records(pairs: &[(&str, &'static [u8])]) -> Vec<(String, Bytes)> {
        pairs
            .iter()
            .map(|(path, content)| (path.to_string(), Bytes::from_static(content)))
            .collect()
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
            records(&[
                ("a/after", b"5"),
                ("a/back", b"4"),
                ("a/kept", b"1"),
                ("a/replaced", b"new")
            ])
        );
        assert_eq!(log.get_record("a/deleted").await.expect("get"), None);
    }

    /// Appends and lookups go on while a compaction copies the live records, and what
    /// they appended meanwhile is in the new journal, after the compacted records.
    #[tokio::test]
    async fn appends_during_a_compaction_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = FsRecovery::open(dir.path().to_path_buf()).expect("open");
        let put = |p: &'static str, c: &'static [u8]| {
            let log = log.clone();
            async move { log.put_record(p, Bytes::from_static(c)).await.expect("put") }
        };
        put("a/kept", b"1").await;
        put("a/replaced", b"old").await;
        put("a/replaced", b"new").await;
        put("a/gone", b"2").await;

        let source = log.state.lock().await.begin_compaction().expect("begin");
        assert!(log.state.lock().await.compacting);
        // The lock is free: these would wait forever if the compaction held it.
        put("a/later", b"3").await;
        log.delete_record("a/gone").await.expect("delete");
        put("a/replaced", b"newest").await;
        assert_eq!(
            log.get_record("a/later").await.expect("get"),
            Some(Bytes::from_static(b"3"))
        );
        let draft = source.draft(None, path_hash);
        log.state
            .lock()
            .await
            .finish_compaction(draft)
            .expect("finish");

        let mut expected = HEADER.to_vec();
        for (path, content) in [("a/kept", "1"), ("a/replaced", "new"), ("a/gone", "2")] {
            expected.extend_from_slice(&put_entry(path, content.as_bytes()));
        }
        expected.extend_from_slice(&put_entry("a/later", b"3"));
        expected.extend_from_slice(&delete_entry("a/gone"));
        expected.extend_from_slice(&put_entry("a/replaced", b"newest"));
        let data = fs::read(dir.path().join(JOURNAL)).expect("read");
        assert_eq!(
            String::from_utf8_lossy(&data),
            String::from_utf8_lossy(&expected)
        );
        {
            let state = log.state.lock().await;
            assert!(!state.compacting);
            assert_eq!(
                (state.len, state.base),
                (data.len() as u64, data.len() as u64)
            );
        }
        put("a/after", b"4").await;
        assert_eq!(
            log.records_under("a").await.expect("records_under"),
            records(&[
                ("a/after", b"4"),
                ("a/kept", b"1"),
                ("a/later", b"3"),
                ("a/replaced", b"newest")
            ])
        );
    }

    /// A compaction that fails leaves the journal as it was, and the next one is due only
    /// once the journal has doubled again.
    #[tokio::test]
    async fn a_failed_compaction_keeps_the_journal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = FsRecovery::open(dir.path().to_path_buf()).expect("open");
        log.put_record("a/kept", Bytes::from_static(b"1"))
            .await
            .expect("put");
        let before = fs::read(dir.path().join(JOURNAL)).expect("read");
        let failed = Err(StorageError::backend("fs", "disk full"));
        let mut state = log.state.lock().await;
        state.compacting = true;
        assert!(state.finish_compaction(failed).is_err());
        assert!(!state.compacting && state.base == state.len && !state.broken);
        drop(state);
        assert_eq!(fs::read(dir.path().join(JOURNAL)).expect("read"), before);
        log.put_record("a/more", Bytes::from_static(b"2"))
            .await
            .expect("appends go on");
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
