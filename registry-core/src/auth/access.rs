//! [`AccessPolicy`]: a configuration-driven [`Authorizer`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use oci_spec_types::RepositoryName;
use serde::{Deserialize, Serialize};

use super::{Action, Actions, AuthError, Authorizer, Principal};

/// A repository name pattern: a name in which `*` matches any run of characters, `/`
/// included, so `team-a/*` covers everything under `team-a/` at any depth, and `*` covers
/// every repository. Nothing else is special.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NamePattern(String);

/// A pattern holding characters no repository name (nor `*`) can hold.
#[derive(Debug, thiserror::Error)]
#[error("invalid repository pattern {0:?}: use lowercase name characters and `*`")]
pub struct PatternError(String);

impl NamePattern {
    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches the pattern.
    pub fn matches(&self, name: &str) -> bool {
        glob(self.0.as_bytes(), name.as_bytes())
    }
}

/// `*`-only glob matching, iterative with one backtrack point (linear enough for names of
/// at most 255 bytes, and no recursion a hostile pattern could blow up).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl FromStr for NamePattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.bytes().all(|c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, b'*' | b'/' | b'.' | b'_' | b'-')
            });
        if ok {
            Ok(NamePattern(s.to_string()))
        } else {
            Err(PatternError(s.to_string()))
        }
    }
}

impl TryFrom<String> for NamePattern {
    type Error = PatternError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<NamePattern> for String {
    fn from(p: NamePattern) -> String {
        p.0
    }
}

impl fmt::Debug for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One grant of an [`AccessPolicy`]: these users and groups may perform these actions on
/// repositories matching these patterns.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AccessRule {
    /// Repositories the rule covers (any pattern matching is enough).
    pub repositories: Vec<NamePattern>,
    /// User names; `*` is any authenticated user.
    #[serde(default)]
    pub users: Vec<String>,
    /// Groups (of [`AccessPolicy::groups`]) whose members the rule covers.
    #[serde(default)]
    pub groups: Vec<String>,
    /// What the rule allows on those repositories.
    pub actions: Vec<Action>,
}

impl AccessRule {
    /// A rule allowing `actions` on `repositories`, for no one until users or groups are
    /// added.
    pub fn new(
        repositories: impl IntoIterator<Item = NamePattern>,
        actions: impl IntoIterator<Item = Action>,
    ) -> Self {
        AccessRule {
            repositories: repositories.into_iter().collect(),
            users: Vec::new(),
            groups: Vec::new(),
            actions: actions.into_iter().collect(),
        }
    }

    /// Adds users the rule covers (`*`: any authenticated user).
    #[must_use]
    pub fn with_users<S: Into<String>>(mut self, users: impl IntoIterator<Item = S>) -> Self {
        self.users.extend(users.into_iter().map(Into::into));
        self
    }

    /// Adds groups the rule covers.
    #[must_use]
    pub fn with_groups<S: Into<String>>(mut self, groups: impl IntoIterator<Item = S>) -> Self {
        self.groups.extend(groups.into_iter().map(Into::into));
        self
    }
}

/// Per-repository access rules, from code or from configuration (TOML, JSON: it is
/// `serde`):
///
/// ```toml
/// public = ["library/*"]          # anyone, logged in or not, may pull these
///
/// [groups]
/// team-a = ["alice", "bob"]
///
/// [[rules]]
/// repositories = ["team-a/*"]
/// groups = ["team-a"]
/// actions = ["pull", "push", "delete"]
///
/// [[rules]]
/// repositories = ["*"]
/// users = ["*"]                   # any authenticated user
/// actions = ["pull"]
/// ```
///
/// # Behavior
/// - Rules only add: a principal's actions on a repository are the union of every rule
///   that matches both. Nothing matching means nothing allowed (private by default).
/// - Public repositories can be pulled by anonymous callers too.
/// - `/v2/` and `_catalog` are for authenticated callers; anonymous callers get a
///   challenge there (which is how `docker login` and token clients discover the realm).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AccessPolicy {
    /// Repositories anyone may pull, anonymous callers included.
    #[serde(default)]
    pub public: Vec<NamePattern>,
    /// Group name to its members' user names.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// The grants; a principal gets the union of every rule that matches.
    #[serde(default)]
    pub rules: Vec<AccessRule>,
}

