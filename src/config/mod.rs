//! Configuration in two stages: raw serde structs ([`raw`]) become a validated
//! [`Config`]; every check runs here, at load, never under traffic, and every
//! error names its file and field.

pub mod admin;
pub mod apps;
pub mod bounds;
pub mod certificates;
pub mod clients;
mod error;
pub mod etcd;
pub mod limits;
pub mod rate;
mod raw;
pub mod route_limits;
pub mod route_spec;
pub mod routes;
pub mod terminate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use admin::{AdminConfig, Role, TokenSource};
pub use bounds::MAX_CONNECTIONS;
pub use certificates::CertificateFiles;
pub use error::{ConfigError, ConfigErrors};
pub use limits::ControlLimits;
use raw::RawConfig;

/// What the proxy answers a ClientHello whose SNI matches no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownSniAction {
    /// A fatal TLS alert `unrecognized_name` (112), then close: the client
    /// learns why instead of guessing from a reset.
    Alert,
    /// Close without a word.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Total time from accept to a whole ClientHello (not per read).
    pub client_hello: Duration,
    /// Per connect attempt to one backend address.
    pub upstream_connect: Duration,
    /// No byte either way for this long closes a relayed connection.
    pub idle: Duration,
    /// How long live connections may drain after SIGTERM.
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub nameservers: Vec<SocketAddr>,
    /// hickory's cache, and the bound of the stale cache (names).
    pub cache_size: usize,
    pub timeout: Duration,
    /// `dns.allow_internal`: internal networks any route's backend names
    /// may resolve into (`crate::dns::screen`).
    pub allow_internal: Vec<ipnet::IpNet>,
    /// `dns.serve_stale`: how long a last good answer is served while the
    /// DNS server does not answer (`crate::dns::stale`).
    pub serve_stale: Duration,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    pub access_log: bool,
}

/// What a changed route does to connections open on its old definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnChange {
    /// Close them: the old enclave is being stopped (the default).
    Close,
    /// Leave them until they end, or until the route is removed or expires.
    Keep,
}

#[derive(Debug, Clone)]
pub struct ReloadConfig {
    pub debounce: Duration,
    pub watch: bool,
    pub close_grace: Duration,
    pub on_change: OnChange,
    /// How long the reconciler may go without answering the watchdog.
    pub stall_timeout: Duration,
}

/// One listening address and how it treats a PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    /// `Some`: a load balancer in these networks sends a PROXY header (v1 or
    /// v2) first; a header from anyone else is refused.
    pub trusted_proxies: Option<Vec<ipnet::IpNet>>,
}

/// The validated static configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from (for messages), if any.
    pub source: PathBuf,
    pub listeners: Vec<ListenerConfig>,
    pub workers: Option<usize>,
    pub routes_file: Option<PathBuf>,
    /// The durable state's directory (`crate::state`): what the admin API
    /// accepted survives a restart there. From a file it is always set
    /// (default `state/` beside the config file); `None`, set only by code
    /// (the demo, in-process tests), keeps state in memory. Unused with
    /// `[etcd]`, where etcd holds the state.
    pub state_dir: Option<PathBuf>,
    /// The upgrade socket (`[upgrade] socket`, default `upgrade.sock` in
    /// the state directory): `None` only where state is in memory and no
    /// socket was named (the demo, in-process tests).
    pub upgrade_socket: Option<PathBuf>,
    pub timeouts: Timeouts,
    pub max_connections: usize,
    /// `limits.max_connections` was set in the file (not the default): a
    /// value the file descriptors cannot hold is then an error, where the
    /// default is lowered to fit.
    pub max_connections_set: bool,
    /// Per client: connections whose hello is not read yet, and in all,
    /// and the new-connection rate.
    pub clients: clients::ClientLimits,
    /// Per route, unless the route says otherwise: connections held and
    /// the new-connection rate (`config::route_limits`).
    pub route_defaults: route_limits::RouteDefaults,
    /// Passive health: how long a failing backend address is tried last.
    pub failure_cooldown: Duration,
    /// Passthrough relay through splice(2) (Linux) rather than a buffer copy.
    pub splice: bool,
    pub max_client_hello_bytes: usize,
    /// Caps on route sets and admin requests (`[limits]`).
    pub control_limits: ControlLimits,
    pub unknown_sni: UnknownSniAction,
    pub no_sni_route: Option<String>,
    pub dns: DnsConfig,
    pub log: LogConfig,
    pub reload: ReloadConfig,
    pub admin: Option<AdminConfig>,
    /// Certificates for terminate routes, in config order.
    pub certificates: Vec<CertificateFiles>,
    /// Label metrics by route (`metrics.per_route`).
    pub metrics_per_route: bool,
    /// The platform's policy for app records (`[apps]`).
    pub apps: apps::AppsConfig,
    /// The shared route store (`[etcd]`), if any.
    pub etcd: Option<etcd::EtcdConfig>,
}

