-- 0004_pulls: pull analytics. Counts and last-pull times per repository and per
-- manifest, written in batches by the registry (never once per pull). The rows go with
-- their repository or manifest (ON DELETE CASCADE), so a manifest pushed again after a
-- delete starts from zero.

CREATE TABLE repository_pulls (
    repo_id    INTEGER PRIMARY KEY REFERENCES repositories (id) ON DELETE CASCADE,
    pulls      INTEGER NOT NULL CHECK (pulls >= 0),
    last_pull  INTEGER NOT NULL
) STRICT;

CREATE TABLE manifest_pulls (
    manifest_id  INTEGER PRIMARY KEY REFERENCES manifests (id) ON DELETE CASCADE,
    pulls        INTEGER NOT NULL CHECK (pulls >= 0),
    last_pull    INTEGER NOT NULL
) STRICT;
