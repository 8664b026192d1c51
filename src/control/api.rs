//! The control plane's one interface: the commands every source (admin
//! API, routes file, etcd, certificate watch, CNAME recheck, expiry)
//! sends, their answers and errors, and the handle that sends them. The
//! reconciler (`crate::routing::reconciler`) is the one receiver; sources
//! depend on this module, never on the reconciler's insides.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::Utc;
use tokio::sync::{mpsc, oneshot};

use crate::apps::{AppError, AppKey, AppPut, Apps, CnameReport};
use crate::config::routes::{self, RouteSpec};
use crate::config::{ConfigError, ConfigErrors};
use crate::routing::reload::Applied;
use crate::routing::route::Route;
use crate::tls::certs::PairUpdate;

/// Why a change was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("invalid: {0}")]
    Invalid(ConfigErrors),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("the route reconciler has stopped")]
    Stopped,
    /// The routes file changed while it was read; it will be read again.
    #[error("the routes file changed while it was read")]
    Unsettled,
    /// The shared store cannot take the write now.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

pub type Reply = oneshot::Sender<Result<Applied, ControlError>>;

/// A route spec as validated off the reconciler task.
pub type Validated = Result<Box<Route>, ConfigErrors>;

/// Longest wait for a route's files (its `ca_file`) to be read. Only
/// regular files of bounded size are read, so only a stuck file system
/// gets here; the thread may stay blocked, but no change waits on it.
pub const READ_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

impl From<AppError> for ControlError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Invalid(errs) => ControlError::Invalid(errs),
            AppError::Conflict(m) => ControlError::Conflict(m),
            AppError::NotFound(m) => ControlError::NotFound(m),
        }
    }
}

/// Where a route set handed to the reconciler came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A full read of the prefix: the whole truth at its revision, even one
    /// lower than the last seen (a store rebuilt from scratch restarts its
    /// revisions).
    Read,
    /// Watch events after a full read.
    Watch,
    /// The local cache of etcd (`cache.rs`), read because etcd was
    /// unreachable at start: stale, flagged as such.
    Fallback,
}

/// The etcd route set, as read at one revision.
pub struct EtcdSet {
    pub routes: BTreeMap<String, Route>,
    pub apps: Vec<AppPut>,
    pub revision: i64,
    pub origin: Origin,
}

/// What changed under the etcd prefix since the set last handed over, from
/// the watch: applied as a delta when it fits as is
/// (`routing/reconciler/etcd_delta.rs`), so one write elsewhere costs this
/// instance what it changed, not a refit of every etcd entry.
#[derive(Debug, Default)]
pub struct EtcdDelta {
    /// Route names and their value now (`None`: deleted, or not valid).
    pub routes: Vec<(String, Option<Route>)>,
    /// App keys and their record now (`None`: deleted).
    pub apps: Vec<(AppKey, Option<AppPut>)>,
    /// The revision the changes bring the set to.
    pub revision: i64,
}

/// An app as this instance would admit it: what an etcd write stores.
#[derive(Debug)]
pub struct Admitted {
    /// The record with `deployed_at` filled in.
    pub record: crate::apps::AppRecord,
    pub cname: crate::apps::cname::CnameStates,
    /// Every hostname of the app (claimed in etcd for it).
    pub hosts: Vec<String>,
    pub expires_at: chrono::DateTime<Utc>,
}

