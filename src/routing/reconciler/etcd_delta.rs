//! etcd watch changes as a delta. With `[etcd]`, a write through any
//! instance comes back to every instance as a watch event; refitting the
//! whole etcd set for it (`Reconciler::etcd_set`) costs each instance
//! O(etcd entries) per write. Here the changed routes and apps are checked
//! against the live table, as an API change is (`delta.rs`), and patched
//! in: O(what changed).
//!
//! Only when the answer is the one the full fitting would give. The full
//! fitting is first-come-first-kept (apps, then routes, in key order) and
//! leaves out what clashes; a delta that clashes with anything, or arrives
//! while some etcd entry is left out (a deletion may let it back in), is
//! answered `None` and the follower hands over the whole set instead, so
//! the result never depends on the path taken.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use chrono::Utc;

use super::{ControlError, Reconciler};
use crate::control::EtcdDelta;
use crate::routing::delta::Delta;
use crate::routing::reload::Applied;
use crate::routing::table::Source;

impl Reconciler {
    /// Applies `d` as a delta, or answers `Ok(None)` when it needs the
    /// whole set (see the module's doc).
    pub(super) fn etcd_delta(&mut self, d: EtcdDelta) -> Result<Option<Applied>, ControlError> {
        let Some(status) = self.etcd.clone() else {
            return Err(ControlError::NotFound("no [etcd] is configured".into()));
        };
        if d.revision < status.revision() {
            return Err(ControlError::Conflict(format!(
                "revision {} is older than the live {}",
                d.revision,
                status.revision()
            )));
        }
        let now = Utc::now();
        let live = self.shared.router.load_full();
        let expiring = live.next_expiry().is_some_and(|(t, _)| t <= now);
        if self.shared.metrics.etcd_routes_left_out.get() != 0 || expiring {
            return Ok(None);
        }

        // Apps first, as the full fitting admits them.
        let certs = std::sync::Arc::clone(live.termination().certs());
        let mut apps = self.apps.clone();
        let mut app_keys = Vec::with_capacity(d.apps.len());
        for (key, put) in d.apps {
            // Admitted afresh, as the full fitting admits every app: the
            // deployment it replaces has no say in its checks.
            apps.remove(&key);
            if let Some(put) = put {
                if apps
                    .admit_into(put, &self.shared.config.apps, &certs, now)
                    .is_err()
                {
                    return Ok(None);
                }
            }
            app_keys.push(key);
        }
        let mut delta = Delta::default();
        for key in &app_keys {
            let part = self.app_delta(key, &apps);
            delta.put.extend(part.put);
            delta.remove.extend(part.remove);
        }
        let own_app_routes: HashSet<String> = app_keys
            .iter()
            .filter_map(|k| self.apps.get(k))
            .flat_map(|e| e.routes.iter().map(|r| r.name.clone()))
            .collect();

        // Then routes: an etcd route may override a file route of its name
        // (as an API route does); its deletion brings that one back.
        let mut api_routes = self.api_routes.clone();
        let mut route_names = HashSet::with_capacity(d.routes.len());
        for (name, route) in d.routes {
            route_names.insert(name.clone());
            match route.filter(|r| !r.expired_at(now)) {
                Some(r) => {
                    api_routes.insert(name, r.clone());
                    delta.put.push((r, Source::Etcd));
                }
                None => {
                    api_routes.remove(&name);
                    match self.file_route(&name).filter(|r| !r.expired_at(now)) {
                        Some(back) => delta.put.push((back.clone(), Source::File)),
                        None => delta.remove.push(name),
                    }
                }
            }
        }
        let replaces = |r: &crate::routing::Route, s: Source| match s {
            Source::File | Source::Etcd => route_names.contains(&r.name),
            Source::App => own_app_routes.contains(&r.name),
            Source::Api => false,
        };
        if self.check_delta(&live, &delta, &replaces).is_err() {
            return Ok(None);
        }
        let applied = self.patch(delta, "etcd")?;
        self.shared
            .metrics
            .etcd_applied
            .with_label_values(&["delta"])
            .inc();
        self.api_routes = api_routes;
        self.apps = apps;
        self.publish_apps();
        status.applied(d.revision);
        self.stats.ready.store(true, Ordering::Relaxed);
        Ok(Some(applied))
    }
}
