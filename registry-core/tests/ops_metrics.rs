//! `/metrics`: request counters by route kind and status grow with requests, bytes in and
//! out are counted, 5xx answers are counted, and the store gauges (upload sessions, GC
//! queue) are read at scrape time. One test: the recorder is process-wide.

#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn scrape(ops: &axum::Router) -> String {
    let req = Request::get("/metrics").body(Body::empty()).unwrap();
    let res = ops.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// The sum of the samples of `name` whose labels include every `labels` pair.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| v.parse::<f64>().unwrap())
        })
        .sum()
}

#[tokio::test]
async fn counters_histograms_and_gauges() {
    let t = common::TestRegistry::new().await;
    let ops = t.registry.ops_router();
    let before = scrape(&ops).await;

    assert_eq!(t.get("/v2/").await.status, StatusCode::OK);
    let layer = common::data(1, 3000);
    let (digest, manifest) = t.push_image("ops/metrics", "v1", &[&layer]).await;
    let r = t.get("/v2/ops/metrics/manifests/v1").await;
    assert_eq!(r.status, StatusCode::OK);
    let layer_digest = oci_spec_types::Digest::sha256_of(&layer);
    let r = t
        .get(&format!("/v2/ops/metrics/blobs/{layer_digest}"))
        .await;
    assert_eq!(r.body.len(), layer.len());
    assert_eq!(
        t.get("/v2/ops/metrics/manifests/nope").await.status,
        StatusCode::NOT_FOUND
    );
    // An open upload session, and a path that is not a valid name (label `invalid`,
    // never the path itself).
    let _session = t.open_upload("ops/metrics").await;
    assert_eq!(
        t.get("/v2/Not..Valid/tags/list").await.status,
        StatusCode::BAD_REQUEST
    );
    // Deleting the manifest queues reviews for the collector.
    let r = t
        .send(
            Method::DELETE,
            &format!("/v2/ops/metrics/manifests/{digest}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);

    let after = scrape(&ops).await;
    let grew = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let requests = "registry_http_requests_total";
    assert!(
        grew(
            requests,
            &[("route", "base"), ("method", "GET"), ("status", "200")]
        ) >= 1.0
    );
    assert!(
        grew(
            requests,
            &[("route", "manifest"), ("method", "PUT"), ("status", "201")]
        ) >= 1.0
    );
    assert!(
        grew(
            requests,
            &[("route", "manifest"), ("method", "GET"), ("status", "200")]
        ) >= 1.0
    );
    assert!(grew(requests, &[("route", "manifest"), ("status", "404")]) >= 1.0);
    assert!(
        grew(
            requests,
            &[("route", "blob"), ("method", "GET"), ("status", "200")]
        ) >= 1.0
    );
    assert!(
        grew(
            requests,
            &[("route", "upload"), ("method", "POST"), ("status", "201")]
        ) >= 2.0
    );
    assert!(grew(requests, &[("route", "upload"), ("status", "202")]) >= 1.0);
    assert!(grew(requests, &[("route", "invalid"), ("status", "400")]) >= 1.0);
    assert!(
        grew(
            requests,
            &[
                ("route", "manifest"),
                ("method", "DELETE"),
                ("status", "202")
            ]
        ) >= 1.0
    );
    assert!(
        !after.contains("Not..Valid") && !after.contains("ops/metrics"),
        "paths must not become labels"
    );

    assert!(
        grew(
            "registry_http_request_bytes_total",
            &[("route", "manifest")]
        ) >= manifest.len() as f64
    );
    assert!(
        grew("registry_http_request_bytes_total", &[("route", "upload")]) >= layer.len() as f64
    );
    assert!(grew("registry_http_response_bytes_total", &[("route", "blob")]) >= layer.len() as f64);
    assert!(
        grew(
            "registry_http_request_duration_seconds_count",
            &[("route", "manifest"), ("method", "PUT")]
        ) >= 1.0
    );
    assert!(after.contains("registry_http_request_duration_seconds_bucket{"));
    assert!(
        grew(
            "registry_events_total",
            &[("action", "push"), ("target", "manifest")]
        ) >= 1.0
    );
    assert!(
        grew(
            "registry_events_total",
            &[("action", "pull"), ("target", "blob")]
        ) >= 1.0
    );
    assert!(
        grew(
            "registry_events_total",
            &[("action", "delete"), ("target", "manifest")]
        ) >= 1.0
    );

    // Gauges from the stores, at scrape time.
    assert!(
        value(&after, "registry_uploads_open", &[]) >= 1.0,
        "{after}"
    );
    let gc = t.registry_gc_queue().await;
    assert!(gc >= 1, "deleting a manifest queues reviews");
    assert_eq!(value(&after, "registry_gc_queue_length", &[]), gc as f64);
    assert!(after.contains("# TYPE registry_gc_queue_length gauge"));
}

trait GcQueue {
    async fn registry_gc_queue(&self) -> u64;
}

impl GcQueue for common::TestRegistry {
    async fn registry_gc_queue(&self) -> u64 {
        let metadata =
            metadata_sqlite::SqliteMetadataStore::open(self.dir.path().join("registry.db"))
                .unwrap();
        use storage_traits::MetadataStore;
        metadata.gc().unwrap().queue_length().await.unwrap()
    }
}
