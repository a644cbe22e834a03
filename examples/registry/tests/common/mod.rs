//! Shared by the integration tests: runs the real `registry` binary on a free loopback
//! port, and speaks plain HTTP to it.

#![allow(dead_code)]

pub mod distribution;
pub mod import_flow;
pub mod oci_layout;
pub mod services;
pub mod skopeo_flow;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_registry");

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Deterministic-per-seed filler bytes; seeds come from [`seed`] so runs differ.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A fresh seed: time and a counter, so parallel tests and repeated runs differ.
pub fn seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos
        ^ (COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15))
        ^ (u64::from(std::process::id()) << 32)
}

/// A `registry` command with no `REGISTRY_*` variables inherited from the caller.
pub fn registry_command() -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "REGISTRY_LISTEN",
        "REGISTRY_STORAGE",
        "REGISTRY_METADATA",
        "REGISTRY_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

/// `registry serve` on a free port over `data` (fs blobs + SQLite), with `extra` flags and
/// none of the access settings inherited from the environment.
pub fn serve_command(data: &Path, extra: &[&str]) -> Command {
    let mut cmd = registry_command();
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--storage")
        .arg(format!("fs://{}", data.join("blobs").display()))
        .arg("--metadata")
        .arg(format!("sqlite://{}", data.join("registry.db").display()))
        .args(extra);
    for var in [
        "REGISTRY_HTPASSWD",
        "REGISTRY_TOKEN_REALM",
        "REGISTRY_TOKEN_SERVICE",
        "REGISTRY_TOKEN_ISSUER",
        "REGISTRY_TOKEN_KEY",
        "REGISTRY_ACCESS_POLICY",
        "REGISTRY_READ_ONLY",
        "REGISTRY_IMMUTABLE_TAGS",
        "REGISTRY_MAX_BLOB_SIZE",
        "REGISTRY_UI",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// A running `registry serve`. Killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// `registry serve` on a free port with blobs in `data/blobs` and SQLite in
    /// `data/registry.db`.
    pub fn start(data: &Path) -> Server {
        let mut cmd = registry_command();
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--storage")
            .arg(format!("fs://{}", data.join("blobs").display()))
            .arg("--metadata")
            .arg(format!("sqlite://{}", data.join("registry.db").display()));
        Server::spawn(cmd)
    }

    /// Spawns `cmd` (a `registry serve ...`) and waits for its "listening on" line.
    pub fn spawn(mut cmd: Command) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the registry binary");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        drain(stdout, log.clone(), Some(tx));
        drain(stderr, log.clone(), None);

        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => break addr,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the process is exiting. Give stderr a moment.
                    std::thread::sleep(Duration::from_millis(200));
                    let status = child.wait().ok();
                    panic!(
                        "registry exited before listening ({status:?}); output:\n{}",
                        log.lock().map(|l| l.clone()).unwrap_or_default()
                    );
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "registry did not report its address within 60 s; output:\n{}",
                    log.lock().map(|l| l.clone()).unwrap_or_default()
                );
            }
        };
        Server {
            child,
            base: format!("http://{addr}"),
            addr,
            log,
        }
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (a clean shutdown: requests in flight finish, queued work is written),
    /// then waits up to 30 s for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        // The shell's builtin `kill`: /bin/kill (procps) is not on every minimal system.
        let sent = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.pid())])
            .status()
            .expect("run sh");
        assert!(sent.success(), "kill -TERM {}", self.pid());
        self.wait_timeout(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("registry still running 30 s after SIGTERM:\n{}", self.log()))
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copies a pipe into `log`; the first "listening on http://ADDR" line is sent on `tx`.
fn drain(
    pipe: impl Read + Send + 'static,
    log: Arc<Mutex<String>>,
    tx: Option<mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        let mut tx = tx;
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening on http://").nth(1)
                && let Some(sender) = tx.take()
            {
                let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                let _ = sender.send(addr);
            }
            if let Ok(mut l) = log.lock() {
                l.push_str(&line);
                l.push('\n');
            }
        }
    });
}

/// A temporary folder for one test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("registry-test-")
        .tempdir()
        .expect("create a temporary folder")
}

