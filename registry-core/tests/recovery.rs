//! The registry keeps recovery records in the blob store (fs here): written after each
//! manifest push, removed with tags and manifests (by a client or by the collector), and
//! once flushed they agree with the database, even after many racing changes of one tag.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::body::Body;
use common::{TestRegistry, data};
use http::{Method, StatusCode};
use oci_spec_types::{Digest, RepositoryName, Tag};
use registry_core::GcConfig;
use storage_traits::BlobStore;
use storage_traits::recovery;

/// The digest a record names (`None` if there is none), read through a second store
/// opened on the registry's blob folder (it replays the journal the registry appended to).
fn record(r: &TestRegistry, path: &str) -> Option<Digest> {
    let store = storage_fs::FsBlobStore::open(r.dir.path().join("blobs")).unwrap();
    let log = store.recovery().unwrap();
    let content = block(log.get_record(path)).unwrap()?;
    Some(recovery::parse_link(&content).expect("a record holds a digest"))
}

fn list(r: &TestRegistry, dir: &str) -> Vec<String> {
    let store = storage_fs::FsBlobStore::open(r.dir.path().join("blobs")).unwrap();
    let log = store.recovery().unwrap();
    block(log.list_records(dir)).unwrap()
}

/// Runs a future of the test's own store to completion from synchronous helpers.
fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

fn tag_record(r: &TestRegistry, repo: &str, tag: &str) -> Option<Digest> {
    let repo: RepositoryName = repo.parse().unwrap();
    let tag: Tag = tag.parse().unwrap();
    record(r, &recovery::tag_record(&repo, &tag))
}

fn has_revision(r: &TestRegistry, repo: &str, digest: &Digest) -> bool {
    let repo: RepositoryName = repo.parse().unwrap();
    record(r, &recovery::revision_record(&repo, digest)).as_ref() == Some(digest)
}

fn manifest_copy_exists(r: &TestRegistry, digest: &Digest) -> bool {
    let hex = digest.hex();
    r.dir
        .path()
        .join(format!("blobs/blobs/sha256/{}/{hex}", &hex[..2]))
        .is_file()
}

async fn delete(r: &TestRegistry, path: &str) {
    let res = r.send(Method::DELETE, path, &[], Body::empty()).await;
    assert_eq!(res.status, StatusCode::ACCEPTED, "DELETE {path}");
}

#[tokio::test]
async fn pushes_write_records_and_deletions_remove_them() {
    let r = TestRegistry::new().await;
    let (a, a_bytes) = r.push_image("rec/app", "v1", &[&data(1, 1000)]).await;
    let (b, _) = r.push_image("rec/app", "v2", &[&data(2, 1000)]).await;
    // Pushed by digest: a revision record, no tag.
    let (c, c_bytes) = r.push_image("rec/other", "tmp", &[&data(3, 1000)]).await;
    delete(&r, "/v2/rec/other/manifests/tmp").await;
    let res = r.put_manifest("rec/other", c.as_str(), &c_bytes).await;
    assert_eq!(res.status, StatusCode::CREATED);
    // A second tag of a.
    assert_eq!(
        r.put_manifest("rec/app", "latest", &a_bytes).await.status,
        StatusCode::CREATED
    );
    r.registry.flush_recovery().await;

    assert_eq!(tag_record(&r, "rec/app", "v1"), Some(a.clone()));
    assert_eq!(tag_record(&r, "rec/app", "latest"), Some(a.clone()));
    assert_eq!(tag_record(&r, "rec/app", "v2"), Some(b.clone()));
    assert_eq!(tag_record(&r, "rec/other", "tmp"), None);
    assert!(has_revision(&r, "rec/app", &a) && has_revision(&r, "rec/app", &b));
    assert!(has_revision(&r, "rec/other", &c));
    for d in [&a, &b, &c] {
        assert!(manifest_copy_exists(&r, d), "manifest bytes are a blob too");
    }

    // Deleting a tag removes only its record.
    delete(&r, "/v2/rec/app/manifests/v2").await;
    // Deleting a manifest removes its revision and every tag record naming it.
    delete(&r, &format!("/v2/rec/app/manifests/{a}")).await;
    r.registry.flush_recovery().await;
    assert_eq!(tag_record(&r, "rec/app", "v2"), None);
    assert!(
        has_revision(&r, "rec/app", &b),
        "b is still in the repository"
    );
    assert_eq!(tag_record(&r, "rec/app", "v1"), None);
    assert_eq!(tag_record(&r, "rec/app", "latest"), None);
    assert!(!has_revision(&r, "rec/app", &a));
    // No tag folders left for a rebuild to trip over.
    assert!(list(&r, "repositories/rec/app/_manifests/tags").is_empty());
    assert_eq!(list(&r, "repositories/rec"), ["app", "other"]);
}

