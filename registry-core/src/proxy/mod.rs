//! Pull-through cache: repositories under a configured prefix are served from another
//! registry (the upstream) when they are not here, and kept here.
//!
//! `hub/library/alpine:3.20` with the upstream `hub = https://registry-1.docker.io` is
//! `library/alpine:3.20` there. What is fetched is stored as ordinary content of the local
//! repository `hub/library/alpine` (tags, catalog, insights and GC see it):
//!
//! - A manifest by digest is immutable: fetched once, verified against its digest, kept.
//!   An index brings its child manifests along (they are small, and the store keeps an
//!   index only with its children).
//! - A tag is revalidated with a `HEAD` upstream once its time to live has passed; if the
//!   upstream cannot be reached or fails (5xx), the cached tag is served (stale-if-error)
//!   with a warning in the log and the `registry_proxy_stale_total` metric.
//! - A blob a cached manifest names is linked at once, and its bytes are fetched on its
//!   first pull: streamed to the client while they are written to the blob store and
//!   hashed, so the first byte reaches the client before the last one has arrived.
//!   The last chunk is held back until the digest is verified, so a corrupt or broken
//!   transfer is an error to the client and nothing partial is kept. Concurrent pulls of
//!   the same missing blob share one upstream fetch.
//! - Pushes into a proxied repository are refused (`405 UNSUPPORTED`); deletes evict.
//!
//! ```
//! use std::time::Duration;
//! use registry_core::proxy::{Credentials, ProxyConfig, Upstream};
//!
//! # fn main() -> Result<(), registry_core::proxy::UpstreamConfigError> {
//! let hub = Upstream::new("hub", "https://registry-1.docker.io")?
//!     .with_namespace("docker.io")
//!     .with_credentials(Credentials::Basic {
//!         username: "me".into(),
//!         password: "secret".into(),
//!     });
//! let config = registry_core::RegistryConfig::default()
//!     .with_proxy(ProxyConfig::default().with_upstream(hub).with_tag_ttl(Duration::from_secs(300)));
//! # let _ = config;
//! # Ok(())
//! # }
//! ```

mod blobs;
mod client;
mod evict;
mod manifests;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_spec_types::{Digest, ErrorCode, RepositoryName};
use tokio::sync::watch;

pub(crate) use blobs::get_blob;
pub use client::UpstreamError;
pub(crate) use client::{ACCEPT_MANIFESTS, RequestBody, UpstreamClient};
pub use evict::EvictionReport;
pub(crate) use evict::evict;
pub(crate) use manifests::refresh_manifest;

use crate::error::RegistryError;

/// Metric: tags served from the cache because the upstream failed.
pub const PROXY_STALE: &str = "registry_proxy_stale_total";
/// Metric: bytes fetched from upstreams.
pub const PROXY_FETCHED_BYTES: &str = "registry_proxy_fetched_bytes_total";

/// How the registry authenticates to an upstream. Never with our own clients'
/// credentials.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// No credentials (the default).
    #[default]
    Anonymous,
    /// Basic credentials, sent to a `Basic` challenge or to the token realm of a
    /// `Bearer` one.
    Basic {
        /// The user name.
        username: String,
        /// The password (never logged: `Debug` prints `***`).
        password: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
        }
    }
}

/// One upstream: repositories named `PREFIX/REST` are `REST` there.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Upstream {
    /// Repositories under this prefix come from this upstream.
    pub prefix: RepositoryName,
    /// The upstream's base URL, `http://` or `https://` (`/v2/` is appended).
    pub url: String,
    /// How the registry logs in to the upstream.
    pub credentials: Credentials,
    /// What `?ns=` names this upstream (see [`Upstream::namespace`]).
    pub namespace: Option<String>,
}

fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.rsplit('@').next().unwrap_or(authority)
}

/// An upstream setting that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid upstream {0}")]
pub struct UpstreamConfigError(String);

impl Upstream {
    /// Serves `PREFIX/REST` from `REST` at `url` (`http://` or `https://` with a host),
    /// anonymously.
    pub fn new(prefix: &str, url: &str) -> Result<Self, UpstreamConfigError> {
        let prefix: RepositoryName = prefix
            .trim_end_matches('/')
            .parse()
            .map_err(|e| UpstreamConfigError(format!("prefix {prefix:?}: {e}")))?;
        let parsed =
            url::Url::parse(url).map_err(|e| UpstreamConfigError(format!("url {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(UpstreamConfigError(format!(
                "url {url:?}: must be http:// or https:// with a host"
            )));
        }
        Ok(Upstream {
            prefix,
            url: url.trim_end_matches('/').to_string(),
            credentials: Credentials::Anonymous,
            namespace: None,
        })
    }

    /// Sets the `?ns=` name of this upstream (see [`Upstream::namespace`]).
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The namespace clients name this upstream by in `?ns=`: the one configured, or
    /// the URL's host (`registry-1.docker.io`; configure `docker.io` for Docker Hub).
    pub fn namespace(&self) -> &str {
        match &self.namespace {
            Some(ns) => ns,
            None => url_host(&self.url),
        }
    }

    /// Sets [`Upstream::credentials`].
    #[must_use]
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }
}

