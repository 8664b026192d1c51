//! The one task through which every change of routes goes, whatever its
//! source (routes file, admin API, expiry timer). It validates the whole
//! resulting route set, applies it with one swap, and reports.
//!
//! Precedence: a route put through the API overrides a file route of the same
//! name until it is deleted through the API; the file route then comes back.
//! Deleting a route that only the file defines is refused (edit the file).
//!
//! Apps (`crate::apps`) are the third source: each registered app yields
//! derived routes, merged with the other two and validated with them; a
//! route name or host claimed twice across sources is a conflict.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::time::Instant;

use arc_swap::ArcSwap;

mod certificates;
mod delta;
mod etcd_delta;
pub mod state;
mod waiting;
pub mod watchdog;

use super::reload::{self, Applied, ApplyOptions};
use super::route::Route;
use super::table::{Snapshot, Source};
use crate::apps::{AppKey, AppPut, Apps, CnameReport};
use crate::config::routes::{self, check_conflicts};
use crate::config::{ConfigError, ConfigErrors, ControlLimits};
use crate::control::api::{Command, EtcdSet, Validated, API};
use crate::control::{Admitted, Control, ControlError, Origin, ReconcilerStats};
use crate::proxy::Shared;
use crate::routing::claims::{Claims, Clash};
use crate::routing::sources::etcd::EtcdStatus;
use crate::state::{Change, StateStore, Stored};
use crate::timing::sleep_until_opt;
use crate::tls::certs::CertStore;

/// Longest wait for the routes file and certificates to be read and
/// validated: a million routes take a few seconds; past this the file
/// system is stuck, and the reload is refused (the thread is left behind).
const FILE_READ_BOUND: std::time::Duration = std::time::Duration::from_secs(60);

/// The `source` of an apply that swaps renewed certificates (routes
/// unchanged): logged, but not counted as a route set change.
const CERTIFICATES: &str = "certificates";

pub struct Reconciler {
    shared: Arc<Shared>,
    file_routes: Vec<Route>,
    /// Where each file route is in `file_routes`, by name.
    file_index: std::collections::HashMap<String, usize>,
    /// Routes put through the admin API or, with etcd configured, the etcd
    /// routes this instance serves (those that conflict with its own file
    /// routes and apps left out).
    api_routes: BTreeMap<String, Route>,
    /// Set when routes live in etcd: API writes then go there, not here.
    etcd: Option<Arc<EtcdStatus>>,
    apps: Apps,
    /// The durable store every accepted write is committed to before it
    /// applies; `None` with etcd (the truth there) or in memory.
    state: Option<Arc<dyn StateStore>>,
    /// Stored entries that expired while the proxy was down, deleted from
    /// the store once the task runs.
    forget_at_start: Vec<Change>,
    /// Where `apps` is published for the admin API and the CNAME recheck.
    apps_view: Arc<ArcSwap<Apps>>,
    reread_at: Option<Instant>,
    stats: Arc<ReconcilerStats>,
    rx: mpsc::Receiver<Command>,
    /// Commands received while waiting for a file read (`waiting.rs`).
    deferred: std::collections::VecDeque<Command>,
}

impl Reconciler {
    /// Applies the first route set (the file's, with what `state` holds:
    /// its store and what was read from it) and returns the task to run
    /// and its handle. Fails if the first set cannot be applied. With
    /// `etcd`, the instance is ready only once a set from etcd (or its
    /// local cache of etcd) is live; otherwise once this returns.
    pub fn start(
        shared: Arc<Shared>,
        file_routes: Vec<Route>,
        etcd: Option<Arc<EtcdStatus>>,
        state: Option<(Arc<dyn StateStore>, Stored)>,
    ) -> Result<(Self, Control), String> {
        let (tx, rx) = mpsc::channel(64);
        let stats = Arc::new(ReconcilerStats::default());
        let apps_view = Arc::new(ArcSwap::from_pointee(Apps::default()));
        let (state, stored) = state.unzip();
        let limits = shared.config.control_limits;
        let mut r = Reconciler {
            shared,
            file_routes: Vec::new(),
            file_index: Default::default(),
            api_routes: BTreeMap::new(),
            etcd,
            apps: Apps::default(),
            state,
            forget_at_start: Vec::new(),
            apps_view: Arc::clone(&apps_view),
            reread_at: None,
            stats: Arc::clone(&stats),
            rx,
            deferred: Default::default(),
        };
        r.set_file_routes(file_routes);
        if let Some(stored) = stored {
            r.forget_at_start = r.restore(stored);
        }
        let merged = r
            .merged(&r.file_routes, &r.api_routes, &r.apps)
            .map_err(|e| e.to_string())?;
        r.apply(merged, "start").map_err(|e| e.to_string())?;
        if r.state.is_some() {
            tracing::info!(
                routes = r.api_routes.len(),
                apps = r.apps.len(),
                expired = r.forget_at_start.len(),
                "state restored"
            );
        }
        stats.ready.store(r.etcd.is_none(), Ordering::Relaxed);
        Ok((r, Control::new(tx, limits, stats, apps_view)))
    }

