//! The skopeo round trip of `tests/skopeo.rs`, as a function the backend-matrix tests run
//! against a registry on any pair of stores: push a multi-layer image and a multi-platform
//! index from an OCI layout, inspect, list tags, copy registry to registry, pull back into
//! layouts (same digests, intact bytes), delete.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use super::oci_layout::{self, INDEX, Layout, MANIFEST};
use super::{Api, seed, sha256};

/// Runs `skopeo --insecure-policy ARGS` (no signature policy file needed) under a time
/// limit; returns stdout, panics with stderr on failure.
pub fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("timeout")
        .arg("300")
        .arg("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("run timeout(1)");
    assert!(
        out.status.success(),
        "skopeo {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Like [`skopeo`] but returns whether it succeeded and its stderr.
pub fn skopeo_try(args: &[&str]) -> (bool, String) {
    let out = Command::new("timeout")
        .arg("300")
        .arg("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("run timeout(1)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn require_skopeo() {
    let found = Command::new("skopeo")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "skopeo is not installed: this test needs it. Install it with \
         `apt-get install skopeo` (Debian/Ubuntu) or run `.ci/run`, which installs it."
    );
}

pub fn blob_set(root: &Path) -> BTreeSet<String> {
    std::fs::read_dir(root.join("blobs/sha256"))
        .expect("read blobs/sha256")
        .map(|e| {
            format!(
                "sha256:{}",
                e.expect("dir entry").file_name().to_string_lossy()
            )
        })
        .collect()
}

/// Every file under blobs/sha256 has the digest of its name.
pub fn assert_layout_blobs_intact(root: &Path) {
    for digest in blob_set(root) {
        let data = oci_layout::read_blob(root, &digest).expect("blob readable");
        assert_eq!(sha256(&data), digest, "blob {digest} in {}", root.display());
    }
}

/// The round trip against the registry at `host` (`127.0.0.1:PORT`), with repositories
/// under `prefix/`; `dir` holds the layouts; `rt` drives `api`'s checks.
pub fn round_trip(host: &str, api: &Api, rt: &tokio::runtime::Runtime, dir: &Path, prefix: &str) {
    require_skopeo();
    let host = host.to_string();
    // Test input: one layout holding a 3-layer image and a two-platform index.
    let src = dir.join("src");
    let mut layout = Layout::create(&src);
    let s = seed();
    let image = layout.add_image("amd64", s, 3, 300_000);
    let multi = layout.add_multi_arch(&["amd64", "arm64"], s, 100_000);
    layout.tag("single", MANIFEST, &image.manifest);
    layout.tag("multi", INDEX, &multi.index);
    let src_ref = |tag: &str| format!("oci:{}:{tag}", src.display());
    let remote = |path: &str| format!("docker://{host}/{path}");

    // Push the image.
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &src_ref("single"),
        &remote(&format!("{prefix}/single:v1")),
    ]);
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &remote(&format!("{prefix}/single:v1")),
    ]);
    assert!(
        raw == image.manifest.data,
        "inspect --raw returns the pushed manifest bytes"
    );
    rt.block_on(async {
        api.assert_manifest(
            &format!("{prefix}/single"),
            "v1",
            MANIFEST,
            &image.manifest.data,
        )
        .await;
        api.assert_manifest(
            &format!("{prefix}/single"),
            &image.manifest.digest,
            MANIFEST,
            &image.manifest.data,
        )
        .await;
        for blob in image.blobs() {
            api.assert_blob(&format!("{prefix}/single"), &blob.data)
                .await;
        }
    });
    let inspected: serde_json::Value = serde_json::from_slice(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &remote(&format!("{prefix}/single:v1")),
    ]))
    .expect("inspect prints JSON");
    assert_eq!(
        inspected["Digest"].as_str(),
        Some(image.manifest.digest.as_str())
    );
    assert_eq!(inspected["Architecture"].as_str(), Some("amd64"));
    let layers: Vec<&str> = inspected["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    let expected: Vec<&str> = image.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(layers, expected);

    // Push the index with every platform.
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &src_ref("multi"),
        &remote(&format!("{prefix}/multi:v1")),
    ]);
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &remote(&format!("{prefix}/multi:v1")),
    ]);
    assert!(
        raw == multi.index.data,
        "inspect --raw returns the pushed index bytes"
    );
    for img in &multi.images {
        let by_digest = remote(&format!("{prefix}/multi@{}", img.manifest.digest));
        let raw = skopeo(&["inspect", "--tls-verify=false", "--raw", &by_digest]);
        assert!(
            raw == img.manifest.data,
            "child manifest {}",
            img.architecture
        );
        rt.block_on(async {
            for blob in img.blobs() {
                api.assert_blob(&format!("{prefix}/multi"), &blob.data)
                    .await;
            }
        });
    }
    rt.block_on(api.assert_manifest(&format!("{prefix}/multi"), "v1", INDEX, &multi.index.data));

    // Registry to registry: a second tag, a second repository (blobs already there).
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &remote(&format!("{prefix}/single:v1")),
        &remote(&format!("{prefix}/single:v2")),
    ]);
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &remote(&format!("{prefix}/multi:v1")),
        &remote(&format!("{prefix}/other/multi:latest")),
    ]);
    let tags: serde_json::Value = serde_json::from_slice(&skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &remote(&format!("{prefix}/single")),
    ]))
    .expect("list-tags prints JSON");
    let mut tags: Vec<&str> = tags["Tags"]
        .as_array()
        .expect("Tags")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, ["v1", "v2"]);

    // Pull back into fresh layouts: same manifest digests, same blobs, bytes intact.
    let back = dir.join("back");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &remote(&format!("{prefix}/single:v2")),
        &format!("oci:{}:single", back.display()),
    ]);
    let d = oci_layout::find_ref(&back, "single").expect("pulled ref in index.json");
    assert_eq!(d["digest"].as_str(), Some(image.manifest.digest.as_str()));
    let mut want: BTreeSet<String> = image.blobs().iter().map(|b| b.digest.clone()).collect();
    want.insert(image.manifest.digest.clone());
    assert_eq!(blob_set(&back), want);
    assert_layout_blobs_intact(&back);

    let back_multi = dir.join("back-multi");
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--preserve-digests",
        &remote(&format!("{prefix}/other/multi:latest")),
        &format!("oci:{}:multi", back_multi.display()),
    ]);
    let d = oci_layout::find_ref(&back_multi, "multi").expect("pulled index in index.json");
    assert_eq!(d["digest"].as_str(), Some(multi.index.digest.as_str()));
    let mut want: BTreeSet<String> = BTreeSet::from([multi.index.digest.clone()]);
    for img in &multi.images {
        want.insert(img.manifest.digest.clone());
        want.extend(img.blobs().iter().map(|b| b.digest.clone()));
    }
    assert_eq!(blob_set(&back_multi), want);
    assert_layout_blobs_intact(&back_multi);

    // Delete: skopeo resolves the tag and deletes the manifest by digest, so both tags of
    // that manifest go with it.
    skopeo(&[
        "delete",
        "--tls-verify=false",
        &remote(&format!("{prefix}/single:v2")),
    ]);
    rt.block_on(async {
        for reference in ["v1", "v2", image.manifest.digest.as_str()] {
            let (status, _, _) = api
                .get(&format!("/v2/{prefix}/single/manifests/{reference}"))
                .await;
            assert_eq!(status, 404, "manifest {reference} after delete");
        }
        // The index in the other repositories is untouched.
        api.assert_manifest(&format!("{prefix}/multi"), "v1", INDEX, &multi.index.data)
            .await;
    });
    let (ok, stderr) = skopeo_try(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &remote(&format!("{prefix}/single:v1")),
    ]);
    assert!(!ok, "inspect after delete must fail");
    assert!(
        stderr.contains("manifest unknown")
            || stderr.contains("not found")
            || stderr.contains("404"),
        "inspect after delete: {stderr}"
    );
}
