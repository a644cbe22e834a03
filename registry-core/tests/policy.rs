//! Registry-wide policies: read-only mode, immutable tags, blob and manifest size limits.

#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use common::{TestRegistry, data};
use futures::stream;
use http::{Method, StatusCode};
use oci_spec_types::Digest;
use registry_core::{Policy, RegistryConfig};

#[tokio::test]
async fn read_only_mode_refuses_writes_and_serves_reads() {
    let reg = TestRegistry::new().await;
    let (digest, _) = reg.push_image("app", "v1", &[b"layer"]).await;
    let location = reg.open_upload("app").await;
    let dir = reg.dir;
    let reg = TestRegistry::open(
        dir,
        RegistryConfig::default().with_policy(Policy::new().with_read_only(true)),
    )
    .await;

    let r = reg.get("/v2/app/manifests/v1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(reg.get("/v2/app/tags/list").await.status, StatusCode::OK);
    assert_eq!(reg.get("/v2/_catalog").await.status, StatusCode::OK);

    let layer = Digest::sha256_of(b"layer");
    let refused = [
        (
            Method::POST,
            format!("/v2/app/blobs/uploads/?digest={layer}"),
        ),
        (Method::POST, "/v2/other/blobs/uploads/".to_string()),
        (Method::PATCH, location.clone()),
        (Method::PUT, format!("{location}?digest={layer}")),
        (Method::PUT, "/v2/app/manifests/v2".to_string()),
        (Method::DELETE, format!("/v2/app/manifests/{digest}")),
        (Method::DELETE, "/v2/app/manifests/v1".to_string()),
        (Method::DELETE, format!("/v2/app/blobs/{layer}")),
    ];
    for (method, uri) in refused {
        let r = reg
            .send(method.clone(), &uri, &[], Body::from(&b"layer"[..]))
            .await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        assert_eq!(r.code(), "UNSUPPORTED", "{method} {uri}");
        assert!(r.body.windows(9).any(|w| w == b"read-only"));
    }
    // Everything is as it was.
    let r = reg.get("/v2/app/manifests/v1").await;
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(digest.to_string().as_str())
    );
    assert_eq!(
        reg.get("/v2/_catalog").await.json()["repositories"],
        serde_json::json!(["app"])
    );
}

#[tokio::test]
async fn immutable_tags_keep_their_manifest() {
    let policy = Policy::new().with_immutable_tags("release/*".parse().unwrap());
    let reg = TestRegistry::with_config(RegistryConfig::default().with_policy(policy)).await;
    let (first, first_bytes) = reg.push_image("release/app", "v1", &[b"one"]).await;

    // A different manifest over the tag: refused, and the tag still points at the first.
    let (_, other_bytes) = reg.push_image("release/app", "scratch", &[b"two"]).await;
    let r = reg.put_manifest("release/app", "v1", &other_bytes).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.code(), "DENIED");
    let msg = String::from_utf8_lossy(&r.body).to_string();
    assert!(msg.contains("immutable"), "{msg}");
    let r = reg.get("/v2/release/app/manifests/v1").await;
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(first.to_string().as_str())
    );
    assert_eq!(&r.body[..], &first_bytes[..]);

    // Re-pushing the same manifest is fine (clients retry); pushing by digest too.
    let r = reg.put_manifest("release/app", "v1", &first_bytes).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let d = Digest::sha256_of(&other_bytes);
    let r = reg
        .put_manifest("release/app", d.as_ref(), &other_bytes)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    // Repositories outside the pattern keep mutable tags.
    reg.push_image("dev/app", "v1", &[b"one"]).await;
    reg.push_image("dev/app", "v1", &[b"two"]).await;
}

/// A body sent with chunked encoding (no Content-Length), so only the running count can
/// catch it.
fn streamed(bytes: Vec<u8>) -> Body {
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = bytes
        .chunks(1000)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    Body::from_stream(stream::iter(chunks))
}

#[tokio::test]
async fn blobs_over_the_size_limit_are_refused() {
    let policy = Policy::new().with_max_blob_size(Some(4096));
    let reg = TestRegistry::with_config(RegistryConfig::default().with_policy(policy)).await;
    let small = data(1, 4096);
    let big = data(2, 4097);
    reg.push_blob("app", &small).await; // exactly at the limit: fine

    // Declared too large: refused before the body is read.
    let d = Digest::sha256_of(&big);
    let r = reg
        .send(
            Method::POST,
            &format!("/v2/app/blobs/uploads/?digest={d}"),
            &[("Content-Length", "4097")],
            Body::from(big.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "SIZE_INVALID");

    // Streamed monolithic upload: cut off by the running count.
    let r = reg
        .send(
            Method::POST,
            &format!("/v2/app/blobs/uploads/?digest={d}"),
            &[],
            streamed(big.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.code(), "SIZE_INVALID");

    // Chunked: the second chunk crosses the limit; the session is discarded.
    let location = reg.open_upload("app").await;
    let r = reg
        .send(
            Method::PATCH,
            &location,
            &[],
            streamed(big[..3000].to_vec()),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = reg
        .send(
            Method::PATCH,
            &location,
            &[],
            streamed(big[3000..].to_vec()),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "SIZE_INVALID");
    let r = reg.get(&location).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "the session is gone");

    // A Content-Range that reaches past the limit is refused up front.
    let location = reg.open_upload("app").await;
    let r = reg
        .send(
            Method::PATCH,
            &location,
            &[("Content-Range", "0-4096"), ("Content-Length", "4097")],
            Body::from(big.clone()),
        )
        .await;
    assert_eq!(r.code(), "SIZE_INVALID");

    // Nothing of the big blob exists.
    let r = reg
        .send(
            Method::HEAD,
            &format!("/v2/app/blobs/{d}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn manifests_over_the_size_limit_are_refused() {
    let reg =
        TestRegistry::with_config(RegistryConfig::default().with_max_manifest_size(200)).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": Digest::sha256_of(b"c").to_string(), "size": 1},
        "layers": [],
        "annotations": {"padding": "x".repeat(300)},
    }))
    .unwrap();
    let r = reg.put_manifest("app", "v1", &manifest).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.code(), "SIZE_INVALID");
    assert_eq!(
        reg.get("/v2/app/tags/list").await.status,
        StatusCode::NOT_FOUND
    );
}
