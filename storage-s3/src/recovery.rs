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
use futures::TryStreamExt;
use storage_traits::recovery::{valid_record_name, validate_record_dir, validate_record_path};
use storage_traits::{RecoveryLog, StorageError};

use crate::client::{Body, Client};

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
}
