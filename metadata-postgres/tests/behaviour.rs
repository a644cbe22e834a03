//! The shared `MetadataStore` behaviour suite against a real PostgreSQL: one throwaway
//! server for this test binary, one database shared by every case (each case works under
//! its own random repository prefix, as a long-lived registry database would see it).

use metadata_postgres::{PoolOptions, PostgresMetadataStore};
use test_support::postgres::Postgres;

async fn store() -> PostgresMetadataStore {
    let url = tokio::task::spawn_blocking(|| Postgres::shared().url.clone())
        .await
        .expect("start PostgreSQL");
    // Small pools: many cases run at once against one server.
    PostgresMetadataStore::connect_with(&url, PoolOptions::default().with_max_connections(8))
        .await
        .expect("connect to PostgreSQL")
}

storage_traits::metadata_store_tests!(store().await);

/// The upload session records, a supertrait of the metadata store with its own suite.
mod upload_sessions {
    storage_traits::upload_session_store_tests!(super::store().await);
}

/// Runs the whole suite concurrently through one store, so cases interleave on one pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_on_one_shared_store() {
    use storage_traits::testsuite::metadata as suite;
    use storage_traits::testsuite::upload as uploads;
    let store = store().await;
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
