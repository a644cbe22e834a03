//! Settings of `registry serve`: command-line flags, environment variables, an optional
//! TOML file, and the URLs that pick the blob store and the metadata store.
//!
//! Precedence, per setting: flag > environment variable > config file > default. Clap
//! handles the first two (a flag wins over its `env`), [`Settings::resolve`] the rest.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use registry_core::auth::NamePattern;
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
pub const DEFAULT_STORAGE: &str = "./registry-data/blobs";
pub const DEFAULT_METADATA: &str = "sqlite://./registry-data/registry.db";
pub const DEFAULT_MAX_CONNECTIONS: u32 = 512;

/// The storage schemes this build can open.
pub const STORAGE_SCHEMES: &str = "fs:// (or a plain path) and s3://";
/// The metadata schemes this build can open.
pub const METADATA_SCHEMES: &str =
    "sqlite:// (or a plain path to a SQLite file) and postgres:// (or postgresql://)";

#[derive(Debug, Parser)]
#[command(name = "registry", version, about = "An OCI container registry.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the OCI distribution API.
    Serve(ServeArgs),
    /// Run one garbage-collection pass against the stores, then exit. Safe while a
    /// server runs on the same stores (passes take turns).
    Gc(GcArgs),
    /// Import a CNCF distribution storage root (its `rootdirectory`, the folder or S3
    /// prefix that contains `docker/registry/v2`) into the stores, or with `--rebuild`
    /// refill a lost metadata database from our own blob store, then exit. Safe to re-run.
    Import(ImportArgs),
    /// Print storage statistics from the metadata store (no server needed).
    Stats(StatsArgs),
}

/// `--from` or `--rebuild`, exactly one: clap's error for neither names both.
#[derive(Debug, Clone, Default, Args)]
#[group(id = "source", required = true, multiple = false)]
pub struct ImportArgs {
    #[command(flatten)]
    pub common: ServeArgs,
    /// The distribution storage root: the folder that contains `docker/registry/v2`
    /// (a path or `fs://PATH`), or `s3://BUCKET/ROOTDIRECTORY?endpoint=URL&region=R`
    /// (as `--storage` takes it; credentials from the `AWS_*` variables or
    /// `~/.aws/credentials`, `&profile=P` for another profile).
    #[arg(long, value_name = "PATH|URL", group = "source")]
    pub from: Option<String>,
    /// Instead of importing from elsewhere, rebuild the metadata database (`--metadata`)
    /// from the blob store (`--storage`) alone, after the database was lost: manifests are
    /// blobs, and the registry keeps records of repositories and tags next to them.
    /// Copies nothing.
    #[arg(long, group = "source")]
    pub rebuild: bool,
}

#[derive(Debug, Clone, Default, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub common: ServeArgs,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
    /// How many repositories and blobs each top list shows.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
}

