//! A small HTTP client for registry requests: resolves paths and `Location`
//! headers against the base URL, authenticates (Basic, or Docker token auth when
//! the registry challenges with `Bearer`), and reads whole responses so checks
//! can inspect status, headers and body without juggling streams.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Method, Url};

/// A request described as data, so it can be replayed after an auth challenge.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    method: Method,
    /// A path (`/v2/...`) or an absolute URL (from a `Location` header).
    target: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Option<Bytes>,
}

impl Req {
    pub(crate) fn new(method: Method, target: impl Into<String>) -> Self {
        Req {
            method,
            target: target.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub(crate) fn get(target: impl Into<String>) -> Self {
        Req::new(Method::GET, target)
    }

    pub(crate) fn head(target: impl Into<String>) -> Self {
        Req::new(Method::HEAD, target)
    }

    pub(crate) fn post(target: impl Into<String>) -> Self {
        // An explicit empty body makes the client send `Content-Length: 0`.
        Req::new(Method::POST, target).body(Bytes::new())
    }

    pub(crate) fn put(target: impl Into<String>) -> Self {
        Req::new(Method::PUT, target).body(Bytes::new())
    }

    pub(crate) fn patch(target: impl Into<String>) -> Self {
        Req::new(Method::PATCH, target)
    }

    pub(crate) fn delete(target: impl Into<String>) -> Self {
        Req::new(Method::DELETE, target)
    }

    pub(crate) fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_owned(), value.into()));
        self
    }

    pub(crate) fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub(crate) fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }
}

/// A fully read response.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// The URL that answered (after redirects): relative `Location`s resolve against it.
    pub(crate) url: Url,
    pub(crate) method: Method,
    /// Set when the headers arrived but the body could not be read in full
    /// (e.g. fewer bytes than `Content-Length` announced).
    pub(crate) body_error: Option<String>,
}

impl Resp {
    /// A header's value, if present and valid text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Location` header resolved to an absolute URL.
    pub(crate) fn location(&self) -> Result<String, String> {
        let raw = self
            .header("Location")
            .ok_or_else(|| format!("{} has no Location header", self.describe()))?;
        self.url
            .join(raw)
            .map(String::from)
            .map_err(|e| format!("Location header {raw:?} is not a valid URL reference: {e}"))
    }

    /// The `code`s of an OCI error body (`{"errors":[{"code":...}]}`), if any.
    pub(crate) fn error_codes(&self) -> Vec<String> {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&self.body) else {
            return Vec::new();
        };
        value["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e["code"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The body parsed as JSON.
    pub(crate) fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("{} body is not JSON: {e}", self.describe()))
    }

    /// `METHOD path -> status (body excerpt)`, for failure reasons.
    pub(crate) fn describe(&self) -> String {
        let mut s = format!("{} {} -> {}", self.method, self.url.path(), self.status);
        if !self.body.is_empty() && self.method != Method::HEAD {
            let text = String::from_utf8_lossy(&self.body);
            let excerpt: String = text.chars().take(200).collect();
            s.push_str(&format!(" ({})", excerpt.trim()));
        }
        s
    }
}

/// HTTP access to one registry.
#[derive(Debug)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: Url,
    credentials: Option<(String, String)>,
    /// Bearer tokens by repository (or `_catalog`), filled on demand.
    tokens: Mutex<HashMap<String, String>>,
}

impl Client {
    pub(crate) fn new(
        base: Url,
        credentials: Option<(String, String)>,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("oci-conformance/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            http,
            base,
            credentials,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// Sends a request; answers a `Bearer` challenge once by fetching a token.
    /// `Err` only when no HTTP response arrived at all.
    pub(crate) async fn send(&self, req: &Req) -> Result<Resp, String> {
        let mut url = self
            .base
            .join(&req.target)
            .map_err(|e| format!("cannot resolve {:?} against the base URL: {e}", req.target))?;
        if !req.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &req.query {
                pairs.append_pair(k, v);
            }
        }
        let key = scope_key(url.path());
        let token = self.cached_token(&key);
        let resp = self.send_once(req, &url, token.as_deref()).await?;
        if resp.status != 401 {
            return Ok(resp);
        }
        let Some(challenge) = resp
            .header(WWW_AUTHENTICATE.as_str())
            .and_then(parse_bearer_challenge)
        else {
            return Ok(resp);
        };
        let token = self.fetch_token(&challenge, &key).await?;
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(key, token.clone());
        }
        self.send_once(req, &url, Some(&token)).await
    }

