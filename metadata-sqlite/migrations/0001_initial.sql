-- 0001_initial: repositories, blob links, manifests with their references, tags,
-- upload sessions. Applied migrations are never edited; a change is a new file.
-- Text columns use SQLite's default BINARY collation, so ORDER BY and range scans
-- compare bytes, which is the order `_catalog` and `tags/list` promise.

CREATE TABLE repositories (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
) STRICT;

-- Blobs known to the registry, whether or not any repository links them (GC looks
-- for rows here that nothing references).
CREATE TABLE blobs (
    digest      TEXT    PRIMARY KEY,
    size        INTEGER NOT NULL CHECK (size >= 0)
) STRICT, WITHOUT ROWID;

-- Which blobs each repository may serve.
CREATE TABLE repository_blobs (
    repo_id     INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest      TEXT    NOT NULL REFERENCES blobs (digest),
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) STRICT, WITHOUT ROWID;
-- "Which repositories link this blob?" (GC, insight queries).
CREATE INDEX repository_blobs_by_digest ON repository_blobs (digest);

CREATE TABLE manifests (
    id             INTEGER PRIMARY KEY,
    repo_id        INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest         TEXT    NOT NULL,
    media_type     TEXT    NOT NULL,
    content        BLOB    NOT NULL,
    size           INTEGER NOT NULL CHECK (size >= 0),
    artifact_type  TEXT,
    subject        TEXT,
    -- A JSON object of string to string, written and read only by Rust code.
    annotations    TEXT    NOT NULL DEFAULT '{}',
    created_at     INTEGER NOT NULL,
    UNIQUE (repo_id, digest)
) STRICT;
-- The referrers API: manifests of a repository with a given subject, by digest.
CREATE INDEX manifests_by_subject ON manifests (repo_id, subject, digest)
    WHERE subject IS NOT NULL;

-- Blobs a manifest references (config, layers), as parsed by the registry.
CREATE TABLE manifest_blob_refs (
    manifest_id  INTEGER NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
    digest       TEXT    NOT NULL,
    PRIMARY KEY (manifest_id, digest)
) STRICT, WITHOUT ROWID;
CREATE INDEX manifest_blob_refs_by_digest ON manifest_blob_refs (digest);

-- Child manifests an index references.
CREATE TABLE manifest_manifest_refs (
    manifest_id   INTEGER NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
    child_digest  TEXT    NOT NULL,
    PRIMARY KEY (manifest_id, child_digest)
) STRICT, WITHOUT ROWID;
CREATE INDEX manifest_manifest_refs_by_child ON manifest_manifest_refs (child_digest);

-- The primary key is also the index `tags/list` scans.
CREATE TABLE tags (
    repo_id      INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    manifest_id  INTEGER NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (repo_id, name)
) STRICT, WITHOUT ROWID;
CREATE INDEX tags_by_manifest ON tags (manifest_id);

CREATE TABLE upload_sessions (
    id           TEXT    PRIMARY KEY,
    repository   TEXT    NOT NULL REFERENCES repositories (name) ON DELETE CASCADE,
    byte_offset  INTEGER NOT NULL CHECK (byte_offset >= 0),
    hash_state   BLOB,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX upload_sessions_by_updated_at ON upload_sessions (updated_at);
CREATE INDEX upload_sessions_by_repository ON upload_sessions (repository);
