//! The shared garbage-collection behaviour suite against a real PostgreSQL, plus races
//! between pushes and decisions across separate pools (as separate replicas would be).
//!
//! Each generated case gets a fresh database: the collector lease is one row per
//! database, so two lease cases must not share one.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use metadata_postgres::{PoolOptions, PostgresMetadataStore};
use oci_spec_types::{Digest, RepositoryName};
use storage_traits::{
    GcOutcome, GcPolicy, GcReview, MetadataError, MetadataStore, NewManifest, ReviewTarget,
};
use test_support::postgres::Postgres;

async fn fresh_url() -> String {
    tokio::task::spawn_blocking(|| Postgres::shared().unique_database("gc"))
        .await
        .unwrap()
}

async fn connect(url: &str) -> PostgresMetadataStore {
    // Small pools: many cases run at once against one server.
    PostgresMetadataStore::connect_with(url, PoolOptions::default().with_max_connections(6))
        .await
        .unwrap()
}

async fn store() -> PostgresMetadataStore {
    connect(&fresh_url().await).await
}

storage_traits::gc_store_tests!(store().await);

/// Runs the whole suite concurrently through one store, so cases interleave on one pool
/// and one database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_on_one_shared_store() {
    use storage_traits::testsuite::gc as suite;
    let store = store().await;
    let s: &dyn MetadataStore = &store;
    futures::join!(
        suite::unused_upload_link_deleted_after_grace_then_blob_tombstoned(s),
        suite::unused_upload_link_postponed_within_grace(s),
        suite::link_referenced_by_manifest_is_kept(s),
        suite::deleted_manifest_frees_what_only_it_used(s),
        suite::relinking_before_the_decision_keeps_link_and_blob(s),
        suite::tombstone_refuses_link_and_put_manifest_until_cleared(s),
        suite::dry_run_reports_the_same_and_changes_nothing(s),
        suite::untagged_manifests_kept_without_policy(s),
        suite::untagged_manifest_policy_deletes_only_unreferenced(s),
        suite::collector_lease(s),
        suite::queue_length_counts_every_review(s),
    );
}

// ---------------------------------------------------------------------------------------
// The locking scheme, one side at a time: a raw connection plays the other side and
// holds its locks while the store's call must wait.

/// A plain client, to hold locks and look at rows behind the store's back.
async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("raw connection: {e}");
        }
    });
    client
}

fn unique_repo(label: &str) -> RepositoryName {
    format!("pg{}/{label}", uuid::Uuid::new_v4().simple())
        .parse()
        .unwrap()
}

fn random_digest() -> Digest {
    Digest::sha256_of(uuid::Uuid::new_v4().as_bytes())
}

fn wall_ms() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(d.as_millis()).unwrap()
}

fn manifest(repo: &RepositoryName, blobs: &[&Digest]) -> NewManifest {
    let content = Bytes::from(format!(
        "{{\"schemaVersion\":2,\"x-nonce\":\"{}\"}}",
        uuid::Uuid::new_v4()
    ));
    NewManifest::new(
        repo.clone(),
        Digest::sha256_of(&content),
        "application/vnd.oci.image.manifest.v1+json".to_string(),
        content,
    )
    .with_blob_refs(blobs.iter().map(|d| (*d).clone()).collect())
}

/// How long a call that should be waiting on a lock is given to (wrongly) finish.
const BLOCKED: Duration = Duration::from_millis(300);

/// A blob decision that holds the row first makes a concurrent link_blob wait, and once
/// the decision commits the deletion the link fails with BlobBeingDeleted, leaving no
/// link behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_blob_waits_for_a_blob_decision_and_then_refuses() {
    let url = fresh_url().await;
    let store = Arc::new(connect(&url).await);
    let (repo, blob) = (unique_repo("app"), random_digest());
    store.link_blob(&repo, &blob, 3).await.unwrap();
    store.unlink_blob(&repo, &blob).await.unwrap();

    // The collector's side: lock the row, re-check (nothing links it), delete, tombstone.
    let mut decision = raw(&url).await;
    let tx = decision.transaction().await.unwrap();
    tx.query_one(
        "SELECT size FROM blobs WHERE digest = $1 FOR UPDATE",
        &[&blob.as_str()],
    )
    .await
    .unwrap();
    let push = tokio::spawn({
        let (store, repo, blob) = (Arc::clone(&store), repo.clone(), blob.clone());
        async move { store.link_blob(&repo, &blob, 3).await }
    });
    tokio::time::sleep(BLOCKED).await;
    assert!(
        !push.is_finished(),
        "link_blob waits for the deciding transaction"
    );
    tx.execute("DELETE FROM blobs WHERE digest = $1", &[&blob.as_str()])
        .await
        .unwrap();
    tx.execute(
        "INSERT INTO gc_tombstones (digest, size, deleted_at) VALUES ($1, 3, 0)",
        &[&blob.as_str()],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    match push.await.unwrap() {
        Err(MetadataError::BlobBeingDeleted(d)) => assert_eq!(d, blob),
        other => panic!("link_blob after the decision committed: {other:?}"),
    }
    assert_eq!(store.blob_link(&repo, &blob).await.unwrap(), None);
}

