//! Byte quotas per repository pattern (`--quota team-a/*=10GiB`).
//!
//! A quota covers every repository its [`NamePattern`] matches, together: `team-a/*` is
//! one budget for all of `team-a`'s repositories. Its usage is the bytes of the distinct
//! blobs linked in those repositories, a blob linked in several of them counted once (as
//! the insights count linked blobs); manifests' own bytes are not counted. The check and
//! the link are one metadata transaction, serialized per quota
//! ([`storage_traits::quotas`]), so pushes racing for the last bytes cannot both pass,
//! whichever replica serves them. A link that would pass a limit is `403 DENIED` with
//! "quota exceeded for PATTERN: used X of Y" and nothing is linked.

use std::sync::Arc;

use oci_spec_types::{Digest, ErrorCode, RepositoryName};
use storage_traits::MetadataError;
use storage_traits::quotas::{Quota, QuotaUsage};

use crate::Inner;
use crate::auth::NamePattern;
use crate::error::RegistryError;

/// The configured quotas (none by default).
#[derive(Debug, Clone, Default)]
pub struct Quotas {
    rules: Vec<Quota>,
}

impl Quotas {
    /// Quotas from `(pattern, limit in bytes)` pairs.
    pub fn new(rules: impl IntoIterator<Item = (NamePattern, u64)>) -> Self {
        let rules = rules
            .into_iter()
            .map(|(pattern, limit)| {
                let name = pattern.as_str().to_string();
                Quota::new(
                    name,
                    limit,
                    Arc::new(move |repo: &str| pattern.matches(repo)),
                )
            })
            .collect();
        Quotas { rules }
    }

    /// Whether there is no quota.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The quotas as the metadata store takes them.
    pub fn as_slice(&self) -> &[Quota] {
        &self.rules
    }

    /// True if some quota covers `repo`.
    pub fn cover(&self, repo: &str) -> bool {
        self.rules.iter().any(|q| q.covers(repo))
    }
}

/// The answer to a refused link.
pub(crate) fn exceeded(u: &QuotaUsage) -> RegistryError {
    RegistryError::oci(
        ErrorCode::Denied,
        format!(
            "quota exceeded for {}: used {} of {}",
            u.pattern, u.used, u.limit
        ),
    )
}

/// Links `digest` in `repo` as `MetadataStore::link_blob` does, if every quota covering
/// `repo` stays within its limit (checked in the linking transaction), waiting out a
/// collection of the blob in progress.
pub(crate) async fn link_blob(
    inner: &Inner,
    repo: &RepositoryName,
    digest: &Digest,
    size: u64,
) -> Result<(), RegistryError> {
    let refused =
        crate::gc::retry_while_being_deleted(|| link_once(inner, repo, digest, size)).await?;
    refused.map_or(Ok(()), |u| Err(exceeded(&u)))
}

/// One attempt of [`link_blob`]: `Ok(Some(usage))` when a quota refuses it, and
/// `BlobBeingDeleted` as the store says it (a mount falls back to an upload on it).
pub(crate) async fn link_once(
    inner: &Inner,
    repo: &RepositoryName,
    digest: &Digest,
    size: u64,
) -> Result<Option<QuotaUsage>, MetadataError> {
    let quotas = &inner.config.quotas;
    if !quotas.cover(repo.as_str()) {
        return inner
            .metadata
            .link_blob(repo, digest, size)
            .await
            .map(|()| None);
    }
    let Some(store) = inner.metadata.quotas() else {
        return Err(MetadataError::backend(
            "quotas",
            "this metadata store cannot enforce quotas",
        ));
    };
    store
        .link_blob_within_quotas(repo, digest, size, quotas.as_slice())
        .await
}
