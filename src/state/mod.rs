//! Durable state without `[etcd]`: what the admin API accepted (API routes,
//! app records with their `deployed_at` and CNAME verdicts) is committed
//! here before the API answers 2xx, and loaded back at start before
//! `/readyz` turns 200, so a restart, a crash or an upgrade loses nothing
//! and restarts no app's expiry clock.
//!
//! The reconciler (`crate::routing::reconciler`) is the only writer: it
//! validates a change, commits it here on a blocking thread, and applies it
//! only once the commit returned. A commit that fails leaves the live state
//! as it was and the API answers 503. This module imports only the config
//! and record types it stores, never the reconciler.
//!
//! # Schema (version [`SCHEMA_VERSION`])
//! One file, `state.redb`, in the configured `state_dir`, with three tables:
//! - `meta`: `schema_version` → 1. A file of a newer version is refused at
//!   open (an older binary must not rewrite what it does not understand).
//! - `routes`: route name → the route as JSON, in the API's schema
//!   ([`RouteSpec`], what `PUT /routes/{name}` takes).
//! - `apps`: (project, name) → the app as JSON ([`StoredApp`], the shape
//!   etcd holds too): the record with `deployed_at` filled in, the CNAME
//!   verdicts on its custom hostnames, its hostnames.
//!
//! Routes of the routes file are not stored: the file stays their source.

pub mod export;
mod redb;
mod store;

use std::path::Path;
use std::sync::Arc;

pub use self::redb::RedbStore;
pub use store::{
    Change, StateError, StateStore, Stored, ETCD_CACHE_FILE, FILE_NAME, SCHEMA_VERSION,
};

/// Opens (creating it if need be) the store in `dir`.
pub fn open(dir: &Path) -> Result<Arc<dyn StateStore>, StateError> {
    open_file(dir, FILE_NAME)
}

/// Opens (creating it if need be) the store `name` in `dir`
/// ([`FILE_NAME`] or [`ETCD_CACHE_FILE`]).
pub fn open_file(dir: &Path, name: &str) -> Result<Arc<dyn StateStore>, StateError> {
    check_dir(dir)?;
    Ok(Arc::new(RedbStore::open(&dir.join(name))?))
}

/// Creates `dir` if needed and checks that a file can be written in it, so
/// `mse-proxy check` and start say so at once rather than at the first
/// API write.
pub fn check_dir(dir: &Path) -> Result<(), StateError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StateError::new(dir, format!("cannot create the directory: {e}")))?;
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| StateError::new(dir, format!("the directory is not writable: {e}")))
}
