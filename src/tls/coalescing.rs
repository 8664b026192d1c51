//! The shared-certificate rule: no HTTP/2 on a certificate that serves more
//! than one tenant.
//!
//! A browser holding an HTTP/2 connection reuses it for any other host the
//! connection's certificate covers once that host resolves to the same
//! address (RFC 9113 §9.1.1 connection coalescing), and every app behind
//! this ingress resolves to it. The proxy routes by SNI, once per
//! connection, and relays bytes after termination without reading HTTP, so
//! it cannot answer such a request with 421: app B's requests and cookies
//! would reach app A's enclave. Hence h2 is not offered on a certificate
//! that covers hosts of routes with different backends (passthrough routes
//! count too: their browsers coalesce onto the terminated connection just
//! the same). Routes with the same backends are one tenant (one app, two
//! hostnames). Withholding h2 was chosen over reading `:authority` and
//! answering 421 (an HTTP/2 parser in the data path, for every terminated
//! byte) and over an ORIGIN frame (RFC 8336: also needs the proxy to speak
//! HTTP/2, and a client that ignores it still coalesces); one certificate
//! per app gets h2 back, and a route that lists `h2` in its own `alpn`
//! opts in, loudly ([`findings`]).
//!
//! [`CertTenants`] keeps, per certificate, how many routes of each tenant it
//! covers, so a delta updates it in what the changed routes cost, and the
//! per-connection question is one probe ([`CertTenants::shared`]).

use std::collections::HashMap;
use std::fmt;

use super::certs::CertStore;
use crate::routing::route::{Mode, Route};

/// A tenant: the route's backends, as a sorted list.
type Tenant = Vec<String>;

fn tenant(route: &Route) -> Tenant {
    let mut t: Vec<String> = route.backends.iter().map(|b| b.to_string()).collect();
    t.sort_unstable();
    t.dedup();
    t
}

/// The certificates a route's hosts fall under, each once.
fn covering(certs: &CertStore, route: &Route) -> Vec<usize> {
    let mut out: Vec<usize> = route.hosts.iter().flat_map(|h| certs.covering(h)).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Per certificate (by its position in the snapshot's [`CertStore`]), the
/// routes it covers counted by tenant. Persistent maps, so a snapshot's
/// clone for a delta shares them.
#[derive(Debug, Clone, Default)]
pub struct CertTenants {
    per_cert: Vec<imbl::HashMap<Tenant, u32>>,
}

impl CertTenants {
    /// Counts `routes` under `certs`.
    pub fn build<'a>(certs: &CertStore, routes: impl IntoIterator<Item = &'a Route>) -> Self {
        let mut t = Self {
            per_cert: vec![imbl::HashMap::new(); certs.len()],
        };
        for r in routes {
            t.add(certs, r);
        }
        t
    }

    /// Counts one more route.
    pub fn add(&mut self, certs: &CertStore, route: &Route) {
        let cover = covering(certs, route);
        if cover.is_empty() {
            return;
        }
        let key = tenant(route);
        for i in cover {
            if let Some(m) = self.per_cert.get_mut(i) {
                *m.entry(key.clone()).or_insert(0) += 1;
            }
        }
    }

    /// Forgets a route counted by [`CertTenants::add`] under the same store.
    pub fn remove(&mut self, certs: &CertStore, route: &Route) {
        let cover = covering(certs, route);
        if cover.is_empty() {
            return;
        }
        let key = tenant(route);
        for i in cover {
            let Some(m) = self.per_cert.get_mut(i) else {
                continue;
            };
            match m.get(&key).copied() {
                Some(n) if n > 1 => {
                    m.insert(key.clone(), n - 1);
                }
                Some(_) => {
                    m.remove(&key);
                }
                None => debug_assert!(false, "route removed that was never counted"),
            }
        }
    }

    /// Whether certificate `i` covers hosts of more than one tenant.
    pub fn shared(&self, i: usize) -> bool {
        self.per_cert.get(i).is_some_and(|m| m.len() > 1)
    }
}

/// A terminate route on a shared certificate, for `check` and the start
/// logs: which certificate, and (up to [`NAMED`]) the other tenants' routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub route: String,
    pub certificate: String,
    pub others: Vec<String>,
    /// Other routes beyond those named.
    pub more: usize,
    /// The route lists `h2` in its own `alpn`: h2 is offered anyway.
    pub opted_in: bool,
}

