//! Who claims each route name and host pattern in a route set being put
//! together: the one uniqueness rule, in one pass of hash probes, for every
//! place that builds a set (`config::routes::check_conflicts`, which `check`,
//! the routes file, the API and the reconciler's merge use, and the etcd
//! fitting, which leaves out what clashes instead of refusing it). A change
//! applied as a delta asks the live table's host index instead
//! (`routing/reconciler/delta.rs`), under the same rule and wording.
//!
//! Claims borrow what they can (`Cow`): a whole-set check of a million
//! routes allocates nothing per host; a caller that must let go of its
//! routes while it claims (the etcd fitting moves them into the set it
//! keeps) claims owned copies.

use std::borrow::Cow;
use std::collections::HashMap;

use super::route::{HostPattern, Route};

/// A clash of a route with what is already claimed.
#[derive(Debug, PartialEq, Eq)]
pub enum Clash<'c, O> {
    /// Its name is already used by `by`.
    Name { by: &'c O },
    /// Its host `host` is already claimed by `by`.
    Host { host: &'c HostPattern, by: &'c O },
}

/// Names and hosts claimed so far, each with its claimant `O` (an index
/// into a list, a route name: whatever the caller names routes by).
#[derive(Debug)]
pub struct Claims<'a, O> {
    names: HashMap<Cow<'a, str>, O>,
    hosts: HashMap<Cow<'a, HostPattern>, O>,
}

impl<O> Default for Claims<'_, O> {
    fn default() -> Self {
        Self {
            names: HashMap::new(),
            hosts: HashMap::new(),
        }
    }
}

impl<'a, O: Clone> Claims<'a, O> {
    /// Room for `routes` routes of one or two hosts each, so a big set is
    /// not rehashed as it grows.
    pub fn with_capacity(routes: usize) -> Self {
        Self {
            names: HashMap::with_capacity(routes),
            hosts: HashMap::with_capacity(routes),
        }
    }

    /// What `route` clashes with: its name first, then each host in the
    /// route's order.
    pub fn clashes<'c>(&'c self, route: &'c Route) -> impl Iterator<Item = Clash<'c, O>> + 'c {
        let name = self
            .names
            .get(route.name.as_str())
            .map(|by| Clash::Name { by });
        let hosts = route
            .hosts
            .iter()
            .filter_map(|h| self.hosts.get(h).map(|by| Clash::Host { host: h, by }));
        name.into_iter().chain(hosts)
    }

    /// Claims `route`'s name and hosts for `owner`, borrowing them. A name
    /// or host already claimed keeps its first claimant.
    pub fn claim(&mut self, route: &'a Route, owner: O) {
        self.names
            .entry(Cow::Borrowed(route.name.as_str()))
            .or_insert_with(|| owner.clone());
        for h in &route.hosts {
            self.hosts
                .entry(Cow::Borrowed(h))
                .or_insert_with(|| owner.clone());
        }
    }

    /// [`Claims::claim`] with owned copies, for a route the caller is
    /// about to move.
    pub fn claim_owned(&mut self, route: &Route, owner: O) {
        self.names
            .entry(Cow::Owned(route.name.clone()))
            .or_insert_with(|| owner.clone());
        for h in &route.hosts {
            self.hosts
                .entry(Cow::Owned(h.clone()))
                .or_insert_with(|| owner.clone());
        }
    }
}

/// The words for a host claimed twice, the same wherever it is found.
pub fn host_taken(host: &HostPattern, of: &str, by: &str) -> String {
    format!("host `{host}` of route `{of}` is already claimed by route `{by}`")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routes::{validate_one, RouteSpec};
    use crate::config::ControlLimits;

    fn route(name: &str, hosts: &[&str]) -> Route {
        let spec = RouteSpec::passthrough(name, hosts, &["10.0.0.1:443"]);
        validate_one(
            std::path::Path::new("t"),
            name,
            &spec,
            &ControlLimits::default(),
        )
        .unwrap()
    }

    #[test]
    fn the_first_claimant_keeps_a_name_and_a_host() {
        let a = route("a", &["x.example.com", "*.w.example.com"]);
        let b = route("b", &["X.example.com."]);
        let a_again = route("a", &["y.example.com"]);
        let mut claims = Claims::default();
        assert_eq!(claims.clashes(&a).count(), 0);
        claims.claim(&a, 0usize);
        // Hosts are compared normalised: `X.example.com.` is `x.example.com`.
        let found: Vec<_> = claims.clashes(&b).collect();
        assert_eq!(
            found,
            vec![Clash::Host {
                host: &b.hosts[0],
                by: &0
            }]
        );
        claims.claim(&b, 1);
        assert_eq!(
            claims.clashes(&a_again).collect::<Vec<_>>(),
            vec![Clash::Name { by: &0 }]
        );
        // The wildcard is its own pattern: a name under it is no clash.
        assert_eq!(claims.clashes(&route("c", &["v.w.example.com"])).count(), 0);
    }

    #[test]
    fn owned_claims_outlive_the_route() {
        let mut claims: Claims<'_, String> = Claims::default();
        {
            let a = route("a", &["x.example.com"]);
            claims.claim_owned(&a, "a".into());
        }
        let b = route("b", &["x.example.com"]);
        let by: Vec<String> = claims
            .clashes(&b)
            .map(|c| match c {
                Clash::Host { by, .. } | Clash::Name { by } => by.clone(),
            })
            .collect();
        assert_eq!(by, vec!["a".to_string()]);
    }
}
