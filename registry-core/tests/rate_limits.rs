//! Rate limits (`registry_core::ratelimit`): a refused caller gets `429 TOOMANYREQUESTS`
//! with `Retry-After` and is served again once it has waited that long; users and
//! anonymous addresses each have their own budgets, pulls and writes separately; manifest
//! pulls carry Docker Hub's `RateLimit-*` headers.

#![allow(clippy::unwrap_used)]

mod auth_support;
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use common::{Reply, TestRegistry};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use registry_core::RegistryConfig;
use registry_core::auth::Htpasswd;
use registry_core::ratelimit::{RateLimit, RateLimits};
use tower::ServiceExt;

const ALICE: (&str, &str) = ("alice", "alice pw");
const BOB: (&str, &str) = ("bob", "bob pw");

/// A registry holding `lib/app:v1`, pushed before the limits apply, then opened with
/// `config`.
async fn registry_with_image(config: RegistryConfig) -> TestRegistry {
    let setup = TestRegistry::new().await;
    setup.push_image("lib/app", "v1", &[b"layer"]).await;
    let TestRegistry { dir, .. } = setup;
    TestRegistry::open(dir, config).await
}

fn limits(pulls: Option<(u32, u64)>, writes: Option<(u32, u64)>) -> RateLimits {
    let limit = |(n, secs): (u32, u64)| RateLimit::new(n, Duration::from_secs(secs));
    RateLimits::default()
        .with_pulls(pulls.and_then(limit))
        .with_writes(writes.and_then(limit))
}

fn with_users(config: RegistryConfig) -> RegistryConfig {
    let users = Htpasswd::parse(&auth_support::htpasswd(&[ALICE, BOB])).unwrap();
    config.with_authenticator(Arc::new(users))
}

/// One request as a server would hand it on: from `peer` when given, as `user` when given.
async fn send(
    reg: &TestRegistry,
    method: Method,
    uri: &str,
    user: Option<(&str, &str)>,
    peer: Option<&str>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some((name, password)) = user {
        req = req.header("Authorization", auth_support::basic(name, password));
    }
    let mut req = req.body(Body::empty()).unwrap();
    if let Some(peer) = peer {
        let addr: SocketAddr = peer.parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(addr));
    }
    let res = reg.router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

const MANIFEST: &str = "/v2/lib/app/manifests/v1";

async fn pull(reg: &TestRegistry, user: Option<(&str, &str)>, peer: Option<&str>) -> Reply {
    send(reg, Method::GET, MANIFEST, user, peer).await
}

#[tokio::test]
async fn a_limited_client_gets_429_with_retry_after_and_succeeds_after_waiting_it() {
    // A burst of 3, then one more every second.
    let reg =
        registry_with_image(RegistryConfig::default().with_rate_limits(limits(Some((3, 3)), None)))
            .await;
    let peer = Some("192.0.2.7:40000");
    for i in 0..3 {
        assert_eq!(
            pull(&reg, None, peer).await.status,
            StatusCode::OK,
            "pull {i}"
        );
    }
    let refused = pull(&reg, None, peer).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.code(), "TOOMANYREQUESTS");
    assert_eq!(refused.header("RateLimit-Remaining"), Some("0;w=3"));
    let wait: u64 = refused.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=3).contains(&wait), "Retry-After {wait}");

    tokio::time::sleep(Duration::from_secs(wait)).await;
    let again = pull(&reg, None, peer).await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
}

#[tokio::test]
async fn each_user_has_its_own_budget() {
    let config =
        with_users(RegistryConfig::default()).with_rate_limits(limits(Some((2, 3600)), None));
    let reg = registry_with_image(config).await;
    // Both from the same address: users are told apart by name, not by where they are.
    let peer = Some("192.0.2.7:40000");
    for _ in 0..2 {
        assert_eq!(pull(&reg, Some(ALICE), peer).await.status, StatusCode::OK);
    }
    let refused = pull(&reg, Some(ALICE), peer).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.code(), "TOOMANYREQUESTS");
    assert!(refused.header("Retry-After").is_some());

    let bob = pull(&reg, Some(BOB), peer).await;
    assert_eq!(bob.status, StatusCode::OK);
    assert_eq!(bob.header("RateLimit-Remaining"), Some("1;w=3600"));
    // An anonymous caller at alice's address is not alice either.
    assert_eq!(pull(&reg, None, peer).await.status, StatusCode::OK);
}

