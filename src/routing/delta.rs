//! Applying one change to the live table as a delta: the next snapshot is
//! the live one (cloned in O(1), its maps persistent) with the changed
//! routes taken out and put in, so the cost is the change's, not the
//! table's. Unchanged routes keep their `Arc<RouteEntry>`, and with it
//! their closers and open counts; the change goes live in one swap, as a
//! full rebuild (`reload::apply`) does.

use std::sync::Arc;

use super::reload::{next_entry, retire, warn_if_fresh_insecure, Applied, ApplyOptions};
use super::route::Route;
use super::table::{RouteEntry, Router};

/// What changed: routes to put (replacing those of their names) and
/// names to take out. Validated by the caller against the live host index
/// ([`super::table::Snapshot::claimant`]).
#[derive(Debug, Default)]
pub struct Delta {
    pub put: Vec<(Route, super::table::Source)>,
    pub remove: Vec<String>,
}

/// Patches the live table with `delta` and swaps once. Fails (changing
/// nothing) only if the no-SNI route would be left without its route.
/// `opts.certs` is ignored: certificates change with full reloads only.
pub fn patch(router: &Router, delta: Delta, opts: ApplyOptions<'_>) -> Result<Applied, String> {
    let old = router.load_full();
    let mut next = (*old).clone();
    let mut applied = Applied::default();
    let mut retired: Vec<Arc<RouteEntry>> = Vec::new();
    let mut taken_out: Vec<Arc<RouteEntry>> = Vec::new();
    for name in &delta.remove {
        if let Some(e) = next.remove(name) {
            applied.removed += 1;
            taken_out.push(Arc::clone(&e));
            retired.push(e);
        }
    }
    let mut entries = Vec::with_capacity(delta.put.len());
    for (r, source) in delta.put {
        // Out first: a put's hosts may move between the routes it names.
        let live = next.remove(&r.name);
        taken_out.extend(live.iter().cloned());
        if r.expired_at(opts.now) {
            applied.expired += 1;
            if let Some(e) = live {
                applied.removed += 1;
                retired.push(e);
            }
            continue;
        }
        let e = next_entry(
            router,
            live.as_ref(),
            r,
            source,
            opts.on_change,
            &mut applied,
            &mut retired,
        );
        entries.push(e);
    }
    // Every entry taken out of the table (retired, or replaced by an entry
    // in `entries`, maybe itself) leaves the certificates' tenant counts,
    // every entry put in joins them.
    let tls = next.termination().patched(
        router.sessions(),
        taken_out.iter().map(|e| &e.route),
        entries.iter().map(|e| &e.route),
    );
    for e in entries {
        warn_if_fresh_insecure(&old, &e);
        next.insert(e);
    }
    next.resolve_no_sni()?;
    next = next.with_termination(tls);
    router.swap(next);
    // After the swap no new connection can pick these up.
    for e in retired {
        retire(e, opts.close_grace);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routes::{validate_all, RouteSpec};
    use crate::config::ControlLimits;
    use crate::routing::reload::apply;
    use crate::routing::table::{Snapshot, Source};
    use std::path::Path;

    fn route(name: &str, hosts: &[&str], backend: &str) -> Route {
        let spec = RouteSpec::passthrough(name, hosts, &[backend]);
        validate_all(Path::new("t"), &[spec], "route", &ControlLimits::default())
            .unwrap()
            .remove(0)
    }

    fn live(list: &[(&str, &[&str])]) -> Router {
        let router = Router::new(Snapshot::default());
        let routes = list
            .iter()
            .map(|(n, h)| (route(n, h, "127.0.0.1:1"), Source::File))
            .collect();
        apply(&router, routes, ApplyOptions::new(None)).unwrap();
        router
    }

    fn hit(router: &Router, sni: &str) -> Option<String> {
        router.load().lookup(sni).map(|e| e.route.name.clone())
    }

    #[test]
    fn a_put_leaves_other_entries_untouched_and_closes_the_replaced() {
        let router = live(&[("a", &["a.test"]), ("b", &["b.test", "*.b.test"])]);
        let (a, b) = {
            let s = router.load();
            (
                Arc::clone(s.get("a").unwrap()),
                Arc::clone(s.get("b").unwrap()),
            )
        };
        let put = Delta {
            put: vec![(route("b", &["b.test"], "127.0.0.1:2"), Source::Api)],
            remove: vec![],
        };
        let done = patch(&router, put, ApplyOptions::new(None)).unwrap();
        assert_eq!((done.changed, done.added, done.removed), (1, 0, 0));
        let s = router.load();
        assert!(Arc::ptr_eq(s.get("a").unwrap(), &a), "untouched route kept");
        assert!(!a.closer().is_cancelled());
        assert!(b.closer().is_cancelled(), "the redeployed route closes");
        assert_eq!(hit(&router, "b.test").as_deref(), Some("b"));
        // The wildcard the new definition dropped is free again.
        assert_eq!(hit(&router, "x.b.test"), None);
        assert!(s.claimant(&b.route.hosts[1]).is_none());
    }

    #[test]
    fn a_removal_frees_hosts_and_expiry() {
        let router = live(&[("a", &["a.test"]), ("b", &["b.test"])]);
        let mut r = route("c", &["c.test"], "127.0.0.1:3");
        let at = chrono::Utc::now() + chrono::Duration::hours(1);
        r.expires_at = Some(at);
        let add = Delta {
            put: vec![(r, Source::Api)],
            remove: vec![],
        };
        patch(&router, add, ApplyOptions::new(None)).unwrap();
        assert_eq!(
            router.load().next_expiry().map(|(t, n)| (t, n.to_string())),
            Some((at, "c".into()))
        );
        let c = Arc::clone(router.load().get("c").unwrap());
        let del = Delta {
            put: vec![],
            remove: vec!["c".into(), "missing".into()],
        };
        let done = patch(&router, del, ApplyOptions::new(None)).unwrap();
        assert_eq!(done.removed, 1);
        assert!(c.closer().is_cancelled());
        assert_eq!(hit(&router, "c.test"), None);
        assert_eq!(router.load().next_expiry(), None);
        assert_eq!(router.load().len(), 2);
    }

    #[test]
    fn removing_the_no_sni_route_changes_nothing() {
        let router = Router::new(Snapshot::default());
        let one = vec![(route("a", &["a.test"], "127.0.0.1:1"), Source::File)];
        apply(&router, one, ApplyOptions::new(Some("a"))).unwrap();
        let del = Delta {
            put: vec![],
            remove: vec!["a".into()],
        };
        assert!(patch(&router, del, ApplyOptions::new(Some("a"))).is_err());
        let s = router.load();
        assert!(!s.get("a").unwrap().closer().is_cancelled());
        assert_eq!(s.no_sni_route().unwrap().route.name, "a");
    }

    /// The patched table answers every lookup as a table built from the
    /// same routes would.
    #[test]
    fn patched_equals_rebuilt() {
        let router = live(&[("a", &["a.test", "*.w.test"]), ("b", &["b.test"])]);
        let delta = Delta {
            put: vec![
                (route("a", &["a.test"], "127.0.0.1:1"), Source::Api),
                (
                    route("c", &["*.w.test", "c.test"], "127.0.0.1:1"),
                    Source::Api,
                ),
            ],
            remove: vec!["b".into()],
        };
        patch(&router, delta, ApplyOptions::new(None)).unwrap();
        let rebuilt = live(&[("a", &["a.test"]), ("c", &["*.w.test", "c.test"])]);
        for sni in ["a.test", "b.test", "c.test", "x.w.test", "w.test"] {
            assert_eq!(hit(&router, sni), hit(&rebuilt, sni), "{sni}");
        }
        let names = |r: &Router| {
            r.load()
                .routes()
                .map(|e| e.route.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&router), names(&rebuilt));
    }
}
