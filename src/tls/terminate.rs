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

/// TLS 1.2 sessions remembered for resumption by ID (TLS 1.3 and ticket
/// resumption need no server state). About 200 bytes each.
const SESSION_CACHE_ENTRIES: usize = 32 * 1024;

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

/// The termination half of a snapshot.
#[derive(Debug, Default)]
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
