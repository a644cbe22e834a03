//! Authentication (who is calling) and authorisation (what they may do), as two small
//! object-safe traits with ready implementations, enforced by one middleware that
//! [`Registry::router`](crate::Registry::router) puts in front of every `/v2` handler.
//!
//! - [`Authenticator`]: turns request headers into a [`Principal`] and writes the
//!   `WWW-Authenticate` challenge. Ready: [`Anonymous`] (the default), [`Htpasswd`]
//!   (Basic, bcrypt), [`TokenAuth`] (Docker token auth: JWTs from a token server).
//! - [`Authorizer`]: which [`Actions`] a principal may perform on a repository. Ready:
//!   [`AllowAll`] (the default) and [`AccessPolicy`] (rules by user, group and name
//!   pattern, plus public repositories).
//!
//! The access a request needs ([`Access`]) is computed from the parsed
//! [`Route`](crate::route::Route), never from the raw path, so a name the grammar refuses
//! (`..`, `%2F`, uppercase) is a `NAME_INVALID` before any decision is made.
//!
//! # Decisions
//! - No credentials: the caller is anonymous and may do what the authorizer lets anonymous
//!   callers do (pull public repositories). Anything else is `401 UNAUTHORIZED` with a
//!   challenge, so clients know to log in.
//! - Credentials that do not check out: `401` with the challenge, whatever the resource.
//! - Authenticated but not allowed: `403 DENIED`; except with token auth, where the answer
//!   is `401` with a challenge for the needed scope, because that is how Docker clients
//!   learn to ask the token server for a wider token.
//! - With token auth, the token's grants are authoritative, and are intersected with the
//!   authorizer's answer (which is [`AllowAll`] unless a policy is configured).
//! - A cross-repository mount needs pull on the source. Without it, with Basic (or any
//!   authenticator that answers 403), the mount is dropped and the request is an ordinary
//!   upload start, as the spec allows when a mount cannot be done: nothing about the source
//!   is revealed and the client just uploads. With token auth the answer is `401` with a
//!   challenge naming both scopes, as distribution does: clients then fetch a token that
//!   covers the source, or fall back to uploading when the token server refuses it.

mod access;
mod htpasswd;
pub(crate) mod layer;
mod scope;
mod token;

use std::fmt;

use async_trait::async_trait;
use http::HeaderMap;
use oci_spec_types::RepositoryName;
use serde::{Deserialize, Serialize};

pub use access::{AccessPolicy, AccessRule, NamePattern};
pub use htpasswd::{Htpasswd, HtpasswdError};
pub use scope::Access;
pub use token::{Audience, TokenAuth, TokenClaims, TokenKeyError};

/// Something a caller can do to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Read manifests, blobs, tags and referrers.
    Pull,
    /// Upload blobs and manifests, mount blobs.
    Push,
    /// Delete manifests, tags and blobs.
    Delete,
}

impl Action {
    /// Every action: pull, push, delete.
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    /// The action's name in scopes and token claims: `pull`, `push`, `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    /// Parses the action names of Docker token scopes; `*` is not an action but a set
    /// ([`Actions::parse_list`]).
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Action::Pull => 1,
            Action::Push => 2,
            Action::Delete => 4,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`Action`]s. A bit set rather than a collection: decisions intersect and
/// compare these on every request.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Actions(u8);

impl Actions {
    /// No action.
    pub const NONE: Actions = Actions(0);
    /// Pull, push and delete.
    pub const ALL: Actions = Actions(7);

    /// Whether `action` is in the set.
    pub fn contains(self, action: Action) -> bool {
        self.0 & action.bit() != 0
    }

    /// Whether every action of `other` is in `self`.
    pub fn covers(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set holds no action.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The set with `action` added.
    #[must_use]
    pub fn with(self, action: Action) -> Actions {
        Actions(self.0 | action.bit())
    }

    /// The actions in either set.
    #[must_use]
    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    /// The actions in both sets.
    #[must_use]
    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    /// The actions in the set, pull before push before delete.
    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }

