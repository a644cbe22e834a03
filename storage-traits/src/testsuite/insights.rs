//! Behaviour cases for [`InsightsMetadata`], the insight queries of a [`MetadataStore`].
//!
//! Every case is a `pub async fn case(store: &dyn MetadataStore)` that reaches the queries
//! through [`MetadataStore::insights`] (a store under this suite must have them) and checks
//! one part of the contract in [`crate::insights`]. Cases work in repositories under their
//! own random prefix, on digests and artifact types of their own, and look only at their
//! own rows in what the queries return (a large-limit call filtered by the prefix, or a
//! prefix-filtered listing), so they may run concurrently against one shared database
//! that also holds other data. Registry-wide totals are only checked to have grown by at
//! least what the case added (no case deletes anything).
//!
//! Push times are the stores' own clock in Unix milliseconds; cases that need distinct
//! times wait for the wall clock to move on to the next millisecond between pushes.
//!
//! # Running the suite in a backend crate
//!
//! [`insights_store_tests!`](crate::insights_store_tests) works exactly like
//! [`metadata_store_tests!`](crate::metadata_store_tests): one expression that makes a
//! fresh store (evaluated once per test, may `.await`, may be a `(store, guard)` tuple),
//! then optional attributes put on every generated test:
//!
//! ```ignore
//! // metadata-foo/tests/insights.rs
//! storage_traits::insights_store_tests!(make_store().await);
//! storage_traits::insights_store_tests!(pg_store().await, #[ignore = "needs PostgreSQL"]);
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use oci_spec_types::{Digest, RepositoryName, Tag};

use crate::insights::{
    ArtifactTypeCount, BlobReuse, BlobUsage, BlobUser, InsightsMetadata, NameFilter,
    RepositoryEntry, RepositoryOrder, RepositoryStats, TagEntry,
};
use crate::{MetadataStore, NewManifest, UploadSession};

