//! Online garbage collection on PostgreSQL: the review queue kept by the store's own
//! writes, the row locks that order a push against a decision, and [`GcMetadata`] for the
//! collector. The locking scheme is explained in the [crate docs](crate#garbage-collection).

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Transaction};
use oci_spec_types::Digest;
use storage_traits::{GcMetadata, GcOutcome, GcPolicy, GcReview, MetadataError, ReviewTarget};

use crate::store::{
    BACKEND, Fail, PostgresMetadataStore, corrupt, from_sql_int, parse_digest, parse_repo, repo_id,
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
pub(crate) async fn enqueue(
    c: &impl GenericClient,
    kind: Kind,
    repo: &str,
    digest: &str,
    since: i64,
) -> Result<(), Fail> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO gc_reviews (kind, repository, digest, since, due_at)
             VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (kind, repository, digest) DO UPDATE
                 SET since = EXCLUDED.since, due_at = EXCLUDED.due_at",
        )
        .await?;
    c.execute(&stmt, &[&kind.as_str(), &repo, &digest, &since])
        .await?;
    Ok(())
}

/// Takes a `FOR SHARE` lock on the `blobs` row of `digest` (inserting it with `size` if
/// absent, which owns it), then fails with `BlobBeingDeleted` if the digest has a
/// tombstone.
///
/// The order matters: a blob decision holds the row `FOR UPDATE` from before its re-check
/// until it commits the deletion and the tombstone, so once this lock is granted (or the
/// row found gone and inserted anew, after such a decision committed) the tombstone check
/// — a new statement, with a new snapshot — sees every decision that could have missed
/// this push. Checking the tombstone first would let a decision commit between the check
/// and the insert.
pub(crate) async fn hold_blob(tx: &Transaction<'_>, digest: &str, size: i64) -> Result<(), Fail> {
    let lock = tx
        .prepare_cached("SELECT 1 FROM blobs WHERE digest = $1 FOR SHARE")
        .await?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO blobs (digest, size) VALUES ($1, $2)
             ON CONFLICT (digest) DO NOTHING RETURNING 1",
        )
        .await?;
    let mut held = false;
    // Each round finds the row or inserts it, unless a concurrent push inserts it between
    // the two statements and a decision deletes it again.
    for _ in 0..3 {
        if tx.query_opt(&lock, &[&digest]).await?.is_some()
            || tx.query_opt(&insert, &[&digest, &size]).await?.is_some()
        {
            held = true;
            break;
        }
    }
    if !held {
        return Err(Fail::Meta(MetadataError::backend(
            BACKEND,
            format!("blob {digest} kept appearing and disappearing under concurrent writes"),
        )));
    }
    let tombstoned = tx
        .prepare_cached("SELECT 1 FROM gc_tombstones WHERE digest = $1")
        .await?;
    if tx.query_opt(&tombstoned, &[&digest]).await?.is_some() {
        return Err(Fail::Meta(MetadataError::BlobBeingDeleted(parse_digest(
            digest,
        )?)));
    }
    Ok(())
}

/// Takes a `FOR SHARE` lock on the link of `digest` in repository `repo_id`, inserting it
/// if absent. A link decision holds the row `FOR UPDATE` while it decides, so a re-link
/// either commits first (and the decision sees its restarted review) or waits and, if the
/// decision deleted the row, links anew.
pub(crate) async fn hold_link(
    tx: &Transaction<'_>,
    repo_id: i64,
    digest: &str,
    now: i64,
) -> Result<(), Fail> {
    let lock = tx
        .prepare_cached(
            "SELECT 1 FROM repository_blobs WHERE repo_id = $1 AND digest = $2 FOR SHARE",
        )
        .await?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO repository_blobs (repo_id, digest, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (repo_id, digest) DO NOTHING RETURNING 1",
        )
        .await?;
    for _ in 0..3 {
        if tx.query_opt(&lock, &[&repo_id, &digest]).await?.is_some()
            || tx
                .query_opt(&insert, &[&repo_id, &digest, &now])
                .await?
                .is_some()
        {
            return Ok(());
        }
    }
    Err(Fail::Meta(MetadataError::backend(
        BACKEND,
        format!("link of {digest} kept appearing and disappearing under concurrent writes"),
    )))
}

