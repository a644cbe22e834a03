//! `registry import --from ROOT` through the real binary: push images with skopeo into
//! Debian's `docker-registry` (CNCF distribution 2.8), stop it, add a broken revision link,
//! import with the command (it reports the broken one and succeeds), import again (nothing
//! copied), serve the result and pull everything back. Needs `skopeo` and
//! `docker-registry` (`.ci/run` installs both); fails without them.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Output;

use common::distribution::start_distribution;
use common::oci_layout::{INDEX, Layout, MANIFEST};
use common::skopeo_flow::{require_skopeo, skopeo};
use common::{Api, Server, registry_command, seed, sha256, tempdir};

/// `registry import --from FROM` into the stores under `data`.
fn import(data: &Path, from: &str) -> Output {
    registry_command()
        .arg("import")
        .arg("--from")
        .arg(from)
        .arg("--storage")
        .arg(format!("fs://{}", data.join("blobs").display()))
        .arg("--metadata")
        .arg(format!("sqlite://{}", data.join("registry.db").display()))
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn import_command_then_serve_and_pull() {
    require_skopeo();
    let dir = tempdir();
    let src = dir.path().join("src");
    let mut layout = Layout::create(&src);
    let s = seed();
    let image = layout.add_image("amd64", s, 2, 100_000);
    let multi = layout.add_multi_arch(&["amd64", "arm64"], s, 30_000);
    layout.tag("single", MANIFEST, &image.manifest);
    layout.tag("multi", INDEX, &multi.index);
    let src_ref = |tag: &str| format!("oci:{}:{tag}", src.display());

    // 1. Push into distribution, then stop it.
    let dist_root = dir.path().join("distribution");
    let (mut dist, dist_addr) = start_distribution(dir.path(), &dist_root);
    let to = |path: &str| format!("docker://{dist_addr}/{path}");
    for tag in ["v1", "latest"] {
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--preserve-digests",
            &src_ref("single"),
            &to(&format!("team/app:{tag}")),
        ]);
    }
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

    // A revision whose bytes are gone: reported as skipped, the rest is imported.
    let missing = format!("{:064x}", u128::from(s as u32));
    let link = dist_root.join(format!(
        "docker/registry/v2/repositories/broken/_manifests/revisions/sha256/{missing}"
    ));
    std::fs::create_dir_all(&link).unwrap();
    std::fs::write(link.join("link"), format!("sha256:{missing}")).unwrap();

    // 2. Import with the command.
    let data = dir.path().join("data");
    let root = dist_root.to_str().unwrap();
    let out = import(&data, root);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "import failed: {stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "skipped: broken@sha256:{missing}: manifest bytes missing"
        )),
        "{stdout}"
    );
    // team/app, multi, broken; the single image and the index with its two children.
    assert!(stdout.contains(": 3 repositories, "), "{stdout}");
    assert!(
        stdout.contains(", 4 manifests, 3 tags; 1 skipped"),
        "{stdout}"
    );
    assert!(!stdout.contains(" 0 blobs copied"), "{stdout}");

    // Again: nothing new to copy, the same skip.
    let again = import(&data, root);
    let stdout = text(&again.stdout);
    assert!(again.status.success(), "{stdout}");
    assert!(stdout.contains(" 0 blobs copied (0 bytes"), "{stdout}");
    assert!(stdout.contains("; 1 skipped"), "{stdout}");

    // Refusals: object storage, and a folder that is not a distribution root.
    let out = import(&data, "s3://bucket/registry");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("only filesystem roots are supported"), "{err}");
    let out = import(&data, dir.path().join("src").to_str().unwrap());
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("docker/registry/v2"));

    // 3. Serve what was imported; pull with skopeo and over HTTP.
    let server = Server::start(&data);
    let ours = |path: &str| format!("docker://{}/{path}", server.addr);
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &ours("team/app:latest"),
    ]);
    assert!(raw == image.manifest.data);
    let back = dir.path().join("back");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--all",
        "--preserve-digests",
        &ours("multi:v1"),
        &format!("oci:{}:multi", back.display()),
    ]);
    for entry in std::fs::read_dir(back.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let bytes = std::fs::read(entry.path()).unwrap();
        assert_eq!(
            sha256(&bytes),
            format!("sha256:{}", entry.file_name().to_string_lossy())
        );
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let api = Api::new(&server.base);
        api.assert_manifest("team/app", "v1", MANIFEST, &image.manifest.data)
            .await;
        api.assert_manifest("multi", "v1", INDEX, &multi.index.data)
            .await;
        for blob in image.blobs() {
            api.assert_blob("team/app", &blob.data).await;
        }
        let (status, _, body) = api.get("/v2/team/app/tags/list").await;
        assert_eq!(status, 200);
        let tags: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(tags["tags"], serde_json::json!(["latest", "v1"]));
    });
}
