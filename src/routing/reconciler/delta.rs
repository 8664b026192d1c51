//! The reconciler's per-change paths: an API route put or deleted, an app
//! put or deleted, routes expiring. Each is checked against the live table
//! (its host index answers who claims a host in one probe) and applied as
//! a delta (`routing::delta`), so it costs O(hosts of the change), not a
//! merge and a rebuild of every route. The full path (`merged` then
//! `reload::apply`) stays for what replaces a whole source: the routes file,
//! an etcd read, certificates, the start.
//!
//! The checks give the answers `merged` gives: a route name used by
//! another source (an API route may only override a file route), a host
//! claimed by another route, the cap on live routes, a terminate host no
//! certificate serves.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};

use super::{ControlError, Reconciler, API};
use crate::apps::AppKey;
use crate::config::{ConfigError, ConfigErrors, ControlLimits};
use crate::routing::delta::{self, Delta};
use crate::routing::reload::{Applied, ApplyOptions};
use crate::routing::route::Route;
use crate::routing::table::{Snapshot, Source};
use crate::state::Change;

/// Where a route stands in `merged`'s order: of two routes claiming one
/// host, the later one is named as the one whose host is taken.
fn rank(source: Source) -> u8 {
    match source {
        Source::File => 0,
        Source::Api | Source::Etcd => 1,
        Source::App => 2,
    }
}

impl Reconciler {
    /// Whether a change can be applied as a delta: not with etcd (its
    /// routes come as whole sets), and not while a route past its expiry
    /// is still in the table (the full path takes those out first; this
    /// is only the instant between an expiry and its timer).
    pub(super) fn can_patch(&self, now: DateTime<Utc>) -> bool {
        self.etcd.is_none()
            && self
                .shared
                .router
                .load()
                .next_expiry()
                .is_none_or(|(t, _)| t > now)
    }

