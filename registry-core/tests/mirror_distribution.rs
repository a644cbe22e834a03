//! Mirroring with CNCF distribution 2.8 (Debian's `docker-registry`) on the other side:
//! filled by a sync to it, then synced from into a fresh registry, with the same digests;
//! a second sync copies nothing. Distribution has no referrers API, so a signature
//! travels as cosign's tag (`sha256-<hex>.sig`), and its `subject` makes it a referrer
//! here again.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::body::Body;
use common::{TestRegistry, data};
use http::{Method, StatusCode};
use oci_spec_types::Digest;
use registry_core::mirror::{Remote, SyncOptions};

/// `docker-registry serve` on a free port with its files under `dir`; killed on drop.
struct Distribution {
    child: Child,
    url: String,
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_distribution(dir: &Path) -> Distribution {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("distribution.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("root").display()
        ),
    )
    .unwrap();
    let log = dir.join("distribution.log");
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect(
            "docker-registry is needed: apt-get install docker-registry (scripts/ci-deps.sh does)",
        );
    let mut d = Distribution {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return d;
        }
        if let Ok(Some(status)) = d.child.try_wait() {
            panic!(
                "docker-registry exited at start ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("docker-registry did not start on port {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_through_distribution_keeps_digests_and_a_second_run_copies_nothing() {
    // Three repositories: two tags sharing a layer, an index with its signature, and one
    // more.
    let plain = TestRegistry::new().await;
    let shared = data(1, 30_000);
    plain
        .push_image("lib/app", "v1", &[&shared, &data(2, 2000)])
        .await;
    plain
        .push_image("lib/app", "v2", &[&shared, &data(3, 2000)])
        .await;
    let (a, a_bytes) = plain
        .push_image("lib/multi", "amd64", &[&data(4, 3000)])
        .await;
    let (b, b_bytes) = plain
        .push_image("lib/multi", "arm64", &[&data(5, 3000)])
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
    let r = plain
        .send(
            Method::PUT,
            "/v2/lib/multi/manifests/latest",
            &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
            Body::from(index.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let index_digest = Digest::sha256_of(&index);
    let empty = plain.push_blob("lib/multi", b"{}").await;
    let sig = data(6, 500);
    let sig_blob = plain.push_blob("lib/multi", &sig).await;
    let signature = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": empty.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.example.signature.v1",
                    "digest": sig_blob.to_string(), "size": sig.len()}],
        "subject": {"mediaType": "application/vnd.oci.image.index.v1+json",
                    "digest": index_digest.to_string(), "size": index.len()},
    }))
    .unwrap();
    let sig_tag = format!("sha256-{}.sig", index_digest.hex());
    let r = plain.put_manifest("lib/multi", &sig_tag, &signature).await;
    assert_eq!(r.status, StatusCode::CREATED);
    plain
        .push_image("tools/cli", "1.0", &[&data(7, 1000)])
        .await;
    let tags = [
        ("lib/app", "v1"),
        ("lib/app", "v2"),
        ("lib/multi", "amd64"),
        ("lib/multi", "arm64"),
        ("lib/multi", "latest"),
        ("lib/multi", sig_tag.as_str()),
        ("tools/cli", "1.0"),
    ];

    let dir = tempfile::tempdir().unwrap();
    let distribution = start_distribution(dir.path());
    let remote = Remote::new(&distribution.url).unwrap();
    let quick = |o: SyncOptions| o.with_retries(2, Duration::from_millis(50));

    let pushed = plain
        .registry
        .sync(&quick(SyncOptions::to(
            remote.clone(),
            "*".parse().unwrap(),
        )))
        .await
        .unwrap();
    assert!(pushed.is_complete(), "{:?}", pushed.failures);
    assert_eq!(pushed.tags_copied, tags.len(), "{pushed:?}");

    let here = TestRegistry::new().await;
    let options = quick(SyncOptions::from(remote, "*".parse().unwrap()));
    let report = here.registry.sync(&options).await.unwrap();
    assert!(report.is_complete(), "{:?}", report.failures);
    assert_eq!(report.repositories, 3);
    assert_eq!(report.tags_copied, tags.len(), "{report:?}");
    // 2 + 2 + index + signature + 1 manifests; the shared layer once: 5 blobs for
    // lib/app, 4 for the images of lib/multi, 2 for the signature, 2 for tools/cli.
    assert_eq!(report.manifests_copied, 7, "{report:?}");
    assert_eq!(report.blobs_copied, 5 + 4 + 2 + 2, "{report:?}");
    for (repo, tag) in tags {
        let ours = here.get(&format!("/v2/{repo}/manifests/{tag}")).await;
        let theirs = plain.get(&format!("/v2/{repo}/manifests/{tag}")).await;
        assert_eq!(ours.status, StatusCode::OK, "{repo}:{tag}");
        assert_eq!(ours.body, theirs.body, "{repo}:{tag}");
        assert_eq!(
            ours.header("Docker-Content-Digest"),
            theirs.header("Docker-Content-Digest")
        );
    }
    let listed = here
        .get(&format!("/v2/lib/multi/referrers/{index_digest}"))
        .await
        .json();
    assert_eq!(
        listed["manifests"][0]["digest"],
        Digest::sha256_of(&signature).to_string()
    );

    let again = here.registry.sync(&options).await.unwrap();
    assert!(again.is_complete(), "{:?}", again.failures);
    assert_eq!(
        (
            again.blobs_copied,
            again.manifests_copied,
            again.tags_copied,
            again.tags_unchanged
        ),
        (0, 0, 0, tags.len()),
        "{again:?}"
    );
}
