//! [`Htpasswd`]: HTTP Basic authentication against an htpasswd file of bcrypt entries.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use http::{HeaderMap, header};
use sha2::{Digest as _, Sha256};

use super::{Access, AuthError, Authenticator, Principal, quote};

/// An htpasswd file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HtpasswdError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Only bcrypt entries (`htpasswd -B`) are accepted: MD5-crypt, SHA1 and plain text
    /// are too weak to guard a registry, and refusing them at start-up beats locking the
    /// user out silently at the first login.
    #[error("line {line}: expected `user:$2y$…` (a bcrypt entry, as `htpasswd -B` writes)")]
    Entry {
        /// The line number, from 1.
        line: usize,
    },
}

/// Most entries the verification cache holds before it is pruned.
const CACHE_CAPACITY: usize = 4096;

/// HTTP Basic authentication against bcrypt entries as `htpasswd -B` writes them
/// (`user:$2y$05$…`; `$2a$` and `$2b$` are accepted too).
///
/// bcrypt is slow on purpose (tens of milliseconds), and a `docker push` makes dozens of
/// requests, so successful verifications are remembered for a short time (`cache_ttl`,
/// a minute by default). The cache key is a SHA-256 of the user, the stored hash and the
/// password, so only the exact same user and password that bcrypt accepted hit it: a wrong
/// password always goes to bcrypt, and a changed entry never matches an old key.
#[derive(Debug)]
pub struct Htpasswd {
    entries: HashMap<String, String>,
    realm: String,
    cache_ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Htpasswd {
    /// Parses htpasswd text: one `user:hash` per line; blank lines and `#` comments skipped.
    pub fn parse(text: &str) -> Result<Htpasswd, HtpasswdError> {
        let mut entries = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry = line
                .split_once(':')
                .filter(|(user, hash)| !user.is_empty() && is_bcrypt(hash));
            let Some((user, hash)) = entry else {
                return Err(HtpasswdError::Entry { line: i + 1 });
            };
            entries.insert(user.to_string(), hash.to_string());
        }
        Ok(Htpasswd {
            entries,
            realm: "registry".into(),
            cache_ttl: Duration::from_secs(60),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Reads and parses an htpasswd file.
    pub fn load(path: impl AsRef<Path>) -> Result<Htpasswd, HtpasswdError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// The realm named in the `Basic` challenge.
    #[must_use]
    pub fn with_realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    /// How long a successful verification is remembered; zero disables the cache.
    #[must_use]
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// Checks a user and password: the cache first, bcrypt (on a blocking thread) after.
    pub async fn verify(&self, user: &str, password: &str) -> Result<bool, AuthError> {
        let Some(hash) = self.entries.get(user) else {
            // Spend the same bcrypt time for an unknown user, so response times do not
            // tell which user names exist.
            let dummy = dummy_hash().to_string();
            let password = password.to_string();
            let _ = tokio::task::spawn_blocking(move || bcrypt::verify(password, &dummy)).await;
            return Ok(false);
        };
        let key = cache_key(user, hash, password);
        if self.cached(&key) {
            return Ok(true);
        }
        let (hash, pw) = (hash.clone(), password.to_string());
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(pw, &hash))
            .await
            .map_err(|e| AuthError::Backend(format!("bcrypt task failed: {e}")))?
            .unwrap_or(false);
        if ok {
            self.remember(key);
        }
        Ok(ok)
    }

    fn cached(&self, key: &[u8; 32]) -> bool {
        let Ok(cache) = self.cache.lock() else {
            return false;
        };
        cache.get(key).is_some_and(|until| *until > Instant::now())
    }

    fn remember(&self, key: [u8; 32]) {
        if self.cache_ttl.is_zero() {
            return;
        }
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= CACHE_CAPACITY {
            let now = Instant::now();
            cache.retain(|_, until| *until > now);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(key, Instant::now() + self.cache_ttl);
    }
}

fn is_bcrypt(hash: &str) -> bool {
    ["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) && hash.len() == 60
}

fn cache_key(user: &str, hash: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    // Length prefixes keep ("ab","c") and ("a","bc") apart.
    for part in [user, hash, password] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| bcrypt::hash("not a password", 10).unwrap_or_default())
}

/// The user and password of a `Basic` `Authorization` header. `Ok(None)`: no credentials,
/// which is no header, and also a `Basic` header with an empty user and an empty password
/// (`Basic Og==`, or nothing after `Basic`). skopeo, podman and docker send that when they
/// have no login for the registry and it answered with a `Basic` challenge: they mean to
/// pull anonymously, and refusing them as a wrong password would shut them out of public
/// repositories.
pub(crate) fn basic_credentials(
    headers: &HeaderMap,
) -> Result<Option<(String, String)>, AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| AuthError::InvalidCredentials)?;
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthError::UnsupportedScheme);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| AuthError::InvalidCredentials)?;
    if decoded.is_empty() || decoded == b":" {
        return Ok(None);
    }
    let decoded = String::from_utf8(decoded).map_err(|_| AuthError::InvalidCredentials)?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or(AuthError::InvalidCredentials)?;
    Ok(Some((user.to_string(), password.to_string())))
}

