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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::apps::stored::StoredApp;
use crate::apps::AppKey;
use crate::config::routes::RouteSpec;

pub use self::redb::RedbStore;

/// The schema this binary writes and reads.
pub const SCHEMA_VERSION: u64 = 1;

/// The file name inside `state_dir`.
pub const FILE_NAME: &str = "state.redb";

/// With `[etcd]`, the local cache of the last set read from etcd, in
/// `state_dir` too. A file of its own, apart from [`FILE_NAME`], because it
/// is a copy of another store's truth, replaced whole at each full read:
/// a config switched to etcd (or back) must not serve the other mode's
/// state as its own. Same schema and tables.
pub const ETCD_CACHE_FILE: &str = "etcd-cache.redb";

/// One accepted write.
#[derive(Debug, Clone)]
pub enum Change {
    PutRoute(RouteSpec),
    DeleteRoute(String),
    PutApp(StoredApp),
    DeleteApp(AppKey),
}

/// Everything stored, as read at start.
#[derive(Debug, Default)]
pub struct Stored {
    pub routes: Vec<RouteSpec>,
    pub apps: Vec<StoredApp>,
    /// Entries whose value does not parse (named, with why): left out of
    /// the start, kept in the file for a person to look at.
    pub unreadable: Vec<String>,
}

/// A store that cannot open, read or commit; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("state store {}: {message}", path.display())]
pub struct StateError {
    pub path: PathBuf,
    pub message: String,
}

impl StateError {
    pub fn new(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// The interface the reconciler writes through. Every method blocks on
/// disk I/O: call it from a blocking thread (`spawn_blocking`), never from
/// an async worker.
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// Reads everything stored.
    fn load(&self) -> Result<Stored, StateError>;
    /// Commits `changes` in one transaction, durably (on disk when this
    /// returns `Ok`), or none of them.
    fn commit(&self, changes: &[Change]) -> Result<(), StateError>;
    /// Replaces everything stored with `routes` and `apps`, in one durable
    /// transaction: `state import --replace`, and the etcd cache, whose
    /// every full read is the whole truth (deletions included).
    fn replace(&self, routes: &[RouteSpec], apps: &[StoredApp]) -> Result<(), StateError>;
}

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
