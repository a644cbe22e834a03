//! [`S3Config`]: where the bucket is and how to talk to it.

use std::time::Duration;

use storage_traits::StorageError;
use url::Url;

use crate::credentials::{self, Credentials, Env, ProcessEnv};
use crate::error::config;

/// S3's smallest part (every part of a multipart upload but the last must be this large).
pub(crate) const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// S3's largest part, and the largest range one `UploadPartCopy` may copy.
pub(crate) const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
const DEFAULT_UPLOAD_CONCURRENCY: usize = 4;
/// The most any one write buffers; larger parts would make concurrent uploads costly.
const MAX_BUFFERED_PART_SIZE: usize = 256 * 1024 * 1024;
const DEFAULT_REGION: &str = "us-east-1";
const DEFAULT_SINGLE_PUT_MAX: u64 = 1024 * 1024 * 1024;

/// Everything [`S3BlobStore::new`](crate::S3BlobStore::new) needs.
///
/// Build it from a URL with [`S3Config::from_url`], or with [`S3Config::new`] and the
/// `with_*` setters. Credentials not given explicitly are read from the environment and the
/// shared AWS files when the store is created (see [`Credentials`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct S3Config {
    /// The bucket's name.
    pub bucket: String,
    /// Key prefix under which this store keeps everything; `/`-separated
    /// `[A-Za-z0-9._-]` segments, may be empty.
    pub prefix: String,
    /// A custom endpoint (MinIO, SeaweedFS, Ceph...); `None` is AWS's regional endpoint.
    pub endpoint: Option<Url>,
    /// `None`: `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's region, else `us-east-1`.
    pub region: Option<String>,
    /// Bucket in the path (`endpoint/bucket/key`) rather than the host name. Always on for
    /// custom endpoints; AWS uses virtual-hosted style unless this is set.
    pub path_style: bool,
    /// `None`: from the environment or the shared files (see [`Credentials`]).
    pub credentials: Option<Credentials>,
    /// The profile of the shared files to use, instead of `AWS_PROFILE` or `default`.
    pub profile: Option<String>,
    /// The size of the multipart upload parts a write sends (8 MiB by default, at least
    /// 5 MiB; a write's last part may be up to 5 MiB longer). A blob may have at most
    /// 10,000 parts, so this bounds the blob size (78 GiB with 8 MiB).
    pub part_size: usize,
    /// Parts of one write sent at once (4 by default, at least 1). A write holds up to this
    /// many parts in memory while they are sent, plus the one it is filling.
    pub upload_concurrency: usize,
    /// Longest wait for a connection to the endpoint to open.
    pub connect_timeout: Duration,
    /// Longest wait for any single read from a connection (a stalled server is an error,
    /// never a hang). It also bounds the pause between two reads of a download stream by
    /// its consumer: a download whose reader stalls longer than this fails.
    pub read_timeout: Duration,
    /// Retries of a request that failed to connect or got a 5xx/429 answer, with
    /// exponential backoff and jitter.
    pub max_retries: usize,
    /// Keys per `ListObjectsV2` page (S3's maximum, 1,000, by default).
    pub list_page_size: usize,
    /// The longest blob of known digest and length (a monolithic push) written in one
    /// streamed `PUT` to its data key, rather than through an upload session's multipart
    /// upload (1 GiB by default; at most S3's 5 GiB limit; 0 always uses a session). A
    /// single `PUT` is one request instead of a dozen, but its body cannot be sent again:
    /// a failure fails the push.
    pub single_put_max: u64,
}

/// A URL parameter's value as a number.
fn number(name: &str, value: &str) -> Result<usize, StorageError> {
    value
        .parse()
        .map_err(|_| config(format!("{name}={value:?}: expected a whole number")))
}