/// The same for a manifest whose digest's blob row the decision holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_manifest_waits_for_a_blob_decision_and_then_refuses() {
    let url = fresh_url().await;
    let store = Arc::new(connect(&url).await);
    let repo = unique_repo("app");
    let m = manifest(&repo, &[]);
    store.put_manifest(&m).await.unwrap();
    store.delete_manifest(&repo, &m.digest).await.unwrap();

    let mut decision = raw(&url).await;
    let tx = decision.transaction().await.unwrap();
    tx.query_one(
        "SELECT size FROM blobs WHERE digest = $1 FOR UPDATE",
        &[&m.digest.as_str()],
    )
    .await
    .unwrap();
    let push = tokio::spawn({
        let (store, m) = (Arc::clone(&store), m.clone());
        async move { store.put_manifest(&m).await }
    });
    tokio::time::sleep(BLOCKED).await;
    assert!(
        !push.is_finished(),
        "put_manifest waits for the deciding transaction"
    );
    tx.execute("DELETE FROM blobs WHERE digest = $1", &[&m.digest.as_str()])
        .await
        .unwrap();
    tx.execute(
        "INSERT INTO gc_tombstones (digest, size, deleted_at) VALUES ($1, 1, 0)",
        &[&m.digest.as_str()],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    match push.await.unwrap() {
        Err(MetadataError::BlobBeingDeleted(d)) => assert_eq!(d, m.digest),
        other => panic!("put_manifest after the decision committed: {other:?}"),
    }
}

