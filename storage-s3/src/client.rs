//! The S3 requests this store makes: signed by `rusty-s3` (sans-IO, presigned-URL style
//! SigV4 with `UNSIGNED-PAYLOAD`), sent by `reqwest`, retried by `backon`.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use reqwest::{Method, Response, StatusCode};
use rusty_s3::actions::{
    AbortMultipartUpload, CompleteMultipartUpload, CreateMultipartUpload, DeleteObject, GetObject,
    HeadObject, ListObjectsV2, ListObjectsV2Response, PutObject, UploadPart,
};
use rusty_s3::{Bucket, S3Action, UrlStyle};
use storage_traits::{ByteStream, StorageError};
use url::Url;

use crate::config::{Resolved, S3Config};
use crate::error::{S3Error, config, protocol};

/// How long the signature of a request the store sends itself is valid: requests are sent
/// at once, this only has to cover clock skew and retries.
const SIGN_FOR: Duration = Duration::from_secs(15 * 60);

/// SigV4's longest presigned URL.
pub(crate) const MAX_PRESIGN: Duration = Duration::from_secs(7 * 24 * 3600);

/// A request body that can be sent again on retry.
pub(crate) enum Body {
    Empty,
    Bytes(Bytes),
    /// These buffers, one after the other (a held-back part and the short end of a write).
    Chunks(Vec<Bytes>),
    /// `len` bytes produced by `make` (called once per attempt).
    Stream {
        len: u64,
        make: Arc<dyn Fn() -> ByteStream + Send + Sync>,
    },
}

impl Body {
    fn to_reqwest(&self) -> (reqwest::Body, u64) {
        match self {
            Body::Empty => (reqwest::Body::from(Bytes::new()), 0),
            Body::Bytes(b) => (reqwest::Body::from(b.clone()), b.len() as u64),
            Body::Chunks(chunks) => {
                let len = chunks.iter().map(|c| c.len() as u64).sum();
                let items: Vec<Result<Bytes, StorageError>> =
                    chunks.iter().cloned().map(Ok).collect();
                (reqwest::Body::wrap_stream(stream::iter(items)), len)
            }
            Body::Stream { len, make } => {
                (reqwest::Body::wrap_stream(exact_len(make(), *len)), *len)
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct Client {
    http: reqwest::Client,
    bucket: Bucket,
    credentials: rusty_s3::Credentials,
    max_retries: usize,
    list_page_size: usize,
}

impl Client {
    pub(crate) fn new(cfg: &S3Config, resolved: Resolved) -> Result<Self, StorageError> {
        let style = if cfg.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            resolved.endpoint,
            style,
            cfg.bucket.clone(),
            resolved.region,
        )
        .map_err(|e| config(format!("bucket {:?}: {e}", cfg.bucket)))?;
        let c = resolved.credentials;
        let credentials = match c.session_token {
            Some(token) => rusty_s3::Credentials::new_with_token(c.access_key, c.secret_key, token),
            None => rusty_s3::Credentials::new(c.access_key, c.secret_key),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .build()
            .map_err(|e| config(format!("HTTP client: {e}")))?;
        Ok(Client {
            http,
            bucket,
            credentials,
            max_retries: cfg.max_retries,
            list_page_size: cfg.list_page_size,
        })
    }

    pub(crate) fn bucket_name(&self) -> &str {
        self.bucket.name()
    }

    /// Sends the request `build` makes (signing afresh each attempt), retrying failed
    /// connections and 5xx/429 answers. Other answers, errors included, are the caller's.
    async fn send(
        &self,
        op: &'static str,
        key: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Response, StorageError> {
        let attempt = || async {
            let response = build().send().await.map_err(|source| S3Error::Http {
                op,
                key: key.to_string(),
                source,
            })?;
            let status = response.status();
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                return Err(status_error(op, key, response).await);
            }
            Ok(response)
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(self.max_retries)
            .with_jitter();
        attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e| matches!(e, S3Error::Http { .. } | S3Error::Status { .. }))
            .await
            .map_err(StorageError::from)
    }

    fn signed<'a>(&self, action: &impl S3Action<'a>) -> Url {
        action.sign(SIGN_FOR)
    }

    /// `HEAD`: the object's size, or `None` if it does not exist.
    pub(crate) async fn head(&self, key: &str) -> Result<Option<u64>, StorageError> {
        Ok(self.head_object(key).await?.map(|h| h.len))
    }

    /// `HEAD`: the object's size and pointer metadata, or `None` if it does not exist.
    pub(crate) async fn head_object(&self, key: &str) -> Result<Option<ObjectHead>, StorageError> {
        let response = self
            .send("HEAD", key, || {
                let url = self.signed(&HeadObject::new(&self.bucket, Some(&self.credentials), key));
                self.http.head(url)
            })
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => ObjectHead::of("HEAD", key, &response).map(Some),
            _ => Err(status_error("HEAD", key, response).await.into()),
        }
    }

    /// `GET` of a whole object, with what a `HEAD` would say about it; `None` if it does
    /// not exist. The stream yields exactly `head.len` bytes, or an error.
    pub(crate) async fn open(
        &self,
        key: &str,
    ) -> Result<Option<(ObjectHead, ByteStream)>, StorageError> {
        let response = self
            .send("GET", key, || {
                let url = self.signed(&GetObject::new(&self.bucket, Some(&self.credentials), key));
                self.http.get(url)
            })
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => {
                let head = ObjectHead::of("GET", key, &response)?;
                let stream = body_stream(key, response, head.len);
                Ok(Some((head, stream)))
            }
            _ => Err(status_error("GET", key, response).await.into()),
        }
    }

    /// `GET` of `range` (all of it if `None`): the body, or `None` if the object does not
    /// exist. The stream yields exactly the bytes asked for, or an error.
    pub(crate) async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<Option<(u64, ByteStream)>, StorageError> {
        let response = self
            .send("GET", key, || {
                let url = self.signed(&GetObject::new(&self.bucket, Some(&self.credentials), key));
                let mut req = self.http.get(url);
                if let Some(r) = &range {
                    req = req.header("range", format!("bytes={}-{}", r.start, r.end - 1));
                }
                req
            })
            .await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let expected_status = if range.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        };
        if status != expected_status {
            return Err(status_error("GET", key, response).await.into());
        }
        let len = content_length("GET", key, &response)?;
        if let Some(r) = &range
            && len != r.end - r.start
        {
            return Err(protocol(
                "GET",
                key,
                format!("asked for bytes {r:?}, got {len} bytes"),
            ));
        }
        Ok(Some((len, body_stream(key, response, len))))
    }

