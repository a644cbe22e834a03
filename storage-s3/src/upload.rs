//! Upload sessions, kept entirely in the bucket so any replica can continue any session.
//!
//! A session is a state object (`state.json`) and, from its first write of 5 MiB or more,
//! an S3 multipart upload onto the session's own *data key* (`data/<id>.<nonce>`, see
//! [`crate::layout`]). Writes stream their bytes into parts of that upload as they arrive,
//! so finishing is a `CompleteMultipartUpload` and a small *pointer* object under the
//! blob's digest key that names the data key: each byte is written to S3 once.
//!
//! The state lists, in order: *sources* (readable objects holding the first bytes: the
//! data object once it was completed, or the segments of a session a version-1 store
//! wrote), *parts* (number, ETag, length) of the open multipart upload, and the *run*:
//! segment objects holding writes too short to be a part (S3 wants every part but the
//! last to be at least 5 MiB), fewer than 5 MiB in all. The next part a write sends
//! starts with the run's bytes, streamed back from S3, so each byte is rewritten at most
//! once, and only bytes of writes shorter than 5 MiB ever are.
//!
//! Replicas share sessions, so every change of `state.json` is a `PUT` with `If-Match` on
//! the ETag it was read with: of two racing requests one wins, the other gets `Conflict`.
//! A write takes a window of part numbers with such a `PUT` (a *claim*) before it sends a
//! part, so two writers never send the same part number; a write records its parts only
//! once its whole input is stored, so a write that fails half way changes nothing the
//! session records. Finishing (and reading, which needs the bytes readable) first records
//! that it is *closing* the upload, which stops writes, then completes it.
//!
//! A write of whole parts also claims, when it records them, the numbers the session's
//! next write will likely need (see [`crate::pre_claims`]): in a chunked upload each write is
//! then one `GET` of the state, its parts, and one `PUT` recording them.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use oci_spec_types::Digest;
use serde::{Deserialize, Serialize};
use storage_traits::{ByteStream, StorageError};

use crate::client::{
    Body, Client, META_DATA, META_DIGEST, META_SIZE, ObjectHead, is_no_such_upload,
};
use crate::config::MIN_PART_SIZE;
use crate::error::{BACKEND, S3Error, protocol};
use crate::layout::{Layout, SessionKeys, new_nonce, valid_nonce, valid_segment_name};
use crate::pointer_cache::PointerCache;
use crate::pre_claims::PreClaims;

mod appender;

use appender::Appender;

/// S3's limit on the parts of one multipart upload (and the highest part number).
const MAX_PARTS: u32 = 10_000;
/// Part numbers one claim takes. A write that crashes wastes at most this many of the
/// 10,000; a write needing more claims again.
const CLAIM_WINDOW: u32 = 64;
/// Deletes and aborts in flight at once.
const CONCURRENCY: usize = 4;
const STATE_VERSION: u32 = 2;
/// Far past any part number a session can reach (windows past 10,000 are refused when
/// used); a state beyond it is corrupt.
const MAX_NEXT_PART: u32 = 1_000_000;

/// What `state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionState {
    version: u32,
    /// The data key is `data/<id>.<nonce>`.
    nonce: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sources: Vec<Source>,
    /// The multipart upload on the data key, once a write recorded its parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upload_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    parts: Vec<Part>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    run: Vec<Segment>,
    /// The lowest part number no writer may have used.
    next_part: u32,
    /// Claims that went on to create a multipart upload under the data key: more than
    /// the one the state accounts for means some may be left by a writer that crashed or
    /// lost, found by listing at cleanup.
    #[serde(default)]
    creations: u32,
    /// The length of the last write recorded (a hint of how long the next one will be).
    #[serde(default)]
    last_write: u64,
    /// The claim of the write in progress (a random token: every claim's state differs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    closing: Option<Closing>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Source {
    /// The data object, holding the session's first `len` bytes.
    Data { len: u64 },
    /// A segment object of a version-1 session (`len` bytes of it belong to the session).
    Segment { name: String, len: u64 },
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Source::Data { len } | Source::Segment { len, .. } => *len,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Part {
    number: u32,
    etag: String,
    len: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Segment {
    name: String,
    len: u64,
}

/// The multipart upload is being completed: writes are refused from here on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Closing {
    /// The digest whose key will point at the data (a finish); an abort after a crash
    /// keeps the data if that pointer exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    publish: Option<String>,
    /// The part number the run is sent as, the last part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_part: Option<u32>,
}

