//! The conformance harness, run in process against the registry on fs + SQLite, over a
//! real loopback socket (so hyper's handling of HEAD, chunked bodies and headers is
//! exercised too).

use std::sync::Arc;

use registry_core::{Registry, RegistryConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_passes_on_fs_and_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = storage_fs::FsBlobStore::open(dir.path().join("blobs")).unwrap();
    let metadata =
        metadata_sqlite::SqliteMetadataStore::open(dir.path().join("registry.db")).unwrap();
    let registry = Registry::new(
        Arc::new(blobs),
        Arc::new(metadata),
        RegistryConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, registry.router()).into_future());

    let harness =
        oci_conformance::Harness::new(&format!("http://{addr}"), None, "conformance").unwrap();
    let report = harness.run_all().await;
    server.abort();
    assert!(report.passed() > 30, "too few checks ran:\n{report}");
    assert_eq!(report.failed(), 0, "{report}");
}
