//! The few registry API calls the benchmark makes, over plain HTTP/1.1. Any unexpected
//! status is an error that names the request, so a broken run stops instead of measuring
//! error pages.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use reqwest::{Client, Method, Response, StatusCode, Url};

use crate::content::{Blob, OCI_MANIFEST};

#[derive(Debug, Clone)]
pub struct Registry {
    base: Url,
    http: Client,
}

impl Registry {
    pub fn new(base: &str) -> Result<Registry> {
        let base = Url::parse(base).with_context(|| format!("invalid registry URL {base}"))?;
        let http = Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(600))
            .build()
            .context("building the HTTP client")?;
        Ok(Registry { base, http })
    }

    pub fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path)
            .with_context(|| format!("joining {path} to {}", self.base))
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Response> {
        req.send()
            .await
            .with_context(|| format!("{what}: request failed"))
    }

    /// The `Location` of a response, resolved against the registry URL (distribution sends
    /// absolute URLs, we send paths).
    fn location(&self, res: &Response, what: &str) -> Result<Url> {
        let loc = res
            .headers()
            .get("location")
            .with_context(|| format!("{what}: no Location header"))?
            .to_str()
            .with_context(|| format!("{what}: Location is not text"))?;
        self.url(loc)
    }

    /// `POST /v2/<repo>/blobs/uploads/`: opens a session.
    pub async fn start_upload(&self, repo: &str) -> Result<Url> {
        let what = format!("POST upload in {repo}");
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"))?;
        let res = self
            .send(self.http.post(url).header("content-length", "0"), &what)
            .await?;
        let res = expect(res.status(), StatusCode::ACCEPTED, &what, res).await?;
        self.location(&res, &what)
    }

    /// POST, then `PUT ?digest=` with the whole blob.
    pub async fn push_monolithic(&self, repo: &str, blob: &Blob) -> Result<()> {
        let mut url = self.start_upload(repo).await?;
        url.query_pairs_mut().append_pair("digest", &blob.digest);
        let what = format!("PUT {} in {repo}", blob.digest);
        let res = self
            .send(
                self.http
                    .put(url)
                    .header("content-type", "application/octet-stream")
                    .header("content-length", blob.data.len().to_string())
                    .body(blob.data.clone()),
                &what,
            )
            .await?;
        expect(res.status(), StatusCode::CREATED, &what, res).await?;
        Ok(())
    }

    /// POST, one `PATCH` per chunk (with `Content-Range`), then an empty `PUT ?digest=`.
    pub async fn push_chunked(&self, repo: &str, blob: &Blob, chunk: usize) -> Result<()> {
        let mut url = self.start_upload(repo).await?;
        let mut offset = 0usize;
        while offset < blob.data.len() {
            let end = (offset + chunk).min(blob.data.len());
            let what = format!("PATCH {offset}-{} of {} in {repo}", end - 1, blob.digest);
            let res = self
                .send(
                    self.http
                        .patch(url.clone())
                        .header("content-type", "application/octet-stream")
                        .header("content-range", format!("{offset}-{}", end - 1))
                        .header("content-length", (end - offset).to_string())
                        .body(blob.data.slice(offset..end)),
                    &what,
                )
                .await?;
            let res = expect(res.status(), StatusCode::ACCEPTED, &what, res).await?;
            url = self.location(&res, &what)?;
            offset = end;
        }
        url.query_pairs_mut().append_pair("digest", &blob.digest);
        let what = format!("closing PUT of {} in {repo}", blob.digest);
        let res = self
            .send(self.http.put(url).header("content-length", "0"), &what)
            .await?;
        expect(res.status(), StatusCode::CREATED, &what, res).await?;
        Ok(())
    }

    /// `POST ?mount=&from=`; falls back to a monolithic push if the registry opened a
    /// session instead of mounting.
    pub async fn mount_or_push(&self, repo: &str, from: &str, blob: &Blob) -> Result<()> {
        let what = format!("mount {} from {from} into {repo}", blob.digest);
        let mut url = self.url(&format!("/v2/{repo}/blobs/uploads/"))?;
        url.query_pairs_mut()
            .append_pair("mount", &blob.digest)
            .append_pair("from", from);
        let res = self
            .send(self.http.post(url).header("content-length", "0"), &what)
            .await?;
        match res.status() {
            StatusCode::CREATED => Ok(()),
            StatusCode::ACCEPTED => {
                let mut url = self.location(&res, &what)?;
                url.query_pairs_mut().append_pair("digest", &blob.digest);
                let res = self
                    .send(self.http.put(url).body(blob.data.clone()), &what)
                    .await?;
                expect(res.status(), StatusCode::CREATED, &what, res).await?;
                Ok(())
            }
            _ => {
                let status = res.status();
                expect(status, StatusCode::CREATED, &what, res).await?;
                Ok(())
            }
        }
    }

    /// One request that must answer 200; the body, if any, is read and dropped.
    pub async fn request_ok(&self, method: Method, url: Url, accept: &str) -> Result<()> {
        let what = format!("{method} {url}");
        let res = self
            .send(
                self.http.request(method, url).header("accept", accept),
                &what,
            )
            .await?;
        let res = expect(res.status(), StatusCode::OK, &what, res).await?;
        res.bytes().await.with_context(|| format!("{what}: body"))?;
        Ok(())
    }

    /// `HEAD /v2/<repo>/blobs/<digest>`: does the repository see the blob?
    pub async fn has_blob(&self, repo: &str, digest: &str) -> Result<bool> {
        let what = format!("HEAD blob {digest} in {repo}");
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        let res = self.send(self.http.head(url), &what).await?;
        Ok(res.status() == StatusCode::OK)
    }

    /// `PUT /v2/<repo>/manifests/<tag>` of an OCI image manifest.
    pub async fn put_manifest(&self, repo: &str, tag: &str, body: Bytes) -> Result<()> {
        let what = format!("PUT manifest {repo}:{tag}");
        let url = self.url(&format!("/v2/{repo}/manifests/{tag}"))?;
        let res = self
            .send(
                self.http
                    .put(url)
                    .header("content-type", OCI_MANIFEST)
                    .body(body),
                &what,
            )
            .await?;
        expect(res.status(), StatusCode::CREATED, &what, res).await?;
        Ok(())
    }

    /// `GET /v2/<repo>/blobs/<digest>`, reading and discarding the body; returns its length.
    pub async fn pull_blob(&self, repo: &str, digest: &str) -> Result<u64> {
        let what = format!("GET blob {digest} in {repo}");
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        let res = self.send(self.http.get(url), &what).await?;
        let mut res = expect(res.status(), StatusCode::OK, &what, res).await?;
        let mut n = 0u64;
        while let Some(chunk) = res.chunk().await.with_context(|| format!("{what}: body"))? {
            n += chunk.len() as u64;
        }
        Ok(n)
    }

    /// One GET of a JSON list endpoint; returns the body and the next page's URL, if any.
    pub async fn get_page(&self, url: Url) -> Result<(serde_json::Value, Option<Url>)> {
        let what = format!("GET {url}");
        let res = self
            .send(self.http.request(Method::GET, url.clone()), &what)
            .await?;
        let res = expect(res.status(), StatusCode::OK, &what, res).await?;
        let next = match res.headers().get("link") {
            Some(link) => {
                let link = link
                    .to_str()
                    .with_context(|| format!("{what}: Link not text"))?;
                next_link(link).map(|l| self.url(l)).transpose()?
            }
            None => None,
        };
        let body = res
            .json::<serde_json::Value>()
            .await
            .with_context(|| format!("{what}: body is not JSON"))?;
        Ok((body, next))
    }

    /// Follows `Link: <...>; rel="next"` from `path` until the end, collecting the strings of
    /// the array `field` of each page. Returns (items, pages).
    pub async fn walk(&self, path: &str, field: &str) -> Result<(Vec<String>, u64)> {
        let mut url = Some(self.url(path)?);
        let mut items = Vec::new();
        let mut pages = 0u64;
        while let Some(u) = url.take() {
            let (body, next) = self.get_page(u).await?;
            pages += 1;
            let page = body
                .get(field)
                .and_then(|v| v.as_array())
                .map(|a| a.as_slice())
                .unwrap_or_default();
            for item in page {
                if let Some(s) = item.as_str() {
                    items.push(s.to_owned());
                }
            }
            // An empty page ends the walk even if a Link was (wrongly) sent.
            if !page.is_empty() {
                url = next;
            }
        }
        Ok((items, pages))
    }
}

