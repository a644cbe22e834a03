//! The blob store trait: content-addressed bytes and upload sessions.

use std::fmt::Debug;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt};
use oci_spec_types::Digest;

use crate::{RecoveryLog, StorageError};

/// A stream of bytes flowing into or out of a store.
pub type ByteStream = BoxStream<'static, Result<Bytes, StorageError>>;

/// What `stat` knows about a stored blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlobInfo {
    /// The blob's size in bytes.
    pub size: u64,
}

impl BlobInfo {
    /// What `stat` reports for a blob of `size` bytes.
    pub fn new(size: u64) -> Self {
        BlobInfo { size }
    }
}

/// A byte range of a blob, as an HTTP `Range` header can ask for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetRange {
    /// `start..end`, end exclusive.
    Bounded(Range<u64>),
    /// From an offset to the end.
    Offset(u64),
    /// The last N bytes.
    Suffix(u64),
}

impl GetRange {
    /// The concrete range inside a blob of `size` bytes, or `None` if unsatisfiable.
    /// A bounded range that runs past the end is clipped, as HTTP requires.
    pub fn resolve(&self, size: u64) -> Option<Range<u64>> {
        let r = match *self {
            GetRange::Bounded(ref r) => r.start..r.end.min(size),
            GetRange::Offset(o) => o..size,
            GetRange::Suffix(n) => size.saturating_sub(n)..size,
        };
        (r.start < r.end).then_some(r)
    }
}

/// The answer to `get`: the blob's total size, the range being streamed, and the bytes.
pub struct GetResult {
    /// The blob's total size in bytes.
    pub size: u64,
    /// The bytes being streamed, a part of `0..size`.
    pub range: Range<u64>,
    /// The bytes of `range`.
    pub stream: ByteStream,
}

impl Debug for GetResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetResult")
            .field("size", &self.size)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// What a blob store declares about itself: abilities that change what callers may do or
/// what some methods do, stated once instead of discovered by trying. All `false` by
/// default; a store sets what it promises with the `with_*` setters.
///
/// ```
/// use storage_traits::BlobCapabilities;
///
/// let caps = BlobCapabilities::default().with_shared_sessions(true).with_presign(true);
/// assert!(caps.shared_sessions && caps.presign);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlobCapabilities {
    /// Other processes (replicas sharing an object store) write this store's upload
    /// sessions too. It decides what `write_upload` below the session's length does: with
    /// it, such a write is refused with [`StorageError::Conflict`] and every byte kept;
    /// without it, the session is cut at the offset and written from there (see the
    /// [`BlobStore`] behaviour list).
    pub shared_sessions: bool,
    /// [`BlobStore::signer`] returns `Some`: the store hands out URLs a client fetches a
    /// blob from directly, for a limited time, without going through the registry.
    pub presign: bool,
}

impl BlobCapabilities {
    /// Declares (or not) that sessions are shared between processes.
    pub fn with_shared_sessions(mut self, shared: bool) -> Self {
        self.shared_sessions = shared;
        self
    }
    /// Declares (or not) that the store hands out presigned URLs.
    pub fn with_presign(mut self, presign: bool) -> Self {
        self.presign = presign;
        self
    }
}

/// A whole blob of known length and expected digest, to be written before it is checked
/// (see [`BlobStore::stage_blob`]).
#[non_exhaustive]
pub struct StageBlob<'a> {
    /// Names the staging, as an upload session's id does: after a crash,
    /// [`abort_upload`](BlobStore::abort_upload) of this id removes what was staged.
    pub upload_id: &'a str,
    /// The digest the caller expects (and checks) the bytes to have.
    pub digest: &'a Digest,
    /// The exact length of `data`.
    pub size: u64,
    /// The blob's bytes.
    pub data: ByteStream,
    /// `upload_id` names an open session that holds no bytes (a `PUT` of the whole blob
    /// after a `POST`), rather than no session (a `POST ?digest=`); see
    /// [`with_open_session`](Self::with_open_session).
    pub open_session: bool,
}

