//! Upload sessions: a staging file per session, written in large blocking writes and
//! committed by fsync + rename + fsync of the directory.
//!
//! Every operation on a session holds that session's lock, and a write hands the lock to
//! each blocking write it starts. If the caller's future is dropped (a client hung up),
//! the write already running still finishes before the lock is released, so the client's
//! retry can never be overtaken by a stale write landing after its truncate. A `tokio::fs`
//! file would keep writing in the background with no such ordering.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use storage_traits::{ByteStream, StorageError};
use tokio::sync::OwnedMutexGuard;

use crate::error::{BACKEND, blocking, io_error};

/// Bytes gathered from the input stream before one `write` call. Small chunks are
/// gathered, since writing each would cost a system call and a thread hop apiece; chunks of
/// this size or more are written as they come, without a copy. Held per upload in flight,
/// so it is kept small (peak memory: docs/performance.md, round 4). The registry binary
/// reads bodies in chunks of up to 128 KiB, so two are gathered per write: at 128 KiB (one
/// write per chunk, no copy) a 64 MiB push at c=1 took 86-91 ms of CPU against 75-80 ms
/// at 256 KiB (three alternating runs each).
const WRITE_BUFFER: usize = 256 * 1024;

/// One async mutex per session id that is in use.
#[derive(Debug, Default)]
pub(crate) struct SessionLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl SessionLocks {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        // The map is never left half-updated by a panic, so a poisoned lock is still good.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) async fn lock(self: &Arc<Self>, id: &str) -> SessionGuard {
        let mutex = Arc::clone(self.map().entry(id.to_string()).or_default());
        let guard = mutex.lock_owned().await;
        SessionGuard {
            locks: Arc::clone(self),
            id: id.to_string(),
            guard: Some(guard),
        }
    }
}

/// Holds a session's lock; forgets the session's mutex when nobody else wants it.
#[derive(Debug)]
pub(crate) struct SessionGuard {
    locks: Arc<SessionLocks>,
    id: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.map();
        // Only the map's own reference left: no holder, no waiter.
        if map.get(&self.id).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&self.id);
        }
    }
}

