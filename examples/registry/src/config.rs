//! The `registry` command line: its subcommands, their settings, and the URLs that pick
//! the blob store and the metadata store.
//!
//! # One declaration per setting
//!
//! Each setting is one field of one of the groups below ([`CommonArgs`], [`StorageArgs`],
//! [`GcArgs`], [`ServeArgs`], [`ConnectionArgs`], [`AccessArgs`], [`RetentionArgs`]): its doc comment is its
//! help, its clap attributes give its flag, its environment variable and its default, and
//! its name is its key in the config file (the flag's name with `_` for `-`). A command
//! flattens the groups it uses, so `registry gc --help` shows the settings of `gc` only.
//!
//! # Layers
//!
//! Per setting: default < config file < environment variable < flag. Clap already puts a
//! flag over its variable over its default, and says which of the three it used
//! ([`clap::ArgMatches::value_source`]); [`Layers::resolve`] puts the file's value
//! between the default and the other two, on the group's serde form (a JSON object keyed
//! by field name), then deserializes the merged object back into the group. Values are
//! parsed (addresses, durations, URLs) after the merge, so a bad value that something
//! overrides does no harm, and an error names the setting.
//!
//! Why not a layered-config crate: figment, the well-kept one, reads the environment
//! itself, but clap has to own it to show `[env: ...]` in `--help` and split lists; what
//! is left for figment (one TOML file under the command line) is the ~40 lines of
//! [`Layers`]. serde_path_to_error (already built, through axum) names the key of a
//! mistyped file value.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, Parser, Subcommand};
use registry_core::auth::NamePattern;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::mirror::MirrorSpec;
use crate::quota::QuotaSpec;
use crate::retention::RetentionSpec;
use crate::upstream::UpstreamSpec;

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
    Serve(Box<ServeCommand>),
    /// Run one garbage-collection pass against the stores, then exit. Safe while a
    /// server runs on the same stores (passes take turns).
    Gc(GcCommand),
    /// Import a CNCF distribution storage root (its `rootdirectory`, the folder or S3
    /// prefix that contains `docker/registry/v2`) into the stores, or with `--rebuild`
    /// refill a lost metadata database from our own blob store, then exit. Safe to re-run.
    Import(ImportCommand),
    /// Print storage statistics from the metadata store (no server needed).
    Stats(StatsCommand),
    /// Copy repositories from another registry into the stores (`--from URL`), or from
    /// the stores to another registry (`--to URL`), then exit. Incremental: what the
    /// target holds is not copied again, so an interrupted sync resumes when run again.
    /// Indexes are copied whole, and referrers (signatures, SBOMs) follow their
    /// subjects. Exits non-zero if anything could not be copied.
    Sync(SyncCommand),
    /// Apply the config file's `[[retention]]` rules once: remove the tags they select
    /// (immutable tags never), printing each with the rule that matched, then exit.
    /// Garbage collection then frees what only those tags kept. Safe while a server runs.
    Retention(RetentionCommand),
}

/// Keys of the config file that are no flag, with the command that reads them: a list of
/// tables has no spelling on a command line.
pub const FILE_ONLY_KEYS: &[(&str, &str)] = &[
    ("serve", "mirror"),
    ("serve", "retention"),
    ("retention", "retention"),
];

/// The clap command of [`Cli`], each subcommand's `--config` help naming the file keys
/// that subcommand reads.
pub fn command() -> clap::Command {
    let mut cli = Cli::command();
    let keys = file_keys();
    let names: Vec<String> = cli
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    for name in names {
        cli = cli.mut_subcommand(name, |sub| {
            let file_only = FILE_ONLY_KEYS
                .iter()
                .filter(|(command, _)| *command == sub.get_name())
                .map(|(_, key)| *key);
            let own: Vec<&str> = sub
                .get_arguments()
                .map(|a| a.get_id().as_str())
                .filter(|id| keys.contains(*id))
                .chain(file_only)
                .collect();
            let help = format!(
                "TOML file of settings, under the environment and the flags (which win over \
                 it). Keys read by this command: {}. A key is its flag's name with `_` for \
                 `-`; the keys of the other commands are accepted and ignored, so one file \
                 can serve them all; any other key is an error",
                own.join(", ")
            );
            sub.mut_arg("config", |a| a.help(help.clone()).long_help(help))
        });
    }
    cli
}

/// Parses the command line (exiting with clap's message on an error or `--help`).
pub fn parse() -> (Cli, ArgMatches) {
    let matches = command().get_matches();
    match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => (cli, matches),
        Err(e) => e.exit(),
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeCommand {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub gc: GcArgs,
    #[command(flatten)]
    pub quotas: QuotaArgs,
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(flatten)]
    pub connections: ConnectionArgs,
    #[command(flatten)]
    pub access: AccessArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
}

#[derive(Debug, Clone, Args)]
pub struct GcCommand {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Print what would be deleted, and how many bytes, without deleting anything.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub gc: GcArgs,
}

