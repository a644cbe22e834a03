//! Mirroring: copies repositories from another registry into this one
//! ([`SyncOptions::from`]), or from this one to another ([`SyncOptions::to`], pushing with
//! the distribution API's uploads), once ([`Registry::sync`]) or as a background job: on
//! a schedule ([`schedule::PullMirror`]) or on every push ([`push::PushMirror`]).
//!
//! What a sync does, for every repository of the source whose name matches the
//! repositories pattern (`*` matches anything, `/` included) and every tag matching the
//! tags filter (a regular expression, unanchored: `^v1\.` for tags starting `v1.`):
//!
//! - **Incremental.** A tag the target already points at the source's digest is not
//!   copied; a manifest or blob the target already holds is not copied (asked with `HEAD`,
//!   or the metadata store when the target is this registry). Every blob and manifest is
//!   committed on its own, children before parents, so a sync that was interrupted
//!   resumes where it stopped when run again.
//! - **Whole.** An index is copied with every child manifest, children first, so the
//!   target never holds an index it cannot serve.
//! - **Referrers follow their subjects.** After a manifest, the manifests whose `subject`
//!   it is (signatures, SBOMs) are copied, from the source's referrers API; a source
//!   without one (`404`) has none to offer.
//! - **Verified.** Manifests and blobs are checked against their digests before they are
//!   stored here; a registry being pushed to checks them itself.
//! - **Mounted, not copied twice.** A blob this sync already copied to (or found in) one
//!   repository of the target is mounted into the next one that needs it
//!   (`POST ?mount=&from=`); a target that will not mount gets a copy.
//! - **Same names, or under a prefix.** A repository keeps its name in the target, or
//!   goes under [`SyncOptions::target_prefix`] (`lib/app` to `backup/lib/app`).
//! - **Failures are per tag.** A tag that cannot be copied is reported in
//!   [`SyncReport::failures`] and the sync goes on; a transient failure (a connection
//!   error, a 5xx, a 429) is retried with exponential backoff first.
//!
//! ```no_run
//! # async fn demo(registry: registry_core::Registry) -> Result<(), Box<dyn std::error::Error>> {
//! use registry_core::mirror::{Remote, SyncOptions};
//!
//! let source = Remote::new("https://registry.example.com")?;
//! let options = SyncOptions::from(source, "library/*".parse()?).with_tags("^3\\.".parse()?);
//! let report = registry.sync(&options).await?;
//! println!("{} blobs copied, {} failures", report.blobs_copied, report.failures.len());
//! # Ok(())
//! # }
//! ```

mod copy;
mod local;
pub mod push;
mod remote;
pub mod schedule;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use oci_spec_types::{Digest, Reference, RepositoryName};

use crate::Registry;
use crate::auth::NamePattern;
use crate::error::RegistryError;
use crate::proxy::{Credentials, Upstream, UpstreamError};

/// Metric: blobs copied by syncs and mirrors.
pub const MIRROR_BLOBS: &str = "registry_mirror_blobs_copied_total";
/// Metric: bytes of blobs copied by syncs and mirrors.
pub const MIRROR_BYTES: &str = "registry_mirror_bytes_copied_total";
/// Metric: manifests copied by syncs and mirrors.
pub const MIRROR_MANIFESTS: &str = "registry_mirror_manifests_copied_total";
/// Metric: background mirror jobs (a scheduled sync, a pushed reference), by `outcome`
/// (`ok`, `retry`, `failed`, `dropped`).
pub const MIRROR_JOBS: &str = "registry_mirror_jobs_total";

/// Another registry to copy from or to.
#[derive(Clone, PartialEq, Eq)]
pub struct Remote {
    upstream: Upstream,
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("url", &self.upstream.url)
            .field("credentials", &self.upstream.credentials)
            .finish()
    }
}

/// A mirror setting that cannot work: named in the message.
#[derive(Debug, thiserror::Error)]
#[error("invalid mirror setting: {0}")]
pub struct MirrorConfigError(String);

impl Remote {
    /// `url` is the registry's base URL, `http://` or `https://` (`/v2/` is appended).
    pub fn new(url: &str) -> Result<Self, MirrorConfigError> {
        // The proxy's upstream client serves the mirror too; a mirror has no prefix, so
        // the placeholder is never used to name anything.
        let upstream =
            Upstream::new("mirror", url).map_err(|e| MirrorConfigError(e.to_string()))?;
        Ok(Remote { upstream })
    }

