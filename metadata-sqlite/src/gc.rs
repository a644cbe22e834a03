//! Online garbage collection on SQLite: the review queue kept by the store's own writes,
//! and [`GcMetadata`] for the collector.
//!
//! Every decision runs in one `BEGIN IMMEDIATE` transaction on the single writer
//! connection, so it is serialised with every push: a link, manifest or tag written
//! before the decision commits is seen by its re-check.

use async_trait::async_trait;
use oci_spec_types::Digest;
use rusqlite::{Connection, OptionalExtension, params};
use storage_traits::{GcMetadata, GcOutcome, GcPolicy, GcReview, MetadataError, ReviewTarget};

use crate::store::{
    Fail, SqliteMetadataStore, corrupt, from_sql_int, parse_digest, parse_repo, repo_id,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Link,
    Blob,
    Manifest,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Link => "link",
            Kind::Blob => "blob",
            Kind::Manifest => "manifest",
        }
    }
}

/// Queues (or restarts) a review of `digest` as of `since`, not postponed (`due_at =
/// since`; a restart ends a postponement): the grace period is the collector's setting,
/// applied from `since` when reviews are listed and again when one is applied.
pub(crate) fn enqueue(
    conn: &Connection,
    kind: Kind,
    repo: &str,
    digest: &str,
    since: i64,
) -> Result<(), Fail> {
    conn.prepare_cached(
        "INSERT INTO gc_reviews (kind, repository, digest, since, due_at)
         VALUES (?1, ?2, ?3, ?4, ?4)
         ON CONFLICT (kind, repository, digest) DO UPDATE
             SET since = excluded.since, due_at = excluded.due_at",
    )?
    .execute(params![kind.as_str(), repo, digest, since])?;
    Ok(())
}

/// Fails with `BlobBeingDeleted` while the collector is deleting this digest's bytes.
pub(crate) fn refuse_tombstoned(conn: &Connection, digest: &str) -> Result<(), Fail> {
    let tombstoned = conn
        .prepare_cached("SELECT 1 FROM gc_tombstones WHERE digest = ?1")?
        .exists([digest])?;
    if tombstoned {
        return Err(Fail(MetadataError::BlobBeingDeleted(parse_digest(digest)?)));
    }
    Ok(())
}

