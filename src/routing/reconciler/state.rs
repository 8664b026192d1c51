//! The reconciler's side of the durable state (`crate::state`): every
//! accepted write is committed to the store, on a blocking thread, before
//! it is applied, and the stored routes and apps are applied at start
//! through the same checks as the API's.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;

use super::{ControlError, Reconciler};
use crate::apps::stored::StoredApp;
use crate::apps::{AppKey, Apps};
use crate::config::routes;
use crate::routing::reload::Applied;
use crate::routing::route::Route;
use crate::routing::table::Source;
use crate::state::{Change, Stored};

/// Where restored entries are said to come from in messages.
const STATE: &str = "state";

impl Reconciler {
    /// Commits `changes` durably; without a store (etcd, or in memory),
    /// does nothing. A failed commit is counted and becomes a 503: the
    /// caller then applies nothing.
    pub(super) async fn persist(&self, changes: Vec<Change>) -> Result<(), ControlError> {
        let Some(store) = self.state.clone() else {
            return Ok(());
        };
        if changes.is_empty() {
            return Ok(());
        }
        // The commit fsyncs: a blocking thread, never an async worker. The
        // reconciler waits for it, so changes reach the disk in the order
        // they are applied.
        let why = match tokio::task::spawn_blocking(move || store.commit(&changes)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the commit did not finish: {e}"),
        };
        self.shared.metrics.state_write_errors.inc();
        tracing::error!(error = %why, "state commit failed; the change is not applied");
        Err(ControlError::Unavailable(format!(
            "the change was not applied: it could not be committed to disk: {why}"
        )))
    }

    /// Commits `change`, then applies `merged`. Should the apply fail
    /// after all (the checks before the commit make that unlikely), `undo`
    /// is committed, so the store never holds what is not served.
    pub(super) async fn commit_then_apply(
        &self,
        change: Vec<Change>,
        undo: Vec<Change>,
        merged: Vec<(Route, Source)>,
        why: &'static str,
    ) -> Result<Applied, ControlError> {
        self.persist(change).await?;
        let applied = self.apply(merged, why);
        if applied.is_err() {
            if let Err(e) = self.persist(undo).await {
                tracing::error!(error = %e, "a change that did not apply stays in the state store until its next write");
            }
        }
        applied
    }

    /// Deletes from the store what expired (best effort: an entry left
    /// behind is dropped at the next start, as expired).
    pub(super) async fn forget_in_state(&self, changes: Vec<Change>) {
        if let Err(e) = self.persist(changes).await {
            tracing::warn!(error = %e, "expired entries stay in the state store until the next start");
        }
    }

    /// Takes the stored routes and apps that still apply here: the routes
    /// as `PUT /routes` checks them, the apps as `PUT /apps` does (with
    /// their stored `deployed_at`, so their expiry is the one they had, and
    /// their stored CNAME verdicts). Returns the deletions of entries that
    /// expired while the proxy was down; others that no longer apply (a
    /// conflict with the routes file, a certificate gone) are logged and
    /// kept in the store, so a config mistake does not erase them.
    pub(super) fn restore(&mut self, stored: Stored) -> Vec<Change> {
        for why in &stored.unreadable {
            tracing::error!(entry = %why, "stored entry does not parse; left out");
        }
        let now = Utc::now();
        let certs = Arc::clone(self.shared.router.load().termination().certs());
        let policy = &self.shared.config.apps;
        let mut forget = Vec::new();
        let mut api = BTreeMap::new();
        for spec in stored.routes {
            let name = spec.name.clone();
            let limits = &self.shared.config.control_limits;
            match routes::validate_one(Path::new(STATE), &format!("route `{name}`"), &spec, limits)
            {
                Ok(r) if r.expired_at(now) => forget.push(Change::DeleteRoute(name)),
                Ok(r) => {
                    api.insert(name, r);
                }
                Err(e) => tracing::error!(route = %name, error = %e, "stored route not restored"),
            }
        }
        let mut apps = Apps::default();
        let mut puts = Vec::new();
        for stored_app in stored.apps {
            let key = stored_app.key();
            match apps.restore(stored_app.clone().into_put(), policy, &certs, now) {
                Ok(next) => {
                    apps = next;
                    puts.push(stored_app);
                }
                Err(e) if expired(&e) => {
                    tracing::info!(app = %key, reason = %e, "stored app expired while the proxy was down");
                    forget.push(Change::DeleteApp(key));
                }
                Err(e) => tracing::error!(app = %key, error = %e, "stored app not restored"),
            }
        }
        // All at once when they fit together, as they did when written;
        // one by one otherwise (the routes file or certificates changed
        // meanwhile), keeping each that still fits.
        if self.fits(&api, &apps).is_ok() {
            self.api_routes = api;
            self.apps = apps;
        } else {
            self.restore_one_by_one(api, puts);
        }
        self.publish_apps();
        forget
    }

    fn restore_one_by_one(&mut self, api: BTreeMap<String, Route>, puts: Vec<StoredApp>) {
        let now = Utc::now();
        let certs = Arc::clone(self.shared.router.load().termination().certs());
        for (name, route) in api {
            let mut next = self.api_routes.clone();
            next.insert(name.clone(), route);
            match self.fits(&next, &self.apps) {
                Ok(()) => self.api_routes = next,
                Err(e) => tracing::error!(route = %name, error = %e, "stored route not restored"),
            }
        }
        for put in puts {
            let key: AppKey = put.key();
            let next = self
                .apps
                .restore(put.into_put(), &self.shared.config.apps, &certs, now)
                .and_then(|next| self.fits(&self.api_routes, &next).map(|()| next));
            match next {
                Ok(next) => self.apps = next,
                Err(e) => tracing::error!(app = %key, error = %e, "stored app not restored"),
            }
        }
    }

    /// Whether `api` and `apps` apply with the file routes and the live
    /// certificates.
    fn fits(&self, api: &BTreeMap<String, Route>, apps: &Apps) -> Result<(), ControlError> {
        let merged = self.merged(&self.file_routes, api, apps)?;
        let certs = Arc::clone(self.shared.router.load().termination().certs());
        self.check_certs(&merged, &certs)
    }
}

/// Whether an app's refusal at restore is its expiry having passed: every
/// violation is about the dates the expiry is computed from (the record
/// passed these checks when it was stored, so only time can have failed
/// them since).
fn expired(e: &ControlError) -> bool {
    const TIME_FIELDS: [&str; 3] = ["expires_at", "deployed_at", "owner_certificate"];
    match e {
        ControlError::Invalid(errs) => {
            !errs.is_empty()
                && errs
                    .0
                    .iter()
                    .all(|e| TIME_FIELDS.contains(&e.field.as_str()))
        }
        _ => false,
    }
}
