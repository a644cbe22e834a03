//! The edge of [`crate::Registry::router`]: decodes each request once into an
//! [`ApiRequest`] for every layer below, measures it, and turns the exchange into the
//! event it amounts to.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::HeaderValue;
use http_body::{Frame, SizeHint};

use super::events::{Action, RegistryEvent, Target, from_exchange};
use super::metrics::{
    HTTP_DURATION, HTTP_REQUEST_BYTES, HTTP_REQUESTS, HTTP_RESPONSE_BYTES, STORE_ERRORS,
    method_label, route_label,
};
use crate::Inner;
use crate::error::RegistryError;
use crate::request::ApiRequest;

/// Decodes the request (a request that does not decode is answered here), measures it,
/// logs the event it amounts to, and attaches pushes and deletes to the response's
/// extensions.
pub(crate) async fn edge(State(inner): State<Arc<Inner>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let (mut parts, body) = req.into_parts();
    let mut decoded = ApiRequest::decode(&parts);
    if let (Ok(Some(request)), Some(proxy)) = (&mut decoded, &inner.proxy) {
        proxy.apply_namespace(request);
    }
    let route = route_label(&decoded);
    let method = method_label(&parts.method);

    let received = Arc::new(AtomicU64::new(0));
    let body = Body::new(Counted {
        inner: body,
        bytes: received.clone(),
        counter: ::metrics::counter!(HTTP_REQUEST_BYTES, "route" => route),
        finish: None,
    });
    let mut res = match decoded {
        Ok(Some(request)) => {
            parts.extensions.insert(request);
            next.run(Request::from_parts(parts, body)).await
        }
        // Not ours: whatever the application serves there (its fallback, say).
        Ok(None) if !is_api_path(parts.uri.path()) => {
            next.run(Request::from_parts(parts, body)).await
        }
        Ok(None) => RegistryError::NotFound.into_response(),
        Err(e) => e.into_response(),
    };
    res.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    if let Some(ns) = res
        .extensions()
        .get::<ApiRequest>()
        .and_then(|r| r.namespace.as_deref())
        .and_then(|ns| HeaderValue::from_str(ns).ok())
    {
        res.headers_mut().insert("OCI-Namespace", ns);
    }

    let status = res.status();
    let elapsed = start.elapsed();
    ::metrics::counter!(
        HTTP_REQUESTS,
        "route" => route,
        "method" => method,
        "status" => status.as_str().to_owned()
    )
    .increment(1);
    ::metrics::histogram!(HTTP_DURATION, "route" => route, "method" => method)
        .record(elapsed.as_secs_f64());
    if status.is_server_error() {
        ::metrics::counter!(STORE_ERRORS, "route" => route).increment(1);
    }

    // The dispatcher hands the decoded request back with the responses it produced; the
    // others (refused by authorisation) are no push, pull or delete.
    let event = res
        .extensions_mut()
        .remove::<ApiRequest>()
        .and_then(|request| {
            from_exchange(
                &request,
                received.load(Ordering::Relaxed),
                status,
                res.headers(),
            )
        });
    // A blob download's event waits for its last byte: its size and duration are those
    // of the transfer, and an aborted download still reports what it sent.
    let mut finish = None;
    if let Some(mut event) = event {
        event.duration = elapsed;
        // Only a blob GET is a blob pull event (a HEAD is none).
        let streamed =
            event.action == Action::Pull && event.target == Target::Blob && status.is_success();
        if streamed {
            finish = Some(PendingPull { event, start });
        } else {
            event.log();
            if event.action != Action::Pull {
                res.extensions_mut().insert(event);
            } else if let (Target::Manifest, Some(digest)) = (event.target, event.digest) {
                // Only a manifest GET answered 200 is a manifest pull event.
                let at = crate::clock::unix_ms(event.timestamp);
                inner.pulls.record(event.repository, digest, at);
            }
        }
    }
    let (parts, body) = res.into_parts();
    let body = Body::new(Counted {
        inner: body,
        bytes: Arc::new(AtomicU64::new(0)),
        counter: ::metrics::counter!(HTTP_RESPONSE_BYTES, "route" => route),
        finish,
    });
    Response::from_parts(parts, body)
}

fn is_api_path(path: &str) -> bool {
    path == "/v2" || path.starts_with("/v2/")
}

struct PendingPull {
    event: RegistryEvent,
    start: Instant,
}

/// A body that counts its bytes as they pass, and logs a pending pull when it is done
/// (or dropped half way).
struct Counted {
    inner: Body,
    bytes: Arc<AtomicU64>,
    counter: ::metrics::Counter,
    finish: Option<PendingPull>,
}

impl Counted {
    fn done(&mut self) {
        if let Some(PendingPull { mut event, start }) = self.finish.take() {
            event.size = Some(self.bytes.load(Ordering::Relaxed));
            event.duration = start.elapsed();
            event.log();
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.done();
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        // Every field is `Unpin` (`Body` boxes its inner body).
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    this.bytes.fetch_add(n, Ordering::Relaxed);
                    this.counter.increment(n);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.done(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
