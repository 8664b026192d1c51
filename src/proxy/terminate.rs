//! Terminate: the platform holds the certificate, so the proxy completes the
//! client's TLS handshake itself (replaying the ClientHello bytes it read),
//! opens a new connection to the enclave, plain or TLS, and relays the
//! plaintext between the two. With a TLS enclave the enclave's handshake
//! comes first, so that the client gets the protocol it chose ([`open`]).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::either::Either;

use super::conn_log::ConnLog;
use super::outcome::Outcome;
use super::relay::Counters;
use super::stream_relay::relay_streams;
use super::upstream;
use super::Shared;
use crate::routing::table::OpenGuard;
use crate::routing::RouteEntry;
use crate::tls::alpn::{self, Offer};
use crate::tls::stream::ClientStream;
use crate::tls::terminate::{self, ClientTls, HandshakeError, Termination};
use crate::tls::upstream::{Upstream, UpstreamTls};
use crate::tls::{alert, client_hello};

/// How long a client whose upstream failed is given to take our close_notify.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// The upstream end: plain TCP or TLS, as the route says. One type, so
/// that the relay is one type too and the streams move into it straight
/// from `open`'s answer (matching an enum of two relays would keep the
/// matched value's slot, both streams again, beside the relay).
type UpstreamStream = Either<TcpStream, ClientStream<TcpStream>>;

/// The client's hello as read: its bytes (the handshake's first ciphertext)
/// and whether the client prefers ChaCha20-Poly1305
/// ([`client_hello::ClientHello::chacha_first`]).
pub struct Hello {
    pub bytes: Vec<u8>,
    pub chacha_first: bool,
}

