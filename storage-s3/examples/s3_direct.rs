//! The S3 server alone, as the ceiling `scripts/bench-s3.sh` compares the registry with:
//! the same three kinds of transfer the registry benchmark makes, sent straight to the
//! S3 endpoint with the HTTP client the store uses (`reqwest`, requests signed by
//! `rusty-s3`), so neither side pays for starting a process per request.
//!
//! ```text
//! s3_direct SCENARIO --kind put|multipart|get --mib M --count N --concurrency C
//!           [--chunk-mib K] [--distinct D] [--rep R] [--server LABEL] [--prefix P]
//! ```
//!
//! - `put`: N distinct random objects of M MiB, one `PUT` each (the registry's monolithic
//!   push).
//! - `multipart`: N objects, each a multipart upload of K MiB parts sent one after another
//!   (the registry's chunked push of K MiB `PATCH`es).
//! - `get`: D objects stored untimed, then N `GET`s of them in turn, every byte read.
//!
//! C transfers run at once. The endpoint, bucket, credentials and region come from
//! `S3_ENDPOINT`, `S3_BUCKET`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_REGION`
//! (what `scripts/seaweedfs.sh start` prints). Prints one JSON line in `registry-bench`'s
//! result format; wall-clock seconds of the timed part, like `registry-bench`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use rusty_s3::actions::{CompleteMultipartUpload, CreateMultipartUpload, UploadPart};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

type Error = Box<dyn std::error::Error + Send + Sync>;

const MIB: usize = 1024 * 1024;
const SIGN_FOR: Duration = Duration::from_secs(3600);

struct Args {
    scenario: String,
    kind: String,
    mib: usize,
    count: usize,
    concurrency: usize,
    chunk_mib: usize,
    distinct: usize,
    rep: u32,
    server: String,
    prefix: String,
}