    pub(crate) async fn put(&self, key: &str, body: &Body) -> Result<(), StorageError> {
        let response = self
            .send("PUT", key, || {
                let url = self.signed(&PutObject::new(&self.bucket, Some(&self.credentials), key));
                let (body, len) = body.to_reqwest();
                self.http.put(url).header("content-length", len).body(body)
            })
            .await?;
        if !response.status().is_success() {
            return Err(status_error("PUT", key, response).await.into());
        }
        Ok(())
    }

    /// `PUT` with `If-None-Match: *`: stores the object only if the key is free. Returns
    /// the new object's ETag, or `None` if the key was taken (nothing changed).
    pub(crate) async fn put_if_absent(
        &self,
        key: &str,
        body: &Body,
        metadata: &[(&str, String)],
    ) -> Result<Option<String>, StorageError> {
        self.put_meta(key, body, metadata, true).await
    }

    /// `PUT` with `metadata` (`x-amz-meta-*` names and values, sent signed); with
    /// `if_absent`, only if the key is free (`None` if it was taken).
    pub(crate) async fn put_meta(
        &self,
        key: &str,
        body: &Body,
        metadata: &[(&str, String)],
        if_absent: bool,
    ) -> Result<Option<String>, StorageError> {
        let response = self
            .send("PUT", key, || {
                let mut action = PutObject::new(&self.bucket, Some(&self.credentials), key);
                for (name, value) in metadata {
                    // x-amz-* headers must be signed.
                    action
                        .headers_mut()
                        .insert(format!("x-amz-meta-{name}"), value.clone());
                }
                let (body, len) = body.to_reqwest();
                let mut req = self
                    .http
                    .put(self.signed(&action))
                    .header("content-length", len);
                if if_absent {
                    req = req.header("if-none-match", "*");
                }
                for (name, value) in metadata {
                    req = req.header(format!("x-amz-meta-{name}"), value);
                }
                req.body(body)
            })
            .await?;
        match response.status() {
            s if s.is_success() => Ok(Some(etag_of(&response).unwrap_or_default())),
            StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT => Ok(None),
            _ => Err(status_error("PUT", key, response).await.into()),
        }
    }

