//! Blobs of a proxied repository: the first pull streams from the upstream to the client
//! and into the blob store at once, verified on the way.

use std::io;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http::StatusCode;
use oci_spec_types::{Algorithm, Digest, ErrorCode, RepositoryName};
use storage_traits::{ByteStream, StorageError, UploadSession};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use super::{PROXY_FETCHED_BYTES, Proxied};
use crate::Inner;
use crate::clock::now_ms;
use crate::error::RegistryError;
use crate::exchange::{Result, empty};
use crate::upload::hashing::DigestHasher;

/// Chunks buffered between the upstream and the client.
const CHANNEL_CHUNKS: usize = 8;

/// Serves a blob of a proxied repository that is not fully here yet, or `None` when it
/// is (the ordinary handler serves it). `head` answers from the upstream's size without
/// fetching; `ranged` requests wait for the whole blob and are then served from here.
pub(crate) async fn get_blob(
    inner: &Arc<Inner>,
    proxied: &Proxied<'_>,
    repo: &RepositoryName,
    digest: &Digest,
    head: bool,
    ranged: bool,
) -> Result<Option<Response>> {
    let linked = inner.metadata.blob_link(repo, digest).await?;
    let stored = inner.blobs.stat(digest).await?;
    match (linked, stored) {
        (Some(_), Some(_)) => return Ok(None),
        // Here already, for another repository: link it and serve it.
        (None, Some(info)) => {
            let size = info.size;
            crate::gc::retry_while_being_deleted(|| inner.metadata.link_blob(repo, digest, size))
                .await?;
            return Ok(None);
        }
        _ => {}
    }
    if head {
        let size = match linked {
            Some(size) => size,
            None => proxied
                .client
                .blob_size(&proxied.remote, digest)
                .await
                .map_err(|e| not_found_upstream(e, digest))?,
        };
        return Ok(Some(blob_headers(
            StatusCode::OK,
            digest,
            Some(size),
            Body::empty(),
        )));
    }
    let Some(proxy) = inner.proxy.as_ref() else {
        return Ok(None);
    };
    let key = (repo.clone(), digest.clone());
    // Leader or follower, decided under the lock (and nothing awaited while it is held).
    let joined = {
        let mut inflight = proxy.inflight.lock().unwrap_or_else(|p| p.into_inner());
        match inflight.get(&key) {
            Some(rx) => Err(rx.clone()),
            None => {
                let (tx, rx) = watch::channel(None);
                inflight.insert(key.clone(), rx.clone());
                Ok((tx, rx))
            }
        }
    };
    let follower = match joined {
        Err(rx) => Some(rx),
        Ok((tx, rx)) => {
            let started = lead(inner, proxied, repo, digest, tx).await;
            if started.is_err() {
                remove_inflight(inner, &key);
            }
            let response = started?;
            if !ranged {
                return Ok(Some(response));
            }
            // A ranged pull waits for the whole blob, then is served from here.
            drop(response);
            Some(rx)
        }
    };
    if let Some(mut rx) = follower {
        let done = rx.wait_for(Option::is_some).await.map(|v| *v);
        if !matches!(done, Ok(Some(true))) {
            return Err(RegistryError::Upstream(format!(
                "fetching blob {digest} from the upstream failed"
            )));
        }
    }
    Ok(None)
}

