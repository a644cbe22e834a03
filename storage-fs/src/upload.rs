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

use bytes::Bytes;
use futures::StreamExt;
use storage_traits::{ByteStream, StorageError};
use tokio::sync::OwnedMutexGuard;

use crate::error::{BACKEND, blocking, io_error, joined};

/// Bytes gathered from the input stream before one `write` call. Small chunks are
/// gathered, since writing each would cost a system call and a thread hop apiece; chunks of
/// this size or more are written as they come, without a copy. Two blocks are held per
/// upload in flight (one being written while the next gathers, see [`Pipeline`]), so it is
/// kept small (peak memory: docs/performance.md). The registry binary reads bodies in
/// chunks of up to 128 KiB: the full ones are written without the gathering copy.
/// Larger blocks were faster at concurrency 1 but held more memory at concurrency 4
/// (docs/performance.md, "Figures moved out of the code").
const WRITE_BUFFER: usize = 128 * 1024;

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
    let (file, guard) = blocking(move || {
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
        let file = Arc::new(file);
        Ok((Writer { file, path }, guard))
    })
    .await?;

    let mut early = EarlySync::new(&file);
    let mut out = Pipeline::Idle(file, guard);
    // Grows to what the body needs, at most WRITE_BUFFER: a small body (a manifest's
    // copy) allocates its own size, not the whole buffer.
    let mut buf = Vec::new();
    let mut len = offset;
    while let Some(chunk) = data.next().await {
        // An input error is returned as it is (after the write in flight); bytes already
        // written stay, and the retry at the acknowledged offset truncates them.
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                let _ = out.finish().await;
                return Err(e);
            }
        };
        len += chunk.len() as u64;
        if !buf.is_empty() && buf.len() + chunk.len() > WRITE_BUFFER {
            early.wrote(buf.len());
            let full = std::mem::take(&mut buf);
            if let Some(Block::Gathered(spare)) = out.submit(Block::Gathered(full)).await? {
                buf = spare;
                buf.clear();
            }
        }
        if chunk.len() >= WRITE_BUFFER {
            // Written as it came, without a copy (and without doubling the buffer).
            early.wrote(chunk.len());
            if let Some(Block::Gathered(spare)) = out.submit(Block::Chunk(chunk)).await?
                && buf.capacity() == 0
            {
                buf = spare;
                buf.clear();
            }
        } else {
            // Vec's own doubling would take the buffer up to twice WRITE_BUFFER.
            let needed = buf.len() + chunk.len();
            if needed > buf.capacity() {
                let target = needed.max(buf.capacity() * 2).min(WRITE_BUFFER);
                buf.reserve_exact(target - buf.len());
            }
            buf.extend_from_slice(&chunk);
        }
        early.maybe_start().await?;
    }
    if !buf.is_empty() {
        out.submit(Block::Gathered(buf)).await?;
    }
    let (_file, guard) = out.finish().await?;
    early.wait().await?;
    drop(guard);
    Ok(len)
}

/// What one blocking `write_all` writes: the gathered buffer, or a chunk too large to
/// gather.
enum Block {
    Gathered(Vec<u8>),
    Chunk(Bytes),
}

impl AsRef<[u8]> for Block {
    fn as_ref(&self) -> &[u8] {
        match self {
            Block::Gathered(v) => v,
            Block::Chunk(b) => b,
        }
    }
}

type Written = Result<(Writer, SessionGuard, Block), StorageError>;

/// The session's file, with at most one block being written on the blocking pool while
/// the next one gathers: receiving and hashing the body overlap the writes. The guard
/// travels with the write (see the module docs).
enum Pipeline {
    Idle(Writer, SessionGuard),
    Writing(tokio::task::JoinHandle<Written>),
    /// While a submit is between the two, and after a write failed (its error is
    /// returned, and nothing is written after it).
    Gone,
}

impl Pipeline {
    /// Waits for the write in flight, if any, then starts writing `block`; returns the
    /// block that finished (for its buffer).
    async fn submit(&mut self, block: Block) -> Result<Option<Block>, StorageError> {
        let (w, guard, done) = match std::mem::replace(self, Pipeline::Gone) {
            Pipeline::Idle(w, guard) => (w, guard, None),
            Pipeline::Writing(write) => {
                let (w, guard, done) = joined(write).await?;
                (w, guard, Some(done))
            }
            Pipeline::Gone => return Err(gone()),
        };
        *self = Pipeline::Writing(tokio::task::spawn_blocking(move || {
            (&*w.file)
                .write_all(block.as_ref())
                .map_err(io_error("write", &w.path))?;
            Ok((w, guard, block))
        }));
        Ok(done)
    }

    /// Waits for the write in flight, if any.
    async fn finish(self) -> Result<(Writer, SessionGuard), StorageError> {
        match self {
            Pipeline::Idle(w, guard) => Ok((w, guard)),
            Pipeline::Writing(write) => joined(write).await.map(|(w, guard, _)| (w, guard)),
            Pipeline::Gone => Err(gone()),
        }
    }
}

