//! Online garbage collection's view of the metadata: a review queue and the decision to
//! delete, taken inside the store's own transactions.
//!
//! Things enter the review queue when they may have lost their last reference:
//! - a repository's blob link, when the blob is linked (an upload whose manifest may never
//!   come) and when a manifest referencing it is deleted;
//! - a blob, when a repository link to it is removed or a manifest with its digest (a
//!   manifest's bytes are a blob too) is deleted;
//! - a manifest, when it loses a tag or an index referencing it is deleted.
//!
//! Each review keeps the time it was queued. It is due for a collector once that
//! collector's own grace period has passed since then (and after any deliberate
//! postponement the store made, see [`UNTAGGED_RECHECK_MS`]): the grace period applies
//! when the collector decides, not when the review was queued, so a pass with a short
//! grace reaches reviews queued or looked at under a long one. The collector takes due
//! reviews and, for each, calls [`GcMetadata::apply_review`], which re-checks the
//! references in the same transaction that deletes, so a push that re-links a blob before
//! that commit wins. A blob whose row is deleted leaves a tombstone until its bytes are
//! gone from the blob store; linking a tombstoned blob fails with
//! [`MetadataError::BlobBeingDeleted`], and the registry retries once the bytes are gone
//! and then writes them again, so bytes are never deleted under a new link.

use async_trait::async_trait;
use oci_spec_types::{Digest, RepositoryName};

use crate::MetadataError;

/// What a review looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ReviewTarget {
    /// The link of `digest` in a repository: garbage when no manifest of that repository
    /// references it and it was not (re-)linked within the grace period.
    Link(RepositoryName),
    /// The blob itself: garbage when no repository links it, no manifest references it,
    /// and no manifest has its digest.
    Blob,
    /// A manifest of a repository: garbage only under the untagged-manifest policy.
    Manifest(RepositoryName),
}

/// A queued garbage-collection review: a thing that lost a reference, to look at again
/// once the grace period has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcReview {
    /// What is reviewed: a link, a blob or a manifest.
    pub target: ReviewTarget,
    /// The digest of the blob or manifest.
    pub digest: Digest,
    /// Unix time in milliseconds from which the review may be applied, as
    /// [`GcMetadata::due_reviews`] computed it for the grace period it was given
    /// (informational: [`GcMetadata::apply_review`] re-reads the store's own record).
    pub due_at: i64,
}

impl GcReview {
    /// A review of `target` at `digest`, due at `due_at` (Unix milliseconds).
    pub fn new(target: ReviewTarget, digest: Digest, due_at: i64) -> Self {
        GcReview {
            target,
            digest,
            due_at,
        }
    }
}

/// The rules a collection pass applies.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcPolicy {
    /// How long something unreferenced is kept before it may be deleted (milliseconds).
    pub grace_ms: i64,
    /// Delete manifests that have been untagged for longer than this (milliseconds) and
    /// that no index references, that are no referrer's subject, and whose own subject is
    /// gone. `None` keeps untagged manifests forever (the default).
    pub untagged_manifest_ttl_ms: Option<i64>,
}

impl GcPolicy {
    /// Collect what has been unreferenced for `grace_ms`; keep untagged manifests.
    pub fn new(grace_ms: i64) -> Self {
        GcPolicy {
            grace_ms,
            untagged_manifest_ttl_ms: None,
        }
    }

    /// Also collect untagged, unreferenced manifests older than `ttl_ms` (`None`: never).
    pub fn with_untagged_manifest_ttl(mut self, ttl_ms: Option<i64>) -> Self {
        self.untagged_manifest_ttl_ms = ttl_ms;
        self
    }
}

/// How long a review of an untagged, unreferenced manifest is parked when it comes due
/// while [`GcPolicy::untagged_manifest_ttl_ms`] is `None`: the store keeps the review, with
/// the time it was queued, instead of dropping it, so a policy turned on later reaches
/// manifests untagged while it was off, at the latest this long after it is turned on, and
/// counts their age from when they were untagged. One hour: a parked review costs one
/// small transaction per hour. Parking is the collector-independent postponement: no
/// collector, whatever its grace period, is given the review before it ends.
pub const UNTAGGED_RECHECK_MS: i64 = 3_600_000;

