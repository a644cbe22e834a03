//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use oci_spec_types::{Digest, ErrorCode, ParsedManifest, Reference, RepositoryName, Tag};
use storage_traits::NewManifest;

use crate::Inner;
use crate::error::RegistryError;
use crate::exchange::{Call, Result, empty, set_headers};

fn manifest_unknown(reference: &Reference) -> RegistryError {
    RegistryError::oci(
        ErrorCode::ManifestUnknown,
        format!("manifest {reference} is not in this repository"),
    )
}

pub(super) async fn get(
    inner: &Inner,
    repo: &RepositoryName,
    reference: &Reference,
    head: bool,
) -> Result<Response> {
    if let Some(proxied) = inner.proxy.as_ref().and_then(|p| p.resolve(repo)) {
        crate::proxy::refresh_manifest(inner, &proxied, repo, reference).await?;
    }
    let record = inner
        .metadata
        .get_manifest(repo, reference)
        .await?
        .ok_or_else(|| manifest_unknown(reference))?;
    let headers = [
        ("Content-Type", record.media_type.clone()),
        ("Docker-Content-Digest", record.digest.to_string()),
        ("Content-Length", record.content.len().to_string()),
        ("ETag", format!("\"{}\"", record.digest)),
    ];
    let mut res = if head {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(record.content))
    };
    // Room for what the layers add (API version, RateLimit-*): growing the map on the
    // way out was a reallocation and a rehash per GET (callgrind).
    res.headers_mut().reserve(16);
    set_headers(res.headers_mut(), &headers);
    Ok(res)
}

/// `PUT` by tag, or by digest with any number of `?tag=` (the spec's "Pushing Manifests
/// with Tags"): the manifest and every tag are stored in one transaction, and each tag
/// named in the query is confirmed with an `OCI-Tag` header.
pub(super) async fn put(
    call: Call<'_>,
    repo: &RepositoryName,
    reference: &Reference,
    body: Body,
) -> Result<Response> {
    let inner = call.inner;
    let query_tags = &call.request.params.tags;
    let content = read_limited(body, inner.config.max_manifest_size).await?;
    let content_type = call.request.body.content_type.as_deref();
    let parsed = ParsedManifest::parse(content_type, &content)
        .map_err(|e| RegistryError::manifest_invalid(&e))?;
    let (digest, tag) = match reference {
        Reference::Digest(d) => {
            if !d.matches(&content) {
                return Err(RegistryError::oci(
                    ErrorCode::DigestInvalid,
                    format!("manifest content does not match digest {d}"),
                ));
            }
            (d.clone(), None)
        }
        Reference::Tag(t) => (Digest::sha256_of(&content), Some(t.clone())),
    };
    let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
    let mut tags: Vec<Tag> = tag.into_iter().collect();
    for t in query_tags {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    let manifest =
        NewManifest::from_parsed(repo.clone(), digest.clone(), &parsed, content).with_tags(tags);
    let immutable = !manifest.tags.is_empty() && inner.config.policy.tags_immutable(repo);
    let manifest = manifest.with_tag_immutable(immutable);
    // An immutable tag is checked by the store in the transaction that moves tags, so two
    // racing first pushes of one tag cannot both succeed.
    crate::gc::retry_while_being_deleted(|| inner.metadata.put_manifest(&manifest)).await?;
    // Manifests are blobs too: their bytes, and records of the repository and tag, are
    // kept in the blob store so the metadata can be rebuilt from it alone. Written after
    // the metadata commit (the collector cannot decide to delete bytes that a committed
    // manifest row names), in the background: only a rebuild needs them, so the client
    // does not wait for the blob store's fsyncs (see `crate::recovery`). The push itself
    // is committed, so a failure there is logged, never answered with a 500 for a
    // manifest the tag already serves.
    inner
        .recovery
        .manifest_put(repo, &digest, manifest.content.clone(), &manifest.tags)
        .await;
    let mut out = vec![
        ("Location", format!("/v2/{repo}/manifests/{digest}")),
        ("Docker-Content-Digest", digest.to_string()),
        ("Content-Length", "0".to_string()),
    ];
    if let Some(s) = subject {
        out.push(("OCI-Subject", s.to_string()));
    }
    let mut res = empty(StatusCode::CREATED, &out);
    for tag in query_tags {
        if let Ok(v) = HeaderValue::from_str(tag.as_str()) {
            res.headers_mut().append("OCI-Tag", v);
        }
    }
    Ok(res)
}

pub(super) async fn delete(
    inner: &Inner,
    repo: &RepositoryName,
    reference: &Reference,
) -> Result<Response> {
    let deleted = match reference {
        Reference::Digest(d) => inner.metadata.delete_manifest(repo, d).await?,
        Reference::Tag(t) => inner.metadata.delete_tag(repo, t).await?,
    };
    if !deleted {
        return Err(manifest_unknown(reference));
    }
    // After the commit, like the records' writes, and through the same ordered queue, so
    // this removal cannot overtake the write of the record it removes.
    match reference {
        Reference::Digest(d) => inner.recovery.manifest_deleted(repo, d, true).await,
        Reference::Tag(t) => inner.recovery.tag_deleted(repo, t).await,
    }
    Ok(empty(
        StatusCode::ACCEPTED,
        &[("Content-Length", "0".into())],
    ))
}

/// Reads a body of at most `limit` bytes; larger is `413` with `SIZE_INVALID`.
async fn read_limited(body: Body, limit: usize) -> Result<Bytes> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(RegistryError::ManifestTooLarge { limit })
        }
        Err(e) => Err(RegistryError::oci(
            ErrorCode::ManifestInvalid,
            format!("could not read the manifest body: {e}"),
        )),
    }
}
