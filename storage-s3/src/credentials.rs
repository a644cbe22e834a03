//! Credentials and region from where the AWS tools keep them, in the order the AWS SDKs
//! look:
//!
//! 1. `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally `AWS_SESSION_TOKEN`
//!    (skipped when a profile is named explicitly in the configuration);
//! 2. the profile (`profile=` in the URL, else `AWS_PROFILE`, else `default`) in the shared
//!    credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`, sections
//!    `[name]`), then in the shared config file (`AWS_CONFIG_FILE`, else `~/.aws/config`,
//!    sections `[profile name]`, or `[default]`).
//!
//! The region, when the configuration does not set one, comes from `AWS_REGION`,
//! `AWS_DEFAULT_REGION`, or the profile's `region` in the config file.
//!
//! Not supported: SSO, `credential_process`, assumed roles, instance metadata. Pass
//! credentials from those explicitly with [`S3Config::with_credentials`].
//!
//! [`S3Config::with_credentials`]: crate::S3Config::with_credentials

use std::path::PathBuf;

use ini::Ini;

/// An access key, its secret and an optional session token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub(crate) access_key: String,
    pub(crate) secret_key: String,
    pub(crate) session_token: Option<String>,
}

impl Credentials {
    /// An access key and its secret.
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Credentials {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            session_token: None,
        }
    }

    /// A temporary credential's session token (`AWS_SESSION_TOKEN`).
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(token.into());
        self
    }

    /// The access key id (the secret is never shown, `Debug` included).
    pub fn access_key(&self) -> &str {
        &self.access_key
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret or the token: configurations get logged.
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where the environment is read from (the process environment, or a map in tests).
pub(crate) trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug)]
pub(crate) struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

fn home(env: &dyn Env) -> Option<PathBuf> {
    env.var("HOME")
        .or_else(|| env.var("USERPROFILE"))
        .map(PathBuf::from)
}

fn credentials_file(env: &dyn Env) -> Option<PathBuf> {
    env.var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| home(env).map(|h| h.join(".aws").join("credentials")))
}

fn config_file(env: &dyn Env) -> Option<PathBuf> {
    env.var("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| home(env).map(|h| h.join(".aws").join("config")))
}

/// A file that does not exist is no error (most machines have no `~/.aws`); one that exists
/// but does not parse is.
fn load(path: Option<PathBuf>) -> Result<Option<Ini>, String> {
    let Some(path) = path else { return Ok(None) };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ini::load_from_str(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn profile_name(env: &dyn Env, explicit: Option<&str>) -> String {
    explicit
        .map(str::to_string)
        .or_else(|| env.var("AWS_PROFILE"))
        .unwrap_or_else(|| "default".to_string())
}

fn from_section(ini: &Ini, section: &str) -> Option<Credentials> {
    let s = ini.section(Some(section))?;
    let key = s.get("aws_access_key_id")?.trim();
    let secret = s.get("aws_secret_access_key")?.trim();
    if key.is_empty() || secret.is_empty() {
        return None;
    }
    let mut c = Credentials::new(key, secret);
    if let Some(token) = s
        .get("aws_session_token")
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        c = c.with_session_token(token);
    }
    Some(c)
}

/// The credentials of the environment or the shared files; `Ok(None)` if there are none.
pub(crate) fn resolve(env: &dyn Env, profile: Option<&str>) -> Result<Option<Credentials>, String> {
    if profile.is_none()
        && let (Some(key), Some(secret)) = (
            env.var("AWS_ACCESS_KEY_ID"),
            env.var("AWS_SECRET_ACCESS_KEY"),
        )
    {
        let mut c = Credentials::new(key, secret);
        if let Some(token) = env.var("AWS_SESSION_TOKEN") {
            c = c.with_session_token(token);
        }
        return Ok(Some(c));
    }
    let name = profile_name(env, profile);
    if let Some(c) = load(credentials_file(env))?.and_then(|ini| from_section(&ini, &name)) {
        return Ok(Some(c));
    }
    Ok(load(config_file(env))?.and_then(|ini| from_section(&ini, &config_section(&name))))
}

/// The region of the environment or the profile, if any.
pub(crate) fn region(env: &dyn Env, profile: Option<&str>) -> Result<Option<String>, String> {
    if let Some(r) = env
        .var("AWS_REGION")
        .or_else(|| env.var("AWS_DEFAULT_REGION"))
    {
        return Ok(Some(r));
    }
    let name = profile_name(env, profile);
    Ok(load(config_file(env))?.and_then(|ini| {
        ini.section(Some(config_section(&name)))
            .and_then(|s| s.get("region"))
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
    }))
}

/// The config file names profiles `[profile NAME]`, except `[default]`.
fn config_section(name: &str) -> String {
    if name == "default" {
        name.to_string()
    } else {
        format!("profile {name}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct MapEnv(HashMap<&'static str, String>);

    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    fn env(vars: &[(&'static str, &str)]) -> MapEnv {
        MapEnv(vars.iter().map(|(k, v)| (*k, v.to_string())).collect())
    }

    #[test]
    fn environment_variables_first() {
        let e = env(&[
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SK"),
            ("AWS_SESSION_TOKEN", "T"),
            ("HOME", "/nonexistent"),
        ]);
        let c = resolve(&e, None).unwrap().unwrap();
        assert_eq!(c, Credentials::new("AK", "SK").with_session_token("T"));
        assert!(!format!("{c:?}").contains("SK"), "Debug shows the secret");
    }

    #[test]
    fn shared_files() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        let config = dir.path().join("config");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = D\naws_secret_access_key = DS\n\n\
             [ci]\naws_access_key_id=C\naws_secret_access_key=CS\naws_session_token=CT\n",
        )
        .unwrap();
        std::fs::write(
            &config,
            "[default]\nregion = eu-west-1\n\n[profile other]\nregion = us-west-2\n\
             aws_access_key_id = O\naws_secret_access_key = OS\ns3 =\n  max_concurrent_requests = 4\n",
        )
        .unwrap();
        let files = [
            ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
        ];
        let e = env(&files);
        assert_eq!(
            resolve(&e, None).unwrap(),
            Some(Credentials::new("D", "DS"))
        );
        assert_eq!(region(&e, None).unwrap().as_deref(), Some("eu-west-1"));
        assert_eq!(
            resolve(&e, Some("ci")).unwrap(),
            Some(Credentials::new("C", "CS").with_session_token("CT"))
        );
        // AWS_PROFILE picks the profile; the config file is the fallback for keys.
        let mut vars = files.to_vec();
        vars.push(("AWS_PROFILE", "other"));
        let e = env(&vars);
        assert_eq!(
            resolve(&e, None).unwrap(),
            Some(Credentials::new("O", "OS"))
        );
        assert_eq!(region(&e, None).unwrap().as_deref(), Some("us-west-2"));
        assert_eq!(resolve(&e, Some("missing")).unwrap(), None);
        // An explicit profile wins over the key variables.
        vars.push(("AWS_ACCESS_KEY_ID", "AK"));
        vars.push(("AWS_SECRET_ACCESS_KEY", "SK"));
        let e = env(&vars);
        assert_eq!(
            resolve(&e, Some("ci")).unwrap().map(|c| c.access_key),
            Some("C".to_string())
        );
        assert_eq!(
            resolve(&e, None).unwrap().map(|c| c.access_key),
            Some("AK".to_string())
        );
    }

    #[test]
    fn no_files_no_credentials() {
        let e = env(&[("HOME", "/nonexistent-home")]);
        assert_eq!(resolve(&e, None).unwrap(), None);
        assert_eq!(region(&e, None).unwrap(), None);
    }
}
