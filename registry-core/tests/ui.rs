//! The web UI over plain HTTP (the browser test is `examples/registry/tests/ui_browser.rs`):
//! what the pages show, who sees what, deletion and its refusals, escaping of hostile
//! values, and bad parameters. In process, on fs + SQLite.

#![allow(clippy::unwrap_used)]

mod auth_support;
mod common;

use std::sync::Arc;

use axum::body::Body;
use common::{Reply, TestRegistry, data};
use http::{Method, StatusCode};
use oci_spec_types::Digest;
use registry_core::RegistryConfig;
use registry_core::auth::{AccessPolicy, AccessRule, Action, Htpasswd};

const ALICE: (&str, &str) = ("alice", "alice pw");
const BOB: (&str, &str) = ("bob", "bob pw");
const HOST: &str = "registry.test:5000";

/// A registry whose router serves the API and the UI.
async fn with_ui(config: RegistryConfig) -> TestRegistry {
    let mut r = TestRegistry::with_config(config).await;
    r.router = r
        .router
        .clone()
        .merge(registry_core::ui::router(&r.registry));
    r
}

/// alice may do everything; bob may pull `team/*` and `public/*` only; anyone may pull
/// `public/*`.
fn auth_config() -> RegistryConfig {
    let users = Htpasswd::parse(&auth_support::htpasswd(&[ALICE, BOB])).unwrap();
    let policy = AccessPolicy::new()
        .with_public("public/*".parse().unwrap())
        .with_rule(AccessRule::new(["*".parse().unwrap()], Action::ALL).with_users(["alice"]))
        .with_rule(
            AccessRule::new(["team/*".parse().unwrap()], [Action::Pull]).with_users(["bob"]),
        );
    RegistryConfig::default()
        .with_authenticator(Arc::new(users))
        .with_authorizer(Arc::new(policy))
}

async fn page(r: &TestRegistry, uri: &str, who: Option<(&str, &str)>) -> Reply {
    let auth = who.map(|(u, p)| auth_support::basic(u, p));
    let mut headers = vec![("Host", HOST)];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    r.send(Method::GET, uri, &headers, Body::empty()).await
}

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

async fn push_blob_as(r: &TestRegistry, who: Option<(&str, &str)>, repo: &str, bytes: &[u8]) {
    let reply = match who {
        Some(who) => auth_support::push_blob_as(r, who, repo, bytes).await,
        None => {
            r.push_blob(repo, bytes).await;
            return;
        }
    };
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
}

async fn put_manifest_as(
    r: &TestRegistry,
    who: Option<(&str, &str)>,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> Digest {
    let auth = who.map(|(u, p)| auth_support::basic(u, p));
    let mut headers = vec![("Content-Type", media_type)];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let reply = r
        .send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &headers,
            Body::from(bytes.to_vec()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    Digest::sha256_of(bytes)
}

const IMAGE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An image with one layer of `layer_len` bytes, pushed by `tag`; its digest and size.
async fn image(
    r: &TestRegistry,
    who: Option<(&str, &str)>,
    repo: &str,
    tag: &str,
    annotations: serde_json::Value,
) -> (Digest, usize) {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"tag\":\"{tag}\"}}");
    let layer = data(tag.len() as u64 + 7, 2048);
    push_blob_as(r, who, repo, config.as_bytes()).await;
    push_blob_as(r, who, repo, &layer).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": IMAGE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": Digest::sha256_of(config.as_bytes()).to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": Digest::sha256_of(&layer).to_string(), "size": layer.len()}],
        "annotations": annotations,
    }))
    .unwrap();
    let d = put_manifest_as(r, who, repo, tag, IMAGE, &manifest).await;
    (d, manifest.len())
}

/// A signature-like artifact whose subject is `subject`.
async fn referrer(
    r: &TestRegistry,
    repo: &str,
    subject: &Digest,
    subject_size: usize,
    artifact_type: &str,
    annotations: serde_json::Value,
) -> Digest {
    push_blob_as(r, None, repo, b"{}").await;
    let payload = data(99, 64);
    push_blob_as(r, None, repo, &payload).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": IMAGE,
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": Digest::sha256_of(b"{}").to_string(), "size": 2},
        "layers": [{"mediaType": "application/octet-stream",
                    "digest": Digest::sha256_of(&payload).to_string(), "size": payload.len()}],
        "subject": {"mediaType": IMAGE, "digest": subject.to_string(), "size": subject_size},
        "annotations": annotations,
    }))
    .unwrap();
    let digest = Digest::sha256_of(&manifest);
    put_manifest_as(r, None, repo, digest.as_str(), IMAGE, &manifest).await
}

