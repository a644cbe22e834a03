-- 0001_initial: repositories, blob links, manifests with their references, tags,
-- upload sessions. The same logical schema as metadata-sqlite's 0001_initial.sql, in
-- PostgreSQL's dialect. Applied migrations are never edited; a change is a new file.
--
-- Every name and digest column is COLLATE "C", so ORDER BY and range scans compare
-- bytes (the order `_catalog` and `tags/list` promise) whatever the cluster's locale.
-- Sizes, offsets and times are BIGINT; times are Unix milliseconds.

CREATE TABLE repositories (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

-- Blobs known to the registry, whether or not any repository links them (GC looks
-- for rows here that nothing references).
CREATE TABLE blobs (
    digest      TEXT COLLATE "C" PRIMARY KEY,
    size        BIGINT NOT NULL CHECK (size >= 0)
);

-- Which blobs each repository may serve.
CREATE TABLE repository_blobs (
    repo_id     BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest      TEXT COLLATE "C" NOT NULL REFERENCES blobs (digest),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (repo_id, digest)
);
-- "Which repositories link this blob?" (GC, insight queries).
CREATE INDEX repository_blobs_by_digest ON repository_blobs (digest);

CREATE TABLE manifests (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repo_id        BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest         TEXT COLLATE "C" NOT NULL,
    media_type     TEXT NOT NULL,
    content        BYTEA NOT NULL,
    size           BIGINT NOT NULL CHECK (size >= 0),
    artifact_type  TEXT,
    subject        TEXT COLLATE "C",
    -- A JSON object of string to string, written and read only by Rust code. TEXT
    -- rather than JSONB: JSONB rejects the escape \u0000, which a client may put in an
    -- annotation. Operators can still query it as `annotations::jsonb`.
    annotations    TEXT NOT NULL DEFAULT '{}',
    created_at     BIGINT NOT NULL,
    UNIQUE (repo_id, digest)
);
-- The referrers API: manifests of a repository with a given subject, by digest.
CREATE INDEX manifests_by_subject ON manifests (repo_id, subject, digest)
    WHERE subject IS NOT NULL;

-- Blobs a manifest references (config, layers), as parsed by the registry.
CREATE TABLE manifest_blob_refs (
    manifest_id  BIGINT NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
    digest       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (manifest_id, digest)
);
CREATE INDEX manifest_blob_refs_by_digest ON manifest_blob_refs (digest);

-- Child manifests an index references.
CREATE TABLE manifest_manifest_refs (
    manifest_id   BIGINT NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
    child_digest  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (manifest_id, child_digest)
);
CREATE INDEX manifest_manifest_refs_by_child ON manifest_manifest_refs (child_digest);

-- The primary key is also the index `tags/list` scans.
CREATE TABLE tags (
    repo_id      BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    name         TEXT COLLATE "C" NOT NULL,
    manifest_id  BIGINT NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (repo_id, name)
);
CREATE INDEX tags_by_manifest ON tags (manifest_id);

CREATE TABLE upload_sessions (
    id           TEXT COLLATE "C" PRIMARY KEY,
    repository   TEXT COLLATE "C" NOT NULL REFERENCES repositories (name) ON DELETE CASCADE,
    byte_offset  BIGINT NOT NULL CHECK (byte_offset >= 0),
    hash_state   BYTEA,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX upload_sessions_by_updated_at ON upload_sessions (updated_at);
CREATE INDEX upload_sessions_by_repository ON upload_sessions (repository);
