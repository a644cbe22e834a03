//! The OCI Distribution Spec v1.1 HTTP API as an embeddable service.
//!
//! A [`Registry`] is built from any [`BlobStore`] and [`MetadataStore`] and hands out an
//! axum [`Router`](axum::Router): a `Clone` `tower::Service` with `Error = Infallible` that
//! serves `/v2/` and everything below it. Merge it into your own application and add your
//! own layers (auth, limits, tracing) around it.
//!
//! ```no_run
//! # async fn demo(blobs: std::sync::Arc<dyn storage_traits::BlobStore>,
//! #               metadata: std::sync::Arc<dyn storage_traits::MetadataStore>) {
//! use registry_core::{Registry, RegistryConfig};
//!
//! let registry = Registry::new(blobs, metadata, RegistryConfig::default());
//! let _maintenance = registry.spawn_maintenance();
//! let app = axum::Router::new()
//!     .route("/hello", axum::routing::get(|| async { "hi" }))
//!     .merge(registry.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```
//!
//! What it implements: the `/v2/` check; blob `GET`/`HEAD` (with `Range`) and `DELETE`;
//! uploads (session, monolithic, streamed, chunked with `Content-Range`, cross-repository
//! mount); manifests by tag and digest (bytes kept exactly, references checked, `OCI-Subject`);
//! tag deletion; `tags/list` and `_catalog` with `n`/`last` and `Link`; the referrers API
//! with `artifactType` filtering. Errors are the spec's codes ([`error`]).

#![warn(missing_docs)]

pub mod auth;
mod clock;
pub mod error;
mod exchange;
pub mod gc;
mod handlers;
pub mod import;
pub mod mirror;
pub mod ops;
pub mod policy;
pub mod proxy;
mod pulls;
pub mod quotas;
pub mod ratelimit;
mod recovery;
pub mod request;
pub mod retention;
pub mod route;
pub mod ui;
pub mod upload;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::any;
use storage_traits::{BlobStore, MetadataStore};

pub use error::RegistryError;
pub use gc::{GcConfig, GcReport};
pub use policy::Policy;

/// Settings of the HTTP API.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RegistryConfig {
    /// Upload sessions idle for longer than this are aborted and their bytes reclaimed.
    pub upload_expiry: Duration,
    /// Most upload sessions open at once (`None`: no limit). Past it, starting one is
    /// `429 TOOMANYREQUESTS`, so abandoned sessions cannot pile up faster than they
    /// expire.
    pub max_open_uploads: Option<u64>,
    /// Largest manifest accepted, in bytes (at most 4 MiB, the spec's recommendation).
    pub max_manifest_size: usize,
    /// Answer blob `GET`s with a redirect to a presigned URL, when the blob store can
    /// sign. Off by default.
    pub redirect: Option<RedirectConfig>,
    /// Who is calling ([`auth::Anonymous`] by default: no authentication).
    pub authenticator: Arc<dyn auth::Authenticator>,
    /// What callers may do ([`auth::AllowAll`] by default).
    pub authorizer: Arc<dyn auth::Authorizer>,
    /// Read-only mode, immutable tags, blob size limit (none by default).
    pub policy: Policy,
    /// Upstream registries served as pull-through caches (none by default).
    pub proxy: proxy::ProxyConfig,
    /// How often the maintenance task writes the pulls tallied in memory to the
    /// metadata store (5 s by default). Pull figures lag by at most this much.
    pub pull_flush_interval: Duration,
    /// Count manifest pulls per repository and manifest (on by default, when the
    /// metadata store keeps pull figures). Off, nothing is tallied and the stored figures
    /// stop moving: retention's `not_pulled_for` and cache eviction then see old pulls.
    pub pull_counts: bool,
    /// Pulls and writes allowed per user or client address ([`ratelimit`]; none by
    /// default).
    pub rate_limits: ratelimit::RateLimits,
    /// Byte limits per repository pattern ([`quotas`]; none by default).
    pub quotas: quotas::Quotas,
}

/// When to send clients straight to object storage for a blob download.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedirectConfig {
    /// Blobs smaller than this are served by the registry itself: a redirect costs the
    /// client a second round trip, which only pays off for large blobs.
    pub min_size: u64,
    /// How long a presigned URL stays valid.
    pub expires_in: Duration,
}