/// `--from` or `--rebuild`, exactly one: clap's error for neither names both.
#[derive(Debug, Clone, Args)]
#[group(id = "source", required = true, multiple = false)]
pub struct ImportCommand {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
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

#[derive(Debug, Clone, Args)]
pub struct SyncCommand {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub direction: SyncDirection,
    /// Repositories to copy: a name, or a pattern where `*` matches anything, `/`
    /// included (`library/*`). A name without `*` is copied without asking the source
    /// for its catalog.
    #[arg(long, value_name = "PATTERN")]
    pub repositories: String,
    /// Copy only the tags this regular expression matches (unanchored: `^v1\.` for tags
    /// starting `v1.`) [default: every tag].
    #[arg(long, value_name = "REGEX")]
    pub tags: Option<String>,
    /// User name at the other registry (with --password-file) [default: anonymous].
    #[arg(long, env = "REGISTRY_SYNC_USERNAME", value_name = "USER")]
    pub username: Option<String>,
    /// File whose first line is the password at the other registry.
    #[arg(long, env = "REGISTRY_SYNC_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// `--from` or `--to`, exactly one: clap's error for neither names both.
#[derive(Debug, Clone, Args)]
#[group(id = "direction", required = true, multiple = false)]
pub struct SyncDirection {
    /// The registry to copy from (`https://HOST[:PORT]`), into the stores.
    #[arg(long, value_name = "URL")]
    pub from: Option<String>,
    /// The registry to copy to, from the stores (pushed with the distribution API).
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct RetentionCommand {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Print the tags that would be removed, and by which rule, without removing any.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Read for `immutable_tags`: those repositories' tags are never removed.
    #[command(flatten)]
    pub access: AccessArgs,
}

#[derive(Debug, Clone, Args)]
pub struct StatsCommand {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub quotas: QuotaArgs,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
    /// How many repositories and blobs each top list shows.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
}

/// Every command: the config file, the metadata database, the log format.
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
pub struct CommonArgs {
    /// The config file (its help is set by [`command`]). Not a key of the file itself.
    #[arg(long, env = "REGISTRY_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Metadata database: `sqlite://relative/path`, `sqlite:///abs/path` or a plain path
    /// to a SQLite file, or `postgres://user@host:port/db`.
    #[arg(
        long,
        env = "REGISTRY_METADATA",
        value_name = "URL",
        default_value = "sqlite://./registry-data/registry.db"
    )]
    pub metadata: String,
    /// Log format: `text` or `json` (one JSON object per line).
    #[arg(
        long,
        env = "REGISTRY_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub log_format: String,
}

/// Commands that read or write blobs.
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
pub struct StorageArgs {
    /// Blob storage: `fs:///abs/path` or a plain path, or
    /// `s3://BUCKET/PREFIX?endpoint=URL&region=R` (credentials from the `AWS_*` variables
    /// or `~/.aws/credentials`).
    #[arg(
        long,
        env = "REGISTRY_STORAGE",
        value_name = "URL",
        default_value = "./registry-data/blobs"
    )]
    pub storage: String,
}

/// Garbage collection, in `serve` (in the background) and `gc` (one pass).
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
#[command(next_help_heading = "Garbage collection")]
pub struct GcArgs {
    /// Keep unreferenced blobs and links this long before garbage collection deletes them.
    /// `0s` is allowed.
    #[arg(
        long,
        env = "REGISTRY_GC_GRACE",
        value_name = "DURATION",
        default_value = "24h"
    )]
    pub gc_grace: String,
    /// Also delete untagged, unreferenced manifests older than this [default: keep them].
    #[arg(long, env = "REGISTRY_GC_UNTAGGED_TTL", value_name = "DURATION")]
    pub gc_untagged_ttl: Option<String>,
}

