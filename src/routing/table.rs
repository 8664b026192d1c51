//! The routing snapshot: one immutable value, ranked at build time so that a
//! lookup is at most two hash probes whatever the number of routes.

use std::sync::{Arc, OnceLock};

use arc_swap::{ArcSwap, Guard};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::closer::Closer;

use super::load::{Refused, RouteLoad};
use super::route::{HostPattern, Route};
use crate::config::route_limits::Effective;
use crate::metrics::{Metrics, RouteMetrics};
use crate::tls::terminate::{Sessions, Termination};

/// Which source a live route came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The routes file.
    File,
    /// The admin API (it overrides a file route of the same name).
    Api,
    /// Derived from an app record (`crate::apps`); the route's `app` says
    /// which.
    App,
    /// The etcd store several instances share (`[etcd]`).
    Etcd,
}

/// A route as it lives in the table, shared with the connections using it.
///
/// A reload that leaves a route's definition unchanged carries the same
/// `Arc<RouteEntry>` into the next snapshot, so its connections are never
/// disturbed; a route that goes away (removal, expiry, redeploy) has its
/// `closer` cancelled, which is how its open connections learn to close.
#[derive(Debug)]
pub struct RouteEntry {
    pub route: Route,
    pub source: Source,
    closer: Arc<Closer>,
    /// Closers of earlier definitions of this route whose connections were
    /// kept across a change (`reload.on_change = "keep"`, or a move between
    /// sources): they close with this one.
    inherited: Vec<Arc<Closer>>,
    /// Open connections and the new-connection bucket, shared with the
    /// entries this one succeeds.
    load: Arc<RouteLoad>,
    /// Metric handles, resolved on the route's first connection (no
    /// series exist for a route that carried no traffic). Boxed: a
    /// route's handles are a few hundred bytes, and most of a million
    /// routes are idle at any time.
    metrics: OnceLock<Box<RouteMetrics>>,
}

impl RouteEntry {
    /// `parent`: the router's [`Router::closers`]; the entry's closer is its
    /// child, so cancelling the root closes every route's connections.
    pub fn new(route: Route, source: Source, parent: &Closer) -> Arc<Self> {
        Arc::new(Self {
            route,
            source,
            closer: Arc::new(parent.child()),
            inherited: Vec::new(),
            load: Arc::default(),
            metrics: OnceLock::new(),
        })
    }

    /// An entry that takes over `old`'s connections: closing it closes
    /// them too, and they count among its open connections (so a grace
    /// given at its removal is not skipped as if it had none).
    pub fn successor(route: Route, source: Source, parent: &Closer, old: &RouteEntry) -> Arc<Self> {
        Arc::new(Self {
            route,
            source,
            closer: Arc::new(parent.child()),
            inherited: old.all_closers(),
            load: Arc::clone(&old.load),
            metrics: OnceLock::new(),
        })
    }

    /// This route's metric handles (label lookups happen once per entry).
    pub fn metrics(&self, m: &Metrics) -> &RouteMetrics {
        self.metrics
            .get_or_init(|| Box::new(m.for_route(&self.route.name, self.route.mode)))
    }

    /// Cancelled when the route's connections must close.
    pub fn closer(&self) -> &CancellationToken {
        self.closer.token()
    }

    /// What a connection on this route waits on ([`Closing`]).
    pub fn closing_closer(&self) -> &Closer {
        &self.closer
    }

    /// This entry's closer and the ones it inherited, for a successor.
    pub fn all_closers(&self) -> Vec<Arc<Closer>> {
        let mut v = self.inherited.clone();
        v.push(Arc::clone(&self.closer));
        v
    }

    /// Tells every open connection on this route to close.
    pub fn close_connections(&self) {
        self.closer.close();
        for c in &self.inherited {
            c.close();
        }
    }

    /// Connections currently relayed on this route.
    pub fn open_connections(&self) -> usize {
        self.load.open()
    }

