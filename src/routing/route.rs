//! A validated route: what one app's hostnames map to. Built only through
//! [`crate::config::routes`], so a `Route` in hand is always well-formed.

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};

pub use crate::config::route_spec::AppMeta;
use crate::config::route_spec::RouteSpec;
pub use crate::host::HostPattern;
use crate::tls::upstream::Upstream;

/// How the proxy treats a connection's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Relay the TLS stream untouched: the enclave holds the certificate.
    Passthrough,
    /// Terminate with the platform's certificate, re-encrypt to the enclave.
    Terminate,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Passthrough => "passthrough",
            Mode::Terminate => "terminate",
        }
    }
}

/// Where a backend lives: an IP literal needs no DNS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackendHost {
    Ip(IpAddr),
    Name(String),
}

/// One upstream `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Backend {
    pub host: BackendHost,
    pub port: u16,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            BackendHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            BackendHost::Ip(ip) => write!(f, "{ip}:{}", self.port),
            BackendHost::Name(n) => write!(f, "{n}:{}", self.port),
        }
    }
}

/// What a terminate route does once the client's handshake is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminate {
    /// The protocols a client may get, in order of preference; may be
    /// empty (no ALPN). With a TLS upstream the backend picks among those
    /// the client also offered, and the client gets its pick
    /// (`crate::tls::alpn`); with plain TCP they are offered as is.
    pub alpn: Vec<Vec<u8>>,
    /// The route's own `alpn` lists `h2`: offered even on a certificate
    /// shared with other tenants (`crate::tls::coalescing`), loudly.
    pub h2_opt_in: bool,
    pub upstream: Upstream,
}

impl Terminate {
    /// Whether the client's protocol is learned from the backend's
    /// handshake (a TLS upstream) rather than offered as configured.
    pub fn learns_alpn(&self) -> bool {
        matches!(self.upstream, Upstream::Tls(_))
    }
}

/// A route's overrides, validated; `None` fields take `[limits]`'s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteLimits {
    pub max_connections: Option<usize>,
    pub per_second: Option<u32>,
    pub burst: Option<u32>,
}

/// A validated route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub name: String,
    pub hosts: Vec<HostPattern>,
    pub mode: Mode,
    /// `Some` exactly when `mode` is [`Mode::Terminate`]. Boxed: most
    /// routes are passthrough, and a million of them should not each
    /// carry room for upstream TLS settings.
    pub terminate: Option<Box<Terminate>>,
    /// Tried in order; the next one when a connect fails.
    pub backends: Vec<Backend>,
    /// From this instant on the route no longer matches.
    pub expires_at: Option<DateTime<Utc>>,
    /// Send a PROXY protocol v2 header to the backend before any byte.
    pub proxy_protocol: bool,
    /// Overrides the global grace before connections close on expiry/removal.
    pub close_grace: Option<std::time::Duration>,
    /// Internal networks the backend names may resolve into
    /// (`allow_internal_backends`; `crate::dns::screen`). A boxed slice:
    /// empty on almost every route, and 16 bytes there.
    pub allow_internal: Box<[ipnet::IpNet]>,
    pub app: Option<AppMeta>,
    /// This route's own connection cap and new-connection rate; unset
    /// fields take `[limits]`'s at admission.
    pub limits: RouteLimits,
    /// The spec it was built from, as given, for echoing back in the API.
    pub spec: RouteSpec,
}

impl Route {
    /// Whether `other` does what this route does: the same name, hosts
    /// (already normalised; in any order), mode, terminate settings,
    /// backends (in order: they are tried in order), expiry, PROXY
    /// header and internal allow-list (narrowing it must reach the open
    /// connections too). The spec as written, app metadata, the close
    /// grace and the limits are left out: an edit of only those is
    /// cosmetic, and a reload keeps the route's connections through it.
    /// Limits in particular: a lowered cap refuses new connections until
    /// the route is under it, and closing live ones for it would be the
    /// outage the cap is there to prevent (the successor entry shares the
    /// open count and the rate bucket, so the new limits apply to them at
    /// once).
    pub fn acts_like(&self, other: &Route) -> bool {
        self.name == other.name
            && self.mode == other.mode
            && self.terminate == other.terminate
            && self.backends == other.backends
            && self.expires_at == other.expires_at
            && self.proxy_protocol == other.proxy_protocol
            && self.allow_internal == other.allow_internal
            && same_hosts(&self.hosts, &other.hosts)
    }

    /// Whether the route has expired at `now`.
    pub fn expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }
}

/// The same host patterns in any order. Validation refuses a host listed
/// twice, so equal lengths and one inside the other means equal sets.
fn same_hosts(a: &[HostPattern], b: &[HostPattern]) -> bool {
    a.len() == b.len() && {
        let set: std::collections::HashSet<&HostPattern> = a.iter().collect();
        b.iter().all(|h| set.contains(h))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::routes::{validate_one, RouteSpec};
    use crate::config::ControlLimits;
    use std::path::Path;

    fn route(spec: &RouteSpec) -> super::Route {
        validate_one(Path::new("t"), "t", spec, &ControlLimits::default()).unwrap()
    }

    #[test]
    fn only_what_a_route_does_makes_it_act_differently() {
        let base =
            RouteSpec::passthrough("a", &["a.test", "b.test"], &["127.0.0.1:1", "127.0.0.1:2"]);
        let a = route(&base);
        let mut cosmetic =
            RouteSpec::passthrough("a", &["B.TEST.", "a.Test"], &["127.0.0.1:1", "127.0.0.1:2"]);
        cosmetic.close_grace = Some("5s".into());
        cosmetic.app = Some(Default::default());
        cosmetic.limits = Some(crate::config::route_limits::RouteLimitsSpec {
            max_connections: Some(1),
            new_connections_per_second: Some(2),
            new_connections_burst: Some(3),
        });
        assert!(a.acts_like(&route(&cosmetic)));
        assert_ne!(a, route(&cosmetic), "still a different definition to show");

        let both = ["127.0.0.1:1", "127.0.0.1:2"];
        let mut real = vec![
            RouteSpec::passthrough("a", &["a.test"], &both),
            RouteSpec::passthrough("a", &["a.test", "c.test"], &both),
            RouteSpec::passthrough("a", &["a.test", "b.test"], &["127.0.0.1:2", "127.0.0.1:1"]),
            RouteSpec::passthrough("b", &["a.test", "b.test"], &both),
        ];
        let mut expiring = base.clone();
        expiring.expires_at = Some("2030-01-01T00:00:00Z".into());
        real.push(expiring);
        let mut proxied = base.clone();
        proxied.proxy_protocol = Some("v2".into());
        real.push(proxied);
        let mut internal = base.clone();
        internal.allow_internal_backends = Some(vec!["127.0.0.0/8".into()]);
        real.push(internal);
        for s in &real {
            assert!(!a.acts_like(&route(s)), "{s:?} is a real change");
        }
    }
}
