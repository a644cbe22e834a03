//! [`InsightsMetadata`] on SQLite: each query is one read transaction over the schema's
//! indexes (links by digest, references by digest, tags by repository, and the last-push
//! indexes of `0003_insights`).

use async_trait::async_trait;
use oci_spec_types::{Digest, RepositoryName};
use rusqlite::{OptionalExtension, params};
use storage_traits::MetadataError;
use storage_traits::insights::{
    ArtifactTypeCount, BlobReuse, BlobUsage, BlobUser, InsightsMetadata, NameFilter,
    RepositoryEntry, RepositoryOrder, RepositoryStats, Summary, TagEntry,
};

use crate::store::{Fail, SqliteMetadataStore, from_sql_int, parse_digest, parse_repo, repo_id};

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn u(what: &str, n: i64) -> Result<u64, Fail> {
    from_sql_int(what, n)
}

/// The prefix filter is `substr(name, 1, length(prefix)) = prefix`: byte-exact, where
/// SQLite's `LIKE` would fold ASCII case. It comes with `name >= prefix`, which every
/// match satisfies and which lets SQLite range-scan the name index instead of reading
/// every row.
fn prefix_pattern(prefix: &str) -> String {
    prefix.to_string()
}

/// The `WHERE` condition on `r.name` for a filter, with `?1` bound to its string. A
/// substring is `instr`, byte-exact like the prefix condition (no `LIKE` wildcards).
fn name_condition(filter: NameFilter<'_>) -> (&'static str, String) {
    match filter {
        NameFilter::Contains(s) => ("instr(r.name, ?1) > 0", s.to_string()),
        NameFilter::Prefix(p) => (
            "r.name >= ?1 AND substr(r.name, 1, length(?1)) = ?1",
            prefix_pattern(p),
        ),
    }
}

/// Per-repository aggregate; `ORDER BY` appended by the caller.
const REPO_STATS: &str = "
WITH link_counts AS (
    SELECT digest, COUNT(*) AS n FROM repository_blobs GROUP BY digest
),
sizes AS (
    SELECT rb.repo_id,
           SUM(CASE WHEN lc.n = 1 THEN b.size ELSE 0 END) AS unique_bytes,
           SUM(CASE WHEN lc.n > 1 THEN b.size ELSE 0 END) AS shared_bytes,
           SUM(b.size / lc.n) AS attributed_bytes,
           COUNT(*) AS blobs
    FROM repository_blobs rb
    JOIN blobs b ON b.digest = rb.digest
    JOIN link_counts lc ON lc.digest = rb.digest
    GROUP BY rb.repo_id
)
SELECT r.name AS name,
       COALESCE(s.unique_bytes, 0), COALESCE(s.shared_bytes, 0),
       COALESCE(s.attributed_bytes, 0) AS attributed, COALESCE(s.blobs, 0),
       (SELECT COUNT(*) FROM manifests m WHERE m.repo_id = r.id),
       (SELECT COUNT(*) FROM tags t WHERE t.repo_id = r.id),
       (SELECT MAX(x) FROM (
            SELECT MAX(created_at) AS x FROM manifests m WHERE m.repo_id = r.id
            UNION ALL SELECT MAX(updated_at) FROM tags t WHERE t.repo_id = r.id)) AS last_push
FROM repositories r
LEFT JOIN sizes s ON s.repo_id = r.id
";

/// Reads rows of [`REPO_STATS`].
fn read_stats(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
) -> Result<Vec<RepositoryStats>, Fail> {
    let rows = stmt.query_map(params, |r| {
        Ok((
            r.get::<_, String>(0)?,
            [
                r.get::<_, i64>(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ],
            r.get::<_, Option<i64>>(7)?,
        ))
    })?;
    rows.map(|row| {
        let (name, [unique, shared, attributed, blobs, manifests, tags], last_push) = row?;
        Ok(RepositoryStats {
            name,
            unique_bytes: u("bytes", unique)?,
            shared_bytes: u("bytes", shared)?,
            attributed_bytes: u("bytes", attributed)?,
            blobs: u("count", blobs)?,
            manifests: u("count", manifests)?,
            tags: u("count", tags)?,
            last_push,
        })
    })
    .collect()
}

/// Last push per repository, for the sorted catalog.
const LAST_PUSH: &str = "(SELECT MAX(x) FROM (
    SELECT MAX(created_at) AS x FROM manifests m WHERE m.repo_id = r.id
    UNION ALL SELECT MAX(updated_at) FROM tags t WHERE t.repo_id = r.id))";

#[async_trait]
impl InsightsMetadata for SqliteMetadataStore {
    async fn summary(&self) -> Result<Summary, MetadataError> {
        self.read(|conn| {
            let count = |sql: &str| -> Result<i64, Fail> {
                Ok(conn.prepare_cached(sql)?.query_row([], |r| r.get(0))?)
            };
            Ok(Summary {
                repositories: u("count", count("SELECT COUNT(*) FROM repositories")?)?,
                manifests: u("count", count("SELECT COUNT(*) FROM manifests")?)?,
                tags: u("count", count("SELECT COUNT(*) FROM tags")?)?,
                blobs: u("count", count("SELECT COUNT(*) FROM blobs")?)?,
                blob_bytes: u("bytes", count("SELECT COALESCE(SUM(size), 0) FROM blobs")?)?,
            })
        })
        .await
    }

