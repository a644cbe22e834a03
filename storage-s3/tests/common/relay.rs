//! A TCP proxy between a store and SeaweedFS that sees each request's head: it counts the
//! requests a rule matches, and can drop the connection at one of them, as if the process
//! had been killed right there.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::Duration;

use storage_s3::S3BlobStore;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One HTTP request's head, as the proxy saw it.
pub struct Head {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub type Rule = Box<dyn Fn(&Head) -> bool + Send + Sync>;

/// A TCP proxy to SeaweedFS that drops the connection, without forwarding it, at the
/// `nth` request (counting from 1) that `rule` matches, and every request after it: the
/// process is dead from there on, whatever it would have sent next.
pub struct Cutter {
    pub url: String,
    cuts: Arc<AtomicUsize>,
    seen: Arc<AtomicUsize>,
}

impl Cutter {
    pub async fn start(nth: usize, rule: Rule) -> Cutter {
        Self::with(nth, rule, true).await
    }

    /// Drops only that one request: a connection that failed, in a process that lives on.
    pub async fn once(nth: usize, rule: Rule) -> Cutter {
        Self::with(nth, rule, false).await
    }

    async fn with(nth: usize, rule: Rule, dies: bool) -> Cutter {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy listens");
        let addr = listener.local_addr().expect("proxy address");
        let upstream = super::server()
            .endpoint
            .trim_start_matches("http://")
            .to_string();
        let rule = Arc::new(rule);
        let seen = Arc::new(AtomicUsize::new(0));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (counter, matched) = (Arc::clone(&cuts), Arc::clone(&seen));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, rule, seen, cuts) = (
                    upstream.clone(),
                    Arc::clone(&rule),
                    Arc::clone(&matched),
                    Arc::clone(&counter),
                );
                tokio::spawn(async move {
                    let _ = relay(client, &upstream, nth, dies, &rule, &seen, &cuts).await;
                });
            }
        });
        Cutter {
            url: format!("http://{addr}"),
            cuts,
            seen,
        }
    }

    /// Counts the requests `rule` matches; cuts none.
    pub async fn counting(rule: Rule) -> Cutter {
        Self::with(usize::MAX, rule, false).await
    }

    /// Requests the rule matched so far.
    pub fn matched(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }

    pub fn cut(&self) -> bool {
        self.cuts.load(Ordering::SeqCst) > 0
    }
}

/// Forwards requests one by one (their heads parsed, their bodies counted by
/// `Content-Length`) and answers as they come, until the cut.
async fn relay(
    client: TcpStream,
    upstream: &str,
    nth: usize,
    dies: bool,
    rule: &Rule,
    seen: &AtomicUsize,
    cuts: &AtomicUsize,
) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    let (server_read, mut server_write) = server.into_split();
    let (client_read, client_write) = client.into_split();
    let answers = tokio::spawn(async move {
        let (mut from, mut to) = (server_read, client_write);
        tokio::io::copy(&mut from, &mut to).await
    });
    let mut reader = BufReader::new(client_read);
    loop {
        let mut raw = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                answers.abort();
                return Ok(());
            }
            raw.extend_from_slice(line.as_bytes());
            if line == "\r\n" {
                break;
            }
        }
        let text = String::from_utf8_lossy(&raw).to_string();
        let mut lines = text.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split(' ');
        let head = Head {
            method: first.next().unwrap_or_default().to_string(),
            target: first.next().unwrap_or_default().to_string(),
            headers: lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .collect(),
        };
        let dead = dies && cuts.load(Ordering::SeqCst) > 0;
        if dead || (rule(&head) && seen.fetch_add(1, Ordering::SeqCst) + 1 == nth) {
            cuts.fetch_add(1, Ordering::SeqCst);
            answers.abort();
            return Ok(());
        }
        let len: u64 = head
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        server_write.write_all(&raw).await?;
        let mut body = (&mut reader).take(len);
        tokio::io::copy(&mut body, &mut server_write).await?;
    }
}

/// A store under `prefix` that talks through `cutter`, with no retries (a retry would
/// resend the cut request).
pub fn through(cutter: &Cutter, prefix: &str) -> S3BlobStore {
    let server = super::server();
    let cfg = storage_s3::S3Config::from_url(&format!(
        "s3://{}/{prefix}?endpoint={}&region={}",
        server.bucket, cutter.url, server.region
    ))
    .expect("proxy URL parses")
    .with_credentials(storage_s3::Credentials::new(
        &server.access_key,
        &server.secret_key,
    ))
    .with_max_retries(0)
    .with_timeouts(Duration::from_secs(2), Duration::from_secs(10))
    .with_part_size(5 << 20);
    S3BlobStore::new(cfg).expect("store")
}

/// A store on the same prefix, straight to SeaweedFS: the process after the restart.
pub fn direct(prefix: &str) -> S3BlobStore {
    S3BlobStore::new(super::config_on(super::server()).with_prefix(prefix)).expect("store")
}

/// A fresh prefix, so a test sees only its own objects.
pub fn prefix() -> String {
    format!("crash-{}", uuid::Uuid::new_v4().simple())
}

/// A request to a key ending so, with the method.
pub fn request(method: &'static str, key_end: &'static str) -> Rule {
    Box::new(move |h: &Head| {
        h.method == method && h.target.split('?').next().unwrap_or("").ends_with(key_end)
    })
}

/// A part upload (`UploadPart`).
pub fn part_upload() -> Rule {
    Box::new(|h: &Head| h.method == "PUT" && h.target.contains("partNumber="))
}