    /// Anonymous by default; Basic credentials answer a `Basic` challenge or go to the
    /// token realm of a `Bearer` one.
    #[must_use]
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.upstream.credentials = credentials;
        self
    }

    /// The registry's base URL.
    pub fn url(&self) -> &str {
        &self.upstream.url
    }
}

/// Which tags to copy: an unanchored regular expression (the `regex` crate's syntax).
#[derive(Clone)]
pub struct TagFilter(regex::Regex);

impl TagFilter {
    /// Whether `tag` matches (anywhere in it: the expression is unanchored).
    pub fn matches(&self, tag: &str) -> bool {
        self.0.is_match(tag)
    }
}

impl FromStr for TagFilter {
    type Err = MirrorConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        regex::Regex::new(s)
            .map(TagFilter)
            .map_err(|e| MirrorConfigError(format!("tags {s:?}: {e}")))
    }
}

impl fmt::Debug for TagFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TagFilter({:?})", self.0.as_str())
    }
}

impl fmt::Display for TagFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl PartialEq for TagFilter {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// Which way a sync copies.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Direction {
    /// From the remote registry into this one.
    From(Remote),
    /// From this registry to the remote one.
    To(Remote),
}

/// What to copy, and how.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SyncOptions {
    /// Which registry is the source, and the other one.
    pub direction: Direction,
    /// Repositories of the source to copy. A pattern without `*` names one repository,
    /// and the source's catalog is not asked (many registries do not serve it).
    pub repositories: NamePattern,
    /// Tags to copy (all when `None`).
    pub tags: Option<TagFilter>,
    /// Blobs of one manifest copied at once (default 4).
    pub concurrency: usize,
    /// Retries of a request that failed transiently (default 3).
    pub max_retries: usize,
    /// The first retry's delay, doubling up to 30 s (default 500 ms).
    pub retry_delay: Duration,
    /// Where the source's repositories go in the target: `NAME` becomes `PREFIX/NAME`
    /// (default: the same name).
    pub target_prefix: Option<RepositoryName>,
}

impl SyncOptions {
    /// Copies `repositories` of `source` into this registry.
    pub fn from(source: Remote, repositories: NamePattern) -> Self {
        Self::new(Direction::From(source), repositories)
    }

    /// Copies `repositories` of this registry to `target`.
    pub fn to(target: Remote, repositories: NamePattern) -> Self {
        Self::new(Direction::To(target), repositories)
    }

    /// Copies `repositories` in `direction`, every tag, with the defaults each field names.
    pub fn new(direction: Direction, repositories: NamePattern) -> Self {
        SyncOptions {
            direction,
            repositories,
            tags: None,
            concurrency: 4,
            max_retries: 3,
            retry_delay: Duration::from_millis(500),
            target_prefix: None,
        }
    }

    /// Puts the copies under `prefix` in the target: the source's `library/alpine` is
    /// `PREFIX/library/alpine` there.
    #[must_use]
    pub fn with_target_prefix(mut self, prefix: RepositoryName) -> Self {
        self.target_prefix = Some(prefix);
        self
    }

    /// Copies only tags matching `tags`.
    #[must_use]
    pub fn with_tags(mut self, tags: TagFilter) -> Self {
        self.tags = Some(tags);
        self
    }

    /// Sets [`SyncOptions::concurrency`] (at least 1).
    #[must_use]
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Sets [`SyncOptions::max_retries`] and [`SyncOptions::retry_delay`].
    #[must_use]
    pub fn with_retries(mut self, max_retries: usize, first_delay: Duration) -> Self {
        self.max_retries = max_retries;
        self.retry_delay = first_delay;
        self
    }

