//! The copy itself, the same whichever way it goes: a [`Source`] to read from and a
//! [`Target`] to write to (this registry's stores, or another registry over HTTP).
//!
//! Order is what makes a sync resumable: a manifest is written only after every blob and
//! child manifest it names, so whatever the target holds is complete, and a second run
//! skips it.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use backon::Retryable;
use bytes::Bytes;
use futures::StreamExt;
use oci_spec_types::media_type::{DOCKER_MANIFEST_LIST, OCI_INDEX, essence};
use oci_spec_types::{Descriptor, Digest, ParsedManifest, Reference, RepositoryName, Tag};
use storage_traits::ByteStream;

use super::{MIRROR_BLOBS, MIRROR_BYTES, MIRROR_MANIFESTS, SyncError, SyncOptions, SyncReport, at};
use crate::auth::NamePattern;

/// How deep indexes and referrers of referrers may nest before a copy stops following
/// them (a source could serve a cycle of referrers).
const MAX_DEPTH: usize = 8;

/// A manifest the target holds: its media type, and its bytes when they come for free.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) media_type: String,
    pub(crate) content: Option<Bytes>,
}

/// Where a copy reads from.
#[async_trait]
pub(crate) trait Source: Send + Sync {
    /// The repositories `pattern` matches (all of them, however the source pages).
    async fn repositories(&self, pattern: &NamePattern) -> Result<Vec<String>, SyncError>;
    async fn tags(&self, repo: &RepositoryName) -> Result<Vec<String>, SyncError>;
    /// What `tag` points at; `None` if it is gone.
    async fn resolve(&self, repo: &RepositoryName, tag: &Tag) -> Result<Option<Digest>, SyncError>;
    /// A manifest's media type (empty if unknown) and bytes, not yet verified.
    async fn manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<(String, Bytes), SyncError>;
    /// A blob's bytes, not yet verified, and its length when known.
    async fn blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<(ByteStream, Option<u64>), SyncError>;
    /// Manifests whose subject is `digest` (none when the source has no referrers API).
    async fn referrers(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Vec<Descriptor>, SyncError>;
}

/// Where a copy writes to.
#[async_trait]
pub(crate) trait Target: Send + Sync {
    async fn tag_digest(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<Digest>, SyncError>;
    async fn manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<Held>, SyncError>;
    /// True if `repo` can serve the blob already (a target may adopt bytes it holds for
    /// another repository, without a copy).
    async fn has_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<bool, SyncError>;
    /// Makes a blob the target holds in repository `from` visible in `repo` too, without
    /// sending its bytes (a cross-repository mount); `false` when the target would not.
    async fn mount_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from: &RepositoryName,
    ) -> Result<bool, SyncError>;
    /// Stores a blob, verifying `digest`; returns its length.
    async fn put_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        size: Option<u64>,
        data: ByteStream,
    ) -> Result<u64, SyncError>;
    /// Stores a manifest whose blobs and children it holds, and points `tag` at it.
    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        parsed: &ParsedManifest,
        content: Bytes,
        tag: Option<&Tag>,
    ) -> Result<(), SyncError>;
}

/// `repo` as the target names it: under `prefix`, if there is one.
pub(crate) fn target_name(
    prefix: Option<&RepositoryName>,
    repo: &RepositoryName,
) -> Result<RepositoryName, SyncError> {
    match prefix {
        None => Ok(repo.clone()),
        Some(prefix) => format!("{prefix}/{repo}")
            .parse()
            .map_err(|e| SyncError::Invalid(format!("{prefix}/{repo}: {e}"))),
    }
}

/// A target whose repositories are the source's under a prefix
/// ([`SyncOptions::target_prefix`]). Only the target's names change: the copy itself,
/// its reports and its logs, speak of the source's.
pub(crate) struct Prefixed<'a> {
    target: &'a dyn Target,
    prefix: Option<&'a RepositoryName>,
}

impl<'a> Prefixed<'a> {
    pub(crate) fn new(target: &'a dyn Target, prefix: Option<&'a RepositoryName>) -> Self {
        Prefixed { target, prefix }
    }

