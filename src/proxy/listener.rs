//! Listening sockets and the accept loop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::outcome::Outcome;
use super::Shared;
use super::{conn, conn_log};

/// Binds one listening socket. IPv6 sockets are v6-only so that `0.0.0.0:443`
/// and `[::]:443` can both be listed without colliding. `SO_REUSEPORT`, so
/// that each worker binds its own socket on the address (and an upgrade's
/// successor can add its own beside the ones it inherits). `TCP_NODELAY`
/// is set here once: Linux copies it to every accepted socket, which
/// saves one `setsockopt` per connection.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// The listening sockets of one address for `workers` workers: the
/// inherited ones (an upgrade's: every one the old process accepted on, so
/// that no connection waits in a queue nobody reads), then new ones until
/// each worker has one. Socket `i` is worker `i % workers`'s. Port 0 is
/// resolved by the first socket and the rest bind that port. Where no new
/// socket can join (an inherited socket without `SO_REUSEPORT`), workers
/// share one socket instead, each accepting on a duplicate of it.
pub fn bind_group(
    addr: SocketAddr,
    workers: usize,
    inherited: Vec<std::net::TcpListener>,
) -> io::Result<Vec<std::net::TcpListener>> {
    let mut group = inherited;
    for l in &group {
        l.set_nonblocking(true)?;
        // The old process may not have set it (an older binary).
        socket2::SockRef::from(l).set_nodelay(true)?;
    }
    while group.len() < workers.max(1) {
        let at = match group.first() {
            Some(first) => first.local_addr()?,
            None => addr,
        };
        match bind(at) {
            Ok(l) => group.push(l),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && !group.is_empty() => {
                tracing::info!(address = %addr, "inherited listener without SO_REUSEPORT: the workers share it");
                let shared = group[0].try_clone()?;
                group.push(shared);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(group)
}

/// Accept errors that mean "this process or the system is out of a
/// resource": retrying at once would spin, so the loop backs off.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_codes::EMFILE | libc_codes::ENFILE | libc_codes::ENOBUFS | libc_codes::ENOMEM)
    )
}

/// The errno values we back off on (Linux numbering, stable ABI).
mod libc_codes {
    pub const ENOMEM: i32 = 12;
    pub const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
    pub const ENOBUFS: i32 = 105;
}

const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accepts until `stop` is cancelled. It never returns on an accept error:
/// per-connection errors are skipped, resource exhaustion backs off.
pub async fn accept_loop(
    listener: TcpListener,
    info: Arc<conn_log::ListenerInfo>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let local = listener.local_addr().ok();
    let mut backoff = BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(ok) => {
                backoff = BACKOFF_MIN;
                ok
            }
            Err(e) if is_resource_exhaustion(&e) => {
                tracing::error!(listener = ?local, error = %e, backoff = ?backoff, "accept: out of resources, backing off");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            Err(e) => {
                tracing::debug!(listener = ?local, error = %e, "accept error");
                continue;
            }
        };
        shared.metrics.accepted.inc();
        // Report IPv4 clients as IPv4 even if a socket hands them over mapped.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let permit = match Arc::clone(&shared.limit).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                drop(stream);
                shared.metrics.unrouted(Outcome::Limit);
                let log = conn_log::ConnLog::new(peer, info.local);
                conn_log::access_log(&shared, Outcome::Limit, &log, Duration::ZERO);
                continue;
            }
        };
        // Debug level: every warning on a connection's path names its peer
        // or route itself, and an enabled span costs each connection about
        // 450 bytes while it lives (its registry slot and formatted fields)
        // plus the formatting. Not even an empty span is held when off.
        let span = tracing::debug_span!(
            "conn",
            peer = %peer,
            sni = tracing::field::Empty,
            route = tracing::field::Empty
        );
        let log = conn_log::ConnLog::accepted(peer, &stream, &info);
        let task = conn::handle(Arc::clone(&shared), stream, log, Arc::clone(&info), permit);
        if span.is_disabled() {
            tracker.spawn(task);
        } else {
            tracker.spawn(task.instrument(span));
        }
    }
    tracing::info!(listener = ?local, "stopped accepting");
}
