//! A client of one upstream registry: the distribution API's reads (`HEAD`/`GET` of
//! manifests and blobs) with the upstream's own authentication: none, Basic, or the
//! Docker token flow (follow the `Bearer` challenge to the token realm, keep the token
//! until it expires). Our own clients' credentials never reach it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, StatusCode, header};
use oci_spec_types::{Digest, Reference};
use reqwest::Response;

use super::{Credentials, Upstream};

/// Manifest media types asked for, in the `Accept` header: everything the registry can
/// store.
pub(crate) const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.artifact.manifest.v1+json";

/// How long before its announced expiry a token is no longer used (clock skew, and the
/// time a request takes).
const TOKEN_MARGIN: Duration = Duration::from_secs(10);
/// A token's lifetime when the token server does not say (the Docker token spec's
/// default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// The upstream answered that it does not have it.
    #[error("not found upstream")]
    NotFound,
    /// The upstream could not be reached, timed out, or answered with a server error:
    /// the cases a cached copy may stand in for.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// The upstream refused our credentials or answered something we cannot use.
    #[error("upstream refused the request: {0}")]
    Refused(String),
}

impl UpstreamError {
    fn from_reqwest(e: reqwest::Error) -> Self {
        UpstreamError::Unavailable(e.to_string())
    }
}

/// A manifest as the upstream serves it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub content: bytes::Bytes,
    pub media_type: String,
}

#[derive(Debug)]
pub(crate) struct UpstreamClient {
    upstream: Upstream,
    http: reqwest::Client,
    /// Bearer tokens by scope, with the instant they stop being used.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// [`UpstreamClient::request`] answered a `Basic` challenge: it sends Basic
    /// credentials up front from then on, so a streamed body is not spent on a 401.
    basic_accepted: AtomicBool,
}

/// The body of a [`UpstreamClient::request`].
#[derive(Debug)]
pub(crate) enum RequestBody {
    Empty,
    /// Sent again if the first attempt meets a challenge.
    Bytes(bytes::Bytes),
    /// Sent once, with the credentials that worked before: a challenge is an error, and
    /// the caller starts over with a fresh stream.
    Stream(reqwest::Body),
}

