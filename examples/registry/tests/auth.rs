//! Authentication and policies through the real binary: `--htpasswd` (plain HTTP clients
//! and `skopeo login`), `--access-policy`, `--read-only` (from the environment),
//! `--immutable-tags`, `--max-blob-size`, and token auth against the example token server
//! with the conformance harness. Needs `skopeo` on PATH; fails without it.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::oci_layout::{Layout, MANIFEST};
use common::skopeo_flow::{require_skopeo, skopeo, skopeo_try};
use common::{Server, seed, serve_command, sha256, tempdir};
use registry_core::auth::{AccessPolicy, AccessRule, Action, Htpasswd};
use serde_json::json;

/// htpasswd lines (bcrypt, cost 4: fast for tests) for `users`.
fn htpasswd(users: &[(&str, &str)]) -> String {
    users
        .iter()
        .map(|(user, password)| {
            let hash = bcrypt::hash_with_result(password, 4)
                .unwrap()
                .format_for_version(bcrypt::Version::TwoY);
            format!("{user}:{hash}\n")
        })
        .collect()
}

/// A small image: a config, one layer, and its manifest (bytes and digest).
struct Image {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
}

fn image(label: &str) -> Image {
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Labels": { "label": label } },
        "rootfs": { "type": "layers", "diff_ids": [] }
    }))
    .unwrap();
    let layer = common::random_bytes(seed(), 3000);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": sha256(&config), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar",
                     "digest": sha256(&layer), "size": layer.len() }]
    }))
    .unwrap();
    Image {
        config,
        layer,
        manifest,
    }
}

/// A client for the distribution API, with or without Basic credentials.
struct Client {
    http: reqwest::Client,
    base: String,
    creds: Option<(String, String)>,
}

