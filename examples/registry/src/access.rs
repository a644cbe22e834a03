//! Who may call `registry serve`, and the registry-wide rules: the authenticator,
//! authorizer and policy, built from the settings. Every file (htpasswd, token key, access
//! policy) is read and checked here, at start-up, so a missing or malformed one stops the
//! server before it listens instead of failing the first request.

use std::path::Path;
use std::sync::Arc;

use registry_core::auth::{
    AccessPolicy, AccessRule, Action, AllowAll, Anonymous, Authenticator, Authorizer, Htpasswd,
    HtpasswdError, TokenAuth,
};
use registry_core::{Policy, RegistryConfig};

use crate::BoxError;
use crate::config::{AccessSettings, AuthMode, PolicySettings};

/// `config` with the authenticator, authorizer and policy of `access` and `policy`.
pub fn apply(
    config: RegistryConfig,
    access: &AccessSettings,
    policy: &PolicySettings,
) -> Result<RegistryConfig, BoxError> {
    let rules = access
        .access_policy
        .as_deref()
        .map(load_access_policy)
        .transpose()?;
    let (authenticator, authorizer): (Arc<dyn Authenticator>, Arc<dyn Authorizer>) = match &access
        .auth
    {
        AuthMode::None => {
            if rules.is_some() {
                tracing::warn!(
                    "an access policy without authentication: every caller is anonymous, \
                         so only its public repositories can be pulled"
                );
            }
            (
                Arc::new(Anonymous),
                authorizer_or(rules, Arc::new(AllowAll)),
            )
        }
        AuthMode::Htpasswd(path) => {
            let users = load_htpasswd(path)?;
            tracing::info!(file = %path.display(), "HTTP Basic authentication (htpasswd)");
            (
                Arc::new(users),
                authorizer_or(rules, Arc::new(any_user_may_do_anything()?)),
            )
        }
        AuthMode::Token(token) => {
            let pem = std::fs::read(&token.key)
                .map_err(|e| format!("cannot read token key {}: {e}", token.key.display()))?;
            let auth =
                TokenAuth::from_pem(token.realm.as_str(), &token.service, &token.issuer, &pem)
                    .map_err(|e| format!("token key {}: {e}", token.key.display()))?;
            tracing::info!(realm = %token.realm, service = %token.service, "token authentication");
            // The tokens' grants are authoritative; a policy narrows them further.
            (Arc::new(auth), authorizer_or(rules, Arc::new(AllowAll)))
        }
    };
    Ok(config
        .with_authenticator(authenticator)
        .with_authorizer(authorizer)
        .with_policy(registry_policy(policy)))
}

fn authorizer_or(rules: Option<AccessPolicy>, default: Arc<dyn Authorizer>) -> Arc<dyn Authorizer> {
    match rules {
        Some(rules) => Arc::new(rules),
        None => default,
    }
}

/// The default with htpasswd: any authenticated user may do everything, anonymous callers
/// nothing (no public repositories).
fn any_user_may_do_anything() -> Result<AccessPolicy, BoxError> {
    let every_repository = "*".parse().map_err(|e| format!("{e}"))?;
    Ok(AccessPolicy::new()
        .with_rule(AccessRule::new([every_repository], Action::ALL).with_users(["*"])))
}

fn load_htpasswd(path: &Path) -> Result<Htpasswd, BoxError> {
    Htpasswd::load(path).map_err(|e| match e {
        // Already names the file.
        HtpasswdError::Read { .. } => format!("htpasswd: {e}").into(),
        other => format!("htpasswd file {}: {other}", path.display()).into(),
    })
}

pub fn load_access_policy(path: &Path) -> Result<AccessPolicy, BoxError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read access policy {}: {e}", path.display()))?;
    parse_access_policy(&text).map_err(|e| format!("access policy {}: {e}", path.display()).into())
}

fn parse_access_policy(text: &str) -> Result<AccessPolicy, toml::de::Error> {
    toml::from_str(text)
}

pub fn registry_policy(settings: &PolicySettings) -> Policy {
    let mut policy = Policy::new()
        .with_read_only(settings.read_only)
        .with_max_blob_size(settings.max_blob_size);
    for pattern in &settings.immutable_tags {
        policy = policy.with_immutable_tags(pattern.clone());
    }
    policy
}

#[cfg(test)]
mod tests {
    use registry_core::auth::{Actions, Principal};

    use super::*;

    #[test]
    fn default_htpasswd_rules_let_users_do_everything_and_anonymous_nothing() {
        let rules = any_user_may_do_anything().unwrap();
        assert_eq!(
            rules.actions_for(&Principal::user("alice"), "a/b"),
            Actions::ALL
        );
        assert_eq!(
            rules.actions_for(&Principal::anonymous(), "a/b"),
            Actions::NONE
        );
    }

    #[test]
    fn access_policy_files() {
        let rules = parse_access_policy(
            "public = [\"library/*\"]\n[[rules]]\nrepositories = [\"team/*\"]\n\
             users = [\"bob\"]\nactions = [\"pull\", \"push\"]\n",
        )
        .unwrap();
        assert!(rules.is_public("library/x"));
        assert!(
            rules
                .actions_for(&Principal::user("bob"), "team/app")
                .contains(Action::Push)
        );
        assert!(parse_access_policy("rulez = []").is_err());
        let e = load_access_policy(Path::new("/nonexistent/policy.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/policy.toml"), "{e}");
    }

    #[test]
    fn unreadable_files_fail_at_start_up() {
        let access = AccessSettings {
            auth: AuthMode::Htpasswd("/nonexistent/htpasswd".into()),
            access_policy: None,
        };
        let e = apply(
            RegistryConfig::default(),
            &access,
            &PolicySettings::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/htpasswd"), "{e}");

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let weak = dir.join("htpasswd");
        std::fs::write(&weak, "bob:plain\n").unwrap();
        let access = AccessSettings {
            auth: AuthMode::Htpasswd(weak.clone()),
            access_policy: None,
        };
        let e = apply(
            RegistryConfig::default(),
            &access,
            &PolicySettings::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bcrypt") && e.contains("line 1"), "{e}");

        let bad_key = dir.join("key.pem");
        std::fs::write(&bad_key, "not a key").unwrap();
        let access = AccessSettings {
            auth: AuthMode::Token(crate::config::TokenSettings {
                realm: "http://127.0.0.1:5001/token".parse().unwrap(),
                service: "registry".into(),
                issuer: "token-server".into(),
                key: bad_key,
            }),
            access_policy: None,
        };
        let e = apply(
            RegistryConfig::default(),
            &access,
            &PolicySettings::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("key.pem") && e.contains("PEM"), "{e}");
    }

    #[test]
    fn policy_settings_become_the_registry_policy() {
        let policy = registry_policy(&PolicySettings {
            read_only: true,
            immutable_tags: vec!["prod/*".parse().unwrap()],
            max_blob_size: Some(10),
        });
        assert!(policy.read_only);
        assert_eq!(policy.max_blob_size, Some(10));
        assert!(policy.tags_immutable(&"prod/app".parse().unwrap()));
        assert!(!policy.tags_immutable(&"dev/app".parse().unwrap()));
    }
}
