#![allow(clippy::unwrap_used)]
//! Every pairing of blob store and metadata store, through the real `registry` binary:
//! fs + SQLite, S3 + SQLite, fs + PostgreSQL, S3 + PostgreSQL. Each pairing runs the whole
//! conformance harness (every check must pass) and the skopeo round trip (a multi-layer
//! image and a multi-platform index pushed from an OCI layout, inspected, listed, copied
//! registry to registry, pulled back with the same digests, deleted).
//!
//! One SeaweedFS and one PostgreSQL serve every test of this binary; each pairing has its
//! own S3 prefix, database and folder. Needs `skopeo`, the PostgreSQL server binaries and
//! SeaweedFS (`scripts/ci-deps.sh` installs them); the tests fail, rather than skip, without.

mod common;

use std::time::Instant;

use common::services::{Backends, Blobs, Meta, assert_conformance};
use common::{Api, skopeo_flow, tempdir};

fn pairing(blobs: Blobs, meta: Meta) {
    let started = Instant::now();
    let what = format!("{blobs:?} + {meta:?}");
    let dir = tempdir();
    let backends = Backends::fresh(
        blobs,
        meta,
        &format!("matrix_{blobs:?}_{meta:?}"),
        dir.path(),
    );
    let server = backends.serve(&[]);
    let rt = tokio::runtime::Runtime::new().unwrap();

    let checks = rt.block_on(assert_conformance(&server.base, "conformance", &what));
    let harness_done = started.elapsed();

    let api = Api::new(&server.base);
    skopeo_flow::round_trip(
        &server.addr,
        &api,
        &rt,
        &dir.path().join("skopeo"),
        "skopeo",
    );

    // Both runs left the registry healthy and its catalog readable.
    rt.block_on(async {
        let (status, _, _) = api.get("/v2/").await;
        assert_eq!(status, 200, "{what}: GET /v2/");
        let (status, _, body) = api.get("/v2/_catalog").await;
        assert_eq!(status, 200, "{what}: GET /v2/_catalog");
        let catalog: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            catalog["repositories"]
                .as_array()
                .is_some_and(|r| r.iter().any(|n| n == "skopeo/multi")),
            "{what}: catalog lists skopeo/multi: {catalog}"
        );
    });
    eprintln!(
        "{what}: {checks} conformance checks passed in {:.1?}, skopeo round trip in {:.1?}",
        harness_done,
        started.elapsed() - harness_done
    );
    drop(server);
}

#[test]
fn fs_and_sqlite() {
    pairing(Blobs::Fs, Meta::Sqlite);
}

#[test]
fn s3_and_sqlite() {
    pairing(Blobs::S3, Meta::Sqlite);
}

#[test]
fn fs_and_postgres() {
    pairing(Blobs::Fs, Meta::Postgres);
}

#[test]
fn s3_and_postgres() {
    pairing(Blobs::S3, Meta::Postgres);
}
