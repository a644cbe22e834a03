//! The shared garbage-collection behaviour suite, against a database file in a temporary
//! directory and against an in-memory database.

#![allow(clippy::unwrap_used)]

use metadata_sqlite::SqliteMetadataStore;

fn file_store() -> (SqliteMetadataStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteMetadataStore::open(dir.path().join("metadata.db")).unwrap();
    (store, dir)
}

storage_traits::gc_store_tests!(file_store());

mod in_memory {
    storage_traits::gc_store_tests!(
        metadata_sqlite::SqliteMetadataStore::open_in_memory().unwrap()
    );
}

/// Every case at once against one shared file, as a long-lived registry
/// database sees it: cases only touch their own repositories, digests and reviews.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_on_one_shared_database() {
    use storage_traits::testsuite::gc as suite;
    let (store, _dir) = file_store();
    let s: &dyn storage_traits::MetadataStore = &store;
    futures::join!(
        suite::unused_upload_link_deleted_after_grace_then_blob_tombstoned(s),
        suite::unused_upload_link_postponed_within_grace(s),
        suite::link_referenced_by_manifest_is_kept(s),
        suite::deleted_manifest_frees_what_only_it_used(s),
        suite::relinking_before_the_decision_keeps_link_and_blob(s),
        suite::tombstone_refuses_link_and_put_manifest_until_cleared(s),
        suite::dry_run_reports_the_same_and_changes_nothing(s),
        suite::untagged_manifests_kept_without_policy(s),
        suite::untagged_manifest_policy_deletes_only_unreferenced(s),
        suite::collector_lease(s),
        suite::queue_length_counts_every_review(s),
    );
}