    /// Counts one open connection until the guard drops; held by ownership so
    /// the count cannot drift on any return path.
    pub fn track(self: &Arc<Self>) -> OpenGuard {
        self.load.enter();
        OpenGuard(Arc::clone(self))
    }

    /// [`RouteEntry::track`] if the route's `limits` admit one more
    /// connection at `now` (its cap, then its rate), else why not.
    pub fn admit(
        self: &Arc<Self>,
        limits: &Effective,
        now: tokio::time::Instant,
    ) -> Result<OpenGuard, Refused> {
        self.load.try_enter(limits, now)?;
        Ok(OpenGuard(Arc::clone(self)))
    }
}

/// Decrements a route's open-connection count on drop.
#[derive(Debug)]
pub struct OpenGuard(Arc<RouteEntry>);

impl OpenGuard {
    /// The route this connection is counted on.
    pub fn entry(&self) -> &Arc<RouteEntry> {
        &self.0
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.load.leave();
    }
}

/// A persistent hash map: cloning it is O(1) and an insert copies only the
/// path to its leaf, so the next snapshot shares every untouched node with
/// the live one.
type HostMap = imbl::GenericHashMap<
    Box<str>,
    Arc<RouteEntry>,
    foldhash::fast::RandomState,
    imbl::shared_ptr::DefaultSharedPtr,
>;

/// One immutable routing table. Its maps are persistent (`imbl`): a delta
/// ([`Snapshot::insert`], [`Snapshot::remove`] on a clone) costs
/// O(hosts of the change × log n) and leaves the snapshot it came from
/// intact, so a change of one route never rebuilds the table.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// By route name, ordered: the admin listing comes out sorted.
    by_name: imbl::OrdMap<Box<str>, Arc<RouteEntry>>,
    exact: HostMap,
    /// Keyed by the suffix after `*.`.
    wildcard: HostMap,
    /// Every route that has an expiry, soonest first: the next deadline
    /// without a scan of the table.
    expiries: imbl::OrdSet<(DateTime<Utc>, Box<str>)>,
    /// The route hellos without SNI go to, by name, resolved again after
    /// every delta.
    no_sni_name: Option<Box<str>>,
    no_sni: Option<Arc<RouteEntry>>,
    /// Certificates and TLS server configs for the terminate routes, swapped
    /// with the routes they serve.
    tls: Arc<Termination>,
}

impl Snapshot {
    /// Builds the table. Host conflicts were rejected by validation; should one
    /// slip through, the first route keeps the host (debug builds assert).
    /// Fails only when `no_sni_route` names no route.
    pub fn build(routes: Vec<Arc<RouteEntry>>, no_sni_route: Option<&str>) -> Result<Self, String> {
        let mut snap = Snapshot {
            no_sni_name: no_sni_route.map(Into::into),
            ..Snapshot::default()
        };
        for entry in routes {
            // Validation refuses a name listed twice; the first keeps it.
            if snap.by_name.contains_key(entry.route.name.as_str()) {
                continue;
            }
            snap.insert(entry);
        }
        snap.resolve_no_sni()?;
        Ok(snap)
    }

    /// Puts `entry` in, replacing the route of the same name. Its hosts
    /// must be free or the replaced route's (validation checked that);
    /// should one be claimed by another route, that route keeps it (debug
    /// builds assert). Call [`Snapshot::resolve_no_sni`] once done.
    pub fn insert(&mut self, entry: Arc<RouteEntry>) -> Option<Arc<RouteEntry>> {
        let old = self.remove(&entry.route.name);
        for h in &entry.route.hosts {
            let (map, key) = match h {
                HostPattern::Exact(n) => (&mut self.exact, n),
                HostPattern::Wildcard(s) => (&mut self.wildcard, s),
            };
            match map.get(key.as_str()) {
                Some(o) => debug_assert!(
                    Arc::ptr_eq(o, &entry),
                    "host {h} claimed by {} and {}; validation should refuse",
                    o.route.name,
                    entry.route.name
                ),
                None => {
                    map.insert(key.as_str().into(), Arc::clone(&entry));
                }
            }
        }
        if let Some(t) = entry.route.expires_at {
            self.expiries.insert((t, entry.route.name.as_str().into()));
        }
        self.by_name.insert(entry.route.name.as_str().into(), entry);
        old
    }

