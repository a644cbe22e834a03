//! Blobs of known digest and length (a monolithic push), staged by
//! [`BlobStore::stage_blob`](storage_traits::BlobStore::stage_blob) without a multipart
//! upload.
//!
//! - Shorter than S3's 5 MiB part minimum: held in memory, then one `PUT` to the blob's key
//!   once the caller has checked the digest (as `put_bytes`). Without a session, a `HEAD`
//!   of that key first: the registry links a blob before publishing it, so S3 must be
//!   seen reachable before the link, as the other paths' first request does.
//! - Up to `single_put_max`: one streamed `PUT` to a data key, then the pointer under the
//!   blob's key (`If-None-Match: *`), as a finished session's.
//! - Longer: an ordinary session ([`stage_in_session`]), whose parts can be sent again.
//!
//! Under an id with no session (`POST ?digest=`), the data key is a fresh one of the id
//! (`data/<id>.<nonce>`, the digest in its metadata), and nothing else is written: two
//! requests for the whole push. If the process dies between them, the id's session
//! record in the registry expires, and aborting the id deletes each data object under it
//! that records a digest whose pointer does not name it.
//!
//! Under an open, empty session (a `PUT` of the whole blob after its `POST`), the session
//! is first closed for the digest (its `state.json`, with `If-Match`, as `finish` records
//! it), so writes are refused meanwhile and an abort after a crash deletes the data unless
//! the pointer names it; the data goes to the session's own data key, and publishing
//! removes the session as `finish` does. A failure or a discard deletes the data and opens
//! the session again, empty.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use oci_spec_types::Digest;
use storage_traits::blob::stage_in_session;
use storage_traits::{ByteStream, StageBlob, StagedBlob, StorageError};

use crate::client::{Body, exact_len};
use crate::config::MIN_PART_SIZE;
use crate::store::S3BlobStore;
use crate::upload::{ClosedSession, Session};

pub(crate) async fn stage<'a>(
    store: &'a S3BlobStore,
    mut blob: StageBlob<'a>,
    single_put_max: u64,
) -> Result<Box<dyn StagedBlob + 'a>, StorageError> {
    let session = store.session(blob.upload_id)?;
    if blob.size > single_put_max {
        return stage_in_session(store, blob).await;
    }
    blob.data = declared(blob.data, blob.size);
    if blob.open_session {
        let Some(closed) = session.close_empty(blob.digest).await? else {
            return stage_in_session(store, blob).await;
        };
        return stage_closed(session, closed, blob.digest, blob.size, blob.data).await;
    }
    if blob.size < MIN_PART_SIZE as u64 {
        // One request before the caller links the blob: S3 unreachable now is an error
        // here, not a link to bytes whose `PUT` then fails.
        session
            .client
            .head(&session.layout.blob_key(blob.digest))
            .await?;
        let chunks = held(blob.data, blob.size).await?;
        return Ok(Box::new(Held {
            session,
            digest: blob.digest.clone(),
            chunks,
        }));
    }
    let data_key = session.stage(blob.digest, blob.size, blob.data).await?;
    Ok(Box::new(Written {
        session,
        data_key,
        digest: blob.digest.clone(),
        size: blob.size,
    }))
}

/// `data`, failing with [`StorageError::Input`] if it is not `size` bytes long (the
/// caller's stream, not S3, is at fault).
fn declared(data: ByteStream, size: u64) -> ByteStream {
    stream::try_unfold((data, 0u64), move |(mut data, seen)| async move {
        match data.next().await {
            Some(Ok(chunk)) => {
                let seen = seen.saturating_add(chunk.len() as u64);
                if seen > size {
                    return Err(StorageError::Input(
                        format!("the stream is longer than its declared {size} bytes").into(),
                    ));
                }
                Ok(Some((chunk, (data, seen))))
            }
            Some(Err(e)) => Err(e),
            None if seen == size => Ok(None),
            None => Err(StorageError::Input(
                format!("the stream ended after {seen} of its declared {size} bytes").into(),
            )),
        }
    })
    .boxed()
}

async fn held(data: ByteStream, size: u64) -> Result<Vec<Bytes>, StorageError> {
    exact_len(data, size).try_collect().await
}

/// Stages into a closed session; a failure opens it again.
async fn stage_closed<'a>(
    session: Session<'a>,
    closed: ClosedSession,
    digest: &Digest,
    size: u64,
    data: ByteStream,
) -> Result<Box<dyn StagedBlob + 'a>, StorageError> {
    let written = if size < MIN_PART_SIZE as u64 {
        held(data, size).await.map(Some)
    } else {
        session
            .stage_closed(&closed, size, data)
            .await
            .map(|()| None)
    };
    match written {
        Ok(held) => Ok(Box::new(InSession {
            session,
            closed,
            digest: digest.clone(),
            size,
            held,
        })),
        Err(e) => {
            // If this fails too, the session stays closed: writes to it are refused, the
            // client starts over, and its expiry removes it.
            let _ = session.reopen(closed).await;
            Err(e)
        }
    }
}

/// A short blob, in memory until it is published.
struct Held<'a> {
    session: Session<'a>,
    digest: Digest,
    chunks: Vec<Bytes>,
}

#[async_trait]
impl StagedBlob for Held<'_> {
    /// One `PUT` of the bytes to the blob's key, unless it is taken: a blob this short is
    /// never a pointer, so one already there has these very bytes.
    async fn publish(self: Box<Self>) -> Result<(), StorageError> {
        let key = self.session.layout.blob_key(&self.digest);
        self.session
            .client
            .put_if_absent(&key, &Body::Chunks(self.chunks), &[])
            .await
            .map(drop)
    }

    async fn discard(self: Box<Self>) -> Result<(), StorageError> {
        Ok(())
    }
}

/// A blob in its own data key, waiting for its pointer.
struct Written<'a> {
    session: Session<'a>,
    data_key: String,
    digest: Digest,
    size: u64,
}

#[async_trait]
impl StagedBlob for Written<'_> {
    async fn publish(self: Box<Self>) -> Result<(), StorageError> {
        self.session
            .publish_staged(&self.data_key, &self.digest, self.size)
            .await
    }

    async fn discard(self: Box<Self>) -> Result<(), StorageError> {
        self.session.client.delete(&self.data_key).await
    }
}

/// A blob in a closed session's data key (or `held` in memory, when short).
struct InSession<'a> {
    session: Session<'a>,
    closed: ClosedSession,
    digest: Digest,
    size: u64,
    held: Option<Vec<Bytes>>,
}

#[async_trait]
impl StagedBlob for InSession<'_> {
    async fn publish(self: Box<Self>) -> Result<(), StorageError> {
        self.session
            .publish_closed(&self.closed, &self.digest, self.size, self.held)
            .await
    }

    async fn discard(self: Box<Self>) -> Result<(), StorageError> {
        self.session.reopen(self.closed).await
    }
}
