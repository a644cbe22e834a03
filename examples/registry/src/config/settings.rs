//! The resolved settings of each command, made from its argument groups and the
//! layers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ArgMatches;
use registry_core::auth::NamePattern;

use super::*;

/// Where a command's blobs and metadata live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stores {
    pub storage: StorageUrl,
    pub metadata: MetadataUrl,
}

/// What every command resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    pub metadata: MetadataUrl,
    pub log_format: LogFormat,
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub log_format: LogFormat,
    pub stores: Stores,
    pub gc: GcSettings,
    pub listen: SocketAddr,
    pub redirect_min_size: Option<u64>,
    /// `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    pub webhooks: WebhookSettings,
    pub access: AccessSettings,
    pub policy: PolicySettings,
    pub connections: ConnectionSettings,
    pub uploads: UploadSettings,
    pub upstreams: UpstreamSettings,
    pub rate_limits: registry_core::ratelimit::RateLimits,
    pub pull_counts: bool,
    /// `--quota` flags and `[[quota]]` tables.
    pub quotas: Vec<QuotaSpec>,
    /// `[[mirror]]` tables (their files are read when the server starts).
    pub mirrors: Vec<MirrorSpec>,
    /// `[[retention]]` tables, applied every `retention_interval` (`None`: off).
    pub retention: Vec<RetentionSpec>,
    pub retention_interval: Option<Duration>,
    /// Serve the web UI under `/ui/`.
    pub ui: bool,
}

/// What `retention` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRun {
    pub log_format: LogFormat,
    pub stores: Stores,
    pub rules: Vec<RetentionSpec>,
    pub immutable_tags: Vec<NamePattern>,
}

/// The pull-through cache's upstreams (their files are read when the server starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub upstreams: Vec<UpstreamSpec>,
    pub tag_ttl: Duration,
    pub cache_ttl: Option<Duration>,
    pub cache_max_bytes: Option<u64>,
}

/// Upload sessions: how long an idle one lives, how many may be open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadSettings {
    pub expiry: Duration,
    /// `None`: no limit.
    pub max_open: Option<u64>,
}

/// What `gc` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcRun {
    pub log_format: LogFormat,
    pub stores: Stores,
    pub gc: GcSettings,
}

impl CommonArgs {
    pub fn settings(&self, layers: &Layers) -> Result<Common, ConfigError> {
        let me = layers.resolve(self)?;
        Ok(Common {
            metadata: parse_metadata(&me.metadata)?,
            log_format: parse_log_format(&me.log_format)?,
        })
    }

    /// The config file named by `--config` (or `REGISTRY_CONFIG`), read; `matches` are
    /// the subcommand's.
    pub fn layers<'a>(&self, matches: &'a ArgMatches) -> Result<Layers<'a>, ConfigError> {
        Layers::load(matches, self.config.as_deref())
    }
}

impl StorageArgs {
    fn settings(&self, layers: &Layers) -> Result<StorageUrl, ConfigError> {
        parse_storage(&layers.resolve(self)?.storage)
    }
}

impl GcArgs {
    /// `interval`: the background collector's (`serve`), or `None` (`gc`).
    fn settings(
        &self,
        layers: &Layers,
        interval: Option<Duration>,
    ) -> Result<GcSettings, ConfigError> {
        let me = layers.resolve(self)?;
        Ok(GcSettings {
            grace: parse_duration("gc-grace", &me.gc_grace)?,
            interval,
            untagged_ttl: me
                .gc_untagged_ttl
                .map(|u| parse_duration("gc-untagged-ttl", &u))
                .transpose()?,
        })
    }
}

impl ConnectionArgs {
    fn settings(&self, layers: &Layers) -> Result<ConnectionSettings, ConfigError> {
        let me = layers.resolve(self)?;
        if me.max_connections == 0 {
            return Err(ConfigError::Zero {
                setting: "max-connections",
            });
        }
        Ok(ConnectionSettings {
            idle_timeout: positive_duration("idle-timeout", &me.idle_timeout)?,
            header_timeout: positive_duration("header-timeout", &me.header_timeout)?,
            body_timeout: positive_duration("body-timeout", &me.body_timeout)?,
            max_connections: me.max_connections,
        })
    }
}

