//! The shared pull-analytics behaviour suite against a real PostgreSQL: one throwaway
//! server for this test binary, one database shared by every case.

#![allow(clippy::unwrap_used)]

use metadata_postgres::{PoolOptions, PostgresMetadataStore};
use test_support::postgres::Postgres;

async fn store() -> PostgresMetadataStore {
    let url = tokio::task::spawn_blocking(|| Postgres::shared().url.clone())
        .await
        .unwrap();
    PostgresMetadataStore::connect_with(&url, PoolOptions::default().with_max_connections(6))
        .await
        .unwrap()
}

storage_traits::pull_store_tests!(store().await);

/// Every case concurrently through one store, so batches interleave on one pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_on_one_shared_store() {
    use storage_traits::testsuite::pulls as suite;
    let store = store().await;
    let s: &dyn storage_traits::MetadataStore = &store;
    futures::join!(
        suite::batches_add_counts_and_keep_the_latest_time(s),
        suite::pulls_of_unknown_repositories_and_manifests_are_dropped(s),
        suite::manifest_pulls_list_every_manifest_with_its_tags(s),
        suite::deleting_a_manifest_drops_its_figures_not_the_repository_s(s),
    );
}