impl UpstreamClient {
    pub(crate) fn new(upstream: Upstream) -> Self {
        // The builder fails only where the TLS backend cannot start, as `default` would.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        UpstreamClient {
            upstream,
            http,
            tokens: Mutex::new(HashMap::new()),
            basic_accepted: AtomicBool::new(false),
        }
    }

    pub(crate) fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The digest a tag (or digest) points at upstream, from a `HEAD`.
    pub(crate) async fn manifest_digest(
        &self,
        repo: &str,
        reference: &Reference,
    ) -> Result<Digest, UpstreamError> {
        let res = self
            .send(Method::HEAD, repo, &format!("manifests/{reference}"), true)
            .await?;
        match digest_header(res.headers()) {
            Some(d) => Ok(d),
            // Without the header (allowed for a HEAD by some registries), a GET tells.
            None => {
                let m = self.manifest(repo, reference).await?;
                Ok(Digest::sha256_of(&m.content))
            }
        }
    }

    pub(crate) async fn manifest(
        &self,
        repo: &str,
        reference: &Reference,
    ) -> Result<FetchedManifest, UpstreamError> {
        let res = self
            .send(Method::GET, repo, &format!("manifests/{reference}"), true)
            .await?;
        let media_type = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let content = res.bytes().await.map_err(UpstreamError::from_reqwest)?;
        Ok(FetchedManifest {
            content,
            media_type,
        })
    }

    /// A blob's body, streaming, and its length when the upstream says.
    pub(crate) async fn blob(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Response, UpstreamError> {
        self.send(Method::GET, repo, &format!("blobs/{digest}"), false)
            .await
    }

    /// The size of a blob upstream, from a `HEAD`.
    pub(crate) async fn blob_size(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<u64, UpstreamError> {
        let res = self
            .send(Method::HEAD, repo, &format!("blobs/{digest}"), false)
            .await?;
        res.headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| UpstreamError::Refused("blob HEAD without a Content-Length".into()))
    }

    /// One request, authenticated as the upstream asks: with a cached token for the
    /// repository's pull scope if there is one; on a challenge, once more with what it
    /// asks for.
    async fn send(
        &self,
        method: Method,
        repo: &str,
        path: &str,
        manifests: bool,
    ) -> Result<Response, UpstreamError> {
        let url = format!(
            "{}/v2/{repo}/{path}",
            self.upstream.url.trim_end_matches('/')
        );
        let scope = format!("repository:{repo}:pull");
        let build = |auth: Option<Authorization>| {
            let mut req = self.http.request(method.clone(), &url);
            if manifests {
                req = req.header(header::ACCEPT, ACCEPT_MANIFESTS);
            }
            match auth {
                Some(Authorization::Bearer(token)) => req.bearer_auth(token),
                Some(Authorization::Basic) => match &self.upstream.credentials {
                    Credentials::Basic { username, password } => {
                        req.basic_auth(username, Some(password))
                    }
                    Credentials::Anonymous => req,
                },
                None => req,
            }
        };
        let first = self.cached_token(&scope).map(Authorization::Bearer);
        let res = build(first)
            .send()
            .await
            .map_err(UpstreamError::from_reqwest)?;
        let res = if res.status() == StatusCode::UNAUTHORIZED {
            let auth = self.answer_challenge(res.headers(), &scope).await?;
            build(Some(auth))
                .send()
                .await
                .map_err(UpstreamError::from_reqwest)?
        } else {
            res
        };
        check_status(res)
    }

    /// Any request of the mirror, answered whatever its status: `target` is a path on the
    /// upstream (`/v2/...`) or an absolute URL it gave (an upload's `Location`), and
    /// `scope` the token scope to ask for (`repository:NAME:pull,push`,
    /// `registry:catalog:*`). Credentials go only to the upstream's own origin.
    pub(crate) async fn request(
        &self,
        method: Method,
        target: &str,
        scope: &str,
        headers: HeaderMap,
        body: RequestBody,
    ) -> Result<Response, UpstreamError> {
        let base = url::Url::parse(&self.upstream.url)
            .map_err(|e| UpstreamError::Refused(format!("upstream url: {e}")))?;
        let url = base
            .join(target)
            .map_err(|e| UpstreamError::Refused(format!("url {target:?}: {e}")))?;
        let same_origin = url.origin() == base.origin();
        let build = |auth: Option<&Authorization>, body: Option<reqwest::Body>| {
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(body) = body {
                req = req.body(body);
            }
            if !same_origin {
                return req;
            }
            match (auth, &self.upstream.credentials) {
                (Some(Authorization::Bearer(token)), _) => req.bearer_auth(token),
                (Some(Authorization::Basic), Credentials::Basic { username, password }) => {
                    req.basic_auth(username, Some(password))
                }
                _ => req,
            }
        };
        let first = match self.cached_token(scope) {
            Some(token) => Some(Authorization::Bearer(token)),
            None if self.basic_accepted.load(Ordering::Relaxed) => Some(Authorization::Basic),
            None => None,
        };
        let (first_body, again) = match body {
            RequestBody::Empty => (None, Some(None)),
            RequestBody::Bytes(b) => (Some(reqwest::Body::from(b.clone())), Some(Some(b))),
            RequestBody::Stream(s) => (Some(s), None),
        };
        let res = build(first.as_ref(), first_body)
            .send()
            .await
            .map_err(UpstreamError::from_reqwest)?;
        if res.status() != StatusCode::UNAUTHORIZED || !same_origin {
            return Ok(res);
        }
        let Some(again) = again else {
            return Err(UpstreamError::Refused(
                "the upstream asked for credentials in the middle of a streamed request".into(),
            ));
        };
        let auth = self.answer_challenge(res.headers(), scope).await?;
        if matches!(auth, Authorization::Basic) {
            self.basic_accepted.store(true, Ordering::Relaxed);
        }
        build(Some(&auth), again.map(reqwest::Body::from))
            .send()
            .await
            .map_err(UpstreamError::from_reqwest)
    }

    fn cached_token(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(scope)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(t, _)| t.clone())
    }

    /// What to send after a `401`: a token from the realm of a `Bearer` challenge, or our
    /// Basic credentials for a `Basic` one.
    async fn answer_challenge(
        &self,
        headers: &HeaderMap,
        scope: &str,
    ) -> Result<Authorization, UpstreamError> {
        let challenges: Vec<String> = headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        for text in &challenges {
            let Ok(parsed) = http_auth::parse_challenges(text) else {
                continue;
            };
            for c in parsed {
                if c.scheme.eq_ignore_ascii_case("bearer") {
                    let param = |name: &str| {
                        c.params
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(name))
                            .map(|(_, v)| v.to_unescaped())
                    };
                    let Some(realm) = param("realm") else {
                        continue;
                    };
                    let token = self.fetch_token(&realm, param("service"), scope).await?;
                    return Ok(Authorization::Bearer(token));
                }
                if c.scheme.eq_ignore_ascii_case("basic")
                    && matches!(self.upstream.credentials, Credentials::Basic { .. })
                {
                    return Ok(Authorization::Basic);
                }
            }
        }
        Err(UpstreamError::Refused(format!(
            "the upstream asks for credentials this registry does not have ({})",
            challenges.join("; ")
        )))
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<String>,
        scope: &str,
    ) -> Result<String, UpstreamError> {
        let mut url = url::Url::parse(realm)
            .map_err(|e| UpstreamError::Refused(format!("token realm {realm:?}: {e}")))?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("scope", scope);
            if let Some(service) = &service {
                query.append_pair("service", service);
            }
        }
        let mut req = self.http.get(url);
        if let Credentials::Basic { username, password } = &self.upstream.credentials {
            req = req.basic_auth(username, Some(password));
        }
        let res = req.send().await.map_err(UpstreamError::from_reqwest)?;
        let res = check_status(res)?;
        let body: TokenResponse = res
            .json()
            .await
            .map_err(|e| UpstreamError::Refused(format!("token answer: {e}")))?;
        let token = body
            .token
            .or(body.access_token)
            .ok_or_else(|| UpstreamError::Refused("token answer without a token".into()))?;
        let lifetime = body
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        let until = Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN);
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.insert(scope.to_string(), (token.clone(), until));
        Ok(token)
    }
}

enum Authorization {
    Bearer(String),
    Basic,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

fn digest_header(headers: &HeaderMap) -> Option<Digest> {
    headers
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn check_status(res: Response) -> Result<Response, UpstreamError> {
    let status = res.status();
    if status.is_success() {
        Ok(res)
    } else if status == StatusCode::NOT_FOUND {
        Err(UpstreamError::NotFound)
    } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Err(UpstreamError::Unavailable(format!("status {status}")))
    } else {
        Err(UpstreamError::Refused(format!("status {status}")))
    }
}
