//! The admin API's audit trail: every write (allowed or refused) is one
//! structured log line, target `mse_proxy::audit`, saying who (the token's
//! name or the client certificate's subject, never a token), what (method,
//! path, the route or app it names) and how it ended (the status); and every
//! request is counted by the access it needed and its outcome
//! (`mse_proxy_admin_requests_total{access, outcome}`), so that a burst of
//! refused tokens is an alert, not a grep.

use axum::http::{Method, StatusCode};

use crate::config::Role;
use crate::metrics::Metrics;

/// The outcome label of a status: bounded, whatever the handler answered.
pub fn outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=399 => "ok",
        401 => "unauthenticated",
        403 => "forbidden",
        503 => "unavailable",
        400..=499 => "invalid",
        _ => "error",
    }
}

/// What a path names: `route NAME`, `app PROJECT/NAME`, or nothing.
pub fn target(path: &str) -> Option<String> {
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("routes"), Some(n), None, None) if !n.is_empty() => Some(format!("route {n}")),
        (Some("apps"), Some(p), Some(n), None) if !p.is_empty() && !n.is_empty() => {
            Some(format!("app {p}/{n}"))
        }
        _ => None,
    }
}

/// Counts one answered request and, for a write, writes its audit line.
pub fn record(
    metrics: &Metrics,
    need: Option<Role>,
    who: &str,
    method: &Method,
    path: &str,
    status: StatusCode,
) {
    let access = need.map_or("open", Role::as_str);
    let outcome = outcome(status);
    metrics
        .admin_requests
        .with_label_values(&[access, outcome])
        .inc();
    if need == Some(Role::Write) {
        // The path is the client's: shown as data (Debug-quoted by the
        // formatter), and cut so that a hostile one cannot bloat the log.
        let path: String = path.chars().take(256).collect();
        let target = target(&path).unwrap_or_default();
        tracing::info!(
            target: "mse_proxy::audit",
            who,
            method = %method,
            path = %path,
            target = %target,
            status = status.as_u16(),
            outcome,
            "admin write"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_outcomes() {
        assert_eq!(target("/routes/shop").as_deref(), Some("route shop"));
        assert_eq!(target("/apps/p/web").as_deref(), Some("app p/web"));
        assert_eq!(target("/reload"), None);
        assert_eq!(target("/routes/"), None);
        assert_eq!(target("/apps/p/web/x"), None);
        assert_eq!(outcome(StatusCode::ACCEPTED), "ok");
        assert_eq!(outcome(StatusCode::CONFLICT), "invalid");
        assert_eq!(outcome(StatusCode::PAYLOAD_TOO_LARGE), "invalid");
        assert_eq!(outcome(StatusCode::SERVICE_UNAVAILABLE), "unavailable");
        assert_eq!(outcome(StatusCode::INTERNAL_SERVER_ERROR), "error");
    }
}
