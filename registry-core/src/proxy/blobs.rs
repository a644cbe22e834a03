//! Blobs of a proxied repository: the first pull streams from the upstream to the client
//! and into the blob store at once, verified on the way.

use std::io;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http::StatusCode;
use oci_spec_types::{Digest, ErrorCode, RepositoryName};
use storage_traits::{ByteStream, StorageError, UploadSession};
use tokio::sync::{mpsc, watch};

use super::{PROXY_FETCHED_BYTES, Proxied};
use crate::Inner;
use crate::clock::now_ms;
use crate::error::RegistryError;
use crate::exchange::{Result, empty};
use crate::upload::hashing::DigestHasher;

/// Chunks buffered between the upstream and each of its two readers (client, store).
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
        let inner = inner.as_ref();
        let (recorded, filled) = tokio::join!(
            inner.metadata.create_upload(&session),
            fill(inner, &id, &repo, &digest, upstream, &client_tx)
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
        remove_inflight(inner, &key);
        let _ = done.send(Some(ok));
    });
    let body = Body::from_stream(receiver_stream(client_rx));
    Ok(blob_headers(StatusCode::OK, &answered, declared, body))
}

fn receiver_stream<T: Send + 'static>(rx: mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

/// Copies the upstream body to the client and to the store; commits on a verified
/// digest. The last chunk reaches the client only once the digest and length are
/// checked, so a client never holds all the bytes of a blob that failed its check.
async fn fill(
    inner: &Inner,
    id: &str,
    repo: &RepositoryName,
    digest: &Digest,
    upstream: reqwest::Response,
    client: &mpsc::Sender<io::Result<Bytes>>,
) -> std::result::Result<(), String> {
    let (store_tx, store_rx) =
        mpsc::channel::<std::result::Result<Bytes, StorageError>>(CHANNEL_CHUNKS);
    let store_stream: ByteStream = Box::pin(receiver_stream(store_rx));
    let write = inner.blobs.write_upload(id, 0, store_stream);
    let read = async {
        let mut hasher = DigestHasher::new(digest.algorithm());
        let mut held: Option<Bytes> = None;
        let mut total: u64 = 0;
        let mut body = upstream.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = store_tx
                        .send(Err(StorageError::Input(Box::new(io::Error::other(
                            e.to_string(),
                        )))))
                        .await;
                    return Err(format!("upstream broke off: {e}"));
                }
            };
            hasher.update(&chunk);
            total += chunk.len() as u64;
            metrics::counter!(PROXY_FETCHED_BYTES).increment(chunk.len() as u64);
            if store_tx.send(Ok(chunk.clone())).await.is_err() {
                return Err("the blob store stopped reading".to_string());
            }
            // A client that went away does not stop the fetch: the cache still fills.
            if let Some(previous) = held.replace(chunk) {
                let _ = client.send(Ok(previous)).await;
            }
        }
        drop(store_tx);
        Ok((hasher.finish(), total, held))
    };
    let (written, read) = tokio::join!(write, read);
    let (computed, total, held) = read?;
    let written = written.map_err(|e| format!("blob store: {e}"))?;
    if computed != *digest {
        return Err(format!("the upstream sent {computed}, not {digest}"));
    }
    if written != total {
        return Err(format!("wrote {written} of {total} bytes"));
    }
    // Verified: the client may have its last bytes now; the commit below is the cache's
    // business (if it fails, the client still holds a correct blob, and nothing is kept).
    if let Some(last) = held {
        let _ = client.send(Ok(last)).await;
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
