//! One write in progress ([`Appender`]): the input cut into parts sent while their bytes
//! arrive, under part numbers claimed in `state.json`, recorded once the input is done.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use storage_traits::{ByteStream, StorageError};
use tokio::task::{AbortHandle, JoinSet};

use super::{
    CLAIM_WINDOW, MAX_PARTS, Part, Segment, Session, SessionState, Source, delete_keys, part_number,
};
use crate::client::Body;
use crate::config::{MAX_PART_SIZE, MIN_PART_SIZE};
use crate::error::{BACKEND, protocol};
use crate::layout::{new_nonce, new_segment_name};
use crate::pre_claims::PreClaim;

/// Bytes of one part, not sent yet: the run's segments (streamed back from S3), then
/// buffers.
struct Pending {
    run: Vec<Segment>,
    chunks: Vec<Bytes>,
}

impl Pending {
    fn len(&self) -> u64 {
        self.run.iter().map(|s| s.len).sum::<u64>()
            + self.chunks.iter().map(|c| c.len() as u64).sum::<u64>()
    }
}

/// The part being sent while its bytes arrive.
struct Streaming {
    /// The input's buffers, on their way into the request body.
    feed: mpsc::UnboundedSender<Result<Bytes, StorageError>>,
    /// All of the part's buffers once it is whole, for the task to send again if the
    /// streamed attempt failed.
    whole: oneshot::Sender<Vec<Bytes>>,
    task: AbortHandle,
}

/// One write in progress: cuts the input into parts and sends each, several at once, into
/// the session's multipart upload while its bytes arrive; records them when the input is
/// done.
pub(super) struct Appender<'s, 'a> {
    session: &'s Session<'a>,
    /// The state as saved (with this write's claim, once made), and its ETag.
    base: SessionState,
    etag: String,
    /// The part numbers this write may still use, once claimed.
    window: Option<Range<u32>>,
    /// The first number of the claim, and whether this write saved it (rather than found
    /// it claimed ahead for it).
    claimed_from: u32,
    saved_claim: bool,
    upload_id: Option<String>,
    /// The recorded run is still to be sent, as the start of the next part.
    carry_run: bool,
    /// The part being filled: the input's own buffers (not copied), their length, and how
    /// long the part is to be.
    cur: Vec<Bytes>,
    cur_len: usize,
    cur_target: usize,
    /// Set once the part being filled holds `stream_from` bytes: from then on it is sent as
    /// it fills.
    streaming: Option<Streaming>,
    stream_from: u64,
    sending: JoinSet<Result<Part, StorageError>>,
    sent: Vec<Part>,
    new_run: Vec<Segment>,
    /// Sources copied into the multipart upload (a data object, version-1 segments).
    unsealed: bool,
    /// Bytes of input so far.
    written: u64,
}

impl<'s, 'a> Appender<'s, 'a> {
    pub(super) fn new(session: &'s Session<'a>, base: SessionState, etag: String) -> Self {
        let carry_run = !base.run.is_empty();
        let cur_target = session.part_size - base.run_len() as usize;
        // The first part: one that starts with the run is sent once whole (or at the end),
        // the run's bytes being read back for it; after a write of a whole part or more in
        // a session already in parts (a chunked upload), from its first byte, this write
        // being most likely as long; otherwise once it could stand as a part, so a small
        // blob never starts a multipart upload. Later parts: from 5 MiB.
        let stream_from = if carry_run {
            u64::MAX
        } else if !base.parts.is_empty() && base.last_write >= session.part_size as u64 {
            1
        } else {
            MIN_PART_SIZE as u64
        };
        Appender {
            session,
            upload_id: base.upload_id.clone(),
            base,
            etag,
            window: None,
            claimed_from: 0,
            saved_claim: false,
            carry_run,
            cur: Vec::new(),
            cur_len: 0,
            cur_target,
            streaming: None,
            stream_from,
            sending: JoinSet::new(),
            sent: Vec::new(),
            new_run: Vec::new(),
            unsealed: false,
            written: 0,
        }
    }

    /// Part numbers `window` are this write's: claimed by it (`saved`), or ahead for it.
    pub(super) fn claimed(&mut self, window: Range<u32>, saved: bool) {
        self.claimed_from = window.start;
        self.saved_claim = saved;
        self.window = Some(window);
    }

