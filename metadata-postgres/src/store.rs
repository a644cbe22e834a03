//! [`PostgresMetadataStore`]: the pool, the retry loop, and the trait impl.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
    Transaction,
};
use oci_spec_types::{Digest, Reference, RepositoryName, Tag};
use storage_traits::{
    ManifestRecord, MetadataError, MetadataStore, NewManifest, Page, ReferrerRecord, UploadSession,
    UploadSessionStore, UploadUpdate,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};

use crate::{gc, migrations};

pub(crate) const BACKEND: &str = "postgres";

/// How many times one logical operation is attempted when PostgreSQL aborts it with a
/// serialization failure (40001) or a detected deadlock (40P01). The row-lock scheme
/// makes both rare; the retry keeps a rare abort from reaching a client as a 500.
const MAX_ATTEMPTS: u32 = 5;

/// Connection-pool settings for [`PostgresMetadataStore::connect_with`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PoolOptions {
    /// Most connections this store opens (per replica). Default 16.
    pub max_connections: usize,
    /// How long a call waits for a free connection, and for a new connection to be
    /// established, before failing. Default 30 s.
    pub acquire_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

impl PoolOptions {
    /// Most connections the pool opens at once (default 16).
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Longest wait for a free connection before an operation fails (default 30 s).
    pub fn with_acquire_timeout(mut self, d: Duration) -> Self {
        self.acquire_timeout = d;
        self
    }
}

/// A [`MetadataStore`] in a PostgreSQL database, shared by any number of registry
/// replicas. See the [crate docs](crate) for the locking scheme.
///
/// Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct PostgresMetadataStore {
    pool: Pool,
    /// For `Debug` only: the parsed URL, whose `Debug` hides the password.
    config: tokio_postgres::Config,
}

impl fmt::Debug for PostgresMetadataStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresMetadataStore")
            .field("user", &self.config.get_user())
            .field("hosts", &self.config.get_hosts())
            .field("ports", &self.config.get_ports())
            .field("dbname", &self.config.get_dbname())
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl PostgresMetadataStore {
    /// Connects to the database at `url` with default [`PoolOptions`] and applies pending
    /// migrations.
    ///
    /// `url` is a libpq connection URL (`postgres://user:password@host:port/db?param=value`,
    /// also `postgresql://`) or key-value string (`host=... user=... dbname=...`), as
    /// [`tokio_postgres::Config`] parses them. Connections are plain TCP or Unix socket:
    /// `sslmode=require` fails, as this build has no TLS connector. Without a
    /// `connect_timeout` parameter, connecting times out after 10 s.
    ///
    /// # Errors
    /// [`MetadataError::Backend`] if the URL is malformed, the database cannot be reached
    /// or the schema cannot be migrated; its source is a
    /// [`MigrationError`](crate::MigrationError) when the database was migrated by a newer
    /// build ([`SchemaTooNew`](crate::MigrationError::SchemaTooNew)) or a migration failed.
    pub async fn connect(url: &str) -> Result<Self, MetadataError> {
        Self::connect_with(url, PoolOptions::default()).await
    }

    /// [`connect`](Self::connect) with explicit pool settings.
    pub async fn connect_with(url: &str, options: PoolOptions) -> Result<Self, MetadataError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| MetadataError::backend(BACKEND, e))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("oci-registry");
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                // A connection the server closed is noticed (`is_closed`) and replaced
                // without a test query on every checkout; one that broke unnoticed fails
                // a single call with a backend error and is then discarded.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.acquire_timeout))
            .create_timeout(Some(options.acquire_timeout))
            .build()
            .map_err(|e| MetadataError::backend(BACKEND, e))?;
        let store = PostgresMetadataStore { pool, config };
        let mut client = store.client().await.map_err(Fail::into_metadata)?;
        migrations::migrate(&mut client, now_ms()).await?;
        Ok(store)
    }

    pub(crate) async fn client(&self) -> Result<Object, Fail> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => Fail::Db(e),
            other => Fail::Meta(MetadataError::backend(BACKEND, other)),
        })
    }

    /// Runs `op` (one whole transaction or statement, connection included) until it
    /// succeeds, fails for a reason other than a serialization failure or deadlock, or
    /// has been tried [`MAX_ATTEMPTS`] times.
    pub(crate) async fn retry<T, F, Fut>(&self, mut op: F) -> Result<T, MetadataError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Fail>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(Fail::Db(e)) if attempt < MAX_ATTEMPTS && is_transient(&e) => {
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(f) => return Err(f.into_metadata()),
            }
        }
    }
}