    /// Runs until every [`Control`] is dropped.
    pub async fn run(mut self) {
        let forget = std::mem::take(&mut self.forget_at_start);
        self.forget_in_state(forget).await;
        loop {
            // Commands that came while a file was read go first, in order.
            if let Some(cmd) = self.deferred.pop_front() {
                self.handle(cmd).await;
                continue;
            }
            let expiry = self.next_expiry_wake();
            let reread = self.reread_at;
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    None => break,
                    Some(cmd) => self.handle(cmd).await,
                },
                () = sleep_until_opt(expiry) => self.expire().await,
                () = sleep_until_opt(reread) => {
                    self.reread_at = None;
                    self.reload_watched().await;
                }
            }
        }
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::ReloadFile(reply) => {
                self.reread_at = None;
                let r = self.reload_file("reload").await;
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            Command::FileWriting => {
                // A truncate-then-write editor leaves the file empty or half
                // written in between; reading then would drop routes. Wait
                // for the close (FileTouched) or, failing that, much longer.
                let debounce = self.shared.config.reload.debounce;
                let fallback = Instant::now() + crate::file_watch::slow_writer_wait(debounce);
                if self.reread_at.is_none_or(|at| at < fallback) {
                    self.reread_at = Some(fallback);
                }
            }
            Command::FileTouched => {
                self.reread_at = Some(Instant::now() + self.shared.config.reload.debounce);
            }
            Command::Put(route, reply) => {
                let _ = reply.send(self.put(route).await);
            }
            Command::Delete(name, reply) => {
                let _ = reply.send(self.delete(&name).await);
            }
            Command::PutApp(put, reply) => {
                let r = self.try_put_app(*put).await;
                if r.is_err() {
                    self.refused("app");
                }
                let _ = reply.send(r);
            }
            Command::DeleteApp(key, reply) => {
                let r = self.try_delete_app(&key).await;
                if r.is_err() {
                    self.refused("app");
                }
                let _ = reply.send(r);
            }
            Command::AppCname(report) => self.app_cname(*report).await,
            Command::Etcd(set, reply) => {
                let r = self.etcd_set(*set);
                if r.is_err() {
                    self.refused("etcd");
                }
                let _ = reply.send(r);
            }
            Command::EtcdDelta(delta, reply) => {
                let r = self.etcd_delta(*delta);
                if r.is_err() {
                    self.refused("etcd");
                }
                let _ = reply.send(r);
            }
            Command::CheckPut(route, reply) => {
                let _ = reply.send(self.check_put(route).map(|(r, _)| r));
            }
            Command::CheckApp(put, reply) => {
                let _ = reply.send(self.check_app(*put));
            }
            Command::Certificates(updates, reply) => {
                let _ = reply.send(self.certificates_read(updates));
            }
            Command::Ping(reply) => {
                let _ = reply.send(());
            }
            Command::Stall(d) => tokio::time::sleep(d).await,
        }
    }

    /// A re-read the file watch asked for. A file modified less than the
    /// debounce ago, or modified while it was read, is still being written
    /// (an editor truncating then writing leaves it empty in between, and
    /// watch events can arrive after the fact): it is read again later
    /// instead of being applied half-written.
    async fn reload_watched(&mut self) {
        let Some(path) = self.shared.config.routes_file.clone() else {
            return;
        };
        let debounce = self.shared.config.reload.debounce;
        let at = path.clone();
        let stamp = self
            .off_task(
                tokio::task::spawn_blocking(move || crate::file_watch::stamp(&at)),
                FILE_READ_BOUND,
            )
            .await
            .unwrap_or_default();
        match stamp {
            // Recently modified, or empty: an in-place writer has truncated
            // the file and not written it yet. (To remove every route, write
            // a file holding only a comment, or reload by SIGHUP or the API.)
            Some(s) if s.age() < debounce || s.is_empty() => {
                self.reread_at = Some(Instant::now() + debounce);
            }
            before => {
                if let Err(ControlError::Unsettled) =
                    self.reload_file_checked("watch", before).await
                {
                    self.reread_at = Some(Instant::now() + debounce);
                }
            }
        }
    }

    async fn reload_file(&mut self, why: &'static str) -> Result<Applied, ControlError> {
        self.reload_file_checked(why, None).await
    }

    /// Reads and applies the routes file; with `settled`, only if the file
    /// still has that stamp once read (else [`ControlError::Unsettled`],
    /// nothing changed).
    async fn reload_file_checked(
        &mut self,
        why: &'static str,
        settled: Option<crate::file_watch::Stamp>,
    ) -> Result<Applied, ControlError> {
        let Some(path) = self.shared.config.routes_file.clone() else {
            return Err(ControlError::NotFound(
                "no routes_file is configured".into(),
            ));
        };
        // Certificates are re-read with the routes and swap with them. The
        // reads block, so they run on a blocking thread; meanwhile the
        // reconciler answers pings and expires routes (`waiting.rs`).
        let shared = Arc::clone(&self.shared);
        let at = path.clone();
        let work = tokio::task::spawn_blocking(move || {
            let cfg = &shared.config;
            let read = routes::load_file(&at, &cfg.control_limits).and_then(|file_routes| {
                let certs = CertStore::load(&cfg.source, &cfg.certificates)?;
                Ok((file_routes, Arc::new(certs)))
            });
            (read, crate::file_watch::stamp(&at))
        });
        let read = self.off_task(work, FILE_READ_BOUND).await;
        let result = read
            .map_err(|e| {
                ControlError::Invalid(
                    ConfigError::new(&path, "routes_file", format!("reading failed: {e}")).into(),
                )
            })
            .and_then(|(read, after)| match read {
                Err(e) => Err(ControlError::Invalid(e)),
                Ok(_) if settled.is_some() && after != settled => Err(ControlError::Unsettled),
                Ok(read) => Ok(read),
            })
            .and_then(|(file_routes, certs)| {
                let merged = self.merged(&file_routes, &self.api_routes, &self.apps)?;
                Ok((file_routes, merged, certs))
            })
            .and_then(|(file_routes, merged, certs)| {
                let applied = self.apply_with(merged, why, Some(certs))?;
                self.set_file_routes(file_routes);
                // New certificates or file routes may let etcd entries that
                // were left out fit now (or push some out).
                if let Some(status) = &self.etcd {
                    status.ask_refit();
                }
                Ok(applied)
            });
        if let Err(ControlError::Unsettled) = &result {
            tracing::debug!(file = %path.display(), "routes file changed while read; reading again");
        } else if let Err(e) = &result {
            self.refused(why);
            tracing::error!(source = why, file = %path.display(), error = %e, "routes file refused; the live routes stay");
        }
        result
    }

    /// Counts a refused change from `source`.
    fn refused(&self, source: &str) {
        debug_assert!(
            crate::metrics::REFUSING_SOURCES.contains(&source),
            "pre-register {source}'s error series in metrics::REFUSING_SOURCES"
        );
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        self.shared
            .metrics
            .reloads
            .with_label_values(&[source, "error"])
            .inc();
    }

    async fn put(&mut self, route: Validated) -> Result<Applied, ControlError> {
        let r = self.try_put(route).await;
        if r.is_err() {
            self.refused("api");
        }
        r
    }

    async fn delete(&mut self, name: &str) -> Result<Applied, ControlError> {
        let r = self.try_delete(name).await;
        if r.is_err() {
            self.refused("api");
        }
        r
    }

    async fn try_put(&mut self, route: Validated) -> Result<Applied, ControlError> {
        if self.can_patch(Utc::now()) {
            let route = accepted(route)?;
            return self.put_delta(route).await;
        }
        let (route, merged) = self.check_put(route)?;
        if self.etcd.is_some() {
            return Err(etcd_owns(&route.name));
        }
        let (change, undo) = self.put_changes(&route);
        let applied = self.commit_then_apply(change, undo, merged, "api").await?;
        self.api_routes.insert(route.name.clone(), route);
        Ok(applied)
    }

    /// Merges a validated API route with the live sources; returns the
    /// route and the merged set, checked for certificates too.
    fn check_put(&self, route: Validated) -> Result<(Route, Vec<(Route, Source)>), ControlError> {
        let route = accepted(route)?;
        // With etcd, other etcd routes and apps are not checked here: this
        // instance's view of them may trail the store, whose transaction is
        // the authority on host claims. Only its own file routes are.
        let (mut api, apps) = match self.etcd {
            Some(_) => (BTreeMap::new(), Apps::default()),
            None => (self.api_routes.clone(), self.apps.clone()),
        };
        api.insert(route.name.clone(), route.clone());
        let merged = self.merged(&self.file_routes, &api, &apps)?;
        let certs = Arc::clone(self.shared.router.load().termination().certs());
        self.check_certs(&merged, &certs)?;
        Ok((route, merged))
    }

    async fn try_delete(&mut self, name: &str) -> Result<Applied, ControlError> {
        if self.etcd.is_some() {
            return Err(etcd_owns(name));
        }
        if !self.api_routes.contains_key(name) {
            return Err(if self.file_route(name).is_some() {
                ControlError::Conflict(format!(
                    "route `{name}` is defined in the routes file; remove it there"
                ))
            } else {
                ControlError::NotFound(format!("no route named `{name}`"))
            });
        }
        if self.can_patch(Utc::now()) {
            return self.delete_delta(name).await;
        }
        let mut api = self.api_routes.clone();
        let undo = api.remove(name).map(|old| Change::PutRoute(old.spec));
        let merged = self.merged(&self.file_routes, &api, &self.apps)?;
        let change = Change::DeleteRoute(name.to_string());
        let applied = self
            .commit_then_apply(vec![change], undo.into_iter().collect(), merged, "api")
            .await?;
        self.api_routes = api;
        Ok(applied)
    }

    /// Expiry, as a delta: the routes whose expiry passed leave the table
    /// and their connections close; a file route an expired API route
    /// overrode comes back. Expired API routes and apps are forgotten, in
    /// the durable state too.
    async fn expire(&mut self) {
        let now = Utc::now();
        let (delta, gone) = self.expiry_delta(now);
        // Put back are only file routes an expired API route overrode.
        let expired = (delta.remove.len() + delta.put.len()) as u64;
        self.forget_in_state(gone).await;
        match self.patch(delta, "expiry") {
            Ok(_) => {
                self.stats.expiries.fetch_add(expired, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "expiry could not be applied"),
        }
    }

    /// File routes overridden by API routes of the same name, plus the
    /// apps' derived routes, checked for name and host conflicts across the
    /// three sources.
    fn merged(
        &self,
        file: &[Route],
        api: &BTreeMap<String, Route>,
        apps: &Apps,
    ) -> Result<Vec<(Route, Source)>, ControlError> {
        let api_source = if self.etcd.is_some() {
            Source::Etcd
        } else {
            Source::Api
        };
        merge(
            file,
            api,
            api_source,
            apps,
            Utc::now(),
            self.shared.config.control_limits.routes,
        )
    }

    /// Checks that `store` serves every host of every live terminate route.
    fn check_certs(
        &self,
        routes: &[(Route, Source)],
        store: &CertStore,
    ) -> Result<(), ControlError> {
        check_certs(&self.shared.config, routes, store, Utc::now())
    }

    /// Applies `routes` with the live certificates.
    fn apply(
        &self,
        routes: Vec<(Route, Source)>,
        why: &'static str,
    ) -> Result<Applied, ControlError> {
        self.apply_with(routes, why, None)
    }

    /// Applies `routes` with `certs` (or, if `None`, the live certificates),
    /// after checking that they serve every live terminate route.
    fn apply_with(
        &self,
        routes: Vec<(Route, Source)>,
        why: &'static str,
        certs: Option<Arc<CertStore>>,
    ) -> Result<Applied, ControlError> {
        let cfg = &self.shared.config;
        let store = certs
            .clone()
            .unwrap_or_else(|| Arc::clone(self.shared.router.load().termination().certs()));
        self.check_certs(&routes, &store)?;
        let now = Utc::now();
        let opts = ApplyOptions {
            no_sni_route: cfg.no_sni_route.as_deref(),
            on_change: cfg.reload.on_change,
            close_grace: cfg.reload.close_grace,
            now,
            certs: certs.as_ref(),
        };
        let before = self.shared.router.load_full();
        let applied = reload::apply(&self.shared.router, routes, opts).map_err(|e| {
            ControlError::Invalid(ConfigError::new(&cfg.source, "refusal.no_sni_route", e).into())
        })?;
        match why {
            // Not a change of the route set: counted per certificate.
            CERTIFICATES => self.forget_gone(&before, now),
            _ => {
                self.stats.applied.fetch_add(1, Ordering::Relaxed);
                self.count_applied(&before, why, now);
            }
        }
        tracing::info!(
            source = why,
            added = applied.added,
            changed = applied.changed,
            removed = applied.removed,
            unchanged = applied.unchanged,
            expired = applied.expired,
            live = self.shared.router.load().len(),
            "routes applied"
        );
        Ok(applied)
    }
}

