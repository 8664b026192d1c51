//! One shared DNS resolver with its cache, for backends named by host name.
//! IP-literal backends never touch it.

use std::net::IpAddr;

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
        let result = match &r {
            Ok(_) => "ok",
            Err(DnsError::NotFound { .. }) => "not_found",
            Err(DnsError::Unavailable { .. }) => "unavailable",
        };
        self.lookups.with_label_values(&[result]).inc();
        r
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
    /// The target of `name`'s CNAME record, for the custom-domain check of
    /// apps (`crate::apps::cname`), lowercase without the trailing dot.
    /// `Ok(None)` when the DNS answers that there is none (or no such name);
    /// an error when it gives no answer, which a caller must not take for a
    /// "no". Not counted in `dns_lookups_total`, which is about backends.
    pub async fn cname(&self, name: &str) -> Result<Option<String>, DnsError> {
        use hickory_resolver::proto::rr::{RData, RecordType};
        let unavailable = |reason: String| DnsError::Unavailable {
            name: name.to_string(),
            reason,
        };
        let resolver = self
            .resolver
            .as_ref()
            .map_err(|e| unavailable(format!("no resolver: {e}")))?;
        let plain = |n: String| n.trim_end_matches('.').to_ascii_lowercase();
        let wanted = plain(name.to_string());
        match resolver
            .lookup(format!("{wanted}.").as_str(), RecordType::CNAME)
            .await
        {
            Ok(lookup) => Ok(lookup.answers().iter().find_map(|r| match &r.data {
                RData::CNAME(target) if plain(r.name.to_ascii()) == wanted => {
                    Some(plain(target.0.to_ascii()))
                }
                _ => None,
            })),
            Err(e) if e.is_no_records_found() => Ok(None),
            Err(e) => Err(unavailable(e.to_string())),
        }
    }
}
