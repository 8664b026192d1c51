//! Timers the control plane's tasks share.

use tokio::time::Instant;

/// Sleeps until `at`, or forever.
pub async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
