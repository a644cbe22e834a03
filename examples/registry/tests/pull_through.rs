//! `registry serve --upstream dist=http://DISTRIBUTION` in front of CNCF distribution 2.8
//! (Debian's `docker-registry`): skopeo pulls a single image and a multi-platform index
//! through the cache with the same digests and bytes as straight from the upstream, the
//! cache keeps serving them once the upstream is gone, and a push into the prefix is
//! refused.

#![allow(clippy::unwrap_used)]

mod common;

use common::distribution::start_distribution;
use common::oci_layout::{INDEX, Layout, MANIFEST, read_blob};
use common::skopeo_flow::{require_skopeo, skopeo, skopeo_try};
use common::{Server, seed, serve_command, tempdir};

#[test]
fn skopeo_pulls_through_the_cache_with_the_upstream_s_digests() {
    require_skopeo();
    let dir = tempdir();
    let (mut upstream, upstream_addr) = start_distribution(dir.path(), &dir.path().join("dist"));
    // Content in the upstream, pushed there directly.
    let src = dir.path().join("src");
    let mut layout = Layout::create(&src);
    let s = seed();
    let image = layout.add_image("amd64", s, 2, 200_000);
    let multi = layout.add_multi_arch(&["amd64", "arm64"], s, 50_000);
    layout.tag("single", MANIFEST, &image.manifest);
    layout.tag("multi", INDEX, &multi.index);
    for (tag, path) in [("single", "lib/single:v1"), ("multi", "lib/multi:v1")] {
        skopeo(&[
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &format!("oci:{}:{tag}", src.display()),
            &format!("docker://{upstream_addr}/{path}"),
        ]);
    }

    let data = dir.path().join("cache");
    let cmd = serve_command(
        &data,
        &[
            "--upstream",
            &format!("dist=http://{upstream_addr}"),
            "--upstream-tag-ttl",
            "1s",
        ],
    );
    let cache = Server::spawn(cmd);
    let through = |path: &str| format!("docker://{}/dist/{path}", cache.addr);
    let direct = |path: &str| format!("docker://{upstream_addr}/{path}");

    for path in ["lib/single:v1", "lib/multi:v1"] {
        let raw_direct = skopeo(&["inspect", "--tls-verify=false", "--raw", &direct(path)]);
        let raw_through = skopeo(&["inspect", "--tls-verify=false", "--raw", &through(path)]);
        assert_eq!(raw_through, raw_direct, "{path}: the manifest bytes differ");
    }
    // Pull everything (every platform of the index) into layouts, through the cache.
    let pulled = dir.path().join("pulled");
    for (path, tag) in [("lib/single:v1", "single"), ("lib/multi:v1", "multi")] {
        skopeo(&[
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            &through(path),
            &format!("oci:{}:{tag}", pulled.display()),
        ]);
    }
    let all_blobs = image
        .blobs()
        .into_iter()
        .chain(multi.images.iter().flat_map(|i| i.blobs()))
        .chain([&image.manifest, &multi.index]);
    for blob in all_blobs {
        let got = read_blob(&pulled, &blob.digest);
        assert!(
            got.as_deref() == Some(blob.data.as_slice()),
            "{} differs",
            blob.digest
        );
    }

    // The upstream goes away: what was pulled is served from the cache, tags included
    // (the tag TTL has passed: stale-if-error).
    upstream.kill().unwrap();
    upstream.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let again = dir.path().join("again");
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &through("lib/multi:v1"),
        &format!("oci:{}:multi", again.display()),
    ]);
    assert!(
        cache.log().contains("serving the cached tag"),
        "{}",
        cache.log()
    );

    // Pushes into the prefix are refused.
    let (ok, err) = skopeo_try(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:single", src.display()),
        &through("lib/mine:v1"),
    ]);
    assert!(!ok, "a push into the cache's prefix succeeded");
    assert!(
        err.contains("pull-through cache") || err.contains("405"),
        "{err}"
    );
}
