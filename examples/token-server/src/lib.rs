//! A small Docker token server: the other half of `registry_core::auth::TokenAuth`.
//!
//! Clients that a registry challenges with `Bearer realm="…/token",service=…,scope=…` come
//! here with `GET /token?service=…&scope=repository:NAME:pull,push` (and Basic credentials,
//! or none for public repositories). The server checks the user against an htpasswd file,
//! grants the requested actions that its [`AccessPolicy`] allows (the same rule format as
//! the registry's own authorizer), and answers with a signed JWT:
//! `{"token":…,"access_token":…,"expires_in":…,"issued_at":…}`.
//!
//! The logic lives in this library so tests can run the server in process; `main.rs` only
//! reads the configuration and serves [`TokenServer::router`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oci_spec_types::RepositoryName;
use registry_core::auth::{
    AccessPolicy, Actions, AuthError, Authenticator, Grant, Htpasswd, HtpasswdError, Principal,
    TokenClaims,
};
use serde::{Deserialize, Serialize};

/// The configuration file (TOML). Relative paths are relative to the file's folder.
///
/// ```toml
/// listen = "127.0.0.1:5001"
/// issuer = "token-server"
/// service = "registry"          # must match the registry's TokenAuth service
/// private_key = "token.key"     # PEM: Ed25519 (EdDSA), P-256 (ES256) or RSA (RS256)
/// htpasswd = "htpasswd"         # bcrypt entries, `htpasswd -B`
/// expires_in = 300              # seconds
///
/// [policy]                      # registry_core::auth::AccessPolicy
/// public = ["library/*"]
/// [[policy.rules]]
/// repositories = ["team-a/*"]
/// users = ["alice"]
/// actions = ["pull", "push"]
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: String,
    pub issuer: String,
    pub service: String,
    pub private_key: PathBuf,
    pub htpasswd: PathBuf,
    #[serde(default = "default_expires_in")]
    pub expires_in: u64,
    #[serde(default)]
    pub policy: AccessPolicy,
}

fn default_listen() -> String {
    "127.0.0.1:5001".into()
}

fn default_expires_in() -> u64 {
    300
}

impl Config {
    /// Reads a configuration file, resolving its relative paths against its folder.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Read(path.into(), e))?;
        let mut config: Config = toml::from_str(&text).map_err(|e| Error::Config(e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        config.private_key = dir.join(&config.private_key);
        config.htpasswd = dir.join(&config.htpasswd);
        Ok(config)
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Htpasswd(#[from] HtpasswdError),
    #[error("not an Ed25519, P-256 or RSA private key in PEM form: {0}")]
    Key(String),
    #[error("signing failed: {0}")]
    Sign(String),
}

/// The answer to a token request, in the shape Docker clients read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token: String,
    pub access_token: String,
    pub expires_in: u64,
    pub issued_at: String,
}

/// Issues tokens. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct TokenServer {
    issuer: String,
    service: String,
    expires_in: Duration,
    key: EncodingKey,
    algorithm: Algorithm,
    users: Htpasswd,
    policy: AccessPolicy,
}

impl TokenServer {
    pub fn new(
        issuer: impl Into<String>,
        service: impl Into<String>,
        private_key_pem: &[u8],
        users: Htpasswd,
        policy: AccessPolicy,
    ) -> Result<TokenServer, Error> {
        let (key, algorithm) = if let Ok(k) = EncodingKey::from_ed_pem(private_key_pem) {
            (k, Algorithm::EdDSA)
        } else if let Ok(k) = EncodingKey::from_ec_pem(private_key_pem) {
            (k, Algorithm::ES256)
        } else {
            let k = EncodingKey::from_rsa_pem(private_key_pem)
                .map_err(|e| Error::Key(e.to_string()))?;
            (k, Algorithm::RS256)
        };
        Ok(TokenServer {
            issuer: issuer.into(),
            service: service.into(),
            expires_in: Duration::from_secs(default_expires_in()),
            key,
            algorithm,
            users,
            policy,
        })
    }

    /// Builds the server a configuration describes (reads its key and htpasswd files).
    pub fn from_config(config: &Config) -> Result<TokenServer, Error> {
        let pem = std::fs::read(&config.private_key)
            .map_err(|e| Error::Read(config.private_key.clone(), e))?;
        let users = Htpasswd::load(&config.htpasswd)?.with_realm("token-server");
        Ok(Self::new(
            &config.issuer,
            &config.service,
            &pem,
            users,
            config.policy.clone(),
        )?
        .with_expires_in(Duration::from_secs(config.expires_in)))
    }

