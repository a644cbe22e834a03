//! Docker token authentication: the example token server issues, the registry checks.
//! The conformance harness follows the Bearer challenges; expired tokens, tokens for
//! another repository, for another service, signed by another key or with a forged
//! algorithm, and pushes with a pull-only grant are all refused and leave nothing behind.

#![allow(clippy::unwrap_used)]

mod auth_support;
mod common;

use std::sync::Arc;
use std::time::Duration;

use auth_support::{ED_PRIVATE, ED_PUBLIC};
use axum::body::Body;
use common::{Reply, TestRegistry};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use oci_spec_types::Digest;
use registry_core::RegistryConfig;
use registry_core::auth::{
    AccessPolicy, AccessRule, Action, Grant, Htpasswd, Principal, TokenAuth, TokenClaims,
};
use token_server::TokenServer;
use tower::ServiceExt;

const SERVICE: &str = "registry.test";
const ISSUER: &str = "test-token-server";
const REALM: &str = "http://127.0.0.1:1/token";

/// alice: everything in `conformance/*` and `team-a/*`; bob: pull on `team-a/*`;
/// `public/*` for anyone.
fn token_server(private_pem: &str, service: &str) -> TokenServer {
    let users = Htpasswd::parse(&auth_support::htpasswd(&[
        ("alice", "alice pw"),
        ("bob", "bob pw"),
    ]))
    .unwrap();
    let policy = AccessPolicy::new()
        .with_public("public/*".parse().unwrap())
        .with_rule(
            AccessRule::new(
                [
                    "conformance/*".parse().unwrap(),
                    "team-a/*".parse().unwrap(),
                ],
                Action::ALL,
            )
            .with_users(["alice"]),
        )
        .with_rule(
            AccessRule::new(["team-a/*".parse().unwrap()], [Action::Pull]).with_users(["bob"]),
        );
    TokenServer::new(ISSUER, service, private_pem.as_bytes(), users, policy).unwrap()
}

fn token_auth(realm: &str) -> TokenAuth {
    TokenAuth::from_pem(realm, SERVICE, ISSUER, ED_PUBLIC.as_bytes()).unwrap()
}

async fn registry() -> TestRegistry {
    TestRegistry::with_config(
        RegistryConfig::default().with_authenticator(Arc::new(token_auth(REALM))),
    )
    .await
}

/// A token from `server` for `user` (None: anonymous) and `scopes`.
fn token(server: &TokenServer, user: Option<&str>, scopes: &[&str]) -> String {
    let principal = user.map_or_else(Principal::anonymous, Principal::user);
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    let grants = server.grants(&principal, &scopes);
    server.sign(&principal, grants).unwrap().token
}

async fn send(reg: &TestRegistry, token: &str, method: Method, uri: &str, body: &[u8]) -> Reply {
    let bearer = format!("Bearer {token}");
    reg.send(
        method,
        uri,
        &[("Authorization", &bearer)],
        Body::from(body.to_vec()),
    )
    .await
}

async fn push_blob(reg: &TestRegistry, token: &str, repo: &str, bytes: &[u8]) -> Reply {
    let digest = Digest::sha256_of(bytes);
    let uri = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
    send(reg, token, Method::POST, &uri, bytes).await
}

fn challenge(r: &Reply) -> String {
    r.header("WWW-Authenticate").unwrap_or("").to_string()
}

