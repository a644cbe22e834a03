//! Upload-session settings of `registry serve`, against the real binary: past
//! `--max-uploads` starting a session is 429 TOOMANYREQUESTS until one ends, and an idle
//! session is removed after `--upload-expiry`.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Api, Server, registry_command, tempdir};

fn start(data: &Path, extra: &[&str]) -> Server {
    let mut cmd = registry_command();
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--storage")
        .arg(data.join("blobs"))
        .arg("--metadata")
        .arg(data.join("registry.db"))
        .args(extra);
    Server::spawn(cmd)
}

#[tokio::test]
async fn max_uploads_refuses_sessions_past_the_limit() {
    let dir = tempdir();
    let server = start(dir.path(), &["--max-uploads", "2"]);
    let api = Api::new(&server.base);
    let first = api.start_upload("limit/a").await;
    let _second = api.start_upload("limit/b").await;
    let res = api
        .http
        .post(api.url("/v2/limit/c/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 429);
    assert!(res.text().await.unwrap().contains("TOOMANYREQUESTS"));

    // Finishing one frees a place.
    let data = common::random_bytes(common::seed(), 1000);
    let done = api
        .finish_upload(&first, &common::sha256(&data), &data)
        .await;
    assert_eq!(done.status().as_u16(), 201);
    api.start_upload("limit/c").await;
}

#[tokio::test]
async fn an_idle_upload_session_expires() {
    let dir = tempdir();
    let server = start(dir.path(), &["--upload-expiry", "1s"]);
    let api = Api::new(&server.base);
    let loc = api.start_upload("expiry/repo").await;
    let res = api.patch(&loc, 0, b"some bytes").await;
    assert_eq!(res.status().as_u16(), 202);
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.upload_offset(&loc).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "session still open 20 s after a 1 s expiry\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
