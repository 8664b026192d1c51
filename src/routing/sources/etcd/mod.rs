//! etcd as the route store several instances share.
//!
//! Layout under the configured prefix `P`:
//! - `P/routes/{name}`: the route, as the JSON body of `PUT /routes/{name}`;
//! - `P/apps/{project}/{name}`: an app record (see [`stored_app`]);
//! - `P/hosts/{host}`: the key (under `P/`) of the route or app that claims
//!   that host pattern, e.g. `routes/shop`.
//!   Only writers read these: a transaction that puts a route also claims its
//!   hosts, and fails if another route holds one, so two instances cannot
//!   both give the same host away.
//!
//! A route with `expires_at` is written, with its host claims, under an etcd
//! lease that ends at the expiry, so the store cleans itself; every instance
//! also removes it locally at the exact instant (the reconciler's timer).
//!
//! [`follow`] keeps each instance's table in step with the store: a full
//! read, then a watch from the next revision; on any loss, a new full read
//! (which cannot miss a deletion, compacted or not). [`write`] is the admin
//! API's side.

pub mod cache;
pub mod follow;
pub mod stored_app;
pub mod write;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use crate::etcd::{Client, ConnectOptions, Tls};
use tokio::sync::watch;

use crate::config::etcd::{EtcdConfig, PasswordSource};

/// What the follower, the reconciler and the admin API share.
#[derive(Debug)]
pub struct EtcdStatus {
    /// The watch is live: the table follows the store and writes are taken.
    connected: AtomicBool,
    /// The table holds the set of the local cache (`cache.rs`), not one
    /// read from etcd: stale, since etcd has not answered since start.
    on_fallback: AtomicBool,
    /// Why the last write of the local cache failed; `None` once one
    /// succeeds. Shown in `/readyz`'s body. Held only for a copy.
    cache_error: std::sync::Mutex<Option<String>>,
    /// The store revision the live table reflects (0: none yet).
    applied: watch::Sender<i64>,
    /// Seconds the watch trailed the store at the last progress check.
    lag_ms: AtomicI64,
    /// Asks the follower to hand its set over again: a reload changed what
    /// this instance can serve (certificates, its own file routes).
    refit: tokio::sync::Notify,
}

impl Default for EtcdStatus {
    fn default() -> Self {
        Self {
            connected: AtomicBool::new(false),
            on_fallback: AtomicBool::new(false),
            cache_error: std::sync::Mutex::new(None),
            applied: watch::Sender::new(0),
            lag_ms: AtomicI64::new(0),
            refit: tokio::sync::Notify::new(),
        }
    }
}

