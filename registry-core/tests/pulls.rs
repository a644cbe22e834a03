//! Pull analytics through the HTTP API, on fs + SQLite: manifest GETs answered 200 are
//! tallied at the edge, written in one batch by `flush_pulls`, and shown by
//! `/v2/_ext/repositories` and the store's per-manifest figures.

#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use common::TestRegistry;
use http::{Method, StatusCode};
use storage_traits::MetadataStore;

fn repo(v: &serde_json::Value, name: &str) -> serde_json::Value {
    v["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} missing from {v}"))
}

#[tokio::test]
async fn manifest_gets_answered_200_are_counted_per_repository_and_manifest() {
    let r = TestRegistry::new().await;
    let (digest, _) = r.push_image("team/a", "v1", &[b"layer a"]).await;
    let (other, _) = r.push_image("team/a", "v2", &[b"layer b"]).await;
    r.push_image("team/b", "v1", &[b"layer c"]).await;
    let accept = [("Accept", "application/vnd.oci.image.manifest.v1+json")];

    for _ in 0..3 {
        let got = r
            .send(
                Method::GET,
                "/v2/team/a/manifests/v1",
                &accept,
                Body::empty(),
            )
            .await;
        assert_eq!(got.status, StatusCode::OK);
    }
    let by_digest = format!("/v2/team/a/manifests/{digest}");
    assert_eq!(r.get(&by_digest).await.status, StatusCode::OK);
    // Not pulls: a HEAD, a miss, a blob.
    let head = r.send(Method::HEAD, &by_digest, &[], Body::empty()).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(
        r.get("/v2/team/a/manifests/nope").await.status,
        StatusCode::NOT_FOUND
    );

    // Nothing is written before the flush.
    let before = r.get("/v2/_ext/repositories").await.json();
    assert_eq!(repo(&before, "team/a")["pulls"], 0, "{before}");
    assert_eq!(
        repo(&before, "team/a")["last_pull"],
        serde_json::Value::Null
    );

    assert_eq!(
        r.registry.flush_pulls().await.unwrap(),
        1,
        "one manifest pulled"
    );
    assert_eq!(r.registry.flush_pulls().await.unwrap(), 0, "nothing new");

    let after = r.get("/v2/_ext/repositories?sort=size").await.json();
    let a = repo(&after, "team/a");
    assert_eq!(a["pulls"], 4, "{after}");
    assert!(a["last_pull"].as_i64().unwrap() > 0, "{after}");
    // The footprint fields are still there.
    assert_eq!(a["tags"], 2, "{after}");
    assert_eq!(repo(&after, "team/b")["pulls"], 0, "{after}");

    // Per manifest, and so per tag.
    let store =
        metadata_sqlite::SqliteMetadataStore::open(r.dir.path().join("registry.db")).unwrap();
    let figures = store
        .pulls()
        .unwrap()
        .manifest_pulls(&"team/a".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let of = |d: &oci_spec_types::Digest| figures.iter().find(|m| &m.digest == d).unwrap();
    assert_eq!(
        (of(&digest).pulls, of(&digest).tags.clone()),
        (4, vec!["v1".to_string()])
    );
    assert_eq!((of(&other).pulls, of(&other).last_pull), (0, None));

    // Deleting a pulled manifest (pulls of it still tallied) breaks neither the flush nor
    // the listing.
    assert_eq!(r.get(&by_digest).await.status, StatusCode::OK);
    let deleted = r.send(Method::DELETE, &by_digest, &[], Body::empty()).await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED);
    r.registry.flush_pulls().await.unwrap();
    let last = r.get("/v2/_ext/repositories").await.json();
    assert_eq!(repo(&last, "team/a")["pulls"], 5, "{last}");
}