impl SessionState {
    fn new() -> Self {
        SessionState {
            version: STATE_VERSION,
            nonce: new_nonce(),
            sources: Vec::new(),
            upload_id: None,
            parts: Vec::new(),
            run: Vec::new(),
            next_part: 1,
            creations: 0,
            last_write: 0,
            claim: None,
            closing: None,
        }
    }

    fn run_len(&self) -> u64 {
        self.run.iter().fold(0u64, |n, s| n.saturating_add(s.len))
    }

    fn len(&self) -> u64 {
        let sources = self
            .sources
            .iter()
            .fold(0u64, |n, s| n.saturating_add(s.len()));
        let parts = self.parts.iter().fold(0u64, |n, p| n.saturating_add(p.len));
        sources.saturating_add(parts).saturating_add(self.run_len())
    }

    /// Whether a multipart upload this state does not account for may exist.
    fn orphans_possible(&self) -> bool {
        let accounted = self.upload_id.is_some()
            || self.closing.is_some()
            || self
                .sources
                .iter()
                .any(|s| matches!(s, Source::Data { .. }));
        self.creations > u32::from(accounted)
    }

    /// Whether the data object may exist (completed, or being completed).
    fn data_may_exist(&self) -> bool {
        self.closing.is_some()
            || self
                .sources
                .iter()
                .any(|s| matches!(s, Source::Data { .. }))
    }

    /// Whether `window` can be the claim this state records for the next write: the last
    /// numbers below `next_part`, past every part, in a session in parts with no run (the
    /// state a write that claimed ahead saved).
    fn pre_claimed(&self, window: &Range<u32>) -> bool {
        self.claim.is_some()
            && self.closing.is_none()
            && self.upload_id.is_some()
            && self.sources.is_empty()
            && self.run.is_empty()
            && window.start < window.end
            && window.end == self.next_part
            && self.parts.last().is_some_and(|p| p.number < window.start)
    }

    /// What a state must satisfy to be used: names that stay inside the session, part
    /// numbers in order and below `next_part`, a digest that parses.
    fn check(&self) -> Result<(), String> {
        if !valid_nonce(&self.nonce) {
            return Err(format!("bad nonce {:?}", self.nonce));
        }
        if self.run_len() >= MIN_PART_SIZE as u64 {
            return Err(format!("a run of {} bytes", self.run_len()));
        }
        if self.next_part == 0 || self.next_part > MAX_NEXT_PART {
            return Err(format!("next part {}", self.next_part));
        }
        let names = self
            .run
            .iter()
            .map(|s| &s.name)
            .chain(self.sources.iter().filter_map(|s| match s {
                Source::Segment { name, .. } => Some(name),
                Source::Data { .. } => None,
            }));
        for name in names {
            if !valid_segment_name(name) {
                return Err(format!("bad segment name {name:?}"));
            }
        }
        let mut last = 0;
        for p in &self.parts {
            if p.number <= last || p.number >= self.next_part || p.number > MAX_PARTS {
                return Err(format!("part number {} out of order", p.number));
            }
            last = p.number;
        }
        if !self.parts.is_empty() && (self.upload_id.is_none() || !self.sources.is_empty()) {
            return Err("parts without their multipart upload, or after sources".into());
        }
        if let Some(d) = self.closing.as_ref().and_then(|c| c.publish.as_ref()) {
            d.parse::<Digest>()
                .map_err(|e| format!("bad digest {d:?}: {e}"))?;
        }
        Ok(())
    }
}

/// A session closed for a blob staged into it, as its state was saved.
pub(crate) struct ClosedSession {
    state: SessionState,
    etag: String,
}

/// One session's keys and the client to reach them.
pub(crate) struct Session<'a> {
    pub(crate) client: &'a Arc<Client>,
    pub(crate) layout: &'a Layout,
    pub(crate) keys: SessionKeys,
    pub(crate) id: &'a str,
    pub(crate) part_size: usize,
    pub(crate) concurrency: usize,
    pub(crate) pre_claims: &'a PreClaims,
    pub(crate) pointers: &'a PointerCache,
}

