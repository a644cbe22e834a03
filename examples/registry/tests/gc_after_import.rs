//! Issue 15, "GC grace": `--gc-grace` applies when the collector decides. A CNCF
//! distribution tree (Debian's `docker-registry` 2.8) with a blob no manifest uses is
//! imported with `registry import`; a collector with the default 24 h grace period looks
//! at the queue (it may delete nothing yet); every imported tag is deleted, and a
//! collector with the 24 h grace and `--gc-untagged-ttl 0s` looks again; then
//! `registry gc --gc-grace 0s --gc-untagged-ttl 0s` must free everything no tag still
//! reaches: the blob folder keeps exactly the blobs of an image pushed and tagged after
//! the import (one of its layers shared with a deleted image). Needs `skopeo` and
//! `docker-registry` (`.ci/run` installs both); fails without them.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use common::distribution::start_distribution;
use common::import_flow::Sample;
use common::services::{Backends, Blobs, Meta};
use common::{Api, random_bytes, seed, sha256, tempdir};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(stores: &Backends, name: &str, args: &[&str]) -> String {
    let out: Output = stores.subcommand(name, args).output().unwrap();
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "registry {name} {args:?} failed: {stdout}\n{}",
        text(&out.stderr)
    );
    stdout
}

/// The digests of the blobs in a `storage-fs` folder (`blobs/sha256/<2 hex>/<hex>`).
fn stored_blobs(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(prefixes) = std::fs::read_dir(root.join("blobs/sha256")) else {
        return out;
    };
    for prefix in prefixes {
        for file in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
            let name = file.unwrap().file_name().to_string_lossy().into_owned();
            out.insert(format!("sha256:{name}"));
        }
    }
    out
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[test]
fn gc_with_zero_grace_after_import_and_deleting_every_tag() {
    let dir = tempdir();
    let sample = Sample::create(dir.path(), 2, 50_000);

    // 1. Distribution holds the sample and a blob pushed without any manifest.
    let dist_root = dir.path().join("distribution");
    let (mut dist, dist_addr) = start_distribution(dir.path(), &dist_root);
    sample.push(&dist_addr);
    let orphan = random_bytes(seed() ^ 0x0b5, 30_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let orphan_digest =
        rt.block_on(Api::new(&format!("http://{dist_addr}")).push_blob("team/app", &orphan));
    dist.kill().unwrap();
    dist.wait().unwrap();

    // 2. Import, then a collector with the default 24 h grace: nothing is old enough.
    let stores = Backends::fresh(Blobs::Fs, Meta::Sqlite, "gc-after-import", dir.path());
    let folder = stores.storage.strip_prefix("fs://").unwrap().to_string();
    let folder = Path::new(&folder);
    let out = run(&stores, "import", &["--from", dist_root.to_str().unwrap()]);
    assert!(out.contains(", 4 manifests, 3 tags"), "{out}");
    assert!(
        stored_blobs(folder).contains(&orphan_digest),
        "the unused blob is imported with its repository link"
    );
    let out = run(&stores, "gc", &[]);
    assert!(
        out.contains(" 0 blobs"),
        "the 24 h collector frees nothing yet: {out}"
    );

    // 3. Serve; push and tag an image sharing a layer with the sample; delete every
    //    imported tag.
    let mut server = stores.serve(&[]);
    let api = Api::new(&server.base);
    let shared = sample.image.layers[0].data.clone();
    let (kept_manifest, kept) = rt.block_on(async {
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let own = random_bytes(seed() ^ 0x4ee9, 20_000);
        let config_digest = api.push_blob("keep", config).await;
        let own_digest = api.push_blob("keep", &own).await;
        let shared_digest = api.push_blob("keep", &shared).await;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": own_digest, "size": own.len()},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": shared_digest, "size": shared.len()},
            ],
        }))
        .unwrap();
        api.put_manifest("keep", "v1", MANIFEST, &manifest).await;
        for (repo, tag) in [("team/app", "v1"), ("team/app", "latest"), ("multi", "v1")] {
            let res = api
                .http
                .delete(api.url(&format!("/v2/{repo}/manifests/{tag}")))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status().as_u16(), 202, "DELETE {repo}:{tag}");
        }
        let kept = BTreeSet::from([sha256(&manifest), config_digest, own_digest, shared_digest]);
        (manifest, kept)
    });
    server.terminate();

    // 4. A 24 h collector with the untagged policy on looks at the untagged manifests:
    //    still too young for it.
    let out = run(&stores, "gc", &["--gc-untagged-ttl", "0s"]);
    assert!(out.contains(" 0 blobs"), "{out}");

    // 5. The collector with no grace period frees everything no tag reaches.
    let out = run(
        &stores,
        "gc",
        &["--gc-grace", "0s", "--gc-untagged-ttl", "0s"],
    );
    assert!(
        out.contains("; 0 reviews still queued"),
        "every review is decided: {out}"
    );
    let left = stored_blobs(folder);
    assert_eq!(
        left, kept,
        "the blob folder keeps only what keep:v1 references\n{out}"
    );
    assert!(!left.contains(&orphan_digest));

    // What is kept is still served.
    let server = stores.serve(&[]);
    let api = Api::new(&server.base);
    rt.block_on(async {
        api.assert_manifest("keep", "v1", MANIFEST, &kept_manifest)
            .await;
        api.assert_blob("keep", &shared).await;
        let (status, _, _) = api.get("/v2/team/app/manifests/v1").await;
        assert_eq!(status, 404);
    });
}