    /// Checks `delta` against the live table. `replaces`: the live routes
    /// it may replace by name (an API route a file or API route of its
    /// name; an app its own routes); every name it puts or removes frees
    /// its hosts.
    pub(super) fn check_delta(
        &self,
        live: &Snapshot,
        delta: &Delta,
        replaces: &dyn Fn(&Route, Source) -> bool,
    ) -> Result<(), ControlError> {
        let file = Path::new(API);
        let freed: HashSet<&str> = delta
            .remove
            .iter()
            .map(String::as_str)
            .chain(delta.put.iter().map(|(r, _)| r.name.as_str()))
            .collect();
        let mut errs = ConfigErrors::default();
        let mut claimed: HashMap<&crate::routing::route::HostPattern, &str> = HashMap::new();
        for (r, source) in &delta.put {
            let at = format!("route `{}`", r.name);
            if let Some(e) = live.get(&r.name).filter(|e| !replaces(&e.route, e.source)) {
                errs.push(
                    file,
                    format!("{at}.name"),
                    format!(
                        "route name `{}` is already used by route `{}`",
                        r.name, e.route.name
                    ),
                );
            }
            for h in &r.hosts {
                let other = match live.claimant(h) {
                    Some(e) if !freed.contains(e.route.name.as_str()) => {
                        Some((e.route.name.as_str(), e.source))
                    }
                    _ => claimed.get(h).map(|n| (*n, *source)),
                };
                if let Some((o, their)) = other.filter(|(o, _)| *o != r.name) {
                    // Named as `merged` would: the later source's route.
                    let (of, by) = match rank(their) > rank(*source) {
                        true => (o, r.name.as_str()),
                        false => (r.name.as_str(), o),
                    };
                    errs.push(
                        file,
                        format!("route `{of}`.hosts"),
                        crate::routing::claims::host_taken(h, of, by),
                    );
                }
                claimed.insert(h, &r.name);
            }
        }
        if !errs.is_empty() {
            return Err(ControlError::Conflict(errs.to_string()));
        }
        let gone = delta
            .remove
            .iter()
            .filter(|n| live.get(n).is_some())
            .count();
        let added = delta
            .put
            .iter()
            .filter(|(r, _)| live.get(&r.name).is_none())
            .count();
        let cap = self.shared.config.control_limits.routes;
        let n = (live.len() + added).saturating_sub(gone);
        if let Err(why) = ControlLimits::check(n, cap, "live routes", "max_routes") {
            return Err(ControlError::Invalid(
                ConfigError::new(file, "routes", why).into(),
            ));
        }
        let certs = live.termination().certs();
        for (r, _) in &delta.put {
            certs.check_route(file, &format!("route `{}`", r.name), r, &mut errs);
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ControlError::Invalid(errs))
        }
    }

    /// Commits `change`, then patches the table with `delta`; should the
    /// patch fail, commits `undo` (as `commit_then_apply` does).
    pub(super) async fn commit_then_patch(
        &self,
        change: Vec<Change>,
        undo: Vec<Change>,
        delta: Delta,
        why: &'static str,
    ) -> Result<Applied, ControlError> {
        self.persist(change).await?;
        let applied = self.patch(delta, why);
        if applied.is_err() {
            if let Err(e) = self.persist(undo).await {
                tracing::error!(error = %e, "a change that did not apply stays in the state store until its next write");
            }
        }
        applied
    }

    /// Applies a checked `delta`, counts and logs it; the series of the
    /// routes it took out are dropped (those that expired counted).
    pub(super) fn patch(&self, delta: Delta, why: &'static str) -> Result<Applied, ControlError> {
        let cfg = &self.shared.config;
        let now = Utc::now();
        let opts = ApplyOptions {
            no_sni_route: cfg.no_sni_route.as_deref(),
            on_change: cfg.reload.on_change,
            close_grace: cfg.reload.close_grace,
            now,
            certs: None,
        };
        let names: Vec<String> = delta
            .remove
            .iter()
            .cloned()
            .chain(delta.put.iter().map(|(r, _)| r.name.clone()))
            .collect();
        let before = self.shared.router.load_full();
        let applied = delta::patch(&self.shared.router, delta, opts).map_err(|e| {
            ControlError::Invalid(ConfigError::new(&cfg.source, "refusal.no_sni_route", e).into())
        })?;
        self.stats.applied.fetch_add(1, Ordering::Relaxed);
        let m = &self.shared.metrics;
        m.reloads.with_label_values(&[why, "ok"]).inc();
        let after = self.shared.router.load();
        let gone: Vec<_> = names
            .iter()
            .filter(|name| after.get(name).is_none())
            .filter_map(|name| before.get(name).cloned())
            .collect();
        m.expirations
            .inc_by(gone.iter().filter(|e| e.route.expired_at(now)).count() as u64);
        self.forget_when_closed(gone);
        tracing::info!(
            source = why,
            added = applied.added,
            changed = applied.changed,
            removed = applied.removed,
            unchanged = applied.unchanged,
            expired = applied.expired,
            live = after.len(),
            "routes applied"
        );
        Ok(applied)
    }

    /// `PUT /routes/{name}` as a delta (`route` checked for its own
    /// fields and expiry already).
    pub(super) async fn put_delta(&mut self, route: Route) -> Result<Applied, ControlError> {
        let live = self.shared.router.load_full();
        let delta = Delta {
            put: vec![(route.clone(), Source::Api)],
            remove: vec![],
        };
        let name = route.name.as_str();
        self.check_delta(&live, &delta, &|r, s| {
            r.name == name && matches!(s, Source::File | Source::Api)
        })?;
        let (change, undo) = self.put_changes(&route);
        let applied = self.commit_then_patch(change, undo, delta, "api").await?;
        self.api_routes.insert(route.name.clone(), route);
        Ok(applied)
    }

    /// What the durable state gets for an API put of `route`, and what
    /// undoes it.
    pub(super) fn put_changes(&self, route: &Route) -> (Vec<Change>, Vec<Change>) {
        let undo = match self.api_routes.get(&route.name) {
            Some(old) => Change::PutRoute(old.spec.clone()),
            None => Change::DeleteRoute(route.name.clone()),
        };
        (vec![Change::PutRoute(route.spec.clone())], vec![undo])
    }

    /// `DELETE /routes/{name}` of an API route as a delta: the route goes,
    /// or the file route it overrode comes back.
    pub(super) async fn delete_delta(&mut self, name: &str) -> Result<Applied, ControlError> {
        let live = self.shared.router.load_full();
        let now = Utc::now();
        let back = self
            .file_route(name)
            .filter(|r| !r.expired_at(now))
            .cloned();
        let delta = match back {
            Some(r) => Delta {
                put: vec![(r, Source::File)],
                remove: vec![],
            },
            None => Delta {
                put: vec![],
                remove: vec![name.to_string()],
            },
        };
        self.check_delta(&live, &delta, &|r, s| r.name == name && s == Source::Api)?;
        let undo: Vec<Change> = self
            .api_routes
            .get(name)
            .map(|old| Change::PutRoute(old.spec.clone()))
            .into_iter()
            .collect();
        let change = Change::DeleteRoute(name.to_string());
        let applied = self
            .commit_then_patch(vec![change], undo, delta, "api")
            .await?;
        self.api_routes.remove(name);
        Ok(applied)
    }

    /// The routes file's route named `name`, through the name index.
    pub(super) fn file_route(&self, name: &str) -> Option<&Route> {
        self.file_index.get(name).map(|&i| &self.file_routes[i])
    }

    /// Replaces the file routes, keeping their name index true.
    pub(super) fn set_file_routes(&mut self, routes: Vec<Route>) {
        self.file_index = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i))
            .collect();
        self.file_routes = routes;
    }

    /// The delta an app's change makes: its new routes put, its old ones
    /// that the new set does not name taken out.
    pub(super) fn app_delta(&self, key: &AppKey, next: &crate::apps::Apps) -> Delta {
        let new: Vec<&Route> = next
            .get(key)
            .map(|e| e.routes.iter().collect())
            .unwrap_or_default();
        let names: HashSet<&str> = new.iter().map(|r| r.name.as_str()).collect();
        let remove = self
            .apps
            .get(key)
            .map(|e| {
                e.routes
                    .iter()
                    .filter(|r| !names.contains(r.name.as_str()))
                    .map(|r| r.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        Delta {
            put: new.into_iter().map(|r| (r.clone(), Source::App)).collect(),
            remove,
        }
    }

    /// Checks an app's delta: it may replace only its own routes.
    pub(super) fn check_app_delta(&self, key: &AppKey, delta: &Delta) -> Result<(), ControlError> {
        let own: HashSet<&str> = self
            .apps
            .get(key)
            .map(|e| e.routes.iter().map(|r| r.name.as_str()).collect())
            .unwrap_or_default();
        let live = self.shared.router.load_full();
        self.check_delta(&live, delta, &|r, s| {
            s == Source::App && own.contains(r.name.as_str())
        })
    }

    /// What expiry at `now` changes: the expired routes taken out (and the
    /// file routes expired API routes overrode put back, where their hosts
    /// are still free), the expired API routes and apps forgotten here.
    /// Returns the delta and the state deletions to commit.
    pub(super) fn expiry_delta(&mut self, now: DateTime<Utc>) -> (Delta, Vec<Change>) {
        let live = self.shared.router.load_full();
        let mut delta = Delta::default();
        let mut gone = Vec::new();
        for name in live.expired_by(now) {
            let Some(e) = live.get(name) else { continue };
            if matches!(e.source, Source::Api | Source::Etcd) {
                self.api_routes.remove(name);
                if self.etcd.is_none() {
                    gone.push(Change::DeleteRoute(name.to_string()));
                }
                if let Some(r) = self.file_route(name).filter(|r| !r.expired_at(now)) {
                    let back = Delta {
                        put: vec![(r.clone(), Source::File)],
                        remove: vec![],
                    };
                    let fits =
                        self.check_delta(&live, &back, &|r, s| r.name == name && s != Source::App);
                    match fits {
                        Ok(()) => delta.put.extend(back.put),
                        Err(e) => {
                            tracing::error!(route = %name, error = %e, "file route not restored after the API route that overrode it expired")
                        }
                    }
                    continue;
                }
            }
            delta.remove.push(name.to_string());
        }
        let expired_apps = self.apps.expired_by(now);
        if self.apps.forget_expired(now) > 0 {
            self.publish_apps();
            if self.etcd.is_none() {
                gone.extend(expired_apps.into_iter().map(|(_, k)| Change::DeleteApp(k)));
            }
        }
        (delta, gone)
    }
}
