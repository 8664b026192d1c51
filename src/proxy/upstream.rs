//! Connecting to a route's backends: in order, each address of each backend,
//! each attempt under the connect timeout; the first that answers wins.
//! Addresses that failed recently are tried last (passive health), and when
//! everything fails the kind of failure becomes the connection's outcome.
//! A name's resolved addresses pass the resolver's screen first
//! (`crate::dns::screen`): a refused one is dropped, never connected to, and
//! never marks the backend as failing.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::conn_log::ConnLog;
use super::health::Health;
use super::outcome::Outcome;
use super::proxy_protocol;
use super::relay::write_all;
use super::Shared;
use crate::dns::{Dns, DnsError};
use crate::routing::{Backend, BackendHost, Route, RouteEntry};

/// How one attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Refused,
    Timeout,
    DnsNotFound,
    DnsUnavailable,
    /// Every address the name resolved to was refused by the screen.
    AddressRefused,
    /// The proxy itself is out of something a connect needs (file
    /// descriptors, memory, local ports): says nothing about the backend.
    Local,
    Other,
}

/// Every backend failed; says how each one did.
#[derive(Debug, Default)]
pub struct ConnectError {
    pub attempts: Vec<(String, Failure, String)>,
}

impl ConnectError {
    /// One outcome for the connection: the proxy's own exhaustion if any
    /// attempt met it, else the failure kind when every attempt failed the
    /// same way, else the generic connect error.
    pub fn outcome(&self) -> Outcome {
        if self.attempts.iter().any(|(_, k, _)| *k == Failure::Local) {
            return Outcome::LocalResourceExhausted;
        }
        let mut kinds = self.attempts.iter().map(|(_, k, _)| *k);
        let first = kinds.next();
        if first.is_none() || kinds.any(|k| Some(k) != first) {
            return Outcome::UpstreamConnectError;
        }
        match first {
            Some(Failure::Refused) => Outcome::UpstreamRefused,
            Some(Failure::Timeout) => Outcome::UpstreamTimeout,
            Some(Failure::DnsNotFound) => Outcome::DnsError,
            Some(Failure::DnsUnavailable) => Outcome::DnsUnavailable,
            Some(Failure::AddressRefused) => Outcome::BackendAddressRefused,
            _ => Outcome::UpstreamConnectError,
        }
    }
}