impl AccessArgs {
    fn settings(&self, layers: &Layers) -> Result<(AccessSettings, PolicySettings), ConfigError> {
        let me = layers.resolve(self)?;
        let access = AccessSettings {
            auth: me.auth()?,
            access_policy: me.access_policy.clone(),
        };
        let policy = PolicySettings {
            read_only: me.read_only,
            immutable_tags: me
                .immutable_tags
                .iter()
                .map(|p| p.trim())
                .filter(|p| !p.is_empty())
                .map(parse_pattern)
                .collect::<Result<_, _>>()?,
            max_blob_size: me.max_blob_size,
        };
        Ok((access, policy))
    }

    /// Htpasswd, token, or nothing; both is an error, and so is half of the token settings.
    fn auth(&self) -> Result<AuthMode, ConfigError> {
        let any_token = self.token_realm.is_some()
            || self.token_service.is_some()
            || self.token_issuer.is_some()
            || self.token_key.is_some();
        if self.htpasswd.is_some() && any_token {
            return Err(ConfigError::AuthConflict);
        }
        if let Some(path) = &self.htpasswd {
            return Ok(AuthMode::Htpasswd(path.clone()));
        }
        match (
            &self.token_realm,
            &self.token_service,
            &self.token_issuer,
            &self.token_key,
        ) {
            (None, None, None, None) => Ok(AuthMode::None),
            (Some(realm), Some(service), Some(issuer), Some(key)) => {
                Ok(AuthMode::Token(TokenSettings {
                    realm: parse_token_realm(realm)?,
                    service: service.clone(),
                    issuer: issuer.clone(),
                    key: key.clone(),
                }))
            }
            (realm, service, issuer, key) => Err(ConfigError::TokenIncomplete {
                missing: [
                    ("token-realm", realm.is_none()),
                    ("token-service", service.is_none()),
                    ("token-issuer", issuer.is_none()),
                    ("token-key", key.is_none()),
                ]
                .into_iter()
                .filter_map(|(name, missing)| missing.then_some(name))
                .collect(),
            }),
        }
    }
}

impl ServeCommand {
    /// The settings of `serve`, from `layers` (see [`CommonArgs::layers`]).
    pub fn settings(&self, layers: &Layers) -> Result<Settings, ConfigError> {
        let common = self.common.settings(layers)?;
        let storage = self.storage.settings(layers)?;
        let serve = layers.resolve(&self.serve)?;
        let interval = match serve.gc_interval.trim() {
            "off" => None,
            other => Some(parse_duration("gc-interval", other)?),
        };
        let (access, policy) = self.access.settings(layers)?;
        let retention = layers.resolve(&self.retention)?.retention;
        if !serve.pull_counts {
            let by_pull = retention
                .iter()
                .position(|r| r.not_pulled_for.is_some())
                .map(|i| format!("[[retention]] {} (`not_pulled_for`)", i + 1));
            let setting = by_pull
                .or_else(|| serve.cache_ttl.as_ref().map(|_| "--cache-ttl".into()))
                .or_else(|| serve.cache_max_bytes.map(|_| "--cache-max-bytes".into()));
            if let Some(setting) = setting {
                return Err(ConfigError::NeedsPullCounts { setting });
            }
        }
        Ok(Settings {
            log_format: common.log_format,
            stores: Stores {
                storage,
                metadata: common.metadata,
            },
            gc: self.gc.settings(layers, interval)?,
            listen: parse_listen(&serve.listen)?,
            redirect_min_size: serve.redirect_min_size,
            tls: parse_tls(serve.tls_cert, serve.tls_key)?,
            webhooks: WebhookSettings {
                urls: serve
                    .webhook_url
                    .iter()
                    .filter(|u| !u.trim().is_empty())
                    .map(|u| parse_webhook_url(u))
                    .collect::<Result<_, _>>()?,
                timeout: parse_duration("webhook-timeout", &serve.webhook_timeout)?,
            },
            access,
            policy,
            connections: self.connections.settings(layers)?,
            quotas: layers.resolve(&self.quotas)?.quota,
            uploads: UploadSettings {
                expiry: positive_duration("upload-expiry", &serve.upload_expiry)?,
                max_open: parse_limit("max-uploads", &serve.max_uploads)?,
            },
            upstreams: UpstreamSettings {
                upstreams: serve.upstream.clone(),
                tag_ttl: parse_duration("upstream-tag-ttl", &serve.upstream_tag_ttl)?,
                cache_ttl: serve
                    .cache_ttl
                    .as_deref()
                    .map(|d| positive_duration("cache-ttl", d))
                    .transpose()?,
                cache_max_bytes: serve.cache_max_bytes,
            },
            rate_limits: registry_core::ratelimit::RateLimits::default()
                .with_pulls(parse_rate_limit(
                    "pull-rate-limit",
                    serve.pull_rate_limit.as_deref(),
                )?)
                .with_writes(parse_rate_limit(
                    "write-rate-limit",
                    serve.write_rate_limit.as_deref(),
                )?),
            pull_counts: serve.pull_counts,
            mirrors: serve.mirror.clone(),
            retention,
            retention_interval: match serve.retention_interval.trim() {
                "off" => None,
                other => Some(positive_duration("retention-interval", other)?),
            },
            ui: serve.ui,
        })
    }
}

