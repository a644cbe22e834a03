//! Manifests of a proxied repository: fetched, verified and stored before the ordinary
//! handler serves them from the metadata store.

use std::time::Instant;

use oci_spec_types::{Digest, ErrorCode, ParsedManifest, Reference, RepositoryName, Tag};
use storage_traits::NewManifest;

use super::client::{FetchedManifest, UpstreamError};
use super::{PROXY_STALE, Proxied};
use crate::Inner;
use crate::error::RegistryError;

/// How deep an index may nest indexes before the cache stops following it.
const MAX_DEPTH: usize = 3;

/// Makes the local copy of `reference` current enough to serve: a digest already here is
/// served as is; a tag is revalidated upstream once its time to live has passed. An
/// upstream that fails leaves a cached tag in place (stale-if-error).
pub(crate) async fn refresh_manifest(
    inner: &Inner,
    proxied: &Proxied<'_>,
    repo: &RepositoryName,
    reference: &Reference,
) -> Result<(), RegistryError> {
    match reference {
        Reference::Digest(digest) => {
            if inner
                .metadata
                .get_manifest(repo, reference)
                .await?
                .is_none()
            {
                fetch_and_store(inner, proxied, repo, digest, None, 0).await?;
            }
            Ok(())
        }
        Reference::Tag(tag) => refresh_tag(inner, proxied, repo, tag).await,
    }
}

async fn refresh_tag(
    inner: &Inner,
    proxied: &Proxied<'_>,
    repo: &RepositoryName,
    tag: &Tag,
) -> Result<(), RegistryError> {
    let Some(proxy) = inner.proxy.as_ref() else {
        return Ok(());
    };
    let key = (repo.clone(), tag.to_string());
    let fresh = {
        let map = proxy.fresh.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key).is_some_and(|at| at.elapsed() < proxy.tag_ttl)
    };
    let reference = Reference::Tag(tag.clone());
    let cached = inner.metadata.get_manifest(repo, &reference).await?;
    if fresh && cached.is_some() {
        return Ok(());
    }
    let upstream_digest = match proxied
        .client
        .manifest_digest(&proxied.remote, &reference)
        .await
    {
        Ok(d) => d,
        Err(UpstreamError::Unavailable(why)) if cached.is_some() => {
            tracing::warn!(
                repository = %repo, tag = %tag, upstream = %proxied.client.upstream().url,
                error = %why, "upstream unavailable: serving the cached tag"
            );
            metrics::counter!(PROXY_STALE).increment(1);
            return Ok(());
        }
        Err(UpstreamError::NotFound) => {
            return Err(RegistryError::oci(
                ErrorCode::ManifestUnknown,
                format!("manifest {tag} is not in the upstream of {repo}"),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if cached.as_ref().is_none_or(|m| m.digest != upstream_digest) {
        fetch_and_store(inner, proxied, repo, &upstream_digest, Some(tag), 0).await?;
    }
    let mut map = proxy.fresh.lock().unwrap_or_else(|p| p.into_inner());
    map.insert(key, Instant::now());
    Ok(())
}

/// Fetches a manifest by digest, checks it, brings the child manifests of an index along,
/// links the blobs it names (their bytes come on their first pull), and stores it, with
/// `tag` pointing at it.
async fn fetch_and_store(
    inner: &Inner,
    proxied: &Proxied<'_>,
    repo: &RepositoryName,
    digest: &Digest,
    tag: Option<&Tag>,
    depth: usize,
) -> Result<(), RegistryError> {
    let fetched = proxied
        .client
        .manifest(&proxied.remote, &Reference::Digest(digest.clone()))
        .await
        .map_err(|e| match e {
            UpstreamError::NotFound => RegistryError::oci(
                ErrorCode::ManifestUnknown,
                format!("manifest {digest} is not in the upstream of {repo}"),
            ),
            e => e.into(),
        })?;
    let FetchedManifest {
        content,
        media_type,
    } = fetched;
    if !digest.matches(&content) {
        return Err(RegistryError::Upstream(format!(
            "the upstream served a manifest that does not match {digest}"
        )));
    }
    let content_type = (!media_type.is_empty()).then_some(media_type.as_str());
    let parsed = ParsedManifest::parse(content_type, &content).map_err(|e| {
        RegistryError::Upstream(format!("the upstream served an invalid manifest: {e}"))
    })?;
    for child in &parsed.manifests {
        let known = inner
            .metadata
            .get_manifest(repo, &Reference::Digest(child.digest.clone()))
            .await?
            .is_some();
        if !known {
            if depth >= MAX_DEPTH {
                return Err(RegistryError::Upstream(format!(
                    "index {digest} nests deeper than {MAX_DEPTH} levels"
                )));
            }
            Box::pin(fetch_and_store(
                inner,
                proxied,
                repo,
                &child.digest,
                None,
                depth + 1,
            ))
            .await?;
        }
    }
    let required = parsed.required_blobs();
    for blob in parsed.config.iter().chain(&parsed.layers) {
        if required.contains(&blob.digest) {
            crate::gc::retry_while_being_deleted(|| {
                inner.metadata.link_blob(repo, &blob.digest, blob.size)
            })
            .await?;
        }
    }
    let tags: Vec<Tag> = tag.into_iter().cloned().collect();
    let manifest = NewManifest::from_parsed(repo.clone(), digest.clone(), &parsed, content)
        .with_tags(tags.clone());
    crate::gc::retry_while_being_deleted(|| inner.metadata.put_manifest(&manifest)).await?;
    inner
        .recovery
        .manifest_put(repo, digest, manifest.content.clone(), &tags)
        .await;
    Ok(())
}
