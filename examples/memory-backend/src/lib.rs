//! A [`BlobStore`] kept in memory: the whole trait in about a page, to show what a backend
//! implements. Everything is lost when the process exits; use it in tests and demos only.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use oci_spec_types::Digest;
use storage_traits::blob::valid_upload_id;
use storage_traits::{
    BlobCapabilities, BlobInfo, BlobStore, ByteStream, GetRange, GetResult, StorageError,
};

#[derive(Debug, Default)]
pub struct MemoryBlobStore {
    blobs: Mutex<HashMap<Digest, Bytes>>,
    uploads: Mutex<HashMap<String, Vec<u8>>>,
}

impl MemoryBlobStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn blobs(&self) -> MutexGuard<'_, HashMap<Digest, Bytes>> {
        // A panic while holding the lock cannot leave a map half-updated, so ignore poison.
        self.blobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn uploads(&self) -> MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.uploads.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn check_id(id: &str) -> Result<(), StorageError> {
    match valid_upload_id(id) {
        true => Ok(()),
        false => Err(StorageError::InvalidUploadId(id.to_string())),
    }
}

#[async_trait]
impl BlobStore for MemoryBlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<BlobInfo>, StorageError> {
        Ok(self
            .blobs()
            .get(digest)
            .map(|b| BlobInfo::new(b.len() as u64)))
    }

    async fn get(
        &self,
        digest: &Digest,
        range: Option<GetRange>,
    ) -> Result<GetResult, StorageError> {
        let blob = self.blobs().get(digest).cloned();
        let blob = blob.ok_or_else(|| StorageError::NotFound(digest.clone()))?;
        let size = blob.len() as u64;
        let range = match range {
            None => 0..size,
            Some(r) => r
                .resolve(size)
                .ok_or(StorageError::RangeNotSatisfiable { size })?,
        };
        // `resolve` keeps the range inside the blob, so these fit in usize.
        let bytes = blob.slice(range.start as usize..range.end as usize);
        let stream = stream::once(async move { Ok(bytes) }).boxed();
        Ok(GetResult {
            size,
            range,
            stream,
        })
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StorageError> {
        self.blobs().remove(digest);
        Ok(())
    }

    fn list(&self) -> BoxStream<'static, Result<Digest, StorageError>> {
        let digests: Vec<_> = self.blobs().keys().cloned().map(Ok).collect();
        stream::iter(digests).boxed()
    }

    async fn start_upload(&self, id: &str) -> Result<(), StorageError> {
        check_id(id)?;
        self.uploads().insert(id.to_string(), Vec::new());
        Ok(())
    }

    async fn write_upload(
        &self,
        id: &str,
        offset: u64,
        data: ByteStream,
    ) -> Result<u64, StorageError> {
        check_id(id)?;
        // Never hold the lock across an await: read the whole input first. If the stream
        // fails, the session is untouched.
        let chunks: Vec<Bytes> = data.try_collect().await?;
        let mut uploads = self.uploads();
        let buf = uploads
            .get_mut(id)
            .ok_or_else(|| StorageError::UploadNotFound(id.to_string()))?;
        let len = buf.len() as u64;
        if offset > len {
            return Err(StorageError::InvalidOffset {
                expected: len,
                got: offset,
            });
        }
        buf.truncate(offset as usize);
        chunks.iter().for_each(|c| buf.extend_from_slice(c));
        Ok(buf.len() as u64)
    }

    async fn read_upload(&self, id: &str) -> Result<ByteStream, StorageError> {
        check_id(id)?;
        let uploads = self.uploads();
        let buf = uploads
            .get(id)
            .ok_or_else(|| StorageError::UploadNotFound(id.to_string()))?;
        let bytes = Bytes::copy_from_slice(buf);
        Ok(stream::once(async move { Ok(bytes) }).boxed())
    }

    async fn finish_upload(
        &self,
        id: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), StorageError> {
        check_id(id)?;
        let mut uploads = self.uploads();
        let held = uploads
            .get(id)
            .ok_or_else(|| StorageError::UploadNotFound(id.to_string()))?
            .len() as u64;
        if held != size {
            return Err(StorageError::Conflict(format!(
                "upload {id} holds {held} bytes, not the {size} being finished"
            )));
        }
        let buf = uploads.remove(id).unwrap_or_default();
        drop(uploads);
        // An existing blob under this digest holds the same bytes: keep it.
        self.blobs()
            .entry(digest.clone())
            .or_insert_with(|| Bytes::from(buf));
        Ok(())
    }

    async fn abort_upload(&self, id: &str) -> Result<(), StorageError> {
        check_id(id)?;
        self.uploads().remove(id);
        Ok(())
    }

    /// Sessions live in this process only, and there is no URL to presign.
    fn capabilities(&self) -> BlobCapabilities {
        BlobCapabilities::default()
    }
}