impl S3Config {
    /// The defaults for `bucket` on AWS: no prefix, region and credentials from the
    /// environment, 8 MiB parts sent 4 at once.
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Config {
            bucket: bucket.into(),
            prefix: String::new(),
            endpoint: None,
            region: None,
            path_style: false,
            credentials: None,
            profile: None,
            part_size: DEFAULT_PART_SIZE,
            upload_concurrency: DEFAULT_UPLOAD_CONCURRENCY,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            max_retries: 3,
            list_page_size: 1000,
            single_put_max: DEFAULT_SINGLE_PUT_MAX,
        }
    }

    /// Parses `s3://BUCKET[/PREFIX][?endpoint=URL&region=R&path_style=true&profile=P]`, and
    /// `part_size=BYTES`, `upload_concurrency=N` and `single_put_max=BYTES` (see the fields).
    ///
    /// `endpoint` makes the store use path-style addressing against that server (MinIO,
    /// SeaweedFS, Ceph); without it the store talks to AWS. Credentials never come from the
    /// URL (URLs end up in logs): see [`Credentials`].
    pub fn from_url(url: &str) -> Result<Self, StorageError> {
        let parsed = Url::parse(url).map_err(|e| config(format!("{url:?}: {e}")))?;
        if parsed.scheme() != "s3" {
            return Err(config(format!("{url:?}: expected s3://BUCKET/PREFIX")));
        }
        let bucket = parsed.host_str().unwrap_or_default();
        if bucket.is_empty() {
            return Err(config(format!("{url:?}: no bucket name")));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() || parsed.port().is_some() {
            return Err(config(format!(
                "{url:?}: no credentials or port in the URL; the endpoint goes in ?endpoint="
            )));
        }
        let mut cfg = S3Config::new(bucket).with_prefix(parsed.path());
        for (k, v) in parsed.query_pairs() {
            match &*k {
                "endpoint" => {
                    let endpoint =
                        Url::parse(&v).map_err(|e| config(format!("endpoint {v:?}: {e}")))?;
                    cfg = cfg.with_endpoint(endpoint);
                }
                "region" => cfg = cfg.with_region(v),
                "profile" => cfg = cfg.with_profile(v),
                "path_style" => {
                    cfg.path_style = match &*v {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(config(format!(
                                "path_style={v:?}: expected true or false"
                            )));
                        }
                    }
                }
                "part_size" => cfg.part_size = number(&k, &v)?,
                "upload_concurrency" => cfg = cfg.with_upload_concurrency(number(&k, &v)?),
                "single_put_max" => cfg.single_put_max = number(&k, &v)? as u64,
                other => {
                    return Err(config(format!(
                        "{url:?}: unknown parameter {other:?} (known: endpoint, region, profile, \
                         path_style, part_size, upload_concurrency, single_put_max)"
                    )));
                }
            }
        }
        Ok(cfg)
    }

    /// Keeps every key under this prefix (see the field's rules).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// A custom endpoint; turns on path-style addressing.
    pub fn with_endpoint(mut self, endpoint: Url) -> Self {
        self.endpoint = Some(endpoint);
        self.path_style = true;
        self
    }

    /// The region to sign for.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Bucket in the path rather than the host name (on by default for custom endpoints).
    pub fn with_path_style(mut self, path_style: bool) -> Self {
        self.path_style = path_style;
        self
    }

    /// These credentials instead of the environment's or the shared files'.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// This profile of the shared AWS files.
    pub fn with_profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// The size of a multipart upload's parts (see the field).
    pub fn with_part_size(mut self, part_size: usize) -> Self {
        self.part_size = part_size;
        self
    }

    /// Parts of one write sent at once (at least 1).
    pub fn with_upload_concurrency(mut self, parts: usize) -> Self {
        self.upload_concurrency = parts.max(1);
        self
    }

    /// The connect and read time limits (see the fields).
    pub fn with_timeouts(mut self, connect: Duration, read: Duration) -> Self {
        self.connect_timeout = connect;
        self.read_timeout = read;
        self
    }

    /// How often a failed request is retried.
    pub fn with_max_retries(mut self, max_retries: usize) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Keys asked for per listing request.
    pub fn with_list_page_size(mut self, keys: usize) -> Self {
        self.list_page_size = keys;
        self
    }

    /// Sets [`single_put_max`](Self::single_put_max).
    pub fn with_single_put_max(mut self, bytes: u64) -> Self {
        self.single_put_max = bytes;
        self
    }

    /// Fills in what the environment provides and checks the rest.
    pub(crate) fn resolve(&self) -> Result<Resolved, StorageError> {
        self.resolve_with(&ProcessEnv)
    }

    pub(crate) fn resolve_with(&self, env: &dyn Env) -> Result<Resolved, StorageError> {
        if !(MIN_PART_SIZE..=MAX_BUFFERED_PART_SIZE).contains(&self.part_size) {
            return Err(config(format!(
                "part_size {} is outside {MIN_PART_SIZE}..={MAX_BUFFERED_PART_SIZE}",
                self.part_size
            )));
        }
        if self.single_put_max > MAX_PART_SIZE {
            return Err(config(format!(
                "single_put_max {} is past S3's {MAX_PART_SIZE}-byte PUT",
                self.single_put_max
            )));
        }
        if !(1..=1000).contains(&self.list_page_size) {
            return Err(config(format!(
                "list_page_size {} is outside 1..=1000",
                self.list_page_size
            )));
        }
        let profile = self.profile.as_deref();
        let region = match &self.region {
            Some(r) => r.clone(),
            None => credentials::region(env, profile)
                .map_err(config)?
                .unwrap_or_else(|| DEFAULT_REGION.to_string()),
        };
        let credentials = match &self.credentials {
            Some(c) => c.clone(),
            None => credentials::resolve(env, profile)
                .map_err(config)?
                .ok_or_else(|| {
                    config(
                        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                     or a profile in ~/.aws/credentials",
                    )
                })?,
        };
        let endpoint = match &self.endpoint {
            Some(e) => e.clone(),
            None => Url::parse(&format!("https://s3.{region}.amazonaws.com"))
                .map_err(|e| config(format!("region {region:?}: {e}")))?,
        };
        match endpoint.scheme() {
            "http" => {}
            "https" if cfg!(feature = "rustls") => {}
            "https" => {
                return Err(config(
                    "https endpoints need storage-s3's `rustls` feature (on by default)",
                ));
            }
            other => {
                return Err(config(format!(
                    "endpoint scheme {other:?}: expected http or https"
                )));
            }
        }
        Ok(Resolved {
            endpoint,
            region,
            credentials,
        })
    }
}

