//! A small Docker token server for registries using `registry_core::auth::TokenAuth`.
//!
//! It authenticates users against an htpasswd file (bcrypt), grants per-repository access
//! from the `[policy]` rules of its TOML configuration, and signs tokens with a private key
//! (Ed25519, P-256 or RSA PEM). See `token_server::Config` for the file's format.
//!
//! Run it:
//!
//! ```text
//! openssl genpkey -algorithm ed25519 -out token.key
//! openssl pkey -in token.key -pubout -out token.pub   # give this one to the registry
//! htpasswd -Bbn alice secret > htpasswd
//! cargo run -p token-server -- token-server.toml     # --help lists the options
//! curl -u alice:secret 'http://127.0.0.1:5001/token?service=registry&scope=repository:team-a/app:pull,push'
//! ```
//!
//! and configure the registry with
//! `TokenAuth::from_pem("http://127.0.0.1:5001/token", "registry", "token-server", &public_pem)`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use token_server::{Config, TokenServer};

/// A Docker token server: checks users against an htpasswd file, grants repository
/// access by the policy of its config file, and signs tokens for a registry.
#[derive(Debug, Parser)]
#[command(name = "token-server", version)]
struct Cli {
    /// The TOML configuration: `listen`, `issuer`, `service`, `private_key` (PEM: Ed25519,
    /// P-256 or RSA), `htpasswd` (bcrypt entries), `expires_in` (seconds) and `[policy]`
    /// (registry_core::auth::AccessPolicy rules). Relative paths are relative to its folder.
    #[arg(value_name = "CONFIG")]
    config: PathBuf,
    /// Listen on this address instead of the file's `listen` (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("token-server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::load(&cli.config)?;
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    let server = Arc::new(TokenServer::from_config(&config)?);
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    tracing::info!(address = %listener.local_addr()?, "token server listening");
    axum::serve(listener, server.router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
