//! Errors of the storage layer. They say what happened; `registry-core` alone decides
//! which OCI code and HTTP status each becomes.

use oci_spec_types::Digest;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("blob {0} not found")]
    NotFound(Digest),
    #[error("upload session {0} not found")]
    UploadNotFound(String),
    #[error("requested range is not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("invalid upload offset: expected {expected}, got {got}")]
    InvalidOffset { expected: u64, got: u64 },
    #[error("invalid upload id {0:?}")]
    InvalidUploadId(String),
    /// A [`RecoveryLog`](crate::RecoveryLog) path outside the accepted grammar.
    #[error("invalid recovery record path {path:?}: {reason}")]
    InvalidRecordPath { path: String, reason: &'static str },
    /// Another writer changed the upload session while this call ran (a store shared by
    /// several processes detects it), or the session does not hold the bytes being
    /// finished; nothing this call stored is part of the session, which stays as it was.
    #[error("upload session {0} was changed by another writer")]
    Conflict(String),
    /// The byte stream handed to the store failed (for example, the client disconnected).
    #[error("input stream failed: {0}")]
    Input(#[source] BoxError),
    #[error("{backend} backend error: {source}")]
    Backend {
        backend: &'static str,
        #[source]
        source: BoxError,
    },
}

impl StorageError {
    pub fn backend(backend: &'static str, source: impl Into<BoxError>) -> Self {
        StorageError::Backend {
            backend,
            source: source.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// `put_manifest` found references the repository cannot resolve.
    #[error("manifest references unknown blobs {blobs:?} or manifests {manifests:?}")]
    MissingReferences {
        blobs: Vec<Digest>,
        manifests: Vec<Digest>,
    },
    /// Garbage collection has decided to delete this blob and its bytes may not be gone
    /// yet: link it again once they are (see [`crate::gc`]).
    #[error("blob {0} is being garbage-collected")]
    BlobBeingDeleted(Digest),
    /// `put_manifest` with `tag_immutable` found the tag pointing at another manifest.
    #[error("tag {tag} is immutable: it already points at {current}")]
    TagImmutable { tag: String, current: Digest },
    /// A stored row could not be decoded (a bug or a hand-edited database).
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    #[error("{backend} backend error: {source}")]
    Backend {
        backend: &'static str,
        #[source]
        source: BoxError,
    },
}

impl MetadataError {
    pub fn backend(backend: &'static str, source: impl Into<BoxError>) -> Self {
        MetadataError::Backend {
            backend,
            source: source.into(),
        }
    }
}