/// Before the manifest `id` (digest `digest`) of `repo` is deleted: queue what it may
/// leave unreferenced (the links of its blobs, its child manifests, its referrers, and its
/// own bytes).
pub(crate) async fn enqueue_orphans_of_manifest(
    tx: &Transaction<'_>,
    repo: &str,
    repo_id: i64,
    id: i64,
    digest: &str,
    now: i64,
) -> Result<(), Fail> {
    let collect = |sql: &'static str| async move {
        let stmt = tx.prepare_cached(sql).await?;
        tx.query(&stmt, &[&id])
            .await?
            .iter()
            .map(|r| r.try_get::<_, String>(0).map_err(Fail::from))
            .collect::<Result<Vec<_>, Fail>>()
    };
    for blob in collect("SELECT digest FROM manifest_blob_refs WHERE manifest_id = $1").await? {
        enqueue(tx, Kind::Link, repo, &blob, now).await?;
    }
    for child in
        collect("SELECT child_digest FROM manifest_manifest_refs WHERE manifest_id = $1").await?
    {
        enqueue(tx, Kind::Manifest, repo, &child, now).await?;
    }
    let stmt = tx
        .prepare_cached("SELECT digest FROM manifests WHERE repo_id = $1 AND subject = $2")
        .await?;
    let referrers = tx
        .query(&stmt, &[&repo_id, &digest])
        .await?
        .iter()
        .map(|r| r.try_get::<_, String>(0))
        .collect::<Result<Vec<_>, _>>()?;
    for referrer in referrers {
        enqueue(tx, Kind::Manifest, repo, &referrer, now).await?;
    }
    enqueue(tx, Kind::Blob, "", digest, now).await
}

/// One review, as the deciding transaction sees it.
struct Decision<'a, 't> {
    tx: &'a Transaction<'t>,
    kind: Kind,
    repo: &'a str,
    digest: &'a str,
    policy: &'a GcPolicy,
    now: i64,
}