/// Serves one connection on a terminate route. `tls` is the termination
/// state from the same snapshot as `entry`; `deadline` is the one that
/// began at accept, which the client's handshake must also meet.
pub async fn run(
    shared: &Shared,
    client: TcpStream,
    hello: Hello,
    deadline: Instant,
    counted: OpenGuard,
    tls: Option<Arc<Termination>>,
    log: &mut ConnLog,
) -> Outcome {
    // The route, counted among its open connections until this ends.
    let entry = counted.entry();
    // Boxed, and freed before the relay starts: the two handshakes' state
    // is large, and an idle connection should hold only the relay's.
    let opened = Box::pin(open(shared, client, hello, deadline, entry, tls, log));
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

/// Both ends, ready to relay.
///
/// With a TLS upstream the backend is reached first: it is offered the
/// protocols the client offered that the route allows, and the client's
/// handshake is finished afterwards, selecting exactly what the backend
/// selected (or nothing, if it selected nothing), so the client never
/// speaks a protocol the backend did not accept. The ClientHello is already
/// in hand (read under the accept deadline), so this adds no round trip
/// with the client: what the client waits for until its first response is
/// its handshake plus the upstream connect and handshake either way (before,
/// the upstream was reached after the client's handshake); only the
/// client's handshake itself now ends later, by that upstream time. A client
/// that sends a hello and nothing more thus makes the proxy reach the
/// backend, as passthrough always has.
///
/// A plain-TCP upstream negotiates nothing: the client's handshake comes
/// first, with the route's list, as configured.
async fn open(
    shared: &Shared,
    client: TcpStream,
    hello: Hello,
    deadline: Instant,
    entry: &Arc<RouteEntry>,
    tls: Option<Arc<Termination>>,
    log: &mut ConnLog,
) -> Result<(ClientTls, UpstreamStream), Outcome> {
    let route = &entry.route;
    let (Some(settings), Some(tls)) = (&route.terminate, tls) else {
        tracing::error!(route = %route.name, "terminate route without TLS settings in its snapshot");
        return Err(Outcome::ClientTlsError);
    };
    let no_h2 = !settings.h2_opt_in && tls.shared_certificate(log.sni.as_deref());
    let t = match &settings.upstream {
        Upstream::Tls(t) => t,
        Upstream::Plain => {
            let list = if no_h2 {
                alpn::without_h2(&settings.alpn)
            } else {
                settings.alpn.clone()
            };
            let client_tls =
                client_handshake(shared, entry, &tls, &list, client, hello, deadline).await?;
            return match upstream::connect_route(shared, entry, log).await {
                Ok(tcp) => Ok((client_tls, Either::Left(tcp))),
                Err(outcome) => {
                    close(client_tls).await;
                    Err(outcome)
                }
            };
        }
    };

    let client_alpn =
        client_hello::alpn(&hello.bytes, shared.config.max_client_hello_bytes).unwrap_or_default();
    let offer = match alpn::offer(&client_alpn, &settings.alpn, no_h2) {
        Offer::Protocols(p) => p,
        Offer::Mismatch => {
            tracing::warn!(
                route = %route.name,
                client_offered = %names(&client_alpn),
                route_allows = %names(&settings.alpn),
                shared_certificate = no_h2,
                "ALPN mismatch: the client offered no protocol this route gives; refused with no_application_protocol"
            );
            super::refusal::with_alert(client, alert::NO_APPLICATION_PROTOCOL).await;
            return Err(Outcome::AlpnMismatch);
        }
    };

    let upstream_start = Instant::now();
    // The client waits while the backend is reached; that is not its
    // delay, so its handshake deadline moves by as much.
    let client_deadline = |start: Instant| deadline + start.elapsed();
    let tcp = match upstream::connect_route(shared, entry, log).await {
        Ok(s) => s,
        Err(outcome) => {
            // As when the backend was reached after the handshake: the
            // client's handshake completes and the connection closes empty.
            let d = client_deadline(upstream_start);
            if let Ok(c) = client_handshake(shared, entry, &tls, &[], client, hello, d).await {
                close(c).await;
            }
            return Err(outcome);
        }
    };
    let addr = log.upstream.unwrap_or(log.local);
    let name = upstream_name(t, log.sni.as_deref(), addr);
    let handshake = ClientStream::connect(Arc::clone(t.client_config()), name, offer, tcp);
    let failed = match tokio::time::timeout(shared.config.timeouts.upstream_connect, handshake)
        .await
    {
        Ok(Ok(up)) => {
            let selected: Vec<Vec<u8>> =
                up.alpn_protocol().map(<[u8]>::to_vec).into_iter().collect();
            let d = client_deadline(upstream_start);
            let client_tls =
                client_handshake(shared, entry, &tls, &selected, client, hello, d).await?;
            return Ok((client_tls, Either::Right(up)));
        }
        Ok(Err(e)) if refused_every_protocol(&e) => {
            tracing::warn!(
                route = %route.name,
                upstream = %addr,
                client_offered = %names(&client_alpn),
                "ALPN mismatch: the backend accepts none of the protocols the client offered; refused with no_application_protocol"
            );
            super::refusal::with_alert(client, alert::NO_APPLICATION_PROTOCOL).await;
            return Err(Outcome::AlpnMismatch);
        }
        Ok(Err(e)) => {
            tracing::warn!(route = %route.name, upstream = %addr, error = %e, "upstream TLS handshake failed");
            Outcome::UpstreamTlsError
        }
        Err(_) => {
            tracing::warn!(route = %route.name, upstream = %addr, "upstream TLS handshake timed out");
            Outcome::UpstreamTlsError
        }
    };
    let d = client_deadline(upstream_start);
    if let Ok(c) = client_handshake(shared, entry, &tls, &[], client, hello, d).await {
        close(c).await;
    }
    Err(failed)
}

/// The client's handshake, finished with the config selecting only from
/// `alpn`, and its duration observed (the upstream's time not included).
async fn client_handshake(
    shared: &Shared,
    entry: &Arc<RouteEntry>,
    tls: &Termination,
    alpn: &[Vec<u8>],
    client: TcpStream,
    hello: Hello,
    deadline: Instant,
) -> Result<ClientTls, Outcome> {
    let Some(server) = tls.server_config(alpn, hello.chacha_first) else {
        tracing::error!(route = %entry.route.name, alpn = %names(alpn), "no server config for this ALPN list in the snapshot");
        return Err(Outcome::ClientTlsError);
    };
    let start = Instant::now();
    match terminate::accept(server, client, hello.bytes, deadline).await {
        Ok(tls) => {
            entry
                .metrics(&shared.metrics)
                .handshake(&shared.metrics)
                .observe(start.elapsed().as_secs_f64());
            Ok(tls)
        }
        Err(HandshakeError::Timeout) => Err(Outcome::HelloTimeout),
        Err(HandshakeError::Tls(e)) => {
            tracing::debug!(error = %e, "client TLS handshake failed");
            Err(Outcome::ClientTlsError)
        }
    }
}

/// Whether the backend refused the handshake for want of a common
/// protocol (its `no_application_protocol` alert).
fn refused_every_protocol(e: &std::io::Error) -> bool {
    let alert = rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol);
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| *r == alert)
}

/// ALPN names for a log line: `h2,http/1.1`, or `none`; a client's bytes
/// escaped, so a hostile name cannot forge log lines.
fn names(list: &[Vec<u8>]) -> String {
    if list.is_empty() {
        return "none".into();
    }
    list.iter()
        .map(|p| p.escape_ascii().to_string())
        .collect::<Vec<_>>()
        .join(",")
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns, for a function generic over lifetimes.
    fn returned_size<'a, F>(
        _: impl FnOnce(
            &'a Shared,
            TcpStream,
            Hello,
            Instant,
            OpenGuard,
            Option<Arc<Termination>>,
            &'a mut ConnLog,
        ) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }

    /// What an idle terminated connection holds beside its task is this
    /// future (boxed by `conn.rs`): the relay with both TLS streams inline,
    /// the handshakes' state boxed apart and freed before the relay runs.
    /// 2,888 bytes with rustc 1.95, 536 of them beside the streams (the
    /// stop signal's lock-free wait, `routing::closer::Closing`, is 32 of
    /// them); jemalloc serves it from its 3,072-byte class either way.
    #[test]
    fn the_terminate_future_stays_small() {
        let size = returned_size(run);
        let streams = std::mem::size_of::<ClientTls>() + std::mem::size_of::<UpstreamStream>();
        assert!(
            size <= streams + 552,
            "terminate future is {size} bytes for {streams} of streams"
        );
    }
}
