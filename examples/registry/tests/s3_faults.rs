#![allow(clippy::unwrap_used)]
//! An S3 outage under the real `registry` binary (S3 blobs, SQLite metadata): SeaweedFS is
//! stopped in the middle of a streamed PATCH and in the middle of a manifest push, then
//! restarted on the same ports and data.
//!
//! During the outage every request ends promptly (an error status for what needs S3, no
//! hang) and the registry keeps answering. After the restart everything committed before
//! is served byte for byte, no partial blob is visible, and the interrupted upload can be
//! finished (resumed from the reported offset, or restarted).
//!
//! One test only: it stops the binary's one SeaweedFS.

mod common;

use std::time::{Duration, Instant};

use common::oci_layout::{Blob, CONFIG, LAYER_GZIP, MANIFEST};
use common::services::{Backends, Blobs, Meta, seaweedfs};
use common::{Api, location, random_bytes, seed, sha256, tempdir};
use serde_json::json;

const REPO: &str = "faults/app";

/// Longest any request may take, outage or not.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

struct Image {
    blobs: Vec<Blob>,
    manifest: Vec<u8>,
}

fn image(label: u64, sizes: &[usize]) -> Image {
    let config = Blob::new(
        serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "config": { "Labels": { "seed": label.to_string() } },
            "rootfs": { "type": "layers", "diff_ids": [] }
        }))
        .unwrap(),
    );
    let layers: Vec<Blob> = sizes
        .iter()
        .map(|&n| Blob::new(random_bytes(seed(), n)))
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config.descriptor(CONFIG),
        "layers": layers.iter().map(|l| l.descriptor(LAYER_GZIP)).collect::<Vec<_>>(),
    }))
    .unwrap();
    let mut blobs = vec![config];
    blobs.extend(layers);
    Image { blobs, manifest }
}

async fn assert_image(api: &Api, tag: &str, image: &Image) {
    api.assert_manifest(REPO, tag, MANIFEST, &image.manifest)
        .await;
    api.assert_manifest(REPO, &sha256(&image.manifest), MANIFEST, &image.manifest)
        .await;
    for blob in &image.blobs {
        api.assert_blob(REPO, &blob.data).await;
    }
}