/// The server: address, HTTPS, background work, notifications.
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
#[command(next_help_heading = "Server")]
pub struct ServeArgs {
    /// Address to listen on. Port 0 picks a free port.
    #[arg(
        long,
        env = "REGISTRY_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:5000"
    )]
    pub listen: String,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key) [default: plain HTTP].
    #[arg(long, env = "REGISTRY_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "REGISTRY_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// How often the background garbage collector runs; `off` disables it.
    #[arg(
        long,
        env = "REGISTRY_GC_INTERVAL",
        value_name = "DURATION",
        default_value = "10m"
    )]
    pub gc_interval: String,
    /// Redirect blob downloads of at least this many bytes to presigned URLs, when the
    /// blob store can sign them (S3) [default: off].
    #[arg(long, env = "REGISTRY_REDIRECT_MIN_SIZE", value_name = "BYTES")]
    pub redirect_min_size: Option<u64>,
    /// Send push and delete notifications to this URL (repeatable; in the environment,
    /// comma-separated; in the file, a string or a list) [default: none].
    #[arg(
        long = "webhook-url",
        env = "REGISTRY_WEBHOOK_URL",
        value_name = "URL",
        value_delimiter = ','
    )]
    #[serde(default, deserialize_with = "one_or_many")]
    pub webhook_url: Vec<String>,
    /// Time limit of one webhook delivery attempt.
    #[arg(
        long,
        env = "REGISTRY_WEBHOOK_TIMEOUT",
        value_name = "DURATION",
        default_value = "5s"
    )]
    pub webhook_timeout: String,
    /// Abort upload sessions idle for longer than this and reclaim their bytes.
    #[arg(
        long,
        env = "REGISTRY_UPLOAD_EXPIRY",
        value_name = "DURATION",
        default_value = "24h"
    )]
    pub upload_expiry: String,
    /// Most upload sessions open at once, or `off` for no limit; past it, starting one is
    /// 429 TOOMANYREQUESTS.
    #[arg(
        long,
        env = "REGISTRY_MAX_UPLOADS",
        value_name = "N|off",
        default_value = "10000"
    )]
    #[serde(deserialize_with = "number_or_string")]
    pub max_uploads: String,
    /// Serve the repositories under PREFIX from another registry and cache them
    /// (`hub=https://registry-1.docker.io`; repeatable; in the environment,
    /// comma-separated; in the file, a list of `PREFIX=URL` strings or of tables with
    /// `prefix`, `url`, and optionally `namespace`, `username`, `password_file`)
    /// [default: none].
    #[arg(
        long,
        env = "REGISTRY_UPSTREAM",
        value_name = "PREFIX=URL",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub upstream: Vec<UpstreamSpec>,
    /// How long a tag fetched from an upstream is served before it is revalidated there.
    #[arg(
        long,
        env = "REGISTRY_UPSTREAM_TAG_TTL",
        value_name = "DURATION",
        default_value = "5m"
    )]
    pub upstream_tag_ttl: String,
    /// Evict images of the pull-through cache not pulled for this long (garbage
    /// collection then frees their blobs) [default: keep them].
    #[arg(long, env = "REGISTRY_CACHE_TTL", value_name = "DURATION")]
    pub cache_ttl: Option<String>,
    /// Evict the least recently pulled images of the pull-through cache while their blobs
    /// add up to more than this many bytes [default: no limit].
    #[arg(long, env = "REGISTRY_CACHE_MAX_BYTES", value_name = "BYTES")]
    pub cache_max_bytes: Option<u64>,
    /// Manifest pulls (GET and HEAD) allowed per user, or per client address for
    /// anonymous callers, as N/PERIOD (`100/6h`, `10/s`): a burst of N, then one more
    /// every PERIOD/N; past it, 429 TOOMANYREQUESTS with Retry-After [default: no limit].
    #[arg(long, env = "REGISTRY_PULL_RATE_LIMIT", value_name = "N/PERIOD")]
    pub pull_rate_limit: Option<String>,
    /// Writes (every method but GET and HEAD) allowed per user, or per client address
    /// for anonymous callers, as N/PERIOD [default: no limit].
    #[arg(long, env = "REGISTRY_WRITE_RATE_LIMIT", value_name = "N/PERIOD")]
    pub write_rate_limit: Option<String>,
    /// Mirrors, in the config file only: `[[mirror]]` tables with `from` (a pull mirror,
    /// synced at start and every `interval`, default `1h`) or `to` (a push mirror, fed by
    /// every push), `repositories`, and optionally `tags`, `username`, `password_file`.
    #[arg(skip)]
    #[serde(default)]
    pub mirror: Vec<MirrorSpec>,
    /// How often the `[[retention]]` rules of the config file are applied; `off`
    /// disables them here (`registry retention` still applies them).
    #[arg(
        long,
        env = "REGISTRY_RETENTION_INTERVAL",
        value_name = "DURATION",
        default_value = "1h"
    )]
    pub retention_interval: String,
}

/// Retention rules, in `serve` (in the background) and `retention` (once).
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
pub struct RetentionArgs {
    /// Retention rules, in the config file only: `[[retention]]` tables with
    /// `repositories` (a pattern) and optionally `tags` (the tags it governs, a regex),
    /// `keep_last` N, `delete_older_than` DURATION, `not_pulled_for` DURATION, `keep` (a
    /// regex of tags never removed).
    #[arg(skip)]
    #[serde(default)]
    pub retention: Vec<RetentionSpec>,
}

/// Byte quotas per repository pattern: enforced by `serve`, reported by `stats`.
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
#[command(next_help_heading = "Quotas")]
pub struct QuotaArgs {
    /// A byte limit over the repositories a pattern covers, together (`team-a/*=10GiB`:
    /// one budget for all of team-a's repositories; SIZE in bytes or with KB, MB, GB, TB,
    /// KiB, MiB, GiB, TiB). Repeatable; in the file, `[[quota]]` tables with `pattern`
    /// and `bytes` [default: none].
    #[arg(
        long,
        env = "REGISTRY_QUOTA",
        value_name = "PATTERN=SIZE",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub quota: Vec<QuotaSpec>,
}

/// Limits on client connections (see the `server` module).
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
#[command(next_help_heading = "Connections")]
pub struct ConnectionArgs {
    /// Close a connection with no request in flight and no bytes moving for this long.
    #[arg(
        long,
        env = "REGISTRY_IDLE_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s"
    )]
    pub idle_timeout: String,
    /// Time a client has to send a request's head (HTTP/1; on a keep-alive connection,
    /// counted from the end of the previous response, so it also bounds idle time).
    #[arg(
        long,
        env = "REGISTRY_HEADER_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s"
    )]
    pub header_timeout: String,
    /// End a request whose body sends no data for this long; a stall limit, not a limit
    /// on the whole upload.
    #[arg(
        long,
        env = "REGISTRY_BODY_TIMEOUT",
        value_name = "DURATION",
        default_value = "60s"
    )]
    pub body_timeout: String,
    /// Connections open at once; past it, new ones wait to be accepted until one closes.
    #[arg(
        long,
        env = "REGISTRY_MAX_CONNECTIONS",
        value_name = "N",
        default_value = "512"
    )]
    pub max_connections: u32,
}

