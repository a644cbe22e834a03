//! [`TokenAuth`]: Docker token authentication. The registry never sees passwords: clients
//! get a short-lived signed JWT from a token server (the realm) and present it as a
//! `Bearer` token; the registry checks the signature with the server's public key and
//! reads what the token grants from its `access` claim.

use async_trait::async_trait;
use http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use super::htpasswd::basic_credentials;
use super::{Access, AuthError, Authenticator, Grant, Principal, quote};

/// A public key that cannot be used to check tokens.
#[derive(Debug, thiserror::Error)]
#[error("not an Ed25519, ECDSA (P-256/P-384) or RSA public key in PEM form: {0}")]
pub struct TokenKeyError(String);

/// The claims of a registry token, as the Docker token specification defines them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TokenClaims {
    /// The token server that issued the token.
    pub iss: String,
    /// The user the token was issued to; empty for an anonymous token.
    #[serde(default)]
    pub sub: String,
    /// The service (registry) the token is for.
    pub aud: Audience,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before this time (seconds since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// When the token was issued (seconds since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// The token's unique id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// What the token grants.
    #[serde(default)]
    pub access: Vec<Grant>,
}

impl TokenClaims {
    /// Claims from `issuer` for `subject`, for the service `audience`, expiring at `exp`
    /// (seconds since the Unix epoch), granting nothing yet.
    pub fn new(issuer: &str, subject: &str, audience: &str, exp: u64) -> Self {
        TokenClaims {
            iss: issuer.into(),
            sub: subject.into(),
            aud: Audience::One(audience.into()),
            exp,
            ..TokenClaims::default()
        }
    }
}

/// `aud` may be one string or an array of them (RFC 7519).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences (the registry's service must be one of them).
    Many(Vec<String>),
}

impl Default for Audience {
    fn default() -> Self {
        Audience::One(String::new())
    }
}

/// Checks Docker registry tokens: JWTs signed by the token server's key (EdDSA, ES256 or
/// ES384, RS256/384/512, whichever the PEM public key is), with `iss` = the issuer,
/// `aud` = this registry's service name, a current `exp` (and `nbf`, when present), and
/// an `access` claim listing what the holder may do.
///
/// # Behavior
/// - No `Authorization` header, a `Basic` one, or any token problem is a `401` with a
///   `Bearer realm=…,service=…,scope=…` challenge naming the scope the request needs.
///   Empty `Basic` credentials (`Basic Og==`) count as no header: the message says
///   authentication is required, not that the scheme is wrong.
/// - A valid token is authoritative: its grants are all the caller gets (intersected with
///   the authorizer, if one is configured), and a caller lacking a scope is sent a new
///   challenge rather than a `403`, so clients fetch a wider token.
#[derive(Debug)]
pub struct TokenAuth {
    realm: String,
    service: String,
    issuer: String,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
    leeway: u64,
}

impl TokenAuth {
    /// `realm`: the token server's URL, sent to clients in challenges; `service`: this
    /// registry's name, the tokens' audience; `issuer`: the token server's `iss`;
    /// `public_key_pem`: the token server's public key.
    pub fn from_pem(
        realm: impl Into<String>,
        service: impl Into<String>,
        issuer: impl Into<String>,
        public_key_pem: &[u8],
    ) -> Result<TokenAuth, TokenKeyError> {
        use Algorithm::*;
        let (key, algorithms) = if let Ok(k) = DecodingKey::from_ed_pem(public_key_pem) {
            (k, vec![EdDSA])
        } else if let Ok(k) = DecodingKey::from_ec_pem(public_key_pem) {
            (k, vec![ES256, ES384])
        } else {
            let k = DecodingKey::from_rsa_pem(public_key_pem)
                .map_err(|e| TokenKeyError(e.to_string()))?;
            (k, vec![RS256, RS384, RS512])
        };
        Ok(TokenAuth {
            realm: realm.into(),
            service: service.into(),
            issuer: issuer.into(),
            key,
            algorithms,
            leeway: 30,
        })
    }

    /// Clock skew tolerated on `exp` and `nbf`, in seconds (30 by default).
    #[must_use]
    pub fn with_leeway(mut self, seconds: u64) -> Self {
        self.leeway = seconds;
        self
    }

    /// Checks a token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<TokenClaims, AuthError> {
        // Checked against every key family's algorithms so an HS256 token "signed" with
        // the public key as an HMAC secret is refused: the header's `alg` must be one of
        // the key's own algorithms.
        let Some(first) = self.algorithms.first() else {
            return Err(AuthError::InvalidToken("no algorithm configured".into()));
        };
        let mut validation = Validation::new(*first);
        validation.algorithms = self.algorithms.clone();
        validation.set_audience(&[&self.service]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        jsonwebtoken::decode::<TokenClaims>(token, &self.key, &validation)
            .map(|data| data.claims)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))
    }
}

#[async_trait]
impl Authenticator for TokenAuth {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(AuthError::MissingCredentials);
        };
        let value = value.to_str().map_err(|_| AuthError::UnsupportedScheme)?;
        let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            // Empty Basic credentials are how clients without a login say "anonymous"
            // (see `basic_credentials`): the same answer as no header, not a complaint
            // about the scheme of credentials the client never had.
            return Err(match basic_credentials(headers) {
                Ok(None) => AuthError::MissingCredentials,
                _ => AuthError::UnsupportedScheme,
            });
        }
        let claims = self.verify(token.trim())?;
        let principal = if claims.sub.is_empty() {
            Principal::anonymous()
        } else {
            Principal::user(claims.sub)
        };
        Ok(principal.with_grants(claims.access))
    }

    fn challenge(&self, access: &Access, error: Option<&AuthError>) -> String {
        let mut out = format!(
            "Bearer realm={},service={}",
            quote(&self.realm),
            quote(&self.service)
        );
        let scopes = access.token_scopes();
        if !scopes.is_empty() {
            out.push_str(&format!(",scope={}", quote(&scopes.join(" "))));
        }
        match error {
            Some(AuthError::InvalidToken(_)) => out.push_str(",error=\"invalid_token\""),
            Some(AuthError::InsufficientScope) => out.push_str(",error=\"insufficient_scope\""),
            _ => {}
        }
        out
    }

    fn challenge_when_denied(&self) -> bool {
        true
    }
}
