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

use std::path::PathBuf;

use clap::{ArgMatches, Args, CommandFactory, Parser, Subcommand};
use serde::{Deserialize, Serialize};

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
    /// Put the copies under this prefix in the target (`lib/app` becomes
    /// `PREFIX/lib/app`) [default: the same names].
    #[arg(long, value_name = "PREFIX")]
    pub target_prefix: Option<String>,
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
    /// Count manifest pulls per repository and manifest (`pulls` and `last_pull` in
    /// `/v2/_ext/repositories` and `registry stats`), written in batches every few
    /// seconds. `--pull-counts=false` stops counting; retention's `not_pulled_for` and
    /// the cache's `--cache-ttl`/`--cache-max-bytes` need it on.
    #[arg(
        long,
        env = "REGISTRY_PULL_COUNTS",
        value_name = "BOOL",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "true",
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub pull_counts: bool,
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
    /// Serve the web UI under /ui/: browse repositories, tags, manifests, referrers and
    /// storage, and delete tags and manifests, with the API's own authentication and
    /// permissions. `--ui` alone means true.
    #[arg(
        long,
        env = "REGISTRY_UI",
        value_name = "BOOL",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub ui: bool,
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

mod layers;
mod parse;
mod settings;
#[cfg(test)]
mod tests;

pub use layers::*;
pub use parse::*;
pub use settings::*;