impl Decision<'_, '_> {
    /// Whether `sql` (which must return at most one row) returns a row.
    async fn exists(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<bool, Fail> {
        let stmt = self.tx.prepare_cached(sql).await?;
        Ok(self.tx.query_opt(&stmt, params).await?.is_some())
    }

    /// The review's current `since`, read after the target's row lock is held (so a push
    /// that committed before the lock was granted has restarted it); `None` if no review
    /// is queued (another pass took it).
    async fn since(&self) -> Result<Option<i64>, Fail> {
        let stmt = self
            .tx
            .prepare_cached(
                "SELECT since FROM gc_reviews WHERE kind = $1 AND repository = $2 AND digest = $3",
            )
            .await?;
        match self
            .tx
            .query_opt(&stmt, &[&self.kind.as_str(), &self.repo, &self.digest])
            .await?
        {
            Some(row) => Ok(Some(row.try_get(0)?)),
            None => Ok(None),
        }
    }

    /// Removes the review, unless a push restarted it since it was read (its `since`
    /// changed): that push's own review must survive this decision.
    async fn finish(&self, since: i64) -> Result<(), Fail> {
        let stmt = self
            .tx
            .prepare_cached(
                "DELETE FROM gc_reviews
                 WHERE kind = $1 AND repository = $2 AND digest = $3 AND since = $4",
            )
            .await?;
        self.tx
            .execute(
                &stmt,
                &[&self.kind.as_str(), &self.repo, &self.digest, &since],
            )
            .await?;
        Ok(())
    }

    async fn kept(&self, since: Option<i64>) -> Result<GcOutcome, Fail> {
        if let Some(since) = since {
            self.finish(since).await?;
        }
        Ok(GcOutcome::Kept)
    }

    /// Queued less than the policy's grace period ago (a push restarted the review after
    /// the collector listed it): left as it is, due once the grace period has passed.
    fn young(&self, since: i64) -> bool {
        since.saturating_add(self.policy.grace_ms) > self.now
    }

    /// A deliberate postponement until `due` (unless a push restarted the review
    /// meanwhile): `due_at` past `since` keeps it from every collector until then.
    async fn postpone(&self, since: i64, due: i64) -> Result<GcOutcome, Fail> {
        let stmt = self
            .tx
            .prepare_cached(
                "UPDATE gc_reviews SET due_at = $5
                 WHERE kind = $1 AND repository = $2 AND digest = $3 AND since = $4",
            )
            .await?;
        self.tx
            .execute(
                &stmt,
                &[&self.kind.as_str(), &self.repo, &self.digest, &since, &due],
            )
            .await?;
        Ok(GcOutcome::Kept)
    }

    async fn link(&self) -> Result<GcOutcome, Fail> {
        let (tx, repo, digest) = (self.tx, self.repo, self.digest);
        let Some(rid) = repo_id(tx, repo).await? else {
            return self.kept(self.since().await?).await;
        };
        // Waits for pushes holding the link FOR SHARE (re-link, put_manifest).
        let linked = self
            .exists(
                "SELECT 1 FROM repository_blobs WHERE repo_id = $1 AND digest = $2 FOR UPDATE",
                &[&rid, &digest],
            )
            .await?;
        let Some(since) = self.since().await? else {
            return Ok(GcOutcome::Kept);
        };
        let referenced = self
            .exists(
                "SELECT 1 FROM manifest_blob_refs r JOIN manifests m ON m.id = r.manifest_id
                 WHERE m.repo_id = $1 AND r.digest = $2 LIMIT 1",
                &[&rid, &digest],
            )
            .await?;
        if !linked || referenced {
            return self.kept(Some(since)).await;
        }
        if self.young(since) {
            return Ok(GcOutcome::Kept);
        }
        let stmt = tx
            .prepare_cached("DELETE FROM repository_blobs WHERE repo_id = $1 AND digest = $2")
            .await?;
        tx.execute(&stmt, &[&rid, &digest]).await?;
        self.finish(since).await?;
        // The link already waited out the grace period; the blob may go in this same pass.
        enqueue(
            tx,
            Kind::Blob,
            "",
            digest,
            self.now.saturating_sub(self.policy.grace_ms),
        )
        .await?;
        Ok(GcOutcome::LinkDeleted {
            repository: parse_repo(repo)?,
            digest: parse_digest(digest)?,
        })
    }

    async fn blob(&self) -> Result<GcOutcome, Fail> {
        let (tx, digest) = (self.tx, self.digest);
        // Waits for pushes holding the row FOR SHARE (link_blob, put_manifest of this
        // digest), and makes later ones wait for this decision.
        let stmt = tx
            .prepare_cached("SELECT size FROM blobs WHERE digest = $1 FOR UPDATE")
            .await?;
        let size: Option<i64> = match tx.query_opt(&stmt, &[&digest]).await? {
            Some(row) => Some(row.try_get(0)?),
            None => None,
        };
        let since = self.since().await?;
        let (Some(size), Some(since)) = (size, since) else {
            return self.kept(since).await;
        };
        let in_use = self
            .exists(
                "SELECT 1 FROM repository_blobs WHERE digest = $1 LIMIT 1",
                &[&digest],
            )
            .await?
            || self
                .exists(
                    "SELECT 1 FROM manifest_blob_refs WHERE digest = $1 LIMIT 1",
                    &[&digest],
                )
                .await?
            || self
                .exists(
                    "SELECT 1 FROM manifests WHERE digest = $1 LIMIT 1",
                    &[&digest],
                )
                .await?;
        if in_use {
            return self.kept(Some(since)).await;
        }
        if self.young(since) {
            return Ok(GcOutcome::Kept);
        }
        let stmt = tx
            .prepare_cached("DELETE FROM blobs WHERE digest = $1")
            .await?;
        tx.execute(&stmt, &[&digest]).await?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO gc_tombstones (digest, size, deleted_at) VALUES ($1, $2, $3)
                 ON CONFLICT (digest) DO NOTHING",
            )
            .await?;
        tx.execute(&stmt, &[&digest, &size, &self.now]).await?;
        self.finish(since).await?;
        Ok(GcOutcome::BlobDeleted {
            digest: parse_digest(digest)?,
            size: from_sql_int("blob size", size)?,
        })
    }

