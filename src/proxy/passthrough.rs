//! Passthrough: the enclave holds the certificate, so the proxy connects to
//! the backend, replays the ClientHello bytes it read, and relays the rest
//! untouched. Not one byte is added or changed.

use tokio::net::TcpStream;

use super::conn_log::ConnLog;
use super::outcome::Outcome;
use super::relay::{self, Counters};
use super::upstream;
use super::Shared;
use crate::routing::table::OpenGuard;

/// A function returning an `async` block rather than an `async fn`, so that
/// the arguments are held once: this state is most of what an idle
/// passthrough connection costs.
#[allow(clippy::manual_async_fn)]
pub fn run<'a>(
    shared: &'a Shared,
    mut client: TcpStream,
    hello_bytes: Vec<u8>,
    counted: OpenGuard,
    log: &'a mut ConnLog,
) -> impl std::future::Future<Output = Outcome> + Send + 'a {
    async move {
        // The route, counted among its open connections until this ends.
        let entry = counted.entry();
        let route = &entry.route;
        // Boxed: a DNS lookup's state is large and over once connected.
        let mut upstream = match Box::pin(upstream::connect_route(shared, entry, log)).await {
            Ok(s) => s,
            Err(outcome) => return outcome,
        };

        if let Err(e) = relay::write_all(&upstream, &hello_bytes).await {
            tracing::debug!(error = %e, "writing the ClientHello upstream failed");
            return Outcome::UpstreamError;
        }
        let hello_len = hello_bytes.len() as u64;
        drop(hello_bytes);

        let counters = Counters::default();
        let stop = shared.stop_signal(entry);
        let relay = relay::relay(
            &mut client,
            &mut upstream,
            shared.config.timeouts.idle,
            stop,
            &counters,
            shared.config.splice,
        );
        let end = relay.await;
        log.bytes_up = hello_len + counters.up.load(std::sync::atomic::Ordering::Relaxed);
        log.bytes_down = counters.down.load(std::sync::atomic::Ordering::Relaxed);
        shared.after_relay(&end, route)
    }
}
