//! `registry import --rebuild`: the metadata database is lost, the blob store is not.
//! Push images with skopeo into `registry serve`, move a tag, delete a tag and a manifest,
//! stop it, lose the database, rebuild it from the blob store (twice: the second
//! run changes nothing), serve again and pull everything back with the same digests and
//! tags, while what was deleted stays deleted. On a folder and on S3 (SeaweedFS), into
//! SQLite and PostgreSQL. Needs `skopeo`, SeaweedFS and PostgreSQL; fails without them.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::import_flow::{MANIFESTS, Sample, TAGS};
use common::services::{Backends, Blobs, Meta, postgres};
use common::skopeo_flow::skopeo_try;
use common::{Api, tempdir};

fn rebuild(stores: &Backends) -> Output {
    stores
        .subcommand("import", &["--rebuild"])
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The database of `stores` is lost: the SQLite file (with its WAL and shared-memory
/// files) is deleted; a PostgreSQL database is replaced by a new, empty one, as after
/// restoring a server without a backup. Returns the stores to rebuild into.
fn lose_database(stores: &Backends) -> Backends {
    if stores.meta == Meta::Postgres {
        let mut fresh = stores.clone();
        fresh.metadata = postgres().unique_database("rebuilt");
        return fresh;
    }
    let path = PathBuf::from(stores.metadata.strip_prefix("sqlite://").unwrap());
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing {}: {e}", PathBuf::from(file).display()),
        }
    }
    assert!(!path.exists());
    stores.clone()
}

fn rebuild_after_losing_the_database(blobs: Blobs, meta: Meta) {
    let dir = tempdir();
    let stores = Backends::fresh(blobs, meta, "rebuild", dir.path());
    let sample = Sample::create(dir.path(), 2, 120_000);
    let rt = tokio::runtime::Runtime::new().unwrap();

    // 1. Push, and change things after pushing: what the rebuild must reproduce is the
    // state at the end, not the history.
    let mut server = stores.serve(&[]);
    let api = Api::new(&server.base);
    sample.push(&server.addr);
    // A tag that moved from the image to the index.
    sample.copy_to(&server.addr, "single", "moved:t");
    sample.copy_to(&server.addr, "multi", "moved:t");
    // A tag deleted; its manifest stays, untagged (moved:t points elsewhere now).
    sample.copy_to(&server.addr, "single", "moved:old");
    // A manifest deleted (by digest, as skopeo does: its tags go with it).
    sample.copy_to(&server.addr, "single", "gone:v1");
    rt.block_on(async {
        let res = api
            .http
            .delete(api.url("/v2/moved/manifests/old"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 202, "DELETE tag moved:old");
    });
    let (ok, err) = skopeo_try(&[
        "delete",
        "--tls-verify=false",
        &format!("docker://{}/gone:v1", server.addr),
    ]);
    assert!(ok, "skopeo delete gone:v1: {err}");
    // A clean stop: the records the registry writes in the background are all written.
    let exit = server.terminate();
    assert!(exit.success(), "{exit}\n{}", server.log());

    // 2. The database is lost; rebuild it from the blob store, twice.
    let stores = lose_database(&stores);
    // The sample's, plus in `moved` the index with its children and the untagged image.
    let manifests = MANIFESTS + 4;
    let tags = TAGS + 1; // and moved:t
    for run in ["first", "second"] {
        let out = rebuild(&stores);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{run} rebuild on {blobs:?} into {meta:?} failed: {stdout}\n{}",
            text(&out.stderr)
        );
        // Nothing to copy: every blob is already where it belongs.
        assert!(stdout.contains(" 0 blobs copied (0 bytes"), "{stdout}");
        assert!(
            stdout.contains(&format!(", {manifests} manifests, {tags} tags; 0 skipped")),
            "{run}: {stdout}"
        );
    }

    // 3. Serve the rebuilt database: everything pulls back, deletions stayed.
    let server = stores.serve(&[]);
    let api = Api::new(&server.base);
    sample.assert_served(&server.addr, &server.base, &dir.path().join("back"));
    rt.block_on(async {
        api.assert_manifest(
            "moved",
            "t",
            common::oci_layout::INDEX,
            &sample.multi.index.data,
        )
        .await;
        let (status, _, _) = api.get("/v2/moved/manifests/old").await;
        assert_eq!(status, 404, "moved:old after the rebuild");
        let digest = &sample.image.manifest.digest;
        // moved:old's manifest was untagged, not deleted: it is still there by digest.
        api.assert_manifest(
            "moved",
            digest,
            common::oci_layout::MANIFEST,
            &sample.image.manifest.data,
        )
        .await;
        for reference in ["v1", digest.as_str()] {
            let (status, _, _) = api.get(&format!("/v2/gone/manifests/{reference}")).await;
            assert_eq!(status, 404, "gone:{reference} after the rebuild");
        }
        let (status, _, body) = api.get("/v2/moved/tags/list").await;
        assert_eq!(status, 200);
        let tags: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(tags["tags"], serde_json::json!(["t"]));
    });
}

#[test]
fn rebuild_on_a_folder() {
    rebuild_after_losing_the_database(Blobs::Fs, Meta::Sqlite);
}

#[test]
fn rebuild_on_s3() {
    rebuild_after_losing_the_database(Blobs::S3, Meta::Sqlite);
}

#[test]
fn rebuild_on_s3_into_postgres() {
    rebuild_after_losing_the_database(Blobs::S3, Meta::Postgres);
}

#[test]
fn rebuild_refuses_what_it_cannot_rebuild_from() {
    let dir = tempdir();
    let db = dir.path().join("registry.db");
    let run = |storage: &str, extra: &[&str]| {
        let out = common::registry_command()
            .args(["import", "--rebuild", "--storage", storage])
            .args(["--metadata", &format!("sqlite://{}", db.display())])
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success());
        text(&out.stderr)
    };
    let missing = dir.path().join("no-such-folder");
    let err = run(missing.to_str().unwrap(), &[]);
    assert!(err.contains("no such folder"), "{err}");
    assert!(!missing.exists(), "a mistyped --storage is not created");
    let err = run(dir.path().to_str().unwrap(), &[]);
    assert!(err.contains("holds no recovery records"), "{err}");
    let err = run(dir.path().to_str().unwrap(), &["--from", "/srv/dist"]);
    assert!(err.contains("cannot be used with"), "{err}");
    assert!(!db.exists(), "no database is created by a refused rebuild");
}
