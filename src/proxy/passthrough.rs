//! Passthrough: the enclave holds the certificate, so the proxy connects to
//! the backend, replays the ClientHello bytes it read, and relays the rest
//! untouched. Not one byte is added or changed.
//!
//! Two phases, awaited one after the other by the connection's task
//! (`conn::handle`): [`connect`], inside the phases before it, and then the
//! relay (`handoff::relay`) on its own, so that an idle connection's task
//! holds the relay's state and not the earlier phases' as well.

use tokio::net::TcpStream;

use super::conn_log::ConnLog;
use super::outcome::Outcome;
use super::upstream;
use super::Shared;
use crate::routing::RouteEntry;

/// Connects to the route's backend, the ClientHello sent with the connect
/// (`connect_route_sending`), and counts it as relayed up.
pub async fn connect(
    shared: &Shared,
    entry: &RouteEntry,
    hello_bytes: Vec<u8>,
    log: &mut ConnLog,
) -> Result<TcpStream, Outcome> {
    // Boxed: a DNS lookup's state is large and over once connected.
    let connecting = upstream::connect_route_sending(shared, entry, log, &hello_bytes);
    let upstream = Box::pin(connecting).await?;
    log.bytes_up = hello_bytes.len() as u64;
    Ok(upstream)
}
