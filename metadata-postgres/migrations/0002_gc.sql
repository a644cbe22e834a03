-- 0002_gc: online garbage collection's review queue, tombstones and collector lease. The
-- same logical tables as metadata-sqlite's 0002_gc.sql, in PostgreSQL's dialect.
--
-- A review says "this may have lost its last reference since `since`". The collector
-- applies due reviews, re-checking references in the transaction that deletes (under the
-- row locks the crate docs describe); anything (re-)referenced, or younger than the grace
-- period counted from `since`, is kept.
CREATE TABLE gc_reviews (
    kind        TEXT NOT NULL CHECK (kind IN ('link', 'blob', 'manifest')),
    -- The repository of a 'link' or 'manifest' review; '' for a 'blob' review.
    repository  TEXT COLLATE "C" NOT NULL,
    digest      TEXT COLLATE "C" NOT NULL,
    since       BIGINT NOT NULL,
    due_at      BIGINT NOT NULL,
    PRIMARY KEY (kind, repository, digest)
);
CREATE INDEX gc_reviews_by_due ON gc_reviews (due_at);

-- Blobs whose rows the collector deleted and whose bytes may still be in the blob store.
-- While a tombstone exists the digest cannot be linked again (the registry waits).
CREATE TABLE gc_tombstones (
    digest      TEXT COLLATE "C" PRIMARY KEY,
    size        BIGINT NOT NULL,
    deleted_at  BIGINT NOT NULL
);

-- At most one row: who may run a collection pass, until when.
CREATE TABLE gc_lease (
    id          SMALLINT PRIMARY KEY CHECK (id = 1),
    holder      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);

-- "Is a manifest with this digest stored in any repository?" (the blob decision; the
-- unique (repo_id, digest) index cannot answer it without the repository).
CREATE INDEX manifests_by_digest ON manifests (digest);

-- Manifest bytes are blobs too (the registry keeps them in the blob store), so every
-- manifest digest gets a `blobs` row and the collector can reclaim their bytes.
INSERT INTO blobs (digest, size) SELECT digest, MAX(size) FROM manifests GROUP BY digest
    ON CONFLICT (digest) DO NOTHING;
