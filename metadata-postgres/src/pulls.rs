//! [`PullMetadata`] on PostgreSQL: a batch is one transaction of two statements (an upsert
//! of every repository's totals, then of every manifest's), each fed the whole batch as
//! arrays. Rows are written in one order (by repository, then digest), so two replicas
//! flushing at once wait for each other instead of deadlocking.

use async_trait::async_trait;
use oci_spec_types::RepositoryName;
use storage_traits::MetadataError;
use storage_traits::pulls::{
    ManifestPulls, PullCount, PullMetadata, Pulls, merge_pulls, repository_totals,
};

use crate::store::{Fail, PostgresMetadataStore, from_sql_int, parse_digest, repo_id};

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl PullMetadata for PostgresMetadataStore {
    async fn record_pulls(&self, pulls: &[PullCount]) -> Result<(), MetadataError> {
        let merged = merge_pulls(pulls);
        if merged.is_empty() {
            return Ok(());
        }
        let totals = repository_totals(&merged);
        let repo_names: Vec<&str> = totals.iter().map(|t| t.0.as_str()).collect();
        let repo_counts: Vec<i64> = totals.iter().map(|t| to_i64(t.1)).collect();
        let repo_times: Vec<i64> = totals.iter().map(|t| t.2).collect();
        let names: Vec<&str> = merged.iter().map(|p| p.repository.as_str()).collect();
        let digests: Vec<&str> = merged.iter().map(|p| p.digest.as_str()).collect();
        let counts: Vec<i64> = merged.iter().map(|p| to_i64(p.count)).collect();
        let times: Vec<i64> = merged.iter().map(|p| p.last_pull).collect();
        let (repo_names, repo_counts, repo_times) = (&repo_names, &repo_counts, &repo_times);
        let (names, digests, counts, times) = (&names, &digests, &counts, &times);
        self.retry(move || async move {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO repository_pulls (repo_id, pulls, last_pull)
                     SELECT r.id, x.n, x.t
                     FROM unnest($1::text[], $2::bigint[], $3::bigint[]) WITH ORDINALITY
                          AS x(name, n, t, i)
                     JOIN repositories r ON r.name = x.name
                     ORDER BY x.i
                     ON CONFLICT (repo_id) DO UPDATE SET
                         pulls = repository_pulls.pulls + EXCLUDED.pulls,
                         last_pull = GREATEST(repository_pulls.last_pull, EXCLUDED.last_pull)",
                )
                .await?;
            tx.execute(&stmt, &[repo_names, repo_counts, repo_times])
                .await?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO manifest_pulls (manifest_id, pulls, last_pull)
                     SELECT m.id, x.n, x.t
                     FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
                          WITH ORDINALITY AS x(name, digest, n, t, i)
                     JOIN repositories r ON r.name = x.name
                     JOIN manifests m ON m.repo_id = r.id AND m.digest = x.digest
                     ORDER BY x.i
                     ON CONFLICT (manifest_id) DO UPDATE SET
                         pulls = manifest_pulls.pulls + EXCLUDED.pulls,
                         last_pull = GREATEST(manifest_pulls.last_pull, EXCLUDED.last_pull)",
                )
                .await?;
            tx.execute(&stmt, &[names, digests, counts, times]).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn repository_pulls(
        &self,
        repositories: &[RepositoryName],
    ) -> Result<Vec<Pulls>, MetadataError> {
        let names: Vec<&str> = repositories.iter().map(RepositoryName::as_str).collect();
        let names = &names;
        self.retry(move || async move {
            let c = self.client().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT p.pulls, p.last_pull
                     FROM unnest($1::text[]) WITH ORDINALITY AS x(name, i)
                     LEFT JOIN repositories r ON r.name = x.name
                     LEFT JOIN repository_pulls p ON p.repo_id = r.id
                     ORDER BY x.i",
                )
                .await?;
            c.query(&stmt, &[names])
                .await?
                .iter()
                .map(|row| {
                    let pulls: Option<i64> = row.try_get(0)?;
                    Ok(Pulls {
                        pulls: from_sql_int("pulls", pulls.unwrap_or(0))?,
                        last_pull: row.try_get(1)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn manifest_pulls(
        &self,
        repo: &RepositoryName,
    ) -> Result<Option<Vec<ManifestPulls>>, MetadataError> {
        let repo = repo.as_str();
        self.retry(move || async move {
            let c = self.client().await?;
            let Some(rid) = repo_id(&c, repo).await? else {
                return Ok(None);
            };
            let stmt = c
                .prepare_cached(
                    "SELECT m.digest, m.size, m.created_at, p.pulls, p.last_pull,
                            ARRAY(SELECT t.name FROM tags t WHERE t.manifest_id = m.id
                                  ORDER BY t.name)
                     FROM manifests m LEFT JOIN manifest_pulls p ON p.manifest_id = m.id
                     WHERE m.repo_id = $1 ORDER BY m.digest",
                )
                .await?;
            c.query(&stmt, &[&rid])
                .await?
                .iter()
                .map(|row| {
                    let digest: &str = row.try_get(0)?;
                    let pulls: Option<i64> = row.try_get(3)?;
                    Ok(ManifestPulls {
                        digest: parse_digest(digest)?,
                        size: from_sql_int("size", row.try_get(1)?)?,
                        tags: row.try_get(5)?,
                        created_at: row.try_get(2)?,
                        pulls: from_sql_int("pulls", pulls.unwrap_or(0))?,
                        last_pull: row.try_get(4)?,
                    })
                })
                .collect::<Result<Vec<_>, Fail>>()
                .map(Some)
        })
        .await
    }
}