impl AccessPolicy {
    /// A policy that allows nothing (private by default).
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes repositories matching `pattern` pullable by anyone.
    #[must_use]
    pub fn with_public(mut self, pattern: NamePattern) -> Self {
        self.public.push(pattern);
        self
    }

    /// Adds `members` to `group` (created if new).
    #[must_use]
    pub fn with_group<S: Into<String>>(
        mut self,
        group: impl Into<String>,
        members: impl IntoIterator<Item = S>,
    ) -> Self {
        self.groups
            .entry(group.into())
            .or_default()
            .extend(members.into_iter().map(Into::into));
        self
    }

    /// Adds a rule.
    #[must_use]
    pub fn with_rule(mut self, rule: AccessRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Whether anonymous callers may pull `repository`.
    pub fn is_public(&self, repository: &str) -> bool {
        self.public.iter().any(|p| p.matches(repository))
    }

    /// The actions the policy gives `principal` on `repository` (no async, no errors:
    /// the token server calls this too).
    pub fn actions_for(&self, principal: &Principal, repository: &str) -> Actions {
        let mut actions = if self.is_public(repository) {
            Actions::from(Action::Pull)
        } else {
            Actions::NONE
        };
        let Some(user) = principal.name.as_deref() else {
            return actions;
        };
        let in_group = |g: &String| {
            self.groups
                .get(g)
                .is_some_and(|members| members.iter().any(|m| m == user))
        };
        for rule in &self.rules {
            let applies = rule.users.iter().any(|u| u == "*" || u == user)
                || rule.groups.iter().any(in_group);
            if applies && rule.repositories.iter().any(|p| p.matches(repository)) {
                actions = actions.union(rule.actions.iter().copied().collect());
            }
        }
        actions
    }
}

#[async_trait]
impl Authorizer for AccessPolicy {
    async fn allowed(
        &self,
        principal: &Principal,
        repository: &RepositoryName,
    ) -> Result<Actions, AuthError> {
        Ok(self.actions_for(principal, repository.as_str()))
    }

    async fn may_browse(&self, principal: &Principal) -> Result<bool, AuthError> {
        Ok(!principal.is_anonymous())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> NamePattern {
        s.parse()
            .unwrap_or_else(|_| NamePattern("<invalid>".into()))
    }

    #[test]
    fn patterns() {
        assert!(pat("*").matches("a/b/c"));
        assert!(pat("team-a/*").matches("team-a/x"));
        assert!(pat("team-a/*").matches("team-a/x/y"));
        assert!(!pat("team-a/*").matches("team-ab/x"));
        assert!(!pat("team-a/*").matches("team-a"));
        assert!(pat("*/app").matches("a/b/app"));
        assert!(!pat("*/app").matches("a/b/apps"));
        assert!(pat("exact").matches("exact"));
        assert!(!pat("exact").matches("exact2"));
        assert!(pat("a*b*c").matches("aXXbYYc"));
        assert!("Team/*".parse::<NamePattern>().is_err());
        assert!("".parse::<NamePattern>().is_err());
    }

    #[test]
    fn rules_add_up() {
        let policy: AccessPolicy = toml::from_str(
            r#"
            public = ["library/*"]
            [groups]
            team-a = ["alice"]
            [[rules]]
            repositories = ["team-a/*"]
            groups = ["team-a"]
            actions = ["pull", "push"]
            [[rules]]
            repositories = ["*"]
            users = ["*"]
            actions = ["pull"]
            [[rules]]
            repositories = ["team-a/scratch"]
            users = ["alice"]
            actions = ["delete"]
            "#,
        )
        .unwrap_or_default();
        let alice = Principal::user("alice");
        let bob = Principal::user("bob");
        let anon = Principal::anonymous();
        assert_eq!(
            policy.actions_for(&alice, "team-a/app"),
            Actions::NONE.with(Action::Pull).with(Action::Push)
        );
        assert_eq!(policy.actions_for(&alice, "team-a/scratch"), Actions::ALL);
        assert_eq!(policy.actions_for(&bob, "team-a/app"), Action::Pull.into());
        assert_eq!(policy.actions_for(&anon, "team-a/app"), Actions::NONE);
        assert_eq!(policy.actions_for(&anon, "library/x"), Action::Pull.into());
    }
}