#[derive(Debug, Clone, Default, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub common: ServeArgs,
    /// Print what would be deleted, and how many bytes, without deleting anything.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML file with any of the keys `listen`, `storage`, `metadata`.
    #[arg(long, env = "REGISTRY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5000]. Port 0 picks a free port.
    #[arg(long, env = "REGISTRY_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Blob storage: `fs:///abs/path` or a plain path [default: ./registry-data/blobs],
    /// or `s3://BUCKET/PREFIX?endpoint=URL&region=R` (credentials from the `AWS_*`
    /// variables or `~/.aws/credentials`).
    #[arg(long, env = "REGISTRY_STORAGE", value_name = "URL")]
    pub storage: Option<String>,
    /// Metadata database: `sqlite://relative/path`, `sqlite:///abs/path` or a plain path
    /// [default: sqlite://./registry-data/registry.db], or `postgres://user@host:port/db`.
    #[arg(long, env = "REGISTRY_METADATA", value_name = "URL")]
    pub metadata: Option<String>,
    /// Keep unreferenced blobs and links this long before garbage collection deletes them
    /// [default: 24h]. `0s` is allowed.
    #[arg(long, env = "REGISTRY_GC_GRACE", value_name = "DURATION")]
    pub gc_grace: Option<String>,
    /// How often the background garbage collector runs [default: 10m]; `off` disables it.
    #[arg(long, env = "REGISTRY_GC_INTERVAL", value_name = "DURATION")]
    pub gc_interval: Option<String>,
    /// Also delete untagged, unreferenced manifests older than this [default: keep them].
    #[arg(long, env = "REGISTRY_GC_UNTAGGED_TTL", value_name = "DURATION")]
    pub gc_untagged_ttl: Option<String>,
    /// Redirect blob downloads of at least this many bytes to presigned URLs, when the
    /// blob store can sign them (S3) [default: off].
    #[arg(long, env = "REGISTRY_REDIRECT_MIN_SIZE", value_name = "BYTES")]
    pub redirect_min_size: Option<u64>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key) [default: plain HTTP].
    #[arg(long, env = "REGISTRY_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "REGISTRY_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Log format: `text` or `json` (one JSON object per line) [default: text].
    #[arg(long, env = "REGISTRY_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Send push and delete notifications to this URL (repeatable; in the environment,
    /// comma-separated) [default: none].
    #[arg(
        long = "webhook-url",
        env = "REGISTRY_WEBHOOK_URL",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub webhook_url: Vec<String>,
    /// Time limit of one webhook delivery attempt [default: 5s].
    #[arg(long, env = "REGISTRY_WEBHOOK_TIMEOUT", value_name = "DURATION")]
    pub webhook_timeout: Option<String>,
    /// HTTP Basic authentication against this htpasswd file of bcrypt entries
    /// (`htpasswd -B`). Not together with token authentication.
    #[arg(long, env = "REGISTRY_HTPASSWD", value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,
    /// Token authentication: the token server's URL, sent to clients in challenges
    /// (needs --token-service, --token-issuer and --token-key too).
    #[arg(long, env = "REGISTRY_TOKEN_REALM", value_name = "URL")]
    pub token_realm: Option<String>,
    /// Token authentication: this registry's service name (the tokens' audience).
    #[arg(long, env = "REGISTRY_TOKEN_SERVICE", value_name = "NAME")]
    pub token_service: Option<String>,
    /// Token authentication: the token server's issuer name (the tokens' `iss`).
    #[arg(long, env = "REGISTRY_TOKEN_ISSUER", value_name = "NAME")]
    pub token_issuer: Option<String>,
    /// Token authentication: the token server's public key (PEM: Ed25519, EC or RSA).
    #[arg(long, env = "REGISTRY_TOKEN_KEY", value_name = "PEMFILE")]
    pub token_key: Option<PathBuf>,
    /// Per-repository access rules (TOML, `registry_core::auth::AccessPolicy`)
    /// [default: with --htpasswd, authenticated users may do everything and anonymous
    /// callers nothing; with token auth, the tokens' grants decide].
    #[arg(long, env = "REGISTRY_ACCESS_POLICY", value_name = "FILE")]
    pub access_policy: Option<PathBuf>,
    /// Refuse every write with 405 UNSUPPORTED; reads still work [default: false].
    /// `--read-only` alone means true.
    #[arg(
        long,
        env = "REGISTRY_READ_ONLY",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub read_only: Option<bool>,
    /// Tags of repositories matching this pattern (`*` matches anything, `/` included,
    /// e.g. `prod/*`) cannot be moved once pushed (repeatable; in the environment,
    /// comma-separated) [default: none].
    #[arg(
        long = "immutable-tags",
        env = "REGISTRY_IMMUTABLE_TAGS",
        value_name = "PATTERN",
        value_delimiter = ','
    )]
    pub immutable_tags: Vec<String>,
    /// Refuse blobs larger than this many bytes (400 SIZE_INVALID) [default: no limit].
    #[arg(long, env = "REGISTRY_MAX_BLOB_SIZE", value_name = "BYTES")]
    pub max_blob_size: Option<u64>,
    /// Close a connection with no request in flight and no bytes moving for this long
    /// [default: 30s].
    #[arg(long, env = "REGISTRY_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Time a client has to send a request's head (HTTP/1; on a keep-alive connection,
    /// counted from the end of the previous response) [default: 30s].
    #[arg(long, env = "REGISTRY_HEADER_TIMEOUT", value_name = "DURATION")]
    pub header_timeout: Option<String>,
    /// End a request whose body sends no data for this long; a stall limit, not a limit
    /// on the whole upload [default: 60s].
    #[arg(long, env = "REGISTRY_BODY_TIMEOUT", value_name = "DURATION")]
    pub body_timeout: Option<String>,
    /// Connections open at once; past it, new ones wait to be accepted [default: 512].
    #[arg(long, env = "REGISTRY_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<u32>,
}

/// The config file. Unknown keys are an error, so a typo does not pass silently.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub storage: Option<String>,
    pub metadata: Option<String>,
    pub gc_grace: Option<String>,
    pub gc_interval: Option<String>,
    pub gc_untagged_ttl: Option<String>,
    pub redirect_min_size: Option<u64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub log_format: Option<String>,
    /// One URL or a list of them.
    pub webhook_url: Option<OneOrMany>,
    pub webhook_timeout: Option<String>,
    pub htpasswd: Option<PathBuf>,
    pub token_realm: Option<String>,
    pub token_service: Option<String>,
    pub token_issuer: Option<String>,
    pub token_key: Option<PathBuf>,
    pub access_policy: Option<PathBuf>,
    pub read_only: Option<bool>,
    /// One pattern or a list of them.
    pub immutable_tags: Option<OneOrMany>,
    pub max_blob_size: Option<u64>,
    pub idle_timeout: Option<String>,
    pub header_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub max_connections: Option<u32>,
}

/// A TOML value that may be a single string or an array of strings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