/// What the catalog holds, asked with an all-seeing token.
async fn all_repositories(reg: &TestRegistry, server: &TokenServer) -> Vec<String> {
    let t = token(server, Some("alice"), &["registry:catalog:*"]);
    let r = send(reg, &t, Method::GET, "/v2/_catalog", b"").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    serde_json::from_value(r.json()["repositories"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_through_token_auth() {
    let server = Arc::new(token_server(ED_PRIVATE, SERVICE));
    let (token_url, token_task) = auth_support::serve_router(server.router()).await;
    let config = RegistryConfig::default()
        .with_authenticator(Arc::new(token_auth(&format!("{token_url}/token"))));
    let served = auth_support::serve(config).await;
    let harness = oci_conformance::Harness::new(
        &served.url,
        Some(("alice".into(), "alice pw".into())),
        "conformance",
    )
    .unwrap();
    let report = harness.run_all().await;
    token_task.abort();
    assert!(report.passed() > 30, "too few checks ran:\n{report}");
    assert_eq!(report.failed(), 0, "{report}");
}

#[tokio::test]
async fn without_a_token_the_answer_is_a_bearer_challenge() {
    let reg = registry().await;
    let r = reg.get("/v2/").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "UNAUTHORIZED");
    assert_eq!(
        challenge(&r),
        format!("Bearer realm=\"{REALM}\",service=\"{SERVICE}\"")
    );
    let r = reg.get("/v2/team-a/app/manifests/latest").await;
    assert_eq!(
        challenge(&r),
        format!(
            "Bearer realm=\"{REALM}\",service=\"{SERVICE}\",scope=\"repository:team-a/app:pull\""
        )
    );
    let d = Digest::sha256_of(b"x");
    let r = reg
        .send(
            Method::POST,
            &format!("/v2/team-a/app/blobs/uploads/?mount={d}&from=team-a/base"),
            &[],
            Body::empty(),
        )
        .await;
    assert!(
        challenge(&r)
            .ends_with("scope=\"repository:team-a/app:pull,push repository:team-a/base:pull\""),
        "{}",
        challenge(&r)
    );
    // Basic credentials are not accepted by a token-auth registry: get a token.
    let basic = auth_support::basic("alice", "alice pw");
    let r = reg
        .send(
            Method::GET,
            "/v2/",
            &[("Authorization", &basic)],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(challenge(&r).starts_with("Bearer "));
}

#[tokio::test]
async fn scoped_tokens_allow_exactly_their_grants() {
    let server = token_server(ED_PRIVATE, SERVICE);
    let reg = registry().await;
    let alice = token(&server, Some("alice"), &["repository:team-a/app:pull,push"]);
    assert_eq!(
        push_blob(&reg, &alice, "team-a/app", b"layer").await.status,
        StatusCode::CREATED
    );
    let d = Digest::sha256_of(b"layer");
    let r = send(
        &reg,
        &alice,
        Method::GET,
        &format!("/v2/team-a/app/blobs/{d}"),
        b"",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // Not asked for, not granted: delete.
    let r = send(
        &reg,
        &alice,
        Method::DELETE,
        &format!("/v2/team-a/app/blobs/{d}"),
        b"",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(challenge(&r).contains("scope=\"repository:team-a/app:delete\""));
    assert!(challenge(&r).contains("error=\"insufficient_scope\""));

    // A token for another repository: 401 with a challenge for the one asked about.
    let r = push_blob(&reg, &alice, "team-a/other", b"elsewhere").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        challenge(&r).contains("scope=\"repository:team-a/other:pull,push\""),
        "{}",
        challenge(&r)
    );
    let r = send(&reg, &alice, Method::GET, "/v2/team-a/other/tags/list", b"").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // bob asks for pull and push and gets pull only: he can read, not push.
    let bob = token(&server, Some("bob"), &["repository:team-a/app:pull,push"]);
    let r = send(
        &reg,
        &bob,
        Method::GET,
        &format!("/v2/team-a/app/blobs/{d}"),
        b"",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = push_blob(&reg, &bob, "team-a/app", b"bob's layer").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(
        &reg,
        &bob,
        Method::POST,
        "/v2/team-a/app/blobs/uploads/",
        b"",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // The catalog needs the catalog grant.
    let r = send(&reg, &alice, Method::GET, "/v2/_catalog", b"").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(challenge(&r).contains("scope=\"registry:catalog:*\""));

    // Nothing from the refused requests exists.
    assert_eq!(all_repositories(&reg, &server).await, ["team-a/app"]);
    let bobs = Digest::sha256_of(b"bob's layer");
    let r = send(
        &reg,
        &alice,
        Method::HEAD,
        &format!("/v2/team-a/app/blobs/{bobs}"),
        b"",
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_tokens_are_invalid_token() {
    let reg = registry().await;
    let scope = ["repository:team-a/app:pull,push"];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ed_key = jsonwebtoken::EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap();
    let sign = |claims: &TokenClaims, alg, key: &jsonwebtoken::EncodingKey| {
        jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), claims, key).unwrap()
    };
    let claims = |iss: &str, aud: &str, exp: u64| {
        let mut c = TokenClaims::new(iss, "alice", aud, exp);
        c.access = vec![Grant::repository(
            "team-a/app",
            Action::ALL.into_iter().collect(),
        )];
        c
    };
    let good = claims(ISSUER, SERVICE, now + 300);
    let mut not_yet = good.clone();
    not_yet.nbf = Some(now + 3600);
    let bad = [
        (
            "expired",
            sign(
                &claims(ISSUER, SERVICE, now - 3600),
                jsonwebtoken::Algorithm::EdDSA,
                &ed_key,
            ),
        ),
        (
            "not yet valid",
            sign(&not_yet, jsonwebtoken::Algorithm::EdDSA, &ed_key),
        ),
        (
            "other issuer",
            sign(
                &claims("someone", SERVICE, now + 300),
                jsonwebtoken::Algorithm::EdDSA,
                &ed_key,
            ),
        ),
        (
            "other service",
            token(
                &token_server(ED_PRIVATE, "other.service"),
                Some("alice"),
                &scope,
            ),
        ),
        (
            "other key",
            token(
                &token_server(auth_support::OTHER_ED_PRIVATE, SERVICE),
                Some("alice"),
                &scope,
            ),
        ),
        (
            // The public key used as an HMAC secret: the classic algorithm confusion.
            "HS256 with the public key",
            sign(
                &good,
                jsonwebtoken::Algorithm::HS256,
                &jsonwebtoken::EncodingKey::from_secret(ED_PUBLIC.as_bytes()),
            ),
        ),
        ("garbage", "not.a.jwt".to_string()),
    ];
    // The good token works, so the refusals below are about what was changed.
    let ok = sign(&good, jsonwebtoken::Algorithm::EdDSA, &ed_key);
    assert_eq!(
        send(&reg, &ok, Method::GET, "/v2/team-a/app/tags/list", b"")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    for (what, t) in bad {
        let r = send(&reg, &t, Method::GET, "/v2/team-a/app/tags/list", b"").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(r.code(), "UNAUTHORIZED", "{what}");
        assert!(
            challenge(&r).contains("error=\"invalid_token\""),
            "{what}: {}",
            challenge(&r)
        );
        let r = push_blob(&reg, &t, "team-a/app", what.as_bytes()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}");
    }
    let server = token_server(ED_PRIVATE, SERVICE);
    assert!(all_repositories(&reg, &server).await.is_empty());
}

#[tokio::test]
async fn rsa_and_ecdsa_keys_work_too() {
    for (private, public) in [
        (auth_support::RSA_PRIVATE, auth_support::RSA_PUBLIC),
        (auth_support::EC_PRIVATE, auth_support::EC_PUBLIC),
    ] {
        let server = token_server(private, SERVICE);
        let auth = TokenAuth::from_pem(REALM, SERVICE, ISSUER, public.as_bytes()).unwrap();
        let reg =
            TestRegistry::with_config(RegistryConfig::default().with_authenticator(Arc::new(auth)))
                .await;
        let t = token(&server, Some("alice"), &["repository:team-a/app:pull,push"]);
        assert_eq!(
            push_blob(&reg, &t, "team-a/app", b"signed").await.status,
            StatusCode::CREATED
        );
        // And a token signed with the Ed25519 key is refused by an RSA/EC registry.
        let other = token(
            &token_server(ED_PRIVATE, SERVICE),
            Some("alice"),
            &["repository:team-a/app:pull"],
        );
        let r = send(&reg, &other, Method::GET, "/v2/team-a/app/tags/list", b"").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn token_grants_are_intersected_with_a_configured_policy() {
    let server = token_server(ED_PRIVATE, SERVICE);
    let policy = AccessPolicy::new().with_rule(
        AccessRule::new(["team-a/frozen".parse().unwrap()], [Action::Pull]).with_users(["alice"]),
    );
    let reg = TestRegistry::with_config(
        RegistryConfig::default()
            .with_authenticator(Arc::new(token_auth(REALM)))
            .with_authorizer(Arc::new(policy)),
    )
    .await;
    let t = token(
        &server,
        Some("alice"),
        &["repository:team-a/frozen:pull,push"],
    );
    let r = push_blob(&reg, &t, "team-a/frozen", b"x").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(&reg, &t, Method::GET, "/v2/team-a/frozen/tags/list", b"").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND); // allowed; the repository is just empty
}

async fn get_token(
    server: &Arc<TokenServer>,
    query: &str,
    basic: Option<(&str, &str)>,
) -> (StatusCode, serde_json::Value) {
    let mut req = http::Request::builder().uri(format!("/token?{query}"));
    if let Some((u, p)) = basic {
        req = req.header("Authorization", auth_support::basic(u, p));
    }
    let res = server
        .clone()
        .router()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

#[tokio::test]
async fn token_server_endpoint() {
    let server =
        Arc::new(token_server(ED_PRIVATE, SERVICE).with_expires_in(Duration::from_secs(120)));
    let auth = token_auth(REALM);
    let q = format!(
        "service={SERVICE}&scope=repository:team-a/app:pull,push&scope=repository:public/x:pull"
    );

    let (status, body) = get_token(&server, &q, Some(("alice", "alice pw"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["expires_in"], 120);
    assert_eq!(body["token"], body["access_token"]);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'));
    let claims = auth.verify(body["token"].as_str().unwrap()).unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(
        claims.access,
        [
            Grant::repository(
                "team-a/app",
                Action::ALL
                    .into_iter()
                    .filter(|a| *a != Action::Delete)
                    .collect()
            ),
            Grant::repository("public/x", Action::Pull.into()),
        ]
    );

    // Anonymous: public scopes only, and no catalog.
    let (status, body) = get_token(&server, &format!("{q}&scope=registry:catalog:*"), None).await;
    assert_eq!(status, StatusCode::OK);
    let claims = auth.verify(body["token"].as_str().unwrap()).unwrap();
    assert_eq!(claims.sub, "");
    assert_eq!(
        claims.access,
        [Grant::repository("public/x", Action::Pull.into())]
    );

    // Wrong password, wrong service.
    let (status, _) = get_token(&server, &q, Some(("alice", "nope"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = get_token(&server, "service=elsewhere&scope=repository:a:pull", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
