//! The shared quota behaviour suite, against a database file in a temporary
//! directory and against an in-memory database.

#![allow(clippy::unwrap_used)]

use metadata_sqlite::SqliteMetadataStore;

fn file_store() -> (SqliteMetadataStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteMetadataStore::open(dir.path().join("metadata.db")).unwrap();
    (store, dir)
}

storage_traits::quota_store_tests!(file_store());

mod in_memory {
    storage_traits::quota_store_tests!(
        metadata_sqlite::SqliteMetadataStore::open_in_memory().unwrap()
    );
}

/// Every case at once against one shared file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_on_one_shared_database() {
    use storage_traits::testsuite::quotas as suite;
    let (store, _dir) = file_store();
    let s: &dyn storage_traits::MetadataStore = &store;
    futures::join!(
        suite::a_link_past_the_limit_is_refused_and_stores_nothing(s),
        suite::a_namespace_quota_counts_its_repositories_together_and_a_shared_blob_once(s),
        suite::every_covering_quota_must_hold(s),
        suite::racing_links_for_the_last_bytes_pass_exactly_as_many_as_fit(s),
    );
}
