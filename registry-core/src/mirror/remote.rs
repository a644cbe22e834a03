//! Another registry as a sync's source (`--from`: the distribution API's reads, the
//! catalog and tag lists followed page by page, the referrers API) or target (`--to`:
//! `HEAD` to see what it has, uploads and manifest `PUT`s for what it lacks). Requests go
//! through the pull-through cache's upstream client, so the same authentication works
//! (anonymous, Basic, the Docker token flow).

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use oci_spec_types::manifest::MAX_MANIFEST_SIZE;
use oci_spec_types::media_type::OCI_INDEX;
use oci_spec_types::{Descriptor, Digest, ParsedManifest, Reference, RepositoryName, Tag};
use reqwest::Response;
use storage_traits::{ByteStream, StorageError};

use super::copy::{Held, Source, Target};
use super::{Remote, SyncError, at};
use crate::auth::NamePattern;
use crate::proxy::{ACCEPT_MANIFESTS, RequestBody, UpstreamClient, UpstreamError};

/// Entries asked for per page of the catalog and of tag lists.
const PAGE: usize = 1000;
/// Pages followed at most (a registry whose `Link` never ends would loop forever).
const MAX_PAGES: usize = 10_000;
/// Largest catalog, tag list or referrers page read (far above what `PAGE` entries take).
const MAX_LIST_PAGE: usize = 16 * 1024 * 1024;
/// Names read from one list at most (the memory a hostile registry can make us hold).
const MAX_ENTRIES: usize = 1_000_000;
/// Bytes of an error answer kept for the message.
const MAX_ERROR_BODY: usize = 512;

pub(crate) struct RemoteRegistry {
    client: UpstreamClient,
    url: String,
}

#[derive(serde::Deserialize)]
struct Catalog {
    #[serde(default)]
    repositories: Option<Vec<String>>,
}

#[derive(serde::Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(serde::Deserialize)]
struct ReferrersIndex {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

fn pull(repo: &RepositoryName) -> String {
    format!("repository:{repo}:pull")
}

/// The target's operations ask for push too, so one token serves its reads and writes.
fn push(repo: &RepositoryName) -> String {
    format!("repository:{repo}:pull,push")
}

/// Deleting asks for its own action: a token for pull and push does not allow it.
fn delete(repo: &RepositoryName) -> String {
    format!("repository:{repo}:delete")
}

fn accept(value: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT, HeaderValue::from_static(value));
    h
}

fn digest_header(res: &Response) -> Option<Digest> {
    res.headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn content_type(res: &Response) -> String {
    res.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The `rel="next"` target of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|link| {
            let (target, params) = link.trim().strip_prefix('<')?.split_once('>')?;
            let next = params.split(';').any(|p| {
                let p = p.trim().replace(' ', "");
                p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
            });
            next.then(|| target.to_string())
        })
}

impl RemoteRegistry {
    pub(crate) fn new(remote: &Remote) -> Self {
        RemoteRegistry {
            client: UpstreamClient::new(remote.upstream.clone()),
            url: remote.upstream.url.clone(),
        }
    }

    fn error(&self, source: UpstreamError) -> SyncError {
        SyncError::Remote {
            url: self.url.clone(),
            source,
        }
    }

    async fn send(
        &self,
        method: Method,
        target: &str,
        scope: &str,
        headers: HeaderMap,
        body: RequestBody,
    ) -> Result<Response, SyncError> {
        self.client
            .request(method, target, scope, headers, body)
            .await
            .map_err(|e| self.error(e))
    }

    /// Deletes a manifest (by digest) or a tag (by name) from the target; `false` when it
    /// was not there (already deleted, or never copied).
    pub(crate) async fn delete_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<bool, SyncError> {
        let res = self
            .send(
                Method::DELETE,
                &format!("{}/v2/{repo}/manifests/{reference}", self.url),
                &delete(repo),
                HeaderMap::new(),
                RequestBody::Empty,
            )
            .await?;
        if res.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        self.expect(res, &[StatusCode::ACCEPTED, StatusCode::OK])
            .await
            .map(|_| true)
    }