/// A push holding the blob row (as link_blob does before it inserts the link) makes the
/// blob decision wait, and the decision then sees the committed link and keeps the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_decision_waits_for_a_link_and_sees_it() {
    let url = fresh_url().await;
    let store = Arc::new(connect(&url).await);
    let (repo, other, blob) = (unique_repo("app"), unique_repo("other"), random_digest());
    store.link_blob(&repo, &blob, 3).await.unwrap();
    store.unlink_blob(&repo, &blob).await.unwrap();
    store.link_blob(&other, &blob, 3).await.unwrap();
    let other_id: i64 = raw(&url)
        .await
        .query_one(
            "SELECT id FROM repositories WHERE name = $1",
            &[&other.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    store.unlink_blob(&other, &blob).await.unwrap();

    // A push's side: hold the blob row, insert the link, not yet committed.
    let mut push = raw(&url).await;
    let tx = push.transaction().await.unwrap();
    tx.query_one(
        "SELECT 1 FROM blobs WHERE digest = $1 FOR SHARE",
        &[&blob.as_str()],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO repository_blobs (repo_id, digest, created_at) VALUES ($1, $2, 0)",
        &[&other_id, &blob.as_str()],
    )
    .await
    .unwrap();
    let decide = tokio::spawn({
        let (store, blob) = (Arc::clone(&store), blob.clone());
        async move {
            let review = GcReview::new(ReviewTarget::Blob, blob, 0);
            store
                .gc()
                .unwrap()
                .apply_review(&review, &GcPolicy::new(0), wall_ms(), false)
                .await
        }
    });
    tokio::time::sleep(BLOCKED).await;
    assert!(
        !decide.is_finished(),
        "the blob decision waits for the push"
    );
    tx.commit().await.unwrap();
    assert_eq!(decide.await.unwrap().unwrap(), GcOutcome::Kept);
    assert_eq!(store.blob_link(&other, &blob).await.unwrap(), Some(3));
    assert!(
        !store
            .gc()
            .unwrap()
            .tombstones()
            .await
            .unwrap()
            .contains(&blob)
    );
}

/// A put holding a link FOR SHARE (as put_manifest does while it checks its references)
/// makes the link decision wait, and the decision then sees the manifest's reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_decision_waits_for_a_put_and_sees_its_reference() {
    let url = fresh_url().await;
    let store = Arc::new(connect(&url).await);
    let (repo, layer) = (unique_repo("app"), random_digest());
    store.link_blob(&repo, &layer, 3).await.unwrap();
    let m = manifest(&repo, &[&layer]);

    let mut put = raw(&url).await;
    let tx = put.transaction().await.unwrap();
    let rid: i64 = tx
        .query_one(
            "SELECT rb.repo_id FROM repository_blobs rb JOIN repositories r ON r.id = rb.repo_id
             WHERE r.name = $1 AND rb.digest = $2 FOR SHARE OF rb",
            &[&repo.as_str(), &layer.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    let content: &[u8] = &m.content;
    let size = content.len() as i64;
    let id: i64 = tx
        .query_one(
            "INSERT INTO manifests (repo_id, digest, media_type, content, size, created_at)
             VALUES ($1, $2, $3, $4, $5, 0) RETURNING id",
            &[&rid, &m.digest.as_str(), &m.media_type, &content, &size],
        )
        .await
        .unwrap()
        .get(0);
    tx.execute(
        "INSERT INTO manifest_blob_refs (manifest_id, digest) VALUES ($1, $2)",
        &[&id, &layer.as_str()],
    )
    .await
    .unwrap();
    let decide = tokio::spawn({
        let (store, repo, layer) = (Arc::clone(&store), repo.clone(), layer.clone());
        async move {
            let review = GcReview::new(ReviewTarget::Link(repo), layer, 0);
            store
                .gc()
                .unwrap()
                .apply_review(&review, &GcPolicy::new(0), wall_ms(), false)
                .await
        }
    });
    tokio::time::sleep(BLOCKED).await;
    assert!(!decide.is_finished(), "the link decision waits for the put");
    tx.commit().await.unwrap();
    assert_eq!(decide.await.unwrap().unwrap(), GcOutcome::Kept);
    assert_eq!(store.blob_link(&repo, &layer).await.unwrap(), Some(3));
}

/// Replicas (separate pools) link, push, delete and re-push the same few digests while a
/// zero-grace collector with a zero untagged TTL decides as fast as it can, never clearing
/// tombstones. Whatever interleaving happens, no link and no manifest may ever be stored
/// for a digest whose bytes the collector was told to delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_a_zero_grace_collector_never_link_a_tombstoned_blob() {
    let url = fresh_url().await;
    let collector = connect(&url).await;
    let replicas = [
        connect(&url).await,
        connect(&url).await,
        connect(&url).await,
    ];
    let repo = unique_repo("race");
    let layers: Vec<Digest> = (0..32).map(|_| random_digest()).collect();
    let stop = AtomicBool::new(false);
    let (ok, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let decided = AtomicUsize::new(0);
    let count = |r: &Result<(), MetadataError>| match r {
        Ok(()) => {
            ok.fetch_add(1, Ordering::Relaxed);
        }
        Err(MetadataError::BlobBeingDeleted(_)) | Err(MetadataError::MissingReferences { .. }) => {
            refused.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => panic!("push failed: {e}"),
    };

    let push = |seed: usize| {
        let (store, repo, layers, stop) = (&replicas[seed], &repo, &layers, &stop);
        async move {
            let mut i = seed;
            while !stop.load(Ordering::Relaxed) {
                let layer = &layers[(i * 7 + seed * 11) % layers.len()];
                count(&store.link_blob(repo, layer, 10).await);
                let m = manifest(repo, &[layer]);
                count(&store.put_manifest(&m).await);
                if i.is_multiple_of(3) {
                    store.delete_manifest(repo, &m.digest).await.unwrap();
                }
                i += 1;
            }
        }
    };
    let collect = async {
        let gc = collector.gc().unwrap();
        let policy = GcPolicy::new(0).with_untagged_manifest_ttl(Some(0));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < deadline {
            let now = wall_ms();
            for review in gc.due_reviews(now, policy.grace_ms, 64).await.unwrap() {
                if gc.apply_review(&review, &policy, now, false).await.unwrap() != GcOutcome::Kept {
                    decided.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    };
    futures::join!(collect, push(0), push(1), push(2));

    let c = raw(&url).await;
    let bad_links: i64 = c
        .query_one(
            "SELECT COUNT(*) FROM repository_blobs rb JOIN gc_tombstones t USING (digest)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let bad_manifests: i64 = c
        .query_one(
            "SELECT COUNT(*) FROM manifests m JOIN gc_tombstones t USING (digest)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let bad_refs: i64 = c
        .query_one(
            "SELECT COUNT(*) FROM manifest_blob_refs r JOIN gc_tombstones t USING (digest)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (ok, refused, decided) = (
        ok.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        decided.load(Ordering::Relaxed),
    );
    eprintln!("pushes ok {ok}, refused {refused}; collector deletions {decided}");
    assert_eq!(
        (bad_links, bad_manifests, bad_refs),
        (0, 0, 0),
        "rows stored for tombstoned digests"
    );
    assert!(ok > 0 && decided > 0, "the race exercised both sides");
}
