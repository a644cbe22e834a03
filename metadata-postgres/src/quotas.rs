//! [`QuotaMetadata`] on PostgreSQL: the link's transaction first takes a transaction-scoped
//! advisory lock per covering quota (`pg_advisory_xact_lock` on a hash of the pattern, in
//! pattern order), so checks of one quota are serialized across every replica on the
//! database, and then, under `READ COMMITTED`, each statement sees every link the
//! previous holder committed.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use oci_spec_types::{Digest, RepositoryName};
use storage_traits::MetadataError;
use storage_traits::quotas::{Quota, QuotaMetadata, QuotaUsage, covering};

use crate::store::{Fail, PostgresMetadataStore, from_sql_int, link_blob_in, to_sql_int};

/// The first key of the two-key advisory locks (`"quot"`): a space apart from the
/// migration lock's single-key one.
const QUOTA_LOCK_CLASS: i32 = 0x7175_6f74;

/// The ids of the repositories `quota` covers.
async fn covered_ids(c: &impl GenericClient, quota: &Quota) -> Result<Vec<i64>, Fail> {
    let stmt = c
        .prepare_cached("SELECT id, name FROM repositories")
        .await?;
    let mut ids = Vec::new();
    for row in c.query(&stmt, &[]).await? {
        let name: &str = row.try_get(1)?;
        if quota.covers(name) {
            ids.push(row.try_get(0)?);
        }
    }
    Ok(ids)
}

/// The bytes of the distinct blobs linked in `ids`, and whether `digest` is one of them.
async fn used(c: &impl GenericClient, ids: &[i64], digest: &str) -> Result<(u64, bool), Fail> {
    let stmt = c
        .prepare_cached(
            "SELECT COALESCE(SUM(b.size), 0)::BIGINT, COALESCE(bool_or(b.digest = $2), false)
             FROM blobs b
             WHERE b.digest IN (SELECT digest FROM repository_blobs WHERE repo_id = ANY($1))",
        )
        .await?;
    let row = c.query_one(&stmt, &[&ids, &digest]).await?;
    Ok((
        from_sql_int("quota usage", row.try_get(0)?)?,
        row.try_get(1)?,
    ))
}

#[async_trait]
impl QuotaMetadata for PostgresMetadataStore {
    async fn link_blob_within_quotas(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        size: u64,
        quotas: &[Quota],
    ) -> Result<Option<QuotaUsage>, MetadataError> {
        let (repo, digest) = (repo.as_str(), digest.as_str());
        let quotas = covering(quotas, repo);
        let quotas = &quotas;
        self.retry(move || async move {
            let sql_size = to_sql_int("blob size", size)?;
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            let lock = tx
                .prepare_cached("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .await?;
            for q in quotas {
                tx.execute(&lock, &[&QUOTA_LOCK_CLASS, &q.pattern]).await?;
            }
            for q in quotas {
                let ids = covered_ids(&tx, q).await?;
                let (used, linked) = used(&tx, &ids, digest).await?;
                let adds = if linked { 0 } else { size };
                if used.saturating_add(adds) > q.limit {
                    tx.rollback().await?;
                    return Ok(Some(QuotaUsage {
                        pattern: q.pattern.clone(),
                        used,
                        limit: q.limit,
                    }));
                }
            }
            link_blob_in(&tx, repo, digest, sql_size).await?;
            tx.commit().await?;
            Ok(None)
        })
        .await
    }

    async fn quota_usage(&self, quotas: &[Quota]) -> Result<Vec<QuotaUsage>, MetadataError> {
        self.retry(move || async move {
            let mut c = self.client().await?;
            // One snapshot for every quota.
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let mut out = Vec::with_capacity(quotas.len());
            for q in quotas {
                let ids = covered_ids(&tx, q).await?;
                let (used, _) = used(&tx, &ids, "").await?;
                out.push(QuotaUsage {
                    pattern: q.pattern.clone(),
                    used,
                    limit: q.limit,
                });
            }
            tx.commit().await?;
            Ok(out)
        })
        .await
    }
}
