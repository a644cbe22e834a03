//! Operations: liveness and readiness probes, Prometheus metrics, push/pull events as
//! structured log lines, and webhook notifications.
//!
//! - [`Registry::ops_router`] serves `GET /healthz` (the process answers: always `200`),
//!   `GET /readyz` (the stores answer: `200`, or `503` with a JSON reason) and
//!   `GET /metrics` (Prometheus text format). It is a separate router, outside
//!   authentication, so that a load balancer or Prometheus can reach it without
//!   credentials; merge it next to [`Registry::router`] or serve it on another port.
//! - [`Registry::router`] measures every request with a middleware of this module:
//!   counts by route kind and status, latency, bytes in and out, 5xx answers. The route
//!   kind is derived from [`crate::route::Route::parse`], never the raw path, so label
//!   cardinality stays bounded whatever clients send.
//! - The same middleware turns completed exchanges into [`RegistryEvent`]s (manifest
//!   `PUT` 201 is a push, manifest or blob `GET` is a pull, `DELETE` 202 is a delete),
//!   logs each at target `registry::events`, and attaches pushes and deletes to the
//!   response's extensions, where an outer layer such as [`webhook::middleware`] finds
//!   them.
//!
//! Metrics go through the [`metrics`](https://docs.rs/metrics) facade: a library records,
//! the application chooses the recorder. [`metrics::install_prometheus`] (called by
//! `ops_router`) installs a Prometheus recorder process-wide if the application has not
//! installed one of its own; with its own recorder, the registry's metrics land there and
//! `/metrics` answers `404`. The gauges read from the stores (upload sessions, GC queue)
//! are refreshed at scrape time by `/metrics`, or by [`Registry::refresh_store_gauges`].
//!
//! ```no_run
//! # async fn demo(registry: registry_core::Registry) {
//! let app = registry.router().merge(registry.ops_router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```

pub mod events;
pub mod metrics;
pub(crate) mod middleware;
pub mod webhook;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use oci_spec_types::{Digest, RepositoryName};
use storage_traits::{ByteStream, Page, StorageError, UploadSession};

pub use events::{Action, RegistryEvent};

use crate::clock::now_ms;
use crate::{Inner, Registry};

/// How long one readiness check may take before the store counts as unavailable.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a successful write probe of [`Registry::readiness`] is trusted.
pub const WRITE_PROBE_TTL: Duration = Duration::from_secs(5);

/// Upload ids of the write probe start with this, so a leftover is recognisable.
const PROBE_ID_PREFIX: &str = "readyz-probe-";

/// The bytes the write probe writes to the blob store.
const PROBE_BYTES: &[u8] = b"readyz";

/// The answer of the readiness checks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Readiness {
    /// Each check by name (`metadata`, `blobs`): `Ok(())` or why it failed.
    pub checks: BTreeMap<&'static str, Result<(), String>>,
}

impl Readiness {
    /// Whether every check passed.
    pub fn is_ready(&self) -> bool {
        self.checks.values().all(Result::is_ok)
    }

    /// `{"status":"ready"|"unavailable","checks":{"metadata":"ok",...},"reason":"..."}`
    pub fn to_json(&self) -> serde_json::Value {
        let checks: serde_json::Map<String, serde_json::Value> = self
            .checks
            .iter()
            .map(|(name, r)| {
                let v = match r {
                    Ok(()) => "ok".to_string(),
                    Err(e) => e.clone(),
                };
                ((*name).to_string(), serde_json::Value::String(v))
            })
            .collect();
        let mut body = serde_json::json!({
            "status": if self.is_ready() { "ready" } else { "unavailable" },
            "checks": checks,
        });
        let failed: Vec<String> = self
            .checks
            .iter()
            .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}")))
            .collect();
        if !failed.is_empty() {
            body["reason"] = serde_json::Value::String(failed.join("; "));
        }
        body
    }
}