/// `limits.max_connections` when unset (lowered at start to what the file
/// descriptors hold, see `proxy::fds`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;

/// Largest accepted `dns.cache_size` (names): it also bounds the stale
/// cache, which the proxy holds in memory for as long as it runs.
const DNS_CACHE_MAX: usize = 1_000_000;

/// Parses a list of networks (`10.0.0.0/8`) or single addresses, each error
/// naming `field[i]`.
pub(crate) fn parse_networks(
    path: &Path,
    field: &str,
    list: &[String],
    errs: &mut ConfigErrors,
) -> Vec<ipnet::IpNet> {
    let mut nets = Vec::with_capacity(list.len());
    for (i, n) in list.iter().enumerate() {
        match n
            .parse::<ipnet::IpNet>()
            .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        {
            Ok(net) => nets.push(net.trunc()),
            Err(_) => errs.push(
                path,
                format!("{field}[{i}]"),
                format!("`{n}` is not a network such as `127.0.0.0/8` or an IP address"),
            ),
        }
    }
    nets
}

/// Smallest and largest accepted `limits.max_client_hello_bytes`: below 2 KiB
/// today's post-quantum browser hellos no longer fit; above 64 KiB a client
/// could make us hold a lot of memory before it has said anything useful.
const HELLO_CAP_RANGE: (usize, usize) = (2048, 65536);

impl Config {
    /// Reads and validates the static config file. Relative paths inside it
    /// are taken relative to the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, "", format!("cannot read: {e}")))?;
        Self::from_toml(path, &text)
    }

    /// Parses and validates config text; `path` names it in errors and anchors
    /// relative paths.
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        validate(path, raw)
    }
}

/// Turns a toml/serde error into a [`ConfigError`] carrying the line number
/// and the message toml gives (which names the offending key).
pub(crate) fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let field = match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}")
        }
        None => String::new(),
    };
    ConfigError::new(path, field, e.message().trim_end().to_string())
}