#[tokio::test]
async fn moving_a_tag_rewrites_its_record() {
    let r = TestRegistry::new().await;
    let (a, _) = r.push_image("rec/move", "t", &[&data(4, 100)]).await;
    let (b, _) = r.push_image("rec/move", "t", &[&data(5, 100)]).await;
    r.registry.flush_recovery().await;
    assert_eq!(tag_record(&r, "rec/move", "t"), Some(b.clone()));
    assert!(has_revision(&r, "rec/move", &a), "a stays, untagged");
    assert!(has_revision(&r, "rec/move", &b));
}

#[tokio::test]
async fn the_collector_removes_the_records_of_manifests_it_deletes() {
    let r = TestRegistry::new().await;
    let (old, _) = r.push_image("rec/gc", "v1", &[&data(6, 100)]).await;
    let policy = GcConfig::default()
        .with_grace(Duration::ZERO)
        .with_untagged_manifest_ttl(Some(Duration::ZERO));
    // Re-tagging v1 leaves `old` untagged.
    let (new, _) = r.push_image("rec/gc", "v1", &[&data(7, 100)]).await;
    let report = r.registry.collect_garbage(&policy, false).await.unwrap();
    assert!(
        report.manifests.iter().any(|(_, d)| d == &old),
        "{report:?}"
    );
    r.registry.flush_recovery().await;
    assert!(!has_revision(&r, "rec/gc", &old));
    assert!(has_revision(&r, "rec/gc", &new));
    assert_eq!(tag_record(&r, "rec/gc", "v1"), Some(new.clone()));
    assert!(
        !manifest_copy_exists(&r, &old),
        "the collector deleted the copy"
    );
    assert!(manifest_copy_exists(&r, &new));
}

/// Concurrent requests on one tag: a request queues its record right after its commit, so
/// while requests race, the record may trail the database by one change (the queue order
/// is not the commit order); the next change of the tag settles it. Once that is flushed,
/// the record names what the tag serves, and no stale write or deletion ever lands late.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_follow_the_database_through_racing_tag_changes() {
    let r = std::sync::Arc::new(TestRegistry::new().await);
    let (_, bytes_a) = r.push_image("rec/race", "seed-a", &[&data(8, 100)]).await;
    let (_, bytes_b) = r.push_image("rec/race", "seed-b", &[&data(9, 100)]).await;
    for round in 0..20 {
        let mut tasks = Vec::new();
        for i in 0..6 {
            let r = r.clone();
            let bytes = if i % 2 == 0 {
                bytes_a.clone()
            } else {
                bytes_b.clone()
            };
            tasks.push(tokio::spawn(async move {
                if i == 5 && round % 3 == 0 {
                    let _ = r
                        .send(
                            Method::DELETE,
                            "/v2/rec/race/manifests/hot",
                            &[],
                            Body::empty(),
                        )
                        .await;
                } else {
                    r.put_manifest("rec/race", "hot", &bytes).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Each request's record is queued after its commit, so the last commit and the
        // last queued record can differ only while requests race; a quiet write settles it.
        r.put_manifest("rec/race", "hot", &bytes_a).await;
        r.registry.flush_recovery().await;
        let served = r.get("/v2/rec/race/manifests/hot").await;
        let expected = Digest::sha256_of(&served.body);
        assert_eq!(tag_record(&r, "rec/race", "hot"), Some(expected));
    }
}
