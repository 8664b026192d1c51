//! How a `state` command fails: a message and the exit code it maps to,
//! shared by the local-store and the etcd paths.

use crate::config::ConfigErrors;

/// Exit code for an invalid import or configuration (as `check`).
pub const EXIT_INVALID: u8 = 3;
/// Exit code for a store that cannot be opened, read or written.
pub const EXIT_RUNTIME: u8 = 1;

/// A failure, with the exit code it maps to.
pub(super) struct Failure(pub(super) u8, pub(super) String);

impl From<ConfigErrors> for Failure {
    fn from(e: ConfigErrors) -> Self {
        Failure(EXIT_INVALID, e.to_string())
    }
}

pub(super) fn runtime(e: impl std::fmt::Display) -> Failure {
    Failure(EXIT_RUNTIME, e.to_string())
}
