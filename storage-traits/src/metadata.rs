//! The metadata store trait: repositories, blob links, manifests, tags and referrers (and,
//! through its supertrait [`UploadSessionStore`], upload session records).

use std::collections::BTreeMap;
use std::fmt::Debug;

use async_trait::async_trait;
use bytes::Bytes;
use oci_spec_types::{Digest, ParsedManifest, Reference, RepositoryName, Tag};

use crate::{MetadataError, UploadSessionStore};

/// Lexical pagination as the spec defines it for `tags/list` and `_catalog`: entries
/// strictly after `last`, at most `limit` of them (all when `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Entries strictly after this one.
    pub last: Option<String>,
    /// At most this many entries.
    pub limit: Option<usize>,
}

impl Page {
    /// Entries after `last`, at most `limit`.
    pub fn new(last: Option<String>, limit: Option<usize>) -> Self {
        Page { last, limit }
    }
}

/// A manifest to store, with the references the registry parsed out of it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NewManifest {
    /// The repository it is pushed to.
    pub repository: RepositoryName,
    /// The digest of its bytes.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// The exact bytes the client sent.
    pub content: Bytes,
    /// `artifactType`, or the config media type for image manifests.
    pub artifact_type: Option<String>,
    /// The manifest it refers to (`subject`), for the referrers API.
    pub subject: Option<Digest>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// Blobs that must be linked in the repository (config and layers).
    pub blob_refs: Vec<Digest>,
    /// Manifests that must exist in the repository (children of an index).
    pub manifest_refs: Vec<Digest>,
    /// The tags to point at this manifest: the tag it was pushed by, or every `tag` query
    /// parameter of a push by digest ("Pushing Manifests with Tags"). Empty when pushed by
    /// digest alone; a tag named twice is stored once.
    pub tags: Vec<Tag>,
    /// Every tag in `tags` may be created but never moved: if any of them already points
    /// at another manifest, `put_manifest` stores nothing (neither the manifest nor any
    /// of the tags) and returns [`MetadataError::TagImmutable`] naming that tag. Checked
    /// in the same transaction that moves tags, so of two first pushes of one tag with
    /// different manifests exactly one succeeds.
    pub tag_immutable: bool,
}

impl NewManifest {
    /// A manifest of `repo` with no references, tags or subject: add them with the `with_*` methods.
    pub fn new(
        repository: RepositoryName,
        digest: Digest,
        media_type: String,
        content: Bytes,
    ) -> Self {
        NewManifest {
            repository,
            digest,
            media_type,
            content,
            artifact_type: None,
            subject: None,
            annotations: BTreeMap::new(),
            blob_refs: Vec::new(),
            manifest_refs: Vec::new(),
            tags: Vec::new(),
            tag_immutable: false,
        }
    }

    /// A manifest as parsed from its bytes: media type, artifact type, subject,
    /// annotations and the references the store checks, all taken from `parsed`.
    pub fn from_parsed(
        repository: RepositoryName,
        digest: Digest,
        parsed: &ParsedManifest,
        content: Bytes,
    ) -> Self {
        NewManifest::new(repository, digest, parsed.media_type.clone(), content)
            .with_artifact_type(parsed.effective_artifact_type())
            .with_subject(parsed.subject.as_ref().map(|s| s.digest.clone()))
            .with_annotations(parsed.annotations.clone())
            .with_blob_refs(parsed.required_blobs())
            .with_manifest_refs(parsed.required_manifests())
    }

    /// Sets the artifact type.
    pub fn with_artifact_type(mut self, t: Option<String>) -> Self {
        self.artifact_type = t;
        self
    }
    /// Sets the subject.
    pub fn with_subject(mut self, s: Option<Digest>) -> Self {
        self.subject = s;
        self
    }
    /// Sets the annotations.
    pub fn with_annotations(mut self, a: BTreeMap<String, String>) -> Self {
        self.annotations = a;
        self
    }
    /// Sets the blobs that must be linked in the repository.
    pub fn with_blob_refs(mut self, r: Vec<Digest>) -> Self {
        self.blob_refs = r;
        self
    }
    /// Sets the manifests that must exist in the repository.
    pub fn with_manifest_refs(mut self, r: Vec<Digest>) -> Self {
        self.manifest_refs = r;
        self
    }
    /// Adds `t` to the tags, if it is `Some`; `None` leaves the tags as they are (use
    /// [`with_tags`](Self::with_tags) with nothing to clear them).
    pub fn with_tag(mut self, t: Option<Tag>) -> Self {
        self.tags.extend(t);
        self
    }
    /// Replaces the tags with `tags`.
    pub fn with_tags(mut self, tags: impl IntoIterator<Item = Tag>) -> Self {
        self.tags = tags.into_iter().collect();
        self
    }
    /// Refuses to move a tag that points at another manifest (see the field).
    pub fn with_tag_immutable(mut self, immutable: bool) -> Self {
        self.tag_immutable = immutable;
        self
    }
}