impl PostgresMetadataStore {
    /// Runs `sql`, one `SELECT COUNT(*)::BIGINT` statement, and returns the count; `what`
    /// names the rows in the error a negative count would be.
    pub(crate) async fn count_rows(
        &self,
        sql: &'static str,
        what: &'static str,
    ) -> Result<u64, MetadataError> {
        self.retry(move || async move {
            let c = self.client().await?;
            let stmt = c.prepare_cached(sql).await?;
            let n: i64 = c.query_one(&stmt, &[]).await?.try_get(0)?;
            from_sql_int(what, n)
        })
        .await
    }
}

fn is_transient(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// 5, 10, 20, 40 ms, plus up to as much again of jitter so retrying replicas spread out.
fn backoff(attempt: u32) -> Duration {
    let base = 5u64 << attempt.saturating_sub(1).min(6);
    let jitter = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()))
        % (base + 1);
    Duration::from_millis(base + jitter)
}

/// The error inside an operation: a database error (which may be retried) or a finished
/// `MetadataError`.
pub(crate) enum Fail {
    Db(tokio_postgres::Error),
    Meta(MetadataError),
}

impl Fail {
    fn into_metadata(self) -> MetadataError {
        match self {
            Fail::Db(e) => MetadataError::backend(BACKEND, e),
            Fail::Meta(e) => e,
        }
    }
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<MetadataError> for Fail {
    fn from(e: MetadataError) -> Self {
        Fail::Meta(e)
    }
}

pub(crate) fn corrupt(what: impl fmt::Display) -> Fail {
    Fail::Meta(MetadataError::Corrupt(what.to_string()))
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// PostgreSQL's BIGINT is signed 64-bit; sizes and offsets beyond it cannot be stored.
pub(crate) fn to_sql_int(what: &str, n: u64) -> Result<i64, Fail> {
    i64::try_from(n).map_err(|_| {
        Fail::Meta(MetadataError::backend(
            BACKEND,
            format!("{what} {n} exceeds PostgreSQL's BIGINT range"),
        ))
    })
}

pub(crate) fn from_sql_int(what: &str, n: i64) -> Result<u64, Fail> {
    u64::try_from(n).map_err(|_| corrupt(format!("negative {what} {n}")))
}

/// `LIMIT NULL` is PostgreSQL's "no limit".
fn sql_limit(page: &Page) -> Option<i64> {
    page.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX))
}

pub(crate) fn parse_digest(s: &str) -> Result<Digest, Fail> {
    s.parse()
        .map_err(|e| corrupt(format!("stored digest {s:?}: {e}")))
}

pub(crate) fn parse_repo(s: &str) -> Result<RepositoryName, Fail> {
    s.parse()
        .map_err(|e| corrupt(format!("stored repository name {s:?}: {e}")))
}

fn parse_tag(s: &str) -> Result<Tag, Fail> {
    s.parse()
        .map_err(|e| corrupt(format!("stored tag {s:?}: {e}")))
}

/// The references in `refs`, each once, in their first order.
fn dedup(refs: &[Digest]) -> Vec<&str> {
    let mut seen = HashSet::new();
    refs.iter()
        .map(Digest::as_str)
        .filter(|d| seen.insert(*d))
        .collect()
}

pub(crate) async fn repo_id(c: &impl GenericClient, name: &str) -> Result<Option<i64>, Fail> {
    let stmt = c
        .prepare_cached("SELECT id FROM repositories WHERE name = $1")
        .await?;
    match c.query_opt(&stmt, &[&name]).await? {
        Some(row) => Ok(Some(row.try_get(0)?)),
        None => Ok(None),
    }
}

