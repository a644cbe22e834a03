//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (session, monolithic `?digest=`, mount),
//! `PATCH`, `PUT ?digest=`, `GET` (progress) and `DELETE` on `/v2/<name>/blobs/uploads/<id>`.
//!
//! Each verb is an event of [`super::state`]; this module performs the effects the state
//! machine returns: it streams the body into the blob store through a hasher, persists
//! offset and hash state with a compare-and-swap, commits, reports or discards.

use axum::body::Body;
use axum::response::Response;
use futures::TryStreamExt;
use http::StatusCode;
use oci_spec_types::{Algorithm, Digest, ErrorCode, RepositoryName};
use storage_traits::{StageBlob, StagedBlob, UploadSession, UploadUpdate};

use super::hashing::{SharedHasher, digest_of_upload};
use super::limit::{SizeLimited, blob_too_large};
use super::state::{ChunkRange, Effect, Event, State, UploadError, range_header, step};
use crate::Inner;
use crate::clock::now_ms;
use crate::error::RegistryError;
use crate::exchange::{Call, Result, empty};
use crate::request::Mount;

fn location(repo: &RepositoryName, id: &str) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

fn upload_unknown() -> RegistryError {
    RegistryError::oci(
        ErrorCode::BlobUploadUnknown,
        "upload session unknown (cancelled, expired or never started)",
    )
}

fn accepted(repo: &RepositoryName, id: &str, offset: u64, status: StatusCode) -> Response {
    empty(
        status,
        &[
            ("Location", location(repo, id)),
            ("Range", range_header(offset)),
            ("Docker-Upload-UUID", id.to_string()),
            ("Content-Length", "0".into()),
        ],
    )
}

fn created(repo: &RepositoryName, digest: &Digest) -> Response {
    empty(
        StatusCode::CREATED,
        &[
            ("Location", format!("/v2/{repo}/blobs/{digest}")),
            ("Docker-Content-Digest", digest.to_string()),
            ("Content-Length", "0".into()),
        ],
    )
}

