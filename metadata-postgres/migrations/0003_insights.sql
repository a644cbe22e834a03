-- 0003_insights: indexes for the insight queries. The same logical change as
-- metadata-sqlite's 0003_insights.sql, in PostgreSQL's dialect.
--
-- "Is a manifest with this digest stored in any repository?" (the collector's blob
-- decision). 0002_gc already created it here; SQLite gets it in this migration.
CREATE INDEX IF NOT EXISTS manifests_by_digest ON manifests (digest);

-- A repository's last push is its newest manifest or tag move: both are then one index
-- probe, and a repository's tags by last move are a scan of the second index.
CREATE INDEX IF NOT EXISTS manifests_by_repo_created ON manifests (repo_id, created_at);
CREATE INDEX IF NOT EXISTS tags_by_repo_updated ON tags (repo_id, updated_at);
