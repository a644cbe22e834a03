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
//! cargo run -p token-server -- token-server.toml
//! curl -u alice:secret 'http://127.0.0.1:5001/token?service=registry&scope=repository:team-a/app:pull,push'
//! ```
//!
//! and configure the registry with
//! `TokenAuth::from_pem("http://127.0.0.1:5001/token", "registry", "token-server", &public_pem)`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use token_server::{Config, TokenServer};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: token-server <config.toml>");
        return ExitCode::from(2);
    };
    match run(&path).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("token-server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load(path)?;
    let server = Arc::new(TokenServer::from_config(&config)?);
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "token server listening");
    axum::serve(listener, server.router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
