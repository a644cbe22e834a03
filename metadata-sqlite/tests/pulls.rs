//! The shared pull-analytics behaviour suite, against a database file in a temporary
//! directory and against an in-memory database.

#![allow(clippy::unwrap_used)]

use metadata_sqlite::SqliteMetadataStore;

fn file_store() -> (SqliteMetadataStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteMetadataStore::open(dir.path().join("metadata.db")).unwrap();
    (store, dir)
}

storage_traits::pull_store_tests!(file_store());

mod in_memory {
    storage_traits::pull_store_tests!(
        metadata_sqlite::SqliteMetadataStore::open_in_memory().unwrap()
    );
}

/// Every case at once against one shared file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_on_one_shared_database() {
    use storage_traits::testsuite::pulls as suite;
    let (store, _dir) = file_store();
    let s: &dyn storage_traits::MetadataStore = &store;
    futures::join!(
        suite::batches_add_counts_and_keep_the_latest_time(s),
        suite::pulls_of_unknown_repositories_and_manifests_are_dropped(s),
        suite::manifest_pulls_list_every_manifest_with_its_tags(s),
        suite::deleting_a_manifest_drops_its_figures_not_the_repository_s(s),
    );
}
