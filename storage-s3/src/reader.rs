//! [`S3BucketReader`]: read-only access to what another program keeps under a prefix of a
//! bucket, seen as a tree of `/`-separated folders.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use storage_traits::{ByteStream, StorageError};

use crate::client::Client;
use crate::config::S3Config;
use crate::layout::Layout;

/// Reads the objects under a prefix of a bucket as files in folders, for data another
/// program wrote: CNCF distribution's `s3` storage driver (whose `rootdirectory` is the
/// prefix), for `registry import --from s3://...`. It never writes.
///
/// Paths are relative to the prefix, `/`-separated, with no leading `/`. The same
/// configuration as [`S3BlobStore`](crate::S3BlobStore): [`S3Config`] or its URL form,
/// credentials from the environment and the shared AWS files, path-style addressing for
/// custom endpoints, the same timeouts and retries.
///
/// ```no_run
/// use storage_s3::S3BucketReader;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let old = S3BucketReader::from_url("s3://old-registry/registry?endpoint=http://127.0.0.1:8333")?;
/// for name in old.list_folder("docker/registry/v2/repositories").await? {
///     println!("{name}");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct S3BucketReader {
    client: Arc<Client>,
    layout: Layout,
}

impl S3BucketReader {
    /// A reader for `config`'s bucket and prefix. Reads credentials (and the region, if not
    /// set) from the environment and the shared AWS files; sends no request.
    pub fn new(config: S3Config) -> Result<Self, StorageError> {
        let layout = Layout::new(&config.prefix)?;
        let resolved = config.resolve()?;
        Ok(S3BucketReader {
            client: Arc::new(Client::new(&config, resolved)?),
            layout,
        })
    }

    /// [`S3Config::from_url`] then [`S3BucketReader::new`].
    pub fn from_url(url: &str) -> Result<Self, StorageError> {
        Self::new(S3Config::from_url(url)?)
    }

    /// The bucket read from.
    pub fn bucket(&self) -> &str {
        self.client.bucket_name()
    }

    /// The key prefix paths are relative to (empty, or ending in `/`).
    pub fn prefix(&self) -> &str {
        self.layout.prefix()
    }

    /// The names directly inside the folder `dir` (files and sub-folders alike), sorted;
    /// empty if nothing is stored below it. `""` is the prefix itself.
    pub async fn list_folder(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        let dir = dir.trim_matches('/');
        let prefix = if dir.is_empty() {
            self.layout.prefix().to_string()
        } else {
            format!("{}{dir}/", self.layout.prefix())
        };
        let (objects, folders) = self.client.list_folder(&prefix).await?;
        let mut names: Vec<String> = objects
            .into_iter()
            .chain(folders)
            .filter(|n| !n.contains('/'))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The whole content of the object at `path` (meant for small ones), `None` if it does
    /// not exist.
    pub async fn read(&self, path: &str) -> Result<Option<Bytes>, StorageError> {
        let Some((_, stream)) = self.open(path).await? else {
            return Ok(None);
        };
        let chunks: Vec<Bytes> = stream.try_collect().await?;
        Ok(Some(Bytes::from(chunks.concat())))
    }

    /// The object at `path`, streamed, with its size; `None` if it does not exist. The
    /// stream yields exactly that many bytes or ends with an error.
    pub async fn open(&self, path: &str) -> Result<Option<(u64, ByteStream)>, StorageError> {
        let key = self.key(path)?;
        self.client.get(&key, None).await
    }

    fn key(&self, path: &str) -> Result<String, StorageError> {
        let path = path.trim_start_matches('/');
        if path.is_empty() || path.ends_with('/') {
            return Err(StorageError::backend(
                crate::error::BACKEND,
                format!("{path:?} is not a file path"),
            ));
        }
        Ok(format!("{}{path}", self.layout.prefix()))
    }
}