/// A stored manifest.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ManifestRecord {
    /// The digest of its bytes.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its exact bytes.
    pub content: Bytes,
}

impl ManifestRecord {
    /// A manifest record.
    pub fn new(digest: Digest, media_type: String, content: Bytes) -> Self {
        ManifestRecord {
            digest,
            media_type,
            content,
        }
    }
}

/// A manifest whose `subject` is a given digest, as the referrers API lists it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReferrerRecord {
    /// The referrer's digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its artifact type (`artifactType`, or the config media type).
    pub artifact_type: Option<String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
}

impl ReferrerRecord {
    /// A referrer record.
    pub fn new(
        digest: Digest,
        media_type: String,
        size: u64,
        artifact_type: Option<String>,
        annotations: BTreeMap<String, String>,
    ) -> Self {
        ReferrerRecord {
            digest,
            media_type,
            size,
            artifact_type,
            annotations,
        }
    }
}

/// Where the registry's metadata lives.
///
/// # Behavior
/// - Repositories come into existence with their first blob link, manifest or upload, and
///   are listed in byte-wise lexical order.
/// - `put_manifest` is one transaction: it checks that every `blob_refs` entry is linked in
///   the repository and every `manifest_refs` entry is a manifest of the repository
///   (otherwise [`MetadataError::MissingReferences`] and nothing changes), stores the
///   manifest (storing the same digest again is a no-op that may move tags), records
///   its references and subject, and points every one of its `tags` at it. With
///   `tag_immutable`, one tag that already points at another manifest refuses the whole
///   put: no manifest, no tag is stored.
/// - `delete_manifest` removes the manifest, every tag pointing at it and its reference
///   rows; it returns false if the manifest was not in the repository.
/// - `list_tags` returns `None` for an unknown repository, tags in lexical order otherwise.
/// - Upload session records are kept through the supertrait [`UploadSessionStore`] (its own
///   contract), so one object holds all of the registry's metadata.
#[async_trait]
pub trait MetadataStore: UploadSessionStore + Debug + Send + Sync + 'static {
    /// Repository names in lexical order, paginated.
    async fn list_repositories(&self, page: &Page) -> Result<Vec<RepositoryName>, MetadataError>;

    /// Whether the store holds a record of the repository `repo`.
    async fn repository_exists(&self, repo: &RepositoryName) -> Result<bool, MetadataError>;

    /// Records that `repo` may serve the blob `digest` of `size` bytes.
    async fn link_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), MetadataError>;

    /// The blob's size if it is linked in `repo`.
    async fn blob_link(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<u64>, MetadataError>;

    /// Removes the link; true if there was one.
    async fn unlink_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, MetadataError>;

    /// Stores a manifest with its references and tags in one transaction (see `# Behavior`).
    async fn put_manifest(&self, manifest: &NewManifest) -> Result<(), MetadataError>;

    /// The manifest `reference` names in `repo`, by tag or digest.
    async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<Option<ManifestRecord>, MetadataError>;

    /// Removes the manifest and its tags; true if it was in the repository.
    async fn delete_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, MetadataError>;

    /// The repository's tags in lexical order, paginated; `None` for an unknown repository.
    async fn list_tags(
        &self,
        repo: &RepositoryName,
        page: &Page,
    ) -> Result<Option<Vec<Tag>>, MetadataError>;

    /// Removes a tag (the manifest stays); true if it existed.
    async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<bool, MetadataError>;

    /// Removes a tag as [`delete_tag`](Self::delete_tag) does, but only if it still
    /// points at `digest` and was last moved at `updated_at` (Unix milliseconds, as the
    /// insight listings report it); checked in the transaction that deletes it, so a tag
    /// pushed or moved since the caller looked is kept. True if it was removed.
    async fn delete_tag_if(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
        updated_at: i64,
    ) -> Result<bool, MetadataError>;

    /// Manifests of `repo` whose subject is `subject`, optionally only those of one
    /// artifact type, ordered by digest.
    async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ReferrerRecord>, MetadataError>;

    /// The online garbage-collection ability, if this store has it.
    fn gc(&self) -> Option<&dyn crate::GcMetadata> {
        None
    }

    /// The insight queries, if this store has them.
    fn insights(&self) -> Option<&dyn crate::InsightsMetadata> {
        None
    }

    /// Pull analytics, if this store keeps them.
    fn pulls(&self) -> Option<&dyn crate::PullMetadata> {
        None
    }

    /// Byte quotas checked with the link, if this store has them.
    fn quotas(&self) -> Option<&dyn crate::QuotaMetadata> {
        None
    }
}
