//! What the registry keeps in the blob store so its metadata can be rebuilt from the blob
//! store alone, written off the request path.
//!
//! After the metadata commit of a manifest `PUT` the registry stores two things that only
//! matter once the database is lost: a copy of the manifest's bytes as a blob, and the
//! [recovery records](storage_traits::recovery) naming the repository and tag (when the
//! blob store keeps them). Tag and manifest deletions, and manifests the collector
//! deletes, remove their records. None of it is needed to answer a request, so none of it
//! makes the client wait:
//!
//! - **Manifest copies** go to a small pool of background tasks ([`COPY_CONCURRENCY`]).
//!   During a burst of pushes they fall behind and catch up afterwards. The queue holds
//!   only names (repository and digest, about 150 bytes a job), and the task reads the
//!   bytes back from the metadata store when it copies: a queued body would pin the
//!   request's whole read buffer (a heap profile of 25,000 pushes found 18 MB held that
//!   way), and a manifest deleted meanwhile is not copied back. The queue is bounded
//!   ([`COPY_BACKLOG`]); when it is full the request copies its manifest itself (a copy
//!   is content-addressed and idempotent, so the order does not matter), which bounds the
//!   backlog under sustained load.
//!   A copy is still a normal blob-store upload: the blob appears under its digest
//!   complete and durable, or not at all.
//! - **Records** go to one of [`LANES`] ordered queues, chosen by repository, so within a
//!   process the records of one repository are written in the order of the requests that
//!   committed them: a tag's deletion never overtakes its creation. A full queue makes the
//!   request wait for room rather than write the record itself, which could overtake
//!   records still queued.
//!
//! Failures are logged (`warn`) and never fail a request: it was committed already.
//!
//! # What this guarantees
//! The records and copies trail the database. A rebuild recovers what they say, which is
//! the database's state minus the last changes before a crash of the process (those still
//! queued) or of the machine (those the blob store had not made durable; the fs store does
//! not fsync records). [`Registry::flush_recovery`] waits until everything queued so far is
//! written: call it before a clean exit. A manifest's records may be written before its
//! copy; a rebuild skips a record whose manifest bytes are missing. With several replicas,
//! two of them changing one tag at the same moment may write their records in the
//! opposite order from their database commits.
//!
//! The garbage collector waits for the queued copies before it deletes bytes, so a copy
//! queued before a manifest's deletion cannot write its bytes back after the collector
//! removed them; a grace period longer than the queues' lag covers other replicas' copies.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use oci_spec_types::{Digest, Reference, RepositoryName, Tag};
use storage_traits::recovery::{self, RecoveryLog};
use storage_traits::{BlobStore, MetadataStore};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::Registry;

/// Ordered record queues; repositories are spread over them by hash.
const LANES: usize = 8;
/// Jobs each record queue holds before a request waits for room.
const LANE_CAPACITY: usize = 1024;
/// Manifests waiting to be copied, at most: the backlog a burst of pushes builds in tens
/// of seconds (the copies run at nearly the rate of the pushes). It bounds the memory held
/// (1.2 MB when full, in a heap profile) and what a killed process loses.
const COPY_BACKLOG: usize = 8192;
/// Copies running at once. Few: each ends in fsyncs, and more of them at once only queue
/// up in the file system's journal beside the metadata store's own commit, the one the
/// client waits for (4 against 16: docs/performance.md, "Figures moved out of the code").
const COPY_CONCURRENCY: u32 = 4;

/// What a record queue does, in order.
#[derive(Debug)]
enum RecordJob {
    /// A manifest was committed to `repo`, and `tag` (if any) points at it.
    ManifestPut {
        repo: RepositoryName,
        digest: Digest,
        tag: Option<Tag>,
    },
    TagDeleted {
        repo: RepositoryName,
        tag: Tag,
    },
    /// The manifest is gone from `repo`. With `tags`, tag records still naming it are
    /// removed too (the database dropped those tags with the manifest).
    ManifestDeleted {
        repo: RepositoryName,
        digest: Digest,
        tags: bool,
    },
    Flush(oneshot::Sender<()>),
}

#[derive(Debug)]
enum CopyJob {
    /// Copy this manifest of `repo`, read back from the metadata store.
    Copy {
        repo: RepositoryName,
        digest: Digest,
    },
    Flush(oneshot::Sender<()>),
}

