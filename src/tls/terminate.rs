//! Terminating TLS for `mode = "terminate"` routes.
//!
//! Each routing snapshot holds a [`Termination`]: its certificates and one
//! rustls `ServerConfig` per ALPN list its terminate routes may finish a
//! handshake with, built when the snapshot is built, never per connection. Every config
//! shares one process-wide session cache and ticketer ([`Sessions`]), so a
//! client resumes across routes and across reloads.
//!
//! The handshake ([`accept`]) starts from the ClientHello bytes the detector
//! already read (rustls processes them first, then reads on), under the
//! deadline that began at accept.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::Arc;

use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::alpn;
use super::certs::CertStore;
use super::coalescing::CertTenants;
use super::stream::ServerStream;
use crate::routing::route::Route;

/// Sessions remembered for resumption by ID, for the TLS 1.2 clients that
/// do not take tickets (ticket resumption needs no server state). The cache
/// is allocated up front, about 2 MiB at this size, plus ~200 bytes a session.
const SESSION_CACHE_ENTRIES: usize = 16 * 1024;

/// Server-side resumption state that outlives every snapshot.
#[derive(Clone)]
pub struct Sessions {
    cache: Arc<dyn StoresServerSessions>,
    /// `None` if no ticket key could be made (no randomness): resumption
    /// then works by session ID only.
    ticketer: Option<Arc<dyn ProducesTickets>>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("tickets", &self.ticketer.is_some())
            .finish()
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new()
    }
}

impl Sessions {
    pub fn new() -> Self {
        let ticketer = match rustls::crypto::aws_lc_rs::Ticketer::new() {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "no TLS session tickets; resumption by session ID only");
                None
            }
        };
        Self {
            cache: ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES),
            ticketer,
        }
    }
}

/// The termination half of a snapshot: its certificates, one server config
/// per ALPN list its terminate routes may finish a handshake with
/// ([`crate::tls::alpn::server_lists`]), and which certificates serve more
/// than one tenant ([`CertTenants`]). Held in an `Arc` by the snapshot, so
/// a connection takes all of it with one count; a delta clones it (a
/// handful of configs, the tenant counts persistent).
#[derive(Debug, Default, Clone)]
pub struct Termination {
    certs: Arc<CertStore>,
    /// Per list, two configs: AES-128-GCM first, and ChaCha first for a
    /// client that prefers it (`crate::tls::ordered_provider`).
    by_alpn: HashMap<Vec<Vec<u8>>, [Arc<ServerConfig>; 2]>,
    tenants: CertTenants,
}

impl Termination {
    /// The configs and tenant counts for `routes`, all serving `certs`.
    pub fn build<'a>(
        certs: Arc<CertStore>,
        sessions: &Sessions,
        routes: impl IntoIterator<Item = &'a Route> + Clone,
    ) -> Self {
        let tenants = CertTenants::build(&certs, routes.clone());
        let mut t = Self {
            certs,
            by_alpn: HashMap::new(),
            tenants,
        };
        for r in routes {
            t.add_configs(sessions, r);
        }
        t
    }

    /// After a delta: `removed` routes left the table, `added` ones came
    /// in (a replaced route is in both). A list no route uses any more
    /// keeps its config until the next full build.
    pub fn patched<'a>(
        &self,
        sessions: &Sessions,
        removed: impl IntoIterator<Item = &'a Route>,
        added: impl IntoIterator<Item = &'a Route>,
    ) -> Self {
        let mut next = self.clone();
        for r in removed {
            next.tenants.remove(&next.certs, r);
        }
        for r in added {
            next.tenants.add(&next.certs, r);
            next.add_configs(sessions, r);
        }
        next
    }

    fn add_configs(&mut self, sessions: &Sessions, route: &Route) {
        let Some(t) = &route.terminate else {
            return;
        };
        for alpn in alpn::server_lists(&t.alpn, t.learns_alpn()) {
            if self.by_alpn.contains_key(&alpn) {
                continue;
            }
            let config = |chacha_first| {
                let provider = Arc::clone(super::ordered_provider(chacha_first));
                let mut cfg = ServerConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("the provider's suites cover the default versions")
                    .with_no_client_auth()
                    .with_cert_resolver(Arc::clone(&self.certs) as _);
                // The server's order, not the client's: see `ordered_provider`.
                cfg.ignore_client_order = true;
                cfg.alpn_protocols = alpn.clone();
                cfg.session_storage = Arc::clone(&sessions.cache);
                if let Some(t) = &sessions.ticketer {
                    cfg.ticketer = Arc::clone(t);
                }
                Arc::new(cfg)
            };
            let pair = [config(false), config(true)];
            self.by_alpn.insert(alpn, pair);
        }
    }

    pub fn certs(&self) -> &Arc<CertStore> {
        &self.certs
    }

    /// The config finishing a client handshake that may select only from
    /// `alpn`; `None` only if no terminate route of this snapshot needs it.
    /// `chacha_first`: the client prefers ChaCha20-Poly1305
    /// (`client_hello::ClientHello::chacha_first`).
    pub fn server_config(&self, alpn: &[Vec<u8>], chacha_first: bool) -> Option<Arc<ServerConfig>> {
        self.by_alpn
            .get(alpn)
            .map(|[aes, chacha]| Arc::clone(if chacha_first { chacha } else { aes }))
    }

    /// Whether the certificate a client asking for `sni` gets also serves
    /// another tenant's hosts, so that h2 must not be offered on it.
    pub fn shared_certificate(&self, sni: Option<&str>) -> bool {
        self.certs
            .select_index(sni)
            .is_some_and(|i| self.tenants.shared(i))
    }

    /// Distinct server configs built (for tests and logs).
    pub fn configs(&self) -> usize {
        self.by_alpn.len()
    }
}

