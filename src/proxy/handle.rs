//! A running data plane: binds the listeners, starts the accept loops,
//! and stops them (graceful shutdown with a grace, or at once).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::workers::Workers;
use super::{client_rate, conn_log, health, limits, listener, Shared};
use crate::config::{bounds, Config};
use crate::dns::Dns;
use crate::metrics::Metrics;
use crate::routing::Router;

/// One worker per core, within what an upgrade can hand over (see
/// [`bounds::MAX_LISTENING_SOCKETS`]).
fn default_workers(listeners: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let fit = (bounds::MAX_LISTENING_SOCKETS - 1) / listeners.max(1);
    cores.min(bounds::MAX_WORKERS).min(fit).max(1)
}

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
    /// The data plane's threads ([`Workers`]); dropped last, which ends them.
    workers: Arc<Workers>,
}

impl ProxyHandle {
    /// Binds every listener (all or none) and starts accepting.
    pub fn start(config: Config, router: Router) -> std::io::Result<ProxyHandle> {
        Self::start_inheriting(config, router, |_| Vec::new())
    }

    /// As [`ProxyHandle::start`], taking the listeners `inherit` has for
    /// each configured address (an upgrade's: all the sockets the old
    /// process accepted on there) and binding the rest.
    pub fn start_inheriting(
        config: Config,
        router: Router,
        mut inherit: impl FnMut(SocketAddr) -> Vec<std::net::TcpListener>,
    ) -> std::io::Result<ProxyHandle> {
        let n = config
            .workers
            .unwrap_or_else(|| default_workers(config.listeners.len()));
        let workers = Arc::new(Workers::start(n)?);
        // Per configured listener, its sockets (one per worker at least).
        let mut groups = Vec::with_capacity(config.listeners.len());
        let mut listener_fds = Vec::new();
        for lc in &config.listeners {
            let addr = lc.address;
            let group = listener::bind_group(addr, workers.len(), inherit(addr)).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
            })?;
            for l in &group {
                listener_fds.push((addr, std::os::fd::AsFd::as_fd(l).try_clone_to_owned()?));
            }
            groups.push(group);
        }
        let local_addrs = groups
            .iter()
            .map(|g| g[0].local_addr())
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
        let kill = Arc::clone(router.closers());
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
        let mut accept_tasks = Vec::new();
        for ((group, local), lc) in groups
            .into_iter()
            .zip(&local_addrs)
            .zip(&shared.config.listeners)
        {
            let info = Arc::new(conn_log::ListenerInfo {
                local: *local,
                trusted_proxies: lc.trusted_proxies.clone(),
            });
            for (i, l) in group.into_iter().enumerate() {
                let rt = workers.handle(i);
                // Registered with the worker's own I/O driver.
                let l = {
                    let _in_worker = rt.enter();
                    tokio::net::TcpListener::from_std(l)?
                };
                accept_tasks.push(rt.spawn(listener::accept_loop(
                    l,
                    Arc::clone(&info),
                    Arc::clone(&shared),
                    stop_accept.clone(),
                    tracker.clone(),
                )));
            }
        }
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
            workers,
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

    /// The data plane's workers, to place connections that arrive other
    /// than by accept (an upgrade's) on one of them.
    pub fn workers(&self) -> Arc<Workers> {
        Arc::clone(&self.workers)
    }

    /// Connections open right now (permits in use).
    pub fn open_connections(&self) -> usize {
        self.shared.config.max_connections - self.shared.limit.available_permits()
    }

    /// Stops accepting at once; a no-op after the first call.
    pub fn stop_accepting(&self) {
        self.stop_accept.cancel();
    }

    /// Stops accepting and returns once every accept loop has ended, so
    /// that no connection is accepted here after it returns. An upgrade
    /// reports its success only then: whoever asked for it may rely on
    /// every later connection reaching the new process.
    pub async fn stop_accepting_and_wait(&mut self) {
        self.stop_accept.cancel();
        for t in self.accept_tasks.drain(..) {
            let _ = t.await;
        }
    }

    /// Closes every live connection now.
    pub fn kill_connections(&self) {
        self.shared.kill.close();
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
            self.shared.kill.close();
            self.tracker.wait().await;
        }
        cut
    }
}
