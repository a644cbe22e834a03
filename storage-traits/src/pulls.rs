//! Pull analytics: how often, and when last, each repository and each manifest (and so
//! each tag, through the manifest it points to) was pulled.
//!
//! The registry does not write per pull: it tallies pulls in memory and hands the store a
//! batch every few seconds ([`PullMetadata::record_pulls`]), so the store sees one
//! transaction per batch however busy the registry is.
//!
//! # Behavior
//! - `record_pulls` is one transaction: for each repository and each manifest named, it
//!   adds the counts and keeps the later of the stored and the given last-pull times (so
//!   batches from several replicas, or arriving out of order, add up to the same figures).
//! - A batch may name the same manifest more than once; the entries add up.
//! - Pulls of a repository or manifest that no longer exists are dropped (a manifest
//!   deleted after its pulls were tallied); the repository's own figures still count pulls
//!   of a manifest deleted since, as long as the repository exists.
//! - Deleting a manifest deletes its figures; deleting a repository deletes its own and
//!   its manifests'. A manifest pushed again after a delete starts from zero.

use std::collections::BTreeMap;

use async_trait::async_trait;
use oci_spec_types::{Digest, RepositoryName};

use crate::MetadataError;

/// Pulls of one manifest in one repository, tallied since the last batch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PullCount {
    /// The repository pulled from.
    pub repository: RepositoryName,
    /// The manifest pulled.
    pub digest: Digest,
    /// How many pulls.
    pub count: u64,
    /// Unix milliseconds of the latest of these pulls.
    pub last_pull: i64,
}

impl PullCount {
    /// `count` pulls of `digest` in `repository`, the latest at `last_pull` (Unix milliseconds).
    pub fn new(repository: RepositoryName, digest: Digest, count: u64, last_pull: i64) -> Self {
        PullCount {
            repository,
            digest,
            count,
            last_pull,
        }
    }
}

/// Pull figures of a repository or manifest. A repository or manifest never pulled (or
/// unknown) has zero pulls and no last pull.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pulls {
    /// How many pulls.
    pub pulls: u64,
    /// Unix milliseconds of the last pull.
    pub last_pull: Option<i64>,
}

/// A manifest of a repository with its pull figures and the tags pointing to it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ManifestPulls {
    /// The manifest.
    pub digest: Digest,
    /// Bytes of the manifest itself.
    pub size: u64,
    /// Tags pointing to it, by name.
    pub tags: Vec<String>,
    /// Unix milliseconds of its push.
    pub created_at: i64,
    /// How many pulls.
    pub pulls: u64,
    /// Unix milliseconds of its last pull.
    pub last_pull: Option<i64>,
}

/// The pull figures, reached through
/// [`MetadataStore::pulls`](crate::MetadataStore::pulls).
#[async_trait]
pub trait PullMetadata: Send + Sync {
    /// Adds one batch of tallied pulls (see the [module docs](self) for the contract).
    async fn record_pulls(&self, pulls: &[PullCount]) -> Result<(), MetadataError>;

    /// The figures of each repository named, in the order given.
    async fn repository_pulls(
        &self,
        repositories: &[RepositoryName],
    ) -> Result<Vec<Pulls>, MetadataError>;

    /// Every manifest of `repo` with its figures, by digest; `None` if the repository
    /// does not exist.
    async fn manifest_pulls(
        &self,
        repo: &RepositoryName,
    ) -> Result<Option<Vec<ManifestPulls>>, MetadataError>;
}

/// Merges entries naming the same manifest (counts added, the later time kept), ordered
/// by repository and digest, so a backend writes each row once and in one order (which
/// keeps concurrent batches from deadlocking on row locks).
pub fn merge_pulls(pulls: &[PullCount]) -> Vec<PullCount> {
    let mut merged: BTreeMap<(&str, &str), PullCount> = BTreeMap::new();
    for p in pulls {
        merged
            .entry((p.repository.as_str(), p.digest.as_str()))
            .and_modify(|m| {
                m.count = m.count.saturating_add(p.count);
                m.last_pull = m.last_pull.max(p.last_pull);
            })
            .or_insert_with(|| p.clone());
    }
    merged.into_values().collect()
}

/// The per-repository totals of merged entries, by repository name.
pub fn repository_totals(pulls: &[PullCount]) -> Vec<(RepositoryName, u64, i64)> {
    let mut totals: BTreeMap<&str, (RepositoryName, u64, i64)> = BTreeMap::new();
    for p in pulls {
        totals
            .entry(p.repository.as_str())
            .and_modify(|t| {
                t.1 = t.1.saturating_add(p.count);
                t.2 = t.2.max(p.last_pull);
            })
            .or_insert_with(|| (p.repository.clone(), p.count, p.last_pull));
    }
    totals.into_values().collect()
}