/// The background writer of manifest copies and recovery records (see the [module
/// docs](self)).
#[derive(Debug)]
pub(crate) struct RecoveryWriter {
    blobs: Arc<dyn BlobStore>,
    /// Where the copy tasks read the manifests' bytes back.
    metadata: Arc<dyn MetadataStore>,
    /// Started on first use, on the runtime serving the requests (`Registry::new` may run
    /// outside one). `None` if there was no runtime: everything is then written inline.
    queues: OnceLock<Option<Queues>>,
}

#[derive(Debug)]
struct Queues {
    lanes: Vec<mpsc::Sender<RecordJob>>,
    copies: mpsc::Sender<CopyJob>,
}

impl RecoveryWriter {
    pub(crate) fn new(blobs: Arc<dyn BlobStore>, metadata: Arc<dyn MetadataStore>) -> Self {
        RecoveryWriter {
            blobs,
            metadata,
            queues: OnceLock::new(),
        }
    }

    fn queues(&self) -> Option<&Queues> {
        self.queues
            .get_or_init(|| {
                tokio::runtime::Handle::try_current()
                    .ok()
                    .map(|rt| Queues::start(&rt, &self.blobs, &self.metadata))
            })
            .as_ref()
    }

    /// After a manifest `PUT` committed: copy its bytes to the blob store, and record it
    /// (and its tag).
    pub(crate) async fn manifest_put(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        content: Bytes,
        tags: &[Tag],
    ) {
        self.copy(repo, digest, content).await;
        if tags.is_empty() {
            self.manifest_recorded(repo, digest, None).await;
        }
        for tag in tags {
            self.manifest_recorded(repo, digest, Some(tag.clone()))
                .await;
        }
    }

    /// Records a manifest (and its tag) whose bytes the caller stored itself (import).
    pub(crate) async fn manifest_recorded(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        tag: Option<Tag>,
    ) {
        if self.blobs.recovery().is_some() {
            self.record(RecordJob::ManifestPut {
                repo: repo.clone(),
                digest: digest.clone(),
                tag,
            })
            .await;
        }
    }

    /// After a tag was deleted.
    pub(crate) async fn tag_deleted(&self, repo: &RepositoryName, tag: &Tag) {
        if self.blobs.recovery().is_some() {
            self.record(RecordJob::TagDeleted {
                repo: repo.clone(),
                tag: tag.clone(),
            })
            .await;
        }
    }

    /// After a manifest was deleted; `tags`: also remove tag records that name it (a
    /// deletion by the collector concerns untagged manifests only, and skips that scan).
    pub(crate) async fn manifest_deleted(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        tags: bool,
    ) {
        if self.blobs.recovery().is_some() {
            self.record(RecordJob::ManifestDeleted {
                repo: repo.clone(),
                digest: digest.clone(),
                tags,
            })
            .await;
        }
    }

