//! Presigned redirects: with redirects on and a store that can sign, large blob downloads
//! are answered with 307 to the signed URL; small ones, HEADs, and stores that cannot sign
//! are served directly.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use futures::stream::BoxStream;
use http::{Method, Request, StatusCode};
use oci_spec_types::Digest;
use registry_core::{RedirectConfig, Registry, RegistryConfig};
use storage_traits::{
    BlobInfo, BlobSigner, BlobStore, ByteStream, GetRange, GetResult, StorageError,
};
use tower::ServiceExt;

/// An fs store that pretends to sign URLs, to observe the registry's decision.
#[derive(Debug)]
struct Signing(storage_fs::FsBlobStore);

#[async_trait]
impl BlobSigner for Signing {
    async fn presigned_get(
        &self,
        digest: &Digest,
        expires_in: Duration,
    ) -> Result<String, StorageError> {
        Ok(format!(
            "http://objects.example/{digest}?expires={}",
            expires_in.as_secs()
        ))
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl BlobStore for Signing {
    async fn stat(&self, d: &Digest) -> Result<Option<BlobInfo>, StorageError> {
        self.0.stat(d).await
    }
    async fn get(&self, d: &Digest, r: Option<GetRange>) -> Result<GetResult, StorageError> {
        self.0.get(d, r).await
    }
    async fn delete(&self, d: &Digest) -> Result<(), StorageError> {
        self.0.delete(d).await
    }
    fn list(&self) -> BoxStream<'static, Result<Digest, StorageError>> {
        self.0.list()
    }
    async fn start_upload(&self, id: &str) -> Result<(), StorageError> {
        self.0.start_upload(id).await
    }
    async fn write_upload(
        &self,
        id: &str,
        offset: u64,
        data: ByteStream,
    ) -> Result<u64, StorageError> {
        self.0.write_upload(id, offset, data).await
    }
    async fn read_upload(&self, id: &str) -> Result<ByteStream, StorageError> {
        self.0.read_upload(id).await
    }
    async fn finish_upload(&self, id: &str, d: &Digest, n: u64) -> Result<(), StorageError> {
        self.0.finish_upload(id, d, n).await
    }
    async fn put_bytes(
        &self,
        id: &str,
        d: &Digest,
        data: bytes::Bytes,
    ) -> Result<(), StorageError> {
        self.0.put_bytes(id, d, data).await
    }
    async fn stage_blob<'a>(
        &'a self,
        blob: storage_traits::StageBlob<'a>,
    ) -> Result<Box<dyn storage_traits::StagedBlob + 'a>, StorageError> {
        self.0.stage_blob(blob).await
    }
    async fn abort_upload(&self, id: &str) -> Result<(), StorageError> {
        self.0.abort_upload(id).await
    }
    fn capabilities(&self) -> storage_traits::BlobCapabilities {
        self.0.capabilities().with_presign(true)
    }
    fn signer(&self) -> Option<&dyn BlobSigner> {
        Some(self)
    }
    fn recovery(&self) -> Option<&dyn storage_traits::RecoveryLog> {
        self.0.recovery()
    }
}

async fn call(
    router: &axum::Router,
    method: Method,
    uri: &str,
    body: Vec<u8>,
) -> http::Response<Body> {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body))
        .unwrap();
    router.clone().oneshot(req).await.unwrap()
}

#[tokio::test]
async fn large_blobs_redirect_small_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Signing(storage_fs::FsBlobStore::open(dir.path().join("blobs")).unwrap());
    let metadata = metadata_sqlite::SqliteMetadataStore::open(dir.path().join("db")).unwrap();
    let config = RegistryConfig::default()
        .with_redirect(Some(RedirectConfig::new(1000, Duration::from_secs(60))));
    let router = Registry::new(Arc::new(blobs), Arc::new(metadata), config).router();

    let big = vec![7u8; 5000];
    let small = vec![8u8; 10];
    for data in [&big, &small] {
        let d = Digest::sha256_of(data);
        let res = call(
            &router,
            Method::POST,
            &format!("/v2/r/blobs/uploads/?digest={d}"),
            data.clone(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let big_d = Digest::sha256_of(&big);
    let res = call(
        &router,
        Method::GET,
        &format!("/v2/r/blobs/{big_d}"),
        vec![],
    )
    .await;
    assert_eq!(res.status(), StatusCode::TEMPORARY_REDIRECT);
    let loc = res.headers()["Location"].to_str().unwrap();
    assert_eq!(loc, format!("http://objects.example/{big_d}?expires=60"));
    let res = call(
        &router,
        Method::HEAD,
        &format!("/v2/r/blobs/{big_d}"),
        vec![],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let small_d = Digest::sha256_of(&small);
    let res = call(
        &router,
        Method::GET,
        &format!("/v2/r/blobs/{small_d}"),
        vec![],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    // Unknown blobs are still 404, never a redirect to nothing.
    let res = call(
        &router,
        Method::GET,
        &format!("/v2/r/blobs/{}", Digest::sha256_of(b"none")),
        vec![],
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}
