//! The admin HTTP listener (axum): health, readiness and the routes API.
//! Reads are open; writes need `Authorization: Bearer <token>`, and with no
//! token configured every write is refused rather than left open.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::routes::RouteSpec;
use crate::config::TokenSource;
use crate::proxy::Shared;
use crate::routing::reconciler::watchdog::Health;
use crate::routing::reconciler::{Control, ControlError};
use crate::routing::sources::etcd::write::{EtcdWriter, Written};
use crate::routing::{RouteEntry, Source};

/// What the handlers share.
pub struct AdminState {
    pub shared: Arc<Shared>,
    pub control: Control,
    /// The write token; `None` refuses all writes.
    pub token: Option<Vec<u8>>,
    /// With `[etcd]`: route writes go to the shared store.
    pub etcd: Option<Arc<EtcdWriter>>,
    /// The reconciler's watchdog, for `/healthz`.
    pub health: Health,
}

/// Reads the token named by the config. A named file or variable that
/// cannot be read is a startup error, not a silently open API.
pub fn load_token(source: &TokenSource) -> anyhow::Result<Option<Vec<u8>>> {
    let token = match source {
        TokenSource::None => return Ok(None),
        TokenSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("admin.token_file {}: {e}", path.display()))?,
        TokenSource::Env(var) => std::env::var(var).map_err(|_| {
            anyhow::anyhow!("admin.token_env: environment variable {var} is not set")
        })?,
    };
    let token = token.trim();
    if token.is_empty() {
        anyhow::bail!("admin token is empty");
    }
    Ok(Some(token.as_bytes().to_vec()))
}

pub fn router(state: Arc<AdminState>) -> Router {
    // Every body is read whole before it is parsed: the cap bounds what one
    // request can make the process hold (`limits.max_admin_body_bytes`).
    let body_cap = state.shared.config.control_limits.admin_body_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/readyz/writes", get(readyz_writes))
        .route("/metrics", get(metrics))
        .route("/routes", get(list_routes))
        .route(
            "/routes/{name}",
            get(get_route).put(put_route).delete(delete_route),
        )
        .route("/reload", post(reload))
        .merge(crate::admin_apps::routes())
        .layer(DefaultBodyLimit::max(body_cap))
        .with_state(state)
}

/// Serves the admin API on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    stop: CancellationToken,
) {
    if let Err(e) = axum::serve(listener, router(state))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "admin listener failed");
    }
}

/// A JSON error answer.
pub struct ApiError {
    status: StatusCode,
    message: String,
    details: Vec<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            details: Vec::new(),
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
        if self.status == StatusCode::UNAUTHORIZED {
            (self.status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (self.status, body).into_response()
        }
    }
}

pub(crate) fn authorize(state: &AdminState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "writes are disabled: no admin token is configured",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "a bearer token is required"))?;
    aws_lc_rs::constant_time::verify_slices_are_equal(given.trim().as_bytes(), token)
        .map_err(|_| ApiError::new(StatusCode::FORBIDDEN, "wrong token"))
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

async fn readyz(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    if s.control.stats.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
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
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers)?;
    let body = body.map_err(|e| body_refused(&s, e))?;
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
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&s, &headers)?;
    if let Some(etcd) = &s.etcd {
        return Ok(written(etcd.delete(&name).await?));
    }
    let applied = s.control.delete(name).await?;
    Ok(Json(json!({ "applied": applied })).into_response())
}

/// A body that could not be read: over the cap (413, naming the key that
/// sets it), or cut off by the client.
pub(crate) fn body_refused(s: &AdminState, e: BytesRejection) -> ApiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        let cap = s.shared.config.control_limits.admin_body_bytes;
        ApiError::new(
            status,
            format!("the body is over {cap} bytes (limits.max_admin_body_bytes)"),
        )
    } else {
        ApiError::new(status, format!("the body could not be read: {e}"))
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

async fn reload(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&s, &headers)?;
    let applied = s.control.reload_file().await?;
    Ok(Json(json!({ "applied": applied })).into_response())
}
