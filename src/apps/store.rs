//! The registered apps, as the reconciler holds them: one entry per
//! (project, name), each with its validated app, the CNAME verdicts on its
//! custom hostnames and the routes derived from both. Values are immutable;
//! a change builds a new [`Apps`] that the reconciler keeps only if the
//! whole route set it yields applies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::cname::{custom_hosts, fold, CnameState, CnameStates};
use super::derive::{self, SOURCE};
use super::error::AppError;
use super::ownership::Proof;
use super::record::{self, App, AppKey, AppRecord, CertOrigin, Context};
use super::rules::{self, ExpiryRule};
use super::violation::{Field, Violation};
use crate::config::apps::{AppsConfig, CnamePolicy};
use crate::config::{ConfigError, ConfigErrors};
use crate::routing::route::{HostPattern, Route};
use crate::tls::certs::CertStore;

/// A registration: the record, and the CNAME checks the admin API ran on
/// its custom hostnames before sending it (lookups never run in the
/// reconciler task).
#[derive(Debug)]
pub struct AppPut {
    pub key: AppKey,
    pub record: AppRecord,
    pub cname: CnameStates,
}

/// A periodic recheck's findings for one deployment.
#[derive(Debug)]
pub struct CnameReport {
    pub key: AppKey,
    /// Findings about another deployment than the registered one are stale.
    pub id: Uuid,
    pub cname: CnameStates,
}

/// One registered app.
#[derive(Debug)]
pub struct AppEntry {
    pub app: App,
    /// Per custom hostname, the last verdict.
    pub cname: CnameStates,
    /// The routes it yields now (validated; they leave the table at expiry).
    pub routes: Vec<Route>,
}

impl AppEntry {
    fn build(app: App, cname: CnameStates, policy: &AppsConfig) -> Result<Self, ConfigErrors> {
        let withdrawn: BTreeSet<String> = match policy.cname_policy {
            CnamePolicy::Enforce => cname
                .iter()
                .filter(|(_, s)| matches!(s, CnameState::Wrong(_)))
                .map(|(h, _)| h.clone())
                .collect(),
            CnamePolicy::Warn | CnamePolicy::Off => BTreeSet::new(),
        };
        let specs = derive::specs(&app, policy, &withdrawn);
        let routes = derive::routes(&app, &specs)?;
        Ok(Self { app, cname, routes })
    }
}

/// Whether an app is registered now or read back from the durable state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    New,
    Restored,
}

/// Every registered app. The maps are persistent (`imbl`): the copy an
/// admission makes ([`Apps::admit`]) and the one published for the admin
/// API cost O(1), and a change O(log n), so one app deploying among a
/// hundred thousand does not copy the others.
#[derive(Debug, Clone, Default)]
pub struct Apps {
    entries: imbl::OrdMap<AppKey, Arc<AppEntry>>,
    /// Which key holds each app id, so admitting one app checks its id in
    /// one probe rather than a scan (loading n apps from etcd stays linear).
    ids: imbl::HashMap<Uuid, AppKey>,
    /// Every app's expiry, soonest first: the next one, and those that
    /// passed, without a scan.
    expiries: imbl::OrdSet<(DateTime<Utc>, AppKey)>,
}

