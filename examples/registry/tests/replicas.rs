#![allow(clippy::unwrap_used)]
//! Two `registry` processes sharing one S3 bucket prefix and one PostgreSQL database, as
//! replicas behind a load balancer would: nothing in one replica's memory may be needed by
//! the other.
//!
//! - a chunked upload started on replica 1 continues and finishes on replica 2;
//! - both replicas push the same tag at once, round after round, and the tag always ends on
//!   one complete manifest that pulls fully from both;
//! - replica 1 is SIGKILLed in the middle of a large streamed PATCH, and the upload is
//!   finished on replica 2 from the offset replica 2 reports;
//! - the conformance harness runs against replica 1 while replica 2 serves pulls.
//!
//! One SeaweedFS and one PostgreSQL serve the whole binary; every test has its own prefix
//! and database. The background garbage collector is off on every replica.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::oci_layout::{Blob, CONFIG, LAYER_GZIP, MANIFEST};
use common::services::{Backends, Blobs, Meta, assert_conformance};
use common::{Api, Server, location, random_bytes, seed, sha256, tempdir};
use serde_json::json;

/// Fresh S3 + PostgreSQL stores and two replicas serving them.
fn replicas(label: &str, dir: &std::path::Path) -> (Backends, Server, Server) {
    tokio::task::block_in_place(|| {
        let backends = Backends::fresh(Blobs::S3, Meta::Postgres, label, dir);
        let one = backends.serve(&[]);
        let two = backends.serve(&[]);
        (backends, one, two)
    })
}

/// A Location is a path, so a session opened on one replica can be addressed on another.
fn assert_relative(loc: &str) {
    assert!(
        loc.starts_with("/v2/"),
        "Location {loc:?} should be a path, valid on every replica"
    );
}

/// An image: a config, the given layers, and its manifest bytes.
struct Image {
    config: Blob,
    layers: Vec<Blob>,
    manifest: Vec<u8>,
}