#[async_trait]
impl Authenticator for Htpasswd {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        let Some((user, password)) = basic_credentials(headers)? else {
            return Ok(Principal::anonymous());
        };
        if self.verify(&user, &password).await? {
            Ok(Principal::user(user))
        } else {
            Err(AuthError::InvalidCredentials)
        }
    }

    fn challenge(&self, _access: &Access, _error: Option<&AuthError>) -> String {
        format!("Basic realm={}", quote(&self.realm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pw: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        if let Ok(v) = format!("Basic {v}").parse() {
            h.insert(header::AUTHORIZATION, v);
        }
        h
    }

    #[tokio::test]
    async fn verifies_and_caches_only_the_right_password() {
        let hash = bcrypt::hash("s3cret", 4)
            .unwrap_or_default()
            .replacen("$2b$", "$2y$", 1);
        let ht =
            Htpasswd::parse(&format!("# users\nalice:{hash}\n")).unwrap_or_else(|e| panic!("{e}"));
        let ok = ht.authenticate(&basic("alice", "s3cret")).await;
        assert_eq!(ok.ok(), Some(Principal::user("alice")));
        // Cached now; a wrong password must still fail, every time.
        for _ in 0..2 {
            assert!(matches!(
                ht.authenticate(&basic("alice", "s3cret!")).await,
                Err(AuthError::InvalidCredentials)
            ));
        }
        assert!(ht.authenticate(&basic("alice", "s3cret")).await.is_ok());
        assert!(matches!(
            ht.authenticate(&basic("mallory", "s3cret")).await,
            Err(AuthError::InvalidCredentials)
        ));
        assert_eq!(
            ht.authenticate(&HeaderMap::new()).await.ok(),
            Some(Principal::anonymous())
        );
    }

    fn authorization(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = value.parse() {
            h.insert(header::AUTHORIZATION, v);
        }
        h
    }

    #[tokio::test]
    async fn empty_basic_credentials_are_anonymous() {
        let ht = Htpasswd::parse("").unwrap_or_else(|e| panic!("{e}"));
        for value in [
            "Basic Og==",
            "basic Og==",
            "Basic",
            "Basic ",
            "  Basic   Og==  ",
        ] {
            assert_eq!(
                ht.authenticate(&authorization(value)).await.ok(),
                Some(Principal::anonymous()),
                "{value:?}"
            );
        }
        // Only both empty: an empty password or an empty user is still a login attempt.
        for (user, pw) in [("alice", ""), ("", "s3cret"), (" ", "")] {
            assert!(
                matches!(
                    ht.authenticate(&basic(user, pw)).await,
                    Err(AuthError::InvalidCredentials)
                ),
                "{user:?}:{pw:?}"
            );
        }
    }

    #[test]
    fn refuses_weak_entries() {
        assert!(Htpasswd::parse("bob:$apr1$abc$def").is_err());
        assert!(Htpasswd::parse("bob:plain").is_err());
        assert!(Htpasswd::parse("nocolon").is_err());
    }
}
