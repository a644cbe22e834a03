//! [`SqliteMetadataStore`]: connections, the blocking-work bridge, and the trait impl.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use oci_spec_types::{Digest, Reference, RepositoryName, Tag};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use storage_traits::{
    ManifestRecord, MetadataError, MetadataStore, NewManifest, Page, ReferrerRecord, UploadSession,
    UploadSessionStore, UploadUpdate,
};

use crate::writer::Writer;
use crate::{gc, migrations};

pub(crate) const BACKEND: &str = "sqlite";

/// How long a statement waits for another process's write lock before failing with
/// `SQLITE_BUSY`. Writers of this process never wait on each other here: they queue on
/// the writer mutex instead.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle reader connections kept open: one per core, at least two. Point lookups run on
/// the runtime's worker threads (one per core by default), so that many readers serve
/// them without reopening; more may exist briefly under load (scans on the blocking pool),
/// and the extras are closed when returned. Each idle reader keeps up to
/// `READER_CACHE_KIB` of cache, so fewer idle readers is less memory at the same speed
/// (docs/performance.md, "Figures moved out of the code").
fn max_idle_readers() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(2, std::num::NonZeroUsize::get)
            .max(2)
    })
}

/// Page cache of each reader connection, in KiB (SQLite's default is 2,000 KiB per
/// connection). Readers run point lookups and short index scans whose pages stay hot in a
/// few hundred KiB, and a miss costs one `pread` from the OS page cache; the default held
/// megabytes for nothing (docs/performance.md, round 4). The writer keeps the default: with
/// a smaller writer cache, readers were seen re-reading all their pages after each
/// transaction, for reasons not found (docs/performance.md, "Figures moved out of the
/// code").
const READER_CACHE_KIB: u32 = 1024;

/// Prepared statements kept per connection. Above the number of distinct statements the
/// store runs, so none is ever parsed twice on one connection (rusqlite's default, 16, is
/// below it: the writer's statements evicted each other).
const STATEMENT_CACHE: usize = 128;