fn parse_args() -> Result<Args, Error> {
    let mut it = std::env::args().skip(1);
    let scenario = it
        .next()
        .ok_or("usage: s3_direct SCENARIO --kind ... (see the source)")?;
    let mut a = Args {
        scenario,
        kind: String::new(),
        mib: 64,
        count: 4,
        concurrency: 1,
        chunk_mib: 8,
        distinct: 4,
        rep: 1,
        server: "seaweedfs".into(),
        prefix: format!("direct-{}", uuid::Uuid::new_v4().simple()),
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--kind" => a.kind = value.clone(),
            "--mib" => a.mib = number()?,
            "--count" => a.count = number()?,
            "--concurrency" => a.concurrency = number()?.max(1),
            "--chunk-mib" => a.chunk_mib = number()?.max(5),
            "--distinct" => a.distinct = number()?.max(1),
            "--rep" => a.rep = value.parse().map_err(|e| format!("--rep {value}: {e}"))?,
            "--server" => a.server = value.clone(),
            "--prefix" => a.prefix = value.clone(),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(a)
}

struct S3 {
    http: reqwest::Client,
    bucket: Bucket,
    creds: Credentials,
}

impl S3 {
    fn from_env() -> Result<S3, Error> {
        let var = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set"));
        let bucket = Bucket::new(
            var("S3_ENDPOINT")?.parse()?,
            UrlStyle::Path,
            var("S3_BUCKET")?,
            var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
        )?;
        let creds = Credentials::new(var("AWS_ACCESS_KEY_ID")?, var("AWS_SECRET_ACCESS_KEY")?);
        Ok(S3 {
            http: reqwest::Client::new(),
            bucket,
            creds,
        })
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<(), Error> {
        let url =
            rusty_s3::actions::PutObject::new(&self.bucket, Some(&self.creds), key).sign(SIGN_FOR);
        let res = self.http.put(url).body(body).send().await?;
        ok(res, "PUT").await.map(drop)
    }

    async fn multipart(&self, key: &str, body: Bytes, part: usize) -> Result<(), Error> {
        let url = CreateMultipartUpload::new(&self.bucket, Some(&self.creds), key).sign(SIGN_FOR);
        let text = ok(self.http.post(url).send().await?, "CreateMultipartUpload")
            .await?
            .text()
            .await?;
        let created = CreateMultipartUpload::parse_response(&text)?;
        let id = created.upload_id();
        let mut etags = Vec::new();
        for (i, chunk) in body.chunks(part).enumerate() {
            let number = u16::try_from(i + 1)?;
            let url =
                UploadPart::new(&self.bucket, Some(&self.creds), key, number, id).sign(SIGN_FOR);
            let res = self
                .http
                .put(url)
                .body(body.slice_ref(chunk))
                .send()
                .await?;
            let res = ok(res, "UploadPart").await?;
            let etag = res
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .ok_or("UploadPart: no ETag")?
                .to_string();
            etags.push(etag);
        }
        let action = CompleteMultipartUpload::new(
            &self.bucket,
            Some(&self.creds),
            key,
            id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGN_FOR);
        let res = self.http.post(url).body(action.body()).send().await?;
        ok(res, "CompleteMultipartUpload").await.map(drop)
    }

    async fn get(&self, key: &str) -> Result<u64, Error> {
        let url =
            rusty_s3::actions::GetObject::new(&self.bucket, Some(&self.creds), key).sign(SIGN_FOR);
        let mut res = ok(self.http.get(url).send().await?, "GET").await?;
        let mut n = 0u64;
        while let Some(chunk) = res.chunk().await? {
            n += chunk.len() as u64;
        }
        Ok(n)
    }
}

async fn ok(res: reqwest::Response, op: &str) -> Result<reqwest::Response, Error> {
    if res.status().is_success() {
        return Ok(res);
    }
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    Err(format!("{op}: HTTP {status}: {body}").into())
}

/// `len` pseudo-random bytes (splitmix64), distinct per seed: nothing compresses or dedups.
fn random_blob(seed: u64, len: usize) -> Bytes {
    let mut state = seed ^ (uuid::Uuid::new_v4().as_u128() as u64);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn percentile_ms(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64) * p / 100.0).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len().max(1)) - 1)
        .map_or(0.0, |s| s * 1000.0)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = parse_args()?;
    let s3 = Arc::new(S3::from_env()?);
    let size = args.mib * MIB;
    let prefix = args.prefix.clone();
    let (blobs, keys): (Vec<Bytes>, Vec<String>) = match args.kind.as_str() {
        "put" | "multipart" => (
            (0..args.count)
                .map(|i| random_blob(i as u64, size))
                .collect(),
            (0..args.count).map(|i| format!("{prefix}/{i}")).collect(),
        ),
        "get" => {
            let keys: Vec<String> = (0..args.distinct)
                .map(|i| format!("{prefix}/pull-{i}"))
                .collect();
            for (i, key) in keys.iter().enumerate() {
                s3.put(key, random_blob(i as u64, size)).await?;
            }
            (Vec::new(), keys)
        }
        other => return Err(format!("--kind {other:?}: put, multipart or get").into()),
    };
    let blobs = Arc::new(blobs);
    let keys = Arc::new(keys);
    let kind = args.kind.clone();
    let part = args.chunk_mib * MIB;
    let t0 = Instant::now();
    let mut latencies: Vec<(f64, u64)> = stream::iter(0..args.count)
        .map(|i| {
            let (s3, blobs, keys, kind) = (s3.clone(), blobs.clone(), keys.clone(), kind.clone());
            async move {
                let t = Instant::now();
                let key = &keys[i % keys.len()];
                let bytes = match kind.as_str() {
                    "put" => {
                        s3.put(key, blobs[i].clone()).await?;
                        blobs[i].len() as u64
                    }
                    "multipart" => {
                        s3.multipart(key, blobs[i].clone(), part).await?;
                        blobs[i].len() as u64
                    }
                    _ => s3.get(key).await?,
                };
                Ok::<_, Error>((t.elapsed().as_secs_f64(), bytes))
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect()
        .await?;
    let secs = t0.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.0.total_cmp(&b.0));
    let lat: Vec<f64> = latencies.iter().map(|l| l.0).collect();
    let bytes: u64 = latencies.iter().map(|l| l.1).sum();
    let line = serde_json::json!({
        "kind": "result",
        "scenario": args.scenario,
        "server": args.server,
        "rep": args.rep,
        "ops": lat.len(),
        "bytes": bytes,
        "secs": secs,
        "ops_per_s": lat.len() as f64 / secs,
        "mib_per_s": bytes as f64 / MIB as f64 / secs,
        "p50_ms": percentile_ms(&lat, 50.0),
        "p99_ms": percentile_ms(&lat, 99.0),
        "server_cpu_s": null,
        "cpu_ms_per_op": null,
        "server_rss_hwm_kib": null,
        "errors": 0,
        "concurrency": args.concurrency,
        "blob_mib": args.mib,
    });
    println!("{line}");
    Ok(())
}