impl Registry {
    /// `/healthz`, `/readyz` and `/metrics` (see the [module docs](self)). Not behind
    /// authentication: merge it into the public router only if that is what you want,
    /// or serve it on an internal port.
    pub fn ops_router(&self) -> axum::Router {
        metrics::install_prometheus();
        axum::Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_endpoint))
            .with_state(self.clone())
    }

    /// Checks that both stores answer and accept writes. Each check has a time limit of
    /// 5 s per step.
    ///
    /// - Reads: a one-row repository listing of the metadata store, a `stat` of a fixed
    ///   digest in the blob store (whether it exists does not matter).
    /// - Writes (a full disk fails every push while reads still work): the blob store
    ///   starts an upload session, writes a few bytes to it and aborts it; the metadata
    ///   store creates and deletes an upload session record in the repository the listing
    ///   returned. Both use one id, `readyz-probe-<random>`, and the record is created
    ///   first, so if the probe dies half way the ordinary upload expiry removes both.
    ///   The metadata store has nothing to write while it holds no repository: a record
    ///   would bring one into existence, and the catalog would list it.
    ///
    /// The write probe runs at most once per [`WRITE_PROBE_TTL`] while it succeeds: it
    /// costs real writes (an fsync on SQLite and fs, several requests on S3) and `/readyz`
    /// is unauthenticated, so without the limit anyone could make the registry write at
    /// will. A failed probe is not remembered, so a store that recovers is ready at the
    /// next check; calls arriving while a probe runs wait for its result instead of
    /// starting their own.
    pub async fn readiness(&self) -> Readiness {
        let metadata = async {
            let page = Page::new(None, Some(1));
            match tokio::time::timeout(CHECK_TIMEOUT, self.inner.metadata.list_repositories(&page))
                .await
            {
                Ok(Ok(repos)) => Ok(repos.into_iter().next()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
            }
        };
        let blobs = async {
            let probe = Digest::sha256_of(b"");
            match tokio::time::timeout(CHECK_TIMEOUT, self.inner.blobs.stat(&probe)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
            }
        };
        let (metadata, blobs) = tokio::join!(metadata, blobs);
        let (metadata, blobs) = match (metadata, blobs) {
            (Ok(repo), Ok(())) => {
                let written = probe_writes_cached(&self.inner, repo).await;
                (written.metadata, written.blobs)
            }
            (metadata, blobs) => (metadata.map(drop), blobs),
        };
        let checks = BTreeMap::from([("metadata", metadata), ("blobs", blobs)]);
        for (name, result) in &checks {
            if let Err(e) = result {
                tracing::warn!(check = name, error = %e, "readiness check failed");
            }
        }
        Readiness { checks }
    }

    /// Sets the gauges that come from the stores: open upload sessions
    /// (`registry_uploads_open`), the GC review queue (`registry_gc_queue_length`) and
    /// each quota's usage and limit (`registry_quota_used_bytes{pattern}`,
    /// `registry_quota_limit_bytes{pattern}`).
    /// `/metrics` calls this before each scrape; call it yourself if you export the
    /// metrics another way. A store that fails leaves the gauge at its last value.
    pub async fn refresh_store_gauges(&self) {
        match self.inner.metadata.count_uploads().await {
            Ok(n) => ::metrics::gauge!(metrics::UPLOADS_OPEN).set(n as f64),
            Err(e) => tracing::warn!(error = %e, "cannot count upload sessions for metrics"),
        }
        if let Some(gc) = self.inner.metadata.gc() {
            match gc.queue_length().await {
                Ok(n) => ::metrics::gauge!(metrics::GC_QUEUE_LENGTH).set(n as f64),
                Err(e) => tracing::warn!(error = %e, "cannot read the gc queue length"),
            }
        }
        let quotas = &self.inner.config.quotas;
        if let (false, Some(store)) = (quotas.is_empty(), self.inner.metadata.quotas()) {
            match store.quota_usage(quotas.as_slice()).await {
                Ok(usage) => {
                    for u in usage {
                        let pattern = u.pattern;
                        ::metrics::gauge!(metrics::QUOTA_USED_BYTES, "pattern" => pattern.clone())
                            .set(u.used as f64);
                        ::metrics::gauge!(metrics::QUOTA_LIMIT_BYTES, "pattern" => pattern)
                            .set(u.limit as f64);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read quota usage for metrics"),
            }
        }
    }
}

/// What one write probe found, store by store.
#[derive(Debug, Clone)]
pub(crate) struct WriteProbe {
    metadata: Result<(), String>,
    blobs: Result<(), String>,
    finished: Instant,
}

impl WriteProbe {
    fn passed(&self) -> bool {
        self.metadata.is_ok() && self.blobs.is_ok()
    }
}

/// The last write probe of one registry, behind an async lock held while a probe runs.
/// Kept in the registry's state.
pub(crate) type ProbeSlot = tokio::sync::Mutex<Option<WriteProbe>>;

/// The write probe's result: the last one if it passed less than [`WRITE_PROBE_TTL`] ago
/// or finished while this call waited for it, a new one otherwise.
async fn probe_writes_cached(inner: &Inner, repository: Option<RepositoryName>) -> WriteProbe {
    let asked = Instant::now();
    let mut last = inner.write_probe.lock().await;
    if let Some(probe) = last.as_ref()
        && (probe.finished >= asked
            || (probe.passed() && probe.finished.elapsed() < WRITE_PROBE_TTL))
    {
        return probe.clone();
    }
    let probe = probe_writes(inner, repository).await;
    *last = Some(probe.clone());
    probe
}

/// Writes to both stores and removes what it wrote (see [`Registry::readiness`]).
async fn probe_writes(inner: &Inner, repository: Option<RepositoryName>) -> WriteProbe {
    let id = format!("{PROBE_ID_PREFIX}{}", uuid::Uuid::new_v4().simple());
    let metadata = inner.metadata.as_ref();
    let blobs = inner.blobs.as_ref();
    let recorded = match repository {
        Some(repo) => {
            let session = UploadSession::new(id.clone(), repo, now_ms());
            Some(within_limit(metadata.create_upload(&session)).await)
        }
        None => None,
    };
    let wrote = within_limit(async {
        blobs.start_upload(&id).await?;
        let data: ByteStream = Box::pin(futures::stream::once(async {
            Ok(Bytes::from_static(PROBE_BYTES))
        }));
        let len = blobs.write_upload(&id, 0, data).await?;
        if len != PROBE_BYTES.len() as u64 {
            let e = format!("wrote {} bytes, the session holds {len}", PROBE_BYTES.len());
            return Err(StorageError::backend("readiness probe", e));
        }
        Ok(())
    })
    .await;
    // Aborted whatever happened above: a session the probe started must not stay.
    let aborted = within_limit(blobs.abort_upload(&id)).await;
    let blobs = wrote.and(aborted).map_err(|e| format!("cannot write: {e}"));
    let metadata = match recorded {
        None => Ok(()),
        Some(Err(e)) => Err(format!("cannot write: {e}")),
        Some(Ok(())) => within_limit(metadata.delete_upload(&id))
            .await
            .map(drop)
            .map_err(|e| format!("cannot write: {e}")),
    };
    WriteProbe {
        metadata,
        blobs,
        finished: Instant::now(),
    }
}

/// `fut` with [`CHECK_TIMEOUT`] as its limit; running out is an error like any other.
async fn within_limit<T, E: std::fmt::Display>(
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CHECK_TIMEOUT, fut).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
    }
}

async fn healthz() -> Response {
    json(StatusCode::OK, serde_json::json!({ "status": "alive" }))
}

async fn readyz(State(registry): State<Registry>) -> Response {
    let readiness = registry.readiness().await;
    let status = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, readiness.to_json())
}

async fn metrics_endpoint(State(registry): State<Registry>) -> Response {
    let Some(handle) = metrics::install_prometheus() else {
        return (
            StatusCode::NOT_FOUND,
            "metrics go to the application's own recorder\n",
        )
            .into_response();
    };
    registry.refresh_store_gauges().await;
    let mut res = handle.render().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    let mut res = (status, body.to_string()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
