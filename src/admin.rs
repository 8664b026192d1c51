//! The admin HTTP listener (axum): health, readiness, metrics and the
//! routes API. Who may do what is decided from the request's head before
//! any handler runs ([`auth`]); every write leaves an audit line
//! ([`audit`]); bearer tokens come from files re-read as they change
//! ([`tokens`]).

pub mod audit;
pub mod auth;
pub mod serve;
pub mod tls;
pub mod tokens;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::routes::RouteSpec;
use crate::proxy::Shared;
use crate::routing::reconciler::watchdog::Health;
use crate::routing::reconciler::{Control, ControlError};
use crate::routing::sources::etcd::write::{EtcdWriter, Written};
use crate::routing::{RouteEntry, Source};

/// What the handlers share.
pub struct AdminState {
    pub shared: Arc<Shared>,
    pub control: Control,
    /// Tokens and certificate roles, checked by [`auth::guard`].
    pub auth: auth::Auth,
    /// Body caps of `PUT /routes/..` and `PUT /apps/..`, in bytes.
    pub max_route_body: usize,
    pub max_app_body: usize,
    /// From a request's head to its answer (408 beyond).
    pub request_timeout: std::time::Duration,
    /// With `[etcd]`: route writes go to the shared store.
    pub etcd: Option<Arc<EtcdWriter>>,
    /// The reconciler's watchdog, for `/healthz`.
    pub health: Health,
}

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
        .merge(crate::admin_apps::routes(state.max_app_body))
        // Outermost: runs before every handler and so before any body
        // extractor reads a byte.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::guard,
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
    serve::serve(listener, router(state), http, tls, stop).await;
}

/// A JSON error answer.
pub struct ApiError {
    status: StatusCode,
    message: String,
    details: Vec<String>,
    /// `WWW-Authenticate` of a 401.
    challenge: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            details: Vec::new(),
            challenge: None,
        }
    }

    /// 401 with the `WWW-Authenticate` challenge to send.
    pub(crate) fn unauthorized(message: impl Into<String>, challenge: &'static str) -> Self {
        Self {
            challenge: Some(challenge),
            ..Self::new(StatusCode::UNAUTHORIZED, message)
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Invalid(errs) => ApiError {
                status: StatusCode::BAD_REQUEST,
                message: "invalid route".into(),
                details: errs.0.iter().map(ToString::to_string).collect(),
                challenge: None,
            },
            ControlError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            ControlError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
            ControlError::Stopped => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
            }
            ControlError::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m),
            ControlError::Unsettled => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the routes file changed while it was read; try again",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.message, "details": self.details }));
        if let Some(challenge) = self.challenge {
            (self.status, [(header::WWW_AUTHENTICATE, challenge)], body).into_response()
        } else {
            (self.status, body).into_response()
        }
    }
}

async fn metrics(State(s): State<Arc<AdminState>>) -> Response {
    let shared = &s.shared;
    let open = shared.config.max_connections - shared.limit.available_permits();
    shared.metrics.active.set(open as i64);
    let text = shared
        .metrics
        .render(&shared.router.load_full(), &s.control.apps());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn readyz(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    let ready = s.control.stats.ready.load(Ordering::Relaxed);
    let mut body = String::from(if ready { "ready\n" } else { "not ready\n" });
    // With `[etcd]`: what an operator must know about the local cache,
    // without turning the instance unready (it still routes traffic).
    if let Some(status) = s.etcd.as_ref().map(|w| w.status()) {
        if status.on_fallback() {
            body.push_str(
                "stale: serving the local cache of etcd; etcd has not answered since start\n",
            );
        }
        if let Some(e) = status.cache_error() {
            body.push_str(&format!("etcd cache: the last write failed: {e}\n"));
        }
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

/// Whether route and app writes are taken now: always without `[etcd]`;
/// with it, while the etcd watch is live (routes keep serving either way).
async fn readyz_writes(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    match &s.etcd {
        Some(w) if !w.connected() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready for writes: etcd is unreachable\n",
        ),
        _ => (StatusCode::OK, "ready for writes\n"),
    }
}

/// A live route as the API shows it: its spec plus live state.
#[derive(Serialize)]
struct RouteView<'a> {
    #[serde(flatten)]
    spec: &'a RouteSpec,
    source: Source,
    open_connections: usize,
}

impl<'a> From<&'a Arc<RouteEntry>> for RouteView<'a> {
    fn from(e: &'a Arc<RouteEntry>) -> Self {
        RouteView {
            spec: &e.route.spec,
            source: e.source,
            open_connections: e.open_connections(),
        }
    }
}

async fn list_routes(State(s): State<Arc<AdminState>>) -> Response {
    let snap = s.shared.router.load_full();
    let routes: Vec<RouteView<'_>> = snap.routes().map(RouteView::from).collect();
    Json(json!({ "routes": routes })).into_response()
}

async fn get_route(State(s): State<Arc<AdminState>>, Path(name): Path<String>) -> Response {
    let snap = s.shared.router.load_full();
    match snap.get(&name) {
        Some(e) => Json(RouteView::from(e)).into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no live route named `{name}`"),
        )
        .into_response(),
    }
}

async fn put_route(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| body_refused(e, s.max_route_body, "admin.max_route_body"))?;
    let spec: RouteSpec = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("body is not a route: {e}")))?;
    if spec.name != name {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "body names route `{}` but the path names `{name}`",
                spec.name
            ),
        ));
    }
    if let Some(etcd) = &s.etcd {
        return Ok(written(etcd.put(spec).await?));
    }
    let applied = s.control.put(spec).await?;
    Ok(Json(json!({ "applied": applied })).into_response())
}

async fn delete_route(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(etcd) = &s.etcd {
        return Ok(written(etcd.delete(&name).await?));
    }
    let applied = s.control.delete(name).await?;
    Ok(Json(json!({ "applied": applied })).into_response())
}

/// A body that could not be read: over the endpoint's cap (413, naming the
/// key that sets it), or cut off by the client.
pub(crate) fn body_refused(e: BytesRejection, cap: usize, key: &str) -> ApiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, format!("the body is over {cap} bytes ({key})"))
    } else {
        ApiError::new(status, format!("the body could not be read: {e}"))
    }
}

/// 200 while the process can still change routes; 503 once the reconciler
/// has failed (the process is about to exit for a restart).
async fn healthz(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    match s.health.failure() {
        None => (StatusCode::OK, "ok\n".to_string()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {why}\n"),
        ),
    }
}

/// An etcd write: 200 once this instance serves it, 202 if it is in etcd
/// but not yet in this instance's table.
pub(crate) fn written(w: Written) -> Response {
    let status = if w.live_here {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (status, Json(w)).into_response()
}

async fn reload(State(s): State<Arc<AdminState>>) -> Result<Response, ApiError> {
    let applied = s.control.reload_file().await?;
    Ok(Json(json!({ "applied": applied })).into_response())
}
