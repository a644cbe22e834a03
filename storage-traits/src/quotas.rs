//! Byte quotas per repository pattern, checked in the transaction that links a blob.
//!
//! A quota names the repositories it covers with a matcher (the registry's name patterns;
//! the store does not parse them) and a byte limit. Its usage counts the blobs linked in
//! the repositories it covers, each distinct blob once however many of them link it
//! (the way [`RepositoryStats`](crate::insights::RepositoryStats) counts linked blobs).
//! Manifests' own bytes are not counted: they are not links, and they count only in the
//! registry-wide [`Summary`](crate::insights::Summary), as in the insights.
//!
//! # Behavior
//! - [`QuotaMetadata::link_blob_within_quotas`] links exactly as
//!   [`MetadataStore::link_blob`](crate::MetadataStore::link_blob) does, in one
//!   transaction with the check, if for every quota whose matcher covers the repository
//!   the usage plus the bytes the link adds stays at or under the limit. A link adds the
//!   blob's size to a quota unless one of its repositories already links that blob (so
//!   re-linking, or linking a blob a sibling repository has, always passes). Otherwise it
//!   stores nothing and returns the first refusing quota's usage before the link.
//! - Checks of one quota are serialized, also across processes sharing the database, so
//!   of concurrent links racing for the last bytes exactly as many pass as fit.
//! - [`QuotaMetadata::quota_usage`] reports each quota's usage and limit, in the order
//!   given, from one snapshot.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use oci_spec_types::{Digest, RepositoryName};

use crate::MetadataError;

/// Which repository names a quota covers.
pub type RepositoryMatcher = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A byte limit over the repositories a pattern covers.
#[derive(Clone)]
#[non_exhaustive]
pub struct Quota {
    /// The pattern as written: its name in answers and the key that serializes its checks.
    pub pattern: String,
    /// The limit in bytes.
    pub limit: u64,
    /// Which repository names it covers.
    pub matches: RepositoryMatcher,
}

impl Quota {
    /// A limit of `limit` bytes over the repositories `matches` accepts, named `pattern`.
    pub fn new(pattern: impl Into<String>, limit: u64, matches: RepositoryMatcher) -> Self {
        Quota {
            pattern: pattern.into(),
            limit,
            matches,
        }
    }

    /// True if the quota covers `repo`.
    pub fn covers(&self, repo: &str) -> bool {
        (self.matches)(repo)
    }
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quota")
            .field("pattern", &self.pattern)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// A quota's usage: the bytes of the distinct blobs linked in the repositories it covers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QuotaUsage {
    /// The quota's pattern.
    pub pattern: String,
    /// Bytes of the distinct blobs linked in the covered repositories.
    pub used: u64,
    /// The limit in bytes.
    pub limit: u64,
}

/// The quota checks, reached through
/// [`MetadataStore::quotas`](crate::MetadataStore::quotas).
#[async_trait]
pub trait QuotaMetadata: Send + Sync {
    /// Links `digest` of `size` bytes in `repo` if every quota of `quotas` covering `repo`
    /// stays within its limit: `None` when linked, the refusing quota's usage otherwise
    /// (see the [module docs](self)).
    async fn link_blob_within_quotas(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        size: u64,
        quotas: &[Quota],
    ) -> Result<Option<QuotaUsage>, MetadataError>;

    /// The usage of each quota, in the order given.
    async fn quota_usage(&self, quotas: &[Quota]) -> Result<Vec<QuotaUsage>, MetadataError>;
}

/// The quotas covering `repo`, ordered by pattern (the order a backend takes their locks
/// in, so two checks never wait for each other crosswise).
pub fn covering<'q>(quotas: &'q [Quota], repo: &str) -> Vec<&'q Quota> {
    let mut out: Vec<&Quota> = quotas.iter().filter(|q| q.covers(repo)).collect();
    out.sort_by(|a, b| a.pattern.cmp(&b.pattern));
    out.dedup_by(|a, b| a.pattern == b.pattern && a.limit == b.limit);
    out
}