pub(crate) async fn start(call: Call<'_>, repo: &RepositoryName, body: Body) -> Result<Response> {
    let inner = call.inner;
    let params = &call.request.params;
    // The mount is the one the auth middleware checked (and left in place only when the
    // caller may pull its source).
    if let Some(Mount {
        digest: mount,
        from,
    }) = &params.mount
    {
        let mount = mount.clone();
        if let Some(size) = inner.metadata.blob_link(from, &mount).await? {
            // Link, then check the bytes: once the link is committed the collector keeps
            // them, so bytes seen after it stay. (Checking first would leave a window in
            // which a whole collection could delete them under the new link.) A link to
            // bytes that are gone 404s and is collected like an unused upload.
            // One attempt, within the quotas: a blob being garbage-collected is uploaded
            // by the client instead of waited for.
            match crate::quotas::link_once(inner, repo, &mount, size).await {
                Ok(None) if inner.blobs.stat(&mount).await?.is_some() => {
                    return Ok(created(repo, &mount));
                }
                Ok(None) => {}
                Ok(Some(usage)) => return Err(crate::quotas::exceeded(&usage)),
                Err(storage_traits::MetadataError::BlobBeingDeleted(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Not mountable: the spec's fallback is an ordinary session.
    }
    if let Some(limit) = inner.config.max_open_uploads
        && inner.metadata.count_uploads().await? >= limit
    {
        return Err(RegistryError::TooManyUploads { limit });
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let loc = location(repo, &id);
    let event = Event::Start {
        digest: params.digest.clone(),
        range: chunk_range(call, 0, &loc)?,
        length: call.request.body.content_length,
    };
    let (state, effect) = step(State::New, event).map_err(|e| RegistryError::upload(e, &loc))?;
    if let State::Receiving {
        declared: Some(size),
        finish: Some(digest),
        ..
    } = &state
        && digest.algorithm() == Algorithm::Sha256
    {
        // The whole blob, of known length and digest: staged by the store in one go, no
        // session in the blob store. The session record is written first so that, if this
        // process dies, its expiry aborts the id and the store removes what was staged.
        let (size, digest) = (*size, digest.clone());
        let session = UploadSession::new(id.clone(), repo.clone(), now_ms());
        inner.metadata.create_upload(&session).await?;
        let _claim = inner.sessions.claim(&id)?;
        let result = monolithic(call, repo, &id, &digest, size, body, false).await;
        if result.is_err() {
            discard(inner, &id).await;
        } else {
            inner.metadata.delete_upload(&id).await?;
        }
        return result;
    }
    inner.blobs.start_upload(&id).await?;
    let session = UploadSession::new(id.clone(), repo.clone(), now_ms());
    if let Err(e) = inner.metadata.create_upload(&session).await {
        let _ = inner.blobs.abort_upload(&id).await;
        return Err(e.into());
    }
    if effect == Effect::Opened {
        return Ok(accepted(repo, &id, 0, StatusCode::ACCEPTED));
    }
    // Monolithic upload: the whole blob in this request, and no session left behind
    // whatever happens to it.
    let _claim = inner.sessions.claim(&id)?;
    let result = perform(call, repo, &session, state, effect, body).await;
    if result.is_err() {
        discard(inner, &id).await;
    }
    result
}

pub(crate) async fn patch(
    call: Call<'_>,
    repo: &RepositoryName,
    id: &str,
    body: Body,
) -> Result<Response> {
    let event = |offset, loc: &str| -> Result<Event> {
        Ok(Event::Patch {
            range: chunk_range(call, offset, loc)?,
            length: call.request.body.content_length,
        })
    };
    on_session(call, repo, id, event, body).await
}

pub(crate) async fn put(
    call: Call<'_>,
    repo: &RepositoryName,
    id: &str,
    body: Body,
) -> Result<Response> {
    let event = |offset, loc: &str| -> Result<Event> {
        let digest = call.request.params.digest.clone().ok_or_else(|| {
            RegistryError::oci(
                ErrorCode::DigestInvalid,
                "the digest query parameter is required",
            )
        })?;
        Ok(Event::Put {
            digest,
            range: chunk_range(call, offset, loc)?,
            length: call.request.body.content_length,
        })
    };
    on_session(call, repo, id, event, body).await
}

pub(crate) async fn status(call: Call<'_>, repo: &RepositoryName, id: &str) -> Result<Response> {
    on_session(call, repo, id, |_, _| Ok(Event::Status), Body::empty()).await
}

pub(crate) async fn cancel(call: Call<'_>, repo: &RepositoryName, id: &str) -> Result<Response> {
    on_session(call, repo, id, |_, _| Ok(Event::Cancel), Body::empty()).await
}

/// Loads the session, claims it (a status query reads without claiming), steps it with
/// the request's event, and performs the effect.
async fn on_session(
    call: Call<'_>,
    repo: &RepositoryName,
    id: &str,
    event: impl FnOnce(u64, &str) -> Result<Event>,
    body: Body,
) -> Result<Response> {
    let inner = call.inner;
    let session = load(inner, repo, id).await?;
    let loc = location(repo, id);
    let event = event(session.offset, &loc)?;
    let _claim = match event {
        Event::Status => None,
        _ => Some(inner.sessions.claim(id)?),
    };
    let open = State::Open {
        offset: session.offset,
    };
    let (state, effect) = step(open, event).map_err(|e| RegistryError::upload(e, &loc))?;
    if let State::Receiving {
        start: 0,
        declared: Some(size),
        finish: Some(digest),
    } = &state
        && session.offset == 0
        && digest.algorithm() == Algorithm::Sha256
    {
        // A `PUT` with the whole blob on an empty session: staged as a `POST ?digest=` is,
        // into the session. A failure leaves the session open and empty, as a failed
        // write does (a refused quota discards it, as `commit` does).
        let (size, digest) = (*size, digest.clone());
        let result = monolithic(call, repo, id, &digest, size, body, true).await;
        match &result {
            Ok(_) => {
                inner.metadata.delete_upload(id).await?;
            }
            Err(RegistryError::Oci {
                code: ErrorCode::Denied,
                ..
            }) => discard(inner, id).await,
            Err(_) => {}
        }
        return result;
    }
    perform(call, repo, &session, state, effect, body).await
}

/// Performs effects until the request is answered: receiving a body leads to an
/// acknowledgement or to the digest check and the commit.
async fn perform(
    call: Call<'_>,
    repo: &RepositoryName,
    session: &UploadSession,
    mut state: State,
    mut effect: Effect,
    body: Body,
) -> Result<Response> {
    let inner = call.inner;
    let loc = location(repo, &session.id);
    let up = |e| RegistryError::upload(e, &loc);
    let mut body = Some(body);
    let mut hasher = None;
    loop {
        let event = match effect {
            Effect::Opened => return Ok(accepted(repo, &session.id, 0, StatusCode::ACCEPTED)),
            Effect::Report { offset } => {
                return Ok(accepted(repo, &session.id, offset, StatusCode::NO_CONTENT));
            }
            Effect::Discard => {
                discard(inner, &session.id).await;
                return Ok(empty(
                    StatusCode::NO_CONTENT,
                    &[("Content-Length", "0".into())],
                ));
            }
            Effect::ReceiveAt(_) => {
                let (new_offset, h) =
                    receive(inner, session, body.take().unwrap_or_default()).await?;
                hasher = h;
                Event::Received { new_offset }
            }
            Effect::Acknowledge { offset } => {
                acknowledge(inner, session, offset, hasher.take()).await?;
                return Ok(accepted(repo, &session.id, offset, StatusCode::ACCEPTED));
            }
            Effect::Compute { .. } => {
                let State::Verifying { expected, .. } = &state else {
                    return Err(up(UploadError::InvalidTransition("no digest to verify")));
                };
                let computed = match hasher.take().and_then(|h| h.digest()) {
                    Some(d) if expected.algorithm() == Algorithm::Sha256 => d,
                    _ => {
                        let algorithm = expected.algorithm();
                        digest_of_upload(inner.blobs.as_ref(), &session.id, algorithm).await?
                    }
                };
                Event::Computed { digest: computed }
            }
            Effect::Commit { digest, size } => {
                commit(inner, repo, session, &digest, size).await?;
                return Ok(created(repo, &digest));
            }
        };
        (state, effect) = step(state, event).map_err(up)?;
    }
}

/// A whole blob in one request, its length and digest known before its first byte
/// (`POST ?digest=` with a `Content-Length`, or, with `open_session`, a `PUT ?digest=` of
/// the whole blob on an empty session): the body staged by the store while it is hashed,
/// then, if it is the blob claimed, linked and published in the order [`commit`] uses;
/// otherwise discarded. The session record is the caller's.
async fn monolithic(
    call: Call<'_>,
    repo: &RepositoryName,
    id: &str,
    expected: &Digest,
    size: u64,
    body: Body,
    open_session: bool,
) -> Result<Response> {
    let inner = call.inner;
    let loc = location(repo, id);
    let up = |e| RegistryError::upload(e, &loc);
    let hasher = SharedHasher::resume(None)
        .ok_or_else(|| up(UploadError::InvalidTransition("no sha256 hasher")))?;
    let limit = inner.config.policy.max_blob_size;
    let (data, too_large) = SizeLimited::new(body.into_data_stream(), 0, limit);
    let mut blob = StageBlob::new(id, expected, size, hasher.tee(data));
    if open_session {
        blob = blob.with_open_session();
    }
    let staged = inner.blobs.stage_blob(blob).await;
    if too_large.get() {
        if let Ok(staged) = staged {
            drop_staged(id, staged).await;
        }
        // As for a chunk past the limit: the session goes (the caller discards the
        // record of one that was not open).
        if open_session {
            discard(inner, id).await;
        }
        return Err(blob_too_large(limit.unwrap_or(0)));
    }
    let staged = staged?;
    let checked = hasher
        .digest()
        .ok_or(UploadError::InvalidTransition("the hasher failed"))
        .and_then(|computed| {
            let receiving = State::Receiving {
                start: 0,
                declared: Some(size),
                finish: Some(expected.clone()),
            };
            let (verifying, _) = step(receiving, Event::Received { new_offset: size })?;
            step(verifying, Event::Computed { digest: computed })
        });
    let (digest, size) = match checked {
        Ok((_, Effect::Commit { digest, size })) => (digest, size),
        Ok(_) => {
            drop_staged(id, staged).await;
            return Err(up(UploadError::InvalidTransition("no commit")));
        }
        Err(e) => {
            drop_staged(id, staged).await;
            return Err(up(e));
        }
    };
    // Link first, then publish, as `commit` does (and for the same reasons).
    if let Err(e) = crate::quotas::link_blob(inner, repo, &digest, size).await {
        drop_staged(id, staged).await;
        return Err(e);
    }
    if let Err(e) = staged.publish().await {
        unlink_unpublished(inner, repo, &digest).await;
        return Err(e.into());
    }
    Ok(created(repo, &digest))
}

/// Discards a staged blob; a failure is logged (aborting the id removes it later).
async fn drop_staged(id: &str, staged: Box<dyn StagedBlob + '_>) {
    if let Err(e) = staged.discard().await {
        tracing::warn!(upload = id, error = %e, "could not discard a staged blob");
    }
}

/// Persists the new offset (and hash state) with a compare-and-swap.
async fn acknowledge(
    inner: &Inner,
    session: &UploadSession,
    offset: u64,
    hasher: Option<SharedHasher>,
) -> Result<()> {
    let hash_state = hasher.and_then(|h| h.state());
    let swapped = inner
        .metadata
        .update_upload(
            &UploadUpdate::new(&session.id)
                .with_expected_offset(session.offset)
                .with_new_offset(offset)
                .with_hash_state(hash_state.as_deref())
                .with_updated_at(now_ms()),
        )
        .await?;
    if !swapped {
        // Another request acknowledged bytes of this session first. The store already
        // kept the two writes apart (the session claim in one process; a store replicas
        // share records only one of two writes at an offset, see
        // `BlobCapabilities::shared_sessions`), so the session is intact: this request just lost.
        return Err(RegistryError::oci(
            ErrorCode::BlobUploadInvalid,
            "upload session changed during this request",
        ));
    }
    Ok(())
}

/// Links the blob, publishes its bytes, and closes the session.
async fn commit(
    inner: &Inner,
    repo: &RepositoryName,
    session: &UploadSession,
    digest: &Digest,
    size: u64,
) -> Result<()> {
    // Link first, then publish the bytes: once the link is committed the collector's
    // re-check sees it, so it cannot delete the bytes this upload is about to publish. A
    // link whose publish then fails is removed when the store holds no such blob
    // (`unlink_unpublished`); otherwise its own review removes it after the grace period.
    // Within the quotas, or nothing: a refused upload is not linked, and its session
    // (bytes and record) is discarded, as the client cannot finish it any other way.
    if let Err(e) = crate::quotas::link_blob(inner, repo, digest, size).await {
        if matches!(
            e,
            RegistryError::Oci {
                code: ErrorCode::Denied,
                ..
            }
        ) {
            discard(inner, &session.id).await;
        }
        return Err(e);
    }
    if let Err(e) = inner.blobs.finish_upload(&session.id, digest, size).await {
        unlink_unpublished(inner, repo, digest).await;
        return Err(e.into());
    }
    inner.metadata.delete_upload(&session.id).await?;
    Ok(())
}

/// After a link whose bytes then failed to publish: removes the link when the blob store
/// says it holds no such blob, since a `HEAD` answers from links alone and would promise
/// bytes a `GET` cannot serve. When the store cannot tell (unreachable), the link stays
/// for its review to remove after the grace period.
async fn unlink_unpublished(inner: &Inner, repo: &RepositoryName, digest: &Digest) {
    if !matches!(inner.blobs.stat(digest).await, Ok(None)) {
        return;
    }
    if let Err(e) = inner.metadata.unlink_blob(repo, digest).await {
        tracing::warn!(%repo, %digest, error = %e, "could not remove the link of an unpublished blob");
    }
}

/// Streams the request body into the session at its acknowledged offset, hashing it on
/// the way when the session's hash state allows.
async fn receive(
    inner: &Inner,
    session: &UploadSession,
    body: Body,
) -> Result<(u64, Option<SharedHasher>)> {
    let hasher = match (&session.hash_state, session.offset) {
        (None, 0) => SharedHasher::resume(None),
        (Some(state), _) => SharedHasher::resume(Some(state)),
        // Bytes were acknowledged without a hash state: the digest is computed at commit.
        (None, _) => None,
    };
    let limit = inner.config.policy.max_blob_size;
    let (data, too_large) = SizeLimited::new(body.into_data_stream(), session.offset, limit);
    let stream = match &hasher {
        Some(h) => h.tee(data),
        None => Box::pin(data.map_err(storage_traits::StorageError::Input)),
    };
    let written = inner
        .blobs
        .write_upload(&session.id, session.offset, stream)
        .await;
    if too_large.get() {
        discard(inner, &session.id).await;
        return Err(blob_too_large(limit.unwrap_or(0)));
    }
    Ok((written?, hasher))
}

/// The session, if it belongs to `repo`. (The id's grammar was checked when the route
/// was decoded.)
async fn load(inner: &Inner, repo: &RepositoryName, id: &str) -> Result<UploadSession> {
    inner
        .metadata
        .get_upload(id)
        .await?
        .filter(|s| s.repository == *repo)
        .ok_or_else(upload_unknown)
}

/// Drops a session's bytes and record; failures are logged, the reaper retries later.
pub(crate) async fn discard(inner: &Inner, id: &str) {
    if let Err(e) = inner.blobs.abort_upload(id).await {
        tracing::warn!(upload = id, error = %e, "could not abort upload");
        return;
    }
    if let Err(e) = inner.metadata.delete_upload(id).await {
        tracing::warn!(upload = id, error = %e, "could not delete upload session");
    }
}

/// The chunk's `Content-Range`, as the edge decoded it; a malformed one is `416` with
/// the session's progress.
fn chunk_range(call: Call<'_>, offset: u64, loc: &str) -> Result<Option<ChunkRange>> {
    match call.request.body.content_range {
        None => Ok(None),
        Some(Some(range)) => Ok(Some(range)),
        Some(None) => Err(RegistryError::UploadOffset {
            offset,
            location: loc.to_string(),
        }),
    }
}