    /// `PUT` of `stream`, exactly `len` bytes, with `metadata` (as [`Client::put_meta`]),
    /// sent once: a stream cannot be sent again, so a failure is the caller's to handle.
    pub(crate) async fn put_once(
        &self,
        key: &str,
        len: u64,
        stream: ByteStream,
        metadata: &[(&str, String)],
    ) -> Result<(), StorageError> {
        let mut action = PutObject::new(&self.bucket, Some(&self.credentials), key);
        for (name, value) in metadata {
            action
                .headers_mut()
                .insert(format!("x-amz-meta-{name}"), value.clone());
        }
        let mut req = self
            .http
            .put(self.signed(&action))
            .header("content-length", len);
        for (name, value) in metadata {
            req = req.header(format!("x-amz-meta-{name}"), value);
        }
        let response = req
            .body(reqwest::Body::wrap_stream(exact_len(stream, len)))
            .send()
            .await
            .map_err(|source| S3Error::Http {
                op: "PUT",
                key: key.to_string(),
                source,
            })?;
        if !response.status().is_success() {
            return Err(status_error("PUT", key, response).await.into());
        }
        Ok(())
    }

    /// `GET` of a small object with its ETag; `None` if it does not exist.
    pub(crate) async fn get_tagged(
        &self,
        key: &str,
    ) -> Result<Option<(String, Bytes)>, StorageError> {
        let response = self
            .send("GET", key, || {
                let url = self.signed(&GetObject::new(&self.bucket, Some(&self.credentials), key));
                self.http.get(url)
            })
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if response.status() != StatusCode::OK {
            return Err(status_error("GET", key, response).await.into());
        }
        let etag =
            etag_of(&response).ok_or_else(|| protocol("GET", key, "no ETag in the answer"))?;
        let body = response.bytes().await.map_err(|source| {
            StorageError::from(S3Error::Http {
                op: "GET",
                key: key.to_string(),
                source,
            })
        })?;
        Ok(Some((etag, body)))
    }

    /// `PUT` that applies only if the object still has `etag` (`If-Match`): how several
    /// replicas writing one upload session detect that another got there first. A refused
    /// write is [`StorageError::Conflict`]. Returns the new ETag, for the next such `PUT`.
    pub(crate) async fn put_if_match(
        &self,
        key: &str,
        body: &Body,
        etag: &str,
        session: &str,
    ) -> Result<String, StorageError> {
        let response = self
            .send("PUT", key, || {
                let url = self.signed(&PutObject::new(&self.bucket, Some(&self.credentials), key));
                let (body, len) = body.to_reqwest();
                self.http
                    .put(url)
                    .header("content-length", len)
                    .header("if-match", etag)
                    .body(body)
            })
            .await?;
        match response.status() {
            s if s.is_success() => {
                etag_of(&response).ok_or_else(|| protocol("PUT", key, "no ETag in the answer"))
            }
            StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT => Err(StorageError::Conflict(
                format!("upload {session} changed during this request"),
            )),
            _ => Err(status_error("PUT", key, response).await.into()),
        }
    }

