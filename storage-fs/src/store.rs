//! [`FsBlobStore`] and its [`BlobStore`] implementation.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use oci_spec_types::Digest;
use storage_traits::{
    BlobCapabilities, BlobInfo, BlobStore, ByteStream, GetRange, GetResult, RecoveryLog,
    StorageError,
};
use tokio::sync::mpsc;

use crate::error::io_error;
use crate::file_range;
use crate::layout::{ALGORITHMS, Layout};
use crate::recovery::FsRecovery;
use crate::upload::{self, SessionLocks, sync_dir};

/// Digests found by `list` waiting for the consumer; bounds the walker's lead.
const LIST_CHANNEL: usize = 1024;

/// A blob store in a local directory. See the [crate docs](crate) for the layout and the
/// durability guarantees.
///
/// Clones share the upload-session locks. Open one store per root in a process: two
/// stores opened separately on the same root do not coordinate concurrent requests of one
/// session (the registry serialises them anyway through its metadata store).
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    layout: Layout,
    locks: Arc<SessionLocks>,
    recovery: FsRecovery,
}

impl FsBlobStore {
    /// Opens the store at `root`, creating the directories it needs.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let layout = Layout::new(root.into());
        let mut dirs = vec![layout.uploads_dir()];
        dirs.extend(ALGORITHMS.map(|a| layout.algorithm_dir(a)));
        for dir in &dirs {
            fs::create_dir_all(dir).map_err(io_error("mkdir", dir))?;
        }
        // Make the new directories' entries durable before any blob is committed in them.
        for dir in [layout.blobs_dir().as_path(), layout.root()] {
            sync_dir(dir)?;
        }
        let recovery = FsRecovery::open(layout.recovery_dir())?;
        Ok(FsBlobStore {
            layout,
            locks: Arc::default(),
            recovery,
        })
    }

    /// The folder the store was opened on.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// After a blob was not found: an error if the store's `blobs` folder itself is gone (a
    /// volume unmounted or a root deleted under the running registry), so the registry
    /// answers 503 and its readiness check fails, instead of calling every blob unknown.
    /// One more `stat`, on misses only.
    async fn folder_gone(&self) -> Option<StorageError> {
        let dir = self.layout.blobs_dir();
        match tokio::fs::metadata(&dir).await {
            Ok(m) if m.is_dir() => None,
            Ok(_) => Some(io_error("stat", &dir)(io::Error::other(
                "the blob store's blobs folder is not a folder",
            ))),
            Err(e) => Some(io_error("stat", &dir)(e)),
        }
    }

    /// Where the blob `digest` is (or would be) stored.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.layout.blob_path(digest)
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<BlobInfo>, StorageError> {
        let path = self.layout.blob_path(digest);
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(BlobInfo::new(m.len()))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match self.folder_gone().await {
                Some(gone) => Err(gone),
                None => Ok(None),
            },
            Err(e) => Err(io_error("stat", &path)(e)),
        }
    }

    async fn get(
        &self,
        digest: &Digest,
        range: Option<GetRange>,
    ) -> Result<GetResult, StorageError> {
        let path = self.layout.blob_path(digest);
        // The size of the file we hold open: blobs are immutable, and a concurrent delete
        // only unlinks the name.
        let (file, size) = match open_with_len(path.clone()).await {
            Ok(opened) => opened,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(self
                    .folder_gone()
                    .await
                    .unwrap_or_else(|| StorageError::NotFound(digest.clone())));
            }
            Err(e) => return Err(io_error("open", &path)(e)),
        };
        let range = match range {
            None => 0..size,
            Some(r) => r
                .resolve(size)
                .ok_or(StorageError::RangeNotSatisfiable { size })?,
        };
        Ok(GetResult {
            size,
            range: range.clone(),
            stream: file_range::stream(file, range, path),
        })
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StorageError> {
        let path = self.layout.blob_path(digest);
        // The fan-out directory stays: removing it could race a commit into it.
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", &path)(e)),
        }
    }

    fn list(&self) -> BoxStream<'static, Result<Digest, StorageError>> {
        let layout = self.layout.clone();
        // The walk starts on first poll, so `list` needs no runtime when called, and runs
        // on a blocking thread with `std::fs::read_dir`, which streams a large directory
        // without collecting it. Dropping the stream stops the walk.
        stream::once(async move {
            let (tx, rx) = mpsc::channel(LIST_CHANNEL);
            tokio::task::spawn_blocking(move || walk_blobs(&layout, &tx));
            stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            })
        })
        .flatten()
        .boxed()
    }

    async fn start_upload(&self, id: &str) -> Result<(), StorageError> {
        let path = self.layout.upload_path(id)?;
        upload::start(path, self.locks.lock(id).await).await
    }

    async fn write_upload(
        &self,
        id: &str,
        offset: u64,
        data: ByteStream,
    ) -> Result<u64, StorageError> {
        let path = self.layout.upload_path(id)?;
        upload::write(id, path, self.locks.lock(id).await, offset, data).await
    }

    async fn read_upload(&self, id: &str) -> Result<ByteStream, StorageError> {
        let path = self.layout.upload_path(id)?;
        let (file, len) = {
            let _guard = self.locks.lock(id).await;
            match open_with_len(path.clone()).await {
                Ok(opened) => opened,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(StorageError::UploadNotFound(id.to_string()));
                }
                Err(e) => return Err(io_error("open", &path)(e)),
            }
        };
        // The length at the time of the call: a later write does not extend this read.
        Ok(file_range::stream(file, 0..len, path))
    }

    async fn finish_upload(
        &self,
        id: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), StorageError> {
        let staging = self.layout.upload_path(id)?;
        let target = self.layout.blob_path(digest);
        upload::finish(id, staging, target, size, self.locks.lock(id).await).await
    }

    async fn put_bytes(
        &self,
        id: &str,
        digest: &Digest,
        data: bytes::Bytes,
    ) -> Result<(), StorageError> {
        let staging = self.layout.upload_path(id)?;
        let target = self.layout.blob_path(digest);
        upload::put_bytes(staging, target, data, self.locks.lock(id).await).await
    }

    async fn abort_upload(&self, id: &str) -> Result<(), StorageError> {
        let path = self.layout.upload_path(id)?;
        upload::abort(path, self.locks.lock(id).await).await
    }

    /// One process per root (sessions are claimed with in-process locks), and no URL
    /// reaches a local file: nothing shared, nothing presigned.
    fn capabilities(&self) -> BlobCapabilities {
        BlobCapabilities::default()
    }

    /// Records under `root/recovery/`, not fsynced (see the [crate docs](crate)).
    fn recovery(&self) -> Option<&dyn RecoveryLog> {
        Some(&self.recovery)
    }
}