    fn name(&self, repo: &RepositoryName) -> Result<RepositoryName, SyncError> {
        target_name(self.prefix, repo)
    }
}

#[async_trait]
impl Target for Prefixed<'_> {
    async fn tag_digest(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<Digest>, SyncError> {
        self.target.tag_digest(&self.name(repo)?, tag).await
    }

    async fn manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<Held>, SyncError> {
        self.target.manifest(&self.name(repo)?, digest).await
    }

    async fn has_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<bool, SyncError> {
        self.target.has_blob(&self.name(repo)?, digest).await
    }

    async fn mount_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from: &RepositoryName,
    ) -> Result<bool, SyncError> {
        self.target
            .mount_blob(&self.name(repo)?, digest, &self.name(from)?)
            .await
    }

    async fn put_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        size: Option<u64>,
        data: ByteStream,
    ) -> Result<u64, SyncError> {
        self.target
            .put_blob(&self.name(repo)?, digest, size, data)
            .await
    }

    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        parsed: &ParsedManifest,
        content: Bytes,
        tag: Option<&Tag>,
    ) -> Result<(), SyncError> {
        self.target
            .put_manifest(&self.name(repo)?, digest, parsed, content, tag)
            .await
    }
}

/// One sync's run: what it visited (each manifest is looked at once), and its report.
pub(crate) struct Copier<'a> {
    source: &'a dyn Source,
    target: &'a dyn Target,
    options: &'a SyncOptions,
    visited: HashSet<(RepositoryName, Digest)>,
    blobs_done: Mutex<HashSet<(RepositoryName, Digest)>>,
    /// A repository where the target is known to hold each blob, to mount it from.
    blobs_held: Mutex<HashMap<Digest, RepositoryName>>,
    mounted: AtomicUsize,
    report: SyncReport,
}

impl<'a> Copier<'a> {
    pub(crate) fn new(
        source: &'a dyn Source,
        target: &'a dyn Target,
        options: &'a SyncOptions,
    ) -> Self {
        Copier {
            source,
            target,
            options,
            visited: HashSet::new(),
            blobs_done: Mutex::new(HashSet::new()),
            blobs_held: Mutex::new(HashMap::new()),
            mounted: AtomicUsize::new(0),
            report: SyncReport::default(),
        }
    }

    /// Every matching repository and tag.
    pub(crate) async fn run(mut self) -> Result<SyncReport, SyncError> {
        let pattern = &self.options.repositories;
        let names = self.retry(|| self.source.repositories(pattern)).await?;
        for name in names {
            if !pattern.matches(&name) {
                continue;
            }
            self.report.repositories += 1;
            match name.parse::<RepositoryName>() {
                Ok(repo) => self.repository(&repo).await,
                Err(e) => self.fail(format!("repository {name:?}: {e}")),
            }
        }
        self.report.blobs_mounted = self.mounted.load(Ordering::Relaxed);
        Ok(self.report)
    }

