//! The new process's side of an upgrade: started by the running one with
//! [`SUCCESSOR_ENV`] naming the upgrade socket, it connects, checks the
//! format, takes the listening sockets, starts as any start does (config,
//! routes and the durable state, which the old process released before
//! sending the listeners), says it is ready, then takes the passthrough
//! connections it is offered.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::channel::Channel;
use super::protocol::{ConnHeader, Msg, FORMAT};
use crate::proxy::handoff::{self, Moved};
use crate::proxy::relay::Carry;
use crate::proxy::workers::Workers;
use crate::proxy::Shared;

/// Set (to the upgrade socket's path) in the environment of the process an
/// upgrade starts: it takes the listeners from there instead of binding.
pub const SUCCESSOR_ENV: &str = "MSE_PROXY_UPGRADE_SOCKET";
/// Test hook: the hand-off format this binary claims (default
/// [`FORMAT`]), to show that a mismatch is refused.
pub const FORMAT_ENV: &str = "MSE_PROXY_UPGRADE_FORMAT";

/// The socket to join, when this process was started by an upgrade.
pub fn socket() -> Option<PathBuf> {
    std::env::var_os(SUCCESSOR_ENV).map(PathBuf::from)
}

/// What the old process handed over, until the new one is ready.
#[derive(Debug)]
pub struct Inherited {
    /// Configured address → its listening socket.
    pub listeners: Vec<(SocketAddr, std::net::TcpListener)>,
    pub admin: Option<(SocketAddr, std::net::TcpListener)>,
    chan: Channel,
}

/// Connects to the running process and takes its listeners. Blocking. An
/// error says why there is no hand-off: the process must exit, and the
/// old one serves on.
pub fn join(path: &std::path::Path) -> anyhow::Result<Inherited> {
    let format = match std::env::var(FORMAT_ENV) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{FORMAT_ENV}: not a number"))?,
        Err(_) => FORMAT,
    };
    let chan = Channel::connect(path)
        .map_err(|e| anyhow::anyhow!("upgrade: cannot reach {}: {e}", path.display()))?;
    chan.set_timeout(Some(Duration::from_secs(30)))?;
    let hello = Msg::Hello {
        format,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    chan.send(&hello, &[], &[])?;
    let (msg, _, fds) = chan.recv()?;
    let (listeners, admin) = match msg {
        Msg::Listeners {
            format: theirs,
            listeners,
            admin,
        } if theirs == format => (listeners, admin),
        Msg::Listeners { format: theirs, .. } => {
            let m = Msg::Refused {
                reason: format!("format {theirs} offered, this binary speaks {format}"),
            };
            let _ = chan.send(&m, &[], &[]);
            anyhow::bail!("upgrade refused: the running proxy offers hand-off format {theirs}, this binary speaks {format}")
        }
        Msg::Refused { reason } => anyhow::bail!("upgrade refused by the running proxy: {reason}"),
        other => anyhow::bail!("upgrade: unexpected message {other:?}"),
    };
    let mut fds = fds.into_iter().map(std::net::TcpListener::from);
    let listeners = listeners.into_iter().zip(fds.by_ref()).collect();
    let admin = admin.zip(fds.next());
    Ok(Inherited {
        listeners,
        admin,
        chan,
    })
}

impl Inherited {
    /// The listeners configured at `addr`: every socket the old process
    /// accepted on there (one per worker of its), none if it had none.
    pub fn take(&mut self, addr: SocketAddr) -> Vec<std::net::TcpListener> {
        let (mine, rest) = std::mem::take(&mut self.listeners)
            .into_iter()
            .partition(|(a, _)| *a == addr);
        self.listeners = rest;
        mine.into_iter().map(|(_, l)| l).collect::<Vec<_>>()
    }

    pub fn take_admin(&mut self, addr: SocketAddr) -> Option<std::net::TcpListener> {
        match self.admin.take() {
            Some((a, l)) if a == addr => Some(l),
            other => {
                self.admin = other;
                None
            }
        }
    }

