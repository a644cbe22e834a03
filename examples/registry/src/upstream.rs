//! `--upstream PREFIX=URL` and the config file's `[[upstream]]` tables: the registries
//! `serve` caches (see `registry_core::proxy`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use registry_core::proxy::{Credentials, Upstream};
use serde::{Deserialize, Serialize};

/// One upstream as written in a flag (`hub=https://registry-1.docker.io`) or a file table
/// (`prefix`, `url`, and optionally `namespace`, `username`, `password_file`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SpecForm", deny_unknown_fields)]
pub struct UpstreamSpec {
    pub prefix: String,
    pub url: String,
    /// What `?ns=` names it (default: the URL's host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A file holding the password (first line); never the password itself in a flag or
    /// the config file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

/// The two spellings a file may use.
#[derive(Deserialize)]
#[serde(untagged)]
enum SpecForm {
    Short(String),
    Table {
        prefix: String,
        url: String,
        namespace: Option<String>,
        username: Option<String>,
        password_file: Option<PathBuf>,
    },
}

impl TryFrom<SpecForm> for UpstreamSpec {
    type Error = String;

    fn try_from(form: SpecForm) -> Result<Self, String> {
        match form {
            SpecForm::Short(s) => s.parse(),
            SpecForm::Table {
                prefix,
                url,
                namespace,
                username,
                password_file,
            } => Ok(UpstreamSpec {
                prefix,
                url,
                namespace,
                username,
                password_file,
            }),
        }
    }
}

impl FromStr for UpstreamSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (prefix, url) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected PREFIX=URL"))?;
        Ok(UpstreamSpec {
            prefix: prefix.trim().to_string(),
            url: url.trim().to_string(),
            namespace: None,
            username: None,
            password_file: None,
        })
    }
}

impl fmt::Display for UpstreamSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.prefix, self.url)
    }
}

impl UpstreamSpec {
    /// The library's upstream; reads the password file.
    pub fn to_upstream(&self) -> Result<Upstream, String> {
        crate::features::check_outbound(&self.url, "the upstream")?;
        let mut upstream = Upstream::new(&self.prefix, &self.url).map_err(|e| e.to_string())?;
        if let Some(ns) = &self.namespace {
            upstream = upstream.with_namespace(ns.clone());
        }
        match (&self.username, &self.password_file) {
            (Some(username), Some(file)) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| format!("password file {}: {e}", file.display()))?;
                let password = text.lines().next().unwrap_or("").to_string();
                Ok(upstream.with_credentials(Credentials::Basic {
                    username: username.clone(),
                    password,
                }))
            }
            (None, None) => Ok(upstream),
            _ => Err(format!(
                "upstream {}: username and password_file go together",
                self.prefix
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_table_forms() {
        let s: UpstreamSpec = "hub=https://registry-1.docker.io".parse().unwrap();
        assert_eq!(
            (s.prefix.as_str(), s.url.as_str()),
            ("hub", "https://registry-1.docker.io")
        );
        assert!("no-equals".parse::<UpstreamSpec>().is_err());
        #[derive(Deserialize)]
        struct File {
            upstream: Vec<UpstreamSpec>,
        }
        let f: File = toml::from_str(
            r#"
            upstream = ["a=http://127.0.0.1:1", { prefix = "b", url = "http://127.0.0.1:2", namespace = "b.example" }]
            "#,
        )
        .unwrap();
        assert_eq!(f.upstream[1].namespace.as_deref(), Some("b.example"));
        assert!(f.upstream[0].to_upstream().is_ok());
        let bad = UpstreamSpec {
            username: Some("u".into()),
            ..f.upstream[0].clone()
        };
        assert!(bad.to_upstream().is_err());
    }
}
