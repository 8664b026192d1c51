//! Running the proxy as a process: load, start the data plane, the
//! reconciler, the routes file and certificate watches and the admin
//! listener, then follow signals (SIGHUP re-reads routes and certificates,
//! SIGTERM drains, a second SIGINT exits at once).

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::admin::tokens::{self, TokenWatch, Tokens};
use crate::admin::{self, AdminState};
use crate::config::{routes, Config, ConfigError, ConfigErrors};
use crate::control::Control;
use crate::proxy::{fds, ProxyHandle};
use crate::routing::reconciler::watchdog::{self, Health};
use crate::routing::reconciler::Reconciler;
use crate::routing::reload::{self, ApplyOptions};
use crate::routing::sources::certificates::{self, CertWatch};
use crate::routing::sources::etcd::cache::{CacheMetrics, EtcdCache};
use crate::routing::sources::etcd::follow::Follower;
use crate::routing::sources::etcd::write::EtcdWriter;
use crate::routing::sources::etcd::EtcdStatus;
use crate::routing::sources::file::{self, FileWatch};
use crate::routing::{Route, Router, Snapshot, Source};
use crate::tls::certs::CertStore;
use crate::tls::coalescing;
use crate::upgrade::old::{self, Event, Upgrader};
use crate::upgrade::protocol::Msg;
use crate::upgrade::successor::Inherited;

/// Loads and validates the routes the config names (none if it names no
/// file), including that `no_sni_route` exists among them.
pub fn load_routes(config: &Config) -> Result<Vec<Route>, ConfigErrors> {
    let routes = match &config.routes_file {
        Some(path) => routes::load_file(path, &config.control_limits)?,
        None => Vec::new(),
    };
    if let Some(name) = &config.no_sni_route {
        if !routes.iter().any(|r| &r.name == name) {
            return Err(ConfigError::new(
                &config.source,
                "refusal.no_sni_route",
                format!("`{name}` names no route"),
            )
            .into());
        }
    }
    Ok(routes)
}

/// Reads the config's certificates and checks that they serve every host of
/// every terminate route (routes named by position, as in the routes file).
pub fn load_certs(config: &Config, routes: &[Route]) -> Result<Arc<CertStore>, ConfigErrors> {
    let store = CertStore::load(&config.source, &config.certificates)?;
    check_coverage(config, &store, routes)?;
    Ok(Arc::new(store))
}

/// The terminate routes whose certificate other tenants share, as `check`
/// explains them (`crate::tls::coalescing`): the certificates loaded again
/// (`check` has just validated them) and matched against `routes`.
pub fn shared_certificates(config: &Config, routes: &[Route]) -> Vec<coalescing::Finding> {
    match CertStore::load(&config.source, &config.certificates) {
        Ok(store) => coalescing::findings(&store, routes),
        Err(_) => Vec::new(),
    }
}

/// At start, each such route once: why it gets no h2 (or a warning, when
/// it forces h2). Routes that arrive later through the API follow the same
/// rule without a line of their own; `check` lists the file's.
fn log_shared_certificates(certs: &CertStore, routes: &[Route]) {
    for f in coalescing::findings(certs, routes) {
        if f.opted_in {
            tracing::warn!(route = %f.route, certificate = %f.certificate, "{f}");
        } else {
            tracing::info!(route = %f.route, certificate = %f.certificate, "{f}");
        }
    }
}

fn check_coverage(
    config: &Config,
    store: &CertStore,
    routes: &[Route],
) -> Result<(), ConfigErrors> {
    let file = config.routes_file.as_deref().unwrap_or(Path::new("routes"));
    let mut errs = ConfigErrors::default();
    for (i, r) in routes.iter().enumerate() {
        store.check_route(file, &format!("route[{i}]"), r, &mut errs);
    }
    errs.into_result(())
}