pub enum Command {
    /// Re-read the routes file now (SIGHUP, `POST /reload`).
    ReloadFile(Option<Reply>),
    /// The file changed on disk: re-read it once things settle.
    FileTouched,
    /// The file is being written in place: re-read once it is closed, or
    /// after a longer wait if the writer keeps it open.
    FileWriting,
    /// An API route, validated (or refused) before it was sent: its files
    /// (a `ca_file`) are read on a blocking thread, never in this task.
    Put(Validated, Reply),
    Delete(String, Reply),
    /// Register an app deployment, replacing the one under its key.
    PutApp(Box<AppPut>, Reply),
    DeleteApp(AppKey, Reply),
    /// A periodic CNAME recheck found something new.
    AppCname(Box<CnameReport>),
    /// The whole etcd route set, after a change or a full read.
    Etcd(Box<EtcdSet>, Reply),
    /// Changes from the watch; answered `None` when they need the whole
    /// set (something clashes or was left out), which the follower sends.
    EtcdDelta(
        Box<EtcdDelta>,
        oneshot::Sender<Result<Option<Applied>, ControlError>>,
    ),
    /// Would this route apply here? (An etcd write checks before it writes.)
    CheckPut(Validated, oneshot::Sender<Result<Route, ControlError>>),
    /// Would this app be admitted here?
    CheckApp(Box<AppPut>, oneshot::Sender<Result<Admitted, ControlError>>),
    /// Certificates whose files changed on disk, read again: swap in those
    /// that loaded (answer: whether they were taken), refuse the others.
    Certificates(Vec<PairUpdate>, oneshot::Sender<bool>),
    /// The watchdog's liveness check: answered at once.
    Ping(oneshot::Sender<()>),
    /// Tests only: stop answering for this long, as a stuck read would.
    Stall(std::time::Duration),
}

/// Counters the reconciler keeps, for `/routes`, tests and metrics.
#[derive(Debug, Default)]
pub struct ReconcilerStats {
    pub applied: AtomicU64,
    pub refused: AtomicU64,
    pub expiries: AtomicU64,
    /// Set once the first route set is live.
    pub ready: AtomicBool,
}

/// A cheap, cloneable handle for sending changes to the reconciler.
#[derive(Clone, Debug)]
pub struct Control {
    tx: mpsc::Sender<Command>,
    /// What API routes are validated under (`[limits]`).
    limits: crate::config::ControlLimits,
    pub stats: Arc<ReconcilerStats>,
    /// The registered apps, published after every change that applied.
    apps: Arc<ArcSwap<Apps>>,
}

impl Control {
    /// The handle of the reconciler that receives on `tx`'s channel.
    pub fn new(
        tx: mpsc::Sender<Command>,
        limits: crate::config::ControlLimits,
        stats: Arc<ReconcilerStats>,
        apps: Arc<ArcSwap<Apps>>,
    ) -> Self {
        Self {
            tx,
            limits,
            stats,
            apps,
        }
    }

