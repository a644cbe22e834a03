#![allow(clippy::unwrap_used)]
//! Blob download redirects, end to end: the real `registry` binary on S3 (SeaweedFS) and
//! SQLite with `--redirect-min-size 1048576`. A blob at or above the threshold is answered
//! with 307 and a presigned Location that serves the exact bytes; a smaller one is served
//! directly; skopeo pulls an image whose layer is above the threshold with the same digests.
//!
//! Needs SeaweedFS and `skopeo` (`scripts/ci-deps.sh` installs them); the test fails, rather
//! than skips, without them.

mod common;

use common::oci_layout::{self, Layout, MANIFEST};
use common::services::{Backends, Blobs, Meta};
use common::skopeo_flow::{require_skopeo, skopeo};
use common::{Api, random_bytes, seed, sha256, tempdir};

const THRESHOLD: usize = 1024 * 1024;

#[test]
fn large_blobs_redirect_to_presigned_urls_small_ones_do_not() {
    require_skopeo();
    let dir = tempdir();
    let backends = Backends::fresh(Blobs::S3, Meta::Sqlite, "redirect", dir.path());
    let server = backends.serve(&["--redirect-min-size", &THRESHOLD.to_string()]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = Api::new(&server.base);
    let no_follow = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let s = seed();
    let big = random_bytes(s, 3 * 1024 * 1024);
    let small = random_bytes(s ^ 0x5555, 64 * 1024);
    rt.block_on(async {
        let big_digest = api.push_blob("redirect/blobs", &big).await;
        let small_digest = api.push_blob("redirect/blobs", &small).await;
        let big_url = api.url(&format!("/v2/redirect/blobs/blobs/{big_digest}"));
        let small_url = api.url(&format!("/v2/redirect/blobs/blobs/{small_digest}"));

        // The 307 itself.
        let res = no_follow.get(&big_url).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 307, "GET of the 3 MiB blob");
        let location = res
            .headers()
            .get("Location")
            .and_then(|v| v.to_str().ok())
            .expect("307 has a Location")
            .to_string();
        assert!(
            location.starts_with("http://") && !location.starts_with(&server.base),
            "Location points at the blob store, not the registry: {location}"
        );
        // The presigned URL alone (no registry involved) serves the exact bytes.
        let res = no_follow.get(&location).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "GET of the presigned URL");
        let body = res.bytes().await.unwrap();
        assert_eq!(body.len(), big.len());
        assert!(
            body.as_ref() == big.as_slice(),
            "presigned URL bytes differ"
        );

        // A plain client follows the redirect and gets the exact bytes.
        let res = api.http.get(&big_url).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "followed GET of the 3 MiB blob");
        let body = res.bytes().await.unwrap();
        assert_eq!(sha256(&body), big_digest);
        assert!(body.as_ref() == big.as_slice(), "followed bytes differ");

        // Below the threshold: served by the registry itself.
        let res = no_follow.get(&small_url).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "GET of the 64 KiB blob");
        assert!(res.headers().get("Location").is_none());
        let body = res.bytes().await.unwrap();
        assert!(body.as_ref() == small.as_slice(), "small blob bytes differ");

        // HEAD is never redirected: it answers with the size.
        let (status, headers) = api
            .head(&format!("/v2/redirect/blobs/blobs/{big_digest}"))
            .await;
        assert_eq!(status, 200, "HEAD of the 3 MiB blob");
        assert_eq!(
            headers
                .get("Content-Length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok()),
            Some(big.len())
        );
    });

    // skopeo: push an image with a 2 MiB layer from an OCI layout, pull it back through
    // the redirect.
    let src = dir.path().join("src");
    let mut layout = Layout::create(&src);
    let image = layout.add_image("amd64", s, 2, 2 * 1024 * 1024);
    layout.tag("big", MANIFEST, &image.manifest);
    assert!(image.layers.iter().all(|l| l.data.len() > THRESHOLD));
    let remote = format!("docker://{}/redirect/image:v1", server.addr);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &format!("oci:{}:big", src.display()),
        &remote,
    ]);
    rt.block_on(async {
        for layer in &image.layers {
            let res = no_follow
                .get(api.url(&format!("/v2/redirect/image/blobs/{}", layer.digest)))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status().as_u16(), 307, "layer {}", layer.digest);
        }
    });
    let back = dir.path().join("back");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &remote,
        &format!("oci:{}:big", back.display()),
    ]);
    let d = oci_layout::find_ref(&back, "big").expect("pulled ref in index.json");
    assert_eq!(d["digest"].as_str(), Some(image.manifest.digest.as_str()));
    let pulled = oci_layout::read_blob(&back, &image.manifest.digest).expect("pulled manifest");
    let pulled: serde_json::Value = serde_json::from_slice(&pulled).unwrap();
    let pulled_layers: Vec<&str> = pulled["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["digest"].as_str())
        .collect();
    let want: Vec<&str> = image.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(pulled_layers, want);
    for layer in &image.layers {
        let data = oci_layout::read_blob(&back, &layer.digest).expect("pulled layer");
        assert_eq!(sha256(&data), layer.digest, "pulled layer bytes");
        assert!(data == layer.data);
    }
    let log = server.log();
    drop(server);
    assert!(!log.contains("ERROR"), "the registry logged errors:\n{log}");
}