    /// Parses scope or claim action names; `*` means all of them, unknown names are
    /// ignored (a newer token server may know actions we do not).
    pub fn parse_list<'a>(names: impl IntoIterator<Item = &'a str>) -> Actions {
        names.into_iter().fold(Actions::NONE, |acc, n| match n {
            "*" => Actions::ALL,
            n => Action::parse(n).map_or(acc, |a| acc.with(a)),
        })
    }

    /// The names, in the usual `pull,push,delete` order.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Action::as_str).collect()
    }
}

impl FromIterator<Action> for Actions {
    fn from_iter<I: IntoIterator<Item = Action>>(iter: I) -> Self {
        iter.into_iter().fold(Actions::NONE, Actions::with)
    }
}

impl From<Action> for Actions {
    fn from(a: Action) -> Self {
        Actions::NONE.with(a)
    }
}

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// One entry of a token's `access` claim, in the Docker token format:
/// `{"type":"repository","name":"team/app","actions":["pull","push"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The resource type: `repository`, or `registry` for the catalog.
    #[serde(rename = "type")]
    pub kind: String,
    /// The resource: a repository name, or `catalog`.
    pub name: String,
    /// Action names granted (`pull`, `push`, `delete`, `*`).
    #[serde(default)]
    pub actions: Vec<String>,
}

impl Grant {
    /// A grant of `actions` on the repository `name`.
    pub fn repository(name: &str, actions: Actions) -> Grant {
        Grant {
            kind: "repository".into(),
            name: name.into(),
            actions: actions.names().into_iter().map(String::from).collect(),
        }
    }

    /// The `registry:catalog:*` grant that lets a token list the catalog.
    pub fn catalog() -> Grant {
        Grant {
            kind: "registry".into(),
            name: "catalog".into(),
            actions: vec!["*".into()],
        }
    }
}

/// Who is calling, as established by an [`Authenticator`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Principal {
    /// The user name; `None` for an anonymous caller.
    pub name: Option<String>,
    /// What a bearer token allows, when the caller presented one. `None` means "no token":
    /// the [`Authorizer`] alone decides.
    pub grants: Option<Vec<Grant>>,
}

impl Principal {
    /// A caller without credentials.
    pub fn anonymous() -> Principal {
        Principal::default()
    }

    /// An authenticated user, without a token (the authorizer alone decides).
    pub fn user(name: impl Into<String>) -> Principal {
        Principal {
            name: Some(name.into()),
            grants: None,
        }
    }

    /// The principal limited to what a bearer token's `grants` allow.
    #[must_use]
    pub fn with_grants(mut self, grants: Vec<Grant>) -> Principal {
        self.grants = Some(grants);
        self
    }

    /// Whether the caller presented no credentials.
    pub fn is_anonymous(&self) -> bool {
        self.name.is_none()
    }

    /// What the token allows on `repository` (everything when there is no token).
    pub fn granted(&self, repository: &RepositoryName) -> Actions {
        let Some(grants) = &self.grants else {
            return Actions::ALL;
        };
        grants
            .iter()
            .filter(|g| g.kind == "repository" && g.name == repository.as_str())
            .fold(Actions::NONE, |acc, g| {
                acc.union(Actions::parse_list(g.actions.iter().map(String::as_str)))
            })
    }

    /// Whether the token allows listing the catalog (always, without a token).
    pub fn may_list_catalog(&self) -> bool {
        let Some(grants) = &self.grants else {
            return true;
        };
        grants.iter().any(|g| {
            g.kind == "registry" && g.name == "catalog" && g.actions.iter().any(|a| a == "*")
        })
    }
}

/// Why a request could not be authenticated (or authorised, for a backend failure).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Credentials were required and none came.
    #[error("authentication required")]
    MissingCredentials,
    /// Unknown user or wrong password. Deliberately one variant: which of the two it was
    /// is not the client's business.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// An `Authorization` scheme this authenticator does not accept.
    #[error("unsupported authorization scheme")]
    UnsupportedScheme,
    /// A bearer token that is malformed, expired, not yet valid, for another service or
    /// issuer, or not signed by the trusted key.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// Authenticated, but without the access the request needs (reported in Bearer
    /// challenges as `error="insufficient_scope"`).
    #[error("insufficient access")]
    InsufficientScope,
    /// The authenticator or authorizer itself failed (a database, a file): a 500.
    #[error("authentication backend failed: {0}")]
    Backend(String),
}