    #[must_use]
    pub fn with_expires_in(mut self, expires_in: Duration) -> Self {
        self.expires_in = expires_in;
        self
    }

    /// What `principal` gets for the requested scopes: each `repository:NAME:ACTIONS`
    /// scope yields the requested actions the policy allows (none: no grant, not an
    /// error, as the token specification asks); `registry:catalog:*` is granted to
    /// authenticated users. Scopes naming invalid repositories are ignored.
    pub fn grants(&self, principal: &Principal, scopes: &[String]) -> Vec<Grant> {
        let mut grants: Vec<Grant> = Vec::new();
        for scope in scopes.iter().flat_map(|s| s.split(' ')) {
            if scope == "registry:catalog:*" {
                if !principal.is_anonymous() && !grants.contains(&Grant::catalog()) {
                    grants.push(Grant::catalog());
                }
                continue;
            }
            let Some(("repository", rest)) = scope.split_once(':') else {
                continue;
            };
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            let Ok(name) = name.parse::<RepositoryName>() else {
                continue;
            };
            let wanted = Actions::parse_list(actions.split(','));
            let granted = self
                .policy
                .actions_for(principal, name.as_str())
                .intersect(wanted);
            if granted.is_empty() {
                continue;
            }
            match grants
                .iter_mut()
                .find(|g| g.kind == "repository" && g.name == name.as_str())
            {
                Some(g) => {
                    let merged =
                        Actions::parse_list(g.actions.iter().map(String::as_str)).union(granted);
                    *g = Grant::repository(name.as_str(), merged);
                }
                None => grants.push(Grant::repository(name.as_str(), granted)),
            }
        }
        grants
    }

    /// Signs a token for `principal` with `grants`, valid from now for `expires_in`.
    pub fn sign(&self, principal: &Principal, grants: Vec<Grant>) -> Result<TokenResponse, Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let expires_in = self.expires_in.as_secs();
        let mut claims = TokenClaims::new(
            &self.issuer,
            principal.name.as_deref().unwrap_or(""),
            &self.service,
            now.saturating_add(expires_in),
        );
        claims.nbf = Some(now);
        claims.iat = Some(now);
        claims.jti = Some(uuid::Uuid::new_v4().simple().to_string());
        claims.access = grants;
        let token = jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.key)
            .map_err(|e| Error::Sign(e.to_string()))?;
        Ok(TokenResponse {
            access_token: token.clone(),
            token,
            expires_in,
            issued_at: rfc3339(now),
        })
    }

    /// `GET /token`, the endpoint registries name as their realm.
    pub fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/token", axum::routing::get(token))
            .with_state(self)
    }
}

/// `GET /token?service=…&scope=…[&scope=…]`.
async fn token(
    State(server): State<Arc<TokenServer>>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let principal = match server.users.authenticate(&headers).await {
        Ok(p) => p,
        Err(e @ AuthError::Backend(_)) => {
            tracing::error!(error = %e, "authentication failed");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
        Err(e) => {
            let mut res = error(StatusCode::UNAUTHORIZED, &e.to_string());
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"token-server\""),
            );
            return res;
        }
    };
    let service = params.iter().find(|(k, _)| k == "service").map(|(_, v)| v);
    if service.is_some_and(|s| *s != server.service) {
        return error(StatusCode::BAD_REQUEST, "unknown service");
    }
    let scopes: Vec<String> = params
        .into_iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v)
        .collect();
    let grants = server.grants(&principal, &scopes);
    tracing::info!(user = ?principal.name, ?scopes, ?grants, "token issued");
    match server.sign(&principal, grants) {
        Ok(body) => json(StatusCode::OK, &body),
        Err(e) => {
            tracing::error!(error = %e, "cannot sign token");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "errors": [{ "code": "UNAUTHORIZED", "message": message }] });
    json(status, &body)
}

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    let content_type = [(header::CONTENT_TYPE, "application/json")];
    (status, content_type, text).into_response()
}

/// Formats Unix seconds as RFC 3339 UTC (`2024-05-01T12:00:00Z`), without a date crate:
/// days to a civil date by Howard Hinnant's algorithm.
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("token-server.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.service, "registry");
        assert!(config.private_key.ends_with("token.key"));
        let alice = Principal::user("alice");
        assert_eq!(
            config.policy.actions_for(&alice, "team-a/app"),
            Actions::ALL
        );
        assert!(config.policy.is_public("library/alpine"));
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