/// The repository's id, creating the repository if this is its first row.
///
/// Two statements, not one: under READ COMMITTED a row that a concurrent transaction
/// committed while `ON CONFLICT DO NOTHING` waited for it is invisible to the rest of the
/// inserting statement, but visible to the next statement.
async fn ensure_repo(c: &impl GenericClient, name: &str, now: i64) -> Result<i64, Fail> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO repositories (name, created_at) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .await?;
    if let Some(row) = c.query_opt(&stmt, &[&name, &now]).await? {
        return Ok(row.try_get(0)?);
    }
    repo_id(c, name).await?.ok_or_else(|| {
        Fail::Meta(MetadataError::backend(
            BACKEND,
            format!("repository {name:?} neither inserted nor found"),
        ))
    })
}

/// `link_blob`'s transaction body, shared with the quota-checked link.
pub(crate) async fn link_blob_in(
    tx: &Transaction<'_>,
    repo: &str,
    digest: &str,
    size: i64,
) -> Result<(), Fail> {
    let now = now_ms();
    let id = ensure_repo(tx, repo, now).await?;
    gc::hold_blob(tx, digest, size).await?;
    gc::hold_link(tx, id, digest, now).await?;
    // Until a manifest references it, the link is an upload that may never be used;
    // (re-)linking restarts its grace period.
    gc::enqueue(tx, gc::Kind::Link, repo, digest, now).await?;
    Ok(())
}

/// Of `wanted`, those not returned by the locking query `sql` (`$1` the repository id,
/// `$2` the digests). The rows it does return stay locked until the transaction ends.
async fn missing_locked(
    tx: &Transaction<'_>,
    sql: &str,
    repo_id: Option<i64>,
    wanted: &[&str],
) -> Result<Vec<String>, Fail> {
    let Some(repo_id) = repo_id else {
        return Ok(wanted.iter().map(|d| d.to_string()).collect());
    };
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let stmt = tx.prepare_cached(sql).await?;
    let present = tx
        .query(&stmt, &[&repo_id, &wanted])
        .await?
        .iter()
        .map(|r| r.try_get::<_, String>(0))
        .collect::<Result<HashSet<_>, _>>()?;
    Ok(wanted
        .iter()
        .filter(|d| !present.contains(**d))
        .map(|d| d.to_string())
        .collect())
}

fn to_digests(v: Vec<String>) -> Result<Vec<Digest>, Fail> {
    v.iter().map(|d| parse_digest(d)).collect()
}