impl<'a> StageBlob<'a> {
    /// A blob staged under an id that names no session yet.
    pub fn new(upload_id: &'a str, digest: &'a Digest, size: u64, data: ByteStream) -> Self {
        StageBlob {
            upload_id,
            digest,
            size,
            data,
            open_session: false,
        }
    }

    /// `upload_id` names an open session started with
    /// [`start_upload`](BlobStore::start_upload) that holds no bytes. Publishing ends the
    /// session as [`finish_upload`](BlobStore::finish_upload) does; an error or a discard
    /// leaves it open and empty, so the client can send the blob again.
    pub fn with_open_session(mut self) -> Self {
        self.open_session = true;
        self
    }
}

impl Debug for StageBlob<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageBlob")
            .field("upload_id", &self.upload_id)
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("open_session", &self.open_session)
            .finish_non_exhaustive()
    }
}

/// A blob [`BlobStore::stage_blob`] wrote and nobody can read yet: the caller checks its
/// digest, then publishes or discards it. Dropped without either (a crash), it is
/// removed by [`abort_upload`](BlobStore::abort_upload) of its upload id.
#[async_trait]
pub trait StagedBlob: Send {
    /// Makes the blob readable under the digest it was staged with, as
    /// [`finish_upload`](BlobStore::finish_upload) does: atomically, and an existing blob
    /// of that digest is kept.
    async fn publish(self: Box<Self>) -> Result<(), StorageError>;

    /// Removes what was staged; nothing of it is left.
    async fn discard(self: Box<Self>) -> Result<(), StorageError>;
}

/// What [`BlobStore::stage_blob`]'s default does, for stores that override it for some
/// blobs only: an upload session named `blob.upload_id` (started here unless
/// [`open_session`](StageBlob::open_session)), written in one
/// [`write_upload`](BlobStore::write_upload); if that fails, the session is aborted, or
/// started again empty when it was the caller's.
pub async fn stage_in_session<'a, S: BlobStore + ?Sized>(
    store: &'a S,
    blob: StageBlob<'a>,
) -> Result<Box<dyn StagedBlob + 'a>, StorageError> {
    let StageBlob {
        upload_id,
        digest,
        size,
        data,
        open_session,
    } = blob;
    if !open_session {
        store.start_upload(upload_id).await?;
    }
    let written = match store.write_upload(upload_id, 0, data).await {
        Ok(n) if n == size => Ok(()),
        Ok(n) => Err(StorageError::Input(
            format!("the stream held {n} bytes, not the {size} declared").into(),
        )),
        Err(e) => Err(e),
    };
    let staged = SessionStaged {
        store,
        upload_id,
        digest,
        size,
        open_session,
    };
    if let Err(e) = written {
        let _ = staged.undo().await;
        return Err(e);
    }
    Ok(Box::new(staged))
}

/// A blob staged in an upload session: publishing finishes it, discarding aborts it (or
/// empties it, when the session was the caller's).
struct SessionStaged<'a, S: ?Sized> {
    store: &'a S,
    upload_id: &'a str,
    digest: &'a Digest,
    size: u64,
    open_session: bool,
}

impl<S: BlobStore + ?Sized> SessionStaged<'_, S> {
    async fn undo(&self) -> Result<(), StorageError> {
        if self.open_session {
            // Starting an existing session again empties it.
            self.store.start_upload(self.upload_id).await
        } else {
            self.store.abort_upload(self.upload_id).await
        }
    }
}

#[async_trait]
impl<S: BlobStore + ?Sized> StagedBlob for SessionStaged<'_, S> {
    async fn publish(self: Box<Self>) -> Result<(), StorageError> {
        self.store
            .finish_upload(self.upload_id, self.digest, self.size)
            .await
    }

    async fn discard(self: Box<Self>) -> Result<(), StorageError> {
        self.undo().await
    }
}

