//! What is known about one connection as it goes (client, SNI, route,
//! upstream, bytes), and the access-log line it ends with. Its own file:
//! every phase of a connection (detection, passthrough, terminate, the
//! upstream connect) fills it in, and none of them needs the others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{Outcome, Shared};
use crate::routing::RouteEntry;

/// What a connection knows about the listener that accepted it.
#[derive(Debug)]
pub struct ListenerInfo {
    /// The address the listener is bound to.
    pub local: SocketAddr,
    /// Networks whose connections start with a PROXY header; `None`: this
    /// listener takes no PROXY headers.
    pub trusted_proxies: Option<Vec<ipnet::IpNet>>,
}

/// What the access-log line says about a connection.
#[derive(Debug)]
pub struct ConnLog {
    /// The client: the TCP peer, or the source a trusted PROXY header gave.
    pub client: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    pub sni: Option<String>,
    /// The route chosen, once there is one.
    pub entry: Option<Arc<RouteEntry>>,
    pub upstream: Option<SocketAddr>,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

impl ConnLog {
    /// For a connection `info`'s listener accepted from `peer`. A wildcard
    /// listener's real local address is the socket's own.
    pub fn accepted(peer: SocketAddr, stream: &tokio::net::TcpStream, info: &ListenerInfo) -> Self {
        let local = if info.local.ip().is_unspecified() {
            stream.local_addr().unwrap_or(info.local)
        } else {
            info.local
        };
        Self::new(peer, local)
    }

    pub fn new(client: SocketAddr, local: SocketAddr) -> Self {
        Self {
            client,
            local,
            sni: None,
            entry: None,
            upstream: None,
            bytes_up: 0,
            bytes_down: 0,
        }
    }
}

/// One line per connection, at info level, target `mse_proxy::access`.
pub fn access_log(shared: &Shared, outcome: Outcome, log: &ConnLog, took: Duration) {
    if !shared.config.log.access_log {
        return;
    }
    tracing::info!(
        target: "mse_proxy::access",
        client = %log.client,
        sni = log.sni.as_deref().unwrap_or("-"),
        route = log.entry.as_ref().map_or("-", |e| e.route.name.as_str()),
        upstream = %OrDash(log.upstream),
        outcome = outcome.as_str(),
        bytes_in = log.bytes_up,
        bytes_out = log.bytes_down,
        duration_ms = took.as_millis() as u64,
    );
}

/// Displays the value, or `-` when there is none, without allocating.
struct OrDash<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}
