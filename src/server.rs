//! Running the proxy as a process: load, start, then follow signals
//! (SIGHUP reloads routes, SIGTERM drains, a second SIGINT exits at once).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{routes, Config, ConfigError, ConfigErrors};
use crate::proxy::ProxyHandle;
use crate::routing::{reload, Route, Router, Snapshot};

/// Loads and validates the routes the config names (none if it names no
/// file), including that `no_sni_route` exists among them.
pub fn load_routes(config: &Config) -> Result<Vec<Route>, ConfigErrors> {
    let routes = match &config.routes_file {
        Some(path) => routes::load_file(path)?,
        None => Vec::new(),
    };
    if let Some(name) = &config.no_sni_route {
        if !routes.iter().any(|r| &r.name == name) {
            return Err(ConfigError::new(
                &config.source,
                "refusal.no_sni_route",
                format!("`{name}` names no route"),
            )
            .into());
        }
    }
    Ok(routes)
}

/// What `mse-proxy check` validates: the config file and its routes.
pub fn check(path: &Path) -> Result<(Config, Vec<Route>), ConfigErrors> {
    let config = Config::load(path)?;
    let routes = load_routes(&config)?;
    Ok((config, routes))
}

/// Builds the first table and starts listening.
pub fn start(config: Config, routes: Vec<Route>) -> anyhow::Result<ProxyHandle> {
    let router = Router::new(Snapshot::default());
    reload::apply(&router, routes, config.no_sni_route.as_deref())
        .map_err(|e| anyhow::anyhow!(e))?;
    tracing::info!(routes = router.load().len(), "routes loaded");
    ProxyHandle::start(config, router).context("starting listeners")
}

/// Re-reads the routes file and swaps it in; a broken file changes nothing.
pub fn reload_routes(handle: &ProxyHandle) -> Result<reload::Applied, String> {
    let config = &handle.shared.config;
    let routes = load_routes(config).map_err(|e| e.to_string())?;
    reload::apply(
        &handle.shared.router,
        routes,
        config.no_sni_route.as_deref(),
    )
}

/// Serves until SIGTERM or SIGINT, reloading routes on SIGHUP, then drains
/// for the configured grace. A second SIGINT during the drain exits at once.
pub async fn serve_until_signal(handle: ProxyHandle) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = hup.recv() => match reload_routes(&handle) {
                Ok(a) => tracing::info!(added = a.added, changed = a.changed, removed = a.removed, unchanged = a.unchanged, "routes reloaded on SIGHUP"),
                Err(e) => tracing::error!(error = %e, "reload refused; the current routes stay"),
            },
            _ = term.recv() => { tracing::info!("SIGTERM: draining"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: draining (again to exit at once)"); break; }
        }
    }
    let grace = handle.shared.config.timeouts.shutdown_grace;
    let shared = Arc::clone(&handle.shared);
    tokio::select! {
        cut = handle.shutdown(grace) => {
            tracing::info!(closed_at_deadline = cut, "stopped");
        }
        _ = int.recv() => {
            tracing::warn!(open = shared.config.max_connections - shared.limit.available_permits(), "second SIGINT: exiting now");
            std::process::exit(130);
        }
    }
    Ok(())
}