impl FileConfig {
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::File {
            path: None,
            message: e.to_string(),
        })
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: Some(path.to_owned()),
            message: e.to_string(),
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::File { message, .. } => ConfigError::File {
                path: Some(path.to_owned()),
                message,
            },
            other => other,
        })
    }
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
    /// `None`: the default rules of the mode (see [`ServeArgs::access_policy`]).
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

/// Everything `serve` needs, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub listen: SocketAddr,
    pub storage: StorageUrl,
    pub metadata: MetadataUrl,
    pub gc: GcSettings,
    pub redirect_min_size: Option<u64>,
    /// `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    pub log_format: LogFormat,
    pub webhooks: WebhookSettings,
    pub access: AccessSettings,
    pub policy: PolicySettings,
    pub connections: ConnectionSettings,
}

/// Limits on client connections (see the server module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// At least 1.
    pub max_connections: u32,
}

/// Registry-wide rules: read-only mode, immutable tags, blob size limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySettings {
    pub read_only: bool,
    pub immutable_tags: Vec<NamePattern>,
    pub max_blob_size: Option<u64>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ConfigError {
    File {
        path: Option<PathBuf>,
        message: String,
    },
    Listen {
        value: String,
        message: String,
    },
    UnsupportedScheme {
        setting: &'static str,
        url: String,
        scheme: String,
        supported: &'static str,
    },
    EmptyPath {
        setting: &'static str,
        url: String,
    },
    Duration {
        setting: &'static str,
        value: String,
        message: String,
    },
    /// Only one of the certificate and the key was given.
    TlsIncomplete {
        missing: &'static str,
    },
    LogFormat {
        value: String,
    },
    WebhookUrl {
        value: String,
        message: String,
    },
    /// Both an htpasswd file and token settings.
    AuthConflict,
    /// Some but not all of the token settings.
    TokenIncomplete {
        missing: Vec<&'static str>,
    },
    TokenRealm {
        value: String,
        message: String,
    },
    Pattern {
        value: String,
        message: String,
    },
    /// A limit or timeout set to zero.
    Zero {
        setting: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::File {
                path: Some(p),
                message,
            } => write!(f, "config file {}: {message}", p.display()),
            ConfigError::File {
                path: None,
                message,
            } => write!(f, "config file: {message}"),
            ConfigError::Listen { value, message } => {
                write!(f, "invalid listen address `{value}`: {message}")
            }
            ConfigError::UnsupportedScheme {
                setting,
                url,
                scheme,
                supported,
            } => write!(
                f,
                "unsupported {setting} scheme `{scheme}://` in `{url}`: this build supports {supported}"
            ),
            ConfigError::EmptyPath { setting, url } => {
                write!(f, "{setting} URL `{url}` has no path")
            }
            ConfigError::Duration {
                setting,
                value,
                message,
            } => write!(
                f,
                "invalid {setting} `{value}`: {message} (examples: 0s, 90s, 15m, 24h, 7days)"
            ),
            ConfigError::TlsIncomplete { missing } => write!(
                f,
                "TLS needs both a certificate and a key: {missing} is missing"
            ),
            ConfigError::LogFormat { value } => {
                write!(f, "invalid log format `{value}`: expected `text` or `json`")
            }
            ConfigError::WebhookUrl { value, message } => write!(
                f,
                "invalid webhook URL `{value}`: {message} (expected http:// or https://)"
            ),
            ConfigError::AuthConflict => write!(
                f,
                "htpasswd and token authentication are mutually exclusive: \
                 give either --htpasswd or the --token-* settings, not both"
            ),
            ConfigError::TokenIncomplete { missing } => write!(
                f,
                "token authentication needs --token-realm, --token-service, --token-issuer \
                 and --token-key: missing {}",
                missing.join(", ")
            ),
            ConfigError::TokenRealm { value, message } => write!(
                f,
                "invalid token realm `{value}`: {message} (expected the token server's \
                 http:// or https:// URL)"
            ),
            ConfigError::Pattern { value, message } => {
                write!(f, "invalid immutable-tags pattern `{value}`: {message}")
            }
            ConfigError::Zero { setting } => write!(f, "{setting} must be greater than zero"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Settings {
    /// Merges flags and environment (already merged by clap, in `args`) over the config
    /// file over the defaults, and parses the result.
    pub fn resolve(args: &ServeArgs, file: &FileConfig) -> Result<Settings, ConfigError> {
        let pick = |arg: &Option<String>, file: &Option<String>, default: &str| {
            arg.clone()
                .or_else(|| file.clone())
                .unwrap_or_else(|| default.to_string())
        };
        let listen = pick(&args.listen, &file.listen, DEFAULT_LISTEN);
        let storage = pick(&args.storage, &file.storage, DEFAULT_STORAGE);
        let metadata = pick(&args.metadata, &file.metadata, DEFAULT_METADATA);
        let grace = pick(&args.gc_grace, &file.gc_grace, "24h");
        let interval = pick(&args.gc_interval, &file.gc_interval, "10m");
        let untagged = args
            .gc_untagged_ttl
            .clone()
            .or_else(|| file.gc_untagged_ttl.clone());
        Ok(Settings {
            listen: parse_listen(&listen)?,
            storage: parse_storage(&storage)?,
            metadata: parse_metadata(&metadata)?,
            gc: GcSettings {
                grace: parse_duration("gc-grace", &grace)?,
                interval: match interval.trim() {
                    "off" => None,
                    other => Some(parse_duration("gc-interval", other)?),
                },
                untagged_ttl: untagged
                    .map(|u| parse_duration("gc-untagged-ttl", &u))
                    .transpose()?,
            },
            redirect_min_size: args.redirect_min_size.or(file.redirect_min_size),
            tls: parse_tls(
                args.tls_cert.clone().or_else(|| file.tls_cert.clone()),
                args.tls_key.clone().or_else(|| file.tls_key.clone()),
            )?,
            log_format: parse_log_format(&pick(&args.log_format, &file.log_format, "text"))?,
            webhooks: WebhookSettings {
                urls: if args.webhook_url.is_empty() {
                    file.webhook_url
                        .clone()
                        .map(OneOrMany::into_vec)
                        .unwrap_or_default()
                } else {
                    args.webhook_url.clone()
                }
                .iter()
                .filter(|u| !u.trim().is_empty())
                .map(|u| parse_webhook_url(u))
                .collect::<Result<_, _>>()?,
                timeout: parse_duration(
                    "webhook-timeout",
                    &pick(&args.webhook_timeout, &file.webhook_timeout, "5s"),
                )?,
            },
            access: AccessSettings {
                auth: parse_auth(args, file)?,
                access_policy: args
                    .access_policy
                    .clone()
                    .or_else(|| file.access_policy.clone()),
            },
            policy: PolicySettings {
                read_only: args.read_only.or(file.read_only).unwrap_or(false),
                immutable_tags: if args.immutable_tags.is_empty() {
                    file.immutable_tags
                        .clone()
                        .map(OneOrMany::into_vec)
                        .unwrap_or_default()
                } else {
                    args.immutable_tags.clone()
                }
                .iter()
                .map(|p| p.trim())
                .filter(|p| !p.is_empty())
                .map(parse_pattern)
                .collect::<Result<_, _>>()?,
                max_blob_size: args.max_blob_size.or(file.max_blob_size),
            },
            connections: ConnectionSettings {
                idle_timeout: positive_duration(
                    "idle-timeout",
                    &pick(&args.idle_timeout, &file.idle_timeout, "30s"),
                )?,
                header_timeout: positive_duration(
                    "header-timeout",
                    &pick(&args.header_timeout, &file.header_timeout, "30s"),
                )?,
                body_timeout: positive_duration(
                    "body-timeout",
                    &pick(&args.body_timeout, &file.body_timeout, "60s"),
                )?,
                max_connections: match args.max_connections.or(file.max_connections) {
                    None => DEFAULT_MAX_CONNECTIONS,
                    Some(0) => {
                        return Err(ConfigError::Zero {
                            setting: "max-connections",
                        });
                    }
                    Some(n) => n,
                },
            },
        })
    }

    /// Reads the config file named by `--config`/`REGISTRY_CONFIG`, if any, and resolves.
    pub fn from_args(args: &ServeArgs) -> Result<Settings, ConfigError> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Settings::resolve(args, &file)
    }
}

pub fn parse_listen(value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|e: std::net::AddrParseError| ConfigError::Listen {
            value: value.to_string(),
            message: format!("{e} (expected IP:PORT, e.g. 127.0.0.1:5000 or [::]:5000)"),
        })
}

fn parse_tls(cert: Option<PathBuf>, key: Option<PathBuf>) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::TlsIncomplete { missing: "tls-key" }),
        (None, Some(_)) => Err(ConfigError::TlsIncomplete {
            missing: "tls-cert",
        }),
    }
}

