//! `/v2/_ext/`: insights answered from the metadata database, on fs + SQLite.

#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use common::{TestRegistry, data};
use http::{Method, StatusCode};
use oci_spec_types::Digest;

#[tokio::test]
async fn sizes_count_shared_blobs_once_and_attribute_them_fairly() {
    let r = TestRegistry::new().await;
    let shared = data(1, 10_000);
    let only_a = data(2, 3_000);
    r.push_image("team/a", "v1", &[&shared, &only_a]).await;
    r.push_image("team/a", "v2", &[&shared]).await;
    r.push_image("team/b", "v1", &[&shared]).await;

    let stats = r.get("/v2/_ext/repositories?sort=size").await.json();
    let repos = stats["repositories"].as_array().unwrap();
    assert_eq!(repos[0]["name"], "team/a", "{stats}");
    let a = &repos[0];
    let b = &repos[1];
    // a: its own layer and configs are unique; the shared layer is split between a and b.
    assert!(a["unique_bytes"].as_u64().unwrap() >= 3_000);
    assert_eq!(a["shared_bytes"].as_u64().unwrap(), 10_000);
    assert_eq!(b["shared_bytes"].as_u64().unwrap(), 10_000);
    assert_eq!(a["tags"], 2);
    assert!(a["last_push"].as_i64().is_some());
    let attributed: u64 = repos
        .iter()
        .map(|x| x["attributed_bytes"].as_u64().unwrap())
        .sum();
    let unique_and_shared: u64 = repos
        .iter()
        .map(|x| x["unique_bytes"].as_u64().unwrap())
        .sum::<u64>()
        + 10_000;
    assert_eq!(
        attributed, unique_and_shared,
        "attributed bytes add up to the stored blob bytes"
    );

    let by_tags = r.get("/v2/_ext/repositories?sort=tags&n=1").await.json();
    assert_eq!(by_tags["repositories"][0]["name"], "team/a");

    let summary = r.get("/v2/_ext/summary").await.json();
    assert_eq!(summary["totals"]["repositories"], 2);
    assert_eq!(summary["totals"]["tags"], 3);
    assert_eq!(summary["kinds"]["image"]["manifests"], 3);

    let top = r.get("/v2/_ext/blobs?n=1").await.json();
    let shared_d = Digest::sha256_of(&shared);
    assert_eq!(top["blobs"][0]["digest"], shared_d.to_string());
    assert_eq!(top["blobs"][0]["manifests"], 3);
    assert_eq!(top["blobs"][0]["repositories"], 2);

    let usage = r.get(&format!("/v2/_ext/blobs/{shared_d}")).await.json();
    assert_eq!(usage["linked_by"], serde_json::json!(["team/a", "team/b"]));
    assert_eq!(usage["referenced_by"].as_array().unwrap().len(), 3);
    assert_eq!(usage["size"], 10_000);
    // Unknown, and linked only where the caller may not pull, are one answer.
    let unknown = r
        .get(&format!("/v2/_ext/blobs/{}", Digest::sha256_of(b"none")))
        .await;
    assert_eq!(unknown.status, http::StatusCode::NOT_FOUND);
    assert_eq!(unknown.code(), "BLOB_UNKNOWN");
    assert_eq!(
        r.get("/v2/_ext/blobs/sha256:bad").await.code(),
        "DIGEST_INVALID"
    );
}

#[tokio::test]
async fn artifact_kinds() {
    let r = TestRegistry::new().await;
    let (img, img_bytes) = r.push_image("k/app", "v1", &[b"layer"]).await;
    let chart_config = r.push_blob("k/chart", b"{\"name\":\"c\"}").await;
    let chart_layer = r.push_blob("k/chart", b"chart-tgz").await;
    let chart = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": chart_config.to_string(), "size": 12},
        "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "digest": chart_layer.to_string(), "size": 9}],
    });
    assert_eq!(
        r.put_manifest("k/chart", "1.0.0", chart.to_string().as_bytes())
            .await
            .status,
        StatusCode::CREATED
    );
    let empty = r.push_blob("k/app", b"{}").await;
    let sig = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
        "layers": [],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": img.to_string(), "size": img_bytes.len()},
    })
    .to_string();
    let d = Digest::sha256_of(sig.as_bytes());
    assert_eq!(
        r.put_manifest("k/app", d.as_str(), sig.as_bytes())
            .await
            .status,
        StatusCode::CREATED
    );
    let summary = r.get("/v2/_ext/summary").await.json();
    assert_eq!(summary["kinds"]["image"]["manifests"], 1, "{summary}");
    assert_eq!(summary["kinds"]["helm-chart"]["manifests"], 1, "{summary}");
    assert_eq!(summary["kinds"]["signature"]["manifests"], 1, "{summary}");
}

#[tokio::test]
async fn catalog_and_tags_filtered_sorted_and_paginated() {
    let r = TestRegistry::new().await;
    for name in ["alpha/one", "alpha/two", "beta/one", "alpha/three"] {
        r.push_image(name, "v1", &[name.as_bytes()]).await;
    }
    // Names, filtered by prefix, paginated.
    let page = r.get("/v2/_ext/catalog?prefix=alpha/&n=2").await;
    let body = page.json();
    let names: Vec<&str> = body["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha/one", "alpha/three"]);
    let link = page.header("Link").unwrap().to_string();
    assert!(link.contains("last=alpha/three"), "{link}");
    let next_url = link.trim_start_matches('<').split('>').next().unwrap();
    let next = r.get(next_url).await.json();
    assert_eq!(next["repositories"][0]["name"], "alpha/two");
    assert_eq!(next["repositories"].as_array().unwrap().len(), 1);

    // By last push: the most recently pushed first; walking the pages sees each once.
    // (Pauses keep push times, which have millisecond resolution, distinct.)
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    r.push_image("alpha/one", "v2", &[b"newer"]).await;
    let mut seen = Vec::new();
    let mut url = "/v2/_ext/catalog?sort=last_push&n=1".to_string();
    loop {
        let res = r.get(&url).await;
        assert_eq!(res.status, StatusCode::OK, "{:?}", res.body);
        for e in res.json()["repositories"].as_array().unwrap() {
            seen.push(e["name"].as_str().unwrap().to_string());
        }
        match res.header("Link") {
            Some(l) => {
                url = l
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap()
                    .to_string()
            }
            None => break,
        }
    }
    assert_eq!(seen[0], "alpha/one");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 4);
    assert_eq!(seen.len(), 4, "no repository repeated: {seen:?}");

    // Tags of a repository.
    for t in ["rc1", "v3", "rc2"] {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let m = r.get("/v2/alpha/one/manifests/v1").await.body;
        r.put_manifest("alpha/one", t, &m).await;
    }
    let rc = r.get("/v2/_ext/tags/alpha/one?prefix=rc").await.json();
    let tags: Vec<&str> = rc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tags, ["rc1", "rc2"]);
    let recent = r.get("/v2/_ext/tags/alpha/one?sort=last_push&n=1").await;
    assert_eq!(recent.json()["tags"][0]["name"], "rc2");
    assert!(recent.header("Link").is_some());
    assert_eq!(
        r.get("/v2/_ext/tags/nope?sort=name").await.code(),
        "NAME_UNKNOWN"
    );
    let bad = r
        .send(
            Method::GET,
            "/v2/_ext/catalog?sort=size",
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.get("/v2/_ext/nothing").await.status,
        StatusCode::NOT_FOUND
    );
}