    /// Waits until every manifest copy queued before the call is written (or failed).
    pub(crate) async fn flush_copies(&self) {
        let Some(queues) = self.queues.get().and_then(Option::as_ref) else {
            return; // never started: nothing queued
        };
        let (tx, rx) = oneshot::channel();
        if queues.copies.send(CopyJob::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Waits until every copy and record queued before the call is written (or failed).
    pub(crate) async fn flush(&self) {
        let Some(queues) = self.queues.get().and_then(Option::as_ref) else {
            return; // never started: nothing queued
        };
        self.flush_copies().await;
        let mut acks = Vec::with_capacity(LANES);
        for lane in &queues.lanes {
            let (tx, rx) = oneshot::channel();
            if lane.send(RecordJob::Flush(tx)).await.is_ok() {
                acks.push(rx);
            }
        }
        for ack in acks {
            let _ = ack.await;
        }
    }

    async fn copy(&self, repo: &RepositoryName, digest: &Digest, content: Bytes) {
        if let Some(queues) = self.queues() {
            let job = CopyJob::Copy {
                repo: repo.clone(),
                digest: digest.clone(),
            };
            if queues.copies.try_send(job).is_ok() {
                return;
            }
        }
        // The pool is far behind, or there is no runtime to run it (or it shut down):
        // the request copies.
        copy_manifest(self.blobs.as_ref(), digest, content).await;
    }

    async fn record(&self, job: RecordJob) {
        let Some(queues) = self.queues() else {
            return apply(self.blobs.as_ref(), job).await;
        };
        let lane = match &job {
            RecordJob::ManifestPut { repo, .. }
            | RecordJob::TagDeleted { repo, .. }
            | RecordJob::ManifestDeleted { repo, .. } => lane_of(repo),
            RecordJob::Flush(_) => 0,
        };
        // Waits while the queue is full: writing here could overtake queued records.
        if let Err(mpsc::error::SendError(job)) = queues.lanes[lane].send(job).await {
            // The worker is gone (its runtime shut down): nothing queued can overtake.
            apply(self.blobs.as_ref(), job).await;
        }
    }
}

impl Queues {
    fn start(
        rt: &tokio::runtime::Handle,
        blobs: &Arc<dyn BlobStore>,
        metadata: &Arc<dyn MetadataStore>,
    ) -> Self {
        let mut lanes = Vec::with_capacity(LANES);
        for _ in 0..LANES {
            let (tx, mut rx) = mpsc::channel(LANE_CAPACITY);
            let blobs = Arc::clone(blobs);
            rt.spawn(async move {
                while let Some(job) = rx.recv().await {
                    apply(blobs.as_ref(), job).await;
                }
            });
            lanes.push(tx);
        }
        let (copies, mut rx) = mpsc::channel(COPY_BACKLOG);
        let blobs = Arc::clone(blobs);
        let metadata = Arc::clone(metadata);
        let worker = rt.clone();
        rt.spawn(async move {
            let running = Arc::new(Semaphore::new(COPY_CONCURRENCY as usize));
            while let Some(job) = rx.recv().await {
                match job {
                    CopyJob::Copy { repo, digest } => {
                        let Ok(slot) = Arc::clone(&running).acquire_owned().await else {
                            return;
                        };
                        let blobs = Arc::clone(&blobs);
                        let metadata = Arc::clone(&metadata);
                        worker.spawn(async move {
                            copy_committed(blobs.as_ref(), metadata.as_ref(), &repo, &digest).await;
                            drop(slot);
                        });
                    }
                    CopyJob::Flush(ack) => {
                        // Every slot free: every copy started before this job is done.
                        if let Ok(all) = running.acquire_many(COPY_CONCURRENCY).await {
                            drop(all);
                        }
                        let _ = ack.send(());
                    }
                }
            }
        });
        Queues { lanes, copies }
    }
}

fn lane_of(repo: &RepositoryName) -> usize {
    let mut h = DefaultHasher::new();
    repo.as_str().hash(&mut h);
    (h.finish() % LANES as u64) as usize
}

/// Copies a manifest of `repo` that the metadata store holds; one deleted since the job was
/// queued is not copied (its bytes are the collector's to remove, or already gone).
async fn copy_committed(
    blobs: &dyn BlobStore,
    metadata: &dyn MetadataStore,
    repo: &RepositoryName,
    digest: &Digest,
) {
    match metadata
        .get_manifest(repo, &Reference::Digest(digest.clone()))
        .await
    {
        Ok(Some(manifest)) => copy_manifest(blobs, digest, manifest.content).await,
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(%repo, %digest, error = %e, "manifest stored, but reading it back for its copy in the blob store failed");
        }
    }
}

/// Stores a manifest's bytes as a blob. No `stat` first: a re-pushed manifest is rare, and
/// finishing onto an existing blob just discards the session, while a `stat` would cost
/// every copy one more round trip to a blocking thread (or to S3).
async fn copy_manifest(blobs: &dyn BlobStore, digest: &Digest, content: Bytes) {
    let upload_id = uuid::Uuid::new_v4().simple().to_string();
    if let Err(e) = blobs.put_bytes(&upload_id, digest, content).await {
        tracing::warn!(%digest, error = %e, "manifest stored, but its copy in the blob store failed");
    }
}

async fn apply(blobs: &dyn BlobStore, job: RecordJob) {
    let Some(log) = blobs.recovery() else {
        if let RecordJob::Flush(ack) = job {
            let _ = ack.send(());
        }
        return;
    };
    match job {
        RecordJob::ManifestPut { repo, digest, tag } => {
            let content = recovery::link_content(&digest);
            put(
                log,
                &recovery::revision_record(&repo, &digest),
                content.clone(),
            )
            .await;
            if let Some(tag) = tag {
                put(log, &recovery::tag_record(&repo, &tag), content).await;
            }
        }
        RecordJob::TagDeleted { repo, tag } => {
            delete(log, &recovery::tag_record(&repo, &tag)).await;
        }
        RecordJob::ManifestDeleted { repo, digest, tags } => {
            delete(log, &recovery::revision_record(&repo, &digest)).await;
            if tags {
                delete_tags_naming(log, &repo, &digest).await;
            }
        }
        RecordJob::Flush(ack) => {
            let _ = ack.send(());
        }
    }
}

async fn put(log: &dyn RecoveryLog, path: &str, content: Bytes) {
    if let Err(e) = log.put_record(path, content).await {
        tracing::warn!(path, error = %e, "recovery record not written");
    }
}

async fn delete(log: &dyn RecoveryLog, path: &str) {
    if let Err(e) = log.delete_record(path).await {
        tracing::warn!(path, error = %e, "recovery record not deleted");
    }
}

/// Removes the tag records of `repo` that name `digest`: deleting a manifest by digest
/// drops the tags pointing at it, and the database does not say which they were. One
/// `records_under` call: in the fs journal every lookup is a scan.
async fn delete_tags_naming(log: &dyn RecoveryLog, repo: &RepositoryName, digest: &Digest) {
    let records = match log.records_under(&recovery::tags_folder(repo)).await {
        Ok(records) => records,
        Err(e) => {
            tracing::warn!(%repo, error = %e, "recovery tag records not read");
            return;
        }
    };
    for (path, content) in records {
        if recovery::parse_link(&content).as_ref() == Some(digest) {
            delete(log, &path).await;
        }
    }
}

impl Registry {
    /// Waits until the manifest copies and recovery records queued so far are written to
    /// the blob store (see [`storage_traits::recovery`]). They are written in the
    /// background after each request; call this before a clean exit so none is lost.
    pub async fn flush_recovery(&self) {
        self.inner.recovery.flush().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use metadata_sqlite::SqliteMetadataStore;
    use storage_fs::FsBlobStore;
    use storage_traits::{BlobStoreExt, NewManifest};

    const MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

    fn stores() -> (
        tempfile::TempDir,
        Arc<dyn BlobStore>,
        Arc<dyn MetadataStore>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Arc::new(FsBlobStore::open(dir.path()).unwrap());
        let metadata = Arc::new(SqliteMetadataStore::open_in_memory().unwrap());
        (dir, blobs, metadata)
    }

    /// The queue holds names only: the copy's bytes are the ones the metadata store holds.
    #[tokio::test]
    async fn a_queued_copy_stores_the_committed_bytes() {
        let (_dir, blobs, metadata) = stores();
        let repo: RepositoryName = "a/b".parse().unwrap();
        let content = Bytes::from_static(br#"{"schemaVersion":2,"layers":[]}"#);
        let digest = Digest::sha256_of(&content);
        let manifest = NewManifest::new(
            repo.clone(),
            digest.clone(),
            MEDIA_TYPE.into(),
            content.clone(),
        );
        metadata.put_manifest(&manifest).await.unwrap();

        let writer = RecoveryWriter::new(Arc::clone(&blobs), Arc::clone(&metadata));
        // The request's own bytes are only for copying inline; the queued job must not
        // need them.
        writer.manifest_put(&repo, &digest, Bytes::new(), &[]).await;
        writer.flush().await;
        assert_eq!(blobs.get_bytes(&digest).await.unwrap(), content);
    }

    /// A manifest deleted before its queued copy ran is not written back to the blob
    /// store, where nothing would ever collect it.
    #[tokio::test]
    async fn a_copy_of_a_deleted_manifest_is_skipped() {
        let (_dir, blobs, metadata) = stores();
        let repo: RepositoryName = "a/b".parse().unwrap();
        let content = Bytes::from_static(br#"{"schemaVersion":2}"#);
        let digest = Digest::sha256_of(&content);
        copy_committed(blobs.as_ref(), metadata.as_ref(), &repo, &digest).await;
        assert!(matches!(
            blobs.get_bytes(&digest).await,
            Err(storage_traits::StorageError::NotFound(_))
        ));
    }
}
