//! Questions a storage-walking registry cannot answer cheaply, answered from the metadata
//! database: space per repository with shared blobs counted once, reuse of layers, who
//! uses a blob, what kinds of artifact are stored, and listings sorted and filtered
//! beyond what the distribution spec offers.
//!
//! The result types are plain records (built by each backend), so they are not
//! `#[non_exhaustive]`: a new field is a new query version, added to every backend.

use async_trait::async_trait;
use oci_spec_types::{Digest, RepositoryName};

use crate::MetadataError;

/// Registry-wide totals. Blob bytes count every stored blob once (manifests' own bytes
/// included), however many repositories link it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub repositories: u64,
    pub manifests: u64,
    pub tags: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
}

/// One repository's footprint.
///
/// - `unique_bytes`: blobs only this repository links (what deleting it would free).
/// - `shared_bytes`: blobs it links that other repositories link too.
/// - `attributed_bytes`: each linked blob's size divided by the number of repositories
///   linking it (rounded down), so attributed bytes over all repositories add up to the
///   bytes of linked blobs. Manifests' own bytes are not linked and count only in
///   [`Summary::blob_bytes`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RepositoryStats {
    pub name: String,
    pub unique_bytes: u64,
    pub shared_bytes: u64,
    pub attributed_bytes: u64,
    pub blobs: u64,
    pub manifests: u64,
    pub tags: u64,
    /// Unix milliseconds of the last manifest push or tag move, if any.
    pub last_push: Option<i64>,
}

/// How to order repository statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RepositoryOrder {
    /// Largest `attributed_bytes` first.
    Size,
    /// Most tags first.
    Tags,
    /// Most recent push first.
    LastPush,
    /// By name, byte-wise.
    Name,
}

/// A blob and how widely it is used.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BlobReuse {
    pub digest: Digest,
    pub size: u64,
    /// Repositories with a manifest referencing it.
    pub repositories: u64,
    /// Manifests referencing it.
    pub manifests: u64,
}

/// A manifest that references a blob.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BlobUser {
    pub repository: String,
    pub manifest: Digest,
    pub tags: Vec<String>,
}

/// Everything that uses one blob.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BlobUsage {
    pub size: Option<u64>,
    /// Repositories that link it (may serve it).
    pub linked_by: Vec<String>,
    /// Manifests that reference it as config or layer.
    pub referenced_by: Vec<BlobUser>,
}

/// How many manifests have one artifact type (`artifactType`, or the config media type).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArtifactTypeCount {
    /// `None` for indexes and manifests without either.
    pub artifact_type: Option<String>,
    pub manifests: u64,
    pub bytes: u64,
}

/// A repository in a filtered, sorted listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RepositoryEntry {
    pub name: RepositoryName,
    pub last_push: Option<i64>,
}

/// Which repository names a listing keeps. Matching is byte-wise and case-sensitive
/// (repository names are lowercase by the spec's grammar); `_` and `%` are literal.
///
/// Exhaustive on purpose: every store must implement each kind of filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameFilter<'a> {
    /// Names that start with this; `""` keeps every name. Served from the name index.
    Prefix(&'a str),
    /// Names that contain this anywhere (a search box: `alpine` finds `library/alpine`).
    /// Reads every name, which costs milliseconds at 100,000 repositories.
    Contains(&'a str),
}

/// A tag in a filtered, sorted listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TagEntry {
    pub name: String,
    pub digest: Digest,
    /// Unix milliseconds of the tag's last move.
    pub updated_at: i64,
}

/// The insight queries, reached through
/// [`MetadataStore::insights`](crate::MetadataStore::insights). All are read-only and run
/// in one snapshot each.
#[async_trait]
pub trait InsightsMetadata: Send + Sync {
    async fn summary(&self) -> Result<Summary, MetadataError>;

    async fn repository_stats(
        &self,
        order: RepositoryOrder,
        limit: usize,
    ) -> Result<Vec<RepositoryStats>, MetadataError>;

    /// Blobs referenced by the most manifests first (ties: larger first).
    async fn most_reused_blobs(&self, limit: usize) -> Result<Vec<BlobReuse>, MetadataError>;

    async fn blob_usage(&self, digest: &Digest) -> Result<BlobUsage, MetadataError>;

    async fn artifact_types(&self) -> Result<Vec<ArtifactTypeCount>, MetadataError>;

    /// Repositories whose name passes `filter`, most recently pushed first (never pushed
    /// last, then by name); `after` is the previous page's last `(last_push, name)`.
    async fn repositories_by_last_push(
        &self,
        filter: NameFilter<'_>,
        after: Option<(Option<i64>, String)>,
        limit: usize,
    ) -> Result<Vec<RepositoryEntry>, MetadataError>;

    /// Tags of `repo` starting with `prefix`, most recently moved first (ties by name);
    /// `after` is the previous page's last `(updated_at, name)`. `None` if the repository
    /// does not exist.
    async fn tags_by_last_push(
        &self,
        repo: &RepositoryName,
        prefix: &str,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Option<Vec<TagEntry>>, MetadataError>;

    /// Tags of `repo` starting with `prefix`, by name, after `after`.
    async fn tags_by_name(
        &self,
        repo: &RepositoryName,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<TagEntry>>, MetadataError>;

    /// Repositories whose name passes `filter`, largest `attributed_bytes` first (ties by
    /// name), with their footprint; `after` is the previous page's last
    /// `(attributed_bytes, name)`. Each page computes every repository's footprint, as
    /// [`repository_stats`](Self::repository_stats) does: no index orders by size.
    async fn repositories_by_size(
        &self,
        filter: NameFilter<'_>,
        after: Option<(u64, String)>,
        limit: usize,
    ) -> Result<Vec<RepositoryStats>, MetadataError>;

    /// Repositories whose name passes `filter`, by name, after `after`.
    async fn repositories_by_name(
        &self,
        filter: NameFilter<'_>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RepositoryEntry>, MetadataError>;
}