impl Reconciler {
    async fn try_put_app(&mut self, put: AppPut) -> Result<Applied, ControlError> {
        if self.etcd.is_some() {
            return Err(etcd_owns_apps());
        }
        let key = put.key.clone();
        let certs = Arc::clone(self.shared.router.load().termination().certs());
        let apps = self
            .apps
            .admit(put, &self.shared.config.apps, &certs, Utc::now())?;
        let (change, undo) = (vec![stored(&apps, &key)], vec![stored(&self.apps, &key)]);
        let applied = if self.can_patch(Utc::now()) {
            let delta = self.app_delta(&key, &apps);
            self.check_app_delta(&key, &delta)?;
            self.commit_then_patch(change, undo, delta, "app").await?
        } else {
            let merged = self.merged(&self.file_routes, &self.api_routes, &apps)?;
            self.commit_then_apply(change, undo, merged, "app").await?
        };
        self.apps = apps;
        self.publish_apps();
        Ok(applied)
    }

    async fn try_delete_app(&mut self, key: &AppKey) -> Result<Applied, ControlError> {
        if self.etcd.is_some() {
            return Err(etcd_owns_apps());
        }
        let apps = self.apps.without(key)?;
        let (change, undo) = (
            vec![Change::DeleteApp(key.clone())],
            vec![stored(&self.apps, key)],
        );
        let applied = if self.can_patch(Utc::now()) {
            let delta = self.app_delta(key, &apps);
            self.commit_then_patch(change, undo, delta, "app").await?
        } else {
            let merged = self.merged(&self.file_routes, &self.api_routes, &apps)?;
            self.commit_then_apply(change, undo, merged, "app").await?
        };
        self.apps = apps;
        self.publish_apps();
        Ok(applied)
    }