    /// The bytes of the part being filled, the run included if it goes first.
    fn part_len(&self) -> u64 {
        let run = if self.carry_run {
            self.base.run_len()
        } else {
            0
        };
        run + self.cur_len as u64
    }

    /// Sends `data`; returns how many bytes it held. Nothing is recorded yet.
    ///
    /// A part is sent as its bytes arrive, declared `part_size` long, once it holds 5 MiB
    /// (from its first byte in a session already in parts): the input could end before
    /// the part is whole, and a part under 5 MiB may only be the last. If the input does
    /// end inside it, that request is dropped and the part sent again as long as it turned
    /// out; under 5 MiB, its bytes are stored as a segment of the run.
    pub(super) async fn append(&mut self, mut data: ByteStream) -> Result<u64, StorageError> {
        let mut total = 0u64;
        while let Some(chunk) = data.next().await {
            // The input's error is returned as is; parts sent so far are not recorded (and
            // the request in progress is dropped with this appender).
            let mut chunk = chunk?;
            total += chunk.len() as u64;
            self.written = total;
            while !chunk.is_empty() {
                let take = (self.cur_target - self.cur_len).min(chunk.len());
                let piece = chunk.split_to(take);
                if let Some(s) = &self.streaming {
                    // A failed attempt has dropped its end: the task waits for `whole`.
                    let _ = s.feed.unbounded_send(Ok(piece.clone()));
                }
                self.cur.push(piece);
                self.cur_len += take;
                if self.streaming.is_none() && self.part_len() >= self.stream_from {
                    self.start_streaming().await?;
                }
                if self.cur_len == self.cur_target {
                    self.part_filled().await?;
                }
            }
        }
        let part_len = self.part_len();
        let rest = std::mem::take(&mut self.cur);
        let rest_len = std::mem::take(&mut self.cur_len);
        if let Some(cut) = self.streaming.take() {
            // Shorter than declared: that request can only fail. Sent again below as the
            // part it turned out to be, or stored as a segment.
            cut.task.abort();
        }
        if rest_len > 0 {
            if part_len >= MIN_PART_SIZE as u64 {
                let pending = self.take_pending(rest);
                self.send(pending).await?;
            } else {
                self.store_segment(rest).await?;
            }
        }
        while let Some(part) = self.sending.join_next().await {
            self.sent.extend(joined(part)?);
        }
        Ok(total)
    }

    /// Starts sending the part being filled: what it holds now, then what arrives.
    async fn start_streaming(&mut self) -> Result<(), StorageError> {
        // Never a part that starts with the run (see `new`): only the input's bytes.
        if self.carry_run {
            return Err(StorageError::backend(
                BACKEND,
                "a run's part sent as it fills",
            ));
        }
        self.claim().await?;
        let number = self.next_number().await?;
        let len = self.cur_target as u64;
        let (feed, fed) = mpsc::unbounded();
        for piece in &self.cur {
            let _ = feed.unbounded_send(Ok(piece.clone()));
        }
        let (whole, whole_rx) = oneshot::channel::<Vec<Bytes>>();
        let client = Arc::clone(self.session.client);
        let (data_key, upload_id) = (self.session.data_key(&self.base), self.upload_id());
        let task = self
            .spawn(async move {
                let part = part_number(number)?;
                let etag = match client
                    .upload_part_once(&data_key, &upload_id, part, len, fed.boxed())
                    .await
                {
                    Ok(etag) => etag,
                    Err(_) => {
                        // Sent again, with retries, once all of it has arrived.
                        let chunks = whole_rx.await.map_err(|_| {
                            StorageError::backend(BACKEND, "the write ended inside a part")
                        })?;
                        client
                            .upload_part(&data_key, &upload_id, part, &Body::Chunks(chunks))
                            .await?
                    }
                };
                Ok(Part { number, etag, len })
            })
            .await?;
        self.streaming = Some(Streaming { feed, whole, task });
        Ok(())
    }