impl ConnectError {
    /// Trying more backends would fail the same way.
    fn out_of_local_resources(&self) -> bool {
        self.attempts
            .last()
            .is_some_and(|(_, k, _)| *k == Failure::Local)
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (backend, _, why)) in self.attempts.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{backend}: {why}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConnectError {}

/// Connects to the first backend of `route` that accepts. Addresses in
/// cool-down are kept for a second pass, so they are used only when nothing
/// else answers.
///
/// `first` is sent as soon as a connect succeeds (see [`attempt`]); the
/// answer says how much of it went.
pub async fn connect(
    route: &Route,
    dns: &Dns,
    health: &Health,
    timeout: Duration,
    failures: &prometheus::IntCounter,
    first: &[u8],
) -> Result<(TcpStream, SocketAddr, usize), ConnectError> {
    let mut err = ConnectError::default();
    let r = connect_inner(route, dns, health, timeout, &mut err, first).await;
    // Neither the proxy's own shortage nor a refused address is the backend's.
    let backend_failures = err
        .attempts
        .iter()
        .filter(|(_, k, _)| !matches!(k, Failure::Local | Failure::AddressRefused));
    failures.inc_by(backend_failures.count() as u64);
    r.ok_or(err)
}

async fn connect_inner(
    route: &Route,
    dns: &Dns,
    health: &Health,
    timeout: Duration,
    err: &mut ConnectError,
    first: &[u8],
) -> Option<(TcpStream, SocketAddr, usize)> {
    let mut cooling: Vec<(SocketAddr, Label<'_>)> = Vec::new();
    for b in &route.backends {
        match &b.host {
            BackendHost::Ip(ip) => {
                let addr = SocketAddr::new(*ip, b.port);
                if health.is_cooling(addr) {
                    cooling.push((addr, Label::Backend(b)));
                } else if let Some((s, n)) =
                    attempt(addr, Label::Backend(b), health, timeout, err, first).await
                {
                    return Some((s, addr, n));
                } else if err.out_of_local_resources() {
                    return None;
                }
            }
            BackendHost::Name(name) => match dns.resolve(name).await {
                Ok(ips) => {
                    let admitted: Vec<IpAddr> = ips
                        .iter()
                        .copied()
                        .filter(|ip| {
                            let addr = SocketAddr::new(*ip, b.port);
                            dns.admits(&route.name, b, addr, &route.allow_internal)
                                .is_ok()
                        })
                        .collect();
                    if admitted.is_empty() {
                        let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
                        err.attempts.push((
                            b.to_string(),
                            Failure::AddressRefused,
                            format!(
                                "resolves only to refused internal addresses ({})",
                                list.join(", ")
                            ),
                        ));
                    }
                    for ip in admitted {
                        let addr = SocketAddr::new(ip, b.port);
                        if health.is_cooling(addr) {
                            cooling.push((addr, Label::Resolved(b, addr)));
                        } else if let Some((s, n)) =
                            attempt(addr, Label::Resolved(b, addr), health, timeout, err, first)
                                .await
                        {
                            return Some((s, addr, n));
                        } else if err.out_of_local_resources() {
                            return None;
                        }
                    }
                }
                Err(e) => {
                    let kind = match e {
                        DnsError::NotFound { .. } => Failure::DnsNotFound,
                        DnsError::Unavailable { .. } => Failure::DnsUnavailable,
                    };
                    err.attempts.push((b.to_string(), kind, e.to_string()));
                }
            },
        }
    }
    for (addr, label) in cooling {
        if let Some((s, n)) = attempt(addr, label, health, timeout, err, first).await {
            return Some((s, addr, n));
        } else if err.out_of_local_resources() {
            return None;
        }
    }
    None
}

/// How a failed attempt names its backend. Formatted only when an attempt
/// fails: a connection that gets its backend at the first try formats
/// nothing (the string cost an allocation and a formatting pass per
/// connection, about 1 % of a passthrough connection's CPU in a profile).
#[derive(Clone, Copy)]
enum Label<'a> {
    /// An IP backend: its address is its name.
    Backend(&'a Backend),
    /// One address a backend's name resolved to.
    Resolved(&'a Backend, SocketAddr),
}

impl fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Label::Backend(b) => b.fmt(f),
            Label::Resolved(b, addr) => write!(f, "{b} ({addr})"),
        }
    }
}

/// One connect attempt; on success, the stream and how much of `first`
/// is sent.
async fn attempt(
    addr: SocketAddr,
    label: Label<'_>,
    health: &Health,
    timeout: Duration,
    err: &mut ConnectError,
    first: &[u8],
) -> Option<(TcpStream, usize)> {
    match connect_sending(addr, timeout, first).await {
        Ok(ok) => {
            health.succeeded(addr);
            Some(ok)
        }
        Err(Some(e)) => {
            let kind = failure(&e);
            // The proxy's own shortage is no reason to avoid the backend.
            if kind != Failure::Local {
                health.failed(addr);
            }
            err.attempts.push((label.to_string(), kind, e.to_string()));
            None
        }
        Err(None) => {
            health.failed(addr);
            err.attempts.push((
                label.to_string(),
                Failure::Timeout,
                format!("connect timed out after {timeout:?}"),
            ));
            None
        }
    }
}

