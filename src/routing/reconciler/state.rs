//! The reconciler's side of the durable state (`crate::state`): every
//! accepted write is committed to the store, on a blocking thread, before
//! it is applied, and the stored routes and apps are applied at start
//! through the same checks as the API's.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;

use super::Reconciler;
use crate::apps::stored::StoredApp;
use crate::apps::AppError;
use crate::apps::{AppKey, Apps};
use crate::config::routes;
use crate::control::ControlError;
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
                .map_err(ControlError::from)
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
fn expired(e: &AppError) -> bool {
    const TIME_FIELDS: [&str; 3] = ["expires_at", "deployed_at", "owner_certificate"];
    match e {
        AppError::Invalid(errs) => {
            !errs.is_empty()
                && errs
                    .0
                    .iter()
                    .all(|e| TIME_FIELDS.contains(&e.field.as_str()))
        }
        _ => false,
    }
}

/// What `mse-proxy state import` will write, once every entry passed.
#[derive(Debug, Default)]
pub struct ImportPlan {
    /// The imported routes, as validated (what `PUT /routes` stores).
    pub routes: Vec<crate::config::routes::RouteSpec>,
    /// The imported apps as admitted (their `deployed_at` kept, their
    /// hostnames derived again rather than taken from the file).
    pub apps: Vec<StoredApp>,
    /// Entries left out because their expiry passed (by index and name):
    /// an export restored later is not refused for what time did to it,
    /// as the start drops such entries too.
    pub expired: Vec<String>,
}

/// Checks an import with the checks the running proxy applies: each
/// route as `PUT /routes` does (`validate_one`), each app as a restart
/// restores it (`Apps::restore`: every rule, its stored `deployed_at` and
/// CNAME verdicts kept), then the whole set merged with the routes file
/// and `current` (unless `replace`: then the import is the whole state)
/// for name and host conflicts and certificates (`merge`,
/// `check_certs`). Stops at the first invalid entry, named by its index
/// and field in `input` (`routes[3].expires_at`); nothing is written
/// before this returns `Ok`.
pub fn plan_import(
    config: &crate::config::Config,
    file_routes: &[Route],
    certs: &crate::tls::certs::CertStore,
    current: Stored,
    import: crate::state::export::Export,
    replace: bool,
    input: &Path,
) -> Result<ImportPlan, crate::config::ConfigErrors> {
    use crate::config::{ConfigError, ConfigErrors};
    let now = Utc::now();
    let policy = &config.apps;
    let one = |field: String, message: String| -> ConfigErrors {
        ConfigError::new(input, field, message).into()
    };
    let mut plan = ImportPlan::default();

    let mut api: BTreeMap<String, Route> = BTreeMap::new();
    let mut imported_names = std::collections::HashSet::new();
    for (i, spec) in import.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        let r = routes::validate_one(input, &at, spec, &config.control_limits)?;
        if !imported_names.insert(r.name.clone()) {
            return Err(one(
                format!("{at}.name"),
                format!("`{}` is in the import twice", r.name),
            ));
        }
        if r.expired_at(now) {
            plan.expired.push(format!("{at} `{}`", r.name));
            continue;
        }
        plan.routes.push(r.spec.clone());
        api.insert(r.name.clone(), r);
    }
    let imported_keys: std::collections::HashSet<AppKey> =
        import.apps.iter().map(StoredApp::key).collect();

    // What the import merges into: the stored entries it does not replace.
    // One that no longer applies itself (expired, say) is left out of the
    // check, as the start would leave it out.
    let mut apps = Apps::default();
    if !replace {
        for spec in current.routes {
            if api.contains_key(&spec.name) || imported_names.contains(&spec.name) {
                continue;
            }
            if let Ok(r) =
                routes::validate_one(Path::new(STATE), "route", &spec, &config.control_limits)
            {
                if !r.expired_at(now) {
                    api.insert(r.name.clone(), r);
                }
            }
        }
        for stored_app in current.apps {
            if imported_keys.contains(&stored_app.key()) {
                continue;
            }
            if let Ok(next) = apps.restore(stored_app.into_put(), policy, certs, now) {
                apps = next;
            }
        }
    }

    let mut seen = std::collections::HashSet::new();
    for (i, stored_app) in import.apps.into_iter().enumerate() {
        let key = stored_app.key();
        let at = format!("apps[{i}]");
        if !seen.insert(key.clone()) {
            return Err(one(at, format!("app `{key}` is in the import twice")));
        }
        match apps.restore(stored_app.into_put(), policy, certs, now) {
            Ok(next) => {
                let entry = next.get(&key).expect("just admitted");
                plan.apps.push(StoredApp::from(entry.as_ref()));
                apps = next;
            }
            Err(e) if expired(&e) => plan.expired.push(format!("{at} `{key}`")),
            Err(AppError::Invalid(errs)) => {
                // Violations name the record's field (`expires_at`): say
                // where that field is in the file.
                let first = errs.0.into_iter().next();
                let (field, message) = first
                    .map(|e| match e.field.as_str() {
                        "project" | "name" => (format!("{at}.{}", e.field), e.message),
                        f => (format!("{at}.record.{f}"), e.message),
                    })
                    .unwrap_or_else(|| (at.clone(), "invalid".into()));
                return Err(one(field, format!("app `{key}`: {message}")));
            }
            Err(e) => return Err(one(at, format!("app `{key}`: {e}"))),
        }
    }

    let merged = super::merge(
        file_routes,
        &api,
        Source::Api,
        &apps,
        now,
        config.control_limits.routes,
    )
    .map_err(|e| {
        one(
            "routes".into(),
            format!("{e} (with the routes file and the state kept)"),
        )
    })?;
    super::check_certs(config, &merged, certs, now).map_err(|e| match e {
        ControlError::Invalid(errs) => errs,
        e => one(String::new(), e.to_string()),
    })?;
    Ok(plan)
}
