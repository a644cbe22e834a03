//! Import from CNCF distribution: push images with skopeo into Debian's `docker-registry`
//! (distribution 2.8), stop it, import its storage folder, and pull everything back from
//! ours with the same digests. Needs `skopeo` and `docker-registry` (`.ci/run` installs
//! both); fails without them.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::distribution::start_distribution;
use common::import_flow::{MANIFESTS, REPOSITORIES, Sample, TAGS};
use common::{Server, tempdir};
use registry_core::import::FsSource;
use registry_core::{Registry, RegistryConfig};

#[test]
fn images_pushed_to_distribution_pull_from_us_after_import() {
    let dir = tempdir();
    let sample = Sample::create(dir.path(), 3, 200_000);

    // 1. Push into distribution, then stop it.
    let dist_root = dir.path().join("distribution");
    let (mut dist, dist_addr) = start_distribution(dir.path(), &dist_root);
    sample.push(&dist_addr);
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
        assert_eq!(first.repositories, REPOSITORIES, "{first:?}");
        assert!(first.skipped.is_empty(), "{first:?}");
        assert_eq!(first.tags, TAGS, "{first:?}");
        assert_eq!(first.manifests, MANIFESTS, "{first:?}");
        // Layers and configs; manifests are stored with their metadata, not counted.
        assert_eq!(first.blobs_copied, sample.blob_digests().len(), "{first:?}");
        let again = registry.import(&FsSource::new(&dist_root)).await.unwrap();
        assert_eq!(
            again.blobs_copied, 0,
            "re-running copies nothing: {again:?}"
        );
        assert!(again.skipped.is_empty(), "{again:?}");
        assert_eq!((again.manifests, again.tags), (first.manifests, first.tags));
        drop(registry);

        // What was imported is in the blob store's recovery records too: a database lost
        // after the import is rebuilt from the blob store alone.
        let blobs = storage_fs::FsBlobStore::open(data.join("blobs")).unwrap();
        let metadata =
            metadata_sqlite::SqliteMetadataStore::open(dir.path().join("rebuilt.db")).unwrap();
        let rebuilt = Registry::new(
            Arc::new(blobs),
            Arc::new(metadata),
            RegistryConfig::default(),
        )
        .rebuild()
        .await
        .unwrap();
        assert!(rebuilt.skipped.is_empty(), "{rebuilt:?}");
        assert_eq!(rebuilt.blobs_copied, 0, "{rebuilt:?}");
        assert_eq!(
            (rebuilt.repositories, rebuilt.manifests, rebuilt.tags),
            (first.repositories, first.manifests, first.tags),
            "{rebuilt:?}"
        );
    });

    // 3. Serve the imported state and pull everything back with skopeo and over HTTP.
    let server = Server::start(&data);
    sample.assert_served(&server.addr, &server.base, &dir.path().join("back"));
}
