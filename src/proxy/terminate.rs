//! Terminate: the platform holds the certificate, so the proxy completes the
//! client's TLS handshake itself (replaying the ClientHello bytes it read),
//! then opens a new connection to the enclave, plain or TLS, and relays the
//! plaintext between the two.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::conn::ConnLog;
use super::outcome::Outcome;
use super::relay::{self, Counters};
use super::upstream;
use super::Shared;
use crate::routing::RouteEntry;
use crate::tls::terminate::{self, ClientTls, HandshakeError};
use crate::tls::upstream::{Upstream, UpstreamTls};

/// How long a client whose upstream failed is given to take our close_notify.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Serves one connection on a terminate route. `server` is the TLS config
/// from the same snapshot as `entry`; `deadline` is the one that began at
/// accept, which the handshake must also meet.
pub async fn run(
    shared: &Shared,
    client: TcpStream,
    hello_bytes: Vec<u8>,
    deadline: Instant,
    entry: Arc<RouteEntry>,
    server: Option<Arc<ServerConfig>>,
    log: &mut ConnLog,
) -> Outcome {
    let _open = entry.track();
    let route = &entry.route;
    let (Some(settings), Some(server)) = (&route.terminate, server) else {
        tracing::error!(route = %route.name, "terminate route without TLS settings in its snapshot");
        return Outcome::ClientTlsError;
    };

    let handshake_start = Instant::now();
    let client_tls = match terminate::accept(server, client, hello_bytes, deadline).await {
        Ok(tls) => tls,
        Err(HandshakeError::Timeout) => return Outcome::HelloTimeout,
        Err(HandshakeError::Tls(e)) => {
            tracing::debug!(error = %e, "client TLS handshake failed");
            return Outcome::ClientTlsError;
        }
    };
    entry
        .metrics(&shared.metrics)
        .handshake(&shared.metrics)
        .observe(handshake_start.elapsed().as_secs_f64());
    let alpn = client_tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);

    let tcp = match upstream::connect_route(shared, &entry, log).await {
        Ok(s) => s,
        Err(outcome) => {
            close(client_tls).await;
            return outcome;
        }
    };
    let addr = log.upstream.unwrap_or(log.local);

    let counters = Counters::default();
    let stop = shared.stop_signal(&entry);
    let idle = shared.config.timeouts.idle;
    let end = match &settings.upstream {
        Upstream::Plain => relay::relay_streams(client_tls, tcp, idle, stop, &counters).await,
        Upstream::Tls(t) => {
            let name = upstream_name(t, log.sni.as_deref(), addr);
            let handshake = TlsConnector::from(Arc::clone(t.client_config()))
                .with_alpn(alpn.into_iter().collect())
                .connect(name, tcp);
            let upstream_tls = match tokio::time::timeout(
                shared.config.timeouts.upstream_connect,
                handshake,
            )
            .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::warn!(route = %route.name, upstream = %addr, error = %e, "upstream TLS handshake failed");
                    close(client_tls).await;
                    return Outcome::UpstreamTlsError;
                }
                Err(_) => {
                    tracing::warn!(route = %route.name, upstream = %addr, "upstream TLS handshake timed out");
                    close(client_tls).await;
                    return Outcome::UpstreamTlsError;
                }
            };
            relay::relay_streams(client_tls, upstream_tls, idle, stop, &counters).await
        }
    };
    log.bytes_up = counters.up.load(Ordering::Relaxed);
    log.bytes_down = counters.down.load(Ordering::Relaxed);
    shared.after_relay(&end, route)
}

/// The name the backend is asked for: the route's `upstream.sni`, else the
/// client's SNI, else (a client without SNI) the backend's address.
fn upstream_name(
    t: &UpstreamTls,
    client_sni: Option<&str>,
    addr: SocketAddr,
) -> ServerName<'static> {
    if let Some(n) = &t.sni {
        return n.clone();
    }
    client_sni
        .and_then(|s| ServerName::try_from(s.to_string()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
}

/// Ends a terminated connection we cannot serve: close_notify, then close.
async fn close(mut client: ClientTls) {
    let _ = tokio::time::timeout(CLOSE_LINGER, client.shutdown()).await;
}
