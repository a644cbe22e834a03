//! [`QuotaMetadata`] on SQLite: the check and the link are one change of the single
//! writer, so checks of every quota are serialized by construction.

use std::collections::HashMap;

use async_trait::async_trait;
use oci_spec_types::{Digest, RepositoryName};
use rusqlite::Connection;
use storage_traits::MetadataError;
use storage_traits::quotas::{Quota, QuotaMetadata, QuotaUsage, covering};

use crate::store::{Fail, SqliteMetadataStore, from_sql_int, link_blob_in};

/// The distinct blobs linked in the repositories `quota` covers, with their sizes.
fn linked_blobs(conn: &Connection, quota: &Quota) -> Result<HashMap<String, u64>, Fail> {
    let mut ids = Vec::new();
    {
        let mut stmt = conn.prepare_cached("SELECT id, name FROM repositories")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let name: String = row.get(1)?;
            if quota.covers(&name) {
                ids.push(row.get::<_, i64>(0)?);
            }
        }
    }
    let mut blobs = HashMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT rb.digest, b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
         WHERE rb.repo_id = ?1",
    )?;
    for id in ids {
        let mut rows = stmt.query([id])?;
        while let Some(row) = rows.next()? {
            let size = from_sql_int("blob size", row.get(1)?)?;
            blobs.insert(row.get::<_, String>(0)?, size);
        }
    }
    Ok(blobs)
}

fn usage(quota: &Quota, blobs: &HashMap<String, u64>) -> QuotaUsage {
    QuotaUsage {
        pattern: quota.pattern.clone(),
        used: blobs.values().fold(0u64, |a, b| a.saturating_add(*b)),
        limit: quota.limit,
    }
}

#[async_trait]
impl QuotaMetadata for SqliteMetadataStore {
    async fn link_blob_within_quotas(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        size: u64,
        quotas: &[Quota],
    ) -> Result<Option<QuotaUsage>, MetadataError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        let quotas: Vec<Quota> = covering(quotas, &repo).into_iter().cloned().collect();
        self.write(move |conn| {
            for q in &quotas {
                let blobs = linked_blobs(conn, q)?;
                let adds = if blobs.contains_key(&digest) { 0 } else { size };
                let u = usage(q, &blobs);
                if u.used.saturating_add(adds) > q.limit {
                    return Ok(Some(u));
                }
            }
            link_blob_in(conn, &repo, &digest, size)?;
            Ok(None)
        })
        .await
    }

    async fn quota_usage(&self, quotas: &[Quota]) -> Result<Vec<QuotaUsage>, MetadataError> {
        let quotas = quotas.to_vec();
        self.read(move |conn| {
            quotas
                .iter()
                .map(|q| Ok(usage(q, &linked_blobs(conn, q)?)))
                .collect()
        })
        .await
    }
}
