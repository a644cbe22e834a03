//! The `registry` binary: the OCI distribution API on one machine, blobs in a local folder
//! and metadata in SQLite, no other process needed.
//!
//! Run it with `cargo run --release -p registry -- serve` (listens on 127.0.0.1:5000 and
//! keeps its state in `./registry-data/`), then for example
//! `skopeo copy --dest-tls-verify=false oci:DIR:tag docker://127.0.0.1:5000/repo:tag`.
//! `registry serve --help` lists the settings; each is a flag, an environment variable
//! (`REGISTRY_LISTEN`, `REGISTRY_STORAGE`, `REGISTRY_METADATA`, `REGISTRY_CONFIG`, ...) or a
//! key of a TOML file given with `--config`; a flag wins over the environment, which wins
//! over the file (see `config`). `RUST_LOG` sets the log filter (default `info`: one line
//! per request).
//!
//! Operations: `--tls-cert FILE --tls-key FILE` serve HTTPS (plain HTTP otherwise);
//! `/healthz`, `/readyz` and `/metrics` (Prometheus) are served next to `/v2/`;
//! `--log-format json` writes one JSON object per line, and pushes, pulls and deletes are
//! logged at target `registry::events`; `--webhook-url URL` (repeatable) sends push and
//! delete notifications in CNCF distribution's envelope.
//!
//! Access: `--htpasswd FILE` (Basic, bcrypt) or `--token-realm URL --token-service NAME
//! --token-issuer NAME --token-key PEMFILE` (Docker token auth), `--access-policy FILE`,
//! `--read-only`, `--immutable-tags PATTERN`, `--max-blob-size BYTES`.
//!
//! Connections: `--idle-timeout`, `--header-timeout`, `--body-timeout` (a stall limit on
//! request bodies) and `--max-connections` (past it, new connections wait); see `server`.
//!
//! Other commands, on the same store settings: `registry gc [--dry-run]` (one collection
//! pass), `registry import --from ROOT` (a CNCF distribution storage root, or
//! `--rebuild`: the metadata database from our own blob store) and
//! `registry stats [--json] [--top N]` (from the metadata store alone), and
//! `registry sync --from URL | --to URL --repositories PATTERN [--tags REGEX]` (copies
//! between the stores and another registry; `[[mirror]]` tables in the config file do
//! it in the background of `serve`, see `mirror`), and `registry retention [--dry-run]`
//! (the config file's `[[retention]]` rules once; `serve` applies them every
//! `--retention-interval`, see `retention`).

mod access;
mod config;
mod features;
mod import;
mod mirror;
mod quota;
mod retention;
mod server;
mod stats;
mod tls;
mod upstream;

use std::error::Error;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use registry_core::mirror::push::PushMirror;
use registry_core::ops::webhook::{self, Notifier, WebhookConfig};
use registry_core::proxy::ProxyConfig;
use registry_core::{GcConfig, RedirectConfig, Registry, RegistryConfig};
use storage_traits::{BlobStore, MetadataStore};
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use config::{Command, GcRun, GcSettings, LogFormat, MetadataUrl, Settings, StorageUrl, Stores};

type BoxError = Box<dyn Error + Send + Sync>;

/// Threads for blocking work (file I/O, metadata scans, password hashing). tokio's
/// default of 512 let a burst of requests grow the pool past a hundred threads, each with
/// its own stack and often its own malloc arena; past this many, blocking work queues.
/// Point lookups in SQLite and its writer do not use the pool.
const MAX_BLOCKING_THREADS: usize = 16;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One malloc arena per core instead of glibc's default of eight per core. Each thread that
/// meets a locked arena gets a new one, and memory freed in one arena is not reused by
/// another, so a server whose buffers are allocated on one thread and freed on another
/// holds far more than it uses (docs/performance.md, "Figures moved out of the code").
/// `MALLOC_ARENA_MAX`, when set, is left to glibc.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets a malloc tunable; it runs before the runtime starts
        // any thread, and a refused value (return 0) leaves glibc's default in place.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

