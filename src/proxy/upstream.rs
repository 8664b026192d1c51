//! Connecting to a route's backends: in order, each address of each backend,
//! each attempt under the connect timeout; the first that answers wins.
//! Addresses that failed recently are tried last (passive health), and when
//! everything fails the kind of failure becomes the connection's outcome.

use std::fmt;
use std::io;
use std::net::SocketAddr;
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
use crate::routing::{Backend, BackendHost, RouteEntry};

/// How one attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Refused,
    Timeout,
    DnsNotFound,
    DnsUnavailable,
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

/// Connects to the first backend that accepts. Addresses in cool-down are
/// kept for a second pass, so they are used only when nothing else answers.
pub async fn connect(
    backends: &[Backend],
    dns: &Dns,
    health: &Health,
    timeout: Duration,
    failures: &prometheus::IntCounter,
) -> Result<(TcpStream, SocketAddr), ConnectError> {
    let mut err = ConnectError::default();
    let r = connect_inner(backends, dns, health, timeout, &mut err).await;
    let backend_failures = err.attempts.iter().filter(|(_, k, _)| *k != Failure::Local);
    failures.inc_by(backend_failures.count() as u64);
    r.ok_or(err)
}

async fn connect_inner(
    backends: &[Backend],
    dns: &Dns,
    health: &Health,
    timeout: Duration,
    err: &mut ConnectError,
) -> Option<(TcpStream, SocketAddr)> {
    let mut cooling: Vec<(SocketAddr, String)> = Vec::new();
    for b in backends {
        match &b.host {
            BackendHost::Ip(ip) => {
                let addr = SocketAddr::new(*ip, b.port);
                if health.is_cooling(addr) {
                    cooling.push((addr, b.to_string()));
                } else if let Some(s) = attempt(addr, b.to_string(), health, timeout, err).await {
                    return Some((s, addr));
                } else if err.out_of_local_resources() {
                    return None;
                }
            }
            BackendHost::Name(name) => match dns.resolve(name).await {
                Ok(ips) => {
                    for ip in ips {
                        let addr = SocketAddr::new(ip, b.port);
                        if health.is_cooling(addr) {
                            cooling.push((addr, format!("{b} ({addr})")));
                        } else if let Some(s) =
                            attempt(addr, format!("{b} ({addr})"), health, timeout, err).await
                        {
                            return Some((s, addr));
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
        if let Some(s) = attempt(addr, label, health, timeout, err).await {
            return Some((s, addr));
        } else if err.out_of_local_resources() {
            return None;
        }
    }
    None
}

async fn attempt(
    addr: SocketAddr,
    label: String,
    health: &Health,
    timeout: Duration,
    err: &mut ConnectError,
) -> Option<TcpStream> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            health.succeeded(addr);
            Some(s)
        }
        Ok(Err(e)) => {
            let kind = failure(&e);
            // The proxy's own shortage is no reason to avoid the backend.
            if kind != Failure::Local {
                health.failed(addr);
            }
            err.attempts.push((label, kind, e.to_string()));
            None
        }
        Err(_) => {
            health.failed(addr);
            err.attempts.push((
                label,
                Failure::Timeout,
                format!("connect timed out after {timeout:?}"),
            ));
            None
        }
    }
}

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
    let route = &entry.route;
    let start = Instant::now();
    let metrics = entry.metrics(&shared.metrics);
    let (stream, addr) = connect(
        &route.backends,
        &shared.dns,
        &shared.health,
        shared.config.timeouts.upstream_connect,
        &metrics.connect_failures,
    )
    .await
    .map_err(|e| {
        tracing::warn!(route = %route.name, error = %e, "no backend accepted");
        e.outcome()
    })?;
    log.upstream = Some(addr);
    metrics.connect.observe(start.elapsed().as_secs_f64());
    if route.proxy_protocol {
        let (header, len) = proxy_protocol::v2_header(log.client, log.local);
        write_all(&stream, &header[..len]).await.map_err(|e| {
            tracing::debug!(error = %e, "writing the PROXY header failed");
            Outcome::UpstreamError
        })?;
    }
    Ok(stream)
}
