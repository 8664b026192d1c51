//! The data plane: listeners, the life of a connection, passthrough relay.

mod buffer;
pub mod client_rate;
pub mod conn;
pub mod fds;
pub mod health;
pub mod limits;
pub mod listener;
pub mod outcome;
pub mod passthrough;
pub mod proxy_protocol;
pub mod relay;
#[cfg(target_os = "linux")]
mod splice;
pub mod stream_relay;
pub mod terminate;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::dns::Dns;
use crate::metrics::Metrics;
use crate::routing::Router;

pub use outcome::Outcome;

/// State every connection task shares; built once at start.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub router: Router,
    pub dns: Dns,
    pub metrics: Metrics,
    /// Passive health of backend addresses.
    pub health: health::Health,
    /// Per client, connections whose hello is not read yet.
    pub unrouted: limits::PerClientLimit,
    /// Per client, connections in all.
    pub per_client: limits::PerClientLimit,
    /// Per client, the new-connection rate.
    pub client_rate: client_rate::ClientRate,
    /// One permit per open connection, moved into the connection's task.
    pub limit: Arc<Semaphore>,
    /// Cancelled when the shutdown grace runs out: live connections close.
    /// The router's [`Router::closers`], so each route's closer is its child.
    pub kill: CancellationToken,
}

impl Shared {
    /// Resolves when a relayed connection on `entry` must stop: the route
    /// left the table (removed, expired, redeployed) or shutdown's grace ran
    /// out. One wait covers both: the route's closer is a child of `kill`.
    pub fn stop_signal<'a>(
        &self,
        entry: &'a crate::routing::RouteEntry,
    ) -> tokio_util::sync::WaitForCancellationFuture<'a> {
        entry.closer().cancelled()
    }

    /// The outcome of a relay that ran on `route`, logging relay errors.
    pub fn after_relay(&self, end: &relay::RelayEnd, route: &crate::routing::Route) -> Outcome {
        if let relay::RelayEnd::ClientError(e) | relay::RelayEnd::UpstreamError(e) = end {
            tracing::debug!(error = %e, "relay error");
        }
        outcome::after_relay(
            end,
            self.kill.is_cancelled(),
            route.expired_at(chrono::Utc::now()),
        )
    }
}

/// A running proxy: its bound addresses and the means to stop it.
#[derive(Debug)]
pub struct ProxyHandle {
    pub shared: Arc<Shared>,
    /// The addresses actually bound (port 0 resolved), in config order.
    pub local_addrs: Vec<SocketAddr>,
    stop_accept: CancellationToken,
    tracker: TaskTracker,
    accept_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ProxyHandle {
    /// Binds every listener (all or none) and starts accepting.
    pub fn start(config: Config, router: Router) -> std::io::Result<ProxyHandle> {
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for lc in &config.listeners {
            let addr = lc.address;
            let l = listener::bind(addr).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
            })?;
            listeners.push(l);
        }
        let local_addrs = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<std::io::Result<Vec<_>>>()?;
        let metrics = Metrics::new(config.metrics_per_route);
        metrics.certificates_configured(config.certificates.iter().map(|c| c.name.as_str()));
        metrics.connections_max.set(config.max_connections as i64);
        let dns = Dns::new(&config.dns, metrics.dns_lookups.clone());
        let kill = router.closers().clone();
        let shared = Arc::new(Shared {
            metrics,
            health: health::Health::new(config.failure_cooldown),
            unrouted: limits::PerClientLimit::new(config.clients.unrouted, config.clients.prefixes),
            per_client: limits::PerClientLimit::new(
                config.clients.connections,
                config.clients.prefixes,
            ),
            client_rate: client_rate::ClientRate::new(config.clients.rate, config.clients.prefixes),
            limit: Arc::new(Semaphore::new(config.max_connections)),
            config,
            router,
            dns,
            kill,
        });
        let stop_accept = CancellationToken::new();
        let tracker = TaskTracker::new();
        let accept_tasks = listeners
            .into_iter()
            .zip(&local_addrs)
            .zip(&shared.config.listeners)
            .map(|((l, local), lc)| {
                let info = Arc::new(conn::ListenerInfo {
                    local: *local,
                    trusted_proxies: lc.trusted_proxies.clone(),
                });
                tokio::spawn(listener::accept_loop(
                    l,
                    info,
                    Arc::clone(&shared),
                    stop_accept.clone(),
                    tracker.clone(),
                ))
            })
            .collect();
        for a in &local_addrs {
            tracing::info!(address = %a, "listening");
        }
        Ok(ProxyHandle {
            shared,
            local_addrs,
            stop_accept,
            tracker,
            accept_tasks,
        })
    }

    /// Connections open right now (permits in use).
    pub fn open_connections(&self) -> usize {
        self.shared.config.max_connections - self.shared.limit.available_permits()
    }

    /// Stops accepting at once; a no-op after the first call.
    pub fn stop_accepting(&self) {
        self.stop_accept.cancel();
    }

    /// Closes every live connection now.
    pub fn kill_connections(&self) {
        self.shared.kill.cancel();
    }

    /// Graceful shutdown: stop accepting, let live connections finish for up
    /// to `grace`, then close the rest and wait for their tasks to end.
    /// Returns how many connections were still open when the grace ran out.
    pub async fn shutdown(self, grace: Duration) -> usize {
        self.stop_accepting();
        for t in self.accept_tasks {
            let _ = t.await;
        }
        self.tracker.close();
        let mut cut = 0;
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            cut = self.tracker.len();
            tracing::info!(open = cut, "shutdown grace over, closing live connections");
            self.shared.kill.cancel();
            self.tracker.wait().await;
        }
        cut
    }
}