/// Why a client's TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake not finished before the ClientHello deadline")]
    Timeout,
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
}

/// A terminated client connection.
pub type ClientTls = ServerStream<TcpStream>;

/// Completes the handshake with `client`, whose first `hello` bytes were
/// already read, by `deadline` (the one that began at accept: a client that
/// sends its hello and then stalls is cut when a slow hello would have been).
pub async fn accept(
    config: Arc<ServerConfig>,
    client: TcpStream,
    hello: Vec<u8>,
    deadline: Instant,
) -> Result<ClientTls, HandshakeError> {
    let handshake = ServerStream::accept(config, client, hello);
    match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(HandshakeError::Tls(e)),
        Err(_) => Err(HandshakeError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::routes::{validate_all, RouteSpec};
    use crate::config::terminate::UpstreamSpec;

    fn route(alpn: Option<&[&str]>, tls: bool) -> Route {
        let mut spec = RouteSpec::terminate(
            "t",
            &["t.example.test"],
            &["127.0.0.1:1"],
            UpstreamSpec {
                tls: (!tls).then_some(false),
                insecure_skip_verify: tls.then_some(true),
                ..Default::default()
            },
        );
        spec.alpn = alpn.map(|l| l.iter().map(|p| p.to_string()).collect());
        let limits = crate::config::ControlLimits::default();
        validate_all(std::path::Path::new("t"), &[spec], "route", &limits)
            .unwrap()
            .remove(0)
    }

    fn l(names: &[&str]) -> Vec<Vec<u8>> {
        names.iter().map(|n| n.as_bytes().to_vec()).collect()
    }

    #[test]
    fn one_server_config_per_list_a_handshake_may_finish_with() {
        let learned = route(None, true);
        let plain_h1 = route(Some(&["http/1.1"]), false);
        let plain_default = route(None, false);
        let routes = [&learned, &plain_h1, &learned, &plain_default];
        let t = Termination::build(Arc::default(), &Sessions::new(), routes);
        // Learned: none, [h2], [http/1.1]; plain: [http/1.1] (again) and [].
        assert_eq!(t.configs(), 3);
        let a = t.server_config(&l(&["h2"]), false).unwrap();
        assert_eq!(a.alpn_protocols, l(&["h2"]));
        assert!(Arc::ptr_eq(
            &a,
            &t.server_config(&l(&["h2"]), false).unwrap()
        ));
        assert!(t.server_config(&l(&["h2", "http/1.1"]), false).is_none());
        // Every config shares the one session cache.
        let b = t.server_config(&[], false).unwrap();
        assert!(Arc::ptr_eq(&a.session_storage, &b.session_storage));
        // Each list's two orders: AES-128-GCM first, or ChaCha first, both
        // in the server's order and sharing the session cache.
        let c = t.server_config(&l(&["h2"]), true).unwrap();
        assert!(Arc::ptr_eq(&a.session_storage, &c.session_storage));
        assert_eq!(c.alpn_protocols, a.alpn_protocols);
        let first = |cfg: &ServerConfig| cfg.crypto_provider().cipher_suites[0].suite();
        assert_eq!(first(&a), rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert_eq!(
            first(&c),
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        );
        assert!(a.ignore_client_order && c.ignore_client_order);
        // A delta adding a plain route with its own list adds its configs.
        let plain_h2 = route(Some(&["h2", "http/1.1"]), false);
        let next = t.patched(&Sessions::new(), [], [&plain_h2]);
        assert_eq!(next.configs(), 4);
        assert!(next.server_config(&l(&["h2", "http/1.1"]), false).is_some());
    }
}
