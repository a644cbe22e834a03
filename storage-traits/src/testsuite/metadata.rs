//! Behaviour cases for [`MetadataStore`] implementations.
//!
//! Every case is a `pub async fn case(store: &dyn MetadataStore)` that checks one part of
//! the trait's `# Behavior` contract. Each case works in repositories under its own random
//! prefix (and upload ids of its own), so cases may run concurrently against one shared
//! database (as a PostgreSQL backend will) without seeing each other's rows, and a store
//! that already holds other data passes too. The trait has no way to delete a repository,
//! so the repositories a case created stay behind (empty where the case could empty them).
//!
//! # Running the suite in a backend crate
//!
//! [`metadata_store_tests!`](crate::metadata_store_tests) takes one expression that makes
//! a fresh store and expands to one `#[tokio::test]` per case, named after the case, so
//! a failure names both the case and the backend:
//!
//! ```ignore
//! // metadata-foo/tests/behaviour.rs
//! async fn make_store() -> (FooMetadataStore, tempfile::TempDir) {
//!     let dir = tempfile::tempdir().expect("tempdir");
//!     let store = FooMetadataStore::open(dir.path().join("meta.db")).expect("open");
//!     (store, dir)
//! }
//!
//! storage_traits::metadata_store_tests!(make_store().await);
//!
//! // Run it a second time against another fixture by nesting it in a module:
//! mod in_memory {
//!     storage_traits::metadata_store_tests!(super::FooMetadataStore::open_in_memory().expect("open"));
//! }
//! ```
//!
//! - The expression is evaluated inside each generated `async fn`, once per test, so it may
//!   use `.await`, and names in it resolve in the module where the macro is invoked.
//! - It must evaluate to an [`AsMetadataStore`]: a store `S: MetadataStore`, an `Arc<S>`
//!   or `Arc<dyn MetadataStore>`, or a tuple `(store, guard)` whose second element (a
//!   `TempDir`, a database container handle...) is kept alive until the case ends.
//! - Attributes after the expression are put on every generated test, for example
//!   `metadata_store_tests!(pg_store().await, #[ignore = "needs PostgreSQL"]);` (after it,
//!   not before: an expression may itself start with `#[...]`, which would be ambiguous).
//! - The tests run on tokio's multi-threaded runtime, so the backend crate needs `tokio`
//!   with the `macros` and `rt-multi-thread` features among its dev-dependencies, and
//!   `storage-traits` with the `testsuite` feature.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::join_all;
use oci_spec_types::{Digest, Reference, RepositoryName, Tag};

use crate::{MetadataError, MetadataStore, NewManifest, Page, ReferrerRecord, UploadSession};

/// How a case gets the store out of whatever the macro's expression built (the same
/// shape as [`AsBlobStore`](crate::testsuite::blob::AsBlobStore)).
pub trait AsMetadataStore {
    /// The store the cases run against.
    fn as_metadata_store(&self) -> &dyn MetadataStore;
}

impl<S: MetadataStore> AsMetadataStore for S {
    fn as_metadata_store(&self) -> &dyn MetadataStore {
        self
    }
}

impl AsMetadataStore for dyn MetadataStore {
    fn as_metadata_store(&self) -> &dyn MetadataStore {
        self
    }
}

impl<S: AsMetadataStore + ?Sized> AsMetadataStore for Arc<S> {
    fn as_metadata_store(&self) -> &dyn MetadataStore {
        (**self).as_metadata_store()
    }
}

/// A store together with something that must outlive it (a temporary directory, a
/// database container).
impl<S: AsMetadataStore, G> AsMetadataStore for (S, G) {
    fn as_metadata_store(&self) -> &dyn MetadataStore {
        self.0.as_metadata_store()
    }
}

