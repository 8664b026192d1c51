//! Passthrough: the enclave holds the certificate, so the proxy connects to
//! the backend, replays the ClientHello bytes it read, and relays the rest
//! untouched. Not one byte is added or changed.

use std::sync::Arc;

use tokio::net::TcpStream;

use super::conn::ConnLog;
use super::outcome::Outcome;
use super::relay::{self, Counters, RelayEnd};
use super::upstream;
use super::Shared;
use crate::routing::RouteEntry;

pub async fn run(
    shared: &Shared,
    client: TcpStream,
    hello_bytes: Vec<u8>,
    entry: Arc<RouteEntry>,
    log: &mut ConnLog,
) -> Outcome {
    let _open = entry.track();
    let route = &entry.route;
    let connect_start = tokio::time::Instant::now();
    let (upstream, addr) = match upstream::connect(
        &route.backends,
        &shared.dns,
        shared.config.timeouts.upstream_connect,
    )
    .await
    {
        Ok(ok) => ok,
        Err(e) => {
            tracing::warn!(route = %route.name, error = %e, "no backend accepted");
            return Outcome::UpstreamConnectError;
        }
    };
    log.upstream = Some(addr);
    entry
        .metrics(&shared.metrics)
        .connect
        .observe(connect_start.elapsed().as_secs_f64());

    if let Err(e) = relay::write_all(&upstream, &hello_bytes).await {
        tracing::debug!(error = %e, "writing the ClientHello upstream failed");
        return Outcome::RelayError;
    }
    let hello_len = hello_bytes.len() as u64;
    drop(hello_bytes);

    let counters = Counters::default();
    let stop = async {
        tokio::select! {
            () = entry.closer().cancelled() => {}
            () = shared.kill.cancelled() => {}
        }
    };
    let end = relay::relay(
        &client,
        &upstream,
        shared.config.timeouts.idle,
        stop,
        &counters,
    )
    .await;
    log.bytes_up = hello_len + counters.up.load(std::sync::atomic::Ordering::Relaxed);
    log.bytes_down = counters.down.load(std::sync::atomic::Ordering::Relaxed);
    match end {
        RelayEnd::Closed => Outcome::Ok,
        RelayEnd::Idle => Outcome::Idle,
        RelayEnd::Stopped if shared.kill.is_cancelled() => Outcome::Shutdown,
        RelayEnd::Stopped if route.expired_at(chrono::Utc::now()) => Outcome::Expired,
        RelayEnd::Stopped => Outcome::RouteRemoved,
        RelayEnd::ClientError(e) | RelayEnd::UpstreamError(e) => {
            tracing::debug!(error = %e, "relay error");
            Outcome::RelayError
        }
    }
}
