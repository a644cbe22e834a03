-- 0003_insights: indexes for the insight queries and the collector.
--
-- "Is a manifest with this digest stored in any repository?" (the collector's blob
-- decision; the unique (repo_id, digest) index cannot answer it without the repository).
CREATE INDEX manifests_by_digest ON manifests (digest);

-- A repository's last push is its newest manifest or tag move: both are then one index
-- probe, and a repository's tags by last move are a scan of the second index.
CREATE INDEX manifests_by_repo_created ON manifests (repo_id, created_at);
CREATE INDEX tags_by_repo_updated ON tags (repo_id, updated_at);
