//! Behaviour cases for [`GcMetadata`], the garbage-collection ability of a
//! [`MetadataStore`].
//!
//! Every case is a `pub async fn case(store: &dyn MetadataStore)` that reaches the ability
//! through [`MetadataStore::gc`] (a store under this suite must have it) and checks one
//! part of the contract in [`crate::gc`]. Cases work in repositories under their own random
//! prefix and on digests of their own, and apply only the reviews of those digests, so
//! they may run concurrently against one shared database. The exceptions are global by
//! nature: the collector lease (one row per store) and the queue length; their cases
//! expect no other collector to run on the store meanwhile (the lease case releases what
//! it took).
//!
//! The stores stamp reviews with their own clock (Unix milliseconds), and the cases pass
//! `now` to [`GcMetadata::apply_review`] relative to the wall clock read around each write,
//! so the grace-period checks do not depend on how fast the test runs.
//!
//! # Running the suite in a backend crate
//!
//! [`gc_store_tests!`](crate::gc_store_tests) works exactly like
//! [`metadata_store_tests!`](crate::metadata_store_tests): one expression that makes a
//! fresh store (evaluated once per test, may `.await`, may be a `(store, guard)` tuple),
//! then optional attributes put on every generated test:
//!
//! ```ignore
//! // metadata-foo/tests/gc.rs
//! storage_traits::gc_store_tests!(make_store().await);
//! storage_traits::gc_store_tests!(pg_store().await, #[ignore = "needs PostgreSQL"]);
//! ```

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use oci_spec_types::{Digest, Reference, RepositoryName, Tag};

use crate::{
    GcMetadata, GcOutcome, GcPolicy, GcReview, MetadataError, MetadataStore, NewManifest,
    ReviewTarget,
};