impl Client {
    fn new(base: &str, creds: Option<(&str, &str)>) -> Client {
        Client {
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            base: base.to_string(),
            creds: creds.map(|(u, p)| (u.to_string(), p.to_string())),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let req = self.http.request(method, url);
        match &self.creds {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        }
    }

    /// Monolithic blob push: the response of `POST ?digest=`.
    async fn push_blob(&self, repo: &str, data: &[u8]) -> reqwest::Response {
        self.request(
            reqwest::Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(data)),
        )
        .header("Content-Type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .unwrap()
    }

    async fn put_manifest(&self, repo: &str, reference: &str, body: &[u8]) -> reqwest::Response {
        self.request(
            reqwest::Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
        )
        .header("Content-Type", MANIFEST)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
    }

    /// Pushes the image's blobs and manifest; every step must succeed.
    async fn push_image(&self, repo: &str, tag: &str, img: &Image) {
        for blob in [&img.config, &img.layer] {
            let res = self.push_blob(repo, blob).await;
            assert_eq!(res.status().as_u16(), 201, "push blob to {repo}");
        }
        let res = self.put_manifest(repo, tag, &img.manifest).await;
        assert_eq!(res.status().as_u16(), 201, "push manifest {repo}:{tag}");
    }

    async fn get(&self, path: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let res = self
            .request(reqwest::Method::GET, path)
            .header("Accept", MANIFEST)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        (status, headers, res.bytes().await.unwrap().to_vec())
    }
}

async fn error_code(res: reqwest::Response) -> String {
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    body["errors"][0]["code"].as_str().unwrap_or("").to_string()
}

fn challenge(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get("WWW-Authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn htpasswd_basic_auth_with_http_and_skopeo() {
    require_skopeo();
    let dir = tempdir();
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, htpasswd(&[("alice", "alice pw"), ("bob", "bob pw")])).unwrap();
    let server = Server::spawn(serve_command(
        &dir.path().join("data"),
        &["--htpasswd", file.to_str().unwrap()],
    ));
    let anonymous = Client::new(&server.base, None);
    let alice = Client::new(&server.base, Some(("alice", "alice pw")));
    let wrong = Client::new(&server.base, Some(("alice", "wrong")));
    let img = image("basic");

    // Anonymous: nothing, not even /v2/, and a Basic challenge to log in with.
    let res = anonymous.push_blob("team/app", &img.config).await;
    assert_eq!(res.status().as_u16(), 401);
    assert!(
        challenge(res.headers()).starts_with("Basic "),
        "{:?}",
        res.headers()
    );
    assert_eq!(error_code(res).await, "UNAUTHORIZED");
    let (status, headers, _) = anonymous.get("/v2/").await;
    assert_eq!(status, 401);
    assert!(challenge(&headers).starts_with("Basic realm="));

    // The right password: push and pull.
    alice.push_image("team/app", "v1", &img).await;
    let (status, _, body) = alice.get("/v2/team/app/manifests/v1").await;
    assert_eq!(status, 200);
    assert!(body == img.manifest);
    let (status, _, body) = alice
        .get(&format!("/v2/team/app/blobs/{}", sha256(&img.layer)))
        .await;
    assert_eq!(status, 200);
    assert!(body == img.layer);

    // A wrong password: refused, for reads and writes alike, and nothing is pulled.
    let (status, headers, _) = wrong.get("/v2/team/app/manifests/v1").await;
    assert_eq!(status, 401);
    assert!(challenge(&headers).starts_with("Basic "));
    let res = wrong.push_blob("team/other", b"nope").await;
    assert_eq!(res.status().as_u16(), 401);
    let (status, _, _) = anonymous.get("/v2/team/app/manifests/v1").await;
    assert_eq!(status, 401);

    // skopeo: login stores the credentials, copy and inspect use them.
    let authfile = dir.path().join("auth.json");
    let authfile = authfile.to_str().unwrap();
    let host = server.addr.clone();
    let (ok, err) = skopeo_try(&[
        "login",
        "--tls-verify=false",
        "--authfile",
        authfile,
        "--username",
        "alice",
        "--password",
        "wrong",
        &host,
    ]);
    assert!(!ok, "a wrong password must not log in: {err}");
    let out = skopeo(&[
        "login",
        "--tls-verify=false",
        "--authfile",
        authfile,
        "--username",
        "bob",
        "--password",
        "bob pw",
        &host,
    ]);
    assert!(
        String::from_utf8_lossy(&out).contains("Login Succeeded"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let src = dir.path().join("src");
    let mut layout = Layout::create(&src);
    let skopeo_image = layout.add_image("amd64", seed(), 2, 40_000);
    layout.tag("v1", MANIFEST, &skopeo_image.manifest);
    let remote = format!("docker://{host}/team/skopeo:v1");
    skopeo(&[
        "copy",
        "--authfile",
        authfile,
        "--dest-tls-verify=false",
        "--preserve-digests",
        &format!("oci:{}:v1", src.display()),
        &remote,
    ]);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--authfile",
        authfile,
        &remote,
    ]);
    assert_eq!(sha256(&raw), skopeo_image.manifest.digest);
    // Without the login, skopeo is refused too.
    let empty = dir.path().join("empty-auth.json");
    std::fs::write(&empty, "{}").unwrap();
    let (ok, err) = skopeo_try(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--authfile",
        empty.to_str().unwrap(),
        &remote,
    ]);
    assert!(!ok, "anonymous skopeo inspect must fail");
    assert!(
        err.contains("401") || err.to_lowercase().contains("unauthorized"),
        "{err}"
    );
}

#[tokio::test]
async fn access_policy_file_decides_per_repository() {
    let dir = tempdir();
    let users = dir.path().join("htpasswd");
    std::fs::write(&users, htpasswd(&[("alice", "a"), ("bob", "b")])).unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "public = [\"library/*\"]\n\n\
         [[rules]]\nrepositories = [\"*\"]\nusers = [\"alice\"]\nactions = [\"pull\", \"push\", \"delete\"]\n\n\
         [[rules]]\nrepositories = [\"*\"]\nusers = [\"bob\"]\nactions = [\"pull\"]\n",
    )
    .unwrap();
    let server = Server::spawn(serve_command(
        &dir.path().join("data"),
        &[
            "--htpasswd",
            users.to_str().unwrap(),
            "--access-policy",
            policy.to_str().unwrap(),
        ],
    ));
    let img = image("policy");
    let alice = Client::new(&server.base, Some(("alice", "a")));
    let bob = Client::new(&server.base, Some(("bob", "b")));
    let anonymous = Client::new(&server.base, None);
    alice.push_image("library/base", "v1", &img).await;
    // Public: anyone pulls; bob pulls but may not push (403: he is known, just not allowed).
    let (status, _, _) = anonymous.get("/v2/library/base/manifests/v1").await;
    assert_eq!(status, 200);
    let (status, _, _) = bob.get("/v2/library/base/manifests/v1").await;
    assert_eq!(status, 200);
    let res = bob.push_blob("library/base", b"bob's blob").await;
    assert_eq!(res.status().as_u16(), 403);
    assert_eq!(error_code(res).await, "DENIED");
    let res = anonymous.push_blob("library/base", b"anonymous blob").await;
    assert_eq!(res.status().as_u16(), 401);
}

