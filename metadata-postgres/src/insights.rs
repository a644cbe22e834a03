//! [`InsightsMetadata`] on PostgreSQL: the same answers as the SQLite store's. Each query
//! is one statement, so it reads one snapshot without an explicit transaction.
//!
//! Prefix filters are `starts_with(name, $prefix)`: byte-exact on the `COLLATE "C"` name
//! columns (no `LIKE` wildcards), plus `name >= $prefix`, which every match satisfies and
//! which lets the planner range-scan the name index. Attributed bytes are each blob's size
//! divided by its number of linking repositories in integer arithmetic, as SQLite does.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use oci_spec_types::{Digest, RepositoryName};
use storage_traits::MetadataError;
use storage_traits::insights::{
    ArtifactTypeCount, BlobReuse, BlobUsage, BlobUser, InsightsMetadata, NameFilter,
    RepositoryEntry, RepositoryOrder, RepositoryStats, Summary, TagEntry,
};
use tokio_postgres::Row;

use crate::store::{Fail, PostgresMetadataStore, from_sql_int, parse_digest, parse_repo};

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn u(what: &str, n: i64) -> Result<u64, Fail> {
    from_sql_int(what, n)
}

/// Last push of repository `r`: its newest manifest or tag move (`GREATEST` ignores a
/// `NULL` side, and is `NULL` only when both are).
macro_rules! last_push {
    () => {
        "GREATEST(
            (SELECT MAX(m.created_at) FROM manifests m WHERE m.repo_id = r.id),
            (SELECT MAX(t.updated_at) FROM tags t WHERE t.repo_id = r.id))"
    };
}

/// The `WHERE` condition on `r.name` for a filter, with `$1` bound to the returned string.
/// Both are byte-exact (no `LIKE` wildcards); a prefix can use the name index.
fn name_condition(filter: NameFilter<'_>) -> (&'static str, &str) {
    match filter {
        NameFilter::Prefix(p) => ("r.name >= $1 AND starts_with(r.name, $1)", p),
        NameFilter::Contains(s) => ("strpos(r.name, $1) > 0", s),
    }
}

/// Per-repository aggregate, followed by `$tail` (a `WHERE`, `ORDER BY` or `LIMIT`).
macro_rules! repo_stats {
    ($tail:literal) => {
        concat!(
            "WITH link_counts AS (
                 SELECT digest, COUNT(*) AS n FROM repository_blobs GROUP BY digest
             ),
             sizes AS (
                 SELECT rb.repo_id,
                        SUM(CASE WHEN lc.n = 1 THEN b.size ELSE 0 END)::BIGINT AS unique_bytes,
                        SUM(CASE WHEN lc.n > 1 THEN b.size ELSE 0 END)::BIGINT AS shared_bytes,
                        SUM(b.size / lc.n)::BIGINT AS attributed_bytes,
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
                    ",
            last_push!(),
            " AS last_push
             FROM repositories r
             LEFT JOIN sizes s ON s.repo_id = r.id
             ",
            $tail
        )
    };
}

const STATS_BY_SIZE: &str = repo_stats!("ORDER BY 4 DESC, 1 LIMIT $1");
const STATS_BY_TAGS: &str = repo_stats!("ORDER BY 7 DESC, 1 LIMIT $1");
const STATS_BY_LAST_PUSH: &str = repo_stats!("ORDER BY last_push DESC NULLS LAST, 1 LIMIT $1");
const STATS_BY_NAME: &str = repo_stats!("ORDER BY 1 LIMIT $1");
/// Every repository's row, for a filter and an order of the caller's.
const STATS: &str = repo_stats!("");

fn to_stats(row: &Row) -> Result<RepositoryStats, Fail> {
    let count = |i: usize, what: &str| -> Result<u64, Fail> { u(what, row.try_get(i)?) };
    Ok(RepositoryStats {
        name: row.try_get(0)?,
        unique_bytes: count(1, "bytes")?,
        shared_bytes: count(2, "bytes")?,
        attributed_bytes: count(3, "bytes")?,
        blobs: count(4, "count")?,
        manifests: count(5, "count")?,
        tags: count(6, "count")?,
        last_push: row.try_get(7)?,
    })
}