    /// Takes the route named `name` out, with its hosts and its expiry.
    pub fn remove(&mut self, name: &str) -> Option<Arc<RouteEntry>> {
        let old = self.by_name.remove(name)?;
        for h in &old.route.hosts {
            let (map, key) = match h {
                HostPattern::Exact(n) => (&mut self.exact, n),
                HostPattern::Wildcard(s) => (&mut self.wildcard, s),
            };
            if map.get(key.as_str()).is_some_and(|e| Arc::ptr_eq(e, &old)) {
                map.remove(key.as_str());
            }
        }
        if let Some(t) = old.route.expires_at {
            self.expiries.remove(&(t, old.route.name.as_str().into()));
        }
        Some(old)
    }

    /// Points the no-SNI route at the live entry of its name; fails when
    /// that name is not (or no longer) in the table.
    pub fn resolve_no_sni(&mut self) -> Result<(), String> {
        self.no_sni = match &self.no_sni_name {
            None => None,
            Some(name) => match self.by_name.get(name) {
                Some(e) => Some(Arc::clone(e)),
                None => return Err(format!("no_sni_route `{name}` names no route")),
            },
        };
        Ok(())
    }

    /// The route for a normalised SNI (lowercase, no trailing dot, as the
    /// ClientHello parser gives it): an exact name first, then the wildcard
    /// for the name minus its first label. Certificate-style wildcards match
    /// one label only, so there is exactly one wildcard candidate and no
    /// ranking is left to do at lookup time.
    pub fn lookup(&self, sni: &str) -> Option<&Arc<RouteEntry>> {
        if let Some(e) = self.exact.get(sni) {
            return Some(e);
        }
        let (_, suffix) = sni.split_once('.')?;
        self.wildcard.get(suffix)
    }

    /// The route that claims `host` as written (exact, or the same
    /// wildcard): the live host index a delta is checked against.
    pub fn claimant(&self, host: &HostPattern) -> Option<&Arc<RouteEntry>> {
        match host {
            HostPattern::Exact(n) => self.exact.get(n.as_str()),
            HostPattern::Wildcard(s) => self.wildcard.get(s.as_str()),
        }
    }

    /// The route for hellos without SNI, if one is configured.
    pub fn no_sni_route(&self) -> Option<&Arc<RouteEntry>> {
        self.no_sni.as_ref()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<RouteEntry>> {
        self.by_name.get(name)
    }

    /// Every live route, by name.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<RouteEntry>> + '_ {
        self.by_name.values()
    }

    /// Sets the scrape-time gauges of what this table holds: each route,
    /// and each platform certificate's expiry.
    pub fn scrape(&self, s: &crate::metrics::Scrape) {
        for e in self.routes() {
            let r = &e.route;
            s.route(
                &r.name,
                r.mode,
                e.open_connections(),
                r.expires_at.map(|t| t.timestamp()),
            );
        }
        for c in self.termination().certs().certs() {
            s.certificate(&c.label, c.not_after.timestamp());
        }
    }

    /// The soonest expiry among the live routes, and whose it is.
    pub fn next_expiry(&self) -> Option<(DateTime<Utc>, &str)> {
        self.expiries.get_min().map(|(t, n)| (*t, &**n))
    }