    /// The part being filled is whole: its request's body ends, and the next part begins.
    async fn part_filled(&mut self) -> Result<(), StorageError> {
        let chunks = std::mem::take(&mut self.cur);
        self.cur_len = 0;
        self.cur_target = self.session.part_size;
        self.stream_from = MIN_PART_SIZE as u64;
        match self.streaming.take() {
            Some(s) => {
                let _ = s.whole.send(chunks);
                drop(s.feed);
            }
            None => {
                let pending = self.take_pending(chunks);
                self.send(pending).await?;
            }
        }
        while self.sending.len() > self.session.concurrency {
            if let Some(done) = self.sending.join_next().await {
                self.sent.extend(joined(done)?);
            }
        }
        Ok(())
    }

    /// `chunks` as a part, after the run if it is still to be sent.
    fn take_pending(&mut self, chunks: Vec<Bytes>) -> Pending {
        let run = if std::mem::take(&mut self.carry_run) {
            self.base.run.clone()
        } else {
            Vec::new()
        };
        Pending { run, chunks }
    }

    /// A write's end too short to be a part: a new segment of the run.
    async fn store_segment(&mut self, chunks: Vec<Bytes>) -> Result<(), StorageError> {
        let name = new_segment_name();
        let len = chunks.iter().map(|c| c.len() as u64).sum();
        let key = self.session.keys.segment(&name);
        self.session.client.put(&key, &Body::Chunks(chunks)).await?;
        self.new_run.push(Segment { name, len });
        Ok(())
    }

    /// Claims part numbers (and creates the multipart upload, and copies the sources into
    /// it) before the first part is sent.
    pub(super) async fn claim(&mut self) -> Result<(), StorageError> {
        if self.window.is_some() {
            return Ok(());
        }
        let start = self.base.next_part;
        self.base.next_part = start.saturating_add(CLAIM_WINDOW);
        self.base.claim = Some(new_nonce());
        if self.upload_id.is_none() {
            self.base.creations = self.base.creations.saturating_add(1);
        }
        self.etag = self.session.save(&self.base, &self.etag).await?;
        self.claimed(start..self.base.next_part, true);
        let data_key = self.session.data_key(&self.base);
        if self.upload_id.is_none() {
            let id = self.session.client.create_multipart(&data_key).await?;
            self.upload_id = Some(id);
        }
        // Server-side copies of the sources, at most 5 GiB each and, the sources being at
        // least 5 MiB, at least that. A data object is copied into the upload that will
        // replace it when completed; until then it stays as it is.
        let sources: Vec<(String, u64)> = self
            .base
            .sources
            .iter()
            .map(|s| (self.session.source_key(&self.base, s), s.len()))
            .collect();
        self.unsealed = !sources.is_empty();
        for (key, len) in sources {
            let pieces = len.div_ceil(MAX_PART_SIZE).max(1);
            let piece = len.div_ceil(pieces);
            let mut start = 0;
            while start < len {
                let end = (start + piece).min(len);
                let number = self.next_number().await?;
                let (client, upload_id) = (Arc::clone(self.session.client), self.upload_id());
                let (data_key, key) = (data_key.clone(), key.clone());
                self.spawn(async move {
                    let part = part_number(number)?;
                    let etag = client
                        .upload_part_copy(&data_key, &upload_id, part, &key, start..end)
                        .await?;
                    Ok(Part {
                        number,
                        etag,
                        len: end - start,
                    })
                })
                .await?;
                start = end;
            }
        }
        Ok(())
    }

    fn upload_id(&self) -> String {
        self.upload_id.clone().unwrap_or_default()
    }

    async fn next_number(&mut self) -> Result<u32, StorageError> {
        let Some(window) = self.window.clone() else {
            return Err(StorageError::backend(BACKEND, "part sent before a claim"));
        };
        let mut window = window;
        if window.start >= window.end {
            // Extend the claim; refused if another request changed the session since.
            self.base.next_part = window.end.saturating_add(CLAIM_WINDOW);
            self.etag = self.session.save(&self.base, &self.etag).await?;
            window.end = self.base.next_part;
        }
        if window.start > MAX_PARTS {
            return Err(protocol(
                "UploadPart",
                &self.session.data_key(&self.base),
                format!("more than S3's {MAX_PARTS} parts; use a larger part_size"),
            ));
        }
        let number = window.start;
        self.window = Some(number + 1..window.end);
        Ok(number)
    }

