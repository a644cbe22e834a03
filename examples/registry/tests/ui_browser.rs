//! The web UI in a real browser: Debian's `chromium`, driven through `chromedriver` by
//! fantoccini (WebDriver), against the real `registry serve --ui` with Basic auth and an
//! access policy. Pushes images, a multi-platform index and a referrer over plain HTTP,
//! then clicks from the repository list to a tag to a manifest to its referrer, searches,
//! pages through 1,000 repositories, deletes a tag after confirming, and checks that a
//! user without pull on a repository does not see it.
//!
//! Screenshots of every page go to `target/ui-screenshots/` (a test artifact, not
//! committed). The test fails, never skips, when chromium or chromedriver is missing:
//! `scripts/ci-deps.sh` installs them.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Api, Server, serve_command, sha256, tempdir};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const ALICE: (&str, &str) = ("alice", "alice-pw");
const BOB: (&str, &str) = ("bob", "bob-pw");
const IMAGE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANY: usize = 1000;

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running chromedriver, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver(chromedriver: &Path) -> Driver {
    let port = free_port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(res) = http.get(format!("{}/status", driver.url)).send().await
            && res.status().is_success()
        {
            return driver;
        }
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A browser session with its own profile in `profile`.
async fn browser(driver: &Driver, chromium: &Path, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium.to_string_lossy(),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1500",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session through chromedriver")
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).expect("create target/ui-screenshots");
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).expect("save screenshot");
}

/// Clicks what `locator` finds and waits for the page it leads to to load.
async fn click_through(c: &Client, locator: Locator<'_>) {
    let before = c.current_url().await.expect("current URL");
    c.find(locator)
        .await
        .expect("the element to click")
        .click()
        .await
        .expect("click");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = c.current_url().await.expect("current URL");
        let state = c
            .execute("return document.readyState", vec![])
            .await
            .expect("readyState");
        if now != before && state == json!("complete") {
            return;
        }
        assert!(Instant::now() < deadline, "no navigation from {before}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn texts(c: &Client, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in c.find_all(Locator::Css(css)).await.expect("find elements") {
        out.push(e.text().await.expect("element text"));
    }
    out
}

async fn heading(c: &Client) -> String {
    c.find(Locator::Css("h1"))
        .await
        .expect("a heading")
        .text()
        .await
        .expect("its text")
}

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

/// An API client that sends alice's credentials.
fn alice_api(base: &str) -> Api {
    use base64::Engine as _;
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", ALICE.0, ALICE.1));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Basic {token}").parse().unwrap(),
    );
    Api {
        http: reqwest::Client::builder()
            .no_proxy()
            .default_headers(headers)
            .build()
            .unwrap(),
        base: base.to_string(),
    }
}

/// A one-layer image for `arch`; returns the manifest's digest and size.
async fn push_image(api: &Api, repo: &str, tag: &str, arch: &str) -> (String, usize) {
    let config = format!("{{\"architecture\":\"{arch}\",\"os\":\"linux\",\"tag\":\"{tag}\"}}");
    let layer = common::random_bytes(common::seed(), 40_000);
    let config_digest = api.push_blob(repo, config.as_bytes()).await;
    let layer_digest = api.push_blob(repo, &layer).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": IMAGE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": layer.len()}],
        "annotations": {"org.opencontainers.image.source": "https://example.com/app",
                        "org.opencontainers.image.version": tag},
    }))
    .unwrap();
    api.put_manifest(repo, tag, IMAGE, &manifest).await;
    (sha256(&manifest), manifest.len())
}

/// A signature-like referrer of `subject`, pushed by digest; returns its digest.
async fn push_referrer(api: &Api, repo: &str, subject: &(String, usize)) -> String {
    let empty = api.push_blob(repo, b"{}").await;
    let payload = api.push_blob(repo, b"signature payload").await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": IMAGE,
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": payload,
                    "size": "signature payload".len()}],
        "subject": {"mediaType": IMAGE, "digest": subject.0, "size": subject.1},
        "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQD-example"},
    }))
    .unwrap();
    let digest = sha256(&manifest);
    api.put_manifest(repo, &digest, IMAGE, &manifest).await;
    digest
}

