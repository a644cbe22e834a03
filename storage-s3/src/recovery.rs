//! The [`RecoveryLog`] of [`S3BlobStore`](crate::S3BlobStore): one small object per record
//! under `<prefix>/recovery/`.
//!
//! A `PUT` replaces an object atomically and S3 has read-after-write consistency, so a
//! record is durable and visible to every replica once `put_record` returns. Folders are
//! key prefixes, listed with `ListObjectsV2` and a `/` delimiter: a folder exists exactly
//! while a record below it does, so nothing needs pruning after a delete.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use storage_traits::recovery::{valid_record_name, validate_record_dir, validate_record_path};
use storage_traits::{RecoveryLog, StorageError};

use crate::client::{Body, Client};

/// Record `GET`s in flight at once in `records_under`.
const GETS_AT_ONCE: usize = 8;

#[derive(Debug, Clone)]
pub(crate) struct S3Recovery {
    client: Arc<Client>,
    /// `<prefix>recovery/`.
    root: String,
}

impl S3Recovery {
    pub(crate) fn new(client: Arc<Client>, root: String) -> Self {
        S3Recovery { client, root }
    }

    fn key(&self, path: &str) -> Result<String, StorageError> {
        validate_record_path(path)?;
        Ok(format!("{}{path}", self.root))
    }
}

#[async_trait]
impl RecoveryLog for S3Recovery {
    async fn put_record(&self, path: &str, content: Bytes) -> Result<(), StorageError> {
        let key = self.key(path)?;
        self.client.put(&key, &Body::Bytes(content)).await
    }

    async fn get_record(&self, path: &str) -> Result<Option<Bytes>, StorageError> {
        let key = self.key(path)?;
        let Some((_, stream)) = self.client.get(&key, None).await? else {
            return Ok(None);
        };
        let chunks: Vec<Bytes> = stream.try_collect().await?;
        Ok(Some(Bytes::from(chunks.concat())))
    }

    async fn list_records(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        validate_record_dir(dir)?;
        let prefix = if dir.is_empty() {
            self.root.clone()
        } else {
            format!("{}{dir}/", self.root)
        };
        let (objects, folders) = self.client.list_folder(&prefix).await?;
        // Objects this store did not write (another tool's, a folder marker) may have
        // names outside the record grammar: they are no records.
        let mut names: Vec<String> = objects
            .into_iter()
            .filter(|n| valid_record_name(n))
            .collect();
        for folder in folders.into_iter().filter(|n| valid_record_name(n)) {
            // A folder whose records were all deleted can linger on servers that keep
            // folders as entries (SeaweedFS); it holds no record, so it is not listed.
            if self.client.any_key(&format!("{prefix}{folder}/")).await? {
                names.push(folder);
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn delete_record(&self, path: &str) -> Result<(), StorageError> {
        let key = self.key(path)?;
        self.client.delete(&key).await
    }

    /// One paginated listing of every key below `dir` (not a listing per folder, as the
    /// default walk does), then a few `GET`s at a time.
    async fn records_under(&self, dir: &str) -> Result<Vec<(String, Bytes)>, StorageError> {
        validate_record_dir(dir)?;
        if !dir.is_empty()
            && let Some(content) = self.get_record(dir).await?
        {
            // A path is never a record and a folder at once (see the trait).
            return Ok(vec![(dir.to_string(), content)]);
        }
        let prefix = if dir.is_empty() {
            self.root.clone()
        } else {
            format!("{}{dir}/", self.root)
        };
        let mut paths = Vec::new();
        let mut pages = self.client.list_keys(prefix);
        while let Some(keys) = pages.try_next().await? {
            // Folder markers and other tools' objects are no records.
            paths.extend(keys.into_iter().filter_map(|key| {
                let path = key.strip_prefix(&self.root)?;
                validate_record_path(path).is_ok().then(|| path.to_string())
            }));
        }
        let mut records: Vec<(String, Bytes)> = stream::iter(paths)
            .map(|path| async move {
                let content = self.get_record(&path).await?;
                Ok::<_, StorageError>(content.map(|c| (path, c)))
            })
            .buffer_unordered(GETS_AT_ONCE)
            // Deleted since the listing: gone.
            .try_filter_map(|record| async move { Ok(record) })
            .try_collect()
            .await?;
        records.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(records)
    }
}