    /// `res` if its status is one of `ok`; otherwise the failure it stands for, with the
    /// start of the registry's error body.
    async fn expect(&self, res: Response, ok: &[StatusCode]) -> Result<Response, SyncError> {
        let status = res.status();
        if ok.contains(&status) {
            return Ok(res);
        }
        let body = read_limited(res, MAX_ERROR_BODY, true)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        let why = format!("{status} {}", text.trim());
        Err(self.error(if status == StatusCode::NOT_FOUND {
            UpstreamError::NotFound
        } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            UpstreamError::Unavailable(why)
        } else {
            UpstreamError::Refused(why)
        }))
    }

    /// Every entry of a paginated list (`repositories` of the catalog, `tags` of a tag
    /// list), following `Link` headers. `None` when the first page is a 404.
    async fn paged(
        &self,
        first: String,
        scope: &str,
        entries: fn(&[u8]) -> Result<Vec<String>, serde_json::Error>,
    ) -> Result<Option<Vec<String>>, SyncError> {
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(SyncError::Invalid(format!(
                    "{}: more than {MAX_PAGES} pages in a list",
                    self.url
                )));
            }
            let res = self
                .send(
                    Method::GET,
                    &url,
                    scope,
                    HeaderMap::new(),
                    RequestBody::Empty,
                )
                .await?;
            if res.status() == StatusCode::NOT_FOUND && pages == 1 {
                return Ok(None);
            }
            let res = self.expect(res, &[StatusCode::OK]).await?;
            let link = next_link(res.headers());
            let body = self.body(res, MAX_LIST_PAGE).await?;
            let page = entries(&body).map_err(|e| {
                SyncError::Invalid(format!("{}: unreadable list at {url}: {e}", self.url))
            })?;
            let empty = page.is_empty();
            out.extend(page);
            if out.len() > MAX_ENTRIES {
                return Err(SyncError::Invalid(format!(
                    "{}: a list of more than {MAX_ENTRIES} names",
                    self.url
                )));
            }
            // A next link to the same page, or after an empty one, would never end.
            next = link.filter(|l| *l != url && !empty);
        }
        Ok(Some(out))
    }

    async fn body(&self, res: Response, limit: usize) -> Result<Bytes, SyncError> {
        read_limited(res, limit, false).await.map_err(|e| match e {
            ReadError::TooLarge => {
                SyncError::Invalid(format!("{}: an answer larger than {limit} bytes", self.url))
            }
            ReadError::Broken(e) => self.error(UpstreamError::Unavailable(e)),
        })
    }

    /// What a manifest reference points at, from a `HEAD` (or a `GET` when the registry
    /// does not send the digest header); `None` for a 404.
    async fn head_manifest(
        &self,
        repo: &RepositoryName,
        reference: &str,
        scope: &str,
    ) -> Result<Option<(Digest, String)>, SyncError> {
        let path = format!("{}/v2/{repo}/manifests/{reference}", self.url);
        let res = self
            .send(
                Method::HEAD,
                &path,
                scope,
                accept(ACCEPT_MANIFESTS),
                RequestBody::Empty,
            )
            .await?;
        if res.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let res = self.expect(res, &[StatusCode::OK]).await?;
        if let Some(d) = digest_header(&res) {
            return Ok(Some((d, content_type(&res))));
        }
        let res = self
            .send(
                Method::GET,
                &path,
                scope,
                accept(ACCEPT_MANIFESTS),
                RequestBody::Empty,
            )
            .await?;
        let res = self.expect(res, &[StatusCode::OK]).await?;
        let media_type = content_type(&res);
        let content = self.body(res, MAX_MANIFEST_SIZE).await?;
        Ok(Some((Digest::sha256_of(&content), media_type)))
    }
}

enum ReadError {
    TooLarge,
    Broken(String),
}

