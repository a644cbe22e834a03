//! Crash safety of the real `registry` binary: SIGKILL it while a large PATCH is streaming,
//! restart it on the same folder, and check that everything committed before the kill is
//! served byte for byte, that acknowledged upload bytes survive, that the interrupted
//! session either resumes correctly or is cleanly unknown, and that no partial blob is
//! visible.

mod common;

use std::time::Duration;

use common::oci_layout::{Blob, CONFIG, LAYER_GZIP, MANIFEST};
use common::{Api, Server, random_bytes, seed, sha256, tempdir};
use serde_json::json;

const REPO: &str = "crash/test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_streaming_patch_loses_nothing_committed() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let s = seed();
    let mut server = Server::start(&data);
    let api = Api::new(&server.base);

    // Committed state: blobs pushed monolithically and in chunks, and a manifest.
    let blobs: Vec<Vec<u8>> = [1usize, 1024, 65_537, 1 << 20, 3 * (1 << 20) + 17]
        .iter()
        .enumerate()
        .map(|(i, &len)| random_bytes(s.wrapping_add(i as u64), len))
        .collect();
    for blob in &blobs[..3] {
        api.push_blob(REPO, blob).await;
    }
    for blob in &blobs[3..] {
        api.push_blob_chunked(REPO, blob, 256 * 1024 + 3).await;
    }
    let config = Blob::new(
        serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [] }
        }))
        .unwrap(),
    );
    api.push_blob(REPO, &config.data).await;
    let layers: Vec<Blob> = blobs[1..].iter().map(|b| Blob::new(b.clone())).collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config.descriptor(CONFIG),
        "layers": layers.iter().map(|l| l.descriptor(LAYER_GZIP)).collect::<Vec<_>>(),
    }))
    .unwrap();
    let manifest_digest = sha256(&manifest);
    api.put_manifest(REPO, "committed", MANIFEST, &manifest)
        .await;

    // Session B: one acknowledged chunk, then left open.
    let b_data = random_bytes(s ^ 0xB, 700_000);
    let b_loc = api.start_upload(REPO).await;
    let b_acked = 300_000;
    let res = api.patch(&b_loc, 0, &b_data[..b_acked]).await;
    assert_eq!(res.status().as_u16(), 202, "PATCH of session B");
    let b_loc = common::location(&res);

    // Session A: one acknowledged chunk, then a large streamed PATCH that never ends.
    let a_data = random_bytes(s ^ 0xA, 48 << 20);
    let a_loc = api.start_upload(REPO).await;
    let a_acked = 100_000;
    let res = api.patch(&a_loc, 0, &a_data[..a_acked]).await;
    assert_eq!(res.status().as_u16(), 202, "first PATCH of session A");
    let a_loc = common::location(&res);

    let before_stream = dir_size(&data);
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let rest = a_data[a_acked..].to_vec();
    let body = futures::stream::unfold(
        (rest, 0usize, Some(started_tx)),
        |(rest, sent, mut started)| async move {
            const CHUNK: usize = 256 * 1024;
            if sent >= 8 << 20 {
                // Enough is on the wire: tell the test, then stall so the request is still
                // streaming when the process dies.
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
        let api = api.clone();
        let url = api.url(&a_loc);
        tokio::spawn(async move {
            api.http
                .patch(url)
                .header("Content-Type", "application/octet-stream")
                .body(reqwest::Body::wrap_stream(body))
                .send()
                .await
        })
    };
    tokio::time::timeout(Duration::from_secs(60), started_rx)
        .await
        .expect("the streamed PATCH got going within 60 s")
        .expect("stream signal");
    // Kill only once the registry has written part of the streamed bytes to disk, so the
    // crash leaves a half-written chunk behind.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dir_size(&data) < before_stream + (1 << 20) {
        assert!(
            std::time::Instant::now() < deadline,
            "the registry did not write the streamed PATCH to disk within 30 s\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_log = server.log();
    server.kill();

    let outcome = tokio::time::timeout(Duration::from_secs(30), streaming)
        .await
        .expect("the interrupted PATCH ends once the process is gone")
        .expect("join");
    if let Ok(res) = &outcome {
        assert!(
            !res.status().is_success(),
            "a PATCH cut off by SIGKILL cannot have succeeded: {}",
            res.status()
        );
    }

    // Restart on the same folder.
    let server = Server::start(&data);
    let api = Api::new(&server.base);
    let report = || {
        format!(
            "log before kill:\n{first_log}\nlog after restart:\n{}",
            server.log()
        )
    };

    for blob in &blobs {
        api.assert_blob(REPO, blob).await;
    }
    api.assert_blob(REPO, &config.data).await;
    api.assert_manifest(REPO, "committed", MANIFEST, &manifest)
        .await;
    api.assert_manifest(REPO, &manifest_digest, MANIFEST, &manifest)
        .await;

    // No partial blob: neither unfinished upload is visible under its digest.
    for (name, d) in [("A", &a_data), ("B", &b_data)] {
        let digest = sha256(d);
        let (status, _) = api.head(&format!("/v2/{REPO}/blobs/{digest}")).await;
        assert_eq!(
            status,
            404,
            "unfinished blob {name} must not be visible\n{}",
            report()
        );
    }

    // Session B was acknowledged before the kill: it resumes exactly where it was.
    let offset = api.upload_offset(&b_loc).await;
    assert_eq!(
        offset,
        Some(b_acked),
        "acknowledged session B after restart\n{}",
        report()
    );
    let res = api.patch(&b_loc, b_acked, &b_data[b_acked..600_000]).await;
    assert_eq!(res.status().as_u16(), 202, "PATCH B after restart");
    let b_loc = common::location(&res);
    let res = api
        .finish_upload(&b_loc, &sha256(&b_data), &b_data[600_000..])
        .await;
    assert_eq!(
        res.status().as_u16(),
        201,
        "PUT B after restart\n{}",
        report()
    );
    api.assert_blob(REPO, &b_data).await;

    // Session A was interrupted mid-PATCH: it resumes from the offset the registry reports
    // (with at least the acknowledged bytes kept), or it is cleanly unknown.
    match api.upload_offset(&a_loc).await {
        None => {
            let res = api.patch(&a_loc, a_acked, b"more").await;
            assert_eq!(res.status().as_u16(), 404, "PATCH to an unknown session");
            let res = api.finish_upload(&a_loc, &sha256(&a_data), &[]).await;
            assert_eq!(res.status().as_u16(), 404, "PUT to an unknown session");
            eprintln!("interrupted session A is unknown after restart");
        }
        Some(offset) => {
            eprintln!("interrupted session A resumes at {offset}");
            assert!(
                (a_acked..=a_data.len()).contains(&offset),
                "session A resumes at {offset}, acknowledged {a_acked}\n{}",
                report()
            );
            let mid = offset + (a_data.len() - offset) / 2;
            let res = api.patch(&a_loc, offset, &a_data[offset..mid]).await;
            assert_eq!(
                res.status().as_u16(),
                202,
                "PATCH A after restart\n{}",
                report()
            );
            let a_loc = common::location(&res);
            let res = api
                .finish_upload(&a_loc, &sha256(&a_data), &a_data[mid..])
                .await;
            assert_eq!(
                res.status().as_u16(),
                201,
                "PUT A after restart: the resumed bytes must hash to the whole blob\n{}",
                report()
            );
            api.assert_blob(REPO, &a_data).await;
        }
    }

    // The restarted registry still takes new pushes.
    let fresh = random_bytes(s ^ 0xF, 10_000);
    api.push_blob(REPO, &fresh).await;
    api.assert_blob(REPO, &fresh).await;
    let (status, _, body) = api.get("/v2/_catalog").await;
    assert_eq!(status, 200);
    let catalog: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        catalog["repositories"]
            .as_array()
            .is_some_and(|r| r.iter().any(|n| n == REPO)),
        "catalog lists {REPO}: {catalog}"
    );
}

/// Total size of the files under `dir`.
fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
