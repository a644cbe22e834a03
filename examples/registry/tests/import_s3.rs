//! `registry import --from s3://...`: push images with skopeo into Debian's
//! `docker-registry` (CNCF distribution 2.8) running its `s3` storage driver on a
//! SeaweedFS, stop it, import from the bucket twice (the second run copies nothing) into
//! a folder and into another S3 prefix, serve each result and pull everything back with
//! the same digests. Also: what the command says about a prefix that is not a
//! distribution root, an endpoint that does not answer, and missing credentials. Needs
//! `skopeo`, `docker-registry` and SeaweedFS (`.ci/run` installs them); fails without them.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};

use common::distribution::start_distribution_s3;
use common::import_flow::{MANIFESTS, REPOSITORIES, Sample, TAGS};
use common::services::{Backends, Blobs, Meta, seaweedfs};
use common::tempdir;

/// `registry import --from FROM` into `stores`, with the SeaweedFS credentials in the
/// environment (the source's, and the destination's when it is S3 too).
fn import(stores: &Backends, from: &str) -> Output {
    let s3 = seaweedfs();
    with_output(
        stores
            .subcommand("import", &["--from", from])
            .env("AWS_ACCESS_KEY_ID", &s3.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &s3.secret_key),
    )
}

fn with_output(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn import_from_distribution_on_s3_then_serve_and_pull() {
    let dir = tempdir();
    let s3 = seaweedfs();
    let sample = Sample::create(dir.path(), 3, 150_000);
    let root = format!("distribution-{}", common::seed() % 1_000_000);
    let (mut dist, dist_addr) = start_distribution_s3(dir.path(), s3, &root);
    sample.push(&dist_addr);
    dist.kill().unwrap();
    dist.wait().unwrap();
    let from = s3.url(&root);

    let totals = format!(
        ": {REPOSITORIES} repositories, {} blobs copied",
        sample.blob_digests().len()
    );
    let records = format!(", {MANIFESTS} manifests, {TAGS} tags; 0 skipped");
    for blobs in [Blobs::Fs, Blobs::S3] {
        let stores = Backends::fresh(blobs, Meta::Sqlite, "import-s3", dir.path());
        let out = import(&stores, &from);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "import into {blobs:?} failed: {stdout}\n{}",
            text(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("imported from {from}{totals}")),
            "{stdout}"
        );
        assert!(stdout.contains(&records), "{stdout}");

        // Again: the same records, nothing copied, nothing skipped.
        let again = import(&stores, &from);
        let stdout = text(&again.stdout);
        assert!(again.status.success(), "{stdout}");
        assert!(stdout.contains(" 0 blobs copied (0 bytes"), "{stdout}");
        assert!(stdout.contains(&records), "{stdout}");

        let server = stores.serve(&[]);
        sample.assert_served(
            &server.addr,
            &server.base,
            &dir.path().join(format!("back-{blobs:?}")),
        );
    }
}

#[test]
fn s3_sources_that_cannot_be_imported_are_clear_errors() {
    let dir = tempdir();
    let s3 = seaweedfs();
    let stores = Backends::fresh(Blobs::Fs, Meta::Sqlite, "import-s3-errors", dir.path());

    // A prefix with nothing of distribution's under it.
    let out = import(&stores, &s3.url("nothing-here"));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("has no docker/registry/v2/ under it") && err.contains("rootdirectory"),
        "{err}"
    );

    // An endpoint nobody listens on: an error naming the source, after the retries.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("s3://bucket/root?endpoint=http://127.0.0.1:{closed}&region=us-east-1");
    let out = import(&stores, &url);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot read S3 source {url}")),
        "{err}"
    );

    // Wrong credentials: S3's refusal, not a panic.
    let out = with_output(
        stores
            .subcommand("import", &["--from", &s3.url("x")])
            .env("AWS_ACCESS_KEY_ID", "nobody")
            .env("AWS_SECRET_ACCESS_KEY", "wrong"),
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot read S3 source") && err.contains("403"),
        "{err}"
    );

    // No credentials at all, and a malformed URL: refused before any request.
    let out = with_output(
        stores
            .subcommand("import", &["--from", &s3.url("x")])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("HOME", dir.path()),
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    let out = import(
        &stores,
        "s3://bucket/root?endpoint=http://127.0.0.1:1&regoin=x",
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("unknown parameter \"regoin\""), "{err}");

    // Each was refused before the stores were opened: not even the database exists.
    let out = with_output(&mut stores.subcommand("stats", &["--json"]));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("no metadata database"), "{err}");
}
