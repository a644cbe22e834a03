//! The request path as an attacker tries it: every spelling the query grammar allows of a
//! cross-repository mount from a repository the caller may not pull, the insights of
//! repositories the caller may not pull, with Basic and with token auth; and the request
//! decoding rules (invalid references, repeated parameters, body codings, tags in the
//! query, the cap on open upload sessions).
//!
//! alice may pull and push everything; carol may pull and push `carol/*` only; the secret
//! is in `secret/app`.

#![allow(clippy::unwrap_used)]

mod auth_support;
mod common;

use std::sync::Arc;

use auth_support::as_user;
use axum::body::Body;
use common::{Reply, TestRegistry, data};
use http::{Method, StatusCode};
use oci_spec_types::Digest;
use registry_core::RegistryConfig;
use registry_core::auth::{AccessPolicy, AccessRule, Action, Htpasswd, Principal, TokenAuth};
use token_server::TokenServer;

const ALICE: (&str, &str) = ("alice", "alice pw");
const CAROL: (&str, &str) = ("carol", "carol pw");

fn policy() -> AccessPolicy {
    AccessPolicy::new()
        .with_rule(
            AccessRule::new(["*".parse().unwrap()], [Action::Pull, Action::Push])
                .with_users(["alice"]),
        )
        .with_rule(
            AccessRule::new(["carol/*".parse().unwrap()], [Action::Pull, Action::Push])
                .with_users(["carol"]),
        )
}

fn basic_config() -> RegistryConfig {
    let users = Htpasswd::parse(&auth_support::htpasswd(&[ALICE, CAROL])).unwrap();
    RegistryConfig::default()
        .with_authenticator(Arc::new(users))
        .with_authorizer(Arc::new(policy()))
}

/// A one-layer image in `repo`, tagged `tag`, pushed as `who`; returns (manifest, layer).
async fn push_image(
    reg: &TestRegistry,
    who: (&str, &str),
    repo: &str,
    tag: &str,
) -> (Digest, Digest) {
    auth_support::push_image_as(reg, who, repo, tag).await
}

fn image_manifest(config: &[u8], layer: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": Digest::sha256_of(config).to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": Digest::sha256_of(layer).to_string(), "size": layer.len()}],
    }))
    .unwrap()
}

/// Every spelling of `mount=<d>&from=secret/app` the query grammar allows, including
/// repeated keys.
fn mount_spellings(d: &Digest) -> Vec<String> {
    let enc = d.to_string().replace(':', "%3A");
    vec![
        format!("mount={d}&from=secret/app"),
        format!("%6Dount={d}&%66rom=secret/app"),
        format!("%6dount={d}&%66rom=secret/app"),
        format!("moun%74={d}&from=secret/app&%66rom=secret/app"),
        format!("%6D%6F%75%6E%74={d}&%66%72%6F%6D=secret%2Fapp"),
        format!("mount={enc}&from=secret%2fapp"),
        format!("mount={d}&from=carol/x&from=secret/app"),
        format!("mount={d}&from=secret/app&from=carol/x"),
        format!("from=secret/app&mount={d}&mount={d}"),
        format!("mount={d}&from=secret/app&digest={d}"),
    ]
}

