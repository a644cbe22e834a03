//! Metric names, their labels, and the process-wide Prometheus recorder.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `registry_http_requests_total` | counter | `route`, `method`, `status` |
//! | `registry_http_request_duration_seconds` | histogram | `route`, `method` |
//! | `registry_http_request_bytes_total` | counter | `route` |
//! | `registry_http_response_bytes_total` | counter | `route` |
//! | `registry_store_errors_total` | counter | `route` |
//! | `registry_events_total` | counter | `action`, `target` |
//! | `registry_uploads_open` | gauge | |
//! | `registry_gc_queue_length` | gauge | |
//! | `registry_webhook_deliveries_total` | counter | `outcome` |
//! | `registry_webhook_events_dropped_total` | counter | |
//!
//! `route` is one of `base`, `catalog`, `tags`, `manifest`, `blob`, `upload`,
//! `referrers`, `invalid` (a `/v2/` path with an invalid name or digest) and `other`;
//! `method` is a standard method or `other`. The duration is the time to the response
//! headers (for blob downloads, the body streams afterwards).

use std::sync::OnceLock;
use std::time::Duration;

use http::Method;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::request::ApiRequest;
use crate::route::Route;

/// Counter of requests, by `route`, `method`, `status`.
pub const HTTP_REQUESTS: &str = "registry_http_requests_total";
/// Histogram of the time to the response headers, by `route`, `method`.
pub const HTTP_DURATION: &str = "registry_http_request_duration_seconds";
/// Counter of request body bytes, by `route`.
pub const HTTP_REQUEST_BYTES: &str = "registry_http_request_bytes_total";
/// Counter of response body bytes, by `route`.
pub const HTTP_RESPONSE_BYTES: &str = "registry_http_response_bytes_total";
/// Counter of requests answered with a 5xx status (a store failed, or an internal error),
/// by `route`.
pub const STORE_ERRORS: &str = "registry_store_errors_total";
/// Counter of push, pull and delete events, by `action`, `target`.
pub const EVENTS: &str = "registry_events_total";
/// Gauge of open upload sessions.
pub const UPLOADS_OPEN: &str = "registry_uploads_open";
/// Gauge of garbage collection reviews queued.
pub const GC_QUEUE_LENGTH: &str = "registry_gc_queue_length";
/// Gauge of the bytes a quota's repositories hold, by `pattern`.
pub const QUOTA_USED_BYTES: &str = "registry_quota_used_bytes";
/// Gauge of a quota's limit in bytes, by `pattern`.
pub const QUOTA_LIMIT_BYTES: &str = "registry_quota_limit_bytes";
/// Counter of webhook delivery attempts, by `outcome`.
pub const WEBHOOK_DELIVERIES: &str = "registry_webhook_deliveries_total";
/// Counter of events dropped because the webhook queue was full.
pub const WEBHOOK_DROPPED: &str = "registry_webhook_events_dropped_total";

/// Latency buckets in seconds: from a cached manifest `HEAD` to a slow upload chunk.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// How often buffered histogram samples are drained into the buckets. The exporter
/// queues every recorded duration (about 8 bytes each) until a scrape or an upkeep drains
/// them, so the queue holds one period of requests: at the 70,000 manifest GETs a second
/// of the load benchmark, 5 s of them were about 3 MB of the registry's peak memory.
/// Draining costs the same work however it is split.
const UPKEEP_PERIOD: Duration = Duration::from_secs(1);

/// Installs a Prometheus recorder as the process-wide `metrics` recorder, once, and
/// returns its handle. `None` if the application installed another recorder first (the
/// registry's metrics then go there).
pub fn install_prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), LATENCY_BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    let upkeep = handle.clone();
                    let spawned = std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(UPKEEP_PERIOD);
                                upkeep.run_upkeep();
                            }
                        });
                    if let Err(e) = spawned {
                        tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
                    }
                    Some(handle)
                }
                Err(e) => {
                    tracing::info!(error = %e, "a metrics recorder is already installed; /metrics is off");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS,
        "Requests to the distribution API by route kind, method and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time from request to response headers."
    );
    describe_counter!(
        HTTP_REQUEST_BYTES,
        Unit::Bytes,
        "Request body bytes received."
    );
    describe_counter!(
        HTTP_RESPONSE_BYTES,
        Unit::Bytes,
        "Response body bytes sent."
    );
    describe_counter!(
        STORE_ERRORS,
        "Requests answered with a 5xx status (a store failed, or an internal error)."
    );
    describe_counter!(EVENTS, "Pushes, pulls and deletes of manifests and blobs.");
    describe_gauge!(UPLOADS_OPEN, "Upload sessions open in the metadata store.");
    describe_gauge!(
        GC_QUEUE_LENGTH,
        "Reviews waiting in the garbage collector's queue."
    );
    describe_gauge!(
        QUOTA_USED_BYTES,
        Unit::Bytes,
        "Bytes of the distinct blobs linked in the repositories a quota covers, by pattern."
    );
    describe_gauge!(
        QUOTA_LIMIT_BYTES,
        Unit::Bytes,
        "Each quota's limit, by pattern."
    );
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "Webhook deliveries by outcome (ok, failed after retries)."
    );
    describe_counter!(
        WEBHOOK_DROPPED,
        "Events not sent to webhooks because the queue was full."
    );
}

/// The `route` label of a parsed path.
pub(crate) fn route_label(
    request: &Result<Option<ApiRequest>, crate::RegistryError>,
) -> &'static str {
    let route = match request {
        Ok(Some(request)) => &request.route,
        Ok(None) => return "other",
        Err(_) => return "invalid",
    };
    match route {
        Route::Base => "base",
        Route::Catalog => "catalog",
        Route::Tags(_) => "tags",
        Route::Manifest(..) => "manifest",
        Route::Blob(..) => "blob",
        Route::UploadStart(_) | Route::Upload(..) => "upload",
        Route::Referrers(..) => "referrers",
        Route::Extension(_) => "extension",
    }
}

/// The `method` label: a standard method, or `other` (extension methods are unbounded).
pub(crate) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