impl RetentionCommand {
    pub fn settings(&self, layers: &Layers) -> Result<RetentionRun, ConfigError> {
        let common = self.common.settings(layers)?;
        let (_, policy) = self.access.settings(layers)?;
        Ok(RetentionRun {
            log_format: common.log_format,
            stores: Stores {
                storage: self.storage.settings(layers)?,
                metadata: common.metadata,
            },
            rules: layers.resolve(&self.retention)?.retention,
            immutable_tags: policy.immutable_tags,
        })
    }
}

impl GcCommand {
    pub fn settings(&self, layers: &Layers) -> Result<GcRun, ConfigError> {
        let common = self.common.settings(layers)?;
        Ok(GcRun {
            log_format: common.log_format,
            stores: Stores {
                storage: self.storage.settings(layers)?,
                metadata: common.metadata,
            },
            gc: self.gc.settings(layers, None)?,
        })
    }
}

impl ImportCommand {
    pub fn settings(&self, layers: &Layers) -> Result<(LogFormat, Stores), ConfigError> {
        let common = self.common.settings(layers)?;
        let stores = Stores {
            storage: self.storage.settings(layers)?,
            metadata: common.metadata,
        };
        Ok((common.log_format, stores))
    }
}

impl SyncCommand {
    pub fn settings(&self, layers: &Layers) -> Result<(LogFormat, Stores), ConfigError> {
        let common = self.common.settings(layers)?;
        let stores = Stores {
            storage: self.storage.settings(layers)?,
            metadata: common.metadata,
        };
        Ok((common.log_format, stores))
    }
}

impl StatsCommand {
    pub fn settings(&self, layers: &Layers) -> Result<Common, ConfigError> {
        self.common.settings(layers)
    }

    /// The quotas whose usage `stats` reports.
    pub fn quotas(&self, layers: &Layers) -> Result<Vec<QuotaSpec>, ConfigError> {
        Ok(layers.resolve(&self.quotas)?.quota)
    }
}

/// Limits on client connections (see the `server` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// At least 1.
    pub max_connections: u32,
}

/// Where blobs live.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageUrl {
    Fs(PathBuf),
    /// `s3://BUCKET/PREFIX?endpoint=..&region=..`, parsed by `storage-s3`.
    S3(String),
}

/// Where metadata lives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataUrl {
    Sqlite(PathBuf),
    /// A libpq-style URL, parsed by `metadata-postgres`.
    Postgres(String),
}

/// Garbage-collection settings of `serve` and `gc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcSettings {
    pub grace: Duration,
    /// `None`: no background collector.
    pub interval: Option<Duration>,
    pub untagged_ttl: Option<Duration>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The certificate chain and key of HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where push and delete notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    pub urls: Vec<url::Url>,
    pub timeout: Duration,
}

/// Who may call: how callers authenticate, and the rules of what they may do. Files are
/// only named here; `serve` reads them at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessSettings {
    pub auth: AuthMode,
    /// `None`: the default rules of the mode (see [`AccessArgs::access_policy`]).
    pub access_policy: Option<PathBuf>,
}

/// How callers authenticate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// Everyone is anonymous.
    #[default]
    None,
    Htpasswd(PathBuf),
    Token(TokenSettings),
}

/// Docker token authentication: where clients get tokens, and how to check them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    pub realm: url::Url,
    pub service: String,
    pub issuer: String,
    /// The token server's public key, PEM.
    pub key: PathBuf,
}

/// Registry-wide rules: read-only mode, immutable tags, blob size limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySettings {
    pub read_only: bool,
    pub immutable_tags: Vec<NamePattern>,
    pub max_blob_size: Option<u64>,
}