    /// One reference: a tag, or a manifest pushed by digest. A manifest by digest is
    /// copied when it is a referrer of a manifest the target holds; other untagged
    /// manifests (an index's children) come with what references them.
    pub(crate) async fn reference(
        mut self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<SyncReport, SyncError> {
        match reference {
            Reference::Tag(tag) => self.tag(repo, tag).await?,
            Reference::Digest(digest) => {
                let (media_type, content) = self.fetch(repo, digest).await?;
                let parsed = parse(repo, digest, &media_type, &content)?;
                if let Some(subject) = &parsed.subject {
                    let held = self
                        .retry(|| self.target.manifest(repo, &subject.digest))
                        .await?;
                    if held.is_some() && self.manifest(repo, digest, None, 1).await? {
                        self.report.referrers_copied += 1;
                    }
                }
            }
        }
        self.report.blobs_mounted = self.mounted.load(Ordering::Relaxed);
        Ok(self.report)
    }

    fn fail(&mut self, what: String) {
        tracing::warn!(failure = %what, "sync: not copied");
        self.report.failures.push(what);
    }

    async fn repository(&mut self, repo: &RepositoryName) {
        let tags = match self.retry(|| self.source.tags(repo)).await {
            Ok(tags) => tags,
            Err(e) => return self.fail(format!("{repo}: listing tags: {e}")),
        };
        for tag in tags {
            if self.options.tags.as_ref().is_some_and(|f| !f.matches(&tag)) {
                continue;
            }
            let tag: Tag = match tag.parse() {
                Ok(t) => t,
                Err(e) => {
                    self.fail(format!("{repo}:{tag}: {e}"));
                    continue;
                }
            };
            if let Err(e) = self.tag(repo, &tag).await {
                self.fail(format!("{repo}:{tag}: {e}"));
            }
        }
    }

    async fn tag(&mut self, repo: &RepositoryName, tag: &Tag) -> Result<(), SyncError> {
        // Gone since it was listed: nothing to copy.
        let Some(digest) = self.retry(|| self.source.resolve(repo, tag)).await? else {
            return Ok(());
        };
        let current = self.retry(|| self.target.tag_digest(repo, tag)).await?;
        if current.as_ref() == Some(&digest) {
            self.report.tags_unchanged += 1;
            // Still looked at: referrers may have come since the last sync.
            self.manifest(repo, &digest, None, 0).await?;
        } else {
            self.manifest(repo, &digest, Some(tag), 0).await?;
            self.report.tags_copied += 1;
            tracing::info!(repository = %repo, tag = %tag, digest = %digest, "sync: tag copied");
        }
        Ok(())
    }

    /// Makes the target hold `digest`, and with `tag`, point `tag` at it: children and
    /// blobs first, then the manifest, then its referrers. True if it was copied now.
    async fn manifest(
        &mut self,
        repo: &RepositoryName,
        digest: &Digest,
        tag: Option<&Tag>,
        depth: usize,
    ) -> Result<bool, SyncError> {
        if depth > MAX_DEPTH {
            return Err(SyncError::Invalid(format!(
                "{}: indexes and referrers nest deeper than {MAX_DEPTH} levels",
                at(repo, digest)
            )));
        }
        let first = self.visited.insert((repo.clone(), digest.clone()));
        if !first && tag.is_none() {
            return Ok(false);
        }
        let held = self.retry(|| self.target.manifest(repo, digest)).await?;
        // A held index is read once more, for its children's referrers.
        let held_index = held.as_ref().is_some_and(|h| is_index(&h.media_type));
        let needed = held.is_none() || tag.is_some() || (first && held_index);
        let content = match &held {
            _ if !needed => None,
            Some(Held {
                media_type,
                content: Some(content),
            }) => Some((media_type.clone(), content.clone())),
            _ => Some(self.fetch(repo, digest).await?),
        };
        let mut copied = false;
        if let Some((media_type, content)) = content {
            let parsed = parse(repo, digest, &media_type, &content)?;
            for child in &parsed.manifests {
                Box::pin(self.manifest(repo, &child.digest, None, depth + 1)).await?;
            }
            if held.is_none() {
                // Counted even when a sibling failed: those blobs stay, and are skipped
                // by the next run.
                let (blobs, bytes, result) = self.blobs(repo, &parsed).await;
                self.report.blobs_copied += blobs;
                self.report.bytes_copied += bytes;
                result?;
            }
            if held.is_none() || tag.is_some() {
                self.retry(|| {
                    self.target
                        .put_manifest(repo, digest, &parsed, content.clone(), tag)
                })
                .await?;
                if held.is_none() {
                    self.report.manifests_copied += 1;
                    metrics::counter!(MIRROR_MANIFESTS).increment(1);
                    copied = true;
                }
            }
        }
        if first {
            let referrers = self.retry(|| self.source.referrers(repo, digest)).await?;
            for r in referrers {
                if Box::pin(self.manifest(repo, &r.digest, None, depth + 1)).await? {
                    self.report.referrers_copied += 1;
                }
            }
        }
        Ok(copied)
    }

    /// A manifest from the source, checked against its digest.
    async fn fetch(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<(String, Bytes), SyncError> {
        let (media_type, content) = self.retry(|| self.source.manifest(repo, digest)).await?;
        if !digest.matches(&content) {
            return Err(SyncError::Invalid(format!(
                "{}: the source served a manifest that does not match its digest",
                at(repo, digest)
            )));
        }
        Ok((media_type, content))
    }

    /// The blobs a manifest needs, several at a time: how many were copied, their bytes,
    /// and the first error. After a failure the others still finish (nothing is left
    /// half done).
    async fn blobs(
        &self,
        repo: &RepositoryName,
        parsed: &ParsedManifest,
    ) -> (usize, u64, Result<(), SyncError>) {
        let results: Vec<_> = futures::stream::iter(parsed.required_blobs())
            .map(|digest| async move { self.blob(repo, &digest).await })
            .buffer_unordered(self.options.concurrency.max(1))
            .collect()
            .await;
        let (mut count, mut bytes) = (0, 0);
        let mut first_error = None;
        for r in results {
            match r {
                Ok(Some(n)) => {
                    count += 1;
                    bytes += n;
                }
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let result = match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        };
        (count, bytes, result)
    }

    /// Copies one blob unless the target has it; `Some(bytes)` when copied. A transient
    /// failure starts the transfer over, from a fresh read of the source.
    async fn blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<Option<u64>, SyncError> {
        let key = (repo.clone(), digest.clone());
        if self.done(&key) {
            return Ok(None);
        }
        if self.retry(|| self.target.has_blob(repo, digest)).await? {
            self.mark_done(key);
            return Ok(None);
        }
        // Copied (or found) for another repository of the target in this run: mounted
        // from there, without sending the bytes again. Any failure falls back to a copy.
        if let Some(from) = self.held_elsewhere(repo, digest) {
            match self.target.mount_blob(repo, digest, &from).await {
                Ok(true) => {
                    self.mounted.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(repository = %repo, digest = %digest, from = %from,
                        "sync: blob mounted");
                    self.mark_done(key);
                    return Ok(None);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(repository = %repo, digest = %digest, from = %from,
                        error = %e, "sync: mount failed; copying");
                }
            }
        }
        let size = self
            .retry(|| async {
                let (data, len) = self.source.blob(repo, digest).await?;
                self.target.put_blob(repo, digest, len, data).await
            })
            .await?;
        metrics::counter!(MIRROR_BLOBS).increment(1);
        metrics::counter!(MIRROR_BYTES).increment(size);
        tracing::debug!(repository = %repo, digest = %digest, size, "sync: blob copied");
        self.mark_done(key);
        Ok(Some(size))
    }

    fn done(&self, key: &(RepositoryName, Digest)) -> bool {
        self.blobs_done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    fn mark_done(&self, key: (RepositoryName, Digest)) {
        self.blobs_held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.1.clone())
            .or_insert_with(|| key.0.clone());
        self.blobs_done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key);
    }

    /// A repository other than `repo` where the target holds `digest`, as far as this run
    /// has seen.
    fn held_elsewhere(&self, repo: &RepositoryName, digest: &Digest) -> Option<RepositoryName> {
        self.blobs_held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .filter(|from| *from != repo)
            .cloned()
    }

    /// Runs `f` again after a transient failure, backing off as the options say.
    async fn retry<T, F, Fut>(&self, f: F) -> Result<T, SyncError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SyncError>>,
    {
        f.retry(self.options.backoff())
            .sleep(tokio::time::sleep)
            .when(SyncError::is_transient)
            .notify(|e, after| tracing::debug!(error = %e, retry_in = ?after, "sync: retrying"))
            .await
    }
}

fn is_index(media_type: &str) -> bool {
    matches!(essence(media_type), OCI_INDEX | DOCKER_MANIFEST_LIST)
}

fn parse(
    repo: &RepositoryName,
    digest: &Digest,
    media_type: &str,
    content: &[u8],
) -> Result<ParsedManifest, SyncError> {
    let content_type = (!media_type.is_empty()).then_some(media_type);
    ParsedManifest::parse(content_type, content)
        .map_err(|e| SyncError::Invalid(format!("{}: {e}", at(repo, digest))))
}
