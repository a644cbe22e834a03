//! Whole blobs whose length and digest are known before their first byte (`POST ?digest=`
//! with a `Content-Length`, or a `PUT ?digest=` of the whole blob after its `POST`) go
//! through `BlobStore::stage_blob`: on the file system (the default, an upload session)
//! and on S3 (a real SeaweedFS: one `PUT` of the data, then its pointer). Each case checks
//! the spec's answer, what is readable afterwards, and, on S3, that the bucket holds
//! nothing but blobs.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use common::s3::s3_store;
use common::{TestRegistry, data};
use futures::TryStreamExt;
use http::{Method, StatusCode};
use oci_spec_types::Digest;
use registry_core::{Registry, RegistryConfig};
use storage_traits::BlobStore;

/// Lengths tried: empty, under S3's 5 MiB part minimum (held in memory), and past it.
const LENGTHS: [usize; 3] = [0, 1_000, 6 * 1024 * 1024 + 5];

/// A registry on the file system, and one on S3 with the prefix its blobs are under.
async fn registries() -> Vec<(TestRegistry, Option<String>)> {
    let fs = TestRegistry::new().await;
    let prefix = format!("mono-{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().unwrap();
    let metadata =
        metadata_sqlite::SqliteMetadataStore::open(dir.path().join("registry.db")).unwrap();
    let registry = Registry::new(
        Arc::new(s3_store(&prefix)),
        Arc::new(metadata),
        RegistryConfig::default(),
    );
    let router = registry.router();
    let s3 = TestRegistry {
        registry,
        router,
        dir,
    };
    vec![(fs, None), (s3, Some(prefix))]
}

/// No session object, no multipart upload, and every data object belongs to a blob.
async fn assert_bucket_clean(prefix: &Option<String>) {
    let Some(prefix) = prefix else { return };
    let store = s3_store(prefix);
    assert_eq!(store.upload_keys().await.unwrap(), Vec::<String>::new());
    assert!(
        store
            .incomplete_multipart_uploads()
            .await
            .unwrap()
            .is_empty()
    );
    let digests: Vec<Digest> = store.list().try_collect().await.unwrap();
    let mut owned = Vec::new();
    for d in &digests {
        owned.extend(store.blob_data_key(d).await.unwrap());
    }
    for key in store.data_keys().await.unwrap() {
        assert!(owned.contains(&key), "data object {key} belongs to no blob");
    }
}

async fn status_of(r: &TestRegistry, d: &Digest) -> StatusCode {
    r.send(
        Method::HEAD,
        &format!("/v2/t/blobs/{d}"),
        &[],
        Body::empty(),
    )
    .await
    .status
}

/// `POST ?digest=` of `body`, declared `len` bytes long.
async fn post(r: &TestRegistry, d: &Digest, len: usize, body: Body) -> common::Reply {
    let len = len.to_string();
    r.send(
        Method::POST,
        &format!("/v2/t/blobs/uploads/?digest={d}"),
        &[("Content-Length", &len)],
        body,
    )
    .await
}

/// `PUT ?digest=` of `body` on the session at `loc`, declared `len` bytes long.
async fn put(r: &TestRegistry, loc: &str, d: &Digest, len: usize, body: Body) -> common::Reply {
    let len = len.to_string();
    let sep = if loc.contains('?') { '&' } else { '?' };
    r.send(
        Method::PUT,
        &format!("{loc}{sep}digest={d}"),
        &[("Content-Length", &len)],
        body,
    )
    .await
}

/// A body that yields `good` and then fails, as a client that disconnects mid-request.
fn broken_body(good: Vec<u8>) -> Body {
    let s = futures::stream::iter(vec![
        Ok::<_, std::io::Error>(Bytes::from(good)),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ]);
    Body::from_stream(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_blobs_of_declared_length_are_stored_and_leave_no_session() {
    for (r, prefix) in registries().await {
        for (i, len) in LENGTHS.into_iter().enumerate() {
            let posted = data(10 + i as u64, len);
            let d = Digest::sha256_of(&posted);
            let res = post(&r, &d, len, Body::from(posted.clone())).await;
            assert_eq!(res.status, StatusCode::CREATED, "{len}: {:?}", res.body);
            assert_eq!(res.header("Docker-Content-Digest"), Some(d.as_str()));
            assert_eq!(r.get(&format!("/v2/t/blobs/{d}")).await.body, posted);

            let put_whole = data(20 + i as u64, len + 1);
            let d = Digest::sha256_of(&put_whole);
            let loc = r.open_upload("t").await;
            let res = put(&r, &loc, &d, len + 1, Body::from(put_whole.clone())).await;
            assert_eq!(res.status, StatusCode::CREATED, "{len}: {:?}", res.body);
            assert_eq!(r.get(&format!("/v2/t/blobs/{d}")).await.body, put_whole);
            // The session is done with.
            assert_eq!(r.get(&loc).await.code(), "BLOB_UPLOAD_UNKNOWN");
        }
        assert_bucket_clean(&prefix).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_digest_stores_nothing_and_the_session_stays_usable() {
    for (r, prefix) in registries().await {
        for (i, len) in LENGTHS.into_iter().enumerate() {
            let content = data(30 + i as u64, len);
            let actual = Digest::sha256_of(&content);
            let claimed = Digest::sha256_of(format!("not these {len} bytes").as_bytes());

            let res = post(&r, &claimed, len, Body::from(content.clone())).await;
            assert_eq!(res.status, StatusCode::BAD_REQUEST, "{len}");
            assert_eq!(res.code(), "DIGEST_INVALID");
            assert_eq!(status_of(&r, &claimed).await, StatusCode::NOT_FOUND);
            if len > 0 {
                assert_eq!(status_of(&r, &actual).await, StatusCode::NOT_FOUND);
            }

            let loc = r.open_upload("t").await;
            let res = put(&r, &loc, &claimed, len, Body::from(content.clone())).await;
            assert_eq!(res.status, StatusCode::BAD_REQUEST, "{len}");
            assert_eq!(res.code(), "DIGEST_INVALID");
            assert_eq!(status_of(&r, &claimed).await, StatusCode::NOT_FOUND);
            if len > 0 {
                assert_eq!(status_of(&r, &actual).await, StatusCode::NOT_FOUND);
            }
            // Still open and empty: the right digest goes through.
            let res = r.get(&loc).await;
            assert_eq!(res.status, StatusCode::NO_CONTENT);
            assert_eq!(res.header("Range"), Some("0-0"));
            let res = put(&r, &loc, &actual, len, Body::from(content.clone())).await;
            assert_eq!(res.status, StatusCode::CREATED, "{len}: {:?}", res.body);
            assert_eq!(r.get(&format!("/v2/t/blobs/{actual}")).await.body, content);
        }
        assert_bucket_clean(&prefix).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_body_stores_nothing_and_the_session_stays_usable() {
    for (r, prefix) in registries().await {
        for (i, len) in [2_000, 6 * 1024 * 1024 + 5].into_iter().enumerate() {
            let content = data(40 + i as u64, len);
            let d = Digest::sha256_of(&content);
            let half = content[..len / 2].to_vec();

            let res = post(&r, &d, len, broken_body(half.clone())).await;
            assert_eq!(res.status, StatusCode::BAD_REQUEST, "{len}: {:?}", res.body);
            assert_eq!(res.code(), "BLOB_UPLOAD_INVALID");
            assert_eq!(status_of(&r, &d).await, StatusCode::NOT_FOUND);

            let loc = r.open_upload("t").await;
            let res = put(&r, &loc, &d, len, broken_body(half)).await;
            assert_eq!(res.status, StatusCode::BAD_REQUEST, "{len}: {:?}", res.body);
            assert_eq!(res.code(), "BLOB_UPLOAD_INVALID");
            assert_eq!(status_of(&r, &d).await, StatusCode::NOT_FOUND);
            let res = put(&r, &loc, &d, len, Body::from(content.clone())).await;
            assert_eq!(res.status, StatusCode::CREATED, "{len}: {:?}", res.body);
            assert_eq!(r.get(&format!("/v2/t/blobs/{d}")).await.body, content);
        }
        assert_bucket_clean(&prefix).await;
    }
}