impl Apps {
    pub fn get(&self, key: &AppKey) -> Option<&Arc<AppEntry>> {
        self.entries.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<AppEntry>> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Sets the scrape-time gauge of each app owner certificate's expiry.
    pub fn scrape(&self, s: &crate::metrics::Scrape) {
        for e in self.iter() {
            if let Some(owner) = &e.app.owner_certificate {
                s.app_certificate(&e.app.key.to_string(), owner.not_after.timestamp());
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every derived route.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.entries.values().flat_map(|e| e.routes.iter())
    }

    /// The set with `put` registered, replacing whatever deployment held its
    /// (project, name). Refused with every violation, each with its field;
    /// `certs` are the live platform certificates (an `operator` app's
    /// public hostname must be served by one).
    pub fn admit(
        &self,
        put: AppPut,
        policy: &AppsConfig,
        certs: &CertStore,
        now: DateTime<Utc>,
    ) -> Result<Apps, AppError> {
        let mut next = self.clone();
        next.admit_into(put, policy, certs, now)?;
        Ok(next)
    }

    /// [`Apps::admit`] in place, for building a set app by app without a
    /// copy per app; on an error the set is unchanged.
    pub fn admit_into(
        &mut self,
        put: AppPut,
        policy: &AppsConfig,
        certs: &CertStore,
        now: DateTime<Utc>,
    ) -> Result<(), AppError> {
        self.admit_as(put, policy, certs, now, Admission::New)
    }

    /// As [`Apps::admit`], for an app read back from the durable state: its
    /// stored CNAME verdicts stand as they were when it was last running
    /// (a custom domain withdrawn by a recheck stays withdrawn, routes and
    /// all, until a recheck restores it) instead of refusing the app, as a
    /// new registration without its CNAME would be. Every other rule,
    /// expiry included, is checked again.
    pub fn restore(
        &self,
        put: AppPut,
        policy: &AppsConfig,
        certs: &CertStore,
        now: DateTime<Utc>,
    ) -> Result<Apps, AppError> {
        let mut next = self.clone();
        next.admit_as(put, policy, certs, now, Admission::Restored)?;
        Ok(next)
    }

    fn admit_as(
        &mut self,
        put: AppPut,
        policy: &AppsConfig,
        certs: &CertStore,
        now: DateTime<Utc>,
        how: Admission,
    ) -> Result<(), AppError> {
        let AppPut { key, record, cname } = put;
        if let Some(other) = self.ids.get(&record.id).filter(|k| **k != key) {
            return Err(AppError::Conflict(format!(
                "app id {} already belongs to app `{other}`",
                record.id
            )));
        }
        let ctx = Context {
            policy,
            now,
            previous: self.entries.get(&key).map(|e| &e.app),
        };
        let app = record::validate(&key, record, ctx).map_err(invalid)?;
        let mut v = Vec::new();
        if app.record.ssl_certificate_origin == CertOrigin::Operator
            && !certs.covers(&HostPattern::Exact(app.domain.clone()))
        {
            v.push(Violation::new(
                Field::DomainName,
                format!(
                    "no [[certificate]] serves `{}`; `operator` apps are terminated with the platform's certificate",
                    app.domain
                ),
            ));
        }
        let mut states = CnameStates::new();
        let fields: BTreeMap<&str, Field> = app.hosts().map(|(f, h)| (h, f)).collect();
        for host in custom_hosts(policy, app.hosts().map(|(_, h)| h)) {
            let state = cname
                .get(&host)
                .cloned()
                .unwrap_or_else(|| CnameState::Unverified("not checked".into()));
            if state != CnameState::Ok && how == Admission::New {
                let why = match &state {
                    CnameState::Wrong(w) | CnameState::Unverified(w) => w.clone(),
                    CnameState::Ok => String::new(),
                };
                let ingress = policy.ingress_hostname.as_deref().unwrap_or_default();
                match policy.cname_policy {
                    CnamePolicy::Enforce => v.push(Violation::new(
                        fields
                            .get(host.as_str())
                            .copied()
                            .unwrap_or(Field::DomainName),
                        format!(
                            "a custom domain needs a CNAME to `{ingress}` and {} (the proof of control for project `{}`): {why}",
                            Proof::new(&host, &app.key.project),
                            app.key.project
                        ),
                    )),
                    _ => {
                        tracing::warn!(app = %app.key, host = %host, reason = %why, "custom domain has no CNAME to {ingress} or no ownership proof; routed anyway (apps.cname_policy = \"warn\")")
                    }
                }
            }
            states.insert(host, state);
        }
        if !v.is_empty() {
            return Err(invalid(v));
        }
        let entry = AppEntry::build(app, states, policy).map_err(AppError::Invalid)?;
        self.insert(key, entry);
        Ok(())
    }

    /// Registers `entry` under `key`, keeping the id index true.
    fn insert(&mut self, key: AppKey, entry: AppEntry) {
        self.ids.insert(entry.app.record.id, key.clone());
        self.expiries.insert((entry.app.expiry.at, key.clone()));
        if let Some(old) = self.entries.insert(key, Arc::new(entry)) {
            self.forget_id(&old);
        }
    }

    /// Removes `key`, returning whether it was registered.
    pub fn remove(&mut self, key: &AppKey) -> bool {
        match self.entries.remove(key) {
            Some(old) => {
                self.forget_id(&old);
                true
            }
            None => false,
        }
    }

    /// Drops `old`'s id (and its expiry, if the key now holds another
    /// one) from the indexes unless another key holds it now.
    fn forget_id(&mut self, old: &AppEntry) {
        let at = old.app.expiry.at;
        if self
            .entries
            .get(&old.app.key)
            .is_none_or(|e| e.app.expiry.at != at)
        {
            self.expiries.remove(&(at, old.app.key.clone()));
        }
        let id = old.app.record.id;
        let still = self
            .entries
            .get(&old.app.key)
            .is_some_and(|e| e.app.record.id == id);
        if !still && self.ids.get(&id) == Some(&old.app.key) {
            self.ids.remove(&id);
        }
    }

    /// A set of `key` alone (empty if it is not registered).
    pub fn only(&self, key: &AppKey) -> Apps {
        let mut only = Apps::default();
        if let Some(e) = self.entries.get(key) {
            only.ids.insert(e.app.record.id, key.clone());
            only.expiries.insert((e.app.expiry.at, key.clone()));
            only.entries.insert(key.clone(), Arc::clone(e));
        }
        only
    }

    /// The set without `key`.
    pub fn without(&self, key: &AppKey) -> Result<Apps, AppError> {
        let mut next = self.clone();
        match next.remove(key) {
            true => Ok(next),
            false => Err(AppError::NotFound(format!("no app `{key}`"))),
        }
    }

    /// The set with a recheck's findings folded in; `None` when they change
    /// nothing or are about a deployment no longer registered.
    pub fn rechecked(
        &self,
        report: CnameReport,
        policy: &AppsConfig,
    ) -> Option<Result<Apps, ConfigErrors>> {
        let entry = self.entries.get(&report.key)?;
        if entry.app.record.id != report.id {
            return None;
        }
        let mut states = entry.cname.clone();
        states.extend(fold(&entry.cname, report.cname));
        if states == entry.cname {
            return None;
        }
        for (host, s) in &states {
            match (entry.cname.get(host), s) {
                (Some(CnameState::Ok), CnameState::Wrong(why)) => {
                    tracing::warn!(app = %report.key, host = %host, reason = %why, policy = policy.cname_policy.as_str(), "custom domain lost its CNAME to the ingress or its ownership proof")
                }
                (Some(CnameState::Wrong(_)), CnameState::Ok) => {
                    tracing::info!(app = %report.key, host = %host, "custom domain CNAME to the ingress and ownership proof are back")
                }
                _ => {}
            }
        }
        let built = AppEntry::build(entry.app.clone(), states, policy).map(|e| {
            let mut next = self.clone();
            next.insert(report.key, e);
            next
        });
        Some(built)
    }

    /// The soonest expiry among the registered apps.
    pub fn next_expiry(&self) -> Option<DateTime<Utc>> {
        self.expiries.get_min().map(|(t, _)| *t)
    }

    /// Forgets apps whose expiry has passed ("`stopped` (final; also reached
    /// at expiry)"); their routes have left the table with the same expiry.
    /// Returns how many went.
    pub fn forget_expired(&mut self, now: DateTime<Utc>) -> usize {
        self.expired_by(now)
            .into_iter()
            .filter(|(at, k)| {
                tracing::info!(app = %k, expired_at = %rules::stamp(*at), "app expired");
                self.remove(k)
            })
            .count()
    }

    /// The apps whose expiry is at or before `now`, soonest first.
    pub fn expired_by(&self, now: DateTime<Utc>) -> Vec<(DateTime<Utc>, AppKey)> {
        self.expiries
            .iter()
            .take_while(|(t, _)| *t <= now)
            .cloned()
            .collect()
    }
}

/// Violations as config errors: the field is the record's key, so a client
/// sees `domain_name`, `expires_at`...
pub fn invalid(v: Vec<Violation>) -> AppError {
    AppError::Invalid(ConfigErrors(
        v.into_iter()
            .map(|v| ConfigError::new(Path::new(SOURCE), v.field.record_key(), v.message))
            .collect(),
    ))
}

/// An app as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct AppView<'a> {
    pub project: &'a str,
    pub name: &'a str,
    pub record: &'a AppRecord,
    /// The effective expiry, after the rules.
    pub expires_at: String,
    pub expiry_rule: ExpiryRule,
    /// The routes it yields now (see `/routes` for their live state).
    pub routes: Vec<RouteRef<'a>>,
    /// Verdicts on its custom hostnames.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cname: &'a CnameStates,
}

/// A derived route, by name and hosts.
#[derive(Debug, Serialize)]
pub struct RouteRef<'a> {
    pub name: &'a str,
    pub hosts: &'a [String],
    pub mode: &'static str,
}

impl<'a> From<&'a AppEntry> for AppView<'a> {
    fn from(e: &'a AppEntry) -> Self {
        AppView {
            project: &e.app.key.project,
            name: &e.app.key.name,
            record: &e.app.record,
            expires_at: rules::stamp(e.app.expiry.at),
            expiry_rule: e.app.expiry.rule,
            routes: e
                .routes
                .iter()
                .map(|r| RouteRef {
                    name: &r.name,
                    hosts: &r.spec.hosts,
                    mode: r.mode.as_str(),
                })
                .collect(),
            cname: &e.cname,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::rules::Status;

    fn policy(cname: CnamePolicy) -> AppsConfig {
        AppsConfig {
            platform_domains: vec!["apps.example.com".into()],
            ingress_hostname: Some("proxy.example.com".into()),
            cname_policy: cname,
            ..AppsConfig::default()
        }
    }

    fn put(id: u128, domain: &str, cname: &[(&str, CnameState)]) -> AppPut {
        AppPut {
            key: AppKey {
                project: "p".into(),
                name: "shop".into(),
            },
            record: AppRecord {
                id: Uuid::from_u128(id),
                domain_name: domain.into(),
                config_domain_name: Some("cfg.apps.example.com".into()),
                ssl_certificate_origin: CertOrigin::Enclave,
                hardware: "2g-eu-001".into(),
                expires_at: None,
                deployed_at: None,
                owner_certificate: None,
                node: "10.0.0.1:443".into(),
                enclave_cert_sha256: None,
                limits: None,
                status: Status::Running,
            },
            cname: cname
                .iter()
                .map(|(h, s)| (h.to_string(), s.clone()))
                .collect(),
        }
    }

    fn route_names(apps: &Apps) -> Vec<String> {
        apps.routes().map(|r| r.name.clone()).collect()
    }

    fn fields(e: AppError) -> Vec<String> {
        match e {
            AppError::Invalid(errs) => errs.0.into_iter().map(|e| e.field).collect(),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn an_app_id_belongs_to_one_key_until_it_is_redeployed_or_deleted() {
        let (p, certs, now) = (policy(CnamePolicy::Off), CertStore::default(), Utc::now());
        let shop = put(1, "shop.apps.example.com", &[]);
        let mut other = put(1, "other.apps.example.com", &[]);
        other.key.name = "other".into();
        let other_again = || {
            let mut o = put(1, "other.apps.example.com", &[]);
            o.key.name = "other".into();
            o
        };
        let apps = Apps::default().admit(shop, &p, &certs, now).unwrap();
        let e = apps.admit(other, &p, &certs, now).unwrap_err();
        assert_eq!(
            e.to_string(),
            "conflict: app id 00000000-0000-0000-0000-000000000001 already belongs to app `p/shop`"
        );
        // Redeployed under a new id, the old one is free.
        let redeployed = apps
            .admit(put(2, "shop.apps.example.com", &[]), &p, &certs, now)
            .unwrap();
        assert!(redeployed.admit(other_again(), &p, &certs, now).is_ok());
        // Deleted, likewise.
        let key = AppKey {
            project: "p".into(),
            name: "shop".into(),
        };
        let gone = apps.without(&key).unwrap();
        assert!(gone.admit(other_again(), &p, &certs, now).is_ok());
        // In place, a refusal leaves the set as it was.
        let mut same = apps.clone();
        assert!(same.admit_into(other_again(), &p, &certs, now).is_err());
        assert_eq!(route_names(&same), route_names(&apps));
    }

    #[test]
    fn enforce_refuses_a_custom_domain_without_its_cname() {
        let (p, certs, now) = (
            policy(CnamePolicy::Enforce),
            CertStore::default(),
            Utc::now(),
        );
        let apps = Apps::default();
        let wrong = CnameState::Wrong("no CNAME".into());
        let e = apps
            .admit(
                put(1, "shop.customer.com", &[("shop.customer.com", wrong)]),
                &p,
                &certs,
                now,
            )
            .unwrap_err();
        assert_eq!(fields(e), vec!["domain_name"]);
        let e = apps
            .admit(put(1, "shop.customer.com", &[]), &p, &certs, now)
            .unwrap_err();
        assert_eq!(
            fields(e),
            vec!["domain_name"],
            "an unchecked host is refused too"
        );
        let ok = apps
            .admit(
                put(
                    1,
                    "shop.customer.com",
                    &[("shop.customer.com", CnameState::Ok)],
                ),
                &p,
                &certs,
                now,
            )
            .unwrap();
        assert_eq!(route_names(&ok), vec!["app.p.shop.config", "app.p.shop"]);
        // Platform names need no CNAME.
        assert!(apps
            .admit(put(1, "x.apps.example.com", &[]), &p, &certs, now)
            .is_ok());
    }

    #[test]
    fn a_restored_app_keeps_its_withdrawn_custom_domain_withdrawn() {
        let (p, certs, now) = (
            policy(CnamePolicy::Enforce),
            CertStore::default(),
            Utc::now(),
        );
        let wrong = CnameState::Wrong("no CNAME".into());
        let stored = || {
            put(
                1,
                "shop.customer.com",
                &[("shop.customer.com", wrong.clone())],
            )
        };
        assert!(Apps::default().admit(stored(), &p, &certs, now).is_err());
        let apps = Apps::default().restore(stored(), &p, &certs, now).unwrap();
        assert_eq!(route_names(&apps), vec!["app.p.shop.config"]);
    }

    #[test]
    fn warn_routes_anyway() {
        let (p, certs, now) = (policy(CnamePolicy::Warn), CertStore::default(), Utc::now());
        let wrong = CnameState::Wrong("no CNAME".into());
        let apps = Apps::default()
            .admit(
                put(1, "shop.customer.com", &[("shop.customer.com", wrong)]),
                &p,
                &certs,
                now,
            )
            .unwrap();
        assert_eq!(apps.routes().count(), 2);
    }

    #[test]
    fn a_recheck_withdraws_and_restores_the_custom_route_only() {
        let (p, certs, now) = (
            policy(CnamePolicy::Enforce),
            CertStore::default(),
            Utc::now(),
        );
        let apps = Apps::default()
            .admit(
                put(
                    1,
                    "shop.customer.com",
                    &[("shop.customer.com", CnameState::Ok)],
                ),
                &p,
                &certs,
                now,
            )
            .unwrap();
        let key = apps.iter().next().unwrap().app.key.clone();
        let report = |id, s: CnameState| CnameReport {
            key: key.clone(),
            id: Uuid::from_u128(id),
            cname: CnameStates::from([("shop.customer.com".to_string(), s)]),
        };
        assert!(
            apps.rechecked(report(1, CnameState::Ok), &p).is_none(),
            "nothing new"
        );
        assert!(
            apps.rechecked(report(2, CnameState::Wrong("x".into())), &p)
                .is_none(),
            "another deployment's findings are stale"
        );
        assert!(
            apps.rechecked(report(1, CnameState::Unverified("timeout".into())), &p)
                .is_none(),
            "no answer changes nothing"
        );
        let withdrawn = apps
            .rechecked(report(1, CnameState::Wrong("gone".into())), &p)
            .unwrap()
            .unwrap();
        assert_eq!(route_names(&withdrawn), vec!["app.p.shop.config"]);
        let back = withdrawn
            .rechecked(report(1, CnameState::Ok), &p)
            .unwrap()
            .unwrap();
        assert_eq!(route_names(&back), vec!["app.p.shop.config", "app.p.shop"]);
    }

    #[test]
    fn one_id_one_app_and_operator_needs_a_platform_certificate() {
        let (p, certs, now) = (policy(CnamePolicy::Off), CertStore::default(), Utc::now());
        let apps = Apps::default()
            .admit(put(1, "a.apps.example.com", &[]), &p, &certs, now)
            .unwrap();
        let mut other = put(1, "b.apps.example.com", &[]);
        other.key.name = "blog".into();
        assert!(matches!(
            apps.admit(other, &p, &certs, now),
            Err(AppError::Conflict(_))
        ));
        let mut op = put(2, "a.apps.example.com", &[]);
        op.record.ssl_certificate_origin = CertOrigin::Operator;
        op.record.enclave_cert_sha256 = Some("ab".repeat(32));
        assert_eq!(
            fields(apps.admit(op, &p, &certs, now).unwrap_err()),
            vec!["domain_name"]
        );
        assert!(matches!(
            apps.without(&AppKey {
                project: "p".into(),
                name: "nope".into()
            }),
            Err(AppError::NotFound(_))
        ));
    }
}