/// Where blobs live.
///
/// Upload ids are chosen by the caller (the registry uses UUIDs); a store refuses ids that
/// are not made of `[A-Za-z0-9_-]` with [`StorageError::InvalidUploadId`].
///
/// # Behavior
/// - `stat` of a missing blob is `Ok(None)`; `get` of a missing blob is
///   [`StorageError::NotFound`]; `get` with a range outside the blob is
///   [`StorageError::RangeNotSatisfiable`].
/// - `delete` of a missing blob succeeds.
/// - `write_upload(id, offset, data)` writes `data` at `offset` and returns the session's
///   new length. Chunks of any size are accepted. `offset` larger than the bytes the
///   session holds is [`StorageError::InvalidOffset`].
/// - `offset` smaller than the bytes the session holds depends on the
///   [`shared_sessions`](BlobCapabilities::shared_sessions) capability. A store only one
///   process writes discards everything past `offset`, so a write that failed half way is
///   simply overwritten by the retry at the offset the caller last recorded. A store
///   declaring `shared_sessions`, whose sessions other processes write too,
///   refuses with [`StorageError::Conflict`] and keeps its bytes: it cannot tell bytes
///   nobody acknowledged from bytes another replica is about to acknowledge, and replacing
///   the latter would leave that replica's hash state describing bytes the session no
///   longer holds. Such a store only keeps a write's bytes once the whole input arrived,
///   so a write that failed half way leaves the length unchanged and its retry succeeds.
///   Two writes racing at the same offset: one wins, the other gets `Conflict`.
/// - `finish_upload(id, digest, size)` is atomic: the blob appears under `digest` with the
///   session's complete bytes, durably, or not at all. The caller has verified that the
///   session's first `size` bytes hash to `digest`; the store does not re-hash, but it
///   refuses with [`StorageError::Conflict`] (and keeps the session) when the session does
///   not hold exactly `size` bytes, so bytes another request appended after the caller's
///   check are never published under the caller's digest. Finishing onto a digest that
///   already exists keeps the existing blob (same digest, same bytes) and discards the
///   session.
/// - `start_upload` of an id that has a session empties it.
/// - `abort_upload` of an unknown session succeeds and leaves nothing behind.
/// - [`capabilities`](BlobStore::capabilities) says what the store promises, and it
///   matches what it does: `presign` exactly when [`signer`](BlobStore::signer) is `Some`.
#[async_trait]
pub trait BlobStore: Debug + Send + Sync + 'static {
    /// The blob's size, or `None` if it is not stored.
    async fn stat(&self, digest: &Digest) -> Result<Option<BlobInfo>, StorageError>;

    /// The blob's bytes, or the part `range` asks for, streamed.
    async fn get(
        &self,
        digest: &Digest,
        range: Option<GetRange>,
    ) -> Result<GetResult, StorageError>;

    /// Removes the blob; a missing blob is not an error.
    async fn delete(&self, digest: &Digest) -> Result<(), StorageError>;

    /// Every stored blob's digest, in no particular order (for GC and import).
    fn list(&self) -> BoxStream<'static, Result<Digest, StorageError>>;

    /// Opens an empty upload session `id`.
    async fn start_upload(&self, id: &str) -> Result<(), StorageError>;

    /// Writes `data` at `offset` of session `id`; returns the session's new length.
    async fn write_upload(
        &self,
        id: &str,
        offset: u64,
        data: ByteStream,
    ) -> Result<u64, StorageError>;

    /// The bytes a session holds so far (used to re-hash when no hash state was kept).
    async fn read_upload(&self, id: &str) -> Result<ByteStream, StorageError>;

    /// Publishes session `id`'s `size` bytes as the blob `digest`, atomically, and ends the session.
    async fn finish_upload(&self, id: &str, digest: &Digest, size: u64)
    -> Result<(), StorageError>;

    /// Ends session `id` and discards its bytes; an unknown session is not an error.
    async fn abort_upload(&self, id: &str) -> Result<(), StorageError>;

    /// What this store promises (see [`BlobCapabilities`]). The default promises nothing:
    /// sessions only this process writes, no presigned URLs.
    fn capabilities(&self) -> BlobCapabilities {
        BlobCapabilities::default()
    }

    /// Stores `data`, a whole blob held in memory (a manifest's copy), under `digest`: as
    /// complete and durable when this returns as after [`finish_upload`](Self::finish_upload),
    /// and an existing blob of that digest is kept. The default goes through an upload
    /// session named `upload_id` (aborted if a step fails); a store can do it in fewer
    /// steps. The caller checks `digest` against `data`.
    async fn put_bytes(
        &self,
        upload_id: &str,
        digest: &Digest,
        data: Bytes,
    ) -> Result<(), StorageError> {
        self.start_upload(upload_id).await?;
        let size = data.len() as u64;
        let stream = futures::stream::once(async move { Ok(data) }).boxed();
        let result = async {
            self.write_upload(upload_id, 0, stream).await?;
            self.finish_upload(upload_id, digest, size).await
        }
        .await;
        if result.is_err() {
            let _ = self.abort_upload(upload_id).await;
        }
        result
    }

    /// Writes a whole blob whose length and expected digest are known before its first
    /// byte (a monolithic push), without making it readable: the caller hashes `data` as
    /// the store consumes it, then [publishes](StagedBlob::publish) the result if the
    /// digest matches, or [discards](StagedBlob::discard) it. An error (the stream's own,
    /// or a stream not exactly `size` long) leaves nothing staged. `upload_id` names no
    /// session, or an open empty one ([`StageBlob::with_open_session`]), which publishing
    /// ends and which an error or a discard leaves open and empty. The default is an
    /// upload session named `upload_id` ([`stage_in_session`]); a store can write the
    /// bytes where they will stay, in fewer requests.
    async fn stage_blob<'a>(
        &'a self,
        blob: StageBlob<'a>,
    ) -> Result<Box<dyn StagedBlob + 'a>, StorageError> {
        stage_in_session(self, blob).await
    }

    /// The presigned-URL ability, if this store has it (and then declares
    /// [`presign`](BlobCapabilities::presign)).
    fn signer(&self) -> Option<&dyn BlobSigner> {
        None
    }

    /// The recovery records kept next to the blobs (repository and tag names, which
    /// content-addressed blobs cannot tell), if this store keeps them; see
    /// [`crate::recovery`].
    fn recovery(&self) -> Option<&dyn RecoveryLog> {
        None
    }
}