    /// The routes whose expiry is at or before `now`, soonest first.
    pub fn expired_by(&self, now: DateTime<Utc>) -> impl Iterator<Item = &str> + '_ {
        self.expiries
            .iter()
            .take_while(move |(t, _)| *t <= now)
            .map(|(_, n)| &**n)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Sets the termination state; done once, before the snapshot goes live.
    pub fn with_termination(mut self, tls: Termination) -> Self {
        self.tls = Arc::new(tls);
        self
    }

    pub fn termination(&self) -> &Termination {
        &self.tls
    }

    /// The termination state for a connection on a terminate route of this
    /// snapshot (one count: its configs and certificates stay with the
    /// routes they were built for); `None` for passthrough routes.
    pub fn termination_for(&self, route: &Route) -> Option<Arc<Termination>> {
        route.terminate.as_ref()?;
        Some(Arc::clone(&self.tls))
    }
}

/// The live table: one `ArcSwap`, so lookups never lock and a reload is one
/// atomic swap.
#[derive(Debug)]
pub struct Router {
    current: ArcSwap<Snapshot>,
    /// Parent of every entry's closer. A connection then waits on one
    /// token, its route's, for both reasons to close (its route went away,
    /// or the shutdown grace ran out), which keeps an idle connection one
    /// waiter smaller than waiting on two.
    closers: Arc<Closer>,
    /// TLS resumption state shared by every snapshot's server configs, so
    /// sessions survive reloads.
    sessions: Sessions,
}