#[tokio::test]
async fn read_only_from_the_environment_refuses_pushes() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let img = image("read-only");
    // Fill the registry first, then restart it read-only.
    {
        let server = Server::spawn(serve_command(&data, &[]));
        Client::new(&server.base, None)
            .push_image("ro/app", "v1", &img)
            .await;
    }
    let mut cmd = serve_command(&data, &[]);
    cmd.env("REGISTRY_READ_ONLY", "true");
    let server = Server::spawn(cmd);
    let client = Client::new(&server.base, None);
    let res = client.push_blob("ro/app", b"new bytes").await;
    assert_eq!(res.status().as_u16(), 405);
    assert_eq!(error_code(res).await, "UNSUPPORTED");
    let res = client.put_manifest("ro/app", "v2", &img.manifest).await;
    assert_eq!(res.status().as_u16(), 405);
    let res = client
        .request(reqwest::Method::DELETE, "/v2/ro/app/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 405);
    // Reads still work.
    let (status, _, body) = client.get("/v2/ro/app/manifests/v1").await;
    assert_eq!(status, 200);
    assert!(body == img.manifest);
}

#[tokio::test]
async fn immutable_tags_and_blob_size_limit() {
    let dir = tempdir();
    let server = Server::spawn(serve_command(
        &dir.path().join("data"),
        &["--immutable-tags", "prod/*", "--max-blob-size", "10000"],
    ));
    let client = Client::new(&server.base, None);
    let first = image("first");
    let second = image("second");
    client.push_image("prod/app", "v1", &first).await;
    for blob in [&second.config, &second.layer] {
        assert_eq!(client.push_blob("prod/app", blob).await.status(), 201);
    }
    // Moving the tag is refused, and the old manifest stays.
    let res = client
        .put_manifest("prod/app", "v1", &second.manifest)
        .await;
    assert_eq!(res.status().as_u16(), 403);
    assert_eq!(error_code(res).await, "DENIED");
    let (status, headers, body) = client.get("/v2/prod/app/manifests/v1").await;
    assert_eq!(status, 200);
    assert!(body == first.manifest, "the tag still points at the first");
    assert_eq!(
        headers
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok()),
        Some(sha256(&first.manifest).as_str())
    );
    // Re-pushing the same manifest is fine (clients retry); a new tag is fine.
    let res = client.put_manifest("prod/app", "v1", &first.manifest).await;
    assert_eq!(res.status().as_u16(), 201);
    let res = client
        .put_manifest("prod/app", "v2", &second.manifest)
        .await;
    assert_eq!(res.status().as_u16(), 201);
    // Outside the pattern, tags move.
    client.push_image("dev/app", "v1", &first).await;
    client.push_image("dev/app", "v1", &second).await;
    let (_, _, body) = client.get("/v2/dev/app/manifests/v1").await;
    assert!(body == second.manifest);

    // Over the size limit: refused, and not stored.
    let big = common::random_bytes(seed(), 20_000);
    let res = client.push_blob("dev/app", &big).await;
    assert_eq!(res.status().as_u16(), 400);
    assert_eq!(error_code(res).await, "SIZE_INVALID");
    let (status, _, _) = client
        .get(&format!("/v2/dev/app/blobs/{}", sha256(&big)))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bad_auth_settings_stop_the_server_before_it_listens() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let run = |extra: &[&str]| {
        let out = serve_command(&data, extra).output().unwrap();
        assert!(!out.status.success(), "{extra:?} must fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = dir.path().join("missing");
    let err = run(&["--htpasswd", missing.to_str().unwrap()]);
    assert!(err.contains("missing") && err.contains("htpasswd"), "{err}");
    let weak = dir.path().join("weak");
    std::fs::write(&weak, "bob:plain-text\n").unwrap();
    let err = run(&["--htpasswd", weak.to_str().unwrap()]);
    assert!(err.contains("bcrypt"), "{err}");
    let err = run(&[
        "--htpasswd",
        weak.to_str().unwrap(),
        "--token-realm",
        "http://127.0.0.1:1/token",
    ]);
    assert!(err.contains("mutually exclusive"), "{err}");
    let err = run(&["--token-realm", "http://127.0.0.1:1/token"]);
    assert!(err.contains("token-service"), "{err}");
    let err = run(&["--access-policy", missing.to_str().unwrap()]);
    assert!(err.contains("access policy"), "{err}");
    assert!(!data.exists(), "no store was opened");
}

/// Serves the example token server in this process; returns its base URL.
async fn start_token_server(
    private_pem: &str,
    service: &str,
    issuer: &str,
    users: &str,
) -> (String, tokio::task::JoinHandle<()>) {
    let policy = AccessPolicy::new()
        .with_public("public/*".parse().unwrap())
        .with_rule(AccessRule::new(["*".parse().unwrap()], Action::ALL).with_users(["alice"]));
    let server = token_server::TokenServer::new(
        issuer,
        service,
        private_pem.as_bytes(),
        Htpasswd::parse(users).unwrap(),
        policy,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Arc::new(server).router();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{addr}"), task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_passes_conformance_and_skopeo() {
    require_skopeo();
    let dir = tempdir();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let public = dir.path().join("token.pub");
    std::fs::write(&public, key.public_key_pem()).unwrap();
    let (service, issuer) = ("registry.test", "test-token-server");
    let (token_url, token_task) = start_token_server(
        &key.serialize_pem(),
        service,
        issuer,
        &htpasswd(&[("alice", "alice pw")]),
    )
    .await;
    let realm = format!("{token_url}/token");
    let server = Server::spawn(serve_command(
        &dir.path().join("data"),
        &[
            "--token-realm",
            &realm,
            "--token-service",
            service,
            "--token-issuer",
            issuer,
            "--token-key",
            public.to_str().unwrap(),
        ],
    ));

    // No token: a Bearer challenge naming the token server and the scope.
    let anonymous = Client::new(&server.base, None);
    let (status, headers, _) = anonymous.get("/v2/conformance/x/manifests/v1").await;
    assert_eq!(status, 401);
    assert_eq!(
        challenge(&headers),
        format!(
            "Bearer realm=\"{realm}\",service=\"{service}\",scope=\"repository:conformance/x:pull\""
        )
    );
    // Basic credentials are not a token.
    let basic = Client::new(&server.base, Some(("alice", "alice pw")));
    let (status, _, _) = basic.get("/v2/").await;
    assert_eq!(status, 401);

    let harness = oci_conformance::Harness::new(
        &server.base,
        Some(("alice".into(), "alice pw".into())),
        "conformance",
    )
    .unwrap();
    let report = harness.run_all().await;
    assert!(report.passed() > 30, "too few checks ran:\n{report}");
    assert_eq!(
        report.failed(),
        0,
        "{report}\nregistry log:\n{}",
        server.log()
    );

    // skopeo follows the challenge to the token server too.
    let src = dir.path().join("src");
    let mut layout = Layout::create(&src);
    let img = layout.add_image("amd64", seed(), 1, 20_000);
    layout.tag("v1", MANIFEST, &img.manifest);
    let host = server.addr.clone();
    let src_ref = format!("oci:{}:v1", src.display());
    let raw = tokio::task::spawn_blocking(move || {
        let remote = format!("docker://{host}/team/token:v1");
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "alice:alice pw",
            &src_ref,
            &remote,
        ]);
        let (ok, _) = skopeo_try(&[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "alice:wrong",
            &src_ref,
            &format!("docker://{host}/team/token:v2"),
        ]);
        assert!(!ok, "a wrong password gets no token");
        skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            "alice:alice pw",
            &remote,
        ])
    })
    .await
    .unwrap();
    assert_eq!(sha256(&raw), img.manifest.digest);
    token_task.abort();
}
