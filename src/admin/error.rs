//! The admin API's error answers: a JSON body with the reason and its
//! details, and the status each control-plane error maps to.

use axum::extract::rejection::BytesRejection;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::control::ControlError;
use crate::routing::sources::etcd::write::Written;

/// A JSON error answer.
pub struct ApiError {
    pub(super) status: StatusCode,
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
