//! `registry serve` as a pull-through cache in front of real registries: CNCF distribution
//! 2.8 (Debian's `docker-registry`) and our own registry behind Docker token auth (the
//! example token server), the latter configured by an `[[upstream]]` table with Basic
//! credentials. skopeo pulls a single image and a multi-platform index through the cache
//! with the same digests and bytes as straight from the upstream; the cache keeps serving
//! them once the upstream is gone; a push into the prefix is refused; concurrent pulls of
//! one cold blob make one upstream GET (counted in distribution's access log).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::distribution::{start_distribution, start_distribution_logged};
use common::oci_layout::{self, INDEX, Image, Layout, MANIFEST, MultiArch, read_blob};
use common::skopeo_flow::{require_skopeo, skopeo, skopeo_try};
use common::{Api, Server, random_bytes, seed, serve_command, sha256, tempdir};
use futures::StreamExt;
use registry_core::auth::{AccessPolicy, AccessRule, Action, Htpasswd};

/// A two-layer image and a two-platform index in an OCI layout, tagged `single` and
/// `multi` there, pushed upstream as `lib/single:v1` and `lib/multi:v1`.
struct Sample {
    src: PathBuf,
    image: Image,
    multi: MultiArch,
}

const PATHS: [(&str, &str); 2] = [("single", "lib/single:v1"), ("multi", "lib/multi:v1")];

impl Sample {
    fn create(dir: &Path) -> Sample {
        let src = dir.join("src");
        let mut layout = Layout::create(&src);
        let s = seed();
        let image = layout.add_image("amd64", s, 2, 200_000);
        let multi = layout.add_multi_arch(&["amd64", "arm64"], s, 50_000);
        layout.tag("single", MANIFEST, &image.manifest);
        layout.tag("multi", INDEX, &multi.index);
        Sample { src, image, multi }
    }

    /// Pushes both to the registry at `host`, as `creds` (`USER:PASSWORD`) if given.
    fn push(&self, host: &str, creds: Option<&str>) {
        for (tag, path) in PATHS {
            let src = format!("oci:{}:{tag}", self.src.display());
            let dest = format!("docker://{host}/{path}");
            let mut args = vec![
                "copy",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
            ];
            if let Some(creds) = creds {
                args.extend(["--dest-creds", creds]);
            }
            args.extend([src.as_str(), dest.as_str()]);
            skopeo(&args);
        }
    }

    /// Asserts that through the cache (`through`: `HOST/PREFIX`) both manifests are the
    /// upstream's (`direct`: `HOST`, read as `creds` if given) byte for byte, so the same
    /// digests, and that skopeo pulls both, every platform, into layouts under `pulled`
    /// with those digests and every blob intact.
    fn assert_pulled_through(
        &self,
        direct: &str,
        creds: Option<&str>,
        through: &str,
        pulled: &Path,
    ) {
        for ((_, path), want) in PATHS.iter().zip([&self.image.manifest, &self.multi.index]) {
            let direct_ref = format!("docker://{direct}/{path}");
            let mut args = vec!["inspect", "--tls-verify=false", "--raw"];
            if let Some(creds) = creds {
                args.extend(["--creds", creds]);
            }
            args.push(&direct_ref);
            let raw_direct = skopeo(&args);
            let raw_through = skopeo(&[
                "inspect",
                "--tls-verify=false",
                "--raw",
                &format!("docker://{through}/{path}"),
            ]);
            assert!(
                raw_through == raw_direct,
                "{path}: the manifest bytes differ"
            );
            assert_eq!(sha256(&raw_through), want.digest, "{path}: digest");
        }
        for ((tag, path), want) in PATHS.iter().zip([&self.image.manifest, &self.multi.index]) {
            skopeo(&[
                "copy",
                "--all",
                "--preserve-digests",
                "--src-tls-verify=false",
                &format!("docker://{through}/{path}"),
                &format!("oci:{}:{tag}", pulled.display()),
            ]);
            let pulled_ref = oci_layout::find_ref(pulled, tag).expect("pulled ref in index.json");
            assert_eq!(pulled_ref["digest"].as_str(), Some(want.digest.as_str()));
        }
        let all_blobs = self
            .image
            .blobs()
            .into_iter()
            .chain(self.multi.images.iter().flat_map(|i| i.blobs()))
            .chain(self.multi.images.iter().map(|i| &i.manifest))
            .chain([&self.image.manifest, &self.multi.index]);
        for blob in all_blobs {
            let got = read_blob(pulled, &blob.digest);
            assert!(
                got.as_deref() == Some(blob.data.as_slice()),
                "{} differs",
                blob.digest
            );
        }
    }
}