/// The whole of `put_manifest`, inside one READ COMMITTED transaction. The `FOR SHARE`
/// locks on the referenced link and child-manifest rows are what make the check and the
/// insert atomic: a concurrent `unlink_blob` or `delete_manifest` of a referenced row
/// either committed before the lock (the row is missing and the put is refused) or waits
/// until this transaction commits.
async fn put_manifest_tx(
    tx: &Transaction<'_>,
    m: &NewManifest,
    annotations: &str,
) -> Result<(), Fail> {
    let now = now_ms();
    let repo = m.repository.as_str();
    let size = to_sql_int("manifest size", m.content.len() as u64)?;
    // The manifest's bytes are a blob too: hold its row (and refuse a digest being
    // garbage-collected) before anything else, as link_blob does.
    gc::hold_blob(tx, m.digest.as_str(), size).await?;
    let existing_repo = repo_id(tx, repo).await?;
    let blob_refs = dedup(&m.blob_refs);
    let manifest_refs = dedup(&m.manifest_refs);

    // Locks are taken in digest order so two puts never wait on each other in a cycle.
    let missing_blobs = missing_locked(
        tx,
        "SELECT digest FROM repository_blobs
         WHERE repo_id = $1 AND digest = ANY($2)
         ORDER BY digest FOR SHARE",
        existing_repo,
        &blob_refs,
    )
    .await?;
    let missing_manifests = missing_locked(
        tx,
        "SELECT digest FROM manifests
         WHERE repo_id = $1 AND digest = ANY($2)
         ORDER BY digest FOR SHARE",
        existing_repo,
        &manifest_refs,
    )
    .await?;
    if !missing_blobs.is_empty() || !missing_manifests.is_empty() {
        return Err(Fail::Meta(MetadataError::MissingReferences {
            blobs: to_digests(missing_blobs)?,
            manifests: to_digests(missing_manifests)?,
        }));
    }

    let repo_id = match existing_repo {
        Some(id) => id,
        None => ensure_repo(tx, repo, now).await?,
    };
    let (manifest_id, inserted) =
        manifest_row(tx, repo_id, m, annotations, now, &blob_refs, &manifest_refs).await?;

    if m.tags.is_empty() && inserted {
        // Pushed by digest: untagged from the start.
        gc::enqueue(tx, gc::Kind::Manifest, repo, m.digest.as_str(), now).await?;
    }
    // Tags are locked in name order so two puts of overlapping tags never wait on each
    // other in a cycle. A refused immutable tag fails the whole transaction, so the
    // manifest and the tags pointed before it are rolled back with it.
    let tags: BTreeSet<&str> = m.tags.iter().map(Tag::as_str).collect();
    for tag in tags {
        let previous = point_tag(tx, repo_id, tag, manifest_id, m.tag_immutable, now).await?;
        // Re-tagging leaves the previous manifest possibly untagged.
        if let Some(previous) = previous {
            gc::enqueue(tx, gc::Kind::Manifest, repo, &previous, now).await?;
        }
    }
    Ok(())
}

/// Points the tag at `manifest_id` and returns the digest of the manifest it pointed at
/// before, if another. The tag row is locked (or inserted) before it is read, so of two
/// puts moving one tag the second sees the first's manifest as the previous one, and
/// every manifest a tag leaves is queued for review. An `immutable` tag that points at
/// another manifest is refused under that same lock, so of two first pushes of one tag
/// the second sees the first's manifest and fails (and its transaction rolls back).
async fn point_tag(
    tx: &Transaction<'_>,
    repo_id: i64,
    tag: &str,
    manifest_id: i64,
    immutable: bool,
    now: i64,
) -> Result<Option<String>, Fail> {
    let lock = tx
        .prepare_cached(
            "SELECT t.manifest_id, m.digest FROM tags t JOIN manifests m ON m.id = t.manifest_id
             WHERE t.repo_id = $1 AND t.name = $2 FOR UPDATE OF t",
        )
        .await?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO tags (repo_id, name, manifest_id, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (repo_id, name) DO NOTHING RETURNING 1",
        )
        .await?;
    let update = tx
        .prepare_cached(
            "UPDATE tags SET manifest_id = $3, updated_at = $4 WHERE repo_id = $1 AND name = $2",
        )
        .await?;
    // Each round finds the tag or inserts it, unless a concurrent put inserts it between
    // the two statements and a delete removes it again.
    for _ in 0..3 {
        if let Some(row) = tx.query_opt(&lock, &[&repo_id, &tag]).await? {
            let current: i64 = row.try_get(0)?;
            if immutable && current != manifest_id {
                let digest: String = row.try_get(1)?;
                return Err(Fail::Meta(MetadataError::TagImmutable {
                    tag: tag.to_string(),
                    current: parse_digest(&digest)?,
                }));
            }
            tx.execute(&update, &[&repo_id, &tag, &manifest_id, &now])
                .await?;
            return Ok((current != manifest_id)
                .then(|| row.try_get(1))
                .transpose()?);
        }
        if tx
            .query_opt(&insert, &[&repo_id, &tag, &manifest_id, &now])
            .await?
            .is_some()
        {
            return Ok(None);
        }
    }
    Err(Fail::Meta(MetadataError::backend(
        BACKEND,
        format!("tag {tag} kept appearing and disappearing under concurrent writes"),
    )))
}

