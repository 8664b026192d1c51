//! A route as written (TOML in the routes file, JSON in the admin API and
//! etcd), before validation turns it into a [`crate::routing::Route`]. Plain
//! serde data: it imports nothing from the crate, so the validated route
//! can keep its spec (the API echoes it) without routing depending on
//! config's validation.

use serde::{Deserialize, Serialize};

/// One app's route as written by an operator or a platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub name: String,
    pub hosts: Vec<String>,
    #[serde(default = "default_mode")]
    pub mode: String,
    pub backends: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// `"v2"`: send a PROXY protocol v2 header to the backend first. Off by
    /// default: enclaves in the zero-trust scenario cannot parse one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<String>,
    /// Grace before this route's connections close when it expires or is
    /// removed (e.g. `30s`); absent: the global `reload.close_grace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_grace: Option<String>,
    /// Terminate only: the ALPN protocols offered to clients, in order of
    /// preference; absent: `["h2", "http/1.1"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn: Option<Vec<String>>,
    /// Terminate only: how the backends are reached (`[route.upstream]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<AppMeta>,
    /// Internal networks (CIDR or addresses, e.g. `["127.0.0.0/8"]`) this
    /// route's backend names may resolve into, beside `dns.allow_internal`.
    /// A list rather than a yes/no: a route that needs a loopback sidecar
    /// should not also reach the cloud metadata address on link-local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_internal_backends: Option<Vec<String>>,
    /// This route's connection cap and new-connection rate
    /// (`[route.limits]`); absent fields take `[limits]`'s defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<RouteLimitsSpec>,
}

impl RouteSpec {
    /// A passthrough route with no expiry or metadata.
    pub fn passthrough<B: ToString>(name: &str, hosts: &[&str], backends: &[B]) -> Self {
        Self {
            name: name.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            mode: default_mode(),
            backends: backends.iter().map(ToString::to_string).collect(),
            expires_at: None,
            proxy_protocol: None,
            close_grace: None,
            alpn: None,
            upstream: None,
            app: None,
            allow_internal_backends: None,
            limits: None,
        }
    }

    /// A terminate route reaching its backends as `upstream` says, with the
    /// default ALPN list.
    pub fn terminate<B: ToString>(
        name: &str,
        hosts: &[&str],
        backends: &[B],
        upstream: UpstreamSpec,
    ) -> Self {
        Self {
            mode: "terminate".into(),
            upstream: Some(upstream),
            ..Self::passthrough(name, hosts, backends)
        }
    }
}

fn default_mode() -> String {
    "passthrough".into()
}

/// `[route.upstream]`: how a terminate route reaches its backends.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    /// TLS to the backend (default), or plain TCP with `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// Verify the backend's chain against the CA certificates in this PEM
    /// file (relative to the routes file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Accept only the backend certificate with this SHA-256 (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_sha256: Option<String>,
    /// Do not check the backend's certificate at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    /// The SNI sent to the backend; default: the client's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
}

/// App metadata carried for operators (logs, API); routing ignores it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
}

/// Route names: 1-128 of letters, digits, `.`, `_` and `-`.
pub(crate) fn valid_route_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A route's own `limits`, as written (`[route.limits]`, `"limits": {...}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteLimitsSpec {
    /// Connections the route may hold at once; 0: no cap for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// New connections a second; 0: no rate limit for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_connections_per_second: Option<u32>,
    /// New connections at once after a quiet spell; unset: twice the
    /// route's own rate, or `limits.route_new_connections_burst`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_connections_burst: Option<u32>,
}

impl RouteLimitsSpec {
    pub fn is_empty(&self) -> bool {
        *self == RouteLimitsSpec::default()
    }
}
