//! Mirroring: `Registry::sync` from and to other registries over real HTTP on loopback.
//! The other registry is our own (anonymous, behind Basic auth, behind Docker token auth
//! with the example token server), seen through a test layer that logs every request,
//! shrinks list pages so the sync must follow `Link` headers, and breaks on demand.

#![allow(clippy::unwrap_used)]

mod auth_support;
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use common::{TestRegistry, data};
use http::{Method, StatusCode};
use oci_spec_types::Digest;
use registry_core::RegistryConfig;
use registry_core::auth::{AccessPolicy, AccessRule, Action, Htpasswd, TokenAuth};
use registry_core::mirror::push::{PushMirror, PushMirrorConfig};
use registry_core::mirror::schedule::PullMirror;
use registry_core::mirror::{Remote, SyncOptions};
use registry_core::proxy::Credentials;

/// What the test layer saw and how it behaves.
#[derive(Clone, Default)]
struct Wire {
    seen: Arc<Mutex<Vec<(Method, String)>>>,
    /// Blob `GET`s still answered whole; the next one breaks off half way, and every one
    /// after it is a 500 (`None`: no limit).
    blob_budget: Arc<Mutex<Option<usize>>>,
    /// Everything is a 503 while set.
    down: Arc<AtomicBool>,
}

impl Wire {
    fn count(&self, method: Method, kind: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p)| *m == method && p.contains(kind) && !p.contains("/uploads/"))
            .count()
    }

    fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

async fn wire_layer(State(wire): State<Wire>, mut req: Request, next: Next) -> Response {
    // Two entries a page, so the catalog and tag lists take several.
    if let Some(q) = req.uri().query().filter(|q| q.contains("n=1000")) {
        let uri = format!("{}?{}", req.uri().path(), q.replace("n=1000", "n=2"));
        *req.uri_mut() = uri.parse().unwrap();
    }
    let method = req.method().clone();
    let path = req.uri().to_string();
    wire.seen
        .lock()
        .unwrap()
        .push((method.clone(), path.clone()));
    if wire.down.load(Ordering::SeqCst) {
        return Response::builder().status(503).body(Body::empty()).unwrap();
    }
    let blob_get = method == Method::GET && path.contains("/blobs/sha256:");
    let verdict = if blob_get {
        let mut budget = wire.blob_budget.lock().unwrap();
        match budget.as_mut() {
            None => None,
            Some(0) => Some(false),
            Some(n) => {
                *n -= 1;
                // The last one allowed is the one that breaks off.
                (*n == 0).then_some(true)
            }
        }
    } else {
        None
    };
    match verdict {
        None => next.run(req).await,
        // Marks the budget spent: later blob GETs fail outright.
        Some(false) => Response::builder().status(500).body(Body::empty()).unwrap(),
        Some(true) => {
            *wire.blob_budget.lock().unwrap() = Some(0);
            let res = next.run(req).await;
            let (parts, body) = res.into_parts();
            let bytes = http_body_util::BodyExt::collect(body)
                .await
                .unwrap()
                .to_bytes();
            let half = bytes.slice(..bytes.len() / 2);
            let stream = futures::stream::iter(vec![
                Ok::<_, std::io::Error>(half),
                Err(std::io::Error::other("connection lost")),
            ]);
            Response::from_parts(parts, Body::from_stream(stream))
        }
    }
}

/// `router` served on loopback behind the test layer.
async fn behind_wire(router: axum::Router) -> (String, Wire, tokio::task::JoinHandle<()>) {
    let wire = Wire::default();
    let router = router.layer(axum::middleware::from_fn_with_state(
        wire.clone(),
        wire_layer,
    ));
    let (url, server) = auth_support::serve_router(router).await;
    (url, wire, server)
}

