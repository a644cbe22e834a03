//! Quotas through the HTTP API: a push that would pass a quota is `403 DENIED` with the
//! quota's usage and stores nothing (no link, no session); a namespace quota adds up its
//! repositories, a blob they share counted once; and pushes racing for the last bytes
//! through two registries on one PostgreSQL database pass exactly as many as fit.

#![allow(clippy::unwrap_used)]

mod auth_support;
mod common;

use std::sync::Arc;

use axum::body::Body;
use common::{TestRegistry, data};
use http::{Method, StatusCode};
use oci_spec_types::Digest;
use registry_core::quotas::Quotas;
use registry_core::{Registry, RegistryConfig};
use storage_traits::{MetadataStore, UploadSessionStore};

fn quotas(rules: &[(&str, u64)]) -> RegistryConfig {
    RegistryConfig::default().with_quotas(Quotas::new(
        rules.iter().map(|(p, n)| (p.parse().unwrap(), *n)),
    ))
}

/// A second handle on the registry's SQLite database, to look at what was stored.
fn metadata(r: &TestRegistry) -> metadata_sqlite::SqliteMetadataStore {
    metadata_sqlite::SqliteMetadataStore::open(r.dir.path().join("registry.db")).unwrap()
}

async fn monolithic(r: &TestRegistry, repo: &str, bytes: &[u8]) -> common::Reply {
    let digest = Digest::sha256_of(bytes);
    r.send(
        Method::POST,
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        Body::from(bytes.to_vec()),
    )
    .await
}

