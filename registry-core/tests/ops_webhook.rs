//! Webhooks: a receiver (a small axum server) gets push and delete events in
//! distribution's envelope, and the sender retries after a 500.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use http::{HeaderMap, Method, StatusCode};
use registry_core::ops::webhook::{self, Notifier, WebhookConfig};

#[derive(Default)]
struct Received {
    /// Every request, including the ones answered 500.
    attempts: Vec<(String, serde_json::Value)>,
}

async fn receiver() -> (String, Arc<Mutex<Received>>) {
    let state = Arc::new(Mutex::new(Received::default()));
    let s = state.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let s = s.clone();
            async move {
                let ct = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                let mut s = s.lock().unwrap();
                s.attempts.push((ct, json));
                // The first delivery fails: the sender must try again.
                if s.attempts.len() == 1 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), state)
}

/// The events of every successful delivery, in order.
fn delivered(state: &Mutex<Received>) -> Vec<serde_json::Value> {
    let s = state.lock().unwrap();
    s.attempts
        .iter()
        .skip(1)
        .flat_map(|(_, env)| env["events"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn push_and_delete_reach_the_webhook_after_a_retry() {
    let (url, state) = receiver().await;
    let config = WebhookConfig::new(vec![url.parse().unwrap()])
        .with_timeout(Duration::from_secs(5))
        .with_max_retries(5);
    let (notifier, _sender) = Notifier::spawn(config).unwrap();
    let mut t = common::TestRegistry::new().await;
    t.router = t
        .registry
        .router()
        .layer(axum::middleware::from_fn_with_state(
            notifier,
            webhook::middleware,
        ));

    let (digest, manifest) = t.push_image("hooks/app", "1.0", &[b"layer one"]).await;
    assert_eq!(
        t.get("/v2/hooks/app/manifests/1.0").await.status,
        StatusCode::OK
    );
    let r = t
        .send(
            Method::DELETE,
            &format!("/v2/hooks/app/manifests/{digest}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);

    let manifest_events = |events: &[serde_json::Value]| -> Vec<serde_json::Value> {
        events
            .iter()
            .filter(|e| {
                e["target"]["mediaType"] != "application/octet-stream" || e["action"] == "delete"
            })
            .cloned()
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let events = loop {
        let events = manifest_events(&delivered(&state));
        if events.iter().any(|e| e["action"] == "delete") {
            break events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delete event within 30 s; got {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    {
        let s = state.lock().unwrap();
        assert!(s.attempts.len() >= 2);
        // The retry sent the envelope that failed.
        assert_eq!(s.attempts[0].1, s.attempts[1].1);
        for (ct, _) in &s.attempts {
            assert_eq!(ct, "application/vnd.docker.distribution.events.v1+json");
        }
    }
    let push = events.iter().find(|e| e["action"] == "push").unwrap();
    let target = &push["target"];
    assert_eq!(target["repository"], "hooks/app");
    assert_eq!(target["digest"], digest.to_string());
    assert_eq!(
        target["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(target["size"], manifest.len());
    assert_eq!(target["tag"], "1.0");
    assert!(push["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(!push["id"].as_str().unwrap().is_empty());
    // Pulls are not notified.
    assert!(events.iter().all(|e| e["action"] != "pull"));
    let delete = events.iter().find(|e| e["action"] == "delete").unwrap();
    assert_eq!(delete["target"]["repository"], "hooks/app");
    assert_eq!(delete["target"]["digest"], digest.to_string());
    // Blob pushes are notified too.
    assert!(
        delivered(&state).iter().any(
            |e| e["action"] == "push" && e["target"]["mediaType"] == "application/octet-stream"
        )
    );
}

#[tokio::test]
async fn a_full_queue_drops_instead_of_blocking() {
    // Nothing listens here; with a queue of one, pushes beyond it are dropped, and the
    // requests still complete at once.
    let config = WebhookConfig::new(vec!["http://127.0.0.1:9/".parse().unwrap()])
        .with_queue_capacity(1)
        .with_timeout(Duration::from_millis(200))
        .with_max_retries(0);
    let (notifier, _sender) = Notifier::spawn(config).unwrap();
    let mut t = common::TestRegistry::new().await;
    t.router = t
        .registry
        .router()
        .layer(axum::middleware::from_fn_with_state(
            notifier,
            webhook::middleware,
        ));
    let started = std::time::Instant::now();
    for i in 0..20u64 {
        t.push_blob("hooks/full", &common::data(i, 100)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}
