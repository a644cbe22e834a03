//! Bad, aborted and concurrent requests: each gets the spec's error (never a panic or a
//! 500), and the stored state afterwards is exactly what was committed before.

mod common;

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use common::{TestRegistry, data};
use futures::StreamExt;
use http::{Method, StatusCode};
use oci_spec_types::Digest;
use registry_core::RegistryConfig;

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

async fn blob_status(r: &TestRegistry, repo: &str, d: &Digest) -> StatusCode {
    r.send(
        Method::HEAD,
        &format!("/v2/{repo}/blobs/{d}"),
        &[],
        Body::empty(),
    )
    .await
    .status
}

#[tokio::test]
async fn truncated_monolithic_upload_stores_nothing() {
    let r = TestRegistry::new().await;
    let full = data(1, 100_000);
    let d = Digest::sha256_of(&full);
    let res = r
        .send(
            Method::POST,
            &format!("/v2/t/blobs/uploads/?digest={d}"),
            &[("Content-Length", "100000")],
            broken_body(full[..40_000].to_vec()),
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(res.code(), "BLOB_UPLOAD_INVALID");
    assert_eq!(blob_status(&r, "t", &d).await, StatusCode::NOT_FOUND);
    // Nothing staged is left behind.
    let staged = std::fs::read_dir(r.dir.path().join("blobs").join("uploads")).unwrap();
    assert_eq!(staged.count(), 0);
}

#[tokio::test]
async fn truncated_chunk_keeps_the_session_at_its_last_good_offset() {
    let r = TestRegistry::new().await;
    let full = data(2, 300_000);
    let loc = r.open_upload("t").await;
    let ok = r
        .send(
            Method::PATCH,
            &loc,
            &[("Content-Range", "0-99999")],
            Body::from(full[..100_000].to_vec()),
        )
        .await;
    assert_eq!(ok.status, StatusCode::ACCEPTED);
    assert_eq!(ok.header("Range"), Some("0-99999"));
    // The next chunk dies half way.
    let bad = r
        .send(
            Method::PATCH,
            &loc,
            &[
                ("Content-Range", "100000-199999"),
                ("Content-Length", "100000"),
            ],
            broken_body(full[100_000..150_000].to_vec()),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{:?}", bad.body);
    let status = r.get(&loc).await;
    assert_eq!(status.status, StatusCode::NO_CONTENT);
    assert_eq!(status.header("Range"), Some("0-99999"));
    // The client resumes at the acknowledged offset and finishes.
    let d = Digest::sha256_of(&full);
    let put = r
        .send(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[("Content-Range", "100000-299999")],
            Body::from(full[100_000..].to_vec()),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
    let got = r.get(&format!("/v2/t/blobs/{d}")).await;
    assert_eq!(got.body.as_ref(), full.as_slice());
}

#[tokio::test]
async fn wrong_offset_is_416_with_current_range_and_changes_nothing() {
    let r = TestRegistry::new().await;
    let full = data(3, 20);
    let loc = r.open_upload("t").await;
    r.send(
        Method::PATCH,
        &loc,
        &[("Content-Range", "0-9")],
        Body::from(full[..10].to_vec()),
    )
    .await;
    for range in ["5-14", "11-20", "0-9", "garbage"] {
        let res = r
            .send(
                Method::PATCH,
                &loc,
                &[("Content-Range", range)],
                Body::from(full[..10].to_vec()),
            )
            .await;
        assert_eq!(res.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(res.header("Range"), Some("0-9"), "{range}");
    }
    let d = Digest::sha256_of(&full);
    let put = r
        .send(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[],
            Body::from(full[10..].to_vec()),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED);
}

#[tokio::test]
async fn wrong_and_malformed_digests() {
    let r = TestRegistry::new().await;
    let content = data(4, 1000);
    let claimed = Digest::sha256_of(b"something else");
    let res = r
        .send(
            Method::POST,
            &format!("/v2/t/blobs/uploads/?digest={claimed}"),
            &[],
            Body::from(content.clone()),
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(res.code(), "DIGEST_INVALID");
    assert_eq!(blob_status(&r, "t", &claimed).await, StatusCode::NOT_FOUND);
    assert_eq!(
        blob_status(&r, "t", &Digest::sha256_of(&content)).await,
        StatusCode::NOT_FOUND
    );

    // A chunked session refuses a wrong final digest and stays usable.
    let loc = r.open_upload("t").await;
    r.send(Method::PATCH, &loc, &[], Body::from(content.clone()))
        .await;
    let res = r
        .send(
            Method::PUT,
            &format!("{loc}?digest={claimed}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(res.code(), "DIGEST_INVALID");
    let good = Digest::sha256_of(&content);
    let res = r
        .send(
            Method::PUT,
            &format!("{loc}?digest={good}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED);

    for bad in ["sha256:xyz", "md5:abcd", "sha256", "sha256:ABCDEF"] {
        let res = r
            .send(
                Method::POST,
                &format!("/v2/t/blobs/uploads/?digest={bad}"),
                &[],
                Body::from("x"),
            )
            .await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(res.code(), "DIGEST_INVALID", "{bad}");
        let res = r.get(&format!("/v2/t/blobs/{bad}")).await;
        assert_eq!(res.code(), "DIGEST_INVALID", "{bad}");
    }
    let res = r.send(Method::PUT, &loc, &[], Body::empty()).await;
    assert_eq!(res.code(), "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn sha512_blobs_are_verified_too() {
    let r = TestRegistry::new().await;
    let content = data(5, 5000);
    let d = Digest::sha512_of(&content);
    let res = r
        .send(
            Method::POST,
            &format!("/v2/t/blobs/uploads/?digest={d}"),
            &[],
            Body::from(content.clone()),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
    assert_eq!(
        r.get(&format!("/v2/t/blobs/{d}")).await.body.as_ref(),
        content.as_slice()
    );
    let wrong = Digest::sha512_of(b"nope");
    let res = r
        .send(
            Method::POST,
            &format!("/v2/t/blobs/uploads/?digest={wrong}"),
            &[],
            Body::from(content),
        )
        .await;
    assert_eq!(res.code(), "DIGEST_INVALID");
}

#[tokio::test]
async fn bad_manifests_store_nothing() {
    let r = TestRegistry::new().await;
    let (good, _) = r.push_image("t", "keep", &[b"layer"]).await;

    let huge = vec![b' '; 4 * 1024 * 1024 + 1];
    let res = r.put_manifest("t", "big", &huge).await;
    assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(res.code(), "SIZE_INVALID");

    let res = r.put_manifest("t", "junk", b"{not json").await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::BAD_REQUEST, "MANIFEST_INVALID")
    );

    let missing = Digest::sha256_of(b"never pushed");
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{missing}","size":12}},"layers":[]}}"#
    );
    let res = r.put_manifest("t", "dangling", body.as_bytes()).await;
    assert_eq!(res.code(), "MANIFEST_BLOB_UNKNOWN");

    let res = r
        .put_manifest("t", Digest::sha256_of(b"other").as_str(), body.as_bytes())
        .await;
    assert_eq!(res.code(), "DIGEST_INVALID");

    let tags = r.get("/v2/t/tags/list").await.json();
    assert_eq!(tags["tags"], serde_json::json!(["keep"]));
    let res = r.get(&format!("/v2/t/manifests/{good}")).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        r.get(&format!(
            "/v2/t/manifests/{}",
            Digest::sha256_of(body.as_bytes())
        ))
        .await
        .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn invalid_names_and_tags() {
    let r = TestRegistry::new().await;
    let long = "a".repeat(256);
    for path in [
        "/v2/UPPER/tags/list".to_string(),
        "/v2/a..b/tags/list".to_string(),
        "/v2/a/../b/tags/list".to_string(),
        "/v2/a%2Fb/tags/list".to_string(),
        format!("/v2/{long}/tags/list"),
        "/v2/-a/blobs/uploads/".to_string(),
    ] {
        let res = r.send(Method::GET, &path, &[], Body::empty()).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(res.code(), "NAME_INVALID", "{path}");
    }
    let res = r.put_manifest("t", "bad%21tag", b"{}").await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    let res = r.put_manifest("t", &"x".repeat(129), b"{}").await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    let res = r
        .send(Method::POST, "/v2/UPPER/blobs/uploads/", &[], Body::empty())
        .await;
    assert_eq!(res.code(), "NAME_INVALID");
    let res = r.get("/v2/t/blobs/uploads/..%2F..%2Fetc").await;
    assert_eq!(res.code(), "BLOB_UPLOAD_UNKNOWN");
    let res = r.get("/v2/t/tags/list?n=abc").await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    // Nothing was created by any of it.
    assert_eq!(
        r.get("/v2/_catalog").await.json()["repositories"],
        serde_json::json!([])
    );
}

#[tokio::test]
async fn concurrent_pushes_of_one_blob_and_one_tag() {
    let r = std::sync::Arc::new(TestRegistry::new().await);
    let blob = data(6, 2_000_000);
    let d = Digest::sha256_of(&blob);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let r = r.clone();
        let blob = blob.clone();
        tasks.push(tokio::spawn(async move { r.push_blob("c", &blob).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), d);
    }
    assert_eq!(
        r.get(&format!("/v2/c/blobs/{d}")).await.body.as_ref(),
        blob.as_slice()
    );

    // Eight different images race for one tag.
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            let layer = data(100 + i, 1000);
            r.push_image("c", "race", &[&layer]).await
        }));
    }
    let mut pushed = Vec::new();
    for t in tasks {
        pushed.push(t.await.unwrap());
    }
    let tagged = r.get("/v2/c/manifests/race").await;
    assert_eq!(tagged.status, StatusCode::OK);
    let tagged_digest = Digest::sha256_of(&tagged.body);
    assert_eq!(
        tagged.header("Docker-Content-Digest"),
        Some(tagged_digest.as_str())
    );
    assert!(
        pushed
            .iter()
            .any(|(d, bytes)| *d == tagged_digest && bytes.as_slice() == tagged.body.as_ref())
    );
    for (d, bytes) in &pushed {
        let got = r.get(&format!("/v2/c/manifests/{d}")).await;
        assert_eq!(got.body.as_ref(), bytes.as_slice());
    }
}

#[tokio::test]
async fn concurrent_chunks_to_one_session_never_corrupt_it() {
    let r = std::sync::Arc::new(TestRegistry::new().await);
    let loc = r.open_upload("c").await;
    let mut tasks = Vec::new();
    for i in 0..6u64 {
        let r = r.clone();
        let loc = loc.clone();
        tasks.push(tokio::spawn(async move {
            let chunk = data(200 + i, 500_000);
            let res = r
                .send(
                    Method::PATCH,
                    &loc,
                    &[("Content-Range", "0-499999")],
                    Body::from(chunk.clone()),
                )
                .await;
            (res.status, chunk)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (status, chunk) = t.await.unwrap();
        if status == StatusCode::ACCEPTED {
            winners.push(chunk);
        } else {
            assert!(status.is_client_error(), "{status}");
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one chunk may be acknowledged at offset 0"
    );
    let d = Digest::sha256_of(&winners[0]);
    let put = r
        .send(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
    assert_eq!(
        r.get(&format!("/v2/c/blobs/{d}")).await.body.as_ref(),
        winners[0].as_slice()
    );
}

#[tokio::test]
async fn restart_serves_everything_committed_and_resumes_sessions() {
    let r = TestRegistry::new().await;
    let (m, bytes) = r
        .push_image("p", "v1", &[&data(7, 3000), &data(8, 70_000)])
        .await;
    let part = data(9, 50_000);
    let loc = r.open_upload("p").await;
    r.send(
        Method::PATCH,
        &loc,
        &[],
        Body::from(part[..20_000].to_vec()),
    )
    .await;
    let dir = r.dir;
    drop(r.router);
    drop(r.registry);
    let r = TestRegistry::open(dir, RegistryConfig::default()).await;
    assert_eq!(
        r.get("/v2/p/manifests/v1").await.body.as_ref(),
        bytes.as_slice()
    );
    assert_eq!(
        r.get(&format!("/v2/p/manifests/{m}")).await.status,
        StatusCode::OK
    );
    let res = r
        .send(
            Method::PATCH,
            &loc,
            &[("Content-Range", "20000-49999")],
            Body::from(part[20_000..].to_vec()),
        )
        .await;
    assert_eq!(res.status, StatusCode::ACCEPTED);
    let d = Digest::sha256_of(&part);
    let put = r
        .send(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED);
}

#[tokio::test]
async fn expired_sessions_are_reaped() {
    let r = TestRegistry::with_config(RegistryConfig::default().with_upload_expiry(Duration::ZERO))
        .await;
    let loc = r.open_upload("e").await;
    r.send(Method::PATCH, &loc, &[], Body::from(data(10, 1000)))
        .await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(r.registry.reap_expired_uploads().await.unwrap(), 1);
    assert_eq!(r.get(&loc).await.code(), "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let r = TestRegistry::new().await;
    let res = r.get("/v2/a").await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    let res = r
        .send(Method::POST, "/v2/a/tags/list", &[], Body::empty())
        .await;
    assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.code(), "UNSUPPORTED");
    let huge_stream =
        futures::stream::repeat_with(|| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 65536])))
            .take(100);
    let res = r
        .send(
            Method::PUT,
            "/v2/a/manifests/x",
            &[],
            Body::from_stream(huge_stream),
        )
        .await;
    assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE);
}