/// Expands to one `#[tokio::test]` per case of [`testsuite::metadata`](crate::testsuite::metadata),
/// each running the case against a fresh store made by the given expression.
///
/// ```ignore
/// storage_traits::metadata_store_tests!(make_store().await);
/// ```
///
/// See the [module docs](crate::testsuite::metadata) for what the expression may be.
#[macro_export]
macro_rules! metadata_store_tests {
    ($make:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::__metadata_store_case!([$(#[$attr])*] ($make) repositories_appear_on_first_link_manifest_or_upload);
        $crate::__metadata_store_case!([$(#[$attr])*] ($make) repositories_listed_in_lexical_order_with_pagination);
        $crate::__metadata_store_case!([$(#[$attr])*] ($make) blob_links);
        $crate::__metadata_store_case!([$(#[$attr])*] ($make) put_manifest_with_missing_blobs_stores_nothing);
        $crate::__metadata_store_case!([$(#[$attr])*] ($make) put_manifest_with_missing_child_manifests_stores_nothing);
        $crate::__metadata_store_case!([$(#[$attr])*] ($make) get_manifest_by_tag_and_digest_returns_exact_bytes);
        $crate::__metadata_store_case!([$(#[$attr])*] ($make) put_same_digest_again_moves_tag);
        $crate::__metadata_store_case!([$(#[$attr])*] ($make) several_tags_are_stored_together);
        $crate::__metadata_store_case!([$(#[$attr])*] ($make) tags_listed_in_lexical_order_with_pagination);
        $crate::__metadata_store_case!([$(#[$attr])*] ($make) list_tags_of_unknown_repository_is_none);
        $crate::__metadata_store_case!([$(#[$attr])*] ($make) delete_tag_keeps_manifest);
        $crate::__metadata_store_case!([$(#[$attr])*] ($make) delete_tag_if_removes_only_the_tag_as_seen);
        $crate::__metadata_store_case!([$(#[$attr])*] ($make) delete_tag_if_racing_a_move_keeps_the_moved_tag);
        $crate::__metadata_store_case!([$(#[$attr])*] ($make) delete_manifest_removes_its_tags);
        $crate::__metadata_store_case!([$(#[$attr])*] ($make) referrers_by_subject_and_artifact_type);
        $crate::__metadata_store_case!([$(#[$attr])*] ($make) referrers_isolated_per_repository);
        $crate::__metadata_store_case!([$(#[$attr])*] ($make) concurrent_put_manifest_same_tag);
        $crate::__metadata_store_case!([$(#[$attr])*] ($make) concurrent_link_blob_same_digest);
        $crate::__metadata_store_case!([$(#[$attr])*] ($make) immutable_tag_is_never_moved);
        $crate::__metadata_store_case!([$(#[$attr])*] ($make) one_immutable_tag_among_several_refuses_the_whole_push);
        $crate::__metadata_store_case!([$(#[$attr])*] ($make) concurrent_first_pushes_of_an_immutable_tag);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __metadata_store_case {
    ([$($attr:tt)*] ($make:expr) $case:ident) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $($attr)*
        async fn $case() {
            let store = $make;
            $crate::testsuite::metadata::$case(
                $crate::testsuite::metadata::AsMetadataStore::as_metadata_store(&store),
            )
            .await;
        }
    };
}

// ---------------------------------------------------------------------------------------
// Helpers

/// A fresh prefix such as `mt3f2a…`; repositories of a case are `<prefix>/<label>`.
fn unique_prefix() -> String {
    format!("mt{}", uuid::Uuid::new_v4().simple())
}

fn repo_name(prefix: &str, label: &str) -> RepositoryName {
    format!("{prefix}/{label}")
        .parse()
        .expect("test repository name is valid")
}

fn unique_repo(label: &str) -> RepositoryName {
    repo_name(&unique_prefix(), label)
}

fn tag(s: &str) -> Tag {
    s.parse().expect("test tag is valid")
}

fn random_digest() -> Digest {
    Digest::sha256_of(uuid::Uuid::new_v4().as_bytes())
}

const IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const IMAGE_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Unique manifest bytes, with odd whitespace and an unknown field, which a store must
/// keep byte for byte.
fn manifest_bytes(label: &str) -> Bytes {
    Bytes::from(format!(
        "{{\"schemaVersion\":2,  \"mediaType\":\"{IMAGE_MANIFEST}\",\n\t\"x-unknown\":{{\"label\":\"{label}\",\"nonce\":\"{}\"}} }}",
        uuid::Uuid::new_v4()
    ))
}

fn manifest(repo: &RepositoryName, label: &str) -> NewManifest {
    let content = manifest_bytes(label);
    NewManifest::new(
        repo.clone(),
        Digest::sha256_of(&content),
        IMAGE_MANIFEST.to_string(),
        content,
    )
}

async fn put(store: &dyn MetadataStore, m: &NewManifest) {
    store
        .put_manifest(m)
        .await
        .unwrap_or_else(|e| panic!("put_manifest {} failed: {e}", m.digest));
}

async fn tags_of(store: &dyn MetadataStore, repo: &RepositoryName, page: &Page) -> Vec<String> {
    store
        .list_tags(repo, page)
        .await
        .expect("list_tags")
        .unwrap_or_else(|| panic!("list_tags({repo}) is None for an existing repository"))
        .iter()
        .map(|t| t.as_str().to_string())
        .collect()
}

async fn our_repositories(store: &dyn MetadataStore, prefix: &str, page: &Page) -> Vec<String> {
    let own = format!("{prefix}/");
    store
        .list_repositories(page)
        .await
        .expect("list_repositories")
        .iter()
        .map(|r| r.as_str().to_string())
        .filter(|r| r.starts_with(&own))
        .collect()
}

fn page(last: Option<&str>, limit: Option<usize>) -> Page {
    Page::new(last.map(str::to_string), limit)
}

fn digest_set(d: &[Digest]) -> BTreeSet<Digest> {
    d.iter().cloned().collect()
}

fn session(repo: &RepositoryName, now_ms: i64) -> UploadSession {
    UploadSession::new(uuid::Uuid::new_v4().to_string(), repo.clone(), now_ms)
}

// ---------------------------------------------------------------------------------------
// Repositories

/// A repository exists once it has a blob link, a manifest or an upload session, and not
/// before.
pub async fn repositories_appear_on_first_link_manifest_or_upload(store: &dyn MetadataStore) {
    let prefix = unique_prefix();
    let by_link = repo_name(&prefix, "by-link");
    let by_manifest = repo_name(&prefix, "by-manifest");
    let by_upload = repo_name(&prefix, "by-upload");

    for r in [&by_link, &by_manifest, &by_upload] {
        assert!(
            !store.repository_exists(r).await.expect("repository_exists"),
            "{r} exists before anything was stored in it"
        );
    }
    assert_eq!(
        our_repositories(store, &prefix, &Page::default()).await,
        Vec::<String>::new()
    );

    store
        .link_blob(&by_link, &random_digest(), 3)
        .await
        .expect("link_blob");
    assert!(
        store
            .repository_exists(&by_link)
            .await
            .expect("repository_exists")
    );

    put(store, &manifest(&by_manifest, "m")).await;
    assert!(
        store
            .repository_exists(&by_manifest)
            .await
            .expect("repository_exists")
    );

    let s = session(&by_upload, 1_000);
    store.create_upload(&s).await.expect("create_upload");
    assert!(
        store
            .repository_exists(&by_upload)
            .await
            .expect("repository_exists")
    );

    assert_eq!(
        our_repositories(store, &prefix, &Page::default()).await,
        vec![
            by_link.to_string(),
            by_manifest.to_string(),
            by_upload.to_string()
        ]
    );
    assert_eq!(
        store
            .list_tags(&by_link, &Page::default())
            .await
            .expect("list_tags"),
        Some(vec![]),
        "a repository without tags lists no tags, not None"
    );
    store.delete_upload(&s.id).await.expect("delete_upload");
}

/// `_catalog` order is byte-wise (not locale, not case-folded), and `Page { last, limit }`
/// returns entries strictly after `last`, at most `limit`.
pub async fn repositories_listed_in_lexical_order_with_pagination(store: &dyn MetadataStore) {
    let prefix = unique_prefix();
    // Byte order: '-' < '.' < '/' < digits < '_' < letters. A locale collation would
    // order these differently.
    let labels = ["b", "ab", "a_b", "a0", "a/b", "a.b", "a-b", "a"];
    for label in labels {
        store
            .link_blob(&repo_name(&prefix, label), &random_digest(), 1)
            .await
            .expect("link_blob");
    }
    let mut expected: Vec<String> = labels.iter().map(|l| format!("{prefix}/{l}")).collect();
    expected.sort();

    // The whole catalog is strictly increasing and contains ours in order.
    let all: Vec<String> = store
        .list_repositories(&Page::default())
        .await
        .expect("list_repositories")
        .iter()
        .map(|r| r.as_str().to_string())
        .collect();
    assert!(
        all.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes()),
        "catalog is not in strictly increasing byte order: {all:?}"
    );
    assert_eq!(
        all.iter()
            .filter(|r| r.starts_with(&format!("{prefix}/")))
            .cloned()
            .collect::<Vec<_>>(),
        expected
    );

    // Nothing sorts between "<prefix>" and "<prefix>/…" except names under our prefix, so
    // pages starting there hold exactly our repositories even in a shared database.
    let mut collected = Vec::new();
    let mut last = prefix.clone();
    loop {
        let got = store
            .list_repositories(&page(Some(&last), Some(3)))
            .await
            .expect("list_repositories");
        assert!(got.len() <= 3, "limit 3 returned {} entries", got.len());
        let ours: Vec<String> = got
            .iter()
            .map(|r| r.as_str().to_string())
            .take_while(|r| r.starts_with(&format!("{prefix}/")))
            .collect();
        collected.extend(ours.iter().cloned());
        match (ours.len(), ours.last()) {
            (3, Some(l)) => last = l.clone(),
            _ => break,
        }
    }
    assert_eq!(collected, expected);

    // `last` need not be an existing name.
    let after = format!("{prefix}/a.c");
    assert_eq!(
        our_repositories(store, &prefix, &page(Some(&after), Some(2))).await,
        expected
            .iter()
            .filter(|r| r.as_str() > after.as_str())
            .take(2)
            .cloned()
            .collect::<Vec<_>>()
    );
    // A limit of zero returns nothing.
    assert_eq!(
        store
            .list_repositories(&page(Some(&prefix), Some(0)))
            .await
            .expect("list_repositories"),
        vec![]
    );
}

// ---------------------------------------------------------------------------------------
// Blob links

/// Suite case: blob links.
pub async fn blob_links(store: &dyn MetadataStore) {
    let prefix = unique_prefix();
    let a = repo_name(&prefix, "a");
    let b = repo_name(&prefix, "b");
    let d = random_digest();

    assert_eq!(store.blob_link(&a, &d).await.expect("blob_link"), None);
    store.link_blob(&a, &d, 1234).await.expect("link_blob");
    assert_eq!(
        store.blob_link(&a, &d).await.expect("blob_link"),
        Some(1234)
    );
    // Linking again is harmless.
    store
        .link_blob(&a, &d, 1234)
        .await
        .expect("link_blob again");
    assert_eq!(
        store.blob_link(&a, &d).await.expect("blob_link"),
        Some(1234)
    );
    // A link is per repository.
    assert_eq!(store.blob_link(&b, &d).await.expect("blob_link"), None);
    store.link_blob(&b, &d, 1234).await.expect("link_blob in b");
    // Sizes beyond 4 GiB survive.
    let big = random_digest();
    store
        .link_blob(&a, &big, 5 << 32)
        .await
        .expect("link_blob big");
    assert_eq!(
        store.blob_link(&a, &big).await.expect("blob_link"),
        Some(5 << 32)
    );

    assert!(store.unlink_blob(&a, &d).await.expect("unlink_blob"));
    assert_eq!(store.blob_link(&a, &d).await.expect("blob_link"), None);
    assert!(
        !store.unlink_blob(&a, &d).await.expect("unlink_blob again"),
        "unlinking twice reports no link"
    );
    // Unlinking in one repository leaves the other's link.
    assert_eq!(
        store.blob_link(&b, &d).await.expect("blob_link"),
        Some(1234)
    );
    let unknown = repo_name(&prefix, "never");
    assert!(
        !store
            .unlink_blob(&unknown, &d)
            .await
            .expect("unlink_blob unknown repo")
    );
    assert_eq!(
        store.blob_link(&unknown, &d).await.expect("blob_link"),
        None
    );

    assert!(store.unlink_blob(&b, &d).await.expect("unlink_blob"));
    assert!(store.unlink_blob(&a, &big).await.expect("unlink_blob"));
}

// ---------------------------------------------------------------------------------------
// Manifests

/// Unlinked blobs (including blobs linked only in another repository) are reported, and
/// nothing is stored: no manifest, no tag, and no repository that did not exist.
pub async fn put_manifest_with_missing_blobs_stores_nothing(store: &dyn MetadataStore) {
    let prefix = unique_prefix();
    let repo = repo_name(&prefix, "app");
    let other = repo_name(&prefix, "other");
    let linked = random_digest();
    let elsewhere = random_digest();
    let unknown = random_digest();
    store
        .link_blob(&repo, &linked, 10)
        .await
        .expect("link_blob");
    store
        .link_blob(&other, &elsewhere, 10)
        .await
        .expect("link_blob");

    let m = manifest(&repo, "m")
        .with_blob_refs(vec![linked.clone(), elsewhere.clone(), unknown.clone()])
        .with_tag(Some(tag("latest")));
    match store.put_manifest(&m).await {
        Err(MetadataError::MissingReferences { blobs, manifests }) => {
            assert_eq!(
                digest_set(&blobs),
                digest_set(&[elsewhere.clone(), unknown.clone()])
            );
            assert!(
                manifests.is_empty(),
                "no manifest refs were given: {manifests:?}"
            );
        }
        other => panic!("expected MissingReferences, got {other:?}"),
    }
    assert_eq!(
        store
            .get_manifest(&repo, &Reference::Digest(m.digest.clone()))
            .await
            .expect("get_manifest"),
        None
    );
    assert_eq!(
        store
            .get_manifest(&repo, &Reference::Tag(tag("latest")))
            .await
            .expect("get_manifest"),
        None
    );
    assert_eq!(
        tags_of(store, &repo, &Page::default()).await,
        Vec::<String>::new()
    );

    // A refused manifest does not create its repository.
    let fresh = repo_name(&prefix, "fresh");
    let mut m2 = m.clone();
    m2.repository = fresh.clone();
    assert!(matches!(
        store.put_manifest(&m2).await,
        Err(MetadataError::MissingReferences { .. })
    ));
    assert!(
        !store
            .repository_exists(&fresh)
            .await
            .expect("repository_exists")
    );
    assert_eq!(
        store
            .list_tags(&fresh, &Page::default())
            .await
            .expect("list_tags"),
        None
    );

    // Once everything is linked the same manifest goes in.
    store
        .link_blob(&repo, &elsewhere, 10)
        .await
        .expect("link_blob");
    store
        .link_blob(&repo, &unknown, 10)
        .await
        .expect("link_blob");
    put(store, &m).await;
    assert_eq!(
        tags_of(store, &repo, &Page::default()).await,
        vec!["latest"]
    );
}

/// An index's children must be manifests of the same repository: a manifest in another
/// repository or a mere blob link with that digest does not count.
pub async fn put_manifest_with_missing_child_manifests_stores_nothing(store: &dyn MetadataStore) {
    let prefix = unique_prefix();
    let repo = repo_name(&prefix, "app");
    let other = repo_name(&prefix, "other");

    let present = manifest(&repo, "present");
    put(store, &present).await;
    let elsewhere = manifest(&other, "elsewhere");
    put(store, &elsewhere).await;
    let as_blob = manifest(&repo, "as-blob");
    store
        .link_blob(&repo, &as_blob.digest, as_blob.content.len() as u64)
        .await
        .expect("link_blob");
    let config = random_digest();
    store.link_blob(&repo, &config, 2).await.expect("link_blob");

    let index_bytes = manifest_bytes("index");
    let index = NewManifest::new(
        repo.clone(),
        Digest::sha256_of(&index_bytes),
        IMAGE_INDEX.to_string(),
        index_bytes,
    )
    .with_blob_refs(vec![config.clone()])
    .with_manifest_refs(vec![
        present.digest.clone(),
        elsewhere.digest.clone(),
        as_blob.digest.clone(),
    ])
    .with_tag(Some(tag("multi")));

    match store.put_manifest(&index).await {
        Err(MetadataError::MissingReferences { blobs, manifests }) => {
            assert!(blobs.is_empty(), "the config blob is linked: {blobs:?}");
            assert_eq!(
                digest_set(&manifests),
                digest_set(&[elsewhere.digest.clone(), as_blob.digest.clone()])
            );
        }
        other => panic!("expected MissingReferences, got {other:?}"),
    }
    assert_eq!(
        store
            .get_manifest(&repo, &Reference::Digest(index.digest.clone()))
            .await
            .expect("get_manifest"),
        None
    );
    assert_eq!(
        tags_of(store, &repo, &Page::default()).await,
        Vec::<String>::new()
    );

    // Both kinds missing at once are both reported.
    let unknown_blob = random_digest();
    let both = index
        .clone()
        .with_blob_refs(vec![config, unknown_blob.clone()]);
    match store.put_manifest(&both).await {
        Err(MetadataError::MissingReferences { blobs, manifests }) => {
            assert_eq!(digest_set(&blobs), digest_set(&[unknown_blob]));
            assert_eq!(manifests.len(), 2, "{manifests:?}");
        }
        other => panic!("expected MissingReferences, got {other:?}"),
    }

    let mut elsewhere_here = elsewhere.clone();
    elsewhere_here.repository = repo.clone();
    put(store, &elsewhere_here).await;
    let mut as_blob_manifest = as_blob.clone();
    as_blob_manifest.repository = repo.clone();
    put(store, &as_blob_manifest).await;
    put(store, &index).await;
    let got = store
        .get_manifest(&repo, &Reference::Tag(tag("multi")))
        .await
        .expect("get_manifest")
        .expect("index stored");
    assert_eq!(got.digest, index.digest);
    assert_eq!(got.media_type, IMAGE_INDEX);
}

/// By tag and by digest a store returns the exact bytes and media type it was given,
/// for sha256 and sha512 digests alike, and only in the repository they were pushed to.
pub async fn get_manifest_by_tag_and_digest_returns_exact_bytes(store: &dyn MetadataStore) {
    let prefix = unique_prefix();
    let repo = repo_name(&prefix, "app");
    let other = repo_name(&prefix, "other");
    let layer = random_digest();
    store.link_blob(&repo, &layer, 99).await.expect("link_blob");

    let m = manifest(&repo, "exact")
        .with_blob_refs(vec![layer])
        .with_tag(Some(tag("v1")));
    put(store, &m).await;

    for reference in [
        Reference::Tag(tag("v1")),
        Reference::Digest(m.digest.clone()),
    ] {
        let got = store
            .get_manifest(&repo, &reference)
            .await
            .expect("get_manifest")
            .unwrap_or_else(|| panic!("manifest not found by {reference}"));
        assert_eq!(got.digest, m.digest);
        assert_eq!(got.media_type, IMAGE_MANIFEST);
        assert_eq!(
            got.content, m.content,
            "bytes differ when fetched by {reference}"
        );
    }

    // Non-UTF-8 bytes, a different media type and a sha512 digest.
    let raw = Bytes::from_static(b"\x00\xff binary \r\n\x80 not json");
    let docker = "application/vnd.docker.distribution.manifest.v2+json";
    let m512 = NewManifest::new(
        repo.clone(),
        Digest::sha512_of(&raw),
        docker.to_string(),
        raw.clone(),
    )
    .with_tag(Some(tag("v512")));
    put(store, &m512).await;
    for reference in [
        Reference::Tag(tag("v512")),
        Reference::Digest(m512.digest.clone()),
    ] {
        let got = store
            .get_manifest(&repo, &reference)
            .await
            .expect("get_manifest")
            .unwrap_or_else(|| panic!("manifest not found by {reference}"));
        assert_eq!(got.digest, m512.digest);
        assert_eq!(got.media_type, docker);
        assert_eq!(got.content, raw);
    }

    let missing = [
        (repo.clone(), Reference::Tag(tag("nope"))),
        (repo.clone(), Reference::Digest(random_digest())),
        (other.clone(), Reference::Tag(tag("v1"))),
        (other.clone(), Reference::Digest(m.digest.clone())),
    ];
    for (r, reference) in missing {
        assert_eq!(
            store
                .get_manifest(&r, &reference)
                .await
                .expect("get_manifest"),
            None,
            "{r}@{reference} should not exist"
        );
    }
}

/// Pushing a digest that is already stored is a no-op for the manifest but points the
/// tag at it, even if the tag was on another manifest.
pub async fn put_same_digest_again_moves_tag(store: &dyn MetadataStore) {
    let repo = unique_repo("app");
    let a = manifest(&repo, "a").with_tag(Some(tag("latest")));
    let b = manifest(&repo, "b").with_tag(Some(tag("latest")));
    let latest = Reference::Tag(tag("latest"));
    let digest_of = |r: Option<crate::ManifestRecord>| r.map(|r| r.digest);

    put(store, &a).await;
    assert_eq!(
        digest_of(store.get_manifest(&repo, &latest).await.expect("get")),
        Some(a.digest.clone())
    );
    put(store, &b).await;
    assert_eq!(
        digest_of(store.get_manifest(&repo, &latest).await.expect("get")),
        Some(b.digest.clone())
    );
    // `a` is still stored by digest.
    assert!(
        store
            .get_manifest(&repo, &Reference::Digest(a.digest.clone()))
            .await
            .expect("get")
            .is_some()
    );

    put(store, &a).await;
    assert_eq!(
        digest_of(store.get_manifest(&repo, &latest).await.expect("get")),
        Some(a.digest.clone())
    );
    // Same digest under a second tag: both tags point at it.
    put(store, &a.clone().with_tags([tag("stable")])).await;
    assert_eq!(
        digest_of(
            store
                .get_manifest(&repo, &Reference::Tag(tag("stable")))
                .await
                .expect("get")
        ),
        Some(a.digest.clone())
    );
    // Re-pushing without a tag changes nothing.
    put(store, &b.clone().with_tags([])).await;
    assert_eq!(
        digest_of(store.get_manifest(&repo, &latest).await.expect("get")),
        Some(a.digest.clone())
    );
    assert_eq!(
        tags_of(store, &repo, &Page::default()).await,
        vec!["latest", "stable"]
    );
    let got = store
        .get_manifest(&repo, &Reference::Digest(a.digest.clone()))
        .await
        .expect("get")
        .expect("a stored");
    assert_eq!(got.content, a.content);
}

/// One put with several tags points all of them at the manifest, moving those that
/// pointed elsewhere and leaving other tags alone; a tag named twice is stored once.
pub async fn several_tags_are_stored_together(store: &dyn MetadataStore) {
    let repo = unique_repo("app");
    let digest_by = |t: &'static str| {
        let repo = repo.clone();
        async move {
            store
                .get_manifest(&repo, &Reference::Tag(tag(t)))
                .await
                .expect("get_manifest")
                .map(|r| r.digest)
        }
    };
    let a = manifest(&repo, "a").with_tags([tag("v1"), tag("latest"), tag("v1.0"), tag("v1")]);
    put(store, &a).await;
    assert_eq!(
        tags_of(store, &repo, &Page::default()).await,
        vec!["latest", "v1", "v1.0"]
    );
    for t in ["latest", "v1", "v1.0"] {
        assert_eq!(digest_by(t).await, Some(a.digest.clone()), "tag {t}");
    }

    // A second manifest takes two of them and adds one; the third stays on `a`.
    let b = manifest(&repo, "b").with_tags([tag("latest"), tag("v2"), tag("v1")]);
    put(store, &b).await;
    assert_eq!(
        tags_of(store, &repo, &Page::default()).await,
        vec!["latest", "v1", "v1.0", "v2"]
    );
    for t in ["latest", "v1", "v2"] {
        assert_eq!(digest_by(t).await, Some(b.digest.clone()), "tag {t}");
    }
    assert_eq!(digest_by("v1.0").await, Some(a.digest.clone()));

    // Re-pushing a stored manifest with several tags moves them all back.
    put(store, &a.clone().with_tags([tag("latest"), tag("v2")])).await;
    for t in ["latest", "v1.0", "v2"] {
        assert_eq!(digest_by(t).await, Some(a.digest.clone()), "tag {t}");
    }
    assert_eq!(digest_by("v1").await, Some(b.digest.clone()));
}

/// With `tag_immutable`, one tag of a put that already points at another manifest refuses
/// the whole put: neither the manifest nor any of its other tags (new ones, or ones it
/// would move) is stored.
pub async fn one_immutable_tag_among_several_refuses_the_whole_push(store: &dyn MetadataStore) {
    let repo = unique_repo("frozen-many");
    let first = manifest(&repo, "first")
        .with_tags([tag("v1"), tag("stable")])
        .with_tag_immutable(true);
    put(store, &first).await;
    // Every tag already on this manifest: accepted and nothing changes.
    put(store, &first).await;

    let other = manifest(&repo, "other")
        .with_tags([tag("a-new"), tag("v1"), tag("z-new")])
        .with_tag_immutable(true);
    match store.put_manifest(&other).await {
        Err(MetadataError::TagImmutable { tag: t, current }) => {
            assert_eq!((t.as_str(), &current), ("v1", &first.digest));
        }
        r => panic!("moving one immutable tag of three: expected TagImmutable, got {r:?}"),
    }
    assert!(
        store
            .get_manifest(&repo, &Reference::Digest(other.digest.clone()))
            .await
            .expect("get_manifest")
            .is_none(),
        "a refused put stored its manifest"
    );
    assert_eq!(
        tags_of(store, &repo, &Page::default()).await,
        vec!["stable", "v1"],
        "a refused put created some of its tags"
    );

    // The same with the manifest already stored (by digest): no tag moves or appears.
    put(store, &other.clone().with_tags([])).await;
    match store.put_manifest(&other).await {
        Err(MetadataError::TagImmutable { current, .. }) => assert_eq!(current, first.digest),
        r => panic!("expected TagImmutable, got {r:?}"),
    }
    assert_eq!(
        tags_of(store, &repo, &Page::default()).await,
        vec!["stable", "v1"]
    );
    for t in ["stable", "v1"] {
        let got = store
            .get_manifest(&repo, &Reference::Tag(tag(t)))
            .await
            .expect("get_manifest")
            .map(|r| r.digest);
        assert_eq!(got, Some(first.digest.clone()), "a refused put moved {t}");
    }

    // Only new tags: accepted, all of them.
    put(
        store,
        &other
            .clone()
            .with_tags([tag("a-new"), tag("z-new")])
            .with_tag_immutable(true),
    )
    .await;
    assert_eq!(
        tags_of(store, &repo, &Page::default()).await,
        vec!["a-new", "stable", "v1", "z-new"]
    );
}

/// Tags are listed in byte-wise order (upper case before `_` before lower case) and
/// paginated like the catalog.
pub async fn tags_listed_in_lexical_order_with_pagination(store: &dyn MetadataStore) {
    let repo = unique_repo("app");
    let names = [
        "v1.9.0", "latest", "b", "a_1", "a1", "a.1", "a-1", "a", "_x", "Z9", "B", "A", "v1.10.0",
    ];
    let m = manifest(&repo, "tagged");
    for n in names {
        put(store, &m.clone().with_tag(Some(tag(n)))).await;
    }
    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(tags_of(store, &repo, &Page::default()).await, expected);
    assert_eq!(
        tags_of(store, &repo, &page(None, Some(4))).await,
        expected[..4]
    );
    assert_eq!(
        tags_of(store, &repo, &page(Some(&expected[3]), Some(4))).await,
        expected[4..8]
    );
    assert_eq!(
        tags_of(store, &repo, &page(Some(&expected[7]), None)).await,
        expected[8..]
    );
    assert_eq!(
        tags_of(store, &repo, &page(Some(&expected[11]), Some(10))).await,
        expected[12..]
    );
    // `last` need not be a tag, and a page past the end is empty.
    assert_eq!(
        tags_of(store, &repo, &page(Some("a0"), Some(2))).await,
        vec!["a1", "a_1"]
    );
    assert_eq!(
        tags_of(store, &repo, &page(Some("zzz"), Some(2))).await,
        Vec::<String>::new()
    );
    assert_eq!(
        tags_of(store, &repo, &page(None, Some(0))).await,
        Vec::<String>::new()
    );
}

/// Suite case: list tags of unknown repository is none.
pub async fn list_tags_of_unknown_repository_is_none(store: &dyn MetadataStore) {
    let repo = unique_repo("never");
    assert_eq!(
        store
            .list_tags(&repo, &Page::default())
            .await
            .expect("list_tags"),
        None
    );
    assert_eq!(
        store
            .list_tags(&repo, &page(Some("a"), Some(1)))
            .await
            .expect("list_tags"),
        None
    );
    assert!(
        !store
            .repository_exists(&repo)
            .await
            .expect("repository_exists")
    );
}

/// Suite case: delete tag keeps manifest.
pub async fn delete_tag_keeps_manifest(store: &dyn MetadataStore) {
    let repo = unique_repo("app");
    let m = manifest(&repo, "m");
    put(store, &m.clone().with_tag(Some(tag("one")))).await;
    put(store, &m.clone().with_tag(Some(tag("two")))).await;

    assert!(
        store
            .delete_tag(&repo, &tag("one"))
            .await
            .expect("delete_tag")
    );
    assert!(
        !store
            .delete_tag(&repo, &tag("one"))
            .await
            .expect("delete_tag again"),
        "deleting a deleted tag reports false"
    );
    assert!(
        !store
            .delete_tag(&repo, &tag("never"))
            .await
            .expect("delete_tag")
    );
    assert!(
        !store
            .delete_tag(&unique_repo("never"), &tag("one"))
            .await
            .expect("delete_tag unknown repo")
    );

    assert_eq!(tags_of(store, &repo, &Page::default()).await, vec!["two"]);
    assert_eq!(
        store
            .get_manifest(&repo, &Reference::Tag(tag("one")))
            .await
            .expect("get"),
        None
    );
    let got = store
        .get_manifest(&repo, &Reference::Digest(m.digest.clone()))
        .await
        .expect("get")
        .expect("manifest kept after its tag is deleted");
    assert_eq!(got.content, m.content);

    assert!(
        store
            .delete_tag(&repo, &tag("two"))
            .await
            .expect("delete_tag")
    );
    assert_eq!(
        tags_of(store, &repo, &Page::default()).await,
        Vec::<String>::new()
    );
    assert!(
        store
            .get_manifest(&repo, &Reference::Digest(m.digest.clone()))
            .await
            .expect("get")
            .is_some()
    );
}

/// The tag's digest and last move as the insight listings report them (the caller of
/// `delete_tag_if` reads them there).
async fn tag_as_seen(
    store: &dyn MetadataStore,
    repo: &RepositoryName,
    name: &str,
) -> (Digest, i64) {
    let insights = store
        .insights()
        .expect("a store with delete_tag_if lists tags with their last move");
    let tags = insights
        .tags_by_name(repo, name, None, 100)
        .await
        .expect("tags_by_name")
        .expect("repository exists");
    let t = tags
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("tag {name} listed"));
    (t.digest, t.updated_at)
}

/// `delete_tag_if` removes the tag only while it points at the digest and carries the
/// update time the caller saw: a tag moved to another manifest, or pushed again (even
/// with the same manifest), since then is kept. The manifest stays, as with `delete_tag`.
pub async fn delete_tag_if_removes_only_the_tag_as_seen(store: &dyn MetadataStore) {
    if store.insights().is_none() {
        return;
    }
    let repo = unique_repo("app");
    let a = manifest(&repo, "a");
    let b = manifest(&repo, "b");
    put(
        store,
        &a.clone()
            .with_tags([tag("moved"), tag("repushed"), tag("kept")]),
    )
    .await;
    let (moved_digest, moved_at) = tag_as_seen(store, &repo, "moved").await;
    let (repushed_digest, repushed_at) = tag_as_seen(store, &repo, "repushed").await;
    let (kept_digest, kept_at) = tag_as_seen(store, &repo, "kept").await;
    assert_eq!(moved_digest, a.digest);

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    put(store, &b.clone().with_tag(Some(tag("moved")))).await;
    put(store, &a.clone().with_tag(Some(tag("repushed")))).await;

    let delete_if = |name: &'static str, digest: Digest, at: i64| {
        let repo = repo.clone();
        async move {
            store
                .delete_tag_if(&repo, &tag(name), &digest, at)
                .await
                .expect("delete_tag_if")
        }
    };
    assert!(
        !delete_if("moved", moved_digest, moved_at).await,
        "a tag moved to another manifest since it was seen is kept"
    );
    assert!(
        !delete_if("repushed", repushed_digest.clone(), repushed_at).await,
        "a tag pushed again since it was seen is kept"
    );
    assert!(
        !delete_if("kept", b.digest.clone(), kept_at).await,
        "a tag pointing at another manifest than named is kept"
    );
    assert!(
        !delete_if("kept", kept_digest.clone(), kept_at + 1).await,
        "a tag last moved at another time than named is kept"
    );
    assert!(
        !store
            .delete_tag_if(&unique_repo("never"), &tag("kept"), &kept_digest, kept_at)
            .await
            .expect("delete_tag_if unknown repository")
    );
    assert_eq!(
        tags_of(store, &repo, &Page::default()).await,
        vec!["kept", "moved", "repushed"]
    );

    assert!(delete_if("kept", kept_digest.clone(), kept_at).await);
    assert!(
        !delete_if("kept", kept_digest, kept_at).await,
        "deleting a deleted tag reports false"
    );
    assert_eq!(
        tags_of(store, &repo, &Page::default()).await,
        vec!["moved", "repushed"]
    );
    assert!(
        store
            .get_manifest(&repo, &Reference::Digest(a.digest.clone()))
            .await
            .expect("get")
            .is_some(),
        "the manifest stays"
    );
    let (digest, at) = tag_as_seen(store, &repo, "moved").await;
    assert_eq!(digest, b.digest);
    assert!(delete_if("moved", digest, at).await);
    let (digest, at) = tag_as_seen(store, &repo, "repushed").await;
    assert_eq!(digest, repushed_digest);
    assert!(at > repushed_at);
    assert!(delete_if("repushed", digest, at).await);
}

/// A conditional delete racing a push that moves the tag: whichever commits first, the
/// tag ends up pointing at the pushed manifest (a delete after the move no longer
/// matches; a move after the delete creates the tag again).
pub async fn delete_tag_if_racing_a_move_keeps_the_moved_tag(store: &dyn MetadataStore) {
    if store.insights().is_none() {
        return;
    }
    let repo = unique_repo("race");
    let old = manifest(&repo, "old");
    put(store, &old).await;
    for round in 0..20 {
        let name = format!("t{round}");
        put(store, &old.clone().with_tag(Some(tag(&name)))).await;
        let (digest, at) = tag_as_seen(store, &repo, &name).await;
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let new = manifest(&repo, &name).with_tag(Some(tag(&name)));
        let (_, ()) = futures::join!(
            async {
                store
                    .delete_tag_if(&repo, &tag(&name), &digest, at)
                    .await
                    .expect("delete_tag_if")
            },
            put(store, &new)
        );
        let got = store
            .get_manifest(&repo, &Reference::Tag(tag(&name)))
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("round {round}: the moved tag was removed"));
        assert_eq!(got.digest, new.digest, "round {round}");
    }
}

/// Deleting a manifest deletes every tag on it and nothing else; the repository stays,
/// and the same manifest can be pushed again.
pub async fn delete_manifest_removes_its_tags(store: &dyn MetadataStore) {
    let prefix = unique_prefix();
    let repo = repo_name(&prefix, "app");
    let other = repo_name(&prefix, "other");
    let layer = random_digest();
    store.link_blob(&repo, &layer, 7).await.expect("link_blob");
    let m = manifest(&repo, "m").with_blob_refs(vec![layer.clone()]);
    let keep = manifest(&repo, "keep");
    put(store, &m.clone().with_tag(Some(tag("t1")))).await;
    put(store, &m.clone().with_tag(Some(tag("t2")))).await;
    put(store, &keep.clone().with_tag(Some(tag("t3")))).await;

    assert!(
        !store
            .delete_manifest(&other, &m.digest)
            .await
            .expect("delete_manifest"),
        "a manifest of another repository is not deleted"
    );
    assert!(
        !store
            .delete_manifest(&repo, &random_digest())
            .await
            .expect("delete_manifest")
    );

    assert!(
        store
            .delete_manifest(&repo, &m.digest)
            .await
            .expect("delete_manifest")
    );
    assert!(
        !store
            .delete_manifest(&repo, &m.digest)
            .await
            .expect("delete_manifest again")
    );
    assert_eq!(tags_of(store, &repo, &Page::default()).await, vec!["t3"]);
    for reference in [
        Reference::Tag(tag("t1")),
        Reference::Tag(tag("t2")),
        Reference::Digest(m.digest.clone()),
    ] {
        assert_eq!(
            store.get_manifest(&repo, &reference).await.expect("get"),
            None,
            "{reference} still resolves after delete"
        );
    }
    assert!(
        store
            .get_manifest(&repo, &Reference::Tag(tag("t3")))
            .await
            .expect("get")
            .is_some()
    );
    assert!(
        store
            .repository_exists(&repo)
            .await
            .expect("repository_exists")
    );
    assert_eq!(
        store.blob_link(&repo, &layer).await.expect("blob_link"),
        Some(7),
        "deleting a manifest does not unlink its blobs"
    );

    put(store, &m.clone().with_tag(Some(tag("t1")))).await;
    assert_eq!(
        tags_of(store, &repo, &Page::default()).await,
        vec!["t1", "t3"]
    );
}

// ---------------------------------------------------------------------------------------
// Referrers

fn referrer(repo: &RepositoryName, subject: &Digest, artifact_type: &str) -> NewManifest {
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "org.opencontainers.image.created".to_string(),
        "2024-01-02T03:04:05Z".to_string(),
    );
    annotations.insert("com.example.kind".to_string(), artifact_type.to_string());
    manifest(repo, artifact_type)
        .with_subject(Some(subject.clone()))
        .with_artifact_type(Some(artifact_type.to_string()))
        .with_annotations(annotations)
}

fn record_of(m: &NewManifest) -> ReferrerRecord {
    ReferrerRecord::new(
        m.digest.clone(),
        m.media_type.clone(),
        m.content.len() as u64,
        m.artifact_type.clone(),
        m.annotations.clone(),
    )
}

fn sorted_records(ms: &[&NewManifest]) -> Vec<ReferrerRecord> {
    let mut v: Vec<ReferrerRecord> = ms.iter().map(|m| record_of(m)).collect();
    v.sort_by(|a, b| a.digest.as_str().cmp(b.digest.as_str()));
    v
}

/// Referrers of a subject (which need not exist), ordered by digest, with their
/// descriptors' fields, optionally filtered by artifact type.
pub async fn referrers_by_subject_and_artifact_type(store: &dyn MetadataStore) {
    let repo = unique_repo("app");
    let subject = random_digest();
    const SBOM: &str = "application/vnd.example.sbom.v1+json";
    const SIG: &str = "application/vnd.example.signature.v1";

    assert_eq!(
        store
            .referrers(&repo, &subject, None)
            .await
            .expect("referrers"),
        vec![],
        "no referrers in an unknown repository"
    );

    let sbom1 = referrer(&repo, &subject, SBOM);
    let sbom2 = referrer(&repo, &subject, SBOM);
    let sig = referrer(&repo, &subject, SIG).with_annotations(BTreeMap::new());
    let unrelated = referrer(&repo, &random_digest(), SBOM);
    let plain = manifest(&repo, "plain").with_tag(Some(tag("latest")));
    let untyped = manifest(&repo, "untyped").with_subject(Some(subject.clone()));
    for m in [&sbom1, &sbom2, &sig, &unrelated, &plain, &untyped] {
        put(store, m).await;
    }

    assert_eq!(
        store
            .referrers(&repo, &subject, None)
            .await
            .expect("referrers"),
        sorted_records(&[&sbom1, &sbom2, &sig, &untyped])
    );
    assert_eq!(
        store
            .referrers(&repo, &subject, Some(SBOM))
            .await
            .expect("referrers"),
        sorted_records(&[&sbom1, &sbom2])
    );
    assert_eq!(
        store
            .referrers(&repo, &subject, Some(SIG))
            .await
            .expect("referrers"),
        sorted_records(&[&sig])
    );
    assert_eq!(
        store
            .referrers(&repo, &subject, Some("application/vnd.example.none"))
            .await
            .expect("referrers"),
        vec![]
    );

    // Deleting a referrer removes it from the list.
    assert!(
        store
            .delete_manifest(&repo, &sbom1.digest)
            .await
            .expect("delete_manifest")
    );
    assert_eq!(
        store
            .referrers(&repo, &subject, None)
            .await
            .expect("referrers"),
        sorted_records(&[&sbom2, &sig, &untyped])
    );
}

/// Suite case: referrers isolated per repository.
pub async fn referrers_isolated_per_repository(store: &dyn MetadataStore) {
    let prefix = unique_prefix();
    let a = repo_name(&prefix, "a");
    let b = repo_name(&prefix, "b");
    let subject = random_digest();
    const SIG: &str = "application/vnd.example.signature.v1";

    let in_a = referrer(&a, &subject, SIG);
    let in_b = referrer(&b, &subject, SIG);
    put(store, &in_a).await;
    put(store, &in_b).await;

    assert_eq!(
        store
            .referrers(&a, &subject, None)
            .await
            .expect("referrers"),
        vec![record_of(&in_a)]
    );
    assert_eq!(
        store
            .referrers(&b, &subject, Some(SIG))
            .await
            .expect("referrers"),
        vec![record_of(&in_b)]
    );
    // The same referrer pushed to both repositories is listed once in each.
    let mut shared = in_a.clone();
    shared.repository = b.clone();
    put(store, &shared).await;
    assert_eq!(
        store
            .referrers(&b, &subject, None)
            .await
            .expect("referrers"),
        sorted_records(&[&in_a, &in_b])
    );
    assert_eq!(
        store
            .referrers(&a, &subject, None)
            .await
            .expect("referrers"),
        vec![record_of(&in_a)]
    );
}

// ---------------------------------------------------------------------------------------
// Concurrency

/// Many pushes of different manifests to the same tag at once: all succeed, every manifest
/// is stored, and the tag ends on exactly one of them.
pub async fn concurrent_put_manifest_same_tag(store: &dyn MetadataStore) {
    let repo = unique_repo("app");
    let layer = random_digest();
    store.link_blob(&repo, &layer, 1).await.expect("link_blob");
    let manifests: Vec<NewManifest> = (0..16)
        .map(|i| {
            manifest(&repo, &format!("racer-{i}"))
                .with_blob_refs(vec![layer.clone()])
                .with_tag(Some(tag("latest")))
        })
        .collect();

    let results = join_all(manifests.iter().map(|m| store.put_manifest(m))).await;
    for (m, r) in manifests.iter().zip(results) {
        if let Err(e) = r {
            panic!("concurrent put_manifest {} failed: {e}", m.digest);
        }
    }

    assert_eq!(
        tags_of(store, &repo, &Page::default()).await,
        vec!["latest"]
    );
    let tagged = store
        .get_manifest(&repo, &Reference::Tag(tag("latest")))
        .await
        .expect("get_manifest")
        .expect("tag resolves");
    let winner = manifests
        .iter()
        .find(|m| m.digest == tagged.digest)
        .unwrap_or_else(|| panic!("tag points at unknown manifest {}", tagged.digest));
    assert_eq!(tagged.content, winner.content);
    for m in &manifests {
        let got = store
            .get_manifest(&repo, &Reference::Digest(m.digest.clone()))
            .await
            .expect("get_manifest")
            .unwrap_or_else(|| panic!("manifest {} lost in the race", m.digest));
        assert_eq!(got.content, m.content);
    }
}

/// Many repositories linking the same new blob at once all succeed.
pub async fn concurrent_link_blob_same_digest(store: &dyn MetadataStore) {
    let prefix = unique_prefix();
    let digest = random_digest();
    let repos: Vec<RepositoryName> = (0..16)
        .map(|i| repo_name(&prefix, &format!("r{i:02}")))
        .collect();
    let results = join_all(repos.iter().map(|r| store.link_blob(r, &digest, 77))).await;
    for (r, res) in repos.iter().zip(results) {
        if let Err(e) = res {
            panic!("concurrent link_blob in {r} failed: {e}");
        }
    }
    for r in &repos {
        assert_eq!(
            store.blob_link(r, &digest).await.expect("blob_link"),
            Some(77)
        );
    }
    let mut expected: Vec<String> = repos.iter().map(|r| r.to_string()).collect();
    expected.sort();
    assert_eq!(
        our_repositories(store, &prefix, &Page::default()).await,
        expected
    );
}

/// `tag_immutable`: the tag is created, re-pushing its manifest is fine, another manifest
/// is refused with `TagImmutable` and stores nothing; a mutable put still moves it.
pub async fn immutable_tag_is_never_moved(store: &dyn MetadataStore) {
    let repo = unique_repo("frozen");
    let first = manifest(&repo, "first")
        .with_tag(Some(tag("v1")))
        .with_tag_immutable(true);
    put(store, &first).await;
    put(store, &first).await;
    let other = manifest(&repo, "other")
        .with_tag(Some(tag("v1")))
        .with_tag_immutable(true);
    match store.put_manifest(&other).await {
        Err(MetadataError::TagImmutable { tag: t, current }) => {
            assert_eq!((t.as_str(), &current), ("v1", &first.digest));
        }
        r => panic!("moving an immutable tag: expected TagImmutable, got {r:?}"),
    }
    let by_tag = store
        .get_manifest(&repo, &Reference::Tag(tag("v1")))
        .await
        .expect("get_manifest")
        .expect("tag resolves");
    assert_eq!(by_tag.digest, first.digest, "a refused put moved the tag");
    assert!(
        store
            .get_manifest(&repo, &Reference::Digest(other.digest.clone()))
            .await
            .expect("get_manifest")
            .is_none(),
        "a refused put stored its manifest"
    );
    // The flag only guards the tag: the refused manifest by digest, or a mutable put, go in.
    put(store, &other.clone().with_tags([])).await;
    let moved = manifest(&repo, "moved").with_tag(Some(tag("v1")));
    put(store, &moved).await;
    let by_tag = store
        .get_manifest(&repo, &Reference::Tag(tag("v1")))
        .await
        .expect("get_manifest")
        .expect("tag resolves");
    assert_eq!(by_tag.digest, moved.digest);
}

/// Racing first pushes of one immutable tag with different manifests: exactly one wins,
/// the others get `TagImmutable` naming the winner, and the tag points at the winner.
pub async fn concurrent_first_pushes_of_an_immutable_tag(store: &dyn MetadataStore) {
    let repo = unique_repo("frozen-race");
    let manifests: Vec<NewManifest> = (0..8)
        .map(|i| {
            manifest(&repo, &format!("racer-{i}"))
                .with_tag(Some(tag("release")))
                .with_tag_immutable(true)
        })
        .collect();
    let results = join_all(manifests.iter().map(|m| store.put_manifest(m))).await;
    let winners: Vec<&NewManifest> = manifests
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .map(|(m, _)| m)
        .collect();
    assert_eq!(winners.len(), 1, "racing first pushes: {results:?}");
    let winner = winners[0];
    for r in &results {
        match r {
            Ok(()) => {}
            Err(MetadataError::TagImmutable { current, .. }) => {
                assert_eq!(current, &winner.digest)
            }
            Err(e) => panic!("a racing first push failed otherwise: {e}"),
        }
    }
    let by_tag = store
        .get_manifest(&repo, &Reference::Tag(tag("release")))
        .await
        .expect("get_manifest")
        .expect("tag resolves");
    assert_eq!(by_tag.digest, winner.digest);
}
