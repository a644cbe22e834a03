//! Upload sessions, kept entirely in the bucket so any replica can continue any session.
//!
//! A session is a state object (`state.json`: the ordered list of segments and how many
//! bytes of each belong to the session) and the segment objects it names. A write
//! buffers at most one part (`part_size`, 8 MiB by default) of its input, stores each full
//! buffer as a new segment object, and records the new list in `state.json` only once the
//! whole input was stored. Finishing concatenates the segments into the blob's key with a
//! multipart upload whose parts are server-side copies (`UploadPartCopy`) of the
//! segments, so a blob's bytes never pass through the registry twice.
//!
//! S3 wants every part but the last to be at least 5 MiB. The invariant that makes that
//! hold: all segments except a trailing *run* of small ones are at least 5 MiB, and the run
//! holds fewer than 5 MiB in total. A write that fills a buffer while a run exists, or that
//! brings the run to 5 MiB, stores the run's bytes (streamed back from S3) followed by its
//! own buffer as one new segment, so each byte is rewritten at most once; at finish the
//! run, being last, is streamed into a single last part.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use storage_traits::{ByteStream, StorageError};

use crate::client::{Body, Client};
use crate::config::{MAX_PART_SIZE, MIN_PART_SIZE};
use crate::error::S3Error;
use crate::layout::{SessionKeys, new_segment_name, valid_segment_name};

/// S3's limit on the parts of one multipart upload.
const MAX_PARTS: u64 = 10_000;
/// Server-side copies (and deletes) in flight at once for one session.
const CONCURRENCY: usize = 4;

/// What `state.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SessionState {
    /// Format version, for whoever changes this layout next.
    version: u32,
    segments: Vec<Segment>,
    /// A multipart upload `finish` started and has not completed or aborted, recorded so
    /// that `abort` (or the next `finish`) can abort it even after a crash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    multipart: Option<PendingMultipart>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Segment {
    name: String,
    /// The session's bytes in this segment: its first `len` bytes. (Sessions written by
    /// versions that cut segments short on a rewrite can have `len` below the object's
    /// size; nothing shortens a segment now.)
    len: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingMultipart {
    key: String,
    upload_id: String,
}

const STATE_VERSION: u32 = 1;

impl SessionState {
    fn len(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Index of the first segment of the trailing run of segments under 5 MiB.
    fn run_start(&self) -> usize {
        self.segments
            .iter()
            .rposition(|s| s.len >= MIN_PART_SIZE as u64)
            .map_or(0, |i| i + 1)
    }
}

/// One session's keys and the client to reach them.
pub(crate) struct Session<'a> {
    pub(crate) client: &'a Arc<Client>,
    pub(crate) keys: SessionKeys,
    pub(crate) id: &'a str,
    pub(crate) part_size: usize,
}