/// Who may call, and the registry-wide rules.
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
#[command(next_help_heading = "Access")]
pub struct AccessArgs {
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
    /// Refuse every write with 405 UNSUPPORTED; reads still work. `--read-only` alone
    /// means true.
    #[arg(
        long,
        env = "REGISTRY_READ_ONLY",
        value_name = "BOOL",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub read_only: bool,
    /// Tags of repositories matching this pattern (`*` matches anything, `/` included,
    /// e.g. `prod/*`) cannot be moved once pushed (repeatable; in the environment,
    /// comma-separated; in the file, a string or a list) [default: none].
    #[arg(
        long = "immutable-tags",
        env = "REGISTRY_IMMUTABLE_TAGS",
        value_name = "PATTERN",
        value_delimiter = ','
    )]
    #[serde(default, deserialize_with = "one_or_many")]
    pub immutable_tags: Vec<String>,
    /// Refuse blobs larger than this many bytes (400 SIZE_INVALID) [default: no limit].
    #[arg(long, env = "REGISTRY_MAX_BLOB_SIZE", value_name = "BYTES")]
    pub max_blob_size: Option<u64>,
}

/// A file value that may be one string or a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// A file value that may be a number (`max_uploads = 100`) or a string (`"off"`).
fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(u64),
        String(String),
    }
    Ok(match NumberOrString::deserialize(d)? {
        NumberOrString::Number(n) => n.to_string(),
        NumberOrString::String(s) => s,
    })
}

/// The field names of a group: its keys in the config file.
fn keys_of<T: Serialize + Default>() -> Vec<String> {
    match serde_json::to_value(T::default()) {
        Ok(Value::Object(map)) => map.into_iter().map(|(k, _)| k).collect(),
        _ => Vec::new(),
    }
}

