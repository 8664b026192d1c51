//! Applying a new, already validated route set to the live table: one build,
//! one swap, then the routes that left (removed, expired, or changed) have
//! their connections told to close, after their grace. Unchanged routes keep
//! their entry, so their connections never notice the reload.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::route::Route;
use super::table::{RouteEntry, Router, Snapshot, Source};
use crate::config::OnChange;
use crate::tls::certs::CertStore;
use crate::tls::terminate::Termination;

/// What a reload did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub unchanged: usize,
    /// Routes left out because their expiry has passed.
    pub expired: usize,
}

/// Settings that shape an apply.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions<'a> {
    pub no_sni_route: Option<&'a str>,
    pub on_change: OnChange,
    /// Grace for routes that do not set their own.
    pub close_grace: Duration,
    /// The instant expiry is judged at.
    pub now: DateTime<Utc>,
    /// Certificates re-read with the routes; `None` keeps the live ones.
    /// Coverage of the terminate routes was checked by the caller.
    pub certs: Option<&'a Arc<CertStore>>,
}

impl<'a> ApplyOptions<'a> {
    pub fn new(no_sni_route: Option<&'a str>) -> Self {
        Self {
            no_sni_route,
            on_change: OnChange::Close,
            close_grace: Duration::ZERO,
            now: Utc::now(),
            certs: None,
        }
    }
}

/// Swaps in `routes`, leaving out the expired ones. Fails (changing nothing)
/// only if `no_sni_route` names no live route in the new set.
pub fn apply(
    router: &Router,
    routes: Vec<(Route, Source)>,
    opts: ApplyOptions<'_>,
) -> Result<Applied, String> {
    let old = router.load_full();
    let mut applied = Applied::default();
    let mut entries = Vec::with_capacity(routes.len());
    let mut changed_old: Vec<Arc<RouteEntry>> = Vec::new();
    for (r, source) in routes {
        if r.expired_at(opts.now) {
            applied.expired += 1;
            continue;
        }
        entries.push(next_entry(
            router,
            old.get(&r.name),
            r,
            source,
            opts.on_change,
            &mut applied,
            &mut changed_old,
        ));
    }
    for e in &entries {
        warn_if_fresh_insecure(&old, e);
    }
    let certs = match opts.certs {
        Some(c) => Arc::clone(c),
        None => Arc::clone(old.termination().certs()),
    };
    let tls = Termination::build(certs, router.sessions(), entries.iter().map(|e| &e.route));
    let next = Snapshot::build(entries, opts.no_sni_route)?.with_termination(tls);
    let removed: Vec<Arc<RouteEntry>> = old
        .routes()
        .filter(|e| next.get(&e.route.name).is_none())
        .cloned()
        .collect();
    applied.removed = removed.len();
    router.swap(next);
    // After the swap no new connection can pick these up.
    for e in removed.into_iter().chain(changed_old) {
        retire(e, opts.close_grace);
    }
    Ok(applied)
}

/// The entry `r` lives in next, given the live entry of its name: the same
/// one when nothing changed, a successor holding the connections when it
/// acts alike (or `on_change` keeps them), else a new one (and the old
/// goes to `changed_old`, to be retired after the swap). Counts it.
pub(super) fn next_entry(
    router: &Router,
    live: Option<&Arc<RouteEntry>>,
    r: Route,
    source: Source,
    on_change: OnChange,
    applied: &mut Applied,
    changed_old: &mut Vec<Arc<RouteEntry>>,
) -> Arc<RouteEntry> {
    match live {
        Some(e) if e.route == r && e.source == source => {
            applied.unchanged += 1;
            Arc::clone(e)
        }
        Some(e) if e.route.acts_like(&r) => {
            // Does the same, but written differently (host case, order,
            // a trailing dot, metadata, grace) or moved between
            // sources: the new definition takes the connections over
            // untouched.
            applied.unchanged += 1;
            RouteEntry::successor(r, source, router.closers(), e)
        }
        Some(e) => {
            applied.changed += 1;
            match on_change {
                OnChange::Close => {
                    changed_old.push(Arc::clone(e));
                    RouteEntry::new(r, source, router.closers())
                }
                OnChange::Keep => RouteEntry::successor(r, source, router.closers(), e),
            }
        }
        None => {
            applied.added += 1;
            RouteEntry::new(r, source, router.closers())
        }
    }
}

/// Warns once per new definition of a terminate route that skips the
/// backend's certificate check.
pub(super) fn warn_if_fresh_insecure(old: &Snapshot, e: &Arc<RouteEntry>) {
    let fresh = !old.get(&e.route.name).is_some_and(|o| Arc::ptr_eq(o, e));
    if fresh
        && e.route
            .terminate
            .as_ref()
            .is_some_and(|t| t.upstream.is_insecure())
    {
        tracing::warn!(route = %e.route.name, "upstream.insecure_skip_verify: the backend's certificate is not checked");
    }
}

