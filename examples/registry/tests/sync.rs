//! `registry sync` and `[[mirror]]` tables, through the binary, with Debian's
//! `docker-registry` (CNCF distribution 2.8) as the other registry: three repositories
//! (one with a multi-platform index and a cosign-style signature) copied in with the same
//! digests, a second run copying nothing, `--to` pushing to another registry, and `serve`
//! keeping a pull mirror and a push mirror current. Needs `docker-registry` (`.ci/run`
//! installs it); fails without it.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::distribution::start_distribution;
use common::{Api, Server, random_bytes, registry_command, seed, sha256, tempdir};

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A pushed manifest: repository, tag, media type, bytes.
struct Pushed {
    repo: &'static str,
    tag: String,
    media_type: &'static str,
    bytes: Vec<u8>,
}

/// Pushes a one-layer image (plus `extra` shared layer if any); returns its manifest.
async fn push_image(
    api: &Api,
    repo: &'static str,
    tag: &str,
    layer: &[u8],
    extra: Option<&[u8]>,
) -> Pushed {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"tag\":\"{tag}\"}}");
    let config_digest = api.push_blob(repo, config.as_bytes()).await;
    let mut layers = Vec::new();
    for l in extra.into_iter().chain([layer]) {
        let d = api.push_blob(repo, l).await;
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len()
        }));
    }
    let bytes = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": layers,
    }))
    .unwrap();
    api.put_manifest(repo, tag, MANIFEST, &bytes).await;
    Pushed {
        repo,
        tag: tag.to_string(),
        media_type: MANIFEST,
        bytes,
    }
}

/// Fills `api` with three repositories; returns every tag pushed and how many blobs
/// they hold.
async fn fill(api: &Api, s: u64) -> (Vec<Pushed>, usize) {
    // Seeds two apart: `random_bytes` sets the lowest bit of its seed.
    let shared = random_bytes(s, 50_000);
    let mut out = vec![
        push_image(
            api,
            "lib/app",
            "v1",
            &random_bytes(s + 2, 3000),
            Some(&shared),
        )
        .await,
        push_image(
            api,
            "lib/app",
            "v2",
            &random_bytes(s + 4, 3000),
            Some(&shared),
        )
        .await,
    ];
    let a = push_image(api, "lib/multi", "amd64", &random_bytes(s + 6, 4000), None).await;
    let b = push_image(api, "lib/multi", "arm64", &random_bytes(s + 8, 4000), None).await;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [
            {"mediaType": MANIFEST, "digest": sha256(&a.bytes), "size": a.bytes.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": MANIFEST, "digest": sha256(&b.bytes), "size": b.bytes.len(),
             "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }))
    .unwrap();
    api.put_manifest("lib/multi", "latest", INDEX, &index).await;
    // A signature as cosign stores it where there is no referrers API: a tag named after
    // its subject; its `subject` makes it a referrer in a registry that has the API.
    let empty = api.push_blob("lib/multi", b"{}").await;
    let sig = random_bytes(s + 10, 600);
    let sig_digest = api.push_blob("lib/multi", &sig).await;
    let signature = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    "digest": sig_digest, "size": sig.len()}],
        "subject": {"mediaType": INDEX, "digest": sha256(&index), "size": index.len()},
    }))
    .unwrap();
    let sig_tag = format!("{}.sig", sha256(&index).replace(':', "-"));
    api.put_manifest("lib/multi", &sig_tag, MANIFEST, &signature)
        .await;
    out.extend([
        a,
        b,
        Pushed {
            repo: "lib/multi",
            tag: "latest".into(),
            media_type: INDEX,
            bytes: index,
        },
        Pushed {
            repo: "lib/multi",
            tag: sig_tag,
            media_type: MANIFEST,
            bytes: signature,
        },
    ]);
    out.push(push_image(api, "tools/cli", "1.0", &random_bytes(s + 12, 1000), None).await);
    // lib/app: 2 configs, the shared layer, 2 layers; lib/multi: 2 configs, 2 layers,
    // the signature's config and layer; tools/cli: a config and a layer.
    (out, 5 + 6 + 2)
}

