//! Behaviour cases for [`PullMetadata`], the pull analytics of a [`MetadataStore`].
//!
//! Every case is a `pub async fn case(store: &dyn MetadataStore)` that reaches the figures
//! through [`MetadataStore::pulls`] (a store under this suite must have them) and checks
//! one part of the contract in [`crate::pulls`]. Cases work in repositories under their
//! own random prefix, so they may run concurrently against one shared database. Pull
//! times are given by the case, never read from a clock.
//!
//! [`pull_store_tests!`](crate::pull_store_tests) works exactly like
//! [`metadata_store_tests!`](crate::metadata_store_tests):
//!
//! ```ignore
//! storage_traits::pull_store_tests!(make_store().await);
//! ```

use bytes::Bytes;
use oci_spec_types::{Digest, RepositoryName, Tag};

use crate::pulls::{ManifestPulls, PullCount, PullMetadata, Pulls};
use crate::{MetadataStore, NewManifest};

/// Expands to one `#[tokio::test]` per case of
/// [`testsuite::pulls`](crate::testsuite::pulls), each running the case against a fresh
/// store made by the given expression.
#[macro_export]
macro_rules! pull_store_tests {
    ($make:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::__pull_store_case!([$(#[$attr])*] ($make) batches_add_counts_and_keep_the_latest_time);
        $crate::__pull_store_case!([$(#[$attr])*] ($make) pulls_of_unknown_repositories_and_manifests_are_dropped);
        $crate::__pull_store_case!([$(#[$attr])*] ($make) manifest_pulls_list_every_manifest_with_its_tags);
        $crate::__pull_store_case!([$(#[$attr])*] ($make) deleting_a_manifest_drops_its_figures_not_the_repository_s);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __pull_store_case {
    ([$($attr:tt)*] ($make:expr) $case:ident) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $($attr)*
        async fn $case() {
            let store = $make;
            $crate::testsuite::pulls::$case(
                $crate::testsuite::metadata::AsMetadataStore::as_metadata_store(&store),
            )
            .await;
        }
    };
}

const IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn pulls(store: &dyn MetadataStore) -> &dyn PullMetadata {
    store
        .pulls()
        .expect("the pulls suite needs a store whose pulls() is Some")
}

fn repo(label: &str) -> RepositoryName {
    format!("pl{}/{label}", uuid::Uuid::new_v4().simple())
        .parse()
        .expect("test repository name is valid")
}

fn tag(s: &str) -> Tag {
    s.parse().expect("test tag is valid")
}

fn manifest(repo: &RepositoryName, tags: &[&str]) -> NewManifest {
    let content = Bytes::from(format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{IMAGE_MANIFEST}\",\"x-nonce\":\"{}\"}}",
        uuid::Uuid::new_v4()
    ));
    NewManifest::new(
        repo.clone(),
        Digest::sha256_of(&content),
        IMAGE_MANIFEST.to_string(),
        content,
    )
    .with_tags(tags.iter().map(|t| tag(t)))
}

async fn put(store: &dyn MetadataStore, m: &NewManifest) {
    store
        .put_manifest(m)
        .await
        .unwrap_or_else(|e| panic!("put_manifest {} failed: {e}", m.digest));
}

fn count(m: &NewManifest, n: u64, at: i64) -> PullCount {
    PullCount::new(m.repository.clone(), m.digest.clone(), n, at)
}

async fn record(store: &dyn MetadataStore, batch: &[PullCount]) {
    pulls(store)
        .record_pulls(batch)
        .await
        .unwrap_or_else(|e| panic!("record_pulls failed: {e}"));
}

async fn repo_pulls(store: &dyn MetadataStore, repos: &[&RepositoryName]) -> Vec<Pulls> {
    let repos: Vec<RepositoryName> = repos.iter().map(|r| (*r).clone()).collect();
    pulls(store)
        .repository_pulls(&repos)
        .await
        .expect("repository_pulls")
}

async fn of_manifests(store: &dyn MetadataStore, repo: &RepositoryName) -> Vec<ManifestPulls> {
    pulls(store)
        .manifest_pulls(repo)
        .await
        .expect("manifest_pulls")
        .unwrap_or_else(|| panic!("{repo} exists"))
}

fn figures(list: &[ManifestPulls], d: &Digest) -> (u64, Option<i64>) {
    list.iter()
        .find(|m| &m.digest == d)
        .map(|m| (m.pulls, m.last_pull))
        .unwrap_or_else(|| panic!("{d} missing from {list:?}"))
}

// ---------------------------------------------------------------------------------------
// Cases

/// Counts add up across batches and within one; the last pull is the latest time given,
/// even when a later batch carries an earlier time (another replica's, say).
pub async fn batches_add_counts_and_keep_the_latest_time(store: &dyn MetadataStore) {
    let (a, b) = (repo("a"), repo("b"));
    let (m1, m2, m3) = (manifest(&a, &["v1"]), manifest(&a, &[]), manifest(&b, &[]));
    for m in [&m1, &m2, &m3] {
        put(store, m).await;
    }
    record(
        store,
        &[
            count(&m1, 3, 1_000),
            count(&m2, 1, 1_500),
            count(&m1, 2, 2_000),
        ],
    )
    .await;
    record(store, &[count(&m1, 1, 500), count(&m3, 7, 900)]).await;
    // An empty batch changes nothing.
    record(store, &[]).await;

    let got = of_manifests(store, &a).await;
    assert_eq!(figures(&got, &m1.digest), (6, Some(2_000)), "{got:?}");
    assert_eq!(figures(&got, &m2.digest), (1, Some(1_500)), "{got:?}");
    assert_eq!(
        repo_pulls(store, &[&a, &b]).await,
        vec![
            Pulls {
                pulls: 7,
                last_pull: Some(2_000)
            },
            Pulls {
                pulls: 7,
                last_pull: Some(900)
            },
        ]
    );
}

/// A batch naming a repository or a manifest that does not exist still records the rest,
/// and unknown repositories have zero pulls.
pub async fn pulls_of_unknown_repositories_and_manifests_are_dropped(store: &dyn MetadataStore) {
    let a = repo("a");
    let m = manifest(&a, &["latest"]);
    put(store, &m).await;
    let ghost_repo = manifest(&repo("ghost"), &[]);
    let ghost_manifest = manifest(&a, &[]);
    record(
        store,
        &[
            count(&ghost_repo, 5, 10),
            count(&ghost_manifest, 2, 20),
            count(&m, 1, 30),
        ],
    )
    .await;
    let got = of_manifests(store, &a).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(figures(&got, &m.digest), (1, Some(30)));
    // The repository counts every pull of it, the one of a manifest it does not hold too.
    let ghost = ghost_repo.repository.clone();
    assert_eq!(
        repo_pulls(store, &[&ghost, &a]).await,
        vec![
            Pulls::default(),
            Pulls {
                pulls: 3,
                last_pull: Some(30)
            }
        ]
    );
    assert!(
        pulls(store)
            .manifest_pulls(&ghost)
            .await
            .expect("manifest_pulls")
            .is_none()
    );
}

/// Every manifest of the repository is listed, by digest, with its size, push time and
/// tags (by name); a manifest never pulled has zero pulls and no last pull.
pub async fn manifest_pulls_list_every_manifest_with_its_tags(store: &dyn MetadataStore) {
    let a = repo("a");
    let (m1, m2) = (manifest(&a, &["v2", "latest", "v1"]), manifest(&a, &[]));
    put(store, &m1).await;
    put(store, &m2).await;
    record(store, &[count(&m1, 4, 77)]).await;
    let got = of_manifests(store, &a).await;
    let mut digests = vec![m1.digest.clone(), m2.digest.clone()];
    digests.sort();
    assert_eq!(
        got.iter().map(|m| m.digest.clone()).collect::<Vec<_>>(),
        digests
    );
    for entry in &got {
        let (want, tags, pulled): (&NewManifest, &[&str], _) = if entry.digest == m1.digest {
            (&m1, &["latest", "v1", "v2"], (4, Some(77)))
        } else {
            (&m2, &[], (0, None))
        };
        assert_eq!(entry.size, want.content.len() as u64, "{entry:?}");
        assert_eq!(entry.tags, tags, "{entry:?}");
        assert_eq!((entry.pulls, entry.last_pull), pulled, "{entry:?}");
        assert!(entry.created_at > 0, "{entry:?}");
    }
}

/// A deleted manifest's figures go with it (pushed again, it starts from zero, and pulls
/// recorded for it in between are dropped); the repository keeps its own.
pub async fn deleting_a_manifest_drops_its_figures_not_the_repository_s(store: &dyn MetadataStore) {
    let a = repo("a");
    let m = manifest(&a, &["v1"]);
    let keep = manifest(&a, &[]);
    put(store, &m).await;
    put(store, &keep).await;
    record(store, &[count(&m, 2, 100), count(&keep, 1, 50)]).await;
    assert!(
        store
            .delete_manifest(&a, &m.digest)
            .await
            .expect("delete_manifest")
    );
    record(store, &[count(&m, 3, 200)]).await;
    let got = of_manifests(store, &a).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(figures(&got, &keep.digest), (1, Some(50)));
    assert_eq!(
        repo_pulls(store, &[&a]).await,
        vec![Pulls {
            pulls: 6,
            last_pull: Some(200)
        }]
    );

    put(store, &m).await;
    let got = of_manifests(store, &a).await;
    assert_eq!(figures(&got, &m.digest), (0, None));
    record(store, &[count(&m, 1, 300)]).await;
    assert_eq!(
        figures(&of_manifests(store, &a).await, &m.digest),
        (1, Some(300))
    );
}
