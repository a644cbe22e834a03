//! The two storage traits of the registry, and one behaviour suite every backend runs.
//!
//! - [`BlobStore`]: large, immutable, content-addressed bytes (layers, configs, and the
//!   manifests' own bytes), with upload sessions for streamed and chunked pushes.
//! - [`MetadataStore`]: small, relational, mutable state: repositories, per-repository blob
//!   links, manifests with their references, tags, referrers, and through its supertrait
//!   [`UploadSessionStore`] the records of upload sessions.
//! - [`RecoveryLog`]: an optional ability of a blob store, small named records of what
//!   blobs cannot tell (repository and tag names), so the metadata can be rebuilt from the
//!   blob store alone.
//!
//! Both are object safe, so a binary picks its backends at run time as `Arc<dyn BlobStore>`
//! and `Arc<dyn MetadataStore>`. Constructors are inherent functions of each backend.
//!
//! # Feature flags
//! - `testsuite`: the shared behaviour tests (module `testsuite`) and the macros that turn each
//!   case into a `#[tokio::test]` in a backend crate.

#![warn(missing_docs)]

pub mod blob;
pub mod error;
pub mod gc;
pub mod insights;
pub mod metadata;
pub mod pulls;
pub mod quotas;
pub mod recovery;
#[cfg(feature = "testsuite")]
pub mod testsuite;
pub mod upload;

pub use blob::{
    BlobCapabilities, BlobInfo, BlobSigner, BlobStore, BlobStoreExt, ByteStream, GetRange,
    GetResult, StageBlob, StagedBlob,
};
pub use error::{MetadataError, StorageError};
pub use gc::{GcMetadata, GcOutcome, GcPolicy, GcReview, ReviewTarget};
pub use insights::InsightsMetadata;
pub use metadata::{ManifestRecord, MetadataStore, NewManifest, Page, ReferrerRecord};
pub use pulls::{PullCount, PullMetadata, Pulls};
pub use quotas::{Quota, QuotaMetadata, QuotaUsage};
pub use recovery::RecoveryLog;
pub use upload::{UploadSession, UploadSessionStore, UploadUpdate};