/// What applying one review did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GcOutcome {
    /// Still referenced (or not yet old enough): nothing deleted, review dropped or
    /// postponed.
    Kept,
    /// The repository's link to the blob was removed.
    LinkDeleted {
        /// The repository.
        repository: RepositoryName,
        /// The blob.
        digest: Digest,
    },
    /// The untagged, unreferenced manifest was removed from the repository.
    ManifestDeleted {
        /// The repository.
        repository: RepositoryName,
        /// The manifest.
        digest: Digest,
    },
    /// The blob's row is gone and a tombstone is left: its bytes must now be deleted
    /// from the blob store, then the tombstone cleared.
    BlobDeleted {
        /// The blob.
        digest: Digest,
        /// Its size in bytes.
        size: u64,
    },
}

/// The garbage-collection ability of a metadata store, reached through
/// [`MetadataStore::gc`](crate::MetadataStore::gc).
///
/// # Behavior
/// - `apply_review` is one transaction: it re-checks the target's references as of that
///   transaction, deletes it if it is garbage, queues reviews for what the deletion may
///   have orphaned (due `now + grace`), removes the review, and reports what happened.
///   With `dry_run` it reports the same but changes nothing.
/// - `link_blob` and `put_manifest` on a digest with a tombstone fail with
///   [`MetadataError::BlobBeingDeleted`]; re-linking a blob postpones its reviews.
/// - Reviews are unique per (target, digest): queueing one again restarts it (and ends a
///   postponement). The grace period is counted from the store's own record of when the
///   review was (re)queued, read inside the deciding transaction, never from the `due_at`
///   the caller passes.
/// - `due_reviews(now, grace, ..)` lists a review when it was (re)queued at least `grace`
///   before `now` and any postponement of it has ended by `now`. The grace period is the
///   collector's, given at each call: nothing about it is stored with the review, so a
///   collector with a shorter grace period than the one that queued or kept a review
///   reaches it at once.
/// - `apply_review` of a review that is no longer queued (another pass took it) is
///   [`GcOutcome::Kept`] and changes nothing; of one not yet old enough under the policy's
///   grace period (a push restarted it after it was listed) is `Kept` and leaves it as it
///   is (due again once the grace period has passed since it was restarted).
/// - A manifest review applied while the untagged policy is off, of a manifest that the
///   policy would delete once old enough, is postponed by [`UNTAGGED_RECHECK_MS`] from
///   `now`, keeping the time it was queued. One applied while the policy is on, of a
///   manifest younger than its time to live, is postponed until it is that old. Any other
///   kept review is removed (whatever changes that queues it again).
#[async_trait]
pub trait GcMetadata: Send + Sync {
    /// Reviews due at `now_ms` for a collector whose grace period is `grace_ms` (see
    /// [`GcPolicy::grace_ms`]): (re)queued at or before `now_ms - grace_ms` and not
    /// postponed past `now_ms`. Oldest first, at most `limit`.
    async fn due_reviews(
        &self,
        now_ms: i64,
        grace_ms: i64,
        limit: usize,
    ) -> Result<Vec<GcReview>, MetadataError>;

    /// Applies `review` under `policy` in one transaction (see `# Behavior`); with
    /// `dry_run`, reports what it would do and changes nothing.
    async fn apply_review(
        &self,
        review: &GcReview,
        policy: &GcPolicy,
        now_ms: i64,
        dry_run: bool,
    ) -> Result<GcOutcome, MetadataError>;

    /// Blobs whose rows were deleted but whose bytes may still be in the blob store (a
    /// collector that stopped between the two steps leaves these).
    async fn tombstones(&self) -> Result<Vec<Digest>, MetadataError>;

    /// Called once the blob's bytes are gone from the blob store.
    async fn clear_tombstone(&self, digest: &Digest) -> Result<(), MetadataError>;

    /// Number of reviews queued, due or not (for metrics and `registry gc`).
    async fn queue_length(&self) -> Result<u64, MetadataError>;

    /// Takes (or, for the same `holder`, extends) the collector lease until
    /// `now_ms + ttl_ms`; false if another holder's lease has not expired. Only one
    /// collector may run at a time: two could each delete a tombstoned blob's bytes, one
    /// of them after a new push had written them again.
    async fn acquire_lease(
        &self,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, MetadataError>;

    /// Gives the lease up early (it also expires by itself).
    async fn release_lease(&self, holder: &str) -> Result<(), MetadataError>;
}
