//! The local cache of etcd: the last set read from etcd, kept in
//! `state_dir/etcd-cache.redb` (`crate::state`, the same redb store and
//! schema as the single-instance state), served at start when etcd cannot
//! be reached. It replaced the JSON fallback file, which was written
//! without fsync, under a fixed temporary name, on an async worker, and
//! whose failures were only a log line.
//!
//! Each write replaces the whole set in one transaction, fsynced
//! (`Durability::Immediate`): the copy on disk is one set etcd held, never
//! a mix, and a deletion is a deletion. Writes run on a thread of their
//! own, never on an async worker, the latest set replacing any set not
//! yet written (the follower asks at most once a second). A failed write
//! is counted (`mse_proxy_etcd_cache_write_errors_total`), logged, and
//! shown in `/readyz`'s body until a write succeeds; serving goes on, as
//! etcd stays the truth.

use std::sync::{Arc, Condvar, Mutex};

use prometheus::{IntCounter, IntGauge};

use super::EtcdStatus;
use crate::apps::stored::StoredApp;
use crate::config::routes::RouteSpec;
use crate::state::{StateStore, Stored};

/// What the writer reports.
pub struct CacheMetrics {
    /// `mse_proxy_etcd_cache_write_errors_total`.
    pub errors: IntCounter,
    /// `mse_proxy_etcd_cache_revision`: the etcd revision of the set last
    /// written, to compare with `mse_proxy_etcd_revision`.
    pub revision: IntGauge,
}

/// A set waiting to be written.
struct Pending {
    revision: i64,
    routes: Vec<RouteSpec>,
    apps: Vec<StoredApp>,
}

/// The slot the writer thread takes sets from: the latest wins.
#[derive(Default)]
struct Slot {
    next: Option<Pending>,
    /// The writer is writing a set it took.
    writing: bool,
    closed: bool,
}

pub struct EtcdCache {
    /// What the cache held at start, until the follower takes it (once:
    /// only a start with etcd unreachable serves it).
    at_start: Mutex<Option<Stored>>,
    slot: Arc<(Mutex<Slot>, Condvar)>,
}

impl std::fmt::Debug for EtcdCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCache").finish_non_exhaustive()
    }
}

impl EtcdCache {
    /// Starts the writer thread for `store`, whose content read at start
    /// is `stored`.
    pub fn start(
        store: Arc<dyn StateStore>,
        stored: Stored,
        status: Arc<EtcdStatus>,
        metrics: CacheMetrics,
    ) -> std::io::Result<EtcdCache> {
        let slot: Arc<(Mutex<Slot>, Condvar)> = Arc::default();
        let theirs = Arc::clone(&slot);
        std::thread::Builder::new()
            .name("etcd-cache".into())
            .spawn(move || write_loop(&theirs, store.as_ref(), &status, &metrics))?;
        Ok(EtcdCache {
            at_start: Mutex::new(Some(stored)),
            slot,
        })
    }

    /// The set the cache held at start (`None` after the first call).
    pub fn take_at_start(&self) -> Option<Stored> {
        self.at_start
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Asks for `routes` and `apps` to become the cache; never blocks on
    /// the disk (the writer thread does).
    pub fn write(&self, revision: i64, routes: Vec<RouteSpec>, apps: Vec<StoredApp>) {
        let (lock, ready) = &*self.slot;
        let mut slot = lock.lock().unwrap_or_else(|p| p.into_inner());
        slot.next = Some(Pending {
            revision,
            routes,
            apps,
        });
        ready.notify_all();
    }

    /// Waits (blocking: call it from a blocking thread) until the sets
    /// asked for are written, or `limit` passes; true if they are. At
    /// shutdown, so the last change before a stop is in the cache a start
    /// with etcd down would serve.
    pub fn flush(&self, limit: std::time::Duration) -> bool {
        let (lock, ready) = &*self.slot;
        let deadline = std::time::Instant::now() + limit;
        let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
        while s.next.is_some() || s.writing {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            s = ready
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

impl Drop for EtcdCache {
    /// The writer finishes the set it was given, then ends.
    fn drop(&mut self) {
        let (lock, ready) = &*self.slot;
        lock.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        ready.notify_all();
    }
}

/// The writer thread: waits for a set, writes it, repeats; ends once the
/// cache is dropped and nothing is left to write. The lock is held only
/// to take a set, never across the write.
fn write_loop(
    slot: &(Mutex<Slot>, Condvar),
    store: &dyn StateStore,
    status: &EtcdStatus,
    metrics: &CacheMetrics,
) {
    let (lock, ready) = slot;
    loop {
        let next = {
            let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(p) = s.next.take() {
                    s.writing = true;
                    break p;
                }
                if s.closed {
                    return;
                }
                s = ready.wait(s).unwrap_or_else(|p| p.into_inner());
            }
        };
        match store.replace(&next.routes, &next.apps) {
            Ok(()) => {
                metrics.revision.set(next.revision);
                if status.cache_error().is_some() {
                    tracing::info!("etcd cache written again");
                }
                status.set_cache_error(None);
            }
            Err(e) => {
                metrics.errors.inc();
                tracing::error!(error = %e, "etcd cache not written: a start while etcd is down would serve an older set");
                status.set_cache_error(Some(e.to_string()));
            }
        }
        lock.lock().unwrap_or_else(|p| p.into_inner()).writing = false;
        ready.notify_all();
    }
}