impl EtcdStatus {
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub(crate) fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }

    pub fn on_fallback(&self) -> bool {
        self.on_fallback.load(Ordering::Relaxed)
    }

    pub(crate) fn set_on_fallback(&self, yes: bool) {
        self.on_fallback.store(yes, Ordering::Relaxed);
    }

    /// Why the last write of the local cache failed, if it did.
    pub fn cache_error(&self) -> Option<String> {
        self.cache_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_cache_error(&self, e: Option<String>) {
        *self.cache_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// The store revision the live table reflects.
    pub fn revision(&self) -> i64 {
        *self.applied.borrow()
    }

    /// Called by the reconciler once a set read at `revision` is live.
    pub fn applied(&self, revision: i64) {
        self.applied.send_if_modified(|r| {
            let newer = revision > *r;
            if newer {
                *r = revision;
            }
            newer
        });
    }

    /// From the reconciler after a file reload; kept until the follower
    /// takes it.
    pub(crate) fn ask_refit(&self) {
        self.refit.notify_one();
    }

    pub(crate) async fn refit_asked(&self) {
        self.refit.notified().await;
    }

    /// After a full read of a store whose revisions restarted.
    pub(crate) fn reset(&self, revision: i64) {
        self.applied.send_replace(revision);
    }

    /// Waits until the live table reflects `revision`, or `limit` passes;
    /// true if it does.
    pub async fn wait_for(&self, revision: i64, limit: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub fn watch_lag(&self) -> Duration {
        Duration::from_millis(self.lag_ms.load(Ordering::Relaxed).max(0) as u64)
    }

    pub(crate) fn set_watch_lag(&self, lag: Duration) {
        self.lag_ms.store(
            lag.as_millis().min(i64::MAX as u128) as i64,
            Ordering::Relaxed,
        );
    }
}

/// `P/routes/`.
pub fn routes_prefix(cfg: &EtcdConfig) -> String {
    format!("{}routes/", cfg.prefix)
}

/// `P/routes/{name}`.
pub fn route_key(cfg: &EtcdConfig, name: &str) -> String {
    format!("{}routes/{name}", cfg.prefix)
}

/// `P/hosts/{host}`.
pub fn host_key(cfg: &EtcdConfig, host: &str) -> String {
    format!("{}hosts/{host}", cfg.prefix)
}

/// Opens a client on the configured endpoints. It authenticates at once if
/// a user is configured, so bad credentials show up here. Files are read
/// here, on a blocking thread: a slow disk never stalls an async worker.
pub async fn connect(cfg: &EtcdConfig) -> Result<Client, String> {
    let c = cfg.clone();
    let opts = tokio::task::spawn_blocking(move || connect_options(&c))
        .await
        .map_err(|e| format!("reading the etcd credentials: {e}"))??;
    tokio::time::timeout(
        cfg.dial_timeout + cfg.request_timeout,
        Client::connect(opts),
    )
    .await
    .map_err(|_| "timed out connecting".to_string())?
    .map_err(|e| e.to_string())
}

/// Longest password or PEM file read for the etcd client.
const CREDENTIAL_MAX: u64 = 1 << 20;

fn read_capped(field: &str, path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("{field} {}: {e}", path.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("{field} {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{field} {}: not a regular file", path.display()));
    }
    let mut buf = Vec::new();
    f.take(CREDENTIAL_MAX + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{field} {}: {e}", path.display()))?;
    if buf.len() as u64 > CREDENTIAL_MAX {
        return Err(format!(
            "{field} {}: larger than {CREDENTIAL_MAX} bytes",
            path.display()
        ));
    }
    Ok(buf)
}

fn connect_options(cfg: &EtcdConfig) -> Result<ConnectOptions, String> {
    let mut opts = ConnectOptions::new(cfg.endpoints.iter().cloned());
    opts.connect_timeout = cfg.dial_timeout;
    opts.keep_alive = cfg.heartbeat;
    opts.keep_alive_timeout = cfg.request_timeout;
    if let Some((user, password)) = &cfg.user {
        let pw = match password {
            PasswordSource::File(p) => String::from_utf8(read_capped("etcd.password_file", p)?)
                .map_err(|_| format!("etcd.password_file {}: not UTF-8", p.display()))?,
            PasswordSource::Env(v) => {
                std::env::var(v).map_err(|_| format!("etcd.password_env: {v} is not set"))?
            }
        };
        opts.user = Some((user.clone(), pw.trim_end_matches(['\r', '\n']).to_string()));
    }
    if let Some(t) = &cfg.tls {
        let mut tls = Tls {
            server_name: t.server_name.clone(),
            ..Tls::default()
        };
        if let Some(ca) = &t.ca {
            tls.ca_pem = Some(read_capped("etcd.tls.ca", ca)?);
        }
        if let Some((cert, key)) = &t.identity {
            tls.identity_pem = Some((
                read_capped("etcd.tls.cert", cert)?,
                read_capped("etcd.tls.key", key)?,
            ));
        }
        opts.tls = Some(tls);
    }
    Ok(opts)
}

/// Runs one etcd request under the configured request timeout.
pub async fn timed<T>(
    cfg: &EtcdConfig,
    f: impl std::future::Future<Output = Result<T, crate::etcd::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(cfg.request_timeout, f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(cfg.request_timeout)
        )),
    }
}
