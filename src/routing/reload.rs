//! Applying a new, already validated route set to the live table: one build,
//! one swap, then the routes that left (or changed) have their connections
//! told to close. Unchanged routes keep their entry, so their connections
//! never notice the reload.

use std::sync::Arc;

use super::route::Route;
use super::table::{RouteEntry, Router, Snapshot};

/// What a reload did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub unchanged: usize,
}

/// Swaps in `routes`. Fails (changing nothing) only if `no_sni_route` names
/// no route in the new set.
pub fn apply(
    router: &Router,
    routes: Vec<Route>,
    no_sni_route: Option<&str>,
) -> Result<Applied, String> {
    let old = router.load_full();
    let mut applied = Applied::default();
    let mut entries = Vec::with_capacity(routes.len());
    for r in routes {
        match old.get(&r.name) {
            Some(e) if e.route == r => {
                applied.unchanged += 1;
                entries.push(Arc::clone(e));
            }
            Some(_) => {
                applied.changed += 1;
                entries.push(RouteEntry::new(r));
            }
            None => {
                applied.added += 1;
                entries.push(RouteEntry::new(r));
            }
        }
    }
    let next = Snapshot::build(entries, no_sni_route)?;
    // Entries of the old table that did not carry over: removed or changed.
    let retired: Vec<Arc<RouteEntry>> = old
        .routes()
        .iter()
        .filter(|e| !next.get(&e.route.name).is_some_and(|n| Arc::ptr_eq(n, e)))
        .cloned()
        .collect();
    applied.removed = old
        .routes()
        .iter()
        .filter(|e| next.get(&e.route.name).is_none())
        .count();
    router.swap(next);
    // After the swap no new connection can pick these up.
    for e in retired {
        e.close_connections();
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routes::{validate_all, RouteSpec};
    use std::path::Path;

    fn routes(list: &[(&str, &str, &str)]) -> Vec<Route> {
        let specs: Vec<RouteSpec> = list
            .iter()
            .map(|(name, host, backend)| RouteSpec {
                name: name.to_string(),
                hosts: vec![host.to_string()],
                mode: "passthrough".into(),
                backends: vec![backend.to_string()],
                expires_at: None,
                app: None,
            })
            .collect();
        validate_all(Path::new("t"), &specs, "route").unwrap()
    }

    #[test]
    fn unchanged_routes_keep_their_entry_and_others_close() {
        let router = Router::new(Snapshot::default());
        let a = apply(
            &router,
            routes(&[
                ("a", "a.test", "127.0.0.1:1"),
                ("b", "b.test", "127.0.0.1:2"),
                ("c", "c.test", "127.0.0.1:3"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(a.added, 3);
        let before = router.load_full();
        let (ea, eb, ec) = (
            Arc::clone(before.get("a").unwrap()),
            Arc::clone(before.get("b").unwrap()),
            Arc::clone(before.get("c").unwrap()),
        );
        let a = apply(
            &router,
            routes(&[
                ("a", "a.test", "127.0.0.1:1"),
                ("b", "b.test", "127.0.0.1:9"),
                ("d", "d.test", "127.0.0.1:4"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(
            a,
            Applied {
                added: 1,
                changed: 1,
                removed: 1,
                unchanged: 1
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
    fn bad_no_sni_route_changes_nothing() {
        let router = Router::new(Snapshot::default());
        apply(&router, routes(&[("a", "a.test", "127.0.0.1:1")]), None).unwrap();
        let e = Arc::clone(router.load().get("a").unwrap());
        assert!(apply(&router, vec![], Some("a")).is_err());
        assert!(router.load().get("a").is_some());
        assert!(!e.closer().is_cancelled());
    }
}
