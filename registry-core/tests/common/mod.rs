//! An in-process registry on a temporary folder (fs blobs + SQLite metadata), driven
//! through the router with `tower::ServiceExt::oneshot`: no sockets, real stores.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use oci_spec_types::Digest;
use registry_core::{Registry, RegistryConfig};
use tower::ServiceExt;

pub mod s3;

pub struct TestRegistry {
    pub registry: Registry,
    pub router: axum::Router,
    pub dir: tempfile::TempDir,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `errors[0].code` of an error body.
    pub fn code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        v["errors"][0]["code"].as_str().unwrap_or("").to_string()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

impl TestRegistry {
    pub async fn new() -> TestRegistry {
        Self::with_config(RegistryConfig::default()).await
    }

    pub async fn with_config(config: RegistryConfig) -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        Self::open(dir, config).await
    }

    /// Opens (or re-opens, after a simulated restart) the stores in `dir`.
    pub async fn open(dir: tempfile::TempDir, config: RegistryConfig) -> TestRegistry {
        let blobs = storage_fs::FsBlobStore::open(dir.path().join("blobs")).unwrap();
        let metadata =
            metadata_sqlite::SqliteMetadataStore::open(dir.path().join("registry.db")).unwrap();
        let registry = Registry::new(Arc::new(blobs), Arc::new(metadata), config);
        let router = registry.router();
        TestRegistry {
            registry,
            router,
            dir,
        }
    }

    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = self
            .router
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.send(Method::GET, uri, &[], Body::empty()).await
    }

    /// Monolithic push of a blob; asserts 201.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let digest = Digest::sha256_of(data);
        let r = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                &[("Content-Type", "application/octet-stream")],
                Body::from(data.to_vec()),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "push blob: {:?}", r.body);
        digest
    }

    /// Opens an upload session and returns its Location.
    pub async fn open_upload(&self, repo: &str) -> String {
        let r = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        r.header("Location").unwrap().to_string()
    }

    /// Pushes an image manifest with a config and the given layers; returns its digest.
    pub async fn push_image(&self, repo: &str, tag: &str, layers: &[&[u8]]) -> (Digest, Vec<u8>) {
        let config = format!(
            "{{\"architecture\":\"amd64\",\"tag\":\"{tag}\",\"n\":{}}}",
            layers.len()
        );
        let config_digest = self.push_blob(repo, config.as_bytes()).await;
        let mut descs = Vec::new();
        for l in layers {
            let d = self.push_blob(repo, l).await;
            descs.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": d.to_string(),
                "size": l.len(),
            }));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest.to_string(),
                "size": config.len(),
            },
            "layers": descs,
        });
        let bytes = serde_json::to_vec_pretty(&manifest).unwrap();
        let r = self.put_manifest(repo, tag, &bytes).await;
        assert_eq!(r.status, StatusCode::CREATED, "push manifest: {:?}", r.body);
        (Digest::sha256_of(&bytes), bytes)
    }

    pub async fn put_manifest(&self, repo: &str, reference: &str, bytes: &[u8]) -> Reply {
        self.send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            Body::from(bytes.to_vec()),
        )
        .await
    }
}

/// Deterministic pseudo-random bytes (no timing or RNG flakiness in assertions).
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