    /// A CNAME recheck: withdraws or restores the app's custom-domain routes
    /// as the policy says. A change that cannot apply (a restored host now
    /// claimed by another route) keeps the old state; the next recheck
    /// tries again. The new verdicts are state: committed before they
    /// apply (with etcd, this instance's view only, as before).
    async fn app_cname(&mut self, report: CnameReport) {
        let key = report.key.clone();
        let Some(next) = self.apps.rechecked(report, &self.shared.config.apps) else {
            return;
        };
        let result = match next.map_err(ControlError::Invalid) {
            // One app's routes withdrawn or restored: a delta, as its put.
            Ok(apps) if self.can_patch(Utc::now()) => {
                let (change, undo) = (stored(&apps, &key), stored(&self.apps, &key));
                let delta = self.app_delta(&key, &apps);
                match self.check_app_delta(&key, &delta) {
                    Ok(()) => self
                        .commit_then_patch(vec![change], vec![undo], delta, "cname")
                        .await
                        .map(|applied| (apps, applied)),
                    Err(e) => Err(e),
                }
            }
            Ok(apps) => match self.merged(&self.file_routes, &self.api_routes, &apps) {
                Ok(merged) => {
                    let (change, undo) = (stored(&apps, &key), stored(&self.apps, &key));
                    self.commit_then_apply(vec![change], vec![undo], merged, "cname")
                        .await
                        .map(|applied| (apps, applied))
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match result {
            Ok((apps, _)) => {
                self.apps = apps;
                self.publish_apps();
            }
            Err(e) => {
                self.refused("cname");
                tracing::error!(app = %key, error = %e, "CNAME recheck could not be applied");
            }
        }
    }

    fn publish_apps(&self) {
        self.apps_view.store(Arc::new(self.apps.clone()));
    }
}

impl Reconciler {
    /// Metrics for an applied change: the reload, and the series of routes
    /// that left the table (counted as expirations when that is why).
    fn count_applied(&self, before: &Snapshot, why: &str, now: chrono::DateTime<Utc>) {
        self.shared
            .metrics
            .reloads
            .with_label_values(&[why, "ok"])
            .inc();
        self.forget_gone(before, now);
    }

    /// Drops the series of the routes that left the table since `before`,
    /// counting those that expired.
    fn forget_gone(&self, before: &Snapshot, now: chrono::DateTime<Utc>) {
        let m = &self.shared.metrics;
        let after = self.shared.router.load();
        let gone: Vec<_> = before
            .routes()
            .filter(|e| after.get(&e.route.name).is_none())
            .cloned()
            .collect();
        m.expirations
            .inc_by(gone.iter().filter(|e| e.route.expired_at(now)).count() as u64);
        self.forget_when_closed(gone);
    }

    /// Drops the series of the `gone` routes (routes that left the table)
    /// once their last connection has ended and [`SERIES_GRACE`] more has
    /// passed: one task for the whole change. Their connections are
    /// closing now (or after `reload.close_grace`; some may have ended
    /// already, as the table swap closes them before this runs), and each
    /// counts its outcome (`route_removed`, `expired`) just after it leaves
    /// the route's count: dropped before that, the count would be lost, or
    /// would bring the series back for good. Not dropped if a route of
    /// that name is back by then.
    pub(super) fn forget_when_closed(&self, gone: Vec<Arc<crate::routing::RouteEntry>>) {
        if gone.is_empty() {
            return;
        }
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + SERIES_WAIT_MAX;
            while gone.iter().any(|e| e.open_connections() > 0)
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            tokio::time::sleep(SERIES_GRACE).await;
            let table = shared.router.load();
            for e in gone.iter().filter(|e| table.get(&e.route.name).is_none()) {
                shared.metrics.forget_route(&e.route.name);
            }
        });
    }
}

/// After a gone route's last connection has left its count, how long its
/// series wait for that connection's outcome to be counted (a few
/// instructions later, on its worker).
const SERIES_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// The longest a gone route's series wait for its connections: past the
/// longest `reload.close_grace` (1 h), they are closed.
const SERIES_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(2 * 3600);

/// An API route validated off the task, refused if its expiry has passed.
fn accepted(route: Validated) -> Result<Route, ControlError> {
    let route = *route.map_err(ControlError::Invalid)?;
    if route.expired_at(Utc::now()) {
        return Err(ControlError::Invalid(
            ConfigError::new(
                Path::new(API),
                format!("route `{}`.expires_at", route.name),
                "is in the past",
            )
            .into(),
        ));
    }
    Ok(route)
}

/// What the durable state should hold for `key` in `apps`: the app, or
/// its deletion when `apps` does not have it.
fn stored(apps: &Apps, key: &AppKey) -> Change {
    match apps.get(key) {
        Some(e) => Change::PutApp(crate::apps::stored::StoredApp::from(e.as_ref())),
        None => Change::DeleteApp(key.clone()),
    }
}

fn etcd_owns_apps() -> ControlError {
    ControlError::Conflict("apps live in etcd here; write them through the admin API".into())
}

/// Route writes go to etcd when it is configured, never to one instance.
fn etcd_owns(name: &str) -> ControlError {
    ControlError::Conflict(format!(
        "route `{name}`: routes live in etcd here; write them through the admin API's etcd path"
    ))
}

impl Reconciler {
    /// A new etcd route set: the routes that can live here (those whose
    /// hosts no file route, app or earlier etcd route claims, and whose
    /// terminate hosts this instance's certificates serve) replace the
    /// previous etcd routes in one apply. The others are left out and
    /// reported, so one bad key never holds back the rest.
    fn etcd_set(&mut self, set: EtcdSet) -> Result<Applied, ControlError> {
        let Some(status) = self.etcd.clone() else {
            return Err(ControlError::NotFound("no [etcd] is configured".into()));
        };
        if set.origin == Origin::Fallback && status.revision() > 0 {
            return Err(ControlError::Conflict(
                "etcd has been read already; the local cache is stale".into(),
            ));
        }
        if set.origin == Origin::Watch && set.revision < status.revision() {
            return Err(ControlError::Conflict(format!(
                "revision {} is older than the live {}",
                set.revision,
                status.revision()
            )));
        }
        let (kept, apps, left_out) = self.etcd_sources_that_fit(set.routes, set.apps);
        for why in &left_out {
            tracing::error!(error = %why, "etcd entry not served by this instance");
        }
        self.shared
            .metrics
            .etcd_routes_left_out
            .set(left_out.len() as i64);
        let merged = self.merged(&self.file_routes, &kept, &apps)?;
        let why = match set.origin {
            Origin::Read | Origin::Watch => "etcd",
            Origin::Fallback => "fallback",
        };
        let applied = self.apply(merged, why)?;
        self.shared
            .metrics
            .etcd_applied
            .with_label_values(&["full"])
            .inc();
        self.api_routes = kept;
        self.apps = apps;
        self.publish_apps();
        if set.origin == Origin::Read && set.revision < status.revision() {
            tracing::warn!(
                revision = set.revision,
                before = status.revision(),
                "etcd revision went back: the store was replaced; following the new one"
            );
            status.reset(set.revision);
        } else if set.origin != Origin::Fallback {
            status.applied(set.revision);
        }
        self.stats.ready.store(true, Ordering::Relaxed);
        Ok(applied)
    }

