//! I/O failures become [`StorageError::Backend`] with the operation and path attached, so
//! the log says which file failed; the client sees only that the store is unavailable.

use std::io;
use std::path::{Path, PathBuf};

use storage_traits::StorageError;

pub(crate) const BACKEND: &str = "fs";

#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub(crate) struct FsError {
    op: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

/// `map_err(io_error("open", &path))`.
pub(crate) fn io_error(
    op: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> StorageError + use<> {
    let path = path.to_path_buf();
    move |source| StorageError::backend(BACKEND, FsError { op, path, source })
}

/// Runs blocking file system work off the async threads.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, StorageError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StorageError> + Send + 'static,
{
    joined(tokio::task::spawn_blocking(f)).await
}

/// The result of blocking work started earlier (see [`blocking`]); a panic in it is a
/// backend error.
pub(crate) async fn joined<T>(
    task: tokio::task::JoinHandle<Result<T, StorageError>>,
) -> Result<T, StorageError> {
    task.await.map_err(|e| StorageError::backend(BACKEND, e))?
}