/// Pushes an OCI index of two one-layer images; returns its digest and bytes, and the
/// children's digests.
async fn push_index(reg: &TestRegistry, repo: &str, tag: &str) -> (Digest, Vec<u8>, Vec<Digest>) {
    let (a, a_bytes) = reg
        .push_image(repo, &format!("{tag}-amd64"), &[&data(11, 5000)])
        .await;
    let (b, b_bytes) = reg
        .push_image(repo, &format!("{tag}-arm64"), &[&data(12, 6000)])
        .await;
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
    let r = reg
        .send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
            Body::from(index.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    (Digest::sha256_of(&index), index, vec![a, b])
}

/// Pushes a signature-like artifact whose subject is `subject`, by digest (no tag).
async fn push_referrer(reg: &TestRegistry, repo: &str, subject: &Digest, seed: u64) -> Digest {
    let empty = reg.push_blob(repo, b"{}").await;
    let sig = data(seed, 700);
    let sig_digest = reg.push_blob(repo, &sig).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": empty.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.example.signature.v1",
                    "digest": sig_digest.to_string(), "size": sig.len()}],
        "subject": {"mediaType": "application/vnd.oci.image.index.v1+json",
                    "digest": subject.to_string(), "size": 1},
    }))
    .unwrap();
    let digest = Digest::sha256_of(&manifest);
    let r = reg.put_manifest(repo, digest.as_str(), &manifest).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    digest
}

