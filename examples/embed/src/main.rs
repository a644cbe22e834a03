//! Shows how to embed the registry in your own axum application: this app serves its own
//! handlers at `/` and `/hello`, and the OCI distribution API at `/v2/` next to them, by
//! merging `Registry::router()` into its router, and the web UI at `/ui/` by merging
//! `registry_core::ui::router`. Blobs go to a folder, metadata to SQLite.
//!
//! Run it with `cargo run -p embed` (state in a temporary folder, removed on exit) or
//! `cargo run -p embed -- DATA_DIR [ADDR]` (default address 127.0.0.1:5001), then try
//! `curl localhost:5001/hello` and `curl -i localhost:5001/v2/`, or open
//! <http://localhost:5001/ui/> in a browser.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use registry_core::{Registry, RegistryConfig};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Your application, with the registry merged in.
async fn app(data: &Path) -> Result<(Router, Registry), BoxError> {
    let blobs = storage_fs::FsBlobStore::open(data.join("blobs"))?;
    let metadata = metadata_sqlite::SqliteMetadataStore::open(data.join("registry.db"))?;
    let registry = Registry::new(
        Arc::new(blobs),
        Arc::new(metadata),
        RegistryConfig::default(),
    );
    let app = Router::new()
        .route("/", get(|| async { "my app, with a registry at /v2/\n" }))
        .route("/hello", get(|| async { "hello\n" }))
        .merge(registry.router())
        .merge(registry_core::ui::router(&registry));
    Ok((app, registry))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let (_temp, data) = match args.next() {
        Some(dir) => (None, std::path::PathBuf::from(dir)),
        None => {
            let temp = tempfile::tempdir()?;
            let path = temp.path().to_owned();
            (Some(temp), path)
        }
    };
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:5001".to_string());
    std::fs::create_dir_all(&data)?;

    let (app, registry) = app(&data).await?;
    let _maintenance = registry.spawn_maintenance();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "listening on http://{} (data in {})",
        listener.local_addr()?,
        data.display()
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(app: &axum::Router, path: &str) -> (u16, Vec<u8>) {
        let req = axum::http::Request::get(path).body(Body::empty()).unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, body)
    }

    #[tokio::test]
    async fn own_routes_and_registry_side_by_side() {
        let dir = tempfile::tempdir().unwrap();
        let (app, _registry) = super::app(dir.path()).await.unwrap();
        assert_eq!(get(&app, "/hello").await, (200, b"hello\n".to_vec()));
        assert_eq!(get(&app, "/").await.0, 200);
        assert_eq!(get(&app, "/v2/").await.0, 200);
        assert_eq!(get(&app, "/v2/no/such/repo/tags/list").await.0, 404);
        let (status, page) = get(&app, "/ui/").await;
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&page).contains("<h1>Repositories</h1>"));
    }
}