#[test]
fn skopeo_pulls_through_the_cache_with_the_upstream_s_digests() {
    require_skopeo();
    let dir = tempdir();
    let (mut upstream, upstream_addr) = start_distribution(dir.path(), &dir.path().join("dist"));
    let sample = Sample::create(dir.path());
    sample.push(&upstream_addr, None);

    let data = dir.path().join("cache");
    let cmd = serve_command(
        &data,
        &[
            "--upstream",
            &format!("dist=http://{upstream_addr}"),
            "--upstream-tag-ttl",
            "1s",
        ],
    );
    let cache = Server::spawn(cmd);
    let through = format!("{}/dist", cache.addr);
    sample.assert_pulled_through(&upstream_addr, None, &through, &dir.path().join("pulled"));

    // The upstream goes away: what was pulled is served from the cache, tags included
    // (the tag TTL has passed: stale-if-error).
    upstream.kill().unwrap();
    upstream.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let again = dir.path().join("again");
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{through}/lib/multi:v1"),
        &format!("oci:{}:multi", again.display()),
    ]);
    assert!(
        cache.log().contains("serving the cached tag"),
        "{}",
        cache.log()
    );

    // Pushes into the prefix are refused.
    let (ok, err) = skopeo_try(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:single", sample.src.display()),
        &format!("docker://{through}/lib/mine:v1"),
    ]);
    assert!(!ok, "a push into the cache's prefix succeeded");
    assert!(
        err.contains("pull-through cache") || err.contains("405"),
        "{err}"
    );
}

/// Serves the example token server in `rt`: alice (with `password`) may do anything,
/// nobody else anything. Returns its base URL.
fn start_token_server(
    rt: &tokio::runtime::Runtime,
    private_pem: &str,
    service: &str,
    issuer: &str,
    password: &str,
) -> String {
    let hash = bcrypt::hash_with_result(password, 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    let policy = AccessPolicy::new()
        .with_rule(AccessRule::new(["*".parse().unwrap()], Action::ALL).with_users(["alice"]));
    let server = token_server::TokenServer::new(
        issuer,
        service,
        private_pem.as_bytes(),
        Htpasswd::parse(&format!("alice:{hash}\n")).unwrap(),
        policy,
    )
    .unwrap();
    let router = Arc::new(server).router();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        format!("http://{addr}")
    })
}

