//! One shared DNS resolver with its cache, for backends named by host name.
//! IP-literal backends never touch it.
//!
//! ```text
//! screen  which resolved addresses a backend may have (no loopback,
//!         link-local, admin listener... unless allow-listed)
//! stale   the last good answer per name, served while the DNS is down
//! ```

pub mod screen;
pub mod stale;

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

use crate::config::DnsConfig;

/// Why a name gave no address. The two cases are told apart because they
/// call for different fixes: a name that does not exist is a routing
/// mistake, an unreachable DNS server is an infrastructure fault.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The DNS answered: no such name, or no address for it.
    #[error("{name} does not resolve: {reason}")]
    NotFound { name: String, reason: String },
    /// No answer: no resolver, server down, timeout, broken reply.
    #[error("DNS unavailable for {name}: {reason}")]
    Unavailable { name: String, reason: String },
}

/// The shared resolver. hickory keeps its own TTL-bound cache, so repeated
/// connections to one backend name cost one lookup per TTL; behind it, the
/// stale cache answers for a name while the DNS server does not.
pub struct Dns {
    resolver: Result<TokioResolver, String>,
    /// `mse_proxy_dns_lookups_total{result}`.
    lookups: prometheus::IntCounterVec,
    /// `mse_proxy_backend_addresses_refused_total{reason}`.
    refused: prometheus::IntCounterVec,
    /// `dns.allow_internal` and the admin listener's address.
    screen: screen::Screen,
    /// At most `dns.cache_size` names (default 4,096), each served up to
    /// `dns.serve_stale` after its last good lookup. A std mutex: it is
    /// held for a map operation, never across an `.await`.
    stale: Mutex<stale::StaleCache>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("ok", &self.resolver.is_ok())
            .finish()
    }
}

impl Dns {
    /// Builds the resolver from the config: the configured nameservers, or
    /// the system's resolv.conf when none are given. A system without a
    /// usable resolv.conf still starts (IP backends work); name lookups then
    /// fail with [`DnsError::Unavailable`]. `lookups` and `refused` are the
    /// counters of lookups by result and refused addresses by reason.
    pub fn new(
        cfg: &DnsConfig,
        lookups: prometheus::IntCounterVec,
        refused: prometheus::IntCounterVec,
    ) -> Self {
        let builder = if cfg.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| e.to_string())
        } else {
            let servers = cfg
                .nameservers
                .iter()
                .map(|sa| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = sa.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = sa.port();
                    let mut ns = NameServerConfig::udp_and_tcp(sa.ip());
                    ns.connections = vec![udp, tcp];
                    ns
                })
                .collect();
            Ok(TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            ))
        };
        let resolver = builder.and_then(|mut b| {
            let opts = b.options_mut();
            opts.cache_size = cfg.cache_size as u64;
            opts.timeout = cfg.timeout;
            opts.attempts = 1;
            b.build().map_err(|e| e.to_string())
        });
        if let Err(e) = &resolver {
            tracing::warn!(error = %e, "no DNS resolver; backends named by host name will fail");
        }
        Self {
            resolver,
            lookups,
            refused,
            screen: screen::Screen {
                allow: cfg.allow_internal.clone(),
                admin: Default::default(),
            },
            stale: Mutex::new(stale::StaleCache::new(cfg.cache_size, cfg.serve_stale)),
        }
    }

    /// Tells the screen where the admin listener is bound; the first call
    /// wins (the address does not change while the process runs).
    pub fn set_admin_address(&self, addr: SocketAddr) {
        let _ = self.screen.admin.set(addr);
    }

    /// The addresses of `name`, in the resolver's preferred order. When the
    /// DNS server gives no answer, the last good one (see [`stale`]), counted
    /// as `stale`; an NXDOMAIN or empty answer is believed and forgets it.
    pub async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        let r = self.lookup(name).await;
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        let now = tokio::time::Instant::now();
        let mut stale = self.stale.lock().unwrap_or_else(|p| p.into_inner());
        let (r, result) = match r {
            Ok(ips) => {
                stale.put(&key, &ips, now);
                (Ok(ips), "ok")
            }
            Err(e @ DnsError::NotFound { .. }) => {
                stale.forget(&key);
                (Err(e), "not_found")
            }
            Err(e @ DnsError::Unavailable { .. }) => match stale.get(&key, now) {
                Some(ips) => {
                    tracing::debug!(name, error = %e, "DNS gave no answer; serving the last good one");
                    (Ok(ips), "stale")
                }
                None => (Err(e), "unavailable"),
            },
        };
        drop(stale);
        self.lookups.with_label_values(&[result]).inc();
        r
    }

    /// Whether `addr`, resolved from backend `backend` of route `route`
    /// (which allow-lists `route_allow`), may be connected to. A refusal is
    /// counted by reason and logged with the route, the name and the address.
    pub fn admits(
        &self,
        route: &str,
        backend: &dyn std::fmt::Display,
        addr: SocketAddr,
        route_allow: &[ipnet::IpNet],
    ) -> Result<(), screen::Refusal> {
        self.screen.check(addr, route_allow).inspect_err(|why| {
            self.refused.with_label_values(&[why.as_str()]).inc();
            tracing::warn!(
                route,
                backend = %backend,
                address = %addr,
                reason = %why,
                "resolved backend address refused; allow-list it in dns.allow_internal or the route's allow_internal_backends"
            );
        })
    }

    async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        let resolver = self.resolver.as_ref().map_err(|e| DnsError::Unavailable {
            name: name.to_string(),
            reason: format!("no resolver: {e}"),
        })?;
        // Absolute name: a backend is never meant to go through search domains.
        let fqdn = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        let lookup = resolver.lookup_ip(fqdn.as_str()).await.map_err(|e| {
            let (name, reason) = (name.to_string(), e.to_string());
            if e.is_no_records_found() {
                DnsError::NotFound { name, reason }
            } else {
                DnsError::Unavailable { name, reason }
            }
        })?;
        let ips: Vec<IpAddr> = lookup.iter().collect();
        if ips.is_empty() {
            return Err(DnsError::NotFound {
                name: name.to_string(),
                reason: "no address records".into(),
            });
        }
        Ok(ips)
    }
}

