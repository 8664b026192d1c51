//! One accepted connection, from the first byte to the access-log line.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::either::Either;

use super::conn_log::{access_log, ConnLog, ListenerInfo};
use super::outcome::Outcome;
use super::{handoff, passthrough, terminate, Shared};
use crate::config::UnknownSniAction;
use crate::routing::load::Refused;
use crate::routing::Mode;
use crate::tls::alert;
use crate::tls::detect::{read_client_hello_after, read_proxy_header, DetectError, ProxyHeader};

/// Serves one connection. The permit is the connection's slot under the
/// global limit; it is released when this task ends, on every path. `log`
/// comes made ([`ConnLog::accepted`]): the peer is kept there only.
///
/// A function returning an `async` block rather than an `async fn`: an
/// `async fn` keeps each argument twice in its state (the captured value
/// and the local it is moved into), and this state is the task every open
/// connection holds.
#[allow(clippy::manual_async_fn)]
pub fn handle(
    shared: Arc<Shared>,
    client: TcpStream,
    mut log: ConnLog,
    listener: Arc<ListenerInfo>,
    permit: OwnedSemaphorePermit,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        // `permit` is held by the block until its last line.
        let start = Instant::now();
        // Two awaits, not one nested in the other: the relay's state and the
        // earlier phases' share the task's memory instead of adding up. The
        // relay's future is built in a statement of its own and awaited in
        // the next, as one future (awaiting moves it whole): a `Served`
        // kept across the await (a match on it, even one that moves its
        // connection out) would hold the connection's 104 bytes twice for
        // the whole relay.
        let next = match serve(&shared, client, &listener, start, &mut log).await {
            Served::Done(outcome) => Either::Left(std::future::ready(outcome)),
            Served::Relay(conn) => Either::Right(handoff::relay(&shared, conn, &mut log, None)),
        };
        let outcome = next.await;
        let took = start.elapsed();
        match &log.entry {
            Some(e) => e.metrics(&shared.metrics).finished(
                &shared.metrics,
                outcome,
                log.bytes_up,
                log.bytes_down,
                took,
            ),
            None => shared.metrics.unrouted(outcome),
        }
        access_log(&shared, outcome, &log, took);
        drop(permit);
    }
}

fn detect_outcome(e: DetectError) -> Outcome {
    tracing::debug!(error = %e, "no ClientHello");
    match e {
        DetectError::Timeout => Outcome::HelloTimeout,
        DetectError::NotTls => Outcome::NotTls,
        DetectError::Malformed(_) | DetectError::TooLarge => Outcome::BadHello,
        DetectError::Closed | DetectError::Io(_) => Outcome::ClientClosed,
    }
}

/// On a PROXY-protocol listener: reads the header a trusted load balancer
/// must send (and takes the client address from it), and refuses one from
/// anyone else. Returns the bytes read past the header.
async fn proxy_header(
    client: &mut TcpStream,
    trusted: &[ipnet::IpNet],
    deadline: Instant,
    log: &mut ConnLog,
) -> Result<Vec<u8>, Outcome> {
    let from_balancer = trusted.iter().any(|n| n.contains(&log.client.ip()));
    match read_proxy_header(client, deadline).await {
        Ok(ProxyHeader::Present(source, rest)) if from_balancer => {
            if let Some(source) = source {
                log.client = source;
            }
            Ok(rest)
        }
        Ok(ProxyHeader::Present(..)) => {
            tracing::warn!(peer = %log.client, "PROXY header from an untrusted source refused");
            Err(Outcome::ProxyHeaderRefused)
        }
        Ok(ProxyHeader::Absent(_)) if from_balancer => {
            tracing::warn!(peer = %log.client, "trusted load balancer sent no PROXY header");
            Err(Outcome::ProxyHeaderRefused)
        }
        Ok(ProxyHeader::Absent(bytes)) => Ok(bytes),
        Err(DetectError::Malformed(why)) => {
            tracing::warn!(peer = %log.client, why, "broken PROXY header");
            Err(Outcome::ProxyHeaderRefused)
        }
        Err(e) => Err(detect_outcome(e)),
    }
}

/// How [`serve`] ended: the connection is over, or a passthrough one is
/// connected and its relay is next.
enum Served<'a> {
    Done(Outcome),
    Relay(handoff::Relayed<'a>),
}

impl From<Outcome> for Served<'_> {
    fn from(o: Outcome) -> Self {
        Served::Done(o)
    }
}