#[test]
fn a_token_auth_upstream_is_pulled_with_basic_credentials_from_an_upstream_table() {
    require_skopeo();
    let dir = tempdir();
    // The upstream: our own registry, behind the example token server.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let public = dir.path().join("token.pub");
    std::fs::write(&public, key.public_key_pem()).unwrap();
    let (service, issuer) = ("upstream.test", "upstream-token-server");
    let password = "alice's upstream pw";
    let token_url = start_token_server(&rt, &key.serialize_pem(), service, issuer, password);
    let upstream = Server::spawn(serve_command(
        &dir.path().join("upstream"),
        &[
            "--token-realm",
            &format!("{token_url}/token"),
            "--token-service",
            service,
            "--token-issuer",
            issuer,
            "--token-key",
            public.to_str().unwrap(),
        ],
    ));
    let creds = format!("alice:{password}");
    let sample = Sample::create(dir.path());
    sample.push(&upstream.addr, Some(&creds));
    // Anonymous pulls are refused there, so what the cache gets it got as alice.
    let (ok, err) = skopeo_try(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{}/lib/single:v1", upstream.addr),
    ]);
    assert!(!ok, "the upstream served an anonymous pull");
    assert!(
        err.contains("401") || err.to_lowercase().contains("unauthorized"),
        "{err}"
    );

    // The cache, with the upstream and its credentials in the config file.
    let password_file = dir.path().join("upstream-password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let config = dir.path().join("registry.toml");
    std::fs::write(
        &config,
        format!(
            "[[upstream]]\nprefix = \"ours\"\nurl = \"{}\"\nusername = \"alice\"\npassword_file = \"{}\"\n",
            upstream.base,
            password_file.display()
        ),
    )
    .unwrap();
    let cache = Server::spawn(serve_command(
        &dir.path().join("cache"),
        &["--config", config.to_str().unwrap()],
    ));
    sample.assert_pulled_through(
        &upstream.addr,
        Some(&creds),
        &format!("{}/ours", cache.addr),
        &dir.path().join("pulled"),
    );
    // The password is in no log line of the cache.
    assert!(!cache.log().contains(password), "{}", cache.log());
}

/// Access log lines of GETs of `path` (combined log format: `"GET PATH HTTP/1.1"`).
fn upstream_gets(access_log: &Path, path: &str) -> usize {
    let needle = format!("\"GET {path} HTTP/");
    std::fs::read_to_string(access_log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_pulls_of_a_cold_blob_make_one_upstream_get() {
    let dir = tempdir();
    let (_upstream, upstream_addr, access_log) =
        start_distribution_logged(dir.path(), &dir.path().join("dist"));
    let blob = Arc::new(random_bytes(seed(), 64 << 20));
    let digest = Api::new(&format!("http://{upstream_addr}"))
        .push_blob("lib/big", &blob)
        .await;
    let upstream_path = format!("/v2/lib/big/blobs/{digest}");

    let cache = Server::spawn(serve_command(
        &dir.path().join("cache"),
        &["--upstream", &format!("dist=http://{upstream_addr}")],
    ));
    let url = format!("{}/v2/dist/lib/big/blobs/{digest}", cache.base);
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let pulls = (0..8).map(|i| {
        let (url, blob, barrier) = (url.clone(), Arc::clone(&blob), Arc::clone(&barrier));
        tokio::spawn(async move {
            // A client each, so that no two share a connection.
            let http = reqwest::Client::builder().no_proxy().build().unwrap();
            barrier.wait().await;
            let res = http.get(&url).send().await.unwrap();
            assert_eq!(res.status().as_u16(), 200, "client {i}");
            let mut body = res.bytes_stream();
            let mut offset = 0;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.unwrap_or_else(|e| panic!("client {i} at {offset}: {e}"));
                let end = offset + chunk.len();
                assert!(
                    end <= blob.len() && chunk[..] == blob[offset..end],
                    "client {i}: the bytes at {offset}..{end} differ"
                );
                offset = end;
            }
            assert_eq!(offset, blob.len(), "client {i}: length");
        })
    });
    for pull in futures::future::join_all(pulls).await {
        pull.unwrap();
    }

    // distribution writes the access log line once the response is sent, which may be a
    // moment after the last client got its last byte.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while upstream_gets(&access_log, &upstream_path) == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let log = std::fs::read_to_string(&access_log).unwrap_or_default();
    assert_eq!(
        upstream_gets(&access_log, &upstream_path),
        1,
        "upstream access log:\n{log}"
    );
    // And from here on it is served from the cache alone.
    let (status, _, body) = Api::new(&cache.base)
        .get(&format!("/v2/dist/lib/big/blobs/{digest}"))
        .await;
    assert_eq!(status, 200);
    assert!(body == *blob, "the cached bytes differ");
    assert_eq!(upstream_gets(&access_log, &upstream_path), 1, "{log}");
}