impl Router {
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(snapshot),
            closers: Arc::new(Closer::new()),
            sessions: Sessions::new(),
        }
    }

    /// Cancelling this closes every connection on every route, including
    /// routes that have left the table but still have connections.
    pub fn closers(&self) -> &Arc<Closer> {
        &self.closers
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The current snapshot; cheap, lock-free, meant to be held briefly.
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`, for longer holds.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Installs `next` and returns the snapshot it replaced.
    pub fn swap(&self, next: Snapshot) -> Arc<Snapshot> {
        self.current.swap(Arc::new(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routes::{validate_all, RouteSpec};
    use std::path::Path;

    fn table(routes: &[(&str, &[&str])]) -> Snapshot {
        let specs: Vec<RouteSpec> = routes
            .iter()
            .map(|(name, hosts)| RouteSpec::passthrough(name, hosts, &["127.0.0.1:1"]))
            .collect();
        let routes = validate_all(
            Path::new("t"),
            &specs,
            "route",
            &crate::config::ControlLimits::default(),
        )
        .unwrap();
        Snapshot::build(
            routes
                .into_iter()
                .map(|r| RouteEntry::new(r, Source::File, &Closer::new()))
                .collect(),
            None,
        )
        .unwrap()
    }

    fn hit<'a>(s: &'a Snapshot, sni: &str) -> Option<&'a str> {
        s.lookup(sni).map(|e| e.route.name.as_str())
    }

    #[test]
    fn exact_beats_wildcard_and_wildcard_is_one_label() {
        let s = table(&[
            ("wild", &["*.apps.example.com"]),
            ("exact", &["special.apps.example.com"]),
            ("deeper", &["*.eu.apps.example.com"]),
        ]);
        assert_eq!(hit(&s, "special.apps.example.com"), Some("exact"));
        assert_eq!(hit(&s, "other.apps.example.com"), Some("wild"));
        assert_eq!(hit(&s, "x.eu.apps.example.com"), Some("deeper"));
        // One label only: two extra labels match nothing, nor does the bare suffix.
        assert_eq!(hit(&s, "a.b.apps.example.com"), None);
        assert_eq!(hit(&s, "apps.example.com"), None);
        assert_eq!(hit(&s, "com"), None);
        assert_eq!(hit(&s, ""), None);
    }

    #[test]
    fn no_sni_route_must_exist() {
        let s = table(&[("a", &["a.example.com"])]);
        let routes: Vec<_> = s.routes().cloned().collect();
        assert!(Snapshot::build(routes.clone(), Some("nope")).is_err());
        let s = Snapshot::build(routes, Some("a")).unwrap();
        assert_eq!(s.no_sni_route().unwrap().route.name, "a");
        assert_eq!(s.get("a").unwrap().route.name, "a");
    }

    #[test]
    fn open_guard_counts_by_ownership() {
        let s = table(&[("a", &["a.example.com"])]);
        let e = s.get("a").unwrap();
        let g1 = e.track();
        let g2 = e.track();
        assert_eq!(e.open_connections(), 2);
        drop(g1);
        drop(g2);
        assert_eq!(e.open_connections(), 0);
    }

    #[test]
    fn swap_replaces_atomically() {
        let router = Router::new(table(&[("a", &["a.example.com"])]));
        assert_eq!(
            router.load().lookup("a.example.com").unwrap().route.name,
            "a"
        );
        let old = router.swap(table(&[("b", &["a.example.com"])]));
        assert_eq!(old.len(), 1);
        assert_eq!(
            router.load().lookup("a.example.com").unwrap().route.name,
            "b"
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::config::routes::{validate_all, RouteSpec};
    use crate::host::{normalize_host, parse_host_pattern};
    use proptest::prelude::*;
    use std::path::Path;

    fn label() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?"
    }

    fn host(min: usize, max: usize) -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(label(), min..=max)
    }

    fn snapshot(hosts: &[(&str, String)]) -> Snapshot {
        let specs: Vec<RouteSpec> = hosts
            .iter()
            .map(|(name, h)| RouteSpec::passthrough(name, &[h.as_str()], &["127.0.0.1:1"]))
            .collect();
        let routes = validate_all(
            Path::new("p"),
            &specs,
            "route",
            &crate::config::ControlLimits::default(),
        )
        .unwrap();
        Snapshot::build(
            routes
                .into_iter()
                .map(|r| RouteEntry::new(r, Source::File, &Closer::new()))
                .collect(),
            None,
        )
        .unwrap()
    }

    proptest! {
        /// Case and one trailing dot never change which route a name hits,
        /// on the route's side or the client's.
        #[test]
        fn normalisation(labels in host(2, 5), flip in any::<u64>(), dot in any::<bool>()) {
            let name = labels.join(".");
            let shout: String = name
                .chars()
                .enumerate()
                .map(|(i, c)| if flip >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c })
                .collect();
            let written = if dot { format!("{shout}.") } else { shout.clone() };
            let snap = snapshot(&[("r", written)]);
            let asked = normalize_host(&format!("{shout}{}", if dot { "" } else { "." }));
            prop_assert_eq!(snap.lookup(&asked).map(|e| e.route.name.as_str()), Some("r"));
            prop_assert_eq!(parse_host_pattern(&name).unwrap(), HostPattern::Exact(name.to_ascii_lowercase()));
        }

        /// Exact beats wildcard; a wildcard matches exactly one more label.
        #[test]
        fn wildcard_ranking(suffix in host(1, 4), first in label(), extra in host(0, 2), with_exact in any::<bool>()) {
            let suffix = suffix.join(".").to_ascii_lowercase();
            let mut labels = extra.iter().map(|l| l.to_ascii_lowercase()).collect::<Vec<_>>();
            labels.push(first.to_ascii_lowercase());
            let asked = format!("{}.{suffix}", labels.join("."));
            let mut routes = vec![("wild", format!("*.{suffix}"))];
            if with_exact {
                routes.push(("exact", asked.clone()));
            }
            let snap = snapshot(&routes);
            let got = snap.lookup(&asked).map(|e| e.route.name.as_str());
            let want = if with_exact {
                Some("exact")
            } else if labels.len() == 1 {
                Some("wild")
            } else {
                None
            };
            prop_assert_eq!(got, want);
            // The bare suffix is never covered by its own wildcard.
            prop_assert!(snap.lookup(&suffix).is_none());
        }
    }
}
