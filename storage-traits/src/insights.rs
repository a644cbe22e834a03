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
    /// Repositories with at least one manifest or link.
    pub repositories: u64,
    /// Manifests stored, over all repositories.
    pub manifests: u64,
    /// Tags, over all repositories.
    pub tags: u64,
    /// Distinct blobs stored.
    pub blobs: u64,
    /// Bytes of all stored blobs, each once.
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
    /// The repository's name.
    pub name: String,
    /// Bytes of blobs only this repository links.
    pub unique_bytes: u64,
    /// Bytes of blobs it shares with other repositories.
    pub shared_bytes: u64,
    /// Its share of the bytes of the blobs it links.
    pub attributed_bytes: u64,
    /// Blobs it links.
    pub blobs: u64,
    /// Manifests it holds.
    pub manifests: u64,
    /// Tags it has.
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
    /// The blob.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Repositories with a manifest referencing it.
    pub repositories: u64,
    /// Manifests referencing it.
    pub manifests: u64,
}

/// A manifest that references a blob.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BlobUser {
    /// The manifest's repository.
    pub repository: String,
    /// The manifest.
    pub manifest: Digest,
    /// The manifest's tags in that repository.
    pub tags: Vec<String>,
}

/// Everything that uses one blob.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BlobUsage {
    /// The blob's size, `None` if it is not stored.
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
    /// Manifests of this type.
    pub manifests: u64,
    /// The bytes of these manifests themselves (not of the blobs they reference).
    pub bytes: u64,
}

/// A repository in a filtered, sorted listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RepositoryEntry {
    /// The repository's name.
    pub name: RepositoryName,
    /// Unix milliseconds of its last push, `None` if never pushed.
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
    /// The tag.
    pub name: String,
    /// The manifest it points at.
    pub digest: Digest,
    /// Unix milliseconds of the tag's last move.
    pub updated_at: i64,
}

/// The insight queries, reached through
/// [`MetadataStore::insights`](crate::MetadataStore::insights). All are read-only and run
/// in one snapshot each.
#[async_trait]
pub trait InsightsMetadata: Send + Sync {
    /// Registry-wide totals.
    async fn summary(&self) -> Result<Summary, MetadataError>;

    /// Up to `limit` repositories' footprints, in `order`.
    async fn repository_stats(
        &self,
        order: RepositoryOrder,
        limit: usize,
    ) -> Result<Vec<RepositoryStats>, MetadataError>;

    /// Blobs referenced by the most manifests first (ties: larger first).
    async fn most_reused_blobs(&self, limit: usize) -> Result<Vec<BlobReuse>, MetadataError>;

    /// What links and references the blob `digest`.
    async fn blob_usage(&self, digest: &Digest) -> Result<BlobUsage, MetadataError>;

    /// Manifests counted by artifact type, most first.
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