fn message(reply: &common::Reply) -> String {
    reply.json()["errors"][0]["message"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn linked(r: &TestRegistry, repo: &str, bytes: &[u8]) -> bool {
    metadata(r)
        .blob_link(&repo.parse().unwrap(), &Digest::sha256_of(bytes))
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn a_push_past_the_quota_is_denied_with_its_usage_and_stores_nothing() {
    let r = TestRegistry::with_config(quotas(&[("team/app", 100)])).await;
    r.push_blob("team/app", &data(1, 60)).await;

    // Monolithic.
    let big = data(2, 50);
    let got = monolithic(&r, "team/app", &big).await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    assert_eq!(got.code(), "DENIED");
    assert_eq!(message(&got), "quota exceeded for team/app: used 60 of 100");
    assert!(!linked(&r, "team/app", &big).await);
    assert_eq!(metadata(&r).count_uploads().await.unwrap(), 0);

    // Chunked: the closing PUT is refused and the session is gone.
    let loc = r.open_upload("team/app").await;
    let patched = r
        .send(
            Method::PATCH,
            &loc,
            &[("Content-Type", "application/octet-stream")],
            Body::from(big.clone()),
        )
        .await;
    assert_eq!(patched.status, StatusCode::ACCEPTED);
    let loc = patched.header("Location").unwrap().to_string();
    let digest = Digest::sha256_of(&big);
    let put = r
        .send(
            Method::PUT,
            &format!("{loc}?digest={digest}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(put.status, StatusCode::FORBIDDEN);
    assert_eq!(message(&put), "quota exceeded for team/app: used 60 of 100");
    assert!(!linked(&r, "team/app", &big).await);
    assert_eq!(metadata(&r).count_uploads().await.unwrap(), 0);
    assert_eq!(r.get(&loc).await.status, StatusCode::NOT_FOUND);
    let head = r
        .send(
            Method::HEAD,
            &format!("/v2/team/app/blobs/{digest}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(head.status, StatusCode::NOT_FOUND);

    // What fits still passes, up to exactly the limit; other repositories are free.
    r.push_blob("team/app", &data(3, 40)).await;
    r.push_blob("other", &data(4, 1_000)).await;
    let usage = r.get("/v2/_ext/quotas").await.json();
    assert_eq!(usage["quotas"][0]["used"], 100, "{usage}");
    assert_eq!(usage["quotas"][0]["limit"], 100, "{usage}");
}

#[tokio::test]
async fn a_namespace_quota_counts_its_repositories_together() {
    let r = TestRegistry::with_config(quotas(&[("team/*", 100)])).await;
    r.push_blob("team/a", &data(1, 60)).await;
    let got = monolithic(&r, "team/b", &data(2, 50)).await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    assert_eq!(message(&got), "quota exceeded for team/*: used 60 of 100");
    r.push_blob("team/b", &data(3, 40)).await;
    assert!(linked(&r, "team/b", &data(3, 40)).await);
}

#[tokio::test]
async fn a_blob_shared_by_the_repositories_of_a_quota_counts_once() {
    let r = TestRegistry::with_config(quotas(&[("team/*", 100), ("small/*", 10)])).await;
    let shared = data(1, 80);
    let digest = r.push_blob("team/a", &shared).await;
    // Pushed again into a sibling, and mounted into another: no new bytes.
    r.push_blob("team/b", &shared).await;
    let mount = r
        .send(
            Method::POST,
            &format!("/v2/team/c/blobs/uploads/?mount={digest}&from=team/a"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(mount.status, StatusCode::CREATED);
    r.push_blob("team/d", &data(2, 20)).await;
    // A mount into a repository whose quota it would pass is denied.
    let mount = r
        .send(
            Method::POST,
            &format!("/v2/small/x/blobs/uploads/?mount={digest}&from=team/a"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(mount.status, StatusCode::FORBIDDEN);
    assert_eq!(message(&mount), "quota exceeded for small/*: used 0 of 10");
    assert!(!linked(&r, "small/x", &shared).await);
    let usage = r.get("/v2/_ext/quotas").await.json();
    assert_eq!(usage["quotas"][0]["pattern"], "team/*", "{usage}");
    assert_eq!(usage["quotas"][0]["used"], 100, "{usage}");
}

/// Two registries (replicas) on one PostgreSQL database and one blob folder: of many
/// monolithic pushes racing for the last bytes, through both, exactly as many pass as fit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_pushes_through_two_replicas_on_postgres_pass_exactly_as_many_as_fit() {
    let url = tokio::task::spawn_blocking(|| {
        test_support::postgres::Postgres::shared().unique_database("quota_race")
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let blobs = storage_fs::FsBlobStore::open(dir.path().join("blobs")).unwrap();
        let metadata = metadata_postgres::PostgresMetadataStore::connect(&url)
            .await
            .unwrap();
        let registry = Registry::new(
            Arc::new(blobs),
            Arc::new(metadata),
            quotas(&[("team/*", 1_000)]),
        );
        replicas.push(registry.router());
    }
    let send = |i: usize, repo: &str, bytes: Vec<u8>| {
        let router = replicas[i % 2].clone();
        let digest = Digest::sha256_of(&bytes);
        let uri = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
        async move {
            use tower::ServiceExt;
            let req = http::Request::builder()
                .method(Method::POST)
                .uri(uri)
                .header("Content-Type", "application/octet-stream")
                .body(Body::from(bytes))
                .unwrap();
            router.oneshot(req).await.unwrap().status()
        }
    };
    assert_eq!(send(0, "team/a", data(0, 700)).await, StatusCode::CREATED);
    // 300 bytes left: 3 of 20 pushes of 100 bytes fit.
    let racers = (1..=20).map(|i| {
        let repo = if i % 3 == 0 { "team/a" } else { "team/b" };
        send(i, repo, data(i as u64, 100))
    });
    let statuses = futures::future::join_all(racers).await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let denied = statuses
        .iter()
        .filter(|s| **s == StatusCode::FORBIDDEN)
        .count();
    assert_eq!((created, denied), (3, 17), "{statuses:?}");
    let metadata = metadata_postgres::PostgresMetadataStore::connect(&url)
        .await
        .unwrap();
    assert_eq!(metadata.count_uploads().await.unwrap(), 0);
}

#[tokio::test]
async fn usage_and_limit_per_quota_are_gauges_read_at_scrape_time() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let r = TestRegistry::with_config(quotas(&[("gauge/*", 5_000)])).await;
    r.push_blob("gauge/a", &data(1, 1_234)).await;
    let req = http::Request::get("/metrics").body(Body::empty()).unwrap();
    let res = r.registry.ops_router().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let text =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(
        text.lines()
            .any(|l| l == "registry_quota_used_bytes{pattern=\"gauge/*\"} 1234"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "registry_quota_limit_bytes{pattern=\"gauge/*\"} 5000"),
        "{text}"
    );
}

/// A quota is listed only to callers who may pull every repository it covers: alice may
/// pull `team-a/*` and so sees that quota, not `*`'s nor `team-b/*`'s; root sees all.
#[tokio::test]
async fn quotas_are_shown_to_callers_who_may_pull_all_they_cover() {
    use auth_support::{as_user, push_blob_as};
    use registry_core::auth::{AccessPolicy, AccessRule, Action, Htpasswd};
    const ALICE: (&str, &str) = ("alice", "correct horse");
    const ROOT: (&str, &str) = ("root", "root pw");
    let users = Htpasswd::parse(&auth_support::htpasswd(&[ALICE, ROOT])).unwrap();
    let policy = AccessPolicy::new()
        .with_rule(
            AccessRule::new(["team-a/*".parse().unwrap()], Action::ALL).with_users(["alice"]),
        )
        .with_rule(AccessRule::new(["*".parse().unwrap()], Action::ALL).with_users(["root"]));
    let config = quotas(&[("*", 10_000), ("team-a/*", 1_000), ("team-b/*", 1_000)])
        .with_authenticator(Arc::new(users))
        .with_authorizer(Arc::new(policy));
    let r = TestRegistry::with_config(config).await;
    assert_eq!(
        push_blob_as(&r, ALICE, "team-a/x", &data(1, 10))
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        push_blob_as(&r, ROOT, "team-b/y", &data(2, 20))
            .await
            .status,
        StatusCode::CREATED
    );
    let patterns = |reply: common::Reply| -> Vec<String> {
        reply.json()["quotas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["pattern"].as_str().unwrap().to_string())
            .collect()
    };
    let alice = as_user(&r, ALICE, Method::GET, "/v2/_ext/quotas", vec![]).await;
    assert_eq!(alice.status, StatusCode::OK);
    assert_eq!(patterns(alice), ["team-a/*"]);
    let root = as_user(&r, ROOT, Method::GET, "/v2/_ext/quotas", vec![]).await;
    assert_eq!(patterns(root), ["*", "team-a/*", "team-b/*"]);
}