/// Every phase up to the relay. A function returning an `async` block,
/// like [`handle`], so that `client` is held once.
#[allow(clippy::manual_async_fn)]
fn serve<'a: 'l, 'l>(
    shared: &'a Shared,
    mut client: TcpStream,
    listener: &'a ListenerInfo,
    start: Instant,
    log: &'l mut ConnLog,
) -> impl std::future::Future<Output = Served<'a>> + Send + 'l {
    async move {
        // TCP_NODELAY came with the socket: set on the listener
        // (`listener::bind`), which Linux copies to accepted sockets.
        let deadline = start + shared.config.timeouts.client_hello;
        let initial = match &listener.trusted_proxies {
            Some(trusted) => {
                match Box::pin(proxy_header(&mut client, trusted, deadline, log)).await {
                    Ok(rest) => rest,
                    Err(outcome) => return outcome.into(),
                }
            }
            None => Vec::new(),
        };
        // Before any slot is taken: a client looping on connect is refused
        // at the cost of this check. By the PROXY header's client too.
        if !shared.client_rate.allow(log.client.ip(), Instant::now()) {
            return Outcome::ClientRateLimit.into();
        }
        // Held for the whole connection: one client cannot take every slot
        // with connections it routes and then leaves idle. Counted by the
        // client the PROXY header names, if a trusted balancer sent one.
        let Some(per_client) = shared.per_client.try_acquire(log.client.ip()) else {
            return Outcome::ClientTotalLimit.into();
        };
        // Held until the hello is in: one client cannot fill the proxy with
        // connections that never say what they want.
        let Some(slot) = shared.unrouted.try_acquire(log.client.ip()) else {
            return Outcome::ClientLimit.into();
        };
        // Each phase's future is boxed and freed when the phase ends, so what a
        // connection holds while it relays (the task's own state) is only the
        // relay's, not the largest phase's (the TLS handshake's, a DNS
        // lookup's): idle connections cost less.
        let detected = match Box::pin(read_client_hello_after(
            &mut client,
            shared.config.max_client_hello_bytes,
            deadline,
            initial,
        ))
        .await
        {
            Ok(d) => {
                shared
                    .metrics
                    .hello_seconds
                    .observe(start.elapsed().as_secs_f64());
                d
            }
            Err(e) => return detect_outcome(e).into(),
        };
        drop(slot);

        let span = tracing::Span::current();
        // The route and, for a terminate route, its TLS config come from one
        // snapshot: certificates swap with the routes they serve.
        let (entry, server_tls) = {
            let snapshot = shared.router.load();
            let found = match &detected.hello.sni {
                Some(sni) => snapshot.lookup(sni),
                None => snapshot.no_sni_route(),
            };
            match found {
                Some(e) => (Arc::clone(e), snapshot.termination_for(&e.route)),
                None => {
                    let outcome = if detected.hello.sni.is_some() {
                        Outcome::UnknownSni
                    } else {
                        Outcome::NoSni
                    };
                    log.sni = detected.hello.sni;
                    span.record("sni", log.sni.as_deref());
                    drop(snapshot);
                    Box::pin(refuse(shared, client)).await;
                    return outcome.into();
                }
            }
        };
        log.sni = detected.hello.sni;
        log.entry = Some(Arc::clone(&entry));
        span.record("sni", log.sni.as_deref());
        span.record("route", entry.route.name.as_str());

        if entry.route.expired_at(chrono::Utc::now()) {
            Box::pin(refuse(shared, client)).await;
            return Outcome::Expired.into();
        }
        // The route's own share: a flood on one app is refused here, before
        // it costs a backend connect (or a handshake), and cannot take the
        // slots of another. Counted on the route, so refusals show per route.
        let limits = entry.route.limits.effective(&shared.config.route_defaults);
        let open = match entry.admit(&limits, Instant::now()) {
            Ok(open) => open,
            Err(refused) => {
                return match refused {
                    Refused::Full => Outcome::RouteLimit,
                    Refused::Rate => Outcome::RouteRateLimit,
                }
                .into()
            }
        };

        match entry.route.mode {
            Mode::Passthrough => {
                match passthrough::connect(shared, &entry, detected.bytes, log).await {
                    Ok(upstream) => Served::Relay(handoff::Relayed {
                        client,
                        upstream,
                        open,
                        per_client,
                    }),
                    Err(outcome) => outcome.into(),
                }
            }
            // Boxed: its state is larger, and passthrough connections do
            // not pay for its size.
            Mode::Terminate => {
                let hello = terminate::Hello {
                    bytes: detected.bytes,
                    chacha_first: detected.hello.chacha_first,
                };
                Box::pin(terminate::run(
                    shared, client, hello, deadline, open, server_tls, log,
                ))
                .await
                .into()
            }
        }
    }
}

/// Refuses a client that sent a whole ClientHello we will not serve: a fatal
/// `unrecognized_name` alert or a plain close, as configured.
async fn refuse(shared: &Shared, client: TcpStream) {
    if shared.config.unknown_sni == UnknownSniAction::Close {
        return;
    }
    super::refusal::with_alert(client, alert::UNRECOGNIZED_NAME).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle passthrough connection holds this task's state, its two
    /// sockets' registrations and nothing else: what it costs is mostly
    /// this size: 1,368 bytes with rustc 1.95, the relay included (before:
    /// 680 for the task, plus about 900 for a separately boxed passthrough
    /// phase); 1,960 since a passthrough relay can hand itself off in an
    /// upgrade (`handoff::relay`: the pause wait, the carry, the loop that
    /// resumes a connection not taken); 1,048 (1,008 in a release build)
    /// since the relay is awaited after the earlier phases rather than
    /// inside them, its directions are hand-written state machines, and
    /// the peer address is kept in the log only; 888 (864 in a release
    /// build) since the relay's future is built before it is awaited (the
    /// `Served` it came from is no longer kept beside it) and the carry of
    /// an adopted connection is boxed. With tokio's task header and trailer
    /// (about 100 bytes) the release allocation, 128-byte aligned, is
    /// 1,024 bytes instead of 1,152 (2,048 before the relay was awaited on
    /// its own). The bound is where it would step up to 1,152 again.
    #[tokio::test]
    async fn the_connection_task_stays_small() {
        let text = "[[listener]]\naddress = \"127.0.0.1:0\"\n";
        let cfg = crate::config::Config::from_toml(std::path::Path::new("t.toml"), text).unwrap();
        let router = crate::routing::Router::new(crate::routing::Snapshot::default());
        let proxy = super::super::ProxyHandle::start(cfg, router).unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let peer = client.local_addr().unwrap();
        let info = Arc::new(ListenerInfo {
            local: peer,
            trusted_proxies: None,
        });
        let permit = Arc::clone(&proxy.shared.limit).try_acquire_owned().unwrap();
        let log = ConnLog::accepted(peer, &client, &info);
        let task = handle(Arc::clone(&proxy.shared), client, log, info, permit);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 920, "connection task is {size} bytes");
    }
}