/// The path inside a temporary folder.
pub fn path_in(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// A plain-HTTP client for the distribution API.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(base: &str) -> Api {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("build an HTTP client");
        Api {
            http,
            base: base.to_string(),
        }
    }

    pub fn url(&self, path_or_location: &str) -> String {
        if path_or_location.starts_with("http://") || path_or_location.starts_with("https://") {
            path_or_location.to_string()
        } else {
            format!("{}{}", self.base, path_or_location)
        }
    }

    /// Pushes `data` in one request (`POST ?digest=`), falling back to POST then PUT if the
    /// registry answers the POST with a session. Returns the digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        let res = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .expect("POST blob");
        match res.status().as_u16() {
            201 => {}
            202 => {
                let loc = location(&res);
                let res = self
                    .http
                    .put(with_query(&self.url(&loc), &format!("digest={digest}")))
                    .header("Content-Type", "application/octet-stream")
                    .body(data.to_vec())
                    .send()
                    .await
                    .expect("PUT blob");
                assert_eq!(res.status().as_u16(), 201, "PUT blob {digest}");
            }
            s => panic!("POST blob {digest}: status {s}: {:?}", res.text().await),
        }
        digest
    }

    /// Pushes `data` as POST, PATCH per chunk, PUT `?digest=`. Returns the digest.
    pub async fn push_blob_chunked(&self, repo: &str, data: &[u8], chunk: usize) -> String {
        let digest = sha256(data);
        let mut loc = self.start_upload(repo).await;
        let mut offset = 0;
        for part in data.chunks(chunk.max(1)) {
            let res = self.patch(&loc, offset, part).await;
            assert_eq!(res.status().as_u16(), 202, "PATCH at {offset}");
            loc = location(&res);
            offset += part.len();
        }
        let res = self.finish_upload(&loc, &digest, &[]).await;
        assert_eq!(res.status().as_u16(), 201, "PUT {digest}");
        digest
    }

    /// `POST /v2/<repo>/blobs/uploads/`: the session's Location.
    pub async fn start_upload(&self, repo: &str) -> String {
        let res = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .send()
            .await
            .expect("POST upload");
        assert_eq!(res.status().as_u16(), 202, "POST /v2/{repo}/blobs/uploads/");
        location(&res)
    }

    /// `PATCH` one chunk at `offset`.
    pub async fn patch(&self, loc: &str, offset: usize, data: &[u8]) -> reqwest::Response {
        let end = (offset + data.len()).saturating_sub(1);
        self.http
            .patch(self.url(loc))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{offset}-{end}"))
            .header("Content-Length", data.len().to_string())
            .body(data.to_vec())
            .send()
            .await
            .expect("PATCH")
    }

    /// `PUT <loc>?digest=` with an optional last chunk.
    pub async fn finish_upload(&self, loc: &str, digest: &str, last: &[u8]) -> reqwest::Response {
        self.http
            .put(with_query(&self.url(loc), &format!("digest={digest}")))
            .header("Content-Type", "application/octet-stream")
            .body(last.to_vec())
            .send()
            .await
            .expect("PUT upload")
    }

    /// `GET <loc>`: the session's acknowledged offset, or `None` if it is unknown (404).
    pub async fn upload_offset(&self, loc: &str) -> Option<usize> {
        // A pooled connection the server closed after refusing a request whose body it
        // did not read fails on reuse; one retry gets a fresh connection.
        let res = match self.http.get(self.url(loc)).send().await {
            Ok(res) => res,
            Err(_) => self
                .http
                .get(self.url(loc))
                .send()
                .await
                .expect("GET upload"),
        };
        match res.status().as_u16() {
            404 => None,
            204 => {
                let range = res
                    .headers()
                    .get("Range")
                    .and_then(|v| v.to_str().ok())
                    .expect("upload status has a Range header")
                    .to_string();
                Some(parse_range_end(&range))
            }
            s => panic!("GET {loc}: unexpected status {s}"),
        }
    }

    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
        let res = self
            .http
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("Content-Type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("PUT manifest");
        let status = res.status().as_u16();
        let digest = res
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        assert_eq!(
            status,
            201,
            "PUT manifest {repo}:{reference}: {:?}",
            res.text().await
        );
        if let Some(d) = digest {
            assert_eq!(d, sha256(body), "Docker-Content-Digest of the manifest");
        }
    }

    pub async fn get(&self, path: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let res = self.http.get(self.url(path)).send().await.expect("GET");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.bytes().await.expect("GET body").to_vec();
        (status, headers, body)
    }

    pub async fn head(&self, path: &str) -> (u16, reqwest::header::HeaderMap) {
        let res = self.http.head(self.url(path)).send().await.expect("HEAD");
        (res.status().as_u16(), res.headers().clone())
    }

    /// Asserts `GET /v2/<repo>/blobs/<digest>` returns exactly `data`.
    pub async fn assert_blob(&self, repo: &str, data: &[u8]) {
        let digest = sha256(data);
        let (status, headers, body) = self.get(&format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(status, 200, "GET blob {digest}");
        assert_eq!(body.len(), data.len(), "length of blob {digest}");
        assert!(body == data, "bytes of blob {digest} differ");
        assert_eq!(sha256(&body), digest);
        if let Some(d) = headers.get("Docker-Content-Digest") {
            assert_eq!(d.to_str().ok(), Some(digest.as_str()));
        }
        let (status, headers) = self.head(&format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(status, 200, "HEAD blob {digest}");
        let len = headers
            .get("Content-Length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        assert_eq!(len, Some(data.len()), "HEAD Content-Length of {digest}");
    }

    /// Asserts `GET /v2/<repo>/manifests/<reference>` returns exactly `data`.
    pub async fn assert_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        data: &[u8],
    ) {
        let res = self
            .http
            .get(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("Accept", media_type)
            .send()
            .await
            .expect("GET manifest");
        assert_eq!(
            res.status().as_u16(),
            200,
            "GET manifest {repo}:{reference}"
        );
        let headers = res.headers().clone();
        let body = res.bytes().await.expect("manifest body");
        assert!(
            body.as_ref() == data,
            "manifest bytes of {repo}:{reference} differ"
        );
        assert_eq!(
            headers
                .get("Docker-Content-Digest")
                .and_then(|v| v.to_str().ok()),
            Some(sha256(data).as_str()),
            "Docker-Content-Digest of {repo}:{reference}"
        );
        assert_eq!(
            headers.get("Content-Type").and_then(|v| v.to_str().ok()),
            Some(media_type),
            "Content-Type of {repo}:{reference}"
        );
    }
}

pub fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("Location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{} {} has no Location header", res.status(), res.url()))
        .to_string()
}

pub fn with_query(url: &str, query: &str) -> String {
    if url.contains('?') {
        format!("{url}&{query}")
    } else {
        format!("{url}?{query}")
    }
}

/// `0-<end>` (inclusive) to the number of bytes received. `0-0` is ambiguous in the spec
/// (nothing or one byte); callers only ask when they expect more than one byte.
pub fn parse_range_end(range: &str) -> usize {
    let end = range
        .trim()
        .strip_prefix("bytes=")
        .unwrap_or(range.trim())
        .split_once('-')
        .and_then(|(_, end)| end.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("malformed Range header {range:?}"));
    end + 1
}
