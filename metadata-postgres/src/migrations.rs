//! Numbered schema migrations, embedded in the binary.
//!
//! `migrations/NNNN_name.sql` are applied in order when a store connects, all pending
//! ones inside one transaction, each recorded in `schema_migrations`. The numbers and
//! names are those of `metadata-sqlite` for the same logical change. An applied migration
//! is never edited; a change is a new file with the next number.
//!
//! The transaction first takes a transaction-scoped advisory lock
//! (`pg_advisory_xact_lock`) on [`MIGRATION_LOCK_KEY`], so when several replicas start
//! at once against a fresh database one migrates and the others wait, then find nothing
//! left to do. The lock is released by the commit or rollback, also when a replica dies
//! half-way (its connection closes).
//!
//! A database whose recorded version is newer than the newest migration this build knows
//! was written by a newer registry; connecting is refused with
//! [`MigrationError::SchemaTooNew`] rather than risking writes the newer schema forbids.

use deadpool_postgres::Object;
use storage_traits::MetadataError;

use crate::store::BACKEND;

struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "gc",
        sql: include_str!("../migrations/0002_gc.sql"),
    },
    Migration {
        version: 3,
        name: "insights",
        sql: include_str!("../migrations/0003_insights.sql"),
    },
    Migration {
        version: 4,
        name: "pulls",
        sql: include_str!("../migrations/0004_pulls.sql"),
    },
    Migration {
        version: 5,
        name: "gc_due",
        sql: include_str!("../migrations/0005_gc_due.sql"),
    },
];

/// The newest schema version this build knows (the number of the last migration).
pub const SCHEMA_VERSION: i64 = 5;

/// The advisory lock key that serialises migrations within one database (the ASCII bytes
/// of `"ocimeta1"`; advisory locks are per database, so other databases are unaffected).
pub const MIGRATION_LOCK_KEY: i64 = i64::from_be_bytes(*b"ocimeta1");

/// Why the schema could not be brought up to date. Reaches callers as the source of a
/// [`MetadataError::Backend`]; downcast to tell the cases apart.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationError {
    /// The database was migrated by a newer build: its schema version is past the newest
    /// migration this build has.
    #[error(
        "database schema version {found} is newer than the newest this build knows ({supported}); \
         run a registry at least as new as the one that last migrated this database"
    )]
    SchemaTooNew {
        /// The database's schema version.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },
    /// A migration's SQL failed; its transaction was rolled back.
    #[error("migration {version} ({name}) failed: {source}")]
    Failed {
        /// The migration's number.
        version: i64,
        /// The migration's name (its file name without the number).
        name: &'static str,
        /// The database's error.
        #[source]
        source: tokio_postgres::Error,
    },
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction under the migration lock,
/// or refuses a newer one.
pub(crate) async fn migrate(client: &mut Object, now_ms: i64) -> Result<(), MetadataError> {
    let sql = |e: tokio_postgres::Error| MetadataError::backend(BACKEND, e);
    let tx = client.transaction().await.map_err(sql)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(sql)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version     BIGINT PRIMARY KEY,
             name        TEXT   NOT NULL,
             applied_at  BIGINT NOT NULL
         )",
    )
    .await
    .map_err(sql)?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
            &[],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(sql)?;
    if current > SCHEMA_VERSION {
        return Err(MetadataError::backend(
            BACKEND,
            MigrationError::SchemaTooNew {
                found: current,
                supported: SCHEMA_VERSION,
            },
        ));
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let failed = |source| {
            MetadataError::backend(
                BACKEND,
                MigrationError::Failed {
                    version: m.version,
                    name: m.name,
                    source,
                },
            )
        };
        tx.batch_execute(m.sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &now_ms],
        )
        .await
        .map_err(failed)?;
    }
    tx.commit().await.map_err(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_and_end_at_schema_version() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "migration {} out of order", m.name);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
    }

    #[test]
    fn every_name_column_sorts_bytewise() {
        // The catalog and tag order depend on it; a new migration must keep it.
        for m in MIGRATIONS {
            for line in m.sql.lines().map(str::trim) {
                let is_key_text = ["name ", "digest ", "subject ", "child_digest "]
                    .iter()
                    .any(|c| line.starts_with(c))
                    && line.contains("TEXT");
                assert!(
                    !is_key_text || line.contains("COLLATE \"C\""),
                    "migration {}: {line:?} lacks COLLATE \"C\"",
                    m.name
                );
            }
        }
    }
}
