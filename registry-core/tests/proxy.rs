//! Pull-through cache: a registry whose `up/` prefix is served by another registry over
//! real HTTP on loopback. The upstream is our own registry (anonymous, and behind Docker
//! token auth with the example token server), or, to make it misbehave (corrupt bytes,
//! a body broken off half way, counting fetches), a small axum upstream of the test's.

#![allow(clippy::unwrap_used)]

mod auth_support;
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::response::Response;
use common::{TestRegistry, data};
use http::{Method, StatusCode};
use oci_spec_types::Digest;
use registry_core::RegistryConfig;
use registry_core::auth::{AccessPolicy, AccessRule, Action, Htpasswd, TokenAuth};
use registry_core::proxy::{Credentials, ProxyConfig, Upstream};

fn cache_of(url: &str, ttl: Duration) -> RegistryConfig {
    RegistryConfig::default().with_proxy(
        ProxyConfig::default()
            .with_upstream(Upstream::new("up", url).unwrap())
            .with_tag_ttl(ttl),
    )
}

/// A GET whose body may fail half way (what a client of a broken upstream sees); an
/// error status is a failure too.
async fn try_pull(reg: &TestRegistry, uri: &str) -> Result<Vec<u8>, String> {
    let res = tower::ServiceExt::oneshot(
        reg.router.clone(),
        http::Request::get(uri).body(Body::empty()).unwrap(),
    )
    .await
    .unwrap();
    let status = res.status();
    let collected = http_body_util::BodyExt::collect(res.into_body())
        .await
        .map_err(|e| e.to_string())?;
    match status {
        StatusCode::OK => Ok(collected.to_bytes().to_vec()),
        other => Err(format!("{other}: {:?}", collected.to_bytes())),
    }
}