/// `GET /v2/` answers 200 within the request timeout.
async fn assert_alive(api: &Api, when: &str) {
    let started = Instant::now();
    let res = api
        .http
        .get(api.url("/v2/"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /v2/ {when}: {e:?}"));
    assert_eq!(res.status().as_u16(), 200, "GET /v2/ {when}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "GET /v2/ {when} took {:.1?}",
        started.elapsed()
    );
}

/// A body that sends `first` in 256 KiB pieces, signals `reached`, waits for `resume`, then
/// sends `second` and ends.
fn paused_body(
    first: Vec<u8>,
    second: Vec<u8>,
    reached: tokio::sync::oneshot::Sender<()>,
    resume: tokio::sync::oneshot::Receiver<()>,
) -> reqwest::Body {
    const PIECE: usize = 256 * 1024;
    let mut pieces: Vec<Vec<u8>> = first.chunks(PIECE).map(<[u8]>::to_vec).collect();
    let split = pieces.len();
    pieces.extend(second.chunks(PIECE).map(<[u8]>::to_vec));
    let stream = futures::stream::unfold(
        (pieces.into_iter().enumerate(), Some(reached), Some(resume)),
        move |(mut pieces, mut reached, mut resume)| async move {
            let (i, piece) = pieces.next()?;
            if i == split {
                if let Some(tx) = reached.take() {
                    let _ = tx.send(());
                }
                if let Some(rx) = resume.take() {
                    let _ = rx.await;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            Some((Ok::<_, std::io::Error>(piece), (pieces, reached, resume)))
        },
    );
    reqwest::Body::wrap_stream(stream)
}

/// Stops SeaweedFS (a crash, as far as the registry can tell).
fn stop_s3() {
    let started = Instant::now();
    tokio::task::block_in_place(|| seaweedfs().stop());
    eprintln!("S3 stopped in {:.1?}", started.elapsed());
}

/// Starts SeaweedFS again on the same ports and data, and waits until it is ready.
fn restart_s3() {
    let started = Instant::now();
    tokio::task::block_in_place(|| seaweedfs().restart());
    eprintln!("S3 restarted in {:.1?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_mid_upload_and_mid_manifest_push() {
    let dir = tempdir();
    let server = tokio::task::block_in_place(|| {
        Backends::fresh(Blobs::S3, Meta::Sqlite, "faults", dir.path()).serve(&[])
    });
    // No pooled connections: a request the registry answered before reading its whole body
    // leaves a connection the server closes, and reusing it would fail the next request for
    // reasons that have nothing to do with the registry.
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap();
    let api = Api {
        http,
        base: server.base.clone(),
    };
    let s = seed();

    // Committed before any outage: two images, blobs pushed whole and in chunks.
    let committed = [
        ("one", image(s, &[1, 70_000, 1 << 20])),
        ("two", image(s ^ 0x2, &[3 * (1 << 20) + 11, 5_000])),
    ];
    for (tag, img) in &committed {
        for (i, blob) in img.blobs.iter().enumerate() {
            if i % 2 == 0 {
                api.push_blob(REPO, &blob.data).await;
            } else {
                api.push_blob_chunked(REPO, &blob.data, 400_000).await;
            }
        }
        api.put_manifest(REPO, tag, MANIFEST, &img.manifest).await;
    }

    // Outage 1: in the middle of a streamed PATCH, after an acknowledged first chunk.
    let data = random_bytes(seed(), 12 << 20);
    let digest = sha256(&data);
    let acked = (1 << 20) + 3;
    let loc = api.start_upload(REPO).await;
    let res = api.patch(&loc, 0, &data[..acked]).await;
    assert_eq!(res.status().as_u16(), 202, "first PATCH");
    let loc = location(&res);
    let before_stop = 4 << 20;
    let (reached_tx, reached_rx) = tokio::sync::oneshot::channel();
    let (resume_tx, resume_rx) = tokio::sync::oneshot::channel();
    let body = paused_body(
        data[acked..acked + before_stop].to_vec(),
        data[acked + before_stop..].to_vec(),
        reached_tx,
        resume_rx,
    );
    let streaming = {
        let req = api
            .http
            .patch(api.url(&loc))
            .header("Content-Type", "application/octet-stream")
            .body(body);
        tokio::spawn(async move {
            let started = Instant::now();
            let res = req.send().await;
            (res, started.elapsed())
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, reached_rx)
        .await
        .expect("the streamed PATCH got going")
        .unwrap();
    // Give the registry time to pass some of the bytes on to S3.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop_s3();
    let _ = resume_tx.send(());
    let (outcome, took) = tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(5), streaming)
        .await
        .expect("the streamed PATCH ended")
        .unwrap();
    match outcome {
        Ok(res) => {
            let status = res.status().as_u16();
            let text = res.text().await.unwrap_or_default();
            eprintln!("streamed PATCH during the outage: {status} after {took:.1?}: {text}");
            assert!(
                status >= 500,
                "a PATCH whose bytes could not be stored must fail with a 5xx, got {status}: \
                 {text}\n{}",
                server.log()
            );
        }
        Err(e) => panic!(
            "the streamed PATCH got no HTTP answer (after {took:.1?}): {e:?}\n{}",
            server.log()
        ),
    }
    assert_alive(&api, "during the outage (1)").await;

    // Other requests that need S3 fail promptly too; the registry stays up.
    let orphan = random_bytes(seed(), 300_000);
    let orphan_digest = sha256(&orphan);
    let started = Instant::now();
    let res = api
        .http
        .post(api.url(&format!("/v2/{REPO}/blobs/uploads/?digest={orphan_digest}")))
        .header("Content-Type", "application/octet-stream")
        .body(orphan.clone())
        .send()
        .await
        .unwrap_or_else(|e| panic!("monolithic push during the outage: no answer: {e:?}"));
    let status = res.status().as_u16();
    eprintln!(
        "monolithic push during the outage: {status} after {:.1?}",
        started.elapsed()
    );
    assert!(
        status >= 500 || status == 202,
        "monolithic push during the outage: {status}"
    );
    let (status, _) = api.head(&format!("/v2/{REPO}/blobs/{digest}")).await;
    assert!(
        status == 404 || status >= 500,
        "HEAD of the interrupted blob during the outage: {status}"
    );
    assert_alive(&api, "during the outage (2)").await;
    restart_s3();

    // Outage 2: in the middle of a manifest push whose blobs are all committed.
    let third = image(s ^ 0x3, &[200_000, 10_000]);
    for blob in &third.blobs {
        api.push_blob(REPO, &blob.data).await;
    }
    let half = third.manifest.len() / 2;
    let (reached_tx, reached_rx) = tokio::sync::oneshot::channel();
    let (resume_tx, resume_rx) = tokio::sync::oneshot::channel();
    let body = paused_body(
        third.manifest[..half].to_vec(),
        third.manifest[half..].to_vec(),
        reached_tx,
        resume_rx,
    );
    let pushing = {
        let req = api
            .http
            .put(api.url(&format!("/v2/{REPO}/manifests/three")))
            .header("Content-Type", MANIFEST)
            .body(body);
        tokio::spawn(async move { req.send().await })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, reached_rx)
        .await
        .expect("the manifest push got going")
        .unwrap();
    stop_s3();
    let _ = resume_tx.send(());
    let res = tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(5), pushing)
        .await
        .expect("the manifest push ended")
        .unwrap()
        .unwrap_or_else(|e| panic!("the manifest push got no HTTP answer: {e:?}"));
    let manifest_status = res.status().as_u16();
    eprintln!(
        "manifest push during the outage: {manifest_status}: {}",
        res.text().await.unwrap_or_default()
    );
    assert!(
        manifest_status == 201 || manifest_status >= 500,
        "manifest push during the outage: {manifest_status}"
    );
    assert_alive(&api, "during the outage (3)").await;
    restart_s3();
    assert_alive(&api, "after the restart").await;

    // Everything committed before is served byte for byte.
    for (tag, img) in &committed {
        assert_image(&api, tag, img).await;
    }
    // The manifest push took effect completely or not at all: the tag is absent, or it
    // serves the whole manifest. A client retries a failed push; the retry succeeds.
    let (status, _, body) = api.get(&format!("/v2/{REPO}/manifests/three")).await;
    match status {
        404 => assert_ne!(manifest_status, 201, "a pushed manifest is missing"),
        200 => {
            assert!(body == third.manifest, "the tag serves other bytes");
            // The registry commits the manifest's metadata, then copies its bytes to the
            // blob store for recovery; a failed copy must not turn a committed push into
            // an error answer.
            assert_eq!(
                manifest_status, 201,
                "the tag moved, so the push must say 201"
            );
        }
        s => panic!("GET of the manifest pushed during the outage: {s}"),
    }
    if manifest_status != 201 {
        api.put_manifest(REPO, "three", MANIFEST, &third.manifest)
            .await;
    }
    assert_image(&api, "three", &third).await;

    // No partial blob: neither the interrupted upload nor the refused monolithic push.
    for (what, d) in [
        ("interrupted upload", &digest),
        ("monolithic push", &orphan_digest),
    ] {
        let (status, _) = api.head(&format!("/v2/{REPO}/blobs/{d}")).await;
        assert_eq!(status, 404, "{what}: blob visible after the outage");
        let (status, _, _) = api.get(&format!("/v2/{REPO}/blobs/{d}")).await;
        assert_eq!(status, 404, "{what}: blob readable after the outage");
    }

    // The interrupted upload resumes from the offset the registry reports (at least what
    // was acknowledged), or, if the session is gone, starts over.
    match api.upload_offset(&loc).await {
        Some(offset) => {
            eprintln!("interrupted upload resumes at {offset} (acknowledged {acked})");
            assert!(
                (acked..=data.len()).contains(&offset),
                "resume offset {offset}, acknowledged {acked}"
            );
            let mid = offset + (data.len() - offset) / 2;
            let res = api.patch(&loc, offset, &data[offset..mid]).await;
            assert_eq!(
                res.status().as_u16(),
                202,
                "PATCH after the outage at {offset}\n{}",
                server.log()
            );
            let loc = location(&res);
            let res = api.finish_upload(&loc, &digest, &data[mid..]).await;
            assert_eq!(
                res.status().as_u16(),
                201,
                "PUT after the outage: the resumed bytes must hash to the whole blob\n{}",
                server.log()
            );
        }
        None => {
            eprintln!("interrupted upload is unknown after the outage; starting over");
            api.push_blob_chunked(REPO, &data, 3 << 20).await;
        }
    }
    api.assert_blob(REPO, &data).await;
    api.push_blob(REPO, &orphan).await;
    api.assert_blob(REPO, &orphan).await;
}
