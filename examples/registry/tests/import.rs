//! Import from CNCF distribution: push images with skopeo into Debian's `docker-registry`
//! (distribution 2.8), stop it, import its storage folder, and pull everything back from
//! ours with the same digests. Needs `skopeo` and `docker-registry` (`.ci/run` installs
//! both); fails without them.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::distribution::start_distribution;
use common::oci_layout::{INDEX, Layout, MANIFEST};
use common::skopeo_flow::skopeo;
use common::{Api, Server, seed, sha256, tempdir};
use registry_core::import::FsSource;
use registry_core::{Registry, RegistryConfig};

#[test]
fn images_pushed_to_distribution_pull_from_us_after_import() {
    let dir = tempdir();
    let src = dir.path().join("src");
    let mut layout = Layout::create(&src);
    let s = seed();
    let image = layout.add_image("amd64", s, 3, 200_000);
    let multi = layout.add_multi_arch(&["amd64", "arm64"], s, 50_000);
    layout.tag("single", MANIFEST, &image.manifest);
    layout.tag("multi", INDEX, &multi.index);
    let src_ref = |tag: &str| format!("oci:{}:{tag}", src.display());

    // 1. Push into distribution, then stop it.
    let dist_root = dir.path().join("distribution");
    let (mut dist, dist_addr) = start_distribution(dir.path(), &dist_root);
    let to = |path: &str| format!("docker://{dist_addr}/{path}");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &src_ref("single"),
        &to("team/app:v1"),
    ]);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &src_ref("single"),
        &to("team/app:latest"),
    ]);
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &src_ref("multi"),
        &to("multi:v1"),
    ]);
    dist.kill().unwrap();
    dist.wait().unwrap();

    // 2. Import, twice: the second run must change nothing and fail on nothing.
    let data = dir.path().join("data");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let blobs = storage_fs::FsBlobStore::open(data.join("blobs")).unwrap();
        let metadata =
            metadata_sqlite::SqliteMetadataStore::open(data.join("registry.db")).unwrap();
        let registry = Registry::new(
            Arc::new(blobs),
            Arc::new(metadata),
            RegistryConfig::default(),
        );
        let first = registry.import(&FsSource::new(&dist_root)).await.unwrap();
        assert_eq!(first.repositories, 2, "{first:?}");
        assert!(first.skipped.is_empty(), "{first:?}");
        assert_eq!(first.tags, 3, "{first:?}");
        // 1 image + index + 2 children.
        assert_eq!(first.manifests, 4, "{first:?}");
        assert!(first.blobs_copied >= 4 + 6, "{first:?}");
        let again = registry.import(&FsSource::new(&dist_root)).await.unwrap();
        assert_eq!(
            again.blobs_copied, 0,
            "re-running copies nothing: {again:?}"
        );
        assert!(again.skipped.is_empty(), "{again:?}");
        assert_eq!((again.manifests, again.tags), (first.manifests, first.tags));
    });

    // 3. Serve the imported state and pull everything back with skopeo and over HTTP.
    let server = Server::start(&data);
    let api = Api::new(&server.base);
    let ours = |path: &str| format!("docker://{}/{path}", server.addr);
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &ours("team/app:v1"),
    ]);
    assert!(
        raw == image.manifest.data,
        "same manifest bytes, so the same digest"
    );
    let raw = skopeo(&["inspect", "--tls-verify=false", "--raw", &ours("multi:v1")]);
    assert!(raw == multi.index.data);
    let tags: serde_json::Value = serde_json::from_slice(&skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &ours("team/app"),
    ]))
    .unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["latest", "v1"]));
    let back = dir.path().join("back");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--all",
        "--preserve-digests",
        &ours("multi:v1"),
        &format!("oci:{}:multi", back.display()),
    ]);
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &ours("team/app:latest"),
        &format!("oci:{}:single", back.display()),
    ]);
    rt.block_on(async {
        api.assert_manifest("team/app", "v1", MANIFEST, &image.manifest.data)
            .await;
        for blob in image.blobs() {
            api.assert_blob("team/app", &blob.data).await;
        }
        for img in &multi.images {
            api.assert_manifest("multi", &img.manifest.digest, MANIFEST, &img.manifest.data)
                .await;
            for blob in img.blobs() {
                api.assert_blob("multi", &blob.data).await;
            }
        }
    });
    // Every blob skopeo pulled back has the digest it is filed under.
    for entry in std::fs::read_dir(back.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let data = std::fs::read(entry.path()).unwrap();
        assert_eq!(
            sha256(&data),
            format!("sha256:{}", entry.file_name().to_string_lossy())
        );
    }
}