impl RedirectConfig {
    /// Redirects downloads of blobs of at least `min_size` bytes, with URLs valid for
    /// `expires_in`.
    pub fn new(min_size: u64, expires_in: Duration) -> Self {
        RedirectConfig {
            min_size,
            expires_in,
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            upload_expiry: Duration::from_secs(24 * 3600),
            max_open_uploads: None,
            max_manifest_size: oci_spec_types::manifest::MAX_MANIFEST_SIZE,
            redirect: None,
            authenticator: Arc::new(auth::Anonymous),
            authorizer: Arc::new(auth::AllowAll),
            policy: Policy::default(),
            proxy: proxy::ProxyConfig::default(),
            pull_flush_interval: Duration::from_secs(5),
            pull_counts: true,
            rate_limits: ratelimit::RateLimits::default(),
            quotas: quotas::Quotas::default(),
        }
    }
}

impl RegistryConfig {
    /// Sets [`RegistryConfig::upload_expiry`].
    pub fn with_upload_expiry(mut self, expiry: Duration) -> Self {
        self.upload_expiry = expiry;
        self
    }

    /// Sets [`RegistryConfig::max_open_uploads`].
    pub fn with_max_open_uploads(mut self, limit: Option<u64>) -> Self {
        self.max_open_uploads = limit;
        self
    }

    /// Sets [`RegistryConfig::redirect`].
    pub fn with_redirect(mut self, redirect: Option<RedirectConfig>) -> Self {
        self.redirect = redirect;
        self
    }

    /// Sets [`RegistryConfig::authenticator`].
    pub fn with_authenticator(mut self, authenticator: Arc<dyn auth::Authenticator>) -> Self {
        self.authenticator = authenticator;
        self
    }

    /// Sets [`RegistryConfig::authorizer`].
    pub fn with_authorizer(mut self, authorizer: Arc<dyn auth::Authorizer>) -> Self {
        self.authorizer = authorizer;
        self
    }

    /// Sets [`RegistryConfig::proxy`].
    pub fn with_proxy(mut self, proxy: proxy::ProxyConfig) -> Self {
        self.proxy = proxy;
        self
    }

    /// Sets [`RegistryConfig::pull_flush_interval`].
    pub fn with_pull_flush_interval(mut self, every: Duration) -> Self {
        self.pull_flush_interval = every;
        self
    }

    /// Sets [`RegistryConfig::pull_counts`].
    pub fn with_pull_counts(mut self, on: bool) -> Self {
        self.pull_counts = on;
        self
    }

    /// Sets [`RegistryConfig::policy`].
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets [`RegistryConfig::rate_limits`].
    pub fn with_rate_limits(mut self, limits: ratelimit::RateLimits) -> Self {
        self.rate_limits = limits;
        self
    }

    /// Sets [`RegistryConfig::quotas`].
    pub fn with_quotas(mut self, quotas: quotas::Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    /// Sets [`RegistryConfig::max_manifest_size`], capped at 4 MiB.
    pub fn with_max_manifest_size(mut self, bytes: usize) -> Self {
        self.max_manifest_size = bytes.min(oci_spec_types::manifest::MAX_MANIFEST_SIZE);
        self
    }
}

/// A registry: a blob store, a metadata store and settings. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) metadata: Arc<dyn MetadataStore>,
    pub(crate) config: RegistryConfig,
    pub(crate) sessions: upload::claims::Claims,
    pub(crate) recovery: recovery::RecoveryWriter,
    pub(crate) write_probe: ops::ProbeSlot,
    /// The pull-through cache, when upstreams are configured.
    pub(crate) proxy: Option<proxy::Proxy>,
    /// Manifest pulls not yet written to the metadata store.
    pub(crate) pulls: pulls::PullTally,
    /// The callers' budgets of pulls and writes.
    pub(crate) rate_limits: ratelimit::Limiters,
}