/// Before a manifest of `repo` is deleted: queue what it may leave unreferenced (the
/// links of its blobs, its own bytes, its child manifests, and its referrers).
pub(crate) fn enqueue_orphans_of_manifest(
    conn: &Connection,
    repo: &str,
    digest: &str,
    now: i64,
) -> Result<(), Fail> {
    let Some(rid) = repo_id(conn, repo)? else {
        return Ok(());
    };
    let id: Option<i64> = conn
        .prepare_cached("SELECT id FROM manifests WHERE repo_id = ?1 AND digest = ?2")?
        .query_row(params![rid, digest], |r| r.get(0))
        .optional()?;
    let Some(id) = id else {
        return Ok(());
    };
    let collect = |sql: &str, key: i64| -> Result<Vec<String>, Fail> {
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map([key], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    };
    for blob in collect(
        "SELECT digest FROM manifest_blob_refs WHERE manifest_id = ?1",
        id,
    )? {
        enqueue(conn, Kind::Link, repo, &blob, now)?;
    }
    for child in collect(
        "SELECT child_digest FROM manifest_manifest_refs WHERE manifest_id = ?1",
        id,
    )? {
        enqueue(conn, Kind::Manifest, repo, &child, now)?;
    }
    let mut stmt =
        conn.prepare_cached("SELECT digest FROM manifests WHERE repo_id = ?1 AND subject = ?2")?;
    let referrers = stmt
        .query_map(params![rid, digest], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    for referrer in referrers {
        enqueue(conn, Kind::Manifest, repo, &referrer, now)?;
    }
    enqueue(conn, Kind::Blob, "", digest, now)?;
    Ok(())
}

fn exists(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<bool, Fail> {
    Ok(conn.prepare_cached(sql)?.exists(p)?)
}

/// The review's current `since`, read inside the deciding transaction (a push may have
/// restarted it after the collector listed it); `None` if another pass took it.
fn current_since(
    conn: &Connection,
    kind: Kind,
    repo: &str,
    digest: &str,
) -> Result<Option<i64>, Fail> {
    Ok(conn
        .prepare_cached(
            "SELECT since FROM gc_reviews WHERE kind = ?1 AND repository = ?2 AND digest = ?3",
        )?
        .query_row(params![kind.as_str(), repo, digest], |r| r.get(0))
        .optional()?)
}

fn finish(conn: &Connection, kind: Kind, repo: &str, digest: &str) -> Result<(), Fail> {
    conn.prepare_cached(
        "DELETE FROM gc_reviews WHERE kind = ?1 AND repository = ?2 AND digest = ?3",
    )?
    .execute(params![kind.as_str(), repo, digest])?;
    Ok(())
}

/// A deliberate postponement: `due_at` past `since` keeps the review from every collector
/// until then (see `due_reviews`).
fn postpone(
    conn: &Connection,
    kind: Kind,
    repo: &str,
    digest: &str,
    due: i64,
) -> Result<GcOutcome, Fail> {
    conn.prepare_cached(
        "UPDATE gc_reviews SET due_at = ?4 WHERE kind = ?1 AND repository = ?2 AND digest = ?3",
    )?
    .execute(params![kind.as_str(), repo, digest, due])?;
    Ok(GcOutcome::Kept)
}

/// When a review of an untagged manifest comes back while the untagged policy is off
/// (see [`storage_traits::gc::UNTAGGED_RECHECK_MS`]). The grace period is not added: the
/// listing applies it from `since`, whatever collector comes next.
fn parked_until(now: i64) -> i64 {
    now.saturating_add(storage_traits::gc::UNTAGGED_RECHECK_MS)
}

/// Queued less than the policy's grace period ago (a push restarted the review after the
/// collector listed it): left as it is, due once the grace period has passed.
fn young(since: i64, policy: &GcPolicy, now: i64) -> bool {
    since.saturating_add(policy.grace_ms) > now
}

fn kept(conn: &Connection, kind: Kind, repo: &str, digest: &str) -> Result<GcOutcome, Fail> {
    finish(conn, kind, repo, digest)?;
    Ok(GcOutcome::Kept)
}

fn apply_link(
    conn: &Connection,
    repo: &str,
    digest: &str,
    since: i64,
    policy: &GcPolicy,
    now: i64,
) -> Result<GcOutcome, Fail> {
    let k = Kind::Link;
    let Some(rid) = repo_id(conn, repo)? else {
        return kept(conn, k, repo, digest);
    };
    let linked = exists(
        conn,
        "SELECT 1 FROM repository_blobs WHERE repo_id = ?1 AND digest = ?2",
        params![rid, digest],
    )?;
    let referenced = exists(
        conn,
        "SELECT 1 FROM manifest_blob_refs r JOIN manifests m ON m.id = r.manifest_id
         WHERE m.repo_id = ?1 AND r.digest = ?2",
        params![rid, digest],
    )?;
    if !linked || referenced {
        return kept(conn, k, repo, digest);
    }
    if young(since, policy, now) {
        return Ok(GcOutcome::Kept);
    }
    conn.prepare_cached("DELETE FROM repository_blobs WHERE repo_id = ?1 AND digest = ?2")?
        .execute(params![rid, digest])?;
    finish(conn, k, repo, digest)?;
    // The link already waited out the grace period; the blob may go in this same pass.
    enqueue(
        conn,
        Kind::Blob,
        "",
        digest,
        now.saturating_sub(policy.grace_ms),
    )?;
    Ok(GcOutcome::LinkDeleted {
        repository: parse_repo(repo)?,
        digest: parse_digest(digest)?,
    })
}

fn apply_blob(
    conn: &Connection,
    digest: &str,
    since: i64,
    policy: &GcPolicy,
    now: i64,
) -> Result<GcOutcome, Fail> {
    let k = Kind::Blob;
    let in_use = exists(
        conn,
        "SELECT 1 FROM repository_blobs WHERE digest = ?1",
        [digest],
    )? || exists(
        conn,
        "SELECT 1 FROM manifest_blob_refs WHERE digest = ?1",
        [digest],
    )? || exists(conn, "SELECT 1 FROM manifests WHERE digest = ?1", [digest])?;
    if in_use {
        return kept(conn, k, "", digest);
    }
    if young(since, policy, now) {
        return Ok(GcOutcome::Kept);
    }
    let size: Option<i64> = conn
        .prepare_cached("DELETE FROM blobs WHERE digest = ?1 RETURNING size")?
        .query_row([digest], |r| r.get(0))
        .optional()?;
    let Some(size) = size else {
        return kept(conn, k, "", digest);
    };
    conn.prepare_cached(
        "INSERT INTO gc_tombstones (digest, size, deleted_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (digest) DO NOTHING",
    )?
    .execute(params![digest, size, now])?;
    finish(conn, k, "", digest)?;
    Ok(GcOutcome::BlobDeleted {
        digest: parse_digest(digest)?,
        size: from_sql_int("blob size", size)?,
    })
}

fn apply_manifest(
    conn: &Connection,
    repo: &str,
    digest: &str,
    since: i64,
    policy: &GcPolicy,
    now: i64,
) -> Result<GcOutcome, Fail> {
    let k = Kind::Manifest;
    let Some(rid) = repo_id(conn, repo)? else {
        return kept(conn, k, repo, digest);
    };
    let row: Option<(i64, Option<String>)> = conn
        .prepare_cached("SELECT id, subject FROM manifests WHERE repo_id = ?1 AND digest = ?2")?
        .query_row(params![rid, digest], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((id, subject)) = row else {
        return kept(conn, k, repo, digest);
    };
    let tagged = exists(conn, "SELECT 1 FROM tags WHERE manifest_id = ?1", [id])?;
    let in_index = exists(
        conn,
        "SELECT 1 FROM manifest_manifest_refs r JOIN manifests m ON m.id = r.manifest_id
         WHERE m.repo_id = ?1 AND r.child_digest = ?2",
        params![rid, digest],
    )?;
    let is_subject = exists(
        conn,
        "SELECT 1 FROM manifests WHERE repo_id = ?1 AND subject = ?2",
        params![rid, digest],
    )?;
    let subject_alive = match &subject {
        Some(s) => exists(
            conn,
            "SELECT 1 FROM manifests WHERE repo_id = ?1 AND digest = ?2",
            params![rid, s],
        )?,
        None => false,
    };
    if tagged || in_index || is_subject || subject_alive {
        return kept(conn, k, repo, digest);
    }
    if young(since, policy, now) {
        return Ok(GcOutcome::Kept);
    }
    let Some(ttl) = policy.untagged_manifest_ttl_ms else {
        // Untagged manifests are kept unless the policy says otherwise. The review stays,
        // parked with its `since`, so a policy turned on later still reaches it.
        return postpone(conn, k, repo, digest, parked_until(now));
    };
    if since.saturating_add(ttl) > now {
        return postpone(conn, k, repo, digest, since.saturating_add(ttl));
    }
    enqueue_orphans_of_manifest(conn, repo, digest, now)?;
    conn.prepare_cached("DELETE FROM manifests WHERE id = ?1")?
        .execute([id])?;
    finish(conn, k, repo, digest)?;
    Ok(GcOutcome::ManifestDeleted {
        repository: parse_repo(repo)?,
        digest: parse_digest(digest)?,
    })
}

#[async_trait]
impl GcMetadata for SqliteMetadataStore {
    async fn due_reviews(
        &self,
        now_ms: i64,
        grace_ms: i64,
        limit: usize,
    ) -> Result<Vec<GcReview>, MetadataError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let grace_ms = grace_ms.max(0);
        // Queued at or before this; a negative grace would be a clock in the future.
        let cutoff = now_ms.saturating_sub(grace_ms);
        self.read(move |conn| {
            // Two index ranges (0005_gc_due): reviews waiting out a grace period by
            // `since` alone, postponed ones by the end of their postponement.
            let mut stmt = conn.prepare_cached(
                "SELECT kind, repository, digest, since, due_at FROM gc_reviews
                     WHERE due_at <= since AND since <= ?1
                 UNION ALL
                 SELECT kind, repository, digest, since, due_at FROM gc_reviews
                     WHERE due_at > since AND due_at <= ?2 AND since <= ?1
                 ORDER BY 4, 1, 2, 3 LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![cutoff, now_ms, limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?;
            rows.map(|row| {
                let (kind, repo, digest, since, due_at) = row?;
                let due_at = due_at.max(since.saturating_add(grace_ms));
                let target = match kind.as_str() {
                    "link" => ReviewTarget::Link(parse_repo(&repo)?),
                    "blob" => ReviewTarget::Blob,
                    "manifest" => ReviewTarget::Manifest(parse_repo(&repo)?),
                    other => return Err(corrupt(format!("unknown review kind {other:?}"))),
                };
                Ok(GcReview::new(target, parse_digest(&digest)?, due_at))
            })
            .collect()
        })
        .await
    }

    async fn apply_review(
        &self,
        review: &GcReview,
        policy: &GcPolicy,
        now_ms: i64,
        dry_run: bool,
    ) -> Result<GcOutcome, MetadataError> {
        let (kind, repo) = match &review.target {
            ReviewTarget::Link(r) => (Kind::Link, r.to_string()),
            ReviewTarget::Blob => (Kind::Blob, String::new()),
            ReviewTarget::Manifest(r) => (Kind::Manifest, r.to_string()),
            other => {
                return Err(MetadataError::backend(
                    crate::store::BACKEND,
                    format!("unsupported review target {other:?}"),
                ));
            }
        };
        let digest = review.digest.to_string();
        let policy = policy.clone();
        self.write_then(!dry_run, move |conn| {
            let Some(since) = current_since(conn, kind, &repo, &digest)? else {
                return Ok(GcOutcome::Kept);
            };
            match kind {
                Kind::Link => apply_link(conn, &repo, &digest, since, &policy, now_ms),
                Kind::Blob => apply_blob(conn, &digest, since, &policy, now_ms),
                Kind::Manifest => apply_manifest(conn, &repo, &digest, since, &policy, now_ms),
            }
        })
        .await
    }

    async fn tombstones(&self) -> Result<Vec<Digest>, MetadataError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT digest FROM gc_tombstones ORDER BY deleted_at")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.map(|d| parse_digest(&d?)).collect()
        })
        .await
    }

    async fn clear_tombstone(&self, digest: &Digest) -> Result<(), MetadataError> {
        let digest = digest.to_string();
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM gc_tombstones WHERE digest = ?1")?
                .execute([digest])?;
            Ok(())
        })
        .await
    }

    async fn acquire_lease(
        &self,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, MetadataError> {
        let holder = holder.to_string();
        self.write(move |conn| {
            let n = conn
                .prepare_cached(
                    "INSERT INTO gc_lease (id, holder, expires_at) VALUES (1, ?1, ?2)
                     ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                     WHERE gc_lease.holder = excluded.holder OR gc_lease.expires_at <= ?3",
                )?
                .execute(params![holder, now_ms.saturating_add(ttl_ms), now_ms])?;
            Ok(n == 1)
        })
        .await
    }

    async fn release_lease(&self, holder: &str) -> Result<(), MetadataError> {
        let holder = holder.to_string();
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM gc_lease WHERE holder = ?1")?
                .execute([holder])?;
            Ok(())
        })
        .await
    }

    async fn queue_length(&self) -> Result<u64, MetadataError> {
        self.read(|conn| {
            let n: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM gc_reviews")?
                .query_row([], |r| r.get(0))?;
            from_sql_int("review count", n)
        })
        .await
    }
}