async fn body_of(reg: &TestRegistry, uri: &str) -> (StatusCode, Vec<u8>) {
    let r = reg.get(uri).await;
    (r.status, r.body.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_come_through_with_the_upstream_s_digests_and_stay() {
    let upstream = auth_support::serve(RegistryConfig::default()).await;
    // Push to the upstream over HTTP.
    let client = reqwest::Client::new();
    let layer = data(1, 300_000);
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    for b in [&layer, &config] {
        let url = format!(
            "{}/v2/library/app/blobs/uploads/?digest={}",
            upstream.url,
            Digest::sha256_of(b)
        );
        let r = client.post(url).body(b.clone()).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let manifest = manifest_json(&config, &layer);
    let r = client
        .put(format!("{}/v2/library/app/manifests/v1", upstream.url))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let manifest_digest = Digest::sha256_of(&manifest);

    let cache = TestRegistry::with_config(cache_of(&upstream.url, Duration::ZERO)).await;
    let r = cache.get("/v2/up/library/app/manifests/v1").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body.as_ref(), manifest.as_slice());
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(manifest_digest.to_string().as_str())
    );
    assert_eq!(
        r.header("Content-Type"),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    let (status, bytes) = body_of(
        &cache,
        &format!("/v2/up/library/app/blobs/{}", Digest::sha256_of(&layer)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, layer);
    // The spec's registry proxying: `?ns=` names the upstream by its host; the answer
    // says which namespace served it.
    let host = upstream.url.trim_start_matches("http://").to_string();
    let r = cache
        .get(&format!("/v2/library/app/manifests/v1?ns={host}"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body.as_ref(), manifest.as_slice());
    assert_eq!(r.header("OCI-Namespace"), Some(host.as_str()));
    // A namespace no upstream answers for is this registry's own.
    let r = cache
        .get("/v2/library/app/manifests/v1?ns=elsewhere.example")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.header("OCI-Namespace"), None);
    // Cached content is ordinary content.
    let tags = cache.get("/v2/up/library/app/tags/list").await.json();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));

    // The upstream goes away: what was pulled is still served, the tag stale-if-error.
    drop(upstream);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, bytes) = body_of(
        &cache,
        &format!("/v2/up/library/app/blobs/{}", Digest::sha256_of(&layer)),
    )
    .await;
    assert_eq!((status, bytes), (StatusCode::OK, layer.clone()));
    let r = cache.get("/v2/up/library/app/manifests/v1").await;
    assert_eq!(r.status, StatusCode::OK, "stale tag: {:?}", r.body);
    assert_eq!(r.body.as_ref(), manifest.as_slice());
    // Never pulled: the upstream's failure is the answer.
    let r = cache.get("/v2/up/library/app/manifests/v2").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    // The config was linked, never pulled: its bytes cannot come now.
    let r = cache
        .get(&format!(
            "/v2/up/library/app/blobs/{}",
            Digest::sha256_of(&config)
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
}

fn manifest_json(config: &[u8], layer: &[u8]) -> Vec<u8> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_comes_with_its_children_and_pushes_into_the_prefix_are_refused() {
    let upstream = TestRegistry::new().await;
    let (a, a_bytes) = upstream.push_image("multi", "amd64", &[b"layer-a"]).await;
    let (b, b_bytes) = upstream.push_image("multi", "arm64", &[b"layer-b"]).await;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": a.to_string(),
             "size": a_bytes.len(), "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": b.to_string(),
             "size": b_bytes.len(), "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }))
    .unwrap();
    let r = upstream
        .send(
            Method::PUT,
            "/v2/multi/manifests/latest",
            &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
            Body::from(index.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let (url, _server) = auth_support::serve_router(upstream.router.clone()).await;

    let cache = TestRegistry::with_config(cache_of(&url, Duration::from_secs(60))).await;
    let r = cache.get("/v2/up/multi/manifests/latest").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body.as_ref(), index.as_slice());
    // The children are here already, by digest, with the upstream's bytes.
    for (d, bytes) in [(a, a_bytes), (b, b_bytes)] {
        let r = cache.get(&format!("/v2/up/multi/manifests/{d}")).await;
        assert_eq!(r.body.as_ref(), bytes.as_slice());
    }
    for (method, uri) in [
        (Method::POST, "/v2/up/multi/blobs/uploads/"),
        (Method::PUT, "/v2/up/multi/manifests/mine"),
    ] {
        let r = cache
            .send(method, uri, &[], Body::from(b"{}".to_vec()))
            .await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{uri}");
        assert_eq!(r.code(), "UNSUPPORTED");
        assert!(String::from_utf8_lossy(&r.body).contains("pull-through cache"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_auth_upstream_is_followed_with_our_own_credentials_only() {
    use token_server::TokenServer;
    let users = Htpasswd::parse(&auth_support::htpasswd(&[
        ("mirror", "mirror pw"),
        ("alice", "pw"),
    ]))
    .unwrap();
    let policy = AccessPolicy::new().with_rule(
        AccessRule::new(["*".parse().unwrap()], [Action::Pull, Action::Push])
            .with_users(["mirror", "alice"]),
    );
    let server = Arc::new(
        TokenServer::new(
            "issuer",
            "upstream",
            auth_support::ED_PRIVATE.as_bytes(),
            users,
            policy,
        )
        .unwrap(),
    );
    let (token_url, _token_server) = auth_support::serve_router(server.clone().router()).await;
    let auth = TokenAuth::from_pem(
        format!("{token_url}/token"),
        "upstream",
        "issuer",
        auth_support::ED_PUBLIC.as_bytes(),
    )
    .unwrap();
    let upstream =
        auth_support::serve(RegistryConfig::default().with_authenticator(Arc::new(auth))).await;
    // Push to it as alice, through the token flow by hand.
    let principal = registry_core::auth::Principal::user("alice");
    let grants = server.grants(
        &principal,
        &["repository:private/app:pull,push".to_string()],
    );
    let token = server.sign(&principal, grants).unwrap().token;
    let blob = data(9, 1000);
    let r = reqwest::Client::new()
        .post(format!(
            "{}/v2/private/app/blobs/uploads/?digest={}",
            upstream.url,
            Digest::sha256_of(&blob)
        ))
        .bearer_auth(&token)
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let with = |creds: Credentials| {
        RegistryConfig::default().with_proxy(
            ProxyConfig::default().with_upstream(
                Upstream::new("up", &upstream.url)
                    .unwrap()
                    .with_credentials(creds),
            ),
        )
    };
    let uri = format!("/v2/up/private/app/blobs/{}", Digest::sha256_of(&blob));
    let anonymous = TestRegistry::with_config(with(Credentials::Anonymous)).await;
    let r = anonymous.get(&uri).await;
    assert_eq!(
        r.status,
        StatusCode::BAD_GATEWAY,
        "anonymous gets no pull grant upstream"
    );
    let cache = TestRegistry::with_config(with(Credentials::Basic {
        username: "mirror".into(),
        password: "mirror pw".into(),
    }))
    .await;
    // Our client's own credentials are not what is sent upstream: it sends none here.
    let (status, bytes) = body_of(&cache, &uri).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, blob);
}

/// An upstream of the test's: serves one blob as `serve` says, and counts the fetches.
async fn fake_upstream(
    blob: Vec<u8>,
    serve: fn(Vec<u8>) -> Response,
) -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    let digest = Digest::sha256_of(&blob);
    let router = axum::Router::new().route(
        "/v2/{*path}",
        axum::routing::get(move |Path(path): Path<String>| {
            let blob = blob.clone();
            let counted = counted.clone();
            let digest = digest.clone();
            async move {
                if path == format!("lib/app/blobs/{digest}") {
                    counted.fetch_add(1, Ordering::SeqCst);
                    // Slow enough that concurrent pulls overlap.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    serve(blob)
                } else {
                    Response::builder().status(404).body(Body::empty()).unwrap()
                }
            }
        }),
    );
    let (url, server) = auth_support::serve_router(router).await;
    (url, fetches, server)
}

fn whole(blob: Vec<u8>) -> Response {
    Response::builder()
        .header("Content-Length", blob.len())
        .body(Body::from(blob))
        .unwrap()
}

fn corrupt(mut blob: Vec<u8>) -> Response {
    let last = blob.len() - 1;
    blob[last] ^= 0xff;
    whole(blob)
}

fn broken_off(blob: Vec<u8>) -> Response {
    let half = blob[..blob.len() / 2].to_vec();
    let stream = futures::stream::iter(vec![
        Ok::<_, std::io::Error>(bytes::Bytes::from(half)),
        Err(std::io::Error::other("connection lost")),
    ]);
    Response::builder()
        .header("Content-Length", blob.len())
        .body(Body::from_stream(stream))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pulls_of_a_missing_blob_share_one_fetch() {
    let blob = data(5, 2_000_000);
    let (url, fetches, _server) = fake_upstream(blob.clone(), whole).await;
    let cache = Arc::new(TestRegistry::with_config(cache_of(&url, Duration::ZERO)).await);
    let uri = format!("/v2/up/lib/app/blobs/{}", Digest::sha256_of(&blob));
    let pulls: Vec<_> = (0..4)
        .map(|_| {
            let cache = cache.clone();
            let uri = uri.clone();
            tokio::spawn(async move { body_of(&cache, &uri).await })
        })
        .collect();
    for p in pulls {
        let (status, bytes) = p.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(bytes, blob);
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_broken_off_upstream_blob_is_an_error_and_nothing_is_kept() {
    for (name, serve) in [
        ("corrupt", corrupt as fn(Vec<u8>) -> Response),
        ("broken off", broken_off),
    ] {
        let blob = data(6, 500_000);
        let digest = Digest::sha256_of(&blob);
        let (url, fetches, _server) = fake_upstream(blob.clone(), serve).await;
        let cache = TestRegistry::with_config(cache_of(&url, Duration::ZERO)).await;
        let uri = format!("/v2/up/lib/app/blobs/{digest}");
        // The answer may start as 200 (the bytes stream as they come), but its body
        // fails: the client never holds the whole blob.
        if let Ok(bytes) = try_pull(&cache, &uri).await {
            assert_ne!(bytes, blob, "{name}");
        }
        // Nothing of it was kept: the next pull goes upstream again.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = fetches.load(Ordering::SeqCst);
        assert!(
            try_pull(&cache, &uri).await.is_err(),
            "{name}: the second pull succeeded"
        );
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            before + 1,
            "{name}: something was cached"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_policy_evicts_the_least_recently_pulled_images() {
    let upstream = TestRegistry::new().await;
    let mut images = Vec::new();
    for (i, repo) in ["a", "b", "c"].into_iter().enumerate() {
        let layer = data(20 + i as u64, 100_000);
        let (digest, _) = upstream.push_image(repo, "v1", &[&layer]).await;
        images.push((repo, digest, Digest::sha256_of(&layer)));
    }
    let (url, _server) = auth_support::serve_router(upstream.router.clone()).await;
    // Room for two of the three images (each: a 100,000-byte layer and a small config).
    let config = RegistryConfig::default().with_proxy(
        ProxyConfig::default()
            .with_upstream(Upstream::new("up", &url).unwrap())
            .with_cache_max_bytes(Some(250_000)),
    );
    let cache = TestRegistry::with_config(config).await;
    for (repo, _, layer) in &images {
        let r = cache.get(&format!("/v2/up/{repo}/manifests/v1")).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let (status, _) = body_of(&cache, &format!("/v2/up/{repo}/blobs/{layer}")).await;
        assert_eq!(status, StatusCode::OK);
        // Pull times a few milliseconds apart, so the order is unambiguous.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // `a` is pulled again: now `b` is the least recently pulled.
    assert_eq!(
        cache.get("/v2/up/a/manifests/v1").await.status,
        StatusCode::OK
    );
    let report = cache.registry.evict_cache().await.unwrap();
    let evicted: Vec<String> = report
        .manifests
        .iter()
        .map(|(r, _)| r.to_string())
        .collect();
    assert_eq!(evicted, ["up/b"]);
    assert_eq!(report.manifests[0].1, images[1].1);
    assert!(report.bytes_released >= 100_000, "{report:?}");
    // Under the limit now: a second pass evicts nothing.
    assert!(
        cache
            .registry
            .evict_cache()
            .await
            .unwrap()
            .manifests
            .is_empty()
    );
    // The collector frees the evicted image's layer.
    let gc = cache
        .registry
        .collect_garbage(
            &registry_core::GcConfig::default().with_grace(Duration::ZERO),
            false,
        )
        .await
        .unwrap();
    assert!(gc.blobs.iter().any(|(d, _)| *d == images[1].2), "{gc:?}");
    // Pulled again, it comes back from the upstream.
    let r = cache.get("/v2/up/b/manifests/v1").await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_ttl_evicts_what_was_not_pulled_for_that_long() {
    let upstream = TestRegistry::new().await;
    upstream.push_image("old", "v1", &[b"old layer"]).await;
    let (url, _server) = auth_support::serve_router(upstream.router.clone()).await;
    let config = RegistryConfig::default().with_proxy(
        ProxyConfig::default()
            .with_upstream(Upstream::new("up", &url).unwrap())
            .with_cache_ttl(Some(Duration::from_millis(200))),
    );
    let cache = TestRegistry::with_config(config).await;
    assert_eq!(
        cache.get("/v2/up/old/manifests/v1").await.status,
        StatusCode::OK
    );
    assert!(
        cache
            .registry
            .evict_cache()
            .await
            .unwrap()
            .manifests
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let report = cache.registry.evict_cache().await.unwrap();
    assert_eq!(report.manifests.len(), 1, "{report:?}");
    let tags = cache.get("/v2/up/old/tags/list").await.json();
    assert_eq!(tags["tags"], serde_json::json!([]));
}
