//! Basic authentication (htpasswd, bcrypt) with an access policy: the conformance harness
//! passes through it, and everything it must refuse is refused with the right code and
//! leaves nothing behind.

#![allow(clippy::unwrap_used)]

mod auth_support;
mod common;

use std::sync::Arc;

use auth_support::{as_user, push_blob_as, push_image_as};
use axum::body::Body;
use common::{Reply, TestRegistry};
use http::{Method, StatusCode};
use oci_spec_types::Digest;
use registry_core::RegistryConfig;
use registry_core::auth::{AccessPolicy, AccessRule, Action, Htpasswd};

const ALICE: (&str, &str) = ("alice", "correct horse");
const BOB: (&str, &str) = ("bob", "battery staple");
const ROOT: (&str, &str) = ("root", "root pw");

/// alice: everything under `conformance/` and `team-a/`; bob: pull and push on `team-b/`
/// only; root: everything; `public/*` readable by anyone.
fn config() -> RegistryConfig {
    let users = Htpasswd::parse(&auth_support::htpasswd(&[ALICE, BOB, ROOT])).unwrap();
    let policy = AccessPolicy::new()
        .with_public("public/*".parse().unwrap())
        .with_group("team-a", ["alice"])
        .with_rule(
            AccessRule::new(
                [
                    "conformance/*".parse().unwrap(),
                    "team-a/*".parse().unwrap(),
                ],
                Action::ALL,
            )
            .with_groups(["team-a"]),
        )
        .with_rule(
            AccessRule::new(["team-b/*".parse().unwrap()], [Action::Pull, Action::Push])
                .with_users(["bob"]),
        )
        .with_rule(AccessRule::new(["*".parse().unwrap()], Action::ALL).with_users(["root"]));
    RegistryConfig::default()
        .with_authenticator(Arc::new(users))
        .with_authorizer(Arc::new(policy))
}

fn auth((user, password): (&str, &str)) -> String {
    auth_support::basic(user, password)
}

async fn catalog_as(reg: &TestRegistry, who: (&str, &str), query: &str) -> Reply {
    as_user(
        reg,
        who,
        Method::GET,
        &format!("/v2/_catalog{query}"),
        vec![],
    )
    .await
}

