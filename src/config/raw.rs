//! Raw serde shapes of the static configuration file. Unknown fields are
//! errors, so a typo never silently falls back to a default.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Runtime worker threads; absent means one per core.
    pub workers: Option<usize>,
    /// Routes file, relative to the config file's directory.
    pub routes_file: Option<PathBuf>,
    /// Where the durable state lives (`crate::state`), relative to the
    /// config file's directory; absent: `state/` beside the config file.
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub listener: Vec<RawListener>,
    /// The platform's certificates, for terminate routes.
    #[serde(default)]
    pub certificate: Vec<RawCertificate>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub refusal: RawRefusal,
    #[serde(default)]
    pub dns: RawDns,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub reload: RawReload,
    /// Absent: no admin listener.
    pub admin: Option<super::admin::RawAdmin>,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub health: RawHealth,
    /// The platform's app policy (`crate::config::apps`).
    #[serde(default)]
    pub apps: super::apps::RawApps,
    #[serde(default)]
    pub relay: RawRelay,
    /// Absent: no shared route store (`crate::config::etcd`).
    pub etcd: Option<super::etcd::RawEtcd>,
    #[serde(default)]
    pub upgrade: RawUpgrade,
}

/// `[upgrade]`: the Unix socket through which a running proxy hands its
/// listeners and passthrough connections to a new binary (`crate::upgrade`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpgrade {
    /// Relative to the config file's directory; absent: `upgrade.sock` in
    /// the state directory.
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRelay {
    /// Passthrough relays bulk runs with splice(2) on Linux (zero copy;
    /// small reads are copied either way); false: always copy
    /// through a user-space buffer.
    pub splice: bool,
}

