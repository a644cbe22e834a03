//! Errors of the storage layer. They say what happened; `registry-core` alone decides
//! which OCI code and HTTP status each becomes.

use oci_spec_types::Digest;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a [`BlobStore`](crate::BlobStore).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// No blob is stored under this digest.
    #[error("blob {0} not found")]
    NotFound(Digest),
    /// No upload session has this id.
    #[error("upload session {0} not found")]
    UploadNotFound(String),
    /// The range asked for lies outside the blob.
    #[error("requested range is not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable {
        /// The blob's size.
        size: u64,
    },
    /// A write at an offset past the bytes the session holds.
    #[error("invalid upload offset: expected {expected}, got {got}")]
    InvalidOffset {
        /// The bytes the session holds.
        expected: u64,
        /// The offset the write asked for.
        got: u64,
    },
    /// An upload id not made of `[A-Za-z0-9_-]`.
    #[error("invalid upload id {0:?}")]
    InvalidUploadId(String),
    /// A [`RecoveryLog`](crate::RecoveryLog) path outside the accepted grammar.
    #[error("invalid recovery record path {path:?}: {reason}")]
    InvalidRecordPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Another writer changed the upload session while this call ran (a store shared by
    /// several processes detects it), or the session does not hold the bytes being
    /// finished; nothing this call stored is part of the session, which stays as it was.
    #[error("upload session {0} was changed by another writer")]
    Conflict(String),
    /// The byte stream handed to the store failed (for example, the client disconnected).
    #[error("input stream failed: {0}")]
    Input(#[source] BoxError),
    /// The backend failed (I/O, network, database): a 500 to the client, the cause logged.
    #[error("{backend} backend error: {source}")]
    Backend {
        /// The backend's name (`fs`, `s3`, `sqlite`, `postgres`, ...).
        backend: &'static str,
        /// Its error.
        #[source]
        source: BoxError,
    },
}

impl StorageError {
    /// A [`StorageError::Backend`] of `backend` caused by `source`.
    pub fn backend(backend: &'static str, source: impl Into<BoxError>) -> Self {
        StorageError::Backend {
            backend,
            source: source.into(),
        }
    }
}

/// What went wrong in a [`MetadataStore`](crate::MetadataStore).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// `put_manifest` found references the repository cannot resolve.
    #[error("manifest references unknown blobs {blobs:?} or manifests {manifests:?}")]
    MissingReferences {
        /// Referenced blobs the repository has no link to.
        blobs: Vec<Digest>,
        /// Referenced manifests the repository does not have.
        manifests: Vec<Digest>,
    },
    /// Garbage collection has decided to delete this blob and its bytes may not be gone
    /// yet: link it again once they are (see [`crate::gc`]).
    #[error("blob {0} is being garbage-collected")]
    BlobBeingDeleted(Digest),
    /// `put_manifest` with `tag_immutable` found the tag pointing at another manifest.
    #[error("tag {tag} is immutable: it already points at {current}")]
    TagImmutable {
        /// The tag.
        tag: String,
        /// The manifest it points at, and keeps pointing at.
        current: Digest,
    },
    /// A stored row could not be decoded (a bug or a hand-edited database).
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    /// The backend failed (I/O, network, database): a 500 to the client, the cause logged.
    #[error("{backend} backend error: {source}")]
    Backend {
        /// The backend's name (`fs`, `s3`, `sqlite`, `postgres`, ...).
        backend: &'static str,
        /// Its error.
        #[source]
        source: BoxError,
    },
}

impl MetadataError {
    /// A [`MetadataError::Backend`] of `backend` caused by `source`.
    pub fn backend(backend: &'static str, source: impl Into<BoxError>) -> Self {
        MetadataError::Backend {
            backend,
            source: source.into(),
        }
    }
}