fn repos(r: &Reply) -> Vec<String> {
    r.json()["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_through_basic_auth() {
    let served = auth_support::serve(config()).await;
    let harness = oci_conformance::Harness::new(
        &served.url,
        Some((ALICE.0.into(), ALICE.1.into())),
        "conformance",
    )
    .unwrap();
    let report = harness.run_all().await;
    assert!(report.passed() > 30, "too few checks ran:\n{report}");
    assert_eq!(report.failed(), 0, "{report}");
}

#[tokio::test]
async fn missing_or_wrong_credentials_are_401_with_a_challenge() {
    let reg = TestRegistry::with_config(config()).await;
    let r = reg.get("/v2/").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "UNAUTHORIZED");
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some("Basic realm=\"registry\"")
    );
    assert_eq!(
        r.header("Docker-Distribution-API-Version"),
        Some("registry/2.0")
    );

    let ok = as_user(&reg, ALICE, Method::GET, "/v2/", vec![]).await;
    assert_eq!(ok.status, StatusCode::OK);

    // A wrong password, twice (the second time after a successful login was cached), an
    // unknown user, garbage: all 401, whatever the resource, even a public one.
    for who in [
        (ALICE.0, "wrong"),
        (ALICE.0, "correct horse "),
        ("mallory", ALICE.1),
    ] {
        for uri in ["/v2/", "/v2/team-a/app/tags/list", "/v2/public/x/tags/list"] {
            let r = as_user(&reg, who, Method::GET, uri, vec![]).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{who:?} {uri}");
            assert!(r.header("WWW-Authenticate").is_some());
        }
    }
    let r = reg
        .send(
            Method::GET,
            "/v2/",
            &[("Authorization", "Basic !!notbase64")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Pushing with a wrong password leaves nothing behind.
    let r = push_blob_as(&reg, (ALICE.0, "wrong"), "team-a/app", b"x").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = catalog_as(&reg, ROOT, "").await;
    assert!(repos(&r).is_empty(), "{:?}", r.body);
}

#[tokio::test]
async fn authenticated_but_not_allowed_is_403_and_leaves_nothing() {
    let reg = TestRegistry::with_config(config()).await;
    push_image_as(&reg, ALICE, "team-a/app", "v1").await;

    // bob may not read team-a, nor write there.
    let r = as_user(
        &reg,
        BOB,
        Method::GET,
        "/v2/team-a/app/manifests/v1",
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "DENIED");
    let r = push_blob_as(&reg, BOB, "team-a/app", b"bob was here").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = push_blob_as(&reg, BOB, "team-a/other", b"bob was here").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // bob may push to team-b but not delete there.
    let d = Digest::sha256_of(b"bob's");
    let r = push_blob_as(&reg, BOB, "team-b/x", b"bob's").await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = as_user(
        &reg,
        BOB,
        Method::DELETE,
        &format!("/v2/team-b/x/blobs/{d}"),
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Anonymous: private repositories are a 401 (log in), public ones readable.
    let r = reg.get("/v2/team-a/app/manifests/v1").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    push_image_as(&reg, ROOT, "public/base", "latest").await;
    let r = reg.get("/v2/public/base/manifests/latest").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = reg
        .send(
            Method::DELETE,
            "/v2/public/base/manifests/latest",
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Nothing of bob's refused pushes exists.
    let r = catalog_as(&reg, ROOT, "").await;
    assert_eq!(repos(&r), ["public/base", "team-a/app", "team-b/x"]);
    let bob_blob = Digest::sha256_of(b"bob was here");
    let r = as_user(
        &reg,
        ROOT,
        Method::HEAD,
        &format!("/v2/team-a/app/blobs/{bob_blob}"),
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn catalog_lists_only_what_the_caller_may_pull() {
    let reg = TestRegistry::with_config(config()).await;
    for repo in [
        "public/a",
        "public/b",
        "team-a/app",
        "team-a/lib",
        "team-b/x",
        "zz/secret",
    ] {
        push_image_as(&reg, ROOT, repo, "v1").await;
    }
    let r = catalog_as(&reg, ROOT, "").await;
    assert_eq!(repos(&r).len(), 6);
    let r = catalog_as(&reg, ALICE, "").await;
    assert_eq!(
        repos(&r),
        ["public/a", "public/b", "team-a/app", "team-a/lib"]
    );
    let r = catalog_as(&reg, BOB, "").await;
    assert_eq!(repos(&r), ["public/a", "public/b", "team-b/x"]);
    // The catalog is for authenticated callers.
    let r = reg.get("/v2/_catalog").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Pagination over the filtered list: pages of 2 walk bob's three repositories without
    // skipping or repeating, and the Link header continues after the last one shown.
    let mut seen = Vec::new();
    let mut query = "?n=2".to_string();
    for _ in 0..5 {
        let r = catalog_as(&reg, BOB, &query).await;
        assert_eq!(r.status, StatusCode::OK);
        let page = repos(&r);
        assert!(page.len() <= 2);
        seen.extend(page.clone());
        match r.header("Link") {
            Some(link) => {
                let last = page.last().unwrap();
                assert!(link.contains(&format!("last={last}")), "{link}");
                query = format!("?n=2&last={last}");
            }
            None => break,
        }
    }
    assert_eq!(seen, ["public/a", "public/b", "team-b/x"]);
}

#[tokio::test]
async fn mount_needs_pull_on_the_source() {
    let reg = TestRegistry::with_config(config()).await;
    let secret = b"team-a's layer";
    let digest = Digest::sha256_of(secret);
    assert_eq!(
        push_blob_as(&reg, ALICE, "team-a/app", secret).await.status,
        StatusCode::CREATED
    );
    // bob asks to mount team-a's blob into team-b: he cannot pull team-a, so the mount is
    // not attempted and he gets an ordinary upload session instead (which reveals nothing).
    let r = as_user(
        &reg,
        BOB,
        Method::POST,
        &format!("/v2/team-b/x/blobs/uploads/?mount={digest}&from=team-a/app"),
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let r = as_user(
        &reg,
        BOB,
        Method::HEAD,
        &format!("/v2/team-b/x/blobs/{digest}"),
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // root may pull team-a: the mount happens.
    let r = as_user(
        &reg,
        ROOT,
        Method::POST,
        &format!("/v2/team-b/y/blobs/uploads/?mount={digest}&from=team-a/app"),
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn path_tricks_are_refused_before_any_decision() {
    let reg = TestRegistry::with_config(config()).await;
    // bob may push to team-b/*; each path below would reach team-a or the root if a
    // decision were made on the raw path.
    let digest = Digest::sha256_of(b"trick");
    let tricks = [
        "/v2/team-b/../team-a/app",
        "/v2/team-b/%2E%2E/team-a/app",
        "/v2/team-b%2F..%2Fteam-a/app",
        "/v2/team-b/x%2F..%2F..%2Fteam-a/app",
        "/v2/Team-A/app",
        "/v2/team-b/./x",
        "/v2/team-b//x",
    ];
    for prefix in tricks {
        for who in [Some(BOB), None] {
            let uri = format!("{prefix}/blobs/uploads/?digest={digest}");
            let a = who.map(auth);
            let headers: Vec<(&str, &str)> = a
                .as_deref()
                .map(|a| vec![("Authorization", a)])
                .unwrap_or_default();
            let r = reg
                .send(Method::POST, &uri, &headers, Body::from(&b"trick"[..]))
                .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
            assert_eq!(r.code(), "NAME_INVALID", "{uri}");
            let r = reg
                .send(
                    Method::GET,
                    &format!("{prefix}/tags/list"),
                    &headers,
                    Body::empty(),
                )
                .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{prefix}");
        }
    }
    let r = catalog_as(&reg, ROOT, "").await;
    assert!(repos(&r).is_empty(), "{:?}", r.body);
}