impl Image {
    fn new(seed: u64, name: &str, layers: Vec<Blob>) -> Image {
        let config = Blob::new(
            serde_json::to_vec(&json!({
                "architecture": "amd64", "os": "linux",
                "config": { "Labels": { "name": name, "seed": seed.to_string() } },
                "rootfs": { "type": "layers", "diff_ids": [] }
            }))
            .unwrap(),
        );
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": config.descriptor(CONFIG),
            "layers": layers.iter().map(|l| l.descriptor(LAYER_GZIP)).collect::<Vec<_>>(),
            "annotations": { "name": name },
        }))
        .unwrap();
        Image {
            config,
            layers,
            manifest,
        }
    }

    fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }

    fn digest(&self) -> String {
        sha256(&self.manifest)
    }

    async fn push_blobs(&self, api: &Api, repo: &str) {
        for blob in self.blobs() {
            api.push_blob(repo, &blob.data).await;
        }
    }

    /// Manifest by digest and every blob, byte for byte.
    async fn assert_pulls(&self, api: &Api, repo: &str) {
        api.assert_manifest(repo, &self.digest(), MANIFEST, &self.manifest)
            .await;
        for blob in self.blobs() {
            api.assert_blob(repo, &blob.data).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_moves_between_replicas() {
    let dir = tempdir();
    let (_backends, one, two) = replicas("chunked", dir.path());
    let (api1, api2) = (Api::new(&one.base), Api::new(&two.base));
    let repo = "replicas/chunked";
    let s = seed();
    let data = random_bytes(seed(), 3 * (1 << 20) + 4321);
    let digest = sha256(&data);
    let (first, second) = (1 << 20, 2 * (1 << 20) + 17);

    // POST and the first PATCH on replica 1.
    let loc = api1.start_upload(repo).await;
    assert_relative(&loc);
    let res = api1.patch(&loc, 0, &data[..first]).await;
    assert_eq!(res.status().as_u16(), 202, "PATCH on replica 1");
    let loc = location(&res);
    assert_relative(&loc);

    // The next PATCH on replica 2, which never saw the session.
    assert_eq!(api2.upload_offset(&loc).await, Some(first), "status on 2");
    let res = api2.patch(&loc, first, &data[first..second]).await;
    assert_eq!(
        res.status().as_u16(),
        202,
        "PATCH on replica 2\nreplica 2 log:\n{}",
        two.log()
    );
    let loc = location(&res);
    assert_eq!(
        api1.upload_offset(&loc).await,
        Some(second),
        "replica 1 sees the offset replica 2 acknowledged"
    );

    // A stale PATCH on replica 1 (at the offset it last acknowledged) is refused with the
    // real offset.
    let res = api1.patch(&loc, first, &data[first..second]).await;
    assert_eq!(res.status().as_u16(), 416, "stale PATCH on replica 1");
    let range = res
        .headers()
        .get("Range")
        .and_then(|v| v.to_str().ok())
        .map(common::parse_range_end);
    assert_eq!(range, Some(second), "Range of the 416");

    // The final PUT on replica 2.
    let res = api2.finish_upload(&loc, &digest, &data[second..]).await;
    assert_eq!(
        res.status().as_u16(),
        201,
        "PUT on replica 2\nreplica 2 log:\n{}",
        two.log()
    );
    assert_eq!(
        res.headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok()),
        Some(digest.as_str())
    );

    // Pulled from replica 1: same bytes, same digest; the session is gone on both.
    api1.assert_blob(repo, &data).await;
    api2.assert_blob(repo, &data).await;
    assert_eq!(
        api1.upload_offset(&loc).await,
        None,
        "session after PUT (1)"
    );
    assert_eq!(
        api2.upload_offset(&loc).await,
        None,
        "session after PUT (2)"
    );

    // A manifest pushed on 2 over that layer pulls from 1.
    let image = Image::new(s, "chunked", vec![Blob::new(data.clone())]);
    api2.push_blob(repo, &image.config.data).await;
    api2.put_manifest(repo, "v1", MANIFEST, &image.manifest)
        .await;
    api1.assert_manifest(repo, "v1", MANIFEST, &image.manifest)
        .await;
    image.assert_pulls(&api1, repo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_tag_pushed_from_both_replicas_at_once() {
    let dir = tempdir();
    let (_backends, one, two) = replicas("race", dir.path());
    let (api1, api2) = (Api::new(&one.base), Api::new(&two.base));
    let repo = "replicas/race";
    let s = seed();
    let rounds = 20;
    let mut wins = [0usize; 2];
    let started = Instant::now();

    for round in 0..rounds {
        let r = s.wrapping_add(round * 1000);
        // A layer both images share, pushed by both replicas at the same moment, and one
        // layer of each image's own.
        let shared = Blob::new(random_bytes(seed(), 150_000 + round as usize));
        let a = Image::new(
            r ^ 0xA,
            &format!("a{round}"),
            vec![shared.clone(), Blob::new(random_bytes(seed(), 40_000))],
        );
        let b = Image::new(
            r ^ 0xB,
            &format!("b{round}"),
            vec![shared.clone(), Blob::new(random_bytes(seed(), 50_000))],
        );
        tokio::join!(
            api1.push_blob(repo, &shared.data),
            api2.push_blob(repo, &shared.data)
        );
        tokio::join!(a.push_blobs(&api1, repo), b.push_blobs(&api2, repo));

        // Both replicas put a different manifest under the same tag at once; both succeed.
        let put = |api: &Api, image: &Image| {
            let req = api
                .http
                .put(api.url(&format!("/v2/{repo}/manifests/latest")))
                .header("Content-Type", MANIFEST)
                .body(image.manifest.clone());
            async move {
                let res = req.send().await.expect("PUT manifest");
                (res.status().as_u16(), res.text().await.unwrap_or_default())
            }
        };
        let (ra, rb) = tokio::join!(put(&api1, &a), put(&api2, &b));
        assert_eq!(ra.0, 201, "round {round}: PUT on replica 1: {}", ra.1);
        assert_eq!(rb.0, 201, "round {round}: PUT on replica 2: {}", rb.1);

        // The tag is one of the two, the same on both replicas, and it pulls completely.
        let (s1, h1, m1) = api1.get(&format!("/v2/{repo}/manifests/latest")).await;
        let (s2, _, m2) = api2.get(&format!("/v2/{repo}/manifests/latest")).await;
        assert_eq!((s1, s2), (200, 200), "round {round}: GET latest");
        assert!(m1 == m2, "round {round}: the replicas disagree on the tag");
        let winner = if m1 == a.manifest {
            wins[0] += 1;
            &a
        } else if m1 == b.manifest {
            wins[1] += 1;
            &b
        } else {
            panic!(
                "round {round}: the tag holds neither pushed manifest: {}",
                String::from_utf8_lossy(&m1)
            );
        };
        assert_eq!(
            h1.get("Docker-Content-Digest")
                .and_then(|v| v.to_str().ok()),
            Some(winner.digest().as_str()),
            "round {round}: digest header of the tag"
        );
        winner.assert_pulls(&api1, repo).await;
        winner.assert_pulls(&api2, repo).await;
        // The loser is still there by digest (it was pushed successfully).
        let loser = if std::ptr::eq(winner, &a) { &b } else { &a };
        loser.assert_pulls(&api2, repo).await;
    }

    // One tag, listed once.
    for api in [&api1, &api2] {
        let (status, _, body) = api.get(&format!("/v2/{repo}/tags/list")).await;
        assert_eq!(status, 200);
        let tags: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(tags["tags"], json!(["latest"]), "tags: {tags}");
    }
    eprintln!(
        "{rounds} rounds in {:.1?}: replica 1 won {}, replica 2 won {}",
        started.elapsed(),
        wins[0],
        wins[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_survives_sigkill_of_one_replica() {
    let dir = tempdir();
    let (backends, mut one, two) = replicas("sigkill", dir.path());
    let (api1, api2) = (Api::new(&one.base), Api::new(&two.base));
    let repo = "replicas/sigkill";
    let data = random_bytes(seed(), 24 << 20);
    let digest = sha256(&data);

    // Something committed before the crash.
    let committed = random_bytes(seed(), 700_000);
    api1.push_blob_chunked(repo, &committed, 300_000).await;

    // One acknowledged chunk on replica 1.
    let acked = (2 << 20) + 5;
    let loc = api1.start_upload(repo).await;
    let res = api1.patch(&loc, 0, &data[..acked]).await;
    assert_eq!(res.status().as_u16(), 202, "first PATCH on replica 1");
    let loc = location(&res);

    // A large streamed PATCH (no Content-Range, no length) to replica 1 that stalls after
    // 8 MiB, still open when the process dies.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let rest = data[acked..].to_vec();
    let streamed = 8 << 20;
    let body = futures::stream::unfold(
        (rest, 0usize, Some(started_tx)),
        move |(rest, sent, mut started)| async move {
            const CHUNK: usize = 256 * 1024;
            if sent >= streamed {
                if let Some(tx) = started.take() {
                    let _ = tx.send(());
                }
                futures::future::pending::<()>().await;
            }
            let end = (sent + CHUNK).min(rest.len());
            let chunk = rest[sent..end].to_vec();
            tokio::time::sleep(Duration::from_millis(2)).await;
            Some((Ok::<_, std::io::Error>(chunk), (rest, end, started)))
        },
    );
    let streaming = {
        let req = api1
            .http
            .patch(api1.url(&loc))
            .header("Content-Type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body));
        tokio::spawn(async move { req.send().await })
    };
    tokio::time::timeout(Duration::from_secs(60), started_rx)
        .await
        .expect("the streamed PATCH got going within 60 s")
        .expect("stream signal");
    // Let the registry pass some of the streamed bytes on to S3 before it dies.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log_one = one.log();
    one.kill();
    let outcome = tokio::time::timeout(Duration::from_secs(30), streaming)
        .await
        .expect("the interrupted PATCH ends once the replica is gone")
        .expect("join");
    if let Ok(res) = &outcome {
        assert!(
            !res.status().is_success(),
            "a PATCH cut off by SIGKILL cannot have succeeded: {}",
            res.status()
        );
    }
    let report = || {
        format!(
            "replica 1 (killed) log:\n{log_one}\nreplica 2 log:\n{}",
            two.log()
        )
    };

    // No partial blob, and what was committed is intact.
    let (status, _) = api2.head(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(status, 404, "unfinished blob visible\n{}", report());
    api2.assert_blob(repo, &committed).await;

    // The survivor reports where the session stands: at least what was acknowledged.
    let offset = api2
        .upload_offset(&loc)
        .await
        .unwrap_or_else(|| panic!("the session is unknown on replica 2\n{}", report()));
    eprintln!("session resumes on replica 2 at {offset} (acknowledged {acked})");
    assert!(
        (acked..=acked + streamed).contains(&offset),
        "replica 2 reports offset {offset}, acknowledged {acked}\n{}",
        report()
    );

    // Finish on replica 2 from there: one more PATCH, then the PUT with the last bytes.
    let mid = offset + (data.len() - offset) / 2;
    let res = api2.patch(&loc, offset, &data[offset..mid]).await;
    assert_eq!(
        res.status().as_u16(),
        202,
        "PATCH on replica 2 from {offset}\n{}",
        report()
    );
    let loc = location(&res);
    let res = api2.finish_upload(&loc, &digest, &data[mid..]).await;
    assert_eq!(
        res.status().as_u16(),
        201,
        "PUT on replica 2: the resumed bytes must hash to the whole blob\n{}",
        report()
    );
    api2.assert_blob(repo, &data).await;

    // A replacement for replica 1 serves it too.
    let three = tokio::task::block_in_place(|| backends.serve(&[]));
    let api3 = Api::new(&three.base);
    api3.assert_blob(repo, &data).await;
    api3.assert_blob(repo, &committed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_one_replica_while_the_other_serves_pulls() {
    let dir = tempdir();
    let (_backends, one, two) = replicas("conformance", dir.path());
    let api2 = Api::new(&two.base);
    let repo = "replicas/pulled";
    let s = seed();
    let image = Image::new(
        s,
        "pulled",
        (0..3)
            .map(|i| Blob::new(random_bytes(seed(), 300_000 * (i as usize + 1))))
            .collect(),
    );
    image.push_blobs(&api2, repo).await;
    api2.put_manifest(repo, "v1", MANIFEST, &image.manifest)
        .await;
    let image = Arc::new(image);

    let stop = Arc::new(AtomicBool::new(false));
    let pulls = Arc::new(AtomicUsize::new(0));
    let puller = {
        let (api, image, stop, pulls) = (api2.clone(), image.clone(), stop.clone(), pulls.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                api.assert_manifest(repo, "v1", MANIFEST, &image.manifest)
                    .await;
                for blob in image.blobs() {
                    api.assert_blob(repo, &blob.data).await;
                }
                pulls.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let started = Instant::now();
    let checks = assert_conformance(&one.base, "conformance", "replica 1 of S3 + PostgreSQL").await;
    stop.store(true, Ordering::Relaxed);
    puller
        .await
        .unwrap_or_else(|e| panic!("a pull from replica 2 failed: {e}\n{}", two.log()));
    let pulls = pulls.load(Ordering::Relaxed);
    assert!(pulls > 0, "replica 2 served no pull during the run");
    eprintln!(
        "{checks} conformance checks passed on replica 1 in {:.1?} while replica 2 served {pulls} full pulls",
        started.elapsed()
    );
    // What the harness pushed through replica 1 is visible through replica 2.
    let (status, _, body) = api2.get("/v2/_catalog").await;
    assert_eq!(status, 200);
    let catalog: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let repos = catalog["repositories"].as_array().unwrap();
    assert!(
        repos
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.starts_with("conformance/"))),
        "replica 2's catalog lists the harness's repositories: {catalog}"
    );
}

/// Two PATCHes of the same chunk of one session, with different bytes, sent to both
/// replicas at once (a client retrying through a load balancer after a timeout, or a
/// hostile one): at most one is acknowledged, and whatever the session then commits under
/// a digest must be bytes of that digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_patches_of_one_session_on_both_replicas() {
    let dir = tempdir();
    let (_backends, one, two) = replicas("patch_race", dir.path());
    let (api1, api2) = (Api::new(&one.base), Api::new(&two.base));
    let repo = "replicas/patchrace";
    let rounds = 30u64;
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..rounds {
        let len = 64 * 1024 + round as usize * 511;
        let a = random_bytes(seed(), len);
        let b = random_bytes(seed(), len);
        let loc = api1.start_upload(repo).await;
        let (ra, rb) = tokio::join!(api1.patch(&loc, 0, &a), api2.patch(&loc, 0, &b));
        let (sa, sb) = (ra.status().as_u16(), rb.status().as_u16());
        *outcomes.entry(format!("{sa}/{sb}")).or_default() += 1;
        for (res, st) in [(ra, sa), (rb, sb)] {
            if st != 202 {
                let text = res.text().await.unwrap_or_default();
                *outcomes.entry(text).or_default() += 1;
            }
        }
        let winner = match (sa, sb) {
            (202, 202) => panic!("round {round}: both racing PATCHes were acknowledged"),
            (202, _) => &a,
            (_, 202) => &b,
            _ => panic!("round {round}: neither racing PATCH was acknowledged: {sa}/{sb}"),
        };
        // The store records one of the two writes and refuses the other before its
        // metadata compare-and-swap, so the session is never left holding the loser's
        // bytes (which would have to be abandoned): it holds the winner's, and commits.
        let offset = api2.upload_offset(&loc).await;
        assert_eq!(
            offset,
            Some(len),
            "round {round}: the session after the race; outcomes so far: {outcomes:?}"
        );
        let digest = sha256(winner);
        let res = api2.finish_upload(&loc, &digest, &[]).await;
        assert_eq!(
            res.status().as_u16(),
            201,
            "round {round}: PUT of the winner's digest; outcomes so far: {outcomes:?}"
        );
        let (status, _, body) = api1.get(&format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(status, 200, "round {round}: GET of the committed blob");
        let served = if body == a {
            "the bytes of replica 1's PATCH"
        } else if body == b {
            "the bytes of replica 2's PATCH"
        } else {
            "other bytes"
        };
        assert!(
            sha256(&body) == digest,
            "round {round}: {digest} (acknowledged on replica {}) serves {served} \
             (sha256 {}); outcomes so far: {outcomes:?}",
            if sa == 202 { 1 } else { 2 },
            sha256(&body)
        );
    }
    eprintln!("racing PATCH outcomes over {rounds} rounds: {outcomes:?}");
}

/// The same race made deterministic: replica 2 takes a PATCH whose body is slow to come,
/// replica 1 takes and acknowledges a whole PATCH of other bytes at the same offset in the
/// meantime, then the slow body completes. Replica 2's PATCH must fail (the session moved
/// on), and the session must still hold replica 1's acknowledged bytes: the digest of
/// those bytes commits, and the blob serves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_patch_on_one_replica_cannot_overwrite_bytes_acknowledged_by_the_other() {
    let dir = tempdir();
    let (_backends, one, two) = replicas("slow_patch", dir.path());
    let (api1, api2) = (Api::new(&one.base), Api::new(&two.base));
    let repo = "replicas/slowpatch";
    let len = 300_000;
    let a = random_bytes(seed(), len);
    let b = random_bytes(seed(), len);
    let loc = api1.start_upload(repo).await;

    // Replica 2: the first half of b, then nothing until told.
    let (resume_tx, resume_rx) = tokio::sync::oneshot::channel::<()>();
    let halves = vec![b[..len / 2].to_vec(), b[len / 2..].to_vec()];
    let body = futures::stream::unfold(
        (halves.into_iter(), Some(resume_rx)),
        |(mut halves, mut resume)| async move {
            let half = halves.next()?;
            if resume.is_some() && halves.len() == 0 {
                let _ = resume.take().unwrap().await;
            }
            Some((Ok::<_, std::io::Error>(half), (halves, resume)))
        },
    );
    let slow = {
        let req = api2
            .http
            .patch(api2.url(&loc))
            .header("Content-Type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body));
        tokio::spawn(async move { req.send().await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Replica 1: all of a, acknowledged.
    let res = api1.patch(&loc, 0, &a).await;
    assert_eq!(res.status().as_u16(), 202, "PATCH on replica 1");
    assert_eq!(api1.upload_offset(&loc).await, Some(len));

    // Replica 2's body completes; its PATCH must not be acknowledged.
    let _ = resume_tx.send(());
    let res = tokio::time::timeout(Duration::from_secs(30), slow)
        .await
        .expect("the slow PATCH ended")
        .unwrap()
        .expect("the slow PATCH got an answer");
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    eprintln!("slow PATCH on replica 2: {status} {text}");
    assert!(
        !(200..300).contains(&status),
        "both PATCHes of offset 0 were acknowledged"
    );
    assert_eq!(api2.upload_offset(&loc).await, Some(len));

    // The session commits under the digest of the acknowledged bytes, and serves them.
    let digest = sha256(&a);
    let res = api2.finish_upload(&loc, &digest, &[]).await;
    let status = res.status().as_u16();
    if status == 201 {
        let (status, _, body) = api1.get(&format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(status, 200);
        let served = if body == a {
            "replica 1's acknowledged bytes"
        } else if body == b {
            "replica 2's refused bytes"
        } else {
            "other bytes"
        };
        assert!(
            body == a,
            "blob {digest} serves {served} (sha256 {}): a refused PATCH overwrote the \
             session's acknowledged bytes",
            sha256(&body)
        );
    } else {
        // Not committing is safe, but the acknowledged bytes were lost.
        panic!(
            "PUT of the acknowledged bytes' digest: {status} {}",
            res.text().await.unwrap_or_default()
        );
    }
}

/// What an honest client can trigger: its PATCH of the first chunk to replica 2 stalls, so
/// it gives up on it, checks the session's offset, and sends the same bytes again to
/// replica 1, then the next chunk, both acknowledged. When the stalled request finally
/// completes on replica 2 it must not roll the session's bytes back to its own chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_retried_patch_cannot_roll_back_a_session() {
    let dir = tempdir();
    let (_backends, one, two) = replicas("stalled_retry", dir.path());
    let (api1, api2) = (Api::new(&one.base), Api::new(&two.base));
    let repo = "replicas/stalledretry";
    let chunk = 200_000;
    let data = random_bytes(seed(), 2 * chunk);
    let loc = api1.start_upload(repo).await;

    // The first chunk to replica 2, stalling half way.
    let (resume_tx, resume_rx) = tokio::sync::oneshot::channel::<()>();
    let halves = vec![data[..chunk / 2].to_vec(), data[chunk / 2..chunk].to_vec()];
    let body = futures::stream::unfold(
        (halves.into_iter(), Some(resume_rx)),
        |(mut halves, mut resume)| async move {
            let half = halves.next()?;
            if halves.len() == 0
                && let Some(rx) = resume.take()
            {
                let _ = rx.await;
            }
            Some((Ok::<_, std::io::Error>(half), (halves, resume)))
        },
    );
    let stalled = {
        let req = api2
            .http
            .patch(api2.url(&loc))
            .header("Content-Type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body));
        tokio::spawn(async move { req.send().await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The client retries through replica 1: the same first chunk, then the second.
    let res = api1.patch(&loc, 0, &data[..chunk]).await;
    assert_eq!(res.status().as_u16(), 202, "retried first chunk");
    let res = api1.patch(&loc, chunk, &data[chunk..]).await;
    assert_eq!(res.status().as_u16(), 202, "second chunk");
    let loc = location(&res);

    // The stalled request completes; it cannot be acknowledged.
    let _ = resume_tx.send(());
    let res = tokio::time::timeout(Duration::from_secs(30), stalled)
        .await
        .expect("the stalled PATCH ended")
        .unwrap()
        .expect("the stalled PATCH got an answer");
    let status = res.status().as_u16();
    eprintln!(
        "stalled PATCH on replica 2: {status} {}",
        res.text().await.unwrap_or_default()
    );
    assert!(!(200..300).contains(&status), "the stalled PATCH succeeded");
    assert_eq!(api1.upload_offset(&loc).await, Some(2 * chunk));

    let digest = sha256(&data);
    let res = api1.finish_upload(&loc, &digest, &[]).await;
    let status = res.status().as_u16();
    assert_eq!(
        status,
        201,
        "PUT of the acknowledged bytes: {}\nreplica 1 log:\n{}",
        res.text().await.unwrap_or_default(),
        one.log()
    );
    let (status, _, body) = api2.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(status, 200);
    assert!(
        body == data,
        "blob {digest} serves {} bytes with sha256 {} instead of the {} acknowledged bytes",
        body.len(),
        sha256(&body),
        data.len()
    );
}
