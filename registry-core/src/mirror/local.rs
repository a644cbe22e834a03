//! This registry's own stores as a sync's source (`--to`) or target (`--from`). As a
//! target it writes as a push does: a blob through an upload session, hashed on the way,
//! linked before it is published; a manifest only once everything it names is here, with
//! its recovery record after the metadata commit.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use oci_spec_types::{Descriptor, Digest, ParsedManifest, Reference, RepositoryName, Tag};
use storage_traits::{ByteStream, NewManifest, Page, StorageError, UploadSession};

use super::copy::{Held, Source, Target};
use super::{SyncError, at};
use crate::Inner;
use crate::auth::NamePattern;
use crate::clock::now_ms;
use crate::error::RegistryError;
use crate::upload::verified::{Verified, store_verified};

/// Names asked of the metadata store at once.
const PAGE: usize = 1000;

pub(crate) struct LocalStores<'a> {
    inner: &'a Arc<Inner>,
}

impl<'a> LocalStores<'a> {
    pub(crate) fn new(inner: &'a Arc<Inner>) -> Self {
        LocalStores { inner }
    }

    async fn link(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), SyncError> {
        crate::quotas::link_blob(self.inner, repo, digest, size).await?;
        Ok(())
    }

    /// Writes `data` into the open session `id` and checks its digest; the blob's length
    /// when it matches.
    async fn write_verified(
        &self,
        id: &str,
        repo: &RepositoryName,
        digest: &Digest,
        data: ByteStream,
    ) -> Result<u64, SyncError> {
        match store_verified(self.inner, id, repo, digest, data).await {
            Ok(Verified::Stored(size)) => Ok(size),
            Ok(Verified::Mismatch(computed)) => Err(SyncError::Invalid(format!(
                "blob {}: the source sent {computed}",
                at(repo, digest)
            ))),
            Err(RegistryError::Storage(StorageError::Input(e))) => {
                Err(SyncError::Interrupted(e.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn not_here(what: String) -> SyncError {
    SyncError::Invalid(format!("{what}: not in this registry"))
}

#[async_trait]
impl Source for LocalStores<'_> {
    async fn repositories(&self, pattern: &NamePattern) -> Result<Vec<String>, SyncError> {
        let mut out = Vec::new();
        let mut last = None;
        loop {
            let page = self
                .inner
                .metadata
                .list_repositories(&Page::new(last.take(), Some(PAGE)))
                .await?;
            let full = page.len() >= PAGE;
            last = page.last().map(ToString::to_string);
            out.extend(
                page.iter()
                    .map(ToString::to_string)
                    .filter(|n| pattern.matches(n)),
            );
            if !full || last.is_none() {
                return Ok(out);
            }
        }
    }

    async fn tags(&self, repo: &RepositoryName) -> Result<Vec<String>, SyncError> {
        let mut out = Vec::new();
        let mut last = None;
        loop {
            let page = self
                .inner
                .metadata
                .list_tags(repo, &Page::new(last.take(), Some(PAGE)))
                .await?
                .ok_or_else(|| not_here(repo.to_string()))?;
            let full = page.len() >= PAGE;
            last = page.last().map(ToString::to_string);
            out.extend(page.iter().map(ToString::to_string));
            if !full || last.is_none() {
                return Ok(out);
            }
        }
    }

    async fn resolve(&self, repo: &RepositoryName, tag: &Tag) -> Result<Option<Digest>, SyncError> {
        let record = self
            .inner
            .metadata
            .get_manifest(repo, &Reference::Tag(tag.clone()))
            .await?;
        Ok(record.map(|r| r.digest))
    }

    async fn manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<(String, Bytes), SyncError> {
        let record = self
            .inner
            .metadata
            .get_manifest(repo, &Reference::Digest(digest.clone()))
            .await?
            .ok_or_else(|| not_here(at(repo, digest)))?;
        Ok((record.media_type, record.content))
    }

    async fn blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<(ByteStream, Option<u64>), SyncError> {
        // Only what the repository may serve (a proxied repository's blob may be linked
        // before its bytes are here: then it is not here to send).
        if self.inner.metadata.blob_link(repo, digest).await?.is_none() {
            return Err(not_here(format!("blob {}", at(repo, digest))));
        }
        let got = self.inner.blobs.get(digest, None).await?;
        Ok((got.stream, Some(got.size)))
    }

    async fn referrers(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Vec<Descriptor>, SyncError> {
        let records = self.inner.metadata.referrers(repo, digest, None).await?;
        Ok(records
            .into_iter()
            .map(|r| Descriptor {
                media_type: r.media_type,
                digest: r.digest,
                size: r.size,
                artifact_type: r.artifact_type,
                urls: None,
                annotations: None,
            })
            .collect())
    }
}

#[async_trait]
impl Target for LocalStores<'_> {
    async fn tag_digest(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<Digest>, SyncError> {
        self.resolve(repo, tag).await
    }

    async fn manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<Held>, SyncError> {
        let record = self
            .inner
            .metadata
            .get_manifest(repo, &Reference::Digest(digest.clone()))
            .await?;
        Ok(record.map(|r| Held {
            media_type: r.media_type,
            content: Some(r.content),
        }))
    }

    async fn has_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<bool, SyncError> {
        let linked = self.inner.metadata.blob_link(repo, digest).await?;
        let stored = self.inner.blobs.stat(digest).await?;
        match (linked, stored) {
            (Some(_), Some(_)) => Ok(true),
            // Here for another repository: adopted where it is, not copied.
            (None, Some(info)) => {
                self.link(repo, digest, info.size).await?;
                Ok(true)
            }
            // A link without bytes (a pull-through cache's blob never pulled): copy.
            _ => Ok(false),
        }
    }

    async fn mount_blob(
        &self,
        _repo: &RepositoryName,
        _digest: &Digest,
        _from: &RepositoryName,
    ) -> Result<bool, SyncError> {
        // `has_blob` already adopts bytes held for another repository.
        Ok(false)
    }

    async fn put_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        _size: Option<u64>,
        data: ByteStream,
    ) -> Result<u64, SyncError> {
        refuse_proxied(self.inner, repo)?;
        // An ordinary upload session, record included, so that if this process dies
        // mid-way the upload expiry reclaims its bytes.
        let id = format!("mirror-{}", uuid::Uuid::new_v4().simple());
        let blobs = &self.inner.blobs;
        blobs.start_upload(&id).await?;
        let session = UploadSession::new(id.clone(), repo.clone(), now_ms());
        if let Err(e) = self.inner.metadata.create_upload(&session).await {
            let _ = blobs.abort_upload(&id).await;
            return Err(e.into());
        }
        let result = self.write_verified(&id, repo, digest, data).await;
        if result.is_err()
            && let Err(e) = blobs.abort_upload(&id).await
        {
            tracing::warn!(upload = %id, error = %e, "could not abort a sync's upload");
        }
        if let Err(e) = self.inner.metadata.delete_upload(&id).await {
            tracing::warn!(upload = %id, error = %e, "could not delete a sync's upload record");
        }
        result
    }

    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        parsed: &ParsedManifest,
        content: Bytes,
        tag: Option<&Tag>,
    ) -> Result<(), SyncError> {
        refuse_proxied(self.inner, repo)?;
        let limit = self.inner.config.max_manifest_size;
        if content.len() > limit {
            return Err(SyncError::Invalid(format!(
                "{}: larger than this registry's manifest limit ({limit} bytes)",
                at(repo, digest)
            )));
        }
        let tags: Vec<Tag> = tag.into_iter().cloned().collect();
        let immutable = !tags.is_empty() && self.inner.config.policy.tags_immutable(repo);
        let manifest = NewManifest::from_parsed(repo.clone(), digest.clone(), parsed, content)
            .with_tags(tags)
            .with_tag_immutable(immutable);
        crate::gc::retry_while_being_deleted(|| self.inner.metadata.put_manifest(&manifest))
            .await?;
        self.inner
            .recovery
            .manifest_put(repo, digest, manifest.content.clone(), &manifest.tags)
            .await;
        Ok(())
    }
}

/// A repository under a pull-through cache's prefix belongs to its upstream.
fn refuse_proxied(inner: &Inner, repo: &RepositoryName) -> Result<(), SyncError> {
    match inner.proxy.as_ref() {
        Some(proxy) => proxy
            .refuse_write(repo)
            .map_err(|e: RegistryError| SyncError::Local(e)),
        None => Ok(()),
    }
}