/// Closes a retired route's connections, after its grace (the route's own, or
/// `default_grace`).
pub fn retire(entry: Arc<RouteEntry>, default_grace: Duration) {
    let grace = entry.route.close_grace.unwrap_or(default_grace);
    if grace.is_zero() || entry.open_connections() == 0 {
        entry.close_connections();
    } else {
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            entry.close_connections();
        });
    }
}

/// The soonest expiry among the live routes (kept sorted in the
/// snapshot, so no scan).
pub fn next_expiry(snapshot: &Snapshot) -> Option<DateTime<Utc>> {
    snapshot.next_expiry().map(|(t, _)| t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routes::{validate_all, RouteSpec};
    use crate::config::ControlLimits;
    use std::path::Path;

    fn routes(list: &[(&str, &str, &str)]) -> Vec<(Route, Source)> {
        let specs: Vec<RouteSpec> = list
            .iter()
            .map(|(name, host, backend)| RouteSpec::passthrough(name, &[host], &[backend]))
            .collect();
        validate_all(Path::new("t"), &specs, "route", &ControlLimits::default())
            .unwrap()
            .into_iter()
            .map(|r| (r, Source::File))
            .collect()
    }

    fn opts() -> ApplyOptions<'static> {
        ApplyOptions::new(None)
    }

    #[test]
    fn unchanged_routes_keep_their_entry_and_others_close() {
        let router = Router::new(Snapshot::default());
        let three = routes(&[
            ("a", "a.test", "127.0.0.1:1"),
            ("b", "b.test", "127.0.0.1:2"),
            ("c", "c.test", "127.0.0.1:3"),
        ]);
        assert_eq!(apply(&router, three, opts()).unwrap().added, 3);
        let before = router.load_full();
        let (ea, eb, ec) = (
            Arc::clone(before.get("a").unwrap()),
            Arc::clone(before.get("b").unwrap()),
            Arc::clone(before.get("c").unwrap()),
        );
        let next = routes(&[
            ("a", "a.test", "127.0.0.1:1"),
            ("b", "b.test", "127.0.0.1:9"),
            ("d", "d.test", "127.0.0.1:4"),
        ]);
        let a = apply(&router, next, opts()).unwrap();
        assert_eq!(
            a,
            Applied {
                added: 1,
                changed: 1,
                removed: 1,
                unchanged: 1,
                expired: 0
            }
        );
        let now = router.load_full();
        assert!(Arc::ptr_eq(now.get("a").unwrap(), &ea));
        assert!(
            !ea.closer().is_cancelled(),
            "unchanged route must not be disturbed"
        );
        assert!(
            eb.closer().is_cancelled(),
            "redeployed route's old connections close"
        );
        assert!(
            ec.closer().is_cancelled(),
            "removed route's connections close"
        );
        assert!(now.lookup("c.test").is_none());
    }

    #[test]
    fn keep_policy_leaves_old_connections_until_removal() {
        let router = Router::new(Snapshot::default());
        apply(&router, routes(&[("a", "a.test", "127.0.0.1:1")]), opts()).unwrap();
        let first = Arc::clone(router.load().get("a").unwrap());
        let keep = ApplyOptions {
            on_change: OnChange::Keep,
            ..opts()
        };
        apply(&router, routes(&[("a", "a.test", "127.0.0.1:2")]), keep).unwrap();
        assert!(!first.closer().is_cancelled());
        apply(&router, vec![], keep).unwrap();
        assert!(
            first.closer().is_cancelled(),
            "removal closes kept connections too"
        );
    }

    #[test]
    fn expired_routes_are_left_out() {
        let router = Router::new(Snapshot::default());
        let mut rs = routes(&[
            ("a", "a.test", "127.0.0.1:1"),
            ("b", "b.test", "127.0.0.1:2"),
        ]);
        rs[0].0.expires_at = Some(Utc::now() - chrono::Duration::seconds(1));
        let later = Utc::now() + chrono::Duration::hours(1);
        rs[1].0.expires_at = Some(later);
        let a = apply(&router, rs, opts()).unwrap();
        assert_eq!((a.added, a.expired), (1, 1));
        assert!(router.load().lookup("a.test").is_none());
        assert_eq!(next_expiry(&router.load()), Some(later));
    }

    #[test]
    fn bad_no_sni_route_changes_nothing() {
        let router = Router::new(Snapshot::default());
        apply(&router, routes(&[("a", "a.test", "127.0.0.1:1")]), opts()).unwrap();
        let e = Arc::clone(router.load().get("a").unwrap());
        assert!(apply(&router, vec![], ApplyOptions::new(Some("a"))).is_err());
        assert!(router.load().get("a").is_some());
        assert!(!e.closer().is_cancelled());
    }
}