/// The parts of a configuration that may come from the environment, filled in.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) endpoint: Url,
    pub(crate) region: String,
    pub(crate) credentials: Credentials,
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoEnv;
    impl Env for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }

    #[test]
    fn url_with_endpoint() {
        let c = S3Config::from_url(
            "s3://bkt/some/prefix?endpoint=http://127.0.0.1:8333&region=eu-central-1",
        )
        .unwrap();
        assert_eq!(c.bucket, "bkt");
        assert_eq!(c.prefix, "/some/prefix");
        assert_eq!(
            c.endpoint.as_ref().map(Url::as_str),
            Some("http://127.0.0.1:8333/")
        );
        assert_eq!(c.region.as_deref(), Some("eu-central-1"));
        assert!(c.path_style);
        let r = c
            .with_credentials(Credentials::new("a", "b"))
            .resolve_with(&NoEnv)
            .unwrap();
        assert_eq!(r.region, "eu-central-1");
    }

    #[test]
    fn url_part_settings() {
        let c = S3Config::from_url("s3://b?part_size=16777216&upload_concurrency=2").unwrap();
        assert_eq!((c.part_size, c.upload_concurrency), (16 << 20, 2));
        assert_eq!(S3Config::from_url("s3://b").unwrap().upload_concurrency, 4);
        for bad in ["s3://b?part_size=8MiB", "s3://b?upload_concurrency=-1"] {
            let e = S3Config::from_url(bad).unwrap_err().to_string();
            assert!(e.contains("whole number"), "{e}");
        }
        // Out of bounds: refused when the store is made.
        let c = S3Config::from_url("s3://b?part_size=1024").unwrap();
        assert!(
            c.with_credentials(Credentials::new("a", "b"))
                .resolve_with(&NoEnv)
                .is_err()
        );
    }

    #[test]
    fn url_for_aws() {
        let c = S3Config::from_url("s3://bkt").unwrap();
        assert_eq!((c.prefix.as_str(), c.path_style), ("", false));
        let r = c
            .with_credentials(Credentials::new("a", "b"))
            .resolve_with(&NoEnv);
        if cfg!(feature = "rustls") {
            let r = r.unwrap();
            assert_eq!(r.endpoint.as_str(), "https://s3.us-east-1.amazonaws.com/");
            assert_eq!(r.region, "us-east-1");
        } else {
            assert!(r.is_err());
        }
    }

    #[test]
    fn bad_urls() {
        for bad in [
            "http://bkt/x",
            "s3:///x",
            "s3://key:secret@bkt/x",
            "s3://bkt/x?endpoint=notaurl",
            "s3://bkt/x?regoin=us-east-1",
            "s3://bkt/x?path_style=maybe",
        ] {
            assert!(S3Config::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn missing_credentials_is_an_error() {
        let err = S3Config::new("b").resolve_with(&NoEnv).unwrap_err();
        assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"), "{err}");
    }

    #[test]
    fn part_size_bounds() {
        let c = S3Config::new("b").with_credentials(Credentials::new("a", "b"));
        assert!(
            c.clone()
                .with_part_size(1 << 20)
                .resolve_with(&NoEnv)
                .is_err()
        );
        assert!(c.with_part_size(5 << 20).resolve_with(&NoEnv).is_ok());
    }
}