fn validate(path: &Path, raw: RawConfig) -> Result<Config, ConfigErrors> {
    let mut errs = ConfigErrors::default();
    let base = path.parent().unwrap_or(Path::new("."));

    let mut listeners = Vec::new();
    if raw.listener.is_empty() {
        errs.push(path, "listener", "at least one [[listener]] is required");
    }
    for (i, l) in raw.listener.iter().enumerate() {
        let address = match l.address.parse::<SocketAddr>() {
            Ok(a) if listeners.iter().any(|x: &ListenerConfig| x.address == a) => {
                errs.push(path, format!("listener[{i}].address"), "listed twice");
                continue;
            }
            Ok(a) => a,
            Err(_) => {
                errs.push(
                    path,
                    format!("listener[{i}].address"),
                    format!("`{}` is not `ip:port` (IPv6 as `[::]:443`)", l.address),
                );
                continue;
            }
        };
        let mut nets = Vec::new();
        for (j, n) in l.trusted_proxies.iter().enumerate() {
            match n
                .parse::<ipnet::IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            {
                Ok(net) => nets.push(net),
                Err(_) => errs.push(
                    path,
                    format!("listener[{i}].trusted_proxies[{j}]"),
                    format!("`{n}` is not a network such as `10.0.0.0/8` or an IP address"),
                ),
            }
        }
        let trusted_proxies = match (l.proxy_protocol, nets.is_empty()) {
            (true, true) => {
                errs.push(
                    path,
                    format!("listener[{i}].trusted_proxies"),
                    "proxy_protocol needs the networks its load balancers are in",
                );
                None
            }
            (true, false) => Some(nets),
            (false, false) => {
                errs.push(
                    path,
                    format!("listener[{i}].trusted_proxies"),
                    "set only with proxy_protocol = true",
                );
                None
            }
            (false, true) => None,
        };
        listeners.push(ListenerConfig {
            address,
            trusted_proxies,
        });
    }

    if raw.workers == Some(0) {
        errs.push(
            path,
            "workers",
            "must be at least 1 (omit it for one per core)",
        );
    }
    if let Some(n) = raw.workers.filter(|&n| n > 0) {
        let listeners = raw.listener.len().max(1);
        if n > bounds::MAX_WORKERS {
            let why = format!("must be at most {}", bounds::MAX_WORKERS);
            errs.push(path, "workers", &why);
        } else if n * listeners + 1 > bounds::MAX_LISTENING_SOCKETS {
            let why = format!(
                "{n} workers x {listeners} listeners is more listening sockets than an upgrade can hand over ({})",
                bounds::MAX_LISTENING_SOCKETS - 1
            );
            errs.push(path, "workers", &why);
        }
    }

    let t = &raw.timeouts;
    for (name, d) in [
        ("timeouts.client_hello", t.client_hello),
        ("timeouts.upstream_connect", t.upstream_connect),
        ("timeouts.idle", t.idle),
    ] {
        if d.is_zero() {
            errs.push(path, name, "must be greater than zero");
        }
    }
    for (name, d) in [
        ("timeouts.client_hello", t.client_hello),
        ("timeouts.upstream_connect", t.upstream_connect),
        ("timeouts.idle", t.idle),
        ("timeouts.shutdown_grace", t.shutdown_grace),
        ("reload.debounce", raw.reload.debounce),
        ("reload.close_grace", raw.reload.close_grace),
        ("reload.stall_timeout", raw.reload.stall_timeout),
        ("health.failure_cooldown", raw.health.failure_cooldown),
    ] {
        bounds::check(path, name, d, &mut errs);
    }

    let max_connections = raw
        .limits
        .max_connections
        .unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 || max_connections > MAX_CONNECTIONS {
        errs.push(
            path,
            "limits.max_connections",
            format!("must be from 1 to {MAX_CONNECTIONS}"),
        );
    }
    let cap = raw.limits.max_client_hello_bytes;
    if cap < HELLO_CAP_RANGE.0 || cap > HELLO_CAP_RANGE.1 {
        errs.push(
            path,
            "limits.max_client_hello_bytes",
            format!(
                "{cap} is outside {}..={}",
                HELLO_CAP_RANGE.0, HELLO_CAP_RANGE.1
            ),
        );
    }

    let control_limits = ControlLimits::validate(path, &raw.limits, &mut errs);
    let clients = clients::ClientLimits::validate(path, &raw.limits, &mut errs);
    let route_defaults = route_limits::RouteDefaults::validate(path, &raw.limits, &mut errs);

    let unknown_sni = match raw.refusal.unknown_sni.as_deref() {
        None | Some("alert") => UnknownSniAction::Alert,
        Some("close") => UnknownSniAction::Close,
        Some(other) => {
            errs.push(
                path,
                "refusal.unknown_sni",
                format!("`{other}` is not one of `alert`, `close`"),
            );
            UnknownSniAction::Alert
        }
    };

    let mut nameservers = Vec::new();
    for (i, ns) in raw.dns.nameservers.iter().enumerate() {
        let parsed = ns.parse::<SocketAddr>().or_else(|_| {
            ns.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        });
        match parsed {
            Ok(a) => nameservers.push(a),
            Err(_) => errs.push(
                path,
                format!("dns.nameservers[{i}]"),
                format!("`{ns}` is not an IP address or `ip:port`"),
            ),
        }
    }
    if raw.dns.timeout.is_zero() {
        errs.push(path, "dns.timeout", "must be greater than zero");
    }
    bounds::check(path, "dns.timeout", raw.dns.timeout, &mut errs);
    bounds::check(path, "dns.serve_stale", raw.dns.serve_stale, &mut errs);
    if raw.dns.cache_size > DNS_CACHE_MAX {
        errs.push(
            path,
            "dns.cache_size",
            format!(
                "{} is more than the most allowed, {DNS_CACHE_MAX}",
                raw.dns.cache_size
            ),
        );
    }
    let allow_internal = parse_networks(
        path,
        "dns.allow_internal",
        &raw.dns.allow_internal,
        &mut errs,
    );

    let format = match raw.log.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            errs.push(
                path,
                "log.format",
                format!("`{other}` is not one of `text`, `json`"),
            );
            LogFormat::Text
        }
    };
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.log.level) {
        errs.push(path, "log.level", format!("not a valid filter: {e}"));
    }

    let routes_file = raw.routes_file.map(|p| base.join(p));
    let state_dir = match raw.state_dir {
        Some(p) if p.as_os_str().is_empty() => {
            errs.push(
                path,
                "state_dir",
                "is empty; name a directory, or leave it out for `state/` beside this file",
            );
            None
        }
        Some(p) => Some(base.join(p)),
        None => Some(base.join("state")),
    };

    let upgrade_socket = match raw.upgrade.socket {
        Some(p) => Some(base.join(p)),
        None => state_dir.as_ref().map(|d| d.join("upgrade.sock")),
    };

    if raw.reload.debounce.is_zero() {
        errs.push(path, "reload.debounce", "must be greater than zero");
    }
    // The watchdog pings every second: below that, one slow ping fails.
    if raw.reload.stall_timeout < Duration::from_secs(1) {
        errs.push(path, "reload.stall_timeout", "must be at least 1s");
    }
    let on_change = match raw.reload.on_change.as_str() {
        "close" => OnChange::Close,
        "keep" => OnChange::Keep,
        other => {
            errs.push(
                path,
                "reload.on_change",
                format!("`{other}` is not one of `close`, `keep`"),
            );
            OnChange::Close
        }
    };

    let admin = raw
        .admin
        .and_then(|a| admin::validate(path, base, a, &mut errs));
    let certificates = certificates::validate(path, base, &raw.certificate, &mut errs);
    let apps = apps::validate(path, raw.apps, &mut errs);
    let etcd = raw
        .etcd
        .and_then(|e| etcd::validate(path, base, e, &mut errs));
    errs.into_result(Config {
        source: path.to_path_buf(),
        listeners,
        workers: raw.workers,
        routes_file,
        state_dir,
        upgrade_socket,
        timeouts: Timeouts {
            client_hello: t.client_hello,
            upstream_connect: t.upstream_connect,
            idle: t.idle,
            shutdown_grace: t.shutdown_grace,
        },
        max_connections,
        max_connections_set: raw.limits.max_connections.is_some(),
        clients,
        route_defaults,
        failure_cooldown: raw.health.failure_cooldown,
        splice: raw.relay.splice,
        max_client_hello_bytes: cap,
        control_limits,
        unknown_sni,
        no_sni_route: raw.refusal.no_sni_route,
        dns: DnsConfig {
            nameservers,
            cache_size: raw.dns.cache_size,
            timeout: raw.dns.timeout,
            allow_internal,
            serve_stale: raw.dns.serve_stale,
        },
        log: LogConfig {
            format,
            level: raw.log.level,
            access_log: raw.log.access_log,
        },
        reload: ReloadConfig {
            debounce: raw.reload.debounce,
            watch: raw.reload.watch,
            close_grace: raw.reload.close_grace,
            on_change,
            stall_timeout: raw.reload.stall_timeout,
        },
        admin,
        certificates,
        metrics_per_route: raw.metrics.per_route,
        apps,
        etcd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigErrors> {
        Config::from_toml(Path::new("/etc/mse/proxy.toml"), text)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = load("[[listener]]\naddress = \"127.0.0.1:8443\"\n").unwrap();
        assert_eq!(c.listeners[0].address, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(c.listeners[0].trusted_proxies, None);
        assert_eq!(c.timeouts.client_hello, Duration::from_secs(5));
        assert_eq!(c.max_client_hello_bytes, 16384);
        assert_eq!(c.unknown_sni, UnknownSniAction::Alert);
        assert!(c.routes_file.is_none());
        assert_eq!(c.state_dir, Some(PathBuf::from("/etc/mse/state")));
    }

    #[test]
    fn state_dir_is_relative_to_config_and_never_empty() {
        let c = load("state_dir = \"/var/lib/mse-proxy\"\n[[listener]]\naddress = \"[::1]:443\"\n")
            .unwrap();
        assert_eq!(c.state_dir, Some(PathBuf::from("/var/lib/mse-proxy")));
        let c = load("state_dir = \"db\"\n[[listener]]\naddress = \"[::1]:443\"\n").unwrap();
        assert_eq!(c.state_dir, Some(PathBuf::from("/etc/mse/db")));
        let e = load("state_dir = \"\"\n[[listener]]\naddress = \"[::1]:443\"\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("/etc/mse/proxy.toml: state_dir: is empty"),
            "{e}"
        );
    }

    #[test]
    fn routes_file_is_relative_to_config() {
        let c =
            load("routes_file = \"routes.toml\"\n[[listener]]\naddress = \"[::1]:443\"\n").unwrap();
        assert_eq!(
            c.routes_file.unwrap(),
            PathBuf::from("/etc/mse/routes.toml")
        );
    }

    #[test]
    fn every_problem_is_named_by_file_and_field() {
        let errs = load(
            "workers = 0\n[[listener]]\naddress = \"nope\"\n[timeouts]\nidle = \"0s\"\n\
             [limits]\nmax_client_hello_bytes = 100\n[refusal]\nunknown_sni = \"shout\"\n\
             [log]\nformat = \"xml\"\n",
        )
        .unwrap_err();
        let text = errs.to_string();
        for field in [
            "workers",
            "listener[0].address",
            "timeouts.idle",
            "limits.max_client_hello_bytes",
            "refusal.unknown_sni",
            "log.format",
        ] {
            assert!(
                text.contains(&format!("/etc/mse/proxy.toml: {field}: ")),
                "{field} missing in:\n{text}"
            );
        }
        assert_eq!(errs.0.len(), 6);
    }

    #[test]
    fn control_limits_have_defaults_and_refuse_zero() {
        let c = load("[[listener]]\naddress = \"127.0.0.1:1\"\n").unwrap();
        assert_eq!(c.control_limits, ControlLimits::default());
        assert_eq!(c.control_limits.hosts_per_route, 100);
        assert_eq!(c.control_limits.backends_per_route, 64);
        assert_eq!(c.control_limits.routes, 1_000_000);
        assert_eq!(c.reload.stall_timeout, Duration::from_secs(30));
        let e =
            load("[[listener]]\naddress = \"127.0.0.1:1\"\n[reload]\nstall_timeout = \"500ms\"\n")
                .unwrap_err()
                .to_string();
        assert_eq!(
            e,
            "/etc/mse/proxy.toml: reload.stall_timeout: must be at least 1s"
        );
        let c =
            load("[[listener]]\naddress = \"127.0.0.1:1\"\n[limits]\nmax_hosts_per_route = 3\n")
                .unwrap();
        assert_eq!(c.control_limits.hosts_per_route, 3);
        let errs = load(
            "[[listener]]\naddress = \"127.0.0.1:1\"\n[limits]\nmax_hosts_per_route = 0\n\
             max_backends_per_route = 0\nmax_routes = 0\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            errs,
            "/etc/mse/proxy.toml: limits.max_hosts_per_route: must be from 1 to 100000\n\
             /etc/mse/proxy.toml: limits.max_backends_per_route: must be from 1 to 10000\n\
             /etc/mse/proxy.toml: limits.max_routes: must be from 1 to 10000000"
        );
    }

    #[test]
    fn rates_and_route_limits_are_on_by_default_and_bounded() {
        use rate::Rate;
        let c = load("[[listener]]\naddress = \"127.0.0.1:1\"\n").unwrap();
        assert_eq!(
            c.clients.rate,
            Some(Rate {
                per_second: 100,
                burst: 500
            })
        );
        assert_eq!(c.route_defaults, route_limits::RouteDefaults::default());
        assert_eq!(c.route_defaults.max_connections, 10_000);
        let c = load(
            "[[listener]]\naddress = \"127.0.0.1:1\"\n[limits]\n\
             client_new_connections_per_second = 0\nmax_connections_per_route = 0\n\
             route_new_connections_per_second = 7\n",
        )
        .unwrap();
        assert_eq!(c.clients.rate, None);
        assert_eq!(c.route_defaults.max_connections, 0);
        assert_eq!(
            c.route_defaults.rate,
            Some(Rate {
                per_second: 7,
                burst: 14
            })
        );
        let errs = load(
            "[[listener]]\naddress = \"127.0.0.1:1\"\n[limits]\n\
             client_new_connections_per_second = 2000000\nclient_new_connections_burst = 0\n\
             max_connections_per_route = 20000000\nroute_new_connections_burst = 2000000\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            errs,
            "/etc/mse/proxy.toml: limits.client_new_connections_per_second: 2000000 is more than the most allowed, 1000000\n\
             /etc/mse/proxy.toml: limits.client_new_connections_burst: must be at least 1 while a rate is set (a rate of 0 turns the limit off)\n\
             /etc/mse/proxy.toml: limits.max_connections_per_route: 20000000 is more than the most allowed, 10000000 (0: no cap)\n\
             /etc/mse/proxy.toml: limits.route_new_connections_burst: 2000000 is more than the most allowed, 1000000"
        );
    }

    #[test]
    fn certificate_paths_are_relative_to_config() {
        let c = load(
            "[[listener]]\naddress = \"127.0.0.1:1\"\n\
             [[certificate]]\ncert = \"certs/a.crt\"\nkey = \"/abs/a.key\"\n",
        )
        .unwrap();
        assert_eq!(
            c.certificates,
            vec![CertificateFiles {
                name: "a.crt".into(),
                cert: PathBuf::from("/etc/mse/certs/a.crt"),
                key: PathBuf::from("/abs/a.key"),
            }]
        );
        let errs = load("[[listener]]\naddress = \"127.0.0.1:1\"\n[[certificate]]\ncert = \"a\"\n")
            .unwrap_err()
            .to_string();
        assert!(errs.contains("missing field `key`"), "{errs}");
    }

    #[test]
    fn dns_hygiene_and_serve_stale_have_defaults_and_bounds() {
        let c = load("[[listener]]\naddress = \"127.0.0.1:1\"\n").unwrap();
        assert_eq!(c.dns.serve_stale, Duration::from_secs(3600));
        assert!(c.dns.allow_internal.is_empty());
        let c = load(
            "[[listener]]\naddress = \"127.0.0.1:1\"\n[dns]\nallow_internal = [\"127.0.0.1/8\", \"::1\"]\nserve_stale = \"0s\"\n",
        )
        .unwrap();
        let nets: Vec<String> = c.dns.allow_internal.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["127.0.0.0/8", "::1/128"]);
        assert_eq!(c.dns.serve_stale, Duration::ZERO);
        let e = load(
            "[[listener]]\naddress = \"127.0.0.1:1\"\n[dns]\nallow_internal = [\"loopback\"]\nserve_stale = \"30days\"\ncache_size = 2000000\n",
        )
        .unwrap_err()
        .to_string();
        for want in [
            "/etc/mse/proxy.toml: dns.serve_stale: 30days is more than the most allowed, 1day",
            "/etc/mse/proxy.toml: dns.cache_size: 2000000 is more than the most allowed, 1000000",
            "/etc/mse/proxy.toml: dns.allow_internal[0]: `loopback` is not a network",
        ] {
            assert!(e.contains(want), "{want} not in:\n{e}");
        }
    }

    #[test]
    fn every_size_and_duration_knob_has_a_bound_named_in_the_error() {
        let e = load(
            "[[listener]]\naddress = \"127.0.0.1:1\"\n[limits]\n\
             max_unrouted_per_client = 20000000\nmax_connections_per_client = 20000000\n\
             max_hosts_per_route = 200000\nmax_backends_per_route = 20000\nmax_routes = 20000000\n\
             [etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\ndial_timeout = \"1h\"\n\
             request_timeout = \"1h\"\nheartbeat = \"1h\"\nbackoff_max = \"1day\"\n",
        )
        .unwrap_err()
        .to_string();
        for want in [
            "limits.max_unrouted_per_client: 20000000 is more than the most allowed, 10000000",
            "limits.max_connections_per_client: 20000000 is more than the most allowed, 10000000",
            "limits.max_hosts_per_route: must be from 1 to 100000",
            "limits.max_backends_per_route: must be from 1 to 10000",
            "limits.max_routes: must be from 1 to 10000000",
            "etcd.dial_timeout: 1h is more than the most allowed, 1m",
            "etcd.request_timeout: 1h is more than the most allowed, 1m",
            "etcd.heartbeat: 1h is more than the most allowed, 1m",
            "etcd.backoff_max: 1day is more than the most allowed, 10m",
        ] {
            assert!(e.contains(want), "{want} not in:\n{e}");
        }
    }

    #[test]
    fn unknown_field_is_an_error() {
        let errs = load("[[listener]]\naddress = \"127.0.0.1:1\"\nport = 3\n").unwrap_err();
        let text = errs.to_string();
        assert!(text.contains("unknown field `port`"), "{text}");
        assert!(text.starts_with("/etc/mse/proxy.toml"), "{text}");
    }
}