impl Registry {
    /// A registry over these stores with these settings; [`Registry::spawn_maintenance`]
    /// starts its background work.
    pub fn new(
        blobs: Arc<dyn BlobStore>,
        metadata: Arc<dyn MetadataStore>,
        config: RegistryConfig,
    ) -> Self {
        let proxy = proxy::Proxy::new(&config.proxy);
        let pulls = pulls::PullTally::new(config.pull_counts && metadata.pulls().is_some());
        let rate_limits = ratelimit::Limiters::new(&config.rate_limits);
        Registry {
            inner: Arc::new(Inner {
                recovery: recovery::RecoveryWriter::new(Arc::clone(&blobs), Arc::clone(&metadata)),
                blobs,
                metadata,
                config,
                sessions: upload::claims::Claims::default(),
                write_probe: ops::ProbeSlot::default(),
                proxy,
                pulls,
                rate_limits,
            }),
        }
    }

    /// The API as an axum `Router` serving `/v2/` and everything below it. Merge it into
    /// your own router (`Router::merge`), or serve it directly: it is a `Clone`
    /// `tower::Service` whose error type is `Infallible`.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/v2", any(handlers::dispatch))
            .route("/v2/", any(handlers::dispatch))
            .route("/v2/{*path}", any(handlers::dispatch))
            // Authentication, authorisation and request-level policies, before any
            // handler runs (see `auth`).
            .route_layer(axum::middleware::from_fn_with_state(
                self.inner.clone(),
                auth::layer::middleware,
            ))
            // Outermost: each request decoded once, into the value every layer reads.
            .layer(axum::middleware::from_fn_with_state(
                self.inner.clone(),
                ops::middleware::edge,
            ))
            .with_state(self.inner.clone())
    }

    /// Aborts upload sessions idle for longer than `upload_expiry` and reclaims their
    /// bytes; returns how many were removed.
    pub async fn reap_expired_uploads(&self) -> Result<usize, RegistryError> {
        let expiry_ms =
            i64::try_from(self.inner.config.upload_expiry.as_millis()).unwrap_or(i64::MAX);
        let cutoff = clock::now_ms().saturating_sub(expiry_ms);
        let stale = self.inner.metadata.stale_uploads(cutoff).await?;
        let mut removed = 0;
        for session in stale {
            // A session with a request in flight is not idle, whatever its timestamp says.
            let Ok(_guard) = self.inner.sessions.claim(&session.id) else {
                continue;
            };
            self.inner.blobs.abort_upload(&session.id).await?;
            if self.inner.metadata.delete_upload(&session.id).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Applies the pull-through cache's policy once (`cache_ttl`, `cache_max_bytes`; see
    /// [`proxy`]): evicts cached images, whose blobs garbage collection then frees. Pull
    /// figures are written first, so the policy sees the latest pulls.
    pub async fn evict_cache(&self) -> Result<proxy::EvictionReport, RegistryError> {
        if self.inner.proxy.is_none() {
            return Ok(proxy::EvictionReport::default());
        }
        self.flush_pulls().await?;
        proxy::evict(&self.inner).await
    }

    /// Starts the background maintenance task (upload expiry, and writing the tallied
    /// pulls to the metadata store) on the current runtime. It runs until the returned
    /// handle is aborted or the runtime shuts down; call [`Registry::flush_pulls`] after
    /// aborting it to keep the last few seconds of pulls.
    pub fn spawn_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let registry = self.clone();
        let period = (self.inner.config.upload_expiry / 4)
            .clamp(Duration::from_secs(1), Duration::from_secs(300));
        let flush_period = self
            .inner
            .config
            .pull_flush_interval
            .max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            let mut flush = tokio::time::interval(flush_period);
            flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        match registry.reap_expired_uploads().await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(removed = n, "expired upload sessions removed"),
                            Err(e) => tracing::warn!(error = %e, "upload expiry failed"),
                        }
                        if let Err(e) = registry.evict_cache().await {
                            tracing::warn!(error = %e, "pull-through cache eviction failed");
                        }
                    }
                    _ = flush.tick() => {
                        if let Err(e) = registry.flush_pulls().await {
                            tracing::warn!(error = %e, "writing pull counts failed; kept for the next flush");
                        }
                    }
                }
            }
        })
    }
}