/// `MANY` repositories with one small blob each, pushed a few at a time.
async fn fill_many(api: &Api) {
    use futures::StreamExt as _;
    futures::stream::iter(0..MANY)
        .map(|i| {
            let api = api.clone();
            async move {
                api.push_blob(&format!("many/r{i:04}"), format!("blob {i}").as_bytes())
                    .await
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

fn with_credentials(base: &str, (user, password): (&str, &str)) -> String {
    base.replacen("http://", &format!("http://{user}:{password}@"), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_search_page_delete_and_hide_in_chromium() {
    let chromium = which(&["chromium", "chromium-browser", "google-chrome"])
        .expect("chromium is not installed (apt-get install chromium; scripts/ci-deps.sh)");
    let chromedriver = which(&["chromedriver"]).expect(
        "chromedriver is not installed (apt-get install chromium-driver; scripts/ci-deps.sh)",
    );
    let dir = tempdir();
    let users = dir.path().join("htpasswd");
    std::fs::write(&users, htpasswd(&[ALICE, BOB])).unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[[rules]]\nrepositories = [\"*\"]\nusers = [\"alice\"]\nactions = [\"pull\", \"push\", \"delete\"]\n\n\
         [[rules]]\nrepositories = [\"app/*\", \"many/*\"]\nusers = [\"bob\"]\nactions = [\"pull\"]\n",
    )
    .unwrap();
    let server = Server::spawn(serve_command(
        &dir.path().join("data"),
        &[
            "--ui",
            "--htpasswd",
            users.to_str().unwrap(),
            "--access-policy",
            policy.to_str().unwrap(),
        ],
    ));
    let api = alice_api(&server.base);

    let v1 = push_image(&api, "app/web", "v1", "amd64").await;
    let arm = push_image(&api, "app/web", "v1-arm64", "arm64").await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [
            {"mediaType": IMAGE, "digest": v1.0, "size": v1.1,
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": IMAGE, "digest": arm.0, "size": arm.1,
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    }))
    .unwrap();
    api.put_manifest("app/web", "multi", INDEX, &index).await;
    push_image(&api, "app/web", "v2", "amd64").await;
    let signature = push_referrer(&api, "app/web", &v1).await;
    push_image(&api, "secret/vault", "v1", "amd64").await;
    fill_many(&api).await;

    let driver = start_driver(&chromedriver).await;
    let profile = tempdir();
    let c = browser(&driver, &chromium, profile.path()).await;
    let base = &server.base;

    // The repository list; the browser logs in with alice's credentials in the URL.
    c.goto(&format!("{}/ui/", with_credentials(base, ALICE)))
        .await
        .unwrap();
    assert_eq!(heading(&c).await, "Repositories");
    let first_page = texts(&c, "a.repo").await;
    assert_eq!(first_page.first().map(String::as_str), Some("app/web"));
    shot(&c, "01-repositories").await;

    // Keyboard: the first Tab reaches the skip link.
    c.find(Locator::Css("body"))
        .await
        .unwrap()
        .send_keys("\u{E004}")
        .await
        .unwrap();
    let focused = c
        .execute("return document.activeElement.textContent", vec![])
        .await
        .unwrap();
    assert_eq!(focused, json!("Skip to content"));

    // Search.
    let q = c.find(Locator::Id("q")).await.unwrap();
    q.send_keys("many/r099").await.unwrap();
    click_through(&c, Locator::Css("form.search button")).await;
    let found = texts(&c, "a.repo").await;
    let want: Vec<String> = (990..1000).map(|i| format!("many/r{i:04}")).collect();
    assert_eq!(found, want);
    shot(&c, "02-search").await;
    // alice may pull everything, secret/vault included.
    c.goto(&format!("{base}/ui/?q=secret")).await.unwrap();
    assert_eq!(texts(&c, "a.repo").await, ["secret/vault"]);

    // Page through the 1,000 repositories, 100 at a time, by clicking "Next page".
    c.goto(&format!("{base}/ui/?q=many%2F&n=100"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    for page in 0.. {
        seen.extend(texts(&c, "a.repo").await);
        match c.find(Locator::Id("next")).await {
            Ok(_) => click_through(&c, Locator::Id("next")).await,
            Err(_) => {
                shot(&c, "03-last-page").await;
                break;
            }
        }
        assert!(page < 20, "paging does not end");
    }
    let want: Vec<String> = (0..MANY).map(|i| format!("many/r{i:04}")).collect();
    assert_eq!(seen, want, "every repository once, in order");

    // From the list to the repository, to a tag, to its manifest, to its referrer.
    c.goto(&format!("{base}/ui/")).await.unwrap();
    click_through(&c, Locator::LinkText("app/web")).await;
    assert_eq!(heading(&c).await, "app/web");
    let tags = texts(&c, "a.tag").await;
    assert_eq!(tags, ["v2", "multi", "v1-arm64", "v1"], "newest push first");
    let page = c.source().await.unwrap();
    assert!(
        page.contains("linux/amd64, linux/arm64/v8"),
        "platforms of the index"
    );
    shot(&c, "04-repository").await;

    click_through(&c, Locator::LinkText("v1")).await;
    assert!(heading(&c).await.contains(&v1.0), "the manifest of v1");
    assert_eq!(texts(&c, "#layers tbody tr").await.len(), 1);
    assert!(
        c.source().await.unwrap().contains("39.1 KiB"),
        "the layer's size"
    );
    shot(&c, "05-manifest").await;

    click_through(&c, Locator::Css("a.referrer")).await;
    assert!(
        heading(&c).await.contains(&signature),
        "the signature's page"
    );
    assert_eq!(
        c.find(Locator::Id("artifact-type"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "application/vnd.dev.cosign.artifact.sig.v1+json"
    );
    let subject = c.find(Locator::Id("subject")).await.unwrap();
    assert_eq!(subject.text().await.unwrap(), v1.0);
    shot(&c, "06-referrer").await;

    // The index and its platforms.
    c.goto(&format!("{base}/ui/r/app/web/-/manifest/multi"))
        .await
        .unwrap();
    assert_eq!(
        texts(&c, "#children tbody th").await,
        ["linux/amd64", "linux/arm64/v8"]
    );
    shot(&c, "07-index").await;

    c.goto(&format!("{base}/ui/storage")).await.unwrap();
    assert!(c.find(Locator::Id("totals")).await.is_ok());
    shot(&c, "08-storage").await;

    // Delete v2, confirming on the confirmation page.
    c.goto(&format!("{base}/ui/r/app/web")).await.unwrap();
    click_through(&c, Locator::LinkText("Delete tag v2…")).await;
    assert_eq!(heading(&c).await, "Delete tag v2?");
    shot(&c, "09-confirm-delete").await;
    click_through(&c, Locator::Id("confirm")).await;
    assert_eq!(heading(&c).await, "app/web");
    assert_eq!(
        c.find(Locator::Css(".notice"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "Deleted v2."
    );
    assert_eq!(texts(&c, "a.tag").await, ["multi", "v1-arm64", "v1"]);
    shot(&c, "10-deleted").await;
    let (status, _, body) = api.get("/v2/app/web/tags/list").await;
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(listed["tags"], json!(["multi", "v1", "v1-arm64"]));

    // On a phone-sized screen.
    c.set_window_size(390, 1200).await.unwrap();
    c.goto(&format!("{base}/ui/r/app/web")).await.unwrap();
    let width = c
        .execute("return document.documentElement.scrollWidth", vec![])
        .await
        .unwrap();
    assert!(
        width.as_u64().unwrap() <= 390,
        "no sideways scrolling: {width}"
    );
    shot(&c, "11-phone-repository").await;
    c.goto(&format!("{base}/ui/r/app/web/-/manifest/{}", v1.0))
        .await
        .unwrap();
    shot(&c, "12-phone-manifest").await;
    c.close().await.unwrap();

    // bob may pull app/* and many/*, not secret/*: he does not see it anywhere.
    let bob_profile = tempdir();
    let b = browser(&driver, &chromium, bob_profile.path()).await;
    b.goto(&format!("{}/ui/", with_credentials(base, BOB)))
        .await
        .unwrap();
    let listed = texts(&b, "a.repo").await;
    assert!(listed.contains(&"app/web".to_string()), "{listed:?}");
    assert!(!b.source().await.unwrap().contains("secret"));
    assert!(
        b.find(Locator::LinkText("Delete tag v1…")).await.is_err(),
        "bob may not delete"
    );
    shot(&b, "13-bob-repositories").await;
    b.goto(&format!("{base}/ui/?q=secret")).await.unwrap();
    assert!(texts(&b, "a.repo").await.is_empty());
    b.goto(&format!("{base}/ui/r/secret/vault")).await.unwrap();
    assert_eq!(heading(&b).await, "403 Forbidden");
    shot(&b, "14-bob-denied").await;
    b.goto(&format!("{base}/ui/r/app/web")).await.unwrap();
    assert!(
        b.find(Locator::Css("a.danger")).await.is_err(),
        "no delete links for bob"
    );
    b.close().await.unwrap();
    drop(server);
}