/// A body of at most `limit` bytes; with `truncate`, the first `limit` bytes of a longer
/// one instead of an error.
async fn read_limited(res: Response, limit: usize, truncate: bool) -> Result<Bytes, ReadError> {
    let mut buf = BytesMut::new();
    let mut stream = res.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ReadError::Broken(e.to_string()))?;
        if buf.len() + chunk.len() > limit {
            if truncate {
                let room = limit - buf.len();
                buf.extend_from_slice(chunk.get(..room).unwrap_or_default());
                break;
            }
            return Err(ReadError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

#[async_trait]
impl Source for RemoteRegistry {
    async fn repositories(&self, pattern: &NamePattern) -> Result<Vec<String>, SyncError> {
        // One repository named in full: no need for the catalog, which many registries
        // do not serve.
        if !pattern.as_str().contains('*') {
            return Ok(vec![pattern.as_str().to_string()]);
        }
        let names = self
            .paged(
                format!("{}/v2/_catalog?n={PAGE}", self.url),
                "registry:catalog:*",
                |body| {
                    serde_json::from_slice::<Catalog>(body)
                        .map(|c| c.repositories.unwrap_or_default())
                },
            )
            .await?
            .ok_or_else(|| self.error(UpstreamError::Refused("no catalog (404)".into())))?;
        Ok(names.into_iter().filter(|n| pattern.matches(n)).collect())
    }

    async fn tags(&self, repo: &RepositoryName) -> Result<Vec<String>, SyncError> {
        self.paged(
            format!("{}/v2/{repo}/tags/list?n={PAGE}", self.url),
            &pull(repo),
            |body| serde_json::from_slice::<TagList>(body).map(|t| t.tags.unwrap_or_default()),
        )
        .await?
        .ok_or_else(|| self.error(UpstreamError::NotFound))
    }

    async fn resolve(&self, repo: &RepositoryName, tag: &Tag) -> Result<Option<Digest>, SyncError> {
        Ok(self
            .head_manifest(repo, tag.as_str(), &pull(repo))
            .await?
            .map(|(d, _)| d))
    }

    async fn manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<(String, Bytes), SyncError> {
        let res = self
            .send(
                Method::GET,
                &format!("{}/v2/{repo}/manifests/{digest}", self.url),
                &pull(repo),
                accept(ACCEPT_MANIFESTS),
                RequestBody::Empty,
            )
            .await?;
        let res = self.expect(res, &[StatusCode::OK]).await?;
        let media_type = content_type(&res);
        Ok((media_type, self.body(res, MAX_MANIFEST_SIZE).await?))
    }

    async fn blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<(ByteStream, Option<u64>), SyncError> {
        let res = self
            .send(
                Method::GET,
                &format!("{}/v2/{repo}/blobs/{digest}", self.url),
                &pull(repo),
                HeaderMap::new(),
                RequestBody::Empty,
            )
            .await?;
        let res = self.expect(res, &[StatusCode::OK]).await?;
        let len = res.content_length();
        let stream = res
            .bytes_stream()
            .map(|chunk| chunk.map_err(|e| StorageError::Input(Box::new(e))))
            .boxed();
        Ok((stream, len))
    }

    async fn referrers(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Vec<Descriptor>, SyncError> {
        let mut out = Vec::new();
        let mut next = Some(format!("{}/v2/{repo}/referrers/{digest}", self.url));
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            let res = self
                .send(
                    Method::GET,
                    &url,
                    &pull(repo),
                    accept(OCI_INDEX),
                    RequestBody::Empty,
                )
                .await?;
            // A registry without the referrers API (distribution 2.x) has none to give.
            if res.status() == StatusCode::NOT_FOUND && pages == 1 {
                return Ok(Vec::new());
            }
            let res = self.expect(res, &[StatusCode::OK]).await?;
            let link = next_link(res.headers());
            let body = self.body(res, MAX_LIST_PAGE).await?;
            let index: ReferrersIndex = serde_json::from_slice(&body).map_err(|e| {
                SyncError::Invalid(format!(
                    "{}: unreadable referrers of {}: {e}",
                    self.url,
                    at(repo, digest)
                ))
            })?;
            let empty = index.manifests.is_empty();
            out.extend(index.manifests);
            if out.len() > MAX_ENTRIES {
                return Err(SyncError::Invalid(format!(
                    "{}: more than {MAX_ENTRIES} referrers of {}",
                    self.url,
                    at(repo, digest)
                )));
            }
            if pages < MAX_PAGES {
                next = link.filter(|l| *l != url && !empty);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Target for RemoteRegistry {
    async fn tag_digest(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<Digest>, SyncError> {
        Ok(self
            .head_manifest(repo, tag.as_str(), &push(repo))
            .await?
            .map(|(d, _)| d))
    }

    async fn manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<Held>, SyncError> {
        Ok(self
            .head_manifest(repo, digest.as_str(), &push(repo))
            .await?
            .map(|(_, media_type)| Held {
                media_type,
                content: None,
            }))
    }

    async fn has_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<bool, SyncError> {
        let res = self
            .send(
                Method::HEAD,
                &format!("{}/v2/{repo}/blobs/{digest}", self.url),
                &push(repo),
                HeaderMap::new(),
                RequestBody::Empty,
            )
            .await?;
        if res.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        self.expect(res, &[StatusCode::OK]).await.map(|_| true)
    }

    async fn mount_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from: &RepositoryName,
    ) -> Result<bool, SyncError> {
        let scope = push(repo);
        let mut url = url::Url::parse(&format!("{}/v2/{repo}/blobs/uploads/", self.url))
            .map_err(|e| self.error(UpstreamError::Refused(e.to_string())))?;
        url.query_pairs_mut()
            .append_pair("mount", digest.as_str())
            .append_pair("from", from.as_str());
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
        let res = self
            .send(
                Method::POST,
                url.as_str(),
                &scope,
                headers,
                RequestBody::Empty,
            )
            .await?;
        if res.status() == StatusCode::CREATED {
            return Ok(true);
        }
        let res = self.expect(res, &[StatusCode::ACCEPTED]).await?;
        // The target would not mount and opened an upload instead: closed unused (best
        // effort: an abandoned session expires anyway).
        let session = res
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|location| url.join(location).ok());
        if let Some(session) = session {
            let _ = self
                .send(
                    Method::DELETE,
                    session.as_str(),
                    &scope,
                    HeaderMap::new(),
                    RequestBody::Empty,
                )
                .await;
        }
        Ok(false)
    }

    async fn put_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        size: Option<u64>,
        data: ByteStream,
    ) -> Result<u64, SyncError> {
        let scope = push(repo);
        // A session first (its request also settles the credentials), then the whole
        // blob in one `PUT`, which every registry accepts.
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
        let res = self
            .send(
                Method::POST,
                &format!("{}/v2/{repo}/blobs/uploads/", self.url),
                &scope,
                headers,
                RequestBody::Empty,
            )
            .await?;
        let res = self.expect(res, &[StatusCode::ACCEPTED]).await?;
        let location = res
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                self.error(UpstreamError::Refused(
                    "upload started without a Location".into(),
                ))
            })?;
        let base = url::Url::parse(&self.url)
            .map_err(|e| self.error(UpstreamError::Refused(e.to_string())))?;
        let mut put = base.join(location).map_err(|e| {
            self.error(UpstreamError::Refused(format!(
                "Location {location:?}: {e}"
            )))
        })?;
        put.query_pairs_mut().append_pair("digest", digest.as_str());
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        if let Some(size) = size {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        }
        // Counted on the way, for the report (and when the source did not say).
        let counted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = counted.clone();
        let data = data.inspect(move |chunk| {
            if let Ok(c) = chunk {
                counter.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let res = self
            .send(
                Method::PUT,
                put.as_str(),
                &scope,
                headers,
                RequestBody::Stream(reqwest::Body::wrap_stream(data)),
            )
            .await?;
        let res = self.expect(res, &[StatusCode::CREATED]).await?;
        if let Some(d) = digest_header(&res).filter(|d| d != digest) {
            return Err(SyncError::Invalid(format!(
                "blob {}: the target stored it as {d}",
                at(repo, digest)
            )));
        }
        Ok(counted.load(std::sync::atomic::Ordering::Relaxed))
    }

    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        parsed: &ParsedManifest,
        content: Bytes,
        tag: Option<&Tag>,
    ) -> Result<(), SyncError> {
        let reference = tag.map_or(digest.as_str(), Tag::as_str);
        let mut headers = HeaderMap::new();
        let media_type = HeaderValue::from_str(&parsed.media_type).map_err(|_| {
            SyncError::Invalid(format!(
                "{}: media type {:?} cannot be sent",
                at(repo, digest),
                parsed.media_type
            ))
        })?;
        headers.insert(header::CONTENT_TYPE, media_type);
        let res = self
            .send(
                Method::PUT,
                &format!("{}/v2/{repo}/manifests/{reference}", self.url),
                &push(repo),
                headers,
                RequestBody::Bytes(content),
            )
            .await?;
        let res = self.expect(res, &[StatusCode::CREATED]).await?;
        // By tag, the target computes the digest itself: it must be the source's.
        if let Some(d) =
            digest_header(&res).filter(|d| d.algorithm() == digest.algorithm() && d != digest)
        {
            return Err(SyncError::Invalid(format!(
                "{}: the target stored it as {d}",
                at(repo, digest)
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                header::LINK,
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
        }
        h
    }

    #[test]
    fn the_next_link_is_found_among_others() {
        let h = links(&[r#"</v2/_catalog?last=a&n=2>; rel="next""#]);
        assert_eq!(next_link(&h).as_deref(), Some("/v2/_catalog?last=a&n=2"));
        let h = links(&[r#"<https://x/prev>; rel="prev", <https://x/next?n=1>;rel=next"#]);
        assert_eq!(next_link(&h).as_deref(), Some("https://x/next?n=1"));
        assert_eq!(
            next_link(&links(&[r#"<https://x/prev>; rel="prev""#])),
            None
        );
        assert_eq!(next_link(&links(&["garbage", "<unterminated"])), None);
        assert_eq!(next_link(&HeaderMap::new()), None);
    }
}
