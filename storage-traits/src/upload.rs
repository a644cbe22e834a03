//! The upload session store trait: the records that let any request (after a restart, or
//! on another replica sharing the database) continue an upload another one started. The
//! bytes themselves are the blob store's; this is what the registry acknowledged of them.

use std::fmt::Debug;

use async_trait::async_trait;
use oci_spec_types::RepositoryName;

use crate::MetadataError;

/// The persisted state of an upload session, so the next request of a session may be
/// served after a restart (or, with a shared database, by another replica).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UploadSession {
    pub id: String,
    pub repository: RepositoryName,
    /// Bytes received and acknowledged so far.
    pub offset: u64,
    /// Serialised sha256 state after `offset` bytes, if kept. Without it the registry
    /// re-reads the staged bytes to compute the digest.
    pub hash_state: Option<Vec<u8>>,
    /// Unix time in milliseconds.
    pub created_at: i64,
    /// Unix time in milliseconds of the last acknowledged write.
    pub updated_at: i64,
}

impl UploadSession {
    pub fn new(id: String, repository: RepositoryName, now_ms: i64) -> Self {
        UploadSession {
            id,
            repository,
            offset: 0,
            hash_state: None,
            created_at: now_ms,
            updated_at: now_ms,
        }
    }
}

/// Where upload session records live. A supertrait of
/// [`MetadataStore`](crate::MetadataStore), which keeps them beside the rest of the
/// metadata (so a session's repository comes into existence with it).
///
/// Session ids are chosen by the caller and unique (the registry uses UUIDs).
///
/// # Behavior
/// - `create_upload` stores the session as given (offset, hash state and both timestamps
///   included); `get_upload` returns exactly that, and `None` for an unknown id.
/// - `update_upload(id, expected_offset, new_offset, hash_state, now_ms)` is a
///   compare-and-swap on the offset: it applies only if the stored offset equals
///   `expected_offset`, and says whether it did. Of many racing updates from one offset
///   exactly one applies. Applied, it sets the offset, replaces the hash state (`None`
///   clears it) and sets `updated_at` to `now_ms`; `created_at` never changes. An unknown
///   (or deleted) session is `Ok(false)`, not an error.
/// - `delete_upload` removes the session and says whether it existed.
/// - `stale_uploads(t)` lists the sessions whose `updated_at` is strictly before `t`.
/// - `count_uploads` is the number of sessions stored, as `stale_uploads(i64::MAX)` would
///   list them.
#[async_trait]
pub trait UploadSessionStore: Debug + Send + Sync + 'static {
    async fn create_upload(&self, session: &UploadSession) -> Result<(), MetadataError>;

    async fn get_upload(&self, id: &str) -> Result<Option<UploadSession>, MetadataError>;

    async fn update_upload(
        &self,
        id: &str,
        expected_offset: u64,
        new_offset: u64,
        hash_state: Option<&[u8]>,
        now_ms: i64,
    ) -> Result<bool, MetadataError>;

    /// Removes the session; true if it existed.
    async fn delete_upload(&self, id: &str) -> Result<bool, MetadataError>;

    /// Sessions whose last write is older than `updated_before_ms`, for expiry.
    async fn stale_uploads(
        &self,
        updated_before_ms: i64,
    ) -> Result<Vec<UploadSession>, MetadataError>;

    /// How many upload sessions are open (the `registry_uploads_open` gauge, read on
    /// every metrics scrape). The default loads every session; stores count in place.
    async fn count_uploads(&self) -> Result<u64, MetadataError> {
        Ok(self.stale_uploads(i64::MAX).await?.len() as u64)
    }
}