/// The id of the manifest row, inserted with its reference rows if absent, and in either
/// case locked `FOR SHARE` (or, when inserted, owned) by this transaction so that a
/// concurrent `delete_manifest` cannot remove it before the tag points at it.
async fn manifest_row(
    tx: &Transaction<'_>,
    repo_id: i64,
    m: &NewManifest,
    annotations: &str,
    now: i64,
    blob_refs: &[&str],
    manifest_refs: &[&str],
) -> Result<(i64, bool), Fail> {
    let digest = m.digest.as_str();
    let find = tx
        .prepare_cached("SELECT id FROM manifests WHERE repo_id = $1 AND digest = $2 FOR SHARE")
        .await?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO manifests
                 (repo_id, digest, media_type, content, size, artifact_type, subject,
                  annotations, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (repo_id, digest) DO NOTHING
             RETURNING id",
        )
        .await?;
    let size = to_sql_int("manifest size", m.content.len() as u64)?;
    let content: &[u8] = &m.content;
    let subject = m.subject.as_ref().map(Digest::as_str);
    // Each round either finds the row or inserts it, unless a concurrent transaction
    // inserts it between the two statements and then another deletes it again.
    for _ in 0..3 {
        if let Some(row) = tx.query_opt(&find, &[&repo_id, &digest]).await? {
            // Already stored: the same digest is the same bytes and references, so only
            // the tag may change.
            return Ok((row.try_get(0)?, false));
        }
        let inserted = tx
            .query_opt(
                &insert,
                &[
                    &repo_id,
                    &digest,
                    &m.media_type,
                    &content,
                    &size,
                    &m.artifact_type,
                    &subject,
                    &annotations,
                    &now,
                ],
            )
            .await?;
        if let Some(row) = inserted {
            let id: i64 = row.try_get(0)?;
            if !blob_refs.is_empty() {
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO manifest_blob_refs (manifest_id, digest)
                         SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
                    )
                    .await?;
                tx.execute(&stmt, &[&id, &blob_refs]).await?;
            }
            if !manifest_refs.is_empty() {
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO manifest_manifest_refs (manifest_id, child_digest)
                         SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
                    )
                    .await?;
                tx.execute(&stmt, &[&id, &manifest_refs]).await?;
            }
            return Ok((id, true));
        }
    }
    Err(Fail::Meta(MetadataError::backend(
        BACKEND,
        format!("manifest {digest} kept appearing and disappearing under concurrent writes"),
    )))
}

fn to_manifest_record(row: &Row) -> Result<ManifestRecord, Fail> {
    let digest: String = row.try_get(0)?;
    let media_type: String = row.try_get(1)?;
    let content: Vec<u8> = row.try_get(2)?;
    Ok(ManifestRecord::new(
        parse_digest(&digest)?,
        media_type,
        Bytes::from(content),
    ))
}

const UPLOAD_COLUMNS: &str = "id, repository, byte_offset, hash_state, created_at, updated_at";

fn to_upload(row: &Row) -> Result<UploadSession, Fail> {
    let id: String = row.try_get(0)?;
    let repo: String = row.try_get(1)?;
    let offset: i64 = row.try_get(2)?;
    let created_at: i64 = row.try_get(4)?;
    let mut s = UploadSession::new(id, parse_repo(&repo)?, created_at);
    s.offset = from_sql_int("upload offset", offset)?;
    s.hash_state = row.try_get(3)?;
    s.updated_at = row.try_get(5)?;
    Ok(s)
}