/// A [`MetadataStore`] in one SQLite database file.
///
/// - One writer connection, owned by a dedicated thread that applies every change with
///   group commit: the changes queued while one transaction commits go into the next,
///   each in its own savepoint, and one WAL sync makes them all durable before any caller
///   is answered (see `writer.rs`). SQLite admits one writer at a time anyway, and
///   queueing in-process avoids `SQLITE_BUSY` retries.
/// - Reader connections from a small pool. In WAL mode readers never block the writer or
///   each other. A point lookup (one indexed statement, e.g. a manifest by tag) runs
///   right where it is awaited: it takes microseconds on cached pages, less than the
///   thread hand-off to do it elsewhere would cost. Reads that scan (listings, insights,
///   the collector's queue) run in one transaction, so they see one snapshot, on tokio's
///   blocking pool; a store must therefore be used from within a tokio runtime.
///
/// Cloning is cheap and shares the connections.
#[derive(Clone)]
pub struct SqliteMetadataStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` for an in-memory database.
    path: Option<PathBuf>,
    writer: Writer,
    /// `None` for an in-memory database: every connection to `:memory:` is a separate
    /// database, so reads go through the writer connection.
    readers: Option<Mutex<Vec<Connection>>>,
}

impl fmt::Debug for SqliteMetadataStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteMetadataStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteMetadataStore {
    /// Opens (creating if needed) the database at `path`, switches it to WAL mode and
    /// applies pending migrations.
    ///
    /// This does blocking file I/O; call it at start-up (or inside `spawn_blocking`).
    ///
    /// # Errors
    /// [`MetadataError::Backend`] if the file cannot be opened or migrated; its source is a
    /// [`MigrationError`](crate::MigrationError) when the database was written by a newer
    /// build ([`SchemaTooNew`](crate::MigrationError::SchemaTooNew)) or a migration failed.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, MetadataError> {
        let path = path.as_ref().to_path_buf();
        let mut writer = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql)?;
        configure(&writer).map_err(sql)?;
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sql)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(MetadataError::backend(
                BACKEND,
                format!(
                    "could not switch {} to WAL mode (got {mode:?})",
                    path.display()
                ),
            ));
        }
        migrations::migrate(&mut writer, now_ms())?;
        Ok(SqliteMetadataStore {
            inner: Arc::new(Inner {
                path: Some(path),
                writer: Writer::spawn(writer)?,
                readers: Some(Mutex::new(Vec::new())),
            }),
        })
    }

    /// A private database in memory, gone when the store is dropped. For tests and
    /// throw-away registries: one connection serves reads and writes.
    pub fn open_in_memory() -> Result<Self, MetadataError> {
        let mut conn = Connection::open_in_memory().map_err(sql)?;
        configure(&conn).map_err(sql)?;
        migrations::migrate(&mut conn, now_ms())?;
        Ok(SqliteMetadataStore {
            inner: Arc::new(Inner {
                path: None,
                writer: Writer::spawn(conn)?,
                readers: None,
            }),
        })
    }

    /// Runs `f` inside one transaction on the writer connection (shared with other
    /// changes by group commit, `f`'s own part isolated by a savepoint). `f`'s changes are
    /// kept, and durable before this returns, if it returns `Ok`; rolled back otherwise.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, MetadataError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Fail> + Send + 'static,
    {
        self.inner.writer.change(f).await
    }

    /// Like `write`, but commits only if `commit` is true: a dry run sees exactly what
    /// the real transaction would, and leaves nothing behind.
    pub(crate) async fn write_then<T, F>(&self, commit: bool, f: F) -> Result<T, MetadataError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Fail> + Send + 'static,
    {
        if commit {
            return self.write(f).await;
        }
        self.inner
            .writer
            .alone(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let out = f(&tx)?;
                tx.rollback()?;
                Ok(out)
            })
            .await
    }

    /// Runs `f` inside one read transaction (one consistent snapshot) on a reader
    /// connection, on the blocking pool. For reads that may scan many rows.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, MetadataError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Fail> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        if inner.readers.is_none() || inner.path.is_none() {
            return self.read_in_memory(f).await;
        }
        run_blocking(move || {
            let (Some(pool), Some(path)) = (&inner.readers, &inner.path) else {
                return Err(Fail(MetadataError::backend(BACKEND, "no reader pool")));
            };
            with_reader(pool, path, |conn| {
                exec(conn, "BEGIN")?;
                let out = f(conn);
                // The read transaction changed nothing; ending it releases its snapshot.
                exec(conn, "ROLLBACK")?;
                out
            })
        })
        .await
    }

    /// Runs `f`, which must be one statement reading a few rows by an index, on a reader
    /// connection right here, without a hand-off to another thread. The statement is its
    /// own read transaction.
    pub(crate) async fn read_point<T, F>(&self, f: F) -> Result<T, MetadataError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Fail> + Send + 'static,
    {
        let (Some(pool), Some(path)) = (&self.inner.readers, &self.inner.path) else {
            return self.read_in_memory(f).await;
        };
        with_reader(pool, path, f).map_err(|Fail(e)| e)
    }

    async fn read_in_memory<T, F>(&self, f: F) -> Result<T, MetadataError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Fail> + Send + 'static,
    {
        self.inner
            .writer
            .alone(move |conn| {
                let tx = conn.transaction()?;
                f(&tx)
            })
            .await
    }
}

/// Runs `f` on an idle reader connection (opening one if none is idle) and returns the
/// connection to the pool afterwards.
fn with_reader<T>(
    pool: &Mutex<Vec<Connection>>,
    path: &Path,
    f: impl FnOnce(&Connection) -> Result<T, Fail>,
) -> Result<T, Fail> {
    let idle = lock_pool(pool).pop();
    let conn = match idle {
        Some(c) => c,
        None => open_reader(path)?,
    };
    let out = f(&conn);
    // A connection left inside a transaction (a failed rollback) is not reused.
    if conn.is_autocommit() {
        let mut idle = lock_pool(pool);
        if idle.len() < max_idle_readers() {
            idle.push(conn);
        }
    }
    out
}

/// Runs a statement through the connection's statement cache.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Per-connection settings (they are not stored in the database file).
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "foreign_keys", true)?;
    // FULL rather than NORMAL: in WAL mode NORMAL never corrupts the database, but a
    // power loss may roll back the last commits, and a registry has already told the
    // client its push succeeded. FULL costs one WAL fsync per commit; group commit (see
    // `writer.rs`) shares it among the changes queued together.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

fn open_reader(path: &Path) -> Result<Connection, Fail> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Negative: a size in KiB rather than in pages.
    conn.pragma_update(None, "cache_size", -i64::from(READER_CACHE_KIB))?;
    Ok(conn)
}

/// The pool holds only idle connections, so a panic cannot leave it inconsistent.
fn lock_pool(m: &Mutex<Vec<Connection>>) -> MutexGuard<'_, Vec<Connection>> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn run_blocking<T, F>(f: F) -> Result<T, MetadataError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Fail> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|Fail(e)| e),
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(join) => Err(MetadataError::backend(BACKEND, join)),
    }
}

/// The error of a blocking closure: a `MetadataError`, reachable from `rusqlite::Error`
/// with `?`.
pub(crate) struct Fail(pub(crate) MetadataError);

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail(sql(e))
    }
}

impl From<MetadataError> for Fail {
    fn from(e: MetadataError) -> Self {
        Fail(e)
    }
}

fn sql(e: rusqlite::Error) -> MetadataError {
    MetadataError::backend(BACKEND, e)
}

pub(crate) fn corrupt(what: impl fmt::Display) -> Fail {
    Fail(MetadataError::Corrupt(what.to_string()))
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// SQLite integers are signed 64-bit; sizes and offsets beyond that cannot be stored.
pub(crate) fn to_sql_int(what: &str, n: u64) -> Result<i64, Fail> {
    i64::try_from(n).map_err(|_| {
        Fail(MetadataError::backend(
            BACKEND,
            format!("{what} {n} exceeds SQLite's integer range"),
        ))
    })
}

pub(crate) fn from_sql_int(what: &str, n: i64) -> Result<u64, Fail> {
    u64::try_from(n).map_err(|_| corrupt(format!("negative {what} {n}")))
}

fn sql_limit(page: &Page) -> i64 {
    // LIMIT -1 is SQLite's "no limit".
    page.limit
        .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX))
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

pub(crate) fn repo_id(conn: &Connection, name: &str) -> Result<Option<i64>, Fail> {
    Ok(conn
        .prepare_cached("SELECT id FROM repositories WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}

/// The repository's id, creating the repository if this is its first row.
fn ensure_repo(conn: &Connection, name: &str, now: i64) -> Result<i64, Fail> {
    conn.prepare_cached(
        "INSERT INTO repositories (name, created_at) VALUES (?1, ?2)
         ON CONFLICT (name) DO NOTHING",
    )?
    .execute(params![name, now])?;
    Ok(conn
        .prepare_cached("SELECT id FROM repositories WHERE name = ?1")?
        .query_row([name], |r| r.get(0))?)
}

/// `link_blob`'s transaction body, shared with the quota-checked link.
pub(crate) fn link_blob_in(
    conn: &Connection,
    repo: &str,
    digest: &str,
    size: u64,
) -> Result<(), Fail> {
    let now = now_ms();
    let size = to_sql_int("blob size", size)?;
    gc::refuse_tombstoned(conn, digest)?;
    let id = ensure_repo(conn, repo, now)?;
    conn.prepare_cached(
        "INSERT INTO blobs (digest, size) VALUES (?1, ?2) ON CONFLICT (digest) DO NOTHING",
    )?
    .execute(params![digest, size])?;
    conn.prepare_cached(
        "INSERT INTO repository_blobs (repo_id, digest, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (repo_id, digest) DO NOTHING",
    )?
    .execute(params![id, digest, now])?;
    // Until a manifest references it, the link is an upload that may never be used;
    // (re-)linking restarts its grace period.
    gc::enqueue(conn, gc::Kind::Link, repo, digest, now)?;
    Ok(())
}

/// The entries of `refs` (deduplicated, in order) for which `present` is false.
fn missing<F>(refs: &[Digest], mut present: F) -> Result<Vec<Digest>, Fail>
where
    F: FnMut(&Digest) -> Result<bool, Fail>,
{
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for d in refs {
        if seen.insert(d) && !present(d)? {
            out.push(d.clone());
        }
    }
    Ok(out)
}

fn put_manifest_tx(conn: &Connection, m: &NewManifest, annotations: &str) -> Result<(), Fail> {
    let now = now_ms();
    let repo = m.repository.as_str();
    gc::refuse_tombstoned(conn, m.digest.as_str())?;
    let existing_repo = repo_id(conn, repo)?;

    let missing_blobs = missing(&m.blob_refs, |d| {
        let Some(id) = existing_repo else {
            return Ok(false);
        };
        Ok(conn
            .prepare_cached("SELECT 1 FROM repository_blobs WHERE repo_id = ?1 AND digest = ?2")?
            .exists(params![id, d.as_str()])?)
    })?;
    let missing_manifests = missing(&m.manifest_refs, |d| {
        let Some(id) = existing_repo else {
            return Ok(false);
        };
        Ok(conn
            .prepare_cached("SELECT 1 FROM manifests WHERE repo_id = ?1 AND digest = ?2")?
            .exists(params![id, d.as_str()])?)
    })?;
    if !missing_blobs.is_empty() || !missing_manifests.is_empty() {
        return Err(Fail(MetadataError::MissingReferences {
            blobs: missing_blobs,
            manifests: missing_manifests,
        }));
    }
    let tags: BTreeSet<&str> = m.tags.iter().map(Tag::as_str).collect();
    // An immutable tag may be created, never moved. Every tag is checked here, before
    // anything is written, inside the writer's transaction: no other change runs in
    // between, and one refused tag leaves nothing stored.
    if let (true, Some(repo_id)) = (m.tag_immutable, existing_repo) {
        let mut current_of = conn.prepare_cached(
            "SELECT m.digest FROM tags t JOIN manifests m ON m.id = t.manifest_id
             WHERE t.repo_id = ?1 AND t.name = ?2",
        )?;
        for tag in &tags {
            let current: Option<String> = current_of
                .query_row(params![repo_id, tag], |r| r.get(0))
                .optional()?;
            if let Some(current) = current.filter(|c| c != m.digest.as_str()) {
                return Err(Fail(MetadataError::TagImmutable {
                    tag: tag.to_string(),
                    current: parse_digest(&current)?,
                }));
            }
        }
    }

    let repo_id = match existing_repo {
        Some(id) => id,
        None => ensure_repo(conn, repo, now)?,
    };
    let size = to_sql_int("manifest size", m.content.len() as u64)?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO manifests
                 (repo_id, digest, media_type, content, size, artifact_type, subject,
                  annotations, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (repo_id, digest) DO NOTHING",
        )?
        .execute(params![
            repo_id,
            m.digest.as_str(),
            m.media_type,
            m.content.as_ref(),
            size,
            m.artifact_type,
            m.subject.as_ref().map(Digest::as_str),
            annotations,
            now,
        ])?;
    let manifest_id: i64 = if inserted == 1 {
        let id = conn.last_insert_rowid();
        // The manifest's bytes are a blob too; the row lets the collector reclaim them.
        conn.prepare_cached(
            "INSERT INTO blobs (digest, size) VALUES (?1, ?2) ON CONFLICT (digest) DO NOTHING",
        )?
        .execute(params![m.digest.as_str(), size])?;
        let mut blob_ref = conn.prepare_cached(
            "INSERT INTO manifest_blob_refs (manifest_id, digest) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING",
        )?;
        for d in &m.blob_refs {
            blob_ref.execute(params![id, d.as_str()])?;
        }
        let mut child_ref = conn.prepare_cached(
            "INSERT INTO manifest_manifest_refs (manifest_id, child_digest) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING",
        )?;
        for d in &m.manifest_refs {
            child_ref.execute(params![id, d.as_str()])?;
        }
        id
    } else {
        // Already stored: the same digest is the same bytes, so only the tag may change.
        conn.prepare_cached("SELECT id FROM manifests WHERE repo_id = ?1 AND digest = ?2")?
            .query_row(params![repo_id, m.digest.as_str()], |r| r.get(0))?
    };

    if tags.is_empty() && inserted == 1 {
        // Pushed by digest: untagged from the start.
        gc::enqueue(conn, gc::Kind::Manifest, repo, m.digest.as_str(), now)?;
    }
    let mut previous_of = conn.prepare_cached(
        "SELECT m.digest FROM tags t JOIN manifests m ON m.id = t.manifest_id
         WHERE t.repo_id = ?1 AND t.name = ?2 AND t.manifest_id <> ?3",
    )?;
    let mut point = conn.prepare_cached(
        "INSERT INTO tags (repo_id, name, manifest_id, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (repo_id, name) DO UPDATE
             SET manifest_id = excluded.manifest_id, updated_at = excluded.updated_at",
    )?;
    for tag in &tags {
        let previous: Option<String> = previous_of
            .query_row(params![repo_id, tag, manifest_id], |r| r.get(0))
            .optional()?;
        point.execute(params![repo_id, tag, manifest_id, now])?;
        // Re-tagging leaves the previous manifest possibly untagged.
        if let Some(previous) = previous {
            gc::enqueue(conn, gc::Kind::Manifest, repo, &previous, now)?;
        }
    }
    Ok(())
}

fn manifest_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, Vec<u8>)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
}

fn to_manifest_record(
    (digest, media_type, content): (String, String, Vec<u8>),
) -> Result<ManifestRecord, Fail> {
    Ok(ManifestRecord::new(
        parse_digest(&digest)?,
        media_type,
        Bytes::from(content),
    ))
}

type UploadRow = (String, String, i64, Option<Vec<u8>>, i64, i64);

const UPLOAD_COLUMNS: &str = "id, repository, byte_offset, hash_state, created_at, updated_at";

fn upload_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UploadRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

fn to_upload(
    (id, repo, offset, hash_state, created_at, updated_at): UploadRow,
) -> Result<UploadSession, Fail> {
    let mut s = UploadSession::new(id, parse_repo(&repo)?, created_at);
    s.offset = from_sql_int("upload offset", offset)?;
    s.hash_state = hash_state;
    s.updated_at = updated_at;
    Ok(s)
}

#[async_trait]
impl MetadataStore for SqliteMetadataStore {
    async fn list_repositories(&self, page: &Page) -> Result<Vec<RepositoryName>, MetadataError> {
        // Names are never empty, so "after the empty string" is "from the start".
        let last = page.last.clone().unwrap_or_default();
        let limit = sql_limit(page);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name FROM repositories WHERE name > ?1 ORDER BY name LIMIT ?2",
            )?;
            let names = stmt.query_map(params![last, limit], |r| r.get::<_, String>(0))?;
            names.map(|n| parse_repo(&n?)).collect()
        })
        .await
    }

    async fn repository_exists(&self, repo: &RepositoryName) -> Result<bool, MetadataError> {
        let repo = repo.to_string();
        self.read_point(move |conn| Ok(repo_id(conn, &repo)?.is_some()))
            .await
    }

    async fn link_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), MetadataError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(move |conn| link_blob_in(conn, &repo, &digest, size))
            .await
    }

    async fn blob_link(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<u64>, MetadataError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.read_point(move |conn| {
            let size: Option<i64> = conn
                .prepare_cached(
                    "SELECT b.size
                     FROM repository_blobs rb
                     JOIN repositories r ON r.id = rb.repo_id
                     JOIN blobs b ON b.digest = rb.digest
                     WHERE r.name = ?1 AND rb.digest = ?2",
                )?
                .query_row(params![repo, digest], |r| r.get(0))
                .optional()?;
            size.map(|s| from_sql_int("blob size", s)).transpose()
        })
        .await
    }

    async fn unlink_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, MetadataError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(move |conn| {
            let n = conn
                .prepare_cached(
                    "DELETE FROM repository_blobs
                     WHERE repo_id = (SELECT id FROM repositories WHERE name = ?1)
                       AND digest = ?2",
                )?
                .execute(params![repo, digest])?;
            if n > 0 {
                gc::enqueue(conn, gc::Kind::Blob, "", &digest, now_ms())?;
            }
            Ok(n > 0)
        })
        .await
    }

    async fn put_manifest(&self, manifest: &NewManifest) -> Result<(), MetadataError> {
        // Serialised here so the transaction holds no work that cannot fail in SQL.
        let annotations = serde_json::to_string(&manifest.annotations)
            .map_err(|e| MetadataError::backend(BACKEND, e))?;
        let m = manifest.clone();
        self.write(move |conn| put_manifest_tx(conn, &m, &annotations))
            .await
    }

    async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<Option<ManifestRecord>, MetadataError> {
        let repo = repo.to_string();
        let (query, key) = match reference {
            Reference::Tag(t) => (
                "SELECT m.digest, m.media_type, m.content
                 FROM tags t
                 JOIN repositories r ON r.id = t.repo_id
                 JOIN manifests m ON m.id = t.manifest_id
                 WHERE r.name = ?1 AND t.name = ?2",
                t.to_string(),
            ),
            Reference::Digest(d) => (
                "SELECT m.digest, m.media_type, m.content
                 FROM manifests m
                 JOIN repositories r ON r.id = m.repo_id
                 WHERE r.name = ?1 AND m.digest = ?2",
                d.to_string(),
            ),
        };
        self.read_point(move |conn| {
            let row = conn
                .prepare_cached(query)?
                .query_row(params![repo, key], manifest_row)
                .optional()?;
            row.map(to_manifest_record).transpose()
        })
        .await
    }

    async fn delete_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, MetadataError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(move |conn| {
            gc::enqueue_orphans_of_manifest(conn, &repo, &digest, now_ms())?;
            // Tags and reference rows go with it (ON DELETE CASCADE).
            let n = conn
                .prepare_cached(
                    "DELETE FROM manifests
                     WHERE repo_id = (SELECT id FROM repositories WHERE name = ?1)
                       AND digest = ?2",
                )?
                .execute(params![repo, digest])?;
            Ok(n > 0)
        })
        .await
    }

    async fn list_tags(
        &self,
        repo: &RepositoryName,
        page: &Page,
    ) -> Result<Option<Vec<Tag>>, MetadataError> {
        let repo = repo.to_string();
        // Tags are never empty, so "after the empty string" is "from the start".
        let last = page.last.clone().unwrap_or_default();
        let limit = sql_limit(page);
        self.read(move |conn| {
            let Some(id) = repo_id(conn, &repo)? else {
                return Ok(None);
            };
            let mut stmt = conn.prepare_cached(
                "SELECT name FROM tags WHERE repo_id = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
            )?;
            let names = stmt.query_map(params![id, last, limit], |r| r.get::<_, String>(0))?;
            names
                .map(|n| parse_tag(&n?))
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        })
        .await
    }

    async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<bool, MetadataError> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.write(move |conn| {
            let untagged: Option<String> = conn
                .prepare_cached(
                    "DELETE FROM tags
                     WHERE repo_id = (SELECT id FROM repositories WHERE name = ?1)
                       AND name = ?2
                     RETURNING (SELECT digest FROM manifests WHERE id = manifest_id)",
                )?
                .query_row(params![repo, tag], |r| r.get(0))
                .optional()?;
            if let Some(digest) = &untagged {
                gc::enqueue(conn, gc::Kind::Manifest, &repo, digest, now_ms())?;
            }
            Ok(untagged.is_some())
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
        let (repo, tag, digest) = (repo.to_string(), tag.to_string(), digest.to_string());
        self.write(move |conn| {
            let deleted = conn
                .prepare_cached(
                    "DELETE FROM tags
                     WHERE repo_id = (SELECT id FROM repositories WHERE name = ?1)
                       AND name = ?2 AND updated_at = ?4
                       AND manifest_id = (SELECT m.id FROM manifests m
                                          WHERE m.repo_id = tags.repo_id AND m.digest = ?3)",
                )?
                .execute(params![repo, tag, digest, updated_at])?;
            if deleted > 0 {
                gc::enqueue(conn, gc::Kind::Manifest, &repo, &digest, now_ms())?;
            }
            Ok(deleted > 0)
        })
        .await
    }

    async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ReferrerRecord>, MetadataError> {
        let (repo, subject) = (repo.to_string(), subject.to_string());
        let artifact_type = artifact_type.map(str::to_string);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations
                 FROM manifests m
                 JOIN repositories r ON r.id = m.repo_id
                 WHERE r.name = ?1 AND m.subject = ?2
                   AND (?3 IS NULL OR m.artifact_type = ?3)
                 ORDER BY m.digest",
            )?;
            let rows = stmt.query_map(params![repo, subject, artifact_type], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })?;
            rows.map(|row| {
                let (digest, media_type, size, artifact_type, annotations) = row?;
                let annotations: BTreeMap<String, String> = serde_json::from_str(&annotations)
                    .map_err(|e| corrupt(format!("annotations of {digest}: {e}")))?;
                Ok(ReferrerRecord::new(
                    parse_digest(&digest)?,
                    media_type,
                    from_sql_int("manifest size", size)?,
                    artifact_type,
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
impl UploadSessionStore for SqliteMetadataStore {
    async fn create_upload(&self, session: &UploadSession) -> Result<(), MetadataError> {
        let s = session.clone();
        self.write(move |conn| {
            let offset = to_sql_int("upload offset", s.offset)?;
            ensure_repo(conn, s.repository.as_str(), now_ms())?;
            conn.prepare_cached(&format!(
                "INSERT INTO upload_sessions ({UPLOAD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ))?
            .execute(params![
                s.id,
                s.repository.as_str(),
                offset,
                s.hash_state,
                s.created_at,
                s.updated_at
            ])?;
            Ok(())
        })
        .await
    }

    async fn get_upload(&self, id: &str) -> Result<Option<UploadSession>, MetadataError> {
        let id = id.to_string();
        self.read_point(move |conn| {
            let row = conn
                .prepare_cached(&format!(
                    "SELECT {UPLOAD_COLUMNS} FROM upload_sessions WHERE id = ?1"
                ))?
                .query_row([id], upload_row)
                .optional()?;
            row.map(to_upload).transpose()
        })
        .await
    }

    async fn update_upload(&self, update: &UploadUpdate<'_>) -> Result<bool, MetadataError> {
        // No stored offset exceeds i64::MAX, so such an expectation never matches.
        let Ok(expected) = i64::try_from(update.expected_offset) else {
            return Ok(false);
        };
        let (new_offset, now_ms) = (update.new_offset, update.updated_at);
        let id = update.id.to_string();
        let hash_state = update.hash_state.map(<[u8]>::to_vec);
        self.write(move |conn| {
            let new_offset = to_sql_int("upload offset", new_offset)?;
            let n = conn
                .prepare_cached(
                    "UPDATE upload_sessions
                     SET byte_offset = ?3, hash_state = ?4, updated_at = ?5
                     WHERE id = ?1 AND byte_offset = ?2",
                )?
                .execute(params![id, expected, new_offset, hash_state, now_ms])?;
            Ok(n == 1)
        })
        .await
    }

    async fn delete_upload(&self, id: &str) -> Result<bool, MetadataError> {
        let id = id.to_string();
        self.write(move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM upload_sessions WHERE id = ?1")?
                .execute([id])?;
            Ok(n > 0)
        })
        .await
    }

    async fn stale_uploads(
        &self,
        updated_before_ms: i64,
    ) -> Result<Vec<UploadSession>, MetadataError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {UPLOAD_COLUMNS} FROM upload_sessions
                 WHERE updated_at < ?1 ORDER BY updated_at, id"
            ))?;
            let rows = stmt.query_map([updated_before_ms], upload_row)?;
            rows.map(|r| to_upload(r?)).collect()
        })
        .await
    }

    async fn count_uploads(&self) -> Result<u64, MetadataError> {
        self.read(|conn| {
            let n: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM upload_sessions")?
                .query_row([], |row| row.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn readers_get_the_small_page_cache_and_the_writer_keeps_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let writer = Connection::open(&path).unwrap();
        configure(&writer).unwrap();
        let default: i64 = writer
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap();
        let Ok(reader) = open_reader(&path) else {
            panic!("cannot open a reader");
        };
        let size: i64 = reader
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(size, -i64::from(READER_CACHE_KIB));
        // Negative sizes are KiB: the writer's is the larger.
        assert!(default < size, "writer {default}, reader {size}");
    }
}