    async fn repository_stats(
        &self,
        order: RepositoryOrder,
        n: usize,
    ) -> Result<Vec<RepositoryStats>, MetadataError> {
        let order_by = match order {
            RepositoryOrder::Size => "ORDER BY 4 DESC, 1",
            RepositoryOrder::Tags => "ORDER BY 7 DESC, 1",
            RepositoryOrder::LastPush => "ORDER BY last_push IS NULL, last_push DESC, 1",
            _ => "ORDER BY 1",
        };
        let sql = format!("{REPO_STATS} {order_by} LIMIT ?1");
        self.read(move |conn| read_stats(&mut conn.prepare_cached(&sql)?, [limit(n)]))
            .await
    }

    async fn most_reused_blobs(&self, n: usize) -> Result<Vec<BlobReuse>, MetadataError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT r.digest, COALESCE(b.size, 0), COUNT(DISTINCT m.repo_id), COUNT(*)
                 FROM manifest_blob_refs r
                 JOIN manifests m ON m.id = r.manifest_id
                 LEFT JOIN blobs b ON b.digest = r.digest
                 GROUP BY r.digest
                 ORDER BY 4 DESC, 2 DESC, 1
                 LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit(n)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            rows.map(|row| {
                let (digest, size, repos, manifests) = row?;
                Ok(BlobReuse {
                    digest: parse_digest(&digest)?,
                    size: u("size", size)?,
                    repositories: u("count", repos)?,
                    manifests: u("count", manifests)?,
                })
            })
            .collect()
        })
        .await
    }

    async fn blob_usage(&self, digest: &Digest) -> Result<BlobUsage, MetadataError> {
        let digest = digest.to_string();
        self.read(move |conn| {
            let size: Option<i64> = conn
                .prepare_cached("SELECT size FROM blobs WHERE digest = ?1")?
                .query_row([&digest], |r| r.get(0))
                .optional()?;
            let mut stmt = conn.prepare_cached(
                "SELECT r.name FROM repository_blobs rb JOIN repositories r ON r.id = rb.repo_id
                 WHERE rb.digest = ?1 ORDER BY r.name",
            )?;
            let linked_by = stmt
                .query_map([&digest], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            let mut stmt = conn.prepare_cached(
                "SELECT rp.name, m.digest,
                        (SELECT group_concat(t.name, char(10) ORDER BY t.name)
                         FROM tags t WHERE t.manifest_id = m.id)
                 FROM manifest_blob_refs r
                 JOIN manifests m ON m.id = r.manifest_id
                 JOIN repositories rp ON rp.id = m.repo_id
                 WHERE r.digest = ?1
                 ORDER BY rp.name, m.digest",
            )?;
            let rows = stmt.query_map([&digest], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })?;
            let referenced_by = rows
                .map(|row| {
                    let (repository, manifest, tags) = row?;
                    Ok(BlobUser {
                        repository,
                        manifest: parse_digest(&manifest)?,
                        tags: tags
                            .map(|t| t.split('\n').map(str::to_string).collect())
                            .unwrap_or_default(),
                    })
                })
                .collect::<Result<Vec<_>, Fail>>()?;
            Ok(BlobUsage {
                size: size.map(|s| u("size", s)).transpose()?,
                linked_by,
                referenced_by,
            })
        })
        .await
    }

    async fn artifact_types(&self) -> Result<Vec<ArtifactTypeCount>, MetadataError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT artifact_type, COUNT(*), SUM(size) FROM manifests
                 GROUP BY artifact_type ORDER BY 2 DESC, 1",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            rows.map(|row| {
                let (artifact_type, n, bytes) = row?;
                Ok(ArtifactTypeCount {
                    artifact_type,
                    manifests: u("count", n)?,
                    bytes: u("bytes", bytes)?,
                })
            })
            .collect()
        })
        .await
    }

    async fn repositories_by_last_push(
        &self,
        filter: NameFilter<'_>,
        after: Option<(Option<i64>, String)>,
        n: usize,
    ) -> Result<Vec<RepositoryEntry>, MetadataError> {
        let (condition, pattern) = name_condition(filter);
        // Order: pushed repositories by last push descending, then never-pushed ones; ties
        // by name. `after` resumes strictly after the given (last_push, name).
        let (has_after, after_push, after_name) = match after {
            Some((p, name)) => (1, p, name),
            None => (0, None, String::new()),
        };
        self.read(move |conn| {
            let sql = format!(
                "SELECT name, lp FROM (SELECT r.name AS name, {LAST_PUSH} AS lp FROM repositories r
                                       WHERE {condition})
                 WHERE ?2 = 0
                    OR (?3 IS NOT NULL AND lp IS NOT NULL AND (lp < ?3 OR (lp = ?3 AND name > ?4)))
                    OR (?3 IS NOT NULL AND lp IS NULL)
                    OR (?3 IS NULL AND lp IS NULL AND name > ?4)
                 ORDER BY lp IS NULL, lp DESC, name
                 LIMIT ?5"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![pattern, has_after, after_push, after_name, limit(n)],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?)),
            )?;
            rows.map(|row| {
                let (name, last_push) = row?;
                Ok(RepositoryEntry {
                    name: parse_repo(&name)?,
                    last_push,
                })
            })
            .collect()
        })
        .await
    }

    async fn repositories_by_size(
        &self,
        filter: NameFilter<'_>,
        after: Option<(u64, String)>,
        n: usize,
    ) -> Result<Vec<RepositoryStats>, MetadataError> {
        let (condition, pattern) = name_condition(filter);
        // Sizes above i64::MAX cannot be stored; saturating keeps the cursor's meaning.
        let (has_after, after_bytes, after_name) = match after {
            Some((b, name)) => (1, i64::try_from(b).unwrap_or(i64::MAX), name),
            None => (0, 0, String::new()),
        };
        let sql = format!(
            "SELECT * FROM ({REPO_STATS} WHERE {condition})
             WHERE ?2 = 0 OR attributed < ?3 OR (attributed = ?3 AND name > ?4)
             ORDER BY attributed DESC, name LIMIT ?5"
        );
        self.read(move |conn| {
            read_stats(
                &mut conn.prepare_cached(&sql)?,
                params![pattern, has_after, after_bytes, after_name, limit(n)],
            )
        })
        .await
    }

    async fn repositories_by_name(
        &self,
        filter: NameFilter<'_>,
        after: Option<&str>,
        n: usize,
    ) -> Result<Vec<RepositoryEntry>, MetadataError> {
        let (condition, pattern) = name_condition(filter);
        let after = after.unwrap_or("").to_string();
        self.read(move |conn| {
            let sql = format!(
                "SELECT r.name, {LAST_PUSH} FROM repositories r
                 WHERE {condition} AND r.name > ?2
                 ORDER BY r.name LIMIT ?3"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![pattern, after, limit(n)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
            })?;
            rows.map(|row| {
                let (name, last_push) = row?;
                Ok(RepositoryEntry {
                    name: parse_repo(&name)?,
                    last_push,
                })
            })
            .collect()
        })
        .await
    }

    async fn tags_by_last_push(
        &self,
        repo: &RepositoryName,
        prefix: &str,
        after: Option<(i64, String)>,
        n: usize,
    ) -> Result<Option<Vec<TagEntry>>, MetadataError> {
        let (repo, pattern) = (repo.to_string(), prefix_pattern(prefix));
        let (has_after, after_at, after_name) = match after {
            Some((at, name)) => (1, at, name),
            None => (0, 0, String::new()),
        };
        self.read(move |conn| {
            let Some(rid) = repo_id(conn, &repo)? else {
                return Ok(None);
            };
            let mut stmt = conn.prepare_cached(
                "SELECT t.name, m.digest, t.updated_at FROM tags t JOIN manifests m ON m.id = t.manifest_id
                 WHERE t.repo_id = ?1 AND t.name >= ?2 AND substr(t.name, 1, length(?2)) = ?2
                   AND (?3 = 0 OR t.updated_at < ?4 OR (t.updated_at = ?4 AND t.name > ?5))
                 ORDER BY t.updated_at DESC, t.name LIMIT ?6",
            )?;
            let rows = stmt.query_map(params![rid, pattern, has_after, after_at, after_name, limit(n)], tag_row)?;
            rows.map(|r| to_tag(r?)).collect::<Result<Vec<_>, _>>().map(Some)
        })
        .await
    }

    async fn tags_by_name(
        &self,
        repo: &RepositoryName,
        prefix: &str,
        after: Option<&str>,
        n: usize,
    ) -> Result<Option<Vec<TagEntry>>, MetadataError> {
        let (repo, pattern) = (repo.to_string(), prefix_pattern(prefix));
        let after = after.unwrap_or("").to_string();
        self.read(move |conn| {
            let Some(rid) = repo_id(conn, &repo)? else {
                return Ok(None);
            };
            let mut stmt = conn.prepare_cached(
                "SELECT t.name, m.digest, t.updated_at FROM tags t JOIN manifests m ON m.id = t.manifest_id
                 WHERE t.repo_id = ?1 AND t.name >= ?2 AND substr(t.name, 1, length(?2)) = ?2 AND t.name > ?3
                 ORDER BY t.name LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![rid, pattern, after, limit(n)], tag_row)?;
            rows.map(|r| to_tag(r?)).collect::<Result<Vec<_>, _>>().map(Some)
        })
        .await
    }
}

fn tag_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
}

fn to_tag((name, digest, updated_at): (String, String, i64)) -> Result<TagEntry, Fail> {
    Ok(TagEntry {
        name,
        digest: parse_digest(&digest)?,
        updated_at,
    })
}
