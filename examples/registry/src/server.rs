//! The HTTP server loop: hyper's connection builder, run by hand because `axum::serve`
//! cannot set hyper's read buffer, and because every connection here is watched.
//!
//! hyper reads request bodies into a per-connection buffer that grows to its limit
//! (about 400 KiB by default) and is allocated anew while chunks of the previous one are
//! still in use, so each upload held a megabyte or more of read buffers. A smaller
//! [`READ_BUFFER`] holds less at some CPU cost per push (docs/performance.md, round 4).
//!
//! # Connections
//!
//! Each connection holds one permit of a semaphore of `max_connections`. When none is
//! left the loop stops accepting: new connections wait in the kernel's listen backlog and
//! are served, in order, as others close (one log line each time the limit is reached).
//! Waiting rather than closing them: a client past the limit is slowed down instead of
//! failed, and since every connection is bounded by the timeouts below, a slot frees
//! within them even when the holders are hostile.
//!
//! - `header_timeout`: hyper's `header_read_timeout` for HTTP/1. hyper starts it whenever
//!   the connection waits for a request head, including while a keep-alive connection
//!   waits for its next request, so an idle HTTP/1 connection is closed after the shorter
//!   of this and `idle_timeout`.
//! - `idle_timeout`: a connection with no request in flight and no byte read or written
//!   for this long is shut down gracefully (HTTP/1 and HTTP/2; also a connection that
//!   never sends a byte, which hyper's protocol detection would wait on forever).
//! - `body_timeout`: a request body that yields no data for this long ends with an error
//!   ([`tower_http::timeout::TimeoutBody`], whose timer restarts at every frame: a stall
//!   limit, not a limit on the whole upload).
//!
//! With TLS, the handshake runs in the connection's own task, after the permit is taken,
//! with [`HANDSHAKE_TIMEOUT`]. A connection whose first byte is not that of a TLS
//! handshake gets a plain-text `400` saying the port speaks HTTPS, and is closed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::tls::Acceptor as TlsAcceptor;
use axum::Router;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;
use tower_http::timeout::{TimeoutBody, TimeoutError};

use crate::config::ConnectionSettings;

/// Largest read hyper makes into a connection's buffer (hyper's `max_buf_size`; also
/// the largest request head it accepts, far above any real one).
const READ_BUFFER: usize = 128 * 1024;

/// How long a shutdown waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(30);

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` (HTTPS when `tls` is given) until `shutdown` completes,
/// then lets open connections finish their requests (at most [`DRAIN`]).
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: ConnectionSettings,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .max_buf_size(READ_BUFFER)
        .header_read_timeout(limits.header_timeout);
    let http = Arc::new(http);
    let max = limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(max as usize));
    let (stop, stopped) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                tracing::warn!(
                    max_connections = max,
                    "connection limit reached; new connections wait until one closes"
                );
                tokio::select! {
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        // Never closed.
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        let conn = Connection {
            http: http.clone(),
            app: app.clone(),
            peer,
            limits,
            stopped: stopped.clone(),
            _permit: permit,
        };
        tokio::spawn(conn.run(tcp, tls.clone()));
    }
    drop(listener);
    stop.send_replace(true);
    // Every connection holds a permit until its task ends: all of them back means all
    // connections are closed.
    if tokio::time::timeout(DRAIN, permits.acquire_many(max))
        .await
        .is_err()
    {
        tracing::warn!("connections still open {DRAIN:?} after shutdown; closing them");
    }
}

/// The next TCP connection. As axum does: per-connection errors are the client's;
/// anything else (too many open files) gets a pause before retrying.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                ) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// One accepted connection and what it needs to be served.
struct Connection {
    http: Arc<Builder<TokioExecutor>>,
    app: Router,
    peer: SocketAddr,
    limits: ConnectionSettings,
    /// Becomes `true` at shutdown.
    stopped: watch::Receiver<bool>,
    /// Returned to the connection limit when the task ends.
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(self, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        let Some(acceptor) = tls else {
            return self.serve(tcp).await;
        };
        let peer = self.peer;
        // A TLS connection opens with a handshake record (content type 22); anything else
        // is most likely plain HTTP sent to the HTTPS port, which deserves an answer it can
        // read rather than TLS bytes.
        let mut first = [0u8; 1];
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
            Ok(Ok(1)) if first[0] == TLS_HANDSHAKE => {}
            Ok(Ok(1)) => return refuse_plain_http(tcp, peer).await,
            Ok(Ok(_)) => return,
            Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "read failed"),
            Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
        }
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => self.serve(stream).await,
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        }
    }

    async fn serve<IO>(self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            http,
            app,
            peer,
            limits,
            mut stopped,
            _permit,
        } = self;
        let activity = Arc::new(Activity::new());
        let io = Tracked {
            inner: io,
            activity: activity.clone(),
        };
        let in_service = activity.clone();
        let body_timeout = limits.body_timeout;
        let service = tower::service_fn(move |req: http::Request<Incoming>| {
            let request = InFlight::begin(&in_service);
            let mut req = req.map(|body| {
                axum::body::Body::new(TimeoutBody::new(body_timeout, body).map_err(move |e| {
                    if e.is::<TimeoutError>() {
                        tracing::info!(
                            %peer,
                            timeout = ?body_timeout,
                            "request body made no progress; ending the request"
                        );
                    }
                    e
                }))
            });
            // Where the request came from, as axum's `serve` would say it: the rate
            // limits key anonymous callers by it.
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let response = app.clone().oneshot(req);
            async move {
                let response = response.await;
                drop(request);
                response
            }
        });
        let conn = http
            .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
        let mut conn = std::pin::pin!(conn);
        let mut closing = false;
        loop {
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                _ = stopped.wait_for(|stop| *stop), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = activity.idle(limits.idle_timeout), if !closing => {
                    tracing::debug!(%peer, "closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// The first byte of a TLS ClientHello: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Answers a plain-HTTP client on the HTTPS port with a readable 400, then closes.
async fn refuse_plain_http(mut tcp: TcpStream, peer: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    tracing::info!(%peer, "plain HTTP on the HTTPS port; answered 400");
    let url = match tcp.local_addr() {
        Ok(local) => format!("https://{local}/"),
        Err(_) => "https://".to_string(),
    };
    let body = format!("400 Bad Request: this port speaks HTTPS; use {url}\n");
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = async {
        tcp.write_all(response.as_bytes()).await?;
        tcp.shutdown().await?;
        // Read what the client sent (up to 64 KiB) before closing: closing a socket with
        // unread bytes sends a reset, which can reach the client before the answer.
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            let n = tcp.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        Ok::<(), io::Error>(())
    };
    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), answer).await {
        tracing::debug!(%peer, error = %e, "answering plain HTTP failed");
    }
}

/// When a connection last moved a byte, and how many of its requests are being handled.
#[derive(Debug)]
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// Resolves once no request has been in flight and no byte has moved for `limit`.
    async fn idle(&self, limit: Duration) {
        loop {
            let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
            let quiet = self.start.elapsed().saturating_sub(last);
            let busy = self.in_flight.load(Ordering::Relaxed) > 0;
            if !busy && quiet >= limit {
                return;
            }
            // A request in flight ends with a touch: look again a whole period later.
            let wait = if busy { limit } else { limit - quiet };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A request being handled; its end counts as activity.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's byte stream, noting every read or write that moved data.
struct Tracked<IO> {
    inner: IO,
    activity: Arc<Activity>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
