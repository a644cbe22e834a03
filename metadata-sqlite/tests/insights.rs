//! The shared insights behaviour suite, against a database file in a temporary directory
//! and against an in-memory database.

#![allow(clippy::unwrap_used)]

use metadata_sqlite::SqliteMetadataStore;

fn file_store() -> (SqliteMetadataStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteMetadataStore::open(dir.path().join("metadata.db")).unwrap();
    (store, dir)
}

storage_traits::insights_store_tests!(file_store());

mod in_memory {
    storage_traits::insights_store_tests!(
        metadata_sqlite::SqliteMetadataStore::open_in_memory().unwrap()
    );
}

/// Every case at once against one shared file, as a long-lived registry database sees
/// it: cases look only at their own repositories, blobs and artifact types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_on_one_shared_database() {
    use storage_traits::testsuite::insights as suite;
    let (store, _dir) = file_store();
    let s: &dyn storage_traits::MetadataStore = &store;
    futures::join!(
        suite::summary_grows_by_what_was_added(s),
        suite::unique_shared_and_attributed_bytes(s),
        suite::tags_manifests_and_last_push_per_repository(s),
        suite::repository_stats_orders(s),
        suite::most_reused_blobs_count_manifests_and_repositories(s),
        suite::blob_usage_lists_links_and_referencing_manifests(s),
        suite::artifact_types_count_manifests_and_bytes(s),
        suite::repositories_by_name_filtered_and_paginated(s),
        suite::repositories_by_last_push_ordered_and_paginated(s),
        suite::repositories_by_size_ordered_and_paginated(s),
        suite::tags_by_name_filtered_and_paginated(s),
        suite::tags_by_last_push_ordered_and_paginated(s),
    );
}
