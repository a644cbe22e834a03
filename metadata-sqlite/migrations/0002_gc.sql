-- 0002_gc: online garbage collection's review queue and tombstones.
--
-- A review says "this may have lost its last reference since `since`". The collector
-- applies due reviews, re-checking references in the transaction that deletes; anything
-- (re-)referenced, or younger than the grace period counted from `since`, is kept.
CREATE TABLE gc_reviews (
    kind        TEXT    NOT NULL CHECK (kind IN ('link', 'blob', 'manifest')),
    -- The repository of a 'link' or 'manifest' review; '' for a 'blob' review.
    repository  TEXT    NOT NULL,
    digest      TEXT    NOT NULL,
    since       INTEGER NOT NULL,
    due_at      INTEGER NOT NULL,
    PRIMARY KEY (kind, repository, digest)
) STRICT, WITHOUT ROWID;
CREATE INDEX gc_reviews_by_due ON gc_reviews (due_at);

-- Blobs whose rows the collector deleted and whose bytes may still be in the blob store.
-- While a tombstone exists the digest cannot be linked again (the registry waits).
CREATE TABLE gc_tombstones (
    digest      TEXT    PRIMARY KEY,
    size        INTEGER NOT NULL,
    deleted_at  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- At most one row: who may run a collection pass, until when.
CREATE TABLE gc_lease (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    holder      TEXT    NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;

-- Manifest bytes are blobs too (the registry keeps them in the blob store), so every
-- manifest digest gets a `blobs` row and the collector can reclaim their bytes.
INSERT INTO blobs (digest, size) SELECT digest, MAX(size) FROM manifests GROUP BY digest
    ON CONFLICT (digest) DO NOTHING;
