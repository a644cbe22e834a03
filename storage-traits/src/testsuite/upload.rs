//! Behaviour cases for [`UploadSessionStore`] implementations.
//!
//! Every case is a `pub async fn case(store: &dyn UploadSessionStore)` that checks one part
//! of the trait's `# Behavior` contract. Each case uses session ids of its own (random
//! UUIDs) in repositories under its own random prefix, so cases may run concurrently
//! against one shared database and a store that already holds other sessions passes too;
//! every case deletes the sessions it created.
//!
//! # Running the suite in a backend crate
//!
//! [`upload_session_store_tests!`](crate::upload_session_store_tests) works as
//! [`metadata_store_tests!`](crate::metadata_store_tests) does (see [its
//! docs](crate::testsuite::metadata)): one expression that makes a fresh store, evaluated
//! inside each generated `#[tokio::test]`, then optional attributes for every test. The
//! expression may be a store `S: UploadSessionStore` (every [`MetadataStore`] is one), an
//! `Arc` of it, an `Arc<dyn UploadSessionStore>` or `Arc<dyn MetadataStore>`, or a
//! `(store, guard)` tuple.
//!
//! ```ignore
//! // metadata-foo/tests/behaviour.rs
//! storage_traits::metadata_store_tests!(make_store().await);
//! storage_traits::upload_session_store_tests!(make_store().await);
//! ```

use std::sync::Arc;

use futures::future::join_all;
use oci_spec_types::RepositoryName;

use crate::{MetadataStore, UploadSession, UploadSessionStore, UploadUpdate};

/// How a case gets the store out of whatever the macro's expression built (the same
/// shape as [`AsMetadataStore`](crate::testsuite::metadata::AsMetadataStore)).
pub trait AsUploadSessionStore {
    /// The store the cases run against.
    fn as_upload_session_store(&self) -> &dyn UploadSessionStore;
}

impl<S: UploadSessionStore> AsUploadSessionStore for S {
    fn as_upload_session_store(&self) -> &dyn UploadSessionStore {
        self
    }
}

impl AsUploadSessionStore for dyn UploadSessionStore {
    fn as_upload_session_store(&self) -> &dyn UploadSessionStore {
        self
    }
}

impl AsUploadSessionStore for dyn MetadataStore {
    fn as_upload_session_store(&self) -> &dyn UploadSessionStore {
        self
    }
}

impl<S: AsUploadSessionStore + ?Sized> AsUploadSessionStore for Arc<S> {
    fn as_upload_session_store(&self) -> &dyn UploadSessionStore {
        (**self).as_upload_session_store()
    }
}

/// A store together with something that must outlive it (a temporary directory, a
/// database container).
impl<S: AsUploadSessionStore, G> AsUploadSessionStore for (S, G) {
    fn as_upload_session_store(&self) -> &dyn UploadSessionStore {
        self.0.as_upload_session_store()
    }
}

