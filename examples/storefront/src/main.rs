//! `storefront`: partcache's main example service.
//!
//! ```text
//! cargo run --release -p storefront            # embedded: local store + SQLite, no server needed
//! PARTCACHE_URL=redis-cluster://127.0.0.1:7000 cargo run --release -p storefront
//! ```
//!
//! Environment: `PORT` (default 3000), `HOST` (default 127.0.0.1; 0.0.0.0 in a
//! container), `PARTCACHE_URL` (default `memory://`), `DATABASE_URL` (default
//! `sqlite::memory:`), `RUST_LOG` (default `info,sqlx=warn`).

use std::time::Instant;

use storefront::{Config, Storefront};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    tracing_subscriber::fmt()
        .with_env_filter(
            // sqlx logs every statement at `info`: too much for a demo's console.
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")),
        )
        .init();
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|e| format!("PORT must be a port number, got `{port}`: {e}"))?,
        Err(_) => 3000,
    };
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_string());
    let config = Config::from_env();
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot listen on {host}:{port}: {e}"))?;
    let storefront = Storefront::start(&config).await?;
    let addr = listener.local_addr()?;
    // The tests read this line to learn the port (PORT=0 picks a free one).
    println!(
        "storefront listening on http://{addr} (caches: {}, database: {}, ready in {} ms)",
        storefront::redact_url(&config.cache_url),
        config.database_url,
        started.elapsed().as_millis()
    );
    println!("  try: curl -i http://{addr}/products/42   dashboard: http://{addr}/admin/caches");
    storefront.serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// Ctrl-C, or SIGTERM (what `docker stop` sends; as PID 1 in a container the process
/// would otherwise ignore it until killed).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "no SIGTERM handler; stop with Ctrl-C");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