    fn cached_token(&self, key: &str) -> Option<String> {
        self.tokens.lock().ok().and_then(|t| t.get(key).cloned())
    }

    async fn send_once(&self, req: &Req, url: &Url, token: Option<&str>) -> Result<Resp, String> {
        let mut builder = self.http.request(req.method.clone(), url.clone());
        for (name, value) in &req.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        } else if let Some((user, password)) = &self.credentials {
            builder = builder.basic_auth(user, Some(password));
        }
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        let what = format!("{} {}", req.method, url.path());
        let response = builder.send().await.map_err(|e| transport(&what, e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let final_url = response.url().clone();
        let (body, body_error) = match response.bytes().await {
            Ok(body) => (body, None),
            Err(e) => (Bytes::new(), Some(transport("reading the body", e))),
        };
        Ok(Resp {
            status,
            headers,
            body,
            url: final_url,
            method: req.method.clone(),
            body_error,
        })
    }

    async fn fetch_token(
        &self,
        challenge: &HashMap<String, String>,
        key: &str,
    ) -> Result<String, String> {
        let realm = challenge
            .get("realm")
            .ok_or("Bearer challenge without realm")?;
        let mut url = Url::parse(realm).map_err(|e| format!("bad token realm {realm:?}: {e}"))?;
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(service) = challenge.get("service") {
                pairs.append_pair("service", service);
            }
            let scope = challenge
                .get("scope")
                .cloned()
                .or_else(|| default_scope(key));
            for scope in scope.iter().flat_map(|s| s.split(' ')) {
                pairs.append_pair("scope", scope);
            }
        }
        let mut builder = self.http.get(url);
        if let Some((user, password)) = &self.credentials {
            builder = builder.basic_auth(user, Some(password));
        }
        let response = builder
            .send()
            .await
            .map_err(|e| transport("GET token", e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| transport("GET token", e))?;
        if !status.is_success() {
            return Err(format!("token endpoint {realm} answered {status}"));
        }
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("token endpoint {realm} returned non-JSON: {e}"))?;
        value["token"]
            .as_str()
            .or_else(|| value["access_token"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("token endpoint {realm} returned no token"))
    }
}

fn transport(what: &str, err: reqwest::Error) -> String {
    // `what` already names the request; reqwest's own URL would repeat it.
    let err = err.without_url();
    let mut msg = format!("{what}: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        msg.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    msg
}

/// The repository a request is about (`_catalog` for the catalog), for token caching.
fn scope_key(path: &str) -> String {
    let Some(rest) = path.strip_prefix("/v2/") else {
        return String::new();
    };
    if rest.starts_with("_catalog") {
        return "_catalog".to_owned();
    }
    ["/manifests/", "/blobs/", "/tags/", "/referrers/"]
        .iter()
        .filter_map(|marker| rest.rfind(marker))
        .min()
        .map(|i| rest[..i].to_owned())
        .unwrap_or_default()
}

fn default_scope(key: &str) -> Option<String> {
    match key {
        "" => None,
        "_catalog" => Some("registry:catalog:*".to_owned()),
        repo => Some(format!("repository:{repo}:pull,push,delete")),
    }
}

/// Parses `Bearer realm="...",service="...",scope="..."` into its parameters.
fn parse_bearer_challenge(header: &str) -> Option<HashMap<String, String>> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let value: String = if chars.peek() == Some(&'"') {
            chars.next();
            chars.by_ref().take_while(|c| *c != '"').collect()
        } else {
            chars.by_ref().take_while(|c| *c != ',').collect()
        };
        params.insert(key.trim().to_ascii_lowercase(), value);
    }
    Some(params)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn scope_key_finds_repository() {
        assert_eq!(scope_key("/v2/a/b/manifests/latest"), "a/b");
        assert_eq!(scope_key("/v2/a/blobs/uploads/x"), "a");
        assert_eq!(scope_key("/v2/_catalog"), "_catalog");
        assert_eq!(scope_key("/v2/"), "");
    }

    #[test]
    fn bearer_challenge_keeps_commas_in_quotes() {
        let c = parse_bearer_challenge(
            r#"Bearer realm="https://auth/token",service="reg",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c["realm"], "https://auth/token");
        assert_eq!(c["service"], "reg");
        assert_eq!(c["scope"], "repository:a/b:pull,push");
        assert!(parse_bearer_challenge("Basic realm=\"x\"").is_none());
    }
}
