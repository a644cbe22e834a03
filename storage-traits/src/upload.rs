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
    /// The session's id (chosen by the caller).
    pub id: String,
    /// The repository being pushed to.
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
    /// A new session at offset 0 with no hash state, created and updated at `now_ms`.
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

/// An acknowledged write to an upload session, for
/// [`UploadSessionStore::update_upload`]: a compare-and-swap of its offset from
/// `expected_offset` to `new_offset`, with the hash state after `new_offset` bytes and
/// the time of the write. Every part is named where it is built:
///
/// ```
/// use storage_traits::UploadUpdate;
///
/// let state = [0u8; 4];
/// let update = UploadUpdate::new("3f6a2c1e")
///     .with_expected_offset(0)
///     .with_new_offset(1024)
///     .with_hash_state(Some(&state))
///     .with_updated_at(1_700_000_000_000);
/// assert_eq!((update.expected_offset, update.new_offset), (0, 1024));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UploadUpdate<'a> {
    /// The session's id.
    pub id: &'a str,
    /// The offset the caller saw; the update applies only if it is still the stored one.
    /// Default 0.
    pub expected_offset: u64,
    /// The offset after the acknowledged bytes. Default 0.
    pub new_offset: u64,
    /// The serialised hash state after `new_offset` bytes; `None` clears the stored one.
    /// Default `None`.
    pub hash_state: Option<&'a [u8]>,
    /// Unix time in milliseconds of the write, the session's new `updated_at`. Default 0.
    pub updated_at: i64,
}

impl<'a> UploadUpdate<'a> {
    /// An update of session `id`, from offset 0 to 0 with no hash state, at time 0: set
    /// the parts with the `with_*` methods.
    pub fn new(id: &'a str) -> Self {
        UploadUpdate {
            id,
            expected_offset: 0,
            new_offset: 0,
            hash_state: None,
            updated_at: 0,
        }
    }

    /// The offset the caller saw (the compare of the compare-and-swap).
    pub fn with_expected_offset(mut self, offset: u64) -> Self {
        self.expected_offset = offset;
        self
    }

    /// The offset to store (the swap).
    pub fn with_new_offset(mut self, offset: u64) -> Self {
        self.new_offset = offset;
        self
    }

    /// The hash state to store in place of the old one (`None` clears it).
    pub fn with_hash_state(mut self, state: Option<&'a [u8]>) -> Self {
        self.hash_state = state;
        self
    }

    /// The time of the write, Unix milliseconds.
    pub fn with_updated_at(mut self, now_ms: i64) -> Self {
        self.updated_at = now_ms;
        self
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
/// - `update_upload(&UploadUpdate)` is a compare-and-swap on the offset: it applies only if
///   the stored offset equals `expected_offset`, and says whether it did. Of many racing
///   updates from one offset exactly one applies. Applied, it sets the offset to
///   `new_offset`, replaces the hash state (`None` clears it) and sets `updated_at`;
///   `created_at` never changes. An unknown (or deleted) session is `Ok(false)`, not an
///   error.
/// - `delete_upload` removes the session and says whether it existed.
/// - `stale_uploads(t)` lists the sessions whose `updated_at` is strictly before `t`.
/// - `count_uploads` is the number of sessions stored, as `stale_uploads(i64::MAX)` would
///   list them.
#[async_trait]
pub trait UploadSessionStore: Debug + Send + Sync + 'static {
    /// Stores a new session record as given.
    async fn create_upload(&self, session: &UploadSession) -> Result<(), MetadataError>;

    /// The session `id`, or `None` if there is none.
    async fn get_upload(&self, id: &str) -> Result<Option<UploadSession>, MetadataError>;

    /// Applies `update` if the session's stored offset is its `expected_offset`; true if
    /// it did (see the trait's `# Behavior`).
    async fn update_upload(&self, update: &UploadUpdate<'_>) -> Result<bool, MetadataError>;

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
