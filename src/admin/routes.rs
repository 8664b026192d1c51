//! `GET/PUT/DELETE /routes/..` and `POST /reload`: the routes API.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;

use super::error::{body_refused, written};
use super::{AdminState, ApiError};
use crate::config::routes::RouteSpec;
use crate::routing::{RouteEntry, Source};

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

pub(super) async fn list_routes(State(s): State<Arc<AdminState>>) -> Response {
    let snap = s.shared.router.load_full();
    let routes: Vec<RouteView<'_>> = snap.routes().map(RouteView::from).collect();
    Json(json!({ "routes": routes })).into_response()
}

pub(super) async fn get_route(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Response {
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

pub(super) async fn put_route(
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

pub(super) async fn delete_route(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(etcd) = &s.etcd {
        return Ok(written(etcd.delete(&name).await?));
    }
    let applied = s.control.delete(name).await?;
    Ok(Json(json!({ "applied": applied })).into_response())
}

pub(super) async fn reload(State(s): State<Arc<AdminState>>) -> Result<Response, ApiError> {
    let applied = s.control.reload_file().await?;
    Ok(Json(json!({ "applied": applied })).into_response())
}