/// Every key the config file takes.
pub fn file_keys() -> BTreeSet<String> {
    [
        keys_of::<CommonArgs>(),
        keys_of::<QuotaArgs>(),
        keys_of::<StorageArgs>(),
        keys_of::<GcArgs>(),
        keys_of::<ServeArgs>(),
        keys_of::<ConnectionArgs>(),
        keys_of::<AccessArgs>(),
        keys_of::<RetentionArgs>(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The config file's values and the command line's, to merge group by group.
#[derive(Debug)]
pub struct Layers<'a> {
    /// The subcommand's matches: which values are defaults.
    matches: &'a ArgMatches,
    path: Option<PathBuf>,
    file: Map<String, Value>,
}

impl<'a> Layers<'a> {
    /// Reads the config file at `path`, if any.
    pub fn load(matches: &'a ArgMatches, path: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: Some(path.to_owned()),
                message: e.to_string(),
            })?,
            None => String::new(),
        };
        Layers::parse(matches, path, &text)
    }

    /// `text` as the config file (named `path` in errors).
    pub fn parse(
        matches: &'a ArgMatches,
        path: Option<&Path>,
        text: &str,
    ) -> Result<Self, ConfigError> {
        let error = |message: String| ConfigError::File {
            path: path.map(Path::to_owned),
            message,
        };
        let table: toml::Table = toml::from_str(text).map_err(|e| error(e.to_string()))?;
        let known = file_keys();
        if let Some(unknown) = table.keys().find(|k| !known.contains(*k)) {
            let known: Vec<&str> = known.iter().map(String::as_str).collect();
            return Err(error(format!(
                "unknown key `{unknown}` (the keys are {})",
                known.join(", ")
            )));
        }
        let file = match serde_json::to_value(table) {
            Ok(Value::Object(map)) => map,
            Ok(_) => Map::new(),
            Err(e) => return Err(error(e.to_string())),
        };
        Ok(Layers {
            matches,
            path: path.map(Path::to_owned),
            file,
        })
    }

    /// `group` as parsed by clap, with the file's values over its defaults (and under
    /// its environment variables and flags).
    pub fn resolve<T: Serialize + DeserializeOwned>(&self, group: &T) -> Result<T, ConfigError> {
        let error = |message: String| ConfigError::File {
            path: self.path.clone(),
            message,
        };
        let parsed = match serde_json::to_value(group) {
            Ok(Value::Object(map)) => map,
            Ok(_) => Map::new(),
            Err(e) => return Err(error(e.to_string())),
        };
        let source = |key: &str| {
            self.matches
                .try_contains_id(key)
                .ok()
                .and_then(|_| self.matches.value_source(key))
        };
        let mut merged = Map::new();
        for (key, value) in &parsed {
            if source(key) == Some(ValueSource::DefaultValue) {
                merged.insert(key.clone(), value.clone());
            }
        }
        for (key, value) in &self.file {
            if parsed.contains_key(key) {
                merged.insert(key.clone(), value.clone());
            }
        }
        for (key, value) in &parsed {
            if matches!(
                source(key),
                Some(ValueSource::EnvVariable | ValueSource::CommandLine)
            ) {
                merged.insert(key.clone(), value.clone());
            }
        }
        // Flags, variables and defaults were typed by clap: only a file value can be
        // of the wrong type, and the error names its key.
        serde_path_to_error::deserialize(Value::Object(merged)).map_err(|e| error(e.to_string()))
    }
}

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
    /// `--quota` flags and `[[quota]]` tables.
    pub quotas: Vec<QuotaSpec>,
    /// `[[mirror]]` tables (their files are read when the server starts).
    pub mirrors: Vec<MirrorSpec>,
    /// `[[retention]]` tables, applied every `retention_interval` (`None`: off).
    pub retention: Vec<RetentionSpec>,
    pub retention_interval: Option<Duration>,
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
            mirrors: serve.mirror.clone(),
            retention: layers.resolve(&self.retention)?.retention,
            retention_interval: match serve.retention_interval.trim() {
                "off" => None,
                other => Some(positive_duration("retention-interval", other)?),
            },
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
    Number {
        setting: &'static str,
        value: String,
        message: String,
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
            ConfigError::Number {
                setting,
                value,
                message,
            } => write!(
                f,
                "invalid {setting} `{value}`: {message} (expected a number or `off`)"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

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

/// A positive count, or `off` for none.
fn parse_limit(setting: &'static str, value: &str) -> Result<Option<u64>, ConfigError> {
    match value.trim() {
        "off" => Ok(None),
        n => match n.parse::<u64>() {
            Ok(0) => Err(ConfigError::Zero { setting }),
            Ok(n) => Ok(Some(n)),
            Err(e) => Err(ConfigError::Number {
                setting,
                value: value.to_string(),
                message: e.to_string(),
            }),
        },
    }
}

/// `N/PERIOD` (`100/6h`; a bare unit is one of it: `10/s`), or nothing.
fn parse_rate_limit(
    setting: &'static str,
    value: Option<&str>,
) -> Result<Option<registry_core::ratelimit::RateLimit>, ConfigError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let invalid = |message: String| ConfigError::Number {
        setting,
        value: value.to_string(),
        message,
    };
    let (count, period) = value
        .split_once('/')
        .ok_or_else(|| invalid("expected N/PERIOD, as in 100/6h".into()))?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|e: std::num::ParseIntError| invalid(e.to_string()))?;
    let period = period.trim();
    let period = if period.starts_with(|c: char| c.is_ascii_alphabetic()) {
        parse_duration(setting, &format!("1{period}"))?
    } else {
        parse_duration(setting, period)?
    };
    registry_core::ratelimit::RateLimit::new(count, period)
        .map(Some)
        .ok_or(ConfigError::Zero { setting })
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

    /// The subcommand and its matches from `argv`. Clap reads the test process's
    /// environment too: these tests expect no `REGISTRY_*` variables.
    fn parse_cli(argv: &[&str]) -> (Command, ArgMatches) {
        let matches = command()
            .try_get_matches_from(["registry"].iter().chain(argv))
            .unwrap();
        let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap();
        let (_, sub) = matches.subcommand().unwrap();
        (cli.command, sub.clone())
    }

    /// `registry serve ARGV` with `file` as the config file.
    fn serve(argv: &[&str], file: &str) -> Result<Settings, ConfigError> {
        let argv: Vec<&str> = ["serve"].iter().chain(argv).copied().collect();
        let (Command::Serve(cmd), matches) = parse_cli(&argv) else {
            panic!("expected serve");
        };
        cmd.settings(&Layers::parse(&matches, None, file)?)
    }

    #[test]
    fn defaults() {
        let s = serve(&[], "").unwrap();
        assert_eq!(s.listen, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(
            s.stores.storage,
            StorageUrl::Fs(PathBuf::from("./registry-data/blobs"))
        );
        assert_eq!(
            s.stores.metadata,
            MetadataUrl::Sqlite(PathBuf::from("./registry-data/registry.db"))
        );
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(
            s.connections,
            ConnectionSettings {
                idle_timeout: Duration::from_secs(30),
                header_timeout: Duration::from_secs(30),
                body_timeout: Duration::from_secs(60),
                max_connections: 512,
            }
        );
    }

    #[test]
    fn flags_win_over_file_which_wins_over_defaults() {
        let file = "listen = \"0.0.0.0:6000\"\nstorage = \"/file/blobs\"\n\
                    metadata = \"sqlite:///file.db\"\n";
        let s = serve(&["--listen", "127.0.0.1:7000"], file).unwrap();
        assert_eq!(s.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(
            s.stores.storage,
            StorageUrl::Fs(PathBuf::from("/file/blobs"))
        );
        assert_eq!(
            s.stores.metadata,
            MetadataUrl::Sqlite(PathBuf::from("/file.db"))
        );

        let s = serve(&["--metadata", "x.db"], "storage = \"fs:///only/storage\"").unwrap();
        assert_eq!(s.listen, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(
            s.stores.storage,
            StorageUrl::Fs(PathBuf::from("/only/storage"))
        );
        assert_eq!(
            s.stores.metadata,
            MetadataUrl::Sqlite(PathBuf::from("x.db"))
        );

        // A bad file value that a flag overrides is never parsed.
        let s = serve(&["--listen", "127.0.0.1:0"], "listen = \"not an address\"").unwrap();
        assert_eq!(s.listen, "127.0.0.1:0".parse().unwrap());
    }

    #[test]
    fn file_rejects_unknown_keys_bad_toml_and_mistyped_values() {
        let e = serve(&[], "listn = \"x\"").unwrap_err();
        assert!(e.to_string().contains("listn"), "{e}");
        assert!(e.to_string().contains("listen"), "names the keys: {e}");
        assert!(serve(&[], "listen = ").is_err());
        let e = serve(&[], "read_only = \"maybe\"").unwrap_err();
        assert!(e.to_string().contains("read_only"), "{e}");
        let e = serve(&[], "max_connections = -1").unwrap_err();
        assert!(e.to_string().contains("max_connections"), "{e}");
    }

    /// Every flag of every command but `--config` (and those of one run: `import`'s,
    /// `sync`'s) is a key of the file, named as the flag with `_` for `-`; and every key
    /// is some command's flag, or one of [`FILE_ONLY_KEYS`].
    #[test]
    fn flags_and_file_keys_match() {
        let keys = file_keys();
        let only_flags = [
            "config",
            "dry-run",
            "from",
            "rebuild",
            "json",
            "top",
            "to",
            "repositories",
            "tags",
            "username",
            "password-file",
        ];
        let mut flags = BTreeSet::new();
        for sub in command().get_subcommands() {
            for arg in sub.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if only_flags.contains(&long) || long == "help" {
                    continue;
                }
                let key = long.replace('-', "_");
                assert!(keys.contains(&key), "--{long} has no file key");
                flags.insert(key);
            }
        }
        flags.extend(FILE_ONLY_KEYS.iter().map(|(_, key)| key.to_string()));
        assert_eq!(flags, keys);
    }

    #[test]
    fn each_command_has_only_its_own_flags() {
        let cli = command();
        let longs = |name: &str| -> Vec<String> {
            cli.find_subcommand(name)
                .unwrap()
                .get_arguments()
                .filter_map(|a| a.get_long().map(String::from))
                .collect()
        };
        let gc = longs("gc");
        for serve_only in [
            "listen",
            "tls-cert",
            "htpasswd",
            "webhook-url",
            "gc-interval",
        ] {
            assert!(!gc.iter().any(|l| l == serve_only), "gc has --{serve_only}");
        }
        assert!(gc.iter().any(|l| l == "gc-grace"));
        let stats = longs("stats");
        assert!(!stats.iter().any(|l| l == "storage" || l == "gc-grace"));
        assert!(stats.iter().any(|l| l == "metadata"));
        let import = longs("import");
        assert!(!import.iter().any(|l| l == "gc-grace" || l == "listen"));
        assert!(import.iter().any(|l| l == "storage"));
    }

    /// A file written for `serve` works for `gc`, which reads its own keys from it.
    #[test]
    fn commands_share_one_file() {
        let file = "listen = \"0.0.0.0:1\"\ntls_cert = \"only-half.pem\"\n\
                    storage = \"/srv/blobs\"\ngc_grace = \"1h\"";
        let (Command::Gc(cmd), matches) = parse_cli(&["gc", "--dry-run"]) else {
            panic!("expected gc");
        };
        let run = cmd
            .settings(&Layers::parse(&matches, None, file).unwrap())
            .unwrap();
        assert!(cmd.dry_run);
        assert_eq!(run.stores.storage, StorageUrl::Fs("/srv/blobs".into()));
        assert_eq!(run.gc.grace, Duration::from_secs(3600));
        assert_eq!(run.gc.interval, None);
        assert!(serve(&[], file).is_err(), "serve does check the TLS pair");
    }

    #[test]
    fn config_help_names_the_commands_keys() {
        let cli = command();
        let help = |name: &str| {
            cli.find_subcommand(name)
                .unwrap()
                .get_arguments()
                .find(|a| a.get_id() == "config")
                .and_then(|a| a.get_help())
                .map(|h| h.to_string())
                .unwrap()
        };
        let serve = help("serve");
        for key in file_keys() {
            assert!(
                serve.contains(&key),
                "serve's --config help names {key}: {serve}"
            );
        }
        let gc = help("gc");
        assert!(gc.contains("gc_grace") && gc.contains("storage"), "{gc}");
        assert!(!gc.contains("listen"), "{gc}");
    }

    #[test]
    fn clap_reads_flags() {
        let (Command::Serve(a), _) = parse_cli(&[
            "serve",
            "--listen",
            "[::1]:5001",
            "--storage",
            "fs:///srv/blobs",
            "--metadata",
            "sqlite:///srv/registry.db",
            "--config",
            "/etc/registry.toml",
        ]) else {
            panic!("expected serve");
        };
        assert_eq!(a.serve.listen, "[::1]:5001");
        assert_eq!(a.storage.storage, "fs:///srv/blobs");
        assert_eq!(a.common.metadata, "sqlite:///srv/registry.db");
        assert_eq!(a.common.config, Some(PathBuf::from("/etc/registry.toml")));
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
        let s = serve(&[], "").unwrap();
        assert_eq!(s.gc.grace, Duration::from_secs(24 * 3600));
        assert_eq!(s.gc.interval, Some(Duration::from_secs(600)));
        assert_eq!(s.gc.untagged_ttl, None);
        let file = "gc_grace = \"0s\"\ngc_interval = \"off\"\ngc_untagged_ttl = \"7days\"";
        let s = serve(&[], file).unwrap();
        assert_eq!(s.gc.grace, Duration::ZERO);
        assert_eq!(s.gc.interval, None);
        assert_eq!(s.gc.untagged_ttl, Some(Duration::from_secs(7 * 86400)));
        let e = serve(&[], "gc_grace = \"soon\"").unwrap_err();
        assert!(e.to_string().contains("soon"), "{e}");
    }

    #[test]
    fn ops_settings() {
        let s = serve(&[], "").unwrap();
        assert_eq!(s.tls, None);
        assert!(s.webhooks.urls.is_empty());
        assert_eq!(s.webhooks.timeout, Duration::from_secs(5));

        let file = "tls_cert = \"/etc/r/cert.pem\"\ntls_key = \"/etc/r/key.pem\"\n\
                    log_format = \"json\"\nwebhook_url = \"http://hooks/a\"\n\
                    webhook_timeout = \"2s\"";
        let s = serve(&[], file).unwrap();
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

        // The list form works, flags win over the file, one of cert/key is an error.
        let list = "webhook_url = [\"http://a/\", \"https://b/x\"]";
        assert_eq!(serve(&[], list).unwrap().webhooks.urls.len(), 2);
        let flags = [
            "--webhook-url",
            "http://one/",
            "--webhook-url",
            "http://two/",
            "--log-format",
            "TEXT",
            "--tls-cert",
            "c.pem",
        ];
        let s = serve(&flags, file).unwrap();
        assert_eq!(s.webhooks.urls.len(), 2);
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(
            s.tls,
            Some(TlsFiles {
                cert: "c.pem".into(),
                key: "/etc/r/key.pem".into()
            })
        );
        let e = serve(&flags, "").unwrap_err();
        assert!(e.to_string().contains("tls-key"), "{e}");
        assert!(parse_log_format("xml").is_err());
        assert!(parse_webhook_url("file:///etc/passwd").is_err());
        assert!(parse_webhook_url("not a url").is_err());
    }

    #[test]
    fn connection_settings() {
        let s = serve(
            &["--idle-timeout", "5s"],
            "idle_timeout = \"1s\"\nbody_timeout = \"2m\"\nmax_connections = 8",
        )
        .unwrap();
        assert_eq!(s.connections.idle_timeout, Duration::from_secs(5));
        assert_eq!(s.connections.body_timeout, Duration::from_secs(120));
        assert_eq!(s.connections.max_connections, 8);
        let e = serve(&["--max-connections", "0"], "").unwrap_err();
        assert_eq!(
            e,
            ConfigError::Zero {
                setting: "max-connections"
            }
        );
        let e = serve(&[], "header_timeout = \"0s\"").unwrap_err();
        assert!(e.to_string().contains("header-timeout"), "{e}");
    }

    #[test]
    fn upload_settings() {
        let s = serve(&[], "").unwrap();
        assert_eq!(
            s.uploads,
            UploadSettings {
                expiry: Duration::from_secs(24 * 3600),
                max_open: Some(10_000),
            }
        );
        let s = serve(&["--max-uploads", "off"], "upload_expiry = \"90m\"").unwrap();
        assert_eq!(s.uploads.expiry, Duration::from_secs(90 * 60));
        assert_eq!(s.uploads.max_open, None);
        let s = serve(&[], "max_uploads = \"3\"").unwrap();
        assert_eq!(s.uploads.max_open, Some(3));
        let s = serve(&[], "max_uploads = 4").unwrap();
        assert_eq!(s.uploads.max_open, Some(4));
        let e = serve(&["--max-uploads", "many"], "").unwrap_err();
        assert!(
            e.to_string().contains("max-uploads") && e.to_string().contains("many"),
            "{e}"
        );
        assert!(serve(&["--max-uploads", "0"], "").is_err());
        assert!(serve(&["--upload-expiry", "0s"], "").is_err());
    }

    #[test]
    fn access_settings() {
        let s = serve(&[], "").unwrap();
        assert_eq!(s.access, AccessSettings::default());
        assert_eq!(s.access.auth, AuthMode::None);
        assert_eq!(s.policy, PolicySettings::default());

        let file = "htpasswd = \"/etc/r/htpasswd\"\naccess_policy = \"/etc/r/policy.toml\"";
        let s = serve(&[], file).unwrap();
        assert_eq!(s.access.auth, AuthMode::Htpasswd("/etc/r/htpasswd".into()));
        assert_eq!(s.access.access_policy, Some("/etc/r/policy.toml".into()));

        let token = "token_realm = \"https://auth.example/token\"\n\
                     token_service = \"registry\"\ntoken_issuer = \"issuer\"\n\
                     token_key = \"/etc/r/token.pub\"";
        let s = serve(&[], token).unwrap();
        assert_eq!(
            s.access.auth,
            AuthMode::Token(TokenSettings {
                realm: "https://auth.example/token".parse().unwrap(),
                service: "registry".into(),
                issuer: "issuer".into(),
                key: "/etc/r/token.pub".into(),
            })
        );

        // A flag's token setting overrides the file's.
        let s = serve(
            &["--token-service", "other", "--access-policy", "p.toml"],
            token,
        )
        .unwrap();
        let AuthMode::Token(t) = s.access.auth else {
            panic!("expected token auth");
        };
        assert_eq!(t.service, "other");
        assert_eq!(s.access.access_policy, Some("p.toml".into()));

        // Both kinds: a clear error, whichever side each comes from.
        let e = serve(&["--htpasswd", "h"], token).unwrap_err();
        assert_eq!(e, ConfigError::AuthConflict);
        assert!(e.to_string().contains("mutually exclusive"), "{e}");

        // Half of the token settings: names what is missing.
        let e = serve(
            &["--token-realm", "http://t/token", "--token-key", "k.pem"],
            "",
        )
        .unwrap_err();
        assert_eq!(
            e,
            ConfigError::TokenIncomplete {
                missing: vec!["token-service", "token-issuer"]
            }
        );
        assert!(e.to_string().contains("token-service, token-issuer"), "{e}");
        let e = serve(
            &[
                "--token-realm",
                "ftp://t/token",
                "--token-service",
                "s",
                "--token-issuer",
                "i",
                "--token-key",
                "k.pem",
            ],
            "",
        )
        .unwrap_err();
        assert!(e.to_string().contains("ftp"), "{e}");
    }

    #[test]
    fn policy_settings() {
        let file =
            "read_only = true\nimmutable_tags = [\"prod/*\", \"release\"]\nmax_blob_size = 1024";
        let s = serve(&[], file).unwrap();
        assert!(s.policy.read_only);
        assert_eq!(
            s.policy.immutable_tags,
            vec![
                parse_pattern("prod/*").unwrap(),
                parse_pattern("release").unwrap()
            ]
        );
        assert_eq!(s.policy.max_blob_size, Some(1024));
        let one = serve(&[], "immutable_tags = \"prod/*\"").unwrap();
        assert_eq!(one.policy.immutable_tags.len(), 1);

        // `--read-only` alone is true, `--read-only=false` overrides the file's true.
        assert!(serve(&["--read-only"], "").unwrap().policy.read_only);
        assert!(
            !serve(&["--read-only=false"], file)
                .unwrap()
                .policy
                .read_only
        );
        assert!(serve(&["--read-only=yes"], "").unwrap().policy.read_only);

        let s = serve(
            &[
                "--immutable-tags",
                "a/*",
                "--immutable-tags",
                "b",
                "--max-blob-size",
                "7",
            ],
            file,
        )
        .unwrap();
        assert_eq!(
            s.policy.immutable_tags,
            vec![parse_pattern("a/*").unwrap(), parse_pattern("b").unwrap()]
        );
        assert_eq!(s.policy.max_blob_size, Some(7));
        assert!(s.policy.read_only, "the file's read_only still applies");

        let e = serve(&["--immutable-tags", "Prod/*"], "").unwrap_err();
        assert!(e.to_string().contains("Prod/*"), "{e}");
    }

    #[test]
    fn import_and_stats_take_the_store_settings() {
        let (Command::Import(a), _) =
            parse_cli(&["import", "--from", "/srv/dist", "--storage", "/srv/blobs"])
        else {
            panic!("expected import");
        };
        assert_eq!(a.from.as_deref(), Some("/srv/dist"));
        assert!(!a.rebuild);
        assert_eq!(a.storage.storage, "/srv/blobs");
        let Err(neither) = command().try_get_matches_from(["registry", "import"]) else {
            panic!("import needs --from or --rebuild");
        };
        let message = neither.to_string();
        assert!(
            message.contains("--from") && message.contains("--rebuild"),
            "{message}"
        );
        let (Command::Import(a), _) = parse_cli(&["import", "--rebuild"]) else {
            panic!("expected import");
        };
        assert!(a.rebuild && a.from.is_none());
        assert!(
            command()
                .try_get_matches_from(["registry", "import", "--rebuild", "--from", "/srv/dist"])
                .is_err()
        );

        let (Command::Stats(a), matches) = parse_cli(&["stats", "--json", "--metadata", "x.db"])
        else {
            panic!("expected stats");
        };
        assert!(a.json);
        assert_eq!(a.top, 10);
        let common = a
            .settings(&Layers::parse(&matches, None, "metadata = \"file.db\"").unwrap())
            .unwrap();
        assert_eq!(common.metadata, MetadataUrl::Sqlite("x.db".into()));
        let (Command::Stats(a), _) = parse_cli(&["stats", "--top", "3"]) else {
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