/// The referrers of `subject` in `repo`, as the registry's API lists them.
async fn referrers(reg: &TestRegistry, repo: &str, subject: &Digest) -> Vec<String> {
    let r = reg.get(&format!("/v2/{repo}/referrers/{subject}")).await;
    assert_eq!(r.status, StatusCode::OK);
    r.json()["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect()
}

fn quick(options: SyncOptions) -> SyncOptions {
    options.with_retries(2, Duration::from_millis(20))
}

/// The source's content: `lib/app` (tags v1, v2, dev; v1 and v2 share a layer),
/// `lib/multi` (an index with a signature referrer), and `other/thing`.
struct Fixture {
    v1: Digest,
    v2: Digest,
    index: Digest,
    index_bytes: Vec<u8>,
    children: Vec<Digest>,
    signature: Digest,
    shared_layer: Vec<u8>,
}

async fn fill(source: &TestRegistry) -> Fixture {
    let shared_layer = data(1, 40_000);
    let (v1, _) = source
        .push_image("lib/app", "v1", &[&shared_layer, &data(2, 3000)])
        .await;
    let (v2, _) = source
        .push_image("lib/app", "v2", &[&shared_layer, &data(3, 3000)])
        .await;
    source.push_image("lib/app", "dev", &[&data(4, 100)]).await;
    let (index, index_bytes, children) = push_index(source, "lib/multi", "latest").await;
    let signature = push_referrer(source, "lib/multi", &index, 5).await;
    source
        .push_image("other/thing", "v1", &[&data(6, 100)])
        .await;
    Fixture {
        v1,
        v2,
        index,
        index_bytes,
        children,
        signature,
        shared_layer,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_copies_tags_whole_indexes_and_referrers_and_a_second_copies_nothing() {
    let source = TestRegistry::new().await;
    let f = fill(&source).await;
    let (url, wire, _server) = behind_wire(source.router.clone()).await;
    let here = TestRegistry::new().await;
    let options = quick(
        SyncOptions::from(Remote::new(&url).unwrap(), "lib/*".parse().unwrap())
            .with_tags("^(v|latest$)".parse().unwrap()),
    );

    let report = here.registry.sync(&options).await.unwrap();
    assert!(report.is_complete(), "{:?}", report.failures);
    assert_eq!(report.repositories, 2);
    // v1, v2 and latest; dev and the children's own tags are filtered out.
    assert_eq!(report.tags_copied, 3, "{report:?}");
    // v1, v2, the index, its two children, the signature.
    assert_eq!(report.manifests_copied, 6, "{report:?}");
    assert_eq!(report.referrers_copied, 1);
    // The shared layer once: 2 configs + 3 layers for lib/app; 2 configs + 2 layers,
    // and the signature's empty config and layer, for lib/multi.
    assert_eq!(report.blobs_copied, 11, "{report:?}");
    // The catalog (three entries, two a page) and the tag lists were followed page by
    // page.
    assert!(wire.count(Method::GET, "/v2/_catalog") >= 2);
    assert!(wire.count(Method::GET, "/lib/app/tags/list") >= 2);

    let tags = here.get("/v2/lib/app/tags/list").await.json();
    assert_eq!(tags["tags"], serde_json::json!(["v1", "v2"]));
    for (tag, digest) in [("v1", &f.v1), ("v2", &f.v2)] {
        let r = here.get(&format!("/v2/lib/app/manifests/{tag}")).await;
        assert_eq!(
            r.header("Docker-Content-Digest"),
            Some(digest.to_string().as_str())
        );
    }
    let r = here.get("/v2/lib/multi/manifests/latest").await;
    assert_eq!(r.body.as_ref(), f.index_bytes.as_slice());
    for child in &f.children {
        let theirs = source
            .get(&format!("/v2/lib/multi/manifests/{child}"))
            .await;
        let ours = here.get(&format!("/v2/lib/multi/manifests/{child}")).await;
        assert_eq!(ours.status, StatusCode::OK);
        assert_eq!(ours.body, theirs.body);
    }
    assert_eq!(
        referrers(&here, "lib/multi", &f.index).await,
        vec![f.signature.to_string()]
    );
    let r = here
        .get(&format!(
            "/v2/lib/app/blobs/{}",
            Digest::sha256_of(&f.shared_layer)
        ))
        .await;
    assert_eq!(r.body.as_ref(), f.shared_layer.as_slice());
    let catalog = here.get("/v2/_catalog").await.json();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["lib/app", "lib/multi"])
    );

    // Again: nothing is copied, and no blob or manifest is fetched.
    wire.clear();
    let again = here.registry.sync(&options).await.unwrap();
    assert!(again.is_complete(), "{:?}", again.failures);
    assert_eq!((again.repositories, again.tags_unchanged), (2, 3));
    assert_eq!(
        (
            again.tags_copied,
            again.manifests_copied,
            again.blobs_copied,
            again.bytes_copied
        ),
        (0, 0, 0, 0),
        "{again:?}"
    );
    assert_eq!(wire.count(Method::GET, "/blobs/"), 0);
    assert_eq!(wire.count(Method::GET, "/manifests/"), 0);

    // A signature added upstream later follows its (unchanged) subject on the next run.
    let later = push_referrer(&source, "lib/multi", &f.index, 7).await;
    let third = here.registry.sync(&options).await.unwrap();
    assert_eq!(
        (third.referrers_copied, third.tags_copied),
        (1, 0),
        "{third:?}"
    );
    let mut expected = vec![f.signature.to_string(), later.to_string()];
    expected.sort();
    assert_eq!(referrers(&here, "lib/multi", &f.index).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_prefix_puts_the_copies_under_it_and_deletes_follow_them_there() {
    let source = TestRegistry::new().await;
    let f = fill(&source).await;
    let (url, wire, _server) = behind_wire(source.router.clone()).await;
    let here = TestRegistry::new().await;
    let options = quick(
        SyncOptions::from(Remote::new(&url).unwrap(), "lib/*".parse().unwrap())
            .with_target_prefix("mirror".parse().unwrap()),
    );
    let report = here.registry.sync(&options).await.unwrap();
    assert!(report.is_complete(), "{:?}", report.failures);
    let r = here.get("/v2/mirror/lib/multi/manifests/latest").await;
    assert_eq!(r.body.as_ref(), f.index_bytes.as_slice());
    let r = here
        .get(&format!("/v2/mirror/lib/app/manifests/{}", f.v2))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        referrers(&here, "mirror/lib/multi", &f.index).await,
        vec![f.signature.to_string()]
    );
    // Nothing under the source's own names.
    let r = here.get("/v2/lib/app/manifests/v1").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Incremental under the prefix too.
    wire.clear();
    let again = here.registry.sync(&options).await.unwrap();
    assert_eq!(
        (
            again.tags_copied,
            again.manifests_copied,
            again.blobs_copied
        ),
        (0, 0, 0),
        "{again:?}"
    );
    assert_eq!(wire.count(Method::GET, "/blobs/"), 0);

    // A push mirror under a prefix: copies and mirrored deletes both go to the prefixed
    // name.
    let target = TestRegistry::new().await;
    let (target_url, _target_wire, _target_server) = behind_wire(target.router.clone()).await;
    let mut pushed = TestRegistry::new().await;
    let to = SyncOptions::to(Remote::new(&target_url).unwrap(), "team/*".parse().unwrap())
        .with_retries(0, Duration::from_millis(10))
        .with_target_prefix("backup".parse().unwrap());
    let (mirror, _task) = PushMirror::spawn(
        &pushed.registry,
        PushMirrorConfig::new(to).with_deletes(true),
    )
    .unwrap();
    pushed.router = pushed
        .registry
        .router()
        .layer(axum::middleware::from_fn_with_state(
            mirror,
            registry_core::mirror::push::middleware,
        ));
    pushed.push_image("team/app", "v1", &[b"one"]).await;
    eventually(|| async {
        let r = target.get("/v2/backup/team/app/manifests/v1").await;
        (r.status == StatusCode::OK).then_some(())
    })
    .await;
    let r = pushed
        .send(
            Method::DELETE,
            "/v2/team/app/manifests/v1",
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    eventually(|| async {
        let r = target.get("/v2/backup/team/app/manifests/v1").await;
        (r.status == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    let catalog = target.get("/v2/_catalog").await.json();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["backup/team/app"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_shared_by_two_repositories_is_sent_once_and_mounted_into_the_second() {
    let here = TestRegistry::new().await;
    let shared = data(30, 60_000);
    let (a, _) = here
        .push_image("lib/a", "v1", &[&shared, &data(31, 100)])
        .await;
    let (b, _) = here
        .push_image("lib/b", "v2", &[&shared, &data(32, 100)])
        .await;
    let target = TestRegistry::new().await;
    let (url, wire, _server) = behind_wire(target.router.clone()).await;
    let options = quick(SyncOptions::to(
        Remote::new(&url).unwrap(),
        "lib/*".parse().unwrap(),
    ));
    let report = here.registry.sync(&options).await.unwrap();
    assert!(report.is_complete(), "{:?}", report.failures);
    // Two configs (their tags differ), two own layers, the shared layer once; then one
    // mount.
    assert_eq!(
        (report.blobs_copied, report.blobs_mounted),
        (5, 1),
        "{report:?}"
    );
    let mounts = wire
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, p)| *m == Method::POST && p.contains("mount="))
        .count();
    assert_eq!(mounts, 1);
    for (repo, digest) in [("lib/a", &a), ("lib/b", &b)] {
        let r = target.get(&format!("/v2/{repo}/manifests/{digest}")).await;
        assert_eq!(r.status, StatusCode::OK);
        let shared_digest = Digest::sha256_of(&shared);
        let r = target
            .get(&format!("/v2/{repo}/blobs/{shared_digest}"))
            .await;
        assert_eq!(r.body.as_ref(), shared.as_slice(), "{repo}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_sync_keeps_what_it_finished_and_resumes_from_there() {
    let source = TestRegistry::new().await;
    let layers: Vec<Vec<u8>> = (0..5).map(|i| data(20 + i, 50_000)).collect();
    let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
    let (digest, _) = source.push_image("big/app", "v1", &refs).await;
    let (url, wire, _server) = behind_wire(source.router.clone()).await;
    let here = TestRegistry::new().await;
    let options = SyncOptions::from(Remote::new(&url).unwrap(), "big/app".parse().unwrap())
        .with_concurrency(1)
        .with_retries(0, Duration::from_millis(10));

    // Two blobs arrive whole, the third breaks off half way, then the upstream fails.
    *wire.blob_budget.lock().unwrap() = Some(3);
    let report = here.registry.sync(&options).await.unwrap();
    assert_eq!(report.failures.len(), 1, "{report:?}");
    assert_eq!(report.blobs_copied, 2, "{report:?}");
    assert_eq!(report.tags_copied, 0);
    let r = here.get("/v2/big/app/manifests/v1").await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "no manifest without its blobs"
    );
    // Nothing partial: exactly the two whole blobs are here, with their own bytes.
    let config = br#"{"architecture":"amd64","tag":"v1","n":5}"#.to_vec();
    let blobs: Vec<&Vec<u8>> = layers.iter().chain([&config]).collect();
    let mut here_now = 0;
    for b in &blobs {
        let r = here
            .get(&format!("/v2/big/app/blobs/{}", Digest::sha256_of(b)))
            .await;
        if r.status == StatusCode::OK {
            assert_eq!(r.body.as_ref(), b.as_slice());
            here_now += 1;
        }
    }
    assert_eq!(here_now, 2);

    // The upstream is back: the next run fetches only what the first did not finish.
    *wire.blob_budget.lock().unwrap() = None;
    wire.clear();
    let report = here.registry.sync(&options).await.unwrap();
    assert!(report.is_complete(), "{:?}", report.failures);
    assert_eq!(
        (report.tags_copied, report.blobs_copied),
        (1, 4),
        "{report:?}"
    );
    assert_eq!(wire.count(Method::GET, "/blobs/"), 4);
    let r = here.get("/v2/big/app/manifests/v1").await;
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(digest.to_string().as_str())
    );
    for b in &blobs {
        let r = here
            .get(&format!("/v2/big/app/blobs/{}", Digest::sha256_of(b)))
            .await;
        assert_eq!(r.body.as_ref(), b.as_slice());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_within_the_run() {
    let source = TestRegistry::new().await;
    source.push_image("lib/app", "v1", &[b"layer"]).await;
    let (url, wire, _server) = behind_wire(source.router.clone()).await;
    let here = TestRegistry::new().await;
    wire.down.store(true, Ordering::SeqCst);
    let down = wire.down.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        down.store(false, Ordering::SeqCst);
    });
    let options = SyncOptions::from(Remote::new(&url).unwrap(), "lib/app".parse().unwrap())
        .with_retries(10, Duration::from_millis(30));
    let report = here.registry.sync(&options).await.unwrap();
    assert!(report.is_complete(), "{:?}", report.failures);
    assert_eq!(report.tags_copied, 1);
    assert!(
        wire.count(Method::GET, "/tags/list") >= 2,
        "a 503 was retried"
    );

    // Without retries, a source that stays down fails the run, saying why.
    wire.down.store(true, Ordering::SeqCst);
    let options = SyncOptions::from(Remote::new(&url).unwrap(), "lib/*".parse().unwrap())
        .with_retries(0, Duration::from_millis(1));
    let e = here.registry.sync(&options).await.unwrap_err();
    assert!(e.to_string().contains("503"), "{e}");
}

fn token_registry_config(token_url: &str) -> RegistryConfig {
    let auth = TokenAuth::from_pem(
        format!("{token_url}/token"),
        "upstream",
        "issuer",
        auth_support::ED_PUBLIC.as_bytes(),
    )
    .unwrap();
    RegistryConfig::default().with_authenticator(Arc::new(auth))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_registries_are_synced_from_and_to_with_the_mirror_s_credentials() {
    use token_server::TokenServer;
    let users = Htpasswd::parse(&auth_support::htpasswd(&[("mirror", "mirror pw")])).unwrap();
    let policy = AccessPolicy::new().with_rule(
        AccessRule::new(["*".parse().unwrap()], [Action::Pull, Action::Push])
            .with_users(["mirror"]),
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
    // The source, served with token auth, is filled over HTTP by a sync `--to` from a
    // plain registry, with the token flow.
    let source = auth_support::serve(token_registry_config(&token_url)).await;
    let plain = TestRegistry::new().await;
    let f = fill(&plain).await;
    let creds = Credentials::Basic {
        username: "mirror".into(),
        password: "mirror pw".into(),
    };
    let anonymous = SyncOptions::to(Remote::new(&source.url).unwrap(), "*".parse().unwrap())
        .with_retries(0, Duration::from_millis(1));
    let refused = plain.registry.sync(&anonymous).await.unwrap();
    assert_eq!(refused.manifests_copied, 0);
    assert!(!refused.failures.is_empty(), "anonymous may not push");
    let to_source = quick(SyncOptions::to(
        Remote::new(&source.url)
            .unwrap()
            .with_credentials(creds.clone()),
        "*".parse().unwrap(),
    ));
    let pushed = plain.registry.sync(&to_source).await.unwrap();
    assert!(pushed.is_complete(), "{:?}", pushed.failures);
    // lib/app v1 v2 dev, lib/multi latest and its children's tags, other/thing v1.
    assert_eq!(pushed.tags_copied, 7, "{pushed:?}");
    // Same digests there as here, asked with a token of its own.
    let principal = registry_core::auth::Principal::user("mirror");
    let grants = server.grants(
        &principal,
        &[
            "repository:lib/app:pull".to_string(),
            "repository:lib/multi:pull".to_string(),
        ],
    );
    let token = server.sign(&principal, grants).unwrap().token;
    let http = reqwest::Client::new();
    for (repo, tag, digest) in [
        ("lib/app", "v1", &f.v1),
        ("lib/app", "v2", &f.v2),
        ("lib/multi", "latest", &f.index),
    ] {
        let r = http
            .head(format!("{}/v2/{repo}/manifests/{tag}", source.url))
            .header("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()["Docker-Content-Digest"].to_str().unwrap(),
            digest.to_string(),
            "{repo}:{tag}"
        );
    }
    let listed: serde_json::Value = http
        .get(format!("{}/v2/lib/multi/referrers/{}", source.url, f.index))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["manifests"][0]["digest"], f.signature.to_string());
    let again = plain.registry.sync(&to_source).await.unwrap();
    assert_eq!(
        (
            again.manifests_copied,
            again.blobs_copied,
            again.tags_unchanged
        ),
        (0, 0, 7),
        "{again:?}"
    );

    // And back from it into a third registry, catalog and all, with the token flow.
    let here = TestRegistry::new().await;
    let from = quick(
        SyncOptions::from(
            Remote::new(&source.url).unwrap().with_credentials(creds),
            "lib/*".parse().unwrap(),
        )
        .with_tags("^(v|latest$)".parse().unwrap()),
    );
    let report = here.registry.sync(&from).await.unwrap();
    assert!(report.is_complete(), "{:?}", report.failures);
    assert_eq!((report.tags_copied, report.referrers_copied), (3, 1));
    let r = here.get("/v2/lib/multi/manifests/latest").await;
    assert_eq!(r.body.as_ref(), f.index_bytes.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_mirror_copies_each_push_and_retries_until_the_target_is_back() {
    let target = TestRegistry::new().await;
    let (target_url, wire, _server) = behind_wire(target.router.clone()).await;
    let mut here = TestRegistry::new().await;
    let options = SyncOptions::to(Remote::new(&target_url).unwrap(), "team/*".parse().unwrap())
        .with_retries(0, Duration::from_millis(10));
    let (mirror, _task) = PushMirror::spawn(
        &here.registry,
        PushMirrorConfig::new(options).with_retries(
            50,
            Duration::from_millis(20),
            Duration::from_millis(100),
        ),
    )
    .unwrap();
    here.router = here
        .registry
        .router()
        .layer(axum::middleware::from_fn_with_state(
            mirror,
            registry_core::mirror::push::middleware,
        ));

    // The target is down when the push comes.
    wire.down.store(true, Ordering::SeqCst);
    let (index, index_bytes, _) = push_index(&here, "team/app", "v1").await;
    here.push_image("elsewhere/app", "v1", &[b"not mirrored"])
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        wire.count(Method::HEAD, "/manifests/") > 0,
        "tried while down"
    );
    wire.down.store(false, Ordering::SeqCst);
    let got = eventually(|| async {
        let r = target.get("/v2/team/app/manifests/v1").await;
        (r.status == StatusCode::OK).then_some(r)
    })
    .await;
    assert_eq!(got.body.as_ref(), index_bytes.as_slice());
    // A signature pushed afterwards (by digest) follows.
    let sig = push_referrer(&here, "team/app", &index, 9).await;
    let listed = eventually(|| async {
        let r = referrers(&target, "team/app", &index).await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(listed, vec![sig.to_string()]);
    let catalog = target.get("/v2/_catalog").await.json();
    assert_eq!(catalog["repositories"], serde_json::json!(["team/app"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_mirror_mirrors_tag_and_manifest_deletes_only_when_asked() {
    let target = TestRegistry::new().await;
    let (target_url, wire, _server) = behind_wire(target.router.clone()).await;
    // Two sources into one target: `team/*` mirrors deletes, `keep/*` (the default) not.
    let mut sources = Vec::new();
    for (pattern, deletes) in [("team/*", true), ("keep/*", false)] {
        let mut here = TestRegistry::new().await;
        let options = SyncOptions::to(Remote::new(&target_url).unwrap(), pattern.parse().unwrap())
            .with_retries(0, Duration::from_millis(10));
        let config = PushMirrorConfig::new(options)
            .with_retries(50, Duration::from_millis(20), Duration::from_millis(100))
            .with_deletes(deletes);
        let (mirror, task) = PushMirror::spawn(&here.registry, config).unwrap();
        here.router = here
            .registry
            .router()
            .layer(axum::middleware::from_fn_with_state(
                mirror,
                registry_core::mirror::push::middleware,
            ));
        sources.push((here, task));
    }
    let (here, kept) = (&sources[0].0, &sources[1].0);
    let on_target = |uri: String| {
        let target = &target;
        async move { target.get(&uri).await.status }
    };
    let (v1, _) = here.push_image("team/app", "v1", &[b"one"]).await;
    let (v2, _) = here.push_image("team/app", "v2", &[b"two"]).await;
    let (k1, _) = kept.push_image("keep/app", "v1", &[b"kept"]).await;
    for uri in [
        "/v2/team/app/manifests/v1",
        "/v2/team/app/manifests/v2",
        "/v2/keep/app/manifests/v1",
    ] {
        eventually(|| async { (on_target(uri.into()).await == StatusCode::OK).then_some(()) })
            .await;
    }

    // A tag deleted here: the tag goes there too, the manifest stays (as it does here).
    let r = here
        .send(
            Method::DELETE,
            "/v2/team/app/manifests/v1",
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    eventually(|| async {
        (on_target("/v2/team/app/manifests/v1".into()).await == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    assert_eq!(
        on_target(format!("/v2/team/app/manifests/{v1}")).await,
        StatusCode::OK
    );

    // A manifest deleted by digest while the target is down: retried until it is back,
    // and its tag goes with it.
    wire.down.store(true, Ordering::SeqCst);
    let r = here
        .send(
            Method::DELETE,
            &format!("/v2/team/app/manifests/{v2}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        on_target(format!("/v2/team/app/manifests/{v2}")).await,
        StatusCode::OK
    );
    wire.down.store(false, Ordering::SeqCst);
    eventually(|| async {
        (on_target(format!("/v2/team/app/manifests/{v2}")).await == StatusCode::NOT_FOUND)
            .then_some(())
    })
    .await;
    assert_eq!(
        on_target("/v2/team/app/manifests/v2".into()).await,
        StatusCode::NOT_FOUND
    );

    // Without `with_deletes`, a delete here leaves the target alone.
    let r = kept
        .send(
            Method::DELETE,
            &format!("/v2/keep/app/manifests/{k1}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        on_target("/v2/keep/app/manifests/v1".into()).await,
        StatusCode::OK
    );
    assert_eq!(wire.count(Method::DELETE, "/keep/"), 0);
}

/// Polls `f` until it gives a value (for at most 10 s).
async fn eventually<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..200 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not there after 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_mirror_runs_on_its_schedule() {
    let source = TestRegistry::new().await;
    source.push_image("lib/app", "v1", &[b"one"]).await;
    let (url, _wire, _server) = behind_wire(source.router.clone()).await;
    let here = TestRegistry::new().await;
    let options = quick(SyncOptions::from(
        Remote::new(&url).unwrap(),
        "lib/*".parse().unwrap(),
    ));
    let task = here
        .registry
        .spawn_pull_mirror(PullMirror::new(options, Duration::from_secs(1)));
    eventually(|| async {
        (here.get("/v2/lib/app/manifests/v1").await.status == StatusCode::OK).then_some(())
    })
    .await;
    let (v2, _) = source.push_image("lib/app", "v2", &[b"two"]).await;
    let r = eventually(|| async {
        let r = here.get("/v2/lib/app/manifests/v2").await;
        (r.status == StatusCode::OK).then_some(r)
    })
    .await;
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(v2.to_string().as_str())
    );
    task.abort();
}

#[test]
fn bad_settings_are_clear_errors() {
    let e = "(["
        .parse::<registry_core::mirror::TagFilter>()
        .unwrap_err();
    assert!(e.to_string().contains("tags"), "{e}");
    for url in ["ftp://example.com", "not a url", "http://"] {
        let e = Remote::new(url).unwrap_err();
        assert!(e.to_string().contains("invalid"), "{url}: {e}");
    }
    let filter: registry_core::mirror::TagFilter = "^v1\\.".parse().unwrap();
    assert!(filter.matches("v1.2") && !filter.matches("v10") && !filter.matches("xv1.2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_into_repositories_under_a_quota_stops_at_the_quota() {
    let source = TestRegistry::new().await;
    let f = fill(&source).await;
    let (url, _wire, _server) = behind_wire(source.router.clone()).await;
    // Room for v1 (the 40,000-byte shared layer, 3,000 bytes and a config) but not v2's
    // extra 3,000-byte layer; `lib/multi` is not covered.
    let here = TestRegistry::with_config(RegistryConfig::default().with_quotas(
        registry_core::quotas::Quotas::new([("lib/app".parse().unwrap(), 44_000)]),
    ))
    .await;
    let options = quick(
        SyncOptions::from(Remote::new(&url).unwrap(), "lib/*".parse().unwrap())
            .with_tags("^(v|latest$)".parse().unwrap()),
    );

    let report = here.registry.sync(&options).await.unwrap();
    assert!(!report.is_complete(), "{report:?}");
    assert!(
        report
            .failures
            .iter()
            .all(|e| e.contains("quota exceeded for lib/app")),
        "{:?}",
        report.failures
    );
    // One of v1 and v2 fits; the other is refused whole (its tag not moved).
    let tags = here.get("/v2/lib/app/tags/list").await.json();
    assert_eq!(tags["tags"].as_array().unwrap().len(), 1, "{tags}");
    let quotas = here.get("/v2/_ext/quotas").await.json();
    let used = quotas["quotas"][0]["used"].as_u64().unwrap();
    assert!(used > 40_000 && used <= 44_000, "{quotas}");
    // What no quota covers is copied whole.
    let r = here.get("/v2/lib/multi/manifests/latest").await;
    assert_eq!(r.body.as_ref(), f.index_bytes.as_slice());
    let _ = (f.v1, f.v2);
}