/// How many other routes a finding names.
pub const NAMED: usize = 3;

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut others = self
            .others
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        if self.more > 0 {
            others.push_str(&format!(" and {} more", self.more));
        }
        if self.opted_in {
            write!(
                f,
                "route `{}` lists `h2` in its `alpn` although certificate `{}` also serves routes with \
                 other backends ({others}): browsers reuse an HTTP/2 connection for every host the \
                 certificate covers (RFC 9113 §9.1.1), so their requests and cookies can reach this \
                 route's backend; give each app its own certificate",
                self.route, self.certificate
            )
        } else {
            write!(
                f,
                "route `{}`: h2 is not offered, because certificate `{}` also serves routes with other \
                 backends ({others}) and browsers reuse an HTTP/2 connection for every host the \
                 certificate covers (RFC 9113 §9.1.1), which would carry their requests to this \
                 route's backend; clients get HTTP/1.1. One certificate per app gets h2 back \
                 (listing `h2` in the route's `alpn` forces it, unsafely)",
                self.route, self.certificate
            )
        }
    }
}

/// Every terminate route whose client certificates cover another tenant's
/// hosts. Linear in the routes' hosts (plus the findings' names); run by
/// `check` and at start, never per connection.
pub fn findings<'a>(
    certs: &CertStore,
    routes: impl IntoIterator<Item = &'a Route>,
) -> Vec<Finding> {
    // Per certificate: tenant -> the routes of it.
    let mut by_cert: Vec<HashMap<Tenant, Vec<&Route>>> = vec![HashMap::new(); certs.len()];
    for r in routes {
        for i in covering(certs, r) {
            by_cert[i].entry(tenant(r)).or_default().push(r);
        }
    }
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, tenants) in by_cert.iter().enumerate() {
        if tenants.len() < 2 {
            continue;
        }
        for (t, routes) in tenants {
            for r in routes.iter().filter(|r| r.mode == Mode::Terminate) {
                if !seen.insert(r.name.as_str()) {
                    continue;
                }
                let mut others = Vec::new();
                let mut more = 0;
                for r2 in tenants.iter().filter(|(k, _)| *k != t).flat_map(|(_, v)| v) {
                    if others.len() < NAMED {
                        others.push(r2.name.clone());
                    } else {
                        more += 1;
                    }
                }
                others.sort();
                out.push(Finding {
                    route: r.name.clone(),
                    certificate: certs.certs()[i].label.clone(),
                    others,
                    more,
                    opted_in: r.terminate.as_ref().is_some_and(|t| t.h2_opt_in),
                });
            }
        }
    }
    out.sort_by(|a, b| a.route.cmp(&b.route));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routes::{validate_all, RouteSpec};
    use crate::config::terminate::UpstreamSpec;
    use crate::standin::Ca;

    fn route(name: &str, hosts: &[&str], backend: &str, terminate: bool) -> Route {
        let spec = if terminate {
            let up = UpstreamSpec {
                insecure_skip_verify: Some(true),
                ..Default::default()
            };
            RouteSpec::terminate(name, hosts, &[backend], up)
        } else {
            RouteSpec::passthrough(name, hosts, &[backend])
        };
        let limits = crate::config::ControlLimits::default();
        validate_all(std::path::Path::new("t"), &[spec], "route", &limits)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn a_certificate_is_shared_once_it_covers_two_tenants() {
        let ca = Ca::new("t").unwrap();
        let certs = crate::tls::certs::tests::store_for(&ca, &[&["*.apps.test"], &["own.test"]]);
        let a = route("a", &["a.apps.test"], "10.0.0.1:443", true);
        let a2 = route("a-config", &["a-config.apps.test"], "10.0.0.1:443", true);
        let own = route("own", &["own.test"], "10.0.0.9:443", true);
        let mut t = CertTenants::build(&certs, [&a, &a2, &own]);
        assert!(!t.shared(0), "one app, two hostnames: one tenant");
        // A passthrough app under the wildcard is another tenant.
        let b = route("b", &["b.apps.test"], "10.0.0.2:443", false);
        t.add(&certs, &b);
        assert!(t.shared(0) && !t.shared(1));
        assert!(!t.shared(7));
        t.remove(&certs, &b);
        assert!(!t.shared(0));
        // A wildcard route is covered by the same wildcard certificate.
        let w = route("w", &["*.apps.test"], "10.0.0.3:443", true);
        t.add(&certs, &w);
        assert!(t.shared(0));

        let f = findings(&certs, [&a, &a2, &own, &w]);
        let names: Vec<&str> = f.iter().map(|f| f.route.as_str()).collect();
        assert_eq!(names, ["a", "a-config", "w"]);
        assert_eq!(f[2].others, ["a", "a-config"]);
        assert!(
            f[0].to_string().contains("route `a`: h2 is not offered"),
            "{}",
            f[0]
        );
        assert!(f[0].to_string().contains("(`w`)"), "{}", f[0]);
    }
}
