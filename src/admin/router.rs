//! The admin API's paths, the guard in front of them, and serving them.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;

use super::routes::{delete_route, get_route, list_routes, put_route, reload};
use super::status::{healthz, metrics, readyz, readyz_writes};
use super::{apps, guard, tls, AdminState};

pub fn router(state: Arc<AdminState>) -> Router {
    let route_body = DefaultBodyLimit::max(state.max_route_body);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/readyz/writes", get(readyz_writes))
        .route("/metrics", get(metrics))
        .route("/routes", get(list_routes))
        .route(
            "/routes/{name}",
            get(get_route)
                .put(put_route)
                .delete(delete_route)
                .layer(route_body),
        )
        .route("/reload", post(reload))
        .merge(apps::routes(state.max_app_body))
        // Outermost: runs before every handler and so before any body
        // extractor reads a byte.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            guard::guard,
        ))
        .with_state(state)
}

/// Serves the admin API on `listener` until `stop` is cancelled, with the
/// limits of `http` and over TLS if `tls` is given ([`serve`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    http: crate::config::admin::AdminHttp,
    tls: Option<tls::AdminTlsAcceptor>,
    stop: CancellationToken,
) {
    super::serve::serve(listener, router(state), http, tls, stop).await;
}