/// Expands to one `#[tokio::test]` per case of
/// [`testsuite::insights`](crate::testsuite::insights), each running the case against a
/// fresh store made by the given expression.
///
/// ```ignore
/// storage_traits::insights_store_tests!(make_store().await);
/// ```
///
/// See the [module docs](crate::testsuite::insights) and those of
/// [`testsuite::metadata`](crate::testsuite::metadata) for what the expression may be.
#[macro_export]
macro_rules! insights_store_tests {
    ($make:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::__insights_store_case!([$(#[$attr])*] ($make) summary_grows_by_what_was_added);
        $crate::__insights_store_case!([$(#[$attr])*] ($make) unique_shared_and_attributed_bytes);
        $crate::__insights_store_case!([$(#[$attr])*] ($make) tags_manifests_and_last_push_per_repository);
        $crate::__insights_store_case!([$(#[$attr])*] ($make) repository_stats_orders);
        $crate::__insights_store_case!([$(#[$attr])*] ($make) most_reused_blobs_count_manifests_and_repositories);
        $crate::__insights_store_case!([$(#[$attr])*] ($make) blob_usage_lists_links_and_referencing_manifests);
        $crate::__insights_store_case!([$(#[$attr])*] ($make) artifact_types_count_manifests_and_bytes);
        $crate::__insights_store_case!([$(#[$attr])*] ($make) repositories_by_name_filtered_and_paginated);
        $crate::__insights_store_case!([$(#[$attr])*] ($make) repositories_by_last_push_ordered_and_paginated);
        $crate::__insights_store_case!([$(#[$attr])*] ($make) repositories_by_size_ordered_and_paginated);
        $crate::__insights_store_case!([$(#[$attr])*] ($make) tags_by_name_filtered_and_paginated);
        $crate::__insights_store_case!([$(#[$attr])*] ($make) tags_by_last_push_ordered_and_paginated);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __insights_store_case {
    ([$($attr:tt)*] ($make:expr) $case:ident) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $($attr)*
        async fn $case() {
            let store = $make;
            $crate::testsuite::insights::$case(
                $crate::testsuite::metadata::AsMetadataStore::as_metadata_store(&store),
            )
            .await;
        }
    };
}

// ---------------------------------------------------------------------------------------
// Helpers

const IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const IMAGE_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A limit larger than any test database's row count.
const ALL: usize = 1_000_000;

fn insights(store: &dyn MetadataStore) -> &dyn InsightsMetadata {
    store
        .insights()
        .expect("the insights suite needs a store whose insights() is Some")
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Waits until the wall clock has moved past the current millisecond, so a write after
/// this is stamped later than every write before it.
async fn next_ms() {
    let now = wall_ms();
    while wall_ms() <= now {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Repositories `<prefix>/<label>` under one random prefix per case.
struct Repos(String);

impl Repos {
    fn new() -> Self {
        Repos(format!("in{}", uuid::Uuid::new_v4().simple()))
    }
    /// The prefix that selects this case's repositories (with the trailing slash).
    fn prefix(&self) -> String {
        format!("{}/", self.0)
    }
    fn get(&self, label: &str) -> RepositoryName {
        format!("{}/{label}", self.0)
            .parse()
            .expect("test repository name is valid")
    }
}

fn tag(s: &str) -> Tag {
    s.parse().expect("test tag is valid")
}

fn random_digest() -> Digest {
    Digest::sha256_of(uuid::Uuid::new_v4().as_bytes())
}

fn names(entries: &[RepositoryEntry]) -> Vec<String> {
    entries.iter().map(|e| e.name.to_string()).collect()
}

fn tag_names(entries: &[TagEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.name.as_str()).collect()
}

/// A manifest of its own bytes (a nonce), referencing `blobs`.
fn manifest(repo: &RepositoryName, label: &str, blobs: &[&Digest]) -> NewManifest {
    let content = Bytes::from(format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{IMAGE_MANIFEST}\",\"x-label\":\"{label}\",\"x-nonce\":\"{}\"}}",
        uuid::Uuid::new_v4()
    ));
    NewManifest::new(
        repo.clone(),
        Digest::sha256_of(&content),
        IMAGE_MANIFEST.to_string(),
        content,
    )
    .with_blob_refs(blobs.iter().map(|d| (*d).clone()).collect())
}

fn tagged(m: NewManifest, t: &str) -> NewManifest {
    m.with_tag(Some(tag(t)))
}

async fn link(store: &dyn MetadataStore, repo: &RepositoryName, d: &Digest, size: u64) {
    store
        .link_blob(repo, d, size)
        .await
        .unwrap_or_else(|e| panic!("link_blob {d} in {repo} failed: {e}"));
}

async fn put(store: &dyn MetadataStore, m: &NewManifest) {
    store
        .put_manifest(m)
        .await
        .unwrap_or_else(|e| panic!("put_manifest {} failed: {e}", m.digest));
}

/// The same manifest, stored again (same bytes) to point `t` at it.
async fn retag(store: &dyn MetadataStore, m: &NewManifest, t: &str) {
    put(store, &tagged(m.clone(), t)).await;
}

/// This case's repositories in `repository_stats(order)`, in the order returned, by name.
async fn stats_of(
    store: &dyn MetadataStore,
    repos: &Repos,
    order: RepositoryOrder,
) -> Vec<RepositoryStats> {
    let prefix = repos.prefix();
    insights(store)
        .repository_stats(order, ALL)
        .await
        .expect("repository_stats")
        .into_iter()
        .filter(|s| s.name.starts_with(&prefix))
        .collect()
}

fn by_name(stats: &[RepositoryStats]) -> BTreeMap<String, RepositoryStats> {
    stats.iter().map(|s| (s.name.clone(), s.clone())).collect()
}

fn stat<'a>(
    stats: &'a BTreeMap<String, RepositoryStats>,
    repo: &RepositoryName,
) -> &'a RepositoryStats {
    stats
        .get(repo.as_str())
        .unwrap_or_else(|| panic!("{repo} missing from repository_stats: {stats:?}"))
}

async fn all_tags_by_name(
    store: &dyn MetadataStore,
    repo: &RepositoryName,
    prefix: &str,
) -> Vec<TagEntry> {
    insights(store)
        .tags_by_name(repo, prefix, None, ALL)
        .await
        .expect("tags_by_name")
        .unwrap_or_else(|| panic!("{repo} exists"))
}

// ---------------------------------------------------------------------------------------
// Cases

/// The registry-wide totals grow by at least the repositories, manifests, tags, blobs and
/// bytes the case adds; manifests count as blobs too.
pub async fn summary_grows_by_what_was_added(store: &dyn MetadataStore) {
    let i = insights(store);
    let before = i.summary().await.expect("summary");
    let repos = Repos::new();
    let (a, b) = (repos.get("a"), repos.get("b"));
    let (l1, l2) = (random_digest(), random_digest());
    link(store, &a, &l1, 1_000).await;
    link(store, &b, &l1, 1_000).await;
    link(store, &b, &l2, 24).await;
    let m1 = tagged(manifest(&a, "m1", &[&l1]), "v1");
    let m2 = tagged(manifest(&b, "m2", &[&l1, &l2]), "v1");
    let m3 = manifest(&b, "m3", &[&l2]);
    for m in [&m1, &m2, &m3] {
        put(store, m).await;
    }
    let manifest_bytes: u64 = [&m1, &m2, &m3].iter().map(|m| m.content.len() as u64).sum();
    let after = i.summary().await.expect("summary");

    assert!(
        after.repositories >= before.repositories + 2,
        "{before:?} -> {after:?}"
    );
    assert!(
        after.manifests >= before.manifests + 3,
        "{before:?} -> {after:?}"
    );
    assert!(after.tags >= before.tags + 2, "{before:?} -> {after:?}");
    // Two layers and three manifests; a blob linked twice counts once.
    assert!(after.blobs >= before.blobs + 5, "{before:?} -> {after:?}");
    assert!(
        after.blob_bytes >= before.blob_bytes + 1_024 + manifest_bytes,
        "{before:?} -> {after:?}"
    );

    // Re-linking and re-pushing add nothing of their own.
    link(store, &a, &l1, 1_000).await;
    put(store, &m3).await;
    let again = i.summary().await.expect("summary");
    assert!(again.blobs >= after.blobs && again.manifests >= after.manifests);
}

/// A blob linked by two of the case's repositories is shared by both and attributed half
/// to each; a blob only one links is unique to it; attributed bytes over the repositories
/// add up to the bytes they link. A repository with no links has zeros.
pub async fn unique_shared_and_attributed_bytes(store: &dyn MetadataStore) {
    let repos = Repos::new();
    let (a, b, c, empty) = (
        repos.get("a"),
        repos.get("b"),
        repos.get("c"),
        repos.get("empty"),
    );
    let (shared, only_a, only_b, all_three) = (
        random_digest(),
        random_digest(),
        random_digest(),
        random_digest(),
    );
    link(store, &a, &shared, 10_000).await;
    link(store, &b, &shared, 10_000).await;
    link(store, &a, &only_a, 3_000).await;
    link(store, &b, &only_b, 512).await;
    for r in [&a, &b, &c] {
        link(store, r, &all_three, 900).await;
    }
    // Manifests referencing linked blobs change none of the byte counts.
    put(store, &tagged(manifest(&a, "m", &[&shared, &only_a]), "v1")).await;
    store
        .create_upload(&UploadSession::new(
            uuid::Uuid::new_v4().to_string(),
            empty.clone(),
            wall_ms(),
        ))
        .await
        .expect("create_upload");

    let stats = by_name(&stats_of(store, &repos, RepositoryOrder::Name).await);
    assert_eq!(stats.len(), 4, "{stats:?}");
    let (sa, sb, sc, se) = (
        stat(&stats, &a),
        stat(&stats, &b),
        stat(&stats, &c),
        stat(&stats, &empty),
    );
    assert_eq!(
        (
            sa.unique_bytes,
            sa.shared_bytes,
            sa.attributed_bytes,
            sa.blobs
        ),
        (3_000, 10_900, 5_000 + 3_000 + 300, 3),
        "{sa:?}"
    );
    assert_eq!(
        (
            sb.unique_bytes,
            sb.shared_bytes,
            sb.attributed_bytes,
            sb.blobs
        ),
        (512, 10_900, 5_000 + 512 + 300, 3),
        "{sb:?}"
    );
    assert_eq!(
        (
            sc.unique_bytes,
            sc.shared_bytes,
            sc.attributed_bytes,
            sc.blobs
        ),
        (0, 900, 300, 1),
        "{sc:?}"
    );
    assert_eq!(
        (
            se.unique_bytes,
            se.shared_bytes,
            se.attributed_bytes,
            se.blobs,
            se.manifests,
            se.tags,
            se.last_push
        ),
        (0, 0, 0, 0, 0, 0, None),
        "{se:?}"
    );
    let attributed: u64 = stats.values().map(|s| s.attributed_bytes).sum();
    assert_eq!(
        attributed,
        10_000 + 3_000 + 512 + 900,
        "attributed bytes add up to the linked bytes"
    );

    // Unlinking the shared blob from b makes it unique to a.
    assert!(store.unlink_blob(&b, &shared).await.expect("unlink_blob"));
    let stats = by_name(&stats_of(store, &repos, RepositoryOrder::Name).await);
    let (sa, sb) = (stat(&stats, &a), stat(&stats, &b));
    assert_eq!(
        (sa.unique_bytes, sa.shared_bytes, sa.attributed_bytes),
        (13_000, 900, 13_300)
    );
    assert_eq!(
        (
            sb.unique_bytes,
            sb.shared_bytes,
            sb.attributed_bytes,
            sb.blobs
        ),
        (512, 900, 812, 2)
    );
}

/// Manifest and tag counts per repository, and the last push: the newest manifest push or
/// tag move, absent for a repository that only has links.
pub async fn tags_manifests_and_last_push_per_repository(store: &dyn MetadataStore) {
    let repos = Repos::new();
    let (a, linked_only) = (repos.get("a"), repos.get("linked-only"));
    let layer = random_digest();
    link(store, &a, &layer, 10).await;
    link(store, &linked_only, &random_digest(), 10).await;
    let start = wall_ms();
    let m1 = tagged(manifest(&a, "m1", &[&layer]), "v1");
    let m2 = tagged(manifest(&a, "m2", &[&layer]), "v2");
    let m3 = manifest(&a, "m3", &[]);
    for m in [&m1, &m2, &m3] {
        put(store, m).await;
    }
    // A second tag on m1.
    retag(store, &m1, "latest").await;
    let pushed = wall_ms();

    let stats = by_name(&stats_of(store, &repos, RepositoryOrder::Name).await);
    let sa = stat(&stats, &a);
    assert_eq!((sa.manifests, sa.tags), (3, 3), "{sa:?}");
    let last = sa.last_push.expect("a pushed repository has a last push");
    assert!(
        (start..=pushed).contains(&last),
        "last push {last} outside {start}..={pushed}"
    );
    let sl = stat(&stats, &linked_only);
    assert_eq!(
        (sl.manifests, sl.tags, sl.last_push),
        (0, 0, None),
        "{sl:?}"
    );

    // Moving a tag is a push.
    next_ms().await;
    let moved_at = wall_ms();
    retag(store, &m3, "v1").await;
    let stats = by_name(&stats_of(store, &repos, RepositoryOrder::Name).await);
    let sa = stat(&stats, &a);
    assert_eq!((sa.manifests, sa.tags), (3, 3), "{sa:?}");
    let moved = sa.last_push.expect("last push");
    assert!(
        moved >= moved_at && moved > last,
        "last push {moved} after moving a tag at {moved_at} (was {last})"
    );

    // Deleting a tag leaves the manifest counted.
    assert!(store.delete_tag(&a, &tag("v2")).await.expect("delete_tag"));
    let stats = by_name(&stats_of(store, &repos, RepositoryOrder::Name).await);
    let sa = stat(&stats, &a);
    assert_eq!((sa.manifests, sa.tags), (3, 2), "{sa:?}");
}

/// `repository_stats` in each order, as seen on the case's own repositories (whose
/// relative order a filter keeps), and its limit.
pub async fn repository_stats_orders(store: &dyn MetadataStore) {
    let repos = Repos::new();
    // Sizes: big > mid > small; tags: small > mid > big; pushes: mid, then big, then
    // small; never pushed: idle.
    let (big, mid, small, idle) = (
        repos.get("big"),
        repos.get("mid"),
        repos.get("small"),
        repos.get("idle"),
    );
    let (lb, lm, ls) = (random_digest(), random_digest(), random_digest());
    link(store, &big, &lb, 9_000).await;
    link(store, &mid, &lm, 5_000).await;
    link(store, &small, &ls, 10).await;
    link(store, &idle, &random_digest(), 1).await;
    let mm = manifest(&mid, "m", &[&lm]);
    put(store, &tagged(mm.clone(), "t1")).await;
    retag(store, &mm, "t2").await;
    next_ms().await;
    put(store, &tagged(manifest(&big, "m", &[&lb]), "t1")).await;
    next_ms().await;
    let ms = manifest(&small, "m", &[&ls]);
    for t in ["t1", "t2", "t3"] {
        retag(store, &ms, t).await;
    }

    let order = |stats: Vec<RepositoryStats>| -> Vec<String> {
        stats.into_iter().map(|s| s.name).collect()
    };
    let names =
        |rs: &[&RepositoryName]| -> Vec<String> { rs.iter().map(|r| r.to_string()).collect() };
    assert_eq!(
        order(stats_of(store, &repos, RepositoryOrder::Size).await),
        names(&[&big, &mid, &small, &idle])
    );
    assert_eq!(
        order(stats_of(store, &repos, RepositoryOrder::Tags).await),
        names(&[&small, &mid, &big, &idle])
    );
    assert_eq!(
        order(stats_of(store, &repos, RepositoryOrder::LastPush).await),
        names(&[&small, &big, &mid, &idle])
    );
    assert_eq!(
        order(stats_of(store, &repos, RepositoryOrder::Name).await),
        names(&[&big, &idle, &mid, &small])
    );

    let i = insights(store);
    let two = i
        .repository_stats(RepositoryOrder::Name, 2)
        .await
        .expect("repository_stats");
    assert!(two.len() <= 2, "limit 2 returned {}", two.len());
    assert!(
        i.repository_stats(RepositoryOrder::Size, 0)
            .await
            .expect("repository_stats")
            .is_empty()
    );
    let whole = i
        .repository_stats(RepositoryOrder::Size, ALL)
        .await
        .expect("repository_stats");
    assert!(
        whole
            .windows(2)
            .all(|w| w[0].attributed_bytes >= w[1].attributed_bytes),
        "largest attributed bytes first"
    );
}

/// A blob referenced by three manifests in two repositories is reported with those
/// counts and its size; the list is ordered by manifests, then size, and limited.
pub async fn most_reused_blobs_count_manifests_and_repositories(store: &dyn MetadataStore) {
    let repos = Repos::new();
    let (a, b) = (repos.get("a"), repos.get("b"));
    let (shared, once, unused) = (random_digest(), random_digest(), random_digest());
    link(store, &a, &shared, 4_096).await;
    link(store, &b, &shared, 4_096).await;
    link(store, &a, &once, 77).await;
    link(store, &b, &unused, 5).await;
    put(store, &manifest(&a, "m1", &[&shared, &once])).await;
    put(store, &manifest(&a, "m2", &[&shared])).await;
    put(store, &tagged(manifest(&b, "m3", &[&shared]), "v1")).await;

    let i = insights(store);
    let all = i.most_reused_blobs(ALL).await.expect("most_reused_blobs");
    let find = |d: &Digest| -> Option<&BlobReuse> { all.iter().find(|r| &r.digest == d) };
    assert_eq!(
        find(&shared),
        Some(&BlobReuse {
            digest: shared.clone(),
            size: 4_096,
            repositories: 2,
            manifests: 3,
        })
    );
    assert_eq!(
        find(&once),
        Some(&BlobReuse {
            digest: once.clone(),
            size: 77,
            repositories: 1,
            manifests: 1,
        })
    );
    assert_eq!(find(&unused), None, "a blob no manifest references");
    assert!(
        all.windows(2)
            .all(|w| (w[0].manifests, w[0].size) >= (w[1].manifests, w[1].size)),
        "most manifests first, ties larger first"
    );
    let top = i.most_reused_blobs(1).await.expect("most_reused_blobs");
    assert_eq!(top.len(), 1, "limit 1");
    assert!(
        top[0].manifests >= 3,
        "the top blob is at least as reused as ours"
    );
}

/// Who links a blob, which manifests reference it with their tags, and its size; an
/// unknown digest has no usage at all.
pub async fn blob_usage_lists_links_and_referencing_manifests(store: &dyn MetadataStore) {
    let repos = Repos::new();
    let (a, b, c) = (repos.get("a"), repos.get("b"), repos.get("c"));
    let layer = random_digest();
    for r in [&c, &a, &b] {
        link(store, r, &layer, 321).await;
    }
    let ma = tagged(manifest(&a, "ma", &[&layer]), "v1");
    put(store, &ma).await;
    retag(store, &ma, "latest").await;
    let mb = manifest(&b, "mb", &[&layer]);
    put(store, &mb).await;

    let i = insights(store);
    let usage = i.blob_usage(&layer).await.expect("blob_usage");
    assert_eq!(usage.size, Some(321));
    assert_eq!(
        usage.linked_by,
        vec![a.to_string(), b.to_string(), c.to_string()],
        "linking repositories by name"
    );
    assert_eq!(
        usage.referenced_by,
        vec![
            BlobUser {
                repository: a.to_string(),
                manifest: ma.digest.clone(),
                tags: vec!["latest".to_string(), "v1".to_string()],
            },
            BlobUser {
                repository: b.to_string(),
                manifest: mb.digest.clone(),
                tags: vec![],
            },
        ]
    );

    // A blob only linked: no references.
    let lone = random_digest();
    link(store, &c, &lone, 8).await;
    let usage = i.blob_usage(&lone).await.expect("blob_usage");
    assert_eq!(
        (usage.size, usage.linked_by, usage.referenced_by),
        (Some(8), vec![c.to_string()], vec![])
    );

    assert_eq!(
        i.blob_usage(&random_digest()).await.expect("blob_usage"),
        BlobUsage::default()
    );
}

/// The case's own artifact types are counted with their manifests' bytes; indexes
/// (without an artifact type) are counted under `None`; the list is ordered by count.
pub async fn artifact_types_count_manifests_and_bytes(store: &dyn MetadataStore) {
    let repos = Repos::new();
    let a = repos.get("a");
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let (sig, chart) = (
        format!("application/vnd.test.sig.{nonce}+json"),
        format!("application/vnd.test.chart.{nonce}+json"),
    );
    let s1 = manifest(&a, "s1", &[]).with_artifact_type(Some(sig.clone()));
    let s2 = manifest(&a, "s2", &[]).with_artifact_type(Some(sig.clone()));
    let c1 = tagged(manifest(&a, "c1", &[]), "chart").with_artifact_type(Some(chart.clone()));
    for m in [&s1, &s2, &c1] {
        put(store, m).await;
    }
    let content = Bytes::from(format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{IMAGE_INDEX}\",\"x-nonce\":\"{nonce}\"}}"
    ));
    let index = NewManifest::new(
        a.clone(),
        Digest::sha256_of(&content),
        IMAGE_INDEX.to_string(),
        content,
    )
    .with_manifest_refs(vec![s1.digest.clone()]);
    put(store, &index).await;

    let types = insights(store)
        .artifact_types()
        .await
        .expect("artifact_types");
    let find = |t: Option<&str>| -> Option<&ArtifactTypeCount> {
        types.iter().find(|c| c.artifact_type.as_deref() == t)
    };
    assert_eq!(
        find(Some(&sig)),
        Some(&ArtifactTypeCount {
            artifact_type: Some(sig.clone()),
            manifests: 2,
            bytes: (s1.content.len() + s2.content.len()) as u64,
        })
    );
    assert_eq!(
        find(Some(&chart)),
        Some(&ArtifactTypeCount {
            artifact_type: Some(chart.clone()),
            manifests: 1,
            bytes: c1.content.len() as u64,
        })
    );
    let none = find(None).expect("manifests without an artifact type are counted");
    assert!(none.manifests >= 1 && none.bytes >= index.content.len() as u64);
    assert!(
        types.windows(2).all(|w| w[0].manifests >= w[1].manifests),
        "most manifests first: {types:?}"
    );
    let distinct: std::collections::BTreeSet<_> =
        types.iter().map(|c| c.artifact_type.clone()).collect();
    assert_eq!(distinct.len(), types.len(), "each type once: {types:?}");
}

/// Repositories by name under a prefix (byte-wise, `_` and `%` literal), after a cursor,
/// with their last push.
pub async fn repositories_by_name_filtered_and_paginated(store: &dyn MetadataStore) {
    let repos = Repos::new();
    let labels = ["a", "b", "b_c", "bxc", "c", "d/e"];
    for l in labels {
        link(store, &repos.get(l), &random_digest(), 1).await;
    }
    let before = wall_ms();
    put(store, &tagged(manifest(&repos.get("c"), "m", &[]), "v1")).await;
    let after = wall_ms();
    let i = insights(store);
    let p = repos.prefix();
    let full = |ls: &[&str]| -> Vec<String> { ls.iter().map(|l| format!("{p}{l}")).collect() };

    let all = i
        .repositories_by_name(NameFilter::Prefix(&p), None, ALL)
        .await
        .expect("repositories_by_name");
    assert_eq!(names(&all), full(&labels));
    for e in &all {
        if e.name == repos.get("c") {
            let lp = e.last_push.expect("c was pushed");
            assert!((before..=after).contains(&lp), "{lp} in {before}..={after}");
        } else {
            assert_eq!(e.last_push, None, "{} was never pushed", e.name);
        }
    }

    // Pages of two, each after the previous page's last name.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = i
            .repositories_by_name(NameFilter::Prefix(&p), cursor.as_deref(), 2)
            .await
            .expect("repositories_by_name");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        cursor = Some(last.name.to_string());
        seen.extend(names(&page));
    }
    assert_eq!(seen, full(&labels));

    // Narrower prefixes; `_` is not a wildcard.
    let under = |s: &str| format!("{p}{s}");
    let got = i
        .repositories_by_name(NameFilter::Prefix(&under("b")), None, ALL)
        .await
        .expect("repositories_by_name");
    assert_eq!(names(&got), full(&["b", "b_c", "bxc"]));
    let got = i
        .repositories_by_name(NameFilter::Prefix(&under("b_")), None, ALL)
        .await
        .expect("repositories_by_name");
    assert_eq!(names(&got), full(&["b_c"]));
    let got = i
        .repositories_by_name(NameFilter::Prefix(&under("b%")), None, ALL)
        .await
        .expect("repositories_by_name");
    assert!(got.is_empty(), "{got:?}");
    let got = i
        .repositories_by_name(NameFilter::Prefix(&under("b")), Some(&under("b")), ALL)
        .await
        .expect("repositories_by_name");
    assert_eq!(names(&got), full(&["b_c", "bxc"]));
    let got = i
        .repositories_by_name(NameFilter::Prefix(&under("d/")), None, ALL)
        .await
        .expect("repositories_by_name");
    assert_eq!(names(&got), full(&["d/e"]));
    // The whole prefix string, not a case-folded match.
    let upper = under("B");
    assert!(
        i.repositories_by_name(NameFilter::Prefix(&upper), None, ALL)
            .await
            .expect("repositories_by_name")
            .is_empty()
    );
    // An empty prefix is every repository: after `<p>a` comes `<p>b`.
    let got = i
        .repositories_by_name(NameFilter::Prefix(""), Some(&under("a")), 1)
        .await
        .expect("repositories_by_name");
    assert_eq!(names(&got), full(&["b"]));

    // A substring anywhere in the name: the case's id without its leading "in" is in the
    // middle of each name, so a prefix match would find nothing.
    let id = &repos.0[2..];
    let contains = |s: &str| format!("{id}/{s}");
    let got = i
        .repositories_by_name(NameFilter::Contains(id), None, ALL)
        .await
        .expect("repositories_by_name");
    assert_eq!(names(&got), full(&labels));
    let got = i
        .repositories_by_name(NameFilter::Contains(&contains("b")), None, ALL)
        .await
        .expect("repositories_by_name");
    assert_eq!(names(&got), full(&["b", "b_c", "bxc"]));
    for (needle, want) in [("b_", &["b_c"][..]), ("b%", &[]), ("B", &[])] {
        let got = i
            .repositories_by_name(NameFilter::Contains(&contains(needle)), None, ALL)
            .await
            .expect("repositories_by_name");
        assert_eq!(names(&got), full(want), "literal, case-sensitive: {needle}");
    }
    let got = i
        .repositories_by_name(NameFilter::Contains(id), Some(&under("b_c")), 2)
        .await
        .expect("repositories_by_name");
    assert_eq!(names(&got), full(&["bxc", "c"]), "a page after a cursor");
    let got = i
        .repositories_by_last_push(NameFilter::Contains(id), None, 2)
        .await
        .expect("repositories_by_last_push");
    assert_eq!(names(&got), full(&["c", "a"]), "pushed first, then by name");
}

/// Repositories largest first by attributed bytes (a blob two link counts half in each),
/// ties by name, with their footprint, and a cursor `(attributed_bytes, name)` that walks
/// every page once.
pub async fn repositories_by_size_ordered_and_paginated(store: &dyn MetadataStore) {
    let repos = Repos::new();
    for (l, size) in [("a", 30), ("b", 10), ("c", 20), ("d", 10)] {
        link(store, &repos.get(l), &random_digest(), size).await;
    }
    let shared = random_digest();
    link(store, &repos.get("a"), &shared, 40).await;
    link(store, &repos.get("c"), &shared, 40).await;
    let i = insights(store);
    let p = repos.prefix();
    let full = |ls: &[&str]| -> Vec<String> { ls.iter().map(|l| format!("{p}{l}")).collect() };
    let stats_names =
        |v: &[RepositoryStats]| -> Vec<String> { v.iter().map(|s| s.name.clone()).collect() };

    let all = i
        .repositories_by_size(NameFilter::Prefix(&p), None, ALL)
        .await
        .expect("repositories_by_size");
    assert_eq!(stats_names(&all), full(&["a", "c", "b", "d"]));
    let figures: Vec<_> = all
        .iter()
        .map(|s| (s.attributed_bytes, s.unique_bytes, s.shared_bytes, s.blobs))
        .collect();
    assert_eq!(
        figures,
        [
            (50, 30, 40, 2),
            (40, 20, 40, 2),
            (10, 10, 0, 1),
            (10, 10, 0, 1)
        ]
    );

    // Pages of one, each after the previous page's last (bytes, name): through the tie.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = i
            .repositories_by_size(NameFilter::Prefix(&p), cursor.clone(), 1)
            .await
            .expect("repositories_by_size");
        assert!(page.len() <= 1);
        let Some(last) = page.last() else { break };
        cursor = Some((last.attributed_bytes, last.name.clone()));
        seen.extend(stats_names(&page));
    }
    assert_eq!(seen, full(&["a", "c", "b", "d"]));

    let id = &repos.0[2..];
    let got = i
        .repositories_by_size(NameFilter::Contains(id), Some((40, format!("{p}c"))), ALL)
        .await
        .expect("repositories_by_size");
    assert_eq!(stats_names(&got), full(&["b", "d"]));
    let got = i
        .repositories_by_size(NameFilter::Prefix(&format!("{p}c")), None, ALL)
        .await
        .expect("repositories_by_size");
    assert_eq!(stats_names(&got), full(&["c"]));
}

/// Repositories most recently pushed first, never-pushed ones last by name, and a cursor
/// `(last_push, name)` that walks every page once.
pub async fn repositories_by_last_push_ordered_and_paginated(store: &dyn MetadataStore) {
    let repos = Repos::new();
    let (a, b, c, d, e) = (
        repos.get("a"),
        repos.get("b"),
        repos.get("c"),
        repos.get("d"),
        repos.get("e"),
    );
    // Never pushed.
    link(store, &e, &random_digest(), 1).await;
    link(store, &d, &random_digest(), 1).await;
    let ma = tagged(manifest(&a, "m", &[]), "v1");
    for m in [
        &ma,
        &manifest(&b, "m", &[]),
        &tagged(manifest(&c, "m", &[]), "v1"),
    ] {
        next_ms().await;
        put(store, m).await;
    }
    let i = insights(store);
    let p = repos.prefix();
    let expect =
        |rs: &[&RepositoryName]| -> Vec<String> { rs.iter().map(|r| r.to_string()).collect() };

    let all = i
        .repositories_by_last_push(NameFilter::Prefix(&p), None, ALL)
        .await
        .expect("repositories_by_last_push");
    assert_eq!(names(&all), expect(&[&c, &b, &a, &d, &e]), "{all:?}");
    assert!(all[..3].iter().all(|x| x.last_push.is_some()));
    assert!(all[3..].iter().all(|x| x.last_push.is_none()));

    // Moving a tag of a makes it the most recent.
    next_ms().await;
    retag(store, &ma, "v2").await;
    let all = i
        .repositories_by_last_push(NameFilter::Prefix(&p), None, ALL)
        .await
        .expect("repositories_by_last_push");
    let order = expect(&[&a, &c, &b, &d, &e]);
    assert_eq!(names(&all), order, "{all:?}");

    // Walk in pages of each size: every repository once, in order, across the boundary
    // between pushed and never-pushed ones.
    for size in [1, 2, 3] {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = i
                .repositories_by_last_push(NameFilter::Prefix(&p), cursor.clone(), size)
                .await
                .expect("repositories_by_last_push");
            assert!(page.len() <= size);
            let Some(last) = page.last() else { break };
            cursor = Some((last.last_push, last.name.to_string()));
            seen.extend(names(&page));
        }
        assert_eq!(seen, order, "pages of {size}");
    }

    // A narrower prefix.
    let got = i
        .repositories_by_last_push(NameFilter::Prefix(&format!("{p}c")), None, ALL)
        .await
        .expect("repositories_by_last_push");
    assert_eq!(names(&got), expect(&[&c]));

    // Pushes without pauses, many in the same millisecond: ties are ordered by name,
    // and the cursor resumes inside a run of equal times.
    let burst = Repos::new();
    for n in 0..12 {
        let r = burst.get(&format!("r{:02}", (n * 7) % 12));
        put(store, &manifest(&r, "m", &[])).await;
    }
    let bp = burst.prefix();
    let all = i
        .repositories_by_last_push(NameFilter::Prefix(&bp), None, ALL)
        .await
        .expect("repositories_by_last_push");
    assert_eq!(all.len(), 12);
    assert!(
        all.windows(2)
            .all(|w| (std::cmp::Reverse(w[0].last_push), &w[0].name)
                < (std::cmp::Reverse(w[1].last_push), &w[1].name)),
        "last push descending, ties by name: {all:?}"
    );
    for size in [1, 5] {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = i
                .repositories_by_last_push(NameFilter::Prefix(&bp), cursor.clone(), size)
                .await
                .expect("repositories_by_last_push");
            let Some(last) = page.last() else { break };
            cursor = Some((last.last_push, last.name.to_string()));
            seen.extend(page);
        }
        assert_eq!(seen, all, "pages of {size}");
    }
}

/// Tags by name under a byte-wise prefix, after a cursor; `None` for an unknown
/// repository, an empty list for one without (matching) tags.
pub async fn tags_by_name_filtered_and_paginated(store: &dyn MetadataStore) {
    let repos = Repos::new();
    let (a, untagged) = (repos.get("a"), repos.get("untagged"));
    let m1 = manifest(&a, "m1", &[]);
    let m2 = manifest(&a, "m2", &[]);
    let tags1 = ["v1", "v10", "V2", "rc_1", "rcx1"];
    let tags2 = ["v2", "w"];
    let start = wall_ms();
    for t in tags1 {
        retag(store, &m1, t).await;
    }
    for t in tags2 {
        retag(store, &m2, t).await;
    }
    let end = wall_ms();
    link(store, &untagged, &random_digest(), 1).await;
    let i = insights(store);

    let all = all_tags_by_name(store, &a, "").await;
    // Byte order: upper case before lower case.
    assert_eq!(
        tag_names(&all),
        ["V2", "rc_1", "rcx1", "v1", "v10", "v2", "w"]
    );
    for e in &all {
        let want = if tags1.contains(&e.name.as_str()) {
            &m1.digest
        } else {
            &m2.digest
        };
        assert_eq!(&e.digest, want, "{e:?}");
        assert!((start..=end).contains(&e.updated_at), "{e:?}");
    }

    assert_eq!(
        tag_names(&all_tags_by_name(store, &a, "v").await),
        ["v1", "v10", "v2"]
    );
    assert_eq!(tag_names(&all_tags_by_name(store, &a, "V").await), ["V2"]);
    assert_eq!(
        tag_names(&all_tags_by_name(store, &a, "rc_").await),
        ["rc_1"]
    );
    assert!(all_tags_by_name(store, &a, "rc%").await.is_empty());
    assert!(all_tags_by_name(store, &a, "x").await.is_empty());

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = i
            .tags_by_name(&a, "v", cursor.as_deref(), 2)
            .await
            .expect("tags_by_name")
            .expect("repository exists");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        cursor = Some(last.name.clone());
        seen.extend(tag_names(&page).into_iter().map(str::to_string));
    }
    assert_eq!(seen, ["v1", "v10", "v2"]);
    let got = i
        .tags_by_name(&a, "", Some("v10"), ALL)
        .await
        .expect("tags_by_name")
        .expect("repository exists");
    assert_eq!(tag_names(&got), ["v2", "w"]);

    assert_eq!(
        i.tags_by_name(&untagged, "", None, ALL)
            .await
            .expect("tags_by_name"),
        Some(vec![])
    );
    assert_eq!(
        i.tags_by_name(&repos.get("nope"), "", None, ALL)
            .await
            .expect("tags_by_name"),
        None
    );
}

/// Tags most recently moved first, under a prefix, with a cursor `(updated_at, name)`;
/// `None` for an unknown repository.
pub async fn tags_by_last_push_ordered_and_paginated(store: &dyn MetadataStore) {
    let repos = Repos::new();
    let (a, untagged) = (repos.get("a"), repos.get("untagged"));
    let m1 = manifest(&a, "m1", &[]);
    let m2 = manifest(&a, "m2", &[]);
    for t in ["rc1", "v1", "rc2", "v2", "rc3"] {
        next_ms().await;
        retag(store, &m1, t).await;
    }
    link(store, &untagged, &random_digest(), 1).await;
    let i = insights(store);
    async fn all(i: &dyn InsightsMetadata, repo: &RepositoryName, prefix: &str) -> Vec<TagEntry> {
        i.tags_by_last_push(repo, prefix, None, ALL)
            .await
            .expect("tags_by_last_push")
            .expect("repository exists")
    }

    let got = all(i, &a, "").await;
    assert_eq!(tag_names(&got), ["rc3", "v2", "rc2", "v1", "rc1"]);
    assert!(got.windows(2).all(|w| w[0].updated_at > w[1].updated_at));
    assert!(got.iter().all(|e| e.digest == m1.digest));
    assert_eq!(tag_names(&all(i, &a, "rc").await), ["rc3", "rc2", "rc1"]);

    // Moving rc1 to another manifest makes it the most recent.
    next_ms().await;
    retag(store, &m2, "rc1").await;
    let got = all(i, &a, "rc").await;
    assert_eq!(tag_names(&got), ["rc1", "rc3", "rc2"]);
    assert_eq!(got[0].digest, m2.digest);

    for size in [1, 2] {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = i
                .tags_by_last_push(&a, "", cursor.clone(), size)
                .await
                .expect("tags_by_last_push")
                .expect("repository exists");
            assert!(page.len() <= size);
            let Some(last) = page.last() else { break };
            cursor = Some((last.updated_at, last.name.clone()));
            seen.extend(tag_names(&page).into_iter().map(str::to_string));
        }
        assert_eq!(seen, ["rc1", "rc3", "v2", "rc2", "v1"], "pages of {size}");
    }

    // Tags moved without pauses, many in the same millisecond: ties by name, and the
    // cursor resumes inside a run of equal times.
    let m3 = manifest(&a, "m3", &[]);
    for n in 0..12 {
        retag(store, &m3, &format!("b{:02}", (n * 5) % 12)).await;
    }
    let burst = all(i, &a, "b").await;
    assert_eq!(burst.len(), 12);
    assert!(
        burst
            .windows(2)
            .all(|w| (std::cmp::Reverse(w[0].updated_at), &w[0].name)
                < (std::cmp::Reverse(w[1].updated_at), &w[1].name)),
        "last move descending, ties by name: {burst:?}"
    );
    for size in [1, 5] {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = i
                .tags_by_last_push(&a, "b", cursor.clone(), size)
                .await
                .expect("tags_by_last_push")
                .expect("repository exists");
            let Some(last) = page.last() else { break };
            cursor = Some((last.updated_at, last.name.clone()));
            seen.extend(page);
        }
        assert_eq!(seen, burst, "pages of {size}");
    }

    assert_eq!(
        i.tags_by_last_push(&untagged, "", None, ALL)
            .await
            .expect("tags_by_last_push"),
        Some(vec![])
    );
    assert_eq!(
        i.tags_by_last_push(&repos.get("nope"), "", None, ALL)
            .await
            .expect("tags_by_last_push"),
        None
    );
}
