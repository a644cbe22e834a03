//! [`PullMetadata`] on SQLite: a batch is one change of the group-committed writer (an
//! upsert per repository and per manifest in it), and the queries are one read
//! transaction each.

use async_trait::async_trait;
use oci_spec_types::RepositoryName;
use rusqlite::{OptionalExtension, params};
use storage_traits::MetadataError;
use storage_traits::pulls::{
    ManifestPulls, PullCount, PullMetadata, Pulls, merge_pulls, repository_totals,
};

use crate::store::{Fail, SqliteMetadataStore, from_sql_int, parse_digest, repo_id, to_sql_int};

#[async_trait]
impl PullMetadata for SqliteMetadataStore {
    async fn record_pulls(&self, pulls: &[PullCount]) -> Result<(), MetadataError> {
        let merged = merge_pulls(pulls);
        if merged.is_empty() {
            return Ok(());
        }
        self.write(move |conn| {
            for (repo, count, last) in repository_totals(&merged) {
                let Some(rid) = repo_id(conn, repo.as_str())? else {
                    continue;
                };
                conn.prepare_cached(
                    "INSERT INTO repository_pulls (repo_id, pulls, last_pull) VALUES (?1, ?2, ?3)
                     ON CONFLICT (repo_id) DO UPDATE SET
                         pulls = pulls + excluded.pulls,
                         last_pull = max(last_pull, excluded.last_pull)",
                )?
                .execute(params![rid, to_sql_int("pulls", count)?, last])?;
            }
            for p in &merged {
                let id: Option<i64> = conn
                    .prepare_cached(
                        "SELECT m.id FROM manifests m JOIN repositories r ON r.id = m.repo_id
                         WHERE r.name = ?1 AND m.digest = ?2",
                    )?
                    .query_row(params![p.repository.as_str(), p.digest.as_str()], |r| {
                        r.get(0)
                    })
                    .optional()?;
                let Some(id) = id else { continue };
                conn.prepare_cached(
                    "INSERT INTO manifest_pulls (manifest_id, pulls, last_pull) VALUES (?1, ?2, ?3)
                     ON CONFLICT (manifest_id) DO UPDATE SET
                         pulls = pulls + excluded.pulls,
                         last_pull = max(last_pull, excluded.last_pull)",
                )?
                .execute(params![
                    id,
                    to_sql_int("pulls", p.count)?,
                    p.last_pull
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn repository_pulls(
        &self,
        repositories: &[RepositoryName],
    ) -> Result<Vec<Pulls>, MetadataError> {
        let names: Vec<String> = repositories.iter().map(ToString::to_string).collect();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT p.pulls, p.last_pull FROM repository_pulls p
                 JOIN repositories r ON r.id = p.repo_id WHERE r.name = ?1",
            )?;
            names
                .iter()
                .map(|name| {
                    let row = stmt
                        .query_row([name], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                        .optional()?;
                    Ok(match row {
                        Some((pulls, last)) => Pulls {
                            pulls: from_sql_int("pulls", pulls)?,
                            last_pull: Some(last),
                        },
                        None => Pulls::default(),
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
        let repo = repo.to_string();
        self.read(move |conn| {
            let Some(rid) = repo_id(conn, &repo)? else {
                return Ok(None);
            };
            let mut stmt = conn.prepare_cached(
                "SELECT m.digest, m.size, m.created_at, p.pulls, p.last_pull,
                        (SELECT group_concat(t.name, ',') FROM tags t WHERE t.manifest_id = m.id)
                 FROM manifests m LEFT JOIN manifest_pulls p ON p.manifest_id = m.id
                 WHERE m.repo_id = ?1 ORDER BY m.digest",
            )?;
            let rows = stmt.query_map([rid], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })?;
            rows.map(|row| {
                let (digest, size, created_at, pulls, last_pull, tags) = row?;
                // Tags never contain a comma (the spec's tag grammar).
                let mut tags: Vec<String> = tags
                    .as_deref()
                    .map(|t| t.split(',').map(str::to_string).collect())
                    .unwrap_or_default();
                tags.sort();
                Ok(ManifestPulls {
                    digest: parse_digest(&digest)?,
                    size: from_sql_int("size", size)?,
                    tags,
                    created_at,
                    pulls: from_sql_int("pulls", pulls.unwrap_or(0))?,
                    last_pull,
                })
            })
            .collect::<Result<Vec<_>, Fail>>()
            .map(Some)
        })
        .await
    }
}