    /// Tells the old process this one serves, then takes the connections
    /// it offers on a thread of its own (until it says `Done` or goes).
    pub fn ready(
        self,
        shared: Arc<Shared>,
        tracker: TaskTracker,
        workers: Arc<Workers>,
    ) -> anyhow::Result<()> {
        if !self.listeners.is_empty() || self.admin.is_some() {
            tracing::warn!(
                left = self.listeners.len() + usize::from(self.admin.is_some()),
                "upgrade: listeners the new config does not name are closed"
            );
        }
        let chan = self.chan;
        chan.send(
            &Msg::Ready {
                pid: std::process::id(),
            },
            &[],
            &[],
        )?;
        chan.set_timeout(None)?;
        tracing::info!(pid = std::process::id(), "upgrade: serving");
        std::thread::Builder::new()
            .name("upgrade-receive".into())
            .spawn(move || receive(&chan, &shared, &tracker, &workers))?;
        Ok(())
    }
}

fn receive(chan: &Channel, shared: &Arc<Shared>, tracker: &TaskTracker, workers: &Workers) {
    let mut taken = 0u64;
    loop {
        let (header, tail, fds) = match chan.recv() {
            Ok((Msg::Conn(h), tail, fds)) => (h, tail, fds),
            Ok((Msg::Done, _, _)) => break,
            Ok((other, _, _)) => {
                tracing::warn!(message = ?other, "upgrade: unexpected message; hand-off over");
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => {
                tracing::warn!(error = %e, "upgrade: hand-off socket failed; hand-off over");
                break;
            }
        };
        let id = header.id;
        let answer = match moved(header, tail, fds) {
            Ok(m) => match handoff::adopt(shared, tracker, workers, m) {
                Ok(()) => {
                    shared
                        .metrics
                        .upgrade_connections
                        .with_label_values(&["received"])
                        .inc();
                    taken += 1;
                    Msg::ConnAnswer {
                        id,
                        taken: true,
                        reason: None,
                    }
                }
                Err(why) => Msg::ConnAnswer {
                    id,
                    taken: false,
                    reason: Some(why),
                },
            },
            Err(why) => Msg::ConnAnswer {
                id,
                taken: false,
                reason: Some(why),
            },
        };
        // Refused connections' descriptors close here; the old process
        // keeps its own and relays on.
        if chan.send(&answer, &[], &[]).is_err() {
            break;
        }
    }
    tracing::info!(connections = taken, "upgrade: connection hand-off over");
}

fn moved(h: ConnHeader, tail: Vec<u8>, fds: Vec<OwnedFd>) -> Result<Moved, String> {
    if tail.len() != h.pending_up + h.pending_down {
        return Err(format!(
            "{} bytes in flight, the header says {}",
            tail.len(),
            h.pending_up + h.pending_down
        ));
    }
    let mut fds = fds.into_iter();
    let (Some(client), Some(upstream)) = (fds.next(), fds.next()) else {
        return Err("two sockets expected".into());
    };
    let (client, upstream) = (
        std::net::TcpStream::from(client),
        std::net::TcpStream::from(upstream),
    );
    for s in [&client, &upstream] {
        // Received as the old process had them (non-blocking); checked so
        // that a socket of another kind is refused, not relayed.
        socket2::SockRef::from(s)
            .r#type()
            .ok()
            .filter(|t| *t == socket2::Type::STREAM)
            .ok_or("not a stream socket")?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
    }
    let (up, down) = tail.split_at(h.pending_up);
    Ok(Moved {
        client,
        upstream,
        route: h.route,
        peer: h.peer,
        local: h.local,
        sni: h.sni,
        bytes_up: h.bytes_up,
        bytes_down: h.bytes_down,
        carry: Carry {
            up: up.to_vec(),
            down: down.to_vec(),
            up_done: h.up_done,
            down_done: h.down_done,
        },
    })
}