    /// `DELETE`; a missing object is fine.
    pub(crate) async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let response = self
            .send("DELETE", key, || {
                let url = self.signed(&DeleteObject::new(
                    &self.bucket,
                    Some(&self.credentials),
                    key,
                ));
                self.http.delete(url)
            })
            .await?;
        if !response.status().is_success() && response.status() != StatusCode::NOT_FOUND {
            return Err(status_error("DELETE", key, response).await.into());
        }
        Ok(())
    }

    /// One page of `ListObjectsV2` under `prefix`.
    pub(crate) async fn list_page(
        &self,
        prefix: &str,
        token: Option<&str>,
    ) -> Result<ListObjectsV2Response, StorageError> {
        self.list(prefix, false, token).await
    }

    /// The object names and folder names directly under `prefix` (`ListObjectsV2` grouped
    /// at `/`, every page), relative to `prefix`; folders without their trailing `/`.
    /// A marker object named like the prefix itself is no entry.
    pub(crate) async fn list_folder(
        &self,
        prefix: &str,
    ) -> Result<(Vec<String>, Vec<String>), StorageError> {
        let (mut objects, mut folders) = (Vec::new(), Vec::new());
        let mut token: Option<String> = None;
        loop {
            let page = self.list(prefix, true, token.as_deref()).await?;
            // Keys outside the asked prefix would be a server bug: skipped.
            objects.extend(page.contents.into_iter().filter_map(|c| {
                c.key
                    .strip_prefix(prefix)
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
            }));
            folders.extend(page.common_prefixes.into_iter().filter_map(|p| {
                p.prefix
                    .strip_prefix(prefix)
                    .and_then(|n| n.strip_suffix('/'))
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
            }));
            match page.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok((objects, folders)),
            }
        }
    }

    async fn list(
        &self,
        prefix: &str,
        grouped: bool,
        token: Option<&str>,
    ) -> Result<ListObjectsV2Response, StorageError> {
        let response = self
            .send("LIST", prefix, || {
                let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
                action.with_prefix(prefix);
                if grouped {
                    action.with_delimiter("/");
                }
                action.with_max_keys(self.list_page_size);
                if let Some(t) = token {
                    action.with_continuation_token(t);
                }
                self.http.get(self.signed(&action))
            })
            .await?;
        if !response.status().is_success() {
            return Err(status_error("LIST", prefix, response).await.into());
        }
        let body = text("LIST", prefix, response).await?;
        ListObjectsV2::parse_response(&body)
            .map_err(|e| protocol("LIST", prefix, format!("bad ListObjectsV2 XML: {e}")))
    }

    /// Whether any object exists under `prefix` (one `ListObjectsV2` asking for one key).
    /// Servers that keep folders as entries of their own (SeaweedFS's filer) still show a
    /// folder in a delimited listing after its last object is deleted; this tells.
    pub(crate) async fn any_key(&self, prefix: &str) -> Result<bool, StorageError> {
        let response = self
            .send("LIST", prefix, || {
                let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
                action.with_prefix(prefix);
                action.with_max_keys(1);
                self.http.get(self.signed(&action))
            })
            .await?;
        if !response.status().is_success() {
            return Err(status_error("LIST", prefix, response).await.into());
        }
        let body = text("LIST", prefix, response).await?;
        let page = ListObjectsV2::parse_response(&body)
            .map_err(|e| protocol("LIST", prefix, format!("bad ListObjectsV2 XML: {e}")))?;
        Ok(page.contents.iter().any(|c| !c.key.ends_with('/')))
    }

    /// Every key under `prefix`, page by page.
    pub(crate) fn list_keys(
        self: &Arc<Self>,
        prefix: String,
    ) -> futures::stream::BoxStream<'static, Result<Vec<String>, StorageError>> {
        let client = Arc::clone(self);
        // State: the next page's token, or `None` once the last page was returned.
        stream::try_unfold(Some(None::<String>), move |state| {
            let client = Arc::clone(&client);
            let prefix = prefix.clone();
            async move {
                let Some(token) = state else { return Ok(None) };
                let page = client.list_page(&prefix, token.as_deref()).await?;
                let keys = page.contents.into_iter().map(|c| c.key).collect();
                Ok(Some((keys, page.next_continuation_token.map(Some))))
            }
        })
        .boxed()
    }

    pub(crate) async fn create_multipart(&self, key: &str) -> Result<String, StorageError> {
        let response = self
            .send("CreateMultipartUpload", key, || {
                let url = self.signed(&CreateMultipartUpload::new(
                    &self.bucket,
                    Some(&self.credentials),
                    key,
                ));
                self.http.post(url)
            })
            .await?;
        if !response.status().is_success() {
            return Err(status_error("CreateMultipartUpload", key, response)
                .await
                .into());
        }
        let body = text("CreateMultipartUpload", key, response).await?;
        let parsed = CreateMultipartUpload::parse_response(&body)
            .map_err(|e| protocol("CreateMultipartUpload", key, format!("bad XML: {e}")))?;
        Ok(parsed.upload_id().to_string())
    }

    /// `UploadPart`; returns the part's ETag.
    pub(crate) async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part: u16,
        body: &Body,
    ) -> Result<String, StorageError> {
        let response = self
            .send("UploadPart", key, || {
                let url = self.signed(&UploadPart::new(
                    &self.bucket,
                    Some(&self.credentials),
                    key,
                    part,
                    upload_id,
                ));
                let (body, len) = body.to_reqwest();
                self.http.put(url).header("content-length", len).body(body)
            })
            .await?;
        if !response.status().is_success() {
            return Err(status_error("UploadPart", key, response).await.into());
        }
        etag_of(&response).ok_or_else(|| protocol("UploadPart", key, "no ETag in the answer"))
    }

    /// `UploadPart` of `len` bytes from `stream` as they come, in one attempt (a stream
    /// cannot be sent again: the caller retries with the bytes it kept).
    pub(crate) async fn upload_part_once(
        &self,
        key: &str,
        upload_id: &str,
        part: u16,
        len: u64,
        stream: ByteStream,
    ) -> Result<String, StorageError> {
        let url = self.signed(&UploadPart::new(
            &self.bucket,
            Some(&self.credentials),
            key,
            part,
            upload_id,
        ));
        let response = self
            .http
            .put(url)
            .header("content-length", len)
            .body(reqwest::Body::wrap_stream(exact_len(stream, len)))
            .send()
            .await
            .map_err(|source| S3Error::Http {
                op: "UploadPart",
                key: key.to_string(),
                source,
            })?;
        if !response.status().is_success() {
            return Err(status_error("UploadPart", key, response).await.into());
        }
        etag_of(&response).ok_or_else(|| protocol("UploadPart", key, "no ETag in the answer"))
    }

    /// `UploadPartCopy` of `range` of `source` (a key in this bucket); returns the ETag.
    pub(crate) async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        part: u16,
        source: &str,
        range: Range<u64>,
    ) -> Result<String, StorageError> {
        // Keys are restricted to URL-safe characters (see `Layout::new`), so the source
        // needs no escaping.
        let copy_source = format!("/{}/{source}", self.bucket.name());
        let copy_range = format!("bytes={}-{}", range.start, range.end - 1);
        let response = self
            .send("UploadPartCopy", key, || {
                let mut action =
                    UploadPart::new(&self.bucket, Some(&self.credentials), key, part, upload_id);
                // x-amz-* headers must be signed.
                action
                    .headers_mut()
                    .insert("x-amz-copy-source", copy_source.clone());
                action
                    .headers_mut()
                    .insert("x-amz-copy-source-range", copy_range.clone());
                self.http
                    .put(self.signed(&action))
                    .header("x-amz-copy-source", &copy_source)
                    .header("x-amz-copy-source-range", &copy_range)
                    .header("content-length", 0)
            })
            .await?;
        if !response.status().is_success() {
            return Err(status_error("UploadPartCopy", key, response).await.into());
        }
        // A copy can fail after S3 sent `200 OK`: the error is then in the body.
        let body = text("UploadPartCopy", key, response).await?;
        if let Some(code) = xml_value(&body, "Code") {
            let message = xml_value(&body, "Message").unwrap_or_default();
            return Err(protocol(
                "UploadPartCopy",
                key,
                format!("{code}: {message}"),
            ));
        }
        // Quoted, as UploadPart's header has it and CompleteMultipartUpload compares it
        // (SeaweedFS sends this one bare).
        xml_value(&body, "ETag")
            .map(|etag| match etag.starts_with('"') {
                true => etag,
                false => format!("\"{etag}\""),
            })
            .ok_or_else(|| protocol("UploadPartCopy", key, "no ETag in CopyPartResult"))
    }

    /// `CompleteMultipartUpload` of `parts` (number and ETag, numbers ascending, gaps
    /// allowed).
    pub(crate) async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u16, String)],
    ) -> Result<(), StorageError> {
        // Our own body: rusty-s3's numbers the ETags 1, 2, 3... and part numbers here can
        // have gaps (see `crate::upload`).
        let mut body = String::from("<CompleteMultipartUpload>");
        for (number, etag) in parts {
            body.push_str(&format!(
                "<Part><PartNumber>{number}</PartNumber><ETag>{}</ETag></Part>",
                xml_escape(etag)
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let response = self
            .send("CompleteMultipartUpload", key, || {
                let action = CompleteMultipartUpload::new(
                    &self.bucket,
                    Some(&self.credentials),
                    key,
                    upload_id,
                    std::iter::empty(),
                );
                let url = self.signed(&action);
                self.http.post(url).body(body.clone())
            })
            .await?;
        if !response.status().is_success() {
            return Err(status_error("CompleteMultipartUpload", key, response)
                .await
                .into());
        }
        // Like a copy, completing can fail after `200 OK` has been sent.
        let body = text("CompleteMultipartUpload", key, response).await?;
        if let Some(code) = xml_value(&body, "Code") {
            let message = xml_value(&body, "Message").unwrap_or_default();
            return Err(protocol(
                "CompleteMultipartUpload",
                key,
                format!("{code}: {message}"),
            ));
        }
        Ok(())
    }

    /// `AbortMultipartUpload`; an upload that is already gone is fine.
    pub(crate) async fn abort_multipart(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        let response = self
            .send("AbortMultipartUpload", key, || {
                let url = self.signed(&AbortMultipartUpload::new(
                    &self.bucket,
                    Some(&self.credentials),
                    key,
                    upload_id,
                ));
                self.http.delete(url)
            })
            .await?;
        if !response.status().is_success() && response.status() != StatusCode::NOT_FOUND {
            return Err(status_error("AbortMultipartUpload", key, response)
                .await
                .into());
        }
        Ok(())
    }

    /// `ListMultipartUploads` under `prefix` (first 1,000): `(key, upload id)` pairs.
    pub(crate) async fn list_multipart(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, StorageError> {
        let response = self
            .send("ListMultipartUploads", prefix, || {
                let url = self.bucket.base_url().clone();
                let url = rusty_s3::signing::sign(
                    &jiff::Timestamp::now(),
                    rusty_s3::Method::Get,
                    url,
                    self.credentials.key(),
                    self.credentials.secret(),
                    self.credentials.token(),
                    self.bucket.region(),
                    SIGN_FOR.as_secs(),
                    [("prefix", prefix), ("uploads", "")].into_iter(),
                    std::iter::empty(),
                );
                self.http.request(Method::GET, url)
            })
            .await?;
        if !response.status().is_success() {
            return Err(status_error("ListMultipartUploads", prefix, response)
                .await
                .into());
        }
        let body = text("ListMultipartUploads", prefix, response).await?;
        Ok(body
            .split("<Upload>")
            .skip(1)
            .filter_map(|u| Some((xml_value(u, "Key")?, xml_value(u, "UploadId")?)))
            .collect())
    }

    pub(crate) fn presign_get(&self, key: &str, expires_in: Duration) -> Url {
        GetObject::new(&self.bucket, Some(&self.credentials), key).sign(expires_in)
    }
}

/// Metadata a blob key's pointer carries (see `crate::store`): the data key, relative to
/// the store's prefix, and the blob's size.
pub(crate) const META_DATA: &str = "registry-data";
pub(crate) const META_SIZE: &str = "registry-size";
/// On a data object written by `stage_blob`: the digest it was staged for (whose pointer,
/// if it names the object, keeps it when its upload id is aborted).
pub(crate) const META_DIGEST: &str = "registry-digest";

/// What a `HEAD` (or the head of a `GET`) says about an object.
#[derive(Debug, Clone)]
pub(crate) struct ObjectHead {
    pub(crate) len: u64,
    /// `x-amz-meta-registry-data` and `-size`, when the object is a blob's pointer.
    pub(crate) data: Option<String>,
    pub(crate) size: Option<String>,
    /// `x-amz-meta-registry-digest`, on a staged blob's data object.
    pub(crate) digest: Option<String>,
}

impl ObjectHead {
    fn of(op: &'static str, key: &str, response: &Response) -> Result<Self, StorageError> {
        let meta = |name: &str| {
            response
                .headers()
                .get(format!("x-amz-meta-{name}"))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Ok(ObjectHead {
            len: content_length(op, key, response)?,
            data: meta(META_DATA),
            size: meta(META_SIZE),
            digest: meta(META_DIGEST),
        })
    }
}

fn etag_of(response: &Response) -> Option<String> {
    response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The body of a `GET`, exactly `len` bytes or an error.
fn body_stream(key: &str, response: Response, len: u64) -> ByteStream {
    let op_key = key.to_string();
    let stream = response
        .bytes_stream()
        .map_err(move |source| {
            StorageError::from(S3Error::Http {
                op: "GET",
                key: op_key.clone(),
                source,
            })
        })
        .boxed();
    exact_len(stream, len)
}

/// True if `e` is S3 saying the multipart upload does not exist (any more): completed or
/// aborted by an earlier attempt.
pub(crate) fn is_no_such_upload(e: &StorageError) -> bool {
    match e {
        StorageError::Backend { source, .. } => {
            matches!(
                source.downcast_ref::<S3Error>(),
                Some(S3Error::Status { status: 404, .. })
            ) || matches!(
                source.downcast_ref::<S3Error>(),
                Some(S3Error::Protocol { message, .. }) if message.starts_with("NoSuchUpload")
            )
        }
        _ => false,
    }
}

/// The error an unexpected answer stands for, with S3's code and message from the body.
async fn status_error(op: &'static str, key: &str, response: Response) -> S3Error {
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    S3Error::Status {
        op,
        key: key.to_string(),
        status,
        code: xml_value(&body, "Code").unwrap_or_default(),
        message: xml_value(&body, "Message").unwrap_or_default(),
    }
}

async fn text(op: &'static str, key: &str, response: Response) -> Result<String, StorageError> {
    response.text().await.map_err(|source| {
        S3Error::Http {
            op,
            key: key.to_string(),
            source,
        }
        .into()
    })
}

fn content_length(op: &'static str, key: &str, response: &Response) -> Result<u64, StorageError> {
    response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| protocol(op, key, "no Content-Length in the answer"))
}

/// The text of the first `<tag>...</tag>` in `xml`, entities decoded. S3's answers are
/// flat enough that this is all the XML reading the store needs beyond what `rusty-s3`
/// parses.
pub(crate) fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml.get(start..)?.find(&close)?;
    let raw = xml.get(start..start + len)?;
    Some(
        raw.replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// Passes `stream` through, failing if it yields more or fewer than `len` bytes (a cut
/// connection must not look like a short blob).
pub(crate) fn exact_len(stream: ByteStream, len: u64) -> ByteStream {
    stream::try_unfold(
        (stream, 0u64, false),
        move |(mut s, seen, done)| async move {
            if done {
                return Ok(None);
            }
            match s.next().await {
                Some(Ok(chunk)) => {
                    let seen = seen + chunk.len() as u64;
                    if seen > len {
                        return Err(StorageError::backend(
                            crate::error::BACKEND,
                            format!("stream longer than the expected {len} bytes"),
                        ));
                    }
                    Ok(Some((chunk, (s, seen, false))))
                }
                Some(Err(e)) => Err(e),
                None if seen == len => Ok(None),
                None => Err(StorageError::backend(
                    crate::error::BACKEND,
                    format!("stream ended after {seen} of {len} bytes"),
                )),
            }
        },
    )
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_values() {
        let xml = "<CopyPartResult><LastModified>x</LastModified><ETag>&quot;abc&quot;</ETag></CopyPartResult>";
        assert_eq!(xml_value(xml, "ETag").as_deref(), Some("\"abc\""));
        assert_eq!(xml_value(xml, "Code"), None);
        assert_eq!(xml_value("<Code>", "Code"), None);
        let escaped = format!("<ETag>{}</ETag>", xml_escape("\"a&b\""));
        assert_eq!(xml_value(&escaped, "ETag").as_deref(), Some("\"a&b\""));
    }

    #[tokio::test]
    async fn exact_length() {
        let two = || stream::iter([Ok(Bytes::from_static(b"ab"))]).boxed();
        let ok: Vec<Bytes> = exact_len(two(), 2).try_collect().await.unwrap();
        assert_eq!(ok.concat(), b"ab");
        assert!(exact_len(two(), 3).try_collect::<Vec<_>>().await.is_err());
        assert!(exact_len(two(), 1).try_collect::<Vec<_>>().await.is_err());
    }
}