    /// The etcd apps and routes that can live here: admitted under this
    /// instance's policy, with no host or route name that its file routes
    /// or an earlier entry (apps first, then routes, each in key order)
    /// already claim, and terminate hosts its certificates serve. Returns
    /// them and why each other one was left out.
    fn etcd_sources_that_fit(
        &self,
        routes: BTreeMap<String, Route>,
        puts: Vec<AppPut>,
    ) -> (BTreeMap<String, Route>, Apps, Vec<String>) {
        let now = Utc::now();
        let certs = Arc::clone(self.shared.router.load().termination().certs());
        let local: Vec<&Route> = self
            .file_routes
            .iter()
            .filter(|r| !routes.contains_key(&r.name) && !r.expired_at(now))
            .collect();
        // First come, first kept: the file routes, then apps, then routes.
        let mut claims: Claims<'_, String> = Claims::with_capacity(local.len() + routes.len());
        for r in &local {
            claims.claim(r, r.name.clone());
        }
        let taken = |r: &Route, claims: &Claims<'_, String>| {
            claims.clashes(r).next().map(|c| match c {
                Clash::Name { .. } => format!("route name `{}` is already used here", r.name),
                Clash::Host { host, by } => {
                    format!("host `{host}` is already claimed by route `{by}` here")
                }
            })
        };
        let mut left_out = Vec::new();
        let mut apps = Apps::default();
        // Admitted in place, one probe each: a copy of the set per app
        // would make loading n apps quadratic.
        for put in puts {
            let key = put.key.clone();
            if apps.get(&key).is_some() {
                // Two etcd keys holding one (project, name): the first wins.
                left_out.push(format!("app `{key}`: listed twice in etcd"));
                continue;
            }
            if let Err(e) = apps.admit_into(put, &self.shared.config.apps, &certs, now) {
                left_out.push(format!("app `{key}`: {e}"));
                continue;
            }
            let Some(entry) = apps.get(&key).cloned() else {
                continue;
            };
            if let Some(why) = entry.routes.iter().find_map(|r| taken(r, &claims)) {
                left_out.push(format!("app `{key}`: {why}"));
                apps.remove(&key);
                continue;
            }
            for r in &entry.routes {
                claims.claim_owned(r, r.name.clone());
            }
        }
        let mut kept = BTreeMap::new();
        for (name, r) in routes {
            if r.expired_at(now) {
                continue;
            }
            if let Some(why) = taken(&r, &claims) {
                left_out.push(format!("route `{name}`: {why}"));
                continue;
            }
            let mut errs = ConfigErrors::default();
            certs.check_route(Path::new("etcd"), &format!("route `{name}`"), &r, &mut errs);
            if !errs.is_empty() {
                left_out.push(errs.to_string());
                continue;
            }
            claims.claim_owned(&r, name.clone());
            kept.insert(name, r);
        }
        (kept, apps, left_out)
    }