fn not_found_as_upload(
    id: &str,
    op: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> StorageError + use<> {
    let id = id.to_string();
    let to_backend = io_error(op, path);
    move |e| match e.kind() {
        io::ErrorKind::NotFound => StorageError::UploadNotFound(id),
        _ => to_backend(e),
    }
}

/// Creates (or restarts) the session's empty staging file.
pub(crate) async fn start(path: PathBuf, guard: SessionGuard) -> Result<(), StorageError> {
    blocking(move || {
        let _guard = guard;
        File::create(&path).map_err(io_error("create", &path))?;
        Ok(())
    })
    .await
}

/// Writes `data` at `offset`, discarding what the session held past it; returns the new
/// length. Durability is established in [`finish`]; the early syncs of a large body
/// ([`EarlySync`]) only make that final sync shorter.
pub(crate) async fn write(
    id: &str,
    path: PathBuf,
    guard: SessionGuard,
    offset: u64,
    mut data: ByteStream,
) -> Result<u64, StorageError> {
    let on_open = not_found_as_upload(id, "open", &path);
    let (mut file, mut guard) = blocking(move || {
        let mut file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(on_open)?;
        let len = file.metadata().map_err(io_error("stat", &path))?.len();
        if offset > len {
            return Err(StorageError::InvalidOffset {
                expected: len,
                got: offset,
            });
        }
        file.set_len(offset).map_err(io_error("truncate", &path))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(io_error("seek", &path))?;
        Ok((Writer { file, path }, guard))
    })
    .await?;

    // Grows to what the body needs, at most WRITE_BUFFER: a small body (a manifest's
    // copy) allocates its own size, not the whole buffer.
    let mut buf = Vec::new();
    let mut len = offset;
    let mut early = EarlySync::default();
    while let Some(chunk) = data.next().await {
        // An input error is returned as it is; bytes already written stay, and the retry
        // at the acknowledged offset truncates them.
        let chunk = chunk?;
        len += chunk.len() as u64;
        if !buf.is_empty() && buf.len() + chunk.len() > WRITE_BUFFER {
            early.wrote(buf.len());
            (file, guard, buf) = write_block(file, guard, buf).await?;
            buf.clear();
        }
        if chunk.len() >= WRITE_BUFFER {
            // Written as it came, without a copy (and without doubling the buffer).
            early.wrote(chunk.len());
            (file, guard, _) = write_block(file, guard, chunk).await?;
        } else {
            // Vec's own doubling would take the buffer up to twice WRITE_BUFFER.
            let needed = buf.len() + chunk.len();
            if needed > buf.capacity() {
                let target = needed.max(buf.capacity() * 2).min(WRITE_BUFFER);
                buf.reserve_exact(target - buf.len());
            }
            buf.extend_from_slice(&chunk);
        }
        early.maybe_start(&file).await?;
    }
    if !buf.is_empty() {
        (file, guard, _) = write_block(file, guard, buf).await?;
    }
    early.wait(&file).await?;
    drop(guard);
    Ok(len)
}

/// Bytes written between two early syncs.
const SYNC_EVERY: usize = 8 * 1024 * 1024;

/// Syncs that run while a large body is still arriving. Dirty pages are otherwise left to
/// the single `fdatasync` in [`finish`], which then writes the whole blob while the client
/// waits; started every [`SYNC_EVERY`] bytes on a second descriptor, the disk writes one
/// part while the next arrives. At most one runs at a time (a slower disk slows the
/// upload rather than piling up syncs), and an error fails the write: `finish` syncs
/// through a new descriptor, which would not hear of an error reported here. A sync
/// changes no bytes, so unlike a write it does not need the session's lock.
#[derive(Debug, Default)]
struct EarlySync {
    unsynced: usize,
    running: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

impl EarlySync {
    fn wrote(&mut self, n: usize) {
        self.unsynced += n;
    }

    async fn maybe_start(&mut self, w: &Writer) -> Result<(), StorageError> {
        if self.unsynced < SYNC_EVERY {
            return Ok(());
        }
        self.wait(w).await?;
        let file = w.file.try_clone().map_err(io_error("dup", &w.path))?;
        self.running = Some(tokio::task::spawn_blocking(move || file.sync_data()));
        self.unsynced = 0;
        Ok(())
    }

    /// Waits for the sync still running, if any.
    async fn wait(&mut self, w: &Writer) -> Result<(), StorageError> {
        match self.running.take() {
            None => Ok(()),
            Some(sync) => sync
                .await
                .map_err(|e| StorageError::backend(BACKEND, e))?
                .map_err(io_error("fdatasync", &w.path)),
        }
    }
}

#[derive(Debug)]
struct Writer {
    file: File,
    path: PathBuf,
}

/// One blocking `write_all` of `data` (the gathered buffer, or a chunk too large to
/// gather), handed back for reuse; the guard travels with it (see the module docs).
async fn write_block<B>(
    mut w: Writer,
    guard: SessionGuard,
    data: B,
) -> Result<(Writer, SessionGuard, B), StorageError>
where
    B: AsRef<[u8]> + Send + 'static,
{
    blocking(move || {
        w.file
            .write_all(data.as_ref())
            .map_err(io_error("write", &w.path))?;
        Ok((w, guard, data))
    })
    .await
}

/// Makes the session's bytes the blob at `target`: fdatasync the staging file, rename it
/// into place, fsync the directory that gained the entry. If `target` exists it holds the
/// same bytes (the name is their digest), so it is kept and the session is discarded.
pub(crate) async fn finish(
    id: &str,
    staging: PathBuf,
    target: PathBuf,
    size: u64,
    guard: SessionGuard,
) -> Result<(), StorageError> {
    let on_open = not_found_as_upload(id, "open", &staging);
    let id = id.to_string();
    blocking(move || {
        let _guard = guard;
        let file = OpenOptions::new()
            .write(true)
            .open(&staging)
            .map_err(on_open)?;
        let held = file.metadata().map_err(io_error("stat", &staging))?.len();
        if held != size {
            return Err(StorageError::Conflict(format!(
                "upload {id} holds {held} bytes, not the {size} being finished"
            )));
        }
        if fs::symlink_metadata(&target).is_ok() {
            drop(file);
            return fs::remove_file(&staging).map_err(io_error("remove", &staging));
        }
        file.sync_data().map_err(io_error("fdatasync", &staging))?;
        drop(file);

        let Some(dir) = target.parent() else {
            return Err(io_error("rename", &target)(io::Error::other(
                "blob path has no parent",
            )));
        };
        // Usually only the fan-out directory is new; its algorithm directory too only if
        // someone removed it, or for an algorithm added after `open`.
        let created: Vec<&Path> = dir.ancestors().take(2).filter(|d| !d.exists()).collect();
        fs::create_dir_all(dir).map_err(io_error("mkdir", dir))?;
        fs::rename(&staging, &target).map_err(io_error("rename", &staging))?;
        sync_dir(dir)?;
        // A new directory's own entry must be durable too.
        for new_dir in created {
            if let Some(parent) = new_dir.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(())
    })
    .await
}

/// Removes the staging file; a session that is already gone is fine.
pub(crate) async fn abort(path: PathBuf, guard: SessionGuard) -> Result<(), StorageError> {
    blocking(move || {
        let _guard = guard;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", &path)(e)),
        }
    })
    .await
}

/// Makes a directory's entries (a rename, a new subdirectory) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error("fsync", dir))
    }
    // Other systems cannot open a directory as a file; their rename is as durable as it gets.
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