    fn backoff(&self) -> backon::ExponentialBuilder {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.retry_delay)
            .with_max_delay(Duration::from_secs(30).max(self.retry_delay))
            .with_max_times(self.max_retries)
            .with_jitter()
    }
}

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncReport {
    /// Repositories of the source that matched.
    pub repositories: usize,
    /// Tags created or moved in the target.
    pub tags_copied: usize,
    /// Tags the target already pointed at the source's manifest.
    pub tags_unchanged: usize,
    /// Manifests copied (index children and referrers included).
    pub manifests_copied: usize,
    /// Of those, referrers.
    pub referrers_copied: usize,
    /// Blobs copied (those the target had are not counted).
    pub blobs_copied: usize,
    /// Bytes of the blobs copied.
    pub bytes_copied: u64,
    /// Blobs made visible in a repository of the target by a cross-repository mount
    /// from another one this sync had copied them to (no bytes sent).
    pub blobs_mounted: usize,
    /// What could not be copied, with the reason (the sync went on).
    pub failures: Vec<String>,
}

impl SyncReport {
    /// True when nothing failed.
    pub fn is_complete(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Why a sync, or one thing in it, failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The other registry failed or refused.
    #[error("{url}: {source}")]
    Remote {
        /// The other registry's URL.
        url: String,
        /// What went wrong.
        #[source]
        source: UpstreamError,
    },
    /// This registry's stores failed, or refused what was copied.
    #[error(transparent)]
    Local(#[from] RegistryError),
    /// A transfer broke off (the source's stream failed half way); nothing of it was
    /// kept, and it is tried again.
    #[error("transfer broke off: {0}")]
    Interrupted(String),
    /// Content that cannot be mirrored: a digest that does not match, a manifest that
    /// does not parse, a name this registry cannot hold.
    #[error("{0}")]
    Invalid(String),
}

impl SyncError {
    /// Worth trying again: the other registry was unreachable, timed out, or answered
    /// 5xx or 429.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SyncError::Remote {
                source: UpstreamError::Unavailable(_),
                ..
            } | SyncError::Interrupted(_)
        )
    }
}

impl From<storage_traits::MetadataError> for SyncError {
    fn from(e: storage_traits::MetadataError) -> Self {
        SyncError::Local(e.into())
    }
}

impl From<storage_traits::StorageError> for SyncError {
    fn from(e: storage_traits::StorageError) -> Self {
        SyncError::Local(e.into())
    }
}

impl Registry {
    /// Copies what `options` names, from its source to its target (see the [module
    /// docs](self)). An error only when the source's repositories cannot be listed;
    /// everything else that fails is in [`SyncReport::failures`].
    pub async fn sync(&self, options: &SyncOptions) -> Result<SyncReport, SyncError> {
        let report = match &options.direction {
            Direction::From(remote) => {
                let source = remote::RemoteRegistry::new(remote);
                let target = local::LocalStores::new(&self.inner);
                let target = copy::Prefixed::new(&target, options.target_prefix.as_ref());
                copy::Copier::new(&source, &target, options).run().await
            }
            Direction::To(remote) => {
                let source = local::LocalStores::new(&self.inner);
                let target = remote::RemoteRegistry::new(remote);
                let target = copy::Prefixed::new(&target, options.target_prefix.as_ref());
                copy::Copier::new(&source, &target, options).run().await
            }
        };
        // The recovery records of what was stored here, before a `registry sync`
        // process exits.
        self.inner.recovery.flush().await;
        report
    }

    /// Copies one reference of one repository (a tag with what it points at, or a
    /// manifest by digest with its referrers), as a push mirror does after each push.
    /// `options.repositories` and `options.tags` are not consulted.
    pub async fn sync_reference(
        &self,
        options: &SyncOptions,
        repository: &RepositoryName,
        reference: &Reference,
    ) -> Result<SyncReport, SyncError> {
        let report = match &options.direction {
            Direction::From(remote) => {
                let source = remote::RemoteRegistry::new(remote);
                let target = local::LocalStores::new(&self.inner);
                let target = copy::Prefixed::new(&target, options.target_prefix.as_ref());
                copy::Copier::new(&source, &target, options)
                    .reference(repository, reference)
                    .await
            }
            Direction::To(remote) => {
                let source = local::LocalStores::new(&self.inner);
                let target = remote::RemoteRegistry::new(remote);
                let target = copy::Prefixed::new(&target, options.target_prefix.as_ref());
                copy::Copier::new(&source, &target, options)
                    .reference(repository, reference)
                    .await
            }
        };
        self.inner.recovery.flush().await;
        report
    }
}

/// `repo@digest`, for messages.
fn at(repo: &RepositoryName, digest: &Digest) -> String {
    format!("{repo}@{digest}")
}