    async fn manifest(&self) -> Result<GcOutcome, Fail> {
        let (tx, repo, digest) = (self.tx, self.repo, self.digest);
        let Some(rid) = repo_id(tx, repo).await? else {
            return self.kept(self.since().await?).await;
        };
        // Waits for puts holding the manifest FOR SHARE (re-push, tagging it, an index
        // naming it as a child) and for delete_manifest.
        let stmt = tx
            .prepare_cached(
                "SELECT id, subject FROM manifests WHERE repo_id = $1 AND digest = $2
                 FOR UPDATE",
            )
            .await?;
        let row: Option<(i64, Option<String>)> = match tx.query_opt(&stmt, &[&rid, &digest]).await?
        {
            Some(row) => Some((row.try_get(0)?, row.try_get(1)?)),
            None => None,
        };
        let since = self.since().await?;
        let (Some((id, subject)), Some(since)) = (row, since) else {
            return self.kept(since).await;
        };
        let tagged = self
            .exists("SELECT 1 FROM tags WHERE manifest_id = $1 LIMIT 1", &[&id])
            .await?;
        let in_index = self
            .exists(
                "SELECT 1 FROM manifest_manifest_refs r JOIN manifests m ON m.id = r.manifest_id
                 WHERE m.repo_id = $1 AND r.child_digest = $2 LIMIT 1",
                &[&rid, &digest],
            )
            .await?;
        let is_subject = self
            .exists(
                "SELECT 1 FROM manifests WHERE repo_id = $1 AND subject = $2 LIMIT 1",
                &[&rid, &digest],
            )
            .await?;
        let subject_alive = match &subject {
            Some(s) => {
                self.exists(
                    "SELECT 1 FROM manifests WHERE repo_id = $1 AND digest = $2",
                    &[&rid, s],
                )
                .await?
            }
            None => false,
        };
        if tagged || in_index || is_subject || subject_alive {
            return self.kept(Some(since)).await;
        }
        if self.young(since) {
            return Ok(GcOutcome::Kept);
        }
        let Some(ttl) = self.policy.untagged_manifest_ttl_ms else {
            // Untagged manifests are kept unless the policy says otherwise. The review
            // stays, parked with its `since`, so a policy turned on later still reaches it
            // (see `storage_traits::gc::UNTAGGED_RECHECK_MS`). The grace period is not
            // added: the listing applies it from `since`, whatever collector comes next.
            let recheck = storage_traits::gc::UNTAGGED_RECHECK_MS;
            return self.postpone(since, self.now.saturating_add(recheck)).await;
        };
        let due = since.saturating_add(ttl);
        if due > self.now {
            return self.postpone(since, due).await;
        }
        enqueue_orphans_of_manifest(tx, repo, rid, id, digest, self.now).await?;
        let stmt = tx
            .prepare_cached("DELETE FROM manifests WHERE id = $1")
            .await?;
        tx.execute(&stmt, &[&id]).await?;
        self.finish(since).await?;
        Ok(GcOutcome::ManifestDeleted {
            repository: parse_repo(repo)?,
            digest: parse_digest(digest)?,
        })
    }
}