/// Checks the status; on a mismatch reads the body into the error.
async fn expect(
    status: StatusCode,
    want: StatusCode,
    what: &str,
    res: Response,
) -> Result<Response> {
    if status == want {
        return Ok(res);
    }
    let body = res.text().await.unwrap_or_default();
    let body: String = body.chars().take(400).collect();
    bail!("{what}: expected {want}, got {status}: {body}")
}

/// The target of the `rel="next"` entry of a Link header.
pub fn next_link(header: &str) -> Option<&str> {
    header.split(',').find_map(|part| {
        let part = part.trim();
        let (target, params) = part.strip_prefix('<')?.split_once('>')?;
        params
            .split(';')
            .map(str::trim)
            .any(|p| p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next"))
            .then_some(target)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_of_either_registry() {
        assert_eq!(
            next_link(r#"</v2/_catalog?last=a%2Fb&n=100>; rel="next""#),
            Some("/v2/_catalog?last=a%2Fb&n=100")
        );
        assert_eq!(
            next_link(r#"</v2/_catalog?n=100&last=x>; rel="next""#),
            Some("/v2/_catalog?n=100&last=x")
        );
        assert_eq!(
            next_link(r#"</x>; rel="prev", </y>; rel="next""#),
            Some("/y")
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
        assert_eq!(next_link(""), None);
    }

    #[test]
    fn locations_resolve_against_the_base() {
        let r = Registry::new("http://127.0.0.1:5000").unwrap();
        assert_eq!(
            r.url("/v2/a/blobs/uploads/1?_state=x").unwrap().as_str(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/1?_state=x"
        );
        assert_eq!(
            r.url("http://127.0.0.1:6000/v2/a/blobs/uploads/2")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:6000/v2/a/blobs/uploads/2"
        );
    }
}
