//! `/healthz` and `/readyz`: 200 while both stores answer, 503 with a JSON reason when one
//! does not (a blob store that fails, a SQLite database whose folder is gone, a blob
//! store folder that is gone).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use axum::body::Body;
use futures::stream::BoxStream;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use oci_spec_types::Digest;
use registry_core::{Registry, RegistryConfig};
use storage_traits::{
    BlobInfo, BlobSigner, BlobStore, ByteStream, GetRange, GetResult, MetadataStore, StorageError,
};
use tower::ServiceExt;

/// A registry on these stores with the default settings, and its ops router.
fn registry_with(
    blobs: impl BlobStore + 'static,
    metadata: impl MetadataStore + 'static,
) -> (Registry, axum::Router) {
    let registry = Registry::new(
        Arc::new(blobs),
        Arc::new(metadata),
        RegistryConfig::default(),
    );
    let ops = registry.ops_router();
    (registry, ops)
}

async fn probe(router: &axum::Router, path: &str) -> (StatusCode, serde_json::Value) {
    let req = Request::get(path).body(Body::empty()).unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/json"
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn ready_when_both_stores_answer() {
    let t = common::TestRegistry::new().await;
    let ops = t.registry.ops_router();
    let (status, body) = probe(&ops, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "alive");
    let (status, body) = probe(&ops, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["metadata"], "ok");
    assert_eq!(body["checks"]["blobs"], "ok");
    assert!(body.get("reason").is_none());
}

/// A blob store that fails every call while `down` is set.
#[derive(Debug)]
struct Flaky {
    inner: storage_fs::FsBlobStore,
    down: Arc<AtomicBool>,
}

impl Flaky {
    fn check(&self) -> Result<(), StorageError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StorageError::backend("flaky", "injected outage"))
        } else {
            Ok(())
        }
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl BlobStore for Flaky {
    async fn stat(&self, d: &Digest) -> Result<Option<BlobInfo>, StorageError> {
        self.check()?;
        self.inner.stat(d).await
    }
    async fn get(&self, d: &Digest, r: Option<GetRange>) -> Result<GetResult, StorageError> {
        self.check()?;
        self.inner.get(d, r).await
    }
    async fn delete(&self, d: &Digest) -> Result<(), StorageError> {
        self.check()?;
        self.inner.delete(d).await
    }
    fn list(&self) -> BoxStream<'static, Result<Digest, StorageError>> {
        self.inner.list()
    }
    async fn start_upload(&self, id: &str) -> Result<(), StorageError> {
        self.check()?;
        self.inner.start_upload(id).await
    }
    async fn write_upload(
        &self,
        id: &str,
        offset: u64,
        data: ByteStream,
    ) -> Result<u64, StorageError> {
        self.check()?;
        self.inner.write_upload(id, offset, data).await
    }
    async fn read_upload(&self, id: &str) -> Result<ByteStream, StorageError> {
        self.check()?;
        self.inner.read_upload(id).await
    }
    async fn finish_upload(&self, id: &str, d: &Digest, n: u64) -> Result<(), StorageError> {
        self.check()?;
        self.inner.finish_upload(id, d, n).await
    }
    async fn put_bytes(
        &self,
        id: &str,
        d: &Digest,
        data: bytes::Bytes,
    ) -> Result<(), StorageError> {
        self.check()?;
        self.inner.put_bytes(id, d, data).await
    }
    async fn stage_blob<'a>(
        &'a self,
        blob: storage_traits::StageBlob<'a>,
    ) -> Result<Box<dyn storage_traits::StagedBlob + 'a>, StorageError> {
        self.check()?;
        self.inner.stage_blob(blob).await
    }
    async fn abort_upload(&self, id: &str) -> Result<(), StorageError> {
        self.check()?;
        self.inner.abort_upload(id).await
    }
    fn capabilities(&self) -> storage_traits::BlobCapabilities {
        self.inner.capabilities().with_presign(false)
    }
    fn signer(&self) -> Option<&dyn BlobSigner> {
        None
    }
    /// Records are only written in the background; outages of them are not probed.
    fn recovery(&self) -> Option<&dyn storage_traits::RecoveryLog> {
        self.inner.recovery()
    }
}

#[tokio::test]
async fn unavailable_while_the_blob_store_fails() {
    let dir = tempfile::tempdir().unwrap();
    let down = Arc::new(AtomicBool::new(false));
    let blobs = Flaky {
        inner: storage_fs::FsBlobStore::open(dir.path().join("blobs")).unwrap(),
        down: down.clone(),
    };
    let metadata = metadata_sqlite::SqliteMetadataStore::open(dir.path().join("db")).unwrap();
    let (registry, ops) = registry_with(blobs, metadata);

    assert_eq!(probe(&ops, "/readyz").await.0, StatusCode::OK);
    down.store(true, Ordering::SeqCst);
    let (status, body) = probe(&ops, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["metadata"], "ok");
    assert_ne!(body["checks"]["blobs"], "ok");
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.starts_with("blobs: "), "{reason}");
    // The API answers the outage with 503 and Retry-After, not a 500 that reads as a bug.
    let api = registry.router();
    let req = Request::post("/v2/some/repo/blobs/uploads/")
        .body(Body::empty())
        .unwrap();
    let res = api.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers().get("retry-after").unwrap(), "5");
    let err: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(err["errors"][0]["code"], "UNKNOWN", "{err}");
    // Liveness does not depend on the stores.
    assert_eq!(probe(&ops, "/healthz").await.0, StatusCode::OK);

    down.store(false, Ordering::SeqCst);
    assert_eq!(probe(&ops, "/readyz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn unavailable_when_the_sqlite_folder_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = storage_fs::FsBlobStore::open(dir.path().join("blobs")).unwrap();
    let db_dir = dir.path().join("db");
    std::fs::create_dir_all(&db_dir).unwrap();
    let metadata = metadata_sqlite::SqliteMetadataStore::open(db_dir.join("registry.db")).unwrap();
    let (_registry, ops) = registry_with(blobs, metadata);

    std::fs::remove_dir_all(&db_dir).unwrap();
    assert_unready(&ops, "metadata", "blobs").await;
}

/// `/readyz` answers 503 with check `failing` failed (and named first in the reason) and
/// check `fine` still ok.
async fn assert_unready(ops: &axum::Router, failing: &str, fine: &str) {
    let (status, body) = probe(ops, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_ne!(body["checks"][failing], "ok");
    assert_eq!(body["checks"][fine], "ok");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{failing}: ")),
        "{body}"
    );
}

/// The fs store's folder removed under the running registry (a volume unmounted): not
/// ready (the blob store's own tests show its reads failing rather than "not found").
#[tokio::test]
async fn unavailable_when_the_blob_folder_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("blobs");
    let blobs = storage_fs::FsBlobStore::open(&root).unwrap();
    let metadata = metadata_sqlite::SqliteMetadataStore::open_in_memory().unwrap();
    let (_registry, ops) = registry_with(blobs, metadata);
    assert_eq!(probe(&ops, "/readyz").await.0, StatusCode::OK);

    std::fs::remove_dir_all(&root).unwrap();
    assert_unready(&ops, "blobs", "metadata").await;
}