#[async_trait]
impl GcMetadata for PostgresMetadataStore {
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
        self.retry(move || async move {
            let c = self.client().await?;
            // Two index ranges (0005_gc_due): reviews waiting out a grace period by
            // `since` alone, postponed ones by the end of their postponement.
            let stmt = c
                .prepare_cached(
                    "SELECT kind, repository, digest, since, due_at FROM gc_reviews
                         WHERE due_at <= since AND since <= $1
                     UNION ALL
                     SELECT kind, repository, digest, since, due_at FROM gc_reviews
                         WHERE due_at > since AND due_at <= $2 AND since <= $1
                     ORDER BY 4, 1, 2, 3 LIMIT $3",
                )
                .await?;
            c.query(&stmt, &[&cutoff, &now_ms, &limit])
                .await?
                .iter()
                .map(|row| {
                    let kind: String = row.try_get(0)?;
                    let repo: String = row.try_get(1)?;
                    let digest: String = row.try_get(2)?;
                    let since: i64 = row.try_get(3)?;
                    let due_at: i64 = row.try_get(4)?;
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
            ReviewTarget::Link(r) => (Kind::Link, r.as_str()),
            ReviewTarget::Blob => (Kind::Blob, ""),
            ReviewTarget::Manifest(r) => (Kind::Manifest, r.as_str()),
            other => {
                return Err(MetadataError::backend(
                    BACKEND,
                    format!("unsupported review target {other:?}"),
                ));
            }
        };
        let digest = review.digest.as_str();
        self.retry(move || async move {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            let decision = Decision {
                tx: &tx,
                kind,
                repo,
                digest,
                policy,
                now: now_ms,
            };
            let outcome = match kind {
                Kind::Link => decision.link().await?,
                Kind::Blob => decision.blob().await?,
                Kind::Manifest => decision.manifest().await?,
            };
            if dry_run {
                // The same statements and locks as the real decision, none of it kept.
                tx.rollback().await?;
            } else {
                tx.commit().await?;
            }
            Ok(outcome)
        })
        .await
    }

    async fn tombstones(&self) -> Result<Vec<Digest>, MetadataError> {
        self.retry(move || async move {
            let c = self.client().await?;
            let stmt = c
                .prepare_cached("SELECT digest FROM gc_tombstones ORDER BY deleted_at, digest")
                .await?;
            c.query(&stmt, &[])
                .await?
                .iter()
                .map(|r| parse_digest(&r.try_get::<_, String>(0)?))
                .collect()
        })
        .await
    }

    async fn clear_tombstone(&self, digest: &Digest) -> Result<(), MetadataError> {
        let digest = digest.as_str();
        self.retry(move || async move {
            let c = self.client().await?;
            let stmt = c
                .prepare_cached("DELETE FROM gc_tombstones WHERE digest = $1")
                .await?;
            c.execute(&stmt, &[&digest]).await?;
            Ok(())
        })
        .await
    }

    async fn queue_length(&self) -> Result<u64, MetadataError> {
        self.count_rows("SELECT COUNT(*)::BIGINT FROM gc_reviews", "review count")
            .await
    }

    async fn acquire_lease(
        &self,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, MetadataError> {
        let expires = now_ms.saturating_add(ttl_ms);
        self.retry(move || async move {
            let c = self.client().await?;
            // One statement: the upsert locks the row, so of two replicas racing for an
            // expired lease the second re-checks the WHERE against the first's new row
            // and updates nothing.
            let stmt = c
                .prepare_cached(
                    "INSERT INTO gc_lease (id, holder, expires_at) VALUES (1, $1, $2)
                     ON CONFLICT (id) DO UPDATE
                         SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
                         WHERE gc_lease.holder = EXCLUDED.holder OR gc_lease.expires_at <= $3",
                )
                .await?;
            Ok(c.execute(&stmt, &[&holder, &expires, &now_ms]).await? == 1)
        })
        .await
    }

    async fn release_lease(&self, holder: &str) -> Result<(), MetadataError> {
        self.retry(move || async move {
            let c = self.client().await?;
            let stmt = c
                .prepare_cached("DELETE FROM gc_lease WHERE holder = $1")
                .await?;
            c.execute(&stmt, &[&holder]).await?;
            Ok(())
        })
        .await
    }
}