/// What `mse-proxy check` validates: the config file, its routes, its
/// certificates, that the certificates serve the terminate routes, the
/// admin API's token and TLS files, and that the state directory can be
/// created and written (without `[etcd]`). Problems with routes,
/// certificates, the admin API and state are reported together.
pub fn check(path: &Path) -> Result<(Config, Vec<Route>), ConfigErrors> {
    check_as(Config::load(path)?)
}

/// As [`check`], for a proxy that keeps its state in memory (`mse-proxy
/// demo`): no state directory is made or used.
pub fn check_in_memory(path: &Path) -> Result<(Config, Vec<Route>), ConfigErrors> {
    let mut config = Config::load(path)?;
    config.state_dir = None;
    check_as(config)
}

fn check_as(mut config: Config) -> Result<(Config, Vec<Route>), ConfigErrors> {
    // Against the hard limit: start raises the soft one to it.
    if let Some(fds) = fds::hard_limit() {
        if let Err(msg) = fds::fit(&mut config, fds) {
            let mut errs = ConfigErrors::default();
            errs.push(&config.source, "limits.max_connections", msg);
            return Err(errs);
        }
    }
    let routes = load_routes(&config);
    let certs = CertStore::load(&config.source, &config.certificates);
    let state = check_state_dir(&config);
    let admin = check_admin(&config);
    let mut errs = ConfigErrors::default();
    let routes = match (routes, certs) {
        (Ok(routes), Ok(store)) => match check_coverage(&config, &store, &routes) {
            Ok(()) => Some(routes),
            Err(e) => {
                errs.0.extend(e.0);
                None
            }
        },
        (routes, certs) => {
            errs.0.extend(
                routes
                    .err()
                    .into_iter()
                    .chain(certs.err())
                    .flat_map(|e| e.0),
            );
            None
        }
    };
    if let Err(e) = state {
        errs.0.push(e);
    }
    if let Err(e) = admin {
        errs.0.extend(e.0);
    }
    match routes {
        Some(routes) if errs.is_empty() => Ok((config, routes)),
        _ => Err(errs),
    }
}