    async fn ask(&self, make: impl FnOnce(Reply) -> Command) -> Result<Applied, ControlError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| ControlError::Stopped)?;
        rx.await.map_err(|_| ControlError::Stopped)?
    }

    pub async fn reload_file(&self) -> Result<Applied, ControlError> {
        self.ask(|r| Command::ReloadFile(Some(r))).await
    }

    pub async fn put(&self, spec: RouteSpec) -> Result<Applied, ControlError> {
        let route = self.validate(spec).await;
        self.ask(|r| Command::Put(route, r)).await
    }

    /// Validates an API route spec on a blocking thread (it may read its
    /// `ca_file`), within [`READ_BOUND`].
    async fn validate(&self, spec: RouteSpec) -> Validated {
        let limits = self.limits;
        let at = format!("route `{}`", spec.name);
        let field = at.clone();
        let read = tokio::task::spawn_blocking(move || {
            routes::validate_one(Path::new(API), &at, &spec, &limits).map(Box::new)
        });
        let refused = |why: String| Err(ConfigError::new(Path::new(API), field, why).into());
        match tokio::time::timeout(READ_BOUND, read).await {
            Ok(Ok(validated)) => validated,
            Ok(Err(e)) => refused(format!("validation failed: {e}")),
            Err(_) => refused(format!(
                "its files took over {}s to read; refused",
                READ_BOUND.as_secs()
            )),
        }
    }

    pub async fn delete(&self, name: String) -> Result<Applied, ControlError> {
        self.ask(|r| Command::Delete(name, r)).await
    }

    pub async fn put_app(&self, put: AppPut) -> Result<Applied, ControlError> {
        self.ask(|r| Command::PutApp(Box::new(put), r)).await
    }

    pub async fn delete_app(&self, key: AppKey) -> Result<Applied, ControlError> {
        self.ask(|r| Command::DeleteApp(key, r)).await
    }

    /// Replaces the etcd routes with `routes`, read at `revision`.
    pub async fn etcd_set(
        &self,
        routes: BTreeMap<String, Route>,
        apps: Vec<AppPut>,
        revision: i64,
        origin: Origin,
    ) -> Result<Applied, ControlError> {
        let set = Box::new(EtcdSet {
            routes,
            apps,
            revision,
            origin,
        });
        self.ask(|r| Command::Etcd(set, r)).await
    }

    /// Applies watch changes as a delta; `Ok(None)`: they need the whole
    /// set ([`Control::etcd_set`]).
    pub async fn etcd_delta(&self, delta: EtcdDelta) -> Result<Option<Applied>, ControlError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::EtcdDelta(Box::new(delta), reply))
            .await
            .map_err(|_| ControlError::Stopped)?;
        rx.await.map_err(|_| ControlError::Stopped)?
    }

    /// Checks that `spec` would apply here, as `put` would, without
    /// applying it; returns the validated route.
    pub async fn check_put(&self, spec: RouteSpec) -> Result<Route, ControlError> {
        let route = self.validate(spec).await;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::CheckPut(route, reply))
            .await
            .map_err(|_| ControlError::Stopped)?;
        rx.await.map_err(|_| ControlError::Stopped)?
    }

    /// Checks that `put` would be admitted here, without registering it.
    pub async fn check_app(&self, put: AppPut) -> Result<Admitted, ControlError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::CheckApp(Box::new(put), reply))
            .await
            .map_err(|_| ControlError::Stopped)?;
        rx.await.map_err(|_| ControlError::Stopped)?
    }

    /// Hands a CNAME recheck's findings to the reconciler (no answer: it
    /// logs what it did).
    pub async fn cname_checked(&self, report: CnameReport) -> Result<(), ControlError> {
        self.tx
            .send(Command::AppCname(Box::new(report)))
            .await
            .map_err(|_| ControlError::Stopped)
    }

    /// The registered apps as of the last applied change.
    pub fn apps(&self) -> Arc<Apps> {
        self.apps.load_full()
    }

    /// From the certificate watch: re-read certificates to swap in, or to
    /// refuse (counted and logged here). Answers whether the ones that
    /// loaded were taken.
    pub async fn certificates_read(&self, updates: Vec<PairUpdate>) -> Result<bool, ControlError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Certificates(updates, reply))
            .await
            .map_err(|_| ControlError::Stopped)?;
        rx.await.map_err(|_| ControlError::Stopped)
    }

    /// Answers once the reconciler has taken the command: it is alive and
    /// not stuck on anything.
    pub async fn ping(&self) -> Result<(), ControlError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Ping(reply))
            .await
            .map_err(|_| ControlError::Stopped)?;
        rx.await.map_err(|_| ControlError::Stopped)
    }

    /// Test hook: makes the reconciler stop answering for `d`, as a
    /// blocked read inside it would, so the watchdog can be seen to act.
    #[doc(hidden)]
    pub async fn stall_for_tests(&self, d: std::time::Duration) {
        let _ = self.tx.send(Command::Stall(d)).await;
    }

    /// From the file watcher (any thread): never blocks; if the queue is
    /// full a re-read is already on its way.
    pub fn file_touched(&self) {
        let _ = self.tx.try_send(Command::FileTouched);
    }

    /// From the file watcher: the file is being modified in place.
    pub fn file_writing(&self) {
        let _ = self.tx.try_send(Command::FileWriting);
    }
}

/// Where API-made changes are reported in error messages.
pub const API: &str = "admin API";
