//! The running process's side of an upgrade: it listens on the upgrade
//! socket, starts the new binary when asked (`mse-proxy upgrade` or
//! SIGUSR2), hands it the listening sockets, and once it is serving, its
//! passthrough connections one by one.
//!
//! # The state store
//! redb locks its file to one process, and the new process must read the
//! state at start as any start does. So the old process releases the
//! store (`StateStore::release`: a commit in flight finishes, the file
//! closes) *before* it sends the listeners, and the new process opens it
//! only after receiving them. From then on the old process's admin writes
//! fail (503, nothing applied): the window lasts until the new process
//! serves, when the old one stops its admin API. If the new process fails
//! before it says it is ready (it exits, refuses, or is silent for the
//! timeout, and is then killed), the old one resumes the store
//! (`StateStore::resume`, reopened on the next write) and serves on as
//! before. Nothing committed is lost either way: the new process reads
//! what the old one committed, and the old one commits nothing after the
//! release.
//!
//! # Who owns what
//! Listeners are shared (the same kernel sockets): both processes accept
//! on them until the old one stops, so no connection is refused and the
//! accept queue carries over. A passthrough connection is the old
//! process's until the new one answers `taken`; an answer of no, a
//! timeout or a broken socket gives it back (`crate::proxy::handoff`), and
//! the old process relays it until it ends or the shutdown grace passes.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::channel::{Channel, Listener};
use super::protocol::{ConnHeader, Msg, FORMAT};
use super::successor::SUCCESSOR_ENV;
use crate::metrics::Metrics;
use crate::proxy::handoff::Offer;
use crate::state::StateStore;

/// How long the new process has to connect, and then to be serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What the upgrade socket brought in.
#[derive(Debug)]
pub enum Event {
    /// Start an upgrade: from `mse-proxy upgrade` (answered on `reply`) or
    /// SIGUSR2 (no reply).
    Trigger {
        binary: Option<PathBuf>,
        reply: Option<Channel>,
    },
    /// A new process said hello.
    Successor {
        chan: Channel,
        format: u32,
        pid: u32,
    },
}

/// The upgrade socket, listened on by a thread of its own.
#[derive(Debug)]
pub struct Upgrader {
    events: mpsc::UnboundedReceiver<Event>,
    path: PathBuf,
}

impl Upgrader {
    /// Binds the socket (mode 0600) and starts accepting on it.
    pub fn bind(path: &Path) -> std::io::Result<Upgrader> {
        let listener = Listener::bind(path)?;
        let (tx, events) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("upgrade-socket".into())
            .spawn(move || accept_loop(listener, tx))?;
        tracing::info!(socket = %path.display(), "upgrade socket listening");
        Ok(Upgrader {
            events,
            path: path.to_path_buf(),
        })
    }

    /// The next event (never ends while the socket thread runs).
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn accept_loop(listener: Listener, tx: mpsc::UnboundedSender<Event>) {
    loop {
        let chan = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "upgrade socket: accept failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let _ = chan.set_timeout(Some(Duration::from_secs(5)));
        let event = match chan.recv() {
            Ok((Msg::Trigger { binary }, _, _)) => Event::Trigger {
                binary,
                reply: Some(chan),
            },
            Ok((Msg::Hello { format, pid, .. }, _, _)) => Event::Successor { chan, format, pid },
            Ok((other, _, _)) => {
                tracing::warn!(message = ?other, "upgrade socket: unexpected first message");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "upgrade socket: unreadable first message");
                continue;
            }
        };
        if tx.send(event).is_err() {
            return;
        }
    }
}

/// What the running process hands over.
#[derive(Debug)]
pub struct Handover<'a> {
    /// Each listener's configured address and a duplicate of its socket.
    pub listeners: &'a [(SocketAddr, OwnedFd)],
    pub admin: Option<&'a (SocketAddr, OwnedFd)>,
    /// The durable stores this process holds open (state, or etcd's cache).
    pub stores: &'a [Arc<dyn StateStore>],
    pub metrics: &'a Metrics,
}

/// A new process that took the listeners and serves.
#[derive(Debug)]
pub struct Succeeded {
    pub chan: Channel,
    pub pid: u32,
    pub took: Duration,
}