/// The admin API's token files and TLS files load.
fn check_admin(config: &Config) -> Result<(), ConfigErrors> {
    let Some(a) = &config.admin else {
        return Ok(());
    };
    let t = tokens::load(&config.source, a).map(drop);
    let tls = match &a.tls {
        Some(tls) => admin::tls::load(&config.source, tls).map(drop),
        None => Ok(()),
    };
    match (t, tls) {
        (Err(mut a), Err(b)) => {
            a.0.extend(b.0);
            Err(a)
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// The durable state's directory, created if need be, must be writable
/// (where it is used: not in memory). With `[etcd]` it holds the local
/// cache of etcd.
fn check_state_dir(config: &Config) -> Result<(), ConfigError> {
    match &config.state_dir {
        Some(dir) => crate::state::check_dir(dir)
            .map_err(|e| ConfigError::new(&config.source, "state_dir", e.to_string())),
        None => Ok(()),
    }
}

type Opened = (Arc<dyn crate::state::StateStore>, crate::state::Stored);

/// Opens the durable state and reads it, at start, before anything is
/// served (so no async worker is held up yet): `state.redb`, or with
/// `[etcd]` the local cache of etcd (`etcd-cache.redb`: etcd is the
/// truth there). `None` without a `state_dir` (in memory).
fn open_state(config: &Config) -> anyhow::Result<Option<Opened>> {
    let Some(dir) = &config.state_dir else {
        return Ok(None);
    };
    let name = match config.etcd {
        None => crate::state::FILE_NAME,
        Some(_) => crate::state::ETCD_CACHE_FILE,
    };
    let store = crate::state::open_file(dir, name)?;
    let stored = store.load()?;
    Ok(Some((store, stored)))
}

/// A running proxy with its control plane.
pub struct Server {
    pub proxy: ProxyHandle,
    pub control: Control,
    /// Whether the control plane is alive (the reconciler's watchdog).
    pub health: Health,
    reconciler: tokio::task::AbortHandle,
    /// Where the admin API listens, if configured.
    pub admin_addr: Option<SocketAddr>,
    /// The admin API's tokens, re-read on SIGHUP and as their files change.
    pub admin_tokens: Option<Arc<Tokens>>,
    /// The admin listener's TLS files, re-read on SIGHUP.
    admin_tls: Option<admin::tls::AdminTlsAcceptor>,
    admin_stop: CancellationToken,
    _token_watch: Option<TokenWatch>,
    /// With `[etcd]`: the follower task and the local cache, so a stop
    /// waits for the follower's last set to reach the cache.
    etcd_follower: Option<(tokio::task::JoinHandle<()>, Option<Arc<EtcdCache>>)>,
    _watch: Option<FileWatch>,
    _cert_watch: Option<CertWatch>,
    /// What an upgrade hands over besides the data plane's listeners: the
    /// durable stores (released to the new process) and the admin listener.
    stores: Vec<Arc<dyn crate::state::StateStore>>,
    admin_fd: Option<(SocketAddr, std::os::fd::OwnedFd)>,
}

impl Deref for Server {
    type Target = ProxyHandle;
    fn deref(&self) -> &ProxyHandle {
        &self.proxy
    }
}

/// Starts everything: listeners (all bound before anything is served), the
/// first route table, the reconciler, the file watch and the admin API.
pub fn start(config: Config, routes: Vec<Route>) -> anyhow::Result<Server> {
    start_with(config, routes, None)
}

/// As [`start`], taking the listeners an upgrade handed over (by
/// configured address; any other is bound as usual).
pub fn start_with(
    mut config: Config,
    routes: Vec<Route>,
    mut inherited: Option<&mut Inherited>,
) -> anyhow::Result<Server> {
    let fds = match fds::raise() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the file descriptor limit");
            fds::hard_limit().unwrap_or(u64::MAX)
        }
    };
    fds::fit(&mut config, fds).map_err(|msg| anyhow::anyhow!("limits.max_connections: {msg}"))?;
    let first_tokens = match &config.admin {
        Some(a) => Some(
            tokens::load(&config.source, a)
                .map_err(|e| anyhow::anyhow!("invalid admin tokens:\n{e}"))?,
        ),
        None => None,
    };
    let admin_tls = match config.admin.as_ref().and_then(|a| a.tls.as_ref()) {
        Some(t) => {
            admin::tls::warn_if_shared(&t.key);
            Some(
                admin::tls::load(&config.source, t)
                    .map_err(|e| anyhow::anyhow!("invalid admin TLS settings:\n{e}"))?,
            )
        }
        None => None,
    };
    if let Some(a) = config.admin.as_ref().filter(|a| a.tls.is_none()) {
        if !a.address.ip().is_loopback() {
            tracing::warn!(address = %a.address, "admin.allow_plaintext: the admin API is plain HTTP on a non-loopback address; tokens cross the network in clear");
        }
    }
    let admin_listener = match &config.admin {
        Some(a) => {
            let l = match inherited.as_mut().and_then(|i| i.take_admin(a.address)) {
                Some(l) => l,
                None => std::net::TcpListener::bind(a.address)
                    .with_context(|| format!("admin listener cannot bind {}", a.address))?,
            };
            l.set_nonblocking(true)?;
            Some(tokio::net::TcpListener::from_std(l)?)
        }
        None => None,
    };
    let certs = load_certs(&config, &routes)
        .map_err(|e| anyhow::anyhow!("invalid certificates for the routes:\n{e}"))?;
    log_shared_certificates(&certs, &routes);
    let opened = open_state(&config)?;
    let stores: Vec<_> = opened.iter().map(|(s, _)| Arc::clone(s)).collect();
    let admin_fd = match (&admin_listener, &config.admin) {
        (Some(l), Some(a)) => Some((a.address, std::os::fd::AsFd::as_fd(l).try_clone_to_owned()?)),
        _ => None,
    };
    let (state, etcd_cache) = match &config.etcd {
        None => (opened, None),
        Some(_) => (None, opened),
    };
    let watch_path = config.routes_file.clone().filter(|_| config.reload.watch);
    // The first table is in place before the first connection is accepted.
    let router = Router::new(Snapshot::default());
    let first: Vec<(Route, Source)> = routes.iter().cloned().map(|r| (r, Source::File)).collect();
    let opts = ApplyOptions {
        on_change: config.reload.on_change,
        close_grace: config.reload.close_grace,
        certs: Some(&certs),
        ..ApplyOptions::new(config.no_sni_route.as_deref())
    };
    reload::apply(&router, first, opts).map_err(|e| anyhow::anyhow!(e))?;
    let proxy = ProxyHandle::start_inheriting(config, router, |addr| {
        inherited.as_mut().map(|i| i.take(addr)).unwrap_or_default()
    })
    .context("starting listeners")?;
    // A configured port is known to the resolver's screen from the start;
    // an ephemeral one (port 0, tests) only now that it is bound.
    if let Some(l) = &admin_listener {
        proxy.shared.dns.set_admin_address(l.local_addr()?);
    }
    let etcd_status = proxy
        .shared
        .config
        .etcd
        .as_ref()
        .map(|_| Arc::new(EtcdStatus::default()));
    let (reconciler, control) = Reconciler::start(
        Arc::clone(&proxy.shared),
        routes,
        etcd_status.clone(),
        state,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let admin_stop = CancellationToken::new();
    let task = tokio::spawn(reconciler.run());
    let reconciler = task.abort_handle();
    let health = watchdog::supervise(
        task,
        control.clone(),
        proxy.shared.config.reload.stall_timeout,
        admin_stop.clone(),
    );
    // With `[etcd]`, the table follows the shared store; the first etcd set
    // arrives asynchronously, so readiness waits for it.
    let mut etcd_follower = None;
    let etcd_writer = match (&proxy.shared.config.etcd, etcd_status) {
        (Some(cfg), Some(status)) => {
            let cache = match etcd_cache {
                Some((store, stored)) => Some(Arc::new(
                    EtcdCache::start(
                        store,
                        stored,
                        Arc::clone(&status),
                        CacheMetrics {
                            errors: proxy.shared.metrics.etcd_cache_write_errors.clone(),
                            revision: proxy.shared.metrics.etcd_cache_revision.clone(),
                        },
                    )
                    .context("starting the etcd cache writer")?,
                )),
                None => None,
            };
            let task = tokio::spawn(
                Follower {
                    cfg: cfg.clone(),
                    control: control.clone(),
                    status: Arc::clone(&status),
                    shared: Arc::clone(&proxy.shared),
                    stop: admin_stop.clone(),
                    cache: cache.clone(),
                }
                .run(),
            );
            etcd_follower = Some((task, cache));
            Some(Arc::new(EtcdWriter::new(
                cfg.clone(),
                status,
                control.clone(),
                Arc::clone(&proxy.shared),
            )))
        }
        _ => None,
    };

    let watch = match watch_path {
        Some(p) => Some(
            file::watch(&p, control.clone())
                .with_context(|| format!("watching {}", p.display()))?,
        ),
        None => None,
    };
    // Renewed certificates are served without a signal, like routes edits.
    let cert_watch = match &proxy.shared.config {
        c if c.reload.watch && !c.certificates.is_empty() => Some(
            certificates::watch(Arc::clone(&proxy.shared), control.clone())
                .context("watching the certificate files")?,
        ),
        _ => None,
    };

    // Custom-domain CNAME rechecks (a no-op unless `apps.cname_policy` asks);
    // stopped with the admin API.
    tokio::spawn(crate::routing::sources::cname::recheck(
        Arc::clone(&proxy.shared),
        control.clone(),
        admin_stop.clone(),
    ));
    let mut admin_tokens = None;
    let mut token_watch = None;
    let admin_addr = match (admin_listener, &proxy.shared.config.admin, first_tokens) {
        (Some(l), Some(cfg), Some(first)) => {
            let addr = l.local_addr()?;
            let tokens = Tokens::new(
                &proxy.shared.config.source,
                cfg.clone(),
                first,
                proxy.shared.metrics.admin_token_reloads.clone(),
            );
            if proxy.shared.config.reload.watch && tokens.has_files() {
                token_watch = Some(
                    tokens::watch(Arc::clone(&tokens), proxy.shared.config.reload.debounce)
                        .context("watching the admin token files")?,
                );
            }
            let state = Arc::new(AdminState {
                shared: Arc::clone(&proxy.shared),
                control: control.clone(),
                auth: admin::auth::Auth {
                    tokens: Arc::clone(&tokens),
                    metrics_auth: cfg.metrics_auth,
                    client_roles: cfg
                        .tls
                        .as_ref()
                        .map(|t| t.client_roles.clone())
                        .unwrap_or_default(),
                },
                max_route_body: cfg.http.max_route_body,
                max_app_body: cfg.http.max_app_body,
                request_timeout: cfg.http.request_timeout,
                etcd: etcd_writer,
                health: health.clone(),
            });
            if !tokens.load().grants(crate::config::Role::Write)
                && state.auth.client_roles.is_empty()
            {
                tracing::warn!("no admin write token configured: admin API writes are refused");
            }
            admin_tokens = Some(tokens);
            let scheme = if admin_tls.is_some() { "https" } else { "http" };
            tokio::spawn(admin::serve(
                l,
                state,
                cfg.http.clone(),
                admin_tls.clone(),
                admin_stop.clone(),
            ));
            tracing::info!(address = %addr, scheme, "admin API listening");
            Some(addr)
        }
        _ => None,
    };
    Ok(Server {
        proxy,
        control,
        health,
        reconciler,
        admin_addr,
        admin_tokens,
        admin_tls,
        admin_stop,
        _token_watch: token_watch,
        etcd_follower,
        _watch: watch,
        _cert_watch: cert_watch,
        stores,
        admin_fd,
    })
}

impl Server {
    /// Test hook: ends the reconciler task, as a panic in it would, so
    /// that supervision can be seen to act.
    #[doc(hidden)]
    pub fn kill_reconciler_for_tests(&self) {
        self.reconciler.abort();
    }

    /// What SIGHUP re-reads for the admin API: its token files and its TLS
    /// files. Each logs its outcome; a refused file keeps what is in service.
    pub async fn reload_admin(&self) {
        if let Some(t) = &self.admin_tokens {
            t.reload().await;
        }
        if let Some(t) = &self.admin_tls {
            t.reload().await;
        }
    }

    /// Graceful stop: see [`ProxyHandle::shutdown`]; the admin API stops last.
    pub async fn shutdown(self, grace: std::time::Duration) -> usize {
        let cut = self.proxy.shutdown(grace).await;
        self.admin_stop.cancel();
        if let Some((task, cache)) = self.etcd_follower {
            // The follower queues its last set as it stops; the cache's
            // thread writes it (bounded: a stop never hangs on a disk).
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
            if let Some(cache) = cache {
                let flushed =
                    tokio::task::spawn_blocking(move || cache.flush(Duration::from_secs(5))).await;
                if !matches!(flushed, Ok(true)) {
                    tracing::warn!("the local cache of etcd may trail the last set read");
                }
            }
        }
        cut
    }
}

/// The signals the process follows, taken over from their default action.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    /// Registers the handlers (inside the runtime). Done before [`start`]:
    /// once the admin API has said it listens, a SIGTERM must drain, not
    /// kill the process by the default action, as it did when it came
    /// between the start and [`serve_until_signal`].
    pub fn register() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }
}