/// The pull-through cache's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProxyConfig {
    /// The upstreams, each under its own prefix (none by default: no cache).
    pub upstreams: Vec<Upstream>,
    /// How long a tag fetched or revalidated upstream is served without asking again.
    pub tag_ttl: Duration,
    /// Evict cached images not pulled for this long (`None`: keep them).
    pub cache_ttl: Option<Duration>,
    /// Evict the least recently pulled cached images while their blobs add up to more
    /// than this (`None`: no limit).
    pub cache_max_bytes: Option<u64>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            upstreams: Vec::new(),
            tag_ttl: Duration::from_secs(300),
            cache_ttl: None,
            cache_max_bytes: None,
        }
    }
}

impl ProxyConfig {
    /// Adds an upstream.
    #[must_use]
    pub fn with_upstream(mut self, upstream: Upstream) -> Self {
        self.upstreams.push(upstream);
        self
    }

    /// Sets [`ProxyConfig::tag_ttl`].
    #[must_use]
    pub fn with_tag_ttl(mut self, ttl: Duration) -> Self {
        self.tag_ttl = ttl;
        self
    }

    /// Sets [`ProxyConfig::cache_ttl`].
    #[must_use]
    pub fn with_cache_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// Sets [`ProxyConfig::cache_max_bytes`].
    #[must_use]
    pub fn with_cache_max_bytes(mut self, bytes: Option<u64>) -> Self {
        self.cache_max_bytes = bytes;
        self
    }
}

/// A blob fetch in flight: `Some(succeeded)` once it is over.
pub(crate) type Fetch = watch::Receiver<Option<bool>>;

/// The cache's running state: a client per upstream, when each tag was last
/// revalidated, and the blob fetches in flight.
#[derive(Debug, Default)]
pub(crate) struct Proxy {
    clients: Vec<Arc<UpstreamClient>>,
    tag_ttl: Duration,
    cache_ttl: Option<Duration>,
    cache_max_bytes: Option<u64>,
    fresh: Mutex<HashMap<(RepositoryName, String), Instant>>,
    inflight: Mutex<HashMap<(RepositoryName, Digest), Fetch>>,
}

/// A repository served by an upstream, and its name there.
pub(crate) struct Proxied<'a> {
    pub(crate) client: &'a Arc<UpstreamClient>,
    pub(crate) remote: String,
}

impl Proxy {
    /// `None` when no upstream is configured.
    pub(crate) fn new(config: &ProxyConfig) -> Option<Self> {
        let clients = config
            .upstreams
            .iter()
            .map(|u| Arc::new(UpstreamClient::new(u.clone())))
            .collect::<Vec<_>>();
        (!clients.is_empty()).then(|| Proxy {
            clients,
            tag_ttl: config.tag_ttl,
            cache_ttl: config.cache_ttl,
            cache_max_bytes: config.cache_max_bytes,
            ..Proxy::default()
        })
    }

    /// The upstream serving `repo`, if any (the longest matching prefix).
    pub(crate) fn resolve(&self, repo: &RepositoryName) -> Option<Proxied<'_>> {
        self.clients
            .iter()
            .filter_map(|c| {
                let rest = repo
                    .as_str()
                    .strip_prefix(c.upstream().prefix.as_str())?
                    .strip_prefix('/')?;
                Some((c, rest))
            })
            .max_by_key(|(c, _)| c.upstream().prefix.as_str().len())
            .map(|(client, rest)| Proxied {
                client,
                remote: rest.to_string(),
            })
    }

    /// Serves a request that names its namespace (`?ns=HOST`, the spec's "Registry
    /// Proxying") from the upstream configured for that host, under its prefix. A
    /// namespace no upstream answers for is ignored: the request is served from here.
    pub(crate) fn apply_namespace(&self, request: &mut crate::request::ApiRequest) {
        let Some(ns) = request.params.ns.as_deref() else {
            return;
        };
        let Some(repo) = request.route.repository() else {
            return;
        };
        let Some(client) = self
            .clients
            .iter()
            .find(|c| c.upstream().namespace().eq_ignore_ascii_case(ns))
        else {
            return;
        };
        let served = format!("{}/{}", client.upstream().prefix, repo);
        if let Ok(served) = served.parse::<RepositoryName>() {
            request.namespace = Some(ns.to_string());
            request.route = request.route.clone().with_repository(served);
        }
    }

    /// Refuses a push into a proxied repository. (Deletes stay allowed to whoever may
    /// delete: they evict cached content.)
    pub(crate) fn refuse_write(&self, repo: &RepositoryName) -> Result<(), RegistryError> {
        match self.resolve(repo) {
            Some(p) => Err(RegistryError::oci(
                ErrorCode::Unsupported,
                format!(
                    "{} is a pull-through cache of {}: pushes under it are refused",
                    p.client.upstream().prefix,
                    p.client.upstream().url
                ),
            )),
            None => Ok(()),
        }
    }
}

impl From<UpstreamError> for RegistryError {
    fn from(e: UpstreamError) -> Self {
        RegistryError::Upstream(e.to_string())
    }
}
