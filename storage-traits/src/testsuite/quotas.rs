//! Behaviour cases for [`QuotaMetadata`], the quota-checked links of a [`MetadataStore`].
//!
//! Every case is a `pub async fn case(store: &dyn MetadataStore)` that reaches the checks
//! through [`MetadataStore::quotas`] (a store under this suite must have them) and checks
//! one part of the contract in [`crate::quotas`]. Cases work in repositories under their
//! own random prefix, with quotas covering only those, so they may run concurrently
//! against one shared database.
//!
//! ```ignore
//! storage_traits::quota_store_tests!(make_store().await);
//! ```

use std::sync::Arc;

use oci_spec_types::{Digest, RepositoryName};

use crate::MetadataStore;
use crate::quotas::{Quota, QuotaMetadata, QuotaUsage};

/// Expands to one `#[tokio::test]` per case of
/// [`testsuite::quotas`](crate::testsuite::quotas), each running the case against a fresh
/// store made by the given expression.
#[macro_export]
macro_rules! quota_store_tests {
    ($make:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::__quota_store_case!([$(#[$attr])*] ($make) a_link_past_the_limit_is_refused_and_stores_nothing);
        $crate::__quota_store_case!([$(#[$attr])*] ($make) a_namespace_quota_counts_its_repositories_together_and_a_shared_blob_once);
        $crate::__quota_store_case!([$(#[$attr])*] ($make) every_covering_quota_must_hold);
        $crate::__quota_store_case!([$(#[$attr])*] ($make) racing_links_for_the_last_bytes_pass_exactly_as_many_as_fit);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __quota_store_case {
    ([$($attr:tt)*] ($make:expr) $case:ident) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
        $($attr)*
        async fn $case() {
            let store = $make;
            $crate::testsuite::quotas::$case(
                $crate::testsuite::metadata::AsMetadataStore::as_metadata_store(&store),
            )
            .await;
        }
    };
}

fn quotas(store: &dyn MetadataStore) -> &dyn QuotaMetadata {
    store
        .quotas()
        .expect("the quotas suite needs a store whose quotas() is Some")
}

fn prefix() -> String {
    format!("qt{}", uuid::Uuid::new_v4().simple())
}

fn repo(prefix: &str, label: &str) -> RepositoryName {
    format!("{prefix}/{label}")
        .parse()
        .expect("test repository name is valid")
}

/// A quota over the repositories whose name starts with `starts` (the suite's stand-in
/// for the registry's patterns).
fn quota(starts: &str, limit: u64) -> Quota {
    let s = starts.to_string();
    Quota::new(
        format!("{starts}*"),
        limit,
        Arc::new(move |name: &str| name.starts_with(&s)),
    )
}

fn blob() -> Digest {
    Digest::sha256_of(uuid::Uuid::new_v4().as_bytes())
}

async fn link(
    store: &dyn MetadataStore,
    repo: &RepositoryName,
    digest: &Digest,
    size: u64,
    qs: &[Quota],
) -> Option<QuotaUsage> {
    quotas(store)
        .link_blob_within_quotas(repo, digest, size, qs)
        .await
        .unwrap_or_else(|e| panic!("link_blob_within_quotas {repo} {digest}: {e}"))
}

async fn usage(store: &dyn MetadataStore, qs: &[Quota]) -> Vec<u64> {
    quotas(store)
        .quota_usage(qs)
        .await
        .expect("quota_usage")
        .into_iter()
        .map(|u| u.used)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Cases

/// Links pass while the usage stays at or under the limit; the one that would pass it is
/// refused with the usage before it, and is not linked. Re-linking adds nothing.
pub async fn a_link_past_the_limit_is_refused_and_stores_nothing(store: &dyn MetadataStore) {
    let p = prefix();
    let r = repo(&p, "app");
    let qs = [quota(&p, 100)];
    let (a, b, c) = (blob(), blob(), blob());
    assert_eq!(link(store, &r, &a, 60, &qs).await, None);
    assert_eq!(
        link(store, &r, &b, 40, &qs).await,
        None,
        "exactly the limit passes"
    );
    assert_eq!(usage(store, &qs).await, vec![100]);
    assert_eq!(
        link(store, &r, &a, 60, &qs).await,
        None,
        "re-linking adds nothing"
    );
    let refused = link(store, &r, &c, 1, &qs).await;
    assert_eq!(
        refused,
        Some(QuotaUsage {
            pattern: format!("{p}*"),
            used: 100,
            limit: 100
        })
    );
    assert_eq!(store.blob_link(&r, &c).await.expect("blob_link"), None);
    assert_eq!(usage(store, &qs).await, vec![100]);
    // Repositories no quota covers are not limited.
    let other = repo(&prefix(), "free");
    assert_eq!(link(store, &other, &c, 1_000, &qs).await, None);
    assert_eq!(
        store.blob_link(&other, &c).await.expect("blob_link"),
        Some(1_000)
    );
}

/// A namespace quota adds up the blobs of all its repositories, each distinct blob once:
/// linking in one repository a blob another of them already links passes at the limit.
pub async fn a_namespace_quota_counts_its_repositories_together_and_a_shared_blob_once(
    store: &dyn MetadataStore,
) {
    let p = prefix();
    let (x, y) = (repo(&p, "x"), repo(&p, "y"));
    let qs = [quota(&format!("{p}/"), 100)];
    let (a, b) = (blob(), blob());
    assert_eq!(link(store, &x, &a, 70, &qs).await, None);
    assert_eq!(
        link(store, &y, &a, 70, &qs).await,
        None,
        "a shared blob counts once"
    );
    assert_eq!(usage(store, &qs).await, vec![70]);
    let refused = link(store, &y, &b, 31, &qs).await.expect("over the limit");
    assert_eq!((refused.used, refused.limit), (70, 100));
    assert_eq!(store.blob_link(&y, &b).await.expect("blob_link"), None);
    assert_eq!(link(store, &y, &b, 30, &qs).await, None);
    assert_eq!(usage(store, &qs).await, vec![100]);
}

/// A repository under several quotas is linked only if every one of them holds; the
/// refusal names the one that did not.
pub async fn every_covering_quota_must_hold(store: &dyn MetadataStore) {
    let p = prefix();
    let (team, app) = (repo(&p, "t/other"), repo(&p, "t/app"));
    let wide = quota(&format!("{p}/"), 1_000);
    let narrow = quota(&format!("{p}/t/app"), 50);
    let qs = [wide.clone(), narrow.clone()];
    assert_eq!(link(store, &team, &blob(), 900, &qs).await, None);
    let refused = link(store, &app, &blob(), 60, &qs).await.expect("narrow");
    assert_eq!(refused.pattern, narrow.pattern);
    let refused = link(store, &app, &blob(), 101, &qs).await.expect("wide");
    assert_eq!((refused.pattern, refused.used), (wide.pattern, 900));
    assert_eq!(link(store, &app, &blob(), 50, &qs).await, None);
    assert_eq!(usage(store, &qs).await, vec![950, 50]);
}

/// Of many concurrent links of distinct blobs competing for the last bytes, exactly as
/// many pass as fit, and the usage ends at that.
pub async fn racing_links_for_the_last_bytes_pass_exactly_as_many_as_fit(
    store: &dyn MetadataStore,
) {
    let p = prefix();
    let qs = [quota(&format!("{p}/"), 1_000)];
    let (first, second) = (repo(&p, "one"), repo(&p, "two"));
    assert_eq!(link(store, &first, &blob(), 700, &qs).await, None);
    // 300 bytes left: 3 of 16 links of 100 bytes fit.
    let racers = (0..16).map(|i| {
        let r = if i % 2 == 0 { &first } else { &second };
        let qs = &qs;
        async move { link(store, r, &blob(), 100, qs).await.is_none() }
    });
    let passed = futures::future::join_all(racers)
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count();
    assert_eq!(passed, 3);
    assert_eq!(usage(store, &qs).await, vec![1_000]);
}
