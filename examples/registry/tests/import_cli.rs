//! `registry import --from ROOT` through the real binary: push images with skopeo into
//! Debian's `docker-registry` (CNCF distribution 2.8), stop it, add a broken revision link,
//! import with the command (it reports the broken one and succeeds), import again (nothing
//! copied), serve the result and pull everything back. Needs `skopeo` and
//! `docker-registry` (`.ci/run` installs both); fails without them.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Output;

use common::distribution::start_distribution;
use common::import_flow::Sample;
use common::services::{Backends, Blobs, Meta};
use common::{seed, tempdir};

/// `registry import --from FROM` into `stores`.
fn import(stores: &Backends, from: &str) -> Output {
    stores
        .subcommand("import", &["--from", from])
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn import_command_then_serve_and_pull() {
    let dir = tempdir();
    let sample = Sample::create(dir.path(), 2, 100_000);

    // 1. Push into distribution, then stop it.
    let dist_root = dir.path().join("distribution");
    let (mut dist, dist_addr) = start_distribution(dir.path(), &dist_root);
    sample.push(&dist_addr);
    dist.kill().unwrap();
    dist.wait().unwrap();

    // A revision whose bytes are gone: reported as skipped, the rest is imported.
    let missing = format!("{:064x}", u128::from(seed() as u32));
    let link = dist_root.join(format!(
        "docker/registry/v2/repositories/broken/_manifests/revisions/sha256/{missing}"
    ));
    std::fs::create_dir_all(&link).unwrap();
    std::fs::write(link.join("link"), format!("sha256:{missing}")).unwrap();

    // 2. Import with the command.
    let stores = Backends::fresh(Blobs::Fs, Meta::Sqlite, "import-cli", dir.path());
    let root = dist_root.to_str().unwrap();
    let out = import(&stores, root);
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
    let again = import(&stores, root);
    let stdout = text(&again.stdout);
    assert!(again.status.success(), "{stdout}");
    assert!(stdout.contains(" 0 blobs copied (0 bytes"), "{stdout}");
    assert!(stdout.contains("; 1 skipped"), "{stdout}");

    // Refusals: a scheme we cannot read, and a folder that is not a distribution root.
    let out = import(&stores, "gs://bucket/registry");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("gs:// sources are not supported"), "{err}");
    let out = import(&stores, dir.path().join("src").to_str().unwrap());
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("docker/registry/v2"));

    // 3. Serve what was imported; pull with skopeo and over HTTP.
    let server = stores.serve(&[]);
    sample.assert_served(&server.addr, &server.base, &dir.path().join("back"));
}