impl Session<'_> {
    /// The session's state and the ETag of the object it was read from.
    async fn load(&self) -> Result<(SessionState, String), StorageError> {
        let key = self.keys.state();
        let Some((etag, bytes)) = self.client.get_tagged(&key).await? else {
            return Err(StorageError::UploadNotFound(self.id.to_string()));
        };
        let corrupt = |message: String| {
            StorageError::from(S3Error::CorruptState {
                key: key.clone(),
                message,
            })
        };
        let state: SessionState =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if state.version != STATE_VERSION {
            return Err(corrupt(format!("unknown version {}", state.version)));
        }
        if let Some(bad) = state.segments.iter().find(|s| !valid_segment_name(&s.name)) {
            return Err(corrupt(format!("bad segment name {:?}", bad.name)));
        }
        Ok((state, etag))
    }

    fn encode(&self, state: &SessionState) -> Result<Body, StorageError> {
        let json = serde_json::to_vec(state).map_err(|e| {
            StorageError::from(S3Error::CorruptState {
                key: self.keys.state(),
                message: e.to_string(),
            })
        })?;
        Ok(Body::Bytes(Bytes::from(json)))
    }

    async fn save(&self, state: &SessionState) -> Result<(), StorageError> {
        self.client
            .put(&self.keys.state(), &self.encode(state)?)
            .await
    }

    /// Saves `state` only if `state.json` is still the one read (ETag `etag`): a replica
    /// whose write raced another replica's write of the same session loses with
    /// `Conflict`, instead of replacing bytes the other had stored and acknowledged.
    async fn save_if_unchanged(
        &self,
        state: &SessionState,
        etag: &str,
    ) -> Result<(), StorageError> {
        self.client
            .put_if_match(&self.keys.state(), &self.encode(state)?, etag, self.id)
            .await
    }

    /// Creates (or restarts) the session, empty.
    pub(crate) async fn start(&self) -> Result<(), StorageError> {
        self.save(&SessionState {
            version: STATE_VERSION,
            ..SessionState::default()
        })
        .await
    }

    pub(crate) async fn write(
        &self,
        offset: u64,
        mut data: ByteStream,
    ) -> Result<u64, StorageError> {
        let (mut state, etag) = self.load().await?;
        let len = state.len();
        if offset > len {
            return Err(StorageError::InvalidOffset {
                expected: len,
                got: offset,
            });
        }
        if offset < len {
            // Replicas share this session: bytes past `offset` may be another replica's
            // write that is about to be acknowledged, so they are never cut (see
            // `BlobCapabilities::shared_sessions`). A write that failed half way never reached
            // `state.json`, so its retry does not land here.
            return Err(StorageError::Conflict(format!(
                "upload {} holds {len} bytes; a write at {offset} would replace some",
                self.id
            )));
        }
        let mut obsolete = Vec::new();
        let mut changed = false;

        let mut buf = BytesMut::new();
        let mut total = offset;
        while let Some(chunk) = data.next().await {
            // The input's error is returned as is. Segments stored so far are not in the
            // recorded state; finish and abort remove everything under the session anyway.
            let mut chunk = chunk?;
            total += chunk.len() as u64;
            while !chunk.is_empty() {
                let take = (self.part_size - buf.len()).min(chunk.len());
                buf.extend_from_slice(&chunk.split_to(take));
                if buf.len() == self.part_size {
                    let full = buf.split().freeze();
                    obsolete.extend(self.append(&mut state, full, true).await?);
                    changed = true;
                }
            }
        }
        if !buf.is_empty() {
            obsolete.extend(self.append(&mut state, buf.freeze(), false).await?);
            changed = true;
        }
        if changed {
            self.save_if_unchanged(&state, &etag).await?;
        }
        // Only now are the replaced segments unused. Failing to delete them leaves garbage
        // under the session that finish and abort remove, so it is not an error.
        self.delete_segments(&obsolete).await.ok();
        Ok(total)
    }

    /// Stores `data` after the state's segments, merging the trailing run of small segments
    /// into it when the result would be at least 5 MiB (always when `full`). Returns the
    /// names of the segments merged away.
    async fn append(
        &self,
        state: &mut SessionState,
        data: Bytes,
        full: bool,
    ) -> Result<Vec<String>, StorageError> {
        let run_start = state.run_start();
        let run = state.segments.get(run_start..).unwrap_or_default().to_vec();
        let run_len: u64 = run.iter().map(|s| s.len).sum();
        let name = new_segment_name();
        let key = self.keys.segment(&name);
        let data_len = data.len() as u64;
        if run.is_empty() || !(full || run_len + data_len >= MIN_PART_SIZE as u64) {
            self.client.put(&key, &Body::Bytes(data)).await?;
            state.segments.push(Segment {
                name,
                len: data_len,
            });
            return Ok(Vec::new());
        }
        let make = self.concat_body(&run, Some(data));
        self.client
            .put(
                &key,
                &Body::Stream {
                    len: run_len + data_len,
                    make,
                },
            )
            .await?;
        state.segments.truncate(run_start);
        state.segments.push(Segment {
            name,
            len: run_len + data_len,
        });
        Ok(run.into_iter().map(|s| s.name).collect())
    }

    /// A body factory streaming `segments` from S3 (each cut to its `len`), then `tail`.
    fn concat_body(
        &self,
        segments: &[Segment],
        tail: Option<Bytes>,
    ) -> Arc<dyn Fn() -> ByteStream + Send + Sync> {
        let client = Arc::clone(self.client);
        let parts: Vec<(String, u64)> = segments
            .iter()
            .map(|s| (self.keys.segment(&s.name), s.len))
            .collect();
        Arc::new(move || {
            let segments = read_segments(Arc::clone(&client), parts.clone());
            match tail.clone() {
                Some(t) => segments.chain(stream::once(async move { Ok(t) })).boxed(),
                None => segments,
            }
        })
    }

    pub(crate) async fn read(&self) -> Result<ByteStream, StorageError> {
        let (state, _) = self.load().await?;
        let parts = state
            .segments
            .iter()
            .map(|s| (self.keys.segment(&s.name), s.len))
            .collect();
        Ok(read_segments(Arc::clone(self.client), parts))
    }

    pub(crate) async fn finish(&self, blob_key: &str, size: u64) -> Result<(), StorageError> {
        let (mut state, _) = self.load().await?;
        // Segments are only ever appended, so the first `size` bytes are the ones the
        // caller hashed; a length other than `size` means another request wrote after it.
        let len = state.len();
        if len != size {
            return Err(StorageError::Conflict(format!(
                "upload {} holds {len} bytes, not the {size} being finished",
                self.id
            )));
        }
        if let Some(pending) = state.multipart.take() {
            // A finish that crashed half way; its upload is of no use now.
            self.client
                .abort_multipart(&pending.key, &pending.upload_id)
                .await?;
            self.save(&state).await?;
        }
        // The blob's key is its digest: an existing blob has these very bytes.
        if self.client.head(blob_key).await?.is_none() {
            self.commit(&mut state, blob_key).await?;
        }
        self.remove_all().await
    }

    async fn commit(&self, state: &mut SessionState, blob_key: &str) -> Result<(), StorageError> {
        let run_start = state.run_start();
        let (big, run) = state.segments.split_at(run_start);
        let run_len: u64 = run.iter().map(|s| s.len).sum();
        if big.is_empty() {
            // Under 5 MiB in all: one PUT, as atomic as S3 gets.
            let body = if run_len == 0 {
                Body::Empty
            } else {
                Body::Stream {
                    len: run_len,
                    make: self.concat_body(run, None),
                }
            };
            return self.client.put(blob_key, &body).await;
        }

        // The parts: each big segment as one or more copies of at most 5 GiB (each at least
        // 5 MiB, as the segment is), then the run as one uploaded last part.
        let mut copies: Vec<(String, std::ops::Range<u64>)> = Vec::new();
        for seg in big {
            let pieces = seg.len.div_ceil(MAX_PART_SIZE).max(1);
            let piece = seg.len.div_ceil(pieces);
            let mut start = 0;
            while start < seg.len {
                let end = (start + piece).min(seg.len);
                copies.push((self.keys.segment(&seg.name), start..end));
                start = end;
            }
        }
        let parts = copies.len() as u64 + u64::from(run_len > 0);
        if parts > MAX_PARTS {
            return Err(crate::error::protocol(
                "CompleteMultipartUpload",
                blob_key,
                format!("{parts} parts exceed S3's {MAX_PARTS}; use a larger part_size"),
            ));
        }

        let upload_id = self.client.create_multipart(blob_key).await?;
        state.multipart = Some(PendingMultipart {
            key: blob_key.to_string(),
            upload_id: upload_id.clone(),
        });
        let result = async {
            self.save(state).await?;
            let mut etags: Vec<(u16, String)> = stream::iter(copies.into_iter().enumerate())
                .map(|(i, (source, range))| {
                    let upload_id = &upload_id;
                    async move {
                        let part = part_number(i)?;
                        let etag = self
                            .client
                            .upload_part_copy(blob_key, upload_id, part, &source, range)
                            .await?;
                        Ok::<_, StorageError>((part, etag))
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .try_collect()
                .await?;
            if run_len > 0 {
                let part = part_number(etags.len())?;
                let body = Body::Stream {
                    len: run_len,
                    make: self.concat_body(run, None),
                };
                let etag = self
                    .client
                    .upload_part(blob_key, &upload_id, part, &body)
                    .await?;
                etags.push((part, etag));
            }
            etags.sort_by_key(|(part, _)| *part);
            let etags: Vec<String> = etags.into_iter().map(|(_, e)| e).collect();
            self.client
                .complete_multipart(blob_key, &upload_id, &etags)
                .await
        }
        .await;
        if result.is_err() {
            // Best effort: if this fails too, the id stays recorded for abort.
            let _ = self.client.abort_multipart(blob_key, &upload_id).await;
        }
        result
    }

    pub(crate) async fn abort(&self) -> Result<(), StorageError> {
        match self.load().await {
            Ok((
                SessionState {
                    multipart: Some(pending),
                    ..
                },
                _,
            )) => {
                self.client
                    .abort_multipart(&pending.key, &pending.upload_id)
                    .await?;
            }
            Ok(_) | Err(StorageError::UploadNotFound(_)) => {}
            // A state that does not decode is still removed.
            Err(StorageError::Backend { source, .. })
                if matches!(
                    source.downcast_ref::<S3Error>(),
                    Some(S3Error::CorruptState { .. })
                ) => {}
            Err(e) => return Err(e),
        }
        self.remove_all().await
    }

    /// Deletes the state first (the session is gone from then on), then every object under
    /// the session's folder, including segments of writes that failed half way.
    async fn remove_all(&self) -> Result<(), StorageError> {
        self.client.delete(&self.keys.state()).await?;
        let mut pages = self.client.list_keys(self.keys.dir.clone());
        while let Some(keys) = pages.try_next().await? {
            delete_keys(self.client, keys).await?;
        }
        Ok(())
    }

    async fn delete_segments(&self, names: &[String]) -> Result<(), StorageError> {
        delete_keys(
            self.client,
            names.iter().map(|n| self.keys.segment(n)).collect(),
        )
        .await
    }
}

async fn delete_keys(client: &Arc<Client>, keys: Vec<String>) -> Result<(), StorageError> {
    stream::iter(keys)
        .map(|k| {
            let client = Arc::clone(client);
            async move { client.delete(&k).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>()
        .await
}

fn part_number(index: usize) -> Result<u16, StorageError> {
    u16::try_from(index + 1).map_err(|_| {
        StorageError::backend(crate::error::BACKEND, "more than 65535 parts".to_string())
    })
}

/// The first `len` bytes of each `(key, len)` in turn, fetched one at a time as the stream
/// is read.
fn read_segments(client: Arc<Client>, parts: Vec<(String, u64)>) -> ByteStream {
    stream::iter(parts.into_iter().filter(|(_, len)| *len > 0))
        .then(move |(key, len)| {
            let client = Arc::clone(&client);
            async move {
                match client.get(&key, Some(0..len)).await? {
                    Some((_, stream)) => Ok(stream),
                    None => Err(crate::error::protocol(
                        "GET",
                        &key,
                        "an upload segment is missing",
                    )),
                }
            }
        })
        .try_flatten()
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(lens: &[u64]) -> SessionState {
        SessionState {
            version: STATE_VERSION,
            segments: lens
                .iter()
                .enumerate()
                .map(|(i, &len)| Segment {
                    name: format!("seg-{i}"),
                    len,
                })
                .collect(),
            multipart: None,
        }
    }

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn runs() {
        assert_eq!(state(&[]).run_start(), 0);
        assert_eq!(state(&[1, 2]).run_start(), 0);
        assert_eq!(state(&[8 * MIB, 5 * MIB, 1]).run_start(), 2);
        assert_eq!(state(&[8 * MIB, 5 * MIB]).run_start(), 2);
    }

    #[test]
    fn state_round_trips() {
        let s = state(&[1, 2]);
        let json = serde_json::to_string(&s).unwrap();
        let back: SessionState = serde_json::from_str(&json).unwrap();
        assert_eq!(back.len(), 3);
        assert!(!json.contains("multipart"));
    }
}