/// Answers `mse-proxy upgrade` (if it asked), and logs and counts it.
pub fn report(
    metrics: &Metrics,
    reply: Option<Channel>,
    outcome: &Result<Succeeded, (&'static str, String)>,
    began: Instant,
) {
    let (result, msg, pid) = match outcome {
        Ok(s) => {
            tracing::info!(
                pid = s.pid,
                took_ms = s.took.as_millis() as u64,
                "upgrade: the new process serves; handing over"
            );
            (
                "ok",
                format!("the new process (pid {}) serves", s.pid),
                Some(s.pid),
            )
        }
        Err((result, why)) => {
            tracing::error!(reason = %why, "upgrade failed: this process serves on");
            (*result, why.clone(), None)
        }
    };
    metrics.upgrades.with_label_values(&[result]).inc();
    if let Some(chan) = reply {
        let msg = Msg::Result {
            ok: outcome.is_ok(),
            message: msg,
            pid,
            millis: began.elapsed().as_millis() as u64,
        };
        let _ = chan.send(&msg, &[], &[]);
    }
}

/// Starts `binary` (default: this executable, same arguments) as the new
/// process and hands it the listeners. `Err` with the `result` label and
/// why: this process then serves on as before.
pub async fn attempt(
    upgrader: &mut Upgrader,
    binary: Option<PathBuf>,
    h: Handover<'_>,
) -> Result<Succeeded, (&'static str, String)> {
    let began = Instant::now();
    let failed = |why: String| ("failed", why);
    let exe = match binary {
        Some(b) => b,
        None => std::env::current_exe().map_err(|e| failed(format!("no executable path: {e}")))?,
    };
    let mut child = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env(SUCCESSOR_ENV, upgrader.path())
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| failed(format!("cannot start {}: {e}", exe.display())))?;
    tracing::info!(binary = %exe.display(), pid = child.id(), "upgrade: new process started");
    // Its hello, while watching that it has not exited.
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let (chan, format, pid) = loop {
        let tick = tokio::time::sleep(Duration::from_millis(50));
        tokio::select! {
            ev = upgrader.next() => match ev {
                Some(Event::Successor { chan, format, pid }) => break (chan, format, pid),
                Some(Event::Trigger { reply: Some(r), .. }) => {
                    let m = Msg::Result { ok: false, message: "an upgrade is under way".into(), pid: None, millis: 0 };
                    let _ = r.send(&m, &[], &[]);
                }
                Some(Event::Trigger { reply: None, .. }) => {}
                None => return Err(failed("the upgrade socket is closed".into())),
            },
            () = tick => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(failed(format!("the new process exited ({status}) before it connected")));
                }
                if tokio::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(failed("the new process did not connect in time".into()));
                }
            }
        }
    };
    // From here on the child is reaped by a thread whatever happens, so
    // that a new process that exits leaves no zombie.
    let reap = move |mut c: std::process::Child, kill: bool| {
        std::thread::spawn(move || {
            if kill {
                let _ = c.kill();
            }
            let _ = c.wait();
        });
    };
    tracing::info!(pid, format, "upgrade: the new process connected");
    if format != FORMAT {
        let why = format!(
            "the new binary speaks hand-off format {format}, this process {FORMAT}: no hand-off"
        );
        let m = Msg::Refused {
            reason: why.clone(),
        };
        let _ = blocking(move || chan.send(&m, &[], &[])).await;
        reap(child, false);
        return Err(("refused", why));
    }
    let stores: Vec<Arc<dyn StateStore>> = h.stores.to_vec();
    let released = stores.clone();
    let _ = blocking(move || {
        released.iter().for_each(|s| s.release());
        Ok(())
    })
    .await;
    let resume = move |stores: Vec<Arc<dyn StateStore>>| async move {
        let _ = blocking(move || {
            stores.iter().for_each(|s| s.resume());
            Ok(())
        })
        .await;
    };
    let listeners: Vec<SocketAddr> = h.listeners.iter().map(|(a, _)| *a).collect();
    let admin = h.admin.map(|(a, _)| *a);
    let fds: Vec<OwnedFd> = h
        .listeners
        .iter()
        .chain(h.admin)
        .map(|(_, fd)| fd.try_clone())
        .collect::<std::io::Result<_>>()
        .map_err(|e| failed(format!("cannot duplicate a listener: {e}")))?;
    let sent = blocking(move || {
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        let m = Msg::Listeners {
            format: FORMAT,
            listeners,
            admin,
        };
        chan.send(&m, &[], &borrowed)?;
        chan.set_timeout(Some(START_TIMEOUT))?;
        let answer = chan.recv();
        Ok((chan, answer))
    })
    .await;
    let answer = match sent {
        Ok((chan, Ok((Msg::Ready { pid }, _, _)))) => Ok((chan, pid)),
        Ok((_, Ok((Msg::Refused { reason }, _, _)))) => Err(("refused", reason)),
        Ok((_, Ok((other, _, _)))) => Err(failed(format!("unexpected answer {other:?}"))),
        Ok((_, Err(e))) => Err(failed(format!(
            "the new process failed before it was ready ({e}); see its log"
        ))),
        Err(e) => Err(failed(format!("cannot send the listeners: {e}"))),
    };
    match answer {
        Ok((chan, pid)) => {
            reap(child, false);
            Ok(Succeeded {
                chan,
                pid,
                took: began.elapsed(),
            })
        }
        Err(e) => {
            // Killed if still there: it must not serve beside us.
            reap(child, true);
            resume(stores).await;
            Err(e)
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

/// Sends each offered passthrough connection to the new process and
/// answers the offer: taken, or back to its relay. Runs on a thread of
/// its own until the offers end (`Handoff::end`), then says `Done`.
pub fn send_connections(
    chan: Channel,
    mut offers: mpsc::UnboundedReceiver<Offer>,
    metrics: HandoffCounters,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        // No timeout: an answer that came late would leave a connection
        // relayed by both processes. Only the new process's end (its
        // copies closed with it) gives a connection back unanswered.
        let _ = chan.set_timeout(None);
        let mut broken = false;
        let mut id = 0u64;
        while let Some(offer) = offers.blocking_recv() {
            if broken {
                metrics.kept.inc();
                offer.back();
                continue;
            }
            id += 1;
            match send_one(&chan, id, &offer) {
                Ok(true) => {
                    metrics.sent.inc();
                    offer.taken();
                }
                Ok(false) => {
                    metrics.kept.inc();
                    offer.back();
                }
                Err(e) => {
                    // Not known to be taken: ours. The channel is no longer
                    // trusted, so every later offer stays here too.
                    tracing::error!(error = %e, "upgrade: connection hand-off broken; keeping the rest");
                    broken = true;
                    metrics.kept.inc();
                    offer.back();
                }
            }
        }
        if !broken {
            let _ = chan.send(&Msg::Done, &[], &[]);
        }
    })
}

