//! [`S3BlobStore`] and its [`BlobStore`] and [`BlobSigner`] implementations.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use oci_spec_types::Digest;
use storage_traits::{
    BlobCapabilities, BlobInfo, BlobSigner, BlobStore, ByteStream, GetRange, GetResult,
    RecoveryLog, StageBlob, StagedBlob, StorageError,
};

use crate::client::{Body, Client, MAX_PRESIGN, ObjectHead};
use crate::config::S3Config;
use crate::error::{config, protocol};
use crate::layout::{Layout, SessionKeys};
use crate::pointer_cache::{POINTER_CACHE, PointerCache};
use crate::pre_claims::{PRE_CLAIMS, PreClaims};
use crate::recovery::S3Recovery;
use crate::upload::Session;

/// A blob store in an S3 bucket. See the [crate docs](crate) for the layout, the upload
/// scheme and the client.
///
/// Cheap to clone; clones share one HTTP connection pool. Upload sessions live in the
/// bucket, so any number of stores (in any number of processes) can serve the same bucket
/// and prefix and continue each other's sessions, as long as the requests of one session
/// come one at a time (the registry's metadata store sees to that). In memory a store
/// keeps only hints that are checked before use: where recently read blobs' bytes are,
/// and part numbers it claimed for its own next write to a session.
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    client: Arc<Client>,
    layout: Layout,
    part_size: usize,
    upload_concurrency: usize,
    single_put_max: u64,
    recovery: S3Recovery,
    pointers: Arc<PointerCache>,
    pre_claims: Arc<PreClaims>,
}

impl S3BlobStore {
    /// A store for `config`. Reads credentials (and the region, if not set) from the
    /// environment and the shared AWS files; sends no request.
    pub fn new(config: S3Config) -> Result<Self, StorageError> {
        let layout = Layout::new(&config.prefix)?;
        let resolved = config.resolve()?;
        let client = Arc::new(Client::new(&config, resolved)?);
        let recovery = S3Recovery::new(Arc::clone(&client), layout.recovery_prefix());
        Ok(S3BlobStore {
            client,
            layout,
            part_size: config.part_size,
            upload_concurrency: config.upload_concurrency.max(1),
            single_put_max: config.single_put_max,
            recovery,
            pointers: Arc::new(PointerCache::new(POINTER_CACHE)),
            pre_claims: Arc::new(PreClaims::new(PRE_CLAIMS)),
        })
    }

    /// [`S3Config::from_url`] then [`S3BlobStore::new`]:
    /// `s3://BUCKET/PREFIX?endpoint=http://127.0.0.1:8333&region=us-east-1`.
    pub fn from_url(url: &str) -> Result<Self, StorageError> {
        Self::new(S3Config::from_url(url)?)
    }

    /// The bucket the store keeps its blobs in.
    pub fn bucket(&self) -> &str {
        self.client.bucket_name()
    }

    /// The key prefix everything of this store lives under (empty, or ending in `/`).
    pub fn prefix(&self) -> &str {
        self.layout.prefix()
    }

    /// The object key of the blob `digest`.
    pub fn blob_key(&self, digest: &Digest) -> String {
        self.layout.blob_key(digest)
    }

    /// Checks that the bucket is reachable with these credentials (for readiness probes
    /// and start-up checks): lists at most one key under the prefix.
    pub async fn check(&self) -> Result<(), StorageError> {
        self.client
            .list_page(self.layout.prefix(), None)
            .await
            .map(drop)
    }

    /// Multipart uploads under this store's prefix that were neither completed nor
    /// aborted, as `(key, upload id)` (first 1,000). A finish interrupted by a crash can
    /// leave one; aborting its session removes it, and an S3 lifecycle rule
    /// (`AbortIncompleteMultipartUpload`) is the backstop for sessions nobody aborts.
    pub async fn incomplete_multipart_uploads(
        &self,
    ) -> Result<Vec<(String, String)>, StorageError> {
        self.client.list_multipart(self.layout.prefix()).await
    }

    /// Every object key under the upload sessions' folder (for tests and operators).
    pub async fn upload_keys(&self) -> Result<Vec<String>, StorageError> {
        let pages: Vec<Vec<String>> = self
            .client
            .list_keys(self.layout.uploads_prefix())
            .try_collect()
            .await?;
        Ok(pages.concat())
    }

    /// Every object key under `data/`: the bytes of blobs uploaded in parts, and of
    /// sessions being finished (for tests and operators).
    pub async fn data_keys(&self) -> Result<Vec<String>, StorageError> {
        let pages: Vec<Vec<String>> = self
            .client
            .list_keys(self.layout.data_prefix())
            .try_collect()
            .await?;
        Ok(pages.concat())
    }

