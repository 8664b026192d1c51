//! One shared DNS resolver with its cache, for backends named by host name.
//! IP-literal backends never touch it.

use std::net::IpAddr;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

use crate::config::DnsConfig;

/// Why a name gave no address.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("no DNS resolver is available: {0}")]
    NoResolver(String),
    #[error("lookup of {name} failed: {reason}")]
    Lookup { name: String, reason: String },
    #[error("{0} has no address")]
    Empty(String),
}

/// The shared resolver. hickory keeps its own TTL-bound cache, so repeated
/// connections to one backend name cost one lookup per TTL.
pub struct Dns {
    resolver: Result<TokioResolver, String>,
    /// `mse_proxy_dns_lookups_total{result}`.
    lookups: prometheus::IntCounterVec,
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
    /// fail with [`DnsError::NoResolver`].
    pub fn new(cfg: &DnsConfig, lookups: prometheus::IntCounterVec) -> Self {
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
        Self { resolver, lookups }
    }

    /// The addresses of `name`, in the resolver's preferred order.
    pub async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        let r = self.lookup(name).await;
        self.lookups
            .with_label_values(&[if r.is_ok() { "ok" } else { "error" }])
            .inc();
        r
    }

    async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        let resolver = self
            .resolver
            .as_ref()
            .map_err(|e| DnsError::NoResolver(e.clone()))?;
        // Absolute name: a backend is never meant to go through search domains.
        let fqdn = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        let lookup = resolver
            .lookup_ip(fqdn.as_str())
            .await
            .map_err(|e| DnsError::Lookup {
                name: name.to_string(),
                reason: e.to_string(),
            })?;
        let ips: Vec<IpAddr> = lookup.iter().collect();
        if ips.is_empty() {
            return Err(DnsError::Empty(name.to_string()));
        }
        Ok(ips)
    }
}
