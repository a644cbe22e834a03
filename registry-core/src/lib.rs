//! The OCI Distribution Spec v1.1 HTTP API as an embeddable service.
//!
//! (Being written: the public API below is the stable surface.)

use std::sync::Arc;
use std::time::Duration;

use storage_traits::{BlobStore, MetadataStore};

/// Settings of the HTTP API.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RegistryConfig {
    /// Upload sessions idle for longer than this are aborted and their bytes reclaimed.
    pub upload_expiry: Duration,
    /// Largest manifest accepted, in bytes.
    pub max_manifest_size: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            upload_expiry: Duration::from_secs(24 * 3600),
            max_manifest_size: oci_spec_types::manifest::MAX_MANIFEST_SIZE,
        }
    }
}

/// A registry: a blob store, a metadata store and settings. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    #[allow(dead_code)]
    blobs: Arc<dyn BlobStore>,
    #[allow(dead_code)]
    metadata: Arc<dyn MetadataStore>,
    #[allow(dead_code)]
    config: RegistryConfig,
}

impl Registry {
    pub fn new(blobs: Arc<dyn BlobStore>, metadata: Arc<dyn MetadataStore>, config: RegistryConfig) -> Self {
        Registry {
            inner: Arc::new(Inner {
                blobs,
                metadata,
                config,
            }),
        }
    }

    /// The API as an axum `Router` serving `/v2/` and everything below it. Merge it into
    /// your own router (`Router::merge`), or serve it directly: it is a `Clone`
    /// `tower::Service` whose error type is `Infallible`.
    pub fn router(&self) -> axum::Router {
        let _ = &self.inner;
        axum::Router::new()
    }

    /// Aborts upload sessions idle for longer than `upload_expiry`; returns how many.
    pub async fn reap_expired_uploads(&self) -> usize {
        0
    }

    /// Starts the background maintenance task (upload expiry) on the current runtime.
    pub fn spawn_maintenance(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async {})
    }
}
