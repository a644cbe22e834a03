//! Online garbage collection: reclaims unreferenced links, blobs and (by policy) untagged
//! manifests while the registry keeps serving pushes and pulls.
//!
//! The metadata store keeps a review queue as a side effect of its own writes (see
//! [`storage_traits::gc`]). A pass takes the collector lease, finishes any blob deletion an
//! earlier pass left half done, then applies due reviews one by one. Each review is
//! re-checked and decided in one metadata transaction; only after that commits are a
//! blob's bytes deleted from the blob store. A push that links the blob before the
//! decision commits wins (the re-check sees it); one that comes after waits until the
//! bytes are gone and then writes them again (the tombstone makes it wait).
//!
//! Manifests the collector deletes lose their recovery records too, and bytes are only
//! deleted once the manifest copies queued before are written (see `crate::recovery`).

use std::time::Duration;

use oci_spec_types::{Digest, RepositoryName};
use storage_traits::{GcMetadata, GcOutcome, GcPolicy};

use crate::Registry;
use crate::clock::now_ms;
use crate::error::RegistryError;

/// Settings of the collector.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GcConfig {
    /// How long something unreferenced is kept (default 24 h; zero is allowed, for tests).
    /// It applies when a pass decides, counted from when the review was queued: a pass
    /// with a shorter grace period than earlier ones (or than the server's) reaches what
    /// they kept.
    pub grace: Duration,
    /// Delete untagged, unreferenced manifests older than this. `None` (the default)
    /// keeps them.
    pub untagged_manifest_ttl: Option<Duration>,
    /// How often the background worker runs a pass.
    pub interval: Duration,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            grace: Duration::from_secs(24 * 3600),
            untagged_manifest_ttl: None,
            interval: Duration::from_secs(600),
        }
    }
}