/// A submit whose write failed leaves no file to write to; the session's upload fails with
/// that write's error, and nothing submits again.
fn gone() -> StorageError {
    StorageError::backend(BACKEND, "upload write after a failed write")
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
#[derive(Debug)]
struct EarlySync {
    /// The session's file, shared with the [`Writer`] that travels with the writes.
    file: Arc<File>,
    path: PathBuf,
    unsynced: usize,
    running: Option<tokio::task::JoinHandle<Result<(), StorageError>>>,
}

impl EarlySync {
    fn new(w: &Writer) -> EarlySync {
        EarlySync {
            file: Arc::clone(&w.file),
            path: w.path.clone(),
            unsynced: 0,
            running: None,
        }
    }

    fn wrote(&mut self, n: usize) {
        self.unsynced += n;
    }

    async fn maybe_start(&mut self) -> Result<(), StorageError> {
        if self.unsynced < SYNC_EVERY {
            return Ok(());
        }
        self.wait().await?;
        let file = Arc::clone(&self.file);
        let failed = io_error("fdatasync", &self.path);
        self.running = Some(tokio::task::spawn_blocking(move || {
            file.sync_data().map_err(failed)
        }));
        self.unsynced = 0;
        Ok(())
    }

    /// Waits for the sync still running, if any.
    async fn wait(&mut self) -> Result<(), StorageError> {
        match self.running.take() {
            None => Ok(()),
            Some(sync) => joined(sync).await,
        }
    }
}

#[derive(Debug)]
struct Writer {
    /// Shared with [`EarlySync`], which syncs through it while writes go on.
    file: Arc<File>,
    path: PathBuf,
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
        commit(&staging, &target)
    })
    .await
}

/// [`BlobStore::put_bytes`](storage_traits::BlobStore::put_bytes): the staging file
/// created, written, synced and committed in one trip to the blocking pool, where a
/// session takes three (start, write, finish), each opening the file again. The
/// registry stores every manifest's copy this way.
pub(crate) async fn put_bytes(
    staging: PathBuf,
    target: PathBuf,
    data: Bytes,
    guard: SessionGuard,
) -> Result<(), StorageError> {
    blocking(move || {
        let _guard = guard;
        // The same bytes are there already (the name is their digest).
        if fs::symlink_metadata(&target).is_ok() {
            return Ok(());
        }
        let written = File::create(&staging)
            .map_err(io_error("create", &staging))
            .and_then(|mut file| {
                file.write_all(&data).map_err(io_error("write", &staging))?;
                file.sync_data().map_err(io_error("fdatasync", &staging))
            })
            .and_then(|()| commit(&staging, &target));
        if written.is_err() {
            let _ = fs::remove_file(&staging);
        }
        written
    })
    .await
}

/// Renames the synced `staging` file to `target`, creating its directories, and makes the
/// new entries durable.
fn commit(staging: &Path, target: &Path) -> Result<(), StorageError> {
    let Some(dir) = target.parent() else {
        return Err(io_error("rename", target)(io::Error::other(
            "blob path has no parent",
        )));
    };
    // Usually only the fan-out directory is new; its algorithm directory too only if
    // someone removed it, or for an algorithm added after `open`.
    let created: Vec<&Path> = dir.ancestors().take(2).filter(|d| !d.exists()).collect();
    fs::create_dir_all(dir).map_err(io_error("mkdir", dir))?;
    fs::rename(staging, target).map_err(io_error("rename", staging))?;
    sync_dir(dir)?;
    // A new directory's own entry must be durable too.
    for new_dir in created {
        if let Some(parent) = new_dir.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use futures::stream::{self, StreamExt};

    use super::*;

    /// A request dropped while its block is being written (the client hung up) keeps the
    /// session's lock until that write is done, so whoever takes the lock next (the
    /// client's retry) finds the whole block on disk, never a write still landing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_write_keeps_the_lock_until_its_block_is_on_disk() {
        const BLOCK: usize = 64 * 1024 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session");
        let locks = Arc::new(SessionLocks::default());
        start(path.clone(), locks.lock("s").await).await.unwrap();
        // One large block, then a body that never goes on.
        let body = stream::once(async { Ok(Bytes::from(vec![7u8; BLOCK])) })
            .chain(stream::pending())
            .boxed();
        let write = write("s", path.clone(), locks.lock("s").await, 0, body);
        // Long enough to open the file and start the block, far shorter than writing it.
        let dropped = tokio::time::timeout(Duration::from_millis(3), write).await;
        assert!(dropped.is_err(), "the body never ends");
        let _next = locks.lock("s").await;
        assert_eq!(fs::metadata(&path).unwrap().len(), BLOCK as u64);
    }
}
