//! The apps API on the admin listener (see `crate::apps`):
//!
//! - `GET /apps`: every registered app;
//! - `GET /apps/{project}/{name}`: one, with its effective expiry, derived
//!   routes and CNAME verdicts;
//! - `PUT /apps/{project}/{name}`: register a deployment (JSON app record),
//!   replacing the one under that key; the answer is the app as registered;
//! - `DELETE /apps/{project}/{name}`.
//!
//! Writes need a write credential, as route writes do (checked by
//! `crate::admin::auth::guard` before the body is read). Errors are JSON:
//! 400 lists every violation with its field (`violations: [{field,
//! message}]`), 404 names what is missing, 409 says which route or app
//! already holds a host, a route name or an id.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::error::{body_refused, written};
use super::{AdminState, ApiError};
use crate::apps::cname::{check_all, custom_hosts};
use crate::apps::store::AppView;
use crate::apps::{AppKey, AppPut, AppRecord};
use crate::config::ConfigErrors;
use crate::control::ControlError;
use crate::host::parse_host_pattern;
use crate::host::HostPattern;

/// The apps routes, merged into [`super::router`]; a record body is
/// capped at `max_body` bytes (413 beyond).
pub fn routes(max_body: usize) -> Router<Arc<AdminState>> {
    Router::new().route("/apps", get(list)).route(
        "/apps/{project}/{name}",
        get(get_app)
            .put(put_app)
            .delete(delete_app)
            .layer(DefaultBodyLimit::max(max_body)),
    )
}

async fn list(State(s): State<Arc<AdminState>>) -> Response {
    let apps = s.control.apps();
    let views: Vec<AppView<'_>> = apps.iter().map(|e| AppView::from(&**e)).collect();
    Json(json!({ "apps": views })).into_response()
}

async fn get_app(
    State(s): State<Arc<AdminState>>,
    Path((project, name)): Path<(String, String)>,
) -> Response {
    let key = AppKey { project, name };
    let apps = s.control.apps();
    match apps.get(&key) {
        Some(e) => Json(AppView::from(&**e)).into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, format!("no app `{key}`")).into_response(),
    }
}

async fn put_app(
    State(s): State<Arc<AdminState>>,
    Path((project, name)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return body_refused(e, s.max_app_body, "admin.max_app_body").into_response(),
    };
    let record = match parse_record(&body) {
        Ok(r) => r,
        Err((field, message)) => return violations(vec![(field, message)]),
    };
    let key = AppKey { project, name };
    // The CNAME and ownership checks run here, before the reconciler sees the record: a
    // slow DNS holds up this request only, never other route changes.
    let cfg = &s.shared.config.apps;
    let hosts: Vec<String> = [
        Some(&record.domain_name),
        record.config_domain_name.as_ref(),
    ]
    .into_iter()
    .flatten()
    .filter_map(|h| match parse_host_pattern(h) {
        Ok(HostPattern::Exact(n)) => Some(n),
        _ => None,
    })
    .collect();
    let custom = custom_hosts(cfg, hosts.iter().map(String::as_str));
    let cname = check_all(&s.shared.dns, cfg, &key.project, &custom).await;
    let put = AppPut {
        key: key.clone(),
        record,
        cname,
    };
    if let Some(etcd) = &s.etcd {
        return match etcd.put_app(put).await {
            Ok(w) => {
                let apps = s.control.apps();
                let view = apps.get(&key).map(|e| AppView::from(&**e));
                let status = if w.live_here {
                    StatusCode::OK
                } else {
                    StatusCode::ACCEPTED
                };
                let body = json!({ "etcd_revision": w.etcd_revision, "live_here": w.live_here, "app": view });
                (status, Json(body)).into_response()
            }
            Err(e) => control_error(e),
        };
    }
    match s.control.put_app(put).await {
        Ok(applied) => {
            let apps = s.control.apps();
            let view = apps.get(&key).map(|e| AppView::from(&**e));
            Json(json!({ "applied": applied, "app": view })).into_response()
        }
        Err(e) => control_error(e),
    }
}

async fn delete_app(
    State(s): State<Arc<AdminState>>,
    Path((project, name)): Path<(String, String)>,
) -> Response {
    let key = AppKey { project, name };
    if let Some(etcd) = &s.etcd {
        return match etcd.delete_app(&key).await {
            Ok(w) => written(w),
            Err(e) => control_error(e),
        };
    }
    match s.control.delete_app(key).await {
        Ok(applied) => Json(json!({ "applied": applied })).into_response(),
        Err(e) => control_error(e),
    }
}

/// Parses a record body, naming the field of the first type error
/// (`status`, `id`...), or the missing or unknown field.
fn parse_record(body: &[u8]) -> Result<AppRecord, (String, String)> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let record: AppRecord = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let field = if path == "." {
            named_field(&message).unwrap_or_default()
        } else {
            path
        };
        (field, format!("body is not an app record: {message}"))
    })?;
    de.end()
        .map_err(|e| (String::new(), format!("body is not an app record: {e}")))?;
    Ok(record)
}

/// `missing field `node`` → `node`.
fn named_field(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("unknown field `"))?;
    rest.split_once('`').map(|(f, _)| f.to_string())
}

fn control_error(e: ControlError) -> Response {
    match e {
        ControlError::Invalid(errs) => invalid(errs),
        other => ApiError::from(other).into_response(),
    }
}

fn invalid(errs: ConfigErrors) -> Response {
    violations(errs.0.into_iter().map(|e| (e.field, e.message)).collect())
}

/// 400 with every violation: `details` as text (as the routes API gives
/// them), `violations` as `{field, message}`.
fn violations(list: Vec<(String, String)>) -> Response {
    let details: Vec<String> = list
        .iter()
        .map(|(f, m)| {
            if f.is_empty() {
                m.clone()
            } else {
                format!("{f}: {m}")
            }
        })
        .collect();
    let violations: Vec<_> = list
        .iter()
        .map(|(field, message)| json!({ "field": field, "message": message }))
        .collect();
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": "invalid app", "details": details, "violations": violations })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_errors_name_their_field() {
        let base = r#"{"id":"6f9c1a1e-0000-4000-8000-000000000001","domain_name":"a.apps.example.com",
            "ssl_certificate_origin":"self","hardware":"4g-eu-001","node":"10.0.0.1:443","status":"running"}"#;
        assert!(parse_record(base.as_bytes()).is_ok());
        for (body, field) in [
            (base.replace("\"running\"", "\"sleeping\""), "status"),
            (base.replace("6f9c1a1e", "zzzz"), "id"),
            (base.replace("\"node\":\"10.0.0.1:443\",", ""), "node"),
            (
                base.replace("\"status\"", "\"colour\":1,\"status\""),
                "colour",
            ),
            (base.replace("\"self\"", "7"), "ssl_certificate_origin"),
            (format!("{base} trailing"), ""),
            ("[".to_string(), ""),
        ] {
            let (f, m) = parse_record(body.as_bytes()).unwrap_err();
            assert_eq!(f, field, "{m}");
        }
    }
}
