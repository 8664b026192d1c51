//! Passthrough: the enclave holds the certificate, so the proxy connects to
//! the backend, replays the ClientHello bytes it read, and relays the rest
//! untouched. Not one byte is added or changed.

use tokio::net::TcpStream;

use super::conn_log::ConnLog;
use super::handoff;
use super::outcome::Outcome;
use super::relay::Carry;
use super::upstream;
use super::Shared;
use crate::routing::table::OpenGuard;

/// A function returning an `async` block rather than an `async fn`, so that
/// the arguments are held once: this state is most of what an idle
/// passthrough connection costs.
#[allow(clippy::manual_async_fn)]
pub fn run<'a>(
    shared: &'a Shared,
    client: TcpStream,
    hello_bytes: Vec<u8>,
    counted: OpenGuard,
    log: &'a mut ConnLog,
) -> impl std::future::Future<Output = Outcome> + Send + 'a {
    async move {
        // The route, counted among its open connections until this ends
        // (or until the connection moves to the next process).
        let entry = counted.entry();
        // Boxed: a DNS lookup's state is large and over once connected.
        // The ClientHello goes with the connect (`connect_route_sending`).
        let connecting = upstream::connect_route_sending(shared, entry, log, &hello_bytes);
        let upstream = match Box::pin(connecting).await {
            Ok(s) => s,
            Err(outcome) => return outcome,
        };
        let hello_bytes_len = hello_bytes.len() as u64;
        drop(hello_bytes);

        log.bytes_up = hello_bytes_len;
        // Relayed here, or handed to the next process by an upgrade.
        handoff::relay(shared, client, upstream, entry, log, Carry::default()).await
    }
}
