//! Numbered schema migrations, embedded in the binary.
//!
//! `migrations/NNNN_name.sql` are applied in order when a store opens, all
//! pending ones inside one immediate transaction, each recorded in `schema_migrations`.
//! An applied migration is never edited; a change is a new file with the next number (the
//! PostgreSQL crate uses the same numbers and names for the same logical change).
//!
//! A database whose recorded version is newer than the newest migration this build knows
//! was written by a newer registry; opening it is refused with
//! [`MigrationError::SchemaTooNew`] rather than risking writes the newer schema forbids.

use rusqlite::{Connection, TransactionBehavior, params};
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

/// Why the schema could not be brought up to date. Reaches callers as the source of a
/// [`MetadataError::Backend`]; downcast to tell the cases apart.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationError {
    /// The database was migrated by a newer build: its schema version is past the newest
    /// migration this build has.
    #[error(
        "database schema version {found} is newer than the newest this build knows ({supported}); \
         run a registry at least as new as the one that last opened this database"
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
        source: rusqlite::Error,
    },
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction, or refuses a newer one.
pub(crate) fn migrate(conn: &mut Connection, now_ms: i64) -> Result<(), MetadataError> {
    let sql = |e: rusqlite::Error| MetadataError::backend(BACKEND, e);
    // Immediate: two processes opening the same new file must not both apply 0001.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version     INTEGER PRIMARY KEY,
             name        TEXT    NOT NULL,
             applied_at  INTEGER NOT NULL
         ) STRICT;",
    )
    .map_err(sql)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
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
        tx.execute_batch(m.sql).map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![m.version, m.name, now_ms],
        )
        .map_err(failed)?;
    }
    tx.commit().map_err(sql)
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
    fn migrating_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, 1).unwrap();
        migrate(&mut conn, 2).unwrap();
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, SCHEMA_VERSION);
    }

    #[test]
    fn newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, 1).unwrap();
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, 'future', 0)",
            [SCHEMA_VERSION + 1],
        )
        .unwrap();
        let err = migrate(&mut conn, 2).unwrap_err();
        let MetadataError::Backend { source, .. } = err else {
            panic!("expected a backend error, got {err:?}");
        };
        assert!(matches!(
            source.downcast_ref::<MigrationError>(),
            Some(MigrationError::SchemaTooNew { found, supported })
                if *found == SCHEMA_VERSION + 1 && *supported == SCHEMA_VERSION
        ));
    }
}
