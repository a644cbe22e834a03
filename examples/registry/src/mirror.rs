//! `registry sync --from URL | --to URL --repositories PATTERN [--tags REGEX]` and the
//! config file's `[[mirror]]` tables for `serve`: copies between this registry and
//! others (see `registry_core::mirror`). A `[[mirror]]` with `from` is a pull mirror,
//! synced at start and every `interval`; one with `to` is a push mirror, fed by every
//! push.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use registry_core::RegistryConfig;
use registry_core::mirror::push::PushMirrorConfig;
use registry_core::mirror::schedule::PullMirror;
use registry_core::mirror::{Direction, Remote, SyncOptions, SyncReport};
use registry_core::proxy::Credentials;
use serde::{Deserialize, Serialize};

use crate::BoxError;
use crate::config::{Stores, SyncCommand};
use crate::stats::human_bytes;

/// A pull mirror's interval when its table names none.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);

/// One `[[mirror]]` table: `from` or `to` (a URL), `repositories` (a pattern), and
/// optionally `tags` (a regular expression), `interval` (a pull mirror's, default `1h`),
/// `deletes` (a push mirror's: mirror manifest and tag deletes too, default `false`),
/// `target_prefix` (the copies go under it in the target),
/// `username` and `password_file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub repositories: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletes: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A file holding the password (first line); never the password itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

impl fmt::Display for MirrorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.from, &self.to) {
            (Some(from), _) => write!(f, "{} from {from}", self.repositories),
            (None, Some(to)) => write!(f, "{} to {to}", self.repositories),
            (None, None) => write!(f, "{}", self.repositories),
        }
    }
}

/// What a `[[mirror]]` table starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Mirror {
    Pull(PullMirror),
    Push(PushMirrorConfig),
}

impl MirrorSpec {
    /// The library's mirror; reads the password file.
    pub fn to_mirror(&self) -> Result<Mirror, String> {
        let direction = match (&self.from, &self.to) {
            (Some(from), None) => Direction::From(remote(from, self.credentials()?)?),
            (None, Some(to)) => Direction::To(remote(to, self.credentials()?)?),
            _ => return Err("give exactly one of `from` and `to`".into()),
        };
        let options = sync_options(
            direction,
            &self.repositories,
            self.tags.as_deref(),
            self.target_prefix.as_deref(),
        )?;
        match &options.direction {
            Direction::To(_) => {
                if self.interval.is_some() {
                    return Err("`interval` is for a pull mirror (`from`); a push mirror copies on every push".into());
                }
                Ok(Mirror::Push(
                    PushMirrorConfig::new(options).with_deletes(self.deletes.unwrap_or(false)),
                ))
            }
            _ => {
                if self.deletes.is_some() {
                    return Err("`deletes` is for a push mirror (`to`); a pull mirror copies, never deletes".into());
                }
                let interval = match &self.interval {
                    Some(text) => humantime::parse_duration(text.trim())
                        .map_err(|e| format!("interval {text:?}: {e}"))?,
                    None => DEFAULT_INTERVAL,
                };
                Ok(Mirror::Pull(PullMirror::new(options, interval)))
            }
        }
    }

    fn credentials(&self) -> Result<Credentials, String> {
        credentials(self.username.as_deref(), self.password_file.as_deref())
    }
}

fn remote(url: &str, credentials: Credentials) -> Result<Remote, String> {
    crate::features::check_outbound(url, "the mirror")?;
    Ok(Remote::new(url)
        .map_err(|e| e.to_string())?
        .with_credentials(credentials))
}

fn credentials(
    username: Option<&str>,
    password_file: Option<&Path>,
) -> Result<Credentials, String> {
    match (username, password_file) {
        (Some(username), Some(file)) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("password file {}: {e}", file.display()))?;
            Ok(Credentials::Basic {
                username: username.to_string(),
                password: text.lines().next().unwrap_or("").to_string(),
            })
        }
        (None, None) => Ok(Credentials::Anonymous),
        _ => Err("a username and a password file go together".into()),
    }
}

fn sync_options(
    direction: Direction,
    repositories: &str,
    tags: Option<&str>,
    target_prefix: Option<&str>,
) -> Result<SyncOptions, String> {
    let pattern = repositories
        .parse()
        .map_err(|e| format!("repositories: {e}"))?;
    let mut options = SyncOptions::new(direction, pattern);
    if let Some(tags) = tags {
        options = options.with_tags(tags.parse().map_err(|e| format!("{e}"))?);
    }
    if let Some(prefix) = target_prefix {
        let prefix = prefix
            .trim_end_matches('/')
            .parse()
            .map_err(|e| format!("target prefix {prefix:?}: {e}"))?;
        options = options.with_target_prefix(prefix);
    }
    Ok(options)
}

