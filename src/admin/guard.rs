//! The middleware in front of every admin handler: who is asking, and
//! may they (`super::auth`), before any body is read; the answer counted
//! and, for writes, audited.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth::{required, Identity, PeerCert};
use super::{audit, AdminState, ApiError};

/// The middleware: authenticates from the head, then runs the handler,
/// then counts the answer and writes the audit line of a write.
pub async fn guard(State(s): State<Arc<AdminState>>, mut req: Request, next: Next) -> Response {
    let need = required(req.method(), req.uri().path(), s.auth.metrics_auth);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let peer = req.extensions().get::<PeerCert>().cloned();
    let (id, decided) = match need {
        None => (Identity { who: "-".into() }, Ok(())),
        Some(role) => s.auth.decide(role, req.headers(), peer.as_ref()),
    };
    let who = id.who.clone();
    let resp = match decided {
        Ok(()) => {
            req.extensions_mut().insert(id);
            match tokio::time::timeout(s.request_timeout, next.run(req)).await {
                Ok(r) => r,
                Err(_) => ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request took longer than admin.request_timeout",
                )
                .into_response(),
            }
        }
        Err(e) => e.into_response(),
    };
    audit::record(&s.shared.metrics, need, &who, &method, &path, resp.status());
    resp
}
