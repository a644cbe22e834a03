//! The shared quota behaviour suite against a real PostgreSQL: one throwaway
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

storage_traits::quota_store_tests!(store().await);

/// Every case concurrently through one store, so batches interleave on one pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_on_one_shared_store() {
    use storage_traits::testsuite::quotas as suite;
    let store = store().await;
    let s: &dyn storage_traits::MetadataStore = &store;
    futures::join!(
        suite::a_link_past_the_limit_is_refused_and_stores_nothing(s),
        suite::a_namespace_quota_counts_its_repositories_together_and_a_shared_blob_once(s),
        suite::every_covering_quota_must_hold(s),
        suite::racing_links_for_the_last_bytes_pass_exactly_as_many_as_fit(s),
    );
}