/// `registry sync`: one sync, then what it did and what failed. Failures do not stop
/// the run, but make it exit non-zero (run it again to retry them: what was copied is
/// skipped).
pub async fn run(stores: &Stores, cmd: &SyncCommand) -> Result<(), BoxError> {
    let creds = credentials(cmd.username.as_deref(), cmd.password_file.as_deref())?;
    let direction = match (&cmd.direction.from, &cmd.direction.to) {
        (Some(from), _) => Direction::From(remote(from, creds)?),
        (None, Some(to)) => Direction::To(remote(to, creds)?),
        // Clap lets no other combination through.
        (None, None) => return Err("give --from or --to".into()),
    };
    let options = sync_options(
        direction,
        &cmd.repositories,
        cmd.tags.as_deref(),
        cmd.target_prefix.as_deref(),
    )?;
    let registry = crate::open_registry(stores, None, RegistryConfig::default()).await?;
    let report = registry.sync(&options).await?;
    print_report(&report);
    if report.is_complete() {
        Ok(())
    } else {
        Err(format!(
            "{} could not be copied (run again to retry them)",
            report.failures.len()
        )
        .into())
    }
}

fn print_report(r: &SyncReport) {
    for failure in &r.failures {
        println!("failed: {failure}");
    }
    println!(
        "{} repositories: {} tags copied, {} already there; {} manifests ({} referrers) and {} blobs ({}) copied, {} blobs mounted",
        r.repositories,
        r.tags_copied,
        r.tags_unchanged,
        r.manifests_copied,
        r.referrers_copied,
        r.blobs_copied,
        human_bytes(r.bytes_copied),
        r.blobs_mounted,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        mirror: Vec<MirrorSpec>,
    }

    fn mirrors(text: &str) -> Result<Vec<Mirror>, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        file.mirror.iter().map(MirrorSpec::to_mirror).collect()
    }

    #[test]
    fn tables_make_pull_and_push_mirrors() {
        let got = mirrors(
            r#"
            [[mirror]]
            from = "http://registry.example.com"
            repositories = "library/*"
            tags = "^3\\."
            interval = "15m"

            [[mirror]]
            to = "http://127.0.0.1:5001"
            repositories = "*"
            deletes = true
            target_prefix = "backup/"
            "#,
        )
        .unwrap();
        let [Mirror::Pull(pull), Mirror::Push(push)] = got.as_slice() else {
            panic!("{got:?}");
        };
        assert_eq!(pull.interval, Duration::from_secs(900));
        assert!(
            pull.options
                .tags
                .as_ref()
                .is_some_and(|t| t.matches("3.20"))
        );
        assert_eq!(push.options.repositories.as_str(), "*");
        assert!(push.deletes);
        assert_eq!(
            push.options.target_prefix.as_ref().map(|p| p.as_str()),
            Some("backup")
        );
        let defaults = mirrors("[[mirror]]\nto = \"http://h\"\nrepositories = \"a\"").unwrap();
        assert!(matches!(&defaults[0], Mirror::Push(p) if !p.deletes));
        let defaults = mirrors("[[mirror]]\nfrom = \"http://h\"\nrepositories = \"a\"").unwrap();
        assert!(matches!(&defaults[0], Mirror::Pull(p) if p.interval == DEFAULT_INTERVAL));
    }

    #[test]
    fn bad_tables_say_what_is_wrong() {
        for (text, expected) in [
            (
                "from = \"http://a\"\nto = \"http://b\"\nrepositories = \"*\"",
                "exactly one",
            ),
            ("repositories = \"*\"", "exactly one"),
            (
                "to = \"http://b\"\nrepositories = \"*\"\ninterval = \"1h\"",
                "pull mirror",
            ),
            (
                "from = \"http://a\"\nrepositories = \"*\"\ndeletes = true",
                "push mirror",
            ),
            (
                "from = \"http://a\"\nrepositories = \"*\"\ninterval = \"soon\"",
                "interval",
            ),
            (
                "from = \"http://a\"\nrepositories = \"*\"\ntags = \"([\"",
                "tags",
            ),
            (
                "from = \"http://a\"\nrepositories = \"*\"\ntarget_prefix = \"Up\"",
                "target prefix",
            ),
            (
                "from = \"http://a\"\nrepositories = \"A B\"",
                "repositories",
            ),
            (
                "from = \"http://a\"\nrepositories = \"*\"\nusername = \"u\"",
                "password",
            ),
            (
                "from = \"http://a\"\nrepositories = \"*\"\nextra = 1",
                "unknown field",
            ),
        ] {
            let e = mirrors(&format!("[[mirror]]\n{text}")).unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }
}