    async fn send(&mut self, pending: Pending) -> Result<(), StorageError> {
        self.claim().await?;
        let number = self.next_number().await?;
        let len = pending.len();
        let body = if pending.run.is_empty() {
            Body::Chunks(pending.chunks)
        } else {
            Body::Stream {
                len,
                make: self.session.concat_body(&pending.run, pending.chunks),
            }
        };
        let client = Arc::clone(self.session.client);
        let (data_key, upload_id) = (self.session.data_key(&self.base), self.upload_id());
        self.spawn(async move {
            let etag = client
                .upload_part(&data_key, &upload_id, part_number(number)?, &body)
                .await?;
            Ok(Part { number, etag, len })
        })
        .await
        .map(drop)
    }

    /// Starts sending a part; waits while `concurrency` are already on their way (the
    /// part being filled among them).
    async fn spawn(
        &mut self,
        part: impl Future<Output = Result<Part, StorageError>> + Send + 'static,
    ) -> Result<AbortHandle, StorageError> {
        let handle = self.sending.spawn(part);
        while self.sending.len() > self.session.concurrency {
            if let Some(done) = self.sending.join_next().await {
                self.sent.extend(joined(done)?);
            }
        }
        Ok(handle)
    }

    /// Claims in `state`, about to be saved, the numbers the session's next write will
    /// likely use: as many as this one did, if it sent parts and left no run.
    fn claim_ahead(&self, state: &mut SessionState) -> Option<Range<u32>> {
        let used = self
            .window
            .as_ref()?
            .start
            .saturating_sub(self.claimed_from);
        if used == 0 || !state.run.is_empty() || state.parts.is_empty() {
            return None;
        }
        let window = state.next_part..state.next_part.saturating_add(used.min(CLAIM_WINDOW));
        state.next_part = window.end;
        state.claim = Some(new_nonce());
        Some(window)
    }

    /// Records what this write stored (if anything), then deletes what it made obsolete.
    pub(super) async fn commit(mut self) -> Result<(), StorageError> {
        while let Some(part) = self.sending.join_next().await {
            self.sent.extend(joined(part)?);
        }
        // A claim found ahead that this write did not use changes nothing.
        let claimed = self.saved_claim || !self.sent.is_empty();
        if !claimed && self.new_run.is_empty() {
            return Ok(());
        }
        let mut state = self.base.clone();
        let mut obsolete = Vec::new();
        if self.window.is_some() {
            let merged = !self.carry_run && !state.run.is_empty();
            if merged {
                obsolete.extend(state.run.drain(..).map(|s| s.name));
            }
            if self.unsealed {
                for source in std::mem::take(&mut state.sources) {
                    if let Source::Segment { name, .. } = source {
                        obsolete.push(name);
                    }
                }
            }
            self.sent.sort_by_key(|p| p.number);
            state.next_part = self.sent.last().map_or(state.next_part, |p| p.number + 1);
            state.parts.append(&mut self.sent);
            state.upload_id = self.upload_id.take();
            state.claim = None;
        }
        state.run.append(&mut self.new_run);
        state.last_write = self.written;
        let ahead = self.claim_ahead(&mut state);
        let etag = self.session.save(&state, &self.etag).await?;
        if let Some(window) = ahead {
            let claim = PreClaim { etag, window };
            self.session
                .pre_claims
                .insert(self.session.id.to_string(), claim);
        }
        // Only now are these unused. Failing to delete them leaves garbage under the
        // session that finish and abort remove, so it is not an error.
        let keys = obsolete
            .iter()
            .map(|n| self.session.keys.segment(n))
            .collect();
        delete_keys(self.session.client, keys).await.ok();
        Ok(())
    }
}

/// A finished part task's part; `None` for a request this write dropped itself (a part
/// the input ended inside, sent again as it turned out).
fn joined(
    result: Result<Result<Part, StorageError>, tokio::task::JoinError>,
) -> Result<Option<Part>, StorageError> {
    match result {
        Ok(part) => part.map(Some),
        Err(e) if e.is_cancelled() => Ok(None),
        Err(e) => Err(StorageError::backend(
            BACKEND,
            format!("sending a part: {e}"),
        )),
    }
}
