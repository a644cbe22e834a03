//! Operations of the binary: `/healthz`, `/readyz` and `/metrics` next to `/v2/`,
//! `--log-format json` (every line parses; pushes and pulls are events with repository,
//! digest, size and duration), and webhooks configured in the TOML file.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::{Api, seed, sha256, tempdir};

/// `registry serve` with extra arguments, plain HTTP, stdout collected line by line.
struct Running {
    child: Child,
    base: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn start(data: &Path, extra: &[&str]) -> Running {
        let mut cmd = common::registry_command();
        cmd.env_remove("REGISTRY_TLS_CERT")
            .env_remove("REGISTRY_TLS_KEY")
            .env_remove("REGISTRY_LOG_FORMAT")
            .env_remove("REGISTRY_WEBHOOK_URL")
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--storage")
            .arg(data.join("blobs"))
            .arg("--metadata")
            .arg(data.join("registry.db"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let l = lines.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let addr: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect();
                    let _ = tx.send(addr);
                }
                l.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("registry reports its address");
        Running {
            child,
            base: format!("http://{addr}"),
            lines,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| v.parse::<f64>().unwrap())
        })
        .sum()
}

async fn push_image(api: &Api, repo: &str, tag: &str) -> (String, Vec<u8>, Vec<u8>) {
    let layer = common::random_bytes(seed(), 40_000);
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer_digest = api.push_blob(repo, &layer).await;
    let config_digest = api.push_blob(repo, &config).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap();
    api.put_manifest(
        repo,
        tag,
        "application/vnd.oci.image.manifest.v1+json",
        &manifest,
    )
    .await;
    (sha256(&manifest), manifest, layer)
}

#[tokio::test]
async fn json_logs_events_probes_and_metrics() {
    let dir = tempdir();
    let server = Running::start(&dir.path().join("data"), &["--log-format", "json"]);
    let api = Api::new(&server.base);

    let (status, _, body) = api.get("/healthz").await;
    assert_eq!(status, 200);
    let (status, _, body2) = api.get("/readyz").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body2));
    let ready: serde_json::Value = serde_json::from_slice(&body2).unwrap();
    assert_eq!(ready["status"], "ready");
    assert!(!body.is_empty());

    let (digest, manifest, layer) = push_image(&api, "ops/app", "v1").await;
    let (status, _, got) = api.get("/v2/ops/app/manifests/v1").await;
    assert_eq!((status, got.len()), (200, manifest.len()));
    let layer_digest = sha256(&layer);
    let (status, _, got) = api.get(&format!("/v2/ops/app/blobs/{layer_digest}")).await;
    assert_eq!((status, got.len()), (200, layer.len()));

    let (status, headers, text) = api.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(text).unwrap();
    let requests = "registry_http_requests_total";
    assert!(metric(&text, requests, &[("route", "manifest"), ("status", "201")]) >= 1.0);
    assert!(metric(&text, requests, &[("route", "blob"), ("status", "200")]) >= 1.0);
    assert!(
        metric(
            &text,
            "registry_http_response_bytes_total",
            &[("route", "blob")]
        ) >= layer.len() as f64
    );
    assert!(text.contains("registry_gc_queue_length "), "{text}");
    assert!(text.contains("registry_uploads_open "), "{text}");
    // Probes and scrapes are not API requests.
    assert_eq!(metric(&text, requests, &[("route", "other")]), 0.0);

    // Events are logged when the exchange completes; a blob pull when its body is sent.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (lines, events) = loop {
        let lines = server.lines();
        let events: Vec<serde_json::Value> = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "registry::events")
            .collect();
        let blob_pulled = events
            .iter()
            .any(|e| e["action"] == "pull" && e["target_kind"] == "blob");
        if blob_pulled || Instant::now() > deadline {
            break (lines, events);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Every line is one JSON object with the usual fields.
    assert!(!lines.is_empty());
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("finished processing request")),
        "request log lines"
    );

    let push = events
        .iter()
        .find(|e| e["action"] == "push" && e["target_kind"] == "manifest")
        .unwrap_or_else(|| panic!("no manifest push event in {events:?}"));
    assert_eq!(push["repository"], "ops/app");
    assert_eq!(push["digest"], digest);
    assert_eq!(push["size"], manifest.len());
    assert_eq!(push["tag"], "v1");
    assert_eq!(push["level"], "INFO");
    assert!(push["duration_ms"].is_u64());
    let pull = events
        .iter()
        .find(|e| e["action"] == "pull" && e["target_kind"] == "manifest")
        .unwrap();
    assert_eq!(pull["digest"], digest);
    assert_eq!(pull["size"], manifest.len());
    let blob = events
        .iter()
        .find(|e| e["action"] == "pull" && e["target_kind"] == "blob")
        .unwrap();
    assert_eq!(blob["digest"], layer_digest);
    assert_eq!(blob["size"], layer.len());
    assert!(events.iter().any(|e| e["action"] == "push"
        && e["target_kind"] == "blob"
        && e["digest"] == layer_digest
        && e["size"] == layer.len()));
}

#[tokio::test]
async fn webhooks_from_the_config_file() {
    // A receiver that records each envelope.
    let received: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let r = received.clone();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |body: axum::body::Bytes| {
            let r = r.clone();
            async move {
                if let Ok(v) = serde_json::from_slice(&body) {
                    r.lock().unwrap().push(v);
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempdir();
    let config = dir.path().join("registry.toml");
    std::fs::write(
        &config,
        format!("webhook_url = [\"{hook}\"]\nwebhook_timeout = \"2s\"\n"),
    )
    .unwrap();
    let server = Running::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let api = Api::new(&server.base);
    let (digest, _, _) = push_image(&api, "hooked/app", "latest").await;
    let res = api
        .http
        .delete(api.url("/v2/hooked/app/manifests/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events: Vec<serde_json::Value> = received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|env| env["events"].as_array().cloned().unwrap_or_default())
            .collect();
        let pushed = events.iter().any(|e| {
            e["action"] == "push"
                && e["target"]["digest"] == digest
                && e["target"]["tag"] == "latest"
                && e["target"]["repository"] == "hooked/app"
        });
        let deleted = events.iter().any(|e| {
            e["action"] == "delete"
                && e["target"]["tag"] == "latest"
                && e["target"]["repository"] == "hooked/app"
        });
        if pushed && deleted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "webhook events missing: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn bad_ops_settings_are_refused() {
    let dir = tempdir();
    for (args, needle) in [
        (&["--log-format", "xml"][..], "log format"),
        (&["--webhook-url", "ftp://x/y"][..], "webhook URL"),
        (&["--tls-key", "/nonexistent.key"][..], "tls-cert"),
    ] {
        let out = common::registry_command()
            .arg("serve")
            .args(args)
            .arg("--storage")
            .arg(dir.path().join("blobs"))
            .arg("--metadata")
            .arg(dir.path().join("r.db"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