/// Expands to one `#[tokio::test]` per case of [`testsuite::gc`](crate::testsuite::gc),
/// each running the case against a fresh store made by the given expression.
///
/// ```ignore
/// storage_traits::gc_store_tests!(make_store().await);
/// ```
///
/// See the [module docs](crate::testsuite::gc) and those of
/// [`testsuite::metadata`](crate::testsuite::metadata) for what the expression may be.
#[macro_export]
macro_rules! gc_store_tests {
    ($make:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::__gc_store_case!([$(#[$attr])*] ($make) unused_upload_link_deleted_after_grace_then_blob_tombstoned);
        $crate::__gc_store_case!([$(#[$attr])*] ($make) unused_upload_link_postponed_within_grace);
        $crate::__gc_store_case!([$(#[$attr])*] ($make) grace_is_the_deciding_collectors);
        $crate::__gc_store_case!([$(#[$attr])*] ($make) link_referenced_by_manifest_is_kept);
        $crate::__gc_store_case!([$(#[$attr])*] ($make) deleted_manifest_frees_what_only_it_used);
        $crate::__gc_store_case!([$(#[$attr])*] ($make) relinking_before_the_decision_keeps_link_and_blob);
        $crate::__gc_store_case!([$(#[$attr])*] ($make) tombstone_refuses_link_and_put_manifest_until_cleared);
        $crate::__gc_store_case!([$(#[$attr])*] ($make) dry_run_reports_the_same_and_changes_nothing);
        $crate::__gc_store_case!([$(#[$attr])*] ($make) untagged_manifests_kept_without_policy);
        $crate::__gc_store_case!([$(#[$attr])*] ($make) untagged_policy_turned_on_later_reaches_parked_reviews);
        $crate::__gc_store_case!([$(#[$attr])*] ($make) parked_review_waits_for_its_recheck_whatever_the_grace);
        $crate::__gc_store_case!([$(#[$attr])*] ($make) untagged_manifest_policy_deletes_only_unreferenced);
        $crate::__gc_store_case!([$(#[$attr])*] ($make) collector_lease);
        $crate::__gc_store_case!([$(#[$attr])*] ($make) queue_length_counts_every_review);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __gc_store_case {
    ([$($attr:tt)*] ($make:expr) $case:ident) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $($attr)*
        async fn $case() {
            let store = $make;
            $crate::testsuite::gc::$case(
                $crate::testsuite::metadata::AsMetadataStore::as_metadata_store(&store),
            )
            .await;
        }
    };
}

// ---------------------------------------------------------------------------------------
// Helpers

const IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const IMAGE_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A grace period far longer than any case takes.
const LONG_GRACE_MS: i64 = 3_600_000;

fn gc(store: &dyn MetadataStore) -> &dyn GcMetadata {
    store
        .gc()
        .expect("the GC suite needs a store whose gc() is Some")
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Waits until the wall clock has passed `t`, so the next write is stamped later.
async fn after(t: i64) {
    while wall_ms() <= t {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Repositories `<prefix>/<label>` under one random prefix per case.
struct Repos(String);

impl Repos {
    fn new() -> Self {
        Repos(format!("gc{}", uuid::Uuid::new_v4().simple()))
    }
    fn get(&self, label: &str) -> RepositoryName {
        format!("{}/{label}", self.0)
            .parse()
            .expect("test repository name is valid")
    }
}

fn tag(s: &str) -> Tag {
    s.parse().expect("test tag is valid")
}

fn random_digest() -> Digest {
    Digest::sha256_of(uuid::Uuid::new_v4().as_bytes())
}

fn manifest_with_media_type(repo: &RepositoryName, label: &str, media_type: &str) -> NewManifest {
    let content = Bytes::from(format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{media_type}\",\"x-label\":\"{label}\",\"x-nonce\":\"{}\"}}",
        uuid::Uuid::new_v4()
    ));
    NewManifest::new(
        repo.clone(),
        Digest::sha256_of(&content),
        media_type.to_string(),
        content,
    )
}

fn manifest(repo: &RepositoryName, label: &str) -> NewManifest {
    manifest_with_media_type(repo, label, IMAGE_MANIFEST)
}

fn index(repo: &RepositoryName, label: &str, children: &[&NewManifest]) -> NewManifest {
    manifest_with_media_type(repo, label, IMAGE_INDEX)
        .with_manifest_refs(children.iter().map(|c| c.digest.clone()).collect())
}

/// The same manifest bytes, stored in another repository.
fn in_repo(m: &NewManifest, repo: &RepositoryName) -> NewManifest {
    let mut m = m.clone();
    m.repository = repo.clone();
    m
}

async fn link(store: &dyn MetadataStore, repo: &RepositoryName, d: &Digest, size: u64) {
    store
        .link_blob(repo, d, size)
        .await
        .unwrap_or_else(|e| panic!("link_blob {d} in {repo} failed: {e}"));
}

async fn put(store: &dyn MetadataStore, m: &NewManifest) {
    store
        .put_manifest(m)
        .await
        .unwrap_or_else(|e| panic!("put_manifest {} failed: {e}", m.digest));
}

async fn has_manifest(store: &dyn MetadataStore, repo: &RepositoryName, d: &Digest) -> bool {
    store
        .get_manifest(repo, &Reference::Digest(d.clone()))
        .await
        .expect("get_manifest")
        .is_some()
}

async fn linked(store: &dyn MetadataStore, repo: &RepositoryName, d: &Digest) -> Option<u64> {
    store.blob_link(repo, d).await.expect("blob_link")
}

fn link_review(repo: &RepositoryName, d: &Digest) -> GcReview {
    GcReview::new(ReviewTarget::Link(repo.clone()), d.clone(), 0)
}

fn blob_review(d: &Digest) -> GcReview {
    GcReview::new(ReviewTarget::Blob, d.clone(), 0)
}

fn manifest_review(repo: &RepositoryName, d: &Digest) -> GcReview {
    GcReview::new(ReviewTarget::Manifest(repo.clone()), d.clone(), 0)
}

/// The queued reviews of `ours` due at `now` for a collector whose grace period is
/// `grace`, as (target, digest), ignoring their due times.
async fn due_of(
    gc: &dyn GcMetadata,
    now: i64,
    grace: i64,
    ours: &BTreeSet<Digest>,
) -> BTreeSet<(ReviewTarget, Digest)> {
    gc.due_reviews(now, grace, usize::MAX)
        .await
        .expect("due_reviews")
        .into_iter()
        .filter(|r| ours.contains(&r.digest))
        .map(|r| (r.target, r.digest))
        .collect()
}

/// Every queued review of `ours`, due or not.
async fn queued_of(
    gc: &dyn GcMetadata,
    ours: &BTreeSet<Digest>,
) -> BTreeSet<(ReviewTarget, Digest)> {
    due_of(gc, i64::MAX, 0, ours).await
}

async fn apply(gc: &dyn GcMetadata, review: &GcReview, policy: &GcPolicy, now: i64) -> GcOutcome {
    gc.apply_review(review, policy, now, false)
        .await
        .unwrap_or_else(|e| panic!("apply_review {review:?} failed: {e}"))
}

async fn tombstoned(gc: &dyn GcMetadata, d: &Digest) -> bool {
    gc.tombstones().await.expect("tombstones").contains(d)
}

async fn our_tombstones(gc: &dyn GcMetadata, ours: &BTreeSet<Digest>) -> BTreeSet<Digest> {
    gc.tombstones()
        .await
        .expect("tombstones")
        .into_iter()
        .filter(|d| ours.contains(d))
        .collect()
}

/// A collection pass over the reviews of `ours` only: rounds of "apply every due review"
/// at `now` until none of ours is due. Returns every outcome other than `Kept`.
async fn pass(
    gc: &dyn GcMetadata,
    policy: &GcPolicy,
    now: i64,
    ours: &BTreeSet<Digest>,
) -> BTreeSet<Outcome> {
    let mut out = BTreeSet::new();
    for _round in 0..20 {
        let due: Vec<GcReview> = gc
            .due_reviews(now, policy.grace_ms, usize::MAX)
            .await
            .expect("due_reviews")
            .into_iter()
            .filter(|r| ours.contains(&r.digest))
            .collect();
        if due.is_empty() {
            return out;
        }
        for review in &due {
            if let Some(o) = Outcome::of(apply(gc, review, policy, now).await) {
                out.insert(o);
            }
        }
    }
    panic!("reviews of this case were still due after 20 rounds at one `now`");
}

/// A deleting outcome, comparable and orderable for set assertions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Link(RepositoryName, Digest),
    Manifest(RepositoryName, Digest),
    Blob(Digest, u64),
}

impl Outcome {
    fn of(o: GcOutcome) -> Option<Outcome> {
        match o {
            GcOutcome::Kept => None,
            GcOutcome::LinkDeleted { repository, digest } => {
                Some(Outcome::Link(repository, digest))
            }
            GcOutcome::ManifestDeleted { repository, digest } => {
                Some(Outcome::Manifest(repository, digest))
            }
            GcOutcome::BlobDeleted { digest, size } => Some(Outcome::Blob(digest, size)),
        }
    }
}

fn set<T: Ord + Clone>(items: &[T]) -> BTreeSet<T> {
    items.iter().cloned().collect()
}

fn size_of(m: &NewManifest) -> u64 {
    m.content.len() as u64
}

/// Clears the tombstones of `digests` (as a collector does once their bytes are gone).
async fn clear(gc: &dyn GcMetadata, digests: &[&Digest]) {
    for d in digests {
        gc.clear_tombstone(d).await.expect("clear_tombstone");
    }
}

// ---------------------------------------------------------------------------------------
// Links and blobs

/// A blob linked by an upload that no manifest ever references: after the grace period its
/// link goes, the blob's review follows at once, and deleting the blob leaves a tombstone
/// that reports its size until cleared.
pub async fn unused_upload_link_deleted_after_grace_then_blob_tombstoned(
    store: &dyn MetadataStore,
) {
    let gc = gc(store);
    let repos = Repos::new();
    let repo = repos.get("app");
    let blob = random_digest();
    let policy = GcPolicy::new(LONG_GRACE_MS);

    link(store, &repo, &blob, 1234).await;
    let linked_by = wall_ms();
    let ours = BTreeSet::from([blob.clone()]);
    assert!(
        queued_of(gc, &ours)
            .await
            .contains(&(ReviewTarget::Link(repo.clone()), blob.clone())),
        "link_blob queues a review of the new link"
    );

    let now = linked_by + LONG_GRACE_MS;
    assert_eq!(
        apply(gc, &link_review(&repo, &blob), &policy, now).await,
        GcOutcome::LinkDeleted {
            repository: repo.clone(),
            digest: blob.clone()
        }
    );
    assert_eq!(linked(store, &repo, &blob).await, None);
    assert!(
        due_of(gc, now, LONG_GRACE_MS, &ours)
            .await
            .contains(&(ReviewTarget::Blob, blob.clone())),
        "deleting the last link queues the blob, due in the same pass"
    );
    assert!(!tombstoned(gc, &blob).await);

    assert_eq!(
        apply(gc, &blob_review(&blob), &policy, now).await,
        GcOutcome::BlobDeleted {
            digest: blob.clone(),
            size: 1234
        }
    );
    assert!(
        tombstoned(gc, &blob).await,
        "a deleted blob leaves a tombstone"
    );
    assert!(
        queued_of(gc, &ours).await.is_empty(),
        "applied reviews leave the queue"
    );
    // Applying the same review again finds nothing to do.
    assert_eq!(
        apply(gc, &blob_review(&blob), &policy, now).await,
        GcOutcome::Kept
    );

    clear(gc, &[&blob]).await;
    assert!(!tombstoned(gc, &blob).await);
    // Clearing an absent tombstone is fine.
    clear(gc, &[&blob]).await;
}

/// Within the grace period an unused link is kept and its review stays queued, due when
/// the grace period ends.
pub async fn unused_upload_link_postponed_within_grace(store: &dyn MetadataStore) {
    let gc = gc(store);
    let repos = Repos::new();
    let repo = repos.get("app");
    let blob = random_digest();
    let policy = GcPolicy::new(LONG_GRACE_MS);
    let ours = BTreeSet::from([blob.clone()]);

    let before = wall_ms();
    link(store, &repo, &blob, 10).await;
    let linked_by = wall_ms();

    let early = before + LONG_GRACE_MS - 1;
    assert_eq!(
        apply(gc, &link_review(&repo, &blob), &policy, early).await,
        GcOutcome::Kept
    );
    assert_eq!(linked(store, &repo, &blob).await, Some(10));
    let target = (ReviewTarget::Link(repo.clone()), blob.clone());
    assert!(
        queued_of(gc, &ours).await.contains(&target),
        "a postponed review stays queued"
    );
    assert!(
        !due_of(gc, early, LONG_GRACE_MS, &ours)
            .await
            .contains(&target),
        "a postponed review is not due again before the grace period ends"
    );
    assert!(
        due_of(gc, linked_by + LONG_GRACE_MS, LONG_GRACE_MS, &ours)
            .await
            .contains(&target),
        "a postponed review is due when the grace period ends"
    );
    assert!(!tombstoned(gc, &blob).await);

    // Once due, it goes.
    let outcomes = pass(gc, &policy, linked_by + LONG_GRACE_MS, &ours).await;
    assert_eq!(
        outcomes,
        set(&[
            Outcome::Link(repo.clone(), blob.clone()),
            Outcome::Blob(blob.clone(), 10)
        ])
    );
    clear(gc, &[&blob]).await;
}

/// The grace period is the deciding collector's, counted from when the review was queued:
/// reviews a collector with a long grace period looked at and kept (an upload's unused
/// link; what a deleted manifest used, and an untagged manifest under a time to live
/// shorter than that grace) are due at once for one with no grace period, which frees
/// them; a collector with a long grace period still is not given them.
pub async fn grace_is_the_deciding_collectors(store: &dyn MetadataStore) {
    let gc = gc(store);
    let repos = Repos::new();
    let repo = repos.get("app");
    let upload = random_digest();
    let layer = random_digest();
    let before = wall_ms();
    link(store, &repo, &upload, 7).await;
    link(store, &repo, &layer, 11).await;
    let image = manifest(&repo, "image")
        .with_tag(Some(tag("v1")))
        .with_blob_refs(vec![layer.clone()]);
    put(store, &image).await;
    let untagged = manifest(&repo, "untagged").with_tag(Some(tag("v2")));
    put(store, &untagged).await;
    assert!(
        store
            .delete_manifest(&repo, &image.digest)
            .await
            .expect("delete_manifest")
    );
    assert!(
        store
            .delete_tag(&repo, &tag("v2"))
            .await
            .expect("delete_tag")
    );
    let ours = set(&[
        upload.clone(),
        layer.clone(),
        image.digest.clone(),
        untagged.digest.clone(),
    ]);
    let queued_by = wall_ms();
    let expected = set(&[
        (ReviewTarget::Link(repo.clone()), upload.clone()),
        (ReviewTarget::Link(repo.clone()), layer.clone()),
        (ReviewTarget::Blob, image.digest.clone()),
        (
            ReviewTarget::Manifest(repo.clone()),
            untagged.digest.clone(),
        ),
    ]);
    assert!(queued_of(gc, &ours).await.is_superset(&expected));

    // A collector with a long grace period: nothing is due for it; told to decide anyway
    // (as one that listed the reviews before a push restarted them would), it keeps all.
    let long = GcPolicy::new(LONG_GRACE_MS).with_untagged_manifest_ttl(Some(0));
    assert!(due_of(gc, queued_by, LONG_GRACE_MS, &ours).await.is_empty());
    for (target, digest) in &expected {
        let review = GcReview::new(target.clone(), digest.clone(), 0);
        assert_eq!(apply(gc, &review, &long, queued_by).await, GcOutcome::Kept);
    }
    assert_eq!(pass(gc, &long, queued_by, &ours).await, BTreeSet::new());
    assert_eq!(queued_of(gc, &ours).await, expected, "kept, still queued");
    assert!(
        due_of(gc, before + LONG_GRACE_MS - 1, LONG_GRACE_MS, &ours)
            .await
            .is_empty(),
        "not due for the long grace period before it has passed"
    );

    // A collector with no grace period: all due now, and everything goes.
    let now = wall_ms();
    assert_eq!(due_of(gc, now, 0, &ours).await, expected);
    let none = GcPolicy::new(0).with_untagged_manifest_ttl(Some(0));
    let outcomes = pass(gc, &none, now, &ours).await;
    for o in [
        Outcome::Link(repo.clone(), upload.clone()),
        Outcome::Link(repo.clone(), layer.clone()),
        Outcome::Manifest(repo.clone(), untagged.digest.clone()),
        Outcome::Blob(upload.clone(), 7),
        Outcome::Blob(layer.clone(), 11),
        Outcome::Blob(image.digest.clone(), size_of(&image)),
        Outcome::Blob(untagged.digest.clone(), size_of(&untagged)),
    ] {
        assert!(outcomes.contains(&o), "{o:?} missing from {outcomes:?}");
    }
    assert!(!has_manifest(store, &repo, &untagged.digest).await);
    assert!(queued_of(gc, &ours).await.is_empty());
    clear_our_tombstones(gc, &ours).await;
}

/// A link that a manifest of its repository references is kept, whatever the grace
/// period, and so is the blob; its review leaves the queue.
pub async fn link_referenced_by_manifest_is_kept(store: &dyn MetadataStore) {
    let gc = gc(store);
    let repos = Repos::new();
    let repo = repos.get("app");
    let other = repos.get("other");
    let layer = random_digest();
    link(store, &repo, &layer, 7).await;
    // The same blob, unused, in another repository: that link goes, the blob stays.
    link(store, &other, &layer, 7).await;
    let m = manifest(&repo, "image")
        .with_blob_refs(vec![layer.clone()])
        .with_tag(Some(tag("v1")));
    put(store, &m).await;
    let ours = set(&[layer.clone(), m.digest.clone()]);

    let outcomes = pass(gc, &GcPolicy::new(0), wall_ms(), &ours).await;
    assert_eq!(
        outcomes,
        set(&[Outcome::Link(other.clone(), layer.clone())])
    );
    assert_eq!(linked(store, &repo, &layer).await, Some(7));
    assert_eq!(linked(store, &other, &layer).await, None);
    assert!(has_manifest(store, &repo, &m.digest).await);
    assert!(!tombstoned(gc, &layer).await);
    assert!(queued_of(gc, &ours).await.is_empty());

    // The blob's own review, applied directly, keeps it too.
    assert_eq!(
        apply(gc, &blob_review(&layer), &GcPolicy::new(0), wall_ms()).await,
        GcOutcome::Kept
    );
    assert_eq!(linked(store, &repo, &layer).await, Some(7));
}

/// Deleting a manifest queues the links of its blobs, its own bytes, its child manifests
/// and its referrers. A zero-grace pass then frees what only it used; blobs another
/// manifest or repository uses, and manifest bytes stored in another repository, stay.
pub async fn deleted_manifest_frees_what_only_it_used(store: &dyn MetadataStore) {
    let gc = gc(store);
    let repos = Repos::new();
    let repo = repos.get("app");
    let other = repos.get("other");
    let (shared, only_here, solo, cfg) = (
        random_digest(),
        random_digest(),
        random_digest(),
        random_digest(),
    );
    for (d, size) in [(&shared, 1), (&only_here, 2), (&solo, 3), (&cfg, 4)] {
        link(store, &repo, d, size).await;
    }
    link(store, &other, &only_here, 2).await;

    let keep = manifest(&repo, "keep")
        .with_blob_refs(vec![cfg.clone(), shared.clone()])
        .with_tag(Some(tag("keep")));
    let gone = manifest(&repo, "gone")
        .with_blob_refs(vec![
            cfg.clone(),
            shared.clone(),
            only_here.clone(),
            solo.clone(),
        ])
        .with_tag(Some(tag("gone")));
    let in_other = manifest(&other, "uses-only-here")
        .with_blob_refs(vec![only_here.clone()])
        .with_tag(Some(tag("v1")));
    let signature = manifest(&repo, "signature").with_subject(Some(gone.digest.clone()));
    let child = manifest(&repo, "child");
    let idx = index(&repo, "index", &[&child]).with_tag(Some(tag("index")));
    let twin = manifest(&repo, "twin").with_tag(Some(tag("twin")));
    for m in [&keep, &gone, &in_other, &signature, &child, &idx, &twin] {
        put(store, m).await;
    }
    put(store, &in_repo(&twin, &other)).await;

    let ours = set(&[
        shared.clone(),
        only_here.clone(),
        solo.clone(),
        cfg.clone(),
        keep.digest.clone(),
        gone.digest.clone(),
        in_other.digest.clone(),
        signature.digest.clone(),
        child.digest.clone(),
        idx.digest.clone(),
        twin.digest.clone(),
    ]);
    let policy = GcPolicy::new(0);
    assert_eq!(
        pass(gc, &policy, wall_ms(), &ours).await,
        BTreeSet::new(),
        "nothing is garbage before the deletes"
    );
    assert!(queued_of(gc, &ours).await.is_empty());

    for m in [&gone, &idx, &twin] {
        assert!(
            store
                .delete_manifest(&repo, &m.digest)
                .await
                .expect("delete_manifest"),
            "{} was stored",
            m.digest
        );
    }
    let queued = queued_of(gc, &ours).await;
    for expected in [
        (ReviewTarget::Link(repo.clone()), only_here.clone()),
        (ReviewTarget::Link(repo.clone()), solo.clone()),
        (ReviewTarget::Link(repo.clone()), shared.clone()),
        (ReviewTarget::Blob, gone.digest.clone()),
        (
            ReviewTarget::Manifest(repo.clone()),
            signature.digest.clone(),
        ),
        (ReviewTarget::Blob, idx.digest.clone()),
        (ReviewTarget::Manifest(repo.clone()), child.digest.clone()),
        (ReviewTarget::Blob, twin.digest.clone()),
    ] {
        assert!(
            queued.contains(&expected),
            "delete_manifest queues {expected:?}; queued: {queued:?}"
        );
    }

    let outcomes = pass(gc, &policy, wall_ms(), &ours).await;
    assert_eq!(
        outcomes,
        set(&[
            Outcome::Link(repo.clone(), only_here.clone()),
            Outcome::Link(repo.clone(), solo.clone()),
            Outcome::Blob(solo.clone(), 3),
            Outcome::Blob(gone.digest.clone(), size_of(&gone)),
            Outcome::Blob(idx.digest.clone(), size_of(&idx)),
        ]),
        "what only the deleted manifests used is freed"
    );
    // Untagged and unreferenced now, the child and the signature keep parked reviews for
    // an untagged policy turned on later (see
    // `untagged_policy_turned_on_later_reaches_parked_reviews`); nothing else is queued.
    assert_eq!(
        queued_of(gc, &ours).await,
        set(&[
            (
                ReviewTarget::Manifest(repo.clone()),
                signature.digest.clone()
            ),
            (ReviewTarget::Manifest(repo.clone()), child.digest.clone()),
        ])
    );
    for d in [&shared, &cfg] {
        assert!(linked(store, &repo, d).await.is_some(), "{d} is still used");
        assert!(!tombstoned(gc, d).await);
    }
    assert_eq!(linked(store, &other, &only_here).await, Some(2));
    assert!(!tombstoned(gc, &only_here).await);
    assert!(!tombstoned(gc, &twin.digest).await);
    assert!(has_manifest(store, &other, &twin.digest).await);
    assert!(has_manifest(store, &repo, &keep.digest).await);
    // Without an untagged-manifest policy, orphaned children and referrers stay.
    assert!(has_manifest(store, &repo, &child.digest).await);
    assert!(has_manifest(store, &repo, &signature.digest).await);
    // Leave the store as found: a policy turned on reaches the parked reviews.
    let on = GcPolicy::new(0).with_untagged_manifest_ttl(Some(0));
    pass(gc, &on, wall_ms() + crate::gc::UNTAGGED_RECHECK_MS, &ours).await;
    assert!(!has_manifest(store, &repo, &child.digest).await);
    assert!(queued_of(gc, &ours).await.is_empty());
    clear_our_tombstones(gc, &ours).await;
}

/// Linking a blob again before the decision restarts the link's grace period; linking it
/// after its last link went but before the blob's decision keeps the blob.
pub async fn relinking_before_the_decision_keeps_link_and_blob(store: &dyn MetadataStore) {
    let gc = gc(store);
    let repos = Repos::new();
    let repo = repos.get("app");
    let blob = random_digest();
    let ours = BTreeSet::from([blob.clone()]);
    let policy = GcPolicy::new(LONG_GRACE_MS);

    link(store, &repo, &blob, 5).await;
    let first_by = wall_ms();
    // The collector has listed the review...
    let due = gc
        .due_reviews(first_by + LONG_GRACE_MS, LONG_GRACE_MS, usize::MAX)
        .await
        .expect("due_reviews");
    let review = due
        .into_iter()
        .find(|r| r.digest == blob && r.target == ReviewTarget::Link(repo.clone()))
        .expect("the link's review is due after the grace period");
    // ...then a push links the blob again, before the decision.
    after(first_by).await;
    link(store, &repo, &blob, 5).await;
    assert_eq!(
        apply(gc, &review, &policy, first_by + LONG_GRACE_MS).await,
        GcOutcome::Kept,
        "re-linking restarts the grace period"
    );
    assert_eq!(linked(store, &repo, &blob).await, Some(5));
    assert!(!tombstoned(gc, &blob).await);

    // The link goes once its new grace period is over...
    let now = wall_ms() + LONG_GRACE_MS;
    assert_eq!(
        apply(gc, &link_review(&repo, &blob), &policy, now).await,
        GcOutcome::LinkDeleted {
            repository: repo.clone(),
            digest: blob.clone()
        }
    );
    assert!(
        due_of(gc, now, LONG_GRACE_MS, &ours)
            .await
            .contains(&(ReviewTarget::Blob, blob.clone()))
    );
    // ...and a push (here into another repository) links the blob before its decision.
    let elsewhere = repos.get("elsewhere");
    link(store, &elsewhere, &blob, 5).await;
    assert_eq!(
        apply(gc, &blob_review(&blob), &policy, now).await,
        GcOutcome::Kept
    );
    assert_eq!(linked(store, &elsewhere, &blob).await, Some(5));
    assert!(!tombstoned(gc, &blob).await);
}

/// Once a blob is deleted, linking its digest anywhere and storing a manifest with its
/// digest fail with `BlobBeingDeleted` and change nothing, until the tombstone is
/// cleared.
pub async fn tombstone_refuses_link_and_put_manifest_until_cleared(store: &dyn MetadataStore) {
    let gc = gc(store);
    let repos = Repos::new();
    let repo = repos.get("app");
    let other = repos.get("other");
    let policy = GcPolicy::new(0);
    let blob = random_digest();
    link(store, &repo, &blob, 9).await;
    let m = manifest(&repo, "image").with_tag(Some(tag("v1")));
    put(store, &m).await;
    assert!(
        store
            .delete_manifest(&repo, &m.digest)
            .await
            .expect("delete_manifest")
    );
    let ours = set(&[blob.clone(), m.digest.clone()]);
    let outcomes = pass(gc, &policy, wall_ms(), &ours).await;
    assert_eq!(
        outcomes,
        set(&[
            Outcome::Link(repo.clone(), blob.clone()),
            Outcome::Blob(blob.clone(), 9),
            Outcome::Blob(m.digest.clone(), size_of(&m)),
        ])
    );
    let tombs = gc.tombstones().await.expect("tombstones");
    assert!(
        tombs.contains(&blob) && tombs.contains(&m.digest),
        "{tombs:?}"
    );

    for r in [&repo, &other] {
        match store.link_blob(r, &blob, 9).await {
            Err(MetadataError::BlobBeingDeleted(d)) => assert_eq!(d, blob),
            other => panic!("link_blob of a tombstoned blob in {r}: {other:?}"),
        }
        assert_eq!(
            linked(store, r, &blob).await,
            None,
            "a refused link leaves nothing"
        );
    }
    for target in [m.clone(), in_repo(&m, &other)] {
        match store.put_manifest(&target).await {
            Err(MetadataError::BlobBeingDeleted(d)) => assert_eq!(d, m.digest),
            other => panic!("put_manifest of a tombstoned digest: {other:?}"),
        }
        assert!(!has_manifest(store, &target.repository, &m.digest).await);
    }
    assert_eq!(
        store
            .get_manifest(&repo, &Reference::Tag(tag("v1")))
            .await
            .expect("get_manifest"),
        None
    );
    assert!(
        queued_of(gc, &ours).await.is_empty(),
        "refused writes queue nothing"
    );

    clear(gc, &[&blob, &m.digest]).await;
    link(store, &repo, &blob, 9).await;
    assert_eq!(linked(store, &repo, &blob).await, Some(9));
    put(store, &m).await;
    assert!(has_manifest(store, &repo, &m.digest).await);
    // Stored again, the manifest's bytes are a blob the collector keeps.
    assert_eq!(
        apply(gc, &blob_review(&m.digest), &policy, wall_ms()).await,
        GcOutcome::Kept
    );
    assert!(!tombstoned(gc, &m.digest).await);
}

/// A dry run reports what the real decision then does, and leaves links, blobs, manifests,
/// tombstones and the queue as they were.
pub async fn dry_run_reports_the_same_and_changes_nothing(store: &dyn MetadataStore) {
    let gc = gc(store);
    let repos = Repos::new();
    let repo = repos.get("app");
    let blob = random_digest();
    link(store, &repo, &blob, 11).await;
    let untagged = manifest(&repo, "untagged");
    put(store, &untagged).await;
    let ours = set(&[blob.clone(), untagged.digest.clone()]);
    let policy = GcPolicy::new(0).with_untagged_manifest_ttl(Some(0));
    let now = wall_ms();

    let steps = [
        (
            link_review(&repo, &blob),
            GcOutcome::LinkDeleted {
                repository: repo.clone(),
                digest: blob.clone(),
            },
        ),
        (
            blob_review(&blob),
            GcOutcome::BlobDeleted {
                digest: blob.clone(),
                size: 11,
            },
        ),
        (
            manifest_review(&repo, &untagged.digest),
            GcOutcome::ManifestDeleted {
                repository: repo.clone(),
                digest: untagged.digest.clone(),
            },
        ),
    ];
    for (review, expected) in steps {
        let queued = queued_of(gc, &ours).await;
        let tombs = our_tombstones(gc, &ours).await;
        let link_before = linked(store, &repo, &blob).await;
        let dry = gc
            .apply_review(&review, &policy, now, true)
            .await
            .expect("dry-run apply_review");
        assert_eq!(dry, expected, "dry run of {review:?}");
        assert_eq!(
            queued_of(gc, &ours).await,
            queued,
            "a dry run keeps the queue"
        );
        assert_eq!(our_tombstones(gc, &ours).await, tombs);
        assert_eq!(linked(store, &repo, &blob).await, link_before);
        assert!(
            has_manifest(store, &repo, &untagged.digest).await,
            "a dry run deletes no manifest"
        );
        assert_eq!(
            apply(gc, &review, &policy, now).await,
            expected,
            "real run of {review:?}"
        );
    }
    assert_eq!(linked(store, &repo, &blob).await, None);
    assert!(tombstoned(gc, &blob).await);
    assert!(!has_manifest(store, &repo, &untagged.digest).await);
    // A dry run of a review that would be kept says so.
    let blob2 = random_digest();
    link(store, &repo, &blob2, 1).await;
    assert_eq!(
        gc.apply_review(
            &link_review(&repo, &blob2),
            &GcPolicy::new(LONG_GRACE_MS),
            now,
            true
        )
        .await
        .expect("dry-run apply_review"),
        GcOutcome::Kept
    );
    let ours = set(&[blob.clone(), untagged.digest.clone(), blob2.clone()]);
    let rest = pass(gc, &policy, wall_ms(), &ours).await;
    assert!(
        rest.contains(&Outcome::Blob(untagged.digest.clone(), size_of(&untagged))),
        "{rest:?}"
    );
    clear(gc, &[&blob, &blob2, &untagged.digest]).await;
}

// ---------------------------------------------------------------------------------------
// Untagged manifests

/// Without an untagged-manifest policy, untagged manifests (pushed by digest, untagged,
/// re-tagged away) are kept and their reviews leave the queue.
pub async fn untagged_manifests_kept_without_policy(store: &dyn MetadataStore) {
    let gc = gc(store);
    let repos = Repos::new();
    let repo = repos.get("app");
    let by_digest = manifest(&repo, "by-digest");
    let untagged = manifest(&repo, "untagged").with_tag(Some(tag("a")));
    let retagged_away = manifest(&repo, "old").with_tag(Some(tag("b")));
    let retagged_to = manifest(&repo, "new").with_tag(Some(tag("b")));
    for m in [&by_digest, &untagged, &retagged_away, &retagged_to] {
        put(store, m).await;
    }
    assert!(
        store
            .delete_tag(&repo, &tag("a"))
            .await
            .expect("delete_tag")
    );
    let ours = set(&[
        by_digest.digest.clone(),
        untagged.digest.clone(),
        retagged_away.digest.clone(),
        retagged_to.digest.clone(),
    ]);
    let queued = queued_of(gc, &ours).await;
    for m in [&by_digest, &untagged, &retagged_away] {
        assert!(
            queued.contains(&(ReviewTarget::Manifest(repo.clone()), m.digest.clone())),
            "{} lost its last tag (or never had one) and is queued: {queued:?}",
            m.digest
        );
    }
    let now = wall_ms();
    assert_eq!(
        pass(gc, &GcPolicy::new(0), now, &ours).await,
        BTreeSet::new()
    );
    for m in [&by_digest, &untagged, &retagged_away, &retagged_to] {
        assert!(has_manifest(store, &repo, &m.digest).await);
    }
    // Kept, but not forgotten: the reviews of the untagged ones are parked (not due now)
    // for a policy turned on later; the tagged one has none.
    assert!(due_of(gc, now, 0, &ours).await.is_empty());
    let parked = queued_of(gc, &ours).await;
    let untagged_ones = [&by_digest, &untagged, &retagged_away];
    let expected: BTreeSet<(ReviewTarget, Digest)> = untagged_ones
        .iter()
        .map(|m| (ReviewTarget::Manifest(repo.clone()), m.digest.clone()))
        .collect();
    assert_eq!(parked, expected);
    let due_again = now + crate::gc::UNTAGGED_RECHECK_MS;
    assert_eq!(due_of(gc, due_again, 0, &ours).await, expected);
    // Still off an hour later: parked again, still nothing deleted.
    assert_eq!(
        pass(gc, &GcPolicy::new(0), due_again, &ours).await,
        BTreeSet::new()
    );
    assert_eq!(queued_of(gc, &ours).await, expected);

    // Leave the store as found: the policy on, a pass reaches the parked reviews and
    // deletes the untagged manifests; then clear their tombstones.
    let on = GcPolicy::new(0).with_untagged_manifest_ttl(Some(0));
    pass(gc, &on, due_again + crate::gc::UNTAGGED_RECHECK_MS, &ours).await;
    assert!(queued_of(gc, &ours).await.is_empty());
    clear_our_tombstones(gc, &ours).await;
}

/// The untagged policy turned on after reviews were parked while it was off: they come
/// due within [`UNTAGGED_RECHECK_MS`](crate::gc::UNTAGGED_RECHECK_MS), the manifests'
/// age counts from when they were untagged (not from when the policy was turned on), and
/// one tagged again meanwhile is kept.
pub async fn untagged_policy_turned_on_later_reaches_parked_reviews(store: &dyn MetadataStore) {
    let gc = gc(store);
    let repos = Repos::new();
    let repo = repos.get("app");
    let layer = random_digest();
    link(store, &repo, &layer, 100).await;
    let old = manifest(&repo, "old")
        .with_tag(Some(tag("v1")))
        .with_blob_refs(vec![layer.clone()]);
    let new = manifest(&repo, "new").with_tag(Some(tag("v1")));
    let comeback = manifest(&repo, "comeback").with_tag(Some(tag("c")));
    for m in [&old, &new, &comeback] {
        put(store, m).await;
    }
    assert!(
        store
            .delete_tag(&repo, &tag("c"))
            .await
            .expect("delete_tag")
    );
    let ours = set(&[
        old.digest.clone(),
        new.digest.clone(),
        comeback.digest.clone(),
        layer.clone(),
    ]);
    let untagged_at = wall_ms();

    // The policy is off: nothing goes, the two untagged manifests' reviews are parked.
    let off = GcPolicy::new(0);
    assert_eq!(pass(gc, &off, untagged_at, &ours).await, BTreeSet::new());
    assert!(has_manifest(store, &repo, &old.digest).await);

    // `comeback` is tagged again while parked: it must survive the policy.
    put(store, &comeback.clone().with_tag(Some(tag("c")))).await;

    // An hour later the policy is on, with a TTL shorter than the time since untagging:
    // the parked review of `old` is due and `old` is old enough.
    let later = untagged_at + crate::gc::UNTAGGED_RECHECK_MS + 1;
    let on = GcPolicy::new(0).with_untagged_manifest_ttl(Some(crate::gc::UNTAGGED_RECHECK_MS / 2));
    let deleted = pass(gc, &on, later, &ours).await;
    assert!(
        deleted.contains(&Outcome::Manifest(repo.clone(), old.digest.clone())),
        "the manifest untagged while the policy was off is deleted once it is on: {deleted:?}"
    );
    assert!(!has_manifest(store, &repo, &old.digest).await);
    assert!(
        has_manifest(store, &repo, &comeback.digest).await,
        "tagged again while parked"
    );
    assert!(has_manifest(store, &repo, &new.digest).await);
    assert!(
        !deleted.contains(&Outcome::Manifest(repo.clone(), comeback.digest.clone())),
        "{deleted:?}"
    );
    // What `old` alone used followed it (its layer link, then bytes of both).
    assert!(
        deleted.contains(&Outcome::Link(repo.clone(), layer.clone())),
        "{deleted:?}"
    );
    assert!(queued_of(gc, &ours).await.is_empty());
    clear_our_tombstones(gc, &ours).await;
}

/// A parked review (an untagged manifest looked at while the untagged policy was off) is
/// given to no collector before its recheck time, whatever that collector's grace period
/// or policy: the parking is not a grace period. At the recheck time it is due again.
pub async fn parked_review_waits_for_its_recheck_whatever_the_grace(store: &dyn MetadataStore) {
    let gc = gc(store);
    let repos = Repos::new();
    let repo = repos.get("app");
    let untagged = manifest(&repo, "untagged");
    put(store, &untagged).await;
    let ours = BTreeSet::from([untagged.digest.clone()]);
    let target = (
        ReviewTarget::Manifest(repo.clone()),
        untagged.digest.clone(),
    );

    // Looked at by a collector with a long grace period and the policy off, once old
    // enough for it: parked.
    let queued_by = wall_ms();
    let off_long = GcPolicy::new(LONG_GRACE_MS);
    let looked_at = queued_by + LONG_GRACE_MS;
    assert_eq!(
        due_of(gc, looked_at, LONG_GRACE_MS, &ours).await,
        BTreeSet::from([target.clone()])
    );
    assert_eq!(pass(gc, &off_long, looked_at, &ours).await, BTreeSet::new());
    assert_eq!(
        queued_of(gc, &ours).await,
        BTreeSet::from([target.clone()]),
        "parked, not dropped"
    );

    // Before the recheck time no collector is given it: not one with no grace period, not
    // one with the policy on.
    let before = looked_at + crate::gc::UNTAGGED_RECHECK_MS - 1;
    assert!(due_of(gc, before, 0, &ours).await.is_empty());
    let on = GcPolicy::new(0).with_untagged_manifest_ttl(Some(0));
    assert_eq!(pass(gc, &on, before, &ours).await, BTreeSet::new());
    assert!(has_manifest(store, &repo, &untagged.digest).await);

    // At the recheck time it is due, and the policy on deletes the manifest.
    let recheck = looked_at + crate::gc::UNTAGGED_RECHECK_MS;
    assert_eq!(
        due_of(gc, recheck, 0, &ours).await,
        BTreeSet::from([target.clone()])
    );
    let deleted = pass(gc, &on, recheck, &ours).await;
    assert!(
        deleted.contains(&Outcome::Manifest(repo.clone(), untagged.digest.clone())),
        "{deleted:?}"
    );
    assert!(queued_of(gc, &ours).await.is_empty());
    clear_our_tombstones(gc, &ours).await;
}

async fn clear_our_tombstones(gc: &dyn GcMetadata, ours: &BTreeSet<Digest>) {
    let tombstones = our_tombstones(gc, ours).await;
    clear(gc, &tombstones.iter().collect::<Vec<_>>()).await;
}

/// Under a zero TTL, an untagged manifest that nothing references is deleted (and its
/// links and bytes follow), but not a child of an index, the subject of a referrer, or a
/// referrer whose subject exists; a referrer whose subject is gone is deleted. A longer
/// TTL postpones.
pub async fn untagged_manifest_policy_deletes_only_unreferenced(store: &dyn MetadataStore) {
    let gc = gc(store);
    let repos = Repos::new();
    let repo = repos.get("app");
    let layer = random_digest();
    link(store, &repo, &layer, 100).await;

    let lonely = manifest(&repo, "lonely").with_blob_refs(vec![layer.clone()]);
    let child = manifest(&repo, "child");
    let idx = index(&repo, "index", &[&child]).with_tag(Some(tag("index")));
    let subject = manifest(&repo, "subject");
    let signature = manifest(&repo, "signature").with_subject(Some(subject.digest.clone()));
    let orphan_referrer = manifest(&repo, "orphan-sbom").with_subject(Some(random_digest()));
    let untagged_later = manifest(&repo, "was-tagged").with_tag(Some(tag("t")));
    let retagged_away = manifest(&repo, "old").with_tag(Some(tag("moving")));
    let retagged_to = manifest(&repo, "new").with_tag(Some(tag("moving")));
    for m in [
        &lonely,
        &child,
        &idx,
        &subject,
        &signature,
        &orphan_referrer,
        &untagged_later,
        &retagged_away,
        &retagged_to,
    ] {
        put(store, m).await;
    }
    assert!(
        store
            .delete_tag(&repo, &tag("t"))
            .await
            .expect("delete_tag")
    );
    let written_by = wall_ms();
    let ours = set(&[
        layer.clone(),
        lonely.digest.clone(),
        child.digest.clone(),
        idx.digest.clone(),
        subject.digest.clone(),
        signature.digest.clone(),
        orphan_referrer.digest.clone(),
        untagged_later.digest.clone(),
        retagged_away.digest.clone(),
        retagged_to.digest.clone(),
    ]);

    // A TTL longer than the manifests' age postpones their deletion.
    let ttl_policy = GcPolicy::new(0).with_untagged_manifest_ttl(Some(LONG_GRACE_MS));
    assert_eq!(
        apply(
            gc,
            &manifest_review(&repo, &lonely.digest),
            &ttl_policy,
            written_by
        )
        .await,
        GcOutcome::Kept
    );
    assert!(has_manifest(store, &repo, &lonely.digest).await);
    assert!(
        queued_of(gc, &ours)
            .await
            .contains(&(ReviewTarget::Manifest(repo.clone()), lonely.digest.clone())),
        "a manifest younger than the TTL stays queued"
    );

    // Reviews postponed under the longer TTL keep their due time: pass after it.
    let policy = GcPolicy::new(0).with_untagged_manifest_ttl(Some(0));
    let outcomes = pass(gc, &policy, wall_ms() + LONG_GRACE_MS, &ours).await;
    assert_eq!(
        outcomes,
        set(&[
            Outcome::Manifest(repo.clone(), lonely.digest.clone()),
            Outcome::Manifest(repo.clone(), orphan_referrer.digest.clone()),
            Outcome::Manifest(repo.clone(), untagged_later.digest.clone()),
            Outcome::Manifest(repo.clone(), retagged_away.digest.clone()),
            Outcome::Blob(lonely.digest.clone(), size_of(&lonely)),
            Outcome::Blob(orphan_referrer.digest.clone(), size_of(&orphan_referrer)),
            Outcome::Blob(untagged_later.digest.clone(), size_of(&untagged_later)),
            Outcome::Blob(retagged_away.digest.clone(), size_of(&retagged_away)),
            Outcome::Link(repo.clone(), layer.clone()),
            Outcome::Blob(layer.clone(), 100),
        ]),
    );
    for m in [&child, &idx, &subject, &signature, &retagged_to] {
        assert!(
            has_manifest(store, &repo, &m.digest).await,
            "{} is referenced and stays",
            m.digest
        );
    }
    assert!(queued_of(gc, &ours).await.is_empty());
    clear(
        gc,
        &[
            &layer,
            &lonely.digest,
            &orphan_referrer.digest,
            &untagged_later.digest,
            &retagged_away.digest,
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Lease and queue

/// One holder at a time: another is refused until the lease expires, the holder extends
/// it, releasing (only by the holder) frees it at once.
pub async fn collector_lease(store: &dyn MetadataStore) {
    let gc = gc(store);
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (a, b, c) = (format!("a-{id}"), format!("b-{id}"), format!("c-{id}"));
    let t = wall_ms();
    let ttl = 1_000;
    let acquire = |holder: &str, now: i64| {
        let holder = holder.to_string();
        async move {
            gc.acquire_lease(&holder, now, ttl)
                .await
                .expect("acquire_lease")
        }
    };

    assert!(acquire(&a, t).await, "a free lease is taken");
    assert!(!acquire(&b, t + 1).await, "another holder is refused");
    assert!(acquire(&a, t + 500).await, "the holder extends its lease");
    assert!(
        !acquire(&b, t + 1_200).await,
        "refused until the extended lease expires"
    );
    assert!(
        acquire(&b, t + 1_501).await,
        "an expired lease is taken over"
    );
    assert!(
        !acquire(&a, t + 1_600).await,
        "the old holder is refused now"
    );

    gc.release_lease(&a).await.expect("release_lease");
    assert!(
        !acquire(&c, t + 1_600).await,
        "releasing someone else's lease does nothing"
    );
    gc.release_lease(&b).await.expect("release_lease");
    assert!(
        acquire(&c, t + 1_600).await,
        "a released lease is free at once"
    );
    gc.release_lease(&c).await.expect("release_lease");
    // Releasing a lease one does not hold is fine.
    gc.release_lease(&c).await.expect("release_lease");
}

/// `queue_length` counts every queued review, due or not.
pub async fn queue_length_counts_every_review(store: &dyn MetadataStore) {
    let gc = gc(store);
    let repos = Repos::new();
    let repo = repos.get("app");
    let blobs: Vec<Digest> = (0..3).map(|_| random_digest()).collect();
    for d in &blobs {
        link(store, &repo, d, 1).await;
    }
    let ours = set(&blobs);
    // Postpone one, so the queue holds reviews due now and reviews due later.
    assert_eq!(
        apply(
            gc,
            &link_review(&repo, &blobs[0]),
            &GcPolicy::new(LONG_GRACE_MS),
            wall_ms()
        )
        .await,
        GcOutcome::Kept
    );
    assert_eq!(queued_of(gc, &ours).await.len(), 3);

    // Other writers may share the store: retry until a count and a listing agree.
    let mut last = None;
    for _ in 0..100 {
        let listed = gc
            .due_reviews(i64::MAX, 0, usize::MAX)
            .await
            .expect("due_reviews")
            .len() as u64;
        let counted = gc.queue_length().await.expect("queue_length");
        let listed_again = gc
            .due_reviews(i64::MAX, 0, usize::MAX)
            .await
            .expect("due_reviews")
            .len() as u64;
        if listed == counted && counted == listed_again {
            assert!(counted >= 3);
            last = None;
            break;
        }
        last = Some((listed, counted, listed_again));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(last, None, "queue_length never matched the listed reviews");

    // Applied reviews leave the queue (the postponed one once its grace period is over).
    let later = wall_ms() + LONG_GRACE_MS;
    let outcomes = pass(gc, &GcPolicy::new(0), later, &ours).await;
    assert_eq!(outcomes.len(), 6, "{outcomes:?}");
    assert!(queued_of(gc, &ours).await.is_empty());
    clear(gc, &blobs.iter().collect::<Vec<_>>()).await;
    // `due_reviews` honours its limit.
    let listed = gc.due_reviews(i64::MAX, 0, 1).await.expect("due_reviews");
    assert!(listed.len() <= 1);
}
