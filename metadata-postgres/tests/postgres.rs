//! PostgreSQL-specific checks: migrations (newer schema refused, concurrent first
//! connects), byte-wise collation, the row locks of `put_manifest`, and several replicas
//! (separate pools) racing on one tag while manifests are deleted.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use metadata_postgres::{MigrationError, PoolOptions, PostgresMetadataStore, SCHEMA_VERSION};
use oci_spec_types::{Digest, Reference, RepositoryName, Tag};
use storage_traits::{MetadataError, MetadataStore, NewManifest, Page, UploadSessionStore};
use test_support::postgres::Postgres;

const IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const IMAGE_INDEX: &str = "application/vnd.oci.image.index.v1+json";

async fn server() -> &'static Postgres {
    tokio::task::spawn_blocking(Postgres::shared)
        .await
        .expect("start PostgreSQL")
}

async fn fresh_database(label: &'static str) -> String {
    let pg = server().await;
    tokio::task::spawn_blocking(move || pg.unique_database(label))
        .await
        .expect("create database")
}

async fn connect(url: &str) -> PostgresMetadataStore {
    PostgresMetadataStore::connect_with(url, PoolOptions::default().with_max_connections(8))
        .await
        .expect("connect to PostgreSQL")
}

/// A plain client, to look at and tamper with rows behind the store's back.
async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("raw connect");
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("raw connection: {e}");
        }
    });
    client
}

fn unique_repo(label: &str) -> RepositoryName {
    format!("pg{}/{label}", uuid::Uuid::new_v4().simple())
        .parse()
        .expect("repository name")
}

fn tag(s: &str) -> Tag {
    s.parse().expect("tag")
}

fn random_digest() -> Digest {
    Digest::sha256_of(uuid::Uuid::new_v4().as_bytes())
}

