//! The shared insights behaviour suite against a real PostgreSQL: one throwaway server for
//! this test binary, one database shared by every case (each case looks only at its own
//! repositories, blobs and artifact types, as on a long-lived registry database).

#![allow(clippy::unwrap_used)]

use metadata_postgres::{PoolOptions, PostgresMetadataStore};
use test_support::postgres::Postgres;

async fn store() -> PostgresMetadataStore {
    let url = tokio::task::spawn_blocking(|| Postgres::shared().url.clone())
        .await
        .unwrap();
    // Small pools: many cases run at once against one server.
    PostgresMetadataStore::connect_with(&url, PoolOptions::default().with_max_connections(6))
        .await
        .unwrap()
}

storage_traits::insights_store_tests!(store().await);

/// Runs the whole suite concurrently through one store, so cases interleave on one pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_on_one_shared_store() {
    use storage_traits::testsuite::insights as suite;
    let store = store().await;
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