#[async_trait]
impl MetadataStore for PostgresMetadataStore {
    async fn list_repositories(&self, page: &Page) -> Result<Vec<RepositoryName>, MetadataError> {
        // Names are never empty, so "after the empty string" is "from the start".
        let last = page.last.as_deref().unwrap_or("");
        let limit = sql_limit(page);
        self.retry(move || async move {
            let c = self.client().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2",
                )
                .await?;
            c.query(&stmt, &[&last, &limit])
                .await?
                .iter()
                .map(|r| parse_repo(&r.try_get::<_, String>(0)?))
                .collect()
        })
        .await
    }

    async fn repository_exists(&self, repo: &RepositoryName) -> Result<bool, MetadataError> {
        let repo = repo.as_str();
        self.retry(move || async move {
            let c = self.client().await?;
            Ok(repo_id(&c, repo).await?.is_some())
        })
        .await
    }

    async fn link_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), MetadataError> {
        let (repo, digest) = (repo.as_str(), digest.as_str());
        let size = to_sql_int("blob size", size).map_err(Fail::into_metadata)?;
        self.retry(move || async move {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            link_blob_in(&tx, repo, digest, size).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn blob_link(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<u64>, MetadataError> {
        let (repo, digest) = (repo.as_str(), digest.as_str());
        self.retry(move || async move {
            let c = self.client().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT b.size
                     FROM repository_blobs rb
                     JOIN repositories r ON r.id = rb.repo_id
                     JOIN blobs b ON b.digest = rb.digest
                     WHERE r.name = $1 AND rb.digest = $2",
                )
                .await?;
            match c.query_opt(&stmt, &[&repo, &digest]).await? {
                Some(row) => Ok(Some(from_sql_int("blob size", row.try_get(0)?)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn unlink_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, MetadataError> {
        let (repo, digest) = (repo.as_str(), digest.as_str());
        self.retry(move || async move {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            // Waits for any put_manifest holding this link FOR SHARE.
            let stmt = tx
                .prepare_cached(
                    "DELETE FROM repository_blobs
                     WHERE repo_id = (SELECT id FROM repositories WHERE name = $1)
                       AND digest = $2",
                )
                .await?;
            let removed = tx.execute(&stmt, &[&repo, &digest]).await? > 0;
            if removed {
                gc::enqueue(&tx, gc::Kind::Blob, "", digest, now_ms()).await?;
            }
            tx.commit().await?;
            Ok(removed)
        })
        .await
    }

    async fn put_manifest(&self, manifest: &NewManifest) -> Result<(), MetadataError> {
        let annotations = serde_json::to_string(&manifest.annotations)
            .map_err(|e| MetadataError::backend(BACKEND, e))?;
        let annotations = annotations.as_str();
        self.retry(move || async move {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            put_manifest_tx(&tx, manifest, annotations).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<Option<ManifestRecord>, MetadataError> {
        let repo = repo.as_str();
        let (query, key) = match reference {
            Reference::Tag(t) => (
                "SELECT m.digest, m.media_type, m.content
                 FROM tags t
                 JOIN repositories r ON r.id = t.repo_id
                 JOIN manifests m ON m.id = t.manifest_id
                 WHERE r.name = $1 AND t.name = $2",
                t.as_str(),
            ),
            Reference::Digest(d) => (
                "SELECT m.digest, m.media_type, m.content
                 FROM manifests m
                 JOIN repositories r ON r.id = m.repo_id
                 WHERE r.name = $1 AND m.digest = $2",
                d.as_str(),
            ),
        };
        self.retry(move || async move {
            let c = self.client().await?;
            let stmt = c.prepare_cached(query).await?;
            match c.query_opt(&stmt, &[&repo, &key]).await? {
                Some(row) => Ok(Some(to_manifest_record(&row)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn delete_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, MetadataError> {
        let (repo, digest) = (repo.as_str(), digest.as_str());
        self.retry(move || async move {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            let Some(rid) = repo_id(&tx, repo).await? else {
                return Ok(false);
            };
            // The row lock waits for puts that hold the manifest FOR SHARE, and keeps its
            // reference rows as they are while they are queued for review.
            let stmt = tx
                .prepare_cached(
                    "SELECT id FROM manifests WHERE repo_id = $1 AND digest = $2 FOR UPDATE",
                )
                .await?;
            let Some(row) = tx.query_opt(&stmt, &[&rid, &digest]).await? else {
                return Ok(false);
            };
            let id: i64 = row.try_get(0)?;
            gc::enqueue_orphans_of_manifest(&tx, repo, rid, id, digest, now_ms()).await?;
            // Its tags and reference rows go with it (ON DELETE CASCADE).
            let stmt = tx
                .prepare_cached("DELETE FROM manifests WHERE id = $1")
                .await?;
            tx.execute(&stmt, &[&id]).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn list_tags(
        &self,
        repo: &RepositoryName,
        page: &Page,
    ) -> Result<Option<Vec<Tag>>, MetadataError> {
        let repo = repo.as_str();
        // Tags are never empty, so "after the empty string" is "from the start".
        let last = page.last.as_deref().unwrap_or("");
        let limit = sql_limit(page);
        self.retry(move || async move {
            let c = self.client().await?;
            // One statement, so one snapshot: no row means no repository, one row with a
            // NULL name means a repository without (further) tags.
            let stmt = c
                .prepare_cached(
                    "SELECT t.name
                     FROM repositories r
                     LEFT JOIN LATERAL (
                         SELECT name FROM tags
                         WHERE repo_id = r.id AND name > $2
                         ORDER BY name LIMIT $3
                     ) t ON TRUE
                     WHERE r.name = $1
                     ORDER BY t.name",
                )
                .await?;
            let rows = c.query(&stmt, &[&repo, &last, &limit]).await?;
            if rows.is_empty() {
                return Ok(None);
            }
            let mut tags = Vec::with_capacity(rows.len());
            for row in &rows {
                if let Some(name) = row.try_get::<_, Option<String>>(0)? {
                    tags.push(parse_tag(&name)?);
                }
            }
            Ok(Some(tags))
        })
        .await
    }

    async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<bool, MetadataError> {
        let (repo, tag) = (repo.as_str(), tag.as_str());
        self.retry(move || async move {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            let stmt = tx
                .prepare_cached(
                    "DELETE FROM tags t
                     USING repositories r, manifests m
                     WHERE r.name = $1 AND t.repo_id = r.id AND t.name = $2
                       AND m.id = t.manifest_id
                     RETURNING m.digest",
                )
                .await?;
            let Some(row) = tx.query_opt(&stmt, &[&repo, &tag]).await? else {
                return Ok(false);
            };
            let untagged: String = row.try_get(0)?;
            gc::enqueue(&tx, gc::Kind::Manifest, repo, &untagged, now_ms()).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn delete_tag_if(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
        updated_at: i64,
    ) -> Result<bool, MetadataError> {
        let (repo, tag, digest) = (repo.as_str(), tag.as_str(), digest.as_str());
        self.retry(move || async move {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            let stmt = tx
                .prepare_cached(
                    "DELETE FROM tags t
                     USING repositories r, manifests m
                     WHERE r.name = $1 AND t.repo_id = r.id AND t.name = $2
                       AND m.id = t.manifest_id AND m.digest = $3 AND t.updated_at = $4",
                )
                .await?;
            if tx
                .execute(&stmt, &[&repo, &tag, &digest, &updated_at])
                .await?
                == 0
            {
                return Ok(false);
            }
            gc::enqueue(&tx, gc::Kind::Manifest, repo, digest, now_ms()).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ReferrerRecord>, MetadataError> {
        let (repo, subject) = (repo.as_str(), subject.as_str());
        self.retry(move || async move {
            let c = self.client().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations
                     FROM manifests m
                     JOIN repositories r ON r.id = m.repo_id
                     WHERE r.name = $1 AND m.subject = $2
                       AND ($3::text IS NULL OR m.artifact_type = $3)
                     ORDER BY m.digest",
                )
                .await?;
            let rows = c.query(&stmt, &[&repo, &subject, &artifact_type]).await?;
            rows.iter()
                .map(|row| {
                    let digest: String = row.try_get(0)?;
                    let annotations: String = row.try_get(4)?;
                    let annotations: BTreeMap<String, String> = serde_json::from_str(&annotations)
                        .map_err(|e| corrupt(format!("annotations of {digest}: {e}")))?;
                    Ok(ReferrerRecord::new(
                        parse_digest(&digest)?,
                        row.try_get(1)?,
                        from_sql_int("manifest size", row.try_get(2)?)?,
                        row.try_get(3)?,
                        annotations,
                    ))
                })
                .collect()
        })
        .await
    }

    fn gc(&self) -> Option<&dyn storage_traits::GcMetadata> {
        Some(self)
    }

    fn insights(&self) -> Option<&dyn storage_traits::InsightsMetadata> {
        Some(self)
    }

    fn pulls(&self) -> Option<&dyn storage_traits::PullMetadata> {
        Some(self)
    }

    fn quotas(&self) -> Option<&dyn storage_traits::QuotaMetadata> {
        Some(self)
    }
}

#[async_trait]
impl UploadSessionStore for PostgresMetadataStore {
    async fn create_upload(&self, session: &UploadSession) -> Result<(), MetadataError> {
        let s = session;
        let offset = to_sql_int("upload offset", s.offset).map_err(Fail::into_metadata)?;
        self.retry(move || async move {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            ensure_repo(&tx, s.repository.as_str(), now_ms()).await?;
            let stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO upload_sessions ({UPLOAD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
                ))
                .await?;
            tx.execute(
                &stmt,
                &[
                    &s.id,
                    &s.repository.as_str(),
                    &offset,
                    &s.hash_state,
                    &s.created_at,
                    &s.updated_at,
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn get_upload(&self, id: &str) -> Result<Option<UploadSession>, MetadataError> {
        self.retry(move || async move {
            let c = self.client().await?;
            let stmt = c
                .prepare_cached(&format!(
                    "SELECT {UPLOAD_COLUMNS} FROM upload_sessions WHERE id = $1"
                ))
                .await?;
            match c.query_opt(&stmt, &[&id]).await? {
                Some(row) => Ok(Some(to_upload(&row)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn update_upload(&self, update: &UploadUpdate<'_>) -> Result<bool, MetadataError> {
        // No stored offset exceeds i64::MAX, so such an expectation never matches.
        let Ok(expected) = i64::try_from(update.expected_offset) else {
            return Ok(false);
        };
        let (new_offset, now_ms) = (update.new_offset, update.updated_at);
        let new_offset = to_sql_int("upload offset", new_offset).map_err(Fail::into_metadata)?;
        let (id, hash_state) = (update.id, update.hash_state);
        self.retry(move || async move {
            let c = self.client().await?;
            // The compare-and-swap is this one statement: a racing UPDATE waits for the
            // row lock, then re-checks `byte_offset` against the committed row and
            // matches nothing.
            let stmt = c
                .prepare_cached(
                    "UPDATE upload_sessions
                     SET byte_offset = $3, hash_state = $4, updated_at = $5
                     WHERE id = $1 AND byte_offset = $2",
                )
                .await?;
            let n = c
                .execute(&stmt, &[&id, &expected, &new_offset, &hash_state, &now_ms])
                .await?;
            Ok(n == 1)
        })
        .await
    }

    async fn delete_upload(&self, id: &str) -> Result<bool, MetadataError> {
        self.retry(move || async move {
            let c = self.client().await?;
            let stmt = c
                .prepare_cached("DELETE FROM upload_sessions WHERE id = $1")
                .await?;
            Ok(c.execute(&stmt, &[&id]).await? > 0)
        })
        .await
    }

    async fn stale_uploads(
        &self,
        updated_before_ms: i64,
    ) -> Result<Vec<UploadSession>, MetadataError> {
        self.retry(move || async move {
            let c = self.client().await?;
            let stmt = c
                .prepare_cached(&format!(
                    "SELECT {UPLOAD_COLUMNS} FROM upload_sessions
                     WHERE updated_at < $1 ORDER BY updated_at, id"
                ))
                .await?;
            c.query(&stmt, &[&updated_before_ms])
                .await?
                .iter()
                .map(to_upload)
                .collect()
        })
        .await
    }

    async fn count_uploads(&self) -> Result<u64, MetadataError> {
        self.count_rows(
            "SELECT COUNT(*)::BIGINT FROM upload_sessions",
            "upload session count",
        )
        .await
    }
}
