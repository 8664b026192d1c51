//! Terminating TLS for `mode = "terminate"` routes.
//!
//! Each routing snapshot holds a [`Termination`]: its certificates and one
//! rustls `ServerConfig` per distinct ALPN list among its terminate routes,
//! built when the snapshot is built, never per connection. Every config
//! shares one process-wide session cache and ticketer ([`Sessions`]), so a
//! client resumes across routes and across reloads.
//!
//! The handshake ([`accept`]) replays the ClientHello bytes the detector
//! already read, through [`Rewind`], under the deadline that began at accept.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::Arc;

use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::certs::CertStore;
use super::rewind::Rewind;

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

/// The termination half of a snapshot. Cloned by a delta: a handful of
/// configs, one per distinct ALPN list.
#[derive(Debug, Default, Clone)]
pub struct Termination {
    certs: Arc<CertStore>,
    by_alpn: HashMap<Vec<Vec<u8>>, Arc<ServerConfig>>,
}

impl Termination {
    /// One server config per distinct ALPN list, all serving `certs`.
    pub fn build<'a>(
        certs: Arc<CertStore>,
        sessions: &Sessions,
        alpn_lists: impl IntoIterator<Item = &'a [Vec<u8>]>,
    ) -> Self {
        let mut by_alpn = HashMap::new();
        for alpn in alpn_lists {
            if by_alpn.contains_key(alpn) {
                continue;
            }
            let mut cfg = ServerConfig::builder()
                .with_no_client_auth()
                .with_cert_resolver(Arc::clone(&certs) as _);
            cfg.alpn_protocols = alpn.to_vec();
            cfg.session_storage = Arc::clone(&sessions.cache);
            if let Some(t) = &sessions.ticketer {
                cfg.ticketer = Arc::clone(t);
            }
            by_alpn.insert(alpn.to_vec(), Arc::new(cfg));
        }
        Self { certs, by_alpn }
    }

    /// For a delta that adds a terminate route: `None` when a config for
    /// `alpn` exists already (the common case), else this one plus it. A
    /// list no route uses any more stays until the next full build.
    pub fn with_alpn(&self, sessions: &Sessions, alpn: &[Vec<u8>]) -> Option<Self> {
        if self.by_alpn.contains_key(alpn) {
            return None;
        }
        let one = Self::build(Arc::clone(&self.certs), sessions, [alpn]);
        let mut next = self.clone();
        next.by_alpn.extend(one.by_alpn);
        Some(next)
    }

    pub fn certs(&self) -> &Arc<CertStore> {
        &self.certs
    }

    /// The config for a route offering `alpn`; `None` only if no terminate
    /// route of this snapshot has that list.
    pub fn server_config(&self, alpn: &[Vec<u8>]) -> Option<Arc<ServerConfig>> {
        self.by_alpn.get(alpn).cloned()
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
pub type ClientTls = TlsStream<Rewind<TcpStream>>;

/// Completes the handshake with `client`, whose first `hello` bytes were
/// already read, by `deadline` (the one that began at accept: a client that
/// sends its hello and then stalls is cut when a slow hello would have been).
pub async fn accept(
    config: Arc<ServerConfig>,
    client: TcpStream,
    hello: Vec<u8>,
    deadline: Instant,
) -> Result<ClientTls, HandshakeError> {
    let acceptor = TlsAcceptor::from(config);
    match tokio::time::timeout_at(deadline, acceptor.accept(Rewind::new(hello, client))).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(HandshakeError::Tls(e)),
        Err(_) => Err(HandshakeError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_config_per_distinct_alpn_list() {
        let h2: Vec<Vec<u8>> = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let h1: Vec<Vec<u8>> = vec![b"http/1.1".to_vec()];
        let none: Vec<Vec<u8>> = Vec::new();
        let lists = [h2.as_slice(), h1.as_slice(), h2.as_slice(), none.as_slice()];
        let t = Termination::build(Arc::default(), &Sessions::new(), lists);
        assert_eq!(t.configs(), 3);
        let a = t.server_config(&h2).unwrap();
        assert_eq!(a.alpn_protocols, h2);
        assert!(Arc::ptr_eq(&a, &t.server_config(&h2).unwrap()));
        assert!(t.server_config(&[b"spdy/3".to_vec()]).is_none());
        // Every config shares the one session cache.
        let b = t.server_config(&h1).unwrap();
        assert!(Arc::ptr_eq(&a.session_storage, &b.session_storage));
    }
}
