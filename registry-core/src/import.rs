//! Import from CNCF distribution's storage layout: fills the metadata database (and the
//! blob store) from a registry that kept everything in files, so an operator can move to
//! this registry without re-pushing anything.
//!
//! Distribution's layout under its root (`docker/registry/v2/`):
//!
//! ```text
//! blobs/sha256/<2 hex>/<hex>/data                              every blob and manifest
//! repositories/<name>/_layers/sha256/<hex>/link                blobs the repository may serve
//! repositories/<name>/_manifests/revisions/sha256/<hex>/link   manifests of the repository
//! repositories/<name>/_manifests/tags/<tag>/current/link       what each tag points at
//! ```
//!
//! Every step is idempotent (a blob already in the store is not copied again, links and
//! manifests are upserts), so re-running an import, or resuming one that stopped, is safe.
//! Blob bytes are hashed while copied, so a corrupt source file is reported, not imported.
//! Repositories are imported one after another, and a repository's blobs
//! four at a time (`COPY_CONCURRENCY`).
//!
//! Sources: [`FsSource`] reads a root in a local folder; the `registry` binary adds one
//! over an S3 prefix (distribution's `s3` driver). [`OwnStoreSource`] reads this
//! registry's own blob store, whose [recovery records](storage_traits::recovery) follow
//! the same repository layout: [`Registry::rebuild`] refills a lost metadata database
//! from it. A blob the destination store already holds is adopted where it is (recorded,
//! not copied), which is every blob in a rebuild.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use oci_spec_types::{Digest, ParsedManifest, RepositoryName, Tag};
use storage_traits::{
    BlobStore, BlobStoreExt, ByteStream, MetadataError, NewManifest, StorageError, recovery,
};
use tokio::sync::OnceCell;

use crate::Registry;
use crate::error::RegistryError;
use crate::upload::verified::{Verified, store_verified};

/// Where an import reads from: a read-only view of a distribution storage root.
#[async_trait]
pub trait ImportSource: Debug + Send + Sync {
    /// Names directly inside `dir` (a `/`-separated path below the root); empty if the
    /// folder does not exist.
    async fn list(&self, dir: &str) -> Result<Vec<String>, StorageError>;
    /// A small file's content (links, manifests), `None` if missing.
    async fn read(&self, path: &str) -> Result<Option<Bytes>, StorageError>;
    /// A blob's bytes, streamed; `None` if missing.
    async fn open(&self, path: &str) -> Result<Option<ByteStream>, StorageError>;
}

/// A distribution root on a local filesystem (its `rootdirectory` setting).
#[derive(Debug, Clone)]
pub struct FsSource {
    root: PathBuf,
}

impl FsSource {
    /// The distribution storage root at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsSource { root: root.into() }
    }
}

fn io(e: std::io::Error) -> StorageError {
    StorageError::backend("import-fs", e)
}

