//! The [`RecoveryLog`] of [`FsBlobStore`](crate::FsBlobStore): one small file per record
//! under `root/recovery/`, written as a staging file renamed into place.
//!
//! No fsync: records are only read when the metadata database is lost, and the registry
//! writes one with every manifest push, so waiting for the disk would slow every push for
//! the benefit of a rare rebuild. The rename makes a replacement atomic for readers; a
//! machine crash (not a process crash: the page cache survives that) can lose the records
//! written in the last seconds before it (the kernel's writeback delay, about 30 s by
//! default on Linux) or leave a new one empty, which readers treat as no record.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use storage_traits::recovery::{valid_record_name, validate_record_dir, validate_record_path};
use storage_traits::{RecoveryLog, StorageError};

use crate::error::{blocking, io_error};

/// Staging files live here, inside the records' folder (so the rename stays on one file
/// system) under a name no record path can have (`~` is outside the path grammar), so
/// listings skip it.
const STAGING: &str = "~staging";

/// A rename can meet a folder that a concurrent delete just pruned; it is created again
/// and the rename retried this many times.
const RENAME_ATTEMPTS: usize = 4;

#[derive(Debug, Clone)]
pub(crate) struct FsRecovery {
    dir: PathBuf,
    /// Staging file names: unique within the process, and only one process writes a root.
    next: Arc<AtomicU64>,
}

impl FsRecovery {
    /// The records under `dir`. Staging files left by a crash are removed (one process per
    /// root, so none of them is being written).
    pub(crate) fn open(dir: PathBuf) -> Result<Self, StorageError> {
        let staging = dir.join(STAGING);
        match fs::remove_dir_all(&staging) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove", &staging)(e)),
        }
        fs::create_dir_all(&staging).map_err(io_error("mkdir", &staging))?;
        Ok(FsRecovery {
            dir,
            next: Arc::default(),
        })
    }

    fn path(&self, record: &str) -> Result<PathBuf, StorageError> {
        validate_record_path(record)?;
        Ok(self.dir.join(record))
    }
}

#[async_trait]
impl RecoveryLog for FsRecovery {
    async fn put_record(&self, path: &str, content: Bytes) -> Result<(), StorageError> {
        let target = self.path(path)?;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let staging = self
            .dir
            .join(STAGING)
            .join(format!("{}-{n}", std::process::id()));
        blocking(move || put(&staging, &target, &content)).await
    }

    async fn get_record(&self, path: &str) -> Result<Option<Bytes>, StorageError> {
        let path = self.path(path)?;
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(Some(Bytes::from(b))),
            // A parent that is a record, or a path that is a folder: no record there.
            Err(e) if absent(&e) || e.kind() == io::ErrorKind::IsADirectory => Ok(None),
            Err(e) => Err(io_error("read", &path)(e)),
        }
    }

    async fn list_records(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        validate_record_dir(dir)?;
        let path = self.dir.join(dir);
        blocking(move || {
            let entries = match fs::read_dir(&path) {
                Ok(e) => e,
                Err(e) if absent(&e) => return Ok(Vec::new()),
                Err(e) => return Err(io_error("read_dir", &path)(e)),
            };
            let mut names = Vec::new();
            for entry in entries {
                let entry = entry.map_err(io_error("read_dir", &path))?;
                if let Some(name) = entry.file_name().to_str().filter(|n| valid_record_name(n)) {
                    names.push(name.to_string());
                }
            }
            names.sort();
            Ok(names)
        })
        .await
    }

    async fn delete_record(&self, path: &str) -> Result<(), StorageError> {
        let path = self.path(path)?;
        let root = self.dir.clone();
        blocking(move || {
            match fs::remove_file(&path) {
                Ok(()) => {}
                // Nothing there, or a folder: no record to remove.
                Err(e) if absent(&e) || e.kind() == io::ErrorKind::IsADirectory => {
                    return Ok(());
                }
                Err(e) => return Err(io_error("remove", &path)(e)),
            }
            prune(&root, &path);
            Ok(())
        })
        .await
    }
}

fn put(staging: &Path, target: &Path, content: &[u8]) -> Result<(), StorageError> {
    let write = || -> io::Result<()> {
        let mut file = fs::File::create(staging)?;
        file.write_all(content)
    };
    if let Err(e) = write() {
        if e.kind() != io::ErrorKind::NotFound {
            return Err(io_error("write", staging)(e));
        }
        // Someone removed the staging folder since `open`.
        if let Some(dir) = staging.parent() {
            fs::create_dir_all(dir).map_err(io_error("mkdir", dir))?;
        }
        write().map_err(io_error("write", staging))?;
    }
    let Some(parent) = target.parent() else {
        return Err(io_error("rename", target)(io::Error::other(
            "record path has no parent",
        )));
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        fs::create_dir_all(parent).map_err(io_error("mkdir", parent))?;
        match fs::rename(staging, target) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < RENAME_ATTEMPTS => {}
            Err(e) => {
                let _ = fs::remove_file(staging);
                // Renaming a file over a folder: the path names a folder of records.
                return Err(io_error("rename", target)(e));
            }
        }
    }
}

/// Removes the folders above a deleted record that it left empty, up to (not including)
/// the records' root, so a deleted tag does not linger as an empty folder that a rebuild
/// would list. Stops at the first folder that still holds something (or fails to go).
fn prune(root: &Path, deleted: &Path) {
    for dir in deleted.ancestors().skip(1) {
        if dir == root || !dir.starts_with(root) {
            break;
        }
        if fs::remove_dir(dir).is_err() {
            break;
        }
    }
}

/// The path or one of its parents does not exist (or a parent is a file).
fn absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}