/// Sends every blob under `blobs/<algorithm>/<xx>/` to `tx`. Algorithm directories are
/// found, not assumed, so blobs of an algorithm added later are listed too. Names that are
/// not a digest filed in its own fan-out directory are not blobs this store wrote, and
/// are skipped.
fn walk_blobs(layout: &Layout, tx: &mpsc::Sender<Result<Digest, StorageError>>) {
    let fail = |e: StorageError| {
        let _ = tx.blocking_send(Err(e));
    };
    let blobs = layout.blobs_dir();
    let algorithms = match fs::read_dir(&blobs) {
        Ok(a) => a,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => return fail(io_error("read_dir", &blobs)(e)),
    };
    for algorithm in algorithms {
        let algorithm = match algorithm {
            Ok(a) => a,
            Err(e) => return fail(io_error("read_dir", &blobs)(e)),
        };
        let Some(algorithm_name) = algorithm.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let dir = algorithm.path();
        let prefixes = match read_dir_if_dir(&dir) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) => return fail(e),
        };
        for prefix in prefixes {
            let prefix = match prefix {
                Ok(p) => p,
                Err(e) => return fail(io_error("read_dir", &dir)(e)),
            };
            let prefix_name = prefix.file_name();
            let Some(prefix_name) = prefix_name.to_str().filter(|n| n.len() == 2) else {
                continue;
            };
            let prefix_path = prefix.path();
            let entries = match read_dir_if_dir(&prefix_path) {
                Ok(Some(e)) => e,
                Ok(None) => continue,
                Err(e) => return fail(e),
            };
            for entry in entries {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => return fail(io_error("read_dir", &prefix_path)(e)),
                };
                let name = entry.file_name();
                let Some(hex) = name.to_str().filter(|h| h.starts_with(prefix_name)) else {
                    continue;
                };
                let Ok(digest) = format!("{algorithm_name}:{hex}").parse::<Digest>() else {
                    continue;
                };
                if !entry.file_type().is_ok_and(|t| t.is_file()) {
                    continue;
                }
                if tx.blocking_send(Ok(digest)).is_err() {
                    return; // the consumer dropped the stream
                }
            }
        }
    }
}

/// `read_dir`, or `None` for something that is not a directory or is gone since its
/// parent was listed (a concurrent delete).
fn read_dir_if_dir(dir: &Path) -> Result<Option<fs::ReadDir>, StorageError> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(Some(entries)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(io_error("read_dir", dir)(e)),
    }
}

/// Opens `path` for reading and reads its length, in one trip to the blocking pool.
async fn open_with_len(path: PathBuf) -> io::Result<(fs::File, u64)> {
    tokio::task::spawn_blocking(move || {
        let file = open_for_reading(&path)?;
        let len = file.metadata()?.len();
        Ok((file, len))
    })
    .await
    .map_err(io::Error::other)?
}

/// Opens `path` read-only, on Linux with `O_NOATIME`: nothing reads a blob's access time,
/// and without the flag the first read of a new blob updates it (`relatime`), a write of
/// the inode that would start from the read on the async thread (see `file_range`). The
/// flag is refused (`EPERM`) for a file this process does not own; that opens as usual.
fn open_for_reading(path: &Path) -> io::Result<fs::File> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::RDONLY | OFlags::NOATIME | OFlags::CLOEXEC;
        match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(fd) => return Ok(fs::File::from(fd)),
            Err(rustix::io::Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
    }
    fs::File::open(path)
}