fn to_repo_entry(row: &Row) -> Result<RepositoryEntry, Fail> {
    Ok(RepositoryEntry {
        name: parse_repo(&row.try_get::<_, String>(0)?)?,
        last_push: row.try_get(1)?,
    })
}

/// Rows of a `LEFT JOIN LATERAL` tag listing: none if the repository does not exist, one
/// row of `NULL`s if it has no (matching) tags.
fn to_tags(rows: &[Row]) -> Result<Option<Vec<TagEntry>>, Fail> {
    if rows.is_empty() {
        return Ok(None);
    }
    let mut tags = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(name) = row.try_get::<_, Option<String>>(0)? else {
            continue;
        };
        let digest: String = row.try_get(1)?;
        tags.push(TagEntry {
            name,
            digest: parse_digest(&digest)?,
            updated_at: row.try_get(2)?,
        });
    }
    Ok(Some(tags))
}

#[async_trait]
impl InsightsMetadata for PostgresMetadataStore {
    async fn summary(&self) -> Result<Summary, MetadataError> {
        self.retry(move || async move {
            let c = self.client().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT (SELECT COUNT(*) FROM repositories),
                            (SELECT COUNT(*) FROM manifests),
                            (SELECT COUNT(*) FROM tags),
                            (SELECT COUNT(*) FROM blobs),
                            (SELECT COALESCE(SUM(size), 0)::BIGINT FROM blobs)",
                )
                .await?;
            let row = c.query_one(&stmt, &[]).await?;
            let count = |i: usize, what: &str| -> Result<u64, Fail> { u(what, row.try_get(i)?) };
            Ok(Summary {
                repositories: count(0, "count")?,
                manifests: count(1, "count")?,
                tags: count(2, "count")?,
                blobs: count(3, "count")?,
                blob_bytes: count(4, "bytes")?,
            })
        })
        .await
    }

    async fn repository_stats(
        &self,
        order: RepositoryOrder,
        n: usize,
    ) -> Result<Vec<RepositoryStats>, MetadataError> {
        let sql = match order {
            RepositoryOrder::Size => STATS_BY_SIZE,
            RepositoryOrder::Tags => STATS_BY_TAGS,
            RepositoryOrder::LastPush => STATS_BY_LAST_PUSH,
            _ => STATS_BY_NAME,
        };
        let n = limit(n);
        self.retry(move || async move {
            let c = self.client().await?;
            let stmt = c.prepare_cached(sql).await?;
            c.query(&stmt, &[&n]).await?.iter().map(to_stats).collect()
        })
        .await
    }

    async fn most_reused_blobs(&self, n: usize) -> Result<Vec<BlobReuse>, MetadataError> {
        let n = limit(n);
        self.retry(move || async move {
            let c = self.client().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT r.digest, COALESCE(MAX(b.size), 0)::BIGINT,
                            COUNT(DISTINCT m.repo_id), COUNT(*)
                     FROM manifest_blob_refs r
                     JOIN manifests m ON m.id = r.manifest_id
                     LEFT JOIN blobs b ON b.digest = r.digest
                     GROUP BY r.digest
                     ORDER BY 4 DESC, 2 DESC, 1
                     LIMIT $1",
                )
                .await?;
            c.query(&stmt, &[&n])
                .await?
                .iter()
                .map(|row| {
                    Ok(BlobReuse {
                        digest: parse_digest(&row.try_get::<_, String>(0)?)?,
                        size: u("size", row.try_get(1)?)?,
                        repositories: u("count", row.try_get(2)?)?,
                        manifests: u("count", row.try_get(3)?)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn blob_usage(&self, digest: &Digest) -> Result<BlobUsage, MetadataError> {
        let digest = digest.as_str();
        self.retry(move || async move {
            let c = self.client().await?;
            // One row: the size, the linking repositories, and the referencing manifests
            // as parallel arrays in one order (repository, manifest digest: unique), each
            // manifest's tags joined by newlines (which a tag cannot contain).
            let stmt = c
                .prepare_cached(
                    "WITH refs AS (
                         SELECT rp.name AS repo, m.digest AS manifest,
                                (SELECT string_agg(t.name, E'\\n' ORDER BY t.name)
                                 FROM tags t WHERE t.manifest_id = m.id) AS tags
                         FROM manifest_blob_refs r
                         JOIN manifests m ON m.id = r.manifest_id
                         JOIN repositories rp ON rp.id = m.repo_id
                         WHERE r.digest = $1
                     )
                     SELECT (SELECT size FROM blobs WHERE digest = $1),
                            ARRAY(SELECT rp.name FROM repository_blobs rb
                                  JOIN repositories rp ON rp.id = rb.repo_id
                                  WHERE rb.digest = $1 ORDER BY rp.name),
                            ARRAY(SELECT repo FROM refs ORDER BY repo, manifest),
                            ARRAY(SELECT manifest FROM refs ORDER BY repo, manifest),
                            ARRAY(SELECT tags FROM refs ORDER BY repo, manifest)",
                )
                .await?;
            let row = c.query_one(&stmt, &[&digest]).await?;
            let size: Option<i64> = row.try_get(0)?;
            let linked_by: Vec<String> = row.try_get(1)?;
            let repos: Vec<String> = row.try_get(2)?;
            let manifests: Vec<String> = row.try_get(3)?;
            let tags: Vec<Option<String>> = row.try_get(4)?;
            if repos.len() != manifests.len() || repos.len() != tags.len() {
                return Err(crate::store::corrupt(
                    "blob usage arrays of different lengths",
                ));
            }
            let referenced_by = repos
                .into_iter()
                .zip(manifests)
                .zip(tags)
                .map(|((repository, manifest), tags)| {
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
        self.retry(move || async move {
            let c = self.client().await?;
            // `artifact_type` is not a "C" column: order it byte-wise (NULL first) here,
            // as SQLite does.
            let stmt = c
                .prepare_cached(
                    "SELECT artifact_type, COUNT(*), COALESCE(SUM(size), 0)::BIGINT
                     FROM manifests
                     GROUP BY artifact_type
                     ORDER BY 2 DESC, artifact_type COLLATE \"C\" NULLS FIRST",
                )
                .await?;
            c.query(&stmt, &[])
                .await?
                .iter()
                .map(|row| {
                    Ok(ArtifactTypeCount {
                        artifact_type: row.try_get(0)?,
                        manifests: u("count", row.try_get(1)?)?,
                        bytes: u("bytes", row.try_get(2)?)?,
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
        // Pushed repositories by last push descending, then never-pushed ones; ties by
        // name. `after` resumes strictly after the given (last_push, name).
        let (has_after, after_push, after_name) = match after {
            Some((p, name)) => (true, p, name),
            None => (false, None, String::new()),
        };
        let (after_push, after_name, n) = (&after_push, after_name.as_str(), limit(n));
        let (condition, needle) = name_condition(filter);
        let sql = format!(
            "SELECT name, lp FROM (
                 SELECT r.name AS name, {} AS lp
                 FROM repositories r
                 WHERE {condition}
             ) x
             WHERE NOT $2::BOOLEAN
                OR ($3::BIGINT IS NOT NULL AND lp IS NOT NULL
                    AND (lp < $3 OR (lp = $3 AND name > $4)))
                OR ($3::BIGINT IS NOT NULL AND lp IS NULL)
                OR ($3::BIGINT IS NULL AND lp IS NULL AND name > $4)
             ORDER BY lp DESC NULLS LAST, name
             LIMIT $5",
            last_push!()
        );
        let sql = sql.as_str();
        self.retry(move || async move {
            let c = self.client().await?;
            let stmt = c.prepare_cached(sql).await?;
            c.query(&stmt, &[&needle, &has_after, after_push, &after_name, &n])
                .await?
                .iter()
                .map(to_repo_entry)
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
        let (condition, needle) = name_condition(filter);
        // Sizes above i64::MAX cannot be stored; saturating keeps the cursor's meaning.
        let (has_after, after_bytes, after_name) = match after {
            Some((b, name)) => (true, i64::try_from(b).unwrap_or(i64::MAX), name),
            None => (false, 0, String::new()),
        };
        let (after_name, n) = (after_name.as_str(), limit(n));
        let sql = format!(
            "SELECT * FROM ({STATS} WHERE {condition}) x
             WHERE NOT $2::BOOLEAN OR x.attributed < $3 OR (x.attributed = $3 AND x.name > $4)
             ORDER BY x.attributed DESC, x.name
             LIMIT $5"
        );
        let sql = sql.as_str();
        self.retry(move || async move {
            let c = self.client().await?;
            let stmt = c.prepare_cached(sql).await?;
            c.query(&stmt, &[&needle, &has_after, &after_bytes, &after_name, &n])
                .await?
                .iter()
                .map(to_stats)
                .collect()
        })
        .await
    }

    async fn repositories_by_name(
        &self,
        filter: NameFilter<'_>,
        after: Option<&str>,
        n: usize,
    ) -> Result<Vec<RepositoryEntry>, MetadataError> {
        // Names are never empty, so "after the empty string" is "from the start".
        let (after, n) = (after.unwrap_or(""), limit(n));
        let (condition, needle) = name_condition(filter);
        let sql = format!(
            "SELECT r.name, {} FROM repositories r
             WHERE {condition} AND r.name > $2
             ORDER BY r.name
             LIMIT $3",
            last_push!()
        );
        let sql = sql.as_str();
        self.retry(move || async move {
            let c = self.client().await?;
            let stmt = c.prepare_cached(sql).await?;
            c.query(&stmt, &[&needle, &after, &n])
                .await?
                .iter()
                .map(to_repo_entry)
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
        let repo = repo.as_str();
        let (has_after, after_at, after_name) = match after {
            Some((at, name)) => (true, at, name),
            None => (false, 0, String::new()),
        };
        let (after_name, n) = (after_name.as_str(), limit(n));
        self.retry(move || async move {
            let c = self.client().await?;
            // One statement, so one snapshot: no row means no repository.
            let stmt = c
                .prepare_cached(
                    "SELECT t.name, t.digest, t.updated_at
                     FROM repositories r
                     LEFT JOIN LATERAL (
                         SELECT t.name, m.digest, t.updated_at
                         FROM tags t JOIN manifests m ON m.id = t.manifest_id
                         WHERE t.repo_id = r.id AND t.name >= $2 AND starts_with(t.name, $2)
                           AND (NOT $3::BOOLEAN OR t.updated_at < $4
                                OR (t.updated_at = $4 AND t.name > $5))
                         ORDER BY t.updated_at DESC, t.name
                         LIMIT $6
                     ) t ON TRUE
                     WHERE r.name = $1
                     ORDER BY t.updated_at DESC, t.name",
                )
                .await?;
            let rows = c
                .query(
                    &stmt,
                    &[&repo, &prefix, &has_after, &after_at, &after_name, &n],
                )
                .await?;
            to_tags(&rows)
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
        let repo = repo.as_str();
        // Tags are never empty, so "after the empty string" is "from the start".
        let (after, n) = (after.unwrap_or(""), limit(n));
        self.retry(move || async move {
            let c = self.client().await?;
            // One statement, so one snapshot: no row means no repository.
            let stmt = c
                .prepare_cached(
                    "SELECT t.name, t.digest, t.updated_at
                     FROM repositories r
                     LEFT JOIN LATERAL (
                         SELECT t.name, m.digest, t.updated_at
                         FROM tags t JOIN manifests m ON m.id = t.manifest_id
                         WHERE t.repo_id = r.id AND t.name >= $2 AND starts_with(t.name, $2)
                           AND t.name > $3
                         ORDER BY t.name
                         LIMIT $4
                     ) t ON TRUE
                     WHERE r.name = $1
                     ORDER BY t.name",
                )
                .await?;
            let rows = c.query(&stmt, &[&repo, &prefix, &after, &n]).await?;
            to_tags(&rows)
        })
        .await
    }
}