#[async_trait]
impl ImportSource for FsSource {
    async fn list(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        let mut out = Vec::new();
        let mut rd = match tokio::fs::read_dir(self.root.join(dir)).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(e)),
        };
        while let Some(entry) = rd.next_entry().await.map_err(io)? {
            if let Some(name) = entry.file_name().to_str() {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    async fn read(&self, path: &str) -> Result<Option<Bytes>, StorageError> {
        match tokio::fs::read(self.root.join(path)).await {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn open(&self, path: &str) -> Result<Option<ByteStream>, StorageError> {
        let file = match tokio::fs::File::open(self.root.join(path)).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
        Ok(Some(stream.map(|r| r.map_err(io)).boxed()))
    }
}

/// This registry's own blob store as the source, to rebuild a lost metadata database
/// ([`Registry::rebuild`]). Repositories, manifest revisions and tags come from the
/// store's recovery records ([`RecoveryLog`](storage_traits::RecoveryLog), kept next to
/// the blobs in distribution's repository layout); manifest and blob bytes are the
/// store's own blobs. Every blob the records name is therefore already in place: the
/// import finds it there and only records it, copying nothing.
///
/// The records are read once, on the first listing or read of one, with
/// [`records_under`](storage_traits::RecoveryLog::records_under), and kept in memory
/// until the source is dropped (about 250 bytes per record): a lookup in the fs store's
/// journal reads the whole journal, and an import makes about a dozen per repository.
/// Later changes to the records are not seen.
#[derive(Debug, Clone)]
pub struct OwnStoreSource {
    blobs: Arc<dyn BlobStore>,
    records: Arc<OnceCell<Records>>,
}

impl OwnStoreSource {
    /// `None` if the store keeps no recovery records.
    pub fn new(blobs: Arc<dyn BlobStore>) -> Option<Self> {
        blobs.recovery()?;
        Some(OwnStoreSource {
            blobs,
            records: Arc::new(OnceCell::new()),
        })
    }

    async fn records(&self) -> Result<&Records, StorageError> {
        self.records
            .get_or_try_init(|| async {
                let log = self.blobs.recovery().ok_or_else(no_records)?;
                let mut all = log.records_under(recovery::REPOSITORIES).await?;
                // The contract says sorted; the lookups below rely on it.
                all.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(Records(all))
            })
            .await
    }
}

/// Every record under `repositories`, sorted by path.
struct Records(Vec<(String, Bytes)>);

impl Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Records({} records)", self.0.len())
    }
}

impl Records {
    fn get(&self, path: &str) -> Option<Bytes> {
        let i = self
            .0
            .binary_search_by(|(p, _)| p.as_str().cmp(path))
            .ok()?;
        self.0.get(i).map(|(_, content)| content.clone())
    }

    /// The names directly inside `dir`, as `RecoveryLog::list_records` gives them.
    fn list(&self, dir: &str) -> Vec<String> {
        let prefix = format!("{dir}/");
        let start = self
            .0
            .partition_point(|(p, _)| p.as_str() < prefix.as_str());
        let names: BTreeSet<&str> = self.0[start..]
            .iter()
            .map_while(|(p, _)| p.strip_prefix(&prefix))
            .map(|rest| rest.split('/').next().unwrap_or(rest))
            .collect();
        names.into_iter().map(str::to_string).collect()
    }
}

fn no_records() -> StorageError {
    StorageError::backend(
        "import",
        "this blob store keeps no recovery records, so the metadata cannot be rebuilt from it",
    )
}

/// What a path of distribution's layout is in our own stores.
#[derive(Debug, PartialEq, Eq)]
enum OwnPath<'a> {
    /// `repositories/...`: a recovery record (or folder of them), by its path in the log.
    Record(&'a str),
    /// `blobs/<alg>/<2 hex>/<hex>/data`.
    Blob(Digest),
    /// Anything else: nothing there.
    Nothing,
}

fn own_path(path: &str) -> OwnPath<'_> {
    let Some(rest) = path.strip_prefix(V2).and_then(|r| r.strip_prefix('/')) else {
        return OwnPath::Nothing;
    };
    if rest == "repositories" || rest.starts_with("repositories/") {
        return OwnPath::Record(rest);
    }
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["blobs", algorithm, fan_out, hex, "data"]
            if fan_out.len() == 2 && hex.starts_with(fan_out) =>
        {
            match format!("{algorithm}:{hex}").parse() {
                Ok(digest) => OwnPath::Blob(digest),
                Err(_) => OwnPath::Nothing,
            }
        }
        _ => OwnPath::Nothing,
    }
}

#[async_trait]
impl ImportSource for OwnStoreSource {
    async fn list(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        match own_path(dir) {
            OwnPath::Record(folder) => Ok(self.records().await?.list(folder)),
            OwnPath::Blob(_) | OwnPath::Nothing => Ok(Vec::new()),
        }
    }