impl Default for RawRelay {
    fn default() -> Self {
        Self { splice: true }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHealth {
    /// How long a backend address whose connect failed is tried last.
    #[serde(with = "humantime_serde")]
    pub failure_cooldown: Duration,
}

impl Default for RawHealth {
    fn default() -> Self {
        Self {
            failure_cooldown: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    /// Label metrics by route; turn off for very large tables.
    pub per_route: bool,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self { per_route: true }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawReload {
    /// Quiet time after the last change on disk before the routes file is re-read.
    #[serde(with = "humantime_serde")]
    pub debounce: Duration,
    /// Watch the routes file for changes (SIGHUP and the API reload it anyway).
    pub watch: bool,
    /// Default grace before an expired or removed route's connections close.
    #[serde(with = "humantime_serde")]
    pub close_grace: Duration,
    /// What a redeploy (a route whose backends or settings changed) does to the
    /// connections still open on the old definition: `close` or `keep`.
    pub on_change: String,
    /// A reconciler that answers no ping for this long is taken as stuck:
    /// `/healthz` fails and the process exits non-zero. It must exceed the
    /// longest change: each still rebuilds the whole table (about 9 s at a
    /// million routes, from 428 ms at 50,000), hence 30 s, not 10.
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
}

impl Default for RawReload {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(200),
            watch: true,
            close_grace: Duration::ZERO,
            on_change: "close".into(),
            stall_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub address: String,
    /// Expect a PROXY protocol header (v1 or v2) from a load balancer in front.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Networks allowed to send that header (CIDR); required with it.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

/// One certificate chain and its private key, PEM files relative to the
/// config file's directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// What metrics and logs call it; default: the cert file's name.
    #[serde(default)]
    pub name: Option<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTimeouts {
    #[serde(with = "humantime_serde")]
    pub client_hello: Duration,
    #[serde(with = "humantime_serde")]
    pub upstream_connect: Duration,
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        Self {
            client_hello: Duration::from_secs(5),
            upstream_connect: Duration::from_secs(3),
            idle: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Unset: 100,000, or fewer if the file descriptors hold fewer.
    pub max_connections: Option<usize>,
    pub max_client_hello_bytes: usize,
    /// Connections one client may hold before its hello is read; 0: no
    /// limit (`max_unrouted_per_ip`, its old name, still read).
    #[serde(alias = "max_unrouted_per_ip")]
    pub max_unrouted_per_client: usize,
    /// Connections one client may hold in all; 0: no limit.
    pub max_connections_per_client: usize,
    /// Prefix lengths that group addresses into one client.
    pub client_ipv4_prefix: u8,
    pub client_ipv6_prefix: u8,
    /// New connections one client may open a second; 0: no limit.
    pub client_new_connections_per_second: u32,
    /// Unset: `crate::config::clients::BURST_SECONDS` of the rate.
    pub client_new_connections_burst: Option<u32>,
    /// Per-route fairness (`crate::config::route_limits`): connections one
    /// route may hold (0: no cap), and its new-connection rate (0: none).
    pub max_connections_per_route: usize,
    pub route_new_connections_per_second: u32,
    pub route_new_connections_burst: Option<u32>,
    /// Caps on route sets (`crate::config::limits`).
    pub max_hosts_per_route: usize,
    pub max_backends_per_route: usize,
    pub max_routes: usize,
}

/// Per-client defaults: room for a large office or a carrier-grade NAT
/// behind one IPv4 address, far from what one client could take from
/// 100,000 slots.
const DEFAULT_UNROUTED: usize = 256;
const DEFAULT_CONNECTIONS: usize = 4096;

/// `limits.client_new_connections_per_second` by default. A browser opens
/// at most six connections to a host for a page (one with HTTP/2), and
/// keeps them alive; an office or a carrier-grade NAT of a few hundred
/// users behind one address, each loading a page every few seconds, stays
/// well under 100 a second. A client looping on connect opens thousands a
/// second: at 100 it costs a proxy that accepts some 10,000 a second about
/// 1% of its handshakes.
const DEFAULT_CLIENT_RATE: u32 = 100;

/// `limits.max_connections_per_route` by default: a tenth of the default
/// `limits.max_connections`, so one flooded app leaves nine tenths to the
/// others, and still more than one enclave serves at once.
pub const DEFAULT_ROUTE_MAX_CONNECTIONS: usize = 10_000;

/// `limits.route_new_connections_per_second` by default: more than one SGX
/// enclave completes TLS handshakes in a second, so no app is held below
/// what its backend can take, while a flood on one route cannot take all
/// of the proxy's accept and handshake time from the others.
pub const DEFAULT_ROUTE_RATE: u32 = 1000;

/// The defaults of `[limits]`, in one place: the schema's. The types built
/// from it (`crate::config::clients`, `crate::config::limits`) read them here.
impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_connections: None,
            max_unrouted_per_client: DEFAULT_UNROUTED,
            max_connections_per_client: DEFAULT_CONNECTIONS,
            client_ipv4_prefix: 32,
            client_ipv6_prefix: 64,
            client_new_connections_per_second: DEFAULT_CLIENT_RATE,
            client_new_connections_burst: None,
            max_connections_per_route: DEFAULT_ROUTE_MAX_CONNECTIONS,
            route_new_connections_per_second: DEFAULT_ROUTE_RATE,
            route_new_connections_burst: None,
            max_client_hello_bytes: 16 * 1024,
            max_hosts_per_route: 100,
            max_backends_per_route: 64,
            max_routes: 1_000_000,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRefusal {
    /// `alert` (default) or `close`.
    pub unknown_sni: Option<String>,
    /// Route that serves hellos without SNI; absent means refuse them.
    pub no_sni_route: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDns {
    /// `ip` or `ip:port`; empty means the system's resolv.conf.
    pub nameservers: Vec<String>,
    pub cache_size: usize,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Networks (CIDR, or single addresses) that backend names may resolve
    /// into although internal (loopback, link-local...), for every route.
    pub allow_internal: Vec<String>,
    /// How long after its last good lookup a name's answer is still served
    /// while the DNS server does not answer; `0s`: never.
    #[serde(with = "humantime_serde")]
    pub serve_stale: Duration,
}

impl Default for RawDns {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            cache_size: 4096,
            timeout: Duration::from_secs(2),
            allow_internal: Vec::new(),
            serve_stale: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// `text` (default) or `json`.
    pub format: String,
    /// A tracing filter directive, e.g. `info` or `mse_proxy=debug`.
    pub level: String,
    /// One line per finished connection at info level, target `mse_proxy::access`.
    pub access_log: bool,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
            access_log: true,
        }
    }
}
