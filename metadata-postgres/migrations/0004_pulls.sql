-- 0004_pulls: pull analytics. The same logical change as metadata-sqlite's
-- 0004_pulls.sql, in PostgreSQL's dialect. Counts and last-pull times per repository and
-- per manifest, written in batches by the registry (never once per pull). The rows go
-- with their repository or manifest (ON DELETE CASCADE), so a manifest pushed again after
-- a delete starts from zero.

CREATE TABLE repository_pulls (
    repo_id    BIGINT PRIMARY KEY REFERENCES repositories (id) ON DELETE CASCADE,
    pulls      BIGINT NOT NULL CHECK (pulls >= 0),
    last_pull  BIGINT NOT NULL
);

CREATE TABLE manifest_pulls (
    manifest_id  BIGINT PRIMARY KEY REFERENCES manifests (id) ON DELETE CASCADE,
    pulls        BIGINT NOT NULL CHECK (pulls >= 0),
    last_pull    BIGINT NOT NULL
);
