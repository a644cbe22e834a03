//! Webhook notifications of pushes and deletes, in the envelope of CNCF distribution's
//! notifications (`application/vnd.docker.distribution.events.v1+json`):
//!
//! ```json
//! {"events": [{"id": "…", "timestamp": "2025-01-01T00:00:00Z", "action": "push",
//!   "target": {"mediaType": "…", "size": 528, "length": 528, "digest": "sha256:…",
//!              "repository": "library/alpine", "tag": "3.20"},
//!   "source": {"instanceID": "…"}}]}
//! ```
//!
//! Requests never wait for a webhook: [`middleware`] puts the event on a bounded queue
//! and a background task sends it. A full queue drops the event and counts it in
//! `registry_webhook_events_dropped_total`. The sender batches what is queued (up to 64
//! events per envelope), sends the envelope to each URL with a time limit, and retries
//! failures (connection errors, 5xx, 429) with exponential backoff; an envelope that
//! still fails is logged and counted, then dropped: delivery is at most once per URL and
//! best-effort, as in distribution.
//!
//! ```no_run
//! # async fn demo(registry: registry_core::Registry) {
//! use registry_core::ops::webhook::{Notifier, WebhookConfig};
//! let config = WebhookConfig::new(vec!["http://hooks.internal/registry".parse().unwrap()]);
//! let (notifier, _sender) = Notifier::spawn(config).unwrap();
//! let app = registry.router().layer(axum::middleware::from_fn_with_state(
//!     notifier,
//!     registry_core::ops::webhook::middleware,
//! ));
//! # }
//! ```

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use backon::{ExponentialBuilder, Retryable};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::events::{Action, RegistryEvent};
use super::metrics::{WEBHOOK_DELIVERIES, WEBHOOK_DROPPED};

const MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";
const BATCH: usize = 64;

/// Where and how to send notifications.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebhookConfig {
    /// Each envelope goes to every URL.
    pub urls: Vec<reqwest::Url>,
    /// Time limit of one delivery attempt (default 5 s).
    pub timeout: Duration,
    /// Events waiting to be sent; more are dropped (default 1024).
    pub queue_capacity: usize,
    /// Retries after a failed attempt (default 5, backing off from 200 ms to 10 s).
    pub max_retries: usize,
}

impl WebhookConfig {
    /// Sends to `urls`, with the defaults each field names.
    pub fn new(urls: Vec<reqwest::Url>) -> Self {
        WebhookConfig {
            urls,
            timeout: Duration::from_secs(5),
            queue_capacity: 1024,
            max_retries: 5,
        }
    }
    /// Sets [`WebhookConfig::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Sets [`WebhookConfig::queue_capacity`] (at least 1).
    pub fn with_queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }
    /// Sets [`WebhookConfig::max_retries`].
    pub fn with_max_retries(mut self, retries: usize) -> Self {
        self.max_retries = retries;
        self
    }
}

/// The sending side of the queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifier {
    tx: mpsc::Sender<RegistryEvent>,
}

impl Notifier {
    /// Starts the background sender on the current runtime. It stops once every
    /// `Notifier` clone is dropped and the queue is drained.
    pub fn spawn(config: WebhookConfig) -> Result<(Notifier, JoinHandle<()>), reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("registry-core/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let task = tokio::spawn(run(rx, client, config));
        Ok((Notifier { tx }, task))
    }

    /// Queues a push or delete (pulls are not notified). Never waits.
    pub fn notify(&self, event: RegistryEvent) {
        if !matches!(event.action, Action::Push | Action::Delete) {
            return;
        }
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                ::metrics::counter!(WEBHOOK_DROPPED).increment(1);
                tracing::warn!("webhook queue full: event dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                ::metrics::counter!(WEBHOOK_DROPPED).increment(1);
            }
        }
    }
}

/// Axum middleware (`axum::middleware::from_fn_with_state(notifier, middleware)`) to
/// wrap around [`crate::Registry::router`]: queues the pushes and deletes that the
/// registry's own middleware attached to responses.
pub async fn middleware(State(notifier): State<Notifier>, req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    if let Some(event) = res.extensions().get::<RegistryEvent>() {
        notifier.notify(event.clone());
    }
    res
}

#[derive(Debug)]
enum Failure {
    Http(reqwest::Error),
    Status(reqwest::StatusCode),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Http(e) => write!(f, "{e}"),
            Failure::Status(s) => write!(f, "answered {s}"),
        }
    }
}

impl Failure {
    fn retryable(&self) -> bool {
        match self {
            Failure::Http(_) => true,
            Failure::Status(s) => {
                s.is_server_error() || *s == reqwest::StatusCode::TOO_MANY_REQUESTS
            }
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<RegistryEvent>,
    client: reqwest::Client,
    config: WebhookConfig,
) {
    let instance = uuid::Uuid::new_v4().to_string();
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let body = envelope(&batch, &instance).to_string();
        for url in &config.urls {
            deliver(&client, url, &body, &config).await;
        }
        batch.clear();
    }
}

async fn deliver(client: &reqwest::Client, url: &reqwest::Url, body: &str, config: &WebhookConfig) {
    let attempt = || async {
        let res = client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, MEDIA_TYPE)
            .body(body.to_string())
            .send()
            .await
            .map_err(Failure::Http)?;
        if res.status().is_success() {
            Ok(())
        } else {
            Err(Failure::Status(res.status()))
        }
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_max_times(config.max_retries)
        .with_jitter();
    let result = attempt
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(Failure::retryable)
        .notify(|e, after| {
            tracing::debug!(url = %redacted(url), error = %e, retry_in = ?after, "webhook delivery failed");
        })
        .await;
    match result {
        Ok(()) => ::metrics::counter!(WEBHOOK_DELIVERIES, "outcome" => "ok").increment(1),
        Err(e) => {
            ::metrics::counter!(WEBHOOK_DELIVERIES, "outcome" => "failed").increment(1);
            tracing::warn!(url = %redacted(url), error = %e, "webhook delivery failed; envelope dropped");
        }
    }
}

/// The URL without credentials or query (which may hold a token), for logs.
fn redacted(url: &reqwest::Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    ) + url.path()
}

fn envelope(events: &[RegistryEvent], instance: &str) -> serde_json::Value {
    let events: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            let mut target = serde_json::json!({ "repository": e.repository });
            if let Some(d) = &e.digest {
                target["digest"] = d.as_str().into();
            }
            if let Some(m) = &e.media_type {
                target["mediaType"] = m.as_str().into();
            }
            if let Some(s) = e.size {
                target["size"] = s.into();
                target["length"] = s.into();
            }
            if let Some(t) = &e.tag {
                target["tag"] = t.as_str().into();
            }
            let timestamp = jiff::Timestamp::try_from(e.timestamp)
                .map(|t| t.to_string())
                .unwrap_or_default();
            serde_json::json!({
                "id": uuid::Uuid::new_v4().to_string(),
                "timestamp": timestamp,
                "action": e.action.as_str(),
                "target": target,
                "source": { "instanceID": instance },
            })
        })
        .collect();
    serde_json::json!({ "events": events })
}