impl Dns {
    /// The answers of a lookup of `name` (lowercased, fully qualified) for
    /// `kind`; `Ok(None)` when the DNS answers that there are none (or no
    /// such name), an error when it gives no answer, which a caller must
    /// not take for a "no".
    async fn records(
        &self,
        name: &str,
        kind: hickory_resolver::proto::rr::RecordType,
    ) -> Result<Option<hickory_resolver::lookup::Lookup>, DnsError> {
        let unavailable = |reason: String| DnsError::Unavailable {
            name: name.to_string(),
            reason,
        };
        let resolver = self
            .resolver
            .as_ref()
            .map_err(|e| unavailable(format!("no resolver: {e}")))?;
        let wanted = name.trim_end_matches('.').to_ascii_lowercase();
        match resolver.lookup(format!("{wanted}.").as_str(), kind).await {
            Ok(lookup) => Ok(Some(lookup)),
            Err(e) if e.is_no_records_found() => Ok(None),
            Err(e) => Err(unavailable(e.to_string())),
        }
    }

    /// The target of `name`'s CNAME record, for the custom-domain check of
    /// apps (`crate::apps::cname`), lowercase without the trailing dot.
    /// `Ok(None)` when the DNS answers that there is none (or no such name);
    /// an error when it gives no answer. Not counted in `dns_lookups_total`,
    /// which is about backends.
    pub async fn cname(&self, name: &str) -> Result<Option<String>, DnsError> {
        use hickory_resolver::proto::rr::{RData, RecordType};
        let plain = |n: String| n.trim_end_matches('.').to_ascii_lowercase();
        let wanted = plain(name.to_string());
        let Some(lookup) = self.records(name, RecordType::CNAME).await? else {
            return Ok(None);
        };
        Ok(lookup.answers().iter().find_map(|r| match &r.data {
            RData::CNAME(target) if plain(r.name.to_ascii()) == wanted => {
                Some(plain(target.0.to_ascii()))
            }
            _ => None,
        }))
    }

    /// The TXT records of `name`, each record's strings joined (as SPF and
    /// ACME do: a long value is split into 255-byte strings), for the
    /// custom-domain ownership proof (`crate::apps::ownership`). Empty when
    /// the DNS answers that there are none; an error when it gives no
    /// answer. Through the same resolver as [`Dns::cname`]; not counted in
    /// `dns_lookups_total`, which is about backends.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        use hickory_resolver::proto::rr::{RData, RecordType};
        let Some(lookup) = self.records(name, RecordType::TXT).await? else {
            return Ok(Vec::new());
        };
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s))
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect())
    }
}