/// Htpasswd, token, or nothing; both is an error, and so is half of the token settings.
fn parse_auth(args: &ServeArgs, file: &FileConfig) -> Result<AuthMode, ConfigError> {
    let htpasswd = args.htpasswd.clone().or_else(|| file.htpasswd.clone());
    let realm = args
        .token_realm
        .clone()
        .or_else(|| file.token_realm.clone());
    let service = args
        .token_service
        .clone()
        .or_else(|| file.token_service.clone());
    let issuer = args
        .token_issuer
        .clone()
        .or_else(|| file.token_issuer.clone());
    let key = args.token_key.clone().or_else(|| file.token_key.clone());
    let any_token = realm.is_some() || service.is_some() || issuer.is_some() || key.is_some();
    if htpasswd.is_some() && any_token {
        return Err(ConfigError::AuthConflict);
    }
    if let Some(path) = htpasswd {
        return Ok(AuthMode::Htpasswd(path));
    }
    match (realm, service, issuer, key) {
        (None, None, None, None) => Ok(AuthMode::None),
        (Some(realm), Some(service), Some(issuer), Some(key)) => {
            Ok(AuthMode::Token(TokenSettings {
                realm: parse_token_realm(&realm)?,
                service,
                issuer,
                key,
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

pub fn parse_pattern(value: &str) -> Result<NamePattern, ConfigError> {
    value.parse().map_err(|e| ConfigError::Pattern {
        value: value.to_string(),
        message: format!("{e}"),
    })
}

fn parse_token_realm(value: &str) -> Result<url::Url, ConfigError> {
    let err = |message: String| ConfigError::TokenRealm {
        value: value.to_string(),
        message,
    };
    let url = url::Url::parse(value.trim()).map_err(|e| err(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(err(format!("unsupported scheme `{}`", url.scheme())));
    }
    Ok(url)
}

pub fn parse_log_format(value: &str) -> Result<LogFormat, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "text" | "" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(ConfigError::LogFormat {
            value: value.to_string(),
        }),
    }
}

pub fn parse_webhook_url(value: &str) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(value.trim()).map_err(|e| ConfigError::WebhookUrl {
        value: value.to_string(),
        message: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::WebhookUrl {
            value: value.to_string(),
            message: format!("unsupported scheme `{}`", url.scheme()),
        });
    }
    Ok(url)
}

/// A duration that must not be zero (a zero timeout would close every connection).
fn positive_duration(setting: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(setting, value)?;
    if d.is_zero() {
        return Err(ConfigError::Zero { setting });
    }
    Ok(d)
}

pub fn parse_duration(setting: &'static str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value.trim()).map_err(|e| ConfigError::Duration {
        setting,
        value: value.to_string(),
        message: e.to_string(),
    })
}

/// Splits `scheme://rest`; `None` for a plain path.
fn split_scheme(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let is_scheme = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    is_scheme.then_some((scheme, rest))
}

fn non_empty(setting: &'static str, url: &str, path: &str) -> Result<PathBuf, ConfigError> {
    if path.is_empty() {
        return Err(ConfigError::EmptyPath {
            setting,
            url: url.to_string(),
        });
    }
    Ok(PathBuf::from(path))
}

/// `fs:///abs/path`, `fs://relative/path` or a plain path.
pub fn parse_storage(url: &str) -> Result<StorageUrl, ConfigError> {
    match split_scheme(url) {
        None => non_empty("storage", url, url).map(StorageUrl::Fs),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("fs") => {
            non_empty("storage", url, rest).map(StorageUrl::Fs)
        }
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("s3") => {
            Ok(StorageUrl::S3(url.to_string()))
        }
        Some((scheme, _)) => Err(ConfigError::UnsupportedScheme {
            setting: "storage",
            url: url.to_string(),
            scheme: scheme.to_string(),
            supported: STORAGE_SCHEMES,
        }),
    }
}

/// `sqlite://relative/path`, `sqlite:///abs/path` or a plain path.
pub fn parse_metadata(url: &str) -> Result<MetadataUrl, ConfigError> {
    match split_scheme(url) {
        None => non_empty("metadata", url, url).map(MetadataUrl::Sqlite),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("sqlite") => {
            non_empty("metadata", url, rest).map(MetadataUrl::Sqlite)
        }
        Some((scheme, _))
            if scheme.eq_ignore_ascii_case("postgres")
                || scheme.eq_ignore_ascii_case("postgresql") =>
        {
            Ok(MetadataUrl::Postgres(url.to_string()))
        }
        Some((scheme, _)) => Err(ConfigError::UnsupportedScheme {
            setting: "metadata",
            url: url.to_string(),
            scheme: scheme.to_string(),
            supported: METADATA_SCHEMES,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(listen: Option<&str>, storage: Option<&str>, metadata: Option<&str>) -> ServeArgs {
        ServeArgs {
            config: None,
            listen: listen.map(String::from),
            storage: storage.map(String::from),
            metadata: metadata.map(String::from),
            ..ServeArgs::default()
        }
    }

    #[test]
    fn defaults() {
        let s = Settings::resolve(&ServeArgs::default(), &FileConfig::default()).unwrap();
        assert_eq!(s.listen, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(
            s.storage,
            StorageUrl::Fs(PathBuf::from("./registry-data/blobs"))
        );
        assert_eq!(
            s.metadata,
            MetadataUrl::Sqlite(PathBuf::from("./registry-data/registry.db"))
        );
    }

    #[test]
    fn args_win_over_file_which_wins_over_defaults() {
        let file = FileConfig::parse(
            "listen = \"0.0.0.0:6000\"\nstorage = \"/file/blobs\"\nmetadata = \"sqlite:///file.db\"\n",
        )
        .unwrap();
        let s = Settings::resolve(&args(Some("127.0.0.1:7000"), None, None), &file).unwrap();
        assert_eq!(s.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(s.storage, StorageUrl::Fs(PathBuf::from("/file/blobs")));
        assert_eq!(s.metadata, MetadataUrl::Sqlite(PathBuf::from("/file.db")));

        let partial = FileConfig::parse("storage = \"fs:///only/storage\"").unwrap();
        let s = Settings::resolve(&args(None, None, Some("x.db")), &partial).unwrap();
        assert_eq!(s.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(s.storage, StorageUrl::Fs(PathBuf::from("/only/storage")));
        assert_eq!(s.metadata, MetadataUrl::Sqlite(PathBuf::from("x.db")));
    }

    #[test]
    fn clap_reads_flags() {
        let cli = Cli::try_parse_from([
            "registry",
            "serve",
            "--listen",
            "[::1]:5001",
            "--storage",
            "fs:///srv/blobs",
            "--metadata",
            "sqlite:///srv/registry.db",
            "--config",
            "/etc/registry.toml",
        ])
        .unwrap();
        let Command::Serve(a) = cli.command else {
            panic!("expected serve");
        };
        assert_eq!(a.listen.as_deref(), Some("[::1]:5001"));
        assert_eq!(a.storage.as_deref(), Some("fs:///srv/blobs"));
        assert_eq!(a.metadata.as_deref(), Some("sqlite:///srv/registry.db"));
        assert_eq!(a.config, Some(PathBuf::from("/etc/registry.toml")));
    }

    #[test]
    fn file_rejects_unknown_keys_and_bad_toml() {
        let e = FileConfig::parse("listn = \"x\"").unwrap_err();
        assert!(e.to_string().contains("listn"), "{e}");
        assert!(FileConfig::parse("listen = ").is_err());
        assert_eq!(FileConfig::parse("").unwrap(), FileConfig::default());
    }

    #[test]
    fn storage_urls() {
        let fs = |p: &str| Ok(StorageUrl::Fs(PathBuf::from(p)));
        assert_eq!(parse_storage("fs:///abs/path"), fs("/abs/path"));
        assert_eq!(parse_storage("fs://rel/path"), fs("rel/path"));
        assert_eq!(parse_storage("FS:///abs"), fs("/abs"));
        assert_eq!(parse_storage("/plain/abs"), fs("/plain/abs"));
        assert_eq!(parse_storage("./plain/rel"), fs("./plain/rel"));
        assert!(matches!(
            parse_storage("fs://"),
            Err(ConfigError::EmptyPath { .. })
        ));
        assert!(matches!(
            parse_storage(""),
            Err(ConfigError::EmptyPath { .. })
        ));
    }

    #[test]
    fn metadata_urls() {
        let sq = |p: &str| Ok(MetadataUrl::Sqlite(PathBuf::from(p)));
        assert_eq!(parse_metadata("sqlite:///abs/r.db"), sq("/abs/r.db"));
        assert_eq!(parse_metadata("sqlite://rel/r.db"), sq("rel/r.db"));
        assert_eq!(
            parse_metadata("sqlite://./registry-data/registry.db"),
            sq("./registry-data/registry.db")
        );
        assert_eq!(parse_metadata("/plain/r.db"), sq("/plain/r.db"));
        assert!(parse_metadata("sqlite://").is_err());
    }

    #[test]
    fn unknown_schemes_name_the_supported_ones() {
        let e = parse_storage("gs://bucket/prefix").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("gs://"), "{msg}");
        assert!(msg.contains("fs://") && msg.contains("s3://"), "{msg}");
        assert_eq!(
            parse_storage("s3://b/p?region=x"),
            Ok(StorageUrl::S3("s3://b/p?region=x".into()))
        );

        let e = parse_metadata("mysql://user@host/db").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("mysql://"), "{msg}");
        assert!(
            msg.contains("sqlite://") && msg.contains("postgres://"),
            "{msg}"
        );
        assert_eq!(
            parse_metadata("postgres://u@h:5432/db"),
            Ok(MetadataUrl::Postgres("postgres://u@h:5432/db".into()))
        );
    }

    #[test]
    fn gc_settings() {
        let s = Settings::resolve(&ServeArgs::default(), &FileConfig::default()).unwrap();
        assert_eq!(s.gc.grace, Duration::from_secs(24 * 3600));
        assert_eq!(s.gc.interval, Some(Duration::from_secs(600)));
        assert_eq!(s.gc.untagged_ttl, None);
        let file = FileConfig::parse(
            "gc_grace = \"0s\"\ngc_interval = \"off\"\ngc_untagged_ttl = \"7days\"",
        )
        .unwrap();
        let s = Settings::resolve(&ServeArgs::default(), &file).unwrap();
        assert_eq!(s.gc.grace, Duration::ZERO);
        assert_eq!(s.gc.interval, None);
        assert_eq!(s.gc.untagged_ttl, Some(Duration::from_secs(7 * 86400)));
        let bad = FileConfig::parse("gc_grace = \"soon\"").unwrap();
        let e = Settings::resolve(&ServeArgs::default(), &bad).unwrap_err();
        assert!(e.to_string().contains("soon"), "{e}");
    }

    #[test]
    fn ops_settings() {
        let s = Settings::resolve(&ServeArgs::default(), &FileConfig::default()).unwrap();
        assert_eq!(s.tls, None);
        assert_eq!(s.log_format, LogFormat::Text);
        assert!(s.webhooks.urls.is_empty());
        assert_eq!(s.webhooks.timeout, Duration::from_secs(5));

        let file = FileConfig::parse(
            "tls_cert = \"/etc/r/cert.pem\"\ntls_key = \"/etc/r/key.pem\"\n\
             log_format = \"json\"\nwebhook_url = \"http://hooks/a\"\nwebhook_timeout = \"2s\"",
        )
        .unwrap();
        let s = Settings::resolve(&ServeArgs::default(), &file).unwrap();
        assert_eq!(
            s.tls,
            Some(TlsFiles {
                cert: "/etc/r/cert.pem".into(),
                key: "/etc/r/key.pem".into()
            })
        );
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.webhooks.urls.len(), 1);
        assert_eq!(s.webhooks.timeout, Duration::from_secs(2));

        // Flags win over the file, the list form works, and one of cert/key is an error.
        let list = FileConfig::parse("webhook_url = [\"http://a/\", \"https://b/x\"]").unwrap();
        assert_eq!(
            Settings::resolve(&ServeArgs::default(), &list)
                .unwrap()
                .webhooks
                .urls
                .len(),
            2
        );
        let cli = Cli::try_parse_from([
            "registry",
            "serve",
            "--webhook-url",
            "http://one/",
            "--webhook-url",
            "http://two/",
            "--log-format",
            "TEXT",
            "--tls-cert",
            "c.pem",
        ])
        .unwrap();
        let Command::Serve(a) = cli.command else {
            panic!("expected serve");
        };
        assert_eq!(a.webhook_url.len(), 2);
        let e = Settings::resolve(&a, &file).map(|s| s.tls);
        assert_eq!(
            e,
            Ok(Some(TlsFiles {
                cert: "c.pem".into(),
                key: "/etc/r/key.pem".into()
            }))
        );
        let e = Settings::resolve(&a, &FileConfig::default()).unwrap_err();
        assert!(e.to_string().contains("tls-key"), "{e}");
        assert!(parse_log_format("xml").is_err());
        assert!(parse_webhook_url("file:///etc/passwd").is_err());
        assert!(parse_webhook_url("not a url").is_err());
    }

    #[test]
    fn access_settings() {
        let s = Settings::resolve(&ServeArgs::default(), &FileConfig::default()).unwrap();
        assert_eq!(s.access, AccessSettings::default());
        assert_eq!(s.access.auth, AuthMode::None);
        assert_eq!(s.policy, PolicySettings::default());

        // From the file.
        let file = FileConfig::parse(
            "htpasswd = \"/etc/r/htpasswd\"\naccess_policy = \"/etc/r/policy.toml\"",
        )
        .unwrap();
        let s = Settings::resolve(&ServeArgs::default(), &file).unwrap();
        assert_eq!(s.access.auth, AuthMode::Htpasswd("/etc/r/htpasswd".into()));
        assert_eq!(s.access.access_policy, Some("/etc/r/policy.toml".into()));

        let token = FileConfig::parse(
            "token_realm = \"https://auth.example/token\"\ntoken_service = \"registry\"\n\
             token_issuer = \"issuer\"\ntoken_key = \"/etc/r/token.pub\"",
        )
        .unwrap();
        let s = Settings::resolve(&ServeArgs::default(), &token).unwrap();
        assert_eq!(
            s.access.auth,
            AuthMode::Token(TokenSettings {
                realm: "https://auth.example/token".parse().unwrap(),
                service: "registry".into(),
                issuer: "issuer".into(),
                key: "/etc/r/token.pub".into(),
            })
        );

        // Flags win over the file; a flag's token setting overrides the file's.
        let cli = Cli::try_parse_from([
            "registry",
            "serve",
            "--token-service",
            "other",
            "--access-policy",
            "p.toml",
        ])
        .unwrap();
        let Command::Serve(a) = cli.command else {
            panic!("expected serve");
        };
        let s = Settings::resolve(&a, &token).unwrap();
        let AuthMode::Token(t) = s.access.auth else {
            panic!("expected token auth");
        };
        assert_eq!(t.service, "other");
        assert_eq!(s.access.access_policy, Some("p.toml".into()));

        // Both kinds: a clear error, whichever side each comes from.
        let a = ServeArgs {
            htpasswd: Some("h".into()),
            ..ServeArgs::default()
        };
        let e = Settings::resolve(&a, &token).unwrap_err();
        assert_eq!(e, ConfigError::AuthConflict);
        assert!(e.to_string().contains("mutually exclusive"), "{e}");

        // Half of the token settings: names what is missing.
        let a = ServeArgs {
            token_realm: Some("http://t/token".into()),
            token_key: Some("k.pem".into()),
            ..ServeArgs::default()
        };
        let e = Settings::resolve(&a, &FileConfig::default()).unwrap_err();
        assert_eq!(
            e,
            ConfigError::TokenIncomplete {
                missing: vec!["token-service", "token-issuer"]
            }
        );
        assert!(e.to_string().contains("token-service, token-issuer"), "{e}");
        let bad_realm = ServeArgs {
            token_realm: Some("ftp://t/token".into()),
            token_service: Some("s".into()),
            token_issuer: Some("i".into()),
            token_key: Some("k.pem".into()),
            ..ServeArgs::default()
        };
        let e = Settings::resolve(&bad_realm, &FileConfig::default()).unwrap_err();
        assert!(e.to_string().contains("ftp"), "{e}");
    }

    #[test]
    fn policy_settings() {
        let file = FileConfig::parse(
            "read_only = true\nimmutable_tags = [\"prod/*\", \"release\"]\nmax_blob_size = 1024",
        )
        .unwrap();
        let s = Settings::resolve(&ServeArgs::default(), &file).unwrap();
        assert!(s.policy.read_only);
        assert_eq!(
            s.policy.immutable_tags,
            vec![
                parse_pattern("prod/*").unwrap(),
                parse_pattern("release").unwrap()
            ]
        );
        assert_eq!(s.policy.max_blob_size, Some(1024));
        let one = FileConfig::parse("immutable_tags = \"prod/*\"").unwrap();
        assert_eq!(
            Settings::resolve(&ServeArgs::default(), &one)
                .unwrap()
                .policy
                .immutable_tags
                .len(),
            1
        );

        // `--read-only` alone is true, `--read-only=false` overrides the file's true.
        let parse = |extra: &[&str]| {
            let cli = Cli::try_parse_from(["registry", "serve"].iter().chain(extra)).unwrap();
            let Command::Serve(a) = cli.command else {
                panic!("expected serve");
            };
            a
        };
        let a = parse(&["--read-only"]);
        assert_eq!(a.read_only, Some(true));
        assert!(
            Settings::resolve(&a, &FileConfig::default())
                .unwrap()
                .policy
                .read_only
        );
        let a = parse(&["--read-only=false"]);
        assert!(!Settings::resolve(&a, &file).unwrap().policy.read_only);
        assert_eq!(parse(&["--read-only=yes"]).read_only, Some(true));

        let a = parse(&[
            "--immutable-tags",
            "a/*",
            "--immutable-tags",
            "b",
            "--max-blob-size",
            "7",
        ]);
        let s = Settings::resolve(&a, &file).unwrap();
        assert_eq!(
            s.policy.immutable_tags,
            vec![parse_pattern("a/*").unwrap(), parse_pattern("b").unwrap()]
        );
        assert_eq!(s.policy.max_blob_size, Some(7));
        assert!(s.policy.read_only, "the file's read_only still applies");

        let bad = parse(&["--immutable-tags", "Prod/*"]);
        let e = Settings::resolve(&bad, &FileConfig::default()).unwrap_err();
        assert!(e.to_string().contains("Prod/*"), "{e}");
        assert!(FileConfig::parse("read_only = \"maybe\"").is_err());
    }

    #[test]
    fn import_and_stats_take_the_store_settings() {
        let cli = Cli::try_parse_from([
            "registry",
            "import",
            "--from",
            "/srv/dist",
            "--storage",
            "/srv/blobs",
        ])
        .unwrap();
        let Command::Import(a) = cli.command else {
            panic!("expected import");
        };
        assert_eq!(a.from.as_deref(), Some("/srv/dist"));
        assert!(!a.rebuild);
        assert_eq!(a.common.storage.as_deref(), Some("/srv/blobs"));
        let Err(neither) = Cli::try_parse_from(["registry", "import"]) else {
            panic!("import needs --from or --rebuild");
        };
        let message = neither.to_string();
        assert!(
            message.contains("--from") && message.contains("--rebuild"),
            "{message}"
        );
        let cli = Cli::try_parse_from(["registry", "import", "--rebuild"]).unwrap();
        let Command::Import(a) = cli.command else {
            panic!("expected import");
        };
        assert!(a.rebuild && a.from.is_none());
        assert!(
            Cli::try_parse_from(["registry", "import", "--rebuild", "--from", "/srv/dist"])
                .is_err()
        );

        let cli =
            Cli::try_parse_from(["registry", "stats", "--json", "--metadata", "x.db"]).unwrap();
        let Command::Stats(a) = cli.command else {
            panic!("expected stats");
        };
        assert!(a.json);
        assert_eq!(a.top, 10);
        assert_eq!(a.common.metadata.as_deref(), Some("x.db"));
        let cli = Cli::try_parse_from(["registry", "stats", "--top", "3"]).unwrap();
        let Command::Stats(a) = cli.command else {
            panic!("expected stats");
        };
        assert!(!a.json);
        assert_eq!(a.top, 3);
    }

    #[test]
    fn listen_addresses() {
        assert!(parse_listen("0.0.0.0:5000").is_ok());
        assert!(parse_listen("[::]:5000").is_ok());
        assert!(parse_listen("127.0.0.1:0").is_ok());
        let e = parse_listen("localhost").unwrap_err();
        assert!(e.to_string().contains("localhost"), "{e}");
    }
}