/// The same registry on PostgreSQL metadata (fs blobs): every page reads the store
/// through the metadata traits, so both backends must give the same pages.
async fn with_ui_on_postgres(database: &'static str) -> TestRegistry {
    let url = tokio::task::spawn_blocking(move || {
        test_support::postgres::Postgres::shared().unique_database(database)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let blobs = storage_fs::FsBlobStore::open(dir.path().join("blobs")).unwrap();
    let metadata = metadata_postgres::PostgresMetadataStore::connect(&url)
        .await
        .unwrap();
    let registry = registry_core::Registry::new(
        Arc::new(blobs),
        Arc::new(metadata),
        RegistryConfig::default(),
    );
    let router = registry
        .router()
        .merge(registry_core::ui::router(&registry));
    TestRegistry {
        registry,
        router,
        dir,
    }
}

#[tokio::test]
async fn pages_show_repositories_tags_platforms_layers_and_referrers() {
    pages_show_what_was_pushed(&with_ui(RegistryConfig::default()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_show_the_same_on_postgres() {
    pages_show_what_was_pushed(&with_ui_on_postgres("ui_pages").await).await;
}

async fn pages_show_what_was_pushed(r: &TestRegistry) {
    let (v1, v1_size) = image(
        r,
        None,
        "team/app",
        "v1",
        serde_json::json!({"org.example.note": "first"}),
    )
    .await;
    let (arm, _) = image(r, None, "team/app", "arm-only", serde_json::json!({})).await;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [
            {"mediaType": IMAGE, "digest": v1.to_string(), "size": v1_size,
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": IMAGE, "digest": arm.to_string(), "size": 10,
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    }))
    .unwrap();
    put_manifest_as(r, None, "team/app", "multi", INDEX, &index).await;
    let sig = referrer(
        r,
        "team/app",
        &v1,
        v1_size,
        "application/vnd.dev.cosign.artifact.sig.v1+json",
        serde_json::json!({"org.example.signer": "ci"}),
    )
    .await;
    image(r, None, "other", "latest", serde_json::json!({})).await;

    let list = page(r, "/ui/", None).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(
        list.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let body = text(&list);
    assert!(body.contains("href=\"/ui/r/team/app\""), "{body}");
    assert!(body.contains("href=\"/ui/r/other\""), "{body}");

    let search = text(&page(r, "/ui/?q=team", None).await);
    assert!(
        search.contains("/ui/r/team/app") && !search.contains("/ui/r/other"),
        "{search}"
    );
    // Any part of the name, in any case: "APP" finds team/app, in both orders.
    for sort in ["name", "last_push"] {
        let search = text(&page(r, &format!("/ui/?q=APP&sort={sort}"), None).await);
        assert!(
            search.contains("/ui/r/team/app") && !search.contains("/ui/r/other"),
            "{sort}: {search}"
        );
    }

    let repo = text(&page(r, "/ui/r/team/app", None).await);
    for want in [
        "v1",
        "multi",
        "arm-only",
        "linux/amd64, linux/arm64/v8",
        "index",
        "image",
        &format!("docker pull {HOST}/team/app:multi"),
    ] {
        assert!(repo.contains(want), "{want} missing: {repo}");
    }
    // An index's size counts its children's configs and layers: what pulling every
    // platform downloads.
    let config_len = |tag: &str| {
        format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"tag\":\"{tag}\"}}").len()
    };
    // The index, its children's manifests (as its descriptors give their sizes: v1's,
    // and 10 for arm-only), and their configs and layers.
    let total =
        index.len() + v1_size + 10 + config_len("v1") + 2048 + config_len("arm-only") + 2048;
    let shown = format!("{:.1} KiB", total as f64 / 1024.0);
    assert!(repo.contains(&shown), "{shown} missing: {repo}");
    // Newest push first: the index was pushed after v1.
    assert!(
        repo.find(">multi<").unwrap() < repo.find(">v1<").unwrap(),
        "{repo}"
    );

    let manifest = text(&page(r, &format!("/ui/r/team/app/-/manifest/{v1}"), None).await);
    for want in [
        "org.example.note",
        "first",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "2.0 KiB",
        &format!("/ui/r/team/app/-/manifest/{sig}"),
        "signature",
        "org.example.signer=ci",
        &format!("docker pull {HOST}/team/app@{v1}"),
    ] {
        assert!(manifest.contains(want), "{want} missing: {manifest}");
    }
    // The signature has no tag: it is listed with the untagged manifests.
    assert!(
        repo.contains(&format!(
            "class=\"untagged\" href=\"/ui/r/team/app/-/manifest/{sig}\""
        )),
        "{repo}"
    );
    let filtered = text(&page(r, "/ui/r/team/app?q=v", None).await);
    assert!(
        filtered.contains(">v1<") && !filtered.contains(">multi<"),
        "{filtered}"
    );
    let by_tag = page(r, "/ui/r/team/app/-/manifest/multi", None).await;
    assert_eq!(by_tag.status, StatusCode::OK);
    assert!(text(&by_tag).contains(&format!("/ui/r/team/app/-/manifest/{arm}")));
    let sig_page = text(&page(r, &format!("/ui/r/team/app/-/manifest/{sig}"), None).await);
    assert!(
        sig_page.contains(&format!("href=\"/ui/r/team/app/-/manifest/{v1}\"")),
        "subject link: {sig_page}"
    );

    let storage = text(&page(r, "/ui/storage", None).await);
    for want in [
        "id=\"totals\"",
        "team/app",
        "application/vnd.dev.cosign.artifact.sig.v1+json",
    ] {
        assert!(storage.contains(want), "{want} missing: {storage}");
    }

    // Without authentication there is nothing to log in to.
    assert!(!body.contains("/ui/login"), "{body}");
    assert_eq!(
        page(r, "/ui/login", None).await.status,
        StatusCode::SEE_OTHER
    );
    let css = page(r, "/ui/assets/ui.css", None).await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    // Nothing is loaded from elsewhere.
    for body in [&body, &repo, &manifest, &storage] {
        assert!(
            !body.contains("https://") && !body.contains("http://"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn hostile_values_are_escaped() {
    let r = with_ui(RegistryConfig::default()).await;
    let evil = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>";
    let (d, size) = image(&r, None, "x", "v1", serde_json::json!({ evil: evil })).await;
    referrer(
        &r,
        "x",
        &d,
        size,
        "application/vnd.example+json",
        serde_json::json!({"k": evil}),
    )
    .await;
    for uri in [
        format!("/ui/r/x/-/manifest/{d}"),
        "/ui/r/x".to_string(),
        format!("/ui/?q={}", "%3Cscript%3Ealert(3)%3C%2Fscript%3E"),
    ] {
        let reply = page(&r, &uri, None).await;
        let body = text(&reply);
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {body}");
        assert!(!body.contains("<script>alert"), "{uri}: {body}");
        assert!(!body.contains("<img src=x"), "{uri}: {body}");
    }
    let manifest = text(&page(&r, &format!("/ui/r/x/-/manifest/{d}"), None).await);
    assert!(
        manifest.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{manifest}"
    );
    let csp = page(&r, "/ui/", None).await;
    assert!(
        csp.header("content-security-policy")
            .unwrap()
            .contains("default-src 'self'")
    );
}

#[tokio::test]
async fn bad_parameters_and_paths_are_client_errors() {
    let r = with_ui(RegistryConfig::default()).await;
    image(&r, None, "a", "v1", serde_json::json!({})).await;
    for (uri, status) in [
        ("/ui/?n=0", StatusCode::BAD_REQUEST),
        ("/ui/?n=abc", StatusCode::BAD_REQUEST),
        ("/ui/?n=99999999999999999999999", StatusCode::BAD_REQUEST),
        ("/ui/?n=100000", StatusCode::BAD_REQUEST),
        ("/ui/?sort=bytes", StatusCode::BAD_REQUEST),
        ("/ui/?sort=size&after=12", StatusCode::BAD_REQUEST),
        ("/ui/?sort=size&after=x,a", StatusCode::BAD_REQUEST),
        ("/ui/?sort=last_push&after=garbage", StatusCode::BAD_REQUEST),
        ("/ui/?q=a&q=b", StatusCode::BAD_REQUEST),
        ("/ui/r/a?after=garbage", StatusCode::BAD_REQUEST),
        ("/ui/r/a?after=-,v1", StatusCode::BAD_REQUEST),
        ("/ui/r/A", StatusCode::BAD_REQUEST),
        ("/ui/r/a%2Fb", StatusCode::BAD_REQUEST),
        ("/ui/r/a/-/manifest/sha256:zz", StatusCode::BAD_REQUEST),
        ("/ui/r/a/-/manifest/bad*tag", StatusCode::BAD_REQUEST),
        ("/ui/r/a/-/nothing/x", StatusCode::NOT_FOUND),
        ("/ui/r/nope", StatusCode::NOT_FOUND),
        ("/ui/r/a/-/manifest/missing", StatusCode::NOT_FOUND),
        ("/ui/assets/../../etc/passwd", StatusCode::NOT_FOUND),
        ("/ui/nothing/here", StatusCode::NOT_FOUND),
    ] {
        let reply = page(&r, uri, None).await;
        assert_eq!(reply.status, status, "{uri}: {}", text(&reply));
        assert_eq!(
            reply.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{uri}"
        );
    }
    // Every bad value is named in the page.
    assert!(text(&page(&r, "/ui/?n=abc", None).await).contains("abc"));
    // A cursor past the end is simply an empty page.
    let past = page(&r, "/ui/?after=zzz", None).await;
    assert_eq!(past.status, StatusCode::OK, "{}", text(&past));
}

/// The `href` of the page's "next" link, unescaped.
fn next_link(body: &str) -> Option<String> {
    let at = body.find("rel=\"next\"")?;
    let start = body[..at].rfind("href=\"")? + "href=\"".len();
    let end = body[start..].find('"')? + start;
    Some(body[start..end].replace("&#38;", "&").replace("&amp;", "&"))
}

#[tokio::test]
async fn paging_walks_every_repository_once() {
    paging_walks(&with_ui(RegistryConfig::default()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_walks_every_repository_once_on_postgres() {
    paging_walks(&with_ui_on_postgres("ui_paging").await).await;
}

async fn paging_walks(r: &TestRegistry) {
    let names: Vec<String> = (0..23).map(|i| format!("p/r{i:02}")).collect();
    // Repository i holds one blob of i + 1 bytes of its own: by size, the reverse order.
    for (i, n) in names.iter().enumerate() {
        r.push_blob(n, &vec![b'x'; i + 1]).await;
    }
    let mut largest_first = names.clone();
    largest_first.reverse();
    for first in ["/ui/?n=5", "/ui/?n=5&sort=last_push", "/ui/?n=5&sort=size"] {
        let by_size = first.ends_with("size");
        let mut seen = Vec::new();
        let mut uri = first.to_string();
        for _ in 0..10 {
            let reply = page(r, &uri, None).await;
            assert_eq!(reply.status, StatusCode::OK, "{uri}");
            let body = text(&reply);
            assert_eq!(body.contains("class=\"size\""), by_size, "{uri}: {body}");
            for line in body.lines() {
                if let Some(i) = line.find("class=\"repo\" href=\"/ui/r/") {
                    let rest = &line[i + "class=\"repo\" href=\"/ui/r/".len()..];
                    seen.push(rest[..rest.find('"').unwrap()].to_string());
                }
            }
            match next_link(&body) {
                Some(next) => uri = next,
                None => break,
            }
        }
        // No repository has a manifest, so by last push they are all "never pushed",
        // which is ordered by name too: every one once, in name order.
        let want = if by_size { &largest_first } else { &names };
        assert_eq!(&seen, want, "{first}");
    }
}

#[tokio::test]
async fn pages_follow_the_api_s_authentication_and_visibility() {
    let r = with_ui(auth_config()).await;
    image(&r, Some(ALICE), "team/app", "v1", serde_json::json!({})).await;
    image(&r, Some(ALICE), "secret/app", "v1", serde_json::json!({})).await;
    image(&r, Some(ALICE), "public/base", "v1", serde_json::json!({})).await;

    // Anonymous callers may not browse: the browser is asked for a password.
    let anonymous = page(&r, "/ui/", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(
        anonymous
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic")
    );
    let wrong = page(&r, "/ui/", Some(("alice", "wrong"))).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let login = page(&r, "/ui/login", None).await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED);
    assert!(login.header("www-authenticate").is_some());
    assert_eq!(
        page(&r, "/ui/login", Some(BOB)).await.status,
        StatusCode::SEE_OTHER
    );
    // But a public repository's page is theirs to see, as a pull is.
    assert_eq!(
        page(&r, "/ui/r/public/base", None).await.status,
        StatusCode::OK
    );
    let public = text(&page(&r, "/ui/r/public/base", None).await);
    assert!(
        public.contains("href=\"/ui/login\""),
        "anonymous callers are offered to log in: {public}"
    );

    let bob = text(&page(&r, "/ui/", Some(BOB)).await);
    assert!(
        bob.contains("/ui/r/team/app") && bob.contains("/ui/r/public/base"),
        "{bob}"
    );
    assert!(!bob.contains("secret"), "{bob}");
    let alice = text(&page(&r, "/ui/", Some(ALICE)).await);
    assert!(alice.contains("/ui/r/secret/app"), "{alice}");
    assert!(!text(&page(&r, "/ui/?q=secret", Some(BOB)).await).contains("secret/app"));
    let storage = text(&page(&r, "/ui/storage", Some(BOB)).await);
    assert!(!storage.contains("secret"), "{storage}");
    assert!(
        !storage.contains("id=\"totals\""),
        "bob may not see registry-wide totals"
    );
    assert!(text(&page(&r, "/ui/storage", Some(ALICE)).await).contains("id=\"totals\""));

    let denied = page(&r, "/ui/r/secret/app", Some(BOB)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert!(!text(&denied).contains("v1"));
    assert_eq!(
        page(&r, "/ui/r/secret/app/-/manifest/v1", Some(BOB))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        page(&r, "/ui/r/secret/app", None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn post_delete(
    r: &TestRegistry,
    uri: &str,
    who: (&str, &str),
    origin: Option<&str>,
    digest: &Digest,
) -> Reply {
    let auth = auth_support::basic(who.0, who.1);
    let mut headers = vec![
        ("Host", HOST),
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    if let Some(o) = origin {
        headers.push(("Origin", o));
    }
    r.send(
        Method::POST,
        uri,
        &headers,
        Body::from(format!("digest={digest}")),
    )
    .await
}

async fn tags(r: &TestRegistry, repo: &str) -> Vec<String> {
    let reply = auth_support::as_user(
        r,
        ALICE,
        Method::GET,
        &format!("/v2/{repo}/tags/list"),
        vec![],
    )
    .await;
    reply.json()["tags"]
        .as_array()
        .map(|t| t.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn deletion_needs_delete_permission_a_confirmation_and_this_origin() {
    let r = with_ui(auth_config()).await;
    let (d, _) = image(&r, Some(ALICE), "team/app", "v1", serde_json::json!({})).await;
    image(&r, Some(ALICE), "team/app", "v2", serde_json::json!({})).await;
    let origin = format!("http://{HOST}");

    // bob may pull: no delete link, and the confirmation and the deletion are refused.
    assert!(!text(&page(&r, "/ui/r/team/app", Some(BOB)).await).contains("/-/delete/"));
    assert_eq!(
        page(&r, "/ui/r/team/app/-/delete/v1", Some(BOB))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let refused = post_delete(&r, "/ui/r/team/app/-/delete/v1", BOB, Some(&origin), &d).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(tags(&r, "team/app").await, ["v1", "v2"]);

    // alice sees the link and the confirmation page, whose form posts the digest.
    let repo = text(&page(&r, "/ui/r/team/app", Some(ALICE)).await);
    assert!(
        repo.contains("href=\"/ui/r/team/app/-/delete/v1\""),
        "{repo}"
    );
    let confirm = text(&page(&r, "/ui/r/team/app/-/delete/v1", Some(ALICE)).await);
    assert!(
        confirm.contains("method=\"post\"") && confirm.contains(&d.to_string()),
        "{confirm}"
    );

    // Cross-site or unattributed posts are refused, and delete nothing.
    for o in [None, Some("http://evil.example"), Some("null")] {
        let reply = post_delete(&r, "/ui/r/team/app/-/delete/v1", ALICE, o, &d).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{o:?}");
    }
    // A digest other than the tag's (the tag moved since the page was shown): kept.
    let stale = post_delete(
        &r,
        "/ui/r/team/app/-/delete/v1",
        ALICE,
        Some(&origin),
        &Digest::sha256_of(b"other"),
    )
    .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(tags(&r, "team/app").await, ["v1", "v2"]);

    let done = post_delete(&r, "/ui/r/team/app/-/delete/v1", ALICE, Some(&origin), &d).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", text(&done));
    assert_eq!(done.header("location"), Some("/ui/r/team/app?deleted=v1"));
    assert_eq!(tags(&r, "team/app").await, ["v2"]);
    // The manifest stays (only the tag went).
    let by_digest = page(&r, &format!("/ui/r/team/app/-/manifest/{d}"), Some(ALICE)).await;
    assert_eq!(by_digest.status, StatusCode::OK);

    // Deleting the manifest itself takes its tags with it.
    let (d2, _) = image(
        &r,
        Some(ALICE),
        "team/app",
        "v3",
        serde_json::json!({"x": "y"}),
    )
    .await;
    let done = post_delete(
        &r,
        &format!("/ui/r/team/app/-/delete/{d2}"),
        ALICE,
        Some(&origin),
        &d2,
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", text(&done));
    assert_eq!(tags(&r, "team/app").await, ["v2"]);
}

#[tokio::test]
async fn a_read_only_registry_refuses_deletion_from_the_ui_too() {
    let r = with_ui(RegistryConfig::default()).await;
    let (d, _) = image(&r, None, "a", "v1", serde_json::json!({})).await;
    let read_only = TestRegistry::open(
        r.dir,
        RegistryConfig::default().with_policy(registry_core::Policy::new().with_read_only(true)),
    )
    .await;
    let mut ro = read_only;
    ro.router = ro
        .router
        .clone()
        .merge(registry_core::ui::router(&ro.registry));
    let reply = ro
        .send(
            Method::POST,
            "/ui/r/a/-/delete/v1",
            &[
                ("Host", HOST),
                ("Origin", &format!("http://{HOST}")),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            Body::from(format!("digest={d}")),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "{}",
        text(&reply)
    );
    assert!(text(&ro.get("/v2/a/tags/list").await).contains("v1"));
}

/// With token auth, a page shows what the bearer token's grants allow, as the API does;
/// without a token the page answers `401` with the token server's challenge.
#[tokio::test]
async fn a_bearer_token_sees_only_what_its_grants_allow() {
    use registry_core::auth::{Principal, TokenAuth};
    const SERVICE: &str = "registry.test";
    const ISSUER: &str = "test-token-server";
    let users = Htpasswd::parse(&auth_support::htpasswd(&[ALICE, BOB])).unwrap();
    let policy = AccessPolicy::new()
        .with_rule(AccessRule::new(["team/*".parse().unwrap()], Action::ALL).with_users(["alice"]))
        .with_rule(
            AccessRule::new(["team/app".parse().unwrap()], [Action::Pull]).with_users(["bob"]),
        );
    let server = token_server::TokenServer::new(
        ISSUER,
        SERVICE,
        auth_support::ED_PRIVATE.as_bytes(),
        users,
        policy,
    )
    .unwrap();
    let token = |user: &str, scopes: &[&str]| {
        let principal = Principal::user(user);
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        let grants = server.grants(&principal, &scopes);
        server.sign(&principal, grants).unwrap().token
    };
    let auth = TokenAuth::from_pem(
        "http://127.0.0.1:1/token",
        SERVICE,
        ISSUER,
        auth_support::ED_PUBLIC.as_bytes(),
    )
    .unwrap();
    let r = with_ui(RegistryConfig::default().with_authenticator(Arc::new(auth))).await;
    let alice = token(
        "alice",
        &[
            "repository:team/app:pull,push",
            "repository:team/other:pull,push",
        ],
    );
    for repo in ["team/app", "team/other"] {
        for blob in [&b"{}"[..], &b"layer"[..]] {
            let reply = r
                .send(
                    Method::POST,
                    &format!(
                        "/v2/{repo}/blobs/uploads/?digest={}",
                        Digest::sha256_of(blob)
                    ),
                    &[("Authorization", &format!("Bearer {alice}"))],
                    Body::from(blob.to_vec()),
                )
                .await;
            assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        }
    }
    let bearer = |t: &str| format!("Bearer {t}");
    let get = |uri: &'static str, auth: Option<String>| {
        let r = &r;
        async move {
            let mut headers = vec![("Host", HOST)];
            if let Some(a) = &auth {
                headers.push(("Authorization", a.as_str()));
            }
            r.send(Method::GET, uri, &headers, Body::empty()).await
        }
    };
    let none = get("/ui/", None).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert!(
        none.header("www-authenticate")
            .unwrap()
            .starts_with("Bearer ")
    );

    let bob = token(
        "bob",
        &["repository:team/app:pull", "repository:team/other:pull"],
    );
    let list = text(&get("/ui/", Some(bearer(&bob))).await);
    assert!(list.contains("/ui/r/team/app"), "{list}");
    assert!(
        !list.contains("team/other"),
        "bob's token grants no pull there: {list}"
    );
    let all = text(&get("/ui/", Some(bearer(&alice))).await);
    assert!(all.contains("/ui/r/team/other"), "{all}");
    let denied = get("/ui/r/team/other", Some(bearer(&bob))).await;
    assert_eq!(
        denied.status,
        StatusCode::UNAUTHORIZED,
        "a token asks for a wider token"
    );
}
