//! A validated route: what one app's hostnames map to. Built only through
//! [`crate::config::routes`], so a `Route` in hand is always well-formed.

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};

use crate::config::routes::RouteSpec;
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

/// A host a route claims, normalised (lowercase, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Exactly this name.
    Exact(String),
    /// `*.suffix`: any name with exactly one more label in front of `suffix`,
    /// as certificate wildcards match. Holds `suffix` without the `*.`.
    Wildcard(String),
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*.{s}"),
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

/// What a terminate route does once the client's handshake is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminate {
    /// Offered to clients, in order of preference; may be empty (no ALPN).
    pub alpn: Vec<Vec<u8>>,
    pub upstream: Upstream,
}

/// A validated route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub name: String,
    pub hosts: Vec<HostPattern>,
    pub mode: Mode,
    /// `Some` exactly when `mode` is [`Mode::Terminate`].
    pub terminate: Option<Terminate>,
    /// Tried in order; the next one when a connect fails.
    pub backends: Vec<Backend>,
    /// From this instant on the route no longer matches.
    pub expires_at: Option<DateTime<Utc>>,
    /// Send a PROXY protocol v2 header to the backend before any byte.
    pub proxy_protocol: bool,
    /// Overrides the global grace before connections close on expiry/removal.
    pub close_grace: Option<std::time::Duration>,
    pub app: Option<AppMeta>,
    /// The spec it was built from, as given, for echoing back in the API.
    pub spec: RouteSpec,
}

impl Route {
    /// Whether the route has expired at `now`.
    pub fn expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }
}
