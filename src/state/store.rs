//! The durable store's interface: what is stored, the changes it takes,
//! and its errors, apart from the redb engine that implements it.

use std::path::{Path, PathBuf};

use crate::apps::stored::StoredApp;
use crate::apps::AppKey;
use crate::config::routes::RouteSpec;

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
    /// An upgrade (`crate::upgrade`): closes the file so that the new
    /// process can open it (redb locks a file to one process); every
    /// read or write fails until [`StateStore::resume`].
    fn release(&self) {}
    /// The upgrade failed: this process writes again (reopening the file).
    fn resume(&self) {}
}
