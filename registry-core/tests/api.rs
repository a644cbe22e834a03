//! The API's happy paths, in process: what a client sees for each endpoint.

mod common;

use axum::body::Body;
use common::{TestRegistry, data};
use http::{Method, StatusCode};
use oci_spec_types::Digest;

#[tokio::test]
async fn base_endpoint() {
    let r = TestRegistry::new().await;
    let res = r.get("/v2/").await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        res.header("Docker-Distribution-API-Version"),
        Some("registry/2.0")
    );
}

#[tokio::test]
async fn blob_reads_whole_ranged_and_head() {
    let r = TestRegistry::new().await;
    let blob = data(1, 10_000);
    let d = r.push_blob("b", &blob).await;
    let whole = r.get(&format!("/v2/b/blobs/{d}")).await;
    assert_eq!(whole.body.as_ref(), blob.as_slice());
    assert_eq!(whole.header("Docker-Content-Digest"), Some(d.as_str()));
    let part = r
        .send(
            Method::GET,
            &format!("/v2/b/blobs/{d}"),
            &[("Range", "bytes=100-199")],
            Body::empty(),
        )
        .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.header("Content-Range"), Some("bytes 100-199/10000"));
    assert_eq!(part.body.as_ref(), &blob[100..200]);
    let bad = r
        .send(
            Method::GET,
            &format!("/v2/b/blobs/{d}"),
            &[("Range", "bytes=20000-")],
            Body::empty(),
        )
        .await;
    assert_eq!(bad.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(bad.header("Content-Range"), Some("bytes */10000"));
    let head = r
        .send(
            Method::HEAD,
            &format!("/v2/b/blobs/{d}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(head.header("Content-Length"), Some("10000"));
    assert!(head.body.is_empty());
    // Not visible from another repository until mounted.
    assert_eq!(
        r.get(&format!("/v2/other/blobs/{d}")).await.code(),
        "BLOB_UNKNOWN"
    );
    let mount = r
        .send(
            Method::POST,
            &format!("/v2/other/blobs/uploads/?mount={d}&from=b"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(mount.status, StatusCode::CREATED);
    assert_eq!(
        r.get(&format!("/v2/other/blobs/{d}")).await.body.as_ref(),
        blob.as_slice()
    );
    // Mounting something unknown falls back to a session.
    let unknown = Digest::sha256_of(b"unknown");
    let fallback = r
        .send(
            Method::POST,
            &format!("/v2/other/blobs/uploads/?mount={unknown}&from=b"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(fallback.status, StatusCode::ACCEPTED);
    // Deleting the link hides it from this repository only.
    let del = r
        .send(
            Method::DELETE,
            &format!("/v2/other/blobs/{d}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(del.status, StatusCode::ACCEPTED);
    assert_eq!(
        r.get(&format!("/v2/other/blobs/{d}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        r.get(&format!("/v2/b/blobs/{d}")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn streamed_upload_without_content_range() {
    let r = TestRegistry::new().await;
    let blob = data(2, 70_000);
    let loc = r.open_upload("s").await;
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = blob
        .chunks(7000)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let res = r
        .send(
            Method::PATCH,
            &loc,
            &[],
            Body::from_stream(futures::stream::iter(chunks)),
        )
        .await;
    assert_eq!(res.status, StatusCode::ACCEPTED);
    assert_eq!(res.header("Range"), Some("0-69999"));
    let d = Digest::sha256_of(&blob);
    let put = r
        .send(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED);
    assert_eq!(
        put.header("Location"),
        Some(format!("/v2/s/blobs/{d}").as_str())
    );
    let cancel = r.open_upload("s").await;
    assert_eq!(
        r.send(Method::DELETE, &cancel, &[], Body::empty())
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(r.get(&cancel).await.code(), "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn manifests_tags_and_pagination() {
    let r = TestRegistry::new().await;
    let (d, bytes) = r.push_image("m/app", "v1", &[b"one", b"two"]).await;
    for t in ["v2", "a", "z", "v10"] {
        assert_eq!(
            r.put_manifest("m/app", t, &bytes).await.status,
            StatusCode::CREATED
        );
    }
    let got = r.get("/v2/m/app/manifests/v1").await;
    assert_eq!(got.body.as_ref(), bytes.as_slice());
    assert_eq!(
        got.header("Content-Type"),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    assert_eq!(got.header("Docker-Content-Digest"), Some(d.as_str()));
    let tags = r.get("/v2/m/app/tags/list").await.json();
    assert_eq!(
        tags["tags"],
        serde_json::json!(["a", "v1", "v10", "v2", "z"])
    );
    let page = r.get("/v2/m/app/tags/list?n=2").await;
    assert_eq!(page.json()["tags"], serde_json::json!(["a", "v1"]));
    assert_eq!(
        page.header("Link"),
        Some("</v2/m/app/tags/list?n=2&last=v1>; rel=\"next\"")
    );
    let rest = r.get("/v2/m/app/tags/list?n=10&last=v1").await;
    assert_eq!(rest.json()["tags"], serde_json::json!(["v10", "v2", "z"]));
    assert_eq!(rest.header("Link"), None);
    assert_eq!(r.get("/v2/nope/tags/list").await.code(), "NAME_UNKNOWN");

    assert_eq!(
        r.send(Method::DELETE, "/v2/m/app/manifests/a", &[], Body::empty())
            .await
            .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        r.get("/v2/m/app/manifests/a").await.code(),
        "MANIFEST_UNKNOWN"
    );
    assert_eq!(
        r.get(&format!("/v2/m/app/manifests/{d}")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        r.send(
            Method::DELETE,
            &format!("/v2/m/app/manifests/{d}"),
            &[],
            Body::empty()
        )
        .await
        .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        r.get("/v2/m/app/manifests/v1").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        r.get("/v2/m/app/tags/list").await.json()["tags"],
        serde_json::json!([])
    );

    r.push_blob("m/b", b"x").await;
    r.push_blob("m/c", b"x").await;
    let cat = r.get("/v2/_catalog?n=2").await;
    assert_eq!(
        cat.json()["repositories"],
        serde_json::json!(["m/app", "m/b"])
    );
    assert_eq!(
        cat.header("Link"),
        Some("</v2/_catalog?n=2&last=m/b>; rel=\"next\"")
    );
}

#[tokio::test]
async fn index_and_referrers() {
    let r = TestRegistry::new().await;
    let (img, img_bytes) = r.push_image("r", "img", &[b"layer"]).await;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": img.to_string(), "size": img_bytes.len()}],
    });
    let res = r
        .send(
            Method::PUT,
            "/v2/r/manifests/multi",
            &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
            Body::from(index.to_string()),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
    let empty = r.push_blob("r", b"{}").await;
    let mut sigs = Vec::new();
    for (kind, n) in [
        ("application/vnd.example.sig", 1),
        ("application/vnd.example.sbom", 2),
    ] {
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": kind,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
            "layers": [],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": img.to_string(), "size": img_bytes.len()},
            "annotations": {"n": n.to_string()},
        });
        let bytes = m.to_string();
        let d = Digest::sha256_of(bytes.as_bytes());
        let res = r.put_manifest("r", d.as_str(), bytes.as_bytes()).await;
        assert_eq!(res.status, StatusCode::CREATED);
        assert_eq!(res.header("OCI-Subject"), Some(img.as_str()));
        sigs.push(d);
    }
    let all = r.get(&format!("/v2/r/referrers/{img}")).await;
    assert_eq!(
        all.header("Content-Type"),
        Some("application/vnd.oci.image.index.v1+json")
    );
    let v = all.json();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
    let one = r
        .get(&format!(
            "/v2/r/referrers/{img}?artifactType=application/vnd.example.sbom"
        ))
        .await;
    assert_eq!(one.header("OCI-Filters-Applied"), Some("artifactType"));
    let v = one.json();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        v["manifests"][0]["artifactType"],
        "application/vnd.example.sbom"
    );
    assert_eq!(v["manifests"][0]["annotations"]["n"], "2");
    let none = r
        .get(&format!(
            "/v2/r/referrers/{}",
            Digest::sha256_of(b"nothing")
        ))
        .await;
    assert_eq!(none.status, StatusCode::OK);
    assert_eq!(none.json()["manifests"], serde_json::json!([]));
}