fn remove_inflight(inner: &Inner, key: &(RepositoryName, Digest)) {
    if let Some(proxy) = inner.proxy.as_ref() {
        proxy
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

fn not_found_upstream(e: super::UpstreamError, digest: &Digest) -> RegistryError {
    match e {
        super::UpstreamError::NotFound => RegistryError::oci(
            ErrorCode::BlobUnknown,
            format!("blob {digest} is not in the upstream"),
        ),
        e => e.into(),
    }
}

fn blob_headers(status: StatusCode, digest: &Digest, size: Option<u64>, body: Body) -> Response {
    let mut headers = vec![
        ("Docker-Content-Digest", digest.to_string()),
        ("Content-Type", "application/octet-stream".to_string()),
        ("ETag", format!("\"{digest}\"")),
    ];
    if let Some(size) = size {
        headers.push(("Content-Length", size.to_string()));
    }
    let mut res = empty(status, &headers);
    *res.body_mut() = body;
    res
}

/// Starts the one upstream fetch of a blob: answers the client with a body fed as bytes
/// arrive, and in a task of its own writes them to an upload session, hashes them,
/// commits when the digest matches, and tells the followers waiting on `done`.
async fn lead(
    inner: &Arc<Inner>,
    proxied: &Proxied<'_>,
    repo: &RepositoryName,
    digest: &Digest,
    done: watch::Sender<Option<bool>>,
) -> Result<Response> {
    let upstream = proxied
        .client
        .blob(&proxied.remote, digest)
        .await
        .map_err(|e| not_found_upstream(e, digest))?;
    let declared = upstream.content_length();
    // An ordinary upload session, so that if this process dies mid-way the upload expiry
    // reclaims it. Its record is written while the bytes already flow: the client's first
    // byte does not wait for a metadata commit.
    let id = format!("proxy-{}", uuid::Uuid::new_v4().simple());
    inner.blobs.start_upload(&id).await?;
    let session = UploadSession::new(id.clone(), repo.clone(), now_ms());
    let (client_tx, client_rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
    let repo = repo.clone();
    let digest = digest.clone();
    let key = (repo.clone(), digest.clone());
    let answered = digest.clone();
    let inner = Arc::clone(inner);
    tokio::spawn(async move {
        let (recorded, filled) = tokio::join!(
            inner.metadata.create_upload(&session),
            fill(&inner, &id, &repo, &digest, upstream, &client_tx)
        );
        if let Err(e) = &recorded {
            tracing::warn!(upload = %id, error = %e, "could not record the fetch's upload session");
        }
        let ok = match filled {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(repository = %repo, digest = %digest, error = %e,
                    "pull-through fetch failed; nothing was kept");
                if let Err(e) = inner.blobs.abort_upload(&id).await {
                    tracing::warn!(upload = %id, error = %e, "could not abort the fetch's upload");
                }
                let _ = client_tx
                    .send(Err(io::Error::other(format!("upstream fetch failed: {e}"))))
                    .await;
                false
            }
        };
        if recorded.is_ok()
            && let Err(e) = inner.metadata.delete_upload(&id).await
        {
            tracing::warn!(upload = %id, error = %e, "could not delete the fetch's upload record");
        }
        remove_inflight(&inner, &key);
        let _ = done.send(Some(ok));
    });
    let body = Body::from_stream(receiver_stream(client_rx));
    Ok(blob_headers(StatusCode::OK, &answered, declared, body))
}

fn receiver_stream<T: Send + 'static>(rx: mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

/// Bytes of one fill read from the upstream but not yet taken by the store side. The
/// client's stream runs ahead of the disk by up to this much, so an early sync or a slow
/// write does not hold back the upstream read (nor, with it, the client); past it the
/// store paces the fetch, which bounds the memory of a fill when the disk is slower than
/// the network.
const STORE_BUFFER: usize = 16 * 1024 * 1024;

/// Chunks buffered for the hasher (which keeps up with any network: ~1.8 GiB/s here).
const HASH_CHUNKS: usize = 64;

/// Copies the upstream body to the client, the hasher and the store, each of the last two
/// on a task of its own so that forwarding to the client waits on neither and they can
/// run on other cores. The last chunk reaches the client only once the digest checks out,
/// so a client never holds all the bytes of a blob that failed its check; it does not
/// wait for the store, whose failure only means the cache keeps nothing.
async fn fill(
    inner: &Arc<Inner>,
    id: &str,
    repo: &RepositoryName,
    digest: &Digest,
    upstream: reqwest::Response,
    client: &mpsc::Sender<io::Result<Bytes>>,
) -> std::result::Result<(), String> {
    let budget = Arc::new(Semaphore::new(STORE_BUFFER));
    // Unbounded in chunks, bounded in bytes by `budget`: each chunk carries its permit.
    let (store_tx, store_rx) = mpsc::unbounded_channel::<StoreChunk>();
    let store = tokio::spawn(write(Arc::clone(inner), id.to_string(), store_rx));
    let (hash_tx, hash_rx) = mpsc::channel::<Bytes>(HASH_CHUNKS);
    let hashed = tokio::spawn(hash(digest.algorithm(), hash_rx));
    let mut held: Option<Bytes> = None;
    let mut total: u64 = 0;
    let mut body = upstream.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let broke = io::Error::other(e.to_string());
                let _ = store_tx.send((Err(StorageError::Input(Box::new(broke))), None));
                drop(store_tx);
                return fail(store, format!("upstream broke off: {e}")).await;
            }
        };
        total += chunk.len() as u64;
        metrics::counter!(PROXY_FETCHED_BYTES).increment(chunk.len() as u64);
        if hash_tx.send(chunk.clone()).await.is_err() {
            drop(store_tx);
            return fail(store, "the hasher stopped".to_string()).await;
        }
        // A chunk larger than the whole budget takes all of it (never more than exist).
        let permits = u32::try_from(chunk.len().min(STORE_BUFFER)).unwrap_or(u32::MAX);
        let Ok(permit) = Arc::clone(&budget).acquire_many_owned(permits).await else {
            drop(store_tx);
            return fail(store, "the store buffer closed".to_string()).await;
        };
        if store_tx.send((Ok(chunk.clone()), Some(permit))).is_err() {
            // The store side ended early: its error is the one to report.
            return Err(match store.await {
                Ok(Err(e)) => format!("blob store: {e}"),
                _ => "the blob store stopped reading".to_string(),
            });
        }
        // A client that went away does not stop the fetch: the cache still fills.
        if let Some(previous) = held.replace(chunk) {
            let _ = client.send(Ok(previous)).await;
        }
    }
    drop(hash_tx);
    drop(store_tx);
    let computed = match hashed.await {
        Ok(d) => d,
        Err(e) => return fail(store, format!("the hasher failed: {e}")).await,
    };
    if computed != *digest {
        return fail(store, format!("the upstream sent {computed}, not {digest}")).await;
    }
    // Verified: the client may have its last bytes now; the store and the commit below
    // are the cache's business (if they fail, the client still holds a correct blob, and
    // nothing is kept).
    if let Some(last) = held {
        let _ = client.send(Ok(last)).await;
    }
    let written = store
        .await
        .map_err(|e| format!("the blob store task failed: {e}"))?
        .map_err(|e| format!("blob store: {e}"))?;
    if written != total {
        return Err(format!("wrote {written} of {total} bytes"));
    }
    crate::gc::retry_while_being_deleted(|| inner.metadata.link_blob(repo, digest, total))
        .await
        .map_err(|e| e.to_string())?;
    inner
        .blobs
        .finish_upload(id, digest, total)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Fails the fill once the store's writes have ended, so the caller's abort of the
/// session comes after them.
async fn fail<T>(store: JoinHandle<T>, why: String) -> std::result::Result<(), String> {
    let _ = store.await;
    Err(why)
}

/// A chunk on its way to the store, with its share of the fill's [`STORE_BUFFER`].
type StoreChunk = (
    std::result::Result<Bytes, StorageError>,
    Option<OwnedSemaphorePermit>,
);

/// The digest of every chunk received, once the sender is gone.
async fn hash(algorithm: Algorithm, mut rx: mpsc::Receiver<Bytes>) -> Digest {
    let mut hasher = DigestHasher::new(algorithm);
    while let Some(chunk) = rx.recv().await {
        hasher.update(&chunk);
    }
    hasher.finish()
}

/// Writes the chunks to the upload session `id`; returns the length written.
async fn write(
    inner: Arc<Inner>,
    id: String,
    rx: mpsc::UnboundedReceiver<StoreChunk>,
) -> std::result::Result<u64, StorageError> {
    let stream: ByteStream = Box::pin(
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) }).map(
            |(chunk, permit)| {
                // Taken by the store: the reader may run this far ahead again.
                drop(permit);
                chunk
            },
        ),
    );
    inner.blobs.write_upload(&id, 0, stream).await
}