    async fn read(&self, path: &str) -> Result<Option<Bytes>, StorageError> {
        match own_path(path) {
            OwnPath::Record(record) => Ok(self.records().await?.get(record)),
            OwnPath::Blob(digest) => match self.blobs.get_bytes(&digest).await {
                Ok(bytes) => Ok(Some(bytes)),
                Err(StorageError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            },
            OwnPath::Nothing => Ok(None),
        }
    }

    async fn open(&self, path: &str) -> Result<Option<ByteStream>, StorageError> {
        match own_path(path) {
            OwnPath::Blob(digest) => match self.blobs.get(&digest, None).await {
                Ok(got) => Ok(Some(got.stream)),
                Err(StorageError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            },
            OwnPath::Record(_) | OwnPath::Nothing => Ok(None),
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportReport {
    /// Repositories imported (a folder whose name is not valid is skipped).
    pub repositories: usize,
    /// Blobs copied into the blob store (already present ones are not counted).
    pub blobs_copied: usize,
    /// Bytes of the blobs copied.
    pub bytes_copied: u64,
    /// Blob links created in repositories.
    pub links: usize,
    /// Manifests imported.
    pub manifests: usize,
    /// Tags imported.
    pub tags: usize,
    /// Things that could not be imported, with the reason (the import goes on).
    pub skipped: Vec<String>,
}

impl ImportReport {
    /// Adds the counts and skips of a part done on its own (one blob's copy).
    fn add(&mut self, part: ImportReport) {
        let ImportReport {
            repositories,
            blobs_copied,
            bytes_copied,
            links,
            manifests,
            tags,
            skipped,
        } = part;
        self.repositories += repositories;
        self.blobs_copied += blobs_copied;
        self.bytes_copied += bytes_copied;
        self.links += links;
        self.manifests += manifests;
        self.tags += tags;
        self.skipped.extend(skipped);
    }
}

const V2: &str = "docker/registry/v2";

/// Blobs of one repository copied at once, so that a source or a store across a network
/// (S3) has several transfers in flight rather than one.
const COPY_CONCURRENCY: usize = 4;

fn blob_path(d: &Digest) -> String {
    let hex = d.hex();
    format!(
        "{V2}/blobs/{}/{}/{hex}/data",
        d.algorithm(),
        hex.get(..2).unwrap_or(hex)
    )
}

impl Registry {
    /// Imports every repository, blob link, manifest and tag of a distribution root.
    pub async fn import(&self, source: &dyn ImportSource) -> Result<ImportReport, RegistryError> {
        let mut report = ImportReport::default();
        let mut repos = Vec::new();
        find_repositories(source, "", &mut repos).await?;
        for name in repos {
            let Ok(repo) = name.parse::<RepositoryName>() else {
                report
                    .skipped
                    .push(format!("repository {name:?}: not a valid name"));
                continue;
            };
            report.repositories += 1;
            self.import_repository(source, &repo, &mut report).await?;
        }
        // The recovery records of what was imported, so a later rebuild finds it too.
        self.inner.recovery.flush().await;
        Ok(report)
    }

    /// Rebuilds the metadata from this registry's own blob store, after the database was
    /// lost: [`Registry::import`] from an [`OwnStoreSource`]. Every blob is already in
    /// place, so nothing is copied. Safe to re-run, and on a database that is not empty
    /// (everything is an upsert). An error if the blob store keeps no recovery records.
    pub async fn rebuild(&self) -> Result<ImportReport, RegistryError> {
        let source = OwnStoreSource::new(self.inner.blobs.clone()).ok_or_else(no_records)?;
        self.import(&source).await
    }

    async fn import_repository(
        &self,
        source: &dyn ImportSource,
        repo: &RepositoryName,
        report: &mut ImportReport,
    ) -> Result<(), RegistryError> {
        let base = format!("{V2}/repositories/{repo}");
        let layers = link_dir(source, &format!("{base}/_layers"), report).await?;
        // Several at a time, each linked as soon as it is copied, and reported in link
        // order (the same on every run). After an error no further copy starts; those
        // already running finish, so none is left half-done, and the first error is
        // returned.
        let failed = AtomicBool::new(false);
        let copies: Vec<_> = futures::stream::iter(layers)
            .map(|digest| {
                let failed = &failed;
                async move {
                    let mut own = ImportReport::default();
                    if failed.load(Ordering::Relaxed) {
                        return (Ok(()), own);
                    }
                    let result = self
                        .copy_and_link(source, repo, &digest, &mut own)
                        .await
                        .map(drop);
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    (result, own)
                }
            })
            .buffered(COPY_CONCURRENCY)
            .collect()
            .await;
        let mut first_error = None;
        for (result, own) in copies {
            report.add(own);
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        // Manifests, children before the indexes that reference them: retry the ones that
        // miss a child until a round makes no progress.
        let mut pending = Vec::new();
        for digest in link_dir(source, &format!("{base}/_manifests/revisions"), report).await? {
            match source.read(&blob_path(&digest)).await? {
                Some(bytes) if digest.matches(&bytes) => pending.push((digest, bytes)),
                Some(_) => report.skipped.push(format!(
                    "{repo}@{digest}: content does not match its digest"
                )),
                None => report
                    .skipped
                    .push(format!("{repo}@{digest}: manifest bytes missing")),
            }
        }
        let mut stored = BTreeSet::new();
        loop {
            let before = pending.len();
            let mut still = Vec::new();
            for (digest, bytes) in pending {
                match self
                    .import_manifest(source, repo, &digest, &bytes, None, report)
                    .await?
                {
                    true => {
                        stored.insert(digest.clone());
                        report.manifests += 1;
                    }
                    false => still.push((digest, bytes)),
                }
            }
            pending = still;
            if pending.is_empty() || pending.len() == before {
                break;
            }
        }
        for (digest, _) in &pending {
            report.skipped.push(format!(
                "{repo}@{digest}: references content that is not in the source"
            ));
        }
        for tag in source.list(&format!("{base}/_manifests/tags")).await? {
            let Ok(t) = tag.parse::<Tag>() else {
                report
                    .skipped
                    .push(format!("{repo}:{tag}: not a valid tag"));
                continue;
            };
            let link = source
                .read(&format!("{base}/_manifests/tags/{tag}/current/link"))
                .await?;
            let Some(digest) = link.as_deref().and_then(parse_link) else {
                report
                    .skipped
                    .push(format!("{repo}:{tag}: no readable current link"));
                continue;
            };
            if !stored.contains(&digest) {
                report.skipped.push(format!(
                    "{repo}:{tag}: points at {digest}, which was not imported"
                ));
                continue;
            }
            let Some(bytes) = source.read(&blob_path(&digest)).await? else {
                continue;
            };
            if self
                .import_manifest(source, repo, &digest, &bytes, Some(t), report)
                .await?
            {
                report.tags += 1;
            }
        }
        Ok(())
    }

    /// Stores one manifest (and links any blob it needs that the source has); false if it
    /// references a manifest not imported yet.
    async fn import_manifest(
        &self,
        source: &dyn ImportSource,
        repo: &RepositoryName,
        digest: &Digest,
        bytes: &Bytes,
        tag: Option<Tag>,
        report: &mut ImportReport,
    ) -> Result<bool, RegistryError> {
        let parsed = match ParsedManifest::parse(None, bytes) {
            Ok(p) => p,
            Err(e) => {
                report.skipped.push(format!("{repo}@{digest}: {e}"));
                return Ok(true);
            }
        };
        // Distribution does not always keep a `_layers` link for every blob a manifest
        // uses (configs pushed by old clients, say): link what the source has.
        for blob in parsed.required_blobs() {
            if self.inner.metadata.blob_link(repo, &blob).await?.is_none() {
                self.copy_and_link(source, repo, &blob, report).await?;
            }
        }
        let manifest = NewManifest::new(
            repo.clone(),
            digest.clone(),
            parsed.media_type.clone(),
            bytes.clone(),
        )
        .with_artifact_type(parsed.effective_artifact_type())
        .with_subject(parsed.subject.as_ref().map(|s| s.digest.clone()))
        .with_annotations(parsed.annotations.clone())
        .with_blob_refs(parsed.required_blobs())
        .with_manifest_refs(parsed.required_manifests())
        .with_tag(tag.clone());
        match crate::gc::retry_while_being_deleted(|| self.inner.metadata.put_manifest(&manifest))
            .await
        {
            Ok(()) => {}
            Err(MetadataError::MissingReferences { manifests, .. }) if !manifests.is_empty() => {
                return Ok(false);
            }
            Err(MetadataError::MissingReferences { blobs, .. }) => {
                report.skipped.push(format!(
                    "{repo}@{digest}: blobs missing from the source: {blobs:?}"
                ));
                return Ok(true);
            }
            Err(e) => return Err(e.into()),
        }
        if self.inner.blobs.stat(digest).await?.is_none() {
            let id = uuid::Uuid::new_v4().simple().to_string();
            self.inner
                .blobs
                .put_bytes(&id, digest, bytes.clone())
                .await?;
        }
        self.inner
            .recovery
            .manifest_recorded(repo, digest, tag)
            .await;
        Ok(true)
    }

    async fn link(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), RegistryError> {
        crate::quotas::link_blob(&self.inner, repo, digest, size).await
    }

    /// Links the blob into `repo`, copying it from the source unless the store has it;
    /// false (and a note in the report) if the source lacks it or its bytes do not match
    /// the digest. As a push does, the link is committed before the copied bytes are
    /// published, so the collector's re-check sees it and cannot delete them in between; a
    /// link whose publish then fails points at nothing, answers 404 like an unknown blob,
    /// and its own review removes it.
    async fn copy_and_link(
        &self,
        source: &dyn ImportSource,
        repo: &RepositoryName,
        digest: &Digest,
        report: &mut ImportReport,
    ) -> Result<bool, RegistryError> {
        if let Some(info) = self.inner.blobs.stat(digest).await? {
            self.link(repo, digest, info.size).await?;
            report.links += 1;
            return Ok(true);
        }
        // A missing blob is the source's gap (reported); failing to read one that is
        // there is an error, or a flaky source would silently lose content.
        let Some(stream) = source.open(&blob_path(digest)).await? else {
            report
                .skipped
                .push(format!("blob {digest}: not in the source"));
            return Ok(false);
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let blobs = &self.inner.blobs;
        blobs.start_upload(&id).await?;
        let result = store_verified(&self.inner, &id, repo, digest, stream).await;
        match result {
            Ok(Verified::Stored(size)) => {
                report.blobs_copied += 1;
                report.bytes_copied += size;
                report.links += 1;
                Ok(true)
            }
            Ok(Verified::Mismatch(_)) => {
                let _ = blobs.abort_upload(&id).await;
                report.skipped.push(format!(
                    "blob {digest}: source bytes do not match the digest"
                ));
                Ok(false)
            }
            Err(e) => {
                let _ = blobs.abort_upload(&id).await;
                Err(e)
            }
        }
    }
}

/// `sha256:<hex>` from a link file.
fn parse_link(bytes: &[u8]) -> Option<Digest> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// The digests of a `<dir>/sha256/<hex>/link` tree (layers or manifest revisions).
async fn link_dir(
    source: &dyn ImportSource,
    dir: &str,
    report: &mut ImportReport,
) -> Result<Vec<Digest>, StorageError> {
    let mut out = Vec::new();
    for alg in source.list(dir).await? {
        for hex in source.list(&format!("{dir}/{alg}")).await? {
            let link = source.read(&format!("{dir}/{alg}/{hex}/link")).await?;
            match link.as_deref().and_then(parse_link) {
                Some(d) => out.push(d),
                None => report
                    .skipped
                    .push(format!("{dir}/{alg}/{hex}: unreadable link")),
            }
        }
    }
    Ok(out)
}

/// Repository names: folders below `repositories/` that hold `_manifests` or `_layers`.
async fn find_repositories(
    source: &dyn ImportSource,
    prefix: &str,
    out: &mut Vec<String>,
) -> Result<(), StorageError> {
    let mut stack = vec![prefix.to_string()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() {
            format!("{V2}/repositories")
        } else {
            format!("{V2}/repositories/{rel}")
        };
        let entries = source.list(&dir).await?;
        if entries.iter().any(|e| e == "_manifests" || e == "_layers") && !rel.is_empty() {
            out.push(rel.clone());
        }
        for e in entries.into_iter().filter(|e| !e.starts_with('_')) {
            stack.push(if rel.is_empty() {
                e
            } else {
                format!("{rel}/{e}")
            });
        }
    }
    out.sort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_paths() {
        let d = Digest::sha256_of(b"x");
        let hex = d.hex();
        assert_eq!(own_path(&blob_path(&d)), OwnPath::Blob(d.clone()));
        assert_eq!(
            own_path(&format!("{V2}/repositories/a/b/_manifests/tags")),
            OwnPath::Record("repositories/a/b/_manifests/tags")
        );
        assert_eq!(
            own_path(&format!("{V2}/repositories")),
            OwnPath::Record("repositories")
        );
        for nothing in [
            "repositories/a".to_string(),
            format!("{V2}/blobs/sha256/{hex}/data"),
            format!("{V2}/blobs/sha256/zz/{hex}/data"),
            format!("{V2}/blobs/sha256/{}/{hex}/link", &hex[..2]),
            format!("{V2}/blobs/sha256/{}/{}/data", &hex[..2], &hex[..2]),
            format!("{V2}/repositoriesx"),
            format!("{V2}/"),
        ] {
            assert_eq!(own_path(&nothing), OwnPath::Nothing, "{nothing}");
        }
    }

    #[test]
    fn records_list_and_get_like_the_log() {
        let records = Records(
            [
                "repositories/a/_manifests/tags/v1/current/link",
                "repositories/a/_manifests/tags/v1-x/current/link",
                "repositories/a/b-c/_manifests/revisions/sha256/00/link",
                "repositories/a/b/_manifests/revisions/sha256/01/link",
                "repositories/a/b/_manifests/revisions/sha256/02/link",
                "repositories/z/_layers/sha256/03/link",
            ]
            .iter()
            .map(|p| (p.to_string(), Bytes::from(p.len().to_string())))
            .collect(),
        );
        assert_eq!(records.list("repositories"), ["a", "z"]);
        assert_eq!(records.list("repositories/a"), ["_manifests", "b", "b-c"]);
        assert_eq!(
            records.list("repositories/a/_manifests/tags"),
            ["v1", "v1-x"]
        );
        assert_eq!(
            records.list("repositories/a/b/_manifests/revisions/sha256"),
            ["01", "02"]
        );
        assert!(
            records
                .list("repositories/a/b/_manifests/revisions/sha2")
                .is_empty()
        );
        assert!(records.list("repositories/y").is_empty());
        let link = "repositories/a/b/_manifests/revisions/sha256/02/link";
        assert_eq!(records.get(link), Some(Bytes::from(link.len().to_string())));
        assert_eq!(records.get("repositories/a/b"), None);
        assert_eq!(
            records.get("repositories/a/b/_manifests/revisions/sha256/02/lin"),
            None
        );
    }
}