    /// The key holding the bytes of blob `digest`: its data key if its blob key is a
    /// pointer, else the blob key itself; `None` if there is no such blob.
    pub async fn blob_data_key(&self, digest: &Digest) -> Result<Option<String>, StorageError> {
        let key = self.layout.blob_key(digest);
        let Some(head) = self.client.head_object(&key).await? else {
            return Ok(None);
        };
        Ok(Some(match self.resolve(&key, &head)? {
            Resolved::Pointer { data, .. } => data,
            Resolved::Bytes { .. } => key,
        }))
    }

    /// The bytes of a blob behind a pointer: `size` bytes at `data`; `NotFound` if that
    /// key is gone (the blob was deleted).
    async fn get_data(
        &self,
        digest: &Digest,
        data: &str,
        size: u64,
        range: Option<GetRange>,
    ) -> Result<GetResult, StorageError> {
        let not_found = || StorageError::NotFound(digest.clone());
        let range = match range {
            None => 0..size,
            Some(r) => r
                .resolve(size)
                .ok_or(StorageError::RangeNotSatisfiable { size })?,
        };
        let whole = range == (0..size);
        let (len, stream) = self
            .client
            .get(data, (!whole).then(|| range.clone()))
            .await?
            .ok_or_else(not_found)?;
        if whole && len != size {
            return Err(protocol(
                "GET",
                data,
                format!("{len} bytes where the blob's pointer says {size}"),
            ));
        }
        Ok(GetResult {
            size,
            range,
            stream,
        })
    }

    pub(crate) fn session<'a>(&'a self, id: &'a str) -> Result<Session<'a>, StorageError> {
        Ok(Session {
            client: &self.client,
            layout: &self.layout,
            keys: SessionKeys::new(&self.layout, id)?,
            id,
            part_size: self.part_size,
            concurrency: self.upload_concurrency,
            pre_claims: &self.pre_claims,
            pointers: &self.pointers,
        })
    }

    /// What the object at blob key `key` is: the blob's bytes, or a pointer to them.
    fn resolve(&self, key: &str, head: &ObjectHead) -> Result<Resolved, StorageError> {
        let Some(relative) = &head.data else {
            return Ok(Resolved::Bytes { size: head.len });
        };
        let data = self
            .layout
            .data_key_of_pointer(relative)
            .ok_or_else(|| protocol("HEAD", key, format!("a pointer to {relative:?}")))?;
        let size = head
            .size
            .as_deref()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| protocol("HEAD", key, "a pointer without a valid size"))?;
        Ok(Resolved::Pointer { data, size })
    }
}

/// What is under a blob key.
enum Resolved {
    /// The blob itself (written by `put_bytes`, a small upload, or an older version).
    Bytes { size: u64 },
    /// An empty object naming the data key that holds the blob's `size` bytes.
    Pointer { data: String, size: u64 },
}

#[async_trait]
impl BlobStore for S3BlobStore {
    /// One `HEAD` of the blob key: a pointer carries the blob's size.
    async fn stat(&self, digest: &Digest) -> Result<Option<BlobInfo>, StorageError> {
        let key = self.layout.blob_key(digest);
        let Some(head) = self.client.head_object(&key).await? else {
            return Ok(None);
        };
        Ok(Some(BlobInfo::new(match self.resolve(&key, &head)? {
            Resolved::Bytes { size } | Resolved::Pointer { size, .. } => size,
        })))
    }

    async fn get(
        &self,
        digest: &Digest,
        range: Option<GetRange>,
    ) -> Result<GetResult, StorageError> {
        if let Some((data, size)) = self.pointers.get(digest) {
            match self.get_data(digest, &data, size, range.clone()).await {
                Err(StorageError::NotFound(_)) => {
                    self.pointers.take(digest);
                }
                done => return done,
            }
        }
        let key = self.layout.blob_key(digest);
        let not_found = || StorageError::NotFound(digest.clone());
        let Some(range) = range else {
            // A blob's bytes stream from this first GET; a pointer's (empty) answer names
            // the key to GET instead.
            let (head, stream) = self.client.open(&key).await?.ok_or_else(not_found)?;
            return match self.resolve(&key, &head)? {
                Resolved::Bytes { size } => Ok(GetResult {
                    size,
                    range: 0..size,
                    stream,
                }),
                Resolved::Pointer { data, size } => {
                    drop(stream);
                    self.pointers.insert(digest.clone(), (data.clone(), size));
                    self.get_data(digest, &data, size, None).await
                }
            };
        };
        // The size first: the range is resolved here, exactly as `GetRange` says, rather
        // than by each S3 implementation's reading of a Range header (empty objects,
        // suffixes longer than the object).
        let head = self.client.head_object(&key).await?.ok_or_else(not_found)?;
        match self.resolve(&key, &head)? {
            Resolved::Bytes { size } => {
                let range = range
                    .resolve(size)
                    .ok_or(StorageError::RangeNotSatisfiable { size })?;
                // Deleted since the HEAD: as if it had been gone before.
                let (_, stream) = self
                    .client
                    .get(&key, Some(range.clone()))
                    .await?
                    .ok_or_else(not_found)?;
                Ok(GetResult {
                    size,
                    range,
                    stream,
                })
            }
            Resolved::Pointer { data, size } => {
                self.pointers.insert(digest.clone(), (data.clone(), size));
                self.get_data(digest, &data, size, Some(range)).await
            }
        }
    }

