//! A running data plane: binds the listeners, starts the accept loops,
//! and stops them (graceful shutdown with a grace, or at once).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{client_rate, conn_log, health, limits, listener, Shared};
use crate::config::Config;
use crate::dns::Dns;
use crate::metrics::Metrics;
use crate::routing::Router;

/// A running proxy: its bound addresses and the means to stop it.
#[derive(Debug)]
pub struct ProxyHandle {
    pub shared: Arc<Shared>,
    /// The addresses actually bound (port 0 resolved), in config order.
    pub local_addrs: Vec<SocketAddr>,
    stop_accept: CancellationToken,
    tracker: TaskTracker,
    /// Each listener's configured address and a duplicate of its socket,
    /// for an upgrade to hand over (`crate::upgrade`).
    listener_fds: Vec<(SocketAddr, std::os::fd::OwnedFd)>,
    accept_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ProxyHandle {
    /// Binds every listener (all or none) and starts accepting.
    pub fn start(config: Config, router: Router) -> std::io::Result<ProxyHandle> {
        Self::start_inheriting(config, router, |_| None)
    }

    /// As [`ProxyHandle::start`], taking each listener `inherit` has for
    /// its configured address (an upgrade's) instead of binding it.
    pub fn start_inheriting(
        config: Config,
        router: Router,
        mut inherit: impl FnMut(SocketAddr) -> Option<std::net::TcpListener>,
    ) -> std::io::Result<ProxyHandle> {
        let mut listeners = Vec::with_capacity(config.listeners.len());
        let mut listener_fds = Vec::with_capacity(config.listeners.len());
        for lc in &config.listeners {
            let addr = lc.address;
            let l = match inherit(addr) {
                Some(l) => l
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpListener::from_std(l)),
                None => listener::bind(addr),
            }
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            listener_fds.push((addr, std::os::fd::AsFd::as_fd(&l).try_clone_to_owned()?));
            listeners.push(l);
        }
        let local_addrs = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<std::io::Result<Vec<_>>>()?;
        let metrics = Metrics::new(config.metrics_per_route);
        metrics.certificates_configured(config.certificates.iter().map(|c| c.name.as_str()));
        metrics.connections_max.set(config.max_connections as i64);
        let dns = Dns::new(
            &config.dns,
            metrics.dns_lookups.clone(),
            metrics.backend_addresses_refused.clone(),
        );
        if let Some(a) = config.admin.as_ref().filter(|a| a.address.port() != 0) {
            dns.set_admin_address(a.address);
        }
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
            handoff: Default::default(),
        });
        let stop_accept = CancellationToken::new();
        let tracker = TaskTracker::new();
        let accept_tasks = listeners
            .into_iter()
            .zip(&local_addrs)
            .zip(&shared.config.listeners)
            .map(|((l, local), lc)| {
                let info = Arc::new(conn_log::ListenerInfo {
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
            listener_fds,
            accept_tasks,
        })
    }

    /// The listeners to hand over in an upgrade: configured address, socket.
    pub fn listener_fds(&self) -> &[(SocketAddr, std::os::fd::OwnedFd)] {
        &self.listener_fds
    }

    /// Where connection tasks run: an upgrade's adopted connections too.
    pub fn tracker(&self) -> TaskTracker {
        self.tracker.clone()
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