    /// Admits `put` against the live state without registering it.
    fn check_app(&self, put: AppPut) -> Result<Admitted, ControlError> {
        let key = put.key.clone();
        let certs = Arc::clone(self.shared.router.load().termination().certs());
        let apps = self
            .apps
            .admit(put, &self.shared.config.apps, &certs, Utc::now())?;
        // Only this instance's file routes are checked for collisions: the
        // etcd transaction is the authority on the others (see check_put).
        let merged = self.merged(&self.file_routes, &BTreeMap::new(), &apps.only(&key))?;
        self.check_certs(&merged, &certs)?;
        let e = apps.get(&key).expect("just admitted");
        Ok(Admitted {
            record: e.app.record.clone(),
            cname: e.cname.clone(),
            hosts: e.app.hosts().map(|(_, h)| h.to_string()).collect(),
            expires_at: e.app.expiry.at,
        })
    }
}

/// File routes overridden by API routes of the same name (`api_source`:
/// `Api`, or `Etcd` where etcd holds them), plus the apps' derived routes,
/// checked for name and host conflicts across the three sources. A free
/// function so that `mse-proxy state import` checks a state with the very
/// rules the running reconciler applies.
pub(crate) fn merge(
    file: &[Route],
    api: &BTreeMap<String, Route>,
    api_source: Source,
    apps: &Apps,
    now: chrono::DateTime<Utc>,
    max_routes: usize,
) -> Result<Vec<(Route, Source)>, ControlError> {
    let mut all: Vec<(Route, Source)> = file
        .iter()
        .filter(|r| !api.contains_key(&r.name))
        .map(|r| (r.clone(), Source::File))
        .collect();
    all.extend(api.values().map(|r| (r.clone(), api_source)));
    all.extend(apps.routes().map(|r| (r.clone(), Source::App)));
    // Expired routes are out of the table and claim no host.
    let live: Vec<Route> = all
        .iter()
        .filter(|(r, _)| !r.expired_at(now))
        .map(|(r, _)| r.clone())
        .collect();
    if let Err(why) = ControlLimits::check(live.len(), max_routes, "live routes", "max_routes") {
        return Err(ControlError::Invalid(
            ConfigError::new(Path::new(API), "routes", why).into(),
        ));
    }
    let mut errs = ConfigErrors::default();
    check_conflicts(
        Path::new(API),
        &live,
        &|_, r| format!("route `{}`", r.name),
        &mut errs,
    );
    if !errs.is_empty() {
        return Err(ControlError::Conflict(errs.to_string()));
    }
    Ok(all)
}

/// Checks that `store` serves every host of every live terminate route
/// (free for the same reason as [`merge`]).
pub(crate) fn check_certs(
    cfg: &crate::config::Config,
    routes: &[(Route, Source)],
    store: &CertStore,
    now: chrono::DateTime<Utc>,
) -> Result<(), ControlError> {
    let mut errs = ConfigErrors::default();
    for (r, source) in routes.iter().filter(|(r, _)| !r.expired_at(now)) {
        let file = match (source, &cfg.routes_file) {
            (Source::File, Some(f)) => f.as_path(),
            _ => Path::new(API),
        };
        store.check_route(file, &format!("route `{}`", r.name), r, &mut errs);
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ControlError::Invalid(errs))
    }
}