    /// A pointer's data first, then the pointer: a delete that stops half way leaves a
    /// pointer to nothing (reads say `NotFound`, a finish of that digest replaces it, and
    /// the caller's retry completes the delete), never data no pointer names.
    async fn delete(&self, digest: &Digest) -> Result<(), StorageError> {
        self.pointers.take(digest);
        let key = self.layout.blob_key(digest);
        if let Some(head) = self.client.head_object(&key).await?
            && let Resolved::Pointer { data, .. } = self.resolve(&key, &head)?
        {
            self.client.delete(&data).await?;
        }
        self.client.delete(&key).await
    }

    fn list(&self) -> BoxStream<'static, Result<Digest, StorageError>> {
        let layout = self.layout.clone();
        self.client
            .list_keys(self.layout.blobs_prefix())
            .map_ok(move |keys| {
                // Keys that are not a digest filed where this store files it are skipped.
                let digests: Vec<Result<Digest, StorageError>> = keys
                    .iter()
                    .filter_map(|k| layout.parse_blob_key(k))
                    .map(Ok)
                    .collect();
                stream::iter(digests)
            })
            .try_flatten()
            .boxed()
    }

    async fn start_upload(&self, id: &str) -> Result<(), StorageError> {
        self.session(id)?.start().await
    }

    async fn write_upload(
        &self,
        id: &str,
        offset: u64,
        data: ByteStream,
    ) -> Result<u64, StorageError> {
        self.session(id)?.write(offset, data).await
    }

    async fn read_upload(&self, id: &str) -> Result<ByteStream, StorageError> {
        self.session(id)?.read().await
    }

    async fn finish_upload(
        &self,
        id: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), StorageError> {
        self.session(id)?.finish(digest, size).await
    }

    async fn abort_upload(&self, id: &str) -> Result<(), StorageError> {
        self.session(id)?.abort().await
    }

    /// One `PUT` of the bytes straight to the blob's key (no session), unless that key is
    /// taken: an existing blob has these very bytes and is kept.
    async fn put_bytes(
        &self,
        upload_id: &str,
        digest: &Digest,
        data: Bytes,
    ) -> Result<(), StorageError> {
        // Checked as a session would, although none is made.
        SessionKeys::new(&self.layout, upload_id)?;
        let key = self.layout.blob_key(digest);
        self.client
            .put_if_absent(&key, &Body::Bytes(data), &[])
            .await
            .map(drop)
    }

    /// No session: one `PUT` (see the crate docs), or a session above `single_put_max`.
    async fn stage_blob<'a>(
        &'a self,
        blob: StageBlob<'a>,
    ) -> Result<Box<dyn StagedBlob + 'a>, StorageError> {
        crate::staged::stage(self, blob, self.single_put_max).await
    }

    /// Every replica reaches the same bucket, so sessions are shared; downloads can be
    /// presigned.
    fn capabilities(&self) -> BlobCapabilities {
        BlobCapabilities::default()
            .with_shared_sessions(true)
            .with_presign(true)
    }

    fn signer(&self) -> Option<&dyn BlobSigner> {
        Some(self)
    }

    /// Records under `<prefix>/recovery/`, durable once written (see the [crate
    /// docs](crate)).
    fn recovery(&self) -> Option<&dyn RecoveryLog> {
        Some(&self.recovery)
    }
}

#[async_trait]
impl BlobSigner for S3BlobStore {
    /// A presigned `GET` URL of the object holding the blob's bytes (one `HEAD` of the
    /// blob key tells which), valid for `expires_in` (at most seven days, SigV4's limit).
    /// A missing blob gets a URL of its blob key, which answers 404.
    async fn presigned_get(
        &self,
        digest: &Digest,
        expires_in: Duration,
    ) -> Result<String, StorageError> {
        if expires_in > MAX_PRESIGN || expires_in.as_secs() == 0 {
            return Err(config(format!(
                "presigned URL lifetime {expires_in:?} is outside 1 s..=7 days"
            )));
        }
        let key = self.layout.blob_key(digest);
        let target = match self.client.head_object(&key).await? {
            Some(head) => match self.resolve(&key, &head)? {
                Resolved::Pointer { data, .. } => data,
                Resolved::Bytes { .. } => key,
            },
            None => key,
        };
        Ok(self.client.presign_get(&target, expires_in).into())
    }
}
