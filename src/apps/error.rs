//! Why the app registry refused a change. Its own type, so that apps
//! depend on nothing of the control plane; the control API maps it into
//! its errors (`crate::control::ControlError`).

use crate::config::ConfigErrors;

/// Why an app change was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("invalid: {0}")]
    Invalid(ConfigErrors),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("not found: {0}")]
    NotFound(String),
}
