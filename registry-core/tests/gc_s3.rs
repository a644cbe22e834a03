//! Online garbage collection with blobs in S3 (a real SeaweedFS) and SQLite metadata: the
//! bytes a pass frees really leave the bucket, shared and referenced ones stay, and the
//! deleted manifest's recovery records go with it.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use common::s3::s3_store;
use common::{TestRegistry, data};
use futures::TryStreamExt;
use http::{Method, StatusCode};
use oci_spec_types::{Digest, RepositoryName, Tag};
use registry_core::{GcConfig, Registry, RegistryConfig};
use storage_traits::{BlobStore, recovery};

/// A registry whose blobs are under a fresh prefix of the bucket.
fn s3_registry() -> (TestRegistry, String) {
    let prefix = format!("gc-{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().unwrap();
    let metadata =
        metadata_sqlite::SqliteMetadataStore::open(dir.path().join("registry.db")).unwrap();
    let registry = Registry::new(
        Arc::new(s3_store(&prefix)),
        Arc::new(metadata),
        RegistryConfig::default(),
    );
    let router = registry.router();
    (
        TestRegistry {
            registry,
            router,
            dir,
        },
        prefix,
    )
}

/// Every blob in the bucket under `prefix`, as the store lists them.
async fn bucket_blobs(prefix: &str) -> Vec<Digest> {
    let mut all: Vec<Digest> = s3_store(prefix).list().try_collect().await.unwrap();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freed_bytes_leave_the_bucket_and_shared_ones_stay() {
    let (r, prefix) = s3_registry();
    let shared = data(11, 40_000);
    let only_a = data(12, 30_000);
    let (a, _) = r.push_image("s3gc/a", "v1", &[&shared, &only_a]).await;
    let (b, b_bytes) = r.push_image("s3gc/b", "v1", &[&shared]).await;
    r.registry.flush_recovery().await;
    let before = bucket_blobs(&prefix).await;
    for d in [
        &a,
        &b,
        &Digest::sha256_of(&only_a),
        &Digest::sha256_of(&shared),
    ] {
        assert!(before.contains(d), "{d} is in the bucket after the push");
    }
    let store = s3_store(&prefix);
    let log = store.recovery().unwrap();
    let repo_a: RepositoryName = "s3gc/a".parse().unwrap();
    let revision_a = recovery::revision_record(&repo_a, &a);
    assert!(log.get_record(&revision_a).await.unwrap().is_some());

    let res = r
        .send(
            Method::DELETE,
            &format!("/v2/s3gc/a/manifests/{a}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(res.status, StatusCode::ACCEPTED);
    let gc = GcConfig::default().with_grace(Duration::ZERO);
    let report = r.registry.collect_garbage(&gc, false).await.unwrap();
    let freed: Vec<&Digest> = report.blobs.iter().map(|(d, _)| d).collect();
    assert!(freed.contains(&&Digest::sha256_of(&only_a)), "{report:?}");
    assert!(freed.contains(&&a), "{report:?}");
    assert!(report.bytes_freed >= only_a.len() as u64);

    // Seen through a separate client: the objects are gone, not just unlinked.
    let after = bucket_blobs(&prefix).await;
    assert!(
        !after.contains(&Digest::sha256_of(&only_a)),
        "layer bytes left the bucket"
    );
    assert!(!after.contains(&a), "manifest bytes left the bucket");
    assert_eq!(store.stat(&Digest::sha256_of(&only_a)).await.unwrap(), None);
    assert!(
        after.contains(&Digest::sha256_of(&shared)),
        "b still uses it"
    );
    assert!(after.contains(&b));
    assert_eq!(
        before.len() - after.len(),
        report.blobs.len(),
        "exactly the reported blobs were deleted"
    );
    // The deleted manifest's records went with it; b's stay.
    r.registry.flush_recovery().await;
    assert_eq!(log.get_record(&revision_a).await.unwrap(), None);
    let tag_a = recovery::tag_record(&repo_a, &"v1".parse::<Tag>().unwrap());
    assert_eq!(log.get_record(&tag_a).await.unwrap(), None);
    let repo_b: RepositoryName = "s3gc/b".parse().unwrap();
    assert!(
        log.get_record(&recovery::revision_record(&repo_b, &b))
            .await
            .unwrap()
            .is_some()
    );
    // And b pulls completely.
    let got = r.get("/v2/s3gc/b/manifests/v1").await;
    assert_eq!(got.body.as_ref(), b_bytes.as_slice());
    let layer = r
        .get(&format!("/v2/s3gc/b/blobs/{}", Digest::sha256_of(&shared)))
        .await;
    assert_eq!(layer.status, StatusCode::OK);
    assert_eq!(layer.body.as_ref(), shared.as_slice());
}