impl Session<'_> {
    fn corrupt(&self, message: String) -> StorageError {
        S3Error::CorruptState {
            key: self.keys.state(),
            message,
        }
        .into()
    }

    /// The session's state and the ETag of the object it was read from.
    async fn load(&self) -> Result<(SessionState, String), StorageError> {
        let key = self.keys.state();
        let Some((etag, bytes)) = self.client.get_tagged(&key).await? else {
            return Err(StorageError::UploadNotFound(self.id.to_string()));
        };
        Ok((self.decode(&bytes).await?, etag))
    }

    async fn decode(&self, bytes: &[u8]) -> Result<SessionState, StorageError> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let Version { version } =
            serde_json::from_slice(bytes).map_err(|e| self.corrupt(e.to_string()))?;
        let state = match version {
            STATE_VERSION => {
                serde_json::from_slice(bytes).map_err(|e| self.corrupt(e.to_string()))?
            }
            1 => self.decode_version_1(bytes).await?,
            other => return Err(self.corrupt(format!("unknown version {other}"))),
        };
        state.check().map_err(|m| self.corrupt(m))?;
        Ok(state)
    }

    /// A session a version-1 store wrote (segments only, each big one readable), as a
    /// version-2 state whose big segments are sources; saved as such by its next change.
    async fn decode_version_1(&self, bytes: &[u8]) -> Result<SessionState, StorageError> {
        #[derive(Deserialize)]
        struct V1 {
            segments: Vec<Segment>,
            multipart: Option<V1Multipart>,
        }
        #[derive(Deserialize)]
        struct V1Multipart {
            key: String,
            upload_id: String,
        }
        let v1: V1 = serde_json::from_slice(bytes).map_err(|e| self.corrupt(e.to_string()))?;
        if let Some(m) = v1.multipart {
            // A version-1 finish that stopped half way, straight onto a blob key: of no
            // use now (that finish aborted it itself on a retry).
            if self.layout.parse_blob_key(&m.key).is_none() {
                return Err(self.corrupt(format!("multipart upload on {:?}", m.key)));
            }
            self.client.abort_multipart(&m.key, &m.upload_id).await?;
        }
        let run_start = v1
            .segments
            .iter()
            .rposition(|s| s.len >= MIN_PART_SIZE as u64)
            .map_or(0, |i| i + 1);
        let mut state = SessionState::new();
        let mut segments = v1.segments;
        state.run = segments.split_off(run_start);
        state.sources = segments
            .into_iter()
            .map(|s| Source::Segment {
                name: s.name,
                len: s.len,
            })
            .collect();
        Ok(state)
    }

    fn encode(&self, state: &SessionState) -> Result<Body, StorageError> {
        let json = serde_json::to_vec(state).map_err(|e| self.corrupt(e.to_string()))?;
        Ok(Body::Bytes(Bytes::from(json)))
    }

    /// Saves `state` only if `state.json` is still the one read (ETag `etag`), and returns
    /// the new ETag: a request whose session another request changed meanwhile loses with
    /// `Conflict`, instead of replacing what the other recorded.
    async fn save(&self, state: &SessionState, etag: &str) -> Result<String, StorageError> {
        self.client
            .put_if_match(&self.keys.state(), &self.encode(state)?, etag, self.id)
            .await
    }

    fn data_key(&self, state: &SessionState) -> String {
        self.keys.data(&state.nonce)
    }

    fn source_key(&self, state: &SessionState, source: &Source) -> String {
        match source {
            Source::Data { .. } => self.data_key(state),
            Source::Segment { name, .. } => self.keys.segment(name),
        }
    }

    /// Creates the session, empty; a session already under this id is aborted first.
    pub(crate) async fn start(&self) -> Result<(), StorageError> {
        self.pre_claims.take(self.id);
        let body = self.encode(&SessionState::new())?;
        let key = self.keys.state();
        if self.client.put_if_absent(&key, &body, &[]).await?.is_some() {
            return Ok(());
        }
        self.abort().await?;
        self.client.put(&key, &body).await
    }

    pub(crate) async fn write(&self, offset: u64, data: ByteStream) -> Result<u64, StorageError> {
        let (state, etag) = self.load().await?;
        if state.closing.is_some() {
            return Err(StorageError::Conflict(format!(
                "upload {} is being finished",
                self.id
            )));
        }
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
            // `BlobCapabilities::shared_sessions`). A write that failed half way recorded
            // nothing, so its retry does not land here.
            return Err(StorageError::Conflict(format!(
                "upload {} holds {len} bytes; a write at {offset} would replace some",
                self.id
            )));
        }
        let pre_claim = self
            .pre_claims
            .take(self.id)
            .filter(|c| c.etag == etag && state.pre_claimed(&c.window));
        let mut appender = Appender::new(self, state, etag);
        if let Some(claim) = pre_claim {
            appender.claimed(claim.window, false);
        }
        let added = appender.append(data).await?;
        appender.commit().await?;
        Ok(len + added)
    }

    pub(crate) async fn read(&self) -> Result<ByteStream, StorageError> {
        let (mut state, mut etag) = self.load().await?;
        if !state.parts.is_empty() {
            // Parts of an unfinished multipart upload cannot be read back: complete it.
            self.seal(&mut state, &mut etag, None).await?;
        }
        let parts = state
            .sources
            .iter()
            .map(|s| (self.source_key(&state, s), s.len()))
            .chain(
                state
                    .run
                    .iter()
                    .map(|s| (self.keys.segment(&s.name), s.len)),
            )
            .collect();
        Ok(read_objects(Arc::clone(self.client), parts))
    }

    pub(crate) async fn finish(&self, digest: &Digest, size: u64) -> Result<(), StorageError> {
        self.pre_claims.take(self.id);
        let (mut state, mut etag) = self.load().await?;
        // Bytes are only ever appended, so the first `size` bytes are the ones the caller
        // hashed; a length other than `size` means another request wrote after it.
        let len = state.len();
        if len != size {
            return Err(StorageError::Conflict(format!(
                "upload {} holds {len} bytes, not the {size} being finished",
                self.id
            )));
        }
        let blob_key = self.layout.blob_key(digest);
        let data_key = self.data_key(&state);
        if state.parts.is_empty() && state.sources.is_empty() {
            // Under 5 MiB, all in the run: one PUT of the whole blob, as atomic as S3 gets.
            // A blob this short is never a pointer, so one already there has these very
            // bytes (its key is their digest), and writing them again changes nothing.
            let body = match state.run_len() {
                0 => Body::Empty,
                len => Body::Stream {
                    len,
                    make: self.concat_body(&state.run, Vec::new()),
                },
            };
            self.client.put(&blob_key, &body).await?;
            return self.cleanup(&state, false, false).await;
        }
        let sealed = matches!(state.sources.as_slice(), [Source::Data { .. }])
            && state.parts.is_empty()
            && state.run.is_empty();
        if !state.sources.is_empty() && !sealed {
            // Segments of a version-1 session, or a completed data object with writes
            // after it: copied into a new multipart upload, server-side.
            let mut appender = Appender::new(self, state, etag);
            appender.claim().await?;
            appender.commit().await?;
            (state, etag) = self.load().await?;
        }
        self.seal(&mut state, &mut etag, Some(digest)).await?;
        let ours = self.publish_pointer(digest, &data_key, size).await?;
        self.cleanup(&state, ours, false).await
    }

    /// Writes the pointer at `digest`'s key naming `data_key` (`size` bytes), unless the
    /// blob is already there: true if the pointer names `data_key` afterwards (and the
    /// pointer cache says so: the blob is likely read soon), false if an intact blob was
    /// kept (and `data_key` is the caller's to delete).
    async fn publish_pointer(
        &self,
        digest: &Digest,
        data_key: &str,
        size: u64,
    ) -> Result<bool, StorageError> {
        let ours = self.write_pointer(digest, data_key, size).await?;
        if ours {
            self.pointers
                .insert(digest.clone(), (data_key.to_string(), size));
        }
        Ok(ours)
    }

    async fn write_pointer(
        &self,
        digest: &Digest,
        data_key: &str,
        size: u64,
    ) -> Result<bool, StorageError> {
        let blob_key = &self.layout.blob_key(digest);
        let metadata = [
            (META_DATA, self.layout.relative(data_key).to_string()),
            (META_SIZE, size.to_string()),
        ];
        if self
            .client
            .put_meta(blob_key, &Body::Empty, &metadata, true)
            .await?
            .is_some()
        {
            return Ok(true);
        }
        // Published by another session meanwhile (or by this one's earlier attempt).
        if let Some(h) = self.client.head_object(blob_key).await? {
            match self.existing(&h, data_key).await? {
                Existing::Ours => return Ok(true),
                Existing::Intact => return Ok(false),
                Existing::Dangling => {}
            }
        }
        self.client
            .put_meta(blob_key, &Body::Empty, &metadata, false)
            .await?;
        Ok(true)
    }

    /// Writes a staged blob (`stage_blob`: digest and length known, no session state) in
    /// one `PUT` of `data` to a fresh data key of this id, which records `digest`, and
    /// returns that key. A failed `PUT` stores nothing; the stream's own error is returned
    /// when it was the stream that failed.
    pub(crate) async fn stage(
        &self,
        digest: &Digest,
        size: u64,
        data: ByteStream,
    ) -> Result<String, StorageError> {
        let data_key = self.keys.data(&new_nonce());
        let metadata = [(META_DIGEST, digest.to_string())];
        self.put_staged(&data_key, size, data, &metadata).await?;
        Ok(data_key)
    }

    /// One `PUT` of `data` (`size` bytes) to `data_key`. A failed `PUT` stores nothing;
    /// the stream's own error is returned when it was the stream that failed.
    async fn put_staged(
        &self,
        data_key: &str,
        size: u64,
        data: ByteStream,
        metadata: &[(&str, String)],
    ) -> Result<(), StorageError> {
        let failure = Arc::new(std::sync::Mutex::new(None));
        let kept = Arc::clone(&failure);
        let data = data
            .map(move |item| {
                item.map_err(|e| {
                    if let Ok(mut slot) = kept.lock() {
                        slot.get_or_insert(e);
                    }
                    StorageError::Input("the blob's stream failed".into())
                })
            })
            .boxed();
        match self.client.put_once(data_key, size, data, metadata).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // S3 keeps nothing of a PUT whose body broke off; this is for servers that
                // might, and its failure leaves the key to the id's abort.
                let _ = self.client.delete(data_key).await;
                let stream_error = failure.lock().ok().and_then(|mut slot| slot.take());
                Err(stream_error.unwrap_or(e))
            }
        }
    }

    /// Publishes a blob [`Session::stage`] wrote: its pointer, or, when the blob is already
    /// there, deletes the staged copy.
    pub(crate) async fn publish_staged(
        &self,
        data_key: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), StorageError> {
        if !self.publish_pointer(digest, data_key, size).await? {
            self.client.delete(data_key).await?;
        }
        Ok(())
    }

    /// Closes this open, empty session for a blob staged into it (`stage_blob` of a whole
    /// blob `PUT` after a `POST`): records `digest` as being published, so writes are
    /// refused from here on and an abort after a crash keeps the data only if that
    /// digest's pointer names it. `None` if the session is not simply empty (it was read
    /// back, or is being finished): the caller stages through the session instead.
    pub(crate) async fn close_empty(
        &self,
        digest: &Digest,
    ) -> Result<Option<ClosedSession>, StorageError> {
        let (mut state, etag) = self.load().await?;
        if state.len() != 0 || !state.sources.is_empty() || state.closing.is_some() {
            return Ok(None);
        }
        state.closing = Some(Closing {
            publish: Some(digest.to_string()),
            last_part: None,
        });
        // A writer that claimed part numbers finds the state changed and stores nothing;
        // a multipart upload it created is counted in `creations`, so `cleanup` lists it.
        state.claim = None;
        let etag = self.save(&state, &etag).await?;
        Ok(Some(ClosedSession { state, etag }))
    }

    /// Writes a blob into a session [`Session::close_empty`] closed: one `PUT` of `data`
    /// to the session's data key.
    pub(crate) async fn stage_closed(
        &self,
        closed: &ClosedSession,
        size: u64,
        data: ByteStream,
    ) -> Result<(), StorageError> {
        let data_key = self.data_key(&closed.state);
        self.put_staged(&data_key, size, data, &[]).await
    }

    /// Publishes the blob staged into a closed session (its pointer; or, with `held`, its
    /// bytes under the blob's key), then removes the session as `finish` does.
    pub(crate) async fn publish_closed(
        &self,
        closed: &ClosedSession,
        digest: &Digest,
        size: u64,
        held: Option<Vec<Bytes>>,
    ) -> Result<(), StorageError> {
        let blob_key = self.layout.blob_key(digest);
        let ours = match held {
            Some(chunks) => {
                // A blob this short is never a pointer, so one already there has these
                // very bytes.
                self.client
                    .put_if_absent(&blob_key, &Body::Chunks(chunks), &[])
                    .await?;
                false
            }
            None => {
                let data_key = self.data_key(&closed.state);
                self.publish_pointer(digest, &data_key, size).await?
            }
        };
        self.cleanup(&closed.state, ours, false).await
    }

    /// Opens a session [`Session::close_empty`] closed again, empty: its staged data
    /// deleted, the closing record removed (with `If-Match`).
    pub(crate) async fn reopen(&self, closed: ClosedSession) -> Result<(), StorageError> {
        let ClosedSession { mut state, etag } = closed;
        self.client.delete(&self.data_key(&state)).await?;
        state.closing = None;
        self.save(&state, &etag).await.map(drop)
    }

    /// Deletes the data objects staged under this id (they carry their digest; a session's
    /// data does not, and is left to its state) that no pointer names: what a process that
    /// died between staging and publishing left.
    async fn remove_staged(&self) -> Result<(), StorageError> {
        let mut pages = self.client.list_keys(self.keys.data_prefix.clone());
        while let Some(keys) = pages.try_next().await? {
            for key in keys {
                let Some(head) = self.client.head_object(&key).await? else {
                    continue;
                };
                let Some(digest) = head.digest.and_then(|d| d.parse::<Digest>().ok()) else {
                    continue;
                };
                let named = match self
                    .client
                    .head_object(&self.layout.blob_key(&digest))
                    .await?
                {
                    Some(h) => matches!(self.existing(&h, &key).await?, Existing::Ours),
                    None => false,
                };
                if !named {
                    self.client.delete(&key).await?;
                }
            }
        }
        Ok(())
    }

    /// What the object already at a blob's key is to a session with data key `data_key`.
    async fn existing(&self, head: &ObjectHead, data_key: &str) -> Result<Existing, StorageError> {
        let Some(relative) = &head.data else {
            return Ok(Existing::Intact);
        };
        if self.layout.data_key_of_pointer(relative).as_deref() == Some(data_key) {
            return Ok(Existing::Ours);
        }
        match self.layout.data_key_of_pointer(relative) {
            Some(other) if self.client.head(&other).await?.is_some() => Ok(Existing::Intact),
            // Its data is gone: a delete that stopped half way (data first, then pointer).
            _ => Ok(Existing::Dangling),
        }
    }

    /// Completes the multipart upload into the data object, so that it holds every byte of
    /// the session: afterwards the state's only source is the data object. With
    /// `publish`, the digest is recorded first (an abort after a crash keeps the data if
    /// that digest's pointer names it), and the completed state is not saved: `finish`
    /// goes on to publish and remove the session, and a retry finds the upload completed.
    async fn seal(
        &self,
        state: &mut SessionState,
        etag: &mut String,
        publish: Option<&Digest>,
    ) -> Result<(), StorageError> {
        // A finish saves nothing after completing (see above); a read does.
        let save_after = publish.is_none();
        let publish = publish
            .map(Digest::to_string)
            .or_else(|| state.closing.as_ref().and_then(|c| c.publish.clone()));
        let data_key = self.data_key(state);
        let Some(upload_id) = state.upload_id.clone() else {
            // Already one data object: only the digest to record.
            if publish.is_some()
                && state.closing.as_ref().and_then(|c| c.publish.as_ref()) != publish.as_ref()
            {
                state.closing = Some(Closing {
                    publish,
                    last_part: None,
                });
                *etag = self.save(state, etag).await?;
            }
            return Ok(());
        };
        let needs_record = match &state.closing {
            None => true,
            Some(c) => c.publish != publish,
        };
        if needs_record {
            let mut closing = state.closing.take().unwrap_or_default();
            closing.publish = publish.clone();
            if closing.last_part.is_none() && !state.run.is_empty() {
                closing.last_part = Some(state.next_part);
                state.next_part = state.next_part.saturating_add(1);
            }
            state.closing = Some(closing);
            state.claim = None;
            *etag = self.save(state, etag).await?;
        }
        let mut parts: Vec<(u32, String)> = state
            .parts
            .iter()
            .map(|p| (p.number, p.etag.clone()))
            .collect();
        let last_part = state.closing.as_ref().and_then(|c| c.last_part);
        let len = state.len();
        let completed = async {
            if let (Some(number), false) = (last_part, state.run.is_empty()) {
                let body = Body::Stream {
                    len: state.run_len(),
                    make: self.concat_body(&state.run, Vec::new()),
                };
                let etag = self
                    .client
                    .upload_part(&data_key, &upload_id, part_number(number)?, &body)
                    .await?;
                parts.push((number, etag));
            }
            let mut numbered = Vec::with_capacity(parts.len());
            for (number, etag) in parts {
                numbered.push((part_number(number)?, etag));
            }
            self.client
                .complete_multipart(&data_key, &upload_id, &numbered)
                .await
        }
        .await;
        match completed {
            Ok(()) => {}
            // An earlier attempt completed it (and crashed before recording so).
            Err(e) if is_no_such_upload(&e) => {
                if self.client.head(&data_key).await? != Some(len) {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
        let run = std::mem::take(&mut state.run);
        state.sources = vec![Source::Data { len }];
        state.parts.clear();
        state.upload_id = None;
        state.closing = publish.map(|publish| Closing {
            publish: Some(publish),
            last_part: None,
        });
        if save_after {
            *etag = self.save(state, etag).await?;
            // Now in the data object; failing to delete them leaves garbage under the
            // session that finish and abort remove, so it is not an error.
            let keys: Vec<String> = run.iter().map(|s| self.keys.segment(&s.name)).collect();
            delete_keys(self.client, keys).await.ok();
        }
        Ok(())
    }

    pub(crate) async fn abort(&self) -> Result<(), StorageError> {
        self.pre_claims.take(self.id);
        match self.load().await {
            Ok((state, _)) => {
                let keep = match state.closing.as_ref().and_then(|c| c.publish.as_ref()) {
                    Some(d) => {
                        let digest: Digest = d.parse().map_err(|_| self.corrupt(d.clone()))?;
                        let blob_key = self.layout.blob_key(&digest);
                        match self.client.head_object(&blob_key).await? {
                            Some(h) => matches!(
                                self.existing(&h, &self.data_key(&state)).await?,
                                Existing::Ours
                            ),
                            None => false,
                        }
                    }
                    None => false,
                };
                self.cleanup(&state, keep, true).await
            }
            Err(StorageError::UploadNotFound(_)) => {
                self.abort_multiparts().await?;
                self.remove_staged().await?;
                self.remove_all().await
            }
            // A state that does not decode is still removed.
            Err(StorageError::Backend { source, .. })
                if matches!(
                    source.downcast_ref::<S3Error>(),
                    Some(S3Error::CorruptState { .. })
                ) =>
            {
                self.abort_multiparts().await?;
                self.remove_all().await
            }
            Err(e) => Err(e),
        }
    }

    /// Removes everything of the session: its multipart uploads (listed, when some may
    /// not be recorded, or always with `list`), its data object unless `keep_data` (a
    /// blob points at it), its state, then its segments.
    async fn cleanup(
        &self,
        state: &SessionState,
        keep_data: bool,
        list: bool,
    ) -> Result<(), StorageError> {
        if list || state.orphans_possible() {
            self.abort_multiparts().await?;
        } else if let Some(upload_id) = &state.upload_id {
            self.client
                .abort_multipart(&self.data_key(state), upload_id)
                .await?;
        }
        if !keep_data && state.data_may_exist() {
            self.client.delete(&self.data_key(state)).await?;
        }
        self.remove_all().await
    }

    /// Aborts every multipart upload under the session's data prefix, recorded or not.
    async fn abort_multiparts(&self) -> Result<(), StorageError> {
        let uploads = self.client.list_multipart(&self.keys.data_prefix).await?;
        stream::iter(uploads)
            .map(|(key, upload_id)| async move {
                self.client.abort_multipart(&key, &upload_id).await
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await
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

    /// A body factory streaming `segments` from S3 (each cut to its `len`), then `tail`.
    fn concat_body(&self, segments: &[Segment], tail: Vec<Bytes>) -> BodyMaker {
        concat(Arc::clone(self.client), self.segment_keys(segments), tail)
    }

    fn segment_keys(&self, segments: &[Segment]) -> Vec<(String, u64)> {
        segments
            .iter()
            .map(|s| (self.keys.segment(&s.name), s.len))
            .collect()
    }
}

/// What is already at a blob's key, for a session about to publish there.
enum Existing {
    /// A pointer at this session's data key (an earlier attempt of this finish).
    Ours,
    /// The blob, complete (its bytes, or a pointer at data that exists).
    Intact,
    /// A pointer whose data is gone.
    Dangling,
}

type BodyMaker = Arc<dyn Fn() -> ByteStream + Send + Sync>;

/// A body factory streaming the objects `parts` from S3 (each cut to its length), then
/// `tail`.
fn concat(client: Arc<Client>, parts: Vec<(String, u64)>, tail: Vec<Bytes>) -> BodyMaker {
    Arc::new(move || {
        let tail: Vec<Result<Bytes, StorageError>> = tail.iter().cloned().map(Ok).collect();
        read_objects(Arc::clone(&client), parts.clone())
            .chain(stream::iter(tail))
            .boxed()
    })
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

fn part_number(number: u32) -> Result<u16, StorageError> {
    u16::try_from(number)
        .ok()
        .filter(|n| u32::from(*n) <= MAX_PARTS)
        .ok_or_else(|| {
            StorageError::backend(BACKEND, format!("part number {number} is past S3's limit"))
        })
}

/// The first `len` bytes of each `(key, len)` in turn, fetched one at a time as the stream
/// is read.
fn read_objects(client: Arc<Client>, parts: Vec<(String, u64)>) -> ByteStream {
    stream::iter(parts.into_iter().filter(|(_, len)| *len > 0))
        .then(move |(key, len)| {
            let client = Arc::clone(&client);
            async move {
                match client.get(&key, Some(0..len)).await? {
                    Some((_, stream)) => Ok(stream),
                    None => Err(protocol("GET", &key, "an upload's object is missing")),
                }
            }
        })
        .try_flatten()
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::new_segment_name;

    const MIB: u64 = 1024 * 1024;

    fn state(parts: &[u64], run: &[u64]) -> SessionState {
        let mut s = SessionState::new();
        s.upload_id = (!parts.is_empty()).then(|| "u".to_string());
        s.parts = parts
            .iter()
            .enumerate()
            .map(|(i, &len)| Part {
                number: i as u32 + 1,
                etag: format!("\"{i}\""),
                len,
            })
            .collect();
        s.next_part = parts.len() as u32 + 1;
        s.run = run
            .iter()
            .map(|&len| Segment {
                name: new_segment_name(),
                len,
            })
            .collect();
        s
    }

    #[test]
    fn lengths_and_round_trip() {
        let s = state(&[8 * MIB, 6 * MIB], &[1, 2]);
        assert_eq!(s.len(), 14 * MIB + 3);
        assert_eq!(s.run_len(), 3);
        let json = serde_json::to_string(&s).unwrap();
        let back: SessionState = serde_json::from_str(&json).unwrap();
        assert_eq!(back.len(), s.len());
        assert!(back.check().is_ok());
        assert!(
            !json.contains("closing") && !json.contains("sources"),
            "{json}"
        );
    }

    #[test]
    fn states_that_would_escape_or_reorder_are_refused() {
        let mut s = state(&[8 * MIB, 6 * MIB], &[]);
        s.parts.swap(0, 1);
        assert!(s.check().is_err());
        let mut s = state(&[8 * MIB], &[]);
        s.next_part = 1;
        assert!(s.check().is_err(), "a part at or past next_part");
        let mut s = state(&[], &[5]);
        s.run[0].name = "../../blobs/x".into();
        assert!(s.check().is_err());
        let mut s = state(&[], &[]);
        s.nonce = "../x".into();
        assert!(s.check().is_err());
        let mut s = state(&[], &[]);
        s.closing = Some(Closing {
            publish: Some("sha256:nothex".into()),
            last_part: None,
        });
        assert!(s.check().is_err());
        let mut s = state(&[8 * MIB], &[]);
        s.upload_id = None;
        assert!(s.check().is_err(), "parts without an upload");
    }

    #[test]
    fn part_numbers_stop_at_the_limit() {
        assert_eq!(part_number(1).unwrap(), 1);
        assert_eq!(part_number(10_000).unwrap(), 10_000);
        assert!(part_number(10_001).is_err());
        assert!(part_number(70_000).is_err());
    }
}