/// Serves until SIGTERM or SIGINT, re-reading routes on SIGHUP, then drains
/// for the configured grace. A second SIGINT during the drain exits at once.
/// A failed reconciler drains the same way, then is an error (the process
/// exits non-zero, for its supervisor to restart it).
pub async fn serve_until_signal(server: Server) -> anyhow::Result<()> {
    serve_with(server, Signals::register()?).await
}

/// As [`serve_until_signal`], with handlers registered before the start.
pub async fn serve_with(server: Server, signals: Signals) -> anyhow::Result<()> {
    serve_upgradable(server, signals, None).await
}

/// As [`serve_with`], also following upgrades (`crate::upgrade`): asked on
/// `upgrader`'s socket or by SIGUSR2, a new process that takes over ends
/// this one's serving as a SIGTERM would, except that its passthrough
/// connections move to the new process instead of draining.
pub async fn serve_upgradable(
    mut server: Server,
    signals: Signals,
    mut upgrader: Option<Upgrader>,
) -> anyhow::Result<()> {
    let Signals {
        mut term,
        mut int,
        mut hup,
        mut usr2,
    } = signals;
    let health = server.health.clone();
    let mut failed = None;
    let mut upgraded = None;
    loop {
        let (binary, reply) = tokio::select! {
            why = health.failed() => {
                tracing::error!(reason = %why, "control plane failed: draining, then exiting");
                failed = Some(why);
                break;
            }
            _ = hup.recv() => {
                // The reconciler and the token store log the outcome either way.
                let _ = server.control.reload_file().await;
                server.reload_admin().await;
                continue;
            }
            _ = term.recv() => { tracing::info!("SIGTERM: draining"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: draining (again to exit at once)"); break; }
            _ = usr2.recv() => (None, None),
            ev = next_upgrade(&mut upgrader) => match ev {
                Event::Trigger { binary, reply } => (binary, reply),
                Event::Successor { chan, .. } => {
                    let m = Msg::Refused { reason: "no upgrade was asked of this process".into() };
                    let _ = chan.send(&m, &[], &[]);
                    continue;
                }
            },
        };
        let Some(up) = upgrader.as_mut() else {
            tracing::warn!("SIGUSR2: no upgrade socket, so no upgrade");
            continue;
        };
        let began = std::time::Instant::now();
        let handover = old::Handover {
            listeners: server.proxy.listener_fds(),
            admin: server.admin_fd.as_ref(),
            stores: &server.stores,
            metrics: &server.shared.metrics,
        };
        let outcome = old::attempt(up, binary, handover).await;
        if outcome.is_ok() {
            // Before the report: once told, the asker may count on every
            // new connection reaching the new process.
            server.proxy.stop_accepting_and_wait().await;
        }
        old::report(&server.shared.metrics, reply, &outcome, began);
        if let Ok(s) = outcome {
            upgraded = Some(s);
            break;
        }
    }
    let grace = server.shared.config.timeouts.shutdown_grace;
    let shared = Arc::clone(&server.shared);
    // Upgraded: the new process accepts and serves the admin API; this
    // one stops both, offers it every passthrough connection, and drains
    // the rest (terminate connections) as a SIGTERM would.
    let sending = upgraded.map(|s| {
        server.admin_stop.cancel();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        shared.handoff.begin(tx);
        let counters = old::HandoffCounters {
            sent: shared
                .metrics
                .upgrade_connections
                .with_label_values(&["sent"]),
            kept: shared
                .metrics
                .upgrade_connections
                .with_label_values(&["kept"]),
        };
        old::send_connections(s.chan, rx, counters)
    });
    tokio::select! {
        cut = server.shutdown(grace) => {
            tracing::info!(closed_at_deadline = cut, "stopped");
        }
        _ = int.recv() => {
            tracing::warn!(open = shared.config.max_connections - shared.limit.available_permits(), "second SIGINT: exiting now");
            std::process::exit(130);
        }
    }
    if let Some(thread) = sending {
        shared.handoff.end();
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        tracing::info!("upgrade: this process owns no connection; exiting");
    }
    match failed {
        Some(why) => Err(anyhow::anyhow!("control plane failed: {why}")),
        None => Ok(()),
    }
}

/// The next upgrade event, or never without an upgrade socket.
async fn next_upgrade(upgrader: &mut Option<Upgrader>) -> Event {
    match upgrader {
        Some(u) => match u.next().await {
            Some(ev) => ev,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}