/// Every authentication or authorisation failure that reaches a handler is a backend's
/// (the others are answered by the middleware with a challenge): a 500, cause logged.
impl From<AuthError> for crate::error::RegistryError {
    fn from(e: AuthError) -> Self {
        crate::error::RegistryError::AuthBackend(e.to_string())
    }
}

/// Establishes who sent a request.
///
/// # Behavior
/// - No credentials at all is `Ok(Principal::anonymous())`, so public repositories can be
///   pulled without logging in; the authorizer decides what anonymous callers may do.
/// - Credentials that are present but wrong are an error (never silently anonymous).
#[async_trait]
pub trait Authenticator: Send + Sync + fmt::Debug + 'static {
    /// Who sent a request with these headers (see the trait's `# Behavior`).
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError>;

    /// The `WWW-Authenticate` value that tells a client how to obtain credentials covering
    /// `access`. `error` is why the request failed, for schemes that report it (Bearer's
    /// `error="invalid_token"` / `"insufficient_scope"`).
    fn challenge(&self, access: &Access, error: Option<&AuthError>) -> String;

    /// Whether an authenticated caller who lacks access gets `401` with a fresh challenge
    /// (token auth: the client should fetch a token for the wider scope) instead of `403`.
    fn challenge_when_denied(&self) -> bool {
        false
    }

    /// Whether credentials can make a caller someone other than anonymous (false for
    /// [`Anonymous`]): the web UI offers to log in only then.
    fn identifies_callers(&self) -> bool {
        true
    }
}

/// Decides what a principal may do.
///
/// # Behavior
/// - `allowed` returns the subset of actions the principal may perform on the repository;
///   the middleware intersects it with the principal's token grants.
/// - `may_browse` says whether the principal may use registry-wide endpoints (`/v2/` and
///   `_catalog`); the catalog is then filtered to repositories where `allowed` contains
///   [`Action::Pull`].
#[async_trait]
pub trait Authorizer: Send + Sync + fmt::Debug + 'static {
    /// The actions `principal` may perform on `repository`.
    async fn allowed(
        &self,
        principal: &Principal,
        repository: &RepositoryName,
    ) -> Result<Actions, AuthError>;

    /// Whether `principal` may use the registry-wide endpoints (`/v2/`, `_catalog`).
    async fn may_browse(&self, principal: &Principal) -> Result<bool, AuthError>;
}

/// Everyone is anonymous. The default: a registry without authentication.
#[derive(Debug, Clone, Copy, Default)]
pub struct Anonymous;

#[async_trait]
impl Authenticator for Anonymous {
    async fn authenticate(&self, _headers: &HeaderMap) -> Result<Principal, AuthError> {
        Ok(Principal::anonymous())
    }

    fn challenge(&self, _access: &Access, _error: Option<&AuthError>) -> String {
        // Only reached when an authorizer refuses anonymous callers: there is nothing to
        // log in with, but a 401 must still carry a challenge.
        "Basic realm=\"registry\"".into()
    }

    fn identifies_callers(&self) -> bool {
        false
    }
}

/// Everything is allowed to everyone. The default authorizer.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

#[async_trait]
impl Authorizer for AllowAll {
    async fn allowed(&self, _: &Principal, _: &RepositoryName) -> Result<Actions, AuthError> {
        Ok(Actions::ALL)
    }

    async fn may_browse(&self, _: &Principal) -> Result<bool, AuthError> {
        Ok(true)
    }
}

/// The actions a principal may really perform on `repository`: the authorizer's answer
/// intersected with the principal's token grants.
pub async fn effective_actions(
    authorizer: &dyn Authorizer,
    principal: &Principal,
    repository: &RepositoryName,
) -> Result<Actions, AuthError> {
    let granted = principal.granted(repository);
    if granted.is_empty() {
        return Ok(granted);
    }
    Ok(authorizer
        .allowed(principal, repository)
        .await?
        .intersect(granted))
}

/// Quotes a value for a `WWW-Authenticate` parameter (escaping `"` and `\`).
pub(crate) fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}
