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
use tokio_util::either::Either;

use super::conn_log::ConnLog;
use super::outcome::Outcome;
use super::relay::Counters;
use super::stream_relay::relay_streams;
use super::upstream;
use super::Shared;
use crate::routing::table::OpenGuard;
use crate::routing::RouteEntry;
use crate::tls::terminate::{self, ClientTls, HandshakeError};
use crate::tls::upstream::{Upstream, UpstreamTls};

/// How long a client whose upstream failed is given to take our close_notify.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// The upstream end: plain TCP or TLS, as the route says. One type, so
/// that the relay is one type too and the streams move into it straight
/// from `open`'s answer (matching an enum of two relays would keep the
/// matched value's slot, both streams again, beside the relay).
type UpstreamStream = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

/// Serves one connection on a terminate route. `server` is the TLS config
/// from the same snapshot as `entry`; `deadline` is the one that began at
/// accept, which the handshake must also meet.
pub async fn run(
    shared: &Shared,
    client: TcpStream,
    hello_bytes: Vec<u8>,
    deadline: Instant,
    counted: OpenGuard,
    server: Option<Arc<ServerConfig>>,
    log: &mut ConnLog,
) -> Outcome {
    // The route, counted among its open connections until this ends.
    let entry = counted.entry();
    // Boxed, and freed before the relay starts: the two handshakes' state
    // is large, and an idle connection should hold only the relay's.
    let opened = Box::pin(open(
        shared,
        client,
        hello_bytes,
        deadline,
        entry,
        server,
        log,
    ));
    let (client_tls, upstream) = match opened.await {
        Ok(ends) => ends,
        Err(outcome) => return outcome,
    };
    let counters = Counters::default();
    let stop = shared.stop_signal(entry);
    let idle = shared.config.timeouts.idle;
    // The streams move straight into the relay, which holds them once.
    let end = relay_streams(client_tls, upstream, idle, stop, &counters).await;
    log.bytes_up = counters.up.load(Ordering::Relaxed);
    log.bytes_down = counters.down.load(Ordering::Relaxed);
    shared.after_relay(&end, &entry.route)
}

/// The client's handshake, the upstream connection, and its handshake if
/// the route wants TLS upstream.
async fn open(
    shared: &Shared,
    client: TcpStream,
    hello_bytes: Vec<u8>,
    deadline: Instant,
    entry: &Arc<RouteEntry>,
    server: Option<Arc<ServerConfig>>,
    log: &mut ConnLog,
) -> Result<(ClientTls, UpstreamStream), Outcome> {
    let route = &entry.route;
    let (Some(settings), Some(server)) = (&route.terminate, server) else {
        tracing::error!(route = %route.name, "terminate route without TLS settings in its snapshot");
        return Err(Outcome::ClientTlsError);
    };

    let handshake_start = Instant::now();
    let client_tls = match terminate::accept(server, client, hello_bytes, deadline).await {
        Ok(tls) => tls,
        Err(HandshakeError::Timeout) => return Err(Outcome::HelloTimeout),
        Err(HandshakeError::Tls(e)) => {
            tracing::debug!(error = %e, "client TLS handshake failed");
            return Err(Outcome::ClientTlsError);
        }
    };
    entry
        .metrics(&shared.metrics)
        .handshake(&shared.metrics)
        .observe(handshake_start.elapsed().as_secs_f64());
    let alpn = client_tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);

    let tcp = match upstream::connect_route(shared, entry, log).await {
        Ok(s) => s,
        Err(outcome) => {
            close(client_tls).await;
            return Err(outcome);
        }
    };
    let addr = log.upstream.unwrap_or(log.local);
    let t = match &settings.upstream {
        Upstream::Plain => return Ok((client_tls, Either::Left(tcp))),
        Upstream::Tls(t) => t,
    };
    let name = upstream_name(t, log.sni.as_deref(), addr);
    let handshake = TlsConnector::from(Arc::clone(t.client_config()))
        .with_alpn(alpn.into_iter().collect())
        .connect(name, tcp);
    match tokio::time::timeout(shared.config.timeouts.upstream_connect, handshake).await {
        Ok(Ok(tls)) => Ok((client_tls, Either::Right(tls))),
        Ok(Err(e)) => {
            tracing::warn!(route = %route.name, upstream = %addr, error = %e, "upstream TLS handshake failed");
            close(client_tls).await;
            Err(Outcome::UpstreamTlsError)
        }
        Err(_) => {
            tracing::warn!(route = %route.name, upstream = %addr, "upstream TLS handshake timed out");
            close(client_tls).await;
            Err(Outcome::UpstreamTlsError)
        }
    }
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