/// The counters the sending thread moves (cheap clones of the metrics').
#[derive(Debug, Clone)]
pub struct HandoffCounters {
    pub sent: prometheus::IntCounter,
    pub kept: prometheus::IntCounter,
}

fn send_one(chan: &Channel, id: u64, offer: &Offer) -> std::io::Result<bool> {
    let m = offer.moved();
    let header = ConnHeader {
        id,
        route: m.route.clone(),
        peer: m.peer,
        local: m.local,
        sni: m.sni.clone(),
        bytes_up: m.bytes_up,
        bytes_down: m.bytes_down,
        pending_up: m.carry.up.len(),
        pending_down: m.carry.down.len(),
        up_done: m.carry.up_done,
        down_done: m.carry.down_done,
    };
    let mut tail = m.carry.up.clone();
    tail.extend_from_slice(&m.carry.down);
    chan.send(
        &Msg::Conn(header),
        &tail,
        &[m.client.as_fd(), m.upstream.as_fd()],
    )?;
    match chan.recv()? {
        (
            Msg::ConnAnswer {
                id: got,
                taken,
                reason,
            },
            _,
            _,
        ) if got == id => {
            if let Some(r) = reason.filter(|_| !taken) {
                tracing::info!(route = %m.route, reason = %r, "upgrade: connection kept here");
            }
            Ok(taken)
        }
        (other, _, _) => Err(std::io::Error::other(format!(
            "unexpected answer {other:?}"
        ))),
    }
}