fn manifest(repo: &RepositoryName, media_type: &str) -> NewManifest {
    let content = Bytes::from(format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{media_type}\",\"nonce\":\"{}\"}}",
        uuid::Uuid::new_v4()
    ));
    NewManifest::new(
        repo.clone(),
        Digest::sha256_of(&content),
        media_type.to_string(),
        content,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_schema_is_refused() {
    let url = fresh_database("newer_schema").await;
    drop(connect(&url).await);

    raw(&url)
        .await
        .execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, 'from-the-future', 0)",
            &[&(SCHEMA_VERSION + 1)],
        )
        .await
        .expect("record a future migration");

    let err = PostgresMetadataStore::connect(&url)
        .await
        .expect_err("a newer schema must be refused");
    let message = err.to_string();
    let MetadataError::Backend { backend, source } = err else {
        panic!("expected a backend error, got {err:?}");
    };
    assert_eq!(backend, "postgres");
    match source.downcast_ref::<MigrationError>() {
        Some(MigrationError::SchemaTooNew { found, supported }) => {
            assert_eq!(*found, SCHEMA_VERSION + 1);
            assert_eq!(*supported, SCHEMA_VERSION);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert!(message.contains("newer"), "unclear message: {message}");
}

/// Replicas starting together against an empty database: all connect, the schema is
/// migrated exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_connects_migrate_once() {
    let url = fresh_database("concurrent_connect").await;
    let results = futures::future::join_all((0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            PostgresMetadataStore::connect_with(
                &url,
                PoolOptions::default().with_max_connections(2),
            )
            .await
        })
    }))
    .await;
    for r in results {
        r.expect("task").expect("every replica connects");
    }
    let versions: Vec<i64> = raw(&url)
        .await
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("schema_migrations")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_keeps_data() {
    let url = fresh_database("reconnect").await;
    let repo = unique_repo("app");
    let digest = random_digest();
    connect(&url)
        .await
        .link_blob(&repo, &digest, 5 << 32)
        .await
        .expect("link_blob");
    let again = connect(&url).await;
    assert_eq!(
        again.blob_link(&repo, &digest).await.expect("blob_link"),
        Some(5 << 32)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_url_and_unreachable_server_are_backend_errors() {
    for url in [
        "postgres://user@127.0.0.1:notaport/db",
        // Nothing listens on port 1; connecting fails at once.
        "postgres://postgres@127.0.0.1:1/registry?connect_timeout=2",
    ] {
        match PostgresMetadataStore::connect(url).await {
            Err(MetadataError::Backend { backend, .. }) => assert_eq!(backend, "postgres"),
            other => panic!("{url}: expected a backend error, got {other:?}"),
        }
    }
}

/// The catalog and tag order rely on byte-wise comparison of every name column, which
/// the test cluster (initialised with the C locale) would not catch by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_and_digest_columns_collate_bytewise() {
    let url = server().await.url.clone();
    drop(connect(&url).await);
    let rows = raw(&url)
        .await
        .query(
            "SELECT table_name::text, column_name::text, collation_name::text
             FROM information_schema.columns
             WHERE table_schema = current_schema()
               AND data_type = 'text'
               AND column_name IN ('name', 'digest', 'subject', 'child_digest', 'id', 'repository')
               AND table_name <> 'schema_migrations'",
            &[],
        )
        .await
        .expect("columns");
    assert!(rows.len() >= 9, "too few columns found: {}", rows.len());
    for r in rows {
        let (table, column, collation): (String, String, Option<String>) =
            (r.get(0), r.get(1), r.get(2));
        assert_eq!(
            collation.as_deref(),
            Some("C"),
            "{table}.{column} is not COLLATE \"C\""
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_are_errors_not_panics() {
    let url = fresh_database("corrupt").await;
    let store = connect(&url).await;
    let repo = unique_repo("app");
    let subject = random_digest();
    let m = manifest(&repo, IMAGE_MANIFEST)
        .with_subject(Some(subject.clone()))
        .with_tag(Some(tag("v1")));
    store.put_manifest(&m).await.expect("put_manifest");
    let s = storage_traits::UploadSession::new("u1".into(), repo.clone(), 1);
    store.create_upload(&s).await.expect("create_upload");

    raw(&url)
        .await
        .batch_execute(
            "UPDATE manifests SET annotations = 'not json';
             UPDATE tags SET name = 'bad/tag';
             ALTER TABLE upload_sessions DROP CONSTRAINT upload_sessions_byte_offset_check;
             UPDATE upload_sessions SET byte_offset = -1;",
        )
        .await
        .expect("corrupt rows");

    assert!(matches!(
        store.referrers(&repo, &subject, None).await,
        Err(MetadataError::Corrupt(_))
    ));
    assert!(matches!(
        store.list_tags(&repo, &Page::default()).await,
        Err(MetadataError::Corrupt(_))
    ));
    assert!(matches!(
        store.get_upload("u1").await,
        Err(MetadataError::Corrupt(_))
    ));
}

/// Waits until `task` has been blocked for a while, proving it waits on a lock.
async fn assert_blocked<T>(task: &tokio::task::JoinHandle<T>) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !task.is_finished(),
        "put_manifest did not wait for the other transaction's row lock"
    );
}

/// `put_manifest` locks the rows it checked: a concurrent, not yet committed unlink of a
/// referenced blob makes it wait, and once the unlink commits the put is refused rather
/// than storing a manifest whose blob is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_manifest_waits_for_an_uncommitted_unlink_of_its_blob() {
    let url = server().await.url.clone();
    let store = Arc::new(connect(&url).await);
    let repo = unique_repo("app");
    let layer = random_digest();
    store.link_blob(&repo, &layer, 1).await.expect("link_blob");

    let mut other = raw(&url).await;
    let tx = other.transaction().await.expect("begin");
    let unlinked = tx
        .execute(
            "DELETE FROM repository_blobs
             WHERE repo_id = (SELECT id FROM repositories WHERE name = $1) AND digest = $2",
            &[&repo.as_str(), &layer.as_str()],
        )
        .await
        .expect("unlink inside the other transaction");
    assert_eq!(unlinked, 1);

    let m = manifest(&repo, IMAGE_MANIFEST)
        .with_blob_refs(vec![layer.clone()])
        .with_tag(Some(tag("latest")));
    let put = tokio::spawn({
        let (store, m) = (store.clone(), m.clone());
        async move { store.put_manifest(&m).await }
    });
    assert_blocked(&put).await;
    tx.commit().await.expect("commit the unlink");

    match put.await.expect("task") {
        Err(MetadataError::MissingReferences { blobs, manifests }) => {
            assert_eq!(blobs, vec![layer]);
            assert!(manifests.is_empty());
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
}

/// The same for a child manifest of an index; when the delete rolls back, the put goes
/// through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_manifest_waits_for_an_uncommitted_delete_of_its_child() {
    let url = server().await.url.clone();
    let store = Arc::new(connect(&url).await);
    let repo = unique_repo("app");
    let child = manifest(&repo, IMAGE_MANIFEST).with_tag(Some(tag("child")));
    store.put_manifest(&child).await.expect("put child");

    for commit in [false, true] {
        let mut other = raw(&url).await;
        let tx = other.transaction().await.expect("begin");
        let deleted = tx
            .execute(
                "DELETE FROM manifests
                 WHERE repo_id = (SELECT id FROM repositories WHERE name = $1) AND digest = $2",
                &[&repo.as_str(), &child.digest.as_str()],
            )
            .await
            .expect("delete inside the other transaction");
        assert_eq!(deleted, 1);

        let index = manifest(&repo, IMAGE_INDEX)
            .with_manifest_refs(vec![child.digest.clone()])
            .with_tag(Some(tag("multi")));
        let put = tokio::spawn({
            let (store, index) = (store.clone(), index.clone());
            async move { store.put_manifest(&index).await }
        });
        assert_blocked(&put).await;
        let result = if commit {
            tx.commit().await.expect("commit the delete");
            put.await.expect("task")
        } else {
            tx.rollback().await.expect("roll the delete back");
            put.await.expect("task")
        };
        match (commit, result) {
            (false, Ok(())) => {
                let got = store
                    .get_manifest(&repo, &Reference::Tag(tag("multi")))
                    .await
                    .expect("get_manifest")
                    .expect("index stored");
                assert_eq!(got.digest, index.digest);
            }
            (true, Err(MetadataError::MissingReferences { blobs, manifests })) => {
                assert!(blobs.is_empty());
                assert_eq!(manifests, vec![child.digest.clone()]);
            }
            (commit, other) => panic!("commit={commit}: unexpected {other:?}"),
        }
    }
}

/// Two replicas (separate pools) push manifests to one tag while a third deletes
/// whatever the tag points at, and an index referencing a child races the child's
/// deletion. Every call succeeds or is refused as documented, and the end state is
/// consistent: the tag is absent or points at a stored, complete manifest, and no index
/// was stored without its reference rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_racing_on_one_tag_while_manifests_are_deleted_stay_consistent() {
    let url = server().await.url.clone();
    let replicas = [
        Arc::new(connect(&url).await),
        Arc::new(connect(&url).await),
        Arc::new(connect(&url).await),
    ];
    let repo = unique_repo("race");
    let layer = random_digest();
    replicas[0]
        .link_blob(&repo, &layer, 10)
        .await
        .expect("link_blob");
    let rounds = 40;

    let mut tasks = Vec::new();
    for replica in &replicas[..2] {
        let (store, repo, layer) = (replica.clone(), repo.clone(), layer.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..rounds {
                let m = manifest(&repo, IMAGE_MANIFEST)
                    .with_blob_refs(vec![layer.clone()])
                    .with_tag(Some(tag("latest")));
                store.put_manifest(&m).await.expect("put_manifest");
                // Pushing a child and an index over it, while the deleter may remove the
                // child: the index either goes in with the child present or is refused.
                let child = manifest(&repo, IMAGE_MANIFEST).with_tag(Some(tag("latest")));
                store.put_manifest(&child).await.expect("put child");
                let index = manifest(&repo, IMAGE_INDEX)
                    .with_manifest_refs(vec![child.digest.clone()])
                    .with_tag(Some(tag("latest")));
                match store.put_manifest(&index).await {
                    Ok(()) | Err(MetadataError::MissingReferences { .. }) => {}
                    Err(e) => panic!("put index: {e}"),
                }
            }
        }));
    }
    {
        let (store, repo) = (replicas[2].clone(), repo.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..rounds * 3 {
                let current = store
                    .get_manifest(&repo, &Reference::Tag(tag("latest")))
                    .await
                    .expect("get_manifest");
                if let Some(m) = current {
                    store
                        .delete_manifest(&repo, &m.digest)
                        .await
                        .expect("delete_manifest");
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("racing task");
    }

    let store = &replicas[0];
    match store
        .get_manifest(&repo, &Reference::Tag(tag("latest")))
        .await
        .expect("get_manifest")
    {
        None => {}
        Some(tagged) => {
            let by_digest = store
                .get_manifest(&repo, &Reference::Digest(tagged.digest.clone()))
                .await
                .expect("get_manifest")
                .expect("the tagged manifest is stored");
            assert_eq!(by_digest, tagged);
        }
    }
    let tags = store
        .list_tags(&repo, &Page::default())
        .await
        .expect("list_tags")
        .expect("repository exists");
    assert!(tags.len() <= 1, "{tags:?}");

    let client = raw(&url).await;
    let count = |sql: &'static str| {
        let client = &client;
        let repo = repo.as_str().to_string();
        async move {
            client
                .query_one(sql, &[&repo])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get::<_, i64>(0)
        }
    };
    assert_eq!(
        count(
            "SELECT count(*) FROM tags t JOIN repositories r ON r.id = t.repo_id
             LEFT JOIN manifests m ON m.id = t.manifest_id AND m.repo_id = t.repo_id
             WHERE r.name = $1 AND m.id IS NULL"
        )
        .await,
        0,
        "tag rows point at missing manifests"
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM manifests m JOIN repositories r ON r.id = m.repo_id
             WHERE r.name = $1 AND m.media_type = 'application/vnd.oci.image.index.v1+json'
               AND NOT EXISTS (SELECT 1 FROM manifest_manifest_refs x WHERE x.manifest_id = m.id)"
        )
        .await,
        0,
        "an index was stored without its reference rows"
    );
}