#[tokio::test]
async fn pulls_and_writes_have_separate_budgets() {
    let config = with_users(RegistryConfig::default())
        .with_rate_limits(limits(Some((1, 3600)), Some((1, 3600))));
    let reg = registry_with_image(config).await;
    assert_eq!(pull(&reg, Some(ALICE), None).await.status, StatusCode::OK);
    assert_eq!(
        pull(&reg, Some(ALICE), None).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // HEAD of a manifest is a pull too.
    let head = send(&reg, Method::HEAD, MANIFEST, Some(ALICE), None).await;
    assert_eq!(head.status, StatusCode::TOO_MANY_REQUESTS);

    let start = "/v2/lib/app/blobs/uploads/";
    let first = send(&reg, Method::POST, start, Some(ALICE), None).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let second = send(&reg, Method::POST, start, Some(ALICE), None).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(second.code(), "TOOMANYREQUESTS");
    assert!(second.header("Retry-After").is_some());
    assert_eq!(second.header("RateLimit-Limit"), None, "only pulls say it");

    // Other reads spend neither budget.
    let tags = send(
        &reg,
        Method::GET,
        "/v2/lib/app/tags/list",
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(tags.status, StatusCode::OK);
    assert_eq!(tags.header("RateLimit-Limit"), None);
}

#[tokio::test]
async fn anonymous_callers_are_limited_by_address() {
    let reg = registry_with_image(
        RegistryConfig::default().with_rate_limits(limits(Some((1, 3600)), None)),
    )
    .await;
    assert_eq!(
        pull(&reg, None, Some("192.0.2.1:1000")).await.status,
        StatusCode::OK
    );
    // Another connection from the same host shares its budget.
    let same_host = pull(&reg, None, Some("192.0.2.1:2000")).await;
    assert_eq!(same_host.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        pull(&reg, None, Some("192.0.2.2:1000")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        pull(&reg, None, Some("[2001:db8::1]:1000")).await.status,
        StatusCode::OK
    );

    // Without an address, anonymous callers share one budget.
    assert_eq!(pull(&reg, None, None).await.status, StatusCode::OK);
    assert_eq!(
        pull(&reg, None, None).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn manifest_pulls_carry_docker_hubs_ratelimit_headers() {
    let reg = registry_with_image(
        RegistryConfig::default().with_rate_limits(limits(Some((100, 21600)), Some((5, 60)))),
    )
    .await;
    let peer = Some("192.0.2.9:5000");
    let first = pull(&reg, None, peer).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("RateLimit-Limit"), Some("100;w=21600"));
    assert_eq!(first.header("RateLimit-Remaining"), Some("99;w=21600"));
    let head = send(&reg, Method::HEAD, MANIFEST, None, peer).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("RateLimit-Limit"), Some("100;w=21600"));
    assert_eq!(head.header("RateLimit-Remaining"), Some("98;w=21600"));
    // A pull of a manifest that does not exist spends a pull, and says so.
    let missing = send(&reg, Method::GET, "/v2/lib/app/manifests/nope", None, peer).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.header("RateLimit-Remaining"), Some("97;w=21600"));

    // Other reads are not manifest pulls.
    let tags = send(&reg, Method::GET, "/v2/lib/app/tags/list", None, peer).await;
    assert_eq!(tags.header("RateLimit-Limit"), None);

    // With no pull limit, no headers.
    let unlimited = registry_with_image(RegistryConfig::default()).await;
    let plain = pull(&unlimited, None, peer).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(plain.header("RateLimit-Limit"), None);
    assert_eq!(plain.header("RateLimit-Remaining"), None);
}