#[tokio::test]
async fn a_mount_from_a_repository_the_caller_may_not_pull_never_mounts() {
    let reg = TestRegistry::with_config(basic_config()).await;
    let (_, secret) = push_image(&reg, ALICE, "secret/app", "v1").await;
    for q in mount_spellings(&secret) {
        let uri = format!("/v2/carol/x/blobs/uploads/?{q}");
        let r = as_user(&reg, CAROL, Method::POST, &uri, vec![]).await;
        // A plain upload session (the spec's fallback), or a refusal of the repeated key;
        // never the mount.
        assert!(
            r.status == StatusCode::ACCEPTED || r.status == StatusCode::BAD_REQUEST,
            "{q}: {} {:?}",
            r.status,
            r.body
        );
        let got = as_user(
            &reg,
            CAROL,
            Method::GET,
            &format!("/v2/carol/x/blobs/{secret}"),
            vec![],
        )
        .await;
        assert_eq!(got.status, StatusCode::NOT_FOUND, "{q}: the secret leaked");
        assert_eq!(got.code(), "BLOB_UNKNOWN");
    }
    // The same encoded spelling mounts for a caller who may pull the source: the
    // decoding is one, not a refusal of encodings.
    let q = format!("%6Dount={secret}&%66rom=secret%2Fapp");
    let r = as_user(
        &reg,
        ALICE,
        Method::POST,
        &format!("/v2/alice/x/blobs/uploads/?{q}"),
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let got = as_user(
        &reg,
        ALICE,
        Method::GET,
        &format!("/v2/alice/x/blobs/{secret}"),
        vec![],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
}

/// Everything `/v2/_ext/` answers `who`, as one string, for "does the name appear".
async fn insights_seen_by(reg: &TestRegistry, who: (&str, &str), blob: &Digest) -> Vec<Reply> {
    let mut replies = Vec::new();
    for path in [
        "/v2/_ext/catalog".to_string(),
        "/v2/_ext/catalog?sort=last_push".to_string(),
        "/v2/_ext/catalog?n=1".to_string(),
        "/v2/_ext/repositories".to_string(),
        "/v2/_ext/repositories?sort=size&n=1".to_string(),
        "/v2/_ext/blobs".to_string(),
        format!("/v2/_ext/blobs/{blob}"),
        "/v2/_ext/summary".to_string(),
        "/v2/_ext/tags/secret/app".to_string(),
    ] {
        replies.push(as_user(reg, who, Method::GET, &path, vec![]).await);
    }
    replies
}

#[tokio::test]
async fn insights_show_only_what_the_caller_may_pull() {
    let reg = TestRegistry::with_config(basic_config()).await;
    let (secret_manifest, secret_layer) = push_image(&reg, ALICE, "secret/app", "v1").await;
    let (_, carol_layer) = push_image(&reg, CAROL, "carol/app", "v1").await;
    let replies = insights_seen_by(&reg, CAROL, &secret_layer).await;
    for (i, r) in replies.iter().enumerate() {
        let text = String::from_utf8_lossy(&r.body);
        assert!(!text.contains("secret"), "carol sees the secret: {text}");
        assert!(!text.contains(&secret_manifest.to_string()), "{text}");
        // (The blob's own answer names the digest she asked about, nothing more.)
        if i != 6 {
            assert!(!text.contains(&secret_layer.to_string()), "{text}");
        }
    }
    // What she may see, she sees.
    assert_eq!(replies[0].status, StatusCode::OK);
    assert_eq!(replies[0].json()["repositories"][0]["name"], "carol/app");
    assert_eq!(
        replies[2].json()["repositories"].as_array().unwrap().len(),
        1
    );
    assert_eq!(replies[3].json()["repositories"][0]["name"], "carol/app");
    assert_eq!(replies[4].json()["repositories"][0]["name"], "carol/app");
    assert_eq!(replies[6].status, StatusCode::NOT_FOUND);
    assert_eq!(replies[6].code(), "BLOB_UNKNOWN");
    assert_eq!(replies[7].status, StatusCode::FORBIDDEN);
    assert_eq!(replies[8].status, StatusCode::FORBIDDEN);
    let own = as_user(
        &reg,
        CAROL,
        Method::GET,
        &format!("/v2/_ext/blobs/{carol_layer}"),
        vec![],
    )
    .await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(own.json()["linked_by"], serde_json::json!(["carol/app"]));
    // alice sees both.
    let replies = insights_seen_by(&reg, ALICE, &secret_layer).await;
    for r in &replies {
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    assert_eq!(
        replies[0].json()["repositories"].as_array().unwrap().len(),
        2
    );
    assert_eq!(
        replies[6].json()["linked_by"],
        serde_json::json!(["secret/app"])
    );
}

#[tokio::test]
async fn insights_with_tokens_follow_the_token_s_grants() {
    const SERVICE: &str = "registry.test";
    let users = Htpasswd::parse(&auth_support::htpasswd(&[ALICE, CAROL])).unwrap();
    let server = TokenServer::new(
        "issuer",
        SERVICE,
        auth_support::ED_PRIVATE.as_bytes(),
        users,
        policy(),
    )
    .unwrap();
    let token = |user: &str, scopes: &[&str]| {
        let principal = Principal::user(user);
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        let grants = server.grants(&principal, &scopes);
        format!("Bearer {}", server.sign(&principal, grants).unwrap().token)
    };
    // No policy in the registry: the token alone says what the caller may do.
    let auth = TokenAuth::from_pem(
        "http://127.0.0.1:1/token",
        SERVICE,
        "issuer",
        auth_support::ED_PUBLIC.as_bytes(),
    )
    .unwrap();
    let reg =
        TestRegistry::with_config(RegistryConfig::default().with_authenticator(Arc::new(auth)))
            .await;
    let alice = token(
        "alice",
        &[
            "repository:secret/app:pull,push",
            "repository:carol/app:pull,push",
        ],
    );
    for (repo, bytes) in [("secret/app", b"s".to_vec()), ("carol/app", b"c".to_vec())] {
        let uri = format!(
            "/v2/{repo}/blobs/uploads/?digest={}",
            Digest::sha256_of(&bytes)
        );
        let r = reg
            .send(
                Method::POST,
                &uri,
                &[("Authorization", &alice)],
                Body::from(bytes),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    let carol = token(
        "carol",
        &["registry:catalog:*", "repository:carol/app:pull"],
    );
    for path in [
        "/v2/_ext/catalog",
        "/v2/_ext/repositories",
        "/v2/_ext/blobs",
        &format!("/v2/_ext/blobs/{}", Digest::sha256_of(b"s")),
        "/v2/_ext/summary",
    ] {
        let r = reg
            .send(
                Method::GET,
                path,
                &[("Authorization", &carol)],
                Body::empty(),
            )
            .await;
        let text = String::from_utf8_lossy(&r.body);
        assert!(!text.contains("secret"), "{path}: {text}");
    }
    let r = reg
        .send(
            Method::GET,
            "/v2/_ext/catalog",
            &[("Authorization", &carol)],
            Body::empty(),
        )
        .await;
    assert_eq!(r.json()["repositories"][0]["name"], "carol/app");
    // A repository's tags need a pull grant on it: a Bearer challenge for that scope.
    let r = reg
        .send(
            Method::GET,
            "/v2/_ext/tags/secret/app",
            &[("Authorization", &carol)],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.header("WWW-Authenticate")
            .unwrap_or("")
            .contains("repository:secret/app:pull")
    );
}

#[tokio::test]
async fn an_invalid_reference_is_an_unknown_manifest_to_reads_and_invalid_to_pushes() {
    let reg = TestRegistry::new().await;
    reg.push_image("a", "v1", &[b"x"]).await;
    for method in [Method::GET, Method::HEAD, Method::DELETE] {
        let r = reg
            .send(
                method.clone(),
                "/v2/a/manifests/.INVALID_MANIFEST_NAME",
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method}");
        if method != Method::HEAD {
            assert_eq!(r.code(), "MANIFEST_UNKNOWN");
        }
    }
    let r = reg.put_manifest("a", ".INVALID_MANIFEST_NAME", b"{}").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_manifest_pushed_by_digest_takes_every_tag_of_the_query() {
    let reg = TestRegistry::new().await;
    let config = b"{}".to_vec();
    let layer = data(3, 100);
    reg.push_blob("a", &config).await;
    reg.push_blob("a", &layer).await;
    let manifest = image_manifest(&config, &layer);
    let digest = Digest::sha256_of(&manifest);
    let r = reg
        .put_manifest(
            "a",
            &format!("{digest}?tag=one&%74ag=two&tag=three"),
            &manifest,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let confirmed: Vec<&str> = r
        .headers
        .get_all("OCI-Tag")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(confirmed, ["one", "two", "three"]);
    let tags = reg.get("/v2/a/tags/list").await.json()["tags"].clone();
    assert_eq!(tags, serde_json::json!(["one", "three", "two"]));
    for tag in ["one", "two", "three"] {
        let r = reg.get(&format!("/v2/a/manifests/{tag}")).await;
        assert_eq!(
            r.header("Docker-Content-Digest"),
            Some(digest.to_string().as_str())
        );
    }
    // One bad tag refuses the push, and stores none of it.
    let other = image_manifest(b"{}", &data(4, 10));
    reg.push_blob("a", &data(4, 10)).await;
    let r = reg
        .put_manifest(
            "a",
            &format!("{}?tag=four&tag=bad*", Digest::sha256_of(&other)),
            &other,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reg.get("/v2/a/manifests/four").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bodies_in_codings_the_server_does_not_decode_are_refused() {
    let reg = TestRegistry::new().await;
    let loc = reg.open_upload("a").await;
    for (name, value) in [
        ("Transfer-Encoding", "gzip, chunked"),
        ("Content-Encoding", "gzip"),
    ] {
        let r = reg
            .send(
                Method::PATCH,
                &loc,
                &[(name, value)],
                Body::from(b"coded".to_vec()),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{name}");
        assert_eq!(r.code(), "UNSUPPORTED");
    }
    // The session took nothing.
    let r = reg.send(Method::GET, &loc, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.header("Range"), Some("0-0"));
}

#[tokio::test]
async fn repeated_parameters_are_refused_not_guessed() {
    let reg = TestRegistry::new().await;
    let d = reg.push_blob("a", b"x").await;
    let other = Digest::sha256_of(b"y");
    let r = reg
        .send(
            Method::POST,
            &format!("/v2/b/blobs/uploads/?digest={d}&%64igest={other}"),
            &[],
            Body::from(b"x".to_vec()),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = reg.get("/v2/a/tags/list?n=1&n=1000").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn open_upload_sessions_are_capped() {
    let reg =
        TestRegistry::with_config(RegistryConfig::default().with_max_open_uploads(Some(2))).await;
    let first = reg.open_upload("a").await;
    reg.open_upload("a").await;
    let r = reg
        .send(Method::POST, "/v2/a/blobs/uploads/", &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.code(), "TOOMANYREQUESTS");
    assert!(r.header("Retry-After").is_some());
    // A finished session makes room.
    let r = reg.send(Method::DELETE, &first, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    reg.open_upload("a").await;
}

#[tokio::test]
async fn no_spelling_of_an_insights_path_reaches_a_repository_the_caller_may_not_pull() {
    let reg = TestRegistry::with_config(basic_config()).await;
    push_image(&reg, ALICE, "secret/app", "v1").await;
    for path in [
        "/v2/_ext/tags/secret/app",
        "/v2/_ext/tags/secret%2Fapp",
        "/v2/_ext/tags/secret%2fapp",
        "/v2/_ext/tags/secret/app/",
        "/v2/_ext/tags//secret/app",
        "/v2/_ext/tags/./secret/app",
        "/v2/_ext/tags/carol/../secret/app",
        "/v2/_ext/tags/%73ecret/app",
        "/v2/_ext/tags/SECRET/APP",
        "/v2/_ext/catalog?prefix=secret",
        "/v2/_ext/catalog?prefix=secret&prefix=carol",
        "/v2/_ext/catalog?%70refix=secret&sort=last_push",
        "/v2/_ext/repositories?sort=name&n=10000",
    ] {
        let r = as_user(&reg, CAROL, Method::GET, path, vec![]).await;
        let text = String::from_utf8_lossy(&r.body);
        assert!(!text.contains("v1"), "{path}: {} {text}", r.status);
        assert!(
            !text.contains("\"secret/app\""),
            "{path}: {} {text}",
            r.status
        );
        assert!(
            r.status != StatusCode::OK || !text.contains("tags\":[{"),
            "{path}: {text}"
        );
    }
}