async fn run() -> ExitCode {
    let (cli, matches) = config::parse();
    let result = match matches.subcommand() {
        Some((_, sub)) => command(&cli.command, sub).await,
        // Clap requires a subcommand.
        None => Err("no command given: see registry --help".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = format!("error: {e}");
            let mut source = e.source();
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `command`; `matches` are its own (which values are defaults).
async fn command(command: &Command, matches: &clap::ArgMatches) -> Result<(), BoxError> {
    match command {
        Command::Serve(cmd) => {
            let settings = cmd.settings(&cmd.common.layers(matches)?)?;
            init_tracing(settings.log_format, Output::Stdout);
            serve(settings).await
        }
        Command::Gc(cmd) => {
            let run = cmd.settings(&cmd.common.layers(matches)?)?;
            init_tracing(run.log_format, Output::Stdout);
            gc(run, cmd.dry_run).await
        }
        // Their report is stdout (`stats --json`: one JSON document); logs go to
        // stderr, and only warnings unless RUST_LOG says otherwise.
        Command::Import(cmd) => {
            let (log_format, stores) = cmd.settings(&cmd.common.layers(matches)?)?;
            init_tracing(log_format, Output::Stderr);
            import::run(&stores, cmd).await
        }
        Command::Stats(cmd) => {
            let layers = cmd.common.layers(matches)?;
            let common = cmd.settings(&layers)?;
            let quotas = quota::quotas(&cmd.quotas(&layers)?);
            init_tracing(common.log_format, Output::Stderr);
            stats::run(&common.metadata, &quotas, cmd.json, cmd.top).await
        }
        Command::Sync(cmd) => {
            let (log_format, stores) = cmd.settings(&cmd.common.layers(matches)?)?;
            init_tracing(log_format, Output::Stderr);
            mirror::run(&stores, cmd).await
        }
        Command::Retention(cmd) => {
            let run = cmd.settings(&cmd.common.layers(matches)?)?;
            init_tracing(run.log_format, Output::Stderr);
            retention::run(&run, cmd.dry_run).await
        }
    }
}

/// Where log lines go: a server logs to stdout; commands whose stdout is their report log
/// warnings to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Stdout,
    Stderr,
}

fn init_tracing(format: LogFormat, output: Output) {
    let default = match output {
        Output::Stdout => "info",
        Output::Stderr => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let (writer, terminal) = match output {
        Output::Stdout => (
            BoxMakeWriter::new(std::io::stdout),
            std::io::stdout().is_terminal(),
        ),
        Output::Stderr => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.with_ansi(terminal).init(),
        // Event fields at the top level, next to `timestamp`, `level`, `target` and
        // `message`; the request's span (method, uri) under `span`.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

fn gc_config(settings: &GcSettings) -> GcConfig {
    let mut config = GcConfig::default()
        .with_grace(settings.grace)
        .with_untagged_manifest_ttl(settings.untagged_ttl);
    if let Some(interval) = settings.interval {
        config = config.with_interval(interval);
    }
    config
}

/// The registry on `stores`; `redirect_min_size`: see `--redirect-min-size`.
pub(crate) async fn open_registry(
    stores: &Stores,
    redirect_min_size: Option<u64>,
    config: RegistryConfig,
) -> Result<Registry, BoxError> {
    let blobs = open_blobs(&stores.storage)?;
    let metadata = open_metadata(&stores.metadata).await?;
    let redirect =
        redirect_min_size.map(|min| RedirectConfig::new(min, std::time::Duration::from_secs(600)));
    if redirect.is_some() && blobs.signer().is_none() {
        tracing::warn!("redirects requested, but this blob store cannot presign URLs");
    }
    Ok(Registry::new(
        blobs,
        metadata,
        config.with_redirect(redirect),
    ))
}

/// `registry gc`: one pass, then a summary (and with `--dry-run`, the would-be deletions).
async fn gc(run: GcRun, dry_run: bool) -> Result<(), BoxError> {
    let registry = open_registry(&run.stores, None, RegistryConfig::default()).await?;
    let report = registry
        .collect_garbage(&gc_config(&run.gc), dry_run)
        .await?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    for (repo, digest) in &report.manifests {
        println!("{verb} manifest {repo}@{digest}");
    }
    for (repo, digest) in &report.links {
        println!("{verb} link {repo} -> {digest}");
    }
    for (digest, size) in &report.blobs {
        println!("{verb} blob {digest} ({size} bytes)");
    }
    println!(
        "{verb} {} manifests, {} links, {} blobs, {} bytes; {} reviews still queued",
        report.manifests.len(),
        report.links.len(),
        report.blobs.len(),
        report.bytes_freed,
        report.queued
    );
    Ok(())
}

fn proxy_config(settings: &config::UpstreamSettings) -> Result<ProxyConfig, BoxError> {
    let mut proxy = ProxyConfig::default()
        .with_tag_ttl(settings.tag_ttl)
        .with_cache_ttl(settings.cache_ttl)
        .with_cache_max_bytes(settings.cache_max_bytes);
    for spec in &settings.upstreams {
        let upstream = spec
            .to_upstream()
            .map_err(|e| format!("upstream {spec}: {e}"))?;
        tracing::info!(prefix = %upstream.prefix, url = %upstream.url, "pull-through cache");
        proxy = proxy.with_upstream(upstream);
    }
    Ok(proxy)
}

async fn serve(settings: Settings) -> Result<(), BoxError> {
    // Mirror tables and their password files are read before anything starts, too.
    let mirrors = settings
        .mirrors
        .iter()
        .map(|spec| spec.to_mirror().map_err(|e| format!("mirror {spec}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let retention_rules = retention::rules(&settings.retention)?;
    // Access files are read before the stores are opened or the port is taken.
    let config = access::apply(
        RegistryConfig::default()
            .with_upload_expiry(settings.uploads.expiry)
            .with_max_open_uploads(settings.uploads.max_open)
            .with_rate_limits(settings.rate_limits)
            .with_pull_counts(settings.pull_counts)
            .with_quotas(quota::quotas(&settings.quotas))
            .with_proxy(proxy_config(&settings.upstreams)?),
        &settings.access,
        &settings.policy,
    )?;
    let registry = open_registry(&settings.stores, settings.redirect_min_size, config).await?;
    let maintenance = registry.spawn_maintenance();
    let collector = settings
        .gc
        .interval
        .map(|_| registry.spawn_gc(gc_config(&settings.gc)));
    let retention_task = match settings.retention_interval {
        Some(every) if !retention_rules.is_empty() => {
            tracing::info!(rules = retention_rules.len(), interval = ?every, "retention rules");
            Some(registry.spawn_retention(retention_rules, every))
        }
        _ => None,
    };

    let mut api = registry.router();
    let (mut pull_mirrors, mut push_mirrors) = (Vec::new(), Vec::new());
    for mirror in mirrors {
        match mirror {
            mirror::Mirror::Pull(pull) => {
                tracing::info!(repositories = %pull.options.repositories,
                    interval = ?pull.interval, "pull mirror");
                pull_mirrors.push(registry.spawn_pull_mirror(pull));
            }
            mirror::Mirror::Push(push) => {
                tracing::info!(repositories = %push.options.repositories, "push mirror");
                let (queue, task) = PushMirror::spawn(&registry, push)?;
                api = api.layer(axum::middleware::from_fn_with_state(
                    queue,
                    registry_core::mirror::push::middleware,
                ));
                push_mirrors.push(task);
            }
        }
    }
    let mut webhook_sender = None;
    if !settings.webhooks.urls.is_empty() {
        for url in &settings.webhooks.urls {
            features::check_outbound(url.as_str(), "--webhook-url")?;
        }
        let config = WebhookConfig::new(settings.webhooks.urls.clone())
            .with_timeout(settings.webhooks.timeout);
        let (notifier, sender) =
            Notifier::spawn(config).map_err(|e| format!("cannot start webhooks: {e}"))?;
        tracing::info!(
            count = settings.webhooks.urls.len(),
            "push and delete notifications go to webhooks"
        );
        api = api.layer(axum::middleware::from_fn_with_state(
            notifier,
            webhook::middleware,
        ));
        webhook_sender = Some(sender);
    }
    // The web UI deletes through `api` as it is now, so webhooks and push mirrors see
    // its deletions as any client's.
    let api = if settings.ui {
        tracing::info!("web UI under /ui/");
        let ui = registry_core::ui::Ui::new(&registry)
            .with_api(api.clone())
            .router();
        api.merge(ui)
    } else {
        api
    };
    let app = api
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        // Probes and scrapes: not traced, not behind authentication.
        .merge(registry.ops_router());
    // A TLS configuration that cannot load fails before the port is taken.
    let tls = match &settings.tls {
        Some(files) => Some(tls::acceptor(&files.cert, &files.key)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let local = listener.local_addr()?;
    let shutdown = shutdown_signal();
    // Tests (and scripts using `--listen 127.0.0.1:0`) read the real port from this line.
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!("listening on {scheme}://{local}");
    server::serve(listener, tls, app, settings.connections, shutdown).await;
    // Manifest copies and recovery records are written in the background after each
    // request: let the queued ones land before exiting, or a rebuild would miss them.
    if tokio::time::timeout(
        std::time::Duration::from_secs(30),
        registry.flush_recovery(),
    )
    .await
    .is_err()
    {
        tracing::warn!("recovery records still queued after 30 s; exiting without them");
    }
    if let Some(sender) = webhook_sender {
        // The router (and with it every notifier) is gone: the sender drains the queue
        // and stops, or is cut short after a few seconds.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), sender).await;
    }
    // Likewise the push mirrors copy what is queued, for a few seconds at most.
    for task in push_mirrors {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    }
    maintenance.abort();
    for task in pull_mirrors {
        task.abort();
    }
    if let Some(c) = collector {
        c.abort();
    }
    if let Some(r) = retention_task {
        r.abort();
    }
    // The maintenance task writes tallied pulls every few seconds; these are the rest.
    match tokio::time::timeout(std::time::Duration::from_secs(10), registry.flush_pulls()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "pull counts of the last seconds not written"),
        Err(_) => tracing::warn!("pull counts of the last seconds not written after 10 s"),
    }
    tracing::info!("stopped");
    Ok(())
}

fn open_blobs(url: &StorageUrl) -> Result<Arc<dyn BlobStore>, BoxError> {
    match url {
        StorageUrl::Fs(root) => {
            std::fs::create_dir_all(root)
                .map_err(|e| format!("cannot create storage folder {}: {e}", root.display()))?;
            let store = storage_fs::FsBlobStore::open(root)
                .map_err(|e| format!("cannot open storage folder {}: {e}", root.display()))?;
            tracing::info!(path = %root.display(), "blobs in a local folder");
            Ok(Arc::new(store))
        }
        #[cfg(feature = "s3")]
        StorageUrl::S3(url) => {
            let store = storage_s3::S3BlobStore::from_url(url)
                .map_err(|e| format!("cannot use S3 storage {url}: {e}"))?;
            tracing::info!(url = %url, "blobs in S3");
            Ok(Arc::new(store))
        }
        #[cfg(not(feature = "s3"))]
        StorageUrl::S3(url) => Err(features::not_built("s3", &format!("--storage {url}")).into()),
    }
}

async fn open_metadata(url: &MetadataUrl) -> Result<Arc<dyn MetadataStore>, BoxError> {
    match url {
        MetadataUrl::Sqlite(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    format!("cannot create metadata folder {}: {e}", parent.display())
                })?;
            }
            let store = metadata_sqlite::SqliteMetadataStore::open(path)
                .map_err(|e| format!("cannot open SQLite database {}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), "metadata in SQLite");
            Ok(Arc::new(store))
        }
        #[cfg(feature = "postgres")]
        MetadataUrl::Postgres(url) => {
            let store = metadata_postgres::PostgresMetadataStore::connect(url)
                .await
                .map_err(|e| format!("cannot use PostgreSQL: {e}"))?;
            tracing::info!("metadata in PostgreSQL");
            Ok(Arc::new(store))
        }
        // The URL holds the password: name the scheme only.
        #[cfg(not(feature = "postgres"))]
        MetadataUrl::Postgres(_) => {
            Err(features::not_built("postgres", "--metadata postgres://...").into())
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM; in-flight requests then finish before exit.
/// The SIGTERM handler is installed when this is called, not when the future is first
/// polled: the server logs "listening" before it polls this, and a SIGTERM
/// in between would otherwise kill the process with the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        let ctrl_c = async {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::warn!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let terminate = async {
            match terminate {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
            () = terminate => tracing::info!("SIGTERM received, shutting down"),
        }
    }
}
