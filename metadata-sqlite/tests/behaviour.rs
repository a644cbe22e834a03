//! The shared `MetadataStore` behaviour suite, against a database file in a temporary
//! directory and against an in-memory database, plus SQLite-specific checks.

use metadata_sqlite::{MigrationError, SCHEMA_VERSION, SqliteMetadataStore};
use storage_traits::MetadataError;

fn file_store() -> (SqliteMetadataStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("create temporary directory");
    let store = SqliteMetadataStore::open(dir.path().join("metadata.db")).expect("open store");
    (store, dir)
}

storage_traits::metadata_store_tests!(file_store());

/// The upload session records, a supertrait of the metadata store with its own suite.
mod upload_sessions {
    storage_traits::upload_session_store_tests!(super::file_store());
}

mod in_memory {
    storage_traits::metadata_store_tests!(
        metadata_sqlite::SqliteMetadataStore::open_in_memory().expect("open in-memory store")
    );

    mod upload_sessions {
        storage_traits::upload_session_store_tests!(
            metadata_sqlite::SqliteMetadataStore::open_in_memory().expect("open in-memory store")
        );
    }
}

/// Runs the whole suite concurrently against one shared file, as a long-lived registry
/// database sees it: cases must not see each other's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_on_one_shared_database() {
    use storage_traits::testsuite::metadata as suite;
    use storage_traits::testsuite::upload as uploads;
    let (store, _dir) = file_store();
    let s: &dyn storage_traits::MetadataStore = &store;
    futures::join!(
        suite::repositories_appear_on_first_link_manifest_or_upload(s),
        suite::repositories_listed_in_lexical_order_with_pagination(s),
        suite::blob_links(s),
        suite::put_manifest_with_missing_blobs_stores_nothing(s),
        suite::put_manifest_with_missing_child_manifests_stores_nothing(s),
        suite::get_manifest_by_tag_and_digest_returns_exact_bytes(s),
        suite::put_same_digest_again_moves_tag(s),
        suite::several_tags_are_stored_together(s),
        suite::tags_listed_in_lexical_order_with_pagination(s),
        suite::list_tags_of_unknown_repository_is_none(s),
        suite::delete_tag_keeps_manifest(s),
        suite::delete_manifest_removes_its_tags(s),
        suite::referrers_by_subject_and_artifact_type(s),
        suite::referrers_isolated_per_repository(s),
        uploads::upload_session_lifecycle(s),
        uploads::update_upload_is_compare_and_swap(s),
        uploads::stale_uploads_by_last_write(s),
        uploads::count_uploads_matches_the_sessions(s),
        suite::concurrent_put_manifest_same_tag(s),
        suite::concurrent_link_blob_same_digest(s),
    );
}

#[tokio::test]
async fn reopening_keeps_data_and_schema() {
    use oci_spec_types::{Digest, RepositoryName};
    use storage_traits::MetadataStore;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metadata.db");
    let repo: RepositoryName = "a/b".parse().expect("name");
    let digest = Digest::sha256_of(b"x");
    {
        let store = SqliteMetadataStore::open(&path).expect("open");
        store.link_blob(&repo, &digest, 1).await.expect("link_blob");
    }
    let store = SqliteMetadataStore::open(&path).expect("reopen");
    assert_eq!(
        store.blob_link(&repo, &digest).await.expect("blob_link"),
        Some(1)
    );

    let conn = rusqlite::Connection::open(&path).expect("raw open");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metadata.db");
    drop(SqliteMetadataStore::open(&path).expect("open"));

    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, 'from-the-future', 0)",
        [SCHEMA_VERSION + 1],
    )
    .expect("record a future migration");
    drop(conn);

    let err = SqliteMetadataStore::open(&path).expect_err("a newer schema must be refused");
    let message = err.to_string();
    let MetadataError::Backend { backend, source } = err else {
        panic!("expected a backend error, got {err:?}");
    };
    assert_eq!(backend, "sqlite");
    match source.downcast_ref::<MigrationError>() {
        Some(MigrationError::SchemaTooNew { found, supported }) => {
            assert_eq!(*found, SCHEMA_VERSION + 1);
            assert_eq!(*supported, SCHEMA_VERSION);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert!(message.contains("newer"), "unclear message: {message}");
}

#[tokio::test]
async fn corrupt_rows_are_errors_not_panics() {
    use oci_spec_types::{Digest, RepositoryName};
    use storage_traits::{MetadataStore, NewManifest, Page};

    let (store, dir) = file_store();
    let repo: RepositoryName = "a/b".parse().expect("name");
    let subject = Digest::sha256_of(b"subject");
    let m = NewManifest::new(
        repo.clone(),
        Digest::sha256_of(b"m"),
        "t".into(),
        "m".into(),
    )
    .with_subject(Some(subject.clone()))
    .with_tag(Some("v1".parse().expect("tag")));
    store.put_manifest(&m).await.expect("put_manifest");

    let conn = rusqlite::Connection::open(dir.path().join("metadata.db")).expect("raw open");
    conn.execute_batch(
        "UPDATE manifests SET annotations = 'not json';
         UPDATE tags SET name = 'bad/tag';",
    )
    .expect("corrupt rows");
    drop(conn);

    assert!(matches!(
        store.referrers(&repo, &subject, None).await,
        Err(MetadataError::Corrupt(_))
    ));
    assert!(matches!(
        store.list_tags(&repo, &Page::default()).await,
        Err(MetadataError::Corrupt(_))
    ));
}