impl GcConfig {
    /// Sets [`GcConfig::grace`].
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }
    /// Sets [`GcConfig::untagged_manifest_ttl`].
    pub fn with_untagged_manifest_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.untagged_manifest_ttl = ttl;
        self
    }
    /// Sets [`GcConfig::interval`].
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    fn policy(&self) -> GcPolicy {
        GcPolicy::new(ms(self.grace)).with_untagged_manifest_ttl(self.untagged_manifest_ttl.map(ms))
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What a pass deleted (or, in a dry run, would delete in its first round: deletions
/// that only become possible after others are not simulated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcReport {
    /// Whether this was a dry run (nothing was deleted).
    pub dry_run: bool,
    /// Blob links removed from repositories.
    pub links: Vec<(RepositoryName, Digest)>,
    /// Manifests deleted.
    pub manifests: Vec<(RepositoryName, Digest)>,
    /// Blobs deleted, with their sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// Bytes of the deleted blobs.
    pub bytes_freed: u64,
    /// Reviews still queued after the pass (not yet due, or kept for later).
    pub queued: u64,
}

/// Reviews applied per round between lease renewals.
const BATCH: usize = 256;
/// The lease outlives a stalled collector by this much.
const LEASE_TTL: Duration = Duration::from_secs(300);

impl Registry {
    /// Runs one collection pass. Fails with `GcUnavailable` if the metadata store cannot
    /// collect or another collector holds the lease.
    pub async fn collect_garbage(
        &self,
        config: &GcConfig,
        dry_run: bool,
    ) -> Result<GcReport, RegistryError> {
        let gc = self
            .inner
            .metadata
            .gc()
            .ok_or(RegistryError::GcUnavailable(
                "this metadata store does not support online garbage collection",
            ))?;
        let holder = uuid::Uuid::new_v4().to_string();
        if !gc.acquire_lease(&holder, now_ms(), ms(LEASE_TTL)).await? {
            return Err(RegistryError::GcUnavailable(
                "another garbage collection pass is running",
            ));
        }
        let result = self.pass(gc, &holder, config, dry_run).await;
        if let Err(e) = gc.release_lease(&holder).await {
            tracing::warn!(error = %e, "could not release the gc lease; it expires by itself");
        }
        result
    }

    async fn pass(
        &self,
        gc: &dyn GcMetadata,
        holder: &str,
        config: &GcConfig,
        dry_run: bool,
    ) -> Result<GcReport, RegistryError> {
        let mut report = GcReport {
            dry_run,
            ..GcReport::default()
        };
        if !dry_run {
            for digest in gc.tombstones().await? {
                self.delete_bytes(gc, &digest).await?;
            }
        }
        let policy = config.policy();
        // Each applied review is removed or postponed past `now`, so rounds run out; the
        // cap only guards against a store that breaks that promise.
        for _round in 0..10_000 {
            let now = now_ms();
            let limit = if dry_run { usize::MAX } else { BATCH };
            let due = gc.due_reviews(now, policy.grace_ms, limit).await?;
            if due.is_empty() {
                break;
            }
            for review in &due {
                match gc.apply_review(review, &policy, now, dry_run).await? {
                    GcOutcome::LinkDeleted { repository, digest } => {
                        report.links.push((repository, digest))
                    }
                    GcOutcome::ManifestDeleted { repository, digest } => {
                        if !dry_run {
                            // Untagged by the policy's definition: no tag record to scan.
                            self.inner
                                .recovery
                                .manifest_deleted(&repository, &digest, false)
                                .await;
                        }
                        report.manifests.push((repository, digest))
                    }
                    GcOutcome::BlobDeleted { digest, size } => {
                        if !dry_run {
                            self.delete_bytes(gc, &digest).await?;
                        }
                        report.bytes_freed += size;
                        report.blobs.push((digest, size));
                    }
                    _ => {}
                }
            }
            if dry_run || !gc.acquire_lease(holder, now_ms(), ms(LEASE_TTL)).await? {
                break;
            }
        }
        if !dry_run && !report.manifests.is_empty() {
            // The deleted manifests' records are removed in the background; a one-off
            // pass (`registry gc`) may exit right after it returns.
            self.inner.recovery.flush().await;
        }
        report.queued = gc.queue_length().await?;
        Ok(report)
    }

    /// Deletes a tombstoned blob's bytes, then the tombstone (in that order: a tombstone
    /// without bytes only delays a push; bytes without a tombstone would leak).
    async fn delete_bytes(
        &self,
        gc: &dyn GcMetadata,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        // A manifest copy queued before the manifest's deletion must not write its bytes
        // back after they are deleted here (see `crate::recovery`).
        self.inner.recovery.flush_copies().await;
        self.inner.blobs.delete(digest).await?;
        gc.clear_tombstone(digest).await?;
        tracing::info!(%digest, "blob deleted by garbage collection");
        Ok(())
    }

    /// Starts the background collector: one pass every `config.interval`.
    pub fn spawn_gc(&self, config: GcConfig) -> tokio::task::JoinHandle<()> {
        let registry = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(config.interval.max(Duration::from_millis(10)));
            loop {
                tick.tick().await;
                match registry.collect_garbage(&config, false).await {
                    Ok(r) if r.links.is_empty() && r.manifests.is_empty() && r.blobs.is_empty() => {
                    }
                    Ok(r) => tracing::info!(
                        links = r.links.len(),
                        manifests = r.manifests.len(),
                        blobs = r.blobs.len(),
                        bytes = r.bytes_freed,
                        "garbage collected"
                    ),
                    Err(RegistryError::GcUnavailable(why)) => {
                        tracing::debug!(why, "gc pass skipped")
                    }
                    Err(e) => tracing::warn!(error = %e, "gc pass failed"),
                }
            }
        })
    }
}

/// Runs a metadata write that may meet a blob the collector is deleting, retrying while
/// the collector finishes (it deletes the bytes, then the tombstone, in well under a
/// second). If it is still being deleted after that, the client gets 429 and retries.
pub(crate) async fn retry_while_being_deleted<T, F, Fut>(
    f: F,
) -> Result<T, storage_traits::MetadataError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, storage_traits::MetadataError>>,
{
    use backon::{ExponentialBuilder, Retryable};
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_millis(500))
        .with_max_times(12);
    f.retry(backoff)
        .when(|e| matches!(e, storage_traits::MetadataError::BlobBeingDeleted(_)))
        .await
}