/// Expands to one `#[tokio::test]` per case of [`testsuite::upload`](crate::testsuite::upload),
/// each running the case against a fresh store made by the given expression.
///
/// ```ignore
/// storage_traits::upload_session_store_tests!(make_store().await);
/// ```
#[macro_export]
macro_rules! upload_session_store_tests {
    ($make:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::__upload_session_store_case!([$(#[$attr])*] ($make) upload_session_lifecycle);
        $crate::__upload_session_store_case!([$(#[$attr])*] ($make) update_upload_is_compare_and_swap);
        $crate::__upload_session_store_case!([$(#[$attr])*] ($make) stale_uploads_by_last_write);
        $crate::__upload_session_store_case!([$(#[$attr])*] ($make) count_uploads_matches_the_sessions);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __upload_session_store_case {
    ([$($attr:tt)*] ($make:expr) $case:ident) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $($attr)*
        async fn $case() {
            let store = $make;
            $crate::testsuite::upload::$case(
                $crate::testsuite::upload::AsUploadSessionStore::as_upload_session_store(&store),
            )
            .await;
        }
    };
}

// ---------------------------------------------------------------------------------------
// Helpers

/// A repository `us<random>/<label>` of its own.
fn unique_repo(label: &str) -> RepositoryName {
    format!("us{}/{label}", uuid::Uuid::new_v4().simple())
        .parse()
        .expect("test repository name is valid")
}

fn session(repo: &RepositoryName, now_ms: i64) -> UploadSession {
    UploadSession::new(uuid::Uuid::new_v4().to_string(), repo.clone(), now_ms)
}

// ---------------------------------------------------------------------------------------
// Cases

/// Suite case: upload session lifecycle.
pub async fn upload_session_lifecycle(store: &dyn UploadSessionStore) {
    let repo = unique_repo("app");
    let s = session(&repo, 1_700_000_000_000);

    assert_eq!(store.get_upload(&s.id).await.expect("get_upload"), None);
    store.create_upload(&s).await.expect("create_upload");
    assert_eq!(
        store.get_upload(&s.id).await.expect("get_upload"),
        Some(s.clone())
    );

    // A session created with a hash state and an offset keeps them.
    let mut s2 = session(&repo, 1_700_000_000_001);
    s2.offset = 42;
    s2.hash_state = Some(vec![0, 1, 2, 255]);
    store.create_upload(&s2).await.expect("create_upload");
    assert_eq!(
        store.get_upload(&s2.id).await.expect("get_upload"),
        Some(s2.clone())
    );

    assert!(
        store
            .update_upload(
                &UploadUpdate::new(&s.id)
                    .with_new_offset(1 << 33)
                    .with_hash_state(Some(&[9u8; 200]))
                    .with_updated_at(1_700_000_000_500)
            )
            .await
            .expect("update_upload")
    );
    let got = store
        .get_upload(&s.id)
        .await
        .expect("get_upload")
        .expect("session exists");
    assert_eq!(got.offset, 1 << 33);
    assert_eq!(got.hash_state, Some(vec![9u8; 200]));
    assert_eq!(got.created_at, s.created_at, "created_at never changes");
    assert_eq!(got.updated_at, 1_700_000_000_500);
    assert_eq!(got.repository, repo);

    // Clearing the hash state.
    assert!(
        store
            .update_upload(
                &UploadUpdate::new(&s.id)
                    .with_expected_offset(1 << 33)
                    .with_new_offset((1 << 33) + 1)
                    .with_updated_at(1_700_000_000_600)
            )
            .await
            .expect("update_upload")
    );
    assert_eq!(
        store
            .get_upload(&s.id)
            .await
            .expect("get_upload")
            .and_then(|s| s.hash_state),
        None
    );

    assert!(store.delete_upload(&s.id).await.expect("delete_upload"));
    assert_eq!(store.get_upload(&s.id).await.expect("get_upload"), None);
    assert!(
        !store
            .delete_upload(&s.id)
            .await
            .expect("delete_upload again")
    );
    assert!(
        !store
            .update_upload(
                &UploadUpdate::new(&s.id)
                    .with_expected_offset((1 << 33) + 1)
                    .with_new_offset(5)
                    .with_updated_at(1)
            )
            .await
            .expect("update_upload of deleted"),
        "updating a deleted session reports false"
    );
    // The other session is untouched.
    assert_eq!(
        store.get_upload(&s2.id).await.expect("get_upload"),
        Some(s2.clone())
    );
    assert!(store.delete_upload(&s2.id).await.expect("delete_upload"));
}

/// `update_upload` applies only when the stored offset is the expected one; otherwise it
/// returns false and changes nothing. Of many racing updates from the same offset exactly
/// one wins.
pub async fn update_upload_is_compare_and_swap(store: &dyn UploadSessionStore) {
    let repo = unique_repo("app");
    let s = session(&repo, 1_000);
    store.create_upload(&s).await.expect("create_upload");

    assert!(
        store
            .update_upload(
                &UploadUpdate::new(&s.id)
                    .with_new_offset(10)
                    .with_hash_state(Some(b"state-10"))
                    .with_updated_at(2_000)
            )
            .await
            .expect("update_upload")
    );
    let before = store
        .get_upload(&s.id)
        .await
        .expect("get_upload")
        .expect("session exists");

    for wrong in [0, 9, 11, 20] {
        assert!(
            !store
                .update_upload(
                    &UploadUpdate::new(&s.id)
                        .with_expected_offset(wrong)
                        .with_new_offset(20)
                        .with_hash_state(Some(b"state-20"))
                        .with_updated_at(3_000)
                )
                .await
                .expect("update_upload"),
            "update with expected offset {wrong} applied although the offset is 10"
        );
        assert_eq!(
            store.get_upload(&s.id).await.expect("get_upload"),
            Some(before.clone()),
            "a refused update changed the session"
        );
    }
    assert!(
        !store
            .update_upload(
                &UploadUpdate::new("no-such-session")
                    .with_new_offset(1)
                    .with_updated_at(1)
            )
            .await
            .expect("update_upload unknown")
    );

    // Racing appends from the same offset: exactly one is acknowledged.
    let racers = 16u64;
    let results = join_all((0..racers).map(|i| {
        let state = i.to_be_bytes();
        let id = s.id.clone();
        async move {
            store
                .update_upload(
                    &UploadUpdate::new(&id)
                        .with_expected_offset(10)
                        .with_new_offset(100 + i)
                        .with_hash_state(Some(&state))
                        .with_updated_at(4_000 + i as i64),
                )
                .await
        }
    }))
    .await;
    let winners: Vec<u64> = results
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Ok(true) => Some(i as u64),
            Ok(false) => None,
            Err(e) => panic!("update_upload failed: {e}"),
        })
        .collect();
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let w = winners[0];
    let after = store
        .get_upload(&s.id)
        .await
        .expect("get_upload")
        .expect("session exists");
    assert_eq!(after.offset, 100 + w);
    assert_eq!(after.hash_state, Some(w.to_be_bytes().to_vec()));
    assert_eq!(after.updated_at, 4_000 + w as i64);

    assert!(store.delete_upload(&s.id).await.expect("delete_upload"));
}

/// `stale_uploads` lists sessions whose last write is strictly older than the cut-off,
/// and an update makes a session fresh again.
pub async fn stale_uploads_by_last_write(store: &dyn UploadSessionStore) {
    let repo = unique_repo("app");
    // Timestamps far in the past, so only sessions of this case (and of other suites that
    // use tiny timestamps, filtered out by id) are candidates.
    let old = session(&repo, 1_000);
    let newer = session(&repo, 2_000);
    store.create_upload(&old).await.expect("create_upload");
    store.create_upload(&newer).await.expect("create_upload");
    let ours = |v: Vec<UploadSession>| -> Vec<UploadSession> {
        let mut v: Vec<UploadSession> = v
            .into_iter()
            .filter(|s| s.id == old.id || s.id == newer.id)
            .collect();
        v.sort_by_key(|s| s.updated_at);
        v
    };

    assert_eq!(
        ours(store.stale_uploads(1_000).await.expect("stale_uploads")),
        vec![],
        "the cut-off is exclusive"
    );
    assert_eq!(
        ours(store.stale_uploads(1_500).await.expect("stale_uploads")),
        vec![old.clone()]
    );
    assert_eq!(
        ours(store.stale_uploads(2_001).await.expect("stale_uploads")),
        vec![old.clone(), newer.clone()]
    );

    assert!(
        store
            .update_upload(
                &UploadUpdate::new(&old.id)
                    .with_new_offset(5)
                    .with_updated_at(3_000)
            )
            .await
            .expect("update_upload")
    );
    assert_eq!(
        ours(store.stale_uploads(2_500).await.expect("stale_uploads")),
        vec![newer.clone()]
    );
    let all = ours(store.stale_uploads(i64::MAX).await.expect("stale_uploads"));
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].id, old.id);
    assert_eq!(all[1].offset, 5);

    assert!(store.delete_upload(&newer.id).await.expect("delete_upload"));
    assert_eq!(
        ours(store.stale_uploads(i64::MAX).await.expect("stale_uploads")).len(),
        1
    );
    assert!(store.delete_upload(&old.id).await.expect("delete_upload"));
}

/// `count_uploads` counts every open session, before and after this case's sessions are
/// closed. Other cases may share the store and open or close sessions meanwhile (the
/// PostgreSQL suite runs them concurrently on one database), so each count is compared
/// with the listing in a window where the listing did not change.
pub async fn count_uploads_matches_the_sessions(store: &dyn UploadSessionStore) {
    let repo = unique_repo("count");
    let ours: Vec<UploadSession> = (0..5).map(|i| session(&repo, 10_000 + i)).collect();
    for s in &ours {
        store.create_upload(s).await.expect("create_upload");
    }
    let open = count_against_listing(store).await;
    assert!(open >= ours.len() as u64, "{open} < {}", ours.len());
    for s in &ours {
        assert!(store.delete_upload(&s.id).await.expect("delete_upload"));
    }
    count_against_listing(store).await;
}

/// `count_uploads`, checked against `stale_uploads` taken just before and after it.
async fn count_against_listing(store: &dyn UploadSessionStore) -> u64 {
    let listed = || async {
        store
            .stale_uploads(i64::MAX)
            .await
            .expect("stale_uploads")
            .len() as u64
    };
    for _ in 0..50 {
        let before = listed().await;
        let counted = store.count_uploads().await.expect("count_uploads");
        if listed().await == before {
            assert_eq!(counted, before, "count_uploads against the listing");
            return counted;
        }
    }
    panic!("the sessions never held still for a comparison");
}
