//! The HTTP server loop: hyper's connection builder, run by hand because `axum::serve`
//! cannot set hyper's read buffer.
//!
//! hyper reads request bodies into a per-connection buffer that grows to its limit
//! (about 400 KiB by default) and is allocated anew while chunks of the previous one are
//! still in use, so each upload held a megabyte or more of read buffers. At
//! [`READ_BUFFER`] = 128 KiB the peak RSS of 16 pushes of 64 MiB at concurrency 4 was
//! 17.9-18.4 MiB against 20.0-22.8 at hyper's default, at the cost of about 15% more CPU
//! per push at concurrency 1 (90-92 ms against 70-80 ms per 64 MiB; two runs each); see
//! docs/performance.md, round 4.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;

/// Largest read hyper makes into a connection's buffer (hyper's `max_buf_size`; also
/// the largest request head it accepts, far above any real one).
const READ_BUFFER: usize = 128 * 1024;

/// How long a shutdown waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` completes, then lets open connections
/// finish their requests (at most [`DRAIN`]).
pub async fn serve<L>(mut listener: L, app: Router, shutdown: impl Future<Output = ()>)
where
    L: Listener,
{
    let mut http = Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .max_buf_size(READ_BUFFER);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, _peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let service = app
            .clone()
            .map_request(|req: http::Request<Incoming>| req.map(axum::body::Body::new));
        let conn = http
            .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open {DRAIN:?} after shutdown; closing them");
    }
}