/// Optional ability: a URL a client can fetch a blob from directly, for a limited time.
#[async_trait]
pub trait BlobSigner: Send + Sync {
    /// A URL that serves the blob `digest` without credentials for `expires_in`.
    async fn presigned_get(
        &self,
        digest: &Digest,
        expires_in: Duration,
    ) -> Result<String, StorageError>;
}

/// Conveniences built on [`BlobStore`]; backends never implement these.
#[async_trait]
pub trait BlobStoreExt: BlobStore {
    /// Reads a whole blob into memory. Only for small blobs (manifests, tests).
    async fn get_bytes(&self, digest: &Digest) -> Result<Bytes, StorageError> {
        let mut res = self.get(digest, None).await?;
        let mut buf = BytesMut::new();
        while let Some(chunk) = res.stream.next().await {
            buf.extend_from_slice(&chunk?);
        }
        Ok(buf.freeze())
    }
}

impl<T: BlobStore + ?Sized> BlobStoreExt for T {}

/// True if `id` is acceptable as an upload id: non-empty, at most 128 characters of
/// `[A-Za-z0-9_-]`, so it is safe as a file name or object key component.
pub fn valid_upload_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(GetRange::Bounded(0..10).resolve(5), Some(0..5));
        assert_eq!(GetRange::Bounded(5..10).resolve(5), None);
        assert_eq!(GetRange::Offset(2).resolve(5), Some(2..5));
        assert_eq!(GetRange::Suffix(2).resolve(5), Some(3..5));
        assert_eq!(GetRange::Suffix(9).resolve(5), Some(0..5));
        assert_eq!(GetRange::Offset(0).resolve(0), None);
    }

    #[test]
    fn upload_ids() {
        assert!(valid_upload_id("0f1e-ab_C"));
        for bad in ["", "../x", "a/b", "a.b", &"a".repeat(129)] {
            assert!(!valid_upload_id(bad));
        }
    }
}
