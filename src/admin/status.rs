//! Health, readiness and metrics: what a supervisor, a load balancer and
//! Prometheus ask.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AdminState;

pub(super) async fn metrics(State(s): State<Arc<AdminState>>) -> Response {
    let shared = &s.shared;
    let open = shared.config.max_connections - shared.limit.available_permits();
    shared.metrics.active.set(open as i64);
    shared
        .metrics
        .sync_splice_pipe_failures(crate::proxy::splice_pipe_failures());
    let snapshot = shared.router.load_full();
    let apps = s.control.apps();
    let text = shared.metrics.render(|scrape| {
        snapshot.scrape(scrape);
        apps.scrape(scrape);
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub(super) async fn readyz(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
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
pub(super) async fn readyz_writes(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    match &s.etcd {
        Some(w) if !w.connected() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready for writes: etcd is unreachable\n",
        ),
        _ => (StatusCode::OK, "ready for writes\n"),
    }
}

/// 200 while the process can still change routes; 503 once the reconciler
/// has failed (the process is about to exit for a restart).
pub(super) async fn healthz(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    match s.health.failure() {
        None => (StatusCode::OK, "ok\n".to_string()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {why}\n"),
        ),
    }
}