/// Connects to `addr` and sends `first` at once, before anything waits:
/// on loopback and near backends the handshake is over by the time
/// `connect(2)` returns, and the one `send` that then succeeds is the
/// proof. That saves, per connection, the wait for writability (a trip
/// through the event loop), the `SO_ERROR` read, and the connect timer,
/// whose registration costs an `eventfd` write whenever it is the
/// worker's earliest timer. A send that would block means "still
/// connecting": then it waits as any connect does, under `timeout`, and
/// sends nothing (the caller writes `first`). A refused connect fails the
/// send just as it would fail the wait. `Err(None)`: timed out.
async fn connect_sending(
    addr: SocketAddr,
    timeout: Duration,
    first: &[u8],
) -> Result<(TcpStream, usize), Option<io::Error>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    // Before the connect, so it costs no extra round with the kernel later.
    socket.set_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(EINPROGRESS) => {}
        Err(e) => return Err(Some(e)),
    }
    let stream = TcpStream::from_std(socket.into())?;
    if !first.is_empty() {
        match socket2::SockRef::from(&stream).send(first) {
            Ok(n) => return Ok((stream, n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(Some(e)),
        }
    }
    let connected = std::future::poll_fn(|cx| stream.poll_write_ready(cx));
    match tokio::time::timeout(timeout, connected).await {
        Err(_) => return Err(None),
        Ok(r) => r?,
    }
    match stream.take_error()? {
        Some(e) => Err(Some(e)),
        None => Ok((stream, 0)),
    }
}

/// `connect(2)` on a non-blocking socket: the handshake goes on.
const EINPROGRESS: i32 = 115;

/// What a failed connect says about the backend.
fn failure(e: &io::Error) -> Failure {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL (no local port).
    if let Some(24 | 23 | 105 | 12 | 99) = e.raw_os_error() {
        return Failure::Local;
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Failure::Refused,
        io::ErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Other,
    }
}

/// Connects a route's upstream for one connection: picks a backend, counts
/// the connect time, notes it in the log, and sends the PROXY header first
/// when the route asks for one. On failure, the outcome to report.
pub async fn connect_route(
    shared: &Shared,
    entry: &RouteEntry,
    log: &mut ConnLog,
) -> Result<TcpStream, Outcome> {
    connect_route_sending(shared, entry, log, &[]).await
}

/// As [`connect_route`], then sends `payload` (passthrough: the
/// ClientHello), after the PROXY header if any. The bytes go out with the
/// connect when it is quick ([`connect_sending`]); a connect that is not
/// quick is waited for first. Either way all of it is sent on `Ok`.
pub async fn connect_route_sending(
    shared: &Shared,
    entry: &RouteEntry,
    log: &mut ConnLog,
    payload: &[u8],
) -> Result<TcpStream, Outcome> {
    let route = &entry.route;
    let start = Instant::now();
    let metrics = entry.metrics(&shared.metrics);
    let with_header;
    let first = if route.proxy_protocol {
        let (header, len) = proxy_protocol::v2_header(log.client, log.local);
        with_header = [&header[..len], payload].concat();
        &with_header[..]
    } else {
        payload
    };
    let (stream, addr, sent) = connect(
        route,
        &shared.dns,
        &shared.health,
        shared.config.timeouts.upstream_connect,
        &metrics.connect_failures,
        first,
    )
    .await
    .map_err(|e| {
        tracing::warn!(route = %route.name, error = %e, "no backend accepted");
        e.outcome()
    })?;
    log.upstream = Some(addr);
    metrics.connect.observe(start.elapsed().as_secs_f64());
    write_all(&stream, &first[sent..]).await.map_err(|e| {
        tracing::debug!(error = %e, "writing the first bytes upstream failed");
        Outcome::UpstreamError
    })?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempts(kinds: &[Failure]) -> ConnectError {
        ConnectError {
            attempts: kinds
                .iter()
                .map(|k| ("b:1".to_string(), *k, String::new()))
                .collect(),
        }
    }

    #[test]
    fn refused_addresses_are_their_own_outcome_only_when_nothing_else_failed() {
        use Failure::*;
        let o = |k: &[Failure]| attempts(k).outcome();
        assert_eq!(o(&[AddressRefused]), Outcome::BackendAddressRefused);
        assert_eq!(
            o(&[AddressRefused, AddressRefused]),
            Outcome::BackendAddressRefused
        );
        assert_eq!(o(&[AddressRefused, Refused]), Outcome::UpstreamConnectError);
        assert_eq!(o(&[AddressRefused, Local]), Outcome::LocalResourceExhausted);
    }

    /// A failed attempt still names its backend, as written and, for a
    /// name, with the address tried.
    #[tokio::test]
    async fn a_failed_attempt_names_its_backend_and_the_address_tried() {
        // A port that was just free: nothing listens, the connect is refused.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let named = Backend {
            host: BackendHost::Name("app.internal".into()),
            port: addr.port(),
        };
        let ip = Backend {
            host: BackendHost::Ip(addr.ip()),
            port: addr.port(),
        };
        let health = Health::new(Duration::from_secs(1));
        let mut err = ConnectError::default();
        let t = Duration::from_secs(5);
        for label in [Label::Resolved(&named, addr), Label::Backend(&ip)] {
            assert!(attempt(addr, label, &health, t, &mut err, b"hello")
                .await
                .is_none());
        }
        let names: Vec<&str> = err.attempts.iter().map(|a| a.0.as_str()).collect();
        assert_eq!(
            names,
            [
                format!("app.internal:{} ({addr})", addr.port()),
                addr.to_string()
            ]
        );
        assert!(err.attempts.iter().all(|a| a.1 == Failure::Refused));
    }
}