fn sync(data: &std::path::Path, args: &[&str]) -> Output {
    registry_command()
        .arg("sync")
        .arg("--storage")
        .arg(format!("fs://{}", data.join("blobs").display()))
        .arg("--metadata")
        .arg(format!("sqlite://{}", data.join("registry.db").display()))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_from_distribution_then_again_copies_nothing_and_to_pushes_the_same_digests() {
    let dir = tempdir();
    let (mut dist, dist_addr) = start_distribution(dir.path(), &dir.path().join("distribution"));
    let dist_url = format!("http://{dist_addr}");
    let (pushed, blobs) = fill(&Api::new(&dist_url), seed()).await;

    let data = dir.path().join("data");
    let first = sync(&data, &["--from", &dist_url, "--repositories", "*"]);
    assert!(
        first.status.success(),
        "{}{}",
        stdout(&first),
        String::from_utf8_lossy(&first.stderr)
    );
    let report = stdout(&first);
    assert!(
        report.contains(&format!("3 repositories: {} tags copied", pushed.len())),
        "{report}"
    );
    assert!(report.contains(&format!("{blobs} blobs")), "{report}");
    let again = sync(&data, &["--from", &dist_url, "--repositories", "*"]);
    assert!(again.status.success());
    let report = stdout(&again);
    assert!(
        report.contains(&format!("0 tags copied, {} already there", pushed.len())),
        "{report}"
    );
    assert!(
        report.contains("0 manifests (0 referrers) and 0 blobs"),
        "{report}"
    );
    dist.kill().unwrap();
    dist.wait().unwrap();

    // Served from here with distribution's digests; the signature is a referrer here.
    let ours = Server::start(&data);
    let api = Api::new(&ours.base);
    for p in &pushed {
        api.assert_manifest(p.repo, &p.tag, p.media_type, &p.bytes)
            .await;
    }
    let index = pushed.iter().find(|p| p.tag == "latest").unwrap();
    let (status, _, body) = api
        .get(&format!("/v2/lib/multi/referrers/{}", sha256(&index.bytes)))
        .await;
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let sig = pushed.iter().find(|p| p.tag.ends_with(".sig")).unwrap();
    assert_eq!(listed["manifests"][0]["digest"], sha256(&sig.bytes));

    // --to: from these stores to another registry, only lib/*, only v tags.
    let other_dir = tempdir();
    let other = Server::start(other_dir.path());
    let to = sync(
        &data,
        &[
            "--to",
            &other.base,
            "--repositories",
            "lib/*",
            "--tags",
            "^v",
        ],
    );
    assert!(
        to.status.success(),
        "{}{}",
        stdout(&to),
        String::from_utf8_lossy(&to.stderr)
    );
    let other_api = Api::new(&other.base);
    for p in pushed.iter().filter(|p| p.repo == "lib/app") {
        other_api
            .assert_manifest(p.repo, &p.tag, p.media_type, &p.bytes)
            .await;
    }
    let (status, _, body) = other_api.get("/v2/_catalog").await;
    assert_eq!(status, 200);
    let catalog: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(catalog["repositories"], serde_json::json!(["lib/app"]));
}

/// Polls until `f` is true (at most 30 s).
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not after 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_a_pull_mirror_and_a_push_mirror_current() {
    let dir = tempdir();
    let (mut dist, dist_addr) = start_distribution(dir.path(), &dir.path().join("distribution"));
    let dist_api = Api::new(&format!("http://{dist_addr}"));
    let s = seed();
    let v1 = push_image(&dist_api, "lib/app", "v1", &random_bytes(s, 2000), None).await;
    let backup_dir = tempdir();
    let backup = Server::start(backup_dir.path());
    let config = dir.path().join("registry.toml");
    std::fs::write(
        &config,
        format!(
            "[[mirror]]\nfrom = \"http://{dist_addr}\"\nrepositories = \"lib/*\"\ninterval = \"1s\"\n\n\
             [[mirror]]\nto = \"{}\"\nrepositories = \"team/*\"\n",
            backup.base
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut cmd = registry_command();
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--config")
        .arg(&config)
        .arg("--storage")
        .arg(format!("fs://{}", data.join("blobs").display()))
        .arg("--metadata")
        .arg(format!("sqlite://{}", data.join("registry.db").display()));
    let ours = Server::spawn(cmd);
    let api = Api::new(&ours.base);
    eventually("lib/app:v1 pulled in", || async {
        api.head("/v2/lib/app/manifests/v1").await.0 == 200
    })
    .await;
    api.assert_manifest("lib/app", "v1", MANIFEST, &v1.bytes)
        .await;
    let v2 = push_image(&dist_api, "lib/app", "v2", &random_bytes(s + 2, 2000), None).await;
    eventually("lib/app:v2 pulled in", || async {
        api.head("/v2/lib/app/manifests/v2").await.0 == 200
    })
    .await;
    api.assert_manifest("lib/app", "v2", MANIFEST, &v2.bytes)
        .await;
    dist.kill().unwrap();
    dist.wait().unwrap();

    // A push here reaches the backup.
    let mine = push_image(&api, "team/tool", "1.0", &random_bytes(s + 4, 2000), None).await;
    let backup_api = Api::new(&backup.base);
    eventually("team/tool:1.0 pushed on", || async {
        backup_api.head("/v2/team/tool/manifests/1.0").await.0 == 200
    })
    .await;
    backup_api
        .assert_manifest("team/tool", "1.0", MANIFEST, &mine.bytes)
        .await;
}

#[test]
fn bad_sync_settings_are_refused_with_a_reason() {
    let dir = tempdir();
    let data = dir.path();
    for (args, expected) in [
        (
            vec![
                "--from",
                "http://127.0.0.1:1",
                "--to",
                "http://127.0.0.1:2",
                "--repositories",
                "*",
            ],
            "cannot be used with",
        ),
        (vec!["--repositories", "*"], "--from"),
        (vec!["--from", "http://127.0.0.1:1"], "--repositories"),
        (vec!["--from", "ftp://x", "--repositories", "*"], "http"),
        (
            vec![
                "--from",
                "http://127.0.0.1:1",
                "--repositories",
                "Not Valid",
            ],
            "repositories",
        ),
        (
            vec![
                "--from",
                "http://127.0.0.1:1",
                "--repositories",
                "*",
                "--tags",
                "([",
            ],
            "tags",
        ),
        (
            vec![
                "--from",
                "http://127.0.0.1:1",
                "--repositories",
                "*",
                "--username",
                "u",
            ],
            "password",
        ),
    ] {
        let out = sync(data, &args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    // An unreachable source is an error, not a panic.
    let out = sync(
        data,
        &["--from", "http://127.0.0.1:1", "--repositories", "lib/*"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("error"));
}
